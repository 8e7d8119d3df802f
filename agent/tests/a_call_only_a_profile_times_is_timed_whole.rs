//! A call that only an eprof or fprof of every process wants keeps its
//! frame on the profile's stack and nothing else. Its return must still
//! find that frame through a panic, a profile that ended and another that
//! began while it ran (sync or async, the next one split by process, in
//! a poll that waits or in the one that completes the call), and
//! a trace session that wants the same function. One test: a node runs one
//! profile at a time.

mod common;

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use nodetrace_agent::{EventKind, Profile, ProfileOptions, Session, SessionOptions, traced};
use nodetrace_protocol::{ProfileMode, ProfileSnapshot};

use common::id;

#[traced]
fn fails(n: u32) -> u32 {
    if n > 0 {
        panic!("call {n} fails");
    }
    n
}

#[traced]
fn after() -> u32 {
    1
}

/// A profile that [`spans`] and [`straddles`] stop, and the one they
/// start in its place.
static SWAP: Mutex<Option<Profile>> = Mutex::new(None);

/// Stops the profile in [`SWAP`] and starts one of `mode` in its place.
fn swap(mode: ProfileMode, per_process: bool) {
    let first = SWAP.lock().unwrap().take().unwrap();
    first.stop();
    *SWAP.lock().unwrap() = Some(profile(mode, per_process));
}

/// Runs while the profile it began under ends and another begins.
#[traced]
fn spans(mode: ProfileMode) -> u32 {
    swap(mode, false);
    after()
}

/// Waits once, and while it waits the profile it began under ends and
/// another, split by process, begins.
#[traced]
async fn straddles(mode: ProfileMode) -> u32 {
    let mut waited = false;
    poll_fn(|_| {
        if std::mem::replace(&mut waited, true) {
            return Poll::Ready(());
        }
        swap(mode, true);
        Poll::Pending
    })
    .await;
    after()
}

/// Completes in its first poll, during which the profile it began under
/// ends and another, split by process, begins.
#[traced]
async fn swaps_as_it_completes(mode: ProfileMode) -> u32 {
    swap(mode, true);
    after()
}

fn profile(mode: ProfileMode, per_process: bool) -> Profile {
    let options = ProfileOptions {
        mode,
        histogram: false,
        per_process,
    };
    Profile::start(options, &[]).unwrap()
}

fn fprof_or(mode: ProfileMode) -> Profile {
    profile(mode, false)
}

fn calls(s: &ProfileSnapshot, name: &str) -> Option<u64> {
    let id = id(name);
    s.functions
        .iter()
        .find(|f| f.callsite == id)
        .map(|f| f.calls)
}

/// The callers fprof saw of `name`, `None` for the top.
fn callers(s: &ProfileSnapshot, name: &str) -> Vec<Option<u32>> {
    let id = id(name);
    s.edges
        .iter()
        .filter(|e| e.callee == id)
        .map(|e| e.caller)
        .collect()
}

#[test]
fn a_profiled_call_returns_to_its_own_frame() {
    for mode in [ProfileMode::Eprof, ProfileMode::Fprof] {
        // A panic: the call counts once, and takes its frame with it.
        let profile = fprof_or(mode);
        let caught = std::panic::catch_unwind(|| fails(1));
        assert!(caught.is_err());
        fails(0);
        after();
        let s = profile.stop();
        assert_eq!(calls(&s, "fails"), Some(2), "{mode:?}: the panic counts");
        assert_eq!(calls(&s, "after"), Some(1), "{mode:?}");
        if mode == ProfileMode::Fprof {
            assert_eq!(callers(&s, "after"), [None], "not called from `fails`");
        }

        // A profile that ends and another that begins while a call runs:
        // the first never saw it return, the second never saw it begin.
        *SWAP.lock().unwrap() = Some(fprof_or(mode));
        spans(mode);
        after();
        let s = SWAP.lock().unwrap().take().unwrap().stop();
        assert_eq!(calls(&s, "spans"), None, "{mode:?}: begun before it");
        assert_eq!(calls(&s, "after"), Some(2), "{mode:?}");
        if mode == ProfileMode::Fprof {
            assert_eq!(callers(&s, "after"), [None], "`spans` has no frame");
        }

        // The same, async, and the next profile split by process: it
        // completes there, and it is not that profile's either.
        *SWAP.lock().unwrap() = Some(fprof_or(mode));
        let mut cx = Context::from_waker(Waker::noop());
        let mut call = pin!(straddles(mode));
        while call.as_mut().poll(&mut cx).is_pending() {}
        let s = SWAP.lock().unwrap().take().unwrap().stop();
        assert_eq!(calls(&s, "straddles"), None, "{mode:?}: begun before it");
        assert_eq!(calls(&s, "after"), Some(1), "{mode:?}");
        if mode == ProfileMode::Fprof {
            assert_eq!(callers(&s, "after"), [None], "`straddles` has no frame");
        }

        // The same, the profiles swapped during the poll that completes
        // the call: the next profile counts what it saw begin, not it.
        *SWAP.lock().unwrap() = Some(fprof_or(mode));
        let call = pin!(swaps_as_it_completes(mode));
        assert_eq!(call.poll(&mut cx), Poll::Ready(1));
        let s = SWAP.lock().unwrap().take().unwrap().stop();
        assert_eq!(calls(&s, "swaps_as_it_completes"), None, "{mode:?}");
        assert_eq!(calls(&s, "after"), Some(1), "{mode:?}");

        // A trace session of the same function: the session gets its
        // call and return, and the profile every call, traced or not.
        let profile = fprof_or(mode);
        let session = Session::start(SessionOptions::default()).unwrap();
        session.trace_pattern(
            &"a_call_only_a_profile_times_is_timed_whole:after"
                .parse()
                .unwrap(),
        );
        after();
        let kinds: Vec<EventKind> = common::drain(&session).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Call, EventKind::Return], "{mode:?}");
        session.stop();
        after();
        assert_eq!(calls(&profile.stop(), "after"), Some(2), "{mode:?}");
    }
}
