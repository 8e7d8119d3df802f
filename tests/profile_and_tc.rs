//! End to end: `nodetrace profile` on commands it starts (the `exiting`
//! example of nodetrace-agent, ending every way a program ends) and on a
//! running Todo node, and `nodetrace tc`. Real processes, each test in its
//! own nodetrace home, every wait bounded.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{Home, KillOnDrop, exiting_bin, unique};
use serde_json::Value;

fn exiting() -> &'static str {
    exiting_bin().to_str().expect("a UTF-8 path")
}

/// `nodetrace profile ARGS -- exiting MODE CALLS`.
fn profile_exiting(home: &Home, args: &[&str], mode: &str, calls: &str) -> common::Run {
    let mut all = vec!["profile"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", exiting(), mode, calls]);
    home.run(&all)
}

/// The report's JSON: the last line of stdout, after the command's own.
fn report_json(run: &common::Run) -> Value {
    let last = run
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no report; stderr: {}", run.stderr));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}\nstderr: {}", run.stderr))
}

/// Calls by function name in a JSON report.
fn calls(report: &Value) -> BTreeMap<String, u64> {
    report["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_owned(),
                f["calls"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn code(run: &common::Run) -> Option<i32> {
    run.status.code()
}

/// The command's own output comes first on stdout, then the report.
fn assert_command_output_first(run: &common::Run) {
    assert_eq!(
        run.stdout.lines().next(),
        Some("exiting: done"),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn cprof_of_a_command_counts_exactly_and_passes_exit_0_through() {
    let home = Home::new();
    let run = profile_exiting(&home, &["cprof"], "normal", "100");
    assert_eq!(code(&run), Some(0), "stderr: {}", run.stderr);
    assert_command_output_first(&run);
    let count = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} row in {}", run.stdout))
    };
    assert_eq!(count("exiting:outer/1"), 100);
    assert_eq!(count("exiting:inner/1"), 200);
    assert_eq!(count("Total"), 300);
    assert!(
        run.stdout
            .contains("Profile done over 2 matching functions"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("died before"), "{}", run.stdout);

    let run = profile_exiting(&home, &["cprof", "--format", "json"], "normal", "100");
    assert_eq!(code(&run), Some(0), "stderr: {}", run.stderr);
    assert_command_output_first(&run);
    let report = report_json(&run);
    assert_eq!(report["profiler"], "cprof");
    assert_eq!(report["complete"], true);
    assert!(
        report["node"].as_str().unwrap().starts_with("exiting_"),
        "{report}"
    );
    assert_eq!(
        calls(&report),
        BTreeMap::from([("inner".to_owned(), 200), ("outer".to_owned(), 100)])
    );
}

#[test]
fn eprof_of_a_command_that_returns_exit_code_3() {
    let home = Home::new();
    let run = profile_exiting(&home, &["eprof", "--format", "json"], "code", "50");
    assert_eq!(code(&run), Some(3), "stderr: {}", run.stderr);
    assert_command_output_first(&run);
    let report = report_json(&run);
    assert_eq!(report["profiler"], "eprof");
    assert_eq!(report["complete"], true);
    assert_eq!(
        calls(&report),
        BTreeMap::from([("inner".to_owned(), 100), ("outer".to_owned(), 50)])
    );
    for f in report["functions"].as_array().unwrap() {
        let (own, acc) = (f["own_ns"].as_u64().unwrap(), f["acc_ns"].as_u64().unwrap());
        assert!(own <= acc, "own > acc: {f}");
        assert!(acc > 0, "{f}");
    }
}

#[test]
fn a_command_that_calls_process_exit_still_sends_its_final_report() {
    let home = Home::new();
    let run = profile_exiting(&home, &["eprof", "--format", "json"], "exit", "30");
    assert_eq!(code(&run), Some(4), "stderr: {}", run.stderr);
    let report = report_json(&run);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(
        calls(&report),
        BTreeMap::from([("inner".to_owned(), 60), ("outer".to_owned(), 30)])
    );
    assert!(
        !run.stderr.contains("before its final report"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_command_that_panics_exits_101_with_its_report() {
    let home = Home::new();
    let run = profile_exiting(&home, &["eprof"], "panic", "20");
    assert_eq!(code(&run), Some(101), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("exiting on purpose"), "{}", run.stderr);
    assert_command_output_first(&run);
    assert!(run.stdout.contains("FUNCTION"), "{}", run.stdout);
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("exiting:outer/1"))
        .unwrap_or_else(|| panic!("no outer row: {}", run.stdout));
    assert_eq!(row.split_whitespace().nth(1), Some("20"), "{row}");
    assert!(!run.stdout.contains("died before"), "{}", run.stdout);
}

#[test]
fn a_killed_command_gets_its_last_periodic_figures_and_exit_137() {
    let home = Home::new();
    let mut nodetrace = home.spawn(&[
        "profile",
        "eprof",
        "--interval",
        "100ms",
        "--",
        exiting(),
        "hang",
        "10",
    ]);
    nodetrace.wait_stderr("10 calls done", Duration::from_secs(30));
    let pid: u32 = nodetrace
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("exiting: os pid "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the fixture says its pid");
    let guard = KillOnDrop(pid);
    // Several snapshots go by (one every 100 ms) after the calls.
    thread::sleep(Duration::from_millis(1000));
    drop(guard);
    let run = nodetrace.wait(Duration::from_secs(30));
    assert_eq!(code(&run), Some(137), "stderr: {}", run.stderr);
    assert!(
        run.stderr
            .contains("was killed by signal 9 (SIGKILL) before its final report: showing its last periodic figures"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("died before its final report"),
        "{}",
        run.stdout
    );
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("exiting:outer/1"))
        .unwrap_or_else(|| panic!("no outer row: {}", run.stdout));
    assert_eq!(row.split_whitespace().nth(1), Some("10"), "{row}");
}

#[test]
fn a_command_without_an_agent_is_refused_with_a_hint_in_bounded_time() {
    let home = Home::new();
    let hint = "call nodetrace_agent::node::start(NodeConfig::new(\"name@host\")) at start-up";
    let one_error_line = |run: &common::Run| {
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("nodetrace:"))
            .collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        assert!(lines[0].contains(hint), "{}", lines[0]);
        lines[0].to_owned()
    };

    // Exits at once without connecting: refused as soon as it exits.
    let started = Instant::now();
    let run = home.run(&["profile", "eprof", "--", exiting(), "noagent"]);
    assert_ne!(code(&run), Some(0));
    let line = one_error_line(&run);
    assert!(
        line.contains("exited with code 0 without connecting"),
        "{line}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    // Runs on without connecting: killed after the wait.
    let started = Instant::now();
    let run = home.run(&[
        "profile",
        "cprof",
        "--connect-timeout",
        "1s",
        "--",
        "sh",
        "-c",
        "echo \"sleeper $$\" >&2; exec sleep 30",
    ]);
    let elapsed = started.elapsed();
    assert_ne!(code(&run), Some(0));
    let line = one_error_line(&run);
    assert!(
        line.contains("did not connect to the profiler within 1s (killed it)"),
        "{line}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let sleeper = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("sleeper "))
        .expect("the sleeper's pid");
    assert!(
        !Path::new(&format!("/proc/{sleeper}")).exists(),
        "the command was left running"
    );

    // The default wait is 5 s.
    let started = Instant::now();
    let run = home.run(&["profile", "eprof", "--", "sleep", "30"]);
    let elapsed = started.elapsed();
    one_error_line(&run);
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );

    // A command that cannot start: 127, as a shell says.
    let run = home.run(&["profile", "eprof", "--", "/no/such/command"]);
    assert_eq!(code(&run), Some(127), "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("nodetrace: cannot start /no/such/command:"),
        "{}",
        run.stderr
    );
}

#[test]
fn fprof_draws_a_flamegraph_and_folded_stacks_and_cprof_refuses_to() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("F.svg");
    let folded = dir.path().join("F.txt");
    let speedscope = dir.path().join("F.json");
    let run = profile_exiting(
        &home,
        &[
            "fprof",
            "--flamegraph",
            svg.to_str().unwrap(),
            "--folded",
            folded.to_str().unwrap(),
            "--speedscope",
            speedscope.to_str().unwrap(),
        ],
        "normal",
        "20",
    );
    assert_eq!(code(&run), Some(0), "stderr: {}", run.stderr);
    assert!(run.stdout.contains("%% Analysis results"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("flamegraph written to {}", svg.display())),
        "{}",
        run.stderr
    );

    let svg = std::fs::read(&svg).expect("the flamegraph");
    let mut reader = quick_xml::Reader::from_reader(&svg[..]);
    let mut texts = String::new();
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .expect("the SVG parses as XML")
        {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Text(t) => texts.push_str(&t.unescape().unwrap()),
            _ => {}
        }
        buf.clear();
    }
    for name in ["exiting:outer/1", "exiting:inner/1"] {
        assert!(texts.contains(name), "{name} is not in the flamegraph");
    }

    let folded = std::fs::read_to_string(&folded).expect("the folded stacks");
    let weight = |stack: &str| {
        folded
            .lines()
            .find_map(|l| l.strip_prefix(stack)?.strip_prefix(' '))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {stack:?} line in {folded}"))
    };
    assert!(weight("exiting:outer/1;exiting:inner/1") > 0);
    assert!(weight("exiting:outer/1") > 0);
    assert_eq!(folded.lines().count(), 2, "{folded}");

    // The same stacks for speedscope, in nanoseconds of own time.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&speedscope).unwrap()).unwrap();
    let profile = &file["profiles"][0];
    assert_eq!(profile["unit"], "nanoseconds");
    let frames: Vec<&str> = file["shared"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(frames, ["exiting:outer/1", "exiting:inner/1"]);
    let total: u64 = profile["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .sum();
    assert_eq!(
        total,
        weight("exiting:outer/1;exiting:inner/1") + weight("exiting:outer/1")
    );

    let refused = dir.path().join("cprof.svg");
    let run = profile_exiting(
        &home,
        &["cprof", "--flamegraph", refused.to_str().unwrap()],
        "normal",
        "1",
    );
    // cprof keeps no stacks: it has no --flamegraph to give.
    assert_eq!(code(&run), Some(2));
    assert!(
        run.stderr.contains("unexpected argument '--flamegraph'"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "the command did not run: {}",
        run.stdout
    );
    assert!(!refused.exists());
}

#[test]
fn the_report_goes_to_a_file_with_output() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let run = profile_exiting(
        &home,
        &[
            "eprof",
            "--histogram",
            "--format",
            "json",
            "--output",
            out.to_str().unwrap(),
        ],
        "normal",
        "10",
    );
    assert_eq!(code(&run), Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "exiting: done\n");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        calls(&report),
        BTreeMap::from([("inner".to_owned(), 20), ("outer".to_owned(), 10)])
    );
    for f in report["functions"].as_array().unwrap() {
        let h = &f["histogram_ns"];
        assert!(
            h["p50"].as_u64().unwrap() <= h["max"].as_u64().unwrap(),
            "{f}"
        );
    }
}

#[test]
fn eprof_of_a_running_todo_node_under_load() {
    let home = Home::new();
    let node = home.start_node(&unique("profiled"));
    let load = node.load();
    let started = Instant::now();
    let run = home.run(&["profile", "eprof", "--node", &node.name, "--duration", "1s"]);
    // stderr is a pipe here: no countdown is drawn into it.
    assert!(
        !run.stderr.contains("left;") && !run.stderr.contains('\r'),
        "{}",
        run.stderr
    );
    let elapsed = started.elapsed();
    let out = run.ok();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(out.starts_with("FUNCTION"), "{out}");
    let server_rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("todo::server:"))
        .collect();
    assert!(
        server_rows
            .iter()
            .any(|l| l.starts_with("todo::server:<Server as GenServer>::handle_call/3")),
        "{out}"
    );
    assert!(
        run.stderr.contains(&format!(
            "eprof of every traceable function on {}",
            node.name
        )),
        "{}",
        run.stderr
    );

    // Narrowed to a pattern, as JSON.
    let run = home.run(&[
        "profile",
        "fprof",
        "Todo.Server",
        "--node",
        &node.name,
        "--duration",
        "500ms",
        "--format",
        "json",
    ]);
    let report = report_json(&run);
    drop(load);
    assert_eq!(report["complete"], true);
    assert_eq!(report["node"], node.name.as_str());
    let functions = report["functions"].as_array().unwrap();
    assert!(!functions.is_empty(), "{report}");
    assert!(
        functions.iter().all(|f| f["module"] == "todo::server"),
        "{report}"
    );
}

/// The RUNS OK column of tc's statistics.
fn runs_ok(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.strip_prefix("wall time"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no statistics in {out}"))
}

/// A `sh -c` script that fails every third time it runs (a counter in
/// `dir`).
fn every_third_fails(dir: &Path) -> String {
    let counter = dir.join("count");
    format!(
        "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{c}'; [ $((n % 3)) -ne 0 ]",
        c = counter.display()
    )
}

#[test]
fn tc_lists_failures_and_keeps_them_out_of_the_statistics() {
    let home = Home::new();
    // 2 warm-up runs (1, 2), then timed runs 1..10 are invocations 3..12:
    // timed runs 1, 4, 7 and 10 fail.
    let dir = tempfile::tempdir().unwrap();
    let script = every_third_fails(dir.path());
    let run = home.run(&["tc", "-n", "10", "--warmup", "2", "--", "sh", "-c", &script]);
    assert_eq!(code(&run), Some(1), "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains(": 10 runs, after 2 warm-up runs"), "{out}");
    assert_eq!(runs_ok(out), "6/10", "{out}");
    assert!(out.contains("exit codes: 0 (6 runs), 1 (4 runs)"), "{out}");
    assert!(
        out.contains("FAILED: 4 of 10 runs, not in the statistics: #1 (exit 1), #4 (exit 1), #7 (exit 1), #10 (exit 1)"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let script = every_third_fails(dir.path());
    let run = home.run(&[
        "tc", "-n", "10", "--warmup", "2", "--format", "json", "--", "sh", "-c", &script,
    ]);
    assert_eq!(code(&run), Some(1), "{}", run.stderr);
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    assert_eq!(v["runs"], 10);
    assert_eq!(v["warmup"], 2);
    assert_eq!(v["succeeded"], 6);
    let failed: Vec<(u64, i64)> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["run"].as_u64().unwrap(), f["exit_code"].as_i64().unwrap()))
        .collect();
    assert_eq!(failed, [(1, 1), (4, 1), (7, 1), (10, 1)]);
    assert_eq!(v["wall_ns"]["runs"], 6);
    let walls: Vec<u64> = v["runs_wall_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    let ok: Vec<u64> = walls
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, w)| *w)
        .collect();
    assert_eq!(v["wall_ns"]["min"], *ok.iter().min().unwrap());
    assert_eq!(v["wall_ns"]["max"], *ok.iter().max().unwrap());
    assert_eq!(
        v["wall_ns"]["mean"],
        ok.iter().sum::<u64>() / ok.len() as u64
    );
    let stat = |k: &str| v["wall_ns"][k].as_u64().unwrap();
    assert!(stat("min") <= stat("median") && stat("median") <= stat("p99"));
    assert!(stat("p99") <= stat("max"));
}

#[test]
fn tc_of_a_command_that_succeeds_and_of_one_that_cannot_start() {
    let home = Home::new();
    let run = home.run(&["tc", "-n", "5", "--", "true"]);
    let out = run.ok();
    assert!(out.starts_with("true: 5 runs\n"), "{out}");
    assert_eq!(runs_ok(out), "5/5", "{out}");
    assert!(out.contains("exit codes: 0 (5 runs)"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");

    let run = home.run(&["tc", "--", "/no/such/command"]);
    assert_eq!(code(&run), Some(127));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("nodetrace: cannot start /no/such/command:"),
        "{}",
        run.stderr
    );
}
