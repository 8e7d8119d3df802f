//! Tasks spawned with `task::spawn` and the owners of traced channels are
//! processes: listed, timed while observed, traced by their messages.

mod common;

use std::time::Duration;

use common::drain;
use nodetrace_agent::sync::{mpsc, oneshot};
use nodetrace_agent::task::{self, TaskState};
use nodetrace_agent::{
    EventKind, ProcFlags, ProcessKind, Procs, Session, SessionOptions, processes, self_pid, sys,
};

/// The process named `name`, if listed.
fn named(name: &str) -> Option<nodetrace_agent::ProcessInfo> {
    processes()
        .into_iter()
        .find(|p| p.name.as_deref() == Some(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_task_is_listed_timed_while_observed_and_gone_when_done() {
    task::set_observing(false);
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let worker = task::spawn("tasks_worker", async move {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let _ = wait.await;
        self_pid()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let listed = named("tasks_worker").expect("listed by its name");
    assert_eq!(listed.kind, ProcessKind::Task);
    assert!(listed.pid.is_task());
    let figures = listed.task.expect("a task has counters");
    assert_eq!(figures.polls, 0, "nothing is counted while not observed");

    task::set_observing(true);
    go.send(()).unwrap();
    let pid = worker.await.unwrap();
    assert_eq!(
        pid, listed.pid,
        "the pid is the one self_pid answers inside"
    );
    assert!(
        named("tasks_worker").is_none(),
        "a finished task leaves the list"
    );

    let timed = task::spawn("tasks_timed", async {
        std::thread::sleep(Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::thread::sleep(Duration::from_millis(5));
    });
    tokio::time::sleep(Duration::from_millis(12)).await;
    let t = named("tasks_timed").unwrap().task.unwrap();
    assert!(t.polls >= 1 && t.busy_ns >= 5_000_000, "{t:?}");
    assert_eq!(t.state, TaskState::Idle, "{t:?}");
    assert!(t.idle_ns > 0, "{t:?}");
    timed.await.unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let woken = task::spawn("tasks_woken", async move {
        while !*stopped.borrow_and_update() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = stopped.changed() => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let w = named("tasks_woken").unwrap().task.unwrap();
    assert!(
        w.wakes >= 2 && w.wakes <= w.polls,
        "each poll after the first was a wake: {w:?}"
    );
    stop.send(true).unwrap();
    woken.await.unwrap();
    task::set_observing(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_is_the_mailbox_of_the_process_that_receives_on_it() {
    let (tx, mut rx) = mpsc::channel::<u32>(64);
    let (ready_tx, ready) = oneshot::channel::<()>();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let actor = task::spawn("tasks_actor", async move {
        rx.recv().await;
        ready_tx.send(()).unwrap();
        let _ = go.await;
        let mut n = 1;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    tx.send(0).await.unwrap();
    ready.await.unwrap();
    for i in 1..=5 {
        tx.send(i).await.unwrap();
    }
    let p = named("tasks_actor").unwrap();
    assert!(p.has_mailbox);
    assert_eq!(
        (p.mailbox_len, p.messages_in, p.handled),
        (5, 6, 0),
        "{p:?}"
    );
    let stats = sys::statistics("tasks_actor").unwrap();
    assert_eq!((stats.mailbox_len, stats.messages_in), (5, 6));
    assert_eq!(stats.messages_out, None);
    go_tx.send(()).unwrap();
    drop(tx);
    assert_eq!(actor.await.unwrap(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_receives_on_traced_channels_are_message_events() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, oneshot::Sender<usize>)>();
    let server = task::spawn("tasks_server", async move {
        while let Some((word, reply)) = rx.recv().await {
            let _ = reply.send(word.len());
        }
    });
    // The server owns its channel once it first receives.
    let (reply, answer) = oneshot::channel();
    tx.send(("warm", reply)).unwrap();
    assert_eq!(answer.await.unwrap(), 4);
    let server_pid = named("tasks_server").unwrap().pid;

    let session = Session::start(SessionOptions::default()).unwrap();
    session
        .processes(Procs::One("tasks_server".into()), ProcFlags::MESSAGES)
        .unwrap();
    let me = task::spawn("tasks_client", async move {
        let (reply, answer) = oneshot::channel();
        tx.send(("hello", reply)).unwrap();
        (self_pid(), answer.await.unwrap())
    });
    let (client_pid, n) = me.await.unwrap();
    assert_eq!(n, 5);
    let events = drain(&session);
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.pid, e.peer, e.text.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                EventKind::Receive,
                server_pid,
                Some(client_pid),
                Some(r#"("hello", oneshot::Sender)"#)
            ),
            (EventKind::Send, server_pid, Some(client_pid), Some("5")),
        ],
        "the server's receive from the client, and its reply to the caller"
    );
    drop(session);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_shared_by_several_tasks_must_be_named_by_pid() {
    let (stop, wait) = tokio::sync::watch::channel(false);
    let spawn = |mut wait: tokio::sync::watch::Receiver<bool>| {
        task::spawn("tasks_twin", async move {
            let _ = wait.changed().await;
        })
    };
    let a = spawn(wait.clone());
    let b = spawn(wait);
    let err = sys::statistics("tasks_twin").unwrap_err();
    assert!(
        err.to_string().contains("2 tasks are named tasks_twin"),
        "{err}"
    );
    stop.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_trace_of_an_actor_covers_its_later_channels_and_ends_with_its_session() {
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let (later_tx, later_rx) = tokio::sync::oneshot::channel::<mpsc::UnboundedReceiver<u32>>();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let actor = task::spawn("tasks_sys", async move {
        rx.recv().await;
        done_tx.send(0).unwrap();
        let mut later = later_rx.await.unwrap();
        while let Some(n) = later.recv().await {
            done_tx.send(n).unwrap();
        }
    });
    tx.send(0).unwrap();
    done.recv().await.unwrap();

    let session = Session::start(SessionOptions::default()).unwrap();
    sys::trace(&session, "tasks_sys", true).unwrap();
    let (second_tx, second_rx) = mpsc::unbounded_channel::<u32>();
    later_tx.send(second_rx).unwrap();
    second_tx.send(1).unwrap();
    assert_eq!(done.recv().await, Some(1));
    let kinds: Vec<EventKind> = drain(&session).iter().map(|e| e.kind).collect();
    // Its handled event comes when it next waits, which may be before or
    // after the drain.
    assert!(
        kinds == [EventKind::Got] || kinds == [EventKind::Got, EventKind::Handled],
        "a channel adopted after sys::trace is traced: {kinds:?}"
    );
    drop(session);

    let next = Session::start(SessionOptions::default()).unwrap();
    second_tx.send(2).unwrap();
    assert_eq!(done.recv().await, Some(2));
    assert!(
        drain(&next).is_empty(),
        "an ended session's sys trace does not pass to the next in its slot"
    );
    drop(second_tx);
    actor.await.unwrap();
}
