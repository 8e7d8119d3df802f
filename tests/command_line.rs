//! The command line itself: completions, man pages, help topics, and the
//! patterns a shell mangled, refused before any node is asked.

mod common;

use common::Home;

#[test]
fn completions_cover_every_command_for_every_shell() {
    let home = Home::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = home.run(&["completions", shell]);
        let script = run.ok();
        for word in ["stop-clear", "cprof", "get-state", "max"] {
            assert!(script.contains(word), "{shell}: no {word} in\n{script}");
        }
    }
    let run = home.run(&["completions", "tcsh"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("possible values: bash"),
        "{}",
        run.stderr
    );
}

#[test]
fn man_writes_one_page_per_command() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let run = home.run(&["man", dir.path().to_str().unwrap()]);
    run.ok();
    assert!(
        run.stderr.contains("man pages written to"),
        "{}",
        run.stderr
    );
    for page in [
        "nodetrace.1",
        "nodetrace-trace-calls.1",
        "nodetrace-profile-eprof.1",
        "nodetrace-sys-get-state.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie"), "{page} is not roff: {text:.80}");
    }
    let page = std::fs::read_to_string(dir.path().join("nodetrace-trace-calls.1")).unwrap();
    assert!(page.contains("\\-\\-return"), "{page}");
}

#[test]
fn node_flags_are_only_where_they_act() {
    let home = Home::new();
    for args in [
        &["nodes", "--node", "x"][..],
        &["tc", "--cookie", "c", "--", "true"],
        &["demo", "--node", "x"],
        &["--node", "x", "ps"],
    ] {
        let run = home.run(args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("unexpected argument"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let run = home.run(&["profile", "eprof", "--node", "x", "--", "true"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    // cprof keeps no stacks and reads no clock: no --flamegraph, --histogram.
    let run = home.run(&["profile", "cprof", "--flamegraph", "f.svg"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
}

#[test]
fn help_names_commands_and_the_patterns_topic() {
    let home = Home::new();
    let patterns = home.run(&["help", "patterns"]);
    for form in [
        "Grammar:",
        "MyApp.Server:handle_call/3",
        "my_app::*",
        "-> return",
    ] {
        assert!(patterns.ok().contains(form), "{form}");
    }
    let calls = home.run(&["help", "trace", "calls"]);
    assert!(calls.ok().contains("Usage: nodetrace trace calls"));
    let eprof = home.run(&["profile", "eprof", "--help"]);
    assert!(eprof.ok().contains("--per-process"));
    assert!(
        !home
            .run(&["profile", "fprof", "--help"])
            .ok()
            .contains("--per-process")
    );

    let run = home.run(&["help", "trace", "cals"]);
    assert!(!run.status.success());
    assert_eq!(
        run.stderr.trim(),
        "nodetrace: no command or topic `trace cals` in nodetrace trace: its commands are calls, messages"
    );
}

#[test]
fn what_a_shell_leaves_of_an_unquoted_return_is_refused() {
    let home = Home::new();
    // `trace calls Todo.Server:entries -> return` unquoted: the shell
    // passes `Todo.Server:entries -` and sends stdout to a file `return`.
    for args in [
        &["trace", "calls", "Todo.Server:entries", "-"][..],
        &["trace", "calls", "Todo.Server:entries-"],
    ] {
        let run = home.run(args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap();
        assert!(first.contains("file named `return`"), "{first}");
        assert!(first.contains("or use --return"), "{first}");
    }
    let run = home.run(&["ls", "-"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("quote the whole pattern"),
        "{}",
        run.stderr
    );
}
