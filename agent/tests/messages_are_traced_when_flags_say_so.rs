//! Send and receive events between processes, gated by process flags.

mod common;

use common::drain;
use nodetrace_agent::gen_server::{self, GenServer};
use nodetrace_agent::{EventKind, Pid, ProcFlags, Procs, Session, SessionOptions, self_pid};

#[derive(Debug, Default)]
struct Echo;

impl GenServer for Echo {
    type Call = String;
    type Cast = u8;
    type Info = ();
    type Reply = String;

    async fn handle_call(&mut self, request: String, _: Pid) -> String {
        request.to_uppercase()
    }
}

#[tokio::test]
async fn a_traced_server_shows_what_it_receives_and_sends() {
    let session = Session::start(SessionOptions::default()).unwrap();
    let server = gen_server::start(Echo).await.unwrap();
    let me = self_pid();
    server.call("quiet".into()).await.unwrap();
    assert!(drain(&session).is_empty(), "no message flags: nothing");

    session
        .processes(Procs::One(server.pid().into()), ProcFlags::MESSAGES)
        .unwrap();
    server.call("hello".into()).await.unwrap();
    server.cast(7).unwrap();
    server.call("sync".into()).await.unwrap();
    let seen: Vec<(EventKind, Pid, Option<Pid>, String)> = drain(&session)
        .into_iter()
        .map(|e| (e.kind, e.pid, e.peer, e.text.unwrap_or_default()))
        .collect();
    let s = server.pid();
    assert_eq!(
        seen,
        [
            (EventKind::Receive, s, Some(me), "\"hello\"".into()),
            (EventKind::Send, s, Some(me), "\"HELLO\"".into()),
            (EventKind::Receive, s, Some(me), "7".into()),
            (EventKind::Receive, s, Some(me), "\"sync\"".into()),
            (EventKind::Send, s, Some(me), "\"SYNC\"".into()),
        ],
        "the caller is not traced, so its own send and receive are not shown"
    );

    session
        .processes(
            Procs::One(me.into()),
            ProcFlags {
                send: true,
                ..ProcFlags::default()
            },
        )
        .unwrap();
    server.call("hi".into()).await.unwrap();
    let seen: Vec<(EventKind, Pid, Option<Pid>)> = drain(&session)
        .into_iter()
        .map(|e| (e.kind, e.pid, e.peer))
        .collect();
    assert_eq!(seen, [(EventKind::Send, me, Some(s))]);
}
