//! Slots are reused: a session that takes the slot of one that ended must
//! not receive the returns of calls that began before it, and a forked
//! child must be able to flush (its collector did not survive the fork).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nodetrace_agent::{EventKind, Pattern, Session, SessionOptions, traced};

#[traced]
fn long_call(rx: &mpsc::Receiver<()>) -> u32 {
    rx.recv().unwrap();
    1
}

#[traced]
fn short_call() -> u32 {
    2
}

fn pattern() -> Pattern {
    format!("{}:* -> return", module_path!()).parse().unwrap()
}

fn drain(session: &Session) -> Vec<(EventKind, String)> {
    session.flush();
    let mut out = Vec::new();
    while let Some(e) = session.recv_timeout(Duration::from_millis(50)) {
        let cs = nodetrace_agent::callsite(e.callsite.unwrap()).unwrap();
        out.push((e.kind, cs.metadata().name.to_owned()));
    }
    out
}

#[test]
fn a_call_begun_under_an_ended_session_is_not_the_next_ones() {
    let first = Session::start(SessionOptions::default()).unwrap();
    first.trace_pattern(&pattern());
    let (tx, rx) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let worker = thread::spawn(move || {
        started_tx.send(()).unwrap();
        long_call(&rx)
    });
    started.recv().unwrap();
    thread::sleep(Duration::from_millis(50));
    drop(first);

    // The next session takes the freed slot, then the long call returns.
    let second = Session::start(SessionOptions::default()).unwrap();
    second.trace_pattern(&pattern());
    short_call();
    tx.send(()).unwrap();
    assert_eq!(worker.join().unwrap(), 1);
    assert_eq!(
        drain(&second),
        [
            (EventKind::Call, "short_call".to_owned()),
            (EventKind::Return, "short_call".to_owned()),
        ],
        "the long call began before this session"
    );
}

#[test]
fn a_forked_child_records_and_flushes() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(&pattern());
    short_call();
    session.flush();
    // Safety: the child only calls the agent and `_exit`s; it never returns
    // into the test harness.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        short_call();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            session.flush();
            let _ = tx.send(());
        });
        let code = if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
            0
        } else {
            3
        };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    let mut waited = Duration::ZERO;
    loop {
        // Safety: waits for our own child, without blocking.
        let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if done == child {
            break;
        }
        assert!(waited < Duration::from_secs(20), "the forked child hangs");
        thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "flush hung in the forked child"
    );
}
