//! `clear_all` (stop_clear) switches everything off and ends every session.

mod common;

use common::drain;
use nodetrace_agent::gen_server::{self, GenServer};
use nodetrace_agent::{
    Pid, ProcFlags, Procs, Session, SessionOptions, callsites, clear_all, sys, traced,
};

#[traced]
fn a() {}

#[traced]
fn b() {}

#[derive(Debug)]
struct Nop;

impl GenServer for Nop {
    type Call = ();
    type Cast = ();
    type Info = ();
    type Reply = ();

    async fn handle_call(&mut self, _: (), _: Pid) {}
}

#[tokio::test]
async fn every_flag_goes_off_and_every_session_ends() {
    let one = Session::start(SessionOptions::default()).unwrap();
    let two = Session::start(SessionOptions::default()).unwrap();
    one.trace_pattern(
        &"clear_all_returns_every_callsite_to_zero_cost:a"
            .parse()
            .unwrap(),
    );
    two.trace_pattern(
        &"clear_all_returns_every_callsite_to_zero_cost:*"
            .parse()
            .unwrap(),
    );
    two.processes(Procs::All, ProcFlags::ALL).unwrap();
    let server = gen_server::start_named("nop", Nop).await.unwrap();
    sys::trace(&one, "nop", true).unwrap();
    a();
    server.call(()).await.unwrap();
    assert!(!drain(&one).is_empty());
    assert!(!drain(&two).is_empty());

    assert_eq!(clear_all(), 2);
    assert!(callsites().iter().all(|c| !c.is_enabled()));
    assert!(one.is_ended() && two.is_ended());
    a();
    b();
    server.call(()).await.unwrap();
    assert!(drain(&one).is_empty());
    assert!(drain(&two).is_empty());
    assert_eq!(clear_all(), 0, "already ended");
}
