//! The table of function shapes: each is written once, in `shapes!`, which
//! compiles it three times: plain, under a `#[traced]` on its module, and
//! under its own `#[traced]` (the macro reads a lone function without
//! parsing its body, an item of a module or an `impl` parsed whole). Each
//! row calls the plain and a traced version with tracing off and on and
//! checks that they agree (values, panics, drop order, `Send`), and that
//! the traced ones report a call and a return. A new shape is one function
//! in `shapes!` and one row in `rows!`.

use std::cell::RefCell;
use std::fmt::Debug;
use std::time::Duration;

use nodetrace_agent::{Event, EventKind, Session, SessionOptions};

thread_local! {
    static DROPS: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// Logs its drop, to compare drop orders.
#[derive(Debug)]
pub struct Loud(&'static str);

impl Drop for Loud {
    fn drop(&mut self) {
        DROPS.with(|d| d.borrow_mut().push(self.0));
    }
}

fn drops() -> Vec<&'static str> {
    DROPS.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// An extractor as web frameworks write them: a parameter is a pattern.
#[derive(Debug)]
pub struct Path<T>(pub T);

/// A type that is not `Debug`.
pub struct Opaque;

macro_rules! shapes {
    (types { $($ty:item)* } impls { $($imp:item)* } fns { $($item:item)* }) => {
        mod plain {
            #![allow(dead_code, clippy::ptr_arg, clippy::manual_async_fn, clippy::async_yields_async)]
            use super::*;
            $($ty)* $($imp)* $($item)*
        }
        #[nodetrace_agent::traced]
        mod traced {
            #![allow(dead_code, clippy::ptr_arg, clippy::manual_async_fn, clippy::async_yields_async)]
            use super::*;
            $($ty)* $($imp)* $($item)*
        }
        mod lone {
            #![allow(dead_code, clippy::ptr_arg, clippy::manual_async_fn, clippy::async_yields_async)]
            use super::*;
            $($ty)*
            $(#[nodetrace_agent::traced] $imp)*
            $(#[nodetrace_agent::traced] $item)*
        }
    };
}

shapes! {
types {
    pub struct Named {
        pub name: String,
        pub count: u32,
    }
}
impls {
    impl Named {
        pub async fn name(&self) -> &str {
            &self.name
        }

        pub fn count_mut(&mut self) -> &mut u32 {
            &mut self.count
        }

        pub async fn count_mut_async(&mut self) -> &mut u32 {
            &mut self.count
        }
    }
}
fns {
    pub fn evens(v: Vec<u32>) -> impl Iterator<Item = u32> {
        v.into_iter().filter(|x| x % 2 == 0)
    }

    pub fn later(n: u32) -> impl std::future::Future<Output = u32> {
        async move { n + 1 }
    }

    pub async fn nested(n: u32) -> impl std::future::Future<Output = u32> {
        async move { n * 2 }
    }

    pub fn boxed_error(s: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
        let n: u32 = s.parse()?;
        if n > 100 {
            return Err(Box::new(std::fmt::Error));
        }
        Ok(n)
    }

    pub fn boxed_debug(which: bool) -> Box<dyn Debug> {
        if which { Box::new(1u8) } else { Box::new("one") }
    }

    pub fn as_str(s: &String) -> Option<&str> {
        Some(s)
    }

    pub fn empty_first(v: &[u32]) -> &[u32] {
        if v.len() < 2 {
            return &[];
        }
        v
    }

    pub fn dflt<T: Default>() -> T {
        Default::default()
    }

    pub fn parse<T: std::str::FromStr>(s: &str) -> Option<T> {
        s.parse().ok()
    }

    pub fn fatal(m: &str) -> ! {
        panic!("fatal: {m}")
    }

    pub fn configured(#[cfg(any())] gone: u32, kept: u32, #[cfg(all())] here: u32) -> u32 {
        kept + here
    }

    pub fn drop_order(a: Loud, b: Loud, (c, d): (Loud, Loud), _: Loud) -> usize {
        let _local = Loud("local");
        let _ = (&a, &b, &c, &d);
        DROPS.with(|d| d.borrow().len())
    }

    pub fn with_macros(n: u32) -> u32 {
        println!("with_macros {n}");
        assert!(n < 1000, "small");
        tracing::debug!(n, "computed");
        n * 3
    }

    pub fn with_static() -> u32 {
        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    pub fn extract(Path(id): Path<u32>, (a, b): (u8, u8)) -> u32 {
        id + u32::from(a) + u32::from(b)
    }

    pub fn opaque(_o: Opaque) -> Opaque {
        Opaque
    }

    #[track_caller]
    pub fn caller_line() -> u32 {
        std::panic::Location::caller().line()
    }

    #[track_caller]
    pub fn unwrap_here(v: Option<u32>) -> u32 {
        v.unwrap()
    }

    #[track_caller]
    pub fn always_panics() -> u32 {
        panic!("always")
    }

    pub async fn send_across_await(n: u32) -> u32 {
        tokio::task::yield_now().await;
        n
    }

    pub fn inner_attribute(n: u32) -> u32 {
        #![allow(unused_variables)]
        let unused = 1;
        n
    }
}
}

/// `#[traced] impl` written inside a `macro_rules!`: its `self` comes from
/// the macro, not from the caller.
macro_rules! counter_type {
    ($t:ident) => {
        pub struct $t(pub u32);

        #[nodetrace_agent::traced]
        impl $t {
            pub fn get(&self) -> u32 {
                self.0
            }
        }
    };
}

counter_type!(Counter);

/// The agent re-exported by a facade crate, named with `crate = path`.
mod facade {
    pub use nodetrace_agent as agent;
}

#[nodetrace_agent::traced(crate = crate::facade::agent)]
fn through_facade(n: u32) -> u32 {
    n + 1
}

/// A `Debug` impl that calls a traced function: formatting must not recurse.
pub struct Reentrant;

impl Debug for Reentrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reentrant({})", reentrant_show(self))
    }
}

#[nodetrace_agent::traced]
fn reentrant_show(r: &Reentrant) -> u32 {
    let _ = r;
    7
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(f).expect_err("a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn assert_send<T: Send>(_: &T) {}

/// Each row runs the plain version and the traced one in module `$m`, and
/// compares what they did.
macro_rules! rows {
    ($m:ident) => {{
        let evens = |v: Vec<u32>| -> (Vec<u32>, Vec<u32>) {
            (plain::evens(v.clone()).collect(), $m::evens(v).collect())
        };
        let (p, t) = evens(vec![1, 2, 3, 4]);
        assert_eq!(p, t);
        assert_eq!(block_on(plain::later(1)), block_on($m::later(1)));
        assert_eq!(
            block_on(async { plain::nested(2).await.await }),
            block_on(async { $m::nested(2).await.await })
        );
        let mut pn = plain::Named {
            name: "bob".into(),
            count: 0,
        };
        let mut tn = $m::Named {
            name: "bob".into(),
            count: 0,
        };
        assert_eq!(block_on(pn.name()), block_on(tn.name()));
        *pn.count_mut() += 1;
        *tn.count_mut() += 1;
        *block_on(pn.count_mut_async()) += 1;
        *block_on(tn.count_mut_async()) += 1;
        assert_eq!((pn.count, tn.count), (2, 2));
        for s in ["7", "x", "700"] {
            assert_eq!(
                format!("{:?}", plain::boxed_error(s)),
                format!("{:?}", $m::boxed_error(s))
            );
        }
        for which in [true, false] {
            assert_eq!(
                format!("{:?}", plain::boxed_debug(which)),
                format!("{:?}", $m::boxed_debug(which))
            );
        }
        let s = "x".to_owned();
        assert_eq!(plain::as_str(&s), $m::as_str(&s));
        assert_eq!(plain::empty_first(&[1]), $m::empty_first(&[1]));
        assert_eq!(plain::empty_first(&[1, 2]), $m::empty_first(&[1, 2]));
        assert_eq!(plain::dflt::<u32>(), $m::dflt::<u32>());
        assert_eq!(plain::parse::<u8>("9"), $m::parse::<u8>("9"));
        assert_eq!(
            panic_message(|| plain::fatal("x")),
            panic_message(|| $m::fatal("x"))
        );
        assert_eq!(plain::configured(1, 2), $m::configured(1, 2));
        assert_eq!(plain::inner_attribute(3), $m::inner_attribute(3));

        drops();
        let inside = plain::drop_order(Loud("a"), Loud("b"), (Loud("c"), Loud("d")), Loud("_"));
        let plain_order = drops();
        let traced_inside = $m::drop_order(Loud("a"), Loud("b"), (Loud("c"), Loud("d")), Loud("_"));
        assert_eq!(drops(), plain_order, "parameters drop in the same order");
        assert_eq!(inside, traced_inside);

        assert_eq!(plain::with_macros(2), $m::with_macros(2));
        let first = $m::with_static();
        assert_eq!($m::with_static(), first + 1, "one static, on or off");
        assert_eq!(
            plain::extract(Path(1), (2, 3)),
            $m::extract(Path(1), (2, 3))
        );
        let _ = (plain::opaque(Opaque), $m::opaque(Opaque));
        let (p, t, here) = (plain::caller_line(), $m::caller_line(), line!());
        assert_eq!(p, t, "a #[track_caller] function sees its caller's line");
        assert_eq!(p, here);
        let p = panic_message(|| {
            plain::unwrap_here(None);
        });
        let t = panic_message(|| {
            $m::unwrap_here(None);
        });
        assert_eq!(p, t);
        assert_eq!(
            panic_message(|| {
                plain::always_panics();
            }),
            panic_message(|| {
                $m::always_panics();
            })
        );
        let (pf, tf) = (plain::send_across_await(1), $m::send_across_await(1));
        assert_send(&pf);
        assert_send(&tf);
        assert_eq!(block_on(pf), block_on(tf));
    }};
}

fn check_all() {
    rows!(traced);
    rows!(lone);
    assert_eq!(Counter(4).get(), 4);
    assert_eq!(through_facade(1), 2);
    assert_eq!(reentrant_show(&Reentrant), 7);
}

fn drain(session: &Session) -> Vec<Event> {
    session.flush();
    let mut events = Vec::new();
    while let Some(e) = session.recv_timeout(Duration::from_millis(50)) {
        events.push(e);
    }
    events
}

/// The event's function, named within its module's last segment:
/// `traced::evens`, `lone::Named::name`, or, at the top, `through_facade`.
fn name(e: &Event) -> String {
    let info = e
        .callsite
        .and_then(nodetrace_agent::callsite)
        .expect("a callsite")
        .info();
    match info.module.rsplit_once("::") {
        Some((_, m)) => format!("{m}::{}", info.function_path()),
        None => info.function_path(),
    }
}

#[test]
fn every_shape_means_the_same_off_and_on() {
    // Off: nothing records.
    check_all();

    // On: every traced function of this file, with values.
    let session = Session::start(SessionOptions::default()).unwrap();
    let module = module_path!();
    for p in [
        format!("{module}::traced::* -> return"),
        format!("{module}::lone::* -> return"),
        format!("{module}:* -> return"),
    ] {
        assert!(session.trace_pattern(&p.parse().unwrap()) > 0, "{p}");
    }
    check_all();
    let events = drain(&session);
    let returns = |f: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.kind == EventKind::Return && name(e) == f)
            .map(|e| e.text.clone().unwrap_or_default())
            .collect()
    };
    let calls = |f: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.kind == EventKind::Call && name(e) == f)
            .map(|e| e.text.clone().unwrap_or_default())
            .collect()
    };
    for m in ["traced", "lone"] {
        let returns_in = |f: &str| returns(&format!("{m}::{f}"));
        let calls_in = |f: &str| calls(&format!("{m}::{f}"));
        assert_eq!(returns_in("evens").len(), 1);
        assert_eq!(returns_in("Named::name"), [r#""bob""#]);
        assert_eq!(returns_in("Named::count_mut"), ["0"]);
        assert_eq!(
            returns_in("boxed_error"),
            [
                "Ok(7)",
                r#"Err(ParseIntError { kind: InvalidDigit })"#,
                "Err(Error)"
            ]
        );
        assert_eq!(returns_in("as_str"), [r#"Some("x")"#]);
        assert_eq!(returns_in("empty_first"), ["[]", "[1, 2]"]);
        assert_eq!(
            returns_in("dflt"),
            ["<u32>"],
            "a generic value shows its type"
        );
        assert_eq!(returns_in("parse"), ["<core::option::Option<u8>>"]);
        assert_eq!(
            calls_in("configured"),
            ["1, 2"],
            "a parameter cfg removes is not shown"
        );
        assert_eq!(
            calls_in("extract"),
            ["Path(1), (2, 3)"],
            "patterns show whole"
        );
        assert_eq!(
            calls_in("opaque"),
            ["<traced_keeps_the_meaning_of_every_shape::Opaque>"]
        );
        assert_eq!(returns_in("with_macros"), ["6"]);
        assert_eq!(returns_in("caller_line").len(), 1);
        assert_eq!(returns_in("send_across_await"), ["1"]);
    }
    assert_eq!(returns("Counter::get"), ["4"]);
    assert_eq!(returns("through_facade"), ["2"]);
    assert_eq!(
        calls("reentrant_show"),
        ["Reentrant(7)"],
        "a traced call inside Debug runs untraced"
    );
    let exceptions: Vec<String> = events
        .iter()
        .filter(|e| e.kind == EventKind::Exception)
        .map(name)
        .collect();
    assert_eq!(
        exceptions,
        [
            "traced::fatal",
            "traced::unwrap_here",
            "traced::always_panics",
            "lone::fatal",
            "lone::unwrap_here",
            "lone::always_panics"
        ]
    );
    assert_eq!(session.lost(), 0);
}
