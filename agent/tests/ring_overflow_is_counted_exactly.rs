//! A full ring drops records and counts every one: delivered + lost = emitted.

use std::sync::{Arc, Barrier};
use std::thread;

use nodetrace_agent::{Session, SessionOptions, ring_drops, self_pid, set_ring_capacity, traced};

#[traced]
fn tick(n: u64) -> u64 {
    n
}

#[test]
fn every_record_is_either_delivered_or_counted_as_lost() {
    set_ring_capacity(16);
    // A queue that holds everything: every loss here is a full ring.
    let session = Session::start(SessionOptions {
        args: false,
        queue: 1 << 20,
        ..SessionOptions::default()
    })
    .unwrap();
    session.trace_pattern(&"ring_overflow_is_counted_exactly:tick".parse().unwrap());

    const THREADS: u64 = 2;
    const CALLS: u64 = 50_000;
    let start = Arc::new(Barrier::new(THREADS as usize));
    // The workers stay alive until their counts are read: an exited
    // thread's counts join the retired totals and leave `ring_drops`.
    let (done_tx, done) = std::sync::mpsc::channel();
    let (checked, checked_rx) = std::sync::mpsc::channel::<()>();
    let checked_rx = Arc::new(std::sync::Mutex::new(checked_rx));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (start, done_tx, checked_rx) = (start.clone(), done_tx.clone(), checked_rx.clone());
            thread::spawn(move || {
                start.wait();
                for i in 0..CALLS {
                    tick(i);
                }
                done_tx.send(self_pid()).unwrap();
                let _ = checked_rx.lock().unwrap().recv();
            })
        })
        .collect();
    let pids: Vec<_> = (0..THREADS).map(|_| done.recv().unwrap()).collect();
    session.flush();

    let emitted = THREADS * CALLS * 2; // a call and a return each
    let delivered = session.take_events().len() as u64;
    assert_eq!(delivered, session.delivered());
    assert!(
        session.lost() > 0,
        "a 16-record ring must overflow under this flood"
    );
    assert_eq!(delivered + session.lost(), emitted);

    let per_thread: u64 = ring_drops()
        .iter()
        .filter(|(pid, _)| pids.contains(pid))
        .map(|(_, dropped)| dropped)
        .sum();
    assert_eq!(
        per_thread,
        session.lost(),
        "the per-thread counts add up to the same loss"
    );
    drop(checked);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        session.lost(),
        emitted - delivered,
        "the loss stays counted after the threads exit"
    );
}
