//! The tracer node: connects to traced nodes, collects their events and
//! renders them the way BEAM users read dbg output.
//!
//! The pieces, in the order a `nodetrace trace` uses them:
//!
//! * [`resolve`] turns `--node NAME`, `--node HOST:PORT` or nothing into a
//!   [`Target`] through the node registry of the [`Home`](protocol::home::Home);
//! * [`conn`] connects and runs the cookie handshake ([`Connection`]), then
//!   sends commands and reads their replies;
//! * [`spec`] builds a [`TraceSpec`](protocol::TraceSpec) from what an
//!   operator typed (patterns, `--max`, `--rate N/DUR`, `--duration`);
//! * [`stream`] runs a trace on one or more nodes at once: a reader and a
//!   pinger per node, Stop on a [`StopSignal`], lines merged as they come;
//! * [`render`] writes events, one a line, as dbg-like text or JSON, and the
//!   summary a trace ends with;
//! * [`export`] writes them where people look at traces: Perfetto and
//!   Chrome timelines, OpenTelemetry spans over OTLP;
//! * [`suggest`] finds the nearest names for a pattern, node or process
//!   that matches nothing ("did you mean");
//! * [`commands`] are the other commands' data and renderers (`nodes`, `ls`,
//!   `ps`, `sys get-state`, `sys statistics`, `stop-clear`);
//! * [`local`] runs a trace whose events are made in this process (uprobes
//!   on a process without an agent) under the same limits and renderers;
//! * [`top`] is the live view of the busiest processes, [`info`] a node's
//!   system information.
//!
//! Renderers write to any [`std::io::Write`], so tests render into a
//! `Vec<u8>`.

pub mod commands;
pub mod conn;
mod error;
pub mod export;
pub mod info;
pub mod local;
pub mod render;
pub mod resolve;
pub mod spec;
pub mod stream;
pub mod suggest;
pub mod top;

pub use conn::{Connection, Credentials};
pub use error::{EXIT_NO_MATCH, TracerError};
pub use nodetrace_protocol as protocol;
pub use render::Format;
pub use resolve::{ResolveError, Target};
pub use stream::{StopSignal, TraceReport};
