//! What one call costs: untraced, `#[traced]` off, on, on with arguments,
//! against `#[tracing::instrument]` with no subscriber, with a registry and
//! one small layer, and with `tracing_subscriber::fmt` writing to a sink.
//! Every variant is measured in the same run, so the ratios hold.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::{Pattern, Session, SessionOptions, traced};
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

#[tracing::instrument]
#[inline(never)]
fn instrumented(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

/// Calls per timed burst: two records each, a quarter of the default ring.
const BURST: u64 = nodetrace_agent::DEFAULT_RING_CAPACITY as u64 / 8;

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

fn calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("call");
    let (a, b) = (black_box(6u64), black_box(7u64));
    group.bench_function("untraced", |bench| {
        bench.iter(|| untraced(black_box(a), black_box(b)))
    });
    group.bench_function("traced_off", |bench| {
        bench.iter(|| traced_fn(black_box(a), black_box(b)))
    });
    // Switched on, calls are timed in bursts that fit the ring, and the
    // collector drains between bursts, outside the timed part: this is the
    // cost a traced thread pays per call, not the collector's throughput
    // (measured end to end in its own bench).
    for (name, args) in [("traced_on", false), ("traced_on_args", true)] {
        let (session, drain) = streaming(args);
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let burst = left.min(BURST);
                    let start = Instant::now();
                    for _ in 0..burst {
                        black_box(traced_fn(black_box(a), black_box(b)));
                    }
                    timed += start.elapsed();
                    session.flush();
                    left -= burst;
                }
                timed
            })
        });
        session.flush();
        assert_eq!(session.lost(), 0, "{name}: the bursts must fit the ring");
        drop(session);
        drain.join().unwrap();
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
