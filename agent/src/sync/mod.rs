//! Channels as mailboxes: tokio's `mpsc` and `oneshot`, traceable.
//!
//! [`mpsc`] and [`oneshot`] have tokio's API for what actors use (switching
//! is a `use` line, `use nodetrace_agent::sync::mpsc;`, for messages that
//! are `Debug`). A channel's receiver belongs to the
//! process that first receives on it: the channel is that process's mailbox,
//! and its length is the mailbox length `ps`, `top` and `sys statistics`
//! show. With a trace's `send`/`receive` process flags (`nodetrace trace
//! messages`), each send and receive is a message event with the sender's
//! and receiver's pids and the message's `Debug` text, bounded as arguments
//! are; `sys trace` of the owner reports each message it gets and how long
//! it took to handle.
//!
//! While nothing traces messages a send costs tokio's send, one relaxed load
//! and one counter increment; a receive tokio's receive, one relaxed load
//! and two stores to the receiver's own counters.

pub mod mpsc;
pub mod oneshot;

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

use nodetrace_protocol::{EventKind, Pid};

use crate::process::message::{bounded, text_bound, trace_receive, trace_send};
use crate::process::registry;
use crate::record::call::record_event;
use crate::record::clock;
use crate::session::{MESSAGE_SESSIONS, admitted};

/// A channel's counters, shared by its senders and its receiver.
pub(crate) struct Mailbox {
    /// The receiving process (pid bits), 0 until it first receives.
    owner: AtomicU64,
    sent: AtomicU64,
    taken: AtomicU64,
    handled: AtomicU64,
    /// Sessions that `sys` trace the owner.
    pub(crate) sys_mask: AtomicU32,
    pub(crate) created: SystemTime,
}

/// A mailbox's counters, as `sys statistics` adds them up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MailboxFigures {
    pub(crate) messages_in: u64,
    pub(crate) handled: u64,
    pub(crate) len: u64,
}

impl Mailbox {
    fn new() -> Arc<Mailbox> {
        Arc::new(Mailbox {
            owner: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            sys_mask: AtomicU32::new(0),
            created: SystemTime::now(),
        })
    }

    pub(crate) fn figures(&self) -> MailboxFigures {
        let taken = self.taken.load(Ordering::Relaxed);
        let messages_in = self.sent.load(Ordering::Relaxed);
        MailboxFigures {
            messages_in,
            handled: self.handled.load(Ordering::Relaxed),
            len: messages_in.saturating_sub(taken),
        }
    }

    /// The receiving process, once it received.
    fn owner(&self) -> Option<Pid> {
        match self.owner.load(Ordering::Relaxed) {
            0 => None,
            bits => Some(Pid::from_bits(bits)),
        }
    }
}

/// The sender's pid, carried with a message while something traces
/// messages (0 otherwise: no thread-local is read on the way).
#[inline]
fn sender_pid() -> u64 {
    if MESSAGE_SESSIONS.load(Ordering::Relaxed) == 0 {
        0
    } else {
        crate::self_pid().to_bits()
    }
}

/// The sending side of a mailbox: counts, and reports a send when traced.
#[inline]
fn sending(mailbox: &Mailbox, from: u64, message: &dyn Debug) {
    if from != 0 {
        trace_send(Pid::from_bits(from), mailbox.owner(), message);
    }
}

/// A message went in.
#[inline]
fn sent(mailbox: &Mailbox) {
    mailbox.sent.fetch_add(1, Ordering::Relaxed);
}

/// The receiving side's own state: who it is and what it took.
struct Receiving {
    mailbox: Arc<Mailbox>,
    owner: u64,
    taken: u64,
    /// Raw clock when the message being handled was taken, for `sys`.
    got_at: u64,
}

impl Receiving {
    fn new(mailbox: Arc<Mailbox>) -> Receiving {
        Receiving {
            mailbox,
            owner: 0,
            taken: 0,
            got_at: 0,
        }
    }

    /// Before waiting for the next message: the last one is handled.
    #[inline]
    fn before_receive(&mut self) {
        if self.owner == 0 {
            self.adopt();
        }
        self.mailbox.handled.store(self.taken, Ordering::Relaxed);
        if self.got_at != 0 {
            self.handled_traced();
        }
    }

    /// A message was taken from the channel (after [`before_receive`],
    /// which made the channel its owner's).
    ///
    /// [`before_receive`]: Receiving::before_receive
    #[inline]
    fn took(&mut self, from: u64, message: &dyn Debug) {
        self.taken += 1;
        self.mailbox.taken.store(self.taken, Ordering::Relaxed);
        if MESSAGE_SESSIONS.load(Ordering::Relaxed) != 0 {
            let from = (from != 0).then(|| Pid::from_bits(from));
            trace_receive(Pid::from_bits(self.owner), from, message);
        }
        let sys = self.mailbox.sys_mask.load(Ordering::Relaxed);
        if sys != 0 {
            self.got_traced(sys, from, message);
        }
    }

    /// The first receive: the channel becomes this process's mailbox.
    #[cold]
    fn adopt(&mut self) {
        let pid = crate::self_pid();
        self.owner = pid.to_bits();
        self.mailbox.owner.store(self.owner, Ordering::Relaxed);
        registry().add_mailbox(pid, &self.mailbox);
    }

    #[cold]
    fn got_traced(&mut self, mask: u32, from: u64, message: &dyn Debug) {
        let mask = admitted(mask);
        if mask != 0 {
            let pid = Pid::from_bits(self.owner);
            let text = bounded(pid, text_bound(mask), message);
            let peer = (from != 0).then(|| Pid::from_bits(from));
            record_event(EventKind::Got, mask, pid, peer, Some(text), None);
            self.got_at = clock::now();
        }
    }

    #[cold]
    fn handled_traced(&mut self) {
        let took = clock::now().saturating_sub(self.got_at);
        self.got_at = 0;
        let mask = admitted(self.mailbox.sys_mask.load(Ordering::Relaxed));
        if mask != 0 {
            let pid = Pid::from_bits(self.owner);
            crate::record::call::record_timed_event(EventKind::Handled, mask, pid, took);
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if self.owner != 0 {
            registry().remove_mailbox(Pid::from_bits(self.owner), &self.mailbox);
        }
    }
}
