//! SIGINT and SIGTERM end a trace after its summary with 130 and 143; a
//! signal sent to `nodetrace profile -- CMD` alone is forwarded to the
//! command, and the message says so.

mod common;

use std::time::Duration;

use common::{COMMAND_LIMIT, Home, todo_bin, unique, wait_until};

#[test]
fn a_trace_stopped_by_a_signal_prints_its_summary_and_exits_128_plus_the_signal() {
    let home = Home::new();
    let node = home.start_node(&unique("signals"));
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let mut trace = home.spawn(&["trace", "calls", "Todo.Server", "--duration", "60s"]);
        trace.wait_stderr("tracing calls of", COMMAND_LIMIT);
        node.entries("bob", "2023-12-19");
        trace.signal(signal);
        let run = trace.wait(COMMAND_LIMIT);
        assert_eq!(run.status.code(), Some(code), "SIG{signal}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "trace ended on {}: stopped by the tracer",
                node.name
            )),
            "SIG{signal}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_signal_to_nodetrace_alone_is_forwarded_to_the_profiled_command() {
    let home = Home::new();
    let data = tempfile::tempdir().unwrap();
    let name = unique("forward");
    let todo = todo_bin().to_str().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let mut profile = home.spawn(&[
        "profile",
        "cprof",
        "--",
        todo,
        "--name",
        &name,
        "--port",
        "0",
        "--data-dir",
        data_dir,
    ]);
    assert!(
        wait_until(COMMAND_LIMIT, || profile.stdout().contains("listening on")).is_some(),
        "the node did not start: {}",
        profile.stderr()
    );
    profile.wait_stderr("the report follows when it exits", COMMAND_LIMIT);
    // The node's pid, from the registry it wrote.
    let registry = home.path().join("nodes").join(format!("{name}.node"));
    assert!(registry.exists(), "{}", registry.display());
    profile.signal("TERM");
    let run = profile.wait(COMMAND_LIMIT);
    assert!(
        run.stderr.contains("forwarded SIGTERM to `"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("reached it too"), "{}", run.stderr);
    // The command died of the forwarded SIGTERM, and its code is ours.
    assert_eq!(run.status.code(), Some(143), "{}", run.stderr);
    assert!(
        wait_until(Duration::from_secs(10), || !registry.exists()
            || home
                .run(&["nodes"])
                .stdout
                .lines()
                .all(|l| !l.starts_with(&name)))
        .is_some(),
        "the node still runs"
    );
}
