//! The vocabulary the traced node and the tracer node share.
//!
//! Both sides depend on this crate and on nothing of each other: the agent
//! (inside the traced service) and the tracer (the `nodetrace` CLI) agree on
//! what a [`Pattern`] selects, how a [`Pid`] reads, what an [`Event`]
//! carries, how messages are framed and the handshake proves the cookie,
//! and where the cookie and the node registry live.
//!
//! ```
//! use nodetrace_protocol::Pattern;
//!
//! let p: Pattern = "Todo.Server:entries/2".parse().unwrap();
//! assert!(p.matches("todo::server", "entries", 2));
//! assert!(!p.matches("todo::server", "entries", 3));
//! ```

mod duration;
mod event;
pub mod frame;
pub mod handshake;
pub mod home;
mod message;
mod observe;
mod pattern;
mod pid;
mod profile;

pub use duration::{display_ms, parse_duration_ms};
pub use event::{CallsiteInfo, CallsiteKind, Event, EventKind, Level};
pub use message::{
    Command, Counts, EndReason, Limits, LogSpec, MAGIC, NodeInfo, NodeMessage, PROTOCOL_VERSION,
    Processes, Rate, Reply, StatisticsRow, TraceEnd, TraceSpec, TracerMessage,
};
pub use observe::{
    CallsiteCounts, ProcessCounts, ProcessList, ProcessRow, RuntimeFigures, SessionRow,
    SystemFigures, SystemInfo, TaskRow, TaskStateRow, TopFrame, TopRow, TopSort, TopSpec,
};
pub use pattern::{Pattern, PatternError, PatternErrorKind, snake_case};
pub use pid::{ParsePidError, Pid};
pub use profile::{
    CallEdge, FunctionProfile, PROFILER_ADDR_ENV, PROFILER_COOKIE_ENV, Percentiles, ProfileMode,
    ProfileSnapshot, ProfileSpec, SampledFrame, SampledStack, StackSample,
};
