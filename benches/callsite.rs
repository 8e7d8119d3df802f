//! What one call costs: untraced, `#[traced]` off, on, on with arguments,
//! against `#[tracing::instrument]` with no subscriber, with a registry and
//! one small layer, and with `tracing_subscriber::fmt` writing to a sink.
//! Every variant is measured in the same run, so the ratios hold.

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{BURST, bench_recorded, timed_in_bursts};
use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::{Pattern, Profile, ProfileOptions, Session, SessionOptions, traced};
use nodetrace_protocol::ProfileMode;
use tracing_subscriber::layer::SubscriberExt;

#[inline(never)]
fn untraced(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

#[traced]
#[inline(never)]
fn traced_fn(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

/// The same function with a statement macro in its body, plain and traced:
/// off, the traced one must cost what the plain one does.
#[inline(never)]
fn untraced_macro(a: u64, b: u64) -> u64 {
    tracing::debug!(a, "multiplying");
    a.wrapping_mul(b) ^ 7
}

#[traced]
#[inline(never)]
fn traced_macro(a: u64, b: u64) -> u64 {
    tracing::debug!(a, "multiplying");
    a.wrapping_mul(b) ^ 7
}

/// The same as an `async fn` that completes in its first poll: its
/// profile's frame is the call's, pushed once.
#[traced]
async fn traced_async(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

/// Polls `traced_async` to completion: one poll.
#[inline(never)]
fn poll_async(a: u64, b: u64) -> u64 {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(traced_async(a, b)).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("it awaits nothing"),
    }
}

/// The same, but it waits once: two polls, the first `Pending`.
#[traced]
async fn traced_waits(a: u64, b: u64) -> u64 {
    let mut waited = false;
    std::future::poll_fn(|_| {
        if std::mem::replace(&mut waited, true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    a.wrapping_mul(b) ^ 7
}

/// Polls `traced_waits` to completion: two polls.
#[inline(never)]
fn poll_waits(a: u64, b: u64) -> u64 {
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = pin!(traced_waits(a, b));
    loop {
        if let Poll::Ready(v) = call.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A recursive function with a few locals, to measure the stack a frame
/// takes: untraced, and traced when on.
#[inline(never)]
fn depth_untraced(n: u32, acc: &mut [u64; 8]) -> usize {
    let here = std::hint::black_box([n as u64; 6]);
    acc[n as usize % 8] += here[0];
    if n == 0 {
        return &here as *const _ as usize;
    }
    black_box(depth_untraced(n - 1, acc))
}

#[traced]
#[inline(never)]
fn depth_traced(n: u32, acc: &mut [u64; 8]) -> usize {
    let here = std::hint::black_box([n as u64; 6]);
    acc[n as usize % 8] += here[0];
    if n == 0 {
        return &here as *const _ as usize;
    }
    black_box(depth_traced(n - 1, acc))
}

/// Bytes of stack per level of `f`'s recursion.
fn frame_bytes(f: fn(u32, &mut [u64; 8]) -> usize) -> usize {
    let mut acc = [0; 8];
    (f(0, &mut acc) - f(100, &mut acc)) / 100
}

#[tracing::instrument]
#[inline(never)]
fn instrumented(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

/// A layer that counts what it sees: the cheapest real work a layer does.
struct Count(std::sync::atomic::AtomicU64);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
    fn on_enter(&self, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A session on `traced_fn` whose events a thread drains and discards.
fn streaming(args: bool) -> (Session, thread::JoinHandle<()>) {
    let session = Session::start(SessionOptions {
        args,
        ..SessionOptions::default()
    })
    .unwrap();
    let pattern: Pattern = "callsite:traced_fn".parse().unwrap();
    assert_eq!(session.trace_pattern(&pattern), 1);
    let batches = session.batches();
    let drain = thread::spawn(move || while batches.recv().is_some() {});
    (session, drain)
}

/// A 64-byte record, as in a thread's ring.
#[repr(align(64))]
struct Line(#[allow(dead_code)] [u64; 8]);

/// The floor of call `i` switched on: two clock reads and two pushes.
#[inline(always)]
fn floor_call(tx: &mut rtrb::Producer<Line>, clock: &quanta::Clock, i: u64) {
    let t0 = clock.raw();
    let _ = tx.push(Line([i, t0, 0, 0, 0, 0, 0, 0]));
    let t1 = clock.raw();
    let _ = tx.push(Line([i, t1, t1 - t0, 0, 0, 0, 0, 0]));
}

fn calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("call");
    let (a, b) = (black_box(6u64), black_box(7u64));
    group.bench_function("untraced", |bench| {
        bench.iter(|| untraced(black_box(a), black_box(b)))
    });
    group.bench_function("traced_off", |bench| {
        bench.iter(|| traced_fn(black_box(a), black_box(b)))
    });
    group.bench_function("untraced_macro", |bench| {
        bench.iter(|| untraced_macro(black_box(a), black_box(b)))
    });
    group.bench_function("traced_off_macro", |bench| {
        bench.iter(|| traced_macro(black_box(a), black_box(b)))
    });
    // The floor of a switched-on call: two clock reads and two pushes of
    // one 64-byte record into a ring that another thread drains.
    {
        let (mut tx, mut rx) =
            rtrb::RingBuffer::<Line>::new(nodetrace_agent::DEFAULT_RING_CAPACITY);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drainer = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    while rx.pop().is_ok() {}
                    std::hint::spin_loop();
                }
            })
        };
        let clock = quanta::Clock::new();
        group.bench_function("floor_two_clocks_two_pushes", |bench| {
            bench.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let burst = left.min(BURST);
                    let start = Instant::now();
                    for i in 0..burst {
                        floor_call(&mut tx, &clock, i);
                    }
                    timed += start.elapsed();
                    while tx.slots() < tx.buffer().capacity() {
                        std::hint::spin_loop();
                    }
                    left -= burst;
                }
                timed
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drainer.join().unwrap();
    }
    // The same floor drained as a switched-on call's ring is here: by
    // another thread between bursts, outside the timed part, so no push
    // meets the reader on the ring's cache lines.
    {
        let (mut tx, mut rx) =
            rtrb::RingBuffer::<Line>::new(nodetrace_agent::DEFAULT_RING_CAPACITY);
        let (drain_tx, drain_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let drainer = thread::spawn(move || {
            while drain_rx.recv().is_ok() {
                while rx.pop().is_ok() {}
                let _ = done_tx.send(());
            }
        });
        let clock = quanta::Clock::new();
        group.bench_function("floor_drained_between_bursts", |bench| {
            bench.iter_custom(|iters| {
                let mut i = 0u64;
                timed_in_bursts(
                    iters,
                    || {
                        i += 1;
                        floor_call(&mut tx, &clock, i);
                    },
                    || {
                        drain_tx.send(()).unwrap();
                        done_rx.recv().unwrap();
                    },
                )
            })
        });
        drop(drain_tx);
        drainer.join().unwrap();
    }
    // Switched on, calls are timed in bursts that fit the ring, and the
    // collector drains between bursts, outside the timed part: this is the
    // cost a traced thread pays per call, not the collector's throughput
    // (measured end to end in its own bench).
    for (name, args) in [("traced_on", false), ("traced_on_args", true)] {
        let (session, drain) = streaming(args);
        bench_recorded(&mut group, name, &session, || {
            black_box(traced_fn(black_box(a), black_box(b)));
        });
        if name == "traced_on" {
            // An async call of two polls, traced: its polls read the
            // clock for its busy time, and nothing visits a profile.
            let pattern: Pattern = "callsite:traced_waits".parse().unwrap();
            session.trace_pattern(&pattern);
            bench_recorded(&mut group, "traced_on_async_two_polls", &session, || {
                black_box(poll_waits(black_box(a), black_box(b)));
            });
            let pattern: Pattern = "callsite:depth_traced".parse().unwrap();
            session.trace_pattern(&pattern);
            let (plain, on) = (frame_bytes(depth_untraced), frame_bytes(depth_traced));
            eprintln!(
                "stack per frame: untraced {plain} B, traced and on {on} B ({:.2}x)",
                on as f64 / plain as f64
            );
        }
        session.flush();
        assert_eq!(session.lost(), 0, "{name}: the bursts must fit the ring");
        drop(session);
        drain.join().unwrap();
    }
    // Profiled: the per-call cost of cprof (a count), eprof and fprof (two
    // clock reads, the shadow stack, the thread's tables), nothing streamed.
    for mode in [ProfileMode::Cprof, ProfileMode::Eprof, ProfileMode::Fprof] {
        let options = ProfileOptions {
            mode,
            histogram: false,
            per_process: false,
        };
        let patterns = [
            "callsite:traced_fn",
            "callsite:traced_async",
            "callsite:traced_waits",
        ]
        .map(|p| p.parse().unwrap());
        let profile = Profile::start(options, &patterns).unwrap();
        group.bench_function(format!("traced_{}", mode.name()), |bench| {
            bench.iter(|| traced_fn(black_box(a), black_box(b)))
        });
        if mode != ProfileMode::Cprof {
            group.bench_function(format!("traced_{}_async", mode.name()), |bench| {
                bench.iter(|| poll_async(black_box(a), black_box(b)))
            });
            group.bench_function(format!("traced_{}_async_two_polls", mode.name()), |bench| {
                bench.iter(|| poll_waits(black_box(a), black_box(b)))
            });
        }
        let calls: u64 = profile.stop().functions.iter().map(|f| f.calls).sum();
        eprintln!("{}: {calls} calls profiled", mode.name());
    }
    group.bench_function("tracing_no_subscriber", |bench| {
        bench.iter(|| instrumented(black_box(a), black_box(b)))
    });
    let registry = tracing_subscriber::registry().with(Count(Default::default()));
    tracing::subscriber::with_default(registry, || {
        group.bench_function("tracing_registry_layer", |bench| {
            bench.iter(|| instrumented(black_box(a), black_box(b)))
        });
    });
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(fmt, || {
        group.bench_function("tracing_fmt_sink", |bench| {
            bench.iter(|| {
                let _ = instrumented(black_box(a), black_box(b));
                tracing::info!("done");
            })
        });
    });
    group.bench_function("clock_read", |bench| {
        let clock = quanta::Clock::new();
        bench.iter(|| black_box(clock.raw()))
    });
    group.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
