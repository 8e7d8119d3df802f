//! Profiles: what cprof, eprof and fprof measure inside a node, shipped as
//! aggregates (never per-call events), so a profile's cost and size do not
//! grow with its length.

use serde::{Deserialize, Serialize};

use crate::{Pattern, Pid, Processes};

/// Where `nodetrace profile -- CMD` listens for the command's agent to
/// connect back: `HOST:PORT`, in the command's environment.
pub const PROFILER_ADDR_ENV: &str = "NODETRACE_PROFILER";

/// The one-time cookie of that connection, in the command's environment.
pub const PROFILER_COOKIE_ENV: &str = "NODETRACE_PROFILER_COOKIE";

/// Which of OTP's profilers a profile is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProfileMode {
    /// Call counts only (`cprof`): no clock is read.
    Cprof,
    /// Calls and own time per function (`eprof`).
    Eprof,
    /// Calls, accumulated and own time, callers and callees (`fprof`).
    Fprof,
    /// Full stacks of every thread, sampled on a CPU-time timer: no
    /// annotation needed (`perf record` style).
    Sample,
}

impl ProfileMode {
    /// The OTP name: `cprof`, `eprof` or `fprof`.
    pub fn name(self) -> &'static str {
        match self {
            ProfileMode::Cprof => "cprof",
            ProfileMode::Eprof => "eprof",
            ProfileMode::Fprof => "fprof",
            ProfileMode::Sample => "sample",
        }
    }
}

/// A profile to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSpec {
    /// The profiler.
    pub mode: ProfileMode,
    /// Samples per second of CPU time (`Sample` only; 0 otherwise).
    pub frequency_hz: u32,
    /// Functions to profile; empty means every traceable function.
    pub patterns: Vec<Pattern>,
    /// Processes whose calls count.
    pub processes: Processes,
    /// Keep a latency histogram per function.
    pub histogram: bool,
    /// Keep the figures per process.
    pub per_process: bool,
    /// Stop after this many milliseconds.
    pub duration_ms: Option<u64>,
    /// Send a snapshot this often, in milliseconds (0: only at the end).
    pub snapshot_ms: u64,
}

/// Latency percentiles of one function, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest call.
    pub max: u64,
}

/// One function's figures (in one process, with `per_process`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionProfile {
    /// The callsite id.
    pub callsite: u32,
    /// The process, with `per_process`.
    pub pid: Option<Pid>,
    /// Completed calls.
    pub calls: u64,
    /// Time in the function itself, its traced callees' time excluded;
    /// for an async function, the time of its polls.
    pub own_ns: u64,
    /// Time from call to return, callees included (wall time for async),
    /// not counted twice for recursive calls.
    pub acc_ns: u64,
    /// For an async function, the time spent in its polls (busy), callees
    /// included.
    pub busy_ns: Option<u64>,
    /// Latency percentiles, with `histogram`.
    pub histogram: Option<Percentiles>,
}

/// Calls from one function to another (`fprof`'s callers and callees).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEdge {
    /// The calling traced function; `None` when the caller is not traced.
    pub caller: Option<u32>,
    /// The called function.
    pub callee: u32,
    /// Calls along this edge.
    pub calls: u64,
    /// The callee's accumulated time along this edge.
    pub acc_ns: u64,
    /// The callee's own time along this edge.
    pub own_ns: u64,
}

/// Own time spent with one stack of traced functions, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSample {
    /// Callsite ids, outermost first.
    pub frames: Vec<u32>,
    /// Own time of the innermost function with this stack.
    pub own_ns: u64,
}

/// One frame of a sampled stack, symbolised in the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SampledFrame {
    /// The demangled function name, without its hash.
    pub function: String,
    /// The source file, when the binary has debug information.
    pub file: Option<String>,
    /// The line, when the binary has debug information.
    pub line: Option<u32>,
}

/// One stack seen by the sampler and how many samples hit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledStack {
    /// The sampled thread's name (its id if it has none).
    pub thread: String,
    /// The process that was running on the thread, in a profile split by
    /// process; `None` outside any process the agent runs.
    pub pid: Option<Pid>,
    /// That process's registered name, if it had one when the profile
    /// ended.
    pub process: Option<String>,
    /// Frames, outermost first; an inlined function is a frame of its own.
    pub frames: Vec<SampledFrame>,
    /// Samples with this stack on this thread.
    pub samples: u64,
}

/// A profile's figures so far; each snapshot holds everything since the
/// profile started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProfileSnapshot {
    /// Nanoseconds since the profile started.
    pub elapsed_ns: u64,
    /// Per function.
    pub functions: Vec<FunctionProfile>,
    /// Per caller and callee (`fprof`).
    pub edges: Vec<CallEdge>,
    /// Per stack (`eprof` and `fprof`): flamegraph material.
    pub stacks: Vec<StackSample>,
    /// The sampler's frequency in Hz (`sample`).
    pub frequency_hz: u32,
    /// Sampled stacks (`sample`); only the final report has them (they are
    /// symbolised once, at the end).
    pub samples: Vec<SampledStack>,
}
