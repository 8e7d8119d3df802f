//! `Session::processes` (dbg:p) decides whose calls are recorded.

mod common;

use std::sync::mpsc;
use std::thread;

use common::drain;
use nodetrace_agent::{
    Pid, ProcFlags, ProcessRef, Procs, Session, SessionOptions, register, self_pid, traced,
};

#[traced]
fn work(n: u32) -> u32 {
    n + 1
}

/// Runs `work(n)` on a new thread and returns that thread's pid.
fn work_on_thread(n: u32) -> Pid {
    thread::spawn(move || {
        work(n);
        self_pid()
    })
    .join()
    .unwrap()
}

#[test]
fn one_pid_all_new_and_existing_select_the_right_processes() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(&"process_filter_selects_calls:work".parse().unwrap());
    let me = self_pid();
    let calls = |session: &Session| -> Vec<(Pid, String)> {
        drain(session)
            .into_iter()
            .filter(|e| e.kind == nodetrace_agent::EventKind::Call)
            .map(|e| (e.pid, e.text.unwrap_or_default()))
            .collect()
    };

    // Default: every process.
    work(1);
    let other = work_on_thread(2);
    assert_eq!(calls(&session), [(me, "1".into()), (other, "2".into())]);

    // One process, by registered name.
    register("filter_me", me).unwrap();
    assert_eq!(
        session
            .processes(Procs::One("filter_me".into()), ProcFlags::CALLS)
            .unwrap(),
        1
    );
    work(3);
    work_on_thread(4);
    assert_eq!(calls(&session), [(me, "3".into())]);

    // Existing: this thread existed, a new one did not.
    session
        .processes(Procs::Existing, ProcFlags::CALLS)
        .unwrap();
    work(5);
    work_on_thread(6);
    assert_eq!(calls(&session), [(me, "5".into())]);

    // New: only the thread started after the selection.
    session.processes(Procs::New, ProcFlags::CALLS).unwrap();
    work(7);
    let newer = work_on_thread(8);
    assert_eq!(calls(&session), [(newer, "8".into())]);

    // Messages only: no calls at all.
    session.processes(Procs::All, ProcFlags::MESSAGES).unwrap();
    work(9);
    assert_eq!(calls(&session), []);

    // Every process's calls again: the session is a plain one once more.
    session.processes(Procs::All, ProcFlags::CALLS).unwrap();
    work(10);
    let last = work_on_thread(11);
    assert_eq!(calls(&session), [(me, "10".into()), (last, "11".into())]);
}

#[test]
fn an_unknown_name_is_an_error_that_says_so() {
    let session = Session::start(SessionOptions::default()).unwrap();
    let err = session
        .processes(
            Procs::One(ProcessRef::Name("nobody_here".into())),
            ProcFlags::CALLS,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no process nobody_here"), "{err}");
}

#[test]
fn tokio_tasks_are_processes_of_their_own() {
    let (tx, rx) = mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let outside = self_pid();
        let inside = tokio::spawn(async { self_pid() }).await.unwrap();
        tx.send((outside, inside)).unwrap();
    });
    let (outside, inside) = rx.recv().unwrap();
    assert!(
        !outside.is_task(),
        "block_on runs on the thread, not in a task"
    );
    assert!(inside.is_task(), "{inside} should be a task pid");
    assert!(inside.to_string().ends_with(".1>"));
}
