//! Argument text stops at the bound, and an argument match filters calls.

mod common;

use common::drain;
use nodetrace_agent::{ArgMatch, Session, SessionOptions, traced};

#[derive(Debug)]
struct Huge(Vec<u64>);

#[traced]
fn store(name: &str, state: &Huge) -> usize {
    name.len() + state.0.len()
}

#[traced(skip(secret))]
fn login(user: &str, secret: &str) -> bool {
    !user.is_empty() && !secret.is_empty()
}

struct NotDebug;

#[traced]
fn opaque(_x: NotDebug, y: u8) -> u8 {
    y
}

#[test]
fn a_huge_argument_costs_no_more_than_the_bound() {
    let session = Session::start(SessionOptions {
        text_bound: 40,
        ..SessionOptions::default()
    })
    .unwrap();
    session.trace_pattern(&"arguments_are_bounded_and_filtered:store".parse().unwrap());
    store("bob", &Huge((0..1_000_000).collect()));
    let call = drain(&session).remove(0);
    let text = call.text.unwrap();
    assert_eq!(text, "\"bob\", Huge([0, 1, 2, 3, 4, 5, 6, 7, 8, …");
    assert_eq!(text.len(), 40 + "…".len());
}

#[test]
fn a_match_keeps_only_the_calls_whose_arguments_fit() {
    let substring = Session::start(SessionOptions {
        arg_match: Some(ArgMatch::Substring("alice".into())),
        ..SessionOptions::default()
    })
    .unwrap();
    let regex = Session::start(SessionOptions {
        arg_match: Some(ArgMatch::regex(r#"^"b\w+""#).unwrap()),
        ..SessionOptions::default()
    })
    .unwrap();
    for s in [&substring, &regex] {
        s.trace_pattern(&"arguments_are_bounded_and_filtered:login".parse().unwrap());
    }
    for user in ["alice", "bob", "carol", "bert"] {
        login(user, "hunter2");
    }
    let calls = |s: &Session| -> Vec<String> {
        drain(s)
            .into_iter()
            .filter_map(|e| (e.kind == nodetrace_agent::EventKind::Call).then(|| e.text.unwrap()))
            .collect()
    };
    assert_eq!(calls(&substring), [r#""alice", _"#]);
    assert_eq!(calls(&regex), [r#""bob", _"#, r#""bert", _"#]);
    assert!(ArgMatch::regex("(").is_err());
}

#[test]
fn values_without_debug_show_their_type() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(&"arguments_are_bounded_and_filtered:opaque".parse().unwrap());
    opaque(NotDebug, 4);
    let call = drain(&session).remove(0);
    assert_eq!(
        call.text.as_deref(),
        Some("<arguments_are_bounded_and_filtered::NotDebug>, 4"),
    );
}

/// A value whose `Debug` panics: the traced code's own bug, which a trace
/// shows rather than raises in the traced call.
struct Grumpy(u8);

impl std::fmt::Debug for Grumpy {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("grumpy {} will not be shown", self.0)
    }
}

#[traced]
fn grumpy(g: Grumpy, n: u8) -> Grumpy {
    Grumpy(g.0 + n)
}

#[test]
fn a_debug_that_panics_is_shown_as_such_and_the_call_goes_on() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(
        &"arguments_are_bounded_and_filtered:grumpy -> return"
            .parse()
            .unwrap(),
    );
    let out = std::panic::catch_unwind(|| grumpy(Grumpy(1), 2).0);
    assert_eq!(out.ok(), Some(3), "the traced call returns as untraced");
    let events = drain(&session);
    let texts: Vec<_> = events.iter().map(|e| e.text.as_deref()).collect();
    assert_eq!(
        texts,
        [Some("<Debug panicked>, 2"), Some("<Debug panicked>")],
        "{events:?}"
    );
}
