//! A program with no agent, for the probe tests.
//!
//! `plain` prints its pid, then calls `plain::work::step(42, i)` every 2 ms
//! on the main thread, and reads commands on its stdin:
//!
//! * `thread` starts one more thread that calls `plain::work::step(7, i)`
//!   the same way, and prints that thread's OS id (`tid N`);
//! * `run N` makes N rounds of calls of the other functions of
//!   [`work`] on the thread that reads stdin, and prints what they
//!   computed and how many calls of each function it made.
//!
//! `plain run N [CODE]` prints its pid, makes the N rounds on its main
//! thread, prints the same and exits with CODE.

use std::io::BufRead;
use std::time::Duration;

/// The probed functions: never inlined, so each keeps its symbol.
mod work {
    use std::ops::Add;
    use std::time::Duration;

    #[inline(never)]
    pub fn step(base: u64, i: u64) -> u64 {
        std::hint::black_box(base.wrapping_mul(31).wrapping_add(i))
    }

    #[inline(never)]
    pub fn add(a: u64, b: u64) -> u64 {
        std::hint::black_box(a.wrapping_add(b))
    }

    #[inline(never)]
    pub fn is_even(n: i32) -> bool {
        std::hint::black_box(n % 2 == 0)
    }

    #[inline(never)]
    pub fn initial(word: &str) -> char {
        std::hint::black_box(word.chars().next().unwrap_or('?'))
    }

    /// Generic: one copy for each type it is used at.
    #[inline(never)]
    pub fn twice<T: Add<Output = T> + Copy>(x: T) -> T {
        std::hint::black_box(x + x)
    }

    /// Sleeps `ms` milliseconds and returns them.
    #[inline(never)]
    pub fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        std::hint::black_box(ms)
    }

    /// Panics when `b` is 0: the panic unwinds through this frame.
    #[inline(never)]
    pub fn checked_div(a: u64, b: u64) -> u64 {
        if b == 0 {
            panic!("{a} divided by zero");
        }
        std::hint::black_box(a / b)
    }
}

/// What the rounds computed and how many calls of each function they made.
#[derive(Default)]
struct Tally {
    sum: u64,
    panics: u64,
    add: u64,
    is_even: u64,
    initial: u64,
    twice_u32: u64,
    twice_u64: u64,
    nap: u64,
    checked_div: u64,
}

/// N rounds; every fourth divides by zero, and the panic is caught.
fn rounds(n: u64) -> Tally {
    let mut t = Tally::default();
    for i in 0..n {
        t.sum = t.sum.wrapping_add(work::add(i, 2));
        t.add += 1;
        t.sum += u64::from(work::is_even(i as i32));
        t.is_even += 1;
        t.sum += u64::from(work::initial("probe"));
        t.initial += 1;
        t.sum += u64::from(work::twice(i as u32));
        t.twice_u32 += 1;
        t.sum += work::twice(i << 33);
        t.twice_u64 += 1;
        t.sum += work::nap(1);
        t.nap += 1;
        let divisor = if i % 4 == 3 { 0 } else { 2 };
        match std::panic::catch_unwind(|| work::checked_div(84, divisor)) {
            Ok(q) => t.sum += q,
            Err(_) => t.panics += 1,
        }
        t.checked_div += 1;
    }
    t
}

fn report(n: u64, t: &Tally) {
    println!("ran {n}: sum {}, panics {}", t.sum, t.panics);
    println!(
        "counts add={} is_even={} initial={} twice<u32>={} twice<u64>={} nap={} checked_div={}",
        t.add, t.is_even, t.initial, t.twice_u32, t.twice_u64, t.nap, t.checked_div
    );
}

fn calls(base: u64) {
    for i in 0.. {
        std::hint::black_box(work::step(base, i));
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn main() {
    // The panics are the program's own and caught: no message for them.
    std::panic::set_hook(Box::new(|_| {}));
    println!("pid {}", std::process::id());
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [run, n, rest @ ..] = &args[..]
        && run == "run"
    {
        let n: u64 = n.parse().expect("run N: a number of rounds");
        report(n, &rounds(n));
        let code = rest.first().map_or(0, |c| c.parse().expect("an exit code"));
        std::process::exit(code);
    }
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            let line = line.expect("stdin reads");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["thread"] => {
                    std::thread::spawn(|| {
                        // SAFETY: gettid has no preconditions.
                        println!("tid {}", unsafe { libc::gettid() });
                        calls(7);
                    });
                }
                ["run", n] => {
                    let n = n.parse().expect("run N: a number of rounds");
                    report(n, &rounds(n));
                }
                _ => eprintln!("plain: {line:?}: expected `thread` or `run N`"),
            }
        }
    });
    calls(42);
}
