//! `nodetrace demo`: a guided tour on a real Todo node.
//!
//! Starts the `todo` example as its own process in a temporary nodetrace
//! home, keeps HTTP requests flowing at it, and runs the commands a user
//! would: `nodes`, `ls`, `trace calls`, `trace calls --return`, `sys trace`,
//! `sys statistics`, `profile eprof` (with a flamegraph kept after the demo,
//! in the system's temporary directory), `stop-clear`. Before each step it
//! prints what the step is and the command that does it by hand. Every wait is bounded and the
//! node is killed on the way out, whatever happened.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nodetrace_profiler::{Outputs, ProfileRequest, ReportOptions, profile_node};
use nodetrace_tracer::protocol::home::Home;
use nodetrace_tracer::protocol::{Limits, Pattern, Processes, ProfileMode, ProfileSpec, TraceSpec};
use nodetrace_tracer::spec::DEFAULT_TEXT_BOUND;
use nodetrace_tracer::stream::{self, TraceRun};
use nodetrace_tracer::{Connection, Credentials, Format, StopSignal, Target, commands, resolve};

const NODE: &str = "todo@localhost";
const STARTUP: Duration = Duration::from_secs(30);

/// Kills the node when dropped, whatever happened.
struct NodeProcess {
    child: Child,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn step(n: u32, what: &str, command: &str) {
    eprintln!();
    eprintln!("== {n}. {what}");
    eprintln!("   $ {command}");
}

pub fn run() -> anyhow::Result<ExitCode> {
    let todo = find_or_build_todo()?;
    let dir = tempfile::Builder::new()
        .prefix("nodetrace-demo-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let home_dir = dir.path().join("home");
    let data_dir = dir.path().join("data");
    fs::create_dir_all(&data_dir).context("cannot make the data directory")?;
    let home = Home::at(&home_dir);
    let cookie = home.cookie()?;
    let credentials = Credentials::new(cookie, home_dir.join("cookie"));
    let env = format!("NODETRACE_HOME={}", home_dir.display());

    step(
        1,
        "Start a Todo node (its own process) in a temporary nodetrace home",
        &format!(
            "{env} {} --name {NODE} --port 0 --data-dir {}",
            todo.display(),
            data_dir.display()
        ),
    );
    let node_log = dir.path().join("node.log");
    let (node, port) = start_node(&todo, &home_dir, &data_dir, &node_log)?;
    let target = wait_registered(&home, &node_log)?;
    eprintln!(
        "   {NODE} serves HTTP on 127.0.0.1:{port}, control on {}",
        target.addr
    );

    step(
        2,
        "List the running nodes (like `epmd -names`)",
        &format!("{env} nodetrace nodes"),
    );
    commands::nodes(&home, &mut io::stdout().lock(), Format::Text)?;

    step(
        3,
        "List the traceable functions of Todo.Server",
        &format!("{env} nodetrace ls Todo.Server"),
    );
    {
        let mut conn = Connection::open(&target, &credentials)?;
        let list = commands::callsites(&mut conn, Some(Pattern::parse("Todo.Server")?))?;
        commands::render_callsites(&mut io::stdout().lock(), conn.name(), &list, Format::Text)?;
    }

    let base = format!("http://127.0.0.1:{port}");
    step(
        4,
        "Keep HTTP requests flowing in the background (two lists, adds and reads)",
        &format!(
            "curl -X POST '{base}/add_entry?list=bob&date=2023-12-19&title=Movies'; curl '{base}/entries?list=bob&date=2023-12-19'"
        ),
    );
    let load = Load::start(base);
    load.wait_for(4, Duration::from_secs(10))?;
    eprintln!("   {} requests answered so far", load.done());

    step(
        5,
        "Trace calls of Todo.Server (`dbg:tp`), stopping after 12 events",
        &format!("{env} nodetrace trace calls Todo.Server --max 12"),
    );
    trace(
        &target,
        &credentials,
        calls_spec("Todo.Server", false, 12)?,
        "calls of todo::server",
    )?;

    step(
        6,
        "The same for entries/2 only, with return values and durations",
        &format!("{env} nodetrace trace calls Todo.Server:entries/2 --return --max 6"),
    );
    trace(
        &target,
        &credentials,
        calls_spec("Todo.Server:entries/2", true, 6)?,
        "calls of todo::server:entries/2",
    )?;

    step(
        7,
        "Watch one gen_server's messages and states (`sys:trace`)",
        &format!("{env} nodetrace sys trace todo_server:bob --max 6"),
    );
    let sys = TraceSpec {
        log: None,
        patterns: Vec::new(),
        processes: Processes::Some(vec!["todo_server:bob".into()]),
        calls: false,
        send: false,
        receive: false,
        sys: vec!["todo_server:bob".into()],
        args: true,
        returns: false,
        polls: false,
        text_bound: DEFAULT_TEXT_BOUND,
        arg_match: None,
        limits: limits(6),
    };
    trace(&target, &credentials, sys, "sys events of todo_server:bob")?;

    step(
        8,
        "Its counters (`sys:statistics`)",
        &format!("{env} nodetrace sys statistics todo_server:bob"),
    );
    {
        let mut conn = Connection::open(&target, &credentials)?;
        let stats = commands::statistics(&mut conn, "todo_server:bob")?;
        commands::render_statistics(
            &mut io::stdout().lock(),
            conn.name(),
            "todo_server:bob",
            &stats,
            Format::Text,
        )?;
    }

    let svg = tempfile::Builder::new()
        .prefix("todo-eprof-")
        .suffix(".svg")
        .tempfile()
        .context("cannot make the flamegraph's file")?
        .keep()
        .context("cannot keep the flamegraph's file")?
        .1;
    step(
        9,
        "Profile the node under load for 2s (eprof: calls and own time per function) and draw a flamegraph",
        &format!(
            "{env} nodetrace profile eprof --node {NODE} --duration 2s --flamegraph {}",
            svg.display()
        ),
    );
    let request = ProfileRequest {
        spec: ProfileSpec {
            mode: ProfileMode::Eprof,
            frequency_hz: 0,
            patterns: Vec::new(),
            processes: Processes::All,
            histogram: false,
            per_process: false,
            duration_ms: Some(2000),
            snapshot_ms: 500,
        },
        default_duration: false,
        outputs: Outputs {
            format: Format::Text,
            report: ReportOptions::default(),
            output: None,
            flamegraph: Some(svg.clone()),
            folded: None,
            speedscope: None,
            pprof: None,
        },
    };
    profile_node(
        &target,
        &credentials,
        &request,
        &mut io::stderr(),
        &StopSignal::new(),
    )?;
    eprintln!(
        "   the flamegraph stays after the demo: {} (open it in a browser)",
        svg.display()
    );

    step(
        10,
        "Switch everything off from another terminal (`dbg:stop_clear()`) while a message trace runs",
        &format!(
            "{env} nodetrace trace messages --process todo_server:bob --rate 2/1s --duration 30s   # then, elsewhere:\n   $ {env} nodetrace stop-clear"
        ),
    );
    stop_clear_demo(&target, &credentials)?;

    load.stop();
    step(11, "Stop the node", &format!("kill {}", node.child.id()));
    drop(node);
    eprintln!("   done: the node is stopped and its temporary home removed");
    Ok(ExitCode::SUCCESS)
}

fn limits(max: u64) -> Limits {
    Limits {
        max_events: Some(max),
        rate: None,
        duration_ms: Some(10_000),
    }
}

fn calls_spec(pattern: &str, returns: bool, max: u64) -> anyhow::Result<TraceSpec> {
    Ok(TraceSpec {
        log: None,
        patterns: vec![Pattern::parse(pattern)?],
        processes: Processes::All,
        calls: true,
        send: false,
        receive: false,
        sys: Vec::new(),
        args: true,
        returns,
        polls: false,
        text_bound: DEFAULT_TEXT_BOUND,
        arg_match: None,
        limits: limits(max),
    })
}

fn trace(
    target: &Target,
    credentials: &Credentials,
    spec: TraceSpec,
    what: &str,
) -> anyhow::Result<()> {
    let run = TraceRun {
        spec,
        format: Format::Text,
        timeline: None,
        otlp: None,
        default_limits: false,
        what: what.to_owned(),
        typed_patterns: Vec::new(),
    };
    let report = stream::run(
        std::slice::from_ref(target),
        credentials,
        &run,
        &mut io::stdout(),
        &mut io::stderr(),
        &StopSignal::new(),
    )?;
    if let Some(err) = report.errors().next() {
        bail!("{err}");
    }
    Ok(())
}

fn stop_clear_demo(target: &Target, credentials: &Credentials) -> anyhow::Result<()> {
    let spec = TraceSpec {
        log: None,
        patterns: Vec::new(),
        processes: Processes::Some(vec!["todo_server:bob".into()]),
        calls: false,
        send: true,
        receive: true,
        sys: Vec::new(),
        args: true,
        returns: false,
        polls: false,
        text_bound: 64,
        arg_match: None,
        limits: Limits {
            max_events: None,
            rate: Some(nodetrace_tracer::protocol::Rate {
                events: 2,
                per_ms: 1000,
            }),
            duration_ms: Some(30_000),
        },
    };
    let run = TraceRun {
        spec,
        format: Format::Text,
        timeline: None,
        otlp: None,
        default_limits: false,
        what: "messages of todo_server:bob".to_owned(),
        typed_patterns: Vec::new(),
    };
    let (tx, rx) = mpsc::channel();
    let (t, c) = (target.clone(), credentials.clone());
    let background = thread::spawn(move || {
        let report = stream::run(
            std::slice::from_ref(&t),
            &c,
            &run,
            &mut io::stdout(),
            &mut io::stderr(),
            &StopSignal::new(),
        );
        let _ = tx.send(report.map(|r| r.is_ok()));
    });
    // Let the trace start and show a line or two.
    thread::sleep(Duration::from_millis(1500));
    let mut conn = Connection::open(target, credentials)?;
    let traces = commands::stop_clear(&mut conn)?;
    commands::render_cleared(&mut io::stdout().lock(), conn.name(), traces, Format::Text)?;
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => bail!("the message trace did not end cleanly after stop-clear"),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => bail!("the message trace did not end within 10 s of stop-clear"),
    }
    let _ = background.join();
    Ok(())
}

/// The `todo` binary next to this one. Under `cargo run` (cargo at hand)
/// it is built first, so that it matches this nodetrace; otherwise it must
/// be there already.
fn find_or_build_todo() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe
        .parent()
        .context("this executable has no directory")?
        .to_owned();
    let todo = dir.join(format!("todo{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var_os("CARGO");
    if cargo.is_none() && todo.is_file() {
        return Ok(todo);
    }
    let Some(cargo) = cargo else {
        bail!(
            "the todo node binary is not next to nodetrace ({}); build it with `cargo build --release -p todo`, or run the demo with `cargo run --release -- demo`",
            todo.display()
        );
    };
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "todo", "--bin", "todo"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    if release {
        build.arg("--release");
    }
    eprintln!(
        "building the Todo node first (if it changed): cargo build {}-p todo --bin todo",
        if release { "--release " } else { "" }
    );
    let status = build.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building the todo node failed ({status})");
    }
    if !todo.is_file() {
        bail!(
            "cargo built the todo node, but not at {}: is CARGO_TARGET_DIR set differently?",
            todo.display()
        );
    }
    Ok(todo)
}

fn start_node(
    todo: &Path,
    home: &Path,
    data: &Path,
    log: &Path,
) -> anyhow::Result<(NodeProcess, u16)> {
    let stderr = File::create(log).context("cannot create the node's log")?;
    let child = Command::new(todo)
        .args(["--name", NODE, "--port", "0", "--data-dir"])
        .arg(data)
        .env("NODETRACE_HOME", home)
        .env_remove("NODETRACE_COOKIE")
        .env_remove("NODETRACE_NODE")
        .env_remove("TODO_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", todo.display()))?;
    let mut node = NodeProcess { child };
    let stdout = node.child.stdout.take().context("the node's stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep reading so the node never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(STARTUP) {
        Ok(Some(Ok(line))) => line,
        _ => bail!(
            "the Todo node did not say where it listens within {}s; its log: {}",
            STARTUP.as_secs(),
            tail(log)
        ),
    };
    let port = line
        .rsplit_once(':')
        .and_then(|(_, port)| port.trim().parse::<u16>().ok())
        .with_context(|| format!("unexpected first line from the node: {line:?}"))?;
    Ok((node, port))
}

fn wait_registered(home: &Home, log: &Path) -> anyhow::Result<Target> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(entry) = home.nodes()?.iter().find(|n| n.name == NODE) {
            return Ok(entry.into());
        }
        if Instant::now() > deadline {
            bail!(
                "the Todo node did not register in {} within 10s; its log: {}",
                resolve::nodes_dir(home).display(),
                tail(log)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    }
}

/// HTTP requests in the background: adds and reads on two lists.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(base: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, d, f) = (stop.clone(), done.clone(), failed.clone());
        let thread = thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            let titles = ["Dentist", "Movies", "Shopping", "Gym"];
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                let list = if i.is_multiple_of(3) { "alice" } else { "bob" };
                let ok = if i.is_multiple_of(2) {
                    agent
                        .post(format!("{base}/add_entry"))
                        .query("list", list)
                        .query("date", "2023-12-19")
                        .query("title", titles[i / 2 % titles.len()])
                        .send_empty()
                        .is_ok()
                } else {
                    agent
                        .get(format!("{base}/entries"))
                        .query("list", list)
                        .query("date", "2023-12-19")
                        .call()
                        .is_ok()
                };
                if ok { &d } else { &f }.fetch_add(1, Ordering::Relaxed);
                i += 1;
                thread::sleep(Duration::from_millis(25));
            }
        });
        Load {
            stop,
            done,
            failed,
            thread: Some(thread),
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn wait_for(&self, n: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.done() < n {
            if Instant::now() > deadline {
                bail!(
                    "the Todo node answered {} of {n} requests within {}s ({} failed)",
                    self.done(),
                    limit.as_secs(),
                    self.failed.load(Ordering::Relaxed)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
