//! Message events: who sent what to whom, for `trace messages`.
//!
//! gen_servers and traced channels report their sends and receives here.
//! While no session traces messages this is one relaxed load at the caller;
//! only when one does is the message formatted (bounded) and recorded.

use std::fmt::Debug;
use std::sync::atomic::Ordering;

use nodetrace_protocol::{EventKind, Pid};

use crate::record::call::record_event;
use crate::record::fmt::ArgWriter;
use crate::session::{MESSAGE_SESSIONS, Slot, for_each_slot};

/// The largest text bound of the sessions in `mask`.
pub(crate) fn text_bound(mask: u32) -> usize {
    let mut bound = 0;
    for_each_slot(mask, |_, s| {
        bound = bound.max(s.text_bound.load(Ordering::Relaxed))
    });
    bound
}

/// `value`'s `Debug` text, at most `bound` bytes of it, written by process `pid`.
pub(crate) fn bounded(pid: Pid, bound: usize, value: &dyn Debug) -> String {
    let mut w = ArgWriter::new(bound, pid);
    w.debug(value);
    w.finish().into()
}

/// Reports that `from` sent `message` to `to`, to the sessions that trace
/// `from`'s sends.
#[inline]
pub(crate) fn trace_send(from: Pid, to: Option<Pid>, message: &dyn Debug) {
    let sessions = MESSAGE_SESSIONS.load(Ordering::Relaxed);
    if sessions != 0 {
        trace_message(
            EventKind::Send,
            sessions,
            from,
            to,
            message,
            Slot::traces_sends_of,
        );
    }
}

/// Reports that `at` received `message` from `from`, to the sessions that
/// trace `at`'s receives.
#[inline]
pub(crate) fn trace_receive(at: Pid, from: Option<Pid>, message: &dyn Debug) {
    let sessions = MESSAGE_SESSIONS.load(Ordering::Relaxed);
    if sessions != 0 {
        trace_message(
            EventKind::Receive,
            sessions,
            at,
            from,
            message,
            Slot::traces_receives_of,
        );
    }
}

#[cold]
fn trace_message(
    kind: EventKind,
    sessions: u32,
    pid: Pid,
    peer: Option<Pid>,
    message: &dyn Debug,
    wants: fn(&Slot, Pid) -> bool,
) {
    let mut mask = 0;
    for_each_slot(sessions, |i, s| {
        if wants(s, pid) && s.admit() {
            mask |= 1 << i;
        }
    });
    if mask != 0 {
        let text = bounded(pid, text_bound(mask), message);
        record_event(kind, mask, pid, peer, Some(text), None);
    }
}
