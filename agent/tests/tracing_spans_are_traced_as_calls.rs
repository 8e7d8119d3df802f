//! The `tracing` bridge in process: spans are callsites once reached, a
//! pattern set before that catches the first call, fields are arguments,
//! `ret` is the return value, events stream as logs, and the app's own
//! layer keeps its level.

use std::time::Duration;

use nodetrace_agent::{
    ArgMatch, CallsiteKind, EventKind, Session, SessionOptions, callsites, tracing_layer,
};
use nodetrace_protocol::{Event, Level, Pattern};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

#[tracing::instrument(ret)]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[tracing::instrument(skip(secret))]
fn outer(n: u32, secret: &str) -> u32 {
    inner(n + secret.len() as u32)
}

#[tracing::instrument(level = "debug")]
fn inner(n: u32) -> u32 {
    tracing::debug!(n, "inner ran");
    tracing::trace!("too verbose");
    n * 2
}

#[tracing::instrument(err)]
fn parse(text: &str) -> Result<u32, std::num::ParseIntError> {
    text.parse()
}

#[tracing::instrument]
async fn sleepy(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    std::thread::sleep(Duration::from_millis(ms));
}

fn pattern(p: &str) -> Pattern {
    format!("{}:{p}", module_path!()).parse().unwrap()
}

fn next(session: &Session) -> Event {
    session
        .recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
}

fn install() {
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::new("info")))
        .with(tracing_layer())
        .try_init();
}

#[test]
fn the_bridge_traces_spans_and_streams_events() {
    install();
    let named = |name: &str| {
        callsites()
            .into_iter()
            .find(|c| c.metadata().name == name && c.kind() == CallsiteKind::Span)
    };
    assert!(named("add").is_none(), "a span is known once first reached");

    // A pattern set before the span was reached catches its first call.
    let session = Session::start(SessionOptions::default()).unwrap();
    assert_eq!(session.trace_pattern(&pattern("add/2 -> return")), 0);
    assert_eq!(add(1, 2), 3);
    let add_cs = named("add").expect("add is a callsite after its first call");
    assert_eq!(add_cs.metadata().arity, 2);
    let call = next(&session);
    assert_eq!(
        (call.kind, call.text.as_deref()),
        (EventKind::Call, Some("a=1, b=2"))
    );
    assert_eq!(call.callsite, Some(add_cs.id()));
    let ret = next(&session);
    assert_eq!(
        (ret.kind, ret.text.as_deref()),
        (EventKind::Return, Some("3"))
    );
    assert!(ret.duration_ns.is_some());
    drop(session);

    // A debug span the app filters out is traced all the same; skip holds.
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(&pattern("outer"));
    session.trace_pattern(&pattern("inner -> return"));
    outer(1, "xy");
    let kinds: Vec<(EventKind, Option<String>)> = (0..3)
        .map(|_| next(&session))
        .map(|e| (e.kind, e.text))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Call, Some("n=1".into())),
            (EventKind::Call, Some("n=3".into())),
            (EventKind::Return, None),
        ]
    );
    drop(session);

    // err: the error is the value of the return.
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(&pattern("parse -> return"));
    assert!(parse("x").is_err());
    let _call = next(&session);
    let ret = next(&session);
    assert_eq!(ret.kind, EventKind::Return);
    assert_eq!(
        ret.text.as_deref(),
        Some("Err(invalid digit found in string)")
    );
    drop(session);

    // Logs: debug events of this module, with their span context; not trace.
    let session = Session::start(SessionOptions::default()).unwrap();
    let this: Pattern = module_path!().parse().unwrap();
    session.trace_log(Some(&this), Level::Debug);
    outer(5, "");
    let log = next(&session);
    assert_eq!(log.kind, EventKind::Log);
    assert_eq!(log.text.as_deref(), Some("inner ran n=5"));
    // `outer` is the app's span (fmt has its fields); `inner` is no one's.
    assert_eq!(log.extra.as_deref(), Some("outer{n=5}:"));
    session.flush();
    assert!(session.take_events().is_empty(), "trace! stays off");
    drop(session);

    // --match applies to a log line's text.
    let session = Session::start(SessionOptions {
        arg_match: Some(ArgMatch::Substring("n=7".into())),
        ..SessionOptions::default()
    })
    .unwrap();
    session.trace_log(Some(&this), Level::Debug);
    outer(5, "");
    outer(7, "");
    let log = next(&session);
    assert_eq!(log.text.as_deref(), Some("inner ran n=7"));
    session.flush();
    assert!(session.take_events().is_empty(), "n=5 does not match");
    drop(session);

    // An instrumented future: wall covers the sleep, busy only the poll that blocks.
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(&pattern("sleepy"));
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(sleepy(30));
    let _call = next(&session);
    let ret = next(&session);
    let (wall, busy) = (ret.duration_ns.unwrap(), ret.busy_ns.unwrap());
    assert!(wall >= 60_000_000, "wall {wall} ns covers both sleeps");
    assert!(
        busy >= 30_000_000 && busy < wall,
        "busy {busy} ns of wall {wall} ns"
    );
    drop(session);

    // Asked for polls: each enter of the span is an `in`, each exit an
    // `out`, and their times add up to the busy time.
    let session = Session::start(SessionOptions {
        polls: true,
        ..SessionOptions::default()
    })
    .unwrap();
    session.trace_pattern(&pattern("sleepy"));
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(sleepy(10));
    let mut events = vec![next(&session)];
    while events.last().unwrap().kind != EventKind::Return {
        events.push(next(&session));
    }
    assert_eq!(events[0].kind, EventKind::Call);
    let polls = &events[1..events.len() - 1];
    assert!(polls.len() >= 4, "{events:?}");
    let mut polled = 0;
    for pair in polls.chunks(2) {
        assert_eq!(
            (pair[0].kind, pair[1].kind),
            (EventKind::In, EventKind::Out)
        );
        polled += pair[1].duration_ns.unwrap();
    }
    let busy = events.last().unwrap().busy_ns.unwrap();
    assert!(
        busy.abs_diff(polled) <= polls.len() as u64,
        "busy {busy} ns, polls {polled} ns"
    );
}
