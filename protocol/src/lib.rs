//! The vocabulary the traced node and the tracer node share.
//!
//! Both sides depend on this crate and on nothing of each other: the agent
//! (inside the traced service) and the tracer (the `nodetrace` CLI) agree on
//! what a [`Pattern`] selects, how a [`Pid`] reads, and what an [`Event`]
//! carries.
//!
//! ```
//! use nodetrace_protocol::Pattern;
//!
//! let p: Pattern = "Todo.Server:entries/2".parse().unwrap();
//! assert!(p.matches("todo::server", "entries", 2));
//! assert!(!p.matches("todo::server", "entries", 3));
//! ```

mod event;
mod pattern;
mod pid;

pub use event::{CallsiteInfo, Event, EventKind};
pub use pattern::{Pattern, PatternError, PatternErrorKind, snake_case};
pub use pid::{ParsePidError, Pid};
