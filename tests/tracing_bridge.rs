//! End to end: the `tracing` bridge in a real service. The `kv` example (a
//! key-value store over TCP, instrumented with `#[tracing::instrument]` and
//! with `nodetrace_agent::tracing_layer()` next to its own `fmt` layer) runs
//! as its own process in its own nodetrace home; the real `nodetrace` CLI
//! traces, profiles and streams its spans and events, and the tests assert
//! on what the CLI prints.

mod common;

use std::time::{Duration, Instant};

use common::{Home, Spawned, unique, wait_until};

/// How long a trace or a log may take to start or to end (a debug build
/// on a loaded two-core machine).
const LIMIT: Duration = Duration::from_secs(30);

/// `Spawned::wait_stderr` for the line a trace or a log starts with.
fn started(run: &mut Spawned, text: &str) {
    run.wait_stderr(text, LIMIT);
}

/// The line of `out` that contains `needle`.
fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
}

/// Waits until `run` has written `n` lines on stdout. A test sends its next
/// request only then, so that each request's events are in the order they
/// happened: events recorded on different threads (a task polled by one
/// tokio worker, then another) and drained in the same collector round can
/// be written out of order, a return before its call.
fn await_lines(run: &Spawned, n: usize) {
    let seen = wait_until(LIMIT, || run.stdout().lines().count() >= n);
    assert!(
        seen.is_some(),
        "not {n} lines within {LIMIT:?}; stdout: {}\nstderr: {}",
        run.stdout(),
        run.stderr()
    );
}

/// A duration as the CLI writes it (`850ns`, `12.4µs`, `3.2ms`, `1.25s`),
/// in nanoseconds.
fn nanos(text: &str) -> f64 {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or_else(|| panic!("no unit in {text:?}"));
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let scale = match unit {
        "ns" => 1.0,
        "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => panic!("unknown unit in {text:?}"),
    };
    number * scale
}

/// The wall and busy times of a return line ending in `(WALL, BUSY busy)`.
fn wall_and_busy(line: &str) -> (f64, f64) {
    let times = line
        .rsplit_once(" (")
        .and_then(|(_, t)| t.strip_suffix(" busy)"))
        .unwrap_or_else(|| panic!("no (wall, busy) in {line:?}"));
    let (wall, busy) = times.split_once(", ").expect("wall, busy");
    (nanos(wall), nanos(busy))
}

#[test]
fn ls_lists_a_span_once_it_was_reached() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvls"));

    let ls = home.run(&["ls"]);
    let out = ls.ok();
    assert!(!out.contains("kv::cmd:apply"), "not reached yet:\n{out}");
    let traced = line_with(out, "kv::stats:summary/1");
    assert!(
        traced.contains(" traced ") && traced.contains("examples/kv/src/stats.rs:"),
        "{traced}"
    );
    assert!(
        ls.stderr.contains(&format!(
            "{}: `tracing` spans are listed once first reached; a pattern set before that waits for them",
            node.name
        )),
        "{}",
        ls.stderr
    );
    // A pattern for it matches nothing yet, and says so.
    let early = home.run(&["ls", "kv::cmd"]);
    assert_eq!(early.status.code(), Some(3), "{early:?}");
    assert!(
        early.stderr.contains(&format!(
            "no traceable function on {} matches kv::cmd",
            node.name
        )),
        "{}",
        early.stderr
    );

    assert_eq!(node.client().send("SET a 1"), "OK");

    let ls = home.run(&["ls"]);
    let out = ls.ok();
    let apply = line_with(out, "kv::cmd:apply/2");
    assert!(apply.starts_with("kv::cmd:apply/2 "), "{apply}");
    assert!(apply.contains(" span INFO "), "{apply}");
    assert!(apply.contains("examples/kv/src/cmd.rs:"), "{apply}");
    for span in ["kv::cmd:parse/1", "kv::conn:handle/1", "kv::store:set/2"] {
        assert!(line_with(out, span).contains(" span INFO "), "{out}");
    }
    // Not reached by a SET.
    assert!(!out.contains("kv::store:get/"), "{out}");
}

#[test]
fn a_trace_started_before_the_first_request_catches_it() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvwait"));
    let mut trace = home.spawn(&["trace", "calls", "kv::cmd:apply", "--max", "2"]);
    started(
        &mut trace,
        &format!(
            "tracing calls of kv::cmd:apply on {}: 0 functions matched, kv::cmd:apply waits for `tracing` spans not reached yet",
            node.name
        ),
    );

    let mut client = node.client();
    assert_eq!(client.send("SET a 1"), "OK");
    await_lines(&trace, 1);
    assert_eq!(client.send("GET a"), "1");
    let run = trace.wait(LIMIT);
    let out = run.ok();
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("(<0."), "{out}");
    assert!(
        lines[0].ends_with(r#") call kv::cmd:apply(op="SET", key="a")"#),
        "{out}"
    );
    assert!(
        lines[1].ends_with(r#") call kv::cmd:apply(op="GET", key="a")"#),
        "{out}"
    );
    assert!(
        run.stderr.contains(&format!(
            "trace ended on {}: reached the limit of 2 events; 2 shown",
            node.name
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn return_shows_the_value_of_ret_and_err_and_only_of_the_span_they_belong_to() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvret"));
    let mut client = node.client();
    assert_eq!(client.send("SET a 1"), "OK");
    assert_eq!(client.send("GET a"), "1");

    // get has `ret`, parse has `err`, apply (get's caller) has neither.
    let mut trace = home.spawn(&[
        "trace",
        "calls",
        "kv::store:get -> return",
        "kv::cmd:apply -> return",
        "kv::cmd:parse -> return",
        "--max",
        "14",
    ]);
    started(&mut trace, "3 functions matched");
    assert_eq!(client.send("GET a"), "1");
    await_lines(&trace, 6);
    assert_eq!(client.send("GET nothing"), "NIL");
    await_lines(&trace, 12);
    assert_eq!(client.send("FLY away"), "ERR unknown command FLY");
    let run = trace.wait(LIMIT);
    let out = run.ok();
    let events: Vec<&str> = out
        .lines()
        .map(|l| l.split_once(") ").expect("(<pid>) first").1)
        .collect();
    let expected = [
        r#"call kv::cmd:parse(line="GET a")"#,
        "returned from kv::cmd:parse/1 (",
        r#"call kv::cmd:apply(op="GET", key="a")"#,
        r#"call kv::store:get(key="a")"#,
        r#"returned from kv::store:get/1 -> Some("1") ("#,
        "returned from kv::cmd:apply/2 (",
        r#"call kv::cmd:parse(line="GET nothing")"#,
        "returned from kv::cmd:parse/1 (",
        r#"call kv::cmd:apply(op="GET", key="nothing")"#,
        r#"call kv::store:get(key="nothing")"#,
        "returned from kv::store:get/1 -> None (",
        "returned from kv::cmd:apply/2 (",
        r#"call kv::cmd:parse(line="FLY away")"#,
        "returned from kv::cmd:parse/1 -> Err(unknown command FLY) (",
    ];
    assert_eq!(events.len(), expected.len(), "{out}");
    for (event, expected) in events.iter().zip(expected) {
        assert!(
            event.starts_with(expected),
            "{event:?} is not {expected:?}:\n{out}"
        );
        if expected.starts_with("returned") {
            assert!(event.ends_with(" busy)"), "{event}");
        }
    }

    // The `ret` of get, untraced, is not the value of apply, its traced caller.
    let mut trace = home.spawn(&["trace", "calls", "kv::cmd:apply", "--return", "--max", "2"]);
    started(&mut trace, "1 function matched");
    assert_eq!(client.send("GET a"), "1");
    let run = trace.wait(LIMIT);
    let out = run.ok();
    let ret = line_with(out, ") returned from ");
    assert!(
        ret.contains(") returned from kv::cmd:apply/2 (") && ret.ends_with(" busy)"),
        "{out}"
    );
}

/// What the pattern grammar promises for methods (`kv::store::Store::get`,
/// as Rust names it) does not hold for a `#[tracing::instrument]` method:
/// `tracing` gives the span no `impl` type, so the bridge registers
/// `kv::store:get/1` and the Rust path of the method matches nothing; the
/// trace is accepted as waiting for a span "not reached yet" though the
/// span was reached, and waits for ever.
#[test]
/// `tracing` records no `impl` type for a method's span: `Store::get` is
/// the span `get` of module `kv::store`. A Rust path with the type matches
/// nothing and waits; the trace says so as typed, with the nearest name.
fn a_method_span_is_named_by_its_module_not_its_type() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvpath"));
    let mut client = node.client();
    assert_eq!(client.send("GET a"), "NIL");
    let mut trace = home.spawn(&[
        "trace",
        "calls",
        "kv::store::Store::get -> return",
        "--duration",
        "1s",
    ]);
    started(&mut trace, "tracing calls of ");
    assert_eq!(client.send("GET a"), "NIL");
    let run = trace.wait(LIMIT);
    assert!(
        run.stderr
            .contains("kv::store::Store::get -> return waits for `tracing` spans not reached yet"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `kv::store:get"),
        "{}",
        run.stderr
    );
    assert!(!run.ok().contains(") call "), "{}", run.ok());
}

#[test]
fn an_async_span_that_awaits_a_timer_is_busy_for_less_than_its_wall_time() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvslow"));
    let mut client = node.client();
    assert_eq!(client.send("SLOW 1"), "OK");
    let mut trace = home.spawn(&["trace", "calls", "kv::cmd:slow", "--return", "--max", "2"]);
    started(&mut trace, "1 function matched");
    let sent = Instant::now();
    assert_eq!(client.send("SLOW 300"), "OK");
    assert!(sent.elapsed() >= Duration::from_millis(300));
    let run = trace.wait(LIMIT);
    let out = run.ok();
    assert!(out.contains(") call kv::cmd:slow(ms=300)"), "{out}");
    let ret = line_with(out, ") returned from kv::cmd:slow/1 (");
    let (wall, busy) = wall_and_busy(ret);
    assert!(wall >= 300e6, "wall covers the sleep: {ret}");
    assert!(busy < wall, "busy is the polls, not the sleep: {ret}");
    assert!(busy * 2.0 < wall, "{ret}");
}

/// Waits until the node has served `n` more requests of `load`.
fn served(load: &common::KvLoad, n: u64) {
    let from = load.done.load(std::sync::atomic::Ordering::Relaxed);
    let ok = wait_until(LIMIT, || {
        load.done.load(std::sync::atomic::Ordering::Relaxed) >= from + n
    });
    assert!(ok.is_some(), "the load made no progress");
}

#[test]
fn eprof_of_a_node_under_load_has_rows_for_spans() {
    let home = Home::new();
    let node = home.start_kv(&unique("kveprof"));
    let load = node.load();
    served(&load, 8);
    let run = home.run(&["profile", "eprof", "--node", &node.name, "--duration", "2s"]);
    drop(load);
    let out = run.ok();
    assert!(out.starts_with("FUNCTION"), "{out}");
    for row in ["kv::cmd:apply/2", "kv::cmd:parse/1", "kv::store:set/2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{row} ")))
            .unwrap_or_else(|| panic!("no row for {row}:\n{out}"));
        let calls: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no calls in {line:?}"));
        assert!(calls > 0, "{line}");
    }
    assert!(
        out.lines().any(|l| l.starts_with("kv::stats:summary/1 ")),
        "the traced function is profiled too:\n{out}"
    );
}

/// A span first reached while a profile runs is announced to the profiler
/// (`NodeMessage::Callsites`), which does not expect it: the report names
/// the span `<callsite N>` and stderr says `unexpected Callsites during the
/// profile`.
#[test]
fn eprof_names_the_spans_first_reached_during_the_profile() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvnew"));
    let mut profile = home.spawn(&["profile", "eprof", "--node", &node.name, "--duration", "2s"]);
    started(&mut profile, "eprof of every traceable function on ");
    let mut client = node.client();
    for _ in 0..3 {
        assert_eq!(client.send("SET a 1"), "OK");
    }
    let run = profile.wait(LIMIT);
    let out = run.ok();
    assert!(!out.contains("<callsite "), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("kv::cmd:apply/2 ")),
        "{out}"
    );
    assert!(!run.stderr.contains("unexpected"), "{}", run.stderr);
}

/// One frame of a flamegraph: its title's name, its level (`y`) and its
/// extent in samples.
#[derive(Debug)]
struct Frame {
    name: String,
    y: f64,
    x: u64,
    w: u64,
}

/// The frames of an inferno SVG: each `<g>` has a `<title>NAME (…)</title>`
/// and a `<rect y=… fg:x=… fg:w=…>`.
fn frames(svg: &[u8]) -> Vec<Frame> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(svg);
    let (mut frames, mut buf) = (Vec::new(), Vec::new());
    let mut title: Option<String> = None;
    let mut in_title = false;
    loop {
        match reader
            .read_event_into(&mut buf)
            .expect("the SVG parses as XML")
        {
            Event::Eof => break,
            Event::Start(e) if e.name().as_ref() == b"title" => in_title = true,
            Event::End(e) if e.name().as_ref() == b"title" => in_title = false,
            Event::Text(t) if in_title => {
                let text = t.unescape().unwrap().into_owned();
                title = Some(
                    text.rsplit_once(" (")
                        .map_or(text.clone(), |(n, _)| n.to_owned()),
                );
            }
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == b"rect" => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                if let (Some(name), Some(y), Some(x), Some(w)) =
                    (title.take(), attr(b"y"), attr(b"fg:x"), attr(b"fg:w"))
                {
                    frames.push(Frame {
                        name,
                        y: y.parse().unwrap(),
                        x: x.parse().unwrap(),
                        w: w.parse().unwrap(),
                    });
                }
            }
            _ => {}
        }
        buf.clear();
    }
    frames
}

#[test]
fn a_flamegraph_shows_a_span_under_the_traced_function_that_called_it() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvflame"));
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("kv.svg");
    let folded = dir.path().join("kv.folded");
    let load = node.load();
    served(&load, 8);
    let run = home.run(&[
        "profile",
        "eprof",
        "--node",
        &node.name,
        "--duration",
        "2s",
        "--flamegraph",
        svg.to_str().unwrap(),
        "--folded",
        folded.to_str().unwrap(),
    ]);
    drop(load);
    run.ok();
    assert!(
        run.stderr
            .contains(&format!("flamegraph written to {}", svg.display())),
        "{}",
        run.stderr
    );

    // STATS: the span apply calls the traced summary, which calls the span
    // len. (The load's connections, and so their handle spans, began before
    // the profile: apply is the outermost frame it saw.)
    let folded = std::fs::read_to_string(&folded).expect("the folded stacks");
    let stack = "kv::cmd:apply/2;kv::stats:summary/1;kv::store:len/0";
    let weight: u64 = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(frames, _)| frames == &stack || frames.ends_with(&format!(";{stack}")))
        .and_then(|(_, w)| w.parse().ok())
        .unwrap_or_else(|| panic!("no stack ending in {stack:?} in:\n{folded}"));
    assert!(weight > 0, "{folded}");

    let frames = frames(&std::fs::read(&svg).expect("the flamegraph"));
    let named = |name: &str| -> Vec<&Frame> { frames.iter().filter(|f| f.name == name).collect() };
    // Deeper frames are drawn higher up, one level a fixed step apart.
    let mut levels: Vec<f64> = frames.iter().map(|f| f.y).collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let step = levels
        .windows(2)
        .map(|w| w[1] - w[0])
        .reduce(f64::min)
        .unwrap_or_else(|| panic!("one level only: {frames:?}"));
    let nested = named("kv::store:len/0").iter().any(|len| {
        named("kv::stats:summary/1").iter().any(|summary| {
            summary.y - len.y == step
                && summary.x <= len.x
                && len.x + len.w <= summary.x + summary.w
        })
    });
    assert!(
        nested,
        "kv::store:len/0 is not drawn on kv::stats:summary/1: {frames:?}"
    );
}

#[test]
fn log_streams_debug_events_while_the_apps_own_output_stays_at_info() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvlog"));
    let before = node.stdout().len();
    // A connection's events: client connected (info); SET: applying, stored
    // (debug); GET: applying (debug), get's `ret` (info), looked up (trace,
    // left out); BAD: parse's `err` (error), bad command (warn); the close:
    // client left (info). Eight.
    let mut log = home.spawn(&["log", "kv", "--level", "debug", "--max", "8"]);
    started(
        &mut log,
        &format!(
            "tracing log events of kv at debug and above on {}",
            node.name
        ),
    );
    let mut client = node.client();
    assert_eq!(client.send("SET b 2"), "OK");
    assert_eq!(client.send("GET b"), "2");
    assert_eq!(client.send("BAD"), "ERR unknown command BAD");
    drop(client);
    let run = log.wait(LIMIT);
    let out = run.ok();
    let lines = run.lines();
    assert_eq!(lines.len(), 8, "{out}");
    for line in &lines {
        // 2026-12-01T10:58:44.645605Z DEBUG kv::cmd: ... (<0.12.0>)
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert!(line.ends_with(">)") && line.contains(" (<0."), "{line}");
        assert!(!rest.contains("TRACE"), "{line}");
    }
    let stored = line_with(out, "stored");
    assert!(
        stored.contains(" DEBUG kv::store: handle{peer=127.0.0.1:"),
        "{stored}"
    );
    assert!(
        stored.contains(
            r#"}:apply{op="SET" key="b"}:set{key="b" len=1}: stored replaced=false (<0."#
        ),
        "{stored}"
    );
    assert!(
        line_with(out, "applying").contains(" DEBUG kv::cmd: handle{peer="),
        "{out}"
    );
    assert!(
        line_with(out, "client connected").contains("  INFO kv::conn: "),
        "{out}"
    );
    assert!(
        line_with(out, r#"return=Some("2")"#).contains("  INFO kv::store: "),
        "{out}"
    );
    assert!(
        line_with(out, "error=unknown command BAD").contains(" ERROR kv::cmd: "),
        "{out}"
    );
    assert!(
        line_with(out, "bad command err=unknown command BAD").contains("  WARN kv::conn: "),
        "{out}"
    );
    let left = line_with(out, "client left");
    assert!(
        left.contains("  INFO kv::conn: handle{peer=")
            && left.contains(": client left served=3 (<0."),
        "{out}"
    );

    // The app's own fmt layer printed the same request at info: its lines
    // of info and above, and no debug or trace line.
    let found = wait_until(LIMIT, || {
        node.stdout()[before..].contains("client left served=3")
    });
    let own = node.stdout()[before..].to_owned();
    assert!(found.is_some(), "the app did not log the request:\n{own}");
    for text in [
        "client connected",
        "bad command",
        "error=unknown command BAD",
    ] {
        assert!(
            own.contains(text),
            "{text:?} not in the app's output:\n{own}"
        );
    }
    assert!(
        !own.contains("DEBUG") && !own.contains("TRACE"),
        "the app's own output is at info:\n{own}"
    );
}

#[test]
fn stop_clear_ends_a_trace_of_spans_and_switches_them_off() {
    let home = Home::new();
    let node = home.start_kv(&unique("kvclear"));
    let mut client = node.client();
    assert_eq!(client.send("SET a 1"), "OK");
    let mut trace = home.spawn(&[
        "trace",
        "calls",
        "kv::cmd:*",
        "--return",
        "--format",
        "json",
    ]);
    started(&mut trace, "tracing calls of kv::cmd on ");
    assert_eq!(client.send("GET a"), "1");
    await_lines(&trace, 4);

    let clear = home.run(&["stop-clear"]);
    assert_eq!(
        clear.ok(),
        format!("stop-clear on {}: ended 1 trace\n", node.name)
    );
    // Requests after it are not traced: they reach no event of the trace.
    assert_eq!(client.send("SET after 2"), "OK");
    assert_eq!(client.send("GET after"), "2");
    let run = trace.wait(LIMIT);
    run.ok();
    assert!(
        run.stderr.contains(&format!(
            "trace ended on {}: stopped by stop-clear; 4 shown",
            node.name
        )),
        "{}",
        run.stderr
    );
    let mut events = run.json_lines();
    let end = events.pop().expect("an end object");
    assert_eq!(end["type"], "end", "{end}");
    assert_eq!(end["reason"], "stop_clear", "{end}");
    assert_eq!(end["shown"], 4, "{end}");
    assert_eq!(end["delivered"], 4, "{end}");
    assert_eq!(end["discarded"], 0, "{end}");
    assert!(
        events.iter().all(|e| !e.to_string().contains("after")),
        "{events:?}"
    );
    // GET a: parse and apply, call and return each.
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["function"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("call", "parse"),
            ("return", "parse"),
            ("call", "apply"),
            ("return", "apply")
        ]
    );

    // Nothing is left switched on for the freed slot: a new trace of get
    // sees get only.
    let mut trace = home.spawn(&["trace", "calls", "kv::store:get", "--return", "--max", "2"]);
    started(&mut trace, "1 function matched");
    assert_eq!(client.send("GET after"), "2");
    let run = trace.wait(LIMIT);
    let out = run.ok();
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with(r#") call kv::store:get(key="after")"#),
        "{out}"
    );
    assert!(
        lines[1].contains(r#") returned from kv::store:get/1 -> Some("2") ("#),
        "{out}"
    );
}
