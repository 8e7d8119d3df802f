//! End to end: `nodetrace profile sample` on the `hot` example of
//! nodetrace-agent (a node burning CPU in a function that is not traced),
//! running (`--node`) and started by the profiler (`-- CMD`). Real
//! processes, each test in its own nodetrace home, every wait bounded.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{Home, Load, Spawned, hot_bin, hot_release_bin, unique, wait_until};
use pprof::protos::Message;
use serde_json::Value;

/// SIGPROF's bit in the masks of `/proc/PID/status` (signal 27).
const SIGPROF_BIT: u64 = 1 << (27 - 1);

/// The `SigCgt` (caught) and `SigIgn` (ignored) masks of process `pid`.
fn signal_masks(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a status");
    let mask = |key: &str| {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the status of {pid}"));
        u64::from_str_radix(line.trim(), 16).expect("a hex mask")
    };
    (mask("SigCgt:"), mask("SigIgn:"))
}

/// Starts the hot node `name` in `home`; returns it once it is registered.
fn start_hot(home: &Home, name: &str) -> Spawned {
    start_hot_with(home, name, &[])
}

/// [`start_hot`] with more arguments for the example.
fn start_hot_with(home: &Home, name: &str, args: &[&str]) -> Spawned {
    let mut node = Spawned::start(home.command(hot_bin()).arg(name).args(args));
    let registry = home.path().join("nodes").join(format!("{name}.node"));
    let up = wait_until(common::STARTUP, || {
        node.stdout().contains("hot: os pid") && registry.is_file()
    });
    assert!(
        up.is_some(),
        "{name} did not start; stderr: {}",
        node.stderr()
    );
    let _ = &mut node;
    node
}

/// The rows of a text table under `heading`: (self, total, function).
fn self_table(text: &str) -> Vec<(u64, u64, String)> {
    text.lines()
        .skip_while(|l| !l.starts_with("# by self samples"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (
                cells[1].parse().unwrap(),
                cells[3].parse().unwrap(),
                cells[4..].join(" "),
            )
        })
        .collect()
}

/// The speedscope file at `path` is valid by speedscope's own published
/// schema, weighs `samples` in all, and has the hot function.
fn check_speedscope(path: &std::path::Path, samples: u64) {
    let schema: Value =
        serde_json::from_str(include_str!("data/speedscope-file-format-schema.json"))
            .expect("the schema is JSON");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a schema");
    assert!(
        !validator.is_valid(&serde_json::json!({ "shared": 1 })),
        "the schema refuses what is not a speedscope file"
    );
    let errors: Vec<String> = validator
        .iter_errors(&file)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let profile = &file["profiles"][0];
    let weights: u64 = profile["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .sum();
    assert_eq!(weights, samples);
    let frames = file["shared"]["frames"].as_array().unwrap();
    assert!(
        frames
            .iter()
            .any(|f| f["name"].as_str().unwrap().contains("hot_spin"))
    );
}

fn report_json(run: &common::Run) -> Value {
    let last = run
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no report; stderr: {}", run.stderr));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}\nstderr: {}", run.stderr))
}

#[test]
fn a_running_node_is_sampled_twice_and_its_sigprof_disposition_is_restored() {
    let home = Home::new();
    let name = unique("hot");
    let node = start_hot(&home, &name);
    let pid = node.pid();
    let (caught_before, ignored_before) = signal_masks(pid);
    assert_eq!(
        caught_before & SIGPROF_BIT,
        0,
        "no handler before any profile"
    );

    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("stacks.txt");
    let pprof = dir.path().join("cpu.pb.gz");
    let svg = dir.path().join("cpu.svg");
    let speedscope = dir.path().join("cpu.speedscope.json");
    let run = home.run(&[
        "profile",
        "sample",
        "--node",
        &name,
        "--duration",
        "2s",
        "--format",
        "json",
        "--folded",
        folded.to_str().unwrap(),
        "--pprof",
        pprof.to_str().unwrap(),
        "--flamegraph",
        svg.to_str().unwrap(),
        "--speedscope",
        speedscope.to_str().unwrap(),
    ]);
    run.ok();
    let report = report_json(&run);
    check_speedscope(&speedscope, report["samples"].as_u64().unwrap());
    assert_eq!(report["profiler"], "sample");
    assert_eq!(report["frequency_hz"], 99);
    let total = report["samples"].as_u64().unwrap();
    // 2 s of one busy thread at 99 Hz: about 200 samples.
    assert!(total >= 50, "too few samples: {total}; {report}");
    let top3 = &functions(&report)[..3];
    assert!(
        top3.iter().any(|f| f.ends_with("hot_spin")),
        "hot_spin is not in the top 3 by self samples: {top3:?}"
    );
    let stack_total: u64 = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["samples"].as_u64().unwrap())
        .sum();
    assert_eq!(stack_total, total);

    // Folded stacks: the thread first, std's frames under the hot spot.
    let folded = std::fs::read_to_string(&folded).unwrap();
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("hot-worker;") && l.contains("hot_spin")),
        "{folded}"
    );
    assert!(folded.contains("std::"), "no frame of std: {folded}");
    // The traced caller is one frame, named as its callsite.
    assert!(
        folded.contains(";hot:rounds/1;hot::hot_spin "),
        "no hot:rounds/1 frame right above hot_spin: {folded}"
    );
    let folded_total: u64 = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(folded_total, total);

    // The pprof file decodes with pprof's own protobuf types; its samples
    // add up to the report's.
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&pprof).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let profile = pprof::protos::Profile::decode(bytes.as_slice()).expect("a pprof profile");
    let strings = &profile.string_table;
    assert_eq!(strings[profile.sample_type[0].ty as usize], "samples");
    let pprof_total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(pprof_total as u64, total);
    assert!(strings.iter().any(|s| s.ends_with("hot_spin")));

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<?xml"), "not an SVG");
    assert!(svg.contains("hot_spin"));

    // A second profile, in text, works as well; while it runs SIGPROF is
    // caught, after it the disposition is what it was.
    let mut second = home.spawn(&["profile", "sample", "--node", &name, "--duration", "2s"]);
    let caught = wait_until(Duration::from_secs(10), || {
        signal_masks(pid).0 & SIGPROF_BIT != 0
    });
    assert!(caught.is_some(), "SIGPROF was never caught while sampling");
    let run = second.wait(common::COMMAND_LIMIT);
    let text = run.ok();
    let rows = self_table(text);
    assert!(
        rows.iter().take(3).any(|r| r.2.ends_with("hot_spin")),
        "hot_spin is not in the top 3: {text}"
    );
    assert!(text.contains("# by total samples"), "{text}");
    let (caught_after, ignored_after) = signal_masks(pid);
    assert_eq!(caught_after & SIGPROF_BIT, 0, "a handler was left behind");
    assert_eq!(
        ignored_after & SIGPROF_BIT,
        ignored_before & SIGPROF_BIT,
        "SIGPROF's disposition changed"
    );
}

/// `profile sample --format json [--per-process] -- BIN NAME 2 [--task]`
/// of the `hot` example built as `bin`: its exit code passes through, the
/// report is complete and has the hot function among the top three by self
/// samples; returns the report.
fn sample_hot_command(bin: &std::path::Path, limit: Duration, split: bool) -> Value {
    let home = Home::new();
    let name = unique("hotcmd");
    let split_args: &[&str] = if split { &["--per-process"] } else { &[] };
    let task_args: &[&str] = if split { &["--task"] } else { &[] };
    let run = common::run_bounded(
        home.nodetrace(&["profile", "sample", "--format", "json"])
            .args(split_args)
            .arg("--")
            .arg(bin)
            .args([name.as_str(), "2"])
            .args(task_args),
        limit,
    );
    assert_eq!(run.status.code(), Some(7), "stderr: {}", run.stderr);
    let report = report_json(&run);
    assert_eq!(report["complete"], true, "stderr: {}", run.stderr);
    let functions = functions(&report);
    assert!(
        functions.iter().take(3).any(|f| f.ends_with("hot_spin")),
        "hot_spin is not in the top 3 by self samples: {functions:?}; stderr: {}",
        run.stderr
    );
    report
}

/// The functions of a sample report, by self samples.
fn functions(report: &Value) -> Vec<&str> {
    report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect()
}

#[test]
fn a_command_is_sampled_to_its_exit_and_its_exit_code_passes_through() {
    sample_hot_command(hot_bin(), common::COMMAND_LIMIT, false);
}

/// A release build with cargo's default profile (no frame pointers, no
/// debug info): stacks are unwound from the unwind tables, and the hot
/// function is still found by its symbol.
#[test]
fn a_release_build_is_sampled_without_frame_pointers() {
    let report = sample_hot_command(hot_release_bin(), Duration::from_secs(120), true);
    let functions = functions(&report);
    assert!(
        functions
            .iter()
            .any(|f| f.starts_with("std::") || f.starts_with("core::")),
        "std frames are unwound through: {functions:?}"
    );
    // The marker frames survive the optimiser: split by process, the
    // spinner task's samples are its own.
    let spinner_samples: u64 = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["process"] == "spinner")
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str().unwrap().ends_with("task_spin"))
        })
        .map(|s| s["samples"].as_u64().unwrap())
        .sum();
    assert!(
        spinner_samples >= 20,
        "the spinner's samples: {spinner_samples}; {}",
        report["processes"]
    );
}

#[test]
fn a_sample_longer_than_the_node_allows_is_refused() {
    let home = Home::new();
    let name = unique("hotlong");
    let _node = start_hot(&home, &name);
    let run = home.run(&["profile", "sample", "--node", &name, "--duration", "6m"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("at most 5m"), "{}", run.stderr);
}

/// The Todo node under its HTTP load: the sampled stacks hold its own
/// frames (its traced functions named as their callsites) next to tokio's.
#[test]
fn the_todo_node_under_load_is_sampled_with_its_own_frames() {
    let home = Home::new();
    let node = home.start_node(&unique("todosample"));
    let _load = node.load();
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("todo.txt");
    let run = home.run(&[
        "profile",
        "sample",
        "--node",
        &node.name,
        "--duration",
        "2s",
        "--frequency",
        "999",
        "--folded",
        folded.to_str().unwrap(),
    ]);
    assert!(run.ok().contains("by self samples"), "{}", run.stdout);
    let folded = std::fs::read_to_string(&folded).unwrap();
    assert!(folded.lines().count() > 0, "no samples");
    assert!(folded.contains("tokio::"), "no tokio frame: {folded}");
    assert!(
        folded.contains(";todo::"),
        "no frame of the Todo node: {folded}"
    );
    // Its traced functions are named as their callsites: `module:fn/arity`.
    let callsite_named = folded.split([';', ' ']).any(|frame| {
        frame.starts_with("todo::")
            && frame.rsplit_once('/').is_some_and(|(name, arity)| {
                name.replace("::", "").contains(':') && arity.parse::<u8>().is_ok()
            })
    });
    assert!(callsite_named, "no frame named as a callsite: {folded}");
}

/// `--per-process` on the hot node with its `spinner` task: the task's
/// samples are its own (its hot function, none of the thread's), the
/// worker thread's stay with the thread, and the text, folded and JSON
/// reports agree on it.
#[test]
fn samples_are_split_by_the_process_that_was_running() {
    let home = Home::new();
    let name = unique("hotsplit");
    let _node = start_hot_with(&home, &name, &["--task"]);
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("split.txt");
    // `profile sample --node NAME --frequency 499 ARGS...`
    let sample = |args: &[&str]| {
        let head = ["profile", "sample", "--node", &name, "--frequency", "499"];
        home.run(&[&head[..], args].concat())
    };
    let run = sample(&[
        "--per-process",
        "--duration",
        "2s",
        "--format",
        "json",
        "--folded",
        folded.to_str().unwrap(),
    ]);
    run.ok();
    let report = report_json(&run);
    let spinner = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["owner"].as_str().unwrap().ends_with(" spinner"))
        .unwrap_or_else(|| panic!("no spinner process: {}", report["processes"]));
    let pid = spinner["pid"].as_str().unwrap().to_owned();
    assert!(pid.ends_with(".1>"), "a task's pid: {pid}");
    assert!(spinner["samples"].as_u64().unwrap() >= 20, "{spinner}");
    let stacks = report["stacks"].as_array().unwrap();
    let frames = |s: &Value| -> Vec<String> {
        s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    let (mut in_task, mut in_thread) = (0u64, 0u64);
    for stack in stacks {
        let frames = frames(stack);
        assert!(
            !frames.iter().any(|f| f.contains("process::marker")),
            "marker frames are left out: {frames:?}"
        );
        let samples = stack["samples"].as_u64().unwrap();
        if stack["pid"] == pid.as_str() {
            assert_eq!(stack["process"], "spinner");
            assert!(
                !frames.iter().any(|f| f.ends_with("hot_spin")),
                "the thread's hot spot in the task: {frames:?}"
            );
            if frames.last().is_some_and(|f| f.ends_with("task_spin")) {
                in_task += samples;
            }
        } else if frames.iter().any(|f| f.ends_with("hot_spin")) {
            assert_eq!(stack["pid"], Value::Null, "{stack}");
            assert_eq!(stack["thread"], "hot-worker");
            in_thread += samples;
        }
    }
    assert!(
        in_task >= 20 && in_thread >= 20,
        "task {in_task}, thread {in_thread}"
    );
    let split_folded = std::fs::read_to_string(&folded).unwrap();
    assert!(
        split_folded
            .lines()
            .any(|l| l.starts_with(&format!("{pid} spinner;")) && l.contains("task_spin")),
        "no tower for the spinner: {split_folded}"
    );

    let run = sample(&["--per-process", "--duration", "1s"]);
    let text = run.ok();
    assert!(text.contains("# by process"), "{text}");
    let section = text
        .split("****** ")
        .find(|s| s.starts_with(&format!("process {pid} spinner ")))
        .unwrap_or_else(|| panic!("no section for the spinner: {text}"));
    let first = section.lines().nth(2).unwrap_or_default();
    assert!(first.ends_with("task_spin"), "its top function: {section}");

    // Once the split profiles end, polls run unmarked again: a profile by
    // thread sees no marker frames (it would not drop them).
    let run = sample(&["--duration", "1s", "--folded", folded.to_str().unwrap()]);
    run.ok();
    let folded = std::fs::read_to_string(&folded).unwrap();
    assert!(folded.contains("task_spin"), "{folded}");
    assert!(
        !folded.contains("process::marker") && !folded.contains("hooked_poll"),
        "polls are still marked: {folded}"
    );
}

/// The Todo node under load, split by process: its gen_servers
/// (`todo_server:NAME`) are processes of their own in the samples.
#[test]
fn the_todo_node_s_gen_servers_are_processes_in_a_split_sample() {
    let home = Home::new();
    let node = home.start_node(&unique("todosplit"));
    // Busier than `node.load()`: on a machine that other tests share, a
    // node that is mostly idle gives a handful of samples, and
    // `todo_server:bob` may be in none of them.
    let _load = Load::start(node.base(), 2, Duration::from_millis(1));
    let run = home.run(&[
        "profile",
        "sample",
        "--per-process",
        "--node",
        &node.name,
        "--duration",
        "2s",
        "--frequency",
        "999",
        "--format",
        "json",
    ]);
    run.ok();
    let report = report_json(&run);
    let processes = report["processes"].as_array().unwrap();
    assert!(
        processes
            .iter()
            .any(|p| p["owner"].as_str().unwrap().contains(" todo_server:")),
        "no gen_server among the processes: {processes:?}"
    );
}
