//! OpenTelemetry spans from traced calls, sent over OTLP/HTTP (protobuf)
//! to a backend (an OpenTelemetry Collector, Jaeger, Tempo...).
//!
//! One span per call/return pair, its parent the call it ran inside in the
//! same process (a call with none starts a trace of its own). A span's
//! resource is its node (`service.name`, `process.pid`), its attributes
//! the nodetrace pid, the function's path, arity, source, arguments and
//! value (bounded); an exception ends a span with status error and an
//! `exception` event; messages, gen_server and log events in a process
//! are events of the span running there (none: not exported).
//!
//! The tracer's thread only builds spans and offers them to a bounded
//! queue ([`QUEUE_SPANS`]; full: the span is dropped and counted), so a
//! slow or dead backend never slows the trace. [`SENDERS`] threads of
//! their own take batches of up to [`BATCH_SPANS`] (or what came in
//! [`BATCH_DELAY`]) from it, so that one encodes while another waits for
//! the backend's answer; each POSTs a batch as one
//! `ExportTraceServiceRequest` and retries, at most
//! [`ATTEMPTS`] times with exponential backoff, on 429, 502, 503, 504 and
//! on connection errors and timeouts. At the end of the trace it has
//! [`SHUTDOWN_GRACE`] to send what is queued; what is left is dropped and
//! counted. Every span made is counted once as exported, dropped or
//! rejected (a 4xx answer, or the backend's `partial_success`).
//!
//! The messages are the OpenTelemetry project's own (`opentelemetry-proto`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::time::{Duration, Instant};

use nodetrace_protocol::{Event, EventKind, Pid};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status::StatusCode,
};
use prost::Message;

use super::call_name;
use crate::render::NodeView;

/// Spans waiting to be sent, at most; one more is dropped (and counted).
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
/// OTLP/HTTP's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/traces";

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
    /// Each node's resource, set before any of its spans is queued.
    resources: Mutex<HashMap<usize, Resource>>,
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

/// A span and the number of its node.
type Item = (usize, Box<Span>);

struct OpenSpan {
    callsite: Option<u32>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start_ns: u64,
    args: Option<String>,
    events: Vec<span::Event>,
}

/// Turns a trace's events into spans and exports them (see the module).
pub struct OtlpExporter {
    endpoint: String,
    tx: Option<Sender<Item>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    spans: u64,
    dropped_full: u64,
    unfinished: u64,
    nodes: HashSet<usize>,
    open: HashMap<(usize, Pid), Vec<OpenSpan>>,
    sites: HashMap<(usize, Option<u32>), (String, Vec<KeyValue>)>,
    ids: u64,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.endpoint)
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// Starts the exporting threads for `config`.
    pub fn start(config: OtlpConfig) -> std::io::Result<OtlpExporter> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_SPANS);
        let shared = Arc::new(Shared::default());
        let endpoint = config.endpoint.clone();
        let mut threads = Vec::new();
        for _ in 0..SENDERS {
            threads.push(thread::Builder::new().name("otlp export".into()).spawn({
                let (shared, rx, config) = (shared.clone(), rx.clone(), config.clone());
                move || export(rx, config, &shared)
            })?);
        }
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        Ok(OtlpExporter {
            endpoint,
            tx: Some(tx),
            threads,
            shared,
            spans: 0,
            dropped_full: 0,
            unfinished: 0,
            nodes: HashSet::new(),
            open: HashMap::new(),
            sites: HashMap::new(),
            ids: u64::from_le_bytes(seed),
        })
    }

    /// Where the spans go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn id(&mut self) -> u64 {
        // splitmix64 over a random start: distinct, well spread, cheap.
        self.ids = self.ids.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.ids;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).max(1)
    }

    /// Takes one event of node number `node`.
    pub fn event(&mut self, node: usize, view: &NodeView, e: &Event) {
        if self.nodes.insert(node) {
            self.shared
                .resources
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node, resource(view));
        }
        match e.kind {
            EventKind::Call => {
                let stack = self.open.entry((node, e.pid)).or_default();
                let parent = stack.last().map(|p| (p.trace_id, p.span_id));
                let trace_id = match parent {
                    Some((t, _)) => t,
                    None => {
                        let mut t = [0u8; 16];
                        t[..8].copy_from_slice(&self.id().to_be_bytes());
                        t[8..].copy_from_slice(&self.id().to_be_bytes());
                        t
                    }
                };
                let span_id = self.id().to_be_bytes();
                self.open.entry((node, e.pid)).or_default().push(OpenSpan {
                    callsite: e.callsite,
                    trace_id,
                    span_id,
                    parent: parent.map(|(_, s)| s),
                    start_ns: e.timestamp_ns,
                    args: e.text.clone(),
                    events: Vec::new(),
                });
            }
            EventKind::Return | EventKind::Exception => self.end(node, view, e),
            kind => {
                let Some(open) = self
                    .open
                    .get_mut(&(node, e.pid))
                    .and_then(|stack| stack.last_mut())
                else {
                    return;
                };
                let name = match kind {
                    EventKind::Send => "message.send",
                    EventKind::Receive => "message.receive",
                    EventKind::Log => "log",
                    EventKind::GotCall => "gen_server.got_call",
                    EventKind::GotCast => "gen_server.got_cast",
                    EventKind::GotInfo => "gen_server.got_info",
                    EventKind::Sent => "gen_server.sent",
                    _ => "gen_server.new_state",
                };
                let mut attributes = Vec::new();
                if let Some(peer) = e.peer {
                    attributes.push(string("nodetrace.peer", peer.to_string()));
                }
                if let Some(text) = &e.text {
                    attributes.push(string("nodetrace.message", bounded(text)));
                }
                if let Some(extra) = &e.extra {
                    let key = if kind == EventKind::Log {
                        "nodetrace.span"
                    } else {
                        "nodetrace.state"
                    };
                    attributes.push(string(key, bounded(extra)));
                }
                if kind == EventKind::Log
                    && let Some(level) = view.callsite(e.callsite).and_then(|c| c.level)
                {
                    attributes.push(string("log.level", level.as_str().to_owned()));
                }
                open.events.push(span::Event {
                    time_unix_nano: e.timestamp_ns,
                    name: name.to_owned(),
                    attributes,
                    dropped_attributes_count: 0,
                });
            }
        }
    }

    fn end(&mut self, node: usize, view: &NodeView, e: &Event) {
        let stack = self.open.entry((node, e.pid)).or_default();
        let open = match stack.iter().rposition(|c| c.callsite == e.callsite) {
            Some(i) => {
                let mut above = stack.drain(i..);
                let open = above.next();
                self.unfinished += above.count() as u64;
                open
            }
            None => None,
        };
        let open = match open {
            Some(open) => open,
            // Its call was not seen: a root span of its own.
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&self.id().to_be_bytes());
                trace_id[8..].copy_from_slice(&self.id().to_be_bytes());
                OpenSpan {
                    callsite: e.callsite,
                    trace_id,
                    span_id: self.id().to_be_bytes(),
                    parent: None,
                    start_ns: e
                        .timestamp_ns
                        .saturating_sub(e.duration_ns.unwrap_or_default()),
                    args: None,
                    events: Vec::new(),
                }
            }
        };
        let (name, site_attributes) = self
            .sites
            .entry((node, e.callsite))
            .or_insert_with(|| site(view, e.callsite))
            .clone();
        let mut attributes = site_attributes;
        attributes.push(string("nodetrace.pid", e.pid.to_string()));
        if let Some(name) = view.registered_name(e.pid) {
            attributes.push(string("nodetrace.process.name", name.to_owned()));
        }
        if let Some(args) = &open.args {
            attributes.push(string("nodetrace.args", bounded(args)));
        }
        let mut events = open.events;
        let status = if e.kind == EventKind::Exception {
            let message = e.text.as_deref().map(bounded).unwrap_or_default();
            events.push(span::Event {
                time_unix_nano: e.timestamp_ns,
                name: "exception".to_owned(),
                attributes: vec![
                    string("exception.type", "panic".to_owned()),
                    string("exception.message", message.clone()),
                ],
                dropped_attributes_count: 0,
            });
            Some(Status {
                message,
                code: StatusCode::Error as i32,
            })
        } else {
            if let Some(value) = &e.text {
                attributes.push(string("nodetrace.result", bounded(value)));
            }
            None
        };
        if let Some(busy) = e.busy_ns {
            attributes.push(int("nodetrace.busy_ns", busy));
        }
        let span = Span {
            trace_id: open.trace_id.to_vec(),
            span_id: open.span_id.to_vec(),
            parent_span_id: open.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name,
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: open.start_ns,
            end_time_unix_nano: e.timestamp_ns.max(open.start_ns),
            attributes,
            events,
            status,
            ..Span::default()
        };
        self.spans += 1;
        let Some(tx) = &self.tx else { return };
        match tx.try_send((node, Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped_full += 1,
        }
    }

    /// Ends the export: sends what is queued (for at most
    /// [`SHUTDOWN_GRACE`]), stops the threads and counts.
    pub fn finish(&mut self) -> OtlpCounts {
        self.unfinished += self.open.drain().map(|(_, s)| s.len() as u64).sum::<u64>();
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
            spans: self.spans,
            exported: s.exported.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst) + self.dropped_full,
            rejected: s.rejected.load(Ordering::SeqCst),
            retries: s.retries.load(Ordering::SeqCst),
            unfinished: self.unfinished,
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

fn bounded(text: &str) -> String {
    if text.len() <= ATTRIBUTE_BOUND {
        return text.to_owned();
    }
    let mut end = ATTRIBUTE_BOUND;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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

fn int(key: &str, value: u64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX))),
        }),
    }
}

fn resource(view: &NodeView) -> Resource {
    let mut attributes = vec![
        string("service.name", view.name().to_owned()),
        string("telemetry.sdk.name", "nodetrace".to_owned()),
    ];
    if view.os_pid() > 0 {
        attributes.push(int("process.pid", u64::from(view.os_pid())));
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// A callsite's span name and the attributes every span of it carries.
fn site(view: &NodeView, callsite: Option<u32>) -> (String, Vec<KeyValue>) {
    let name = call_name(view, callsite);
    let Some(c) = view.callsite(callsite) else {
        return (name, Vec::new());
    };
    let mut attributes = vec![
        string("code.function.name", c.rust_path()),
        int("nodetrace.arity", u64::from(c.arity)),
        string("code.file.path", c.file.clone()),
        int("code.line.number", u64::from(c.line)),
    ];
    if let Some(level) = c.level {
        attributes.push(string("nodetrace.level", level.as_str().to_owned()));
    }
    (name, attributes)
}

fn export(rx: Receiver<Item>, config: OtlpConfig, shared: &Shared) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into();
    let mut batch: Vec<(usize, Box<Span>)> = Vec::with_capacity(BATCH_SPANS);
    let mut open = true;
    while open {
        let until = Instant::now() + BATCH_DELAY;
        while batch.len() < BATCH_SPANS {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(item) => batch.push(item),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        if shared.past_deadline() {
            let left = batch.len() as u64 + rx.try_iter().count() as u64;
            shared.dropped.fetch_add(left, Ordering::SeqCst);
            batch.clear();
            continue;
        }
        send(&agent, &config, shared, &mut batch);
    }
}

fn request(shared: &Shared, batch: &mut Vec<(usize, Box<Span>)>) -> Vec<u8> {
    let mut by_node: Vec<(usize, Vec<Span>)> = Vec::new();
    for (node, span) in batch.drain(..) {
        match by_node.iter_mut().find(|(n, _)| *n == node) {
            Some((_, spans)) => spans.push(*span),
            None => by_node.push((node, vec![*span])),
        }
    }
    let scope = InstrumentationScope {
        name: "nodetrace".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    };
    let resources = shared.resources.lock().unwrap_or_else(|e| e.into_inner());
    ExportTraceServiceRequest {
        resource_spans: by_node
            .into_iter()
            .map(|(node, spans)| ResourceSpans {
                resource: resources.get(&node).cloned(),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
    .encode_to_vec()
}

fn send(
    agent: &ureq::Agent,
    config: &OtlpConfig,
    shared: &Shared,
    batch: &mut Vec<(usize, Box<Span>)>,
) {
    let n = batch.len() as u64;
    let body = request(shared, batch);
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
        match post.send(&body[..]) {
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
        let cut = bounded(&text);
        assert!(cut.len() <= ATTRIBUTE_BOUND + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
