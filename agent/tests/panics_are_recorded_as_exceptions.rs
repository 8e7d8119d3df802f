//! A panic unwinding through a traced function is an exception event.

mod common;

use common::drain;
use nodetrace_agent::{EventKind, Session, SessionOptions, traced};

#[traced]
fn explode(code: u32) -> u32 {
    if code > 1 {
        panic!("boom {code}");
    }
    code
}

#[traced]
fn outer(code: u32) -> u32 {
    explode(code) + 1
}

#[test]
fn the_exception_carries_the_panic_message_and_every_frame_reports_it() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(&"panics_are_recorded_as_exceptions:*".parse().unwrap());
    let caught = std::panic::catch_unwind(|| outer(7));
    assert!(caught.is_err());
    let events = drain(&session);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Call,
            EventKind::Call,
            EventKind::Exception,
            EventKind::Exception
        ]
    );
    for e in &events[2..] {
        let text = e.text.as_deref().unwrap();
        assert!(text.contains("boom 7"), "{text}");
        assert!(
            text.contains("panics_are_recorded_as_exceptions.rs"),
            "{text}"
        );
        assert!(e.duration_ns.is_some());
    }

    assert_eq!(outer(1), 2);
    let kinds: Vec<EventKind> = drain(&session).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Call,
            EventKind::Call,
            EventKind::Return,
            EventKind::Return
        ]
    );
}
