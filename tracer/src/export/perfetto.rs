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
//! Event names and debug annotation names are interned, as Perfetto's own
//! SDK does: each is written once, in the `InternedData` of the first
//! packet that uses it, and referred to by its `iid` after that. There is
//! one packet sequence; its first packet clears the incremental state, the
//! others need it.
//!
//! Packets are encoded by hand into one reused buffer, field by field,
//! with the names and numbers of Perfetto's published protos (the
//! [`field`] constants): no message is built per event. The tests decode
//! what this writes with the whole published `perfetto_trace.proto` and
//! find no field it does not know.

use std::io::{self, Write};

use nodetrace_protocol::{Event, EventKind, Pid};
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum NameKey {
    Callsite(usize, Option<u32>),
    Fixed(&'static str),
}

/// Writes events as Perfetto trace packets.
#[derive(Debug, Default)]
pub struct PerfettoWriter {
    started: bool,
    next_uuid: u64,
    nodes: HashMap<usize, u64>,
    tracks: HashMap<(usize, Pid), u64>,
    names: HashMap<NameKey, u64>,
    /// Annotation names interned so far, a bit per [`Key`].
    keys: u16,
    flows: Flows,
    enc: Encoder,
}

impl PerfettoWriter {
    /// A writer that has written nothing yet.
    pub fn new() -> PerfettoWriter {
        PerfettoWriter::default()
    }

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

    fn uuid(&mut self) -> u64 {
        self.next_uuid += 1;
        self.next_uuid
    }

    /// Writes a track descriptor: `process` (pid, name) makes it a
    /// process track.
    fn descriptor(
        &mut self,
        out: &mut dyn Write,
        uuid: u64,
        parent: Option<u64>,
        name: &str,
        process: Option<(Option<i32>, &str)>,
    ) -> io::Result<()> {
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
        self.end_packet(out, packet)
    }

    /// The track of `pid` on node `node`, described first if new.
    #[inline]
    fn track(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        pid: Pid,
    ) -> io::Result<u64> {
        match self.tracks.get(&(node, pid)) {
            Some(&uuid) => Ok(uuid),
            None => self.new_track(out, node, view, pid),
        }
    }

    #[cold]
    fn new_track(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        pid: Pid,
    ) -> io::Result<u64> {
        let parent = match self.nodes.get(&node) {
            Some(&uuid) => uuid,
            None => {
                let uuid = self.uuid();
                self.nodes.insert(node, uuid);
                let pid = i32::try_from(view.os_pid()).ok().filter(|&p| p > 0);
                self.descriptor(out, uuid, None, view.name(), Some((pid, view.name())))?;
                uuid
            }
        };
        let uuid = self.uuid();
        self.tracks.insert((node, pid), uuid);
        let name = format!("{} ({})", process_label(view, pid), view.name());
        self.descriptor(out, uuid, Some(parent), &name, None)?;
        Ok(uuid)
    }

    /// The interned id of an event name, and its text when it is new
    /// (the packet that uses it first interns it).
    #[inline]
    fn name(&mut self, key: NameKey, text: impl FnOnce() -> String) -> (u64, Option<String>) {
        if let Some(&iid) = self.names.get(&key) {
            return (iid, None);
        }
        let iid = self.names.len() as u64 + 1;
        self.names.insert(key, iid);
        (iid, Some(text()))
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
        let new_name = e.name.as_ref().and_then(|(iid, text)| Some((*iid, text.as_deref()?)));
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
        EventKind::Exception => "exception",
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
        let track = self.track(out, node, view, e.pid)?;
        let peer_label: String;
        let mut event = TrackEvent {
            ts: e.timestamp_ns,
            kind: te::TYPE_INSTANT,
            track,
            name: None,
            annotations: Annotations::default(),
            flow: None,
            terminating_flow: None,
        };
        match e.kind {
            EventKind::Call => {
                if let Some(args) = &e.text {
                    event.annotations.push(Key::Args, Value::Text(args));
                }
                event.kind = te::TYPE_SLICE_BEGIN;
                let key = NameKey::Callsite(node, e.callsite);
                event.name = Some(self.name(key, || call_name(view, e.callsite)));
            }
            EventKind::Return => {
                if let Some(value) = &e.text {
                    event.annotations.push(Key::Result, Value::Text(value));
                }
                if let Some(busy) = e.busy_ns {
                    event.annotations.push(Key::BusyNs, Value::Uint(busy));
                }
                event.kind = te::TYPE_SLICE_END;
            }
            EventKind::Exception => {
                let message = e.text.as_deref().unwrap_or("");
                let mut instant = TrackEvent {
                    ts: e.timestamp_ns,
                    kind: te::TYPE_INSTANT,
                    track,
                    name: Some(self.name(NameKey::Fixed("exception"), || "exception".into())),
                    annotations: Annotations::default(),
                    flow: None,
                    terminating_flow: None,
                };
                instant.annotations.push(Key::Message, Value::Text(message));
                self.write(out, &instant)?;
                event.annotations.push(Key::Exception, Value::Text(message));
                event.kind = te::TYPE_SLICE_END;
            }
            EventKind::Log => {
                if let Some(message) = &e.text {
                    event.annotations.push(Key::Message, Value::Text(message));
                }
                if let Some(span) = &e.extra {
                    event.annotations.push(Key::Span, Value::Text(span));
                }
                let key = NameKey::Callsite(node, e.callsite);
                event.name = Some(self.name(key, || match view.callsite(e.callsite) {
                    Some(c) => format!(
                        "{} {}",
                        c.level.map_or("LOG", |l| l.as_str()),
                        c.log_target()
                    ),
                    None => "log".to_owned(),
                }));
            }
            kind => {
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
                        EventKind::Send => event.flow = Some(self.flows.send(node, e.pid, peer)),
                        EventKind::Receive => {
                            event.terminating_flow = Some(self.flows.receive(node, peer, e.pid));
                        }
                        _ => {}
                    }
                }
                let fixed = sys_name(kind);
                event.name = Some(self.name(NameKey::Fixed(fixed), || fixed.into()));
            }
        }
        self.write(out, &event)
    }
}
