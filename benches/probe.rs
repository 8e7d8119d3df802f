//! What a probed call costs, in one run: a function unprobed, the same
//! function with an entry uprobe on it (the kernel's breakpoint trap and
//! the sample it writes into a perf ring), and a `#[traced]` function
//! switched on. The probe is on this very process, as `nodetrace trace
//! calls --pid` would put it. Needs root (CAP_SYS_ADMIN), as probing does.

mod common;

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nodetrace_agent::{Pattern, Session, SessionOptions, traced};
use nodetrace_probe::{ProbeSpec, Target};

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
    group.bench_function("#[traced], on", |bench| {
        bench.iter_custom(|iters| {
            common::timed_in_bursts(
                iters,
                || {
                    black_box(traced_call(black_box(a), black_box(b)));
                },
                || session.flush(),
            )
        })
    });
    group.finish();
    drop(session);
    drain.join().unwrap();
}

criterion_group!(benches, calls);
criterion_main!(benches);
