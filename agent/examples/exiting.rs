//! A test fixture for `nodetrace profile -- CMD`: a node that calls traced
//! functions a known number of times, then ends in a chosen way.
//!
//! ```text
//! exiting MODE [CALLS]
//! ```
//!
//! Starts the node `exiting_<os pid>@localhost` (its home from
//! `NODETRACE_HOME`, connecting back to a profiler named in the
//! environment), calls `outer` CALLS times (default 100), each calling
//! `inner` twice, says on stderr `exiting: os pid N, CALLS calls done` and
//! on stdout `exiting: done`, then ends by MODE:
//!
//! * `normal`: returns from main (exit code 0);
//! * `code`: returns exit code 3 from main;
//! * `exit`: `std::process::exit(4)`;
//! * `panic`: panics in main (exit code 101);
//! * `hang`: sleeps until killed (at most 5 minutes, then exits 9);
//! * `noagent`: exits 0 without starting the node (no calls are made).

use std::hint::black_box;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use nodetrace_agent::node::{self, NodeConfig};
use nodetrace_agent::traced;

#[traced]
fn outer(i: u64) -> u64 {
    let mut sum = black_box(i);
    for _ in 0..2 {
        sum = sum.wrapping_add(inner(sum));
    }
    sum
}

#[traced]
fn inner(seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    for _ in 0..200 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    black_box(x)
}

fn say(line: &str) {
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn usage() -> ExitCode {
    eprintln!("usage: exiting normal|code|exit|panic|hang|noagent [CALLS]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().map(String::as_str) else {
        return usage();
    };
    if !matches!(
        mode,
        "normal" | "code" | "exit" | "panic" | "hang" | "noagent"
    ) {
        return usage();
    }
    let calls: u64 = match args.get(1).map(|n| n.parse()) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(_)) => return usage(),
    };
    if mode == "noagent" {
        say(&format!(
            "exiting: os pid {}, no agent\n",
            std::process::id()
        ));
        return ExitCode::SUCCESS;
    }
    let name = format!("exiting_{}@localhost", std::process::id());
    if let Err(e) = node::start(NodeConfig::new(name)) {
        eprintln!("exiting: {e}");
        return ExitCode::from(70);
    }
    let mut total = 0u64;
    for i in 0..calls {
        total = total.wrapping_add(outer(i));
    }
    black_box(total);
    // One write per line, so that it does not interleave with the
    // profiler's lines on the same stderr.
    say(&format!(
        "exiting: os pid {}, {calls} calls done\n",
        std::process::id()
    ));
    println!("exiting: done");
    match mode {
        "normal" => ExitCode::SUCCESS,
        "code" => ExitCode::from(3),
        "exit" => std::process::exit(4),
        "panic" => panic!("exiting on purpose"),
        // Until killed; at most 5 minutes, so that a fixture a failed test
        // forgot does not linger.
        _ => {
            std::thread::sleep(Duration::from_secs(300));
            ExitCode::from(9)
        }
    }
}
