//! What the tracer and the node say to each other, after the frame layer.
//!
//! A connection opens with the handshake ([`TracerMessage::Hello`],
//! [`NodeMessage::Challenge`], [`TracerMessage::Answer`],
//! [`NodeMessage::Welcome`]), then carries commands and their replies; a
//! trace streams [`NodeMessage::Events`] until it ends with
//! [`NodeMessage::Ended`], which says why and counts what happened.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::handshake::{Challenge, Proof};
use crate::{
    CallsiteInfo, Event, Level, Pattern, Pid, ProcessList, ProfileSnapshot, ProfileSpec,
    SystemInfo, TopFrame, TopSpec,
};

/// The version of this protocol; both sides must speak the same.
pub const PROTOCOL_VERSION: u16 = 4;

/// The four bytes a tracer's first frame starts with.
pub const MAGIC: [u8; 4] = *b"NTRC";

/// From the tracer to the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TracerMessage {
    /// Opens the handshake. Always the first variant, in every version.
    Hello {
        /// [`MAGIC`].
        magic: [u8; 4],
        /// [`PROTOCOL_VERSION`] of the tracer.
        version: u16,
        /// The tracer's challenge.
        challenge: Challenge,
    },
    /// The tracer's proof over both challenges.
    Answer {
        /// HMAC of the cookie.
        proof: Proof,
    },
    /// A command.
    Command(Command),
    /// I am still here; a node ends a silent tracer's trace.
    Ping,
}

/// From the node to the tracer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// The node's challenge.
    Challenge {
        /// [`PROTOCOL_VERSION`] of the node.
        version: u16,
        /// The node's challenge.
        challenge: Challenge,
    },
    /// The tracer speaks another version; the node closes.
    VersionMismatch {
        /// The node's version.
        node: u16,
    },
    /// The tracer's proof was wrong; the node closes.
    Denied,
    /// The node's proof, and who it is.
    Welcome {
        /// HMAC of the cookie.
        proof: Proof,
        /// The node.
        node: NodeInfo,
    },
    /// The answer to a command.
    Reply(Reply),
    /// Events of the running trace.
    Events(Vec<Event>),
    /// Callsites first reached since the trace or profile started (`tracing`
    /// registers its spans and events when they first run): sent before any
    /// event or figure that refers to them.
    Callsites(Vec<CallsiteInfo>),
    /// The names of processes the running trace's events name for the
    /// first time (a gen_server registered, a task spawned with a name,
    /// perhaps after the trace began): sent before the events that refer to
    /// them. A process with no name is not in it.
    Names(Vec<(Pid, String)>),
    /// The running trace ended.
    Ended(TraceEnd),
    /// The running profile's figures so far; `last` is the final report.
    Profile {
        /// Everything measured since the profile started.
        snapshot: ProfileSnapshot,
        /// This is the final report: the profile ended.
        last: bool,
    },
}

/// A node, as it introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name, e.g. `todo@localhost`.
    pub name: String,
    /// Its OS process id.
    pub os_pid: u32,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// It has the `tracing` bridge: its spans become callsites when first
    /// reached, so a pattern that matches nothing yet may wait for one.
    pub tracing_bridge: bool,
}

/// What the tracer asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// The traceable functions, all or those a pattern matches (`ls`).
    Callsites {
        /// Only these.
        pattern: Option<Pattern>,
    },
    /// The node's processes (`ps`).
    Processes,
    /// One `top` refresh.
    Top(TopSpec),
    /// The node's system information (`info`).
    Info,
    /// Starts this connection's trace; events stream until it ends.
    Trace(TraceSpec),
    /// A gen_server's state (`sys:get_state`).
    GetState {
        /// Registered name or pid.
        target: String,
    },
    /// A gen_server's counters (`sys:statistics`).
    Statistics {
        /// Registered name or pid.
        target: String,
    },
    /// Ends every trace on the node and switches everything off.
    StopClear,
    /// Ends this connection's trace or profile.
    Stop,
    /// Starts this connection's profile; snapshots stream until it ends.
    Profile(ProfileSpec),
}

/// Which processes a trace watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Processes {
    /// All, present and future.
    All,
    /// Those started from now on.
    New,
    /// Those that exist now.
    Existing,
    /// Some, by registered name or pid.
    Some(Vec<String>),
}

/// A trace to start: what to record, in which processes, within which limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSpec {
    /// Functions whose calls to record.
    pub patterns: Vec<Pattern>,
    /// Which processes.
    pub processes: Processes,
    /// Record calls of the patterns' functions.
    pub calls: bool,
    /// Record messages the processes send.
    pub send: bool,
    /// Record messages the processes receive.
    pub receive: bool,
    /// gen_servers to `sys` trace, by name or pid.
    pub sys: Vec<String>,
    /// Format call arguments.
    pub args: bool,
    /// Deliver return events (with values) for every traced function.
    pub returns: bool,
    /// Deliver an `in` and an `out` event ([`EventKind::In`],
    /// [`EventKind::Out`]) for each poll of a traced async call and each
    /// enter of a traced span: what a timeline draws inside the call. A
    /// trace that does not ask records nothing more per poll.
    ///
    /// [`EventKind::In`]: crate::EventKind::In
    /// [`EventKind::Out`]: crate::EventKind::Out
    pub polls: bool,
    /// Bound in bytes on each event's text.
    pub text_bound: u32,
    /// Record only calls whose arguments (and log lines whose text)
    /// contain this text.
    pub arg_match: Option<String>,
    /// When the trace stops itself.
    pub limits: Limits,
    /// `tracing` events to stream as log lines (`nodetrace log`).
    pub log: Option<LogSpec>,
}

/// Which `tracing` events a trace streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSpec {
    /// Events whose module path or target is this module or inside it;
    /// every event if `None`.
    pub pattern: Option<Pattern>,
    /// This level and the less verbose ones.
    pub level: Level,
}

/// When a trace stops or thins itself; enforced in the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Stop after this many events.
    pub max_events: Option<u64>,
    /// Drop calls and messages above this rate.
    pub rate: Option<Rate>,
    /// Stop after this many milliseconds.
    pub duration_ms: Option<u64>,
}

impl Limits {
    /// The limit a trace gets when none is given: 1,000 events or 60 s.
    pub const DEFAULT: Limits = Limits {
        max_events: Some(1000),
        rate: None,
        duration_ms: Some(60_000),
    };

    /// Whether no limit is set at all.
    pub fn is_unlimited(&self) -> bool {
        self.max_events.is_none() && self.rate.is_none() && self.duration_ms.is_none()
    }
}

/// At most `events` per `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Events allowed in a window.
    pub events: u64,
    /// The window, in milliseconds.
    pub per_ms: u64,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.events, self.per_ms)
    }
}

/// A gen_server's counters, or those of a process's traced channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatisticsRow {
    /// The server.
    pub pid: Pid,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Messages sent to it.
    pub messages_in: u64,
    /// Replies and messages it sent (a gen_server's; a process that owns
    /// traced channels does not count them).
    pub messages_out: Option<u64>,
    /// Messages it handled.
    pub handled: u64,
    /// Messages waiting in its mailbox.
    pub mailbox_len: u64,
}

/// The node's answer to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Traceable functions.
    Callsites(Vec<CallsiteInfo>),
    /// Processes.
    Processes(ProcessList),
    /// A `top` refresh.
    Top(Box<TopFrame>),
    /// System information.
    Info(Box<SystemInfo>),
    /// The trace runs; events follow.
    TraceStarted {
        /// Functions the patterns matched.
        matched: u64,
        /// Patterns that match nothing yet and wait for `tracing` spans to
        /// be first reached (the node has the `tracing` bridge).
        waiting: Vec<String>,
        /// The node's callsites, to name the functions events refer to.
        callsites: Vec<CallsiteInfo>,
        /// The limits in force.
        limits: Limits,
    },
    /// A gen_server's state.
    State(String),
    /// A gen_server's counters, or those of a process's traced channels.
    Statistics(StatisticsRow),
    /// The profile runs; snapshots follow.
    ProfileStarted {
        /// Functions the profile covers.
        functions: u64,
        /// The node's callsites, to name the functions figures refer to.
        callsites: Vec<CallsiteInfo>,
    },
    /// `stop-clear` ended this many traces.
    Cleared {
        /// Traces ended.
        traces: u64,
    },
    /// The command failed; the text says why and what to do.
    Error(String),
}

/// Why a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// It delivered its `max_events`.
    MaxEvents(u64),
    /// Its `duration_ms` passed.
    Duration(u64),
    /// `stop-clear` ended it.
    StopClear,
    /// The tracer asked.
    Stopped,
    /// The node heard nothing from the tracer (not even a ping) for this
    /// many milliseconds and ended the trace.
    TracerSilent(u64),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::MaxEvents(1) => f.write_str("reached the limit of 1 event"),
            EndReason::MaxEvents(n) => write!(f, "reached the limit of {n} events"),
            EndReason::Duration(ms) => write!(
                f,
                "reached the time limit of {}",
                crate::duration::display_ms(*ms)
            ),
            EndReason::StopClear => f.write_str("stopped by stop-clear"),
            EndReason::Stopped => f.write_str("stopped by the tracer"),
            EndReason::TracerSilent(ms) => write!(
                f,
                "ended by the node: it heard nothing from the tracer for {}",
                crate::duration::display_ms(*ms)
            ),
        }
    }
}

/// What a trace counted; `emitted = delivered + rate_dropped + lost + discarded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Events sent to the tracer.
    pub delivered: u64,
    /// Calls and messages dropped by the rate limit.
    pub rate_dropped: u64,
    /// Events lost to full buffers (a thread's ring, the trace's queue).
    pub lost: u64,
    /// Events made after the trace stopped, before every thread saw it.
    pub discarded: u64,
}

impl Counts {
    /// Every event the traced code made for this trace.
    pub fn emitted(&self) -> u64 {
        self.delivered + self.rate_dropped + self.lost + self.discarded
    }
}

/// The end of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEnd {
    /// Why.
    pub reason: EndReason,
    /// What it counted.
    pub counts: Counts,
}
