//! The book's names reach the Rust modules, and traces read as the book's.
//!
//! One test: a process runs one Todo system at a time (registered names).

use std::time::Duration;

use chrono::NaiveDate;
use nodetrace_agent::{EventKind, Pattern, Session, SessionOptions, callsite, sys, whereis};
use todo::list::NewEntry;
use todo::{cache, server};

fn pattern(text: &str) -> Pattern {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_patterns_match_and_calls_show_pids_and_dates() {
    let session = Session::start(SessionOptions::default()).unwrap();
    for (text, count) in [
        ("Todo.Server:entries/2", 1),
        ("Todo.Server:add_entry/2", 1),
        ("Todo.Cache:server_process/2", 1),
        ("Todo.Database:store", 1),
        ("Todo.Server:handle_call", 1),
    ] {
        assert_eq!(session.trace_pattern(&pattern(text)), count, "{text}");
    }
    session.clear_pattern(&pattern("todo::*"));
    assert_eq!(session.trace_pattern(&pattern("Todo.Server:entries/2")), 1);

    let system = todo::start(None).await.unwrap();
    assert!(whereis("todo_cache").is_some());
    for n in 1..=3 {
        assert!(whereis(&format!("todo_database_worker:{n}")).is_some());
    }
    let bob = cache::server_process(system.cache(), "bob").await.unwrap();
    assert_eq!(whereis("todo_server:bob"), Some(bob.pid()));
    let again = cache::server_process(system.cache(), "bob").await.unwrap();
    assert_eq!(
        again.pid(),
        bob.pid(),
        "the cache starts one server per list"
    );

    let date = NaiveDate::from_ymd_opt(2023, 12, 19).unwrap();
    server::add_entry(&bob, NewEntry::new(date, "Dentist"))
        .await
        .unwrap();
    let entries = server::entries(&bob, date).await.unwrap();
    assert_eq!(entries.len(), 1);

    let call = session
        .recv_timeout(Duration::from_secs(5))
        .expect("a call event");
    assert_eq!(call.kind, EventKind::Call);
    let meta = callsite(call.callsite.unwrap()).unwrap().metadata();
    assert_eq!((meta.module_path, meta.name), ("todo::server", "entries"));
    assert_eq!(
        call.text.as_deref(),
        Some(format!("{}, 2023-12-19", bob.pid()).as_str())
    );

    let state = sys::get_state("todo_server:bob").await.unwrap();
    assert!(
        state.starts_with("(\"bob\", TodoList {"),
        "the state reads like the book's {{name, list}}: {state}"
    );

    system.stop().await;
    assert_eq!(whereis("todo_server:bob"), None);
    assert_eq!(whereis("todo_cache"), None);
    assert_eq!(whereis("todo_database_worker:1"), None);
    // The names are free again: a second system starts.
    let system = todo::start(None).await.unwrap();
    system.stop().await;
}
