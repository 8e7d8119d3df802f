//! A pattern, node name or process name that matches nothing fails the
//! same way everywhere: exit code 3 and one line naming the nearest names
//! the node has.

mod common;

use common::{Home, unique};

const NO_MATCH: i32 = 3;

/// The command failed with the "matches nothing" code.
fn assert_no_match(args: &[&str], status: &std::process::ExitStatus, stderr: &str) {
    assert_eq!(status.code(), Some(NO_MATCH), "{args:?}: {stderr}");
}

fn first_line(stderr: &str) -> &str {
    stderr.lines().next().unwrap_or_default()
}

#[test]
fn a_mistyped_pattern_suggests_the_nearest_module_or_function() {
    let home = Home::new();
    let node = home.start_node(&unique("typo"));
    for (args, want) in [
        (
            &["trace", "calls", "Todo.Servr", "--max", "1"][..],
            "did you mean `Todo.Server`?",
        ),
        (
            &[
                "trace",
                "calls",
                "todo::server:entris -> return",
                "--max",
                "1",
            ],
            "did you mean `todo::server:entries -> return`?",
        ),
        (&["ls", "Todo.Servr"], "did you mean `Todo.Server`?"),
        (
            &["ls", "Todo.Server:entries/9", "--format", "json"],
            "did you mean `Todo.Server:entries/2`?",
        ),
    ] {
        let run = home.run(args);
        assert_no_match(args, &run.status, &run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        let line = first_line(&run.stderr);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(line.contains(&node.name), "{args:?}: {line}");
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    // Nothing near: no guess, the same code.
    let run = home.run(&["ls", "Payments.Ledger"]);
    assert_eq!(run.status.code(), Some(NO_MATCH), "{}", run.stderr);
    assert!(!run.stderr.contains("did you mean"), "{}", run.stderr);
    // A match still exits 0.
    home.run(&["ls", "Todo.Server"]).ok();
}

#[test]
fn a_mistyped_node_or_process_name_suggests_the_nearest() {
    let home = Home::new();
    let node = home.start_node(&unique("named"));
    node.add_entry("bob", "2023-12-19", "Movies");
    let typo = format!("x{}", node.name);
    let run = home.run(&["ps", "--node", &typo]);
    assert_eq!(run.status.code(), Some(NO_MATCH), "{}", run.stderr);
    assert!(
        first_line(&run.stderr).contains(&format!("did you mean {}?", node.name)),
        "{}",
        run.stderr
    );
    for args in [
        &["sys", "get-state", "todo_server:bop"][..],
        &["sys", "statistics", "todo_server:bop"],
        &["sys", "trace", "todo_server:bop", "--max", "1"],
        &[
            "trace",
            "messages",
            "--process",
            "todo_server:bop",
            "--max",
            "1",
        ],
    ] {
        let run = home.run(args);
        assert_no_match(args, &run.status, &run.stderr);
        assert_eq!(
            first_line(&run.stderr),
            format!(
                "nodetrace: no process named todo_server:bop on {}; did you mean todo_server:bob? `nodetrace ps` lists the processes",
                node.name
            ),
            "{args:?}"
        );
    }
    home.run(&["sys", "get-state", "todo_server:bob"]).ok();
}
