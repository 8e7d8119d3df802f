//! The `todo load` workload (half `add_entry`, half `entries`, in memory),
//! untraced and with every `Todo.Server` function recording, in one run.
//! A session's events are drained and discarded inside the node, so this
//! measures what tracing costs the traced node, not a tracer's rendering.

use std::thread;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::{Pattern, Session, SessionOptions};
use todo::load::{self, LoadConfig};

/// Operations per measured run.
const REQUESTS: u64 = 20_000;

fn workload(c: &mut Criterion) {
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
    group.finish();
}

criterion_group!(benches, workload);
criterion_main!(benches);
