//! A program with no agent, for the probe tests: it prints its pid, then
//! calls `plain::work::step(42, i)` every 2 ms on the main thread. Each line
//! on its stdin starts one more thread that calls `plain::work::step(7, i)`
//! the same way, and prints that thread's OS id.

use std::io::BufRead;
use std::time::Duration;

mod work {
    /// The probed function: never inlined, so it keeps its symbol.
    #[inline(never)]
    pub fn step(base: u64, i: u64) -> u64 {
        std::hint::black_box(base.wrapping_mul(31).wrapping_add(i))
    }
}

fn calls(base: u64) {
    for i in 0.. {
        std::hint::black_box(work::step(base, i));
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn main() {
    println!("pid {}", std::process::id());
    std::thread::spawn(|| {
        for _ in std::io::stdin().lock().lines() {
            std::thread::spawn(|| {
                // SAFETY: gettid has no preconditions.
                println!("tid {}", unsafe { libc::gettid() });
                calls(7);
            });
        }
    });
    calls(42);
}
