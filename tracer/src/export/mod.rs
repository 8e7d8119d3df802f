//! Exports: a trace's events written where people look at them, as
//! renderers over the same stream the text lines come from.
//!
//! * [`perfetto`] writes Perfetto's protobuf trace format, packet by
//!   packet, so a killed tracer leaves a file that reads up to its last
//!   packet;
//! * [`chrome`] writes the Chrome trace-event JSON (array form, which
//!   readers take without its closing bracket too);
//! * [`otlp`] turns call/return pairs into OpenTelemetry spans and sends
//!   them, batched, from a thread of their own, to an OTLP/HTTP backend.
//!
//! A timeline (Perfetto, Chrome) takes the place of the text lines in the
//! output; OTLP goes alongside whatever the output is. Both need a call's
//! return to close it, so a trace that exports asks the node for returns.
//!
//! What the node sends decides what a timeline can show: a call, its
//! return (wall time, and for an async function or a span its busy time,
//! the sum of its polls) and its exception; messages sent and received;
//! gen_server and log events; and, for a trace that asks (every Perfetto
//! trace), each poll of an async call (`in`, `out`), which Perfetto draws
//! inside the call.

pub mod chrome;
mod encode;
pub mod otlp;
pub mod perfetto;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};

use nodetrace_protocol::{Event, Pid};
use rustc_hash::FxHashMap as HashMap;

use crate::render::{NodeView, Renderer};

/// A file format for a whole timeline, in place of text or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeline {
    /// Perfetto's protobuf trace (`ui.perfetto.dev`, `trace_processor`).
    Perfetto,
    /// The Chrome trace-event JSON (`chrome://tracing`, Perfetto, speedscope).
    Chrome,
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timeline::Perfetto => "perfetto",
            Timeline::Chrome => "chrome",
        })
    }
}

/// Something that writes a trace's events as they come, node by node.
pub trait EventSink {
    /// Writes `event` of node number `node` (its index in the trace),
    /// which `view` describes.
    fn event(
        &mut self,
        out: &mut dyn Write,
        node: usize,
        view: &NodeView,
        event: &Event,
    ) -> io::Result<()>;

    /// The trace is over: writes what closes the file.
    fn finish(&mut self, _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
}

impl EventSink for Renderer {
    fn event(
        &mut self,
        out: &mut dyn Write,
        _node: usize,
        view: &NodeView,
        event: &Event,
    ) -> io::Result<()> {
        Renderer::event(self, out, view, event)
    }
}

/// The sink for `timeline`.
pub fn timeline_sink(timeline: Timeline) -> Box<dyn EventSink + Send> {
    match timeline {
        Timeline::Perfetto => Box::new(perfetto::PerfettoWriter::new()),
        Timeline::Chrome => Box::new(chrome::ChromeWriter::new()),
    }
}

/// How many messages sent and not yet seen received (or the other way
/// round) are kept per pair of processes to draw flows; older ones are
/// forgotten (their arrow is not drawn).
pub const FLOWS_PER_PAIR: usize = 1024;

/// Pairs a message's send with its receive, for flow arrows and span
/// links: messages between two processes arrive in the order they were
/// sent (a mailbox is a FIFO), so the n-th send from A to B is the n-th
/// receive by B from A. Either may be seen first (events of two threads);
/// the first one seen leaves a payload (`T`) that the other one takes.
#[derive(Debug)]
pub struct Flows<T = ()> {
    next: u64,
    sent: Waiting<T>,
    received: Waiting<T>,
}

/// Flows begun on one side, by node and pair (from, to), oldest first:
/// their ids and payloads.
type Waiting<T> = HashMap<(usize, Pid, Pid), VecDeque<(u64, T)>>;

impl<T> Default for Flows<T> {
    fn default() -> Self {
        Flows {
            next: 0,
            sent: HashMap::default(),
            received: HashMap::default(),
        }
    }
}

impl Flows {
    /// The flow id of a message `from` sent to `to` on node `node`.
    pub fn send(&mut self, node: usize, from: Pid, to: Pid) -> u64 {
        self.send_with(node, from, to, ()).0
    }

    /// The flow id of a message `to` received from `from` on node `node`.
    pub fn receive(&mut self, node: usize, from: Pid, to: Pid) -> u64 {
        self.receive_with(node, from, to, ()).0
    }
}

impl<T> Flows<T> {
    /// The flow id of a message `from` sent to `to` on node `node`, and
    /// the payload its receive left if that was seen first (else `payload`
    /// waits for the receive).
    pub fn send_with(&mut self, node: usize, from: Pid, to: Pid, payload: T) -> (u64, Option<T>) {
        let key = (node, from, to);
        match self.received.get_mut(&key).and_then(VecDeque::pop_front) {
            Some((id, theirs)) => (id, Some(theirs)),
            None => (
                Self::fresh(&mut self.next, &mut self.sent, key, payload),
                None,
            ),
        }
    }

    /// The flow id of a message `to` received from `from` on node `node`,
    /// and the payload its send left if that was seen first (else
    /// `payload` waits for the send).
    pub fn receive_with(
        &mut self,
        node: usize,
        from: Pid,
        to: Pid,
        payload: T,
    ) -> (u64, Option<T>) {
        let key = (node, from, to);
        match self.sent.get_mut(&key).and_then(VecDeque::pop_front) {
            Some((id, theirs)) => (id, Some(theirs)),
            None => (
                Self::fresh(&mut self.next, &mut self.received, key, payload),
                None,
            ),
        }
    }

    fn fresh(next: &mut u64, waiting: &mut Waiting<T>, key: (usize, Pid, Pid), payload: T) -> u64 {
        *next += 1;
        let id = *next;
        let waiting = waiting.entry(key).or_default();
        if waiting.len() == FLOWS_PER_PAIR {
            waiting.pop_front();
        }
        waiting.push_back((id, payload));
        id
    }
}

/// The name a track, thread or span shows for `pid` of `view`'s node:
/// `todo_server:bob <0.9.0>`, or the pid alone.
pub fn process_label(view: &NodeView, pid: Pid) -> String {
    match view.registered_name(pid) {
        Some(name) => format!("{name} {pid}"),
        None => pid.to_string(),
    }
}

/// What an event of a call names: `todo::server:entries/2`, or the
/// callsite's number when the node did not describe it.
pub fn call_name(view: &NodeView, callsite: Option<u32>) -> String {
    match view.callsite(callsite) {
        Some(c) => c.mfa(),
        None => match callsite {
            Some(id) => format!("<callsite {id}>"),
            None => "<unknown function>".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_send_pairs_with_the_nth_receive_whichever_comes_first() {
        let (a, b) = (Pid::process(1), Pid::process(2));
        let mut flows = Flows::default();
        let s1 = flows.send(0, a, b);
        let s2 = flows.send(0, a, b);
        assert_eq!(flows.receive(0, a, b), s1);
        let r3 = flows.receive(0, a, b);
        assert_eq!(r3, s2);
        let r4 = flows.receive(0, a, b);
        assert_eq!(flows.send(0, a, b), r4);
        // Another node, or the other direction, is another pair.
        assert_ne!(flows.receive(1, a, b), flows.send(0, b, a));
    }

    #[test]
    fn the_side_seen_first_leaves_its_payload_to_the_other() {
        let (a, b) = (Pid::process(1), Pid::process(2));
        let mut flows: Flows<&str> = Flows::default();
        let (id, none) = flows.send_with(0, a, b, "span of a");
        assert_eq!(none, None);
        assert_eq!(
            flows.receive_with(0, a, b, "span of b"),
            (id, Some("span of a"))
        );
        let (id, none) = flows.receive_with(0, a, b, "b first");
        assert_eq!(none, None);
        assert_eq!(flows.send_with(0, a, b, "a later"), (id, Some("b first")));
    }
}
