//! Sampling the `todo load` workload in process: unsampled, sampled at
//! 99 Hz and at 999 Hz, in one run; then interleaved round by round (the
//! ratios to quote), with the time the final, symbolised report takes;
//! and at 99 Hz split by process (the gen_servers' polls marked).

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodetrace_agent::{SampleProfile, Split, tc};

use common::{TODO_REQUESTS as REQUESTS, todo_load_runs as runs};

const FREQUENCIES: [u32; 2] = [99, 999];

fn sampled(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("sample_todo_load");
    group.throughput(Throughput::Elements(REQUESTS));
    group.bench_function("unsampled", |b| b.iter_custom(|n| runs(&runtime, n)));
    for hz in FREQUENCIES {
        let profile = SampleProfile::start(hz, Split::Threads).unwrap();
        group.bench_function(format!("{hz}hz"), |b| b.iter_custom(|n| runs(&runtime, n)));
        let (took, snapshot) = tc(|| profile.stop());
        eprintln!(
            "{hz} Hz: {} samples in {} stacks; the final report took {took:?}",
            snapshot.samples.iter().map(|s| s.samples).sum::<u64>(),
            snapshot.samples.len()
        );
    }
    group.bench_function("unsampled_again", |b| b.iter_custom(|n| runs(&runtime, n)));
    group.finish();
}

/// Each frequency against the unsampled workload, interleaved: every
/// round runs the load unsampled, then sampled (the sampler started and
/// stopped around the run, its report symbolised outside the timing).
fn interleaved(_: &mut Criterion) {
    let rounds: u32 = std::env::var("NODETRACE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let variants = FREQUENCIES
        .map(|hz| (hz, Split::Threads))
        .into_iter()
        .chain([(99, Split::Processes)]);
    for (hz, split) in variants {
        let (mut unsampled, mut sampled) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            unsampled += runs(&runtime, 1);
            let profile = SampleProfile::start(hz, split).unwrap();
            sampled += runs(&runtime, 1);
            profile.stop();
        }
        eprintln!(
            "{hz} Hz split by {split:?} interleaved over {rounds} rounds: unsampled {:?} a run, sampled {:?} a run: {:.3}x",
            unsampled / rounds,
            sampled / rounds,
            sampled.as_secs_f64() / unsampled.as_secs_f64()
        );
    }
}

criterion_group!(benches, sampled, interleaved);
criterion_main!(benches);
