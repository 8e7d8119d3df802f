//! The store: a map behind a mutex, its methods `tracing` spans with
//! `skip(self)` (the spans keep the key, not the map).

use std::collections::HashMap;
use std::sync::Mutex;

use tracing::instrument;

/// Keys and values, shared by every connection.
#[derive(Debug, Default)]
pub struct Store {
    map: Mutex<HashMap<String, String>>,
}

impl Store {
    /// The value of `key`; `ret` makes it the span's return value.
    #[instrument(skip(self), ret)]
    pub fn get(&self, key: &str) -> Option<String> {
        let value = self.map().get(key).cloned();
        tracing::trace!(found = value.is_some(), "looked up");
        value
    }

    /// Stores `value` under `key`; the span records its length, not the value.
    #[instrument(skip(self, value), fields(len = value.len()))]
    pub fn set(&self, key: &str, value: &str) {
        let old = self.map().insert(key.to_owned(), value.to_owned());
        tracing::debug!(replaced = old.is_some(), "stored");
    }

    /// Removes `key`; whether it was there.
    #[instrument(skip(self))]
    pub fn del(&self, key: &str) -> bool {
        let removed = self.map().remove(key).is_some();
        tracing::debug!(removed, "deleted");
        removed
    }

    /// How many keys there are.
    #[instrument(skip(self))]
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
