//! A cprof count goes straight to its thread's counters, which it keeps
//! between calls: each profile after it must count its own calls alone,
//! on the same thread, on a thread that joined after a stopped one, and
//! after a thread that counted has ended. One test: a node runs one
//! profile at a time.

use std::hint::black_box;

use nodetrace_agent::{Profile, ProfileOptions, callsite, traced};
use nodetrace_protocol::{ProfileMode, ProfileSnapshot};

#[traced]
fn tick(n: u64) -> u64 {
    black_box(n) + 1
}

fn ticks(s: &ProfileSnapshot) -> u64 {
    s.functions
        .iter()
        .filter(|f| callsite(f.callsite).unwrap().metadata().name == "tick")
        .map(|f| f.calls)
        .sum()
}

fn cprof() -> Profile {
    let options = ProfileOptions {
        mode: ProfileMode::Cprof,
        histogram: false,
        per_process: false,
    };
    Profile::start(
        options,
        &["each_cprof_counts_its_own_calls:tick".parse().unwrap()],
    )
    .unwrap()
}

#[test]
fn each_profile_counts_only_the_calls_made_while_it_ran() {
    for round in 1..=3u64 {
        let profile = cprof();
        for i in 0..round * 10 {
            tick(i);
        }
        // A thread that counts and ends before the profile stops.
        std::thread::spawn(move || {
            for i in 0..round {
                tick(i);
            }
        })
        .join()
        .unwrap();
        assert_eq!(ticks(&profile.stop()), round * 11, "round {round}");
        // Calls between profiles are in none of them: the next round's
        // count is exact.
        for i in 0..7 {
            tick(i);
        }
    }
    // An eprof in between keeps its own figures; the cprof after it
    // counts afresh.
    let eprof = Profile::start(
        ProfileOptions {
            mode: ProfileMode::Eprof,
            histogram: false,
            per_process: false,
        },
        &[],
    )
    .unwrap();
    tick(1);
    assert_eq!(ticks(&eprof.stop()), 1);
    let profile = cprof();
    tick(2);
    tick(3);
    assert_eq!(ticks(&profile.stop()), 2);
}
