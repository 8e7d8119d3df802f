//! The control server, spoken to frame by frame: the handshake, a trace
//! with a limit, a wrong cookie, garbage, and a tracer that goes silent.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nodetrace_agent::node::{self, NodeConfig};
use nodetrace_agent::{callsites, traced};
use nodetrace_protocol::frame::{MAX_FRAME, read_frame, write_frame};
use nodetrace_protocol::home::Home;
use nodetrace_protocol::{
    Command, EndReason, NodeMessage, Processes, ProfileMode, ProfileSpec, Reply, TraceSpec,
    TracerMessage,
};

use common::wire::{calls, login};

#[traced]
fn work(n: u64) -> u64 {
    n * 2
}

const COOKIE: &str = "test-cookie";

fn connect(addr: SocketAddr, cookie: &str) -> Result<TcpStream, NodeMessage> {
    let (s, node) = login(addr, cookie)?;
    assert_eq!(node.name, "control@test");
    Ok(s)
}

fn spec(max: u64) -> TraceSpec {
    calls("control_server_speaks_the_protocol:work", max)
}

fn enabled() -> bool {
    callsites().iter().any(|c| c.is_enabled())
}

#[test]
fn the_control_server_serves_tracers_and_survives_bad_ones() {
    let home = tempfile::tempdir().unwrap();
    let addr = node::start(NodeConfig {
        cookie: Some(COOKIE.into()),
        home: Some(home.path().into()),
        ..NodeConfig::new("control@test")
    })
    .unwrap();
    let registered = Home::at(home.path()).nodes().unwrap();
    assert_eq!(registered.len(), 1);
    assert_eq!(
        (registered[0].name.as_str(), registered[0].addr),
        ("control@test", addr)
    );

    // A wrong cookie is denied and learns nothing.
    assert_eq!(connect(addr, "wrong").unwrap_err(), NodeMessage::Denied);

    // Garbage and an oversized frame close their connections only.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut huge = TcpStream::connect(addr).unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();

    // A trace with a limit: exactly N events, then the end and its counts.
    let mut s = connect(addr, COOKIE).unwrap();
    write_frame(&mut s, &TracerMessage::Command(Command::Trace(spec(5)))).unwrap();
    let NodeMessage::Reply(Reply::TraceStarted {
        matched, limits, ..
    }) = read_frame(&mut s, MAX_FRAME).unwrap()
    else {
        panic!("the trace did not start")
    };
    assert_eq!((matched, limits.max_events), (1, Some(5)));
    for i in 0..100 {
        work(i);
    }
    let mut events = Vec::new();
    let end = loop {
        match read_frame(&mut s, MAX_FRAME).unwrap() {
            NodeMessage::Events(batch) => events.extend(batch),
            NodeMessage::Ended(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(events.len(), 5);
    assert_eq!(events[0].text.as_deref(), Some("0"));
    assert_eq!(end.reason, EndReason::MaxEvents(5));
    assert_eq!(end.counts.delivered, 5);
    assert!(!enabled());

    // A pattern that matches nothing is refused with the reason.
    let mut nothing = spec(5);
    nothing.patterns = vec!["no_such::module".parse().unwrap()];
    write_frame(&mut s, &TracerMessage::Command(Command::Trace(nothing))).unwrap();
    let NodeMessage::Reply(Reply::Error(reason)) = read_frame(&mut s, MAX_FRAME).unwrap() else {
        panic!("a pattern matching nothing started a trace")
    };
    assert!(
        reason.contains("no_such::module matches no traceable function"),
        "{reason}"
    );

    // A tracer that goes silent loses its trace within a second.
    write_frame(
        &mut s,
        &TracerMessage::Command(Command::Trace(spec(1_000_000))),
    )
    .unwrap();
    assert!(matches!(
        read_frame(&mut s, MAX_FRAME).unwrap(),
        NodeMessage::Reply(Reply::TraceStarted { .. })
    ));
    assert!(enabled());
    let silent = Instant::now();
    while enabled() {
        assert!(
            silent.elapsed() < Duration::from_millis(1500),
            "the silent tracer's trace is still on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // It is told why, with its counts, before the node closes.
    let end = loop {
        match read_frame(&mut s, MAX_FRAME).unwrap() {
            NodeMessage::Events(_) | NodeMessage::Callsites(_) | NodeMessage::Names(_) => {}
            NodeMessage::Ended(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(end.reason, EndReason::TracerSilent(800));

    // A profile streams snapshots and ends with its final report.
    let mut s = connect(addr, COOKIE).unwrap();
    let profile = ProfileSpec {
        mode: ProfileMode::Eprof,
        frequency_hz: 0,
        patterns: vec!["control_server_speaks_the_protocol:work".parse().unwrap()],
        processes: Processes::All,
        histogram: true,
        per_process: false,
        duration_ms: None,
        snapshot_ms: 20,
    };
    write_frame(&mut s, &TracerMessage::Command(Command::Profile(profile))).unwrap();
    let NodeMessage::Reply(Reply::ProfileStarted { functions, .. }) =
        read_frame(&mut s, MAX_FRAME).unwrap()
    else {
        panic!("the profile did not start")
    };
    assert_eq!(functions, 1);
    for i in 0..250 {
        work(i);
    }
    let mut periodic = 0;
    let last = loop {
        let NodeMessage::Profile { snapshot, last } = read_frame(&mut s, MAX_FRAME).unwrap() else {
            panic!("not a profile snapshot")
        };
        if last {
            break snapshot;
        }
        periodic += 1;
        if periodic == 2 {
            write_frame(&mut s, &TracerMessage::Command(Command::Stop)).unwrap();
        }
    };
    assert_eq!(last.functions.len(), 1);
    assert_eq!(last.functions[0].calls, 250);
    assert!(last.functions[0].histogram.is_some());
    assert!(!enabled());

    // The node still serves: processes, and the junk connections are gone.
    let mut s = connect(addr, COOKIE).unwrap();
    write_frame(&mut s, &TracerMessage::Command(Command::Processes)).unwrap();
    assert!(matches!(
        read_frame(&mut s, MAX_FRAME).unwrap(),
        NodeMessage::Reply(Reply::Processes(_))
    ));
    write_frame(&mut s, &TracerMessage::Command(Command::StopClear)).unwrap();
    assert!(matches!(
        read_frame(&mut s, MAX_FRAME).unwrap(),
        NodeMessage::Reply(Reply::Cleared { .. })
    ));
}
