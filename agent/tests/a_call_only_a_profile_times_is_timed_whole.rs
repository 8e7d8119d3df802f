//! A call that only an eprof or fprof of every process wants keeps its
//! frame on the profile's stack and nothing else. Its return must still
//! find that frame through a panic, a profile that ended and another that
//! began while it ran, and a trace session that wants the same function.
//! One test: a node runs one profile at a time.

mod common;

use std::sync::Mutex;

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

/// A profile that [`spans`] stops, and the one it starts in its place.
static SWAP: Mutex<Option<Profile>> = Mutex::new(None);

/// Runs while the profile it began under ends and another begins.
#[traced]
fn spans(mode: ProfileMode) -> u32 {
    let first = SWAP.lock().unwrap().take().unwrap();
    let seen = first.stop();
    *SWAP.lock().unwrap() = Some(fprof_or(mode));
    assert!(calls(&seen, "spans").is_none(), "it has not returned yet");
    after()
}

fn fprof_or(mode: ProfileMode) -> Profile {
    let options = ProfileOptions {
        mode,
        histogram: false,
        per_process: false,
    };
    Profile::start(options, &[]).unwrap()
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
