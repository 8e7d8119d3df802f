//! OpenTelemetry spans from traced calls, sent over OTLP/HTTP (protobuf)
//! to a backend (an OpenTelemetry Collector, Jaeger, Tempo...).
//!
//! One span per call/return pair, its parent the call it ran inside in the
//! same process (a call with none starts a trace of its own). A span's
//! resource is its node (`service.name`, `process.pid`), its attributes
//! the nodetrace pid, the process's registered name, the function's path,
//! arity, source, arguments and value (bounded); an exception ends a span
//! with status error and an `exception` event; messages, gen_server and
//! log events in a process are events of the span running there (none:
//! not exported), at most [`SPAN_EVENTS`] a span (more are counted in
//! `dropped_events_count`). A message (`trace calls --messages`) sent
//! from one span links it to the span it reaches: the receiving span links
//! to the sending one (`nodetrace.link.kind` `message_from`); received
//! where no span runs (a gen_server's loop), the next span of the
//! receiver, the one that handles it, does; when the receive was seen
//! first, the sending span links to the receiving one (`message_to`). At
//! most [`SPAN_LINKS`] a span.
//!
//! The tracer's thread builds each span, as it ends, as OpenTelemetry's
//! own `Span` message (`opentelemetry-proto`'s types) and prost encodes
//! it at once into the batch of its node, as a `ScopeSpans.spans` field,
//! so no span value waits in a queue and the senders only post. A batch of
//! [`BATCH_SPANS`], or one that has waited [`BATCH_DELAY`]
//! ([`OtlpExporter::tick`]), is offered to a bounded queue ([`QUEUE_SPANS`]
//! spans in whole batches; full: the batch's spans are dropped and
//! counted), so a slow or dead backend never slows the trace. [`SENDERS`]
//! threads of their own take batches from it, so that one posts while
//! another waits for the backend's answer; each POSTs a batch as one
//! `ExportTraceServiceRequest` over a kept-alive connection and retries,
//! at most [`ATTEMPTS`] times with exponential backoff, on 429, 502, 503,
//! 504 and on connection errors and timeouts. At the end of the trace it
//! has [`SHUTDOWN_GRACE`] to send what is queued; what is left is dropped
//! and counted. Every span made is counted once as exported, dropped or
//! rejected (a 4xx answer, or the backend's `partial_success`).
//!
//! Every message is one of the OpenTelemetry project's own types
//! (`opentelemetry-proto`), encoded by prost; a request is the node's
//! encoded `Resource` and the scope, with the batch's encoded spans, under
//! the three length prefixes of `ExportTraceServiceRequest`,
//! `ResourceSpans` and `ScopeSpans` (written with prost's encoding
//! functions). The tests decode the requests with the same types.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nodetrace_protocol::{Event, EventKind, Pid};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status::StatusCode};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use rustc_hash::FxHashMap as HashMap;

use super::{Flows, call_name};
use crate::render::NodeView;

/// Spans waiting to be sent, at most, in whole batches; a batch more is
/// dropped (and its spans counted).
pub const QUEUE_SPANS: usize = 8192;
/// Spans in one request, at most.
pub const BATCH_SPANS: usize = 1024;
/// Threads that send batches at once.
pub const SENDERS: usize = 2;
/// How long a batch waits to fill before it is sent anyway.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How long one request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries of one batch, the first included.
pub const ATTEMPTS: u32 = 5;
/// The first wait before a retry; each next one doubles, to at most 2 s.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long the exporter may go on sending after the trace ended.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bound on an attribute's text (arguments, values, messages), in bytes.
pub const ATTRIBUTE_BOUND: usize = 4096;
/// Events a span keeps, at most (OpenTelemetry SDKs' default limit).
pub const SPAN_EVENTS: u32 = 128;
/// Links a span keeps, at most (OpenTelemetry SDKs' default limit).
pub const SPAN_LINKS: u32 = 128;
/// OTLP/HTTP's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/traces";

/// The field numbers of the envelope around a batch's encoded spans, as
/// OpenTelemetry's published protos (`opentelemetry/proto/` in
/// open-telemetry/opentelemetry-proto) number them.
mod field {
    /// `ExportTraceServiceRequest.resource_spans` (`repeated ResourceSpans
    /// resource_spans = 1`, collector/trace/v1/trace_service.proto).
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    /// `ResourceSpans.resource` (`Resource resource = 1`, trace/v1/trace.proto).
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    /// `ResourceSpans.scope_spans` (`repeated ScopeSpans scope_spans = 2`).
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    /// `ScopeSpans.scope` (`InstrumentationScope scope = 1`).
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    /// `ScopeSpans.spans` (`repeated Span spans = 2`).
    pub const SCOPE_SPANS_SPANS: u32 = 2;
}

/// Where spans go and with which headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full URL spans are POSTed to (`.../v1/traces`).
    pub endpoint: String,
    /// Extra request headers (authentication, tenant).
    pub headers: Vec<(String, String)>,
}

impl OtlpConfig {
    /// The configuration for `--otlp [URL]`, reading OpenTelemetry's own
    /// variables through `env`: a URL given with no path gets
    /// `/v1/traces`; none given, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is,
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces`, else
    /// [`DEFAULT_ENDPOINT`]. Headers from `OTEL_EXPORTER_OTLP_TRACES_HEADERS`,
    /// else `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`, values
    /// percent-encoded).
    pub fn resolve(
        given: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<OtlpConfig, String> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let endpoint = match given.filter(|g| !g.is_empty()) {
            Some(url) => with_traces_path(url, false)?,
            None => match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(url) => with_traces_path(&url, false)?,
                None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(url) => with_traces_path(&url, true)?,
                    None => DEFAULT_ENDPOINT.to_owned(),
                },
            },
        };
        let headers = match var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            Some(text) => parse_headers(&text)?,
            None => Vec::new(),
        };
        Ok(OtlpConfig { endpoint, headers })
    }
}

/// `url` checked (plain HTTP), with `/v1/traces` added when it has no
/// path or when `base` (a base endpoint, as OpenTelemetry's variable is).
fn with_traces_path(url: &str, base: bool) -> Result<String, String> {
    let url = url.trim();
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            format!(
                "cannot export to {url}: this nodetrace speaks plain HTTP only; export to a local OpenTelemetry Collector (http://localhost:4318) that forwards over TLS"
            )
        } else {
            format!("cannot export to {url}: give an http:// URL, e.g. {DEFAULT_ENDPOINT}")
        });
    };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    Ok(if base || path.is_empty() || path == "/" {
        format!("{}/v1/traces", url.trim_end_matches('/'))
    } else {
        url.to_owned()
    })
}

fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|h| !h.trim().is_empty())
        .map(|h| {
            let (k, v) = h.split_once('=').ok_or_else(|| {
                format!("OTEL_EXPORTER_OTLP_HEADERS: `{h}` is not key=value (give key=value,key2=value2)")
            })?;
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .map_err(|_| format!("OTEL_EXPORTER_OTLP_HEADERS: the value of `{}` is not UTF-8 once decoded", k.trim()))?;
            Ok((k.trim().to_owned(), v.into_owned()))
        })
        .collect()
}

/// What became of the spans of a trace. `spans = exported + dropped +
/// rejected`; calls still running at the end made no span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtlpCounts {
    /// Spans made (call/return pairs).
    pub spans: u64,
    /// Spans the backend accepted.
    pub exported: u64,
    /// Spans dropped: the queue was full, or the backend could not be
    /// reached in [`ATTEMPTS`] tries or before [`SHUTDOWN_GRACE`] ran out.
    pub dropped: u64,
    /// Spans the backend refused (a 4xx answer but 429, or its
    /// `partial_success.rejected_spans`).
    pub rejected: u64,
    /// Requests tried again.
    pub retries: u64,
    /// Calls with no return by the end: no span.
    pub unfinished: u64,
}

#[derive(Debug, Default)]
struct Shared {
    exported: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    deadline: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn past_deadline(&self) -> bool {
        self.deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| Instant::now() >= d)
    }

    fn note_error(&self, text: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }
}

/// Spans of one node, encoded as `ScopeSpans.spans` fields, to be sent as
/// one request.
#[derive(Debug)]
struct Batch {
    /// The node's `Resource`, encoded.
    resource: Arc<[u8]>,
    spans: u64,
    /// The spans, each a `ScopeSpans.spans` field.
    body: Vec<u8>,
    started: Instant,
}

/// A span's identity: its trace and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Context {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

/// Events or links of an open span, at most `limit` of them; the others
/// counted.
#[derive(Debug)]
struct Bounded<T> {
    items: Vec<T>,
    dropped: u32,
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Bounded {
            items: Vec::new(),
            dropped: 0,
        }
    }
}

impl<T> Bounded<T> {
    /// Keeps `item` if there is room for it under `limit`, else counts it.
    fn push(&mut self, limit: u32, item: impl FnOnce() -> T) {
        if self.items.len() < limit as usize {
            self.items.push(item());
        } else {
            self.dropped += 1;
        }
    }
}

#[derive(Debug)]
struct OpenSpan {
    callsite: Option<u32>,
    context: Context,
    parent: Option<[u8; 8]>,
    start_ns: u64,
    args: Option<String>,
    events: Bounded<span::Event>,
    links: Bounded<span::Link>,
}

impl OpenSpan {
    /// Links the span to `to` (at most [`SPAN_LINKS`]; more are counted).
    fn link(&mut self, to: Context, kind: &str) {
        self.links.push(SPAN_LINKS, || span::Link {
            trace_id: to.trace_id.to_vec(),
            span_id: to.span_id.to_vec(),
            attributes: vec![text("nodetrace.link.kind", kind)],
            ..span::Link::default()
        });
    }
}

/// A process's open spans, innermost last, and the attributes its spans
/// carry (`nodetrace.pid`, `nodetrace.process.name`).
#[derive(Debug, Default)]
struct Process {
    stack: Vec<OpenSpan>,
    attributes: Option<Vec<KeyValue>>,
    named: bool,
    /// Spans that sent the messages it received while no span of its own
    /// was open: its next span (the one that handles them) links to them.
    received: Vec<Context>,
}

/// A callsite's span name and the attributes its spans carry.
#[derive(Debug)]
struct Site {
    name: String,
    attributes: Vec<KeyValue>,
}

/// Distinct, well spread span and trace ids: splitmix64 over a random start.
#[derive(Debug)]
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).max(1)
    }

    fn root(&mut self) -> Context {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&self.next().to_be_bytes());
        trace_id[8..].copy_from_slice(&self.next().to_be_bytes());
        Context {
            trace_id,
            span_id: self.next().to_be_bytes(),
        }
    }
}

/// Turns events into encoded spans, batch by batch; the transport is the
/// caller's (`ship`).
#[derive(Debug)]
struct Spans {
    spans: u64,
    unfinished: u64,
    processes: HashMap<(usize, Pid), Process>,
    sites: HashMap<(usize, Option<u32>), Site>,
    /// By node number.
    resources: Vec<Option<Arc<[u8]>>>,
    batches: Vec<Option<Batch>>,
    /// The span a message was sent or received in, for links.
    messages: Flows<Option<Context>>,
    ids: Ids,
    /// Buffers of sent batches, to fill again.
    spare: Option<Receiver<Vec<u8>>>,
}

impl Spans {
    fn new(seed: u64, spare: Option<Receiver<Vec<u8>>>) -> Spans {
        Spans {
            spans: 0,
            unfinished: 0,
            processes: HashMap::default(),
            sites: HashMap::default(),
            resources: Vec::new(),
            batches: Vec::new(),
            messages: Flows::default(),
            ids: Ids(seed),
            spare,
        }
    }

    /// Takes one event of node number `node`; a batch it fills goes to
    /// `ship`.
    fn event(&mut self, node: usize, view: &NodeView, e: &Event, ship: &mut dyn FnMut(Batch)) {
        if self.resources.len() <= node {
            self.resources.resize(node + 1, None);
            self.batches.resize_with(node + 1, || None);
        }
        if self.resources[node].is_none() {
            self.resources[node] = Some(resource(view).encode_to_vec().into());
        }
        match e.kind {
            EventKind::Call => {
                let process = self.processes.entry((node, e.pid)).or_default();
                let (context, parent) = match process.stack.last() {
                    Some(p) => (
                        Context {
                            trace_id: p.context.trace_id,
                            span_id: self.ids.next().to_be_bytes(),
                        },
                        Some(p.context.span_id),
                    ),
                    None => (self.ids.root(), None),
                };
                let mut open = OpenSpan {
                    callsite: e.callsite,
                    context,
                    parent,
                    start_ns: e.timestamp_ns,
                    args: e.text.clone(),
                    events: Bounded::default(),
                    links: Bounded::default(),
                };
                for from in process.received.drain(..) {
                    open.link(from, "message_from");
                }
                process.stack.push(open);
            }
            EventKind::Return | EventKind::Exception => self.end(node, view, e, ship),
            // A span's busy time is on its return; its polls one by one
            // are a timeline's.
            EventKind::In | EventKind::Out => {}
            kind => self.in_span(node, view, kind, e),
        }
    }

    /// A message, gen_server or log event: an event of the span open in
    /// its process, and a message a link between spans.
    fn in_span(&mut self, node: usize, view: &NodeView, kind: EventKind, e: &Event) {
        let key = (node, e.pid);
        let here = self
            .processes
            .get(&key)
            .and_then(|p| p.stack.last())
            .map(|s| s.context);
        let link = match (kind, e.peer) {
            (EventKind::Send, Some(to)) => self
                .messages
                .send_with(node, e.pid, to, here)
                .1
                .flatten()
                .map(|c| (c, "message_to")),
            (EventKind::Receive, Some(from)) => self
                .messages
                .receive_with(node, from, e.pid, here)
                .1
                .flatten()
                .map(|c| (c, "message_from")),
            _ => None,
        };
        let process = self.processes.entry(key).or_default();
        let Some(open) = process.stack.last_mut() else {
            // Received with no span open: the span that handles it links.
            if let Some((from, "message_from")) = link
                && process.received.len() < SPAN_LINKS as usize
            {
                process.received.push(from);
            }
            return;
        };
        if let Some((to, link_kind)) = link {
            open.link(to, link_kind);
        }
        let name = match kind {
            EventKind::Send => "message.send",
            EventKind::Receive => "message.receive",
            EventKind::Log => "log",
            EventKind::GotCall => "gen_server.got_call",
            EventKind::GotCast => "gen_server.got_cast",
            EventKind::GotInfo => "gen_server.got_info",
            EventKind::Sent => "gen_server.sent",
            EventKind::Got => "mailbox.got",
            EventKind::Handled => "mailbox.handled",
            _ => "gen_server.new_state",
        };
        open.events.push(SPAN_EVENTS, || {
            let mut attributes = Vec::new();
            if let Some(peer) = e.peer {
                attributes.push(text("nodetrace.peer", &peer.to_string()));
                if let Some(name) = view.registered_name(peer) {
                    attributes.push(text("nodetrace.peer.name", name));
                }
            }
            if let Some(message) = &e.text {
                attributes.push(text("nodetrace.message", message));
            }
            if let Some(extra) = &e.extra {
                let key = if kind == EventKind::Log {
                    "nodetrace.span"
                } else {
                    "nodetrace.state"
                };
                attributes.push(text(key, extra));
            }
            if kind == EventKind::Log
                && let Some(level) = view.callsite(e.callsite).and_then(|c| c.level)
            {
                attributes.push(text("log.level", level.as_str()));
            }
            if let Some(ns) = e.duration_ns.filter(|_| kind == EventKind::Handled) {
                attributes.push(int("nodetrace.duration_ns", ns));
            }
            span::Event {
                time_unix_nano: e.timestamp_ns,
                name: name.to_owned(),
                attributes,
                dropped_attributes_count: 0,
            }
        });
    }

    /// A return or an exception: the span of its call ends, encoded into
    /// its node's batch.
    fn end(&mut self, node: usize, view: &NodeView, e: &Event, ship: &mut dyn FnMut(Batch)) {
        let process = self.processes.entry((node, e.pid)).or_default();
        let open = match process.stack.iter().rposition(|c| c.callsite == e.callsite) {
            Some(i) => {
                let mut above = process.stack.drain(i..);
                let open = above.next();
                self.unfinished += above.count() as u64;
                open
            }
            None => None,
        };
        // Its call was not seen: a root span of its own.
        let open = open.unwrap_or_else(|| OpenSpan {
            callsite: e.callsite,
            context: self.ids.root(),
            parent: None,
            start_ns: e
                .timestamp_ns
                .saturating_sub(e.duration_ns.unwrap_or_default()),
            args: None,
            events: Bounded::default(),
            links: Bounded::default(),
        });
        let name = view.registered_name(e.pid);
        if process.attributes.is_none() || (!process.named && name.is_some()) {
            let mut a = vec![text("nodetrace.pid", &e.pid.to_string())];
            if let Some(name) = name {
                a.push(text("nodetrace.process.name", name));
            }
            process.attributes = Some(a);
            process.named = name.is_some();
        }
        let site = self
            .sites
            .entry((node, e.callsite))
            .or_insert_with(|| site(view, e.callsite));
        let batch = self.batches[node].get_or_insert_with(|| Batch {
            resource: self.resources[node].clone().unwrap_or_default(),
            spans: 0,
            body: self
                .spare
                .as_ref()
                .and_then(|r| r.try_recv().ok())
                .unwrap_or_else(|| Vec::with_capacity(BATCH_SPANS * 256)),
            started: Instant::now(),
        });
        let attributes = process.attributes.as_deref().unwrap_or_default();
        encode_span(&mut batch.body, open, site, attributes, e);
        batch.spans += 1;
        self.spans += 1;
        if batch.spans >= BATCH_SPANS as u64
            && let Some(full) = self.batches[node].take()
        {
            ship(full);
        }
    }

    /// Ships the batches that have waited [`BATCH_DELAY`] by `now`.
    fn due(&mut self, now: Instant, ship: &mut dyn FnMut(Batch)) {
        for slot in &mut self.batches {
            if slot
                .as_ref()
                .is_some_and(|b| now.duration_since(b.started) >= BATCH_DELAY)
                && let Some(batch) = slot.take()
            {
                ship(batch);
            }
        }
    }

    /// Ships every batch; the calls still open are counted as unfinished.
    fn finish(&mut self, ship: &mut dyn FnMut(Batch)) {
        for batch in self.batches.iter_mut().filter_map(Option::take) {
            ship(batch);
        }
        self.unfinished += self
            .processes
            .drain()
            .map(|(_, p)| p.stack.len() as u64)
            .sum::<u64>();
    }
}

/// Appends the span of `open`, ended by `e`, to `body` as a
/// `ScopeSpans.spans` field.
fn encode_span(body: &mut Vec<u8>, open: OpenSpan, site: &Site, process: &[KeyValue], e: &Event) {
    let exception = e.kind == EventKind::Exception;
    let message = e.text.as_deref().unwrap_or_default();
    let mut attributes = Vec::with_capacity(site.attributes.len() + process.len() + 3);
    attributes.extend_from_slice(&site.attributes);
    attributes.extend_from_slice(process);
    if let Some(args) = &open.args {
        attributes.push(text("nodetrace.args", args));
    }
    if !exception && let Some(value) = &e.text {
        attributes.push(text("nodetrace.result", value));
    }
    if let Some(busy) = e.busy_ns {
        attributes.push(int("nodetrace.busy_ns", busy));
    }
    let mut events = open.events;
    let mut status = None;
    if exception {
        events.push(SPAN_EVENTS, || span::Event {
            time_unix_nano: e.timestamp_ns,
            name: "exception".to_owned(),
            attributes: vec![
                text("exception.type", "panic"),
                text("exception.message", message),
            ],
            dropped_attributes_count: 0,
        });
        let (head, tail) = bounded(message);
        status = Some(Status {
            message: format!("{head}{tail}"),
            code: StatusCode::Error as i32,
        });
    }
    let span = Span {
        trace_id: open.context.trace_id.to_vec(),
        span_id: open.context.span_id.to_vec(),
        parent_span_id: open.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: site.name.clone(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: open.start_ns,
        end_time_unix_nano: e.timestamp_ns.max(open.start_ns),
        attributes,
        events: events.items,
        dropped_events_count: events.dropped,
        links: open.links.items,
        dropped_links_count: open.links.dropped,
        status,
        ..Span::default()
    };
    prost::encoding::message::encode(field::SCOPE_SPANS_SPANS, &span, body);
}

/// A string attribute, its value bounded to [`ATTRIBUTE_BOUND`].
fn text(key: &str, value: &str) -> KeyValue {
    let (head, tail) = bounded(value);
    let mut value = String::with_capacity(head.len() + tail.len());
    value.push_str(head);
    value.push_str(tail);
    string(key, value)
}

/// An int attribute.
fn int(key: &str, value: u64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(Value::IntValue(value.min(i64::MAX as u64) as i64)),
        }),
    }
}

/// Turns a trace's events into spans and exports them (see the module).
pub struct OtlpExporter {
    endpoint: String,
    tx: Option<Sender<Batch>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    spans: Spans,
    dropped_full: u64,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.endpoint)
            .field("spans", &self.spans.spans)
            .finish_non_exhaustive()
    }
}

/// Offers `batch` to the queue; a full queue drops it, counted.
fn offer(tx: Option<&Sender<Batch>>, dropped: &mut u64, batch: Batch) {
    let spans = batch.spans;
    let Some(tx) = tx else {
        *dropped += spans;
        return;
    };
    match tx.try_send(batch) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => *dropped += spans,
    }
}

impl OtlpExporter {
    /// Starts the exporting threads for `config`.
    pub fn start(config: OtlpConfig) -> std::io::Result<OtlpExporter> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_SPANS / BATCH_SPANS);
        // A buffer for each batch that can be queued or in a sender's hands.
        let (spare_tx, spare) = crossbeam_channel::bounded(QUEUE_SPANS / BATCH_SPANS + SENDERS);
        let shared = Arc::new(Shared::default());
        let endpoint = config.endpoint.clone();
        let mut threads = Vec::new();
        for _ in 0..SENDERS {
            threads.push(thread::Builder::new().name("otlp export".into()).spawn({
                let (shared, rx, config) = (shared.clone(), rx.clone(), config.clone());
                let spare = spare_tx.clone();
                move || export(rx, &spare, config, &shared)
            })?);
        }
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        Ok(OtlpExporter {
            endpoint,
            tx: Some(tx),
            threads,
            shared,
            spans: Spans::new(u64::from_le_bytes(seed), Some(spare)),
            dropped_full: 0,
        })
    }

    /// Where the spans go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Takes one event of node number `node`.
    pub fn event(&mut self, node: usize, view: &NodeView, e: &Event) {
        let (tx, dropped) = (self.tx.as_ref(), &mut self.dropped_full);
        self.spans
            .event(node, view, e, &mut |batch| offer(tx, dropped, batch));
    }

    /// Sends the batches that have waited [`BATCH_DELAY`]: to be called
    /// between events, however few come.
    pub fn tick(&mut self) {
        let (tx, dropped) = (self.tx.as_ref(), &mut self.dropped_full);
        self.spans
            .due(Instant::now(), &mut |batch| offer(tx, dropped, batch));
    }

    /// Ends the export: sends what is queued (for at most
    /// [`SHUTDOWN_GRACE`]), stops the threads and counts.
    pub fn finish(&mut self) -> OtlpCounts {
        let (tx, dropped) = (self.tx.as_ref(), &mut self.dropped_full);
        self.spans.finish(&mut |batch| offer(tx, dropped, batch));
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + SHUTDOWN_GRACE);
        self.tx = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let s = &self.shared;
        OtlpCounts {
            spans: self.spans.spans,
            exported: s.exported.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst) + self.dropped_full,
            rejected: s.rejected.load(Ordering::SeqCst),
            retries: s.retries.load(Ordering::SeqCst),
            unfinished: self.spans.unfinished,
        }
    }

    /// The last error the backend or the connection gave, if any.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.finish();
        }
    }
}

/// The one line that says what became of the spans.
pub fn summary(endpoint: &str, c: &OtlpCounts, last_error: Option<&str>) -> String {
    let mut line = format!(
        "otlp export to {endpoint}: {} spans, {} exported, {} dropped, {} rejected, {} {}",
        c.spans,
        c.exported,
        c.dropped,
        c.rejected,
        c.retries,
        if c.retries == 1 { "retry" } else { "retries" }
    );
    if c.unfinished > 0 {
        line.push_str(&format!(
            "; {} calls still running at the end (no span)",
            c.unfinished
        ));
    }
    if let Some(e) = last_error.filter(|_| c.exported < c.spans) {
        line.push_str(&format!("; last error: {e}"));
    }
    line
}

/// `text` cut to [`ATTRIBUTE_BOUND`] bytes on a char boundary, and the
/// mark of the cut (`…`) if it was.
fn bounded(text: &str) -> (&str, &'static str) {
    if text.len() <= ATTRIBUTE_BOUND {
        return (text, "");
    }
    let mut end = ATTRIBUTE_BOUND;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], "…")
}

fn string(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
    }
}

fn resource(view: &NodeView) -> Resource {
    let mut attributes = vec![
        string("service.name", view.name().to_owned()),
        string("telemetry.sdk.name", "nodetrace".to_owned()),
    ];
    if view.os_pid() > 0 {
        attributes.push(KeyValue {
            key: "process.pid".to_owned(),
            key_strindex: 0,
            value: Some(AnyValue {
                value: Some(Value::IntValue(i64::from(view.os_pid()))),
            }),
        });
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// A callsite's span name and the attributes every span of it carries.
fn site(view: &NodeView, callsite: Option<u32>) -> Site {
    let name = call_name(view, callsite);
    let mut attributes = Vec::new();
    if let Some(c) = view.callsite(callsite) {
        attributes.push(text("code.function.name", &c.rust_path()));
        attributes.push(int("nodetrace.arity", u64::from(c.arity)));
        attributes.push(text("code.file.path", &c.file));
        attributes.push(int("code.line.number", u64::from(c.line)));
        if let Some(level) = c.level {
            attributes.push(text("nodetrace.level", level.as_str()));
        }
    }
    Site { name, attributes }
}

/// The `InstrumentationScope` every request names, encoded.
fn scope() -> Vec<u8> {
    InstrumentationScope {
        name: "nodetrace".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    }
    .encode_to_vec()
}

fn export(rx: Receiver<Batch>, spare: &Sender<Vec<u8>>, config: OtlpConfig, shared: &Shared) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into();
    let scope = scope();
    let mut body = Vec::new();
    for batch in rx.iter() {
        if shared.past_deadline() {
            let left = batch.spans + rx.try_iter().map(|b| b.spans).sum::<u64>();
            shared.dropped.fetch_add(left, Ordering::SeqCst);
            continue;
        }
        request(&mut body, &batch, &scope);
        let mut used = batch.body;
        used.clear();
        let _ = spare.try_send(used);
        send(&agent, &config, shared, &body, batch.spans);
    }
}

/// Writes the `ExportTraceServiceRequest` of `batch` into `into`: one
/// `ResourceSpans` (the node's encoded `Resource`) with one `ScopeSpans`
/// (the encoded scope, then the batch's spans), each under its field's
/// key and length.
fn request(into: &mut Vec<u8>, batch: &Batch, scope: &[u8]) {
    let delimited = |field: u32, len: usize| key_len(field) + encoded_len_varint(len as u64) + len;
    let header = |into: &mut Vec<u8>, field: u32, len: usize| {
        encode_key(field, WireType::LengthDelimited, into);
        encode_varint(len as u64, into);
    };
    into.clear();
    let scope_spans = delimited(field::SCOPE_SPANS_SCOPE, scope.len()) + batch.body.len();
    let resource_spans = delimited(field::RESOURCE_SPANS_RESOURCE, batch.resource.len())
        + delimited(field::RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
    header(into, field::REQUEST_RESOURCE_SPANS, resource_spans);
    header(into, field::RESOURCE_SPANS_RESOURCE, batch.resource.len());
    into.extend_from_slice(&batch.resource);
    header(into, field::RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
    header(into, field::SCOPE_SPANS_SCOPE, scope.len());
    into.extend_from_slice(scope);
    into.extend_from_slice(&batch.body);
}

fn send(agent: &ureq::Agent, config: &OtlpConfig, shared: &Shared, body: &[u8], n: u64) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            if shared.past_deadline() {
                break;
            }
            shared.retries.fetch_add(1, Ordering::SeqCst);
            thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        let mut post = agent
            .post(&config.endpoint)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in &config.headers {
            post = post.header(k, v);
        }
        match post.send(body) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                match status {
                    200..=299 => {
                        let rejected = response
                            .body_mut()
                            .read_to_vec()
                            .ok()
                            .and_then(|b| ExportTraceServiceResponse::decode(&b[..]).ok())
                            .and_then(|r| r.partial_success)
                            .map_or(0, |p| {
                                if p.rejected_spans > 0 && !p.error_message.is_empty() {
                                    shared.note_error(p.error_message.clone());
                                }
                                u64::try_from(p.rejected_spans).unwrap_or(0).min(n)
                            });
                        shared.rejected.fetch_add(rejected, Ordering::SeqCst);
                        shared.exported.fetch_add(n - rejected, Ordering::SeqCst);
                        return;
                    }
                    429 | 502 | 503 | 504 => {
                        shared.note_error(format!("HTTP {status} from {}", config.endpoint));
                    }
                    _ => {
                        shared.note_error(format!("HTTP {status} from {}", config.endpoint));
                        shared.rejected.fetch_add(n, Ordering::SeqCst);
                        return;
                    }
                }
            }
            Err(e) => shared.note_error(format!("{}: {e}", config.endpoint)),
        }
    }
    shared.dropped.fetch_add(n, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn endpoints_follow_opentelemetry_s_variables() {
        let none = env(&[]);
        let r = |g, e: &dyn Fn(&str) -> Option<String>| OtlpConfig::resolve(g, e).unwrap().endpoint;
        assert_eq!(r(None, &none), DEFAULT_ENDPOINT);
        assert_eq!(r(Some("http://h:4318"), &none), "http://h:4318/v1/traces");
        assert_eq!(r(Some("http://h:4318/"), &none), "http://h:4318/v1/traces");
        assert_eq!(r(Some("http://h:9/x/y"), &none), "http://h:9/x/y");
        let base = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/otlp/")]);
        assert_eq!(r(None, &base), "http://c:4318/otlp/v1/traces");
        assert_eq!(r(Some("http://h:1"), &base), "http://h:1/v1/traces");
        let traces = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/in"),
        ]);
        assert_eq!(r(None, &traces), "http://t:1/in");
        let https = OtlpConfig::resolve(Some("https://api.honeycomb.io"), &none).unwrap_err();
        assert!(https.contains("plain HTTP only"), "{https}");
    }

    #[test]
    fn headers_are_key_value_pairs_percent_decoded() {
        let e = env(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-honeycomb-team=abc%20def, tenant = t1",
        )]);
        let c = OtlpConfig::resolve(None, &e).unwrap();
        assert_eq!(
            c.headers,
            vec![
                ("x-honeycomb-team".to_owned(), "abc def".to_owned()),
                ("tenant".to_owned(), "t1".to_owned())
            ]
        );
        let bad = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]);
        assert!(OtlpConfig::resolve(None, &bad).is_err());
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let text = "é".repeat(ATTRIBUTE_BOUND);
        let (head, tail) = bounded(&text);
        assert!(head.len() <= ATTRIBUTE_BOUND && text.starts_with(head));
        assert_eq!(tail, "…");
        assert_eq!(bounded("short"), ("short", ""));
    }

    use nodetrace_protocol::CallsiteInfo;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};

    fn view() -> NodeView {
        let site = |id, function: &str| CallsiteInfo {
            id,
            module: "m".into(),
            function: function.into(),
            arity: 1,
            file: "src/m.rs".into(),
            line: 7,
            ..CallsiteInfo::default()
        };
        let mut v = NodeView::new("n@h", [site(0, "outer"), site(1, "inner")]);
        v.set_os_pid(42);
        v.register(Pid::process(1), "worker");
        v
    }

    fn ev(kind: EventKind, pid: u64, callsite: u32, at: u64) -> Event {
        Event {
            kind,
            pid: Pid::process(pid),
            peer: None,
            callsite: Some(callsite),
            timestamp_ns: 1_800_000_000_000_000_000 + at,
            duration_ns: None,
            busy_ns: None,
            text: None,
            extra: None,
        }
    }

    /// The requests `events` make, decoded with opentelemetry-proto's
    /// types, each checked to be byte for byte what prost writes for it
    /// (no field it does not know, fields in order, lengths minimal).
    fn requests(events: &[Event]) -> (Vec<ExportTraceServiceRequest>, Spans) {
        let view = view();
        let mut spans = Spans::new(7, None);
        let mut batches = Vec::new();
        for e in events {
            spans.event(0, &view, e, &mut |b| batches.push(b));
        }
        spans.finish(&mut |b| batches.push(b));
        let scope = scope();
        let decoded = batches
            .iter()
            .map(|b| {
                let mut body = Vec::new();
                request(&mut body, b, &scope);
                let r = ExportTraceServiceRequest::decode(body.as_slice()).expect("a request");
                assert_eq!(r.encode_to_vec(), body, "what prost writes");
                r
            })
            .collect();
        (decoded, spans)
    }

    fn spans_of(requests: &[ExportTraceServiceRequest]) -> Vec<Span> {
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn spans_are_what_opentelemetry_s_types_read_nested_with_events_and_status() {
        let long = "a".repeat(ATTRIBUTE_BOUND + 10);
        let events = [
            Event {
                text: Some("1".into()),
                ..ev(EventKind::Call, 1, 0, 0)
            },
            Event {
                text: Some(long.clone()),
                ..ev(EventKind::Call, 1, 1, 10)
            },
            Event {
                text: Some("hello".into()),
                peer: Some(Pid::process(2)),
                ..ev(EventKind::Send, 1, 0, 20)
            },
            Event {
                text: Some("Ok(2)".into()),
                busy_ns: Some(5),
                duration_ns: Some(20),
                ..ev(EventKind::Return, 1, 1, 30)
            },
            Event {
                text: Some("panicked at src/m.rs:1:1:\nboom".into()),
                duration_ns: Some(40),
                ..ev(EventKind::Exception, 1, 0, 40)
            },
        ];
        let (requests, counted) = requests(&events);
        assert_eq!(counted.spans, 2);
        assert_eq!(counted.unfinished, 0);
        assert_eq!(requests.len(), 1);
        let rs = &requests[0].resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        assert!(
            resource
                .attributes
                .iter()
                .any(|kv| kv.key == "service.name")
        );
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "nodetrace");
        let spans = spans_of(&requests);
        let (inner, outer) = (&spans[0], &spans[1]);
        assert_eq!(inner.name, "m:inner/1");
        assert_eq!(outer.name, "m:outer/1");
        assert_eq!(inner.parent_span_id, outer.span_id);
        assert_eq!(inner.trace_id, outer.trace_id);
        assert!(outer.parent_span_id.is_empty());
        assert_eq!((inner.trace_id.len(), inner.span_id.len()), (16, 8));
        assert_eq!(inner.kind, SpanKind::Internal as i32);
        assert_eq!(inner.end_time_unix_nano - inner.start_time_unix_nano, 20);
        let Some(Value::StringValue(args)) = attr(inner, "nodetrace.args") else {
            panic!("{inner:?}")
        };
        assert_eq!(args.len(), ATTRIBUTE_BOUND + '…'.len_utf8());
        assert_eq!(attr(inner, "nodetrace.busy_ns"), Some(&Value::IntValue(5)));
        assert_eq!(
            attr(inner, "nodetrace.process.name"),
            Some(&Value::StringValue("worker".into()))
        );
        assert_eq!(attr(inner, "code.line.number"), Some(&Value::IntValue(7)));
        // The send happened in the outer call, after the inner one began
        // and before it ended: the inner call was the one open.
        assert_eq!(inner.events.len(), 1);
        assert_eq!(inner.events[0].name, "message.send");
        let status = outer.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert!(status.message.contains("boom"));
        assert_eq!(outer.events.last().unwrap().name, "exception");
        assert_eq!(attr(outer, "nodetrace.result"), None);
    }

    #[test]
    fn a_message_links_the_span_it_was_sent_from_and_the_one_it_was_received_in() {
        let (a, b) = (Pid::process(1), Pid::process(2));
        let send = |at| Event {
            peer: Some(b),
            text: Some("m".into()),
            ..ev(EventKind::Send, 1, 0, at)
        };
        let receive = |at| Event {
            peer: Some(a),
            text: Some("m".into()),
            ..ev(EventKind::Receive, 2, 1, at)
        };
        let events = [
            ev(EventKind::Call, 1, 0, 0),
            ev(EventKind::Call, 2, 1, 1),
            // Seen in the order sent, then received ...
            send(2),
            receive(3),
            // ... and received first (events of two threads).
            receive(5),
            send(4),
            ev(EventKind::Return, 2, 1, 6),
            ev(EventKind::Return, 1, 0, 7),
        ];
        let (requests, _) = requests(&events);
        let spans = spans_of(&requests);
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let (sender, receiver) = (by_name("m:outer/1"), by_name("m:inner/1"));
        let kind = |l: &opentelemetry_proto::tonic::trace::v1::span::Link| {
            l.attributes
                .iter()
                .find(|kv| kv.key == "nodetrace.link.kind")
                .and_then(|kv| kv.value.as_ref()?.value.clone())
        };
        assert_eq!(receiver.links.len(), 1);
        assert_eq!(receiver.links[0].span_id, sender.span_id);
        assert_eq!(receiver.links[0].trace_id, sender.trace_id);
        assert_eq!(
            kind(&receiver.links[0]),
            Some(Value::StringValue("message_from".into()))
        );
        assert_eq!(sender.links.len(), 1);
        assert_eq!(sender.links[0].span_id, receiver.span_id);
        assert_eq!(
            kind(&sender.links[0]),
            Some(Value::StringValue("message_to".into()))
        );
        assert_eq!(sender.events.len(), 2);
        assert_eq!(receiver.events.len(), 2);
    }

    #[test]
    fn a_message_received_outside_any_span_links_the_span_that_handles_it() {
        let (a, b) = (Pid::process(1), Pid::process(2));
        let events = [
            ev(EventKind::Call, 1, 0, 0),
            Event {
                peer: Some(b),
                ..ev(EventKind::Send, 1, 0, 1)
            },
            // The receiver's loop takes it, then calls its handler.
            Event {
                peer: Some(a),
                ..ev(EventKind::Receive, 2, 1, 2)
            },
            ev(EventKind::Call, 2, 1, 3),
            ev(EventKind::Return, 2, 1, 4),
            ev(EventKind::Return, 1, 0, 5),
        ];
        let (requests, _) = requests(&events);
        let spans = spans_of(&requests);
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let (sender, handler) = (by_name("m:outer/1"), by_name("m:inner/1"));
        assert_eq!(handler.links.len(), 1);
        assert_eq!(handler.links[0].span_id, sender.span_id);
        assert!(handler.events.is_empty(), "received before it began");
        assert_eq!(sender.events[0].name, "message.send");
    }

    #[test]
    fn a_span_keeps_its_first_events_and_counts_the_others() {
        let mut events = vec![ev(EventKind::Call, 1, 0, 0)];
        for i in 0..SPAN_EVENTS + 5 {
            events.push(Event {
                text: Some("x".into()),
                ..ev(EventKind::GotCast, 1, 0, 1 + u64::from(i))
            });
        }
        events.push(Event {
            text: Some("boom".into()),
            ..ev(EventKind::Exception, 1, 0, 1000)
        });
        let (requests, _) = requests(&events);
        let span = &spans_of(&requests)[0];
        assert_eq!(span.events.len(), SPAN_EVENTS as usize);
        assert_eq!(span.dropped_events_count, 6, "five casts and the exception");
    }

    #[test]
    fn a_batch_is_shipped_full_or_when_it_has_waited() {
        let view = view();
        let mut spans = Spans::new(1, None);
        let mut shipped = Vec::new();
        for i in 0..BATCH_SPANS as u64 + 1 {
            spans.event(0, &view, &ev(EventKind::Call, 1, 0, 2 * i), &mut |b| {
                shipped.push(b)
            });
            spans.event(
                0,
                &view,
                &ev(EventKind::Return, 1, 0, 2 * i + 1),
                &mut |b| shipped.push(b),
            );
        }
        assert_eq!(shipped.len(), 1);
        assert_eq!(shipped[0].spans, BATCH_SPANS as u64);
        spans.due(Instant::now(), &mut |b| shipped.push(b));
        assert_eq!(shipped.len(), 1, "the second batch is young");
        spans.due(Instant::now() + BATCH_DELAY, &mut |b| shipped.push(b));
        assert_eq!(shipped.len(), 2);
        assert_eq!(shipped[1].spans, 1);
    }
}
