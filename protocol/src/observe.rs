//! What `ps`, `top` and `info` show of a node: its processes and their
//! counters, and the node's own figures.
//!
//! `top` asks for one [`TopFrame`] per interval; the node keeps what the
//! connection saw last, computes the deltas and the top rows itself, and
//! sends only those rows, so a node with many thousands of tasks sends a
//! few kilobytes per refresh.

use serde::{Deserialize, Serialize};

use crate::{Limits, Pid};

/// A process, as `ps` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRow {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<String>,
    /// `gen_server`, `task`, `task (seen)` or `process`.
    pub kind: String,
    /// It has a mailbox whose messages a trace sees: it is a gen_server or
    /// receives on traced channels.
    pub has_mailbox: bool,
    /// Messages waiting.
    pub mailbox_len: u64,
    /// Messages sent to it.
    pub messages_in: u64,
    /// Messages handled.
    pub handled: u64,
    /// When it started (a seen task: when first seen), in milliseconds
    /// since the Unix epoch.
    pub started_ms: u64,
    /// A task's poll counters.
    pub task: Option<TaskRow>,
}

/// A task's poll counters, counted while the node is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// Polls.
    pub polls: u64,
    /// Time in polls, in nanoseconds.
    pub busy_ns: u64,
    /// Time observed and not in polls, in nanoseconds.
    pub idle_ns: u64,
    /// Times it was woken while observed.
    pub wakes: u64,
    /// `running`, `idle` or `done`.
    pub state: TaskStateRow,
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStateRow {
    /// Being polled.
    Running,
    /// Waiting to be woken.
    Idle,
    /// Finished.
    Done,
}

impl TaskStateRow {
    /// The word `ps` and `top` print.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStateRow::Running => "running",
            TaskStateRow::Idle => "idle",
            TaskStateRow::Done => "done",
        }
    }
}

/// The node's processes, and since when its tasks are timed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    /// The processes.
    pub rows: Vec<ProcessRow>,
    /// How long the node has been timing task polls (since an observer
    /// asked), in milliseconds by its own clock: the counters cover that
    /// time.
    pub observed_for_ms: u64,
}

/// What `top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopSort {
    /// Time in polls over the interval.
    Busy,
    /// Polls over the interval.
    Polls,
    /// Messages in over the interval.
    Messages,
    /// Mailbox length now.
    Mailbox,
}

impl TopSort {
    /// Every sort, in the order `top` cycles through them.
    pub const ALL: [TopSort; 4] = [
        TopSort::Busy,
        TopSort::Polls,
        TopSort::Messages,
        TopSort::Mailbox,
    ];

    /// The word the CLI takes and shows.
    pub fn as_str(self) -> &'static str {
        match self {
            TopSort::Busy => "busy",
            TopSort::Polls => "polls",
            TopSort::Messages => "messages",
            TopSort::Mailbox => "mailbox",
        }
    }
}

/// A `top` refresh to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopSpec {
    /// The order of the rows.
    pub sort: TopSort,
    /// At most this many rows.
    pub limit: u32,
}

/// One `top` refresh: the node's figures and its busiest processes over the
/// interval since the connection's previous refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopFrame {
    /// The interval the deltas cover, in milliseconds (since the node began
    /// timing tasks, for a connection's first refresh).
    pub interval_ms: u64,
    /// The node's own figures.
    pub system: SystemFigures,
    /// Processes the node has.
    pub processes: u64,
    /// The top rows, sorted.
    pub rows: Vec<TopRow>,
}

/// A process in `top`: deltas over the interval, and its mailbox now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopRow {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<String>,
    /// As in [`ProcessRow::kind`].
    pub kind: String,
    /// A task's state.
    pub state: Option<TaskStateRow>,
    /// Polls in the interval.
    pub polls: u64,
    /// Time in polls in the interval, in nanoseconds.
    pub busy_ns: u64,
    /// Messages in, in the interval.
    pub messages_in: u64,
    /// Messages waiting now.
    pub mailbox_len: u64,
}

impl TopRow {
    /// What `sort` ranks a row by.
    pub fn sort_key(&self, sort: TopSort) -> (u64, u64) {
        match sort {
            TopSort::Busy => (self.busy_ns, self.polls),
            TopSort::Polls => (self.polls, self.busy_ns),
            TopSort::Messages => (self.messages_in, self.mailbox_len),
            TopSort::Mailbox => (self.mailbox_len, self.messages_in),
        }
    }

    /// The order of two rows by `sort`, ties by pid (lower first when
    /// sorting largest first, as `top` does: `rows.sort_by(|a, b| b.order(a, sort))`).
    pub fn order(&self, other: &TopRow, sort: TopSort) -> std::cmp::Ordering {
        self.sort_key(sort)
            .cmp(&other.sort_key(sort))
            .then(other.pid.cmp(&self.pid))
    }
}

/// The node's process: memory, threads, files, CPU, runtime, and what the
/// agent itself costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemFigures {
    /// Since the node started, in milliseconds.
    pub uptime_ms: u64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// OS threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_files: u64,
    /// CPU used over the interval, in percent of one core.
    pub cpu_percent: f64,
    /// The tokio runtime's figures, once the node has seen its runtime.
    pub runtime: Option<RuntimeFigures>,
    /// Traces and profiles running.
    pub sessions: u64,
    /// Events delivered to traces per second over the interval.
    pub events_per_s: f64,
    /// Records dropped by full thread rings since the node started.
    pub ring_drops: u64,
}

/// tokio's stable runtime metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeFigures {
    /// Worker threads.
    pub workers: u64,
    /// Tasks alive.
    pub alive_tasks: u64,
    /// Tasks waiting in the global run queue.
    pub global_queue_depth: u64,
}

/// `info`: the node's system information in one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// The agent's version.
    pub agent_version: String,
    /// The protocol version it speaks.
    pub protocol_version: u16,
    /// The operating system: name, release, machine.
    pub os: String,
    /// The node's figures now (CPU over its whole life).
    pub system: SystemFigures,
    /// Peak resident memory, in bytes.
    pub peak_rss_bytes: u64,
    /// The limit on open files.
    pub max_open_files: u64,
    /// Processes by kind.
    pub processes: ProcessCounts,
    /// Traceable functions by source.
    pub callsites: CallsiteCounts,
    /// Traces and profiles running, with their limits.
    pub sessions: Vec<SessionRow>,
    /// The capacity of each thread's ring, in records.
    pub ring_capacity: u64,
}

/// Processes of a node, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCounts {
    /// gen_servers.
    pub gen_servers: u64,
    /// Tasks spawned with `task::spawn`, alive.
    pub tasks: u64,
    /// Tasks spawned with `tokio::spawn` that a trace saw.
    pub seen_tasks: u64,
    /// Processes that own traced channels.
    pub mailbox_owners: u64,
    /// Registered names.
    pub registered_names: u64,
}

/// Callsites of a node, by source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsiteCounts {
    /// `#[traced]` functions.
    pub traced: u64,
    /// `tracing` spans reached so far.
    pub spans: u64,
    /// `tracing` events reached so far.
    pub events: u64,
}

/// A running trace or profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Its slot on the node (0-31).
    pub slot: u32,
    /// `trace` or `profile`.
    pub kind: String,
    /// Events delivered so far.
    pub delivered: u64,
    /// Its limits.
    pub limits: Limits,
}
