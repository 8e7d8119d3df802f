//! End to end: the processes of an ordinary tokio service. The `orders`
//! example (an order book over TCP: an mpsc actor with oneshot replies, a
//! slow audit actor on an unbounded channel, a background sweeper, a plain
//! `tokio::spawn` task, one task per connection) runs as its own process in
//! its own nodetrace home; the real CLI lists, traces, observes it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Home, KvClient, KvNode, unique, wait_until};
use serde_json::Value;

/// How long anything may take on a loaded two-core machine.
const LIMIT: Duration = Duration::from_secs(30);

/// `ps --format json` of `node`.
fn ps(home: &Home, node: &KvNode) -> Vec<Value> {
    home.run(&["ps", "--node", &node.name, "--format", "json"])
        .json_lines()
}

/// The `ps` row named `name`.
fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {rows:#?}"))
}

/// Sends `n` orders on one connection, waiting for each reply.
fn orders(node: &KvNode, n: usize) {
    let mut client = node.client();
    for i in 0..n {
        let reply = client.send(&format!("BUY apple {}", i + 1));
        assert!(reply.starts_with("OK "), "{reply}");
    }
}

#[test]
fn ps_lists_the_actors_and_the_background_task_with_their_polls() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordps"), &[]);
    let first = home.run(&["ps", "--node", &node.name]);
    first.ok();
    assert!(
        first.stderr.contains("just began it"),
        "the first ps says the node begins timing now: {}",
        first.stderr
    );
    orders(&node, 50);
    let rows = ps(&home, &node);
    for name in ["book", "audit", "expiry"] {
        let r = row(&rows, name);
        assert_eq!(r["kind"], "task", "{r}");
        assert!(
            r["pid"].as_str().unwrap().ends_with(".1>"),
            "a task pid: {r}"
        );
        assert!(r["polls"].as_u64().unwrap() > 0, "{name} was polled: {r}");
        assert!(r["busy_ns"].as_u64().unwrap() > 0, "{name} was busy: {r}");
        assert!(r["idle_ns"].as_u64().unwrap() > 0, "{name} was idle: {r}");
        assert!(r["wakes"].as_u64().unwrap() > 0, "{name} was woken: {r}");
        assert!(
            matches!(r["state"].as_str(), Some("idle" | "running")),
            "{r}"
        );
    }
    let book = row(&rows, "book");
    assert!(book["has_mailbox"].as_bool().unwrap());
    assert!(book["messages_in"].as_u64().unwrap() >= 50, "{book}");
    assert!(book["handled"].as_u64().unwrap() >= 49, "{book}");
    let audit = row(&rows, "audit");
    assert!(audit["messages_in"].as_u64().unwrap() >= 50, "{audit}");
    assert_eq!(row(&rows, "expiry")["has_mailbox"], false);

    let text = home.run(&["ps", "--node", &node.name]);
    let header = text.ok().lines().next().unwrap().to_owned();
    assert!(
        header.starts_with("PID") && header.contains("POLLS") && header.contains("MAILBOX"),
        "{header}"
    );
}

#[test]
fn a_connection_is_a_task_named_by_its_peer_while_it_lasts() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordconn"), &[]);
    let mut client = node.client();
    assert!(client.send("BOOK apple").starts_with("apple buy 0"));
    let rows = ps(&home, &node);
    let conns: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("conn:127.0.0.1:"))
        })
        .collect();
    assert_eq!(conns.len(), 1, "{rows:#?}");
    drop(client);
    let gone = wait_until(LIMIT, || {
        !ps(&home, &node)
            .iter()
            .any(|r| r["name"].as_str().is_some_and(|n| n.starts_with("conn:")))
    });
    assert!(gone.is_some(), "a closed connection's task leaves ps");
}

#[test]
fn a_slow_actors_mailbox_grows_and_is_shown() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordslow"), &["--audit-delay", "50"]);
    home.run(&["ps", "--node", &node.name]).ok();
    // 200 requests written at once: the book answers each at once, the
    // audit takes 50 ms a record.
    let mut stream = TcpStream::connect(node.addr).unwrap();
    let burst: String = (1..=200).map(|i| format!("BUY pear {i}\n")).collect();
    stream.write_all(burst.as_bytes()).unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..200 {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        assert!(line.starts_with("OK "), "{line}");
    }
    let first = row(&ps(&home, &node), "audit")["mailbox_len"]
        .as_u64()
        .unwrap();
    assert!(
        first >= 100,
        "200 records in, at 50 ms each: {first} waiting"
    );
    let stats = home.run(&["sys", "statistics", "audit", "--node", &node.name]);
    let stats = stats.ok();
    assert!(stats.contains("messages in:     200"), "{stats}");
    let waiting: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("  mailbox length:  "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(waiting > 0 && waiting <= first, "{stats}");
    assert!(
        !stats.contains("messages out"),
        "a channel's owner counts no sends: {stats}"
    );

    let top = home.run(&[
        "top",
        "--node",
        &node.name,
        "--sort",
        "mailbox",
        "--limit",
        "3",
        "--interval",
        "200ms",
        "--format",
        "json",
        "--once",
    ]);
    let frame: Value = serde_json::from_str(top.ok().trim()).unwrap();
    assert_eq!(frame["rows"][0]["name"], "audit", "{frame:#}");
    assert!(frame["rows"][0]["mailbox_len"].as_u64().unwrap() > 0);
}

#[test]
fn trace_messages_shows_an_actors_sends_and_receives_with_their_pids() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordmsg"), &["--expiry-every", "60000"]);
    let mut client = node.client();
    client.send("BOOK warmup");
    let rows = ps(&home, &node);
    let book = row(&rows, "book")["pid"].as_str().unwrap().to_owned();
    let audit = row(&rows, "audit")["pid"].as_str().unwrap().to_owned();
    let conn = rows
        .iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.starts_with("conn:")))
        .unwrap()["pid"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut trace = home.spawn(&[
        "trace",
        "messages",
        "--process",
        "book",
        "--process",
        "audit",
        "--node",
        &node.name,
        "--max",
        "6",
        "--format",
        "json",
    ]);
    trace.wait_stderr("tracing messages", LIMIT);
    client.send("BUY plum 3");
    client.send("BOOK plum");
    let run = trace.wait(LIMIT);
    let events: Vec<Value> = run
        .json_lines()
        .into_iter()
        .filter(|e| e["type"] != "end")
        .collect();
    assert_eq!(events.len(), 6, "{}", run.stdout);
    let find = |kind: &str, pid: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind && e["pid"] == pid)
            .unwrap_or_else(|| panic!("no {kind} at {pid} in {events:#?}"))
    };
    let got = find("receive", &book);
    assert_eq!(
        got["peer"],
        conn.as_str(),
        "the request came from the connection"
    );
    assert!(
        got["text"].as_str().unwrap().starts_with("Place {"),
        "{got}"
    );
    let reply = find("send", &book);
    assert_eq!(reply["peer"], conn.as_str(), "the reply goes to the caller");
    let record = find("receive", &audit);
    assert_eq!(record["peer"], conn.as_str());
    assert!(
        record["text"]
            .as_str()
            .unwrap()
            .contains(r#"line: "BUY plum 3""#)
    );
}

#[test]
fn sys_trace_and_statistics_work_for_an_actor() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordsys"), &["--audit-delay", "5"]);
    let mut client = node.client();
    client.send("BOOK fig");
    let mut trace = home.spawn(&["sys", "trace", "audit", "--node", &node.name, "--max", "4"]);
    trace.wait_stderr("tracing sys events of audit", LIMIT);
    client.send("SELL fig 2");
    client.send("BOOK fig");
    let run = trace.wait(LIMIT);
    let lines = run.lines();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(
        lines[0].starts_with(r#"*DBG* audit got Record { peer: "127.0.0.1:"#)
            && lines[0].ends_with(r#"line: "SELL fig 2" }"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("*DBG* audit handled it in "),
        "{}",
        lines[1]
    );
    let stats = home.run(&[
        "sys",
        "statistics",
        "book",
        "--node",
        &node.name,
        "--format",
        "json",
    ]);
    let stats: Value = serde_json::from_str(stats.ok().trim()).unwrap();
    assert!(stats["messages_in"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats.get("messages_out").is_none(), "{stats}");

    let refused = home.run(&["sys", "statistics", "expiry", "--node", &node.name]);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("receives on no traced channel"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_message_trace_with_no_traced_mailbox_says_how_to_get_one() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordhint"), &[]);
    let run = home.run(&[
        "trace",
        "messages",
        "--process",
        "expiry",
        "--receive",
        "--node",
        &node.name,
        "--duration",
        "300ms",
    ]);
    run.ok();
    assert!(
        run.stderr.contains("no process traced here has a mailbox")
            && run
                .stderr
                .contains("nodetrace_agent::sync::{mpsc, oneshot}"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_plain_tokio_task_running_traced_code_is_listed_once_seen() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordseen"), &[]);
    let trace = home.run(&[
        "trace",
        "calls",
        "orders::stats:report",
        "--node",
        &node.name,
        "--max",
        "2",
    ]);
    let out = trace.ok();
    let pid = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix('(')?.split_once(')'))
        .map(|(pid, _)| pid.to_owned())
        .unwrap_or_else(|| panic!("no call line in {out}"));
    let rows = ps(&home, &node);
    let seen = rows
        .iter()
        .find(|r| r["pid"] == pid.as_str())
        .unwrap_or_else(|| panic!("{pid} not in {rows:#?}"));
    assert_eq!(seen["kind"], "task (seen)", "{seen}");
    assert!(
        seen.get("polls").is_none(),
        "no counters for a plain task: {seen}"
    );
}

#[test]
fn top_prints_a_snapshot_when_not_on_a_terminal() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordtop"), &[]);
    let load = std::thread::spawn({
        let addr = node.addr;
        move || {
            let mut client = KvClient::connect(addr);
            for i in 0..200 {
                client.send(&format!("SELL kiwi {}", i + 1));
            }
        }
    });
    let run = home.run(&[
        "top",
        "--node",
        &node.name,
        "--interval",
        "300ms",
        "--limit",
        "5",
    ]);
    let out = run.ok().to_owned();
    load.join().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{}  up ", node.name)),
        "{out}"
    );
    assert!(
        lines[0].contains("resident") && lines[0].contains("threads"),
        "{out}"
    );
    assert!(lines[1].starts_with("tokio 2 workers, "), "{out}");
    assert!(
        lines[2].starts_with("agent: 0 sessions"),
        "top never traces: {out}"
    );
    assert_eq!(lines[3], "sorted by busy");
    assert!(
        lines[4].starts_with("PID") && lines[4].contains("BUSY%"),
        "{out}"
    );
    assert!(lines.len() <= 5 + 5, "at most --limit rows: {out}");
    assert!(out.contains(" book "), "{out}");

    let json = home.run(&[
        "top",
        "--node",
        &node.name,
        "--interval",
        "200ms",
        "--format",
        "json",
        "--once",
    ]);
    let frame: Value = serde_json::from_str(json.ok().trim()).unwrap();
    assert_eq!(frame["type"], "top");
    assert_eq!(frame["node"], node.name.as_str());
    assert!(frame["interval_ms"].as_u64().unwrap() >= 150, "{frame}");
    assert!(frame["system"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(frame["system"]["runtime"]["workers"] == 2, "{frame}");
    assert!(frame["processes"].as_u64().unwrap() >= 3);

    let other = home.start_orders(&unique("ordtop2"), &[]);
    let two = home.run(&[
        "top",
        "--node",
        &node.name,
        "--node",
        &other.name,
        "--interval",
        "200ms",
        "--format",
        "json",
        "--once",
    ]);
    let nodes: Vec<String> = two
        .json_lines()
        .iter()
        .map(|f| f["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        nodes,
        [node.name.clone(), other.name.clone()],
        "one object a node"
    );
}

#[test]
fn info_prints_every_field() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordinfo"), &[]);
    let text = home.run(&["info", "--node", &node.name]);
    let text = text.ok();
    for key in [
        "node",
        "agent",
        "os",
        "uptime",
        "memory",
        "cpu",
        "threads",
        "open files",
        "runtime",
        "processes",
        "callsites",
        "rings",
        "sessions",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key:<12}"))),
            "no {key} line in:\n{text}"
        );
    }
    assert!(text.contains("3 tasks"), "{text}");
    assert!(text.contains("3 traced functions"), "{text}");
    let json = home.run(&["info", "--node", &node.name, "--format", "json"]);
    let info: Value = serde_json::from_str(json.ok().trim()).unwrap();
    for key in [
        "type",
        "node",
        "os_pid",
        "started_ms",
        "agent_version",
        "protocol_version",
        "os",
        "system",
        "peak_rss_bytes",
        "max_open_files",
        "processes",
        "callsites",
        "sessions",
        "ring_capacity",
    ] {
        assert!(info.get(key).is_some(), "no {key} in {info:#}");
    }
    assert_eq!(info["processes"]["tasks"], 3, "{info:#}");
    assert_eq!(info["system"]["runtime"]["workers"], 2);
}

#[test]
fn top_in_a_terminal_sorts_and_quits() {
    let home = Home::new();
    let node = home.start_orders(&unique("ordtmux"), &[]);
    let socket = unique("nodetrace-tmux");
    let tmux = |args: &[&str]| {
        let out = std::process::Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("tmux runs ({e}): install it with scripts/install-test-tools.sh")
            });
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let cmd = format!(
        "HOME={0} NODETRACE_HOME={0} {1} top --node {2} --interval 200ms; echo exited $? > {0}/top.exit; sleep 30",
        home.path().display(),
        common::NODETRACE,
        node.name,
    );
    assert!(tmux(&["new-session", "-d", "-x", "120", "-y", "30", &cmd]).0);
    let _kill = KillServer(socket.clone());
    let screen = || tmux(&["capture-pane", "-p"]).1;
    let shown = wait_until(LIMIT, || {
        screen().contains("sorted by busy") && screen().contains("book")
    });
    assert!(shown.is_some(), "top drew its view:\n{}", screen());
    assert!(
        screen().contains(&format!("nodetrace top: {}", node.name)),
        "{}",
        screen()
    );
    tmux(&["send-keys", "l"]);
    let sorted = wait_until(LIMIT, || screen().contains("sorted by mailbox"));
    assert!(sorted.is_some(), "l sorts by mailbox:\n{}", screen());
    tmux(&["send-keys", "q"]);
    let exit = home.path().join("top.exit");
    let quit = wait_until(LIMIT, || exit.is_file());
    assert!(quit.is_some(), "q quits:\n{}", screen());
    assert_eq!(std::fs::read_to_string(&exit).unwrap().trim(), "exited 0");
}

/// Ends a test's own tmux server.
struct KillServer(String);

impl Drop for KillServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}
