//! Todo.List: one to-do list as a pure value, like the book's `%TodoList{}`.
//!
//! The list is a persistent (structurally shared) map, so a clone is O(1):
//! the server can hand a snapshot to the database on every change without
//! copying its entries, as an Erlang process sends an immutable map. A date
//! index keeps `entries(date)` from scanning the whole list.

use std::fmt;
use std::sync::Arc;

use chrono::NaiveDate;
use imbl::{OrdMap, OrdSet};
use nodetrace_agent::traced;
use serde::{Deserialize, Serialize};

/// One to-do entry as stored: its id in the list, its date and title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique in its list, given by [`TodoList::add_entry`].
    pub id: u64,
    /// The day it is due.
    pub date: NaiveDate,
    /// What to do.
    pub title: String,
}

/// An entry to add: what [`TodoList::add_entry`] takes, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The day it is due.
    pub date: NaiveDate,
    /// What to do.
    pub title: String,
}

impl NewEntry {
    /// An entry due on `date`.
    pub fn new(date: NaiveDate, title: impl Into<String>) -> NewEntry {
        NewEntry {
            date,
            title: title.into(),
        }
    }
}

/// A to-do list: the next id and the entries by id.
///
/// Stored as `{"auto_id": N, "entries": [{"id", "date", "title"}, ...]}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ListFile", from = "ListFile")]
pub struct TodoList {
    auto_id: u64,
    /// Shared entries: copying a tree node on write copies pointers only.
    entries: OrdMap<u64, Arc<Entry>>,
    /// `(date, id)` of every entry, for [`TodoList::entries`].
    by_date: OrdSet<(NaiveDate, u64)>,
}

#[traced]
impl TodoList {
    /// An empty list; its first entry gets id 1.
    pub fn new() -> TodoList {
        TodoList {
            auto_id: 1,
            ..TodoList::default()
        }
    }

    /// Adds `entry` with the next id and returns that id.
    pub fn add_entry(&mut self, entry: NewEntry) -> u64 {
        let id = self.auto_id.max(1);
        self.auto_id = id + 1;
        self.insert(Entry {
            id,
            date: entry.date,
            title: entry.title,
        });
        id
    }

    /// The entries due on `date`, by id.
    pub fn entries(&self, date: NaiveDate) -> Vec<Entry> {
        self.by_date
            .range((date, 0)..=(date, u64::MAX))
            .filter_map(|(_, id)| self.entries.get(id).map(|e| Entry::clone(e)))
            .collect()
    }
}

impl fmt::Debug for TodoList {
    /// `TodoList { auto_id: 2, entries: {1: Entry { .. }} }`, without the index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TodoList")
            .field("auto_id", &self.auto_id)
            .field("entries", &self.entries)
            .finish()
    }
}

impl TodoList {
    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|e| &**e)
    }

    fn insert(&mut self, entry: Entry) {
        if let Some(old) = self.entries.get(&entry.id) {
            self.by_date.remove(&(old.date, old.id));
        }
        self.by_date.insert((entry.date, entry.id));
        self.entries.insert(entry.id, Arc::new(entry));
    }
}

/// The stored shape of a [`TodoList`]: no index, entries as a plain array.
#[derive(Serialize, Deserialize)]
struct ListFile {
    auto_id: u64,
    entries: Vec<Entry>,
}

impl From<TodoList> for ListFile {
    fn from(list: TodoList) -> ListFile {
        ListFile {
            auto_id: list.auto_id,
            entries: list.iter().cloned().collect(),
        }
    }
}

impl From<ListFile> for TodoList {
    fn from(file: ListFile) -> TodoList {
        let mut list = TodoList::new();
        for entry in file.entries {
            // A hand-edited file must not make the next id collide.
            list.auto_id = list.auto_id.max(entry.id.saturating_add(1));
            list.insert(entry);
        }
        list.auto_id = list.auto_id.max(file.auto_id);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2023, 12, d).unwrap()
    }

    #[test]
    fn entries_are_numbered_and_found_by_date() {
        let mut list = TodoList::new();
        assert_eq!(list.add_entry(NewEntry::new(day(19), "Dentist")), 1);
        assert_eq!(list.add_entry(NewEntry::new(day(20), "Shopping")), 2);
        assert_eq!(list.add_entry(NewEntry::new(day(19), "Movies")), 3);
        let titles: Vec<_> = list
            .entries(day(19))
            .into_iter()
            .map(|e| (e.id, e.title))
            .collect();
        assert_eq!(
            titles,
            [(1, "Dentist".to_owned()), (3, "Movies".to_owned())]
        );
        assert_eq!(list.entries(day(21)), []);
        assert_eq!(list.len(), 3);
        assert_eq!(
            format!("{:?}", list.entries(day(20))),
            r#"[Entry { id: 2, date: 2023-12-20, title: "Shopping" }]"#
        );
    }

    #[test]
    fn a_clone_is_a_snapshot() {
        let mut list = TodoList::new();
        list.add_entry(NewEntry::new(day(19), "Dentist"));
        let snapshot = list.clone();
        list.add_entry(NewEntry::new(day(19), "Movies"));
        assert_eq!(snapshot.entries(day(19)).len(), 1);
        assert_eq!(list.entries(day(19)).len(), 2);
    }

    #[test]
    fn the_stored_form_round_trips_and_keeps_ids_unique() {
        let mut list = TodoList::new();
        list.add_entry(NewEntry::new(day(19), "Dentist"));
        list.add_entry(NewEntry::new(day(20), "Movies"));
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(
            json,
            r#"{"auto_id":3,"entries":[{"id":1,"date":"2023-12-19","title":"Dentist"},{"id":2,"date":"2023-12-20","title":"Movies"}]}"#
        );
        let back: TodoList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);

        let stale = r#"{"auto_id":1,"entries":[{"id":7,"date":"2023-12-19","title":"x"}]}"#;
        let mut back: TodoList = serde_json::from_str(stale).unwrap();
        assert_eq!(back.add_entry(NewEntry::new(day(19), "y")), 8);
    }
}
