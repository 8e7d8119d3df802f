//! A session's limits hold inside the node: `max_events` stops it exactly,
//! a duration ends it, a rate drops above it, and every event is counted.

mod common;

use std::time::{Duration, Instant};

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
fn paced(n: u64) -> u64 {
    n
}

#[traced]
fn rated(n: u64) -> u64 {
    n
}

/// Called as a session with a duration has started: its call's stamp is
/// the node's clock then.
#[traced]
fn started() {}

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

/// The collector ends a session whose time is up when it next wakes,
/// with records of the session's last moments still in the rings: those
/// made before the deadline are the session's, and those made after it
/// are not.
#[test]
fn a_duration_keeps_every_call_made_before_it_ran_out() {
    const MS: u64 = 50;
    let clock = Session::start(SessionOptions::default()).unwrap();
    clock.trace_pattern(&"limits_are_enforced_in_the_node:started".parse().unwrap());
    let before = Instant::now();
    let session = limited(Limits {
        max_events: None,
        rate: None,
        duration_ms: Some(MS),
    });
    started();
    let after = Instant::now();
    session.trace_pattern(&"limits_are_enforced_in_the_node:paced".parse().unwrap());
    // Calls about every 10 µs until the session ends: a few in each of
    // the collector's naps (1 ms), and never more than the ring holds.
    let surely_in_time = before + Duration::from_millis(MS);
    let mut in_time = 0;
    let mut n = 0;
    while !session.is_ended() && after.elapsed() < Duration::from_secs(5) {
        paced(n);
        // Stamped before now: if now is before the deadline, so was it.
        if Instant::now() < surely_in_time {
            in_time += 1;
        }
        n += 1;
        let pause = Instant::now();
        while pause.elapsed() < Duration::from_micros(10) {}
    }
    session.flush();
    assert_eq!(session.end_reason(), Some(EndReason::Duration(MS)));
    let events = drain(&session);
    // The session's deadline is its start plus MS, by the clock events
    // are stamped with, and it started before `started` was called.
    let deadline_ns = drain(&clock)[0].timestamp_ns + MS * 1_000_000;
    assert!(
        events.len() >= in_time,
        "{} of the {in_time} calls made before the deadline were delivered ({n} calls in all)",
        events.len()
    );
    let late = events
        .iter()
        .filter(|e| e.timestamp_ns >= deadline_ns)
        .count();
    assert_eq!(late, 0, "no call made after the deadline is the session's");
    assert_eq!(session.lost(), 0);
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
