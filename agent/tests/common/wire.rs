//! A tracer at the frame level, for tests that speak the protocol to a
//! node themselves: the handshake and a call trace.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nodetrace_protocol::frame::{MAX_FRAME, read_frame, write_frame};
use nodetrace_protocol::handshake::{Side, challenge, prove, verify};
use nodetrace_protocol::{
    Limits, MAGIC, NodeInfo, NodeMessage, PROTOCOL_VERSION, Processes, TraceSpec, TracerMessage,
};

/// Connects to the node at `addr` and runs the tracer's half of the
/// handshake on `cookie`: the stream and the node, once welcomed (its own
/// proof checked), or what the node answered instead.
pub fn login(addr: SocketAddr, cookie: &str) -> Result<(TcpStream, NodeInfo), NodeMessage> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
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
    let proof = prove(cookie, Side::Tracer, &ours, &theirs);
    write_frame(&mut s, &TracerMessage::Answer { proof }).unwrap();
    match read_frame(&mut s, MAX_FRAME).unwrap() {
        NodeMessage::Welcome { proof, node } => {
            assert!(
                verify(cookie, Side::Node, &ours, &theirs, &proof),
                "the node proves the cookie too"
            );
            Ok((s, node))
        }
        other => Err(other),
    }
}

/// A trace of the calls `pattern` selects, with arguments, in every
/// process, stopping after `max` events.
pub fn calls(pattern: &str, max: u64) -> TraceSpec {
    TraceSpec {
        log: None,
        patterns: vec![pattern.parse().unwrap()],
        processes: Processes::All,
        calls: true,
        send: false,
        receive: false,
        sys: vec![],
        args: true,
        returns: false,
        polls: false,
        text_bound: 0,
        arg_match: None,
        limits: Limits {
            max_events: Some(max),
            rate: None,
            duration_ms: None,
        },
    }
}
