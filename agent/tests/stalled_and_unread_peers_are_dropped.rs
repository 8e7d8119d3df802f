//! Peers that stall or stop reading cost a connection for a bounded time,
//! never the node's threads or its session slots: a login or a frame left
//! half-sent is dropped at its deadline, and a tracer that never reads has
//! its writes time out, so its slot is freed once its trace ended.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nodetrace_agent::node::{self, NodeConfig};
use nodetrace_agent::{MAX_SESSIONS, Session, SessionOptions, traced};
use nodetrace_protocol::frame::{MAX_FRAME, read_frame, write_frame};
use nodetrace_protocol::{Command, NodeMessage, Reply, TracerMessage};

use common::wire;

const COOKIE: &str = "stall-cookie";

#[traced]
fn noisy(text: &str, n: u64) -> u64 {
    text.len() as u64 + n
}

fn node_addr() -> SocketAddr {
    static ADDR: OnceLock<(tempfile::TempDir, SocketAddr)> = OnceLock::new();
    ADDR.get_or_init(|| {
        let home = tempfile::tempdir().unwrap();
        let addr = node::start(NodeConfig {
            cookie: Some(COOKIE.into()),
            home: Some(home.path().into()),
            ..NodeConfig::new("stall@test")
        })
        .unwrap();
        (home, addr)
    })
    .1
}

fn login(addr: SocketAddr) -> TcpStream {
    wire::login(addr, COOKIE).expect("welcomed").0
}

/// Waits until the node closes `s`; returns how long that took.
fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return start.elapsed(),
        }
        assert!(
            start.elapsed() < limit,
            "the node still holds the connection after {limit:?}"
        );
    }
}

#[test]
fn a_login_left_after_one_byte_is_dropped_at_the_handshake_deadline() {
    let mut s = TcpStream::connect(node_addr()).unwrap();
    s.write_all(&[0]).unwrap();
    let took = closed_within(s, Duration::from_secs(8));
    assert!(took <= Duration::from_millis(5_500), "took {took:?}");
}

#[test]
fn a_frame_left_half_sent_after_login_is_dropped_at_the_frame_deadline() {
    let mut s = login(node_addr());
    s.write_all(&[0, 0]).unwrap();
    let took = closed_within(s, Duration::from_secs(8));
    assert!(took <= Duration::from_millis(5_500), "took {took:?}");
}

#[test]
fn a_tracer_that_never_reads_frees_its_slot_after_its_trace() {
    let addr = node_addr();
    // Every slot but one, held here.
    let held: Vec<Session> = (0..MAX_SESSIONS - 1)
        .map_while(|_| Session::start(SessionOptions::default()).ok())
        .collect();
    let mut s = login(addr);
    let spec = wire::calls("stalled_and_unread_peers_are_dropped:noisy", 60_000);
    write_frame(&mut s, &TracerMessage::Command(Command::Trace(spec))).unwrap();
    assert!(matches!(
        read_frame(&mut s, MAX_FRAME).unwrap(),
        NodeMessage::Reply(Reply::TraceStarted { .. })
    ));
    assert!(
        Session::start(SessionOptions::default()).is_err(),
        "every slot is taken"
    );
    // Far more than the socket buffers hold; the tracer pings, never reads.
    let text = "x".repeat(200);
    for i in 0..60_000 {
        noisy(&text, i);
    }
    let mut pinger = s.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let pings = std::thread::spawn(move || {
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if write_frame(&mut pinger, &TracerMessage::Ping).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let start = Instant::now();
    let freed = loop {
        if let Ok(session) = Session::start(SessionOptions::default()) {
            break session;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the unread tracer still holds its slot after its trace ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pings.join().unwrap();
    drop((freed, held, s));
}
