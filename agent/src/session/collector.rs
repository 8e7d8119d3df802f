//! The collector: one background thread that drains every ring.
//!
//! It owns the consumer end of each thread's ring, turns records into
//! [`Event`]s with wall-clock timestamps, and hands each to the bounded queue
//! of every session the record was for, in time order: what was stamped
//! before a drain began goes with that drain, the rest with the next. It
//! never blocks on a session: a full queue counts the event as lost.
//! Nothing it runs is traced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use nodetrace_protocol::{EndReason, Event, EventKind, Pid};

use crate::record::clock;
use crate::record::ring::{NEW_RINGS, Record, forget_ring_in_child, mark_agent_thread};
use crate::session::{MAX_SESSIONS, SLOTS, SessionShared};

/// How long the collector sleeps when every ring is empty.
const IDLE: Duration = Duration::from_millis(1);

/// The collector thread, and the fork generation it runs in: after a
/// `fork()` the child has no collector (threads do not survive a fork) until
/// it starts its own.
static COLLECTOR: Mutex<Option<(u64, Thread)>> = Mutex::new(None);
static FLUSH_ASKED: AtomicU64 = AtomicU64::new(0);
static FLUSH_DONE: AtomicU64 = AtomicU64::new(0);

/// How many times this process's ancestors forked on the way to it: a
/// `pthread_atfork` child handler counts (an atomic add, safe after fork).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The child's side of a fork: it counts the fork, and its one thread lets
/// go of the ring the parent's collector read.
extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    forget_ring_in_child();
}

/// Starts the collector thread if this process has none running.
pub(crate) fn ensure_running() -> Thread {
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        // Safety: the handler only adds to an atomic and stores into a
        // constant thread-local, which are async-signal-safe, as a child
        // handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    let forks = FORKS.load(Ordering::Relaxed);
    let mut collector = COLLECTOR.lock().unwrap_or_else(|p| p.into_inner());
    match &*collector {
        Some((generation, thread)) if *generation == forks => thread.clone(),
        _ => {
            let thread = thread::Builder::new()
                .name("nodetrace-collector".into())
                .spawn(run)
                .expect("spawn the nodetrace collector thread")
                .thread()
                .clone();
            *collector = Some((forks, thread.clone()));
            thread
        }
    }
}

/// Waits until every record pushed before this call was delivered or lost.
pub(crate) fn flush() {
    let running = COLLECTOR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    if !running {
        return;
    }
    let collector = ensure_running();
    let ticket = FLUSH_ASKED.fetch_add(1, Ordering::AcqRel) + 1;
    while FLUSH_DONE.load(Ordering::Acquire) < ticket {
        collector.unpark();
        thread::sleep(Duration::from_micros(200));
    }
}

fn run() {
    mark_agent_thread();
    let mut rings: Vec<rtrb::Consumer<Record>> = Vec::new();
    let mut batches: [Vec<Event>; MAX_SESSIONS] = std::array::from_fn(|_| Vec::new());
    let mut rate_windows: [Option<(usize, Instant)>; MAX_SESSIONS] = [None; MAX_SESSIONS];
    let mut tasks_seen: Vec<Pid> = Vec::new();
    // Events stamped after the last drain began, held for the next one,
    // with the session they are for.
    let mut held: [Option<(Arc<SessionShared>, Vec<Event>)>; MAX_SESSIONS] =
        std::array::from_fn(|_| None);
    loop {
        let asked = FLUSH_ASKED.load(Ordering::Acquire);
        // Rings are drained one after another, so a record can be read from
        // one ring while a record made before it, on another thread, lands
        // in a ring already read. Only what was stamped before this drain
        // began is delivered now: whatever happened before such a record
        // was pushed before the drain began, so it is read by the end of
        // the drain. The rest waits for the next drain.
        let drain_start = clock::unix_nanos(clock::now());
        rings.append(&mut NEW_RINGS.lock().unwrap_or_else(|p| p.into_inner()));
        let sessions: [Option<Arc<SessionShared>>; MAX_SESSIONS] =
            std::array::from_fn(|i| SLOTS[i].session());
        enforce_time_limits(&sessions, &mut rate_windows);
        let mut busiest = 0.0f64;
        for ring in &mut rings {
            let waiting = ring.slots();
            busiest = busiest.max(waiting as f64 / ring.buffer().capacity() as f64);
            for _ in 0..waiting {
                let Ok(record) = ring.pop() else { break };
                dispatch(record, &sessions, &mut batches);
            }
        }
        for (slot, batch) in batches.iter_mut().enumerate() {
            if let Some((session, mut waiting)) = held[slot].take() {
                if sessions[slot]
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &session))
                {
                    batch.append(&mut waiting);
                } else {
                    // Its session left the slot: what it waited for is its.
                    waiting.sort_by_key(|e| e.timestamp_ns);
                    let lost = session.deliver(waiting);
                    SLOTS[slot].lost.fetch_add(lost as u64, Ordering::Relaxed);
                }
            }
            if let Some(s) = &sessions[slot]
                && !batch.is_empty()
            {
                // Put what the rings held back in the order it happened (a
                // task that moved between threads has its call in one ring
                // and its return in another).
                batch.sort_by_key(|e| e.timestamp_ns);
                let now = batch.partition_point(|e| e.timestamp_ns < drain_start);
                let later = batch.split_off(now);
                if !later.is_empty() {
                    held[slot] = Some((s.clone(), later));
                }
                tasks_seen.extend(batch.iter().map(|e| e.pid).filter(|p| p.is_task()));
                let lost = s.deliver(std::mem::take(batch));
                SLOTS[slot].lost.fetch_add(lost as u64, Ordering::Relaxed);
            }
            batch.clear();
        }
        if !tasks_seen.is_empty() {
            tasks_seen.sort_unstable();
            tasks_seen.dedup();
            crate::process::saw_tasks(&tasks_seen);
            tasks_seen.clear();
        }
        rings.retain(|r| !(r.is_abandoned() && r.is_empty()));
        FLUSH_DONE.fetch_max(asked, Ordering::AcqRel);
        // A ring filling fast is drained again at once; otherwise the
        // collector naps, so that records arrive in batches.
        if busiest < BUSY {
            thread::park_timeout(IDLE);
        }
    }
}

/// Ends sessions whose time is up and opens new rate windows. A rate
/// window is keyed by the session's address, so a new session in the slot
/// starts its own.
fn enforce_time_limits(
    sessions: &[Option<Arc<SessionShared>>; MAX_SESSIONS],
    windows: &mut [Option<(usize, Instant)>; MAX_SESSIONS],
) {
    let now = Instant::now();
    // The clock events are stamped by: what is kept and what ends agree.
    let now_ns = clock::unix_nanos(clock::now());
    for (slot, session) in sessions.iter().enumerate() {
        let Some(s) = session else {
            windows[slot] = None;
            continue;
        };
        if s.has_run_out(now_ns) {
            s.end(EndReason::Duration(
                s.options.limits.duration_ms.unwrap_or(0),
            ));
        }
        if let Some(rate) = s.options.limits.rate {
            let key = Arc::as_ptr(s) as usize;
            match windows[slot] {
                Some((k, start)) if k == key => {
                    if now.duration_since(start) >= Duration::from_millis(rate.per_ms.max(1)) {
                        SLOTS[slot].rate_used.store(0, Ordering::Relaxed);
                        windows[slot] = Some((key, now));
                    }
                }
                _ => windows[slot] = Some((key, now)),
            }
        }
    }
}

/// A ring this full (as a fraction) is drained without a nap.
const BUSY: f64 = 0.125;

fn dispatch(
    record: Record,
    sessions: &[Option<Arc<SessionShared>>; MAX_SESSIONS],
    batches: &mut [Vec<Event>; MAX_SESSIONS],
) {
    let on_callsite = matches!(
        record.kind,
        EventKind::Call | EventKind::Return | EventKind::Exception | EventKind::In | EventKind::Out
    );
    let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
    let (callsite, peer, busy_ns, mut text, mut extra) = if record.kind == EventKind::Log {
        let mut text = record.text.map(String::from).unwrap_or_default();
        let extra = text.split_off((record.aux as usize).min(text.len()));
        (Some(record.ext), None, None, Some(text), nonempty(extra))
    } else if on_callsite {
        let busy = (record.aux != u64::MAX).then(|| clock::nanos_between(0, record.aux));
        (
            Some(record.ext),
            None,
            busy,
            record.text.map(String::from),
            None,
        )
    } else {
        let mut text = record.text.map(String::from).unwrap_or_default();
        let extra = text.split_off(record.ext as usize);
        let peer = (record.aux != 0).then(|| Pid::from_bits(record.aux));
        (None, peer, None, nonempty(text), nonempty(extra))
    };
    let timestamp_ns = clock::unix_nanos(record.ts);
    let duration_ns = matches!(
        record.kind,
        EventKind::Return | EventKind::Exception | EventKind::Handled | EventKind::Out
    )
    .then(|| clock::nanos_between(0, record.duration));
    let mut mask = record.mask;
    while mask != 0 {
        let slot = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let Some(s) = &sessions[slot] else { continue };
        // A record older than the session is not its own; nor is the
        // return of a call that began before it (a session that took the
        // slot of one that ended gets none of its calls' returns).
        if record.ts < s.start
            || (duration_ns.is_some() && record.ts.saturating_sub(record.duration) < s.start)
        {
            continue;
        }
        if s.is_past(timestamp_ns) {
            s.discarded.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let accepted = s.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(max) = s.options.limits.max_events
            && accepted >= max
        {
            s.end(EndReason::MaxEvents(max));
        }
        let last = mask == 0;
        batches[slot].push(Event {
            kind: record.kind,
            pid: record.pid,
            peer,
            callsite,
            timestamp_ns,
            duration_ns,
            busy_ns,
            text: if last { text.take() } else { text.clone() },
            extra: if last { extra.take() } else { extra.clone() },
        });
    }
}
