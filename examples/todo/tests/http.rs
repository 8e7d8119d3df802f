//! End to end: the real `todo` binary, real sockets, a real data directory.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_todo");
const STARTUP: Duration = Duration::from_secs(30);

/// A `todo` command with no inherited configuration, registering its node
/// in the nodetrace home `home` (never the user's).
fn todo(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("NODETRACE_NODE")
        .env_remove("TODO_PORT")
        .env_remove("NODETRACE_COOKIE")
        .env("NODETRACE_HOME", home);
    cmd
}

/// A running `todo` HTTP node, killed when dropped (a failed test included).
struct Node {
    child: Child,
    port: u16,
    _home: tempfile::TempDir,
}

impl Node {
    /// Starts `todo --port 0 --data-dir DIR` and reads its address line.
    fn start(data_dir: &Path) -> Node {
        let home = tempfile::tempdir().unwrap();
        let mut child = todo(home.path())
            .args(["--port", "0", "--data-dir"])
            .arg(data_dir)
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the todo binary starts");
        let stdout = child.stdout.take().unwrap();
        // Guard first: from here on a panic kills the child.
        let mut node = Node {
            child,
            port: 0,
            _home: home,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
        });
        let line = rx
            .recv_timeout(STARTUP)
            .expect("todo prints its address within 30 s")
            .expect("todo's stdout is readable");
        let prefix = "todo@localhost listening on http://127.0.0.1:";
        let port = line
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("expected {prefix:?}PORT, got {line:?}"));
        node.port = port.parse().expect("a port number");
        assert_ne!(node.port, 0);
        node
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `POST /add_entry` with `query`; the status and body.
    fn post(&self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        let mut request = agent().post(self.url(path));
        for (k, v) in query {
            request = request.query(k, v);
        }
        answer(request.send_empty())
    }

    /// `GET path` with `query`; the status and body.
    fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        let mut request = agent().get(self.url(path));
        for (k, v) in query {
            request = request.query(k, v);
        }
        answer(request.call())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that returns 4xx/5xx as responses, ignores proxies and
/// gives up after 10 s.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
    let mut response = response.expect("the node answers");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, body)
}

/// Runs `cmd` to its end, at most `limit`; kills it past that.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the todo binary starts");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("waitable").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("todo did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

#[test]
fn entries_are_added_read_back_and_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path());
    let bob = |date, title| [("list", "bob"), ("date", date), ("title", title)];

    assert_eq!(
        node.post("/add_entry", &bob("2023-12-19", "Dentist")),
        (200, "OK".to_owned())
    );
    assert_eq!(
        node.post("/add_entry", &bob("2023-12-19", "Movies night")),
        (200, "OK".to_owned())
    );
    assert_eq!(
        node.post("/add_entry", &bob("2023-12-20", "Shopping")),
        (200, "OK".to_owned())
    );
    let day = [("list", "bob"), ("date", "2023-12-19")];
    let expected = "2023-12-19 Dentist\n2023-12-19 Movies night\n";
    assert_eq!(node.get("/entries", &day), (200, expected.to_owned()));
    assert_eq!(
        node.get("/entries", &[("list", "alice"), ("date", "2023-12-19")]),
        (200, String::new()),
        "another list is another list"
    );

    assert_eq!(
        node.get("/entries", &[("list", "bob"), ("date", "2023-13-40")]),
        (
            400,
            "bad date \"2023-13-40\": expected YYYY-MM-DD\n".to_owned()
        )
    );
    assert_eq!(
        node.post(
            "/add_entry",
            &[("date", "2023-12-19"), ("title", "Nobody's")]
        ),
        (400, "missing query parameter \"list\"\n".to_owned())
    );
    let (status, body) = node.get("/add_entry", &bob("2023-12-19", "x"));
    assert_eq!(status, 405, "{body}");

    // Acknowledged means on disk: a kill -9 right after loses nothing.
    drop(node);
    let node = Node::start(data.path());
    assert_eq!(node.get("/entries", &day), (200, expected.to_owned()));
    assert_eq!(
        node.post("/add_entry", &bob("2023-12-19", "Dinner")),
        (200, "OK".to_owned())
    );
    assert_eq!(
        node.get("/entries", &day).1,
        format!("{expected}2023-12-19 Dinner\n"),
        "ids go on after a restart"
    );
    let mut files: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["bob.json"], "one file per list, no leftovers");
}

#[test]
fn a_taken_port_is_named_in_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = run_bounded(
        todo(home.path())
            .args(["--port", &port, "--data-dir"])
            .arg(data.path()),
        STARTUP,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} ")) && stderr.contains("--port"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn load_runs_the_operations_and_prints_the_rate() {
    let cwd = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = run_bounded(
        todo(home.path())
            .args([
                "load",
                "--requests",
                "2000",
                "--lists",
                "3",
                "--clients",
                "4",
            ])
            .current_dir(cwd.path()),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("one line: {stdout:?}"));
    let rest = line
        .strip_prefix("2000 operations in ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let (secs, rate) = rest.split_once(" s: ").expect("`N s: R ops/s`");
    let rate = rate.strip_suffix(" ops/s").expect("ends in ops/s");
    assert!(secs.parse::<f64>().unwrap() >= 0.0, "{line}");
    assert!(rate.parse::<u64>().unwrap() > 0, "{line}");
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "without --data-dir, load stores nothing"
    );
}

#[test]
fn load_with_a_data_dir_stores_every_list() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = run_bounded(
        todo(home.path())
            .args(["load", "--requests", "40", "--lists", "2", "--data-dir"])
            .arg(data.path()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list0 = std::fs::read_to_string(data.path().join("list0.json")).unwrap();
    let list1 = std::fs::read_to_string(data.path().join("list1.json")).unwrap();
    // 20 adds over 2 lists: ids 1..=10 each.
    assert!(list0.starts_with(r#"{"auto_id":11,"#), "{list0}");
    assert!(list1.starts_with(r#"{"auto_id":11,"#), "{list1}");
}
