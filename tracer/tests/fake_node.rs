//! The tracer against scripted fake nodes on real sockets: every handshake
//! outcome, and a trace's stream (pings, Stop, a lost connection, two
//! nodes at once), without the agent.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nodetrace_protocol::frame::{self, MAX_FRAME};
use nodetrace_protocol::handshake::{self, Side};
use nodetrace_protocol::{
    CallsiteInfo, Command, Counts, EndReason, Event, EventKind, Limits, NodeInfo, NodeMessage,
    PROTOCOL_VERSION, Pid, Processes, Reply, TraceEnd, TraceSpec, TracerMessage,
};
use nodetrace_tracer::stream::{self, TraceRun};
use nodetrace_tracer::{Connection, Credentials, Format, StopSignal, Target, TracerError};

const COOKIE: &str = "secret";

fn credentials() -> Credentials {
    Credentials::new(COOKIE, "/home/me/.nodetrace/cookie")
}

/// A node that accepts one connection and runs `script` on it.
fn fake(
    name: &str,
    script: impl FnOnce(TcpStream) + Send + 'static,
) -> (Target, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        script(stream);
    });
    (
        Target {
            name: Some(name.to_owned()),
            addr,
        },
        handle,
    )
}

fn recv(s: &mut TcpStream) -> TracerMessage {
    frame::read_frame(s, MAX_FRAME).unwrap()
}

fn send(s: &mut TcpStream, m: &NodeMessage) {
    frame::write_frame(s, m).unwrap();
}

/// The node's half of the handshake with `cookie`.
fn welcome(s: &mut TcpStream, name: &str, cookie: &str) {
    let TracerMessage::Hello {
        version,
        challenge: theirs,
        ..
    } = recv(s)
    else {
        panic!("expected Hello");
    };
    assert_eq!(version, PROTOCOL_VERSION);
    let ours = handshake::challenge();
    send(
        s,
        &NodeMessage::Challenge {
            version: PROTOCOL_VERSION,
            challenge: ours,
        },
    );
    let TracerMessage::Answer { proof } = recv(s) else {
        panic!("expected Answer");
    };
    assert!(handshake::verify(
        COOKIE,
        Side::Tracer,
        &theirs,
        &ours,
        &proof
    ));
    send(
        s,
        &NodeMessage::Welcome {
            proof: handshake::prove(cookie, Side::Node, &theirs, &ours),
            node: NodeInfo {
                name: name.to_owned(),
                os_pid: 1,
                started_ms: 0,
                tracing_bridge: false,
            },
        },
    );
}

fn open_err(target: &Target) -> TracerError {
    Connection::open(target, &credentials()).unwrap_err()
}

#[test]
fn a_version_mismatch_names_both_versions() {
    let (target, node) = fake("old@localhost", |mut s| {
        let _ = recv(&mut s);
        send(&mut s, &NodeMessage::VersionMismatch { node: 99 });
    });
    let err = open_err(&target).to_string();
    node.join().unwrap();
    assert_eq!(
        err,
        format!(
            "old@localhost speaks nodetrace protocol version 99, this tracer speaks version {PROTOCOL_VERSION}: use a nodetrace built with the same version as the node's agent"
        )
    );
}

#[test]
fn a_refused_cookie_says_where_the_cookie_comes_from() {
    let (target, node) = fake("todo@localhost", |mut s| {
        let _ = recv(&mut s);
        send(
            &mut s,
            &NodeMessage::Challenge {
                version: PROTOCOL_VERSION,
                challenge: handshake::challenge(),
            },
        );
        let _ = recv(&mut s);
        send(&mut s, &NodeMessage::Denied);
    });
    let err = open_err(&target);
    node.join().unwrap();
    assert_eq!(
        err.to_string(),
        "todo@localhost refused the cookie: use the node's cookie (--cookie, NODETRACE_COOKIE or /home/me/.nodetrace/cookie)"
    );
}

#[test]
fn a_node_that_cannot_prove_the_cookie_is_refused() {
    let (target, node) = fake("impostor@localhost", |mut s| {
        welcome(&mut s, "impostor@localhost", "not the cookie");
    });
    let err = open_err(&target);
    node.join().unwrap();
    assert!(matches!(err, TracerError::NodeProofFailed { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("impostor@localhost at 127.0.0.1:"),
        "{err}"
    );
    assert!(err.to_string().contains("failed to prove"), "{err}");
}

#[test]
fn something_else_is_not_a_node() {
    let (target, node) = fake("web@localhost", |mut s| {
        use std::io::Write;
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let err = open_err(&target).to_string();
    node.join().unwrap();
    assert!(
        err.contains("is not a nodetrace node (it speaks HTTP"),
        "{err}"
    );
    assert!(err.contains("see `nodetrace nodes`"), "{err}");

    let (target, node) = fake("gone@localhost", drop);
    let err = open_err(&target).to_string();
    node.join().unwrap();
    assert!(
        err.contains("closed the connection during the handshake"),
        "{err}"
    );

    let unused = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let err = open_err(&Target::at(addr)).to_string();
    assert!(
        err.starts_with(&format!("cannot connect to {addr}: ")),
        "{err}"
    );
    assert!(
        err.ends_with("the node may have exited (see `nodetrace nodes`)"),
        "{err}"
    );
}

fn callsites() -> Vec<CallsiteInfo> {
    vec![CallsiteInfo {
        id: 4,
        module: "todo::server".into(),
        function: "entries".into(),
        self_type: None,
        trait_name: None,
        arity: 2,
        file: "server.rs".into(),
        line: 1,
        is_async: true,
        ..CallsiteInfo::default()
    }]
}

fn call(n: u64) -> Event {
    Event {
        kind: EventKind::Call,
        pid: Pid::process(n),
        peer: None,
        callsite: Some(4),
        timestamp_ns: n,
        duration_ns: None,
        busy_ns: None,
        text: Some(format!("<0.9.0>, {n}")),
        extra: None,
    }
}

fn spec() -> TraceSpec {
    TraceSpec {
        log: None,
        patterns: vec!["Todo.Server:entries".parse().unwrap()],
        processes: Processes::All,
        calls: true,
        send: false,
        receive: false,
        sys: Vec::new(),
        args: true,
        returns: false,
        polls: false,
        text_bound: 256,
        arg_match: None,
        limits: Limits {
            max_events: None,
            rate: Some(nodetrace_protocol::Rate {
                events: 10,
                per_ms: 1000,
            }),
            duration_ms: None,
        },
    }
}

fn run_trace(
    targets: &[Target],
    stop: &StopSignal,
) -> (Result<stream::TraceReport, TracerError>, String, String) {
    let (mut out, mut log) = (Vec::new(), Vec::new());
    let run = TraceRun {
        spec: spec(),
        format: Format::Text,
        timeline: None,
        otlp: None,
        default_limits: false,
        what: "calls of todo::server:entries".into(),
        typed_patterns: Vec::new(),
    };
    let report = stream::run(targets, &credentials(), &run, &mut out, &mut log, stop);
    (
        report,
        String::from_utf8(out).unwrap(),
        String::from_utf8(log).unwrap(),
    )
}

/// Starts the trace on the fake node's side: answers the tracer's check of
/// the patterns (Callsites), then reads the Trace command and answers
/// TraceStarted.
fn started(s: &mut TcpStream) {
    let TracerMessage::Command(Command::Callsites { pattern: None }) = recv(s) else {
        panic!("expected Callsites");
    };
    send(s, &NodeMessage::Reply(Reply::Callsites(callsites())));
    let TracerMessage::Command(Command::Trace(spec)) = recv(s) else {
        panic!("expected Trace");
    };
    send(
        s,
        &NodeMessage::Reply(Reply::TraceStarted {
            waiting: Vec::new(),
            matched: 1,
            callsites: callsites(),
            limits: spec.limits,
        }),
    );
}

#[test]
fn a_trace_pings_streams_and_stops_on_request() {
    let (pings_tx, pings_rx) = mpsc::channel();
    let (target, node) = fake("todo@localhost", move |mut s| {
        welcome(&mut s, "todo@localhost", COOKIE);
        started(&mut s);
        send(&mut s, &NodeMessage::Events(vec![call(7), call(8)]));
        let mut pings = 0;
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        loop {
            match recv(&mut s) {
                TracerMessage::Ping => {
                    pings += 1;
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                TracerMessage::Command(Command::Stop) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        send(&mut s, &NodeMessage::Events(vec![call(9)]));
        send(
            &mut s,
            &NodeMessage::Ended(TraceEnd {
                reason: EndReason::Stopped,
                counts: Counts {
                    delivered: 3,
                    rate_dropped: 5,
                    lost: 1,
                    discarded: 0,
                },
            }),
        );
        pings_tx.send((pings, longest)).unwrap();
    });
    let stop = StopSignal::new();
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(900));
            stop.stop();
        })
    };
    let (report, out, log) = run_trace(std::slice::from_ref(&target), &stop);
    stopper.join().unwrap();
    node.join().unwrap();
    let report = report.unwrap();
    assert!(report.is_ok());
    assert_eq!(report.outcomes[0].shown, 3);
    assert_eq!(
        out,
        "(<0.7.0>) call todo::server:entries(<0.9.0>, 7)\n(<0.8.0>) call todo::server:entries(<0.9.0>, 8)\n(<0.9.0>) call todo::server:entries(<0.9.0>, 9)\n"
    );
    let (pings, longest) = pings_rx.recv().unwrap();
    assert!(pings >= 2, "pings while tracing: {pings}");
    assert!(longest < Duration::from_millis(600), "{longest:?}");
    assert_eq!(
        log,
        "tracing calls of todo::server:entries on todo@localhost: 1 function matched; limits: at most 10/1s; Ctrl-C stops it\n\
         trace ended on todo@localhost: stopped by the tracer; 3 shown, 5 dropped by --rate, 1 lost to full buffers, 0 discarded after the stop\n"
    );
}

#[test]
fn events_that_overtake_the_trace_reply_are_shown_in_order() {
    let (target, node) = fake("todo@localhost", |mut s| {
        welcome(&mut s, "todo@localhost", COOKIE);
        let TracerMessage::Command(Command::Callsites { pattern: None }) = recv(&mut s) else {
            panic!("expected Callsites");
        };
        send(&mut s, &NodeMessage::Reply(Reply::Callsites(callsites())));
        let TracerMessage::Command(Command::Trace(spec)) = recv(&mut s) else {
            panic!("expected Trace");
        };
        send(&mut s, &NodeMessage::Events(vec![call(1), call(2)]));
        send(
            &mut s,
            &NodeMessage::Ended(TraceEnd {
                reason: EndReason::MaxEvents(2),
                counts: Counts {
                    delivered: 2,
                    ..Counts::default()
                },
            }),
        );
        send(
            &mut s,
            &NodeMessage::Reply(Reply::TraceStarted {
                waiting: Vec::new(),
                matched: 1,
                callsites: callsites(),
                limits: spec.limits,
            }),
        );
    });
    let (report, out, log) = run_trace(std::slice::from_ref(&target), &StopSignal::new());
    node.join().unwrap();
    assert!(report.unwrap().is_ok());
    assert_eq!(
        out,
        "(<0.1.0>) call todo::server:entries(<0.9.0>, 1)\n(<0.2.0>) call todo::server:entries(<0.9.0>, 2)\n"
    );
    assert!(
        log.contains("reached the limit of 2 events; 2 shown"),
        "{log}"
    );
}

#[test]
fn a_lost_connection_is_reported_with_what_was_shown() {
    let (target, node) = fake("todo@localhost", |mut s| {
        welcome(&mut s, "todo@localhost", COOKIE);
        started(&mut s);
        send(&mut s, &NodeMessage::Events(vec![call(7)]));
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
    let (report, out, _log) = run_trace(std::slice::from_ref(&target), &StopSignal::new());
    node.join().unwrap();
    let report = report.unwrap();
    assert!(!report.is_ok());
    assert_eq!(out.lines().count(), 1);
    let err = report.errors().next().unwrap().to_string();
    assert!(
        err.starts_with("lost the connection to todo@localhost"),
        "{err}"
    );
}

#[test]
fn a_refused_trace_fails_before_any_event() {
    let (target, node) = fake("todo@localhost", |mut s| {
        welcome(&mut s, "todo@localhost", COOKIE);
        let _ = recv(&mut s);
        send(
            &mut s,
            &NodeMessage::Reply(Reply::Error(
                "todo::nothing matches no traceable function of this node".into(),
            )),
        );
    });
    let (report, out, _) = run_trace(std::slice::from_ref(&target), &StopSignal::new());
    node.join().unwrap();
    assert_eq!(
        report.unwrap_err().to_string(),
        "todo@localhost: todo::nothing matches no traceable function of this node"
    );
    assert!(out.is_empty());
}

#[test]
fn two_nodes_merge_and_show_their_names() {
    let script = |name: &'static str, reason: EndReason| {
        move |mut s: TcpStream| {
            welcome(&mut s, name, COOKIE);
            started(&mut s);
            send(&mut s, &NodeMessage::Events(vec![call(1)]));
            send(
                &mut s,
                &NodeMessage::Ended(TraceEnd {
                    reason,
                    counts: Counts {
                        delivered: 1,
                        ..Counts::default()
                    },
                }),
            );
        }
    };
    let (a, na) = fake(
        "a@localhost",
        script("a@localhost", EndReason::MaxEvents(1)),
    );
    let (b, nb) = fake("b@localhost", script("b@localhost", EndReason::StopClear));
    let (report, out, log) = run_trace(&[a, b], &StopSignal::new());
    na.join().unwrap();
    nb.join().unwrap();
    assert!(report.unwrap().is_ok());
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "(a@localhost <0.1.0>) call todo::server:entries(<0.9.0>, 1)",
            "(b@localhost <0.1.0>) call todo::server:entries(<0.9.0>, 1)"
        ]
    );
    assert!(
        log.contains("trace ended on a@localhost: reached the limit of 1 event;"),
        "{log}"
    );
    assert!(
        log.contains("trace ended on b@localhost: stopped by stop-clear;"),
        "{log}"
    );
}

#[test]
fn one_shot_commands_map_node_errors() {
    let (target, node) = fake("todo@localhost", |mut s| {
        welcome(&mut s, "todo@localhost", COOKIE);
        let _ = recv(&mut s);
        send(
            &mut s,
            &NodeMessage::Reply(Reply::Error("no process nobody".into())),
        );
    });
    let mut conn = Connection::open(&target, &credentials()).unwrap();
    assert_eq!(conn.name(), "todo@localhost");
    let err = nodetrace_tracer::commands::get_state(&mut conn, "nobody").unwrap_err();
    node.join().unwrap();
    assert_eq!(err.to_string(), "todo@localhost: no process nobody");
}
