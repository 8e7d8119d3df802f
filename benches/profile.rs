//! Profiling the `todo load` workload in process: untraced, cprof, eprof and
//! fprof (every traceable function), each against the untraced run in the
//! same bench, and again interleaved with it round by round; the time a final fprof report takes; `tc` on an empty closure
//! against no timing at all; and the memory of a 60 s eprof session.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodetrace_agent::{Profile, ProfileOptions, tc};
use nodetrace_protocol::ProfileMode;

use common::{TODO_REQUESTS as REQUESTS, todo_load_runs as runs};

fn options(mode: ProfileMode) -> ProfileOptions {
    ProfileOptions {
        mode,
        histogram: false,
        per_process: false,
    }
}

fn profiles(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("profile_todo_load");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(REQUESTS));
    group.bench_function("untraced", |b| b.iter_custom(|n| runs(&runtime, n)));
    for mode in [ProfileMode::Cprof, ProfileMode::Eprof, ProfileMode::Fprof] {
        let profile = Profile::start(options(mode), &[]).unwrap();
        group.bench_function(mode.name(), |b| b.iter_custom(|n| runs(&runtime, n)));
        let (took, snapshot) = tc(|| profile.stop());
        eprintln!(
            "{}: {} functions profiled; the final report took {took:?}",
            mode.name(),
            snapshot.functions.len()
        );
    }
    // The anchor again, after the profiles: how far the machine drifted.
    group.bench_function("untraced_again", |b| b.iter_custom(|n| runs(&runtime, n)));
    group.finish();

    let mut group = c.benchmark_group("tc");
    group.bench_function("empty_closure_untimed", |b| {
        b.iter(|| black_box(black_box(|| 1u8)()))
    });
    group.bench_function("tc_empty_closure", |b| {
        b.iter(|| black_box(tc(black_box(|| 1u8))))
    });
    group.bench_function("std_instant_pair", |b| {
        b.iter(|| {
            let start = Instant::now();
            let v = black_box(black_box(|| 1u8)());
            black_box((start.elapsed(), v))
        })
    });
    group.finish();
}

/// Each profiler against the untraced workload, interleaved: every round
/// runs the load untraced and under the profile, one after the other, the
/// first of the pair alternating, so that whatever drifts over the
/// process's life weighs on both alike. Prints the ratio of the sums over
/// 40 rounds; the median of the 40 rounds' own ratios with its quartiles
/// (a round that a noisy neighbour slowed weighs as one of 40, not by its
/// length); and the calls profiled a run with what each cost over the
/// untraced run.
fn interleaved(_: &mut Criterion) {
    const ROUNDS: u32 = 40;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for mode in [ProfileMode::Cprof, ProfileMode::Eprof, ProfileMode::Fprof] {
        let (mut untraced, mut profiled, mut calls) = (Duration::ZERO, Duration::ZERO, 0u64);
        let mut ratios = Vec::new();
        for round in 0..ROUNDS {
            let plain_first = round % 2 == 0;
            let mut plain = if plain_first {
                runs(&runtime, 1)
            } else {
                Duration::ZERO
            };
            let profile = Profile::start(options(mode), &[]).unwrap();
            let took = runs(&runtime, 1);
            calls += profile
                .stop()
                .functions
                .iter()
                .map(|f| f.calls)
                .sum::<u64>();
            if !plain_first {
                plain = runs(&runtime, 1);
            }
            untraced += plain;
            profiled += took;
            ratios.push(took.as_secs_f64() / plain.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let quartile = |q: usize| ratios[(ratios.len() - 1) * q / 4];
        let more = profiled.as_secs_f64() - untraced.as_secs_f64();
        eprintln!(
            "{} interleaved over {ROUNDS} rounds: untraced {:?} a run, profiled {:?} a run: {:.3}x; \
             rounds' median {:.3}x (quartiles {:.3}x-{:.3}x); {} calls a run, {:.1} ns more a call",
            mode.name(),
            untraced / ROUNDS,
            profiled / ROUNDS,
            profiled.as_secs_f64() / untraced.as_secs_f64(),
            quartile(2),
            quartile(1),
            quartile(3),
            calls / u64::from(ROUNDS),
            more * 1e9 / calls.max(1) as f64,
        );
    }
}

/// A 60 s eprof session under continuous load: resident memory after a
/// 10 s warm-up and at the end. Set NODETRACE_BENCH_QUICK=1 to skip it.
fn eprof_memory(_: &mut Criterion) {
    if std::env::var_os("NODETRACE_BENCH_QUICK").is_some() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let profile = Profile::start(options(ProfileMode::Eprof), &[]).unwrap();
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = Duration::from_secs(10);
    while start.elapsed() < Duration::from_secs(60) {
        runs(&runtime, 1);
        if start.elapsed() >= next {
            samples.push((next.as_secs(), common::rss_kib()));
            next += Duration::from_secs(10);
        }
    }
    let snapshot = profile.stop();
    let warm = samples.first().map_or(0, |s| s.1);
    let end = samples.last().map_or(0, |s| s.1);
    eprintln!(
        "eprof memory over 60 s (KiB at each 10 s): {samples:?}; after warm-up {warm} KiB, at the end {end} KiB ({:+.1}%); {} functions, {} stacks",
        (end as f64 - warm as f64) * 100.0 / warm.max(1) as f64,
        snapshot.functions.len(),
        snapshot.stacks.len()
    );
}

criterion_group!(benches, profiles, interleaved, eprof_memory);
criterion_main!(benches);
