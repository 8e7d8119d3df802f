//! Recording: what a traced function pays, and where its records go.
//!
//! Owns the callsite registry ([`callsite`]), the path a traced call runs
//! when switched on ([`call`]), bounded formatting of arguments ([`fmt`]),
//! the per-thread rings ([`ring`]), the clock and panic messages. It reads
//! the session slots (which sessions want a call) and the profile's
//! per-thread state, and writes nothing else: the collector in `session`
//! drains the rings.

pub(crate) mod call;
pub(crate) mod callsite;
pub(crate) mod clock;
pub(crate) mod fmt;
pub(crate) mod panics;
pub(crate) mod ring;
