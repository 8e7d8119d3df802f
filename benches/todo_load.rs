//! The `todo load` workload (half `add_entry`, half `entries`, in memory),
//! untraced and with every `Todo.Server` function recording, in one run.
//! A session's events are drained and discarded inside the node, so this
//! measures what tracing costs the traced node, not a tracer's rendering.
//! Then the same trace streamed over loopback to a tracer that decodes every
//! event, with and without a rate limit, and the workload again after
//! stop-clear: every callsite back at zero cost.

mod common;

use std::thread;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::node::{self, NodeConfig};
use nodetrace_agent::{Pattern, Session, SessionOptions, clear_all};
use nodetrace_protocol::{Limits, Rate};
use todo::load::{self, LoadConfig};

/// Operations per measured run.
const REQUESTS: u64 = 20_000;

fn workload(c: &mut Criterion) {
    let home = tempfile::tempdir().unwrap();
    let addr = node::start(NodeConfig {
        cookie: Some(common::COOKIE.into()),
        home: Some(home.path().into()),
        ..NodeConfig::new("bench_todo@localhost")
    })
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = LoadConfig {
        requests: REQUESTS,
        lists: 10,
        clients: 8,
    };
    // Each run gets a fresh system, so that every run (and every variant)
    // works on lists of the same size; only the load itself is timed.
    let run = |iters: u64| {
        let mut timed = Duration::ZERO;
        for _ in 0..iters {
            let system = runtime.block_on(todo::start(None)).unwrap();
            let report = runtime.block_on(load::run(&system, config)).unwrap();
            assert_eq!(report.operations, REQUESTS);
            timed += report.elapsed;
            runtime.block_on(system.stop());
        }
        timed
    };
    let mut group = c.benchmark_group("todo_load");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.throughput(criterion::Throughput::Elements(REQUESTS));
    group.bench_function("untraced", |b| b.iter_custom(run));
    for (name, pattern, args) in [
        ("todo_server_calls_no_args", "Todo.Server", false),
        ("todo_server_calls", "Todo.Server", true),
        ("todo_server_calls_return", "Todo.Server -> return", true),
    ] {
        let session = Session::start(SessionOptions {
            args,
            ..SessionOptions::default()
        })
        .unwrap();
        let matched = session.trace_pattern(&pattern.parse::<Pattern>().unwrap());
        assert!(matched > 0, "{pattern} matches no function");
        let batches = session.batches();
        let drain = thread::spawn(move || {
            let mut events = 0usize;
            while let Some(batch) = batches.recv() {
                events += batch.len();
            }
            events
        });
        group.bench_function(name, |b| b.iter_custom(run));
        session.flush();
        let (delivered, lost) = (session.delivered(), session.lost());
        drop(session);
        assert!(drain.join().unwrap() as u64 == delivered && delivered > 0);
        eprintln!("{name}: {matched} functions, {delivered} events delivered, {lost} lost");
    }
    let hour = Some(3_600_000);
    for (name, rate) in [
        ("streamed_to_tracer", None),
        (
            "streamed_rate_1000_per_s",
            Some(Rate {
                events: 1000,
                per_ms: 1000,
            }),
        ),
    ] {
        let limits = Limits {
            max_events: None,
            rate,
            duration_ms: hour,
        };
        let streaming = common::Streaming::start(addr, common::calls("Todo.Server", true, limits));
        group.bench_function(name, |b| b.iter_custom(run));
        let (decoded, counts) = streaming.stop();
        eprintln!(
            "{name}: {decoded} events decoded by the tracer; {} dropped by the rate, {} lost",
            counts.rate_dropped, counts.lost
        );
    }
    clear_all();
    group.bench_function("after_stop_clear", |b| b.iter_custom(run));
    group.finish();
}

criterion_group!(benches, workload);
criterion_main!(benches);
