//! End-to-end delivery: a node streams one trace over loopback to a tracer
//! that reads and decodes every frame. The anchor is the same calls with no
//! trace, in the same run.

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodetrace_agent::node::{self, NodeConfig};
use nodetrace_agent::traced;
use nodetrace_protocol::frame::{MAX_FRAME, read_frame, write_frame};
use nodetrace_protocol::{Command, Limits, NodeMessage, Reply, TracerMessage};

/// Events per measured trace.
const EVENTS: u64 = 200_000;

#[traced]
#[inline(never)]
fn hot(a: u64) -> u64 {
    a.wrapping_mul(31) ^ 7
}

/// Runs one trace of `EVENTS` calls and returns (events delivered, events
/// lost, time from the trace's start to its end as the tracer saw it).
fn one_trace(addr: SocketAddr) -> (u64, u64, Duration) {
    let mut s = common::connect(addr);
    let limits = Limits {
        max_events: Some(EVENTS),
        rate: None,
        duration_ms: Some(60_000),
    };
    let spec = common::calls("delivery:hot", false, limits);
    write_frame(&mut s, &TracerMessage::Command(Command::Trace(spec))).unwrap();
    let NodeMessage::Reply(Reply::TraceStarted { .. }) = read_frame(&mut s, MAX_FRAME).unwrap()
    else {
        panic!("the trace did not start")
    };
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let done = done.clone();
        thread::spawn(move || {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    black_box(hot(black_box(i)));
                    i += 1;
                }
            }
        })
    };
    let start = Instant::now();
    let mut decoded = 0u64;
    let end = loop {
        match read_frame::<NodeMessage>(&mut s, MAX_FRAME).unwrap() {
            NodeMessage::Events(batch) => decoded += batch.len() as u64,
            NodeMessage::Ended(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    assert_eq!(decoded, end.counts.delivered);
    (decoded, end.counts.lost, elapsed)
}

fn delivery(c: &mut Criterion) {
    let home = tempfile::tempdir().unwrap();
    let addr = node::start(NodeConfig {
        cookie: Some(common::COOKIE.into()),
        home: Some(home.path().into()),
        ..NodeConfig::new("bench@localhost")
    })
    .unwrap();
    let mut group = c.benchmark_group("delivery");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("untraced_calls", |b| {
        b.iter(|| {
            for i in 0..EVENTS {
                black_box(hot(black_box(i)));
            }
        })
    });
    let (mut delivered, mut lost) = (0, 0);
    group.bench_function("streamed_to_tracer", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (d, l, t) = one_trace(addr);
                delivered += d;
                lost += l;
                total += t;
            }
            total
        })
    });
    group.finish();
    eprintln!("streamed: {delivered} events delivered and decoded, {lost} lost to full buffers");
}

/// A tracer that reads one frame every 20 ms while the node floods it for
/// 6 s: the node's memory stays bounded (rings of a fixed size, a bounded
/// queue); the excess is counted as lost. Set NODETRACE_BENCH_QUICK=1 to
/// skip it.
fn slow_tracer_memory(_: &mut Criterion) {
    if std::env::var_os("NODETRACE_BENCH_QUICK").is_some() {
        return;
    }
    let addr = nodetrace_agent::node::control_addr().expect("the node runs");
    let mut s = common::connect(addr);
    let limits = Limits {
        max_events: None,
        rate: None,
        duration_ms: Some(6_000),
    };
    let spec = common::calls("delivery:hot", true, limits);
    write_frame(&mut s, &TracerMessage::Command(Command::Trace(spec))).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let done = done.clone();
        thread::spawn(move || {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                black_box(hot(black_box(i)));
                i += 1;
            }
        })
    };
    let mut pinging = s.try_clone().unwrap();
    thread::spawn(move || {
        while write_frame(&mut pinging, &TracerMessage::Ping).is_ok() {
            thread::sleep(Duration::from_millis(200));
        }
    });
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = Duration::from_secs(1);
    let end = loop {
        match read_frame::<NodeMessage>(&mut s, MAX_FRAME).unwrap() {
            NodeMessage::Ended(end) => break end,
            _ => thread::sleep(Duration::from_millis(20)),
        }
        if start.elapsed() >= next {
            samples.push(common::rss_kib());
            next += Duration::from_secs(1);
        }
    };
    done.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    eprintln!(
        "slow tracer for 6 s: node RSS each second {samples:?} KiB; {} delivered, {} lost to full buffers",
        end.counts.delivered, end.counts.lost
    );
}

criterion_group!(benches, delivery, slow_tracer_memory);
criterion_main!(benches);
