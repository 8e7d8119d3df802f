//! A bare tracer for benches: the handshake, a trace, and a reader that
//! decodes every frame. It uses the protocol only, as any tracer would.
//! Each bench uses part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};

use nodetrace_protocol::frame::{MAX_FRAME, read_frame, write_frame};
use nodetrace_protocol::handshake::{Side, challenge, prove};
use nodetrace_protocol::{
    Command, Counts, Limits, MAGIC, NodeMessage, PROTOCOL_VERSION, Processes, Reply, TraceSpec,
    TracerMessage,
};

/// The cookie of bench nodes.
pub const COOKIE: &str = "bench";

/// Connects to a node and completes the handshake.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let ours = challenge();
    let hello = TracerMessage::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        challenge: ours,
    };
    write_frame(&mut s, &hello).unwrap();
    let NodeMessage::Challenge {
        challenge: theirs, ..
    } = read_frame(&mut s, MAX_FRAME).unwrap()
    else {
        panic!("no challenge")
    };
    let answer = TracerMessage::Answer {
        proof: prove(COOKIE, Side::Tracer, &ours, &theirs),
    };
    write_frame(&mut s, &answer).unwrap();
    assert!(matches!(
        read_frame(&mut s, MAX_FRAME).unwrap(),
        NodeMessage::Welcome { .. }
    ));
    s
}

/// A call trace of `pattern` with arguments, within `limits`.
pub fn calls(pattern: &str, args: bool, limits: Limits) -> TraceSpec {
    TraceSpec {
        log: None,
        patterns: vec![pattern.parse().unwrap()],
        processes: Processes::All,
        calls: true,
        send: false,
        receive: false,
        sys: vec![],
        args,
        returns: false,
        text_bound: 0,
        arg_match: None,
        limits,
    }
}

/// A trace streaming to a thread that decodes every event and pings.
pub struct Streaming {
    stream: TcpStream,
    reader: JoinHandle<(u64, Counts)>,
}

impl Streaming {
    /// Starts `spec` on the node at `addr`.
    pub fn start(addr: SocketAddr, spec: TraceSpec) -> Streaming {
        let mut s = connect(addr);
        write_frame(&mut s, &TracerMessage::Command(Command::Trace(spec))).unwrap();
        let NodeMessage::Reply(Reply::TraceStarted { .. }) = read_frame(&mut s, MAX_FRAME).unwrap()
        else {
            panic!("the trace did not start")
        };
        let mut reading = s.try_clone().unwrap();
        let reader = thread::spawn(move || {
            let mut decoded = 0u64;
            loop {
                match read_frame::<NodeMessage>(&mut reading, MAX_FRAME).unwrap() {
                    NodeMessage::Events(batch) => decoded += batch.len() as u64,
                    NodeMessage::Ended(end) => return (decoded, end.counts),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        let mut pinging = s.try_clone().unwrap();
        thread::spawn(move || {
            while write_frame(&mut pinging, &TracerMessage::Ping).is_ok() {
                thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        Streaming { stream: s, reader }
    }

    /// Ends the trace; returns the events decoded and the node's counts.
    pub fn stop(mut self) -> (u64, Counts) {
        write_frame(&mut self.stream, &TracerMessage::Command(Command::Stop)).unwrap();
        let result = self.reader.join().unwrap();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        result
    }
}

/// Resident memory of this process in KiB, from /proc.
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}
