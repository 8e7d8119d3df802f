//! An async traced function records its call at first poll and its return
//! at completion, with wall time and busy time (the sum of its polls).

mod common;

use std::time::Duration;

use common::drain;
use nodetrace_agent::{EventKind, Session, SessionOptions, traced};

#[traced]
async fn sleepy(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[traced]
async fn busy(ms: u64) -> Result<u64, String> {
    std::thread::sleep(Duration::from_millis(ms));
    let half: u64 = "x".parse::<u64>().or(Ok::<u64, String>(ms / 2))?;
    Ok(half)
}

#[traced]
async fn never_finishes() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[test]
fn waiting_is_wall_time_and_working_is_busy_time() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(
        &"async_calls_account_busy_and_wall_time:sleepy -> return"
            .parse()
            .unwrap(),
    );
    session.trace_pattern(
        &"async_calls_account_busy_and_wall_time:busy -> return"
            .parse()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let future = sleepy(50);
        // Nothing is recorded before the first poll.
        assert!(drain(&session).is_empty());
        assert_eq!(future.await, 50);
        assert_eq!(busy(40).await, Ok(20));
    });
    let events = drain(&session);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Call,
            EventKind::Return,
            EventKind::Call,
            EventKind::Return
        ]
    );

    let sleepy_ret = &events[1];
    let (wall, busy_ns) = (sleepy_ret.duration_ns.unwrap(), sleepy_ret.busy_ns.unwrap());
    assert!(wall >= 50_000_000, "wall {wall}");
    assert!(
        busy_ns < wall / 2,
        "sleeping is not busy: busy {busy_ns} of wall {wall}"
    );
    assert_eq!(sleepy_ret.text.as_deref(), Some("50"));

    let busy_ret = &events[3];
    let (wall, busy_ns) = (busy_ret.duration_ns.unwrap(), busy_ret.busy_ns.unwrap());
    assert!(busy_ns >= 40_000_000, "busy {busy_ns}");
    assert!(busy_ns <= wall);
    assert_eq!(busy_ret.text.as_deref(), Some("Ok(20)"));
}

#[test]
fn a_dropped_future_is_reported_as_cancelled() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(
        &"async_calls_account_busy_and_wall_time:never_finishes"
            .parse()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let result = tokio::time::timeout(Duration::from_millis(5), never_finishes()).await;
        assert!(result.is_err());
    });
    let events = drain(&session);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventKind::Exception);
    assert!(events[1].text.as_deref().unwrap().contains("cancelled"));
}

#[traced]
async fn yields_once(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_session_that_asks_for_polls_gets_each_one_in_and_out() {
    let pattern = "async_calls_account_busy_and_wall_time:yields_once -> return"
        .parse()
        .unwrap();
    let polled = Session::start(SessionOptions {
        polls: true,
        ..SessionOptions::default()
    })
    .unwrap();
    polled.trace_pattern(&pattern);
    let plain = Session::start(SessionOptions::default()).unwrap();
    plain.trace_pattern(&pattern);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(yields_once(20)), 20);

    let events = drain(&polled);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Call,
            EventKind::In,
            EventKind::Out,
            EventKind::In,
            EventKind::Out,
            EventKind::Return
        ]
    );
    let call = &events[0];
    assert!(
        events
            .iter()
            .all(|e| e.callsite == call.callsite && e.pid == call.pid)
    );
    // Each out says how long its poll ran; the polls add up to the busy time.
    let mut polled_ns = 0;
    for pair in events[1..5].chunks(2) {
        let (start, end) = (&pair[0], &pair[1]);
        assert_eq!(start.duration_ns, None);
        let ran = end.duration_ns.unwrap();
        assert!(end.timestamp_ns.abs_diff(start.timestamp_ns + ran) <= 1);
        polled_ns += ran;
    }
    let busy = events[5].busy_ns.unwrap();
    assert!(
        busy.abs_diff(polled_ns) <= 2,
        "busy {busy}, polls {polled_ns}"
    );
    assert!(
        events[4].duration_ns.unwrap() >= 20_000_000,
        "the second poll sleeps"
    );
    assert!(call.timestamp_ns <= events[1].timestamp_ns);
    assert!(events[4].timestamp_ns <= events[5].timestamp_ns);

    // The other session did not ask: its call and return only.
    let kinds: Vec<EventKind> = drain(&plain).iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Call, EventKind::Return]);
}
