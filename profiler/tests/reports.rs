//! Reports against golden files. To accept a changed report, run
//! `NODETRACE_BLESS=1 cargo test -p nodetrace-profiler` and review the diff.

use std::path::PathBuf;

use nodetrace_profiler::{
    Profile, ReportOptions, Sort, write_flamegraph, write_folded, write_json, write_text,
};
use nodetrace_protocol::{
    CallEdge, CallsiteInfo, FunctionProfile, Percentiles, Pid, ProfileMode, ProfileSnapshot,
    StackSample,
};

fn callsites() -> Vec<CallsiteInfo> {
    let cs = |id, module: &str, function: &str, arity, is_async| CallsiteInfo {
        id,
        module: module.into(),
        function: function.into(),
        self_type: None,
        trait_name: None,
        arity,
        file: "src/x.rs".into(),
        line: 1,
        is_async,
        ..CallsiteInfo::default()
    };
    vec![
        cs(0, "todo::load", "client", 3, true),
        cs(1, "todo::server", "entries", 2, true),
        cs(2, "todo::server", "handle_call", 3, true),
        cs(3, "todo::list", "entries", 2, false),
        cs(4, "todo::list", "add_entry", 2, false),
    ]
}

fn function(
    callsite: u32,
    pid: Option<u64>,
    calls: u64,
    own_ns: u64,
    acc_ns: u64,
    busy: bool,
) -> FunctionProfile {
    FunctionProfile {
        callsite,
        pid: pid.map(Pid::process),
        calls,
        own_ns,
        acc_ns,
        busy_ns: busy.then_some(own_ns + 1000),
        histogram: Some(Percentiles {
            p50: acc_ns / calls.max(1),
            p90: acc_ns / calls.max(1) * 2,
            p99: acc_ns / calls.max(1) * 3,
            p999: acc_ns / calls.max(1) * 4,
            max: acc_ns / calls.max(1) * 5,
        }),
    }
}

fn snapshot(per_process: bool) -> ProfileSnapshot {
    let pid = |n| per_process.then_some(n);
    ProfileSnapshot {
        elapsed_ns: 50_000_000,
        functions: vec![
            function(0, pid(7), 4, 2_000_000, 40_000_000, true),
            function(1, pid(7), 500, 1_500_000, 9_000_000, true),
            function(2, pid(9), 1000, 3_000_000, 7_000_000, true),
            function(3, pid(9), 500, 2_500_000, 2_500_000, false),
            function(4, pid(9), 500, 1_500_000, 1_500_000, false),
        ],
        edges: vec![
            CallEdge {
                caller: None,
                callee: 0,
                calls: 4,
                acc_ns: 40_000_000,
                own_ns: 2_000_000,
            },
            CallEdge {
                caller: Some(0),
                callee: 1,
                calls: 500,
                acc_ns: 9_000_000,
                own_ns: 1_500_000,
            },
            CallEdge {
                caller: None,
                callee: 2,
                calls: 1000,
                acc_ns: 7_000_000,
                own_ns: 3_000_000,
            },
            CallEdge {
                caller: Some(2),
                callee: 3,
                calls: 500,
                acc_ns: 2_500_000,
                own_ns: 2_500_000,
            },
            CallEdge {
                caller: Some(2),
                callee: 4,
                calls: 500,
                acc_ns: 1_500_000,
                own_ns: 1_500_000,
            },
        ],
        stacks: vec![
            StackSample {
                frames: vec![0],
                own_ns: 2_000_000,
            },
            StackSample {
                frames: vec![0, 1],
                own_ns: 1_500_000,
            },
            StackSample {
                frames: vec![2],
                own_ns: 3_000_000,
            },
            StackSample {
                frames: vec![2, 3],
                own_ns: 2_500_000,
            },
            StackSample {
                frames: vec![2, 4],
                own_ns: 1_500_000,
            },
        ],
        ..ProfileSnapshot::default()
    }
}

fn golden(name: &str, actual: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let actual = String::from_utf8(actual.to_vec()).unwrap();
    if std::env::var_os("NODETRACE_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("no golden file {}: run `NODETRACE_BLESS=1 cargo test -p nodetrace-profiler` to write it", path.display())
    });
    assert!(
        actual == expected,
        "{name} differs from its golden file.\n--- expected\n{expected}\n--- actual\n{actual}\nIf the change is right, run `NODETRACE_BLESS=1 cargo test -p nodetrace-profiler` and review the diff."
    );
}

fn render(
    mode: ProfileMode,
    snapshot: &ProfileSnapshot,
    options: ReportOptions,
    complete: bool,
) -> Vec<u8> {
    let callsites = callsites();
    let profile = Profile {
        mode,
        node: "todo@localhost",
        snapshot,
        callsites: &callsites,
        complete,
    };
    let mut out = Vec::new();
    write_text(&mut out, &profile, &options).unwrap();
    out
}

#[test]
fn cprof_counts_by_module_biggest_first() {
    let mut s = snapshot(false);
    for f in &mut s.functions {
        f.own_ns = 0;
        f.acc_ns = 0;
        f.busy_ns = None;
        f.histogram = None;
    }
    s.edges.clear();
    s.stacks.clear();
    golden(
        "cprof.txt",
        &render(ProfileMode::Cprof, &s, ReportOptions::default(), true),
    );
}

#[test]
fn eprof_tables_own_time_with_totals_and_async_busy_and_wall() {
    golden(
        "eprof.txt",
        &render(
            ProfileMode::Eprof,
            &snapshot(false),
            ReportOptions::default(),
            true,
        ),
    );
    let by_calls = ReportOptions {
        sort: Some(Sort::Calls),
        histogram: true,
        ..ReportOptions::default()
    };
    golden(
        "eprof_calls_histogram.txt",
        &render(ProfileMode::Eprof, &snapshot(false), by_calls, true),
    );
    let per_process = ReportOptions {
        per_process: true,
        ..ReportOptions::default()
    };
    golden(
        "eprof_per_process.txt",
        &render(ProfileMode::Eprof, &snapshot(true), per_process, false),
    );
}

#[test]
fn fprof_paragraphs_show_callers_and_callees() {
    golden(
        "fprof.txt",
        &render(
            ProfileMode::Fprof,
            &snapshot(false),
            ReportOptions::default(),
            true,
        ),
    );
}

#[test]
fn json_parses_and_names_functions() {
    let callsites = callsites();
    let s = snapshot(false);
    let profile = Profile {
        mode: ProfileMode::Fprof,
        node: "todo@localhost",
        snapshot: &s,
        callsites: &callsites,
        complete: true,
    };
    let mut out = Vec::new();
    write_json(&mut out, &profile).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["profiler"], "fprof");
    assert_eq!(v["functions"].as_array().unwrap().len(), 5);
    assert_eq!(v["functions"][1]["function"], "entries");
    assert_eq!(v["edges"][1]["caller"], "todo::load:client/3");
    assert_eq!(v["stacks"][1]["frames"][1], "todo::server:entries/2");
}

#[test]
fn folded_stacks_and_the_flamegraph_name_the_traced_functions() {
    let callsites = callsites();
    let s = snapshot(false);
    let profile = Profile {
        mode: ProfileMode::Eprof,
        node: "todo@localhost",
        snapshot: &s,
        callsites: &callsites,
        complete: true,
    };
    let mut folded = Vec::new();
    write_folded(&mut folded, &profile).unwrap();
    golden("folded.txt", &folded);

    let mut svg = Vec::new();
    write_flamegraph(&mut svg, &profile, "eprof of todo@localhost").unwrap();
    let mut reader = quick_xml::Reader::from_reader(&svg[..]);
    let mut texts = String::new();
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .expect("the SVG parses as XML")
        {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Text(t) => texts.push_str(&t.unescape().unwrap()),
            _ => {}
        }
        buf.clear();
    }
    for name in [
        "todo::load:client/3",
        "todo::server:handle_call/3",
        "todo::list:entries/2",
    ] {
        assert!(texts.contains(name), "{name} is not in the flamegraph");
    }
    let cprof = Profile {
        mode: ProfileMode::Cprof,
        ..profile
    };
    assert!(write_flamegraph(&mut Vec::new(), &cprof, "x").is_err());
}
