//! Timeline files end to end: `trace ... --format perfetto|chrome` against
//! real Todo nodes, read back with Perfetto's published protos (the whole
//! `perfetto_trace.proto`, compiled here by protox and decoded by
//! prost-reflect: not the writer's own types) and, for Chrome JSON, a
//! schema of the Trace Event Format plus its nesting and flows.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Home, unique, wait_until};
use nodetrace_protocol::{CallsiteInfo, Event, EventKind, Pid};
use nodetrace_tracer::export::EventSink;
use nodetrace_tracer::export::chrome::ChromeWriter;
use nodetrace_tracer::export::perfetto::PerfettoWriter;
use nodetrace_tracer::render::NodeView;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value as PValue,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let files =
            protox::compile(["perfetto_trace.proto"], [dir]).expect("Perfetto's protos compile");
        DescriptorPool::from_file_descriptor_set(files).expect("a descriptor pool")
    })
}

fn message(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("no {name} in Perfetto's protos"))
}

/// One decoded `TrackEvent` with what the packet around it said.
#[derive(Debug, Clone)]
struct Slice {
    ts: u64,
    kind: String,
    track: u64,
    name: Option<String>,
    annotations: HashMap<String, String>,
    flows: Vec<u64>,
    terminating: Vec<u64>,
}

/// A track descriptor: name, parent, process pid, process name.
type Track = (String, Option<u64>, Option<i32>, Option<String>);

#[derive(Debug, Default)]
struct Decoded {
    /// By uuid.
    tracks: HashMap<u64, Track>,
    events: Vec<Slice>,
    packets: usize,
}

fn get(m: &DynamicMessage, field: &str) -> Option<PValue> {
    let f = m.descriptor().get_field_by_name(field)?;
    m.has_field(&f).then(|| m.get_field(&f).into_owned())
}

fn u64_of(v: Option<PValue>) -> Option<u64> {
    v.and_then(|v| v.as_u64())
}

/// Fails on a field Perfetto's protos do not define, anywhere in `m`: a
/// field number the writer got wrong would decode as unknown.
fn assert_all_fields_known(m: &DynamicMessage) {
    let unknown: Vec<_> = m.unknown_fields().map(|f| f.number()).collect();
    assert!(
        unknown.is_empty(),
        "fields {unknown:?} are not in Perfetto's {}",
        m.descriptor().full_name()
    );
    for (_, value) in m.fields() {
        match value {
            PValue::Message(inner) => assert_all_fields_known(inner),
            PValue::List(list) => {
                for v in list {
                    if let PValue::Message(inner) = v {
                        assert_all_fields_known(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reads `InternedData`'s `field` entries (`iid`, `name`) into `into`.
fn interned(interned: &DynamicMessage, field: &str, into: &mut HashMap<u64, String>) {
    if let Some(PValue::List(list)) = get(interned, field) {
        for n in list {
            let n = n.as_message().unwrap();
            let iid = u64_of(get(n, "iid")).unwrap();
            let name = get(n, "name").unwrap().as_str().unwrap().to_owned();
            assert!(
                into.insert(iid, name).is_none(),
                "{field} interns {iid} once"
            );
        }
    }
}

/// Decodes packets as Perfetto's trace processor reads them: one trusted
/// sequence whose first packet clears the incremental state and whose
/// others need it, the names it interns (event names, debug annotation
/// names), track descriptors, track events. Every field must be one of
/// Perfetto's.
fn decode_packets(packets: &[DynamicMessage]) -> Decoded {
    let mut out = Decoded {
        packets: packets.len(),
        ..Decoded::default()
    };
    let mut names: HashMap<u64, String> = HashMap::new();
    let mut keys: HashMap<u64, String> = HashMap::new();
    for (i, p) in packets.iter().enumerate() {
        assert_all_fields_known(p);
        let u32_of = |field| get(p, field).and_then(|v| v.as_u32());
        assert_eq!(u32_of("trusted_packet_sequence_id"), Some(1));
        let flags = u32_of("sequence_flags");
        // SEQ_INCREMENTAL_STATE_CLEARED = 1, SEQ_NEEDS_INCREMENTAL_STATE = 2.
        assert_eq!(flags, Some(if i == 0 { 1 } else { 2 }), "packet {i}");
        if let Some(PValue::Message(data)) = get(p, "interned_data") {
            interned(&data, "event_names", &mut names);
            interned(&data, "debug_annotation_names", &mut keys);
        }
        if let Some(PValue::Message(t)) = get(p, "track_descriptor") {
            let process = get(&t, "process").and_then(|v| v.as_message().cloned());
            out.tracks.insert(
                u64_of(get(&t, "uuid")).unwrap(),
                (
                    get(&t, "name")
                        .map(|v| v.as_str().unwrap().to_owned())
                        .unwrap_or_default(),
                    u64_of(get(&t, "parent_uuid")),
                    process
                        .as_ref()
                        .and_then(|p| get(p, "pid"))
                        .and_then(|v| v.as_i32()),
                    process
                        .as_ref()
                        .and_then(|p| get(p, "process_name"))
                        .map(|v| v.as_str().unwrap().to_owned()),
                ),
            );
        }
        if let Some(PValue::Message(e)) = get(p, "track_event") {
            let kind = get(&e, "type")
                .and_then(|v| v.as_enum_number())
                .and_then(|n| {
                    message("perfetto.protos.TrackEvent")
                        .get_field_by_name("type")
                        .unwrap()
                        .kind()
                        .as_enum()
                        .unwrap()
                        .get_value(n)
                })
                .map(|v| v.name().to_owned())
                .unwrap_or_default();
            let name = u64_of(get(&e, "name_iid"))
                .map(|iid| names.get(&iid).cloned().expect("an interned name"))
                .or_else(|| get(&e, "name").map(|v| v.as_str().unwrap().to_owned()));
            let mut annotations = HashMap::new();
            if let Some(PValue::List(list)) = get(&e, "debug_annotations") {
                for a in list {
                    let a = a.as_message().unwrap();
                    let key = u64_of(get(a, "name_iid"))
                        .map(|iid| {
                            keys.get(&iid)
                                .cloned()
                                .expect("an interned annotation name")
                        })
                        .or_else(|| get(a, "name").map(|v| v.as_str().unwrap().to_owned()))
                        .expect("an annotation has a name");
                    let value = get(a, "string_value")
                        .map(|v| v.as_str().unwrap().to_owned())
                        .or_else(|| u64_of(get(a, "uint_value")).map(|n| n.to_string()))
                        .unwrap_or_default();
                    annotations.insert(key, value);
                }
            }
            let ids = |field| match get(&e, field) {
                Some(PValue::List(list)) => list.iter().map(|v| v.as_u64().unwrap()).collect(),
                _ => Vec::new(),
            };
            out.events.push(Slice {
                ts: u64_of(get(p, "timestamp")).expect("a timestamp"),
                kind,
                track: u64_of(get(&e, "track_uuid")).expect("a track"),
                name,
                annotations,
                flows: ids("flow_ids"),
                terminating: ids("terminating_flow_ids"),
            });
        }
    }
    out
}

/// The whole file as Perfetto's `Trace`.
fn decode_trace(bytes: &[u8]) -> Decoded {
    let trace = DynamicMessage::decode(message("perfetto.protos.Trace"), bytes)
        .expect("the file is a Perfetto Trace");
    let Some(PValue::List(packets)) = get(&trace, "packet") else {
        panic!("a trace with no packets");
    };
    let packets: Vec<DynamicMessage> = packets
        .into_iter()
        .map(|p| p.as_message().unwrap().clone())
        .collect();
    decode_packets(&packets)
}

/// A file that may be cut anywhere: its whole packets, one by one, and
/// how many bytes of a last packet were cut short.
fn decode_prefix(bytes: &[u8]) -> (Vec<DynamicMessage>, usize) {
    let mut rest = bytes;
    let mut packets = Vec::new();
    loop {
        if rest.is_empty() {
            return (packets, 0);
        }
        let start = rest;
        let key = match prost::encoding::decode_varint(&mut rest) {
            Ok(k) => k,
            Err(_) => return (packets, start.len()),
        };
        assert_eq!(
            key,
            (1 << 3) | 2,
            "each record is field 1 of Trace, length-delimited"
        );
        let len = match prost::encoding::decode_varint(&mut rest) {
            Ok(n) => n as usize,
            Err(_) => return (packets, start.len()),
        };
        if rest.len() < len {
            return (packets, start.len());
        }
        let packet = DynamicMessage::decode(message("perfetto.protos.TracePacket"), &rest[..len])
            .expect("a whole packet decodes");
        packets.push(packet);
        rest = &rest[len..];
    }
}

/// Checks that BEGIN/END pair up on every track as a stack, and returns
/// the deepest nesting seen and the (ancestor, descendant) names.
fn nesting(d: &Decoded) -> (usize, HashSet<(String, String)>) {
    let mut stacks: HashMap<u64, Vec<String>> = HashMap::new();
    let mut deepest = 0;
    let mut pairs = HashSet::new();
    for e in &d.events {
        let stack = stacks.entry(e.track).or_default();
        match e.kind.as_str() {
            "TYPE_SLICE_BEGIN" => {
                let name = e.name.clone().expect("a slice has a name");
                for ancestor in stack.iter() {
                    pairs.insert((ancestor.clone(), name.clone()));
                }
                stack.push(name);
                deepest = deepest.max(stack.len());
            }
            "TYPE_SLICE_END" => {
                assert!(
                    stack.pop().is_some(),
                    "an END without a BEGIN on track {}",
                    e.track
                );
            }
            _ => {}
        }
    }
    (deepest, pairs)
}

/// Starts `nodetrace ARGS --format FORMAT -o FILE` in `home`.
fn spawn_into(home: &Home, args: &[&str], format: &str, file: &Path) -> common::Spawned {
    let mut all = args.to_vec();
    all.extend(["--format", format, "-o", file.to_str().unwrap()]);
    home.spawn(&all)
}

/// Traces `todo::*` on `node` (at most 200 events) into `file` in
/// `format` while an entry is added and read back; ends it with
/// `stop-clear` and returns the finished trace.
fn trace_an_entry(home: &Home, node: &common::Node, format: &str, file: &Path) -> common::Run {
    let mut trace = spawn_into(
        home,
        &["trace", "calls", "todo::*", "--max", "200"],
        format,
        file,
    );
    trace.wait_stderr("tracing calls", LIMIT);
    node.add_entry("bob", "2023-12-19", "Movies");
    assert!(node.entries("bob", "2023-12-19").contains("Movies"));
    home.run(&["stop-clear"]).ok();
    trace.wait(LIMIT)
}

#[test]
fn a_perfetto_trace_has_a_track_per_process_nested_slices_and_annotations() {
    let home = Home::new();
    let node = home.start_node(&unique("perfetto"));
    // bob's server exists before the trace, so the trace knows its name.
    node.add_entry("bob", "2023-12-19", "Dentist");
    let file = home.path().join("calls.pftrace");
    let done = trace_an_entry(&home, &node, "perfetto", &file);
    done.ok();
    let (shown, ..) = common::summary_counts(&done.stderr, &node.name);

    let d = decode_trace(&std::fs::read(&file).unwrap());
    // One event a packet, an exception two; track descriptors besides.
    let descriptors = d.tracks.len();
    assert_eq!(d.packets, shown as usize + descriptors, "{d:?}");
    assert_eq!(d.events.len(), shown as usize);

    // The node's track: its OS pid and name; a track per process inside it.
    let (node_uuid, _) = d
        .tracks
        .iter()
        .find(|(_, t)| t.1.is_none())
        .expect("a node track");
    let node_track = &d.tracks[node_uuid];
    assert_eq!(node_track.2, Some(node.os_pid() as i32));
    assert_eq!(node_track.3.as_deref(), Some(node.name.as_str()));
    let server = d
        .tracks
        .values()
        .find(|t| t.0.starts_with("todo_server:bob <0."))
        .unwrap_or_else(|| panic!("a track named by the registered name: {:?}", d.tracks));
    assert!(
        server.0.ends_with(&format!("({})", node.name)),
        "{}",
        server.0
    );
    assert_eq!(server.1, Some(*node_uuid));
    for e in &d.events {
        let track = &d.tracks[&e.track];
        let on_process = track.1 == Some(*node_uuid);
        let on_async_call = track.0 == "async calls"
            && track
                .1
                .is_some_and(|parent| d.tracks[&parent].1 == Some(*node_uuid));
        assert!(
            on_process || on_async_call,
            "events are on process tracks or their async calls' tracks: {track:?}"
        );
    }

    let begins: Vec<&Slice> = d
        .events
        .iter()
        .filter(|e| e.kind == "TYPE_SLICE_BEGIN")
        .collect();
    let ends: Vec<&Slice> = d
        .events
        .iter()
        .filter(|e| e.kind == "TYPE_SLICE_END")
        .collect();
    assert_eq!(begins.len(), ends.len(), "every call returned");
    assert!(begins.len() >= 10, "{begins:?}");
    let add = begins
        .iter()
        .find(|e| e.name.as_deref() == Some("todo::server:add_entry/2"))
        .expect("the add_entry call");
    assert!(add.annotations["args"].contains("Movies"), "{add:?}");
    assert!(
        ends.iter().any(|e| e
            .annotations
            .get("result")
            .is_some_and(|r| r.contains("Movies"))),
        "the entries call's value"
    );
    assert!(
        ends.iter().any(|e| e.annotations.contains_key("busy_ns")),
        "async calls' busy time"
    );

    let (deepest, pairs) = nesting(&d);
    assert!(deepest >= 2, "{pairs:?}");
    assert!(
        pairs.contains(&(
            "todo::server:<Server as GenServer>::handle_call/3".to_owned(),
            "todo::list:TodoList::add_entry/2".to_owned()
        )),
        "add_entry of the list runs inside the server's handle_call: {pairs:?}"
    );
    // The handle_call is async: the list's add_entry runs in one of its
    // polls, on its track.
    assert!(
        pairs.contains(&(
            "poll".to_owned(),
            "todo::list:TodoList::add_entry/2".to_owned()
        )),
        "{pairs:?}"
    );
}

#[test]
fn an_async_call_is_a_slice_on_a_track_of_its_own_with_its_polls_inside() {
    let home = Home::new();
    let node = home.start_node(&unique("polls"));
    node.add_entry("bob", "2023-12-19", "Dentist");
    let file = home.path().join("polls.pftrace");
    let mut trace = spawn_into(
        &home,
        &[
            "trace",
            "calls",
            "todo::http",
            "todo::server",
            "--max",
            "200",
        ],
        "perfetto",
        &file,
    );
    trace.wait_stderr("tracing calls", LIMIT);
    node.add_entry("bob", "2023-12-19", "Movies");
    home.run(&["stop-clear"]).ok();
    trace.wait(LIMIT).ok();

    let d = decode_trace(&std::fs::read(&file).unwrap());
    nesting(&d);
    let begin = |name: &str| {
        d.events
            .iter()
            .position(|e| e.kind == "TYPE_SLICE_BEGIN" && e.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", d.events))
    };
    // The HTTP handler's call, on an async call track of its task's track.
    let http = begin("todo::http:add_entry/2");
    let track = d.events[http].track;
    let (name, parent, ..) = &d.tracks[&track];
    assert_eq!(name, "async calls");
    let task = parent.expect("an async call track is a process's child");
    assert!(d.tracks[&task].0.ends_with(&format!("({})", node.name)));
    // On its track: the call, its polls inside, its end.
    let on_track: Vec<&Slice> = d.events[http..]
        .iter()
        .filter(|e| e.track == track)
        .collect();
    let end = on_track
        .iter()
        .position(|e| e.kind == "TYPE_SLICE_END" && e.annotations.contains_key("busy_ns"))
        .expect("the call's end");
    let inside = &on_track[1..end];
    assert!(!inside.is_empty(), "{on_track:?}");
    let mut polled = 0;
    for pair in inside.chunks(2) {
        assert_eq!(pair[0].kind, "TYPE_SLICE_BEGIN");
        assert_eq!(pair[0].name.as_deref(), Some("poll"));
        assert_eq!(pair[1].kind, "TYPE_SLICE_END");
        assert!(on_track[0].ts <= pair[0].ts && pair[1].ts <= on_track[end].ts);
        polled += pair[1].ts - pair[0].ts;
    }
    // The polls are the busy time the return reports.
    let busy: u64 = on_track[end].annotations["busy_ns"].parse().unwrap();
    let polls = inside.len() as u64 / 2;
    assert!(
        busy.abs_diff(polled) <= polls + 1,
        "busy {busy} ns, polls {polled} ns"
    );
    // The server's add_entry it awaits: another async call track of the
    // same task, begun inside one of the handler's polls.
    let awaited = &d.events[begin("todo::server:add_entry/2")];
    assert_ne!(awaited.track, track);
    assert_eq!(d.tracks[&awaited.track].1, Some(task));
    assert!(
        inside
            .chunks(2)
            .any(|p| p[0].ts <= awaited.ts && awaited.ts <= p[1].ts),
        "awaited in a poll of the handler"
    );
}

#[test]
fn a_process_started_during_the_trace_has_its_name() {
    let home = Home::new();
    let node = home.start_node(&unique("pfnew"));
    let file = home.path().join("new.pftrace");
    let mut trace = spawn_into(
        &home,
        &["trace", "calls", "todo::server", "--max", "100"],
        "perfetto",
        &file,
    );
    trace.wait_stderr("tracing calls", LIMIT);
    // carol's list server starts now, registered as todo_server:carol.
    node.add_entry("carol", "2023-12-19", "Movies");
    home.run(&["stop-clear"]).ok();
    trace.wait(LIMIT).ok();
    let d = decode_trace(&std::fs::read(&file).unwrap());
    let (carol, _) = d
        .tracks
        .iter()
        .find(|(_, t)| t.0.starts_with("todo_server:carol <0."))
        .unwrap_or_else(|| panic!("a track named by its registered name: {:?}", d.tracks));
    assert!(
        d.events
            .iter()
            .any(|e| e.track == *carol || d.tracks[&e.track].1 == Some(*carol)),
        "carol's server has events on its tracks"
    );
}

#[test]
fn messages_are_flows_from_the_send_to_the_receive() {
    let home = Home::new();
    let node = home.start_node(&unique("flows"));
    let file = home.path().join("messages.pftrace");
    let chrome = home.path().join("messages.json");
    let mut perfetto = spawn_into(
        &home,
        &["trace", "messages", "--max", "100"],
        "perfetto",
        &file,
    );
    let mut json = spawn_into(
        &home,
        &["trace", "messages", "--max", "100"],
        "chrome",
        &chrome,
    );
    perfetto.wait_stderr("tracing messages", LIMIT);
    json.wait_stderr("tracing messages", LIMIT);
    for i in 0..5 {
        node.add_entry("bob", "2023-12-19", &format!("m{i}"));
    }
    home.run(&["stop-clear"]).ok();
    perfetto.wait(LIMIT).ok();
    json.wait(LIMIT).ok();

    let d = decode_trace(&std::fs::read(&file).unwrap());
    let sends: Vec<&Slice> = d
        .events
        .iter()
        .filter(|e| e.name.as_deref() == Some("send"))
        .collect();
    let receives: Vec<&Slice> = d
        .events
        .iter()
        .filter(|e| e.name.as_deref() == Some("receive"))
        .collect();
    assert!(!sends.is_empty() && !receives.is_empty(), "{:?}", d.events);
    assert!(
        sends
            .iter()
            .all(|s| s.kind == "TYPE_INSTANT" && s.flows.len() == 1)
    );
    let started: HashMap<u64, &Slice> = sends.iter().map(|s| (s.flows[0], *s)).collect();
    let mut joined = 0;
    for r in &receives {
        for id in &r.terminating {
            if let Some(s) = started.get(id) {
                joined += 1;
                assert_ne!(s.track, r.track, "a flow goes from one process to another");
                assert!(s.ts <= r.ts, "sent before received");
                assert_eq!(s.annotations.get("message"), r.annotations.get("message"));
            }
        }
    }
    assert!(
        joined >= 5,
        "each add_entry's call reaches the server: {joined} flows"
    );

    let events = read_chrome(&chrome);
    let s: HashSet<u64> = events
        .iter()
        .filter(|e| e["ph"] == "s")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    let f: HashSet<u64> = events
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(s.intersection(&f).count() >= 5, "chrome flows: {s:?} {f:?}");
}

#[test]
fn a_killed_tracer_leaves_a_perfetto_file_that_reads_to_its_last_packet() {
    let home = Home::new();
    let node = home.start_node(&unique("pfkill"));
    let _load = node.load();
    let file = home.path().join("killed.pftrace");
    let mut trace = spawn_into(
        &home,
        &["trace", "calls", "todo::*", "--duration", "30s"],
        "perfetto",
        &file,
    );
    trace.wait_stderr("tracing calls", LIMIT);
    assert!(
        wait_until(LIMIT, || std::fs::metadata(&file)
            .is_ok_and(|m| m.len() > 20_000))
        .is_some(),
        "the trace is written as it streams"
    );
    trace.signal("KILL");
    let _ = trace.wait(LIMIT);
    let bytes = std::fs::read(&file).unwrap();
    let (packets, cut) = decode_prefix(&bytes);
    assert!(packets.len() > 100, "{} packets", packets.len());
    let d = decode_packets(&packets);
    assert!(d.events.iter().any(|e| e.kind == "TYPE_SLICE_BEGIN"));
    // Wherever it is cut, the file reads up to its last whole packet.
    let whole = bytes.len() - cut;
    for at in [whole / 3, whole / 2, whole - 1] {
        let (some, _) = decode_prefix(&bytes[..at]);
        assert!(some.len() < packets.len() && !some.is_empty());
    }
    DynamicMessage::decode(message("perfetto.protos.Trace"), &bytes[..whole])
        .expect("its whole packets are a Trace");
}

#[test]
fn several_nodes_share_one_timeline() {
    let home = Home::new();
    let a = home.start_node(&unique("tla"));
    let b = home.start_node(&unique("tlb"));
    let file = home.path().join("two.pftrace");
    let chrome = home.path().join("two.json");
    let args = [
        "trace",
        "calls",
        "Todo.Server",
        "--max",
        "100",
        "--node",
        &a.name,
        "--node",
        &b.name,
    ];
    let mut perfetto = spawn_into(&home, &args, "perfetto", &file);
    let mut json = spawn_into(&home, &args, "chrome", &chrome);
    perfetto.wait_stderr(&format!("on {}", b.name), LIMIT);
    json.wait_stderr(&format!("on {}", b.name), LIMIT);
    a.add_entry("bob", "2023-12-19", "on a");
    b.add_entry("alice", "2023-12-19", "on b");
    for n in [&a, &b] {
        home.run(&["stop-clear", "--node", &n.name]).ok();
    }
    perfetto.wait(LIMIT).ok();
    json.wait(LIMIT).ok();

    let d = decode_trace(&std::fs::read(&file).unwrap());
    // The node track an event's track is under.
    let node_of = |mut track: u64| {
        while let Some(parent) = d.tracks[&track].1 {
            track = parent;
        }
        track
    };
    let roots: HashMap<String, u64> = d
        .tracks
        .iter()
        .filter(|(_, t)| t.1.is_none())
        .map(|(u, t)| (t.0.clone(), *u))
        .collect();
    assert_eq!(roots.len(), 2, "{:?}", d.tracks);
    for n in [&a, &b] {
        let uuid = roots[&n.name];
        assert_eq!(d.tracks[&uuid].2, Some(n.os_pid() as i32));
        assert!(
            d.events.iter().any(|e| node_of(e.track) == uuid),
            "{} has events on its tracks",
            n.name
        );
    }
    // One clock: node b's request came after node a's.
    let first_of = |uuid| {
        d.events
            .iter()
            .filter(|e| node_of(e.track) == uuid)
            .map(|e| e.ts)
            .min()
            .unwrap()
    };
    assert!(first_of(roots[&a.name]) < first_of(roots[&b.name]));

    let events = read_chrome(&chrome);
    let pids: HashSet<u64> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, HashSet::from([a.os_pid() as u64, b.os_pid() as u64]));
}

fn chrome_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/chrome-trace-event-format.schema.json"),
    )
    .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("the schema compiles")
}

/// Parses and validates a Chrome trace file; its events.
fn read_chrome(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let value: Value = serde_json::from_str(&text).expect("the file is JSON");
    let errors: Vec<String> = chrome_schema()
        .iter_errors(&value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    value.as_array().unwrap().clone()
}

#[test]
fn a_chrome_trace_has_complete_events_nested_per_thread_and_names() {
    let home = Home::new();
    let node = home.start_node(&unique("chrome"));
    node.add_entry("bob", "2023-12-19", "Dentist");
    let file = home.path().join("calls.json");
    let done = trace_an_entry(&home, &node, "chrome", &file);
    done.ok();
    let (shown, ..) = common::summary_counts(&done.stderr, &node.name);

    let events = read_chrome(&file);
    let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(
        complete.len() as u64 * 2,
        shown,
        "one X per call and its return"
    );
    let threads: HashMap<u64, String> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        threads
            .values()
            .any(|n| n.starts_with("todo_server:bob <0.")),
        "{threads:?}"
    );
    let add = complete
        .iter()
        .find(|e| e["name"] == "todo::server:add_entry/2")
        .expect("add_entry");
    assert!(add["args"]["args"].as_str().unwrap().contains("Movies"));
    // Per thread, complete events nest: a child lies inside its parent.
    let mut by_tid: HashMap<u64, Vec<(f64, f64, &str)>> = HashMap::new();
    for e in &complete {
        let ts = e["ts"].as_f64().unwrap();
        by_tid.entry(e["tid"].as_u64().unwrap()).or_default().push((
            ts,
            ts + e["dur"].as_f64().unwrap(),
            e["name"].as_str().unwrap(),
        ));
    }
    let mut nested = 0;
    for slices in by_tid.values_mut() {
        slices.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut stack: Vec<(f64, f64, &str)> = Vec::new();
        for s in slices.iter() {
            while stack.last().is_some_and(|p| p.1 <= s.0) {
                stack.pop();
            }
            if let Some(p) = stack.last() {
                assert!(s.1 <= p.1 + 0.001, "{s:?} overlaps {p:?} without nesting");
                nested += 1;
            }
            stack.push(*s);
        }
    }
    assert!(nested >= 2, "{by_tid:?}");
}

/// What a node describes for the synthetic events below.
fn view() -> NodeView {
    let mut v = NodeView::new(
        "n@h",
        [CallsiteInfo {
            id: 0,
            module: "m".into(),
            function: "f".into(),
            arity: 1,
            ..CallsiteInfo::default()
        }],
    );
    v.set_os_pid(42);
    v.register(Pid::process(1), "worker");
    v
}

fn ev(kind: EventKind, at: u64) -> Event {
    Event {
        kind,
        pid: Pid::process(1),
        peer: None,
        callsite: Some(0),
        timestamp_ns: 1_800_000_000_000_000_000 + at,
        duration_ns: None,
        busy_ns: None,
        text: None,
        extra: None,
    }
}

#[test]
fn an_exception_ends_its_slice_marked_in_both_formats() {
    let events = [
        Event {
            text: Some("1".into()),
            ..ev(EventKind::Call, 0)
        },
        Event {
            text: Some("panicked at src/m.rs:1:1:\nboom".into()),
            duration_ns: Some(500),
            ..ev(EventKind::Exception, 500)
        },
    ];
    let view = view();
    let mut perfetto = PerfettoWriter::new();
    let mut chrome = ChromeWriter::new();
    let (mut p, mut c) = (Vec::new(), Vec::new());
    for e in &events {
        perfetto.event(&mut p, 0, &view, e).unwrap();
        chrome.event(&mut c, 0, &view, e).unwrap();
    }
    perfetto.finish(&mut p).unwrap();
    chrome.finish(&mut c).unwrap();

    let d = decode_trace(&p);
    let kinds: Vec<(&str, Option<&str>)> = d
        .events
        .iter()
        .map(|e| (e.kind.as_str(), e.name.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("TYPE_SLICE_BEGIN", Some("m:f/1")),
            ("TYPE_INSTANT", Some("exception")),
            ("TYPE_SLICE_END", None)
        ]
    );
    assert!(d.events[2].annotations["exception"].contains("boom"));
    assert!(d.tracks.values().any(|t| t.0 == "worker <0.1.0> (n@h)"));

    let json: Value = serde_json::from_slice(&c).unwrap();
    let errors: Vec<String> = chrome_schema()
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let x = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ph"] == "X")
        .unwrap();
    assert_eq!(x["cname"], "terrible");
    assert_eq!(x["args"]["args"], "1");
    assert!(x["args"]["exception"].as_str().unwrap().contains("boom"));
    assert_eq!(x["dur"].as_f64(), Some(0.5));
}

#[test]
fn long_annotations_keep_their_length_and_every_packet_reads() {
    // Lengths of one, two and three varint bytes, for the annotation, the
    // track event and the packet around it.
    let texts = ["x".repeat(100), "é".repeat(100), "y".repeat(20_000)];
    let mut events = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        events.push(Event {
            text: Some(t.clone()),
            ..ev(EventKind::Call, 10 * i as u64)
        });
    }
    for (i, t) in texts.iter().enumerate().rev() {
        events.push(Event {
            text: Some(t.clone()),
            busy_ns: Some(1 << 40),
            duration_ns: Some(100),
            ..ev(EventKind::Return, 100 + 10 * i as u64)
        });
    }
    let view = view();
    let mut perfetto = PerfettoWriter::new();
    let mut p = Vec::new();
    for e in &events {
        perfetto.event(&mut p, 0, &view, e).unwrap();
    }
    let d = decode_trace(&p);
    assert_eq!(d.events.len(), 6);
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(&d.events[i].annotations["args"], t);
        assert_eq!(&d.events[5 - i].annotations["result"], t);
        assert_eq!(
            d.events[5 - i].annotations["busy_ns"],
            (1u64 << 40).to_string()
        );
    }
    let (deepest, _) = nesting(&d);
    assert_eq!(deepest, 3);
}
