//! What a probed call costs, in one run: a function unprobed, the same
//! function with an entry uprobe on it (the kernel's breakpoint trap and
//! the sample it writes into a perf ring), and a `#[traced]` function
//! switched on. The probe is on this very process, as `nodetrace trace
//! calls --pid` would put it. Needs root (CAP_SYS_ADMIN), as probing does.
//!
//! Then a workload whose one hot function is probed, against the same
//! workload unprobed: with a counting probe (the trap alone: what `profile
//! cprof --pid` pays), and with a sampling probe read by the tracer's own
//! local trace at `--rate 1000/1s` (what `trace calls --pid --rate 1000/1s`
//! pays): the trap is paid on every call, whatever the rate lets through.

mod common;

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::{Pattern, Session, SessionOptions, traced};
use nodetrace_probe::{ProbeSpec, Target, Trace};
use nodetrace_protocol::{Event, Limits, Rate};
use nodetrace_tracer::local::{EventSource, LocalRun, run_local};
use nodetrace_tracer::render::NodeView;
use nodetrace_tracer::{Format, StopSignal};

#[inline(never)]
fn unprobed_call(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 7
}

#[inline(never)]
fn probed_call(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 11
}

#[traced]
#[inline(never)]
fn traced_call(a: u64, b: u64) -> u64 {
    a.wrapping_mul(b) ^ 13
}

fn calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("probed call");
    let (a, b) = (black_box(6u64), black_box(7u64));
    group.bench_function("unprobed", |bench| {
        bench.iter(|| unprobed_call(black_box(a), black_box(b)))
    });

    let target = Target::open(std::process::id()).expect("this process's binary");
    let pattern: Pattern = "probe:probed_call".parse().unwrap();
    let function = target
        .functions()
        .iter()
        .find(|f| f.matches(&pattern))
        .expect("probed_call in the symbol table");
    let mut trace = target
        .attach(&[ProbeSpec {
            function,
            args: 2,
            returns: false,
        }])
        .expect("an entry uprobe (run the bench as root)");
    let mut hits = Vec::new();
    let mut read = 0usize;
    group.bench_function("entry uprobe", |bench| {
        bench.iter_custom(|iters| {
            common::timed_in_bursts(
                iters,
                || {
                    black_box(probed_call(black_box(a), black_box(b)));
                },
                || {
                    while trace.poll(Duration::ZERO, &mut hits).unwrap_or(false) && !hits.is_empty()
                    {
                        read += hits.len();
                        hits.clear();
                    }
                },
            )
        })
    });
    eprintln!(
        "probe: {read} hits read, {} lost to a full ring",
        trace.lost()
    );
    drop(trace);

    let session = Session::start(SessionOptions::default()).unwrap();
    let traced: Pattern = "probe:traced_call".parse().unwrap();
    assert_eq!(session.trace_pattern(&traced), 1);
    let batches = session.batches();
    let drain = thread::spawn(move || while batches.recv().is_some() {});
    common::bench_recorded(&mut group, "#[traced], on", &session, || {
        black_box(traced_call(black_box(a), black_box(b)));
    });
    group.finish();
    drop(session);
    drain.join().unwrap();
}

/// The workload's hot function: a few dozen nanoseconds of arithmetic.
#[inline(never)]
fn hot(x: u64) -> u64 {
    let mut h = x;
    for _ in 0..16 {
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7) ^ 0x55;
    }
    h
}

/// Calls of the hot function in one run of the workload.
const HOT_CALLS: u64 = 1_000;

/// One run of the workload: the hot function and as much work around it.
fn workload() -> u64 {
    let mut acc = 0u64;
    for i in 0..HOT_CALLS {
        acc = acc.wrapping_add(hot(black_box(i)));
        for _ in 0..16 {
            acc = black_box(acc.wrapping_mul(31).rotate_right(3));
        }
    }
    acc
}

/// The trace as the tracer's local source, as `trace calls --pid` runs it.
struct Probed(Trace);

impl EventSource for Probed {
    fn poll(&mut self, timeout: Duration, into: &mut Vec<Event>) -> std::io::Result<bool> {
        self.0.poll(timeout, into)
    }

    fn lost(&self) -> u64 {
        self.0.lost()
    }
}

fn hot_workload(c: &mut Criterion) {
    let mut group = c.benchmark_group("workload, hot function probed");
    group.sample_size(20);
    group.bench_function("unprobed", |bench| bench.iter(workload));

    let mut target = Target::open(std::process::id()).expect("this process's binary");
    let pattern: Pattern = "probe:hot".parse().unwrap();
    target.describe(|f| f.matches(&pattern));
    let function = target
        .functions()
        .iter()
        .find(|f| f.matches(&pattern))
        .expect("hot in the symbol table");

    let counter = target
        .count(&[function])
        .expect("a counting uprobe (run the bench as root)");
    group.bench_function("counting probe (trap only)", |bench| bench.iter(workload));
    drop(counter);

    let trace = target
        .attach(&[ProbeSpec {
            function,
            args: 1,
            returns: false,
        }])
        .expect("an entry uprobe (run the bench as root)");
    let view = NodeView::new("bench", [function.callsite(0, 1, "bench")]);
    let run = LocalRun {
        view,
        limits: Limits {
            max_events: None,
            rate: Some(Rate {
                events: 1_000,
                per_ms: 1_000,
            }),
            duration_ms: None,
        },
        default_limits: false,
        format: Format::Text,
        what: "calls of probe:hot".to_owned(),
    };
    let stop = StopSignal::new();
    let stopper = stop.clone();
    let consumer = thread::spawn(move || {
        let mut source = Probed(trace);
        run_local(
            &run,
            &mut source,
            &mut std::io::sink(),
            &mut std::io::sink(),
            &stopper,
        )
    });
    group.bench_function("sampling probe, --rate 1000/1s", |bench| {
        bench.iter(workload)
    });
    stop.stop();
    let report = consumer.join().unwrap().unwrap();
    let counts = report.end.counts;
    eprintln!(
        "workload: {} calls shown, {} dropped by the rate, {} lost to a full ring",
        counts.delivered, counts.rate_dropped, counts.lost
    );
    group.finish();
}

criterion_group!(benches, calls, hot_workload);
criterion_main!(benches);
