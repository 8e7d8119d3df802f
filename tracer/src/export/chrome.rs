//! The Chrome trace-event JSON ("Trace Event Format", the document
//! `chrome://tracing` reads), for tools that read only that.
//!
//! The array form: `[` and one event a line, `]` at the end; readers take
//! a file without its closing bracket (a killed tracer) as well. A node is
//! a process (`pid`: its OS pid), a traced process one of its threads
//! (`tid` numbered from 1), both named by metadata events (`M`,
//! `process_name`, `thread_name`, and `process_labels` with the time base).
//! A call is a complete event (`X`) written at its return, with arguments,
//! value and busy time in `args`; an exception ends it too, colored
//! (`cname`) with the panic message, after an instant. A message is an
//! instant on each side joined by a flow (`s` at the send, `f` at the
//! receive, bound to the enclosing slice). gen_server and log events are
//! instants (`i`, thread scope).
//!
//! `ts` is in microseconds from the first whole second of the trace (named
//! in `process_labels`): microseconds since the Unix epoch would lose the
//! nanoseconds in a reader's double.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Arc;

use nodetrace_protocol::{Event, EventKind, Pid};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::{EventSink, Flows, call_name, process_label};
use crate::render::NodeView;

/// Writes events as Chrome trace events.
#[derive(Debug, Default)]
pub struct ChromeWriter {
    started: bool,
    base_ns: Option<u64>,
    pids: HashMap<usize, u32>,
    tids: HashMap<(usize, Pid), u64>,
    open: HashMap<(usize, Pid), Vec<OpenCall>>,
    names: HashMap<(usize, Option<u32>), Arc<str>>,
    flows: Flows,
    /// One event's bytes, written to the output in one call.
    line: Vec<u8>,
}

#[derive(Debug)]
struct OpenCall {
    callsite: Option<u32>,
    at_ns: u64,
    args: Option<String>,
}

#[derive(Serialize)]
struct ChromeEvent<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cat: &'static str,
    ph: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bp: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cname: Option<&'static str>,
    #[serde(skip_serializing_if = "Args::is_empty")]
    args: Args<'a>,
}

/// An event's `args`: borrowed where the event has the text, so writing an
/// event copies no string.
#[derive(Debug, Default)]
struct Args<'a>(Vec<(&'static str, Arg<'a>)>);

#[derive(Debug)]
enum Arg<'a> {
    Text(Cow<'a, str>),
    Number(u64),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Arg<'a> {
        Arg::Text(Cow::Borrowed(s))
    }
}

impl From<String> for Arg<'_> {
    fn from(s: String) -> Self {
        Arg::Text(Cow::Owned(s))
    }
}

impl From<u64> for Arg<'_> {
    fn from(n: u64) -> Self {
        Arg::Number(n)
    }
}

impl Args<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Args<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            match value {
                Arg::Text(t) => map.serialize_entry(key, t)?,
                Arg::Number(n) => map.serialize_entry(key, n)?,
            }
        }
        map.end()
    }
}

impl ChromeEvent<'_> {
    fn new<'a>(name: &'a str, ph: &'static str, pid: u32, tid: u64) -> ChromeEvent<'a> {
        ChromeEvent {
            name,
            cat: "",
            ph,
            ts: None,
            dur: None,
            pid,
            tid,
            id: None,
            bp: None,
            s: None,
            cname: None,
            args: Args::default(),
        }
    }
}

fn args<'a, const N: usize>(pairs: [(&'static str, Option<Arg<'a>>); N]) -> Args<'a> {
    Args(
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
    )
}

impl ChromeWriter {
    /// A writer that has written nothing yet.
    pub fn new() -> ChromeWriter {
        ChromeWriter::default()
    }

    fn call_name(&mut self, node: usize, view: &NodeView, callsite: Option<u32>) -> Arc<str> {
        self.names
            .entry((node, callsite))
            .or_insert_with(|| call_name(view, callsite).into())
            .clone()
    }

    fn write(&mut self, out: &mut dyn Write, event: &ChromeEvent<'_>) -> io::Result<()> {
        self.line.clear();
        self.line
            .extend_from_slice(if self.started { b",\n" } else { b"[\n" });
        self.started = true;
        serde_json::to_writer(&mut self.line, event).map_err(io::Error::other)?;
        out.write_all(&self.line)
    }

    /// Microseconds from the time base, which the first event sets.
    fn ts(&mut self, ns: u64) -> f64 {
        let base = *self.base_ns.get_or_insert(ns - ns % 1_000_000_000);
        (ns as i128 - base as i128) as f64 / 1e3
    }

    /// The `pid` and `tid` of `pid` on node `node`, named first if new.
    fn ids(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        pid: Pid,
        at_ns: u64,
    ) -> io::Result<(u32, u64)> {
        let chrome_pid = match self.pids.get(&node) {
            Some(&p) => p,
            None => {
                let taken = |p: u32| self.pids.values().any(|&q| q == p);
                let mut p = if view.os_pid() > 0 { view.os_pid() } else { 1 };
                while taken(p) {
                    p += 1;
                }
                self.pids.insert(node, p);
                self.ts(at_ns);
                let base_ns = self.base_ns.unwrap_or_default();
                let labels = format!(
                    "ts 0 = {} (Unix epoch {base_ns} ns)",
                    humantime::format_rfc3339(
                        std::time::SystemTime::UNIX_EPOCH
                            + std::time::Duration::from_nanos(base_ns)
                    )
                );
                let mut name = ChromeEvent::new("process_name", "M", p, 0);
                name.args = args([("name", Some(view.name().into()))]);
                self.write(out, &name)?;
                let mut label = ChromeEvent::new("process_labels", "M", p, 0);
                label.args = args([("labels", Some(labels.into()))]);
                self.write(out, &label)?;
                p
            }
        };
        if let Some(&tid) = self.tids.get(&(node, pid)) {
            return Ok((chrome_pid, tid));
        }
        let tid = self.tids.keys().filter(|(n, _)| *n == node).count() as u64 + 1;
        self.tids.insert((node, pid), tid);
        let mut name = ChromeEvent::new("thread_name", "M", chrome_pid, tid);
        name.args = args([("name", Some(process_label(view, pid).into()))]);
        self.write(out, &name)?;
        Ok((chrome_pid, tid))
    }

    fn complete(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        e: &Event,
        exception: Option<&str>,
    ) -> io::Result<()> {
        let (pid, tid) = self.ids(out, node, view, e.pid, e.timestamp_ns)?;
        let stack = self.open.entry((node, e.pid)).or_default();
        let call = match stack.iter().rposition(|c| c.callsite == e.callsite) {
            Some(i) => stack.drain(i..).next(),
            None => None,
        };
        let duration = e
            .duration_ns
            .or_else(|| {
                call.as_ref()
                    .map(|c| e.timestamp_ns.saturating_sub(c.at_ns))
            })
            .unwrap_or(0);
        let name = self.call_name(node, view, e.callsite);
        let mut x = ChromeEvent::new(&name, "X", pid, tid);
        x.cat = "call";
        x.ts = Some(self.ts(e.timestamp_ns.saturating_sub(duration)));
        x.dur = Some(duration as f64 / 1e3);
        x.args = args([
            ("args", call.and_then(|c| c.args).map(Arg::from)),
            (
                "result",
                e.text
                    .as_deref()
                    .filter(|_| exception.is_none())
                    .map(Arg::from),
            ),
            ("busy_ns", e.busy_ns.map(Arg::from)),
            ("exception", exception.map(Arg::from)),
        ]);
        if exception.is_some() {
            x.cname = Some("terrible");
        }
        self.write(out, &x)
    }

    fn instant(
        &mut self,
        out: &mut dyn Write,
        (pid, tid): (u32, u64),
        name: &str,
        at_ns: u64,
        args: Args<'_>,
    ) -> io::Result<()> {
        let mut i = ChromeEvent::new(name, "i", pid, tid);
        i.ts = Some(self.ts(at_ns));
        i.s = Some("t");
        i.args = args;
        self.write(out, &i)
    }
}

impl EventSink for ChromeWriter {
    fn event(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        e: &Event,
    ) -> io::Result<()> {
        match e.kind {
            EventKind::Call => {
                self.ids(out, node, view, e.pid, e.timestamp_ns)?;
                self.call_name(node, view, e.callsite);
                self.open.entry((node, e.pid)).or_default().push(OpenCall {
                    callsite: e.callsite,
                    at_ns: e.timestamp_ns,
                    args: e.text.clone(),
                });
                Ok(())
            }
            EventKind::Return => self.complete(out, node, view, e, None),
            // Polls are drawn in Perfetto timelines only; a Chrome trace
            // does not ask for them.
            EventKind::In | EventKind::Out => Ok(()),
            EventKind::Exception => {
                let ids = self.ids(out, node, view, e.pid, e.timestamp_ns)?;
                let message = e.text.as_deref().unwrap_or("");
                self.instant(
                    out,
                    ids,
                    "exception",
                    e.timestamp_ns,
                    args([("message", Some(message.into()))]),
                )?;
                self.complete(out, node, view, e, Some(message))
            }
            EventKind::Log => {
                let ids = self.ids(out, node, view, e.pid, e.timestamp_ns)?;
                let name = match view.callsite(e.callsite) {
                    Some(c) => format!(
                        "{} {}",
                        c.level.map_or("LOG", |l| l.as_str()),
                        c.log_target()
                    ),
                    None => "log".to_owned(),
                };
                let a = args([
                    ("message", e.text.as_deref().map(Arg::from)),
                    ("span", e.extra.as_deref().map(Arg::from)),
                ]);
                self.instant(out, ids, &name, e.timestamp_ns, a)
            }
            kind => {
                let ids = self.ids(out, node, view, e.pid, e.timestamp_ns)?;
                let (name, side) = match kind {
                    EventKind::Send => ("send", "to"),
                    EventKind::Receive => ("receive", "from"),
                    EventKind::GotCall => ("got call", "from"),
                    EventKind::GotCast => ("got cast", "from"),
                    EventKind::GotInfo => ("got info", "from"),
                    EventKind::Sent => ("sent", "to"),
                    _ => ("new state", "from"),
                };
                let a = args([
                    ("message", e.text.as_deref().map(Arg::from)),
                    ("state", e.extra.as_deref().map(Arg::from)),
                    (side, e.peer.map(|p| process_label(view, p).into())),
                ]);
                self.instant(out, ids, name, e.timestamp_ns, a)?;
                let flow = match (kind, e.peer) {
                    (EventKind::Send, Some(to)) => Some(("s", self.flows.send(node, e.pid, to))),
                    (EventKind::Receive, Some(from)) => {
                        Some(("f", self.flows.receive(node, from, e.pid)))
                    }
                    _ => None,
                };
                if let Some((ph, id)) = flow {
                    let mut f = ChromeEvent::new("message", ph, ids.0, ids.1);
                    f.cat = "message";
                    f.ts = Some(self.ts(e.timestamp_ns));
                    f.id = Some(id);
                    f.bp = (ph == "f").then_some("e");
                    self.write(out, &f)?;
                }
                Ok(())
            }
        }
    }

    /// Calls still running are written as begun (`B`), and the array is
    /// closed.
    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let open: Vec<((usize, Pid), Vec<OpenCall>)> = self.open.drain().collect();
        for ((node, pid), calls) in open {
            let Some(&tid) = self.tids.get(&(node, pid)) else {
                continue;
            };
            let chrome_pid = self.pids[&node];
            for call in calls {
                let name = self.names.get(&(node, call.callsite)).cloned();
                let name = name.as_deref().unwrap_or("<unknown function>");
                let mut b = ChromeEvent::new(name, "B", chrome_pid, tid);
                b.cat = "call";
                b.ts = Some(self.ts(call.at_ns));
                b.args = args([("args", call.args.map(Arg::from))]);
                self.write(out, &b)?;
            }
        }
        if self.started {
            out.write_all(b"\n]\n")
        } else {
            out.write_all(b"[]\n")
        }
    }
}
