//! A program linked with the shared library `probelib` (built beside it
//! by the probe tests), calling into it and into libc. With arguments
//! `run N` it calls `probelib_add` N times and exits; else it prints
//! `pid P`, then for each line `run N` on stdin calls `probelib_add` and
//! libc's `getpid` N times each and prints `ran N: SUM`.

use std::io::BufRead;

#[link(name = "probelib")]
unsafe extern "C" {
    fn probelib_add(a: u64, b: u64) -> u64;
}

fn add(n: u64, getpid: bool) -> u64 {
    let mut sum = 0;
    for i in 0..n {
        // SAFETY: a plain C function of two integers.
        sum += unsafe { probelib_add(std::hint::black_box(i), 1) };
        if getpid {
            std::hint::black_box(std::process::id());
        }
    }
    sum
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [run, n] = &args[..]
        && run == "run"
    {
        let n: u64 = n.parse().expect("run N");
        println!("ran {n}: {}", add(n, false));
        return;
    }
    println!("pid {}", std::process::id());
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        if let Some(n) = line.strip_prefix("run ").and_then(|n| n.parse().ok()) {
            println!("ran {n}: {}", add(n, true));
        }
    }
}
