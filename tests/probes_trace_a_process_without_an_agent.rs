//! `--pid`: a program built without the agent, listed and traced through
//! uprobes by its Rust paths; threads started during the trace are traced;
//! `--return` shows each return's rax and time, and a panic through a
//! probed function leaves the pairs that follow right (and the program's
//! results unchanged); a SIGKILLed tracer leaves no breakpoint in the
//! program; without the capability the error says what is needed;
//! `--libs` lists, traces and counts functions of shared libraries; on a
//! node's pid its `#[traced]` functions are left to its agent. These
//! need root (CI runs as root): not root is a failure, never a skip.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{COMMAND_LIMIT, Home, NODETRACE, plain_bin};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc_geteuid() };
    assert_eq!(
        euid, 0,
        "the probe tests need root (uprobes need CAP_SYS_ADMIN): run them as root, as CI does"
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The `plain` program, killed when dropped.
struct Plain {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Plain {
    fn start(wrapper: &[&str]) -> Plain {
        Plain::start_file(plain_bin(), wrapper)
    }

    /// plain from the file `bin` (a copy of it, whose probes and counters
    /// no other test's plain hits).
    fn start_file(bin: &std::path::Path, wrapper: &[&str]) -> Plain {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        // A fresh copy can be busy for a moment: another test's child,
        // forked while the copy was open for writing, holds it until its
        // exec.
        const ETXTBSY: i32 = 26;
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 100 => tries += 1,
                spawned => break spawned.expect("plain starts"),
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let pid = read_number(&mut stdout, "pid ");
        Plain {
            child,
            pid,
            stdin,
            stdout,
        }
    }

    /// Starts one more calling thread and returns its OS thread id.
    fn new_thread(&mut self) -> u32 {
        writeln!(self.stdin, "thread").expect("plain reads");
        self.stdin.flush().expect("plain reads");
        read_number(&mut self.stdout, "tid ")
    }

    /// Has plain make `n` rounds of calls and returns what it printed:
    /// what they computed, and its counts of calls.
    fn run(&mut self, n: u32) -> (String, String) {
        writeln!(self.stdin, "run {n}").expect("plain reads");
        self.stdin.flush().expect("plain reads");
        let (mut ran, mut counts) = (String::new(), String::new());
        self.stdout.read_line(&mut ran).expect("plain prints");
        self.stdout.read_line(&mut counts).expect("plain prints");
        assert!(ran.starts_with(&format!("ran {n}: ")), "{ran}");
        assert!(counts.starts_with("counts "), "{counts}");
        (ran, counts)
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_number(r: &mut impl BufRead, prefix: &str) -> u32 {
    let mut line = String::new();
    r.read_line(&mut line).expect("plain prints");
    line.trim()
        .strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("plain printed {line:?}, not {prefix}N"))
}

/// Runs nodetrace to its end (bounded) and returns (success, stdout,
/// stderr).
fn nodetrace(args: &[&str]) -> (bool, String, String) {
    nodetrace_as(&[], args)
}

fn nodetrace_as(wrapper: &[&str], args: &[&str]) -> (bool, String, String) {
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(NODETRACE);
            c
        }
        None => Command::new(NODETRACE),
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodetrace runs");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let (mut out, mut err) = (String::new(), String::new());
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), out, err);
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            panic!("nodetrace {args:?} ran past {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A trace running in the background, its start line read.
struct Tracing {
    child: Child,
    stderr: BufReader<ChildStderr>,
    start: String,
}

impl Tracing {
    /// Starts `nodetrace ARGS` and waits for the line that says the trace
    /// began (its probes are in place then).
    fn start(args: &[&str]) -> Tracing {
        Tracing::start_saying(args, "tracing calls of")
    }

    /// Starts `nodetrace ARGS` and waits for its first line on stderr,
    /// which starts with `first`.
    fn start_saying(args: &[&str], first: &str) -> Tracing {
        let mut cmd = Command::new(NODETRACE);
        cmd.args(args);
        Tracing::start_command(cmd, first)
    }

    /// Starts `cmd` (a nodetrace command) and waits for its first line on
    /// stderr, which starts with `first`.
    fn start_command(mut cmd: Command, first: &str) -> Tracing {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nodetrace runs");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut start = String::new();
        stderr.read_line(&mut start).unwrap();
        assert!(start.starts_with(first), "{start}");
        Tracing {
            child,
            stderr,
            start,
        }
    }

    /// Whether the trace has not ended yet.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// Waits for the trace to end (bounded): success, stdout, stderr.
    fn finish(mut self) -> (bool, String, String) {
        let mut out = String::new();
        let mut stdout = self.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            stdout.read_to_string(&mut out).unwrap();
            out
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > COMMAND_LIMIT {
                let _ = self.child.kill();
                panic!("the trace ran past {COMMAND_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = self.start;
        self.stderr.read_to_string(&mut err).unwrap();
        (status.success(), reader.join().unwrap(), err)
    }
}

/// The JSON objects of a trace's output, the `end` object left out.
fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["type"] != "end")
        .collect()
}

#[test]
fn a_program_without_an_agent_is_listed_and_traced_by_its_rust_paths() {
    require_root();
    let plain = Plain::start(&[]);
    let pid = plain.pid.to_string();

    let (ok, out, err) = nodetrace(&["ls", "--pid", &pid, "plain::work:step"]);
    assert!(ok, "ls --pid failed: {err}");
    let line = out.lines().next().expect("one function");
    // address size path file:line (plain has debug info).
    let (head, place) = line.rsplit_once(' ').unwrap();
    assert!(head.ends_with(" plain::work::step"), "{out}");
    assert!(line.starts_with("0x"), "{out}");
    let (file, number) = place.rsplit_once(':').unwrap();
    assert!(file.ends_with("examples/plain.rs"), "{out}");
    let number: usize = number.parse().unwrap();
    let source = std::fs::read_to_string(file).unwrap();
    assert!(
        source
            .lines()
            .nth(number - 1)
            .unwrap()
            .contains("pub fn step("),
        "line {number} of {file} is step's"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    // A generic function: one copy a type, each named by its type
    // arguments (plain's symbols are legacy: the debug info names them).
    let (ok, out, err) = nodetrace(&["ls", "--pid", &pid, "plain::work:twice"]);
    assert!(ok, "{err}");
    let paths: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(
        paths,
        ["plain::work::twice::<u32>", "plain::work::twice::<u64>"],
        "{out}"
    );

    let (ok, out, err) = nodetrace(&[
        "trace",
        "calls",
        "plain::work:step",
        "--pid",
        &pid,
        "--max",
        "5",
    ]);
    assert!(ok, "trace calls --pid failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "--max 5 is exact: {out}");
    // The main thread's id is the pid; the debug info names and types
    // step's parameters.
    let want = format!("(<tid {pid}>) call plain::work:step(base: 42, i: ");
    for line in &lines {
        assert!(line.starts_with(&want), "{line:?} is not {want}..");
        assert_eq!(line.matches(", ").count(), 1, "two parameters: {line}");
    }
    assert!(err.contains("every call pays a kernel trap"), "{err}");
    assert!(err.contains("reached the limit of 5 events"), "{err}");

    // The BEAM form, with an arity: that many arguments.
    let (ok, out, err) = nodetrace(&[
        "trace",
        "calls",
        "Plain.Work:step/1",
        "--pid",
        &pid,
        "--max",
        "2",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let first = out.lines().next().expect("a call");
    assert!(
        first.contains(&format!("\"pid\":\"<tid {pid}>\"")),
        "{first}"
    );
    assert!(first.contains("\"args\":\"base: 42\""), "{first}");
    assert!(
        out.lines().last().unwrap().contains("\"type\":\"end\""),
        "{out}"
    );

    let (ok, _, err) = nodetrace(&["trace", "calls", "plain::work:stpe", "--pid", &pid]);
    assert!(!ok);
    assert!(
        err.contains("no function of")
            && err.contains(&format!("`nodetrace ls --pid {pid}` lists them"))
            && err.contains("--libs"),
        "{err}"
    );
}

#[test]
fn threads_started_after_the_trace_began_are_traced() {
    require_root();
    let mut plain = Plain::start(&[]);
    let pid = plain.pid.to_string();
    let mut trace = Command::new(NODETRACE)
        .args([
            "trace",
            "calls",
            "plain::work:step/1",
            "--pid",
            &pid,
            "--duration",
            "1500ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodetrace runs");
    let mut err = BufReader::new(trace.stderr.take().unwrap());
    let mut start = String::new();
    err.read_line(&mut start).unwrap();
    assert!(start.starts_with("tracing calls of"), "{start}");
    let tid = plain.new_thread();
    let mut out = String::new();
    trace
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(trace.wait().unwrap().success());
    assert!(
        out.contains(&format!("(<tid {tid}>) call plain::work:step(base: 7)")),
        "no call from thread {tid}, started after the trace: {out}"
    );
    assert!(out.contains(&format!("(<tid {pid}>) call plain::work:step(base: 42)")));
}

#[test]
fn returns_show_rax_and_the_time_and_a_panic_through_a_probed_call_leaves_the_pairs_right() {
    require_root();
    let mut plain = Plain::start(&[]);
    let pid = plain.pid.to_string();
    let untraced = plain.run(6);

    // Six rounds: 6 calls of nap and 6 returns; 6 calls of checked_div, 5
    // returns, and the fourth call (divided by zero) ended by its panic.
    let trace = Tracing::start(&[
        "trace",
        "calls",
        "plain::work:checked_div/2",
        "plain::work:nap/1",
        "--pid",
        &pid,
        "--return",
        "--max",
        "24",
        "--format",
        "json",
    ]);
    assert!(
        trace.start.contains("exits probed for returns"),
        "{}",
        trace.start
    );
    let traced = plain.run(6);
    let (ok, out, err) = trace.finish();
    assert!(ok, "{err}");
    assert_eq!(
        traced, untraced,
        "the probes change nothing the program computes"
    );
    let events = events(&out);
    assert_eq!(events.len(), 24, "--max 24 is exact: {out}");
    let tid = events[0]["pid"].clone();
    assert!(events.iter().all(|e| e["pid"] == tid), "one thread: {out}");

    let nap: Vec<&serde_json::Value> = events.iter().filter(|e| e["function"] == "nap").collect();
    assert_eq!(nap.len(), 12, "{out}");
    for pair in nap.chunks(2) {
        assert_eq!(pair[0]["type"], "call", "{out}");
        assert_eq!(pair[0]["args"], "ms: 1");
        assert_eq!(pair[1]["type"], "return", "{out}");
        assert_eq!(pair[1]["result"], "1", "rax: nap returns its argument");
        let ns = pair[1]["duration_ns"].as_u64().expect("a duration");
        assert!(
            (1_000_000..1_000_000_000).contains(&ns),
            "nap sleeps 1 ms: {ns} ns"
        );
        assert!(pair[1]["timestamp_ns"].as_u64() > pair[0]["timestamp_ns"].as_u64());
    }

    let div: Vec<(&str, String)> = events
        .iter()
        .filter(|e| e["function"] == "checked_div")
        .map(|e| {
            let what = match e["type"].as_str().unwrap() {
                "call" => e["args"].as_str().unwrap().to_owned(),
                "return" => e["result"].as_str().unwrap().to_owned(),
                _ => e["text"].as_str().unwrap().to_owned(),
            };
            (e["type"].as_str().unwrap(), what)
        })
        .collect();
    let call = |args: &str| ("call", args.to_owned());
    let ret = ("return", "42".to_owned());
    let unwound = (
        "exception",
        "ended without a return: a panic unwound it, or it left by a jump through a register"
            .to_owned(),
    );
    assert_eq!(
        div,
        vec![
            call("a: 84, b: 2"),
            ret.clone(),
            call("a: 84, b: 2"),
            ret.clone(),
            call("a: 84, b: 2"),
            ret.clone(),
            call("a: 84, b: 0"),
            unwound,
            call("a: 84, b: 2"),
            ret.clone(),
            call("a: 84, b: 2"),
            ret,
        ],
        "{out}"
    );

    // Text: the dbg return line, and --max counts returns as events.
    let trace = Tracing::start(&[
        "trace",
        "calls",
        "plain::work:nap/1 -> return",
        "--pid",
        &pid,
        "--max",
        "5",
    ]);
    plain.run(6);
    let (ok, out, err) = trace.finish();
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "--max 5 is exact: {out}");
    let who = format!("{})", lines[0].split_once(") ").unwrap().0);
    assert_eq!(lines[0], format!("{who} call plain::work:nap(ms: 1)"));
    let back = format!("{who} returned from plain::work:nap/1 -> 1 (");
    assert!(
        lines[1].starts_with(&back) && lines[1].ends_with("ms)"),
        "{out}"
    );
    assert!(err.contains("reached the limit of 5 events"), "{err}");
}

#[test]
fn a_command_is_traced_from_its_first_call_and_its_exit_code_passes_through() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let trace_arg = trace.to_str().unwrap();
    let plain = plain_bin().to_str().unwrap();
    let started = Instant::now();
    let output = Command::new(NODETRACE)
        .args([
            "trace",
            "calls",
            "plain:main",
            "plain::work:add/2",
            "--format",
            "json",
            "--output",
            trace_arg,
            "--",
            plain,
            "run",
            "6",
            "3",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("nodetrace runs");
    assert!(started.elapsed() < COMMAND_LIMIT);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the command's exit code: {err}"
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("ran 6: sum ") && out.contains("counts add=6 "),
        "the command's own output: {out}"
    );
    assert!(
        err.contains(&format!("`{plain} run 6 3` exited with code 3")),
        "{err}"
    );
    let events = events(&std::fs::read_to_string(&trace).unwrap());
    // `main` runs once, at the very start: the probes were there before.
    let calls: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["function"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    let mut want = vec![("main", "call")];
    want.extend([("add", "call"); 6]);
    assert_eq!(calls, want, "{events:?}");
    assert_eq!(events[1]["args"], "a: 0, b: 2");
    assert_eq!(events[6]["args"], "a: 5, b: 2");

    // A pattern that selects nothing: the command never runs.
    let output = Command::new(NODETRACE)
        .args([
            "trace",
            "calls",
            "plain::work:nothing",
            "--",
            plain,
            "run",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("nodetrace runs");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(output.stdout, b"", "plain did not run");
    let (ok, _, err) = nodetrace(&["trace", "calls", "a::b", "--", "/no/such/program"]);
    assert!(
        !ok && err.contains("cannot start /no/such/program"),
        "{err}"
    );
}

/// plain's own counts of calls: `counts add=7 is_even=7 ...`.
fn own_counts(line: &str) -> Vec<(String, u64)> {
    line.trim()
        .strip_prefix("counts ")
        .unwrap_or_else(|| panic!("{line:?} is not plain's counts"))
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

/// The calls of a cprof JSON report, `function` → calls, in the report's
/// order (a generic function's copies one after the other).
fn profiled_calls(out: &str) -> Vec<(String, u64)> {
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(report["profiler"], "cprof", "{out}");
    report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_owned(),
                f["calls"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn cprof_counts_exactly_the_calls_the_program_counted() {
    require_root();
    // A copy of its own: the kernel counts only when no other process
    // runs the file, and other tests run plain meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("plain");
    std::fs::copy(plain_bin(), &bin).unwrap();
    let mut plain = Plain::start_file(&bin, &[]);
    let pid = plain.pid.to_string();
    let cprof = [
        "profile",
        "cprof",
        "plain::work:add",
        "plain::work:is_even",
        "plain::work:twice",
        "plain::work:checked_div",
        "--pid",
        &pid,
        "--duration",
        "3s",
        "--format",
        "json",
    ];
    let profile = Tracing::start_saying(&cprof, "nodetrace: cprof of");
    assert!(
        profile
            .start
            .contains("counted in the kernel (no sample written per call)"),
        "{}",
        profile.start
    );
    let (_, counts) = plain.run(7);
    let (ok, out, err) = profile.finish();
    assert!(ok, "{err}");
    let own = own_counts(&counts);
    let own = |name: &str| own.iter().find(|(k, _)| k == name).unwrap().1;
    let mut got = profiled_calls(&out);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("add".to_owned(), own("add")),
            ("checked_div".to_owned(), own("checked_div")),
            ("is_even".to_owned(), own("is_even")),
            ("twice::<u32>".to_owned(), own("twice<u32>")),
            ("twice::<u64>".to_owned(), own("twice<u64>")),
        ],
        "{out}"
    );
    assert_eq!(own("add"), 7);

    // Another process runs the same binary: its calls are not counted
    // (samples tell the pids apart).
    let mut other = Plain::start_file(&bin, &[]);
    let profile = Tracing::start_saying(&cprof, "nodetrace: cprof of");
    assert!(
        profile.start.contains(&format!(
            "counted by samples, since pid {} also runs",
            other.pid
        )),
        "{}",
        profile.start
    );
    other.run(5);
    let (_, counts) = plain.run(3);
    other.run(5);
    let (ok, out, err) = profile.finish();
    assert!(ok, "{err}");
    let own = own_counts(&counts);
    let own = |name: &str| own.iter().find(|(k, _)| k == name).unwrap().1;
    let got = profiled_calls(&out);
    assert_eq!(
        got.iter().find(|(f, _)| f == "add").map(|c| c.1),
        Some(own("add")),
        "{out}"
    );
    assert_eq!(own("add"), 3);

    // The cprof table, as a node's profile prints it.
    let (ok, out, err) = nodetrace(&[
        "profile",
        "cprof",
        "plain::work:step",
        "--pid",
        &pid,
        "--duration",
        "300ms",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("CNT") && out.contains("plain::work  "),
        "{out}"
    );
    assert!(
        out.contains("Profile done over 1 matching functions"),
        "{out}"
    );
}

#[test]
fn arguments_and_values_are_read_as_the_debug_info_types_them() {
    require_root();
    let mut plain = Plain::start(&[]);
    let pid = plain.pid.to_string();
    let trace = Tracing::start(&[
        "trace",
        "calls",
        "plain::work:initial",
        "plain::work:is_even",
        "--return",
        "--pid",
        &pid,
        "--max",
        "8",
    ]);
    plain.run(2);
    let (ok, out, err) = trace.finish();
    assert!(ok, "{err}");
    let lines: Vec<&str> = out
        .lines()
        .map(|l| l.split_once(") ").unwrap().1)
        .map(|l| {
            l.rsplit_once(" (")
                .filter(|_| l.starts_with("returned"))
                .map_or(l, |(l, _)| l)
        })
        .collect();
    assert_eq!(
        lines,
        [
            "call plain::work:is_even(n: 0)",
            "returned from plain::work:is_even/1 -> true",
            "call plain::work:initial(word: \"probe\" (read later))",
            "returned from plain::work:initial/1 -> 'p'",
            "call plain::work:is_even(n: 1)",
            "returned from plain::work:is_even/1 -> false",
            "call plain::work:initial(word: \"probe\" (read later))",
            "returned from plain::work:initial/1 -> 'p'",
        ],
        "{out}"
    );
}

/// Builds tests/data/generic.rs with rustc: v0 mangling, no debug info.
fn generic_bin(dir: &std::path::Path) -> std::path::PathBuf {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/generic.rs");
    let bin = dir.join("generic");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "-C",
            "symbol-mangling-version=v0",
            "-C",
            "debuginfo=0",
            "-o",
        ])
        .arg(&bin)
        .arg(source)
        .status()
        .expect("rustc runs");
    assert!(status.success(), "rustc built {source}");
    bin
}

#[test]
fn without_debug_info_v0_symbols_name_generic_copies_and_arguments_are_raw() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let generic = Plain::start_file(&generic_bin(dir.path()), &[]);
    let pid = generic.pid.to_string();
    let (ok, out, err) = nodetrace(&["ls", "--pid", &pid, "generic:twice"]);
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0][2..],
        ["generic::twice::<u32>"],
        "no file:line: {out}"
    );
    assert_eq!(lines[1][2..], ["generic::twice::<u64>"], "{out}");

    let (ok, out, err) = nodetrace(&[
        "trace",
        "calls",
        "generic:twice",
        "--pid",
        &pid,
        "--max",
        "6",
    ]);
    assert!(ok, "{err}");
    for line in out.lines() {
        let call = line.split_once(") call ").unwrap().1;
        assert!(
            call.starts_with("generic:twice::<u32>(0x")
                || call.starts_with("generic:twice::<u64>(0x"),
            "{line}"
        );
        assert_eq!(call.matches(", 0x").count(), 5, "six raw registers: {line}");
    }
    // Both copies are probed before the first call is shown: they alternate.
    let copies: Vec<bool> = out.lines().map(|l| l.contains("twice::<u32>")).collect();
    assert!(copies.windows(2).all(|w| w[0] != w[1]), "{out}");
}

/// The byte at `file_offset` of plain's binary, as the running process
/// sees it (a uprobe shows as int3, 0xcc) and as the file has it.
fn code_byte(pid: u32, file_offset: u64) -> (u8, u8) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let address = maps
        .lines()
        .filter(|l| l.ends_with(&*exe.to_string_lossy()))
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (start, end) = f.next()?.split_once('-')?;
            let (start, end) = (
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            );
            let offset = u64::from_str_radix(f.nth(1)?, 16).ok()?;
            (offset..offset + (end - start))
                .contains(&file_offset)
                .then(|| start + file_offset - offset)
        })
        .expect("the function's page is mapped");
    let mut live = [0u8];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap()
        .read_exact_at(&mut live, address)
        .unwrap();
    let mut file = [0u8];
    std::fs::File::open(&exe)
        .unwrap()
        .read_exact_at(&mut file, file_offset)
        .unwrap();
    (live[0], file[0])
}

#[test]
fn a_killed_tracer_leaves_no_breakpoint_behind() {
    require_root();
    let plain = Plain::start(&[]);
    let pid = plain.pid.to_string();
    let (ok, out, err) = nodetrace(&["ls", "--pid", &pid, "plain::work:step", "--format", "json"]);
    assert!(ok, "{err}");
    let offset: u64 = out
        .split("\"file_offset\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file_offset in {out}"));
    let (live, file) = code_byte(plain.pid, offset);
    assert_eq!(live, file, "no probe yet");
    assert_ne!(file, 0xcc);

    let mut trace = Command::new(NODETRACE)
        .args([
            "trace",
            "calls",
            "plain::work:step",
            "--pid",
            &pid,
            "--duration",
            "20s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodetrace runs");
    let mut start = String::new();
    BufReader::new(trace.stderr.take().unwrap())
        .read_line(&mut start)
        .unwrap();
    assert!(start.starts_with("tracing calls of"), "{start}");
    assert_eq!(
        code_byte(plain.pid, offset).0,
        0xcc,
        "the probe is an int3 in the process"
    );
    trace.kill().unwrap();
    trace.wait().unwrap();
    // The kernel removes a perf uprobe when its last fd closes; give the
    // killed tracer's fds a moment to be released.
    let deadline = Instant::now() + Duration::from_secs(5);
    while code_byte(plain.pid, offset).0 != file && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        code_byte(plain.pid, offset),
        (file, file),
        "the SIGKILLed tracer left its breakpoint in the process"
    );
}

#[test]
fn without_the_capability_the_error_says_what_is_needed() {
    require_root();
    // Both as nobody, without capabilities: nodetrace may read the
    // program's binary but not create uprobes.
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let plain = Plain::start(&nobody);
    let pid = plain.pid.to_string();
    let (ok, out, err) = nodetrace_as(
        &nobody,
        &[
            "trace",
            "calls",
            "plain::work:step",
            "--pid",
            &pid,
            "--max",
            "3",
        ],
    );
    assert!(!ok, "a trace without the capability succeeded: {out}");
    assert_eq!(out, "", "no partial trace");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("needs root (CAP_SYS_ADMIN"), "{err}");
    assert!(
        err.contains("#[traced]") && err.contains("`tracing` bridge"),
        "{err}"
    );

    // The same one line for a count, and for a command, which then never
    // runs (plain would print its pid first thing).
    let plain_path = plain_bin().to_str().unwrap();
    for args in [
        &["profile", "cprof", "plain::work:step", "--pid", &pid][..],
        &[
            "trace",
            "calls",
            "plain::work:step",
            "--",
            plain_path,
            "run",
            "1",
        ][..],
    ] {
        let (ok, out, err) = nodetrace_as(&nobody, args);
        assert!(!ok, "{args:?} without the capability succeeded: {out}");
        assert_eq!(out, "", "{args:?}: nothing ran, nothing counted");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("needs root (CAP_SYS_ADMIN"), "{err}");
    }
}

/// The library `probelib` and the program `uselib` linked with it (found
/// beside it, through its rpath), built in `dir`.
fn uselib_bin(dir: &std::path::Path) -> std::path::PathBuf {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(&rustc)
        .args(["--edition", "2024", "--crate-type", "cdylib", "-o"])
        .arg(dir.join("libprobelib.so"))
        .arg(format!("{data}/probelib.rs"))
        .status()
        .expect("rustc runs");
    assert!(status.success(), "rustc built probelib.rs");
    let bin = dir.join("uselib");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2024",
            "-C",
            "link-arg=-Wl,-rpath,$ORIGIN",
            "-L",
        ])
        .arg(dir)
        .arg("-o")
        .arg(&bin)
        .arg(format!("{data}/uselib.rs"))
        .status()
        .expect("rustc runs");
    assert!(status.success(), "rustc built uselib.rs");
    bin
}

/// `uselib` reading `run N` lines, killed when dropped.
struct UseLib {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl UseLib {
    fn start(bin: &std::path::Path) -> UseLib {
        let mut child = Command::new(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("uselib starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let pid = read_number(&mut stdout, "pid ");
        UseLib {
            child,
            pid,
            stdin,
            stdout,
        }
    }

    /// `n` calls of `probelib_add` and of `getpid`.
    fn run(&mut self, n: u32) {
        writeln!(self.stdin, "run {n}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with(&format!("ran {n}: ")), "{line}");
    }
}

impl Drop for UseLib {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn libs_lists_and_traces_the_functions_of_shared_libraries() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = uselib_bin(dir.path());
    let mut uselib = UseLib::start(&bin);
    let pid = uselib.pid.to_string();

    // Without --libs, the libraries are not searched, and the error says
    // which would match.
    let (ok, out, err) = nodetrace(&["ls", "--pid", &pid, "libprobelib:probelib_add"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains(
            "1 function of its shared libraries (libprobelib.so) matches: add --libs to search them"
        ),
        "{err}"
    );
    let (ok, _, err) = nodetrace(&["trace", "calls", "libc:getpid", "--pid", &pid]);
    assert!(
        !ok && err.contains("(libc.so.6) matches: add --libs"),
        "{err}"
    );

    // With it: the library's C function, named after its file, and libc's
    // (thousands of lines: read as they come).
    let listed = Command::new(NODETRACE)
        .args(["ls", "--pid", &pid, "--libs"])
        .output()
        .expect("nodetrace runs");
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let line = |path: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(2) == Some(path))
            .unwrap_or_else(|| panic!("{path} is not listed: {out}"))
            .to_owned()
    };
    assert!(
        line("libprobelib::probelib_add").ends_with(" [libprobelib.so]"),
        "{out}"
    );
    assert!(line("libc::getpid").ends_with(" [libc.so.6]"), "{out}");
    assert!(out.contains("uselib::main"), "the binary's too: {out}");
    let (ok, out, err) = nodetrace(&[
        "ls",
        "--pid",
        &pid,
        "--libs",
        "libprobelib:probelib_add",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let f: serde_json::Value = serde_json::from_str(out.trim()).expect("one object");
    assert_eq!(f["module"], "libprobelib");
    assert_eq!(f["function"], "probelib_add");
    assert_eq!(
        f["library"].as_str(),
        dir.path().join("libprobelib.so").to_str()
    );

    // Traced with exact counts: 5 calls of each, nothing else.
    let trace = Tracing::start(&[
        "trace",
        "calls",
        "--pid",
        &pid,
        "--libs",
        "libprobelib:probelib_add",
        "libc:getpid",
        "--max",
        "10",
        "--format",
        "json",
    ]);
    assert!(
        trace
            .start
            .contains("2 functions probed in libprobelib.so, libc.so.6"),
        "{}",
        trace.start
    );
    uselib.run(5);
    let (ok, out, err) = trace.finish();
    assert!(ok, "{err}");
    let events = events(&out);
    let calls: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["module"].as_str().unwrap(),
                e["function"].as_str().unwrap(),
            )
        })
        .collect();
    let pair = [("libprobelib", "probelib_add"), ("libc", "getpid")];
    assert_eq!(calls, pair.repeat(5), "{out}");

    // Counted: by samples, the library being another process's too.
    let cprof = [
        "profile",
        "cprof",
        "--pid",
        &pid,
        "--libs",
        "libprobelib:probelib_add",
        "libc:getpid",
        "--duration",
        "2s",
        "--format",
        "json",
    ];
    let profile = Tracing::start_saying(&cprof, "nodetrace: cprof of");
    assert!(
        profile
            .start
            .contains("counted by samples, since functions of shared libraries"),
        "{}",
        profile.start
    );
    uselib.run(7);
    let (ok, out, err) = profile.finish();
    assert!(ok, "{err}");
    let mut got = profiled_calls(&out);
    got.sort();
    assert_eq!(
        got,
        vec![("getpid".to_owned(), 7), ("probelib_add".to_owned(), 7)],
        "{out}"
    );
}

#[test]
fn a_command_runs_to_its_entry_point_for_libs_and_every_call_is_traced() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = uselib_bin(dir.path());
    let bin = bin.to_str().unwrap();
    let output = Command::new(NODETRACE)
        .args([
            "trace",
            "calls",
            "--libs",
            "libprobelib:probelib_add",
            "--format",
            "json",
            "--",
            bin,
            "run",
            "4",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("nodetrace runs");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    let out = String::from_utf8_lossy(&output.stdout);
    let (ran, trace) = out.split_once('\n').unwrap();
    assert_eq!(ran, "ran 4: 10", "the command's own output: {out}");
    let args: Vec<String> = events(trace)
        .iter()
        .map(|e| {
            assert_eq!(e["function"], "probelib_add", "{trace}");
            e["args"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(args.len(), 4, "every call: {trace}");
    for (i, args) in args.iter().enumerate() {
        assert!(args.starts_with(&format!("{i:#x}, 0x1, ")), "{args}");
    }

    // Without --libs the library is not searched: the command never runs.
    let output = Command::new(NODETRACE)
        .args([
            "trace",
            "calls",
            "libprobelib:probelib_add",
            "--",
            bin,
            "run",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("nodetrace runs");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert_eq!(output.stdout, b"", "uselib did not run");
    assert!(err.contains("--libs"), "{err}");
}

#[test]
fn beside_the_agent_traced_functions_keep_their_fast_path_and_the_rest_are_probed() {
    require_root();
    let home = Home::new();
    let node = home.start_kv(&common::unique("kvprobe"));
    let pid = node.os_pid().to_string();
    let name = &node.name;

    // `Store::get` (a `tracing` span, not #[traced]) and its closures are
    // probed; `stats::summary`, #[traced], is left to the agent.
    let listed = home.run(&["ls", "--pid", &pid, "kv::store::Store::get"]);
    let probed = listed.ok().lines().count();
    assert!(probed > 0, "{}", listed.stdout);
    let run = home.run(&[
        "trace",
        "calls",
        "--pid",
        &pid,
        "kv::stats:summary",
        "kv::store::Store::get",
        "--duration",
        "300ms",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "nodetrace: pid {pid} is node {name}: its #[traced] function kv::stats::summary keeps its fast path, not probed; `nodetrace trace calls PATTERN --node {name}` traces it"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("({probed} functions probed in ")),
        "only Store::get's {probed}: {}",
        run.stderr
    );

    // The probes fire on the running node: its clients' GETs after the
    // trace began are calls from the threads that serve them.
    let mut trace = Tracing::start_command(
        home.nodetrace(&[
            "trace",
            "calls",
            "--pid",
            &pid,
            "kv::store::Store::get",
            "--max",
            "3",
        ]),
        "tracing calls of kv::store::Store::get",
    );
    let mut client = node.client();
    let mut served = 0;
    while trace.running() && served < 2_000 {
        assert_eq!(client.send("SET k 1"), "OK");
        client.send("GET k");
        served += 1;
    }
    let (ok, out, err) = trace.finish();
    assert!(ok, "{err}");
    let gets: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(") call kv::store:Store::get(self: 0x"))
        .collect();
    assert!(!gets.is_empty(), "served {served}: {out}\n{err}");
    assert!(gets.iter().all(|l| l.starts_with("(<tid ")), "{out}");
    assert!(err.contains("reached the limit of 3 events"), "{err}");
    assert_eq!(client.send("GET k"), "1", "the node serves on");

    // Only #[traced] functions selected: nothing to probe, --node said.
    let run = home.run(&["profile", "cprof", "--pid", &pid, "kv::stats:summary"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "nodetrace: pid {pid} is node {name} and every function selected is #[traced] there (kv::stats::summary): trace them through its agent, `nodetrace profile cprof PATTERN --node {name}`"
        )
    );
    // The agent traces it meanwhile, its fast path untouched.
    let run = home.run(&["ls", "--node", name, "kv::stats:summary"]);
    assert!(
        run.ok().contains("kv::stats:summary/1  traced"),
        "{}",
        run.stdout
    );
}
