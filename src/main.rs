//! `nodetrace`: the tracer node's command line.
//!
//! Dispatch only: parsing here, the work in `nodetrace-tracer` and
//! `nodetrace-profiler` (and the guided tour in `demo`).

mod demo;
mod help;
mod probe;

use std::ffi::OsString;
use std::fs::File;
use std::io::IsTerminal;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use nodetrace_profiler::session::DEFAULT_DURATION_MS;
use nodetrace_profiler::tc::{self, TcOptions};
use nodetrace_profiler::{
    Interrupt, Interrupts, Outputs, ProfileError, ProfileRequest, ReportOptions, Sort,
    profile_command, profile_node,
};
use nodetrace_tracer::export::Timeline;
use nodetrace_tracer::export::otlp::OtlpConfig;
use nodetrace_tracer::protocol::home::Home;
use nodetrace_tracer::protocol::{
    Level, Limits, LogSpec, Pattern, Processes, ProfileMode, ProfileSpec, Rate, TopSort, TopSpec,
    TraceSpec,
};
use nodetrace_tracer::spec::{self, DEFAULT_TEXT_BOUND, PatternArg};
use nodetrace_tracer::stream::{self, TraceRun};
use nodetrace_tracer::{
    Connection, Credentials, Format, StopSignal, TracerError, commands, resolve, suggest, top,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook::iterator::{Signals, SignalsInfo};
use signal_hook::low_level::siginfo::Cause;

/// Live tracing for Rust services, the way BEAM's dbg and sys do it.
///
/// A node (a service linking nodetrace-agent) registers itself under a name;
/// nodetrace finds it, proves the node's cookie, switches tracing on for
/// exactly what you ask, prints what happens, and switches it off again.
#[derive(Debug, Parser)]
#[command(
    name = "nodetrace",
    version,
    propagate_version = true,
    disable_help_subcommand = true,
    after_help = "`nodetrace help patterns` states the pattern grammar."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Lists the running nodes: name, OS pid, address, start time (like
    /// `epmd -names`).
    Nodes(FormatArg),
    /// Traces function calls or messages on one or more nodes (`dbg:tp`,
    /// `dbg:p`).
    #[command(subcommand)]
    Trace(TraceCmd),
    /// Ends every trace on the node and switches all tracing off
    /// (`dbg:stop_clear()`); prints how many traces it ended.
    StopClear(StopClearArgs),
    /// gen_server tools: trace a server's messages and states, read its
    /// state or its counters (`sys:trace`, `sys:get_state`,
    /// `sys:statistics`).
    #[command(subcommand)]
    Sys(SysCmd),
    /// Lists the node's traceable functions, `module:function/arity
    /// file:line`: `#[traced]` functions and the `tracing` spans reached so
    /// far.
    Ls(LsArgs),
    /// Streams the node's `tracing` events (and `log` records bridged into
    /// `tracing`) as log lines, from now on: only what is asked is switched
    /// on, at LEVEL and above, for as long as this runs; the app's own log
    /// output is left as it was. Same limits as `trace`.
    ///
    /// The node must have `nodetrace_agent::tracing_layer()` in its
    /// subscriber.
    #[command(
        after_help = "Examples:\n  nodetrace log kv --level debug --max 50\n  nodetrace log 'kv::store' --level trace --process kv_store --match key=\n  nodetrace log --level warn --duration 1m --format json"
    )]
    Log(LogArgs),
    /// Lists the node's processes: pid, name, kind, a task's state, polls,
    /// busy and idle time, mailbox length, messages in and handled, start
    /// time.
    ///
    /// Processes are gen_servers, tasks spawned with
    /// `nodetrace_agent::task::spawn`, tasks a trace saw run traced code
    /// (`task (seen)`), named processes and the owners of traced channels.
    /// The node times task polls only while observed: the first `ps`,
    /// `top` or `info` starts it, for 60 s after the last.
    Ps(PsArgs),
    /// A live view of the busiest processes of one or more nodes, like
    /// observer_cli: the node's uptime, memory, threads, files, CPU, tokio
    /// runtime and the agent's own cost, then processes by busy time, polls,
    /// messages in or mailbox length over the last interval.
    ///
    /// Keys: b p m l sort by busy, polls, messages, mailbox length; s cycles
    /// the sort; space pauses; tab shows the next node; q quits. When stdout
    /// is not a terminal (or with --once) it prints one snapshot after one
    /// interval and exits; --format json prints one object per node and
    /// interval. It never switches tracing on.
    #[command(after_help = "Examples:
  nodetrace top --node shop@localhost
  nodetrace top --sort mailbox --limit 10 --once
  nodetrace top --node a --node b --interval 5s --format json")]
    Top(TopArgs),
    /// The node's system information: versions, uptime, memory, threads,
    /// open files, tokio runtime, processes by kind, callsites by source,
    /// the traces and profiles running and their limits.
    Info(PsArgs),
    /// Profiles a running node for a while, or a command from its start to
    /// its exit: cprof (call counts), eprof (own time), fprof (call graph),
    /// sample (sampled stacks of every thread, no annotation).
    ///
    /// With --node (or no command: the only running node) the profile runs
    /// for --duration (default 10s) and the report follows. With `-- CMD
    /// ARGS` nodetrace starts the command (it must link nodetrace-agent and
    /// call node::start), which connects back and is profiled from its
    /// start-up to its exit; its output comes first, then the report, and
    /// its exit code is nodetrace's.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Times a command like `:timer.tc`: warm-up runs (not measured), then
    /// RUNS timed runs; prints min, median, mean, p99 and max wall time of
    /// the runs that succeeded and lists the failed ones (exit status 1 if
    /// any failed).
    #[command(
        after_help = "Examples:\n  nodetrace tc -- sleep 0.1\n  nodetrace tc -n 20 --warmup 3 --format json -- ./target/release/my-service --once"
    )]
    Tc(TcArgs),
    /// Starts a Todo node in a temporary home, drives it with HTTP requests
    /// and runs each command on it, printing how to do the same by hand.
    Demo,
    /// Prints a shell completion script: bash, zsh, fish, powershell or
    /// elvish.
    #[command(
        after_help = "Install (see the README for each shell):\n  nodetrace completions bash > ~/.local/share/bash-completion/completions/nodetrace\n  nodetrace completions zsh > ~/.zfunc/_nodetrace\n  nodetrace completions fish > ~/.config/fish/completions/nodetrace.fish"
    )]
    Completions(CompletionsArgs),
    /// Writes a man page for nodetrace and one for each of its commands
    /// (nodetrace.1, nodetrace-trace-calls.1, ...) into DIR.
    #[command(after_help = "Install:\n  nodetrace man ~/.local/share/man/man1 && man nodetrace")]
    Man(ManArgs),
    /// Prints the help of nodetrace, of a command (`help trace calls`), or
    /// of a topic: `help patterns` states the pattern grammar.
    Help(HelpArgs),
}

/// Which node, for a command that talks to one.
#[derive(Debug, Args)]
struct NodeArg {
    /// The node: a registered name (todo@localhost, or just todo) or
    /// HOST:PORT [default: the only running node].
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
    /// The cookie the node knows [default: NODETRACE_COOKIE, else the cookie
    /// file of the nodetrace home: $NODETRACE_HOME/cookie or ~/.nodetrace/cookie].
    #[arg(long, value_name = "COOKIE")]
    cookie: Option<String>,
}

/// Which nodes, for a command that talks to several at once.
#[derive(Debug, Args)]
struct NodesArg {
    /// The node: a registered name (todo@localhost, or just todo) or
    /// HOST:PORT [default: the only running node]; repeat it for several
    /// nodes at once.
    #[arg(long, value_name = "NODE")]
    node: Vec<String>,
    /// The cookie the nodes know [default: NODETRACE_COOKIE, else the cookie
    /// file of the nodetrace home: $NODETRACE_HOME/cookie or ~/.nodetrace/cookie].
    #[arg(long, value_name = "COOKIE")]
    cookie: Option<String>,
}

#[derive(Debug, Subcommand)]
enum TraceCmd {
    /// Traces calls of the functions PATTERN selects, like `dbg:tp`.
    ///
    /// PATTERN is `Module[:function][/arity][ -> return]`, in Erlang
    /// (MyApp.Server) or Rust (my_app::server) spelling; `nodetrace help
    /// patterns` gives the grammar. With no --max, --rate or --duration the
    /// trace stops itself after 1000 events or 60 s; '*' (everything) needs
    /// an explicit limit.
    #[command(
        after_help = "Examples:\n  nodetrace trace calls MyApp.Server --max 20\n  nodetrace trace calls 'my_app::server:handle_*/3' --return --process my_server\n  nodetrace trace calls 'my_app::*' --rate 100/1s --duration 30s --format json"
    )]
    Calls(CallsArgs),
    /// Traces messages processes send and receive, like `dbg:p(P, [m])`.
    #[command(
        after_help = "Examples:\n  nodetrace trace messages --process my_server --max 20\n  nodetrace trace messages --send --all --rate 10/1s"
    )]
    Messages(MessagesArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("probed").args(["pid", "command"]))]
struct CallsArgs {
    /// What to trace: MyApp.Server, my_app::server, MyApp.Server:handle_call/3,
    /// my_app::*, MyApp.Server:handle_* ... (quote it: 'PATTERN -> return').
    #[arg(required = true, value_name = "PATTERN", value_parser = spec::parse_trace_pattern)]
    patterns: Vec<PatternArg>,
    #[command(flatten)]
    processes: ProcessArgs,
    /// Also show what each call returns (`return_trace`), with its duration.
    #[arg(long = "return")]
    returns: bool,
    /// Also show each poll of a traced async function (and each enter of a
    /// traced span): `in` when it runs, `out` when it yields, like BEAM's
    /// `running` trace. A Perfetto timeline always has them, drawn inside
    /// each async call (a Chrome timeline cannot draw them).
    #[arg(long)]
    polls: bool,
    /// Also trace the messages the processes send and receive, like
    /// `dbg:p(P, [c, m])`. With --otlp a message is an event of the span
    /// running where it was sent or received, and links the two spans (the
    /// span that handles it, when none was running at the receive); in a
    /// timeline, instants joined by a flow.
    #[arg(long)]
    messages: bool,
    /// Do not capture arguments: `call m:f/2` instead of `call m:f(a, b)`.
    #[arg(long)]
    no_args: bool,
    /// Only calls whose formatted arguments contain TEXT.
    #[arg(long = "match", value_name = "TEXT")]
    arg_match: Option<String>,
    /// Trace process PID, which needs no agent: uprobes on the functions
    /// PATTERN selects by their Rust paths (Linux x86-64, as root). Each
    /// call shows its thread (<tid N>) and its arguments: by name and type
    /// when the binary has debug info (a &str read from memory, later),
    /// else the argument registers raw (rdi, rsi, rdx, rcx, r8, r9); /N
    /// shows N of them. --return probes each function's return
    /// instructions: rax and the time since the call. Every call pays a
    /// kernel trap, whatever --rate shows. On a node's pid, its #[traced]
    /// functions are left to its agent (--node), the rest probed.
    #[arg(long, value_name = "PID", conflicts_with = "node")]
    pid: Option<u32>,
    /// Trace a command started here, as --pid traces a running process:
    /// it is held before its first instruction until the probes are in
    /// place, runs with nodetrace's stdin, stdout and stderr (--output
    /// keeps the trace apart), and nodetrace exits with its exit code.
    #[arg(last = true, value_name = "CMD", conflicts_with_all = ["node", "pid"])]
    command: Vec<OsString>,
    /// With --pid or -- CMD: search the shared libraries the process has
    /// mapped too, their C functions named LIBRARY:SYMBOL after the file
    /// (libc:getpid). A command runs to its entry point first, the loader
    /// having mapped the libraries it links (their initializers run
    /// unprobed); libraries loaded later (dlopen) are not searched.
    #[arg(long, requires = "probed")]
    libs: bool,
    /// Also export each call as an OpenTelemetry span over OTLP/HTTP to URL
    /// (`/v1/traces` added to a URL with no path) [default:
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT,
    /// else http://localhost:4318]; headers from OTEL_EXPORTER_OTLP_HEADERS.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", env = "NODETRACE_OTLP_ENDPOINT")]
    otlp: Option<String>,
    #[command(flatten)]
    common: TraceArgs,
}

#[derive(Debug, Args)]
struct LogArgs {
    /// Only events whose module path or target is this module or inside
    /// it: kv, kv::store, Kv.Store [default: every event].
    #[arg(value_name = "PATTERN", value_parser = spec::parse_log_pattern)]
    pattern: Option<PatternArg>,
    /// This level and the less verbose ones: trace, debug, info, warn, error.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    level: Level,
    #[command(flatten)]
    processes: ProcessArgs,
    /// Only events whose message and fields contain TEXT.
    #[arg(long = "match", value_name = "TEXT")]
    text_match: Option<String>,
    #[command(flatten)]
    common: TraceArgs,
}

fn parse_level(text: &str) -> Result<Level, String> {
    text.parse()
}

#[derive(Debug, Args)]
struct MessagesArgs {
    #[command(flatten)]
    processes: ProcessArgs,
    /// Messages the processes send (with --receive: both; neither: both).
    #[arg(long)]
    send: bool,
    /// Messages the processes receive.
    #[arg(long)]
    receive: bool,
    #[command(flatten)]
    common: TraceArgs,
}

#[derive(Debug, Default, Args)]
struct ProcessArgs {
    /// Only this process, by pid (<0.12.0>) or registered name
    /// (my_server); repeatable [default: --all].
    #[arg(long = "process", value_name = "PID|NAME")]
    process: Vec<String>,
    /// All processes, present and future.
    #[arg(long, conflicts_with_all = ["process", "new", "existing"])]
    all: bool,
    /// Only processes started from now on.
    #[arg(long, conflicts_with_all = ["process", "existing"])]
    new: bool,
    /// Only processes that exist now.
    #[arg(long, conflicts_with = "process")]
    existing: bool,
}

impl ProcessArgs {
    fn to_processes(&self) -> Processes {
        if !self.process.is_empty() {
            Processes::Some(self.process.clone())
        } else if self.new {
            Processes::New
        } else if self.existing {
            Processes::Existing
        } else {
            Processes::All
        }
    }

    fn describe(&self) -> String {
        match self.to_processes() {
            Processes::Some(names) => names.join(", "),
            Processes::All => "all processes".to_owned(),
            Processes::New => "new processes".to_owned(),
            Processes::Existing => "existing processes".to_owned(),
        }
    }
}

#[derive(Debug, Args)]
struct TraceArgs {
    /// Stop after N events (counted in the node).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max: Option<u64>,
    /// Show at most N events per DURATION, dropping (and counting) the rest:
    /// 100/1s, 10/500ms.
    #[arg(long, value_name = "N/DURATION", value_parser = spec::parse_rate)]
    rate: Option<Rate>,
    /// Stop after DURATION: 500ms, 10s, 2m.
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration)]
    duration: Option<u64>,
    /// Bound on each argument, value or message text, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_TEXT_BOUND)]
    text_bound: u32,
    /// text: lines for people; json: one JSON object a line (see
    /// docs/json.md); perfetto: a Perfetto trace (protobuf, for
    /// ui.perfetto.dev); chrome: Chrome trace-event JSON (chrome://tracing).
    /// perfetto and chrome need --output.
    #[arg(long, value_enum, default_value_t = TraceFormatOpt::Text)]
    format: TraceFormatOpt,
    /// Write the events to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    nodes: NodesArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TraceFormatOpt {
    Text,
    Json,
    Perfetto,
    Chrome,
}

impl TraceArgs {
    fn format(&self) -> Format {
        match self.format {
            TraceFormatOpt::Json => Format::Json,
            _ => Format::Text,
        }
    }

    fn timeline(&self) -> Option<Timeline> {
        match self.format {
            TraceFormatOpt::Perfetto => Some(Timeline::Perfetto),
            TraceFormatOpt::Chrome => Some(Timeline::Chrome),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
struct FormatArg {
    /// text: lines for people; json: one JSON object a line (see docs/json.md).
    #[arg(long, value_enum, default_value_t = FormatOpt::Text)]
    format: FormatOpt,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatOpt {
    Text,
    Json,
}

impl FormatArg {
    fn get(&self) -> Format {
        match self.format {
            FormatOpt::Text => Format::Text,
            FormatOpt::Json => Format::Json,
        }
    }
}

#[derive(Debug, Args)]
struct StopClearArgs {
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    nodes: NodesArg,
}

#[derive(Debug, Args)]
struct TopArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// Time between refreshes.
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration, default_value = "1s")]
    interval: u64,
    /// The order of the processes.
    #[arg(long, value_enum, default_value_t = TopSortOpt::Busy)]
    sort: TopSortOpt,
    /// At most this many processes a node.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Print one snapshot after one interval and exit, even on a terminal.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TopSortOpt {
    /// Time in polls.
    Busy,
    /// Polls.
    Polls,
    /// Messages in.
    Messages,
    /// Mailbox length now.
    Mailbox,
}

impl TopSortOpt {
    fn get(self) -> TopSort {
        match self {
            TopSortOpt::Busy => TopSort::Busy,
            TopSortOpt::Polls => TopSort::Polls,
            TopSortOpt::Messages => TopSort::Messages,
            TopSortOpt::Mailbox => TopSort::Mailbox,
        }
    }
}

#[derive(Debug, Args)]
struct PsArgs {
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    node: NodeArg,
}

#[derive(Debug, Subcommand)]
enum ProfileCmd {
    /// Counts the calls of each function, like OTP's cprof: no clock is
    /// read, so it is the cheapest profile.
    #[command(
        after_help = "Examples:\n  nodetrace profile cprof --node my_app@localhost --duration 5s\n  nodetrace profile cprof 'my_app::*' -- ./target/release/my-service --once"
    )]
    Cprof(CprofArgs),
    /// Calls and own time of each function (time in the function itself,
    /// not in the traced functions it calls), like OTP's eprof: `FUNCTION
    /// CALLS % TIME [uS / CALLS]`, hot spots last.
    #[command(
        after_help = "Examples:\n  nodetrace profile eprof --node my_app@localhost --duration 5s\n  nodetrace profile eprof --histogram --sort calls --format json -- ./my-service --once\n  nodetrace profile eprof MyApp.Server --per-process --flamegraph server.svg --duration 10s"
    )]
    Eprof(EprofArgs),
    /// The call graph, like OTP's fprof: for each function its calls,
    /// accumulated (ACC) and own (OWN) time, with its callers above and its
    /// callees below.
    #[command(
        after_help = "Examples:\n  nodetrace profile fprof MyApp.Server --duration 2s --flamegraph server.svg\n  nodetrace profile fprof 'my_app::*' --folded stacks.txt -- ./my-service --once"
    )]
    Fprof(FprofArgs),
    /// Samples the full stacks of every thread of the node at a frequency
    /// of its CPU time, like `perf record`: no #[traced] needed, no
    /// privileges. The text report shows the top functions by self and by
    /// total samples, like `perf report --stdio`'s first screen.
    #[command(
        after_help = "The node runs a sample profile for at most 5 min (a command's too) and at most 1000 Hz; nothing of the sampler (timer, SIGPROF handler) is installed before the first one or left after it.\n\nExamples:\n  nodetrace profile sample --node my_app@localhost --duration 5s\n  nodetrace profile sample --duration 10s --flamegraph cpu.svg --pprof cpu.pb.gz\n  nodetrace profile sample --frequency 999 --folded stacks.txt -- ./target/release/my-service --once"
    )]
    Sample(SampleArgs),
}

#[derive(Debug, Args)]
struct SampleArgs {
    /// Samples per second of CPU time, 1 to 1000.
    #[arg(long, value_name = "HZ", default_value_t = 99, value_parser = clap::value_parser!(u32).range(1..=1000))]
    frequency: u32,
    /// Also draw a flamegraph SVG (one tower per thread, or per process
    /// with --per-process).
    #[arg(long, value_name = "FILE.svg")]
    flamegraph: Option<PathBuf>,
    /// Also write folded stacks, `thread;outer;inner samples` a line.
    #[arg(long, value_name = "FILE")]
    folded: Option<PathBuf>,
    /// Also write the stacks for speedscope (its JSON file format).
    #[arg(long, value_name = "FILE.json")]
    speedscope: Option<PathBuf>,
    /// Also write a pprof profile (protobuf; gzipped if FILE ends in .gz),
    /// as `go tool pprof` reads it.
    #[arg(long, value_name = "FILE.pb.gz")]
    pprof: Option<PathBuf>,
    /// Split the samples by the process that was running on the thread
    /// (named tasks and gen_servers; other samples stay with their
    /// thread): a table per process, and a tower per process in the
    /// flamegraph.
    #[arg(long)]
    per_process: bool,
    /// Sample for DURATION: 500ms, 10s, 2m [default: 10s on a running
    /// node; a command's whole run, at most 5 min].
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration)]
    duration: Option<u64>,
    #[command(flatten)]
    target: ProfileTarget,
}

#[derive(Debug, Args)]
struct CprofArgs {
    /// Count the calls of process PID, which needs no agent: a uprobe on
    /// each function PATTERN selects by its Rust path [default: the
    /// functions of the crate that defines `main`] (Linux x86-64, as
    /// root). The kernel counts when no other process runs the binary;
    /// every call pays a trap. On a node's pid, its #[traced] functions
    /// are left to its agent (--node), the rest probed.
    #[arg(long, value_name = "PID", conflicts_with_all = ["node", "command"])]
    pid: Option<u32>,
    /// With --pid: count functions of the shared libraries it has mapped
    /// too, their C functions named LIBRARY:SYMBOL after the file
    /// (libc:getpid); always counted by samples, other processes mapping
    /// the same files.
    #[arg(long, requires = "pid")]
    libs: bool,
    #[command(flatten)]
    common: ProfileArgs,
}

#[derive(Debug, Args)]
struct EprofArgs {
    /// One table per process.
    #[arg(long)]
    per_process: bool,
    #[command(flatten)]
    timed: TimedArgs,
    #[command(flatten)]
    common: ProfileArgs,
}

#[derive(Debug, Args)]
struct FprofArgs {
    #[command(flatten)]
    timed: TimedArgs,
    #[command(flatten)]
    common: ProfileArgs,
}

/// What the profiles that read a clock can add.
#[derive(Debug, Args)]
struct TimedArgs {
    /// Add latency percentiles per function (p50, p90, p99, p99.9, max).
    #[arg(long)]
    histogram: bool,
    /// Also draw a flamegraph SVG.
    #[arg(long, value_name = "FILE.svg")]
    flamegraph: Option<PathBuf>,
    /// Also write folded stacks, `outer;inner own_ns` a line.
    #[arg(long, value_name = "FILE")]
    folded: Option<PathBuf>,
    /// Also write the stacks for speedscope (its JSON file format).
    #[arg(long, value_name = "FILE.json")]
    speedscope: Option<PathBuf>,
}

/// What every profile mode shares: where the report goes, and which node
/// or command it profiles.
#[derive(Debug, Args)]
struct ProfileTarget {
    #[command(flatten)]
    format: FormatArg,
    /// Write the report to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// How long the command may take to connect back before it is killed.
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration, default_value = "5s")]
    connect_timeout: u64,
    /// The running node to profile: a registered name or HOST:PORT
    /// [default: the only running node, unless a command is given].
    #[arg(long, value_name = "NODE", conflicts_with = "command")]
    node: Option<String>,
    /// The cookie the running node knows [default: NODETRACE_COOKIE, else
    /// the cookie file of the nodetrace home]; a command gets a one-time
    /// cookie.
    #[arg(long, value_name = "COOKIE", conflicts_with = "command")]
    cookie: Option<String>,
    /// The command to profile, after `--`; it must link nodetrace-agent.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct ProfileArgs {
    /// Functions to profile: MyApp.Server, my_app::*, MyApp.Server:handle_*
    /// ... [default: every traceable function].
    #[arg(value_name = "PATTERN", value_parser = spec::parse_pattern)]
    patterns: Vec<PatternArg>,
    #[command(flatten)]
    processes: ProcessArgs,
    /// Profile for DURATION: 500ms, 10s, 2m [default: 10s on a running
    /// node; a command's whole run].
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration)]
    duration: Option<u64>,
    /// How often the node sends its figures so far (kept in case it dies
    /// before its final report).
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration, default_value = "500ms")]
    interval: u64,
    /// Row order [default: eprof time (hot spots last), fprof acc, cprof
    /// calls].
    #[arg(long, value_enum)]
    sort: Option<SortOpt>,
    /// Also write a pprof profile (protobuf; gzipped if FILE ends in .gz),
    /// as `go tool pprof` reads it: cprof's calls per function, eprof's and
    /// fprof's own time per stack.
    #[arg(long, value_name = "FILE.pb.gz")]
    pprof: Option<PathBuf>,
    #[command(flatten)]
    target: ProfileTarget,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SortOpt {
    /// Own time, smallest first (eprof's order: hot spots last).
    Time,
    /// Calls, most first.
    Calls,
    /// Own time, most first.
    Own,
    /// Accumulated time, most first.
    Acc,
    /// By name.
    Name,
}

impl From<SortOpt> for Sort {
    fn from(s: SortOpt) -> Sort {
        match s {
            SortOpt::Time => Sort::Time,
            SortOpt::Calls => Sort::Calls,
            SortOpt::Own => Sort::Own,
            SortOpt::Acc => Sort::Acc,
            SortOpt::Name => Sort::Name,
        }
    }
}

#[derive(Debug, Args)]
struct TcArgs {
    /// Timed runs.
    #[arg(short = 'n', long = "runs", value_name = "RUNS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Runs before the timed ones, not measured.
    #[arg(long, value_name = "N", default_value_t = 0)]
    warmup: u32,
    /// Let the command write to the terminal (discarded otherwise).
    #[arg(long)]
    show_output: bool,
    #[command(flatten)]
    format: FormatArg,
    /// The command to time, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Only functions this pattern selects (MyApp.Server, my_app::*, ...).
    #[arg(value_name = "PATTERN", value_parser = spec::parse_pattern)]
    pattern: Option<PatternArg>,
    /// List the functions of process PID's binary that can be probed (no
    /// agent needed; Linux): `address size path file:line`, the address as
    /// in the binary, file:line where its debug info says.
    #[arg(long, value_name = "PID", conflicts_with = "node")]
    pid: Option<u32>,
    /// With --pid: list the functions of the shared libraries it has
    /// mapped too, each line ending [LIBRARY]; their C functions are named
    /// LIBRARY::SYMBOL after the file (libc::getpid, libc:getpid as a
    /// pattern).
    #[arg(long, requires = "pid")]
    libs: bool,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    node: NodeArg,
}

#[derive(Debug, Subcommand)]
enum SysCmd {
    /// Shows a gen_server's messages and new states as they happen
    /// (`sys:trace(Name, true)`), with the same limits as `trace`.
    ///
    /// `off` has nothing to switch off: sys tracing lasts as long as the
    /// `sys trace NAME` that started it (Ctrl-C, its limit, or `nodetrace
    /// stop-clear`).
    Trace(SysTraceArgs),
    /// Prints a gen_server's state (`sys:get_state`).
    GetState(SysTargetArgs),
    /// Prints a gen_server's counters (`sys:statistics`).
    Statistics(SysTargetArgs),
}

#[derive(Debug, Args)]
struct SysTraceArgs {
    /// The gen_server: registered name (my_server) or pid.
    #[arg(value_name = "NAME")]
    name: String,
    /// on: trace it now; off: explains how sys tracing ends.
    #[arg(value_enum, default_value_t = OnOff::On)]
    switch: OnOff,
    #[command(flatten)]
    common: TraceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
struct SysTargetArgs {
    /// The gen_server: registered name (my_server) or pid.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    node: NodeArg,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
struct ManArgs {
    /// Where to write the pages (a man1 directory on MANPATH, or any).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct HelpArgs {
    /// A command (`trace calls`) or a topic (`patterns`).
    #[arg(value_name = "COMMAND|TOPIC")]
    topic: Vec<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nodetrace: {err:#}");
            let code = err.chain().find_map(|cause| {
                cause
                    .downcast_ref::<TracerError>()
                    .map(TracerError::exit_code)
                    .or_else(|| {
                        cause
                            .downcast_ref::<nodetrace_probe::ProbeError>()
                            .and_then(nodetrace_probe::ProbeError::exit_code)
                    })
                    .or_else(|| {
                        cause
                            .downcast_ref::<ProfileError>()
                            .map(|e| u8::try_from(e.exit_code()).unwrap_or(1))
                    })
            });
            ExitCode::from(code.unwrap_or(1))
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<TracerError>()
            .is_some_and(TracerError::is_broken_pipe)
            || cause
                .downcast_ref::<ProfileError>()
                .is_some_and(ProfileError::is_broken_pipe)
            || cause
                .downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Nodes(format) => {
            let home = Home::from_env()?;
            let mut out = io::stdout().lock();
            let n = commands::nodes(&home, &mut out, format.get())?;
            if n == 0 && format.get() == Format::Text {
                eprintln!(
                    "no nodes are running (none registered in {})",
                    resolve::nodes_dir(&home).display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Trace(TraceCmd::Calls(args)) => trace_calls(args),
        Cmd::Trace(TraceCmd::Messages(args)) => trace_messages(args),
        Cmd::Log(args) => log(args),
        Cmd::StopClear(args) => {
            let home = Home::from_env()?;
            let credentials = Credentials::resolve(args.nodes.cookie.as_deref(), &home)?;
            let mut out = io::stdout().lock();
            for target in resolve::resolve_all(&home, &args.nodes.node)? {
                let mut conn = Connection::open(&target, &credentials)?;
                let traces = commands::stop_clear(&mut conn)?;
                commands::render_cleared(&mut out, conn.name(), traces, args.format.get())
                    .map_err(TracerError::Output)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sys(SysCmd::Trace(args)) => sys_trace(args),
        Cmd::Sys(SysCmd::GetState(args)) => {
            let mut conn = connect_one(&args.node, "sys get-state")?;
            commands::check_process_names(&mut conn, std::slice::from_ref(&args.name))?;
            let state = commands::get_state(&mut conn, &args.name)?;
            commands::render_state(
                &mut io::stdout().lock(),
                conn.name(),
                &args.name,
                &state,
                args.format.get(),
            )
            .map_err(TracerError::Output)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sys(SysCmd::Statistics(args)) => {
            let mut conn = connect_one(&args.node, "sys statistics")?;
            commands::check_process_names(&mut conn, std::slice::from_ref(&args.name))?;
            let stats = commands::statistics(&mut conn, &args.name)?;
            commands::render_statistics(
                &mut io::stdout().lock(),
                conn.name(),
                &args.name,
                &stats,
                args.format.get(),
            )
            .map_err(TracerError::Output)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ls(LsArgs {
            pid: Some(pid),
            libs,
            pattern,
            format,
            ..
        }) => probe::ls(pid, libs, pattern.as_ref(), format.get()),
        Cmd::Ls(args) => {
            let mut conn = connect_one(&args.node, "ls")?;
            let list =
                commands::callsites(&mut conn, args.pattern.as_ref().map(|p| p.pattern.clone()))?;
            if let (true, Some(typed)) = (list.is_empty(), &args.pattern) {
                let all = commands::callsites(&mut conn, None)?;
                let typed = [typed.text.clone()];
                return Err(TracerError::NoMatch(format!(
                    "no traceable function on {} matches {}{}",
                    conn.name(),
                    typed[0],
                    suggest::did_you_mean(&typed, &all)
                ))
                .into());
            }
            commands::render_callsites(
                &mut io::stdout().lock(),
                conn.name(),
                &list,
                args.format.get(),
            )
            .map_err(TracerError::Output)?;
            if conn.node().tracing_bridge && args.format.get() == Format::Text {
                eprintln!(
                    "{}: `tracing` spans are listed once first reached; a pattern set before that waits for them",
                    conn.name()
                );
            }
            if list.is_empty() && args.format.get() == Format::Text {
                eprintln!("{}: the node has no traceable function", conn.name());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ps(args) => {
            let mut conn = connect_one(&args.node, "ps")?;
            let list = commands::processes(&mut conn)?;
            commands::render_processes(
                &mut io::stdout().lock(),
                conn.name(),
                &list.rows,
                args.format.get(),
            )
            .map_err(TracerError::Output)?;
            if list.observed_for_ms < 1000 && list.rows.iter().any(|r| r.task.is_some()) {
                eprintln!(
                    "{}: task polls are timed only while the node is observed, and this `ps` just began it: run it again (or `nodetrace top`) for figures",
                    conn.name()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Top(args) => top(args),
        Cmd::Info(args) => {
            let mut conn = connect_one(&args.node, "info")?;
            let info = nodetrace_tracer::info::info(&mut conn)?;
            nodetrace_tracer::info::render_info(
                &mut io::stdout().lock(),
                conn.node(),
                &info,
                args.format.get(),
            )
            .map_err(TracerError::Output)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Profile(ProfileCmd::Cprof(CprofArgs {
            pid: Some(pid),
            libs,
            common,
        })) => cprof_probed(pid, libs, common),
        Cmd::Profile(ProfileCmd::Cprof(args)) => profile(
            ProfileMode::Cprof,
            args.common,
            &TimedArgs {
                histogram: false,
                flamegraph: None,
                folded: None,
                speedscope: None,
            },
            false,
        ),
        Cmd::Profile(ProfileCmd::Eprof(args)) => profile(
            ProfileMode::Eprof,
            args.common,
            &args.timed,
            args.per_process,
        ),
        Cmd::Profile(ProfileCmd::Fprof(args)) => {
            profile(ProfileMode::Fprof, args.common, &args.timed, false)
        }
        Cmd::Profile(ProfileCmd::Sample(args)) => sample(args),
        Cmd::Tc(args) => timer_tc(args),
        Cmd::Demo => demo::run(),
        Cmd::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "nodetrace",
                &mut io::stdout().lock(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man(args) => {
            clap_mangen::generate_to(Cli::command(), &args.dir)
                .with_context(|| format!("cannot write the man pages to {}", args.dir.display()))?;
            eprintln!(
                "man pages written to {}; `man nodetrace` reads them when it is on MANPATH",
                args.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Help(args) => help::print(Cli::command(), &args.topic),
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn sample(args: SampleArgs) -> anyhow::Result<ExitCode> {
    let frequency_hz = args.frequency;
    let pprof = args.pprof.clone();
    let common = ProfileArgs {
        patterns: Vec::new(),
        processes: ProcessArgs::default(),
        duration: args.duration,
        // Stacks come only with the final report; periodic snapshots say
        // little more than that the node lives.
        interval: 1000,
        sort: None,
        pprof,
        target: args.target,
    };
    let timed = TimedArgs {
        histogram: false,
        flamegraph: args.flamegraph,
        folded: args.folded,
        speedscope: args.speedscope,
    };
    run_profile(
        ProfileMode::Sample,
        common,
        &timed,
        args.per_process,
        |request| {
            request.spec.frequency_hz = frequency_hz;
        },
    )
}

fn profile(
    mode: ProfileMode,
    args: ProfileArgs,
    timed: &TimedArgs,
    per_process: bool,
) -> anyhow::Result<ExitCode> {
    run_profile(mode, args, timed, per_process, |_| {})
}

fn run_profile(
    mode: ProfileMode,
    args: ProfileArgs,
    timed: &TimedArgs,
    per_process: bool,
    adjust: impl FnOnce(&mut ProfileRequest),
) -> anyhow::Result<ExitCode> {
    let of_command = !args.target.command.is_empty();
    let (duration_ms, default_duration) = match args.duration {
        Some(ms) => (Some(ms), false),
        None if of_command => (None, false),
        None => (Some(DEFAULT_DURATION_MS), true),
    };
    let mut request = ProfileRequest {
        spec: ProfileSpec {
            mode,
            frequency_hz: 0,
            patterns: args.patterns.into_iter().map(|p| p.pattern).collect(),
            processes: args.processes.to_processes(),
            histogram: timed.histogram,
            per_process,
            duration_ms,
            snapshot_ms: args.interval,
        },
        default_duration,
        outputs: Outputs {
            format: args.target.format.get(),
            report: ReportOptions {
                sort: args.sort.map(Sort::from),
                per_process,
                histogram: timed.histogram,
            },
            output: args.target.output,
            flamegraph: timed.flamegraph.clone(),
            folded: timed.folded.clone(),
            speedscope: timed.speedscope.clone(),
            pprof: args.pprof,
        },
    };
    adjust(&mut request);
    request.outputs.check(mode)?;
    if of_command {
        // See `Interrupts`: a terminal's Ctrl-C reaches the command by
        // itself, a signal to nodetrace alone is forwarded to it; the
        // second one kills it.
        let interrupts = install_interrupts(&StopSignal::new())?;
        let timeout = Duration::from_millis(args.target.connect_timeout);
        return match profile_command(
            &args.target.command,
            &request,
            timeout,
            &interrupts,
            &mut io::stderr(),
        ) {
            Ok(code) => Ok(exit_code(code)),
            Err(err) if err.is_broken_pipe() => Ok(ExitCode::SUCCESS),
            Err(err) => {
                eprintln!("nodetrace: {err}");
                Ok(exit_code(err.exit_code()))
            }
        };
    }
    let home = Home::from_env()?;
    let credentials = Credentials::resolve(args.target.cookie.as_deref(), &home)?;
    let target = resolve::resolve_one(&home, args.target.node.as_slice(), "profile")?;
    let stop = StopSignal::new();
    install_stop_signals(&stop)?;
    let complete = profile_node(&target, &credentials, &request, &mut io::stderr(), &stop)?;
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `profile cprof --pid`: counting probes instead of a node.
fn cprof_probed(pid: u32, libs: bool, args: ProfileArgs) -> anyhow::Result<ExitCode> {
    if !args.processes.process.is_empty() || args.processes.new || args.processes.existing {
        return Err(TracerError::Refused(
            "--process, --new and --existing are not built for a probed process (--pid): it counts the calls of every thread".to_owned(),
        )
        .into());
    }
    let outputs = Outputs {
        format: args.target.format.get(),
        report: ReportOptions {
            sort: args.sort.map(Sort::from),
            per_process: false,
            histogram: false,
        },
        output: args.target.output,
        flamegraph: None,
        folded: None,
        speedscope: None,
        pprof: args.pprof,
    };
    outputs.check(ProfileMode::Cprof)?;
    let stop = StopSignal::new();
    let signal = install_stop_signals(&stop)?;
    let run = probe::ProbedCprof {
        pid,
        patterns: &args.patterns,
        duration_ms: args.duration.unwrap_or(DEFAULT_DURATION_MS),
        default_duration: args.duration.is_none(),
        outputs: &outputs,
        libs,
    };
    probe::cprof(&run, &stop)?;
    Ok(after_signal(&signal, ExitCode::SUCCESS))
}

fn timer_tc(args: TcArgs) -> anyhow::Result<ExitCode> {
    let options = TcOptions {
        command: args.command,
        runs: args.runs,
        warmup: args.warmup,
        show_output: args.show_output,
        progress: true,
    };
    let report = match tc::run(&options) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("nodetrace: {err}");
            return Ok(exit_code(err.exit_code()));
        }
    };
    let mut out = io::stdout().lock();
    tc::write_report(&mut out, &report, args.format.get())
        .and_then(|()| out.flush())
        .map_err(TracerError::Output)?;
    Ok(if report.all_succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `nodetrace top`: the live view on a terminal, else snapshots.
fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    let credentials = Credentials::resolve(args.nodes.cookie.as_deref(), &home)?;
    let mut conns = Vec::new();
    for target in resolve::resolve_all(&home, &args.nodes.node)? {
        conns.push(Connection::open(&target, &credentials)?);
    }
    let interval = Duration::from_millis(args.interval.max(10));
    let sort = args.sort.get();
    let format = args.format.get();
    if !args.once && format == Format::Text && io::stdout().is_terminal() {
        top::view::run(conns, sort, args.limit, interval)?;
        return Ok(ExitCode::SUCCESS);
    }
    let spec = TopSpec {
        sort,
        limit: args.limit,
    };
    // The first refresh starts the interval; the figures are the second's.
    for conn in &mut conns {
        top::refresh(conn, spec)?;
    }
    let stop = StopSignal::new();
    let _signal = install_stop_signals(&stop)?;
    let mut out = io::stdout().lock();
    loop {
        let until = Instant::now() + interval;
        while Instant::now() < until && !stop.is_stopped() {
            std::thread::sleep(Duration::from_millis(20).min(interval));
        }
        if stop.is_stopped() {
            return Ok(ExitCode::SUCCESS);
        }
        for (i, conn) in conns.iter_mut().enumerate() {
            let frame = top::refresh(conn, spec)?;
            if i > 0 && format == Format::Text {
                writeln!(out).map_err(TracerError::Output)?;
            }
            top::render_frame(&mut out, conn.name(), sort, &frame, format)
                .map_err(TracerError::Output)?;
        }
        out.flush().map_err(TracerError::Output)?;
        if args.once || format == Format::Text {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn connect_one(node: &NodeArg, command: &str) -> Result<Connection, TracerError> {
    let home = Home::from_env()?;
    let credentials = Credentials::resolve(node.cookie.as_deref(), &home)?;
    let target = resolve::resolve_one(&home, node.node.as_slice(), command)?;
    Connection::open(&target, &credentials)
}

fn trace_calls(args: CallsArgs) -> anyhow::Result<ExitCode> {
    if args.pid.is_some() || !args.command.is_empty() {
        return trace_calls_probed(&args);
    }
    let typed: Vec<String> = args.patterns.iter().map(|p| p.text.clone()).collect();
    let patterns: Vec<Pattern> = args.patterns.into_iter().map(|p| p.pattern).collect();
    let what = format!(
        "calls of {}{}{}",
        patterns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        in_processes(&args.processes),
        if args.messages {
            " and their processes' messages"
        } else {
            ""
        }
    );
    let spec = TraceSpec {
        log: None,
        patterns,
        processes: args.processes.to_processes(),
        calls: true,
        send: args.messages,
        receive: args.messages,
        sys: Vec::new(),
        args: !args.no_args,
        // A span or a slice ends at its return.
        returns: args.returns || args.otlp.is_some() || args.common.timeline().is_some(),
        polls: args.polls || args.common.timeline() == Some(Timeline::Perfetto),
        text_bound: args.common.text_bound,
        arg_match: args.arg_match,
        limits: Limits::DEFAULT,
    };
    if args.polls && args.common.timeline() == Some(Timeline::Chrome) {
        return Err(TracerError::Refused(
            "--polls is not drawn in a Chrome timeline: use --format perfetto (which always has them), or text or json".into(),
        )
        .into());
    }
    let otlp = match &args.otlp {
        Some(url) => Some(
            OtlpConfig::resolve(Some(url.as_str()), |name| std::env::var(name).ok())
                .map_err(TracerError::Refused)?,
        ),
        None => None,
    };
    trace(spec, what, typed, &args.common, otlp)
}

/// `trace calls --pid` or `-- CMD`: probes, a local source, instead of a
/// node.
fn trace_calls_probed(args: &CallsArgs) -> anyhow::Result<ExitCode> {
    let refuse = |what: &str| -> anyhow::Result<ExitCode> {
        Err(TracerError::Refused(format!(
            "{what} is not built for a probed process (--pid, -- CMD) yet: leave it out, or trace functions marked #[traced] through the agent"
        ))
        .into())
    };
    if args.polls {
        return refuse("--polls");
    }
    if args.messages {
        return refuse("--messages");
    }
    if args.arg_match.is_some() {
        return refuse("--match");
    }
    if args.otlp.is_some() {
        return refuse("--otlp");
    }
    if args.common.timeline().is_some() {
        return refuse("--format perfetto or chrome");
    }
    if !args.processes.process.is_empty() || args.processes.new || args.processes.existing {
        return refuse("--process, --new or --existing");
    }
    let patterns: Vec<Pattern> = args.patterns.iter().map(|p| p.pattern.clone()).collect();
    let limits = spec::choose_limits(
        args.common.max,
        args.common.rate,
        args.common.duration,
        &patterns,
    )
    .map_err(TracerError::Refused)?;
    let mut out: Box<dyn Write> = match &args.common.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let run = probe::ProbedCalls {
        patterns: &args.patterns,
        no_args: args.no_args,
        returns: args.returns,
        limits,
        format: args.common.format(),
        text_bound: args.common.text_bound,
        libs: args.libs,
    };
    let stop = StopSignal::new();
    if let Some(pid) = args.pid {
        let signal = install_stop_signals(&stop)?;
        probe::trace_pid(pid, &run, &mut out, &stop)?;
        return Ok(after_signal(&signal, ExitCode::SUCCESS));
    }
    let interrupts = install_interrupts(&stop)?;
    let code = probe::trace_command(&args.command, &run, &mut out, &stop, &interrupts)?;
    Ok(exit_code(code))
}

fn in_processes(p: &ProcessArgs) -> String {
    if p.process.is_empty() && !p.new && !p.existing {
        String::new()
    } else {
        format!(" in {}", p.describe())
    }
}

fn trace_messages(args: MessagesArgs) -> anyhow::Result<ExitCode> {
    let (send, receive) = match (args.send, args.receive) {
        (false, false) => (true, true),
        both => both,
    };
    let verb = match (send, receive) {
        (true, true) => "sent and received",
        (true, false) => "sent",
        _ => "received",
    };
    let what = format!("messages {verb} by {}", args.processes.describe());
    let spec = TraceSpec {
        log: None,
        patterns: Vec::new(),
        processes: args.processes.to_processes(),
        calls: false,
        send,
        receive,
        sys: Vec::new(),
        args: true,
        returns: false,
        polls: false,
        text_bound: args.common.text_bound,
        arg_match: None,
        limits: Limits::DEFAULT,
    };
    trace(spec, what, Vec::new(), &args.common, None)
}

fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    let module = args.pattern.as_ref().map(|p| p.pattern.clone());
    let what = format!(
        "log events of {} at {} and above{}",
        args.pattern
            .as_ref()
            .map_or("every module", |p| p.text.as_str()),
        args.level.as_str().to_lowercase(),
        in_processes(&args.processes)
    );
    let spec = TraceSpec {
        log: Some(LogSpec {
            pattern: module,
            level: args.level,
        }),
        patterns: Vec::new(),
        processes: args.processes.to_processes(),
        calls: false,
        send: false,
        receive: false,
        sys: Vec::new(),
        args: false,
        returns: false,
        polls: false,
        text_bound: args.common.text_bound,
        arg_match: args.text_match,
        limits: Limits::DEFAULT,
    };
    trace(spec, what, Vec::new(), &args.common, None)
}

fn sys_trace(args: SysTraceArgs) -> anyhow::Result<ExitCode> {
    if args.switch == OnOff::Off {
        eprintln!(
            "sys tracing of {} lasts as long as the `nodetrace sys trace {}` that started it: stop that one (Ctrl-C), or end every trace with `nodetrace stop-clear`",
            args.name, args.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let spec = TraceSpec {
        log: None,
        patterns: Vec::new(),
        processes: Processes::Some(vec![args.name.clone()]),
        calls: false,
        send: false,
        receive: false,
        sys: vec![args.name.clone()],
        args: true,
        returns: false,
        polls: false,
        text_bound: args.common.text_bound,
        arg_match: None,
        limits: Limits::DEFAULT,
    };
    let what = format!("sys events of {}", args.name);
    trace(spec, what, Vec::new(), &args.common, None)
}

fn trace(
    mut spec: TraceSpec,
    what: String,
    typed_patterns: Vec<String>,
    common: &TraceArgs,
    otlp: Option<OtlpConfig>,
) -> anyhow::Result<ExitCode> {
    if let (Some(timeline), None) = (common.timeline(), &common.output) {
        return Err(TracerError::Refused(format!(
            "--format {timeline} writes a file: give it with --output FILE"
        ))
        .into());
    }
    let chosen = spec::choose_limits(common.max, common.rate, common.duration, &spec.patterns)
        .map_err(TracerError::Refused)?;
    spec.limits = chosen.limits;
    let home = Home::from_env()?;
    let credentials = Credentials::resolve(common.nodes.cookie.as_deref(), &home)?;
    let targets = resolve::resolve_all(&home, &common.nodes.node)?;
    let mut out: Box<dyn Write> = match &common.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let stop = StopSignal::new();
    let signal = install_stop_signals(&stop)?;
    let run = TraceRun {
        spec,
        format: common.format(),
        timeline: common.timeline(),
        otlp,
        default_limits: chosen.defaulted,
        what,
        typed_patterns,
    };
    let report = stream::run(
        &targets,
        &credentials,
        &run,
        &mut out,
        &mut io::stderr().lock(),
        &stop,
    )?;
    let _ = out.flush();
    for err in report.errors() {
        eprintln!("nodetrace: {err}");
    }
    let code = if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    Ok(after_signal(&signal, code))
}

/// SIGINT (Ctrl-C) or SIGTERM stops the trace or the profile: each node is
/// sent Stop and the summary is printed. A second one exits at once (the
/// nodes clear the trace of a tracer that went away). Returns the signal
/// that came (0: none yet).
fn install_stop_signals(stop: &StopSignal) -> anyhow::Result<Arc<AtomicI32>> {
    let stop = stop.clone();
    let got = Arc::new(AtomicI32::new(0));
    let seen = got.clone();
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("cannot handle SIGINT and SIGTERM")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if stop.is_stopped() {
                std::process::exit(128 + signal);
            }
            seen.store(signal, Ordering::SeqCst);
            stop.stop();
        }
    });
    Ok(got)
}

/// Records SIGINT and SIGTERM for a command run here (see `Interrupts`:
/// who sent each matters) and stops `stop` at the first.
fn install_interrupts(stop: &StopSignal) -> anyhow::Result<Interrupts> {
    let interrupts = Interrupts::new();
    let hit = interrupts.clone();
    let stop = stop.clone();
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM])
        .context("cannot handle SIGINT and SIGTERM")?;
    std::thread::spawn(move || {
        for info in signals.forever() {
            hit.hit(Interrupt {
                signal: info.signal,
                from_terminal: info.cause == Cause::Kernel,
            });
            stop.stop();
        }
    });
    Ok(interrupts)
}

/// The exit code of a command a signal stopped, as a shell reports it
/// (SIGINT 130, SIGTERM 143), else `otherwise`.
fn after_signal(signal: &AtomicI32, otherwise: ExitCode) -> ExitCode {
    match u8::try_from(128 + signal.load(Ordering::SeqCst)) {
        Ok(code) if code > 128 => ExitCode::from(code),
        _ => otherwise,
    }
}
