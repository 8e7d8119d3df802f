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
/// are not. Both are judged by the clock events are stamped with: a second
/// session with no limit sees every call, and a traced marker called just
/// before and just after the limited session starts brackets its deadline.
#[test]
fn a_duration_keeps_every_call_made_before_it_ran_out() {
    const MS: u64 = 50;
    let clock = Session::start(SessionOptions {
        returns: false,
        ..SessionOptions::default()
    })
    .unwrap();
    clock.trace_pattern(&"limits_are_enforced_in_the_node:started".parse().unwrap());
    clock.trace_pattern(&"limits_are_enforced_in_the_node:paced".parse().unwrap());
    started();
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
    let mut n = 0;
    while !session.is_ended() && after.elapsed() < Duration::from_secs(5) {
        paced(n);
        n += 1;
        let pause = Instant::now();
        while pause.elapsed() < Duration::from_micros(10) {}
    }
    session.flush();
    assert_eq!(session.end_reason(), Some(EndReason::Duration(MS)));
    let events = drain(&session);
    let seen = drain(&clock);
    let [before, after] = [0, 1].map(|i| seen[i].timestamp_ns + MS * 1_000_000);
    // Calls made before the earlier bound were surely in time.
    let in_time = seen[2..].iter().filter(|e| e.timestamp_ns < before).count();
    assert!(
        in_time > 100,
        "{in_time} calls in time: the test ran too slowly to tell"
    );
    let delivered_in_time = events.iter().filter(|e| e.timestamp_ns < before).count();
    assert_eq!(
        delivered_in_time, in_time,
        "every call made before the deadline is delivered ({n} calls in all)"
    );
    let late = events.iter().filter(|e| e.timestamp_ns >= after).count();
    assert_eq!(late, 0, "no call made after the deadline is the session's");
    assert_eq!(session.lost(), 0);
    assert_eq!(clock.lost(), 0);
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
