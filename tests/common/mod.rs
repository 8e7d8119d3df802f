//! What every end-to-end test needs: the real `todo` and `kv` node
//! binaries, a private nodetrace home, nodes killed by pid when a test ends
//! (or fails), the real `nodetrace` CLI, HTTP (todo) and line (kv)
//! traffic, and waits that are all bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The nodetrace CLI under test.
pub const NODETRACE: &str = env!("CARGO_BIN_EXE_nodetrace");

/// How long a node may take to start (a debug build on a busy machine).
pub const STARTUP: Duration = Duration::from_secs(30);

/// How long a CLI command may take before the test fails.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// The `todo` binary, built once per test binary next to `nodetrace`.
pub fn todo_bin() -> &'static Path {
    static TODO: OnceLock<PathBuf> = OnceLock::new();
    TODO.get_or_init(|| built(&["-p", "todo", "--bin", "todo"], &["todo"]))
}

/// The `exiting` example of nodetrace-agent (a node that calls traced
/// functions a known number of times, then ends in a chosen way), built
/// once per test binary.
pub fn exiting_bin() -> &'static Path {
    static EXITING: OnceLock<PathBuf> = OnceLock::new();
    EXITING.get_or_init(|| {
        built(
            &["-p", "nodetrace-agent", "--example", "exiting"],
            &["examples", "exiting"],
        )
    })
}

/// The `hot` example of nodetrace-agent (a node burning CPU in a function
/// that is not traced), built once per test binary.
pub fn hot_bin() -> &'static Path {
    static HOT: OnceLock<PathBuf> = OnceLock::new();
    HOT.get_or_init(|| {
        built(
            &["-p", "nodetrace-agent", "--example", "hot"],
            &["examples", "hot"],
        )
    })
}

/// The `kv` example (a key-value store over TCP instrumented with
/// `tracing`, the bridge's example node), built once per test binary.
pub fn kv_bin() -> &'static Path {
    static KV: OnceLock<PathBuf> = OnceLock::new();
    KV.get_or_init(|| built(&["-p", "kv", "--bin", "kv"], &["kv"]))
}

/// The `orders` example (an order book over TCP: mpsc actors with oneshot
/// replies, tasks spawned as processes), built once per test binary.
pub fn orders_bin() -> &'static Path {
    static ORDERS: OnceLock<PathBuf> = OnceLock::new();
    ORDERS.get_or_init(|| built(&["-p", "orders", "--bin", "orders"], &["orders"]))
}

/// The `hot` example built with cargo's default release profile (no frame
/// pointers, no debug info), whatever profile the tests run in.
pub fn hot_release_bin() -> &'static Path {
    static HOT: OnceLock<PathBuf> = OnceLock::new();
    HOT.get_or_init(|| {
        built_in(
            Some("release"),
            &["-p", "nodetrace-agent", "--example", "hot"],
            &["examples", "hot"],
        )
    })
}

/// The `plain` example of nodetrace-probe (a program with no agent that
/// calls `plain::work::step` in a loop and starts a thread a line of its
/// stdin), built once per test binary.
pub fn plain_bin() -> &'static Path {
    static PLAIN: OnceLock<PathBuf> = OnceLock::new();
    PLAIN.get_or_init(|| {
        built(
            &["-p", "nodetrace-probe", "--example", "plain"],
            &["examples", "plain"],
        )
    })
}

/// Runs `cargo build --quiet TARGET...` in the profile this test runs in and
/// returns the artifact at `path` (relative to the profile's directory, the
/// last part a program name).
fn built(target: &[&str], path: &[&str]) -> PathBuf {
    built_in(None, target, path)
}

/// [`built`] in cargo profile `profile` (the tests' own if `None`).
fn built_in(profile: Option<&str>, target: &[&str], path: &[&str]) -> PathBuf {
    let own = Path::new(NODETRACE).parent().expect("a bin directory");
    let dir = match profile {
        Some(p) => own.parent().expect("a target directory").join(p),
        None => own.to_owned(),
    };
    let dir = dir.as_path();
    let (name, parents) = path.split_last().expect("a program name");
    let artifact = parents
        .iter()
        .fold(dir.to_owned(), |d, p| d.join(p))
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet"])
        .args(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    let status = build.status().expect("cargo runs");
    let what = target.join(" ");
    assert!(status.success(), "cargo build {what} failed: {status}");
    assert!(
        artifact.is_file(),
        "cargo build {what} left nothing at {}",
        artifact.display()
    );
    artifact
}

/// Kills an OS process by pid (SIGKILL) when dropped (if it is gone, `kill`
/// fails quietly):
/// for grandchildren a test cannot hold as a `Child`.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}x{}@localhost",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private nodetrace home (cookie and registry) for one test.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// A fresh home with its own random cookie.
    pub fn new() -> Home {
        let dir = tempfile::tempdir().expect("a temp dir");
        let home = Home { dir };
        nodetrace_tracer::protocol::home::Home::at(home.path())
            .cookie()
            .expect("a cookie file");
        home
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The home's cookie.
    pub fn cookie(&self) -> String {
        std::fs::read_to_string(self.path().join("cookie"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn isolate(&self, cmd: &mut Command) {
        cmd.env("NODETRACE_HOME", self.path())
            .env("HOME", self.path())
            .env_remove("NODETRACE_COOKIE")
            .env_remove("NODETRACE_NODE")
            .env_remove("TODO_PORT")
            .stdin(Stdio::null());
    }

    /// `PROGRAM` with this home as its nodetrace home.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        self.isolate(&mut cmd);
        cmd
    }

    /// `nodetrace ARGS` in this home.
    pub fn nodetrace(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(NODETRACE);
        cmd.args(args);
        self.isolate(&mut cmd);
        cmd
    }

    /// Runs `nodetrace ARGS` to its end (bounded).
    pub fn run(&self, args: &[&str]) -> Run {
        run_bounded(&mut self.nodetrace(args), COMMAND_LIMIT)
    }

    /// Starts `nodetrace ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        Spawned::start(&mut self.nodetrace(args))
    }

    /// Starts a Todo node named `name` registering in this home.
    pub fn start_node(&self, name: &str) -> Node {
        self.start_todo(name, None)
    }

    /// Starts a Todo node that may have at most `fds` files open.
    pub fn start_node_with_fd_limit(&self, name: &str, fds: u32) -> Node {
        self.start_todo(name, Some(fds))
    }

    /// Runs a Todo node that must fail to start; returns its stderr.
    pub fn try_start_node(&self, name: &str) -> String {
        let data = tempfile::tempdir().expect("a data dir");
        let run = run_bounded(&mut self.todo_command(name, data.path(), None), STARTUP);
        assert!(!run.status.success(), "node {name} started: {}", run.stdout);
        run.stderr
    }

    /// `todo` for node `name` with its data in `data`; with `fds`, under
    /// `ulimit -n fds` (the shell execs it, so its pid is the node's).
    fn todo_command(&self, name: &str, data: &Path, fds: Option<u32>) -> Command {
        let mut cmd = match fds {
            None => Command::new(todo_bin()),
            Some(n) => {
                let mut cmd = Command::new("bash");
                cmd.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(todo_bin());
                cmd
            }
        };
        cmd.args(["--name", name, "--port", "0", "--data-dir"])
            .arg(data)
            .current_dir(data);
        self.isolate(&mut cmd);
        cmd
    }

    fn start_todo(&self, name: &str, fds: Option<u32>) -> Node {
        let data = tempfile::tempdir().expect("a data dir");
        let mut cmd = self.todo_command(name, data.path(), fds);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the todo binary starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut node = Node {
            child,
            name: name.to_owned(),
            port: 0,
            log: log.clone(),
            _data: data,
        };
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            log.lock().unwrap().push_str(&text);
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(STARTUP) {
            Ok(Some(Ok(line))) => line,
            other => panic!("node {name} did not start within {STARTUP:?}: {other:?}"),
        };
        let prefix = format!("{name} listening on http://127.0.0.1:");
        node.port = line
            .strip_prefix(&prefix)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected {prefix:?}PORT, got {line:?}"));
        let registry = self.path().join("nodes").join(format!("{name}.node"));
        wait_until(Duration::from_secs(10), || registry.is_file())
            .unwrap_or_else(|| panic!("{name} did not register at {}", registry.display()));
        node
    }
}

impl Home {
    /// Starts a kv node named `name` registering in this home, its own log
    /// (`fmt` at `info`: no `RUST_LOG`) collected from its stdout.
    pub fn start_kv(&self, name: &str) -> KvNode {
        self.start_line_node(kv_bin(), name, &[])
    }

    /// Starts an orders node named `name` with `args`, registering in this
    /// home.
    pub fn start_orders(&self, name: &str, args: &[&str]) -> KvNode {
        self.start_line_node(orders_bin(), name, args)
    }

    /// Starts a node that serves lines over TCP and prints `listening on
    /// ADDR` once bound (kv, orders).
    fn start_line_node(&self, program: &Path, name: &str, args: &[&str]) -> KvNode {
        let mut cmd = Command::new(program);
        self.isolate(&mut cmd);
        cmd.args(args)
            .env("NODETRACE_NODE", name)
            .env_remove("RUST_LOG");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        for (pipe, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut sink = sink.lock().unwrap();
                    sink.push_str(&line);
                    sink.push('\n');
                }
            });
        }
        let mut node = KvNode {
            child,
            name: name.to_owned(),
            addr: "127.0.0.1:0".parse().unwrap(),
            stdout,
            stderr,
        };
        let addr = |out: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix("listening on ")?.trim().parse().ok())
        };
        wait_until(STARTUP, || addr(&node.stdout()).is_some()).unwrap_or_else(|| {
            panic!(
                "node {name} did not listen within {STARTUP:?}; stdout: {}\nstderr: {}",
                node.stdout(),
                node.stderr()
            )
        });
        node.addr = addr(&node.stdout()).unwrap();
        let registry = self.path().join("nodes").join(format!("{name}.node"));
        wait_until(Duration::from_secs(10), || registry.is_file())
            .unwrap_or_else(|| panic!("{name} did not register at {}", registry.display()));
        node
    }
}

/// A running node that serves lines over TCP (kv, orders), killed by pid
/// when dropped.
pub struct KvNode {
    child: Child,
    pub name: String,
    pub addr: std::net::SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for KvNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KvNode {
    /// Its OS process id.
    pub fn os_pid(&self) -> u32 {
        self.child.id()
    }

    /// What the node wrote on stdout so far: `listening on ADDR`, then its
    /// own `fmt` log.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What it wrote on stderr so far (the agent's own messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A new connection.
    pub fn client(&self) -> KvClient {
        KvClient::connect(self.addr)
    }

    /// Requests in the background (`SET`, `GET`, `STATS` and a bad command,
    /// each client on its own connection) until the returned load is
    /// dropped.
    pub fn load(&self) -> KvLoad {
        KvLoad::start(self.addr, 2)
    }
}

/// One connection to a line node (kv, orders): a line out, a line back.
pub struct KvClient {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl KvClient {
    /// Connects, giving up on a reply after 10 s.
    pub fn connect(addr: std::net::SocketAddr) -> KvClient {
        let writer = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("cannot connect to kv at {addr}: {e}"));
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(writer.try_clone().unwrap());
        KvClient { reader, writer }
    }

    /// Sends `command` and returns the reply, without its newline.
    pub fn send(&mut self, command: &str) -> String {
        use std::io::Write;
        writeln!(self.writer, "{command}").expect("the request is written");
        let mut reply = String::new();
        self.reader
            .read_line(&mut reply)
            .unwrap_or_else(|e| panic!("no reply to {command:?}: {e}"));
        assert!(reply.ends_with('\n'), "{command:?} got {reply:?}");
        reply.pop();
        reply
    }
}

/// kv traffic in the background, stopped when dropped.
pub struct KvLoad {
    stop: Arc<AtomicBool>,
    pub done: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl KvLoad {
    /// `clients` threads, each on its own connection, sending `SET kI I`,
    /// `GET kI`, `STATS` and `NOPE` in turn with a 2 ms pause.
    pub fn start(addr: std::net::SocketAddr, clients: usize) -> KvLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|c| {
                let (stop, done) = (stop.clone(), done.clone());
                thread::spawn(move || {
                    let mut client = KvClient::connect(addr);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let command = match i % 4 {
                            0 => format!("SET k{c}-{i} {i}"),
                            1 => format!("GET k{c}-{}", i - 1),
                            2 => "STATS".to_owned(),
                            _ => "NOPE".to_owned(),
                        };
                        client.send(&command);
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        KvLoad {
            stop,
            done,
            threads,
        }
    }
}

impl Drop for KvLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A running Todo node, killed by pid when dropped.
pub struct Node {
    child: Child,
    pub name: String,
    pub port: u16,
    log: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// The node's OS pid.
    pub fn os_pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `POST /add_entry`; the body on success.
    pub fn add_entry(&self, list: &str, date: &str, title: &str) -> String {
        let mut response = agent()
            .post(format!("{}/add_entry", self.base()))
            .query("list", list)
            .query("date", date)
            .query("title", title)
            .send_empty()
            .expect("add_entry answers");
        assert_eq!(response.status().as_u16(), 200);
        response.body_mut().read_to_string().unwrap()
    }

    /// `GET /entries`; the body.
    pub fn entries(&self, list: &str, date: &str) -> String {
        let mut response = agent()
            .get(format!("{}/entries", self.base()))
            .query("list", list)
            .query("date", date)
            .call()
            .expect("entries answers");
        assert_eq!(response.status().as_u16(), 200);
        response.body_mut().read_to_string().unwrap()
    }

    /// Requests in the background (adds and reads on list bob) until the
    /// returned load is dropped.
    pub fn load(&self) -> Load {
        Load::start(self.base(), 1, Duration::from_millis(5))
    }
}

/// An HTTP client that does not follow proxies and gives up after 10 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// HTTP traffic in the background, stopped when dropped.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub done: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    /// `clients` threads alternating `add_entry` and `entries` on list bob,
    /// pausing `pause` between requests.
    pub fn start(base: String, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|c| {
                let (stop, done, base) = (stop.clone(), done.clone(), base.clone());
                thread::spawn(move || {
                    let agent = agent();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let ok = if i.is_multiple_of(2) {
                            agent
                                .post(format!("{base}/add_entry"))
                                .query("list", "bob")
                                .query("date", "2023-12-19")
                                .query("title", format!("t{c}-{i}"))
                                .send_empty()
                                .is_ok()
                        } else {
                            agent
                                .get(format!("{base}/entries"))
                                .query("list", "bob")
                                .query("date", "2023-12-19")
                                .call()
                                .is_ok()
                        };
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                        thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            threads,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "failed ({}): stderr: {}\nstdout: {}",
            self.status,
            self.stderr,
            self.stdout
        );
        &self.stdout
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// stdout's JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` to its end, at most `limit`; kills it and fails past that.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Run {
    let mut spawned = Spawned::start(cmd);
    spawned.wait(limit)
}

/// A process in the background whose output is collected as it comes;
/// killed when dropped.
pub struct Spawned {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Spawned {
    pub fn start(cmd: &mut Command) -> Spawned {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for (pipe, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            readers.push(thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            }));
        }
        Spawned {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `text`; fails past `limit`.
    pub fn wait_stderr(&mut self, text: &str, limit: Duration) {
        let found = wait_until(limit, || self.stderr().contains(text));
        assert!(
            found.is_some(),
            "no {text:?} on stderr within {limit:?}; stderr: {}\nstdout: {}",
            self.stderr(),
            self.stdout()
        );
    }

    /// Sends `signal` (e.g. "INT", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to end (at most `limit`) and returns its output.
    pub fn wait(&mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the command did not end within {limit:?}; stderr: {}\nstdout: {}",
                    self.stderr(),
                    self.stdout()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Run {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 10 ms until it holds (then `Some(elapsed)`) or
/// `limit` passes (`None`).
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The counts of a summary line: (shown, dropped, lost, discarded).
pub fn summary_counts(stderr: &str, node: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("trace ended on {node}:")))
        .unwrap_or_else(|| panic!("no summary for {node} in {stderr}"));
    let counts = line.split_once("; ").expect("counts after the reason").1;
    let numbers: Vec<u64> = counts
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 4, "{line}");
    (numbers[0], numbers[1], numbers[2], numbers[3])
}
