//! End to end: the real `nodetrace` CLI against real Todo nodes (separate
//! processes, real sockets), each test in its own nodetrace home.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{Home, summary_counts, unique, wait_until};
use serde_json::Value;

const TRACE_LIMIT: Duration = Duration::from_secs(30);

fn pid_of(home: &Home, name: &str) -> String {
    let ps = home.run(&["ps", "--format", "json"]);
    ps.ok();
    ps.json_lines()
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {}", ps.stdout))["pid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn nodes_lists_the_node_and_commands_attach_by_name() {
    let home = Home::new();
    let name = unique("attach");
    let node = home.start_node(&name);

    let nodes = home.run(&["nodes"]);
    let text = nodes.ok();
    assert!(text.starts_with("NAME"), "{text}");
    let row = text.lines().nth(1).expect("a row");
    assert!(row.starts_with(&name), "{row}");
    assert!(row.contains(&node.os_pid().to_string()), "{row}");

    let json = home.run(&["nodes", "--format", "json"]).json_lines();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["name"], name.as_str());
    assert_eq!(json[0]["os_pid"], node.os_pid());
    assert!(json[0]["addr"].as_str().unwrap().starts_with("127.0.0.1:"));

    // By name, by short name, by address, and the only node without --node.
    let addr = json[0]["addr"].as_str().unwrap().to_owned();
    let short = name.split('@').next().unwrap().to_owned();
    for args in [
        vec!["ps", "--node", &name],
        vec!["ps", "--node", &short],
        vec!["ps", "--node", &addr],
        vec!["ps"],
    ] {
        let ps = home.run(&args);
        let out = ps.ok();
        assert!(out.contains("todo_cache"), "{args:?}: {out}");
        assert!(out.starts_with("PID"), "{args:?}: {out}");
    }

    let ls = home.run(&["ls", "Todo.Server"]);
    let out = ls.ok();
    assert!(
        out.lines().any(|l| l.starts_with("todo::server:entries/2")
            && l.contains("examples/todo/src/server.rs:")),
        "{out}"
    );
    assert!(out.lines().all(|l| l.starts_with("todo::server:")), "{out}");
    let ls = home.run(&["ls", "--format", "json"]).json_lines();
    assert!(ls.iter().any(|c| c["module"] == "todo::database"));
}

/// Runs `trace calls PATTERN --max N --format json` while requests flow and
/// returns the events.
fn trace_json(home: &Home, args: &[&str]) -> (Vec<Value>, String) {
    let mut all = vec!["trace", "calls"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json", "--duration", "20s"]);
    let run = home.run(&all);
    run.ok();
    let mut events = run.json_lines();
    let end = events.pop().expect("an end object");
    assert_eq!(end["type"], "end", "{end}");
    assert_eq!(end["shown"], events.len(), "{end}");
    (events, run.stderr)
}

#[test]
fn each_pattern_form_sees_the_right_calls() {
    let home = Home::new();
    let node = home.start_node(&unique("patterns"));
    let _load = node.load();

    type Check = fn(&Value) -> bool;
    let server: Check = |e| e["module"] == "todo::server";
    let cases: [(&str, Check); 6] = [
        ("Todo.Server", server),
        ("todo::server", server),
        ("Todo.Server:entries", |e| {
            e["module"] == "todo::server" && e["function"] == "entries"
        }),
        ("Todo.Server:entries/2", |e| {
            e["module"] == "todo::server" && e["function"] == "entries" && e["arity"] == 2
        }),
        ("todo::*", |e| {
            e["module"].as_str().unwrap().starts_with("todo")
        }),
        ("Todo.Server:handle_*", |e| {
            e["module"] == "todo::server" && e["function"].as_str().unwrap().starts_with("handle_")
        }),
    ];
    for (pattern, check) in cases {
        let (events, stderr) = trace_json(&home, &[pattern, "--max", "12"]);
        assert_eq!(events.len(), 12, "{pattern}: {stderr}\n{events:?}");
        for e in &events {
            assert_eq!(e["type"], "call", "{pattern}: {e}");
            assert_eq!(e["node"], node.name.as_str());
            assert!(check(e), "{pattern} selected {e}");
        }
        if pattern == "todo::*" {
            let modules: BTreeSet<&str> = events
                .iter()
                .map(|e| e["module"].as_str().unwrap())
                .collect();
            assert!(
                modules.len() >= 2,
                "todo::* reaches submodules: {modules:?}"
            );
        }
    }

    // The text form reads like dbg.
    let run = home.run(&["trace", "calls", "Todo.Server:entries/2", "--max", "2"]);
    for line in run.ok().lines() {
        assert!(
            line.starts_with("(<0.") && line.contains(") call todo::server:entries(<0."),
            "{line}"
        );
    }
}

#[test]
fn return_shows_values_and_durations() {
    let home = Home::new();
    let node = home.start_node(&unique("returns"));
    node.add_entry("bob", "2023-12-19", "Movies");
    let _load = node.load();

    let run = home.run(&[
        "trace",
        "calls",
        "Todo.Server:entries/2",
        "--return",
        "--max",
        "6",
    ]);
    let lines = run.lines();
    run.ok();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let returns: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(") returned from todo::server:entries/2 -> Ok(["))
        .collect();
    assert!(!returns.is_empty(), "{lines:?}");
    for line in returns {
        assert!(line.contains("Movies"), "{line}");
        assert!(line.ends_with("s busy)"), "a duration at the end: {line}");
    }

    let (events, _) = trace_json(&home, &["Todo.Server:entries/2", "--return", "--max", "4"]);
    let ret = events
        .iter()
        .find(|e| e["type"] == "return")
        .expect("a return event");
    assert!(ret["result"].as_str().unwrap().starts_with("Ok(["), "{ret}");
    assert!(ret["duration_ns"].as_u64().unwrap() > 0, "{ret}");
    assert!(ret["timestamp_ns"].as_u64().unwrap() > 0, "{ret}");
}

#[test]
fn messages_of_a_named_server() {
    let home = Home::new();
    let node = home.start_node(&unique("messages"));
    node.add_entry("bob", "2023-12-19", "Movies");
    let bob = pid_of(&home, "todo_server:bob");
    let _load = node.load();

    let run = home.run(&[
        "trace",
        "messages",
        "--process",
        "todo_server:bob",
        "--max",
        "8",
    ]);
    let lines = run.lines();
    run.ok();
    assert_eq!(lines.len(), 8, "{lines:?}");
    let prefix = format!("({bob}) ");
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains(") << ")),
        "receives: {lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains(" ! ")), "sends: {lines:?}");

    let run = home.run(&[
        "trace",
        "messages",
        "--process",
        "todo_server:bob",
        "--receive",
        "--max",
        "4",
        "--format",
        "json",
    ]);
    run.ok();
    let mut events = run.json_lines();
    let end = events.pop().expect("an end object");
    assert_eq!(end["type"], "end", "{end}");
    assert_eq!(end["reason"], "max_events", "{end}");
    assert_eq!(events.len(), 4);
    for e in events {
        assert_eq!(e["type"], "receive", "{e}");
        assert_eq!(e["pid"], bob.as_str());
    }
}

#[test]
fn sys_trace_get_state_and_statistics() {
    let home = Home::new();
    let node = home.start_node(&unique("sys"));
    node.add_entry("bob", "2023-12-19", "Movies");
    let _load = node.load();

    let run = home.run(&["sys", "trace", "todo_server:bob", "--max", "6"]);
    let lines = run.lines();
    run.ok();
    assert_eq!(lines.len(), 6, "{}\n{lines:?}", run.stderr);
    for line in &lines {
        assert!(line.starts_with("*DBG* todo_server:bob "), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" got call ") && l.contains(" from <0.")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" sent ") && l.contains(", new state ")),
        "{lines:?}"
    );
    assert!(
        run.stderr.contains("reached the limit of 6 events"),
        "{}",
        run.stderr
    );

    let state = home.run(&["sys", "get-state", "todo_server:bob"]);
    assert!(state.ok().contains("Movies"), "{}", state.stdout);
    let stats = home.run(&["sys", "statistics", "todo_server:bob", "--format", "json"]);
    stats.ok();
    let stats = &stats.json_lines()[0];
    assert!(stats["handled"].as_u64().unwrap() >= 1, "{stats}");
    let off = home.run(&["sys", "trace", "todo_server:bob", "off"]);
    off.ok();
    assert!(off.stderr.contains("stop-clear"), "{}", off.stderr);
}

#[test]
fn max_stops_exactly_at_n() {
    let home = Home::new();
    let node = home.start_node(&unique("max"));
    let _load = node.load();
    let run = home.run(&["trace", "calls", "todo::*", "--max", "25"]);
    run.ok();
    assert_eq!(run.lines().len(), 25, "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "trace ended on {}: reached the limit of 25 events; 25 shown,",
            node.name
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn no_limit_means_the_default_and_everything_needs_one() {
    let home = Home::new();
    let _node = home.start_node(&unique("default"));
    let run = home.run(&["trace", "calls", "*"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("refusing to trace every function"),
        "{}",
        run.stderr
    );
    let run = home.run(&["trace", "calls", "Todo..Server"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("at column 6"), "{}", run.stderr);

    // With no limit the node's default applies, and the start line says so.
    let mut trace = home.spawn(&["trace", "calls", "Todo.Server"]);
    trace.wait_stderr("limits: 1000 events, 1m (the default", TRACE_LIMIT);
    trace.signal("INT");
    let run = trace.wait(TRACE_LIMIT);
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains("stopped by the tracer"),
        "{}",
        run.stderr
    );
}

#[test]
fn rate_limit_counts_are_exact_under_a_flood() {
    let home = Home::new();
    let node = home.start_node(&unique("rate"));
    node.add_entry("bob", "2023-12-19", "Movies");

    // One todo::server:entries/2 call per GET /entries: made while the
    // trace runs, every one of them is counted exactly once.
    let mut trace = home.spawn(&[
        "trace",
        "calls",
        "Todo.Server:entries/2",
        "--rate",
        "5/1s",
        "--format",
        "json",
    ]);
    trace.wait_stderr("tracing calls", TRACE_LIMIT);
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 60;
    let base = node.base();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let base = base.clone();
            thread::spawn(move || {
                let agent = common::agent();
                for _ in 0..PER_CLIENT {
                    let status = agent
                        .get(format!("{base}/entries"))
                        .query("list", "bob")
                        .query("date", "2023-12-19")
                        .call()
                        .expect("entries answers")
                        .status();
                    assert_eq!(status.as_u16(), 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    trace.signal("INT");
    let run = trace.wait(TRACE_LIMIT);
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    let (shown, dropped, lost, discarded) = summary_counts(&run.stderr, &node.name);
    assert!(
        run.stderr.contains("stopped by the tracer"),
        "{}",
        run.stderr
    );
    let mut lines = run.json_lines();
    let end = lines.pop().expect("an end object");
    assert_eq!(shown as usize, lines.len(), "shown is what was printed");
    assert_eq!(
        (&end["shown"], &end["rate_dropped"], &end["lost"]),
        (&shown.into(), &dropped.into(), &lost.into()),
        "the end object counts as the summary line does: {end}"
    );
    assert_eq!(
        shown + dropped + lost + discarded,
        (CLIENTS * PER_CLIENT) as u64,
        "every call counted once: {}",
        run.stderr
    );
    assert!(dropped > 0, "the flood exceeded 5/1s: {}", run.stderr);
    assert!(shown >= 1, "{}", run.stderr);
}

#[test]
fn a_wrong_cookie_is_refused_clearly() {
    let home = Home::new();
    let node = home.start_node(&unique("cookie"));
    let run = home.run(&["ps", "--cookie", "wrong"]);
    assert!(!run.status.success());
    let want = format!(
        "{} refused the cookie: use the node's cookie (--cookie, NODETRACE_COOKIE or {})",
        node.name,
        home.path().join("cookie").display()
    );
    assert_eq!(run.stderr.trim(), format!("nodetrace: {want}"));

    let run = common::run_bounded(
        home.nodetrace(&["ls"]).env("NODETRACE_COOKIE", "wrong too"),
        common::COMMAND_LIMIT,
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("refused the cookie"), "{}", run.stderr);

    // The right cookie, given explicitly, works.
    let cookie = home.cookie();
    home.run(&["ps", "--cookie", &cookie]).ok();
}

#[test]
fn an_unknown_node_lists_the_known_ones() {
    let home = Home::new();
    let a = home.start_node(&unique("known"));
    let run = home.run(&["ps", "--node", "foo@localhost"]);
    assert!(!run.status.success());
    assert_eq!(
        run.stderr.trim(),
        format!(
            "nodetrace: unknown node foo@localhost; known nodes: {}",
            a.name
        )
    );
    let b = home.start_node(&unique("known"));
    let run = home.run(&["ps"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("2 nodes are running")
            && run.stderr.contains(&a.name)
            && run.stderr.contains(&b.name),
        "{}",
        run.stderr
    );

    let empty = Home::new();
    let run = empty.run(&["ps"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("no nodes are running"),
        "{}",
        run.stderr
    );

    // The HTTP port is not the control port, and says so.
    let run = home.run(&["ps", "--node", &format!("127.0.0.1:{}", a.port)]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("is not a nodetrace node"),
        "{}",
        run.stderr
    );
}

#[test]
fn malformed_and_oversized_frames_leave_the_node_serving() {
    let home = Home::new();
    let mut node = home.start_node(&unique("frames"));
    let nodes = home.run(&["nodes", "--format", "json"]).json_lines();
    let addr = nodes[0]["addr"].as_str().unwrap().to_owned();

    let attacks: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        u32::MAX.to_be_bytes().to_vec(),
        (64u32 << 20).to_be_bytes().to_vec(),
        [&5u32.to_be_bytes()[..], &[0xff; 5]].concat(),
        [&100u32.to_be_bytes()[..], &[0u8; 10]].concat(),
        vec![0, 0],
        vec![0, 0, 0, 0],
        vec![0xff; 4096],
    ];
    for bytes in &attacks {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // The node closes the connection (or answers and closes).
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    assert!(node.is_running(), "the node survived");
    let ps = home.run(&["ps"]);
    assert!(ps.ok().contains("todo_cache"), "{}", ps.stdout);
    assert_eq!(node.add_entry("bob", "2023-12-19", "Still here"), "OK");
    assert!(node.entries("bob", "2023-12-19").contains("Still here"));
}

#[test]
fn a_killed_tracer_leaves_no_trace_behind() {
    let home = Home::new();
    let node = home.start_node(&unique("sigkill"));
    let _load = node.load();
    let mut trace = home.spawn(&["trace", "calls", "todo::*", "--duration", "30s"]);
    trace.wait_stderr("tracing calls", TRACE_LIMIT);
    assert!(
        wait_until(TRACE_LIMIT, || !trace.stdout().is_empty()).is_some(),
        "the trace shows calls"
    );
    trace.signal("KILL");
    let _ = trace.wait(TRACE_LIMIT);
    // The node notices the closed connection (or, at worst, the silence).
    thread::sleep(Duration::from_millis(1500));
    let run = home.run(&["stop-clear"]);
    assert_eq!(
        run.ok().trim(),
        format!("stop-clear on {}: ended 0 traces", node.name)
    );
}

#[test]
fn stop_clear_from_another_process_ends_a_running_trace() {
    let home = Home::new();
    let node = home.start_node(&unique("stopclear"));
    let _load = node.load();
    let mut trace = home.spawn(&["trace", "messages", "--duration", "30s"]);
    trace.wait_stderr("tracing messages", TRACE_LIMIT);
    let run = home.run(&["stop-clear", "--format", "json"]);
    run.ok();
    assert_eq!(run.json_lines()[0]["traces"], 1, "{}", run.stdout);
    let ended = trace.wait(Duration::from_secs(10));
    ended.ok();
    assert!(
        ended.stderr.contains(&format!(
            "trace ended on {}: stopped by stop-clear;",
            node.name
        )),
        "{}",
        ended.stderr
    );
}

#[test]
fn two_nodes_are_traced_at_once() {
    let home = Home::new();
    let a = home.start_node(&unique("a"));
    let b = home.start_node(&unique("b"));
    let _load_a = a.load();
    let _load_b = b.load();
    let run = home.run(&[
        "trace",
        "calls",
        "Todo.Server",
        "--node",
        &a.name,
        "--node",
        &b.name,
        "--max",
        "5",
    ]);
    run.ok();
    let lines = run.lines();
    assert_eq!(lines.len(), 10, "5 from each: {lines:?}");
    for node in [&a, &b] {
        let prefix = format!("({} <0.", node.name);
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(&prefix)).count(),
            5,
            "{lines:?}"
        );
        assert!(
            run.stderr.contains(&format!(
                "trace ended on {}: reached the limit of 5 events",
                node.name
            )),
            "{}",
            run.stderr
        );
    }

    let run = home.run(&[
        "trace",
        "calls",
        "Todo.Server",
        "--node",
        &a.name,
        "--node",
        &b.name,
        "--max",
        "2",
        "--format",
        "json",
    ]);
    run.ok();
    let nodes: BTreeSet<String> = run
        .json_lines()
        .iter()
        .map(|e| e["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nodes, BTreeSet::from([a.name.clone(), b.name.clone()]));
}

#[test]
fn output_to_a_file_and_a_closed_pipe() {
    let home = Home::new();
    let node = home.start_node(&unique("output"));
    let _load = node.load();
    let file = home.path().join("trace.txt");
    let run = home.run(&[
        "trace",
        "calls",
        "Todo.Server",
        "--max",
        "3",
        "--output",
        file.to_str().unwrap(),
    ]);
    run.ok();
    assert!(run.stdout.is_empty());
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");

    // `| head -1`: the reader goes away; nodetrace stops quietly with 0.
    let mut child = home
        .nodetrace(&["trace", "calls", "todo::*", "--duration", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.contains(") call todo"), "{first}");
    drop(stdout);
    let ended = wait_until(TRACE_LIMIT, || child.try_wait().unwrap().is_some());
    if ended.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        ended.is_some(),
        "nodetrace ended after its reader went away"
    );
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("nodetrace:"), "quietly: {stderr}");
    assert!(stderr.contains("stopped by the tracer"), "{stderr}");
}
