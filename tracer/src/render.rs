//! Events as lines: dbg-like text a BEAM user reads at a glance, or one
//! JSON object a line for programs.
//!
//! ```text
//! (<0.7.0>) call todo::server:entries(<0.9.0>, 2023-12-19)
//! (<0.7.0>) returned from todo::server:entries/2 -> [..] (12.4µs)
//! (<0.7.0>) <0.9.0> ! Entries { .. }
//! (<0.9.0>) << Entries { .. }
//! *DBG* todo_server:bob got call Entries { .. } from <0.7.0>
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use nodetrace_protocol::{CallsiteInfo, EndReason, Event, EventKind, Pid, TraceEnd};
use serde::Serialize;

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Lines for people, the way OTP's tools print.
    #[default]
    Text,
    /// One JSON object a line (a single object for one-off answers).
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown format {s:?}: expected text or json")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text",
            Format::Json => "json",
        })
    }
}

/// What a renderer knows about one node: its name, its callsites (to name
/// the functions events refer to) and the registered names of the
/// gen_servers a sys trace watches.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    name: String,
    callsites: HashMap<u32, CallsiteInfo>,
    names: HashMap<Pid, String>,
    sys_name: Option<String>,
    os_pid: u32,
    registered: HashMap<Pid, String>,
    os_threads: bool,
}

impl NodeView {
    /// A node named `name` with its `callsites`.
    pub fn new(name: impl Into<String>, callsites: impl IntoIterator<Item = CallsiteInfo>) -> Self {
        NodeView {
            name: name.into(),
            callsites: callsites.into_iter().map(|c| (c.id, c)).collect(),
            names: HashMap::new(),
            sys_name: None,
            os_pid: 0,
            registered: HashMap::new(),
            os_threads: false,
        }
    }

    /// The node's pids are OS thread ids (events of a probed process, which
    /// has no agent to number its processes): they print `<tid N>`.
    pub fn set_os_threads(&mut self, os_threads: bool) {
        self.os_threads = os_threads;
    }

    /// A pid as lines show it: `<0.7.0>`, or `<tid 4242>` for an OS thread
    /// of a probed process.
    pub fn pid_label(&self, pid: Pid) -> String {
        if self.os_threads {
            format!("<tid {}>", pid.number())
        } else {
            pid.to_string()
        }
    }

    /// The node's OS process id, for the exports that name the process
    /// (0: not known).
    pub fn set_os_pid(&mut self, os_pid: u32) {
        self.os_pid = os_pid;
    }

    /// The node's OS process id (0: not known).
    pub fn os_pid(&self) -> u32 {
        self.os_pid
    }

    /// Learns that `pid` is registered as `name`: the exports name its
    /// track or spans with it (text lines show pids, as dbg does).
    pub fn register(&mut self, pid: Pid, name: impl Into<String>) {
        self.registered.insert(pid, name.into());
    }

    /// The registered name of `pid`, if the node told one.
    pub fn registered_name(&self, pid: Pid) -> Option<&str> {
        self.registered
            .get(&pid)
            .or_else(|| self.names.get(&pid))
            .map(String::as_str)
    }

    /// Learns callsites the node registered after the trace began.
    pub fn add_callsites(&mut self, news: impl IntoIterator<Item = CallsiteInfo>) {
        self.callsites.extend(news.into_iter().map(|c| (c.id, c)));
    }

    /// sys events of `pid` show `name` instead of the pid.
    pub fn name_process(&mut self, pid: Pid, name: impl Into<String>) {
        self.names.insert(pid, name.into());
    }

    /// sys events of a pid with no known name show `name`: for a sys trace
    /// of exactly one gen_server, every sys event is that server's.
    pub fn set_sys_name(&mut self, name: Option<String>) {
        self.sys_name = name;
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The callsite an event refers to.
    pub fn callsite(&self, id: Option<u32>) -> Option<&CallsiteInfo> {
        id.and_then(|id| self.callsites.get(&id))
    }

    fn sys_label(&self, pid: Pid) -> String {
        match self.names.get(&pid).or(self.sys_name.as_ref()) {
            Some(name) => name.clone(),
            None => pid.to_string(),
        }
    }
}

/// Writes events in one format; `show_node` puts the node in every line,
/// for traces of several nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Renderer {
    /// Text or JSON.
    pub format: Format,
    /// Name the node in text lines (JSON always does).
    pub show_node: bool,
}

impl Renderer {
    /// A renderer.
    pub fn new(format: Format, show_node: bool) -> Renderer {
        Renderer { format, show_node }
    }

    /// Writes `event` of `node` as one line.
    pub fn event(&self, w: &mut dyn Write, node: &NodeView, event: &Event) -> io::Result<()> {
        match self.format {
            Format::Text => self.text(w, node, event),
            Format::Json => json(w, node, event),
        }
    }

    fn text(&self, w: &mut dyn Write, node: &NodeView, e: &Event) -> io::Result<()> {
        let who = if self.show_node {
            format!("({} {})", node.name, node.pid_label(e.pid))
        } else {
            format!("({})", node.pid_label(e.pid))
        };
        let text = e.text.as_deref().map(one_line);
        let peer = e.peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let mfa = || match node.callsite(e.callsite) {
            Some(c) => c.mfa(),
            None => unknown_callsite(e.callsite),
        };
        match e.kind {
            EventKind::Call => match (node.callsite(e.callsite), text) {
                (Some(c), Some(args)) => {
                    writeln!(w, "{who} call {}:{}({args})", c.module, c.function_path())
                }
                (Some(c), None) => writeln!(w, "{who} call {}", c.mfa()),
                (None, Some(args)) => writeln!(w, "{who} call {}({args})", mfa()),
                (None, None) => writeln!(w, "{who} call {}", mfa()),
            },
            EventKind::Return => {
                write!(w, "{who} returned from {}", mfa())?;
                if let Some(value) = text {
                    write!(w, " -> {value}")?;
                }
                match (e.duration_ns, e.busy_ns) {
                    (Some(d), Some(b)) => writeln!(
                        w,
                        " ({}, {} busy)",
                        format_duration_ns(d),
                        format_duration_ns(b)
                    ),
                    (Some(d), None) => writeln!(w, " ({})", format_duration_ns(d)),
                    _ => writeln!(w),
                }
            }
            EventKind::Exception => match text {
                Some(message) => writeln!(w, "{who} exception from {}: {message}", mfa()),
                None => writeln!(w, "{who} exception from {}", mfa()),
            },
            EventKind::In => writeln!(w, "{who} in {}", mfa()),
            EventKind::Out => match e.duration_ns {
                Some(d) => writeln!(w, "{who} out {} ({})", mfa(), format_duration_ns(d)),
                None => writeln!(w, "{who} out {}", mfa()),
            },
            EventKind::Log => log_line(w, node, e, &who),
            EventKind::Send => writeln!(w, "{who} {peer} ! {}", text.unwrap_or_default()),
            EventKind::Receive => writeln!(w, "{who} << {}", text.unwrap_or_default()),
            kind => {
                let server = if self.show_node {
                    format!("({} {})", node.name, node.sys_label(e.pid))
                } else {
                    node.sys_label(e.pid)
                };
                let text = text.unwrap_or_default();
                let state = e.extra.as_deref().map(one_line).unwrap_or_default();
                match kind {
                    EventKind::GotCall => {
                        writeln!(w, "*DBG* {server} got call {text} from {peer}")
                    }
                    EventKind::GotCast => writeln!(w, "*DBG* {server} got cast {text}"),
                    EventKind::GotInfo => writeln!(w, "*DBG* {server} got info {text}"),
                    EventKind::Got => match e.peer {
                        Some(_) => writeln!(w, "*DBG* {server} got {text} from {peer}"),
                        None => writeln!(w, "*DBG* {server} got {text}"),
                    },
                    EventKind::Handled => writeln!(
                        w,
                        "*DBG* {server} handled it in {}",
                        format_duration_ns(e.duration_ns.unwrap_or(0))
                    ),
                    EventKind::Sent => {
                        writeln!(w, "*DBG* {server} sent {text} to {peer}, new state {state}")
                    }
                    _ => writeln!(w, "*DBG* {server} new state {state}"),
                }
            }
        }
    }
}

/// A `tracing` event as `tracing_subscriber::fmt` prints it, with the
/// process (`who`) last: `2026-12-01T10:58:44.645605Z DEBUG kv::cmd:
/// apply{key="a"}: stored n=3 (<0.12.0>)`.
fn log_line(w: &mut dyn Write, node: &NodeView, e: &Event, who: &str) -> io::Result<()> {
    let time = humantime::format_rfc3339_micros(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(e.timestamp_ns),
    );
    let callsite = node.callsite(e.callsite);
    let level = callsite.and_then(|c| c.level).map_or("?", |l| l.as_str());
    let target = callsite.map_or("?", CallsiteInfo::log_target);
    let context = e.extra.as_deref().map(one_line).unwrap_or_default();
    let sep = if context.is_empty() { "" } else { " " };
    let text = e.text.as_deref().map(one_line).unwrap_or_default();
    writeln!(w, "{time} {level:>5} {target}: {context}{sep}{text} {who}")
}

fn unknown_callsite(id: Option<u32>) -> String {
    match id {
        Some(id) => format!("<callsite {id}>"),
        None => "<unknown function>".to_owned(),
    }
}

/// Keeps an event on its line: newlines and carriage returns are escaped.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        Cow::Owned(text.replace('\n', "\\n").replace('\r', "\\r"))
    } else {
        Cow::Borrowed(text)
    }
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    node: &'a str,
    pid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    self_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trait_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arity: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callsite: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span: Option<&'a str>,
    timestamp_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    busy_ns: Option<u64>,
}

fn json(w: &mut dyn Write, node: &NodeView, e: &Event) -> io::Result<()> {
    let callsite = node.callsite(e.callsite);
    let text = e.text.as_deref();
    let is_call = matches!(
        e.kind,
        EventKind::Call | EventKind::Return | EventKind::Exception | EventKind::In | EventKind::Out
    );
    let is_sys = matches!(
        e.kind,
        EventKind::GotCall
            | EventKind::GotCast
            | EventKind::GotInfo
            | EventKind::Got
            | EventKind::Handled
            | EventKind::Sent
            | EventKind::NewState
    );
    let name = if is_sys {
        node.names.get(&e.pid).or(node.sys_name.as_ref()).cloned()
    } else {
        None
    };
    let is_log = e.kind == EventKind::Log;
    let function = callsite.filter(|_| !is_log);
    let record = JsonEvent {
        node: &node.name,
        pid: node.pid_label(e.pid),
        name,
        kind: e.kind,
        module: callsite.map(|c| c.module.as_str()),
        self_type: function.and_then(|c| c.self_type.as_deref()),
        trait_name: function.and_then(|c| c.trait_name.as_deref()),
        function: function.map(|c| c.function.as_str()),
        arity: function.map(|c| c.arity),
        callsite: if is_call && callsite.is_none() {
            e.callsite
        } else {
            None
        },
        args: text.filter(|_| e.kind == EventKind::Call),
        result: text.filter(|_| e.kind == EventKind::Return),
        text: text.filter(|_| !matches!(e.kind, EventKind::Call | EventKind::Return)),
        peer: e.peer.map(|p| p.to_string()),
        state: e.extra.as_deref().filter(|_| !is_log),
        level: callsite.and_then(|c| c.level).map(|l| l.as_str()),
        target: callsite.filter(|_| is_log).map(CallsiteInfo::log_target),
        span: e.extra.as_deref().filter(|_| is_log),
        timestamp_ns: e.timestamp_ns,
        duration_ns: e.duration_ns,
        busy_ns: e.busy_ns,
    };
    serde_json::to_writer(&mut *w, &record).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

/// A duration as people read it: `850ns`, `12.4µs`, `3.2ms`, `1.25s`.
pub fn format_duration_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[derive(Serialize)]
struct JsonEnd<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    reason: &'static str,
    reason_text: String,
    shown: u64,
    delivered: u64,
    rate_dropped: u64,
    lost: u64,
    discarded: u64,
}

/// Writes the JSON object a trace ends with on one node: `{"type":"end",
/// ...}` with the reason and the exact counts (see `docs/json.md`);
/// `shown` is how many events were written.
pub fn json_end(w: &mut dyn Write, node: &str, end: &TraceEnd, shown: u64) -> io::Result<()> {
    let c = &end.counts;
    let record = JsonEnd {
        kind: "end",
        node,
        reason: match end.reason {
            EndReason::MaxEvents(_) => "max_events",
            EndReason::Duration(_) => "duration",
            EndReason::StopClear => "stop_clear",
            EndReason::Stopped => "stopped",
            EndReason::TracerSilent(_) => "tracer_silent",
        },
        reason_text: end.reason.to_string(),
        shown,
        delivered: c.delivered,
        rate_dropped: c.rate_dropped,
        lost: c.lost,
        discarded: c.discarded,
    };
    serde_json::to_writer(&mut *w, &record).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

#[derive(Serialize)]
struct JsonOtlp<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    endpoint: &'a str,
    spans: u64,
    exported: u64,
    dropped: u64,
    rejected: u64,
    retries: u64,
    unfinished: u64,
}

/// Writes the JSON object that says what became of the spans exported over
/// OTLP: `{"type":"otlp",...}` (see `docs/json.md`).
pub fn json_otlp(
    w: &mut dyn Write,
    endpoint: &str,
    c: &crate::export::otlp::OtlpCounts,
) -> io::Result<()> {
    let record = JsonOtlp {
        kind: "otlp",
        endpoint,
        spans: c.spans,
        exported: c.exported,
        dropped: c.dropped,
        rejected: c.rejected,
        retries: c.retries,
        unfinished: c.unfinished,
    };
    serde_json::to_writer(&mut *w, &record).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

/// The one line a trace ends with, e.g. `trace ended on todo@localhost:
/// reached the limit of 10 events; 10 shown, 0 dropped by --rate, 0 lost to
/// full buffers, 0 discarded after the stop`.
pub fn summary(node: &str, end: &TraceEnd) -> String {
    let c = &end.counts;
    format!(
        "trace ended on {node}: {}; {} shown, {} dropped by --rate, {} lost to full buffers, {} discarded after the stop",
        end.reason, c.delivered, c.rate_dropped, c.lost, c.discarded
    )
}

#[cfg(test)]
mod tests {
    use nodetrace_protocol::{Counts, EndReason};

    use super::*;

    fn site(id: u32, function: &str, arity: u8) -> CallsiteInfo {
        CallsiteInfo {
            id,
            module: "todo::server".into(),
            function: function.into(),
            self_type: None,
            trait_name: None,
            arity,
            file: "examples/todo/src/server.rs".into(),
            line: 50,
            is_async: true,
            ..CallsiteInfo::default()
        }
    }

    fn view() -> NodeView {
        let mut v = NodeView::new(
            "todo@localhost",
            [site(0, "add_entry", 2), site(3, "entries", 2)],
        );
        v.name_process(Pid::process(9), "todo_server:bob");
        v
    }

    fn ev(kind: EventKind) -> Event {
        Event {
            kind,
            pid: Pid::process(7),
            peer: None,
            callsite: None,
            timestamp_ns: 1_700_000_000_000_000_000,
            duration_ns: None,
            busy_ns: None,
            text: None,
            extra: None,
        }
    }

    fn golden() -> Vec<Event> {
        vec![
            Event {
                callsite: Some(3),
                text: Some("<0.9.0>, 2023-12-19".into()),
                ..ev(EventKind::Call)
            },
            Event {
                callsite: Some(3),
                text: Some("Ok([Entry { id: 1, title: \"Movies\" }])".into()),
                duration_ns: Some(12_400),
                ..ev(EventKind::Return)
            },
            Event {
                callsite: Some(3),
                duration_ns: Some(850),
                ..ev(EventKind::Return)
            },
            Event {
                callsite: Some(0),
                duration_ns: Some(3_200_000),
                busy_ns: Some(41_000),
                ..ev(EventKind::Return)
            },
            Event {
                callsite: Some(0),
                text: Some("panicked at src/server.rs:44:9:\nno list".into()),
                duration_ns: Some(5_000),
                ..ev(EventKind::Exception)
            },
            Event {
                peer: Some(Pid::process(9)),
                text: Some("Entries { date: 2023-12-19 }".into()),
                ..ev(EventKind::Send)
            },
            Event {
                pid: Pid::process(9),
                peer: Some(Pid::process(7)),
                text: Some("Entries { date: 2023-12-19 }".into()),
                ..ev(EventKind::Receive)
            },
            Event {
                pid: Pid::process(9),
                peer: Some(Pid::task(7)),
                text: Some("Entries { date: 2023-12-19 }".into()),
                ..ev(EventKind::GotCall)
            },
            Event {
                pid: Pid::process(9),
                text: Some("AddEntry { title: \"Movies\" }".into()),
                ..ev(EventKind::GotCast)
            },
            Event {
                pid: Pid::process(9),
                text: Some("Tick".into()),
                ..ev(EventKind::GotInfo)
            },
            Event {
                pid: Pid::process(9),
                peer: Some(Pid::task(7)),
                text: Some("[Entry { id: 1 }]".into()),
                extra: Some("TodoList { auto_id: 2 }".into()),
                ..ev(EventKind::Sent)
            },
            Event {
                pid: Pid::process(12),
                extra: Some("TodoList { auto_id: 3 }".into()),
                ..ev(EventKind::NewState)
            },
            Event {
                callsite: Some(3),
                ..ev(EventKind::Call)
            },
            Event {
                callsite: Some(99),
                text: Some("1".into()),
                ..ev(EventKind::Call)
            },
            Event {
                callsite: Some(0),
                ..ev(EventKind::In)
            },
            Event {
                callsite: Some(0),
                duration_ns: Some(41_000),
                ..ev(EventKind::Out)
            },
        ]
    }

    fn render(renderer: Renderer, view: &NodeView) -> String {
        let mut out = Vec::new();
        for e in golden() {
            renderer.event(&mut out, view, &e).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_read_like_dbg_and_sys() {
        let got = render(Renderer::new(Format::Text, false), &view());
        let want = "\
(<0.7.0>) call todo::server:entries(<0.9.0>, 2023-12-19)
(<0.7.0>) returned from todo::server:entries/2 -> Ok([Entry { id: 1, title: \"Movies\" }]) (12.4µs)
(<0.7.0>) returned from todo::server:entries/2 (850ns)
(<0.7.0>) returned from todo::server:add_entry/2 (3.2ms, 41.0µs busy)
(<0.7.0>) exception from todo::server:add_entry/2: panicked at src/server.rs:44:9:\\nno list
(<0.7.0>) <0.9.0> ! Entries { date: 2023-12-19 }
(<0.9.0>) << Entries { date: 2023-12-19 }
*DBG* todo_server:bob got call Entries { date: 2023-12-19 } from <0.7.1>
*DBG* todo_server:bob got cast AddEntry { title: \"Movies\" }
*DBG* todo_server:bob got info Tick
*DBG* todo_server:bob sent [Entry { id: 1 }] to <0.7.1>, new state TodoList { auto_id: 2 }
*DBG* <0.12.0> new state TodoList { auto_id: 3 }
(<0.7.0>) call todo::server:entries/2
(<0.7.0>) call <callsite 99>(1)
(<0.7.0>) in todo::server:add_entry/2
(<0.7.0>) out todo::server:add_entry/2 (41.0µs)
";
        assert_eq!(got, want);
    }

    #[test]
    fn a_probed_process_shows_its_os_threads() {
        let mut v = NodeView::new("pid 4000", [site(0, "entries", 2)]);
        v.set_os_threads(true);
        let call = Event {
            pid: Pid::process(4242),
            callsite: Some(0),
            text: Some("0x2a, 0x7".into()),
            ..ev(EventKind::Call)
        };
        let mut out = Vec::new();
        Renderer::new(Format::Text, false)
            .event(&mut out, &v, &call)
            .unwrap();
        Renderer::new(Format::Json, false)
            .event(&mut out, &v, &call)
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("(<tid 4242>) call todo::server:entries(0x2a, 0x7)")
        );
        let json: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(json["pid"], "<tid 4242>");
    }

    #[test]
    fn several_nodes_show_the_node_in_every_line() {
        let got = render(Renderer::new(Format::Text, true), &view());
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(
            lines[0],
            "(todo@localhost <0.7.0>) call todo::server:entries(<0.9.0>, 2023-12-19)"
        );
        assert_eq!(
            lines[7],
            "*DBG* (todo@localhost todo_server:bob) got call Entries { date: 2023-12-19 } from <0.7.1>"
        );
        assert!(lines.iter().all(|l| l.contains("todo@localhost")));
    }

    #[test]
    fn one_sys_target_names_every_sys_event() {
        let mut v = NodeView::new("n@h", []);
        v.set_sys_name(Some("todo_server:bob".into()));
        let mut out = Vec::new();
        Renderer::default()
            .event(
                &mut out,
                &v,
                &Event {
                    extra: Some("S".into()),
                    ..ev(EventKind::NewState)
                },
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "*DBG* todo_server:bob new state S\n"
        );
    }

    #[test]
    fn json_lines_carry_the_fields_that_apply() {
        let got = render(Renderer::new(Format::Json, false), &view());
        let want = r#"{"node":"todo@localhost","pid":"<0.7.0>","type":"call","module":"todo::server","function":"entries","arity":2,"args":"<0.9.0>, 2023-12-19","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.7.0>","type":"return","module":"todo::server","function":"entries","arity":2,"result":"Ok([Entry { id: 1, title: \"Movies\" }])","timestamp_ns":1700000000000000000,"duration_ns":12400}
{"node":"todo@localhost","pid":"<0.7.0>","type":"return","module":"todo::server","function":"entries","arity":2,"timestamp_ns":1700000000000000000,"duration_ns":850}
{"node":"todo@localhost","pid":"<0.7.0>","type":"return","module":"todo::server","function":"add_entry","arity":2,"timestamp_ns":1700000000000000000,"duration_ns":3200000,"busy_ns":41000}
{"node":"todo@localhost","pid":"<0.7.0>","type":"exception","module":"todo::server","function":"add_entry","arity":2,"text":"panicked at src/server.rs:44:9:\nno list","timestamp_ns":1700000000000000000,"duration_ns":5000}
{"node":"todo@localhost","pid":"<0.7.0>","type":"send","text":"Entries { date: 2023-12-19 }","peer":"<0.9.0>","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.9.0>","type":"receive","text":"Entries { date: 2023-12-19 }","peer":"<0.7.0>","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.9.0>","name":"todo_server:bob","type":"got_call","text":"Entries { date: 2023-12-19 }","peer":"<0.7.1>","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.9.0>","name":"todo_server:bob","type":"got_cast","text":"AddEntry { title: \"Movies\" }","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.9.0>","name":"todo_server:bob","type":"got_info","text":"Tick","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.9.0>","name":"todo_server:bob","type":"sent","text":"[Entry { id: 1 }]","peer":"<0.7.1>","state":"TodoList { auto_id: 2 }","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.12.0>","type":"new_state","state":"TodoList { auto_id: 3 }","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.7.0>","type":"call","module":"todo::server","function":"entries","arity":2,"timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.7.0>","type":"call","callsite":99,"args":"1","timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.7.0>","type":"in","module":"todo::server","function":"add_entry","arity":2,"timestamp_ns":1700000000000000000}
{"node":"todo@localhost","pid":"<0.7.0>","type":"out","module":"todo::server","function":"add_entry","arity":2,"timestamp_ns":1700000000000000000,"duration_ns":41000}
"#;
        assert_eq!(got, want);
        for line in got.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v.is_object());
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration_ns(0), "0ns");
        assert_eq!(format_duration_ns(999), "999ns");
        assert_eq!(format_duration_ns(12_400), "12.4µs");
        assert_eq!(format_duration_ns(3_250_000), "3.2ms");
        assert_eq!(format_duration_ns(1_250_000_000), "1.25s");
    }

    #[test]
    fn the_summary_counts_everything_emitted() {
        let end = TraceEnd {
            reason: EndReason::MaxEvents(10),
            counts: Counts {
                delivered: 10,
                rate_dropped: 0,
                lost: 0,
                discarded: 0,
            },
        };
        assert_eq!(
            summary("todo@localhost", &end),
            "trace ended on todo@localhost: reached the limit of 10 events; 10 shown, 0 dropped by --rate, 0 lost to full buffers, 0 discarded after the stop"
        );
        let end = TraceEnd {
            reason: EndReason::StopClear,
            counts: Counts {
                delivered: 3,
                rate_dropped: 2,
                lost: 1,
                discarded: 4,
            },
        };
        assert_eq!(
            summary("a@h", &end),
            "trace ended on a@h: stopped by stop-clear; 3 shown, 2 dropped by --rate, 1 lost to full buffers, 4 discarded after the stop"
        );
    }
}
