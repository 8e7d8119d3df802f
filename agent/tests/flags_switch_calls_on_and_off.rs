//! `trace_pattern` / `clear_pattern` switch callsites on and off, and what a
//! switched-on function records.

mod common;

use common::{drain, line};
use nodetrace_agent::{EventKind, Pattern, Session, SessionOptions, traced};

#[traced]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[traced]
fn parse(s: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = s.parse()?;
    if n == 0 {
        return Ok(100);
    }
    Ok(n * 2)
}

#[traced]
fn unrelated() {}

#[traced]
fn quiet() {}

fn enabled(name: &str) -> bool {
    nodetrace_agent::callsites()
        .iter()
        .any(|c| c.metadata().name == name && c.is_enabled())
}

fn pattern(s: &str) -> Pattern {
    s.parse().unwrap()
}

#[test]
fn a_pattern_switches_on_exactly_what_it_matches_and_clear_switches_it_off() {
    let session = Session::start(SessionOptions::default()).unwrap();
    assert_eq!(
        session.trace_pattern(&pattern("FlagsSwitchCallsOnAndOff:add/2")),
        1
    );
    assert_eq!(
        session.trace_pattern(&pattern("flags_switch_calls_on_and_off:add/3")),
        0
    );

    assert_eq!(add(1, 2), 3);
    unrelated();
    let events = drain(&session);
    assert_eq!(
        events.iter().map(line).collect::<Vec<_>>(),
        ["call add 1, 2", "return add"],
        "no return value without `-> return`; unrelated functions stay off"
    );
    let ret = &events[1];
    assert!(ret.duration_ns.is_some());
    assert!(ret.timestamp_ns >= events[0].timestamp_ns);
    assert_eq!(ret.pid, events[0].pid);
    assert_eq!(ret.pid, nodetrace_agent::self_pid());

    assert_eq!(
        session.clear_pattern(&pattern("flags_switch_calls_on_and_off:add")),
        1
    );
    add(3, 4);
    assert!(
        drain(&session).is_empty(),
        "cleared callsites record nothing"
    );
    assert!(!enabled("add"));
}

#[test]
fn return_values_and_errors_travel_with_return_trace() {
    let session = Session::start(SessionOptions::default()).unwrap();
    assert_eq!(
        session.trace_pattern(&pattern("flags_switch_calls_on_and_off:parse -> return")),
        1
    );
    let _ = parse("21");
    let _ = parse("0");
    let _ = parse("x");
    let lines: Vec<String> = drain(&session).iter().map(line).collect();
    assert_eq!(
        lines,
        [
            r#"call parse "21""#,
            "return parse Ok(42)",
            r#"call parse "0""#,
            "return parse Ok(100)",
            r#"call parse "x""#,
            "return parse Err(ParseIntError { kind: InvalidDigit })",
        ],
        "early `return` and `?` both carry their value"
    );
    drop(session);
    assert!(!enabled("parse"), "dropping a session clears its flags");
}

#[test]
fn arguments_can_be_left_out() {
    let options = SessionOptions {
        args: false,
        ..SessionOptions::default()
    };
    let session = Session::start(options).unwrap();
    session.trace_pattern(&pattern("flags_switch_calls_on_and_off:quiet"));
    quiet();
    let events = drain(&session);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::Call);
    assert_eq!(events[0].text, None);
}
