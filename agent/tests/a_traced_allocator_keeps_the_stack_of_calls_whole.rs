//! A recorded sync call waits on its thread's stack of calls, and pushing
//! onto that stack may grow it through the global allocator. An allocator
//! that calls a traced function (a tracking allocator, say) then enters a
//! traced call in the middle of a push: that call must return at once
//! rather than touch the stack being grown, and every call around it must
//! keep its own return. The same holds for a profile's stack of frames,
//! and for a thread's ring while it is made.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::drain;
use nodetrace_agent::{Event, EventKind, Profile, ProfileOptions, Session, SessionOptions, traced};
use nodetrace_protocol::ProfileMode;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ARMED_LARGE: Cell<bool> = const { Cell::new(false) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// What the allocator calls on each reallocation of an armed thread.
#[traced(skip_all)]
fn noted_realloc() {}

/// What the allocator calls on each allocation of 64 KiB or more of a
/// thread armed so: there, the buffer of the thread's ring alone.
#[traced(skip_all)]
fn noted_alloc() {}

/// Calls `note` unless the thread is inside a note already.
fn note_once(note: fn()) {
    if INSIDE.try_with(|i| !i.replace(true)).unwrap_or(false) {
        note();
        let _ = INSIDE.try_with(|i| i.set(false));
    }
}

struct Tracking;

// Safety: every request goes to `System` unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= 64 << 10 && ARMED_LARGE.try_with(Cell::get).unwrap_or(false) {
            note_once(noted_alloc);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        if ARMED.try_with(Cell::get).unwrap_or(false) {
            note_once(noted_realloc);
        }
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Whether callsite `id` is the traced function `function`.
fn is_function(id: u32, function: &str) -> bool {
    nodetrace_agent::callsite(id).is_some_and(|cs| cs.info().function == function)
}

/// The events of `kind` of `function`.
fn count(events: &[Event], kind: EventKind, function: &str) -> usize {
    let of_function = |e: &&Event| e.callsite.is_some_and(|id| is_function(id, function));
    events
        .iter()
        .filter(|e| e.kind == kind)
        .filter(of_function)
        .count()
}

#[traced(skip_all)]
fn deep(n: u32) -> u32 {
    if n == 0 { 0 } else { deep(n - 1) + 1 }
}

/// `deep` for the profile's test alone: a profile sees every thread, and
/// the other test's calls of `deep` run meanwhile.
#[traced(skip_all)]
fn deeper(n: u32) -> u32 {
    if n == 0 { 0 } else { deeper(n - 1) + 1 }
}

#[test]
fn a_traced_call_inside_a_push_returns_at_once_and_the_rest_pair_up() {
    let session = Session::start(SessionOptions::default()).unwrap();
    for function in ["deep", "noted_realloc"] {
        let pattern =
            format!("a_traced_allocator_keeps_the_stack_of_calls_whole:{function} -> return");
        assert_eq!(session.trace_pattern(&pattern.parse().unwrap()), 1);
    }
    // A fresh thread: its stack of calls starts empty, so 200 nested calls
    // grow it through `realloc` several times.
    let total = std::thread::spawn(|| {
        ARMED.with(|a| a.set(true));
        (0..3).map(|_| deep(200)).sum::<u32>()
    })
    .join()
    .unwrap();
    assert_eq!(total, 600);
    let events = drain(&session);
    let of = |kind, function| count(&events, kind, function);
    assert_eq!(of(EventKind::Call, "deep"), 603);
    assert_eq!(
        of(EventKind::Return, "deep"),
        603,
        "every deep call returns"
    );
    let noted = of(EventKind::Call, "noted_realloc");
    assert!(noted > 0, "the allocator's traced calls are recorded");
    assert_eq!(of(EventKind::Return, "noted_realloc"), noted);
    assert_eq!(of(EventKind::Exception, "deep"), 0);
    assert_eq!(session.lost(), 0);
}

#[test]
fn a_profile_s_frames_grown_through_a_traced_allocator_stay_whole() {
    for mode in [ProfileMode::Eprof, ProfileMode::Fprof] {
        let options = ProfileOptions {
            mode,
            histogram: false,
            per_process: false,
        };
        let profile = Profile::start(options, &[]).unwrap();
        // A fresh thread: its profile's stack of frames starts empty, so
        // 200 nested calls grow it through `realloc`.
        let total = std::thread::spawn(|| {
            ARMED.with(|a| a.set(true));
            (0..3).map(|_| deeper(200)).sum::<u32>()
        })
        .join()
        .unwrap();
        assert_eq!(total, 600);
        let snapshot = profile.stop();
        let calls = |function| {
            let rows = snapshot.functions.iter();
            rows.filter(|f| is_function(f.callsite, function))
                .map(|f| f.calls)
                .sum::<u64>()
        };
        assert_eq!(calls("deeper"), 603, "{}", mode.name());
    }
}

/// The first call of a thread makes its ring. A traced function that the
/// allocator calls meanwhile cannot push into a ring not yet made: its
/// records are counted lost, and the calls around it keep theirs.
#[traced(skip_all)]
fn first(n: u32) -> u32 {
    n + 1
}

#[test]
fn a_traced_call_made_while_the_ring_is_made_is_counted_lost() {
    let session = Session::start(SessionOptions::default()).unwrap();
    for function in ["first", "noted_alloc"] {
        let pattern =
            format!("a_traced_allocator_keeps_the_stack_of_calls_whole:{function} -> return");
        assert_eq!(session.trace_pattern(&pattern.parse().unwrap()), 1);
    }
    let total = std::thread::spawn(|| {
        ARMED_LARGE.with(|a| a.set(true));
        let total = (0..5).map(first).sum::<u32>();
        ARMED_LARGE.with(|a| a.set(false));
        total
    })
    .join()
    .unwrap();
    assert_eq!(total, 15);
    let events = drain(&session);
    let of = |kind, function| count(&events, kind, function);
    assert_eq!(of(EventKind::Call, "first"), 5);
    assert_eq!(of(EventKind::Return, "first"), 5);
    assert_eq!(
        of(EventKind::Call, "noted_alloc"),
        0,
        "the allocator's call while the ring was made has no ring"
    );
    assert_eq!(
        session.lost(),
        2,
        "its call and its return are counted lost"
    );
}
