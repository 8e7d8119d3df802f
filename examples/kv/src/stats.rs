//! `STATS`: the one `#[nodetrace_agent::traced]` function of the service,
//! calling an instrumented one, so that a profile's stacks have a `tracing`
//! span ([`Store::len`]) under a traced function.

use nodetrace_agent::traced;

use crate::store::Store;

/// `keys=N`.
#[traced(skip(store))]
pub fn summary(store: &Store) -> String {
    format!("keys={}", store.len())
}
