//! cprof, eprof and fprof figures against a workload with known calls.
//! One test: a node runs one profile at a time.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::id;
use nodetrace_agent::{Profile, ProfileOptions, callsite, traced};
use nodetrace_protocol::{FunctionProfile, ProfileMode, ProfileSnapshot};

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        black_box(());
    }
}

#[traced]
fn outer(n: u64) -> u64 {
    spin(Duration::from_micros(50));
    inner(n) + inner(n + 1)
}

#[traced]
fn inner(n: u64) -> u64 {
    spin(Duration::from_micros(100));
    n
}

#[traced]
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

#[traced]
async fn waits(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    inner(ms)
}

fn function<'a>(s: &'a ProfileSnapshot, name: &str) -> &'a FunctionProfile {
    s.functions
        .iter()
        .find(|f| callsite(f.callsite).unwrap().metadata().name == name)
        .unwrap_or_else(|| panic!("{name} is not in the profile"))
}

fn options(mode: ProfileMode) -> ProfileOptions {
    ProfileOptions {
        mode,
        histogram: true,
        per_process: false,
    }
}

fn workload() {
    for i in 0..10 {
        outer(i);
    }
    fib(10);
}

#[test]
fn each_profiler_measures_the_known_workload() {
    // cprof: exact counts, nothing else.
    let profile = Profile::start(
        options(ProfileMode::Cprof),
        &["profiles_aggregate_in_the_node:*".parse().unwrap()],
    )
    .unwrap();
    workload();
    let s = profile.stop();
    assert_eq!(function(&s, "outer").calls, 10);
    assert_eq!(function(&s, "inner").calls, 20);
    assert_eq!(function(&s, "fib").calls, 177);
    assert!(s.edges.is_empty() && s.stacks.is_empty());
    assert!(
        nodetrace_agent::callsites().iter().all(|c| !c.is_enabled()),
        "stopping switches off"
    );

    // eprof: counts, own time within accumulated time.
    let profile = Profile::start(options(ProfileMode::Eprof), &[]).unwrap();
    let busy = Instant::now();
    workload();
    let wall = busy.elapsed().as_nanos() as u64;
    let s = profile.stop();
    let (o, i, f) = (
        function(&s, "outer"),
        function(&s, "inner"),
        function(&s, "fib"),
    );
    assert_eq!((o.calls, i.calls, f.calls), (10, 20, 177));
    for x in [o, i, f] {
        assert!(x.own_ns <= x.acc_ns, "own {} > acc {}", x.own_ns, x.acc_ns);
        let h = x.histogram.expect("a histogram");
        assert!(h.p50 <= h.p90 && h.p90 <= h.p99 && h.p99 <= h.p999 && h.p999 <= h.max);
    }
    assert!(
        i.own_ns >= 20 * 100_000,
        "inner spins 100 µs a call: {}",
        i.own_ns
    );
    assert!(
        o.own_ns >= 10 * 50_000 && o.own_ns < i.own_ns,
        "outer's own time excludes inner's"
    );
    assert!(i.acc_ns <= o.acc_ns, "children's acc within the parent's");
    assert!(
        o.acc_ns <= wall,
        "outer's acc {} within the wall time {wall}",
        o.acc_ns
    );
    assert!(
        f.acc_ns <= wall,
        "recursion is not counted twice: {} > {wall}",
        f.acc_ns
    );
    let stack = |names: &[&str]| names.iter().map(|n| id(n)).collect::<Vec<_>>();
    let stacks: Vec<&Vec<u32>> = s.stacks.iter().map(|st| &st.frames).collect();
    assert!(stacks.contains(&&stack(&["outer"])));
    assert!(stacks.contains(&&stack(&["outer", "inner"])));
    assert!(stacks.contains(&&stack(&["fib", "fib", "fib"])));
    let own_in_stacks: u64 = s.stacks.iter().map(|st| st.own_ns).sum();
    let own_in_functions: u64 = s.functions.iter().map(|f| f.own_ns).sum();
    let rounding = (s.stacks.len() + s.functions.len()) as u64;
    assert!(
        own_in_stacks.abs_diff(own_in_functions) <= rounding,
        "the flamegraph adds up to the table: {own_in_stacks} vs {own_in_functions}"
    );

    // fprof: the call graph.
    let profile = Profile::start(options(ProfileMode::Fprof), &[]).unwrap();
    workload();
    let s = profile.stop();
    let edge = |caller: Option<&str>, callee: &str| {
        s.edges
            .iter()
            .find(|e| e.caller == caller.map(id) && e.callee == id(callee))
            .unwrap_or_else(|| panic!("no edge {caller:?} -> {callee}"))
    };
    assert_eq!(edge(None, "outer").calls, 10);
    assert_eq!(edge(Some("outer"), "inner").calls, 20);
    assert_eq!(edge(None, "fib").calls, 1);
    assert_eq!(edge(Some("fib"), "fib").calls, 176);
    assert!(edge(Some("outer"), "inner").acc_ns <= edge(None, "outer").acc_ns);

    // Async: a call counts at completion; waiting is wall time, not busy.
    let profile = Profile::start(
        options(ProfileMode::Eprof),
        &["profiles_aggregate_in_the_node:waits".parse().unwrap()],
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        waits(30).await;
        waits(30).await;
    });
    let s = profile.stop();
    let w = function(&s, "waits");
    assert_eq!(w.calls, 2);
    let busy = w.busy_ns.expect("busy time of an async function");
    assert!(w.acc_ns >= 60_000_000, "wall {}", w.acc_ns);
    assert!(
        busy < w.acc_ns / 4,
        "sleeping is not busy: {busy} of {}",
        w.acc_ns
    );
    assert!(w.own_ns <= busy);

    // fprof of async calls: each completion adds to its caller's edge,
    // which its last poll's stack node keeps.
    let profile = Profile::start(options(ProfileMode::Fprof), &[]).unwrap();
    rt.block_on(async {
        for _ in 0..3 {
            waits(1).await;
        }
    });
    let s = profile.stop();
    let edge = |caller: Option<&str>, callee: &str| {
        s.edges
            .iter()
            .find(|e| e.caller == caller.map(id) && e.callee == id(callee))
            .map_or(0, |e| e.calls)
    };
    assert_eq!(edge(None, "waits"), 3);
    assert_eq!(edge(Some("waits"), "inner"), 3);
}
