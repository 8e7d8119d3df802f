//! Sessions: one tracer's view of the node.
//!
//! A [`Session`] is what `dbg:tracer/0` creates: it owns one of 32 slots, and
//! its bit in a callsite's flags word is what `tp` sets and `ctp` clears. Its
//! process selection (`dbg:p`) and options are read on the enabled path only.
//! The collector delivers the events whose records carry the session's bit
//! to its bounded queue; what does not fit is counted as lost, never waited
//! for. Dropping the session, or [`clear_all`], returns every callsite it set
//! to zero cost.

pub(crate) mod collector;

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use nodetrace_protocol::{
    CallsiteKind, Counts, EndReason, Event, Level, Limits, Pattern, Pid, ProfileMode,
};
use regex::Regex;

use crate::bridge;
use crate::process::{ProcessRef, RegistryError, pid_watermark, processes, registry, task_number};
use crate::record::callsite::{Callsite, callsites, session_bits};
use crate::record::fmt::DEFAULT_TEXT_BOUND;
use crate::record::ring::{ring_lost, untraced};
use crate::record::{clock, panics};

/// At most this many sessions trace one node at once.
pub const MAX_SESSIONS: usize = 32;

/// The default capacity of a session's event queue, in events; events beyond
/// it are lost (and counted) until the subscriber catches up.
pub const DEFAULT_QUEUE: usize = 65_536;

/// Which processes a session watches, like the first argument of `dbg:p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Procs {
    /// Every process, present and future.
    All,
    /// Only processes started from now on.
    New,
    /// Only processes that exist now.
    Existing,
    /// One process, by pid or registered name (resolved now, like `dbg:p`).
    One(ProcessRef),
    /// Up to [`MAX_SELECTED`] processes, by pid or registered name.
    Some(Vec<ProcessRef>),
}

/// At most this many processes are selected one by one.
pub const MAX_SELECTED: usize = 5;

/// What a session traces in the processes it watches, like `dbg:p`'s flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcFlags {
    /// Calls of traced functions (`c`).
    pub calls: bool,
    /// Messages the processes send (`s`).
    pub send: bool,
    /// Messages the processes receive (`r`).
    pub receive: bool,
}

impl ProcFlags {
    /// Calls only.
    pub const CALLS: ProcFlags = ProcFlags {
        calls: true,
        send: false,
        receive: false,
    };
    /// Sent and received messages only (`m`).
    pub const MESSAGES: ProcFlags = ProcFlags {
        calls: false,
        send: true,
        receive: true,
    };
    /// Calls and messages.
    pub const ALL: ProcFlags = ProcFlags {
        calls: true,
        send: true,
        receive: true,
    };
}

/// A filter over a call's formatted arguments.
#[derive(Debug, Clone)]
pub enum ArgMatch {
    /// The arguments' text contains this.
    Substring(String),
    /// The arguments' text matches this regex.
    Regex(Regex),
}

impl ArgMatch {
    /// A regex filter; the error says where the regex is wrong.
    pub fn regex(pattern: &str) -> Result<ArgMatch, regex::Error> {
        Regex::new(pattern).map(ArgMatch::Regex)
    }

    fn is_match(&self, text: &str) -> bool {
        match self {
            ArgMatch::Substring(s) => text.contains(s.as_str()),
            ArgMatch::Regex(r) => r.is_match(text),
        }
    }
}

/// How a session records, fixed when it starts.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Format call arguments (`Debug`) into call events.
    pub args: bool,
    /// Bound in bytes on each event's text; formatting stops there.
    pub text_bound: usize,
    /// Record only calls whose formatted arguments match.
    pub arg_match: Option<ArgMatch>,
    /// Capacity of the event queue.
    pub queue: usize,
    /// Deliver return events (switched off, returns are not even recorded).
    pub returns: bool,
    /// Deliver an `in` and an `out` event for each poll of a traced async
    /// call and each enter of a traced span (switched off, polls are not
    /// recorded).
    pub polls: bool,
    /// When the session stops or thins itself: enforced here, in the node.
    pub limits: Limits,
    /// Profile instead of recording events (see [`crate::Profile`]).
    pub profile: Option<ProfileMode>,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            args: true,
            text_bound: DEFAULT_TEXT_BOUND,
            arg_match: None,
            queue: DEFAULT_QUEUE,
            returns: true,
            polls: false,
            limits: Limits {
                max_events: None,
                rate: None,
                duration_ms: None,
            },
            profile: None,
        }
    }
}

/// Why a session could not start or select.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// All slots are in use.
    #[error("{MAX_SESSIONS} sessions already trace this node; stop one (or stop-clear) and retry")]
    TooManySessions,
    /// More processes than a selection holds.
    #[error(
        "{0} processes named; a trace selects at most {MAX_SELECTED} one by one (or all, new, existing)"
    )]
    TooManyProcesses(usize),
    /// A process named in a selection does not exist.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    All,
    /// Pids numbered above `pids` and tasks above `tasks`.
    After {
        pids: u64,
        tasks: u64,
    },
    /// Pids numbered up to `pids` and tasks up to `tasks`.
    UpTo {
        pids: u64,
        tasks: u64,
    },
    /// The first `n` of these pids.
    Some {
        pids: [u64; MAX_SELECTED],
        n: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Selection {
    who: Who,
    flags: ProcFlags,
}

impl Selection {
    fn selects(&self, pid: Pid) -> bool {
        let mark = |pids: u64, tasks: u64| if pid.is_task() { tasks } else { pids };
        match self.who {
            Who::All => true,
            Who::After { pids, tasks } => pid.number() > mark(pids, tasks),
            Who::UpTo { pids, tasks } => pid.number() <= mark(pids, tasks),
            Who::Some { pids, n } => pids[..n].contains(&pid.to_bits()),
        }
    }
}

impl Selection {
    const ALL: Selection = Selection {
        who: Who::All,
        flags: ProcFlags::CALLS,
    };

    fn encode(self) -> [u64; WORDS] {
        let flags = if self.flags.calls { CALLS_BIT } else { 0 }
            | if self.flags.send { SEND_BIT } else { 0 }
            | if self.flags.receive { RECEIVE_BIT } else { 0 };
        let mut words = [0; WORDS];
        let (kind, n) = match self.who {
            Who::All => (0, 0),
            Who::After { pids, tasks } => {
                words[1..3].copy_from_slice(&[pids, tasks]);
                (1, 0)
            }
            Who::UpTo { pids, tasks } => {
                words[1..3].copy_from_slice(&[pids, tasks]);
                (2, 0)
            }
            Who::Some { pids, n } => {
                words[1..].copy_from_slice(&pids);
                (3, n as u64)
            }
        };
        words[0] = flags | kind << 8 | n << 16;
        words
    }

    fn decode(words: [u64; WORDS]) -> Selection {
        let w = words[0];
        let who = match (w >> 8) & 0xff {
            1 => Who::After {
                pids: words[1],
                tasks: words[2],
            },
            2 => Who::UpTo {
                pids: words[1],
                tasks: words[2],
            },
            3 => {
                let mut pids = [0; MAX_SELECTED];
                pids.copy_from_slice(&words[1..]);
                Who::Some {
                    pids,
                    n: ((w >> 16) as usize).min(MAX_SELECTED),
                }
            }
            _ => Who::All,
        };
        let flags = ProcFlags {
            calls: w & CALLS_BIT != 0,
            send: w & SEND_BIT != 0,
            receive: w & RECEIVE_BIT != 0,
        };
        Selection { who, flags }
    }
}

/// A [`Selection`] that traced threads read without a lock or an `Arc`: a
/// sequence lock over a few words (the writer makes the version odd while it
/// writes; a reader retries if it saw a write in progress).
struct SelectionCell {
    version: AtomicU64,
    words: [AtomicU64; WORDS],
}

/// The header word's flag bits; its bits 8 to 15 say who, 16 and up how many.
const CALLS_BIT: u64 = 1;
const SEND_BIT: u64 = 2;
const RECEIVE_BIT: u64 = 4;

/// Words of an encoded [`Selection`]: a header and up to five pids.
const WORDS: usize = 1 + MAX_SELECTED;

impl SelectionCell {
    const fn new() -> SelectionCell {
        SelectionCell {
            version: AtomicU64::new(0),
            words: [const { AtomicU64::new(0) }; WORDS],
        }
    }

    /// Whether `flag` (a bit of the header word) is on in `pid`. The common
    /// case, every process, reads the header word alone.
    #[inline]
    fn selects(&self, pid: Pid, flag: u64) -> bool {
        let before = self.version.load(Ordering::Acquire);
        let header = self.words[0].load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if before & 1 == 0 && self.version.load(Ordering::Relaxed) == before && header >> 8 == 0 {
            return header & flag != 0;
        }
        let sel = self.load();
        sel.encode()[0] & flag != 0 && sel.selects(pid)
    }

    #[inline]
    fn load(&self) -> Selection {
        loop {
            let before = self.version.load(Ordering::Acquire);
            let words: [u64; WORDS] =
                std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if before & 1 == 0 && self.version.load(Ordering::Relaxed) == before {
                return Selection::decode(words);
            }
            std::hint::spin_loop();
        }
    }

    fn store(&self, selection: Selection) {
        let mut version = self.version.load(Ordering::Relaxed);
        loop {
            if version & 1 == 1 {
                std::hint::spin_loop();
                version = self.version.load(Ordering::Relaxed);
                continue;
            }
            match self.version.compare_exchange_weak(
                version,
                version + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => version = now,
            }
        }
        fence(Ordering::Release);
        for (cell, word) in self.words.iter().zip(selection.encode()) {
            cell.store(word, Ordering::Relaxed);
        }
        self.version.store(version + 2, Ordering::Release);
    }
}

/// What the enabled path reads of a session: plain atomics in a static
/// slot, so deciding whether to record takes no lock and no `Arc`.
pub(crate) struct Slot {
    /// A session holds the slot and has not been ended.
    active: AtomicBool,
    selection: SelectionCell,
    /// Bound on argument text; zero if the session wants no arguments.
    pub(crate) args_bound: AtomicUsize,
    /// Bound on any other text.
    pub(crate) text_bound: AtomicUsize,
    /// The session filters calls on their arguments.
    pub(crate) has_match: AtomicBool,
    /// The session wants return events.
    pub(crate) returns: AtomicBool,
    /// The session is a profile: its calls update aggregates, not events.
    pub(crate) profile: AtomicBool,
    /// What a call needs of a plain session, in one word: zero unless the
    /// slot is active and its session traces the calls of every process
    /// with no rate limit, no argument filter, no profile and bounds that
    /// fit the word (then see [`Plain`]).
    plain: AtomicU64,
    /// Calls and messages allowed per rate window; zero for no rate limit.
    rate_limit: AtomicU64,
    /// Calls and messages admitted in the current rate window.
    pub(crate) rate_used: AtomicU64,
    /// Calls and messages the rate limit refused.
    rate_dropped: AtomicU64,
    /// Events the session lost to a full queue (or a thread's ring gone).
    pub(crate) lost: AtomicU64,
    /// Ring losses counted for this slot before the session started.
    ring_lost_before: AtomicU64,
    shared: ArcSwapOption<SessionShared>,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            active: AtomicBool::new(false),
            selection: SelectionCell::new(),
            args_bound: AtomicUsize::new(0),
            text_bound: AtomicUsize::new(0),
            has_match: AtomicBool::new(false),
            returns: AtomicBool::new(false),
            profile: AtomicBool::new(false),
            plain: AtomicU64::new(0),
            rate_limit: AtomicU64::new(0),
            rate_used: AtomicU64::new(0),
            rate_dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            ring_lost_before: AtomicU64::new(0),
            shared: ArcSwapOption::const_empty(),
        }
    }

    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The session as a call's one plain session sees it, if it is one.
    /// The word is zeroed wherever the slot stops being active, and a call
    /// reads it only for a slot its callsite's flags name: a call that
    /// read the flags just before a session ended is recorded, and the
    /// collector discards it, as it would with the flag itself.
    #[inline(always)]
    pub(crate) fn plain(&self) -> Option<Plain> {
        Some(Plain(self.plain.load(Ordering::Relaxed))).filter(|p| p.0 != 0)
    }

    /// Works out [`Slot::plain`] again from the rest of the slot: when the
    /// session starts and whenever its selection changes. Every write of
    /// the word holds the standing lock, and this one reads the selection
    /// and the active flag under it: two selections stored at once, or a
    /// session ended while it starts, leave the word their last state's.
    fn refresh_plain(&self) {
        let _writers = standing();
        let header = self.selection.words[0].load(Ordering::Relaxed);
        let every_process = header >> 8 == 0 && header & CALLS_BIT != 0;
        let (args, text) = (
            self.args_bound.load(Ordering::Relaxed),
            self.text_bound.load(Ordering::Relaxed),
        );
        let plain = every_process
            && self.is_active()
            && !self.profile.load(Ordering::Relaxed)
            && !self.has_match.load(Ordering::Relaxed)
            && self.rate_limit.load(Ordering::Relaxed) == 0
            && args <= Plain::MAX_BOUND
            && text <= Plain::MAX_BOUND;
        let word = if plain {
            1 | u64::from(self.returns.load(Ordering::Relaxed)) << 1
                | (text as u64) << 2
                | (args as u64) << 33
        } else {
            0
        };
        self.plain.store(word, Ordering::Relaxed);
    }

    /// Whether the session records calls made in `pid`.
    #[inline]
    pub(crate) fn traces_calls_of(&self, pid: Pid) -> bool {
        self.selection.selects(pid, CALLS_BIT)
    }

    pub(crate) fn traces_sends_of(&self, pid: Pid) -> bool {
        self.selection.selects(pid, SEND_BIT)
    }

    pub(crate) fn traces_receives_of(&self, pid: Pid) -> bool {
        self.selection.selects(pid, RECEIVE_BIT)
    }

    /// Whether the rate limit lets one more call or message through; counts
    /// a refusal. Checked before anything is formatted.
    #[inline]
    pub(crate) fn admit(&self) -> bool {
        let limit = self.rate_limit.load(Ordering::Relaxed);
        if limit == 0 || self.rate_used.fetch_add(1, Ordering::Relaxed) < limit {
            return true;
        }
        self.rate_dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Whether the session's argument filter lets `text` through.
    pub(crate) fn accepts_args(&self, text: &str) -> bool {
        if !self.has_match.load(Ordering::Relaxed) {
            return true;
        }
        self.shared
            .load()
            .as_ref()
            .and_then(|s| s.options.arg_match.as_ref())
            // The match may allocate (the regex's cache, at its first use
            // on a thread): a traced allocator's calls from there are the
            // agent's own, as in formatting.
            .is_none_or(|m| untraced(|| m.is_match(text)))
    }

    /// The session in this slot, for the collector.
    pub(crate) fn session(&self) -> Option<Arc<SessionShared>> {
        self.shared.load_full()
    }
}

/// A plain session's word ([`Slot::plain`]): bit 0 set, bit 1 whether it
/// wants returns, bits 2 to 32 its text bound, 33 to 63 its argument bound.
#[derive(Clone, Copy)]
pub(crate) struct Plain(u64);

impl Plain {
    /// The largest bound a plain word holds.
    const MAX_BOUND: usize = (1 << 31) - 1;

    #[inline(always)]
    pub(crate) fn returns(self) -> bool {
        self.0 & 2 != 0
    }

    #[inline(always)]
    pub(crate) fn text_bound(self) -> usize {
        (self.0 >> 2) as usize & Plain::MAX_BOUND
    }

    #[inline(always)]
    pub(crate) fn args_bound(self) -> usize {
        (self.0 >> 33) as usize
    }
}

/// The part of a session that the collector reads.
#[derive(Debug)]
pub(crate) struct SessionShared {
    pub(crate) slot: usize,
    pub(crate) options: SessionOptions,
    /// Raw time the session started; older records are not its own.
    pub(crate) start: u64,
    /// When the duration limit ends the session, in nanoseconds since the
    /// Unix epoch as events are stamped: the collector ends the session by
    /// this clock, and what was made before it is the session's even if the
    /// collector reads it after the session ended.
    deadline_ns: Option<u64>,
    /// Events the collector took for the session (delivered or lost to a
    /// full queue): what `max_events` counts.
    pub(crate) accepted: AtomicU64,
    pub(crate) delivered: AtomicU64,
    /// Events the collector read after the session ended for a reason
    /// other than its duration (stopped, a limit, its tracer gone), made
    /// before that end or after it, and events made after its time ran
    /// out.
    pub(crate) discarded: AtomicU64,
    /// Events delivered and not yet taken by the subscriber.
    queued: Arc<AtomicUsize>,
    end: OnceLock<EndReason>,
    sender: Sender<Vec<Event>>,
}

impl SessionShared {
    pub(crate) fn is_ended(&self) -> bool {
        self.end.get().is_some()
    }

    /// Whether an event stamped `ns` is no longer the session's: it came
    /// after the session's time ran out (ended yet or not), or the session
    /// ended for another reason.
    pub(crate) fn is_past(&self, ns: u64) -> bool {
        if self.has_run_out(ns) {
            return true;
        }
        !matches!(self.end.get(), None | Some(EndReason::Duration(_)))
    }

    /// Whether the session's time has run out at `ns` (nanoseconds since
    /// the Unix epoch).
    pub(crate) fn has_run_out(&self, ns: u64) -> bool {
        self.deadline_ns.is_some_and(|d| ns >= d)
    }

    /// Ends the session for `reason` (the first reason wins) and switches off
    /// everything it switched on; the slot stays taken until it is dropped.
    pub(crate) fn end(&self, reason: EndReason) -> bool {
        if self.end.set(reason).is_err() {
            return false;
        }
        switch_off(self.slot);
        true
    }

    /// Hands a batch to the subscriber, as much of it as the queue has room
    /// for; returns how many events did not fit.
    pub(crate) fn deliver(&self, mut batch: Vec<Event>) -> usize {
        let queued = self.queued.load(Ordering::Acquire);
        let room = self.options.queue.saturating_sub(queued);
        let lost = batch.len().saturating_sub(room);
        batch.truncate(room);
        let n = batch.len();
        if n > 0 {
            self.queued.fetch_add(n, Ordering::AcqRel);
            if self.sender.send(batch).is_ok() {
                self.delivered.fetch_add(n as u64, Ordering::Relaxed);
                EVENTS_DELIVERED.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        lost
    }
}

/// Events delivered to any session since the node started.
pub(crate) static EVENTS_DELIVERED: AtomicU64 = AtomicU64::new(0);

/// A running session, as `info` lists it.
pub(crate) struct ActiveSession {
    pub(crate) slot: usize,
    pub(crate) profile: bool,
    pub(crate) limits: Limits,
    pub(crate) delivered: u64,
}

/// The sessions running now.
pub(crate) fn active_sessions() -> Vec<ActiveSession> {
    SLOTS
        .iter()
        .enumerate()
        .filter_map(|(slot, s)| {
            let shared = s.session().filter(|sh| !sh.is_ended())?;
            Some(ActiveSession {
                slot,
                profile: s.profile.load(Ordering::Relaxed),
                limits: shared.options.limits,
                delivered: shared.delivered.load(Ordering::Relaxed),
            })
        })
        .collect()
}

pub(crate) static SLOTS: [Slot; MAX_SESSIONS] = [const { Slot::new() }; MAX_SESSIONS];
static SLOTS_IN_USE: LazyLock<Mutex<u32>> = LazyLock::new(|| Mutex::new(0));
/// Sessions that trace messages: gen_servers check this one word per message.
pub(crate) static MESSAGE_SESSIONS: AtomicU32 = AtomicU32::new(0);
/// Sessions that want polls: a traced async call reads this one word
/// when it starts, and records its polls only for these.
pub(crate) static POLL_SESSIONS: AtomicU32 = AtomicU32::new(0);

/// The sessions of `mask` that are active and whose rate limit lets one
/// more event through.
pub(crate) fn admitted(mask: u32) -> u32 {
    let mut admitted = 0;
    for_each_slot(mask, |i, s| {
        if s.admit() {
            admitted |= 1 << i;
        }
    });
    admitted
}

/// Whether a session tracing a callsite whose flags word is `flags` wants
/// call arguments (or filters on them).
pub(crate) fn wants_args(flags: u64) -> bool {
    let mut wants = false;
    for_each_slot(flags as u32, |_, s| {
        wants |= s.args_bound.load(Ordering::Relaxed) > 0;
    });
    wants
}

/// Calls `f` with each active session slot whose bit is in `mask`.
#[inline(always)]
pub(crate) fn for_each_slot(mut mask: u32, mut f: impl FnMut(usize, &Slot)) {
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let slot = &SLOTS[i];
        if slot.is_active() {
            f(i, slot);
        }
    }
}

/// One tracer's session on this node: what `dbg:tracer()` starts.
///
/// ```
/// use nodetrace_agent::{Session, SessionOptions};
/// use nodetrace_protocol::Pattern;
///
/// let session = Session::start(SessionOptions::default()).unwrap();
/// let matched = session.trace_pattern(&"no_such_crate::*".parse::<Pattern>().unwrap());
/// assert_eq!(matched, 0);
/// ```
#[derive(Debug)]
pub struct Session {
    shared: Arc<SessionShared>,
    batches: Batches,
    buffer: Mutex<VecDeque<Event>>,
}

/// The receiving end of a session's events, in the batches the collector
/// delivers them in; clone it to read events on another thread.
#[derive(Debug, Clone)]
pub struct Batches {
    receiver: Receiver<Vec<Event>>,
    queued: Arc<AtomicUsize>,
}

/// Why no batch came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing arrived in time.
    Timeout,
    /// The session is gone and everything it delivered was taken.
    Ended,
}

impl Batches {
    /// The next batch, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<Event>, RecvError> {
        let batch = self.receiver.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => RecvError::Timeout,
            RecvTimeoutError::Disconnected => RecvError::Ended,
        })?;
        self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        Ok(batch)
    }

    /// The next batch, waiting until one comes or the session is gone.
    pub fn recv(&self) -> Option<Vec<Event>> {
        let batch = self.receiver.recv().ok()?;
        self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }

    /// The next batch if one is waiting.
    pub fn try_recv(&self) -> Option<Vec<Event>> {
        let batch = self.receiver.try_recv().ok()?;
        self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }
}

impl Session {
    /// Starts a session that watches every process's calls until told otherwise.
    pub fn start(options: SessionOptions) -> Result<Session, SessionError> {
        let slot = {
            let mut used = SLOTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (!*used).trailing_zeros() as usize;
            if slot >= MAX_SESSIONS {
                return Err(SessionError::TooManySessions);
            }
            *used |= 1 << slot;
            slot
        };
        panics::install_hook();
        let (sender, receiver) = crossbeam_channel::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        let hot = &SLOTS[slot];
        hot.selection.store(Selection::ALL);
        let args_bound = if options.args || options.arg_match.is_some() {
            options.text_bound.max(1)
        } else {
            0
        };
        hot.args_bound.store(args_bound, Ordering::Relaxed);
        hot.text_bound
            .store(options.text_bound.max(1), Ordering::Relaxed);
        hot.has_match
            .store(options.arg_match.is_some(), Ordering::Relaxed);
        hot.lost.store(0, Ordering::Relaxed);
        hot.returns.store(options.returns, Ordering::Relaxed);
        if options.polls {
            POLL_SESSIONS.fetch_or(1 << slot, Ordering::Relaxed);
        } else {
            POLL_SESSIONS.fetch_and(!(1 << slot), Ordering::Relaxed);
        }
        hot.profile
            .store(options.profile.is_some(), Ordering::Relaxed);
        hot.rate_limit.store(
            options.limits.rate.map_or(0, |r| r.events.max(1)),
            Ordering::Relaxed,
        );
        hot.rate_used.store(0, Ordering::Relaxed);
        hot.rate_dropped.store(0, Ordering::Relaxed);
        hot.ring_lost_before
            .store(ring_lost(slot), Ordering::Relaxed);
        let start = clock::now();
        let deadline_ns = options
            .limits
            .duration_ms
            .map(|ms| clock::unix_nanos(start).saturating_add(ms.saturating_mul(1_000_000)));
        let shared = Arc::new(SessionShared {
            slot,
            options,
            start,
            deadline_ns,
            accepted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            queued: queued.clone(),
            end: OnceLock::new(),
            sender,
        });
        hot.shared.store(Some(shared.clone()));
        hot.active.store(true, Ordering::Release);
        hot.refresh_plain();
        collector::ensure_running();
        let batches = Batches { receiver, queued };
        Ok(Session {
            shared,
            batches,
            buffer: Mutex::new(VecDeque::new()),
        })
    }

    /// Switches call tracing on for every callsite `pattern` matches, with
    /// return values if it ends in `-> return`; returns how many matched
    /// (`dbg:tp`). The pattern stands while the session lasts: a `tracing`
    /// span it matches that is first reached later is switched on then.
    pub fn trace_pattern(&self, pattern: &Pattern) -> usize {
        let slot = self.shared.slot;
        let bits = session_bits(slot, true, pattern.return_trace());
        let matched = {
            let mut standing = standing();
            standing.push(Standing::Calls {
                slot,
                pattern: pattern.clone(),
                bits,
            });
            let mut matched = 0;
            for cs in callsites().into_iter().filter(|cs| cs.matches(pattern)) {
                cs.set_bits(bits);
                matched += 1;
            }
            matched
        };
        bridge::refresh();
        matched
    }

    /// Switches call tracing off for every callsite `pattern` matches;
    /// returns how many matched (`dbg:ctp`).
    pub fn clear_pattern(&self, pattern: &Pattern) -> usize {
        let slot = self.shared.slot;
        let bits = session_bits(slot, true, true);
        let matched = {
            let mut standing = standing();
            standing.retain(|s| {
                !matches!(s, Standing::Calls { slot: s, pattern: p, .. } if *s == slot && p == pattern)
            });
            let mut matched = 0;
            for cs in callsites().into_iter().filter(|cs| cs.matches(pattern)) {
                cs.clear_bits(bits);
                matched += 1;
            }
            matched
        };
        bridge::refresh();
        matched
    }

    /// Streams the `tracing` events at `level` and less verbose whose
    /// module path or target is `pattern`'s module or inside it (every
    /// event if `None`), as log events; like a pattern, it stands for
    /// events first reached later. Returns how many event callsites it
    /// selects now.
    pub fn trace_log(&self, pattern: Option<&Pattern>, level: Level) -> usize {
        let slot = self.shared.slot;
        let bits = session_bits(slot, true, false);
        let filter = LogFilter {
            pattern: pattern.cloned(),
            level,
        };
        let matched = {
            let mut standing = standing();
            let mut matched = 0;
            for cs in callsites().into_iter().filter(|cs| filter.selects(cs)) {
                cs.set_bits(bits);
                matched += 1;
            }
            standing.push(Standing::Log { slot, filter, bits });
            matched
        };
        bridge::refresh();
        matched
    }

    /// Chooses which processes this session watches and what it records in
    /// them, replacing the previous choice (`dbg:p`); returns how many known
    /// processes that selects now.
    pub fn processes(&self, procs: Procs, flags: ProcFlags) -> Result<usize, SessionError> {
        let known = processes();
        let who = match procs {
            Procs::All => Who::All,
            Procs::New => Who::After {
                pids: pid_watermark(),
                tasks: task_watermark(),
            },
            Procs::Existing => Who::UpTo {
                pids: pid_watermark(),
                tasks: task_watermark(),
            },
            Procs::One(target) => select(&[target])?,
            Procs::Some(targets) => select(&targets)?,
        };
        let selection = Selection { who, flags };
        let bit = 1u32 << self.shared.slot;
        if flags.send || flags.receive {
            MESSAGE_SESSIONS.fetch_or(bit, Ordering::Relaxed);
        } else {
            MESSAGE_SESSIONS.fetch_and(!bit, Ordering::Relaxed);
        }
        let hot = &SLOTS[self.shared.slot];
        hot.selection.store(selection);
        hot.refresh_plain();
        Ok(match who {
            Who::Some { n, .. } => n,
            _ => known.iter().filter(|p| selection.selects(p.pid)).count(),
        })
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if buffer.is_empty() {
            buffer.extend(self.batches.recv_timeout(timeout).ok()?);
        }
        buffer.pop_front()
    }

    /// Every event delivered so far and not yet taken.
    pub fn take_events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        while let Some(batch) = self.batches.try_recv() {
            events.extend(batch);
        }
        events
    }

    /// The batches themselves, to read on another thread.
    pub fn batches(&self) -> Batches {
        self.batches.clone()
    }

    /// Events lost so far: full rings or a full queue.
    pub fn lost(&self) -> u64 {
        let slot = &SLOTS[self.shared.slot];
        let from_rings =
            ring_lost(self.shared.slot) - slot.ring_lost_before.load(Ordering::Relaxed);
        slot.lost.load(Ordering::Relaxed) + from_rings
    }

    /// Events delivered to the queue so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    pub(crate) fn slot(&self) -> usize {
        self.shared.slot
    }

    /// Whether the session ended: a limit, [`Session::stop`] or [`clear_all`].
    pub fn is_ended(&self) -> bool {
        self.shared.is_ended()
    }

    /// Why the session ended, if it did.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.shared.end.get().copied()
    }

    /// Ends the session: everything it switched on goes off. Its events
    /// already made are still delivered.
    pub fn stop(&self) {
        self.shared.end(EndReason::Stopped);
    }

    /// Ends the session for `reason` (the first reason wins), as
    /// [`Session::stop`] does.
    pub fn end(&self, reason: EndReason) {
        self.shared.end(reason);
    }

    /// What the session counted so far. Exact after [`Session::flush`].
    pub fn counts(&self) -> Counts {
        Counts {
            delivered: self.delivered(),
            rate_dropped: SLOTS[self.shared.slot].rate_dropped.load(Ordering::Relaxed),
            lost: self.lost(),
            discarded: self.shared.discarded.load(Ordering::Relaxed),
        }
    }

    /// Waits until every record made before this call has been delivered or
    /// counted as lost.
    pub fn flush(&self) {
        collector::flush();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        release(&self.shared);
    }
}

/// Switches off everything session `slot` switched on.
fn switch_off(slot: usize) {
    let bits = session_bits(slot, true, true);
    {
        let mut standing = standing();
        SLOTS[slot].active.store(false, Ordering::Relaxed);
        SLOTS[slot].plain.store(0, Ordering::Relaxed);
        standing.retain(|s| s.slot() != slot);
        for cs in callsites() {
            cs.clear_bits(bits);
        }
    }
    clear_sys_bits(1 << slot);
    MESSAGE_SESSIONS.fetch_and(!(1 << slot), Ordering::Relaxed);
    POLL_SESSIONS.fetch_and(!(1 << slot), Ordering::Relaxed);
    bridge::refresh();
}

/// What sessions asked for that applies to callsites registered later
/// (`tracing` spans and events first reached after the ask).
#[derive(Debug)]
enum Standing {
    Calls {
        slot: usize,
        pattern: Pattern,
        bits: u64,
    },
    Log {
        slot: usize,
        filter: LogFilter,
        bits: u64,
    },
}

impl Standing {
    fn slot(&self) -> usize {
        match self {
            Standing::Calls { slot, .. } | Standing::Log { slot, .. } => *slot,
        }
    }
}

/// The `tracing` events a log session streams.
#[derive(Debug)]
struct LogFilter {
    pattern: Option<Pattern>,
    level: Level,
}

impl LogFilter {
    fn selects(&self, cs: &Callsite) -> bool {
        cs.kind() == CallsiteKind::Event
            && cs.level().is_some_and(|l| l >= self.level)
            && self.pattern.as_ref().is_none_or(|p| {
                p.matches_module_tree(cs.metadata().module_path)
                    || cs.target().is_some_and(|t| p.matches_module_tree(t))
            })
    }
}

/// The standing asks, locked: this lock is taken before the registry of
/// `tracing` callsites, so a callsite registered while a pattern is set
/// gets it either way. Every write of a slot's plain word holds it too.
static STANDING: Mutex<Vec<Standing>> = Mutex::new(Vec::new());

fn standing() -> std::sync::MutexGuard<'static, Vec<Standing>> {
    STANDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the standing asks want of `tracing`: whether any session traces
/// calls (spans may be among them), and the most verbose level a log
/// session streams.
pub(crate) struct TracingWants {
    pub(crate) calls: bool,
    pub(crate) level: Option<Level>,
}

pub(crate) fn tracing_wants() -> TracingWants {
    let standing = standing();
    TracingWants {
        calls: standing.iter().any(|s| matches!(s, Standing::Calls { .. })),
        level: standing
            .iter()
            .filter_map(|s| match s {
                Standing::Log { filter, .. } => Some(filter.level),
                Standing::Calls { .. } => None,
            })
            .min(),
    }
}

/// Makes a `tracing` callsite with `make` and switches it on for every
/// standing pattern or log filter that selects it.
pub(crate) fn adopt(make: impl FnOnce() -> &'static Callsite) -> &'static Callsite {
    let standing = standing();
    let cs = make();
    for ask in standing.iter() {
        let (selects, bits) = match ask {
            Standing::Calls { pattern, bits, .. } => (cs.matches(pattern), *bits),
            Standing::Log { filter, bits, .. } => (filter.selects(cs), *bits),
        };
        if selects {
            cs.set_bits(bits);
        }
    }
    cs
}

fn release(shared: &SessionShared) {
    let slot = shared.slot;
    if !shared.end(EndReason::Stopped) {
        switch_off(slot);
    }
    let mut used = SLOTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    SLOTS[slot].shared.store(None);
    *used &= !(1 << slot);
}

fn clear_sys_bits(mask: u32) {
    let mut reg = registry();
    for server in reg.servers() {
        server.sys_mask.fetch_and(!mask, Ordering::Relaxed);
    }
    reg.clear_mailbox_sys(mask);
}

/// Ends every session and switches every callsite, message trace and sys
/// trace off, like `dbg:stop_clear()`; returns how many sessions it ended.
pub fn clear_all() -> usize {
    {
        let mut standing = standing();
        standing.clear();
        for slot in &SLOTS {
            slot.active.store(false, Ordering::Relaxed);
            slot.plain.store(0, Ordering::Relaxed);
        }
        for cs in callsites() {
            cs.clear_bits(u64::MAX);
        }
    }
    bridge::refresh();
    clear_sys_bits(u32::MAX);
    MESSAGE_SESSIONS.store(0, Ordering::Relaxed);
    POLL_SESSIONS.store(0, Ordering::Relaxed);
    let mut ended = 0;
    for slot in &SLOTS {
        if let Some(s) = slot.shared.load().as_ref()
            && s.end(EndReason::StopClear)
        {
            ended += 1;
        }
    }
    ended
}

/// The pids of `targets`, resolved now.
fn select(targets: &[ProcessRef]) -> Result<Who, SessionError> {
    if targets.len() > MAX_SELECTED {
        return Err(SessionError::TooManyProcesses(targets.len()));
    }
    let reg = registry();
    let mut pids = [0; MAX_SELECTED];
    for (slot, target) in pids.iter_mut().zip(targets) {
        *slot = reg.resolve(target)?.to_bits();
    }
    Ok(Who::Some {
        pids,
        n: targets.len(),
    })
}

/// The id tokio would give a task spawned now: the line between existing and
/// new tasks. Zero outside a runtime, where every task is new.
fn task_watermark() -> u64 {
    tokio::runtime::Handle::try_current()
        .map(|rt| task_number(rt.spawn(async {}).id()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_word(session: &Session) -> Option<Plain> {
        SLOTS[session.shared.slot].plain()
    }

    #[test]
    fn a_plain_word_follows_the_selection_and_goes_with_the_session() {
        let session = Session::start(SessionOptions::default()).unwrap();
        assert!(plain_word(&session).is_some(), "every process, no filter");
        session.processes(Procs::New, ProcFlags::CALLS).unwrap();
        assert!(plain_word(&session).is_none(), "new processes only");
        session.processes(Procs::All, ProcFlags::CALLS).unwrap();
        assert!(plain_word(&session).is_some(), "every process again");
        session.stop();
        assert!(plain_word(&session).is_none(), "ended");
        session.processes(Procs::All, ProcFlags::CALLS).unwrap();
        assert!(plain_word(&session).is_none(), "a selection after the end");
    }

    #[test]
    fn a_session_with_a_rate_limit_has_no_plain_word() {
        let options = SessionOptions {
            limits: Limits {
                rate: Some(nodetrace_protocol::Rate {
                    events: 10,
                    per_ms: 1_000,
                }),
                ..Limits::DEFAULT
            },
            ..SessionOptions::default()
        };
        let session = Session::start(options).unwrap();
        assert!(plain_word(&session).is_none());
    }
}
