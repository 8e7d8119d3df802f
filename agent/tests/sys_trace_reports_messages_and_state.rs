//! sys::trace reports what a gen_server got, what it sent, and its new state.

mod common;

use common::drain;
use nodetrace_agent::gen_server::{self, GenServer};
use nodetrace_agent::{EventKind, Pid, Session, SessionOptions, self_pid, sys};

#[derive(Debug, Default)]
struct Counter {
    total: u64,
}

impl GenServer for Counter {
    type Call = &'static str;
    type Cast = u64;
    type Info = ();
    type Reply = u64;

    async fn handle_call(&mut self, _: &'static str, _: Pid) -> u64 {
        self.total
    }

    async fn handle_cast(&mut self, n: u64) {
        self.total += n;
    }
}

#[tokio::test]
async fn sys_events_carry_messages_peers_and_state() {
    let session = Session::start(SessionOptions::default()).unwrap();
    let server = gen_server::start_named("counter", Counter::default())
        .await
        .unwrap();
    server.cast(1).unwrap();
    server.call("before").await.unwrap();
    assert!(drain(&session).is_empty(), "off until asked");

    sys::trace(&session, "counter", true).unwrap();
    server.cast(5).unwrap();
    assert_eq!(server.call("total").await, Ok(6));
    let events = drain(&session);
    type Seen<'a> = (EventKind, Option<&'a str>, Option<&'a str>, Option<Pid>);
    let seen: Vec<Seen> = events
        .iter()
        .map(|e| (e.kind, e.text.as_deref(), e.extra.as_deref(), e.peer))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::GotCast, Some("5"), None, None),
            (
                EventKind::NewState,
                None,
                Some("Counter { total: 6 }"),
                None
            ),
            (
                EventKind::GotCall,
                Some("\"total\""),
                None,
                Some(self_pid())
            ),
            (
                EventKind::Sent,
                Some("6"),
                Some("Counter { total: 6 }"),
                Some(self_pid())
            ),
        ]
    );
    assert!(events.iter().all(|e| e.pid == server.pid()));

    sys::trace(&session, server.pid(), false).unwrap();
    server.cast(1).unwrap();
    server.call("after").await.unwrap();
    assert!(drain(&session).is_empty(), "off again");
}

#[tokio::test]
async fn sys_trace_of_an_unknown_server_says_so() {
    let session = Session::start(SessionOptions::default()).unwrap();
    let err = sys::trace(&session, "no_such_server", true).unwrap_err();
    assert!(
        err.to_string().contains("no process no_such_server"),
        "{err}"
    );
}

#[derive(Debug)]
struct Big {
    #[allow(dead_code, reason = "the state is only shown, through Debug")]
    blob: String,
}

impl GenServer for Big {
    type Call = ();
    type Cast = ();
    type Info = ();
    type Reply = ();

    async fn handle_call(&mut self, _: (), _: Pid) {}

    async fn handle_cast(&mut self, _: ()) {}
}

/// A state larger than a frame may carry is cut at the bound, with how
/// much was cut: never a frame the tracer must refuse.
#[tokio::test]
async fn a_huge_state_is_cut_with_a_marker() {
    let blob = "y".repeat(3 * gen_server::STATE_BOUND);
    let _server = gen_server::start_named("big", Big { blob }).await.unwrap();
    let state = sys::get_state("big").await.unwrap();
    let total = 3 * gen_server::STATE_BOUND + "Big { blob: \"\" }".len();
    let cut = total - gen_server::STATE_BOUND;
    assert!(
        state.len() < gen_server::STATE_BOUND + 64,
        "{}",
        state.len()
    );
    assert!(
        state.ends_with(&format!("… ({cut} of {total} bytes cut)")),
        "{}",
        &state[state.len() - 60..]
    );
}
