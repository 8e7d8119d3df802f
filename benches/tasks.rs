//! Tasks and traced channels against tokio's own, in the same run: a
//! message's send and receive, a spawn, a poll (not observed and observed,
//! against two raw clock reads), and what a `top` refresh of a node with
//! 10,000 live tasks costs it and sends.

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nodetrace_agent::node::{self, NodeConfig};
use nodetrace_agent::sync::mpsc;
use nodetrace_agent::task;
use nodetrace_protocol::frame::{MAX_FRAME, read_frame, write_frame};
use nodetrace_protocol::{Command, NodeMessage, Reply, TopSort, TopSpec, TracerMessage};

/// Messages through one channel per timed run: sent, then received, on one
/// thread (no waiting: the cost of the two calls).
fn channels(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel send+recv");
    for variant in [
        "tokio unbounded",
        "traced unbounded",
        "tokio bounded",
        "traced bounded",
    ] {
        g.bench_function(BenchmarkId::from_parameter(variant), |b| match variant {
            "tokio unbounded" => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                b.iter(|| {
                    tx.send(black_box(7)).unwrap();
                    black_box(rx.try_recv().unwrap())
                })
            }
            "traced unbounded" => {
                let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
                b.iter(|| {
                    tx.send(black_box(7)).unwrap();
                    black_box(rx.try_recv().unwrap())
                })
            }
            "tokio bounded" => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1024);
                b.iter(|| {
                    tx.try_send(black_box(7)).unwrap();
                    black_box(rx.try_recv().unwrap())
                })
            }
            _ => {
                let (tx, mut rx) = mpsc::channel::<u64>(1024);
                b.iter(|| {
                    tx.try_send(black_box(7)).unwrap();
                    black_box(rx.try_recv().unwrap())
                })
            }
        });
    }
    g.finish();
}

/// Tasks per timed batch of spawns.
const SPAWNS: usize = 1000;

/// Spawning `SPAWNS` empty tasks and awaiting them, on a current-thread
/// runtime: tokio's spawn, and `task::spawn` (one allocation more, a
/// registry entry in and out).
fn spawns(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("spawn and join");
    g.throughput(criterion::Throughput::Elements(SPAWNS as u64));
    for variant in ["tokio::spawn", "task::spawn"] {
        g.bench_function(BenchmarkId::from_parameter(variant), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let handles: Vec<_> = (0..SPAWNS)
                        .map(|i| match variant {
                            "tokio::spawn" => tokio::spawn(async move { black_box(i) }),
                            _ => task::spawn("bench", async move { black_box(i) }),
                        })
                        .collect();
                    for h in handles {
                        black_box(h.await.unwrap());
                    }
                })
            })
        });
    }
    g.finish();
}

/// Polls per timed task: it yields this often.
const POLLS: u64 = 10_000;

/// One task polled `POLLS` times (it yields, so each poll is a wake and a
/// trip through the scheduler): tokio's, ours unobserved, ours observed;
/// and two raw clock reads, the price of timing a poll.
fn polls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("poll");
    g.throughput(criterion::Throughput::Elements(POLLS));
    let yields = || async {
        for _ in 0..POLLS {
            tokio::task::yield_now().await;
        }
    };
    for variant in [
        "tokio::spawn",
        "task::spawn, not observed",
        "task::spawn, observed",
    ] {
        g.bench_function(BenchmarkId::from_parameter(variant), |b| {
            task::set_observing(variant.ends_with(", observed"));
            b.iter(|| {
                rt.block_on(async {
                    match variant {
                        "tokio::spawn" => tokio::spawn(yields()).await.unwrap(),
                        _ => task::spawn("bench", yields()).await.unwrap(),
                    }
                })
            });
            task::set_observing(false);
        });
    }
    let clock = quanta::Clock::new();
    g.bench_function(BenchmarkId::from_parameter("two clock reads"), |b| {
        b.iter(|| {
            for _ in 0..POLLS {
                let start = black_box(clock.raw());
                black_box(clock.raw().wrapping_sub(start));
            }
        })
    });
    g.finish();
}

/// Live tasks while `top` refreshes.
const LIVE_TASKS: usize = 10_000;

/// `top` against a node with `LIVE_TASKS` live tasks, over loopback: the
/// time of a refresh as the tracer sees it (the node's work, the frame
/// both ways), and the bytes it sends.
fn top_refresh(c: &mut Criterion) {
    let home = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        node::start(NodeConfig {
            cookie: Some(common::COOKIE.into()),
            home: Some(home.path().into()),
            ..NodeConfig::new("tasks@localhost")
        })
        .unwrap()
    });
    let (stop, wait) = tokio::sync::watch::channel(false);
    let handles: Vec<_> = rt.block_on(async {
        (0..LIVE_TASKS)
            .map(|i| {
                let mut wait = wait.clone();
                task::spawn(
                    format!("conn:10.0.0.{}:{}", i % 250, 40000 + i),
                    async move {
                        let _ = wait.changed().await;
                    },
                )
            })
            .collect()
    });
    let mut s = common::connect(addr);
    let spec = TopSpec {
        sort: TopSort::Busy,
        limit: 20,
    };
    let refresh = |s: &mut std::net::TcpStream| {
        write_frame(&mut *s, &TracerMessage::Command(Command::Top(spec))).unwrap();
        match read_frame::<NodeMessage>(&mut *s, MAX_FRAME).unwrap() {
            NodeMessage::Reply(Reply::Top(frame)) => frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    let frame = refresh(&mut s);
    assert!(
        frame.processes as usize >= LIVE_TASKS,
        "{}",
        frame.processes
    );
    let bytes = postcard::to_stdvec(&NodeMessage::Reply(Reply::Top(frame)))
        .unwrap()
        .len();
    eprintln!("top: a refresh of {LIVE_TASKS} live tasks sends {bytes} bytes");
    let mut g = c.benchmark_group("top refresh");
    g.sample_size(20);
    g.bench_function(
        BenchmarkId::from_parameter(format!("{LIVE_TASKS} tasks")),
        |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(refresh(&mut s));
                }
                start.elapsed()
            })
        },
    );
    g.finish();
    stop.send(true).unwrap();
    rt.block_on(async {
        for h in handles {
            h.await.unwrap();
        }
    });
}

criterion_group!(benches, channels, spawns, polls, top_refresh);
criterion_main!(benches);
