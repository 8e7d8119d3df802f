//! A session's limits hold inside the node: `max_events` stops it exactly,
//! a duration ends it, a rate drops above it, and every event is counted.

mod common;

use std::time::Duration;

use common::drain;
use nodetrace_agent::{EventKind, Session, SessionOptions, traced};
use nodetrace_protocol::{EndReason, Limits, Rate};

#[traced]
fn counted(n: u64) -> u64 {
    n
}

#[traced]
fn timed(n: u64) -> u64 {
    n
}

#[traced]
fn rated(n: u64) -> u64 {
    n
}

fn limited(limits: Limits) -> Session {
    Session::start(SessionOptions {
        returns: false,
        limits,
        ..SessionOptions::default()
    })
    .unwrap()
}

#[test]
fn max_events_stops_exactly_and_switches_off() {
    let session = limited(Limits {
        max_events: Some(10),
        rate: None,
        duration_ms: None,
    });
    session.trace_pattern(&"limits_are_enforced_in_the_node:counted".parse().unwrap());
    for i in 0..1000 {
        counted(i);
    }
    let events = drain(&session);
    assert_eq!(events.len(), 10);
    assert!(
        events.iter().all(|e| e.kind == EventKind::Call),
        "no returns were asked for"
    );
    assert_eq!(session.end_reason(), Some(EndReason::MaxEvents(10)));
    let counts = session.counts();
    assert_eq!(counts.delivered, 10);
    assert_eq!(
        counts.emitted(),
        counts.delivered + counts.discarded + counts.lost
    );
    let cs = nodetrace_agent::callsites()
        .into_iter()
        .find(|c| c.metadata().name == "counted")
        .unwrap();
    assert!(
        !cs.is_enabled(),
        "a tripped limit leaves the callsite at zero cost"
    );
}

#[test]
fn a_duration_ends_the_session() {
    let session = limited(Limits {
        max_events: None,
        rate: None,
        duration_ms: Some(50),
    });
    session.trace_pattern(&"limits_are_enforced_in_the_node:timed".parse().unwrap());
    timed(1);
    std::thread::sleep(Duration::from_millis(120));
    session.flush();
    assert_eq!(session.end_reason(), Some(EndReason::Duration(50)));
    timed(2);
    assert_eq!(drain(&session).len(), 1);
}

#[test]
fn a_rate_drops_above_it_and_counts_what_it_dropped() {
    let session = limited(Limits {
        max_events: None,
        rate: Some(Rate {
            events: 100,
            per_ms: 60_000,
        }),
        duration_ms: None,
    });
    session.trace_pattern(&"limits_are_enforced_in_the_node:rated".parse().unwrap());
    for i in 0..5000 {
        rated(i);
    }
    let delivered = drain(&session).len() as u64;
    let counts = session.counts();
    assert_eq!(delivered, 100, "one window of 100 calls");
    assert_eq!(counts.rate_dropped, 4900);
    assert_eq!(counts.emitted(), 5000);
    assert!(
        session.end_reason().is_none(),
        "a rate thins, it does not stop"
    );
}
