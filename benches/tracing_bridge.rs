//! What the `tracing` bridge costs a service that already uses `tracing`:
//! an `#[instrument]` function under the app's own `fmt` layer with an
//! `EnvFilter` at `info`, with the bridge installed and idle against the
//! same stack without it (for a span the app filters out and for one it
//! records); the bridge alone and idle against no subscriber; and a span
//! the bridge traces (call and return recorded) against a registry with one
//! counting layer. Each pair runs in the same process, one subscriber at a
//! time (`tracing` combines the interest of every live subscriber).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

mod common;

use common::bench_recorded;
use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::{Pattern, Session, SessionOptions, tracing_layer};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer};

#[tracing::instrument(level = "debug")]
#[inline(never)]
fn filtered_out(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

#[tracing::instrument]
#[inline(never)]
fn recorded(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

/// The app's own layer: `fmt` into a sink, filtered at `info`.
fn app<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(EnvFilter::new("info"))
}

/// A layer that counts spans made and closed: the cheapest real work.
#[derive(Default)]
struct Count(AtomicU64);

impl<S: tracing::Subscriber> Layer<S> for Count {
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn on_close(&self, _: tracing::span::Id, _: Context<'_, S>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn bridge(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracing_bridge");
    let (a, b) = (black_box(6u64), black_box(7u64));
    for (name, f) in [
        ("app_filters_out", filtered_out as fn(u64, u64) -> u64),
        ("app_records", recorded),
    ] {
        tracing::subscriber::with_default(tracing_subscriber::registry().with(app()), || {
            group.bench_function(format!("{name}/without_bridge"), |bench| {
                bench.iter(|| f(black_box(a), black_box(b)))
            });
        });
        let with = tracing_subscriber::registry()
            .with(app())
            .with(tracing_layer());
        tracing::subscriber::with_default(with, || {
            group.bench_function(format!("{name}/with_bridge_idle"), |bench| {
                bench.iter(|| f(black_box(a), black_box(b)))
            });
        });
    }
    group.bench_function("no_subscriber", |bench| {
        bench.iter(|| recorded(black_box(a), black_box(b)))
    });
    tracing::subscriber::with_default(tracing_subscriber::registry().with(tracing_layer()), || {
        group.bench_function("bridge_alone_idle", |bench| {
            bench.iter(|| recorded(black_box(a), black_box(b)))
        });
    });
    tracing::subscriber::with_default(
        tracing_subscriber::registry().with(Count::default()),
        || {
            group.bench_function("span/registry_count_layer", |bench| {
                bench.iter(|| recorded(black_box(a), black_box(b)))
            });
        },
    );
    tracing::subscriber::with_default(tracing_subscriber::registry().with(tracing_layer()), || {
        let session = Session::start(SessionOptions {
            args: false,
            ..SessionOptions::default()
        })
        .unwrap();
        let pattern: Pattern = "tracing_bridge:recorded".parse().unwrap();
        session.trace_pattern(&pattern);
        let batches = session.batches();
        let drain = thread::spawn(move || while batches.recv().is_some() {});
        // Calls are timed in bursts that fit the ring; the collector drains
        // between bursts, outside the timed part.
        bench_recorded(&mut group, "span/traced_by_bridge", &session, || {
            black_box(recorded(black_box(a), black_box(b)));
        });
        session.flush();
        assert!(session.delivered() > 0, "the traced span was recorded");
        assert_eq!(session.lost(), 0, "the bursts must fit the ring");
        drop(session);
        drain.join().unwrap();
    });
    group.finish();
}

criterion_group!(benches, bridge);
criterion_main!(benches);
