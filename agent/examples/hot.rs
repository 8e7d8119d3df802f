//! A test fixture for `nodetrace profile sample`: a node that burns CPU in
//! a function nodetrace knows nothing of (not `#[traced]`).
//!
//! ```text
//! hot NAME [SECONDS] [--task]
//! ```
//!
//! Starts the node NAME (its home from `NODETRACE_HOME`, or connecting
//! back to a profiler named in the environment), then runs `hot_spin` (a
//! loop of xorshift arithmetic, never inlined) on a `hot-worker` thread
//! and prints `hot: os pid N` on stdout. It exits after 5 minutes, so that
//! a fixture a failed test forgot does not linger; with a second argument
//! SECONDS it exits 7 after that many seconds instead. With `--task` it
//! also runs `task_spin` (another loop) in a task named `spinner`
//! ([`nodetrace_agent::task::spawn`]), so that a profile split by process
//! has a process to find.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nodetrace_agent::node::{self, NodeConfig};

/// The hot spot: arithmetic only, so that even a debug build spends its
/// samples here and not in called helpers (a `for` over a range would
/// call the range's `next` there, unoptimised, and spend them in it).
#[inline(never)]
fn hot_spin(seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    let mut round = 0;
    while round < 100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        round += 1;
    }
    black_box(x)
}

/// The task's hot spot: other constants, so that its samples are its own.
#[inline(never)]
fn task_spin(seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    let mut round = 0;
    while round < 100_000 {
        x ^= x << 11;
        x ^= x >> 5;
        x ^= x << 19;
        round += 1;
    }
    black_box(x)
}

/// A traced caller of the hot spot, switched off (one load): its sampled
/// frames are named as its callsite is, `hot:rounds/1`.
#[nodetrace_agent::traced]
#[inline(never)]
fn rounds(x: u64) -> u64 {
    hot_spin(x)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let with_task = args.iter().any(|a| a == "--task");
    args.retain(|a| a != "--task");
    let Some(name) = args.first() else {
        eprintln!("usage: hot NAME [SECONDS] [--task]");
        std::process::exit(2);
    };
    let seconds: Option<u64> = args.get(1).and_then(|s| s.parse().ok());
    if let Err(e) = node::start(NodeConfig::new(name.clone())) {
        eprintln!("hot: {e}");
        std::process::exit(70);
    }
    let limit = Duration::from_secs(seconds.unwrap_or(300));
    let worker = std::thread::Builder::new()
        .name("hot-worker".into())
        .spawn(move || {
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < limit {
                x = x.wrapping_add(rounds(x));
            }
            black_box(x)
        })
        .expect("a worker thread");
    if with_task {
        spawn_spinner(limit);
    }
    println!("hot: os pid {}", std::process::id());
    let _ = worker.join();
    if seconds.is_some() {
        std::process::exit(7);
    }
}

/// Runs `task_spin` in the named task `spinner` on a one-worker runtime of
/// its own, yielding between rounds, until `limit` passes.
fn spawn_spinner(limit: Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hot-runtime")
        .build()
        .expect("a tokio runtime");
    runtime.spawn(async move {
        let spinner = nodetrace_agent::task::spawn("spinner", async move {
            let start = Instant::now();
            let mut x = 1u64;
            while start.elapsed() < limit {
                x = x.wrapping_add(task_spin(x));
                tokio::task::yield_now().await;
            }
            black_box(x)
        });
        let _ = spinner.await;
    });
    // The runtime lives as long as the process.
    std::mem::forget(runtime);
}
