//! Each thread records into its own ring and the collector drains the
//! rings one after another; a session still gets the events in the order
//! they happened, whichever thread made them, even when a drain reads one
//! ring just before a record lands in it and the next ring just after a
//! later record did (the test failed 4 times in 300 runs before the
//! collector held back what was stamped after a drain began).

use std::sync::mpsc;
use std::time::Duration;

use nodetrace_agent::{Session, SessionOptions, traced};

#[traced]
fn step(n: u32) -> u32 {
    n
}

#[test]
fn calls_on_two_threads_arrive_in_the_order_they_were_made() {
    let session = Session::start(SessionOptions {
        returns: false,
        ..SessionOptions::default()
    })
    .unwrap();
    let pattern = "events_of_several_threads_arrive_in_time_order:step"
        .parse()
        .unwrap();
    assert_eq!(session.trace_pattern(&pattern), 1);
    // Two threads take turns: odd steps on one, even steps on the other.
    let (to_b, b_turn) = mpsc::channel::<u32>();
    let (to_a, a_turn) = mpsc::channel::<u32>();
    let b = std::thread::spawn(move || {
        while let Ok(n) = b_turn.recv() {
            step(n);
            if to_a.send(n + 1).is_err() {
                return;
            }
        }
    });
    let mut n = 1;
    while n <= 40 {
        step(n);
        to_b.send(n + 1).unwrap();
        n = a_turn.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    drop(to_b);
    b.join().unwrap();
    session.flush();
    let seen: Vec<u32> = session
        .take_events()
        .iter()
        .map(|e| e.text.as_deref().unwrap().parse().unwrap())
        .collect();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "events out of the order they were made");
    assert_eq!(seen.len(), 40);
}
