//! Perfetto's protobuf trace format, written as the trace streams.
//!
//! A Perfetto trace is a `Trace` message: its packets are field 1, each
//! one length-prefixed. Writing packet after packet is writing a `Trace`,
//! and a file cut anywhere (a killed tracer) holds whole packets up to the
//! cut, which Perfetto reads.
//!
//! The tracks: one per node (a process track: the node's OS pid and name),
//! and inside it one per traced process, named with its registered name
//! and pid. A call is a `TYPE_SLICE_BEGIN` on its process's track with the
//! arguments as a debug annotation, its return a `TYPE_SLICE_END` with the
//! value and the busy time; an exception ends the slice with the panic
//! message as an `exception` annotation after an instant named
//! `exception`. A message is an instant `send` on the sender's track and
//! an instant `receive` on the receiver's, joined by a flow
//! (`flow_ids`/`terminating_flow_ids`). gen_server and log events are
//! instants.
//!
//! An async call (or a traced span: a polled callsite) is drawn on a track
//! of its own, a child of its process's track named `async calls` (one
//! name, so Perfetto shows them as one track, in as many rows as calls
//! ran at once; a track is reused once its call returned): its slice from
//! first poll to completion, and inside it a `poll` slice from each `in`
//! to its `out`. What happens while a call is being polled (sync calls,
//! messages, logs) goes on that call's track, inside the poll, so every
//! track's slices nest. A poll is matched to the latest open call of its
//! function in its process that is not being polled.
//!
//! Event names and debug annotation names are interned, as Perfetto's own
//! SDK does: each is written once, in the `InternedData` of the first
//! packet that uses it, and referred to by its `iid` after that. There is
//! one packet sequence; its first packet clears the incremental state, the
//! others need it.
//!
//! Packets are encoded by hand into one reused buffer, field by field,
//! with the names and numbers of Perfetto's published protos (the
//! `field` constants): no message is built per event. The tests decode
//! what this writes with the whole published `perfetto_trace.proto` and
//! find no field it does not know.

use std::io::{self, Write};

use std::collections::hash_map::Entry;

use nodetrace_protocol::{CallsiteInfo, Event, EventKind, Pid};
use rustc_hash::FxHashMap as HashMap;

use super::encode::Encoder;
use super::{EventSink, Flows, call_name, process_label};
use crate::render::NodeView;

/// The field numbers written, as Perfetto's published protos
/// (`protos/perfetto/trace/` in google/perfetto) number them, by message.
mod field {
    /// `perfetto.protos.Trace` (trace.proto).
    pub mod trace {
        /// `repeated TracePacket packet = 1`.
        pub const PACKET: u32 = 1;
    }
    /// `perfetto.protos.TracePacket` (trace_packet.proto).
    pub mod trace_packet {
        /// `optional uint64 timestamp = 8`.
        pub const TIMESTAMP: u32 = 8;
        /// `uint32 trusted_packet_sequence_id = 10` (a oneof).
        pub const TRUSTED_PACKET_SEQUENCE_ID: u32 = 10;
        /// `TrackEvent track_event = 11` (oneof data).
        pub const TRACK_EVENT: u32 = 11;
        /// `optional InternedData interned_data = 12`.
        pub const INTERNED_DATA: u32 = 12;
        /// `optional uint32 sequence_flags = 13`.
        pub const SEQUENCE_FLAGS: u32 = 13;
        /// `TrackDescriptor track_descriptor = 60` (oneof data).
        pub const TRACK_DESCRIPTOR: u32 = 60;
        /// `SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
        pub const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
        /// `SequenceFlags.SEQ_NEEDS_INCREMENTAL_STATE`.
        pub const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;
    }
    /// `perfetto.protos.TrackEvent` (track_event/track_event.proto).
    pub mod track_event {
        /// `repeated DebugAnnotation debug_annotations = 4`.
        pub const DEBUG_ANNOTATIONS: u32 = 4;
        /// `optional Type type = 9`.
        pub const TYPE: u32 = 9;
        /// `uint64 name_iid = 10` (oneof name_field).
        pub const NAME_IID: u32 = 10;
        /// `optional uint64 track_uuid = 11`.
        pub const TRACK_UUID: u32 = 11;
        /// `repeated fixed64 flow_ids = 47`.
        pub const FLOW_IDS: u32 = 47;
        /// `repeated fixed64 terminating_flow_ids = 48`.
        pub const TERMINATING_FLOW_IDS: u32 = 48;
        /// `Type.TYPE_SLICE_BEGIN`.
        pub const TYPE_SLICE_BEGIN: u64 = 1;
        /// `Type.TYPE_SLICE_END`.
        pub const TYPE_SLICE_END: u64 = 2;
        /// `Type.TYPE_INSTANT`.
        pub const TYPE_INSTANT: u64 = 3;
    }
    /// `perfetto.protos.DebugAnnotation` (track_event/debug_annotation.proto).
    pub mod debug_annotation {
        /// `uint64 name_iid = 1` (oneof name_field).
        pub const NAME_IID: u32 = 1;
        /// `uint64 uint_value = 3` (oneof value).
        pub const UINT_VALUE: u32 = 3;
        /// `string string_value = 6` (oneof value).
        pub const STRING_VALUE: u32 = 6;
    }
    /// `perfetto.protos.InternedData` (interned_data/interned_data.proto).
    pub mod interned_data {
        /// `repeated EventName event_names = 2`.
        pub const EVENT_NAMES: u32 = 2;
        /// `repeated DebugAnnotationName debug_annotation_names = 3`.
        pub const DEBUG_ANNOTATION_NAMES: u32 = 3;
    }
    /// `perfetto.protos.EventName` and `perfetto.protos.DebugAnnotationName`
    /// (track_event.proto, debug_annotation.proto): the same two fields.
    pub mod interned_string {
        /// `optional uint64 iid = 1`.
        pub const IID: u32 = 1;
        /// `optional string name = 2`.
        pub const NAME: u32 = 2;
    }
    /// `perfetto.protos.TrackDescriptor` (track_event/track_descriptor.proto).
    pub mod track_descriptor {
        /// `optional uint64 uuid = 1`.
        pub const UUID: u32 = 1;
        /// `string name = 2` (oneof static_or_dynamic_name).
        pub const NAME: u32 = 2;
        /// `optional ProcessDescriptor process = 3`.
        pub const PROCESS: u32 = 3;
        /// `optional uint64 parent_uuid = 5`.
        pub const PARENT_UUID: u32 = 5;
    }
    /// `perfetto.protos.ProcessDescriptor` (track_event/process_descriptor.proto).
    pub mod process_descriptor {
        /// `optional int32 pid = 1`.
        pub const PID: u32 = 1;
        /// `optional string process_name = 6`.
        pub const PROCESS_NAME: u32 = 6;
    }
}

use field::{
    debug_annotation as da, interned_data, interned_string, process_descriptor, trace,
    trace_packet as tp, track_descriptor as td, track_event as te,
};

/// The one packet sequence this writer emits.
const SEQUENCE: u64 = 1;

/// The debug annotations' names, interned: the iid of each is its
/// position in [`KEYS`] plus one.
#[derive(Debug, Clone, Copy)]
enum Key {
    Args,
    Result,
    BusyNs,
    Exception,
    Message,
    Span,
    State,
    To,
    From,
}

const KEYS: [&str; 9] = [
    "args",
    "result",
    "busy_ns",
    "exception",
    "message",
    "span",
    "state",
    "to",
    "from",
];

impl Key {
    fn iid(self) -> u64 {
        self as u64 + 1
    }
}

#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Text(&'a str),
    Uint(u64),
}

/// At most three annotations an event, on the stack.
#[derive(Debug, Default)]
struct Annotations<'a> {
    items: [Option<(Key, Value<'a>)>; 3],
    len: usize,
}

impl<'a> Annotations<'a> {
    fn push(&mut self, key: Key, value: Value<'a>) {
        self.items[self.len] = Some((key, value));
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = (Key, Value<'a>)> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
}

/// One track event to write.
#[derive(Debug)]
struct TrackEvent<'a> {
    ts: u64,
    kind: u64,
    track: u64,
    /// The event name's iid, and its text if this packet interns it.
    name: Option<(u64, Option<String>)>,
    annotations: Annotations<'a>,
    flow: Option<u64>,
    terminating_flow: Option<u64>,
}

impl<'a> TrackEvent<'a> {
    fn new(kind: u64, ts: u64, track: u64) -> TrackEvent<'a> {
        TrackEvent {
            ts,
            kind,
            track,
            name: None,
            annotations: Annotations::default(),
            flow: None,
            terminating_flow: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum NameKey {
    Callsite(usize, Option<u32>),
    Fixed(&'static str),
}

/// The name of every async call track: one name under a process, so
/// Perfetto draws them as one track (sibling tracks merge by name), in as
/// many rows as calls run at once.
const ASYNC_TRACK: &str = "async calls";

/// What the writer knows of a callsite: whether its calls are polled (an
/// async function or a span), and its interned name once a call used it.
#[derive(Debug, Clone, Copy)]
struct Site {
    polled: bool,
    iid: Option<u64>,
}

/// The packets: the reused buffer, the sequence's interned names and the
/// track uuids handed out.
#[derive(Debug, Default)]
struct Packets {
    started: bool,
    next_uuid: u64,
    next_iid: u64,
    names: HashMap<NameKey, u64>,
    sites: HashMap<(usize, Option<u32>), Site>,
    /// Annotation names interned so far, a bit per [`Key`].
    keys: u16,
    enc: Encoder,
}

/// A traced process's tracks: its own, and one per async call running in
/// it (children of its track, reused once their call returned).
#[derive(Debug)]
struct Process {
    track: u64,
    /// Async calls begun and not returned, the latest last.
    open: Vec<OpenAsync>,
    /// The tracks of the calls being polled, innermost last: what happens
    /// during a poll is drawn inside it.
    polling: Vec<u64>,
    /// Async call tracks no call holds now.
    free: Vec<u64>,
}

impl Process {
    /// Where what happens now in the process goes: inside the innermost
    /// poll, else on the process's own track.
    fn current(&self) -> u64 {
        self.polling.last().copied().unwrap_or(self.track)
    }
}

#[derive(Debug)]
struct OpenAsync {
    callsite: Option<u32>,
    track: u64,
    polled: bool,
}

/// Writes events as Perfetto trace packets.
#[derive(Debug, Default)]
pub struct PerfettoWriter {
    packets: Packets,
    nodes: HashMap<usize, u64>,
    processes: HashMap<(usize, Pid), Process>,
    flows: Flows,
}

impl PerfettoWriter {
    /// A writer that has written nothing yet.
    pub fn new() -> PerfettoWriter {
        PerfettoWriter::default()
    }
}

/// The tracks of `pid` on node `node`, described first if new (and the
/// node's track before them).
#[inline]
fn process<'a>(
    processes: &'a mut HashMap<(usize, Pid), Process>,
    nodes: &mut HashMap<usize, u64>,
    packets: &mut Packets,
    out: &mut dyn Write,
    (node, view, pid): (usize, &NodeView, Pid),
) -> io::Result<&'a mut Process> {
    match processes.entry((node, pid)) {
        Entry::Occupied(p) => Ok(p.into_mut()),
        Entry::Vacant(slot) => {
            let parent = match nodes.get(&node) {
                Some(&uuid) => uuid,
                None => {
                    let pid = i32::try_from(view.os_pid()).ok().filter(|&p| p > 0);
                    let uuid = packets.track(out, None, view.name(), Some((pid, view.name())))?;
                    nodes.insert(node, uuid);
                    uuid
                }
            };
            let name = format!("{} ({})", process_label(view, pid), view.name());
            let track = packets.track(out, Some(parent), &name, None)?;
            Ok(slot.insert(Process {
                track,
                open: Vec::new(),
                polling: Vec::new(),
                free: Vec::new(),
            }))
        }
    }
}

impl Packets {
    /// Starts a packet in the reused buffer.
    fn begin_packet(&mut self) -> usize {
        self.enc.clear();
        self.enc.begin(trace::PACKET)
    }

    /// Ends the packet begun at `packet` with the sequence's fields and
    /// writes it.
    fn end_packet(&mut self, out: &mut dyn Write, packet: usize) -> io::Result<()> {
        self.enc.varint(tp::TRUSTED_PACKET_SEQUENCE_ID, SEQUENCE);
        let flags = if self.started {
            tp::SEQ_NEEDS_INCREMENTAL_STATE
        } else {
            self.started = true;
            tp::SEQ_INCREMENTAL_STATE_CLEARED
        };
        self.enc.varint(tp::SEQUENCE_FLAGS, flags);
        self.enc.end(packet);
        out.write_all(self.enc.bytes())
    }

    /// A new track, described: under `parent`, or a process track
    /// (`process`: pid, name).
    #[cold]
    fn track(
        &mut self,
        out: &mut dyn Write,
        parent: Option<u64>,
        name: &str,
        process: Option<(Option<i32>, &str)>,
    ) -> io::Result<u64> {
        self.next_uuid += 1;
        let uuid = self.next_uuid;
        let packet = self.begin_packet();
        let d = self.enc.begin(tp::TRACK_DESCRIPTOR);
        self.enc.varint(td::UUID, uuid);
        self.enc.string(td::NAME, name);
        if let Some((pid, process_name)) = process {
            let p = self.enc.begin(td::PROCESS);
            if let Some(pid) = pid {
                // An int32 is encoded as its sign extension to 64 bits.
                self.enc
                    .varint(process_descriptor::PID, i64::from(pid) as u64);
            }
            self.enc
                .string(process_descriptor::PROCESS_NAME, process_name);
            self.enc.end(p);
        }
        if let Some(parent) = parent {
            self.enc.varint(td::PARENT_UUID, parent);
        }
        self.enc.end(d);
        self.end_packet(out, packet)?;
        Ok(uuid)
    }

    fn iid(&mut self) -> u64 {
        self.next_iid += 1;
        self.next_iid
    }

    /// The interned id of an event name, and its text when it is new
    /// (the packet that uses it first interns it).
    #[inline]
    fn name(&mut self, key: NameKey, text: impl FnOnce() -> String) -> (u64, Option<String>) {
        if let Some(&iid) = self.names.get(&key) {
            return (iid, None);
        }
        let iid = self.iid();
        self.names.insert(key, iid);
        (iid, Some(text()))
    }

    /// What is known of the callsite of a call of node `node`.
    #[inline]
    fn site(&mut self, node: usize, view: &NodeView, callsite: Option<u32>) -> &mut Site {
        self.sites.entry((node, callsite)).or_insert_with(|| Site {
            polled: view.callsite(callsite).is_some_and(CallsiteInfo::is_polled),
            iid: None,
        })
    }

    /// The interned name of a call's function, and its text when new.
    #[inline]
    fn call_name(
        &mut self,
        node: usize,
        view: &NodeView,
        callsite: Option<u32>,
    ) -> (u64, Option<String>) {
        if let Some(iid) = self.site(node, view, callsite).iid {
            return (iid, None);
        }
        let iid = self.iid();
        self.site(node, view, callsite).iid = Some(iid);
        (iid, Some(call_name(view, callsite)))
    }

    /// Writes one track event packet, interning what it names first.
    fn write(&mut self, out: &mut dyn Write, e: &TrackEvent<'_>) -> io::Result<()> {
        let packet = self.begin_packet();
        self.enc.varint(tp::TIMESTAMP, e.ts);
        let t = self.enc.begin(tp::TRACK_EVENT);
        for (key, value) in e.annotations.iter() {
            let a = self.enc.begin(te::DEBUG_ANNOTATIONS);
            self.enc.varint(da::NAME_IID, key.iid());
            match value {
                Value::Text(s) => self.enc.string(da::STRING_VALUE, s),
                Value::Uint(n) => self.enc.varint(da::UINT_VALUE, n),
            }
            self.enc.end(a);
        }
        self.enc.varint(te::TYPE, e.kind);
        if let Some((iid, _)) = &e.name {
            self.enc.varint(te::NAME_IID, *iid);
        }
        self.enc.varint(te::TRACK_UUID, e.track);
        if let Some(id) = e.flow {
            self.enc.fixed64(te::FLOW_IDS, id);
        }
        if let Some(id) = e.terminating_flow {
            self.enc.fixed64(te::TERMINATING_FLOW_IDS, id);
        }
        self.enc.end(t);
        let new_name = e
            .name
            .as_ref()
            .and_then(|(iid, text)| Some((*iid, text.as_deref()?)));
        let new_keys = e
            .annotations
            .iter()
            .fold(0u16, |bits, (key, _)| bits | 1 << key as u16)
            & !self.keys;
        if new_name.is_some() || new_keys != 0 {
            self.intern(new_name, new_keys);
        }
        self.end_packet(out, packet)
    }

    #[cold]
    fn intern(&mut self, name: Option<(u64, &str)>, keys: u16) {
        self.keys |= keys;
        let i = self.enc.begin(tp::INTERNED_DATA);
        if let Some((iid, text)) = name {
            let n = self.enc.begin(interned_data::EVENT_NAMES);
            self.enc.varint(interned_string::IID, iid);
            self.enc.string(interned_string::NAME, text);
            self.enc.end(n);
        }
        for (bit, text) in KEYS.iter().enumerate() {
            if keys & 1 << bit != 0 {
                let n = self.enc.begin(interned_data::DEBUG_ANNOTATION_NAMES);
                self.enc.varint(interned_string::IID, bit as u64 + 1);
                self.enc.string(interned_string::NAME, text);
                self.enc.end(n);
            }
        }
        self.enc.end(i);
    }
}

fn sys_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::GotCall => "got call",
        EventKind::GotCast => "got cast",
        EventKind::GotInfo => "got info",
        EventKind::Sent => "sent",
        EventKind::NewState => "new state",
        EventKind::Send => "send",
        EventKind::Receive => "receive",
        EventKind::Got => "got",
        EventKind::Handled => "handled",
        _ => "event",
    }
}

impl EventSink for PerfettoWriter {
    fn event(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        e: &Event,
    ) -> io::Result<()> {
        let PerfettoWriter {
            packets,
            nodes,
            processes,
            flows,
        } = self;
        let p = process(processes, nodes, packets, out, (node, view, e.pid))?;
        let ts = e.timestamp_ns;
        let peer_label: String;
        let event = match e.kind {
            EventKind::Call => {
                let track = if packets.site(node, view, e.callsite).polled {
                    let track = match p.free.pop() {
                        Some(track) => track,
                        None => packets.track(out, Some(p.track), ASYNC_TRACK, None)?,
                    };
                    p.open.push(OpenAsync {
                        callsite: e.callsite,
                        track,
                        polled: false,
                    });
                    track
                } else {
                    p.current()
                };
                let mut event = TrackEvent::new(te::TYPE_SLICE_BEGIN, ts, track);
                if let Some(args) = &e.text {
                    event.annotations.push(Key::Args, Value::Text(args));
                }
                event.name = Some(packets.call_name(node, view, e.callsite));
                event
            }
            EventKind::In => {
                let Some(call) = p
                    .open
                    .iter_mut()
                    .rev()
                    .find(|o| o.callsite == e.callsite && !o.polled)
                else {
                    // Its call began before the trace: not drawn.
                    return Ok(());
                };
                call.polled = true;
                p.polling.push(call.track);
                let mut event = TrackEvent::new(te::TYPE_SLICE_BEGIN, ts, call.track);
                event.name = Some(packets.name(NameKey::Fixed("poll"), || "poll".into()));
                event
            }
            EventKind::Out => {
                let Some(call) = p
                    .open
                    .iter_mut()
                    .rev()
                    .find(|o| o.callsite == e.callsite && o.polled)
                else {
                    return Ok(());
                };
                call.polled = false;
                let track = call.track;
                if let Some(i) = p.polling.iter().rposition(|&t| t == track) {
                    p.polling.remove(i);
                }
                TrackEvent::new(te::TYPE_SLICE_END, ts, track)
            }
            EventKind::Return | EventKind::Exception => {
                let call = if packets.site(node, view, e.callsite).polled {
                    p.open
                        .iter()
                        .rposition(|o| o.callsite == e.callsite)
                        .map(|i| p.open.remove(i))
                } else {
                    None
                };
                let track = match call {
                    Some(call) => {
                        if call.polled {
                            // The poll unwound (a panic): it ends here.
                            if let Some(i) = p.polling.iter().rposition(|&t| t == call.track) {
                                p.polling.remove(i);
                            }
                            packets
                                .write(out, &TrackEvent::new(te::TYPE_SLICE_END, ts, call.track))?;
                        }
                        p.free.push(call.track);
                        call.track
                    }
                    None => p.current(),
                };
                let mut event = TrackEvent::new(te::TYPE_SLICE_END, ts, track);
                if e.kind == EventKind::Exception {
                    let message = e.text.as_deref().unwrap_or("");
                    let mut instant = TrackEvent::new(te::TYPE_INSTANT, ts, track);
                    instant.name =
                        Some(packets.name(NameKey::Fixed("exception"), || "exception".into()));
                    instant.annotations.push(Key::Message, Value::Text(message));
                    packets.write(out, &instant)?;
                    event.annotations.push(Key::Exception, Value::Text(message));
                } else {
                    if let Some(value) = &e.text {
                        event.annotations.push(Key::Result, Value::Text(value));
                    }
                    if let Some(busy) = e.busy_ns {
                        event.annotations.push(Key::BusyNs, Value::Uint(busy));
                    }
                }
                event
            }
            EventKind::Log => {
                let mut event = TrackEvent::new(te::TYPE_INSTANT, ts, p.current());
                if let Some(message) = &e.text {
                    event.annotations.push(Key::Message, Value::Text(message));
                }
                if let Some(span) = &e.extra {
                    event.annotations.push(Key::Span, Value::Text(span));
                }
                let key = NameKey::Callsite(node, e.callsite);
                event.name = Some(packets.name(key, || match view.callsite(e.callsite) {
                    Some(c) => format!(
                        "{} {}",
                        c.level.map_or("LOG", |l| l.as_str()),
                        c.log_target()
                    ),
                    None => "log".to_owned(),
                }));
                event
            }
            kind => {
                let mut event = TrackEvent::new(te::TYPE_INSTANT, ts, p.current());
                if let Some(message) = &e.text {
                    event.annotations.push(Key::Message, Value::Text(message));
                }
                if let Some(state) = &e.extra {
                    event.annotations.push(Key::State, Value::Text(state));
                }
                if let Some(peer) = e.peer {
                    peer_label = process_label(view, peer);
                    let key = if kind == EventKind::Send {
                        Key::To
                    } else {
                        Key::From
                    };
                    event.annotations.push(key, Value::Text(&peer_label));
                    match kind {
                        EventKind::Send => event.flow = Some(flows.send(node, e.pid, peer)),
                        EventKind::Receive => {
                            event.terminating_flow = Some(flows.receive(node, peer, e.pid));
                        }
                        _ => {}
                    }
                }
                let fixed = sys_name(kind);
                event.name = Some(packets.name(NameKey::Fixed(fixed), || fixed.into()));
                event
            }
        };
        packets.write(out, &event)
    }
}
