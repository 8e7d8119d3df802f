//! Profiling a node, against scripted fake nodes on real sockets: the spec
//! sent, pings while waiting, Stop, the final report, and a node lost
//! before it (its last periodic figures, marked incomplete).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use nodetrace_profiler::{Outputs, ProfileError, ProfileRequest, profile_node};
use nodetrace_protocol::frame::{self, FrameError, MAX_FRAME};
use nodetrace_protocol::handshake::{self, Side};
use nodetrace_protocol::{
    CallsiteInfo, Command, FunctionProfile, NodeInfo, NodeMessage, PROTOCOL_VERSION, Processes,
    ProfileMode, ProfileSnapshot, ProfileSpec, Reply, TracerMessage,
};
use nodetrace_tracer::{Credentials, Format, StopSignal, Target};

const COOKIE: &str = "secret";

fn fake(script: impl FnOnce(TcpStream) + Send + 'static) -> (Target, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        welcome(&mut stream);
        script(stream);
    });
    (
        Target {
            name: Some("fake@localhost".to_owned()),
            addr,
        },
        handle,
    )
}

fn recv(s: &mut TcpStream) -> Result<TracerMessage, FrameError> {
    frame::read_frame(s, MAX_FRAME)
}

fn send(s: &mut TcpStream, m: &NodeMessage) {
    frame::write_frame(s, m).unwrap();
}

fn welcome(s: &mut TcpStream) {
    let Ok(TracerMessage::Hello {
        challenge: theirs, ..
    }) = recv(s)
    else {
        panic!("expected Hello");
    };
    let ours = handshake::challenge();
    send(
        s,
        &NodeMessage::Challenge {
            version: PROTOCOL_VERSION,
            challenge: ours,
        },
    );
    let Ok(TracerMessage::Answer { proof }) = recv(s) else {
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
            proof: handshake::prove(COOKIE, Side::Node, &theirs, &ours),
            node: NodeInfo {
                name: "fake@localhost".to_owned(),
                os_pid: 1,
                started_ms: 0,
                tracing_bridge: false,
            },
        },
    );
}

/// Reads the Profile command, answers it, and returns its spec.
fn started(s: &mut TcpStream) -> ProfileSpec {
    let Ok(TracerMessage::Command(Command::Profile(spec))) = recv(s) else {
        panic!("expected a Profile command");
    };
    send(
        s,
        &NodeMessage::Reply(Reply::ProfileStarted {
            functions: 1,
            callsites: vec![CallsiteInfo {
                id: 0,
                module: "fake".into(),
                function: "work".into(),
                self_type: None,
                trait_name: None,
                arity: 1,
                file: "src/fake.rs".into(),
                line: 1,
                is_async: false,
                ..CallsiteInfo::default()
            }],
        }),
    );
    spec
}

fn snapshot(calls: u64) -> ProfileSnapshot {
    ProfileSnapshot {
        elapsed_ns: calls * 1000,
        functions: vec![FunctionProfile {
            callsite: 0,
            pid: None,
            calls,
            own_ns: calls * 10,
            acc_ns: calls * 10,
            busy_ns: None,
            histogram: None,
        }],
        edges: Vec::new(),
        stacks: Vec::new(),
        ..ProfileSnapshot::default()
    }
}

fn request(duration_ms: Option<u64>, output: &std::path::Path) -> ProfileRequest {
    ProfileRequest {
        spec: ProfileSpec {
            mode: ProfileMode::Eprof,
            frequency_hz: 0,
            patterns: Vec::new(),
            processes: Processes::All,
            histogram: false,
            per_process: false,
            duration_ms,
            snapshot_ms: 100,
        },
        default_duration: false,
        outputs: Outputs {
            format: Format::Text,
            output: Some(output.to_owned()),
            ..Outputs::default()
        },
    }
}

fn credentials() -> Credentials {
    Credentials::new(COOKIE, "/nowhere/cookie")
}

#[test]
fn the_final_report_is_shown_and_pings_keep_the_profile_alive() {
    let (target, node) = fake(|mut s| {
        let spec = started(&mut s);
        assert_eq!(spec.duration_ms, Some(1000));
        assert_eq!(spec.snapshot_ms, 100);
        send(
            &mut s,
            &NodeMessage::Profile {
                snapshot: snapshot(3),
                last: false,
            },
        );
        // A second of silence from the tracer would end a real profile:
        // count its pings meanwhile.
        let mut pings = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1000) {
            match recv(&mut s) {
                Ok(TracerMessage::Ping) => pings += 1,
                other => panic!("expected pings, got {other:?}"),
            }
        }
        assert!(pings >= 3, "{pings} pings in a second");
        send(
            &mut s,
            &NodeMessage::Profile {
                snapshot: snapshot(7),
                last: true,
            },
        );
        // The node keeps the connection; the tracer closes it.
        while recv(&mut s).is_ok() {}
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.txt");
    let mut log = Vec::new();
    let complete = profile_node(
        &target,
        &credentials(),
        &request(Some(1000), &out),
        &mut log,
        &StopSignal::new(),
    )
    .unwrap();
    node.join().unwrap();
    assert!(complete);
    let report = std::fs::read_to_string(&out).unwrap();
    let row = report
        .lines()
        .find(|l| l.starts_with("fake:work/1"))
        .unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("7"), "{report}");
    assert!(!report.contains("died"), "{report}");
    let log = String::from_utf8(log).unwrap();
    assert!(
        log.starts_with(
            "nodetrace: eprof of every traceable function on fake@localhost (1 function) for 1s"
        ),
        "{log}"
    );
}

#[test]
fn stop_asks_for_the_final_report() {
    let (target, node) = fake(|mut s| {
        let spec = started(&mut s);
        assert_eq!(spec.duration_ms, None);
        loop {
            match recv(&mut s) {
                Ok(TracerMessage::Ping) => {}
                Ok(TracerMessage::Command(Command::Stop)) => break,
                other => panic!("expected Stop, got {other:?}"),
            }
        }
        send(
            &mut s,
            &NodeMessage::Profile {
                snapshot: snapshot(5),
                last: true,
            },
        );
        while recv(&mut s).is_ok() {}
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.txt");
    let stop = StopSignal::new();
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            stop.stop();
        })
    };
    let complete = profile_node(
        &target,
        &credentials(),
        &request(None, &out),
        &mut Vec::new(),
        &stop,
    )
    .unwrap();
    stopper.join().unwrap();
    node.join().unwrap();
    assert!(complete);
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("fake:work/1")
    );
}

#[test]
fn a_node_lost_before_its_final_report_gets_its_last_periodic_figures() {
    let (target, node) = fake(|mut s| {
        started(&mut s);
        for calls in [2, 4] {
            send(
                &mut s,
                &NodeMessage::Profile {
                    snapshot: snapshot(calls),
                    last: false,
                },
            );
        }
        // The node dies.
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.txt");
    let mut log = Vec::new();
    let complete = profile_node(
        &target,
        &credentials(),
        &request(Some(60_000), &out),
        &mut log,
        &StopSignal::new(),
    )
    .unwrap();
    node.join().unwrap();
    assert!(!complete);
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(
        report.starts_with("%% fake@localhost died before its final report"),
        "{report}"
    );
    let row = report
        .lines()
        .find(|l| l.starts_with("fake:work/1"))
        .unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("4"), "{report}");
    let log = String::from_utf8(log).unwrap();
    assert!(
        log.contains("lost fake@localhost before its final report (the connection was closed): showing its last periodic figures"),
        "{log}"
    );
}

#[test]
fn a_node_lost_before_any_figures_is_an_error() {
    let (target, node) = fake(|mut s| {
        started(&mut s);
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.txt");
    let err = profile_node(
        &target,
        &credentials(),
        &request(Some(60_000), &out),
        &mut Vec::new(),
        &StopSignal::new(),
    )
    .unwrap_err();
    node.join().unwrap();
    assert!(matches!(err, ProfileError::NoFigures(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "lost fake@localhost before its final report (the connection was closed): no figures to show"
    );
    assert!(!out.exists());
}
