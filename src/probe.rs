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

/// Process `pid` and the functions of its binary, and with `libs` those
/// of its shared libraries (a library that cannot be read is said on
/// stderr and left out).
fn open(pid: u32, libs: bool) -> Result<Target, nodetrace_probe::ProbeError> {
    let mut target = Target::open(pid)?;
    if libs {
        add_libraries(&mut target);
    }
    Ok(target)
}

fn add_libraries(target: &mut Target) {
    for (library, why) in target.add_libraries() {
        eprintln!("nodetrace: the functions of {library} are left out: {why}");
    }
}

/// `nodetrace ls --pid PID [--libs] [PATTERN]`: the probeable functions.
pub fn ls(
    pid: u32,
    libs: bool,
    pattern: Option<&PatternArg>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut target = open(pid, libs)?;
    target.describe(|f| pattern.is_none_or(|p| f.matches(&p.pattern)));
    let patterns: Vec<Pattern> = pattern.iter().map(|p| p.pattern.clone()).collect();
    let list: Vec<&Function> = match pattern {
        Some(_) => nodetrace_probe::symbols::select(target.functions(), &patterns),
        None => target.functions().iter().collect(),
    };
    if let (true, Some(typed)) = (list.is_empty(), pattern) {
        return Err(no_match(&target, typed).into());
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

/// Nothing matches `typed`: without the libraries searched, says which of
/// them have functions it matches (add --libs), if any.
fn no_match(target: &Target, typed: &PatternArg) -> TracerError {
    let pid = target.pid();
    let (what, hint) = if target.libraries().is_empty() {
        let hint = match libraries_matching(pid, &typed.pattern) {
            Some((n, libraries)) => format!(
                "; {} of its shared libraries ({}) match{}: add --libs to search them",
                plural(n, "function"),
                libraries.join(", "),
                if n == 1 { "es" } else { "" },
            ),
            None => format!(
                "; `nodetrace ls --pid {pid}` lists them while it runs (--libs: and those of its shared libraries)"
            ),
        };
        (target.binary().to_owned(), hint)
    } else {
        (
            format!(
                "{} or its {}",
                target.binary(),
                plural(target.libraries().len(), "shared library")
            ),
            format!("; `nodetrace ls --pid {pid} --libs` lists them while it runs"),
        )
    };
    TracerError::NoMatch(format!(
        "no function of {what} (pid {pid}) matches {}{hint}",
        typed.text
    ))
}

/// How many functions of process `pid`'s shared libraries `pattern`
/// selects, and the libraries' file names; `None` for none.
fn libraries_matching(pid: u32, pattern: &Pattern) -> Option<(usize, Vec<String>)> {
    let mut target = Target::open(pid).ok()?;
    target.add_libraries();
    let mut libraries: Vec<String> = Vec::new();
    let mut n = 0;
    for f in target.functions() {
        if let Some(library) = f.library.as_deref().filter(|_| f.matches(pattern)) {
            n += 1;
            let name = library.rsplit('/').next().unwrap_or(library).to_owned();
            if !libraries.contains(&name) {
                libraries.push(name);
            }
        }
    }
    (n > 0).then_some((n, libraries))
}

/// A function to probe, the arguments its calls show (a pattern's `/N`
/// shows N; no arity shows every parameter the debug info names, else six
/// registers) and whether its returns are traced.
struct Chosen<'a> {
    function: &'a Function,
    args: u8,
    /// The pattern said how many arguments (`/N`).
    arity: Option<u8>,
    returns: bool,
}

impl Chosen<'_> {
    /// The arity a call line shows: the debug info's, else the pattern's,
    /// else the registers shown.
    fn shown_arity(&self) -> u8 {
        self.function.arity().or(self.arity).unwrap_or(self.args)
    }

    /// The arity a report shows: the debug info's, else the pattern's,
    /// else 0 (unknown).
    fn known_arity(&self) -> u8 {
        self.function.arity().or(self.arity).unwrap_or(0)
    }
}

/// Reads the debug info of the functions `patterns` select.
fn describe(target: &mut Target, patterns: &[PatternArg]) {
    target.describe(|f| patterns.iter().any(|p| f.matches(&p.pattern)));
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
            return Err(no_match(target, p));
        }
        let returns = returns || p.pattern.return_trace();
        let arity = p.pattern.arity();
        for f in selected {
            let args = arity.or(f.arity()).unwrap_or(MAX_ARGS);
            match chosen
                .iter_mut()
                .find(|c| c.function.address == f.address && c.function.library == f.library)
            {
                Some(c) => {
                    c.args = c.args.max(args);
                    c.arity = c.arity.max(arity);
                    c.returns |= returns;
                }
                None => chosen.push(Chosen {
                    function: f,
                    args,
                    arity,
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

/// When process `pid` is a node of the nodetrace home (its node file
/// names that OS pid), leaves its `#[traced]` functions out of `chosen`:
/// they keep their fast path, and `--node` traces them through the agent,
/// as stderr says. If the node cannot be asked for them, stderr says so
/// and every function stays probed. `command` is what to suggest with
/// `--node` (`trace calls`).
fn beside_agent(pid: u32, chosen: &mut Vec<Chosen<'_>>, command: &str) -> Result<(), TracerError> {
    use nodetrace_tracer::protocol::CallsiteKind;

    let Some((name, listed)) = node_of(pid) else {
        return Ok(());
    };
    let traced = match listed {
        Ok(list) => list,
        Err(e) => {
            eprintln!(
                "nodetrace: pid {pid} is node {name}, but its #[traced] functions cannot be listed ({e}): every function selected is probed"
            );
            return Ok(());
        }
    };
    let is_traced = |f: &Function| {
        traced.iter().any(|c| {
            c.kind == CallsiteKind::Function
                && c.module == f.module
                && c.function == f.function
                && c.self_type == f.self_type
        })
    };
    let (left, kept): (Vec<Chosen<'_>>, Vec<Chosen<'_>>) = std::mem::take(chosen)
        .into_iter()
        .partition(|c| c.function.library.is_none() && is_traced(c.function));
    *chosen = kept;
    if left.is_empty() {
        return Ok(());
    }
    let names = left
        .iter()
        .map(|c| c.function.path.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if chosen.is_empty() {
        return Err(TracerError::Refused(format!(
            "pid {pid} is node {name} and every function selected is #[traced] there ({names}): trace them through its agent, `nodetrace {command} PATTERN --node {name}`"
        )));
    }
    eprintln!(
        "nodetrace: pid {pid} is node {name}: its #[traced] {} {names} {} fast path, not probed; `nodetrace {command} PATTERN --node {name}` traces {}",
        if left.len() == 1 {
            "function"
        } else {
            "functions"
        },
        if left.len() == 1 {
            "keeps its"
        } else {
            "keep their"
        },
        if left.len() == 1 { "it" } else { "them" },
    );
    Ok(())
}

/// The node process `pid` is, by its node file in the nodetrace home, and
/// its callsites (or why they could not be listed); `None` if it is no
/// node.
fn node_of(
    pid: u32,
) -> Option<(
    String,
    Result<Vec<nodetrace_tracer::protocol::CallsiteInfo>, TracerError>,
)> {
    use nodetrace_tracer::{Connection, Credentials};

    let home = nodetrace_tracer::protocol::home::Home::from_env().ok()?;
    let entry = home.nodes().ok()?.into_iter().find(|n| n.os_pid == pid)?;
    let listed = Credentials::resolve(None, &home)
        .and_then(|credentials| Connection::open(&(&entry).into(), &credentials))
        .and_then(|mut conn| nodetrace_tracer::commands::callsites(&mut conn, None));
    Some((entry.name, listed))
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
    /// Bytes of a `&str` or `&[u8]` argument shown at most.
    pub text_bound: u32,
    /// `--libs`: the process's shared libraries are searched too.
    pub libs: bool,
}

/// The probes of a trace placed, and the trace they feed; with `node`,
/// the `#[traced]` functions of the node the process is left out
/// ([`beside_agent`]).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn place(
    run: &ProbedCalls<'_>,
    target: &mut Target,
    node: bool,
) -> anyhow::Result<(nodetrace_tracer::local::LocalRun, Probed)> {
    use nodetrace_probe::ProbeSpec;
    use nodetrace_tracer::local::LocalRun;
    use nodetrace_tracer::render::NodeView;

    describe(target, run.patterns);
    let mut chosen = probes(target, run.patterns, run.returns)?;
    if node {
        beside_agent(target.pid(), &mut chosen, "trace calls")?;
    }
    let specs: Vec<ProbeSpec<'_>> = chosen
        .iter()
        .map(|c| ProbeSpec {
            function: c.function,
            args: if run.no_args { 0 } else { c.args },
            returns: c.returns,
        })
        .collect();
    let callsites = chosen.iter().enumerate().map(|(id, c)| {
        c.function
            .callsite(id as u32, c.shown_arity(), target.binary())
    });
    let mut view = NodeView::new(format!("pid {}", target.pid()), callsites);
    view.set_os_threads(true);
    let mut trace = target.attach(&specs)?;
    trace.set_text_bound(run.text_bound as usize);
    let exits = if trace.exits() > 0 {
        format!(", {} probed for returns", plural(trace.exits(), "exit"))
    } else {
        String::new()
    };
    let what = format!(
        "calls of {} ({} probed in {}{exits}; every call pays a kernel trap, --rate or not)",
        run.patterns
            .iter()
            .map(|p| p.text.clone())
            .collect::<Vec<_>>()
            .join(", "),
        plural(chosen.len(), "function"),
        probed_in(target, chosen.iter().map(|c| c.function)),
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
    let mut target = open(pid, run.libs)?;
    let (local_run, mut source) = place(run, &mut target, true)?;
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
    let (mut target, mut held) = Target::launch(std::process::Command::new(program).args(args))?;
    if run.libs {
        held.run_to_entry()?;
        add_libraries(&mut target);
    }
    // Not a node yet: its agent has not started.
    let (local_run, mut source) = place(run, &mut target, false)?;
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
    match (n, word.strip_suffix('y')) {
        (1, _) => format!("1 {word}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {word}s"),
    }
}

/// The files `functions` are in: the binary, and the file names of the
/// libraries among them.
fn probed_in<'a>(target: &Target, functions: impl Iterator<Item = &'a Function>) -> String {
    let mut files: Vec<&str> = Vec::new();
    for f in functions {
        let file = match &f.library {
            Some(library) => library.rsplit('/').next().unwrap_or(library),
            None => target.binary(),
        };
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files.join(", ")
}

/// What `profile cprof --pid` was asked.
pub struct ProbedCprof<'a> {
    /// The process.
    pub pid: u32,
    /// The patterns; none: the crate that defines `main`.
    pub patterns: &'a [PatternArg],
    /// How long to count.
    pub duration_ms: u64,
    /// The duration is the default one: say so.
    pub default_duration: bool,
    /// Where the report goes.
    pub outputs: &'a nodetrace_profiler::Outputs,
    /// `--libs`: the process's shared libraries are searched too.
    pub libs: bool,
}

/// The functions of the crate that defines `main` (`plain::main`: every
/// `plain::*`), as a pattern.
fn main_crate(target: &Target) -> Option<PatternArg> {
    let main = target.functions().iter().find(|f| {
        f.function == "main"
            && f.library.is_none()
            && !f.module.is_empty()
            && !f.module.contains("::")
    })?;
    let text = format!("{}::*", main.module);
    let pattern = text.parse().ok()?;
    Some(PatternArg { text, pattern })
}

/// `nodetrace profile cprof --pid PID [PATTERN]`: exact call counts by
/// counting uprobes, reported as a node's cprof is.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn cprof(run: &ProbedCprof<'_>, stop: &nodetrace_tracer::StopSignal) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};

    use nodetrace_profiler::Profile;
    use nodetrace_tracer::protocol::{FunctionProfile, ProfileMode, ProfileSnapshot};

    let mut target = open(run.pid, run.libs)?;
    let default;
    let patterns = match run.patterns {
        [] => {
            default = [main_crate(&target).ok_or_else(|| {
                TracerError::Refused(format!(
                    "{} has no `main` of a Rust crate to take the functions of: give a PATTERN",
                    target.binary()
                ))
            })?];
            &default[..]
        }
        given => given,
    };
    describe(&mut target, patterns);
    let mut chosen = probes(&target, patterns, false)?;
    beside_agent(run.pid, &mut chosen, "profile cprof")?;
    let functions: Vec<&Function> = chosen.iter().map(|c| c.function).collect();
    let started = Instant::now();
    let mut counter = target.count(&functions)?;
    let how = if counter.in_kernel() {
        "counted in the kernel (no sample written per call)".to_owned()
    } else if counter.shared_with().is_empty() {
        "counted by samples, since functions of shared libraries, which other processes map too, are probed".to_owned()
    } else {
        format!(
            "counted by samples, since {} also run{} the binary",
            counter
                .shared_with()
                .iter()
                .map(|p| format!("pid {p}"))
                .collect::<Vec<_>>()
                .join(", "),
            if counter.shared_with().len() == 1 {
                "s"
            } else {
                ""
            }
        )
    };
    let mut log = io::stderr().lock();
    let _ = writeln!(
        log,
        "nodetrace: cprof of {} on pid {} ({} probed in {}, {how}) for {}{}; every call pays a kernel trap; Ctrl-C ends it early",
        patterns
            .iter()
            .map(|p| p.text.clone())
            .collect::<Vec<_>>()
            .join(", "),
        run.pid,
        plural(chosen.len(), "function"),
        probed_in(&target, functions.iter().copied()),
        nodetrace_tracer::protocol::display_ms(run.duration_ms),
        if run.default_duration {
            " (the default; set --duration)"
        } else {
            ""
        },
    );
    let deadline = started + Duration::from_millis(run.duration_ms);
    let mut alive = true;
    while alive && !stop.is_stopped() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        alive = counter.poll(Duration::from_millis(100).min(deadline - now))?;
    }
    let counts = counter.counts()?;
    let elapsed = started.elapsed();
    if !alive {
        let _ = writeln!(log, "nodetrace: pid {} exited", run.pid);
    }
    if counter.lost() > 0 {
        let _ = writeln!(
            log,
            "nodetrace: {} calls lost to full buffers: the counts are short by that many",
            counter.lost()
        );
    }
    let joined: Vec<u32> = target
        .others_running()
        .into_iter()
        .filter(|p| counter.in_kernel() && !counter.shared_with().contains(p))
        .collect();
    if !joined.is_empty() {
        let _ = writeln!(
            log,
            "nodetrace: {joined:?} started running the binary during the profile: the kernel's counts may include their calls"
        );
    }
    drop(counter);
    let callsites: Vec<_> = chosen
        .iter()
        .enumerate()
        .map(|(id, c)| {
            c.function
                .callsite(id as u32, c.known_arity(), target.binary())
        })
        .collect();
    let snapshot = ProfileSnapshot {
        elapsed_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        functions: counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(id, &calls)| FunctionProfile {
                callsite: id as u32,
                pid: None,
                calls,
                own_ns: 0,
                acc_ns: 0,
                busy_ns: None,
                histogram: None,
            })
            .collect(),
        ..ProfileSnapshot::default()
    };
    let node = format!("pid {}", run.pid);
    let profile = Profile {
        mode: ProfileMode::Cprof,
        node: &node,
        snapshot: &snapshot,
        callsites: &callsites,
        complete: true,
    };
    run.outputs.write(&profile, &mut log)?;
    Ok(())
}

/// `nodetrace profile cprof --pid`: Linux x86-64 only.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn cprof(_run: &ProbedCprof<'_>, _stop: &nodetrace_tracer::StopSignal) -> anyhow::Result<()> {
    Err(nodetrace_probe::ProbeError::Unsupported.into())
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
