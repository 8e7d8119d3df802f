//! Per-thread rings of fixed-size records.
//!
//! Each thread that records gets its own single-producer ring (`rtrb`) the
//! first time it records; the collector owns the other end. Pushing never
//! blocks and never allocates: a full ring drops the record and counts it, for
//! the thread and for each session the record was for.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nodetrace_protocol::{EventKind, Pid};

use crate::process::thread_pid;
use crate::session::collector;
use crate::session::{MAX_SESSIONS, SLOTS};

/// The default number of records a thread's ring holds.
pub const DEFAULT_RING_CAPACITY: usize = 8192;

static RING_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_RING_CAPACITY);

/// Sets the capacity of rings created from now on (threads that already
/// recorded keep theirs). The node's memory for tracing is bounded by this
/// times the number of recording threads.
pub fn set_ring_capacity(records: usize) {
    RING_CAPACITY.store(records.max(1), Ordering::Relaxed);
}

/// One thing that happened, as a traced thread writes it: one cache line.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Record {
    pub(crate) kind: EventKind,
    /// The sessions it is for.
    pub(crate) mask: u32,
    /// The callsite id, for calls, returns and exceptions; for messages and
    /// sys events, where the text ends and the gen_server state begins.
    pub(crate) ext: u32,
    /// For messages and sys events, the other process's pid bits (0 for
    /// none); for returns, raw ticks spent in polls (`u64::MAX` if not async).
    pub(crate) aux: u64,
    pub(crate) pid: Pid,
    /// Raw clock ticks.
    pub(crate) ts: u64,
    /// Raw ticks of wall time, on returns and exceptions.
    pub(crate) duration: u64,
    /// Arguments, value, panic message, or message text and state.
    pub(crate) text: Option<Box<str>>,
}

const _: () = assert!(size_of::<Record>() == 64);

/// A ring's loss counters. Only the ring's own thread writes them, with
/// plain stores, so counting a drop takes no locked instruction.
#[derive(Debug)]
pub(crate) struct RingStats {
    pub(crate) thread: Pid,
    pub(crate) dropped: AtomicU64,
    /// Records dropped, by session slot.
    lost: [AtomicU64; MAX_SESSIONS],
}

impl RingStats {
    fn count(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Rings created since the collector last looked.
pub(crate) static NEW_RINGS: Mutex<Vec<rtrb::Consumer<Record>>> = Mutex::new(Vec::new());

/// The counters of every live thread's ring. A thread that exits folds its
/// counts into [`RETIRED_LOST`] and leaves, so the list holds live threads
/// only, however many came and went.
static RING_STATS: Mutex<Vec<Arc<RingStats>>> = Mutex::new(Vec::new());

/// Records lost by the rings of threads that have exited, by session slot.
static RETIRED_LOST: [AtomicU64; MAX_SESSIONS] = [const { AtomicU64::new(0) }; MAX_SESSIONS];

/// Records each live thread's ring dropped because it was full, by thread pid.
pub fn ring_drops() -> Vec<(Pid, u64)> {
    RING_STATS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|s| (s.thread, s.dropped.load(Ordering::Relaxed)))
        .collect()
}

/// Records dropped by full rings since the node started, live threads'
/// and exited ones'.
pub(crate) fn ring_drops_total() -> u64 {
    let live: u64 = ring_drops().iter().map(|(_, n)| n).sum();
    live + RETIRED_LOST
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .sum::<u64>()
}

/// The capacity rings are created with now, in records.
pub(crate) fn ring_capacity() -> usize {
    RING_CAPACITY.load(Ordering::Relaxed)
}

/// Records dropped by full rings for the session in `slot`, ever.
pub(crate) fn ring_lost(slot: usize) -> u64 {
    let stats = RING_STATS.lock().unwrap_or_else(|p| p.into_inner());
    let live: u64 = stats
        .iter()
        .map(|s| s.lost[slot].load(Ordering::Relaxed))
        .sum();
    live + RETIRED_LOST[slot].load(Ordering::Relaxed)
}

/// Rings whose counters are kept, one per live recording thread.
#[cfg(test)]
pub(crate) fn live_rings() -> usize {
    RING_STATS.lock().unwrap_or_else(|p| p.into_inner()).len()
}

struct ThreadRing {
    producer: rtrb::Producer<Record>,
    stats: Arc<RingStats>,
}

impl Drop for ThreadRing {
    /// The thread exits: its losses join the retired counts, under the
    /// list's lock so that a reader never counts them twice or not at all.
    fn drop(&mut self) {
        RING_PTR.set(std::ptr::null_mut());
        let mut stats = RING_STATS.lock().unwrap_or_else(|p| p.into_inner());
        for (retired, lost) in RETIRED_LOST.iter().zip(&self.stats.lost) {
            retired.fetch_add(lost.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        stats.retain(|s| !Arc::ptr_eq(s, &self.stats));
    }
}

thread_local! {
    static RING: RefCell<Option<ThreadRing>> = const { RefCell::new(None) };
    /// The ring in `RING` while it lives and has a reader, else null: a
    /// push reads this alone (no destructor state to check, no borrow flag
    /// to set). A forked child's one thread has it nulled by
    /// [`forget_ring_in_child`], so that its next push makes a new ring.
    static RING_PTR: Cell<*mut ThreadRing> = const { Cell::new(std::ptr::null_mut()) };
    static AGENT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Called in a forked child, whose one thread is the one that forked: the
/// ring it had from the parent has no reader here. Safe after a fork (a
/// constant thread-local's store, no lock, no allocation).
pub(crate) fn forget_ring_in_child() {
    RING_PTR.set(std::ptr::null_mut());
}

/// Marks this thread as the agent's own: nothing it runs is recorded.
pub(crate) fn mark_agent_thread() {
    AGENT_THREAD.with(|a| a.set(true));
}

/// Whether this thread is the agent's own, or is formatting an event (a
/// `Debug` impl that calls a traced function then runs it untraced, rather
/// than recursing until the stack overflows).
#[inline]
pub(crate) fn is_agent_thread() -> bool {
    AGENT_THREAD.try_with(Cell::get).unwrap_or(true)
}

/// Runs `f`, which formats an event, with this thread's own tracing off.
pub(crate) fn untraced<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = AGENT_THREAD.try_with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(AGENT_THREAD.try_with(|a| a.replace(true)).unwrap_or(true));
    f()
}

fn new_ring() -> ThreadRing {
    let (producer, consumer) = rtrb::RingBuffer::new(RING_CAPACITY.load(Ordering::Relaxed));
    let stats = Arc::new(RingStats {
        thread: thread_pid(),
        dropped: AtomicU64::new(0),
        lost: [const { AtomicU64::new(0) }; MAX_SESSIONS],
    });
    RING_STATS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(stats.clone());
    NEW_RINGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(consumer);
    collector::ensure_running();
    ThreadRing { producer, stats }
}

/// Writes a record into this thread's ring, or drops and counts it.
///
/// The record arrives as its fields, not built: the ring slot is the first
/// place it is written whole, which spares a copy through the stack (and
/// the store-forwarding stall that copy costs).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn push(
    kind: EventKind,
    mask: u32,
    ext: u32,
    aux: u64,
    pid: Pid,
    ts: u64,
    duration: u64,
    text: Option<Box<str>>,
) {
    let record = Record {
        kind,
        mask,
        ext,
        aux,
        pid,
        ts,
        duration,
        text,
    };
    // Safety: `RING_PTR` is this thread's ring inside `RING` from when
    // `first_push` makes it until its `Drop` (which nulls it first); only
    // this thread reads it, and nothing else borrows the ring meanwhile:
    // `RING` is used by this function alone, which never calls itself.
    if let Some(ring) = unsafe { RING_PTR.get().as_mut() } {
        if let Err(rtrb::PushError::Full(record)) = ring.producer.push(record) {
            ring.dropped(record);
        }
        return;
    }
    push_slow(record);
}

/// A push on a thread with no ring yet, or one from before a fork. A push
/// made while the ring is being made (by a traced function that the
/// allocator calls) is counted lost.
#[cold]
#[inline(never)]
fn push_slow(record: Record) {
    let mask = record.mask;
    let pushed = RING
        .try_with(|cell| {
            let mut ring = cell.try_borrow_mut().ok()?;
            first_push(&mut ring, record);
            Some(())
        })
        .ok()
        .flatten();
    if pushed.is_none() {
        count_lost(mask);
    }
}

/// Makes this thread's ring (again, in a forked child) and pushes into it.
fn first_push(ring: &mut Option<ThreadRing>, record: Record) {
    // A ring from before a fork has no reader in this process; its drop
    // would take locks that a thread of the parent may have held. The
    // pointer to it goes first, so that a push made while the new ring is
    // made (from the allocator) takes the slow path and finds it busy.
    RING_PTR.set(std::ptr::null_mut());
    if let Some(stale) = ring.take() {
        std::mem::forget(stale);
    }
    let ring = ring.insert(new_ring());
    RING_PTR.set(ring);
    if let Err(rtrb::PushError::Full(record)) = ring.producer.push(record) {
        ring.dropped(record);
    }
}

impl ThreadRing {
    #[cold]
    #[inline(never)]
    fn dropped(&self, record: Record) {
        RingStats::count(&self.stats.dropped);
        let mut mask = record.mask;
        while mask != 0 {
            RingStats::count(&self.stats.lost[mask.trailing_zeros() as usize]);
            mask &= mask - 1;
        }
    }
}

/// Counts one lost record against each session in `mask`, from a thread
/// whose ring is gone.
fn count_lost(mut mask: u32) {
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        SLOTS[i].lost.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_thread_leaves_its_losses_and_nothing_else() {
        let before = live_rings();
        let threads: Vec<_> = (0..200)
            .map(|_| {
                std::thread::spawn(|| {
                    // Slot 31 is no session's: the record is counted, not read.
                    push(EventKind::Call, 1 << 31, 0, 0, Pid::process(1), 0, 0, None);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            live_rings() <= before + 1,
            "{} rings kept for 200 exited threads",
            live_rings() - before
        );
    }
}
