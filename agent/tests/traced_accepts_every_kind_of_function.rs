//! `#[traced]` compiles on the shapes real code has, and each still records.

mod common;

use std::collections::HashMap;

use common::{drain, line};
use nodetrace_agent::{Session, SessionOptions, traced};

#[derive(Debug, Default)]
struct Store {
    map: HashMap<String, u32>,
}

#[traced]
impl Store {
    /// Returns a borrow while taking `&mut`: runs without a closure.
    fn entry(&mut self, key: &str) -> &mut u32 {
        self.map.entry(key.to_owned()).or_default()
    }

    fn get(&self, key: &str) -> Option<&u32> {
        self.map.get(key)
    }

    fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.map.keys()
    }

    fn into_len(self) -> usize {
        self.map.len()
    }
}

#[traced]
fn generic<T: std::fmt::Debug + Clone>(value: &T, times: usize) -> Vec<T> {
    vec![value.clone(); times]
}

#[traced]
fn with_items(n: u32) -> u32 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    fn double(x: u32) -> u32 {
        x * 2
    }
    CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    double(n) + CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

#[traced]
fn destructures((a, b): (u32, u32), mut c: u32) -> u32 {
    c += a;
    c + b
}

#[traced]
async fn async_ref(s: &str) -> &str {
    &s[1..]
}

#[test]
fn each_shape_records_calls_and_returns() {
    let session = Session::start(SessionOptions::default()).unwrap();
    session.trace_pattern(
        &"traced_accepts_every_kind_of_function:* -> return"
            .parse()
            .unwrap(),
    );

    let mut store = Store::default();
    *store.entry("a") += 5;
    assert_eq!(store.get("a"), Some(&5));
    assert_eq!(store.keys().count(), 1);
    assert_eq!(store.into_len(), 1);
    assert_eq!(generic(&"x", 2), ["x", "x"]);
    assert_eq!(with_items(1), 3);
    assert_eq!(with_items(1), 4, "the body's static exists once, on or off");
    assert_eq!(destructures((1, 2), 3), 6);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(async_ref("xyz")), "yz");

    let me = nodetrace_agent::self_pid();
    let lines: Vec<String> = drain(&session).iter().map(line).collect();
    assert_eq!(
        lines,
        [
            format!(r#"call entry {me}, "a""#),
            "return entry 0".to_owned(),
            format!(r#"call get {me}, "a""#),
            "return get Some(5)".to_owned(),
            format!("call keys {me}"),
            r#"return keys ["a"]"#.to_owned(),
            format!("call into_len {me}"),
            "return into_len 1".to_owned(),
            r#"call generic "x", 2"#.to_owned(),
            r#"return generic ["x", "x"]"#.to_owned(),
            "call with_items 1".to_owned(),
            "return with_items 3".to_owned(),
            "call with_items 1".to_owned(),
            "return with_items 4".to_owned(),
            "call destructures (1, 2), 3".to_owned(),
            "return destructures 6".to_owned(),
            r#"call async_ref "xyz""#.to_owned(),
            r#"return async_ref "yz""#.to_owned(),
        ]
    );
}
