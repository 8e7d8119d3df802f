//! An async traced call whose poll panics must pop its profile frame:
//! otherwise every later call on the thread is charged to it.

mod common;

use common::id;
use nodetrace_agent::{Profile, ProfileOptions, traced};
use nodetrace_protocol::ProfileMode;

#[traced]
async fn panics_in_poll(n: u32) -> u32 {
    tokio::task::yield_now().await;
    if n > 0 {
        panic!("poll {n} fails");
    }
    n
}

/// Panics in its first poll, whose frame is the one its call pushed.
#[traced]
async fn panics_at_once(n: u32) -> u32 {
    if n > 0 {
        panic!("the first poll fails");
    }
    n
}

#[traced]
fn after() -> u32 {
    1
}

#[test]
fn later_calls_are_not_charged_to_a_panicked_poll() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for first in [true, false] {
        let profile = Profile::start(
            ProfileOptions {
                mode: ProfileMode::Fprof,
                histogram: false,
                per_process: false,
            },
            &[],
        )
        .unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if first {
                rt.block_on(panics_at_once(1))
            } else {
                rt.block_on(panics_in_poll(1))
            }
        }));
        assert!(caught.is_err());
        after();
        let s = profile.stop();
        let callers: Vec<Option<u32>> = s
            .edges
            .iter()
            .filter(|e| e.callee == id("after"))
            .map(|e| e.caller)
            .collect();
        assert_eq!(
            callers,
            [None],
            "`after` was called from the top, not from the panicked poll (first poll: {first})"
        );
    }
}
