//! `profile cprof|eprof|fprof --pprof FILE`: the file, read back with the
//! pprof protobuf types of pprof-rs (generated from pprof's own
//! `profile.proto`), holds the report's totals: cprof's calls, eprof's
//! and fprof's own time of every stack, function by function.

mod common;

use std::collections::HashMap;
use std::io::Read;

use common::{Home, exiting_bin};
use pprof::protos::Message;
use serde_json::Value;

fn profile(home: &Home, mode: &str, file: &std::path::Path) -> Value {
    let run = home.run(&[
        "profile",
        mode,
        "--pprof",
        file.to_str().unwrap(),
        "--format",
        "json",
        "--",
        exiting_bin().to_str().unwrap(),
        "normal",
        "20",
    ]);
    run.ok();
    assert!(
        run.stderr
            .contains(&format!("pprof profile written to {}", file.display())),
        "{}",
        run.stderr
    );
    serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap()
}

fn read(file: &std::path::Path) -> pprof::protos::Profile {
    let mut bytes = Vec::new();
    let raw = std::fs::read(file).unwrap();
    if file.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut bytes)
            .expect("gzip");
    } else {
        bytes = raw;
    }
    pprof::protos::Profile::decode(bytes.as_slice()).expect("a pprof profile")
}

/// flat value by function name: the sample's innermost frame.
fn flat(p: &pprof::protos::Profile) -> HashMap<String, i64> {
    let name_of = |location: u64| {
        let l = p
            .location
            .iter()
            .find(|l| l.id == location)
            .expect("a location");
        let f = p
            .function
            .iter()
            .find(|f| f.id == l.line[0].function_id)
            .expect("a function");
        p.string_table[f.name as usize].clone()
    };
    let mut flat = HashMap::new();
    for s in &p.sample {
        *flat.entry(name_of(s.location_id[0])).or_default() += s.value[0];
    }
    flat
}

fn name(f: &Value) -> String {
    format!(
        "{}:{}/{}",
        f["module"].as_str().unwrap(),
        f["function"].as_str().unwrap(),
        f["arity"]
    )
}

#[test]
fn cprof_s_pprof_counts_the_calls_of_each_function() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("calls.pb.gz");
    let report = profile(&home, "cprof", &file);
    let p = read(&file);
    assert_eq!(p.string_table[p.sample_type[0].ty as usize], "calls");
    assert_eq!(p.string_table[p.sample_type[0].unit as usize], "count");
    let flat = flat(&p);
    let functions = report["functions"].as_array().unwrap();
    let total: u64 = functions.iter().map(|f| f["calls"].as_u64().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(flat.values().sum::<i64>() as u64, total);
    for f in functions
        .iter()
        .filter(|f| f["calls"].as_u64().unwrap() > 0)
    {
        assert_eq!(flat[&name(f)] as u64, f["calls"].as_u64().unwrap(), "{f}");
    }
}

#[test]
fn eprof_and_fprof_s_pprof_weigh_each_stack_by_its_own_time() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    for mode in ["eprof", "fprof"] {
        let file = dir.path().join(format!("{mode}.pb"));
        let report = profile(&home, mode, &file);
        let p = read(&file);
        assert_eq!(
            p.string_table[p.sample_type[0].unit as usize],
            "nanoseconds"
        );
        let stacks = report["stacks"].as_array().unwrap();
        let total: u64 = stacks.iter().map(|s| s["own_ns"].as_u64().unwrap()).sum();
        assert!(total > 0, "{report}");
        assert_eq!(
            p.sample.iter().map(|s| s.value[0]).sum::<i64>() as u64,
            total
        );
        // A function's flat time is its own time in the report.
        let flat = flat(&p);
        for f in report["functions"].as_array().unwrap() {
            let own = f["own_ns"].as_u64().unwrap();
            if own > 0 {
                assert_eq!(flat[&name(f)] as u64, own, "{mode}: {f}");
            }
        }
        // Stacks keep their depth: inner is called from outer.
        assert!(p.sample.iter().any(|s| s.location_id.len() == 2), "{mode}");
    }
}
