//! `--pid PID` and `-- CMD`: `ls` and `trace calls` on a process that has
//! no agent, through uprobes (the `nodetrace-probe` crate). The probes are
//! a local event source of the tracer: the same limits and renderers as a
//! node's trace, with OS threads as the processes.

use std::io::{self, Write};
use std::process::ExitCode;

use nodetrace_probe::{Function, MAX_ARGS, Target};
use nodetrace_tracer::protocol::Pattern;
use nodetrace_tracer::spec::PatternArg;
use nodetrace_tracer::{Format, TracerError};

/// How many functions one trace may probe: each costs a file a thread and
/// a CPU, and a trap on every call.
const MAX_PROBED: usize = 256;

/// `nodetrace ls --pid PID [PATTERN]`: the probeable functions.
pub fn ls(pid: u32, pattern: Option<&PatternArg>, format: Format) -> anyhow::Result<ExitCode> {
    let target = Target::open(pid)?;
    let patterns: Vec<Pattern> = pattern.iter().map(|p| p.pattern.clone()).collect();
    let list: Vec<&Function> = match pattern {
        Some(_) => nodetrace_probe::symbols::select(target.functions(), &patterns),
        None => target.functions().iter().collect(),
    };
    if let (true, Some(typed)) = (list.is_empty(), pattern) {
        return Err(no_match(&target, &typed.text).into());
    }
    nodetrace_probe::symbols::write_list(
        &mut io::stdout().lock(),
        target.binary(),
        &list,
        format == Format::Json,
    )
    .map_err(TracerError::Output)?;
    Ok(ExitCode::SUCCESS)
}

fn no_match(target: &Target, typed: &str) -> TracerError {
    TracerError::NoMatch(format!(
        "no function of {} (pid {}) matches {typed}; `nodetrace ls --pid PID` lists them while it runs",
        target.binary(),
        target.pid(),
    ))
}

/// A function to probe, the argument registers its calls show (a
/// pattern's `/N` shows N, at most six; no arity shows six) and whether
/// its returns are traced.
struct Chosen<'a> {
    function: &'a Function,
    args: u8,
    returns: bool,
}

/// The functions `patterns` select, each once.
fn probes<'a>(
    target: &'a Target,
    patterns: &[PatternArg],
    returns: bool,
) -> Result<Vec<Chosen<'a>>, TracerError> {
    let mut chosen: Vec<Chosen<'a>> = Vec::new();
    for p in patterns {
        let selected =
            nodetrace_probe::symbols::select(target.functions(), std::slice::from_ref(&p.pattern));
        if selected.is_empty() {
            return Err(no_match(target, &p.text));
        }
        let args = p.pattern.arity().map_or(MAX_ARGS, |a| a.min(MAX_ARGS));
        let returns = returns || p.pattern.return_trace();
        for f in selected {
            match chosen.iter_mut().find(|c| c.function.address == f.address) {
                Some(c) => {
                    c.args = c.args.max(args);
                    c.returns |= returns;
                }
                None => chosen.push(Chosen {
                    function: f,
                    args,
                    returns,
                }),
            }
        }
    }
    if chosen.len() > MAX_PROBED {
        return Err(TracerError::Refused(format!(
            "the patterns select {} functions; probes are placed on at most {MAX_PROBED} at once: narrow the pattern (`nodetrace ls --pid {} PATTERN` shows what it selects)",
            chosen.len(),
            target.pid()
        )));
    }
    Ok(chosen)
}

/// What `trace calls --pid` or `trace calls -- CMD` was asked.
pub struct ProbedCalls<'a> {
    /// The patterns as typed and parsed.
    pub patterns: &'a [PatternArg],
    /// `--no-args`.
    pub no_args: bool,
    /// `--return`: every pattern's returns (else only those of patterns
    /// written `PATTERN -> return`).
    pub returns: bool,
    /// The limits chosen.
    pub limits: nodetrace_tracer::spec::ChosenLimits,
    /// Text or JSON.
    pub format: Format,
}

/// The probes of a trace placed, and the trace they feed.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn place(
    run: &ProbedCalls<'_>,
    target: &Target,
) -> anyhow::Result<(nodetrace_tracer::local::LocalRun, Probed)> {
    use nodetrace_probe::ProbeSpec;
    use nodetrace_tracer::local::LocalRun;
    use nodetrace_tracer::render::NodeView;

    let chosen = probes(target, run.patterns, run.returns)?;
    let specs: Vec<ProbeSpec<'_>> = chosen
        .iter()
        .map(|c| ProbeSpec {
            function: c.function,
            args: if run.no_args { 0 } else { c.args },
            returns: c.returns,
        })
        .collect();
    let callsites = chosen
        .iter()
        .enumerate()
        .map(|(id, c)| c.function.callsite(id as u32, c.args, target.binary()));
    let mut view = NodeView::new(format!("pid {}", target.pid()), callsites);
    view.set_os_threads(true);
    let trace = target.attach(&specs)?;
    let exits = if trace.exits() > 0 {
        format!(", {} probed for returns", plural(trace.exits(), "exit"))
    } else {
        String::new()
    };
    let what = format!(
        "calls of {} ({} probed in {}{exits}; every call pays a kernel trap, --rate or not)",
        run.patterns
            .iter()
            .map(|p| p.pattern.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        plural(chosen.len(), "function"),
        target.binary(),
    );
    let local_run = LocalRun {
        view,
        limits: run.limits.limits,
        default_limits: run.limits.defaulted,
        format: run.format,
        what,
    };
    Ok((local_run, Probed(trace)))
}

/// `nodetrace trace calls PATTERN --pid PID`.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn trace_pid(
    pid: u32,
    run: &ProbedCalls<'_>,
    out: &mut dyn Write,
    stop: &nodetrace_tracer::StopSignal,
) -> anyhow::Result<()> {
    let target = Target::open(pid)?;
    let (local_run, mut source) = place(run, &target)?;
    nodetrace_tracer::local::run_local(
        &local_run,
        &mut source,
        out,
        &mut io::stderr().lock(),
        stop,
    )
    .map_err(TracerError::Output)?;
    Ok(())
}

/// `nodetrace trace calls PATTERN -- CMD`: the command is held before its
/// first instruction until the probes are placed, traced until a limit or
/// its exit, then waited for (the first interrupt forwarded unless the
/// terminal sent it, the second one killing it, as `profile -- CMD` does).
/// Returns its exit code, as a shell reports it.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn trace_command(
    command: &[std::ffi::OsString],
    run: &ProbedCalls<'_>,
    out: &mut dyn Write,
    stop: &nodetrace_tracer::StopSignal,
    interrupts: &nodetrace_profiler::Interrupts,
) -> anyhow::Result<i32> {
    use nodetrace_profiler::exit::{describe_status, display_command, exit_code};

    let (program, args) = command
        .split_first()
        .ok_or_else(|| TracerError::Refused("`--` needs a command after it".to_owned()))?;
    let display = display_command(command);
    let (target, held) = Target::launch(std::process::Command::new(program).args(args))?;
    let (local_run, mut source) = place(run, &target)?;
    let mut child = held.resume()?;
    let mut log = io::stderr().lock();
    let traced = nodetrace_tracer::local::run_local(&local_run, &mut source, out, &mut log, stop);
    // The probes go before the wait: the command runs on unprobed.
    drop(source);
    let mut handler = nodetrace_profiler::InterruptHandler::new();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        handler.handle(interrupts, &mut child, &display, &mut log);
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = writeln!(log, "nodetrace: `{display}` {}", describe_status(status));
    traced.map_err(TracerError::Output)?;
    Ok(exit_code(status))
}

/// `nodetrace trace calls PATTERN --pid PID` or `-- CMD`: Linux x86-64
/// only.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn trace_pid(
    _pid: u32,
    _run: &ProbedCalls<'_>,
    _out: &mut dyn Write,
    _stop: &nodetrace_tracer::StopSignal,
) -> anyhow::Result<()> {
    Err(nodetrace_probe::ProbeError::Unsupported.into())
}

/// See [`trace_pid`]: Linux x86-64 only.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn trace_command(
    _command: &[std::ffi::OsString],
    _run: &ProbedCalls<'_>,
    _out: &mut dyn Write,
    _stop: &nodetrace_tracer::StopSignal,
    _interrupts: &nodetrace_profiler::Interrupts,
) -> anyhow::Result<i32> {
    Err(nodetrace_probe::ProbeError::Unsupported.into())
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The probes' hits, as the tracer's local source.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
struct Probed(nodetrace_probe::Trace);

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl nodetrace_tracer::local::EventSource for Probed {
    fn poll(
        &mut self,
        timeout: std::time::Duration,
        into: &mut Vec<nodetrace_tracer::protocol::Event>,
    ) -> io::Result<bool> {
        self.0.poll(timeout, into)
    }

    fn lost(&self) -> u64 {
        self.0.lost()
    }
}
