//! The in-node half of nodetrace: what a service links to be traceable.
//!
//! Mark functions `#[traced]` and call [`node::start`] once at start-up:
//!
//! ```no_run
//! use nodetrace_agent::node::{self, NodeConfig};
//!
//! #[nodetrace_agent::traced]
//! fn entries(list: &str) -> Vec<String> { Vec::new() }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     node::start(NodeConfig::new("todo@localhost"))?;
//!     // ... serve; `nodetrace trace calls my_crate:entries` now finds it.
//!     Ok(())
//! }
//! ```
//!
//! The node registers itself under its name and serves tracer nodes on a
//! loopback port after a cookie handshake; a tracer's trace is a [`Session`]
//! (like `dbg:tracer`), its patterns switch callsites on (like `dbg:tp`), and
//! its limits are enforced here, in the node. The same API works in process:
//!
//! ```
//! use nodetrace_agent::{traced, Session, SessionOptions};
//! use nodetrace_protocol::{EventKind, Pattern};
//! use std::time::Duration;
//!
//! #[traced]
//! fn add(a: u32, b: u32) -> u32 {
//!     a + b
//! }
//!
//! let session = Session::start(SessionOptions::default()).unwrap();
//! let pattern: Pattern = format!("{}:add/2 -> return", module_path!()).parse().unwrap();
//! assert_eq!(session.trace_pattern(&pattern), 1);
//! add(1, 2);
//! let call = session.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert_eq!((call.kind, call.text.as_deref()), (EventKind::Call, Some("1, 2")));
//! let ret = session.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert_eq!((ret.kind, ret.text.as_deref()), (EventKind::Return, Some("3")));
//! ```
//!
//! # What it costs
//! - **Off** (no session traces the function): one relaxed atomic load and a
//!   predicted branch per call. No thread-local, lock or allocation. A
//!   binary that never switches a function on (no session, profile or
//!   node) does not link the recording runtime: a traced `fn` reaches it
//!   through one pointer that the first switch-on sets. A traced `async
//!   fn` links all of it: its wrapper calls the recording directly.
//! - **On**: two clock reads and two fixed-size records written into the
//!   calling thread's ring; arguments and return values are formatted only
//!   when asked, and never past the session's text bound.
//! - **A slow or absent tracer** never slows the node: a full ring or a full
//!   session queue drops the event and counts it. Memory is bounded by the
//!   ring capacity ([`set_ring_capacity`]) per recording thread plus each
//!   session's queue.
//! - **Ending a session** (dropping it, a tripped limit, [`clear_all`], or
//!   its tracer going away: a closed connection at once, a silent one after
//!   800 ms) returns every function it switched on to the off cost.
//! - **Profiles** ([`Profile`]) are aggregated here, per thread; only their
//!   figures leave the node, never per-call events.

mod bridge;
mod control;
mod process;
mod profile;
mod record;
mod session;
pub mod sync;

pub use bridge::{Bridge, BridgeFilter, tracing_layer};
pub use control::node;
pub use nodetrace_agent_macros::traced;
pub use nodetrace_protocol::{CallsiteKind, Event, EventKind, Level, Pattern, Pid};
pub use process::{
    ProcessInfo, ProcessKind, ProcessRef, RegistryError, TaskInfo, gen_server, processes, register,
    self_pid, sys, task, unregister, whereis,
};
pub use profile::sample::{MAX_FREQUENCY_HZ, MAX_SAMPLE_MS, SampleError, SampleProfile, Split};
pub use profile::tc::{tc, tc_async};
pub use profile::{Profile, ProfileError, ProfileOptions};
pub use record::callsite::{Callsite, Metadata, callsite, callsites};
pub use record::fmt::{AsPid, DEFAULT_TEXT_BOUND};
pub use record::ring::{DEFAULT_RING_CAPACITY, ring_drops, set_ring_capacity};
pub use session::{
    ArgMatch, Batches, DEFAULT_QUEUE, MAX_SELECTED, MAX_SESSIONS, ProcFlags, Procs, Session,
    SessionError, SessionOptions, clear_all,
};

/// What `#[traced]` expands to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::record::call::{
        Active, Call, Traced, body, enter, flags, instrument, never, start_call,
    };
    pub use crate::record::callsite::CALLSITES;
    pub use crate::record::fmt::{
        Arg, ArgWriter, FmtDebug, FmtOpaque, FmtSelfPid, FmtSelfProcess, SelfArg,
    };
    pub use linkme;
}
