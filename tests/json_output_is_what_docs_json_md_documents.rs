//! Every command's `--format json` against `docs/json.md`: each line is
//! one object with a `type`, every field it has is documented for that
//! type and command with its JSON type, and every field documented as
//! always there is there.

mod common;

use std::collections::HashMap;

use common::{Home, unique};
use serde_json::Value;

/// A documented field: the JSON types it may have, and whether every
/// object of its type has it.
#[derive(Debug)]
struct Field {
    kinds: Vec<String>,
    always: bool,
}

/// command → type → field → Field, as `docs/json.md` states them.
type Docs = HashMap<String, HashMap<String, HashMap<String, Field>>>;

fn docs() -> Docs {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let mut docs = Docs::new();
    let mut commands: Vec<String> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            commands = heading.split(", ").map(|c| c.trim().to_owned()).collect();
            types.clear();
        } else if let Some(heading) = line.strip_prefix("### ") {
            types = heading
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
        } else if line.starts_with("| `") {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            let kinds: Vec<String> = cells[2].split(" or ").map(str::to_owned).collect();
            let always = cells[3] == "yes";
            for command in &commands {
                for ty in &types {
                    docs.entry(command.clone())
                        .or_default()
                        .entry(ty.clone())
                        .or_default()
                        .insert(
                            name.clone(),
                            Field {
                                kinds: kinds.clone(),
                                always,
                            },
                        );
                }
            }
        }
    }
    docs
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks every line of `stdout` against what `docs` says of `command`;
/// returns the objects' types, in order.
fn check(docs: &Docs, command: &str, stdout: &str) -> Vec<String> {
    let documented = docs
        .get(command)
        .unwrap_or_else(|| panic!("docs/json.md has no section for {command}"));
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{command}: {e}: {line}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("{command}: not an object: {line}"));
        let ty = object["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{command}: no type: {line}"));
        let fields = documented
            .get(ty)
            .unwrap_or_else(|| panic!("{command}: type {ty} is not documented: {line}"));
        for (name, v) in object {
            let field = fields
                .get(name)
                .unwrap_or_else(|| panic!("{command}: {ty}.{name} is not documented: {line}"));
            assert!(
                field.kinds.iter().any(|k| k == kind(v)),
                "{command}: {ty}.{name} is {} but documented as {:?}: {line}",
                kind(v),
                field.kinds
            );
        }
        for (name, field) in fields {
            assert!(
                !field.always || object.contains_key(name),
                "{command}: {ty}.{name} is documented as always there: {line}"
            );
        }
        seen.push(ty.to_owned());
    }
    assert!(!seen.is_empty(), "{command} printed no JSON");
    seen
}

#[test]
fn every_command_prints_what_docs_json_md_documents() {
    let docs = docs();
    let home = Home::new();
    let node = home.start_node(&unique("json"));
    node.add_entry("bob", "2023-12-19", "Movies");
    let _load = node.load();
    let json = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        home.run(&all).ok().to_owned()
    };

    check(&docs, "nodes", &json(&["nodes"]));
    check(&docs, "ls", &json(&["ls"]));
    check(&docs, "ps", &json(&["ps"]));
    check(
        &docs,
        "sys get-state",
        &json(&["sys", "get-state", "todo_server:bob"]),
    );
    check(
        &docs,
        "sys statistics",
        &json(&["sys", "statistics", "todo_server:bob"]),
    );

    let calls = json(&["trace", "calls", "Todo.Server -> return", "--max", "6"]);
    let types = check(&docs, "trace calls", &calls);
    assert!(types.contains(&"call".to_owned()), "{types:?}");
    assert!(types.contains(&"return".to_owned()), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("end"), "{types:?}");
    let end: Value = serde_json::from_str(calls.lines().last().unwrap()).unwrap();
    assert_eq!(end["reason"], "max_events");
    assert_eq!(end["shown"], 6);
    assert_eq!(end["delivered"], 6);

    // The load's HTTP handlers are async: their polls.
    let polls = json(&["trace", "calls", "todo::http", "--polls", "--max", "12"]);
    let types = check(&docs, "trace calls", &polls);
    assert!(types.contains(&"in".to_owned()), "{types:?}");
    assert!(types.contains(&"out".to_owned()), "{types:?}");

    // A backend that is not there: the spans are counted as dropped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let exported = json(&[
        "trace",
        "calls",
        "Todo.Server",
        "--max",
        "4",
        "--otlp",
        &url,
    ]);
    let types = check(&docs, "trace calls", &exported);
    assert_eq!(types.last().map(String::as_str), Some("otlp"), "{types:?}");

    let messages = json(&[
        "trace",
        "messages",
        "--process",
        "todo_server:bob",
        "--max",
        "2",
    ]);
    let types = check(&docs, "trace messages", &messages);
    assert_eq!(types.len(), 3, "{types:?}");
    let sys = json(&["sys", "trace", "todo_server:bob", "--max", "2"]);
    assert_eq!(check(&docs, "sys trace", &sys).last().unwrap(), "end");

    for mode in ["cprof", "eprof", "fprof"] {
        let command = format!("profile {mode}");
        let report = json(&["profile", mode, "Todo.Server", "--duration", "300ms"]);
        assert_eq!(check(&docs, &command, &report), ["profile"]);
    }
    let sampled = json(&["profile", "sample", "--duration", "500ms"]);
    assert_eq!(check(&docs, "profile sample", &sampled), ["profile"]);
    check(&docs, "stop-clear", &json(&["stop-clear"]));
    let tc = home
        .run(&["tc", "-n", "2", "--format", "json", "--", "true"])
        .ok()
        .to_owned();
    assert_eq!(check(&docs, "tc", &tc), ["tc"]);
}

/// `ls --pid` of a program without the agent (reading a binary needs no
/// privilege): its functions, with what the debug info says.
#[test]
fn a_probed_process_s_functions_are_what_docs_json_md_documents() {
    let docs = docs();
    let mut plain = std::process::Command::new(common::plain_bin())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("plain starts");
    let pid = plain.id().to_string();
    let out = std::process::Command::new(common::NODETRACE)
        .args(["ls", "--pid", &pid, "plain::work", "--format", "json"])
        .output()
        .expect("nodetrace runs");
    let _ = plain.kill();
    let _ = plain.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let types = check(&docs, "ls", &stdout);
    assert!(types.iter().all(|t| t == "probe_function"), "{types:?}");
    assert!(stdout.contains("\"params\":[{"), "{stdout}");
}

/// The `tracing` bridge's objects: `ls` rows of spans, calls and returns of
/// a traced span, and `log` lines.
#[test]
fn a_tracing_node_prints_what_docs_json_md_documents() {
    let docs = docs();
    let home = Home::new();
    let node = home.start_kv(&unique("jsonkv"));
    let mut client = node.client();
    assert_eq!(client.send("SET a 1"), "OK");
    let _load = node.load();
    let json = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        home.run(&all).ok().to_owned()
    };
    check(&docs, "ls", &json(&["ls"]));
    let calls = json(&["trace", "calls", "kv::cmd:apply -> return", "--max", "4"]);
    let types = check(&docs, "trace calls", &calls);
    assert!(types.contains(&"return".to_owned()), "{types:?}");
    let logs = json(&["log", "kv", "--level", "debug", "--max", "4"]);
    let types = check(&docs, "log", &logs);
    assert_eq!(types, ["log", "log", "log", "log", "end"], "{logs}");
}

/// The objects of a node with tasks and traced channels: `ps` rows of
/// tasks, `top`, `info`, an actor's statistics and sys events.
#[test]
fn a_node_of_tasks_prints_what_docs_json_md_documents() {
    let docs = docs();
    let home = Home::new();
    let node = home.start_orders(&unique("jsonord"), &["--audit-delay", "2"]);
    let mut client = node.client();
    assert!(client.send("BUY a 1").starts_with("OK"));
    let json = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--node", &node.name, "--format", "json"]);
        home.run(&all).ok().to_owned()
    };
    check(&docs, "ps", &json(&["ps"]));
    let top = json(&["top", "--once", "--interval", "100ms"]);
    assert_eq!(check(&docs, "top", &top), ["top"]);
    assert_eq!(check(&docs, "info", &json(&["info"])), ["info"]);
    check(
        &docs,
        "sys statistics",
        &json(&["sys", "statistics", "audit"]),
    );
    let mut sys = home.spawn(&[
        "sys", "trace", "audit", "--max", "2", "--node", &node.name, "--format", "json",
    ]);
    sys.wait_stderr("tracing sys events", std::time::Duration::from_secs(30));
    client.send("BUY b 2");
    let run = sys.wait(std::time::Duration::from_secs(30));
    assert_eq!(
        check(&docs, "sys trace", run.ok()),
        ["got", "handled", "end"]
    );
}
