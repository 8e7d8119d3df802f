//! A bare tracer for benches: the handshake, a trace, and a reader that
//! decodes every frame. It uses the protocol only, as any tracer would.
//! Each bench uses part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use nodetrace_agent::Session;
use nodetrace_protocol::frame::{MAX_FRAME, read_frame, write_frame};
use nodetrace_protocol::handshake::{Side, challenge, prove};
use nodetrace_protocol::{
    Command, Counts, Limits, MAGIC, NodeMessage, PROTOCOL_VERSION, Processes, Reply, TraceSpec,
    TracerMessage,
};

/// Calls per timed burst of a switched-on bench: two records each, a
/// quarter of the default ring.
pub const BURST: u64 = nodetrace_agent::DEFAULT_RING_CAPACITY as u64 / 8;

/// Times `iters` runs of `call` in bursts of at most [`BURST`], running
/// `between` after each burst outside the timing (a session's flush, so
/// the collector drains the ring): the cost a traced thread pays per call,
/// not the collector's throughput.
pub fn timed_in_bursts(iters: u64, mut call: impl FnMut(), mut between: impl FnMut()) -> Duration {
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let burst = left.min(BURST);
        let start = Instant::now();
        for _ in 0..burst {
            call();
        }
        timed += start.elapsed();
        between();
        left -= burst;
    }
    timed
}

/// Benches `call`, switched on for `session`, as `name`: timed in bursts
/// with the session flushed between them (see [`timed_in_bursts`]).
pub fn bench_recorded(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    session: &Session,
    mut call: impl FnMut(),
) {
    group.bench_function(name, |bench| {
        bench.iter_custom(|iters| timed_in_bursts(iters, &mut call, || session.flush()))
    });
}

/// Operations per measured run of the in-process Todo load.
pub const TODO_REQUESTS: u64 = 20_000;

/// The Todo load the profile and sample benches measure.
pub const TODO_LOAD: todo::load::LoadConfig = todo::load::LoadConfig {
    requests: TODO_REQUESTS,
    lists: 10,
    clients: 8,
};

/// Runs [`TODO_LOAD`] `iters` times, each on a fresh system; returns the
/// load's own time (start and stop of the system left out).
pub fn todo_load_runs(runtime: &tokio::runtime::Runtime, iters: u64) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        let system = runtime.block_on(todo::start(None)).unwrap();
        let report = runtime
            .block_on(todo::load::run(&system, TODO_LOAD))
            .unwrap();
        assert_eq!(report.operations, TODO_REQUESTS);
        timed += report.elapsed;
        runtime.block_on(system.stop());
    }
    timed
}

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
        polls: false,
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
                    NodeMessage::Names(_) => {}
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

/// `n` events as a traced Todo server makes them: calls with arguments and
/// their returns with a value and `duration_ns`, each pair in one of 7
/// task processes, a microsecond apart.
pub fn call_return_events(n: u64, duration_ns: u64) -> Vec<nodetrace_protocol::Event> {
    use nodetrace_protocol::{Event, EventKind, Pid};
    (0..n)
        .map(|i| {
            let call = i % 2 == 0;
            Event {
                kind: if call {
                    EventKind::Call
                } else {
                    EventKind::Return
                },
                pid: Pid::task(40 + (i / 2) % 7),
                peer: None,
                callsite: Some(0),
                timestamp_ns: 1_795_000_000_000_000_000 + i * 1000,
                duration_ns: (!call).then_some(duration_ns),
                busy_ns: None,
                text: Some(if call {
                    "<0.9.0>, 2023-12-19".to_owned()
                } else {
                    "Ok([Entry { id: 1, date: 2023-12-19, title: \"Movies\" }])".to_owned()
                }),
                extra: None,
            }
        })
        .collect()
}
