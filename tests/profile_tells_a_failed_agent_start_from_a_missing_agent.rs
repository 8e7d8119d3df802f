//! `profile -- CMD` of a program that links the agent but whose
//! `node::start` fails (its name is taken) says so, instead of asking
//! whether the agent is linked; and the program's own `?` error reads as
//! one line (the `Debug` of `NodeError` is unit-tested beside it).

mod common;

use common::{COMMAND_LIMIT, Home, todo_bin, unique};

#[test]
fn a_taken_node_name_is_not_reported_as_a_missing_agent() {
    let home = Home::new();
    let node = home.start_node(&unique("taken"));
    let data = tempfile::tempdir().unwrap();
    let run = common::run_bounded(
        &mut home.nodetrace(&[
            "profile",
            "cprof",
            "--",
            todo_bin().to_str().unwrap(),
            "--name",
            &node.name,
            "--port",
            "0",
            "--data-dir",
            data.path().to_str().unwrap(),
        ]),
        COMMAND_LIMIT,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    // The program's own error, as its main prints a NodeError.
    assert!(
        run.stderr.contains(&format!(
            "the node name {} is taken by OS process {}; pick another name",
            node.name,
            node.os_pid()
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("NameTaken"), "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.contains("exited with code 1 without connecting to the profiler: it links the nodetrace agent, but no node started: node::start failed"),
        "{last}"
    );
    assert!(
        !run.stderr.contains("is the nodetrace agent linked"),
        "{}",
        run.stderr
    );

    // A program without the agent still gets the hint.
    let run = home.run(&["profile", "cprof", "--", "true"]);
    assert!(
        run.stderr.contains("is the nodetrace agent linked?"),
        "{}",
        run.stderr
    );
}
