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
//! instants. Event names are interned (`InternedData.event_names`): one
//! packet sequence, its state cleared by its first packet.
//!
//! The message types are generated (prost) from an excerpt of Perfetto's
//! published protos, `tracer/proto/perfetto_trace_excerpt.proto`.

use std::io::{self, Write};

use nodetrace_protocol::{Event, EventKind, Pid};
use prost::Message;
use rustc_hash::FxHashMap as HashMap;

use super::{EventSink, Flows, call_name, process_label};
use crate::render::NodeView;

/// The Perfetto messages nodetrace writes, generated from the excerpt of
/// Perfetto's protos.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/perfetto.protos.rs"));
}

use pb::debug_annotation::{NameField as AnnotationName, Value};
use pb::trace_packet::{Data, OptionalTrustedPacketSequenceId, SequenceFlags};
use pb::track_descriptor::StaticOrDynamicName;
use pb::track_event::{NameField, Type};
use pb::{
    DebugAnnotation, EventName, InternedData, ProcessDescriptor, TracePacket, TrackDescriptor,
    TrackEvent,
};

/// The one packet sequence this writer emits.
const SEQUENCE: u32 = 1;

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
    flows: Flows,
    buf: Vec<u8>,
}

impl PerfettoWriter {
    /// A writer that has written nothing yet.
    pub fn new() -> PerfettoWriter {
        PerfettoWriter::default()
    }

    fn packet(&mut self, out: &mut dyn Write, mut packet: TracePacket) -> io::Result<()> {
        packet.optional_trusted_packet_sequence_id = Some(
            OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(SEQUENCE),
        );
        if !self.started {
            self.started = true;
            packet.sequence_flags = Some(SequenceFlags::SeqIncrementalStateCleared as u32);
        } else if packet.sequence_flags.is_none() {
            packet.sequence_flags = Some(SequenceFlags::SeqNeedsIncrementalState as u32);
        }
        self.buf.clear();
        // Field 1 of `Trace`, length-delimited: tag, length, the packet.
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut self.buf);
        prost::encoding::encode_varint(packet.encoded_len() as u64, &mut self.buf);
        packet
            .encode(&mut self.buf)
            .map_err(|e| io::Error::other(format!("encoding a Perfetto packet failed: {e}")))?;
        out.write_all(&self.buf)
    }

    fn uuid(&mut self) -> u64 {
        self.next_uuid += 1;
        self.next_uuid
    }

    /// The track of `pid` on node `node`, described first if new.
    fn track(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        pid: Pid,
    ) -> io::Result<u64> {
        if let Some(&uuid) = self.tracks.get(&(node, pid)) {
            return Ok(uuid);
        }
        let parent = match self.nodes.get(&node) {
            Some(&uuid) => uuid,
            None => {
                let uuid = self.uuid();
                self.nodes.insert(node, uuid);
                let descriptor = TrackDescriptor {
                    uuid: Some(uuid),
                    parent_uuid: None,
                    static_or_dynamic_name: Some(StaticOrDynamicName::Name(view.name().to_owned())),
                    process: Some(ProcessDescriptor {
                        pid: i32::try_from(view.os_pid()).ok().filter(|&p| p > 0),
                        process_name: Some(view.name().to_owned()),
                    }),
                };
                self.packet(
                    out,
                    TracePacket {
                        data: Some(Data::TrackDescriptor(descriptor)),
                        ..TracePacket::default()
                    },
                )?;
                uuid
            }
        };
        let uuid = self.uuid();
        self.tracks.insert((node, pid), uuid);
        let descriptor = TrackDescriptor {
            uuid: Some(uuid),
            parent_uuid: Some(parent),
            static_or_dynamic_name: Some(StaticOrDynamicName::Name(format!(
                "{} ({})",
                process_label(view, pid),
                view.name()
            ))),
            process: None,
        };
        self.packet(
            out,
            TracePacket {
                data: Some(Data::TrackDescriptor(descriptor)),
                ..TracePacket::default()
            },
        )?;
        Ok(uuid)
    }

    /// The interned id of an event name, and the entry to intern it with
    /// when it is new.
    fn name(&mut self, key: NameKey, text: impl FnOnce() -> String) -> (u64, Option<EventName>) {
        if let Some(&iid) = self.names.get(&key) {
            return (iid, None);
        }
        let iid = self.names.len() as u64 + 1;
        self.names.insert(key, iid);
        (
            iid,
            Some(EventName {
                iid: Some(iid),
                name: Some(text()),
            }),
        )
    }
}

fn text(name: &str, value: &str) -> DebugAnnotation {
    DebugAnnotation {
        name_field: Some(AnnotationName::Name(name.to_owned())),
        value: Some(Value::StringValue(value.to_owned())),
    }
}

fn uint(name: &str, value: u64) -> DebugAnnotation {
    DebugAnnotation {
        name_field: Some(AnnotationName::Name(name.to_owned())),
        value: Some(Value::UintValue(value)),
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
        let mut annotations = Vec::new();
        let mut flow_ids = Vec::new();
        let mut terminating_flow_ids = Vec::new();
        let (kind, name) = match e.kind {
            EventKind::Call => {
                if let Some(args) = &e.text {
                    annotations.push(text("args", args));
                }
                let key = NameKey::Callsite(node, e.callsite);
                (
                    Type::SliceBegin,
                    Some(self.name(key, || call_name(view, e.callsite))),
                )
            }
            EventKind::Return => {
                if let Some(value) = &e.text {
                    annotations.push(text("result", value));
                }
                if let Some(busy) = e.busy_ns {
                    annotations.push(uint("busy_ns", busy));
                }
                (Type::SliceEnd, None)
            }
            EventKind::Exception => {
                let message = e.text.as_deref().unwrap_or("");
                let (iid, new) = self.name(NameKey::Fixed("exception"), || "exception".into());
                self.packet(
                    out,
                    TracePacket {
                        timestamp: Some(e.timestamp_ns),
                        data: Some(Data::TrackEvent(TrackEvent {
                            r#type: Some(Type::Instant as i32),
                            track_uuid: Some(track),
                            name_field: Some(NameField::NameIid(iid)),
                            debug_annotations: vec![text("message", message)],
                            ..TrackEvent::default()
                        })),
                        interned_data: new.map(|n| InternedData {
                            event_names: vec![n],
                            ..InternedData::default()
                        }),
                        ..TracePacket::default()
                    },
                )?;
                annotations.push(text("exception", message));
                (Type::SliceEnd, None)
            }
            EventKind::Log => {
                if let Some(message) = &e.text {
                    annotations.push(text("message", message));
                }
                if let Some(span) = &e.extra {
                    annotations.push(text("span", span));
                }
                let key = NameKey::Callsite(node, e.callsite);
                let name = self.name(key, || match view.callsite(e.callsite) {
                    Some(c) => format!(
                        "{} {}",
                        c.level.map_or("LOG", |l| l.as_str()),
                        c.log_target()
                    ),
                    None => "log".to_owned(),
                });
                (Type::Instant, Some(name))
            }
            kind => {
                if let Some(message) = &e.text {
                    annotations.push(text("message", message));
                }
                if let Some(state) = &e.extra {
                    annotations.push(text("state", state));
                }
                if let Some(peer) = e.peer {
                    annotations.push(text(
                        if kind == EventKind::Send {
                            "to"
                        } else {
                            "from"
                        },
                        &process_label(view, peer),
                    ));
                    match kind {
                        EventKind::Send => flow_ids.push(self.flows.send(node, e.pid, peer)),
                        EventKind::Receive => {
                            terminating_flow_ids.push(self.flows.receive(node, peer, e.pid));
                        }
                        _ => {}
                    }
                }
                let fixed = sys_name(kind);
                (
                    Type::Instant,
                    Some(self.name(NameKey::Fixed(fixed), || fixed.into())),
                )
            }
        };
        let (name_field, interned) = match name {
            Some((iid, new)) => (Some(NameField::NameIid(iid)), new),
            None => (None, None),
        };
        self.packet(
            out,
            TracePacket {
                timestamp: Some(e.timestamp_ns),
                data: Some(Data::TrackEvent(TrackEvent {
                    r#type: Some(kind as i32),
                    track_uuid: Some(track),
                    name_field,
                    debug_annotations: annotations,
                    flow_ids,
                    terminating_flow_ids,
                    ..TrackEvent::default()
                })),
                interned_data: interned.map(|n| InternedData {
                    event_names: vec![n],
                    ..InternedData::default()
                }),
                ..TracePacket::default()
            },
        )
    }
}
