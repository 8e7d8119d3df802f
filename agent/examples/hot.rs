//! A test fixture for `nodetrace profile sample`: a node that burns CPU in
//! a function nodetrace knows nothing of (not `#[traced]`).
//!
//! ```text
//! hot NAME
//! ```
//!
//! Starts the node NAME (its home from `NODETRACE_HOME`, or connecting
//! back to a profiler named in the environment), then runs `hot_spin` (a
//! loop of xorshift arithmetic, never inlined) on a `hot-worker` thread
//! and prints `hot: os pid N` on stdout. It exits after 5 minutes, so that
//! a fixture a failed test forgot does not linger; with a second argument
//! SECONDS it exits 7 after that many seconds instead.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nodetrace_agent::node::{self, NodeConfig};

/// The hot spot: arithmetic only, so that even a debug build spends its
/// samples here and not in called helpers.
#[inline(never)]
fn hot_spin(seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprintln!("usage: hot NAME [SECONDS]");
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
    println!("hot: os pid {}", std::process::id());
    let _ = worker.join();
    if seconds.is_some() {
        std::process::exit(7);
    }
}
