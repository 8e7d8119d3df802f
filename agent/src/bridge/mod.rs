//! The `tracing` bridge: a service's `#[tracing::instrument]` spans and
//! `tracing` events, traced like `#[traced]` functions, without a second
//! annotation.
//!
//! [`tracing_layer`] is a `tracing_subscriber` layer with its own per-layer
//! filter. When `tracing` registers a span or event callsite (the first
//! time it runs), the filter makes it a nodetrace callsite (see
//! `record::callsite`) and switches it on for the patterns that stand for
//! it; a pattern set later switches it on then. The filter's interest in a
//! callsite is `always` while a session traces it and `never` otherwise, and
//! every change of patterns has `tracing` ask again
//! (`rebuild_interest_cache`): idle, the bridge wants nothing, and its
//! `max_level_hint` is `OFF`, so it raises no level of the app's.
//!
//! A traced span is a call: recorded at its first enter, in the process
//! (task or thread) that enters it, with its fields as arguments; its enters
//! and exits are its polls (busy time), its close is its return (wall time),
//! and the value of the `ret` or `err` event `#[instrument]` emits is its
//! return value. A `tracing` event a log session selects is a log event.

mod fields;
mod layer;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use arc_swap::ArcSwap;

use nodetrace_protocol::{CallsiteKind, Level};
use rustc_hash::FxHashMap;
use tracing_core::callsite::Identifier;
use tracing_core::metadata::LevelFilter;

use crate::record::callsite::{self, Callsite, Metadata};
use crate::session;

pub use layer::{Bridge, BridgeFilter};

/// The layer that makes a `tracing` service a nodetrace node: add it to a
/// `tracing_subscriber::registry()` next to the app's own layers.
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
///
/// nodetrace_agent::node::start(nodetrace_agent::node::NodeConfig::new("kv@localhost")).unwrap();
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer())
///     .with(nodetrace_agent::tracing_layer())
///     .init();
/// ```
///
/// Idle, it asks `tracing` for nothing: spans the app filters out stay
/// off, and its own filter raises no level. A `nodetrace trace calls`
/// pattern selects spans by module path (or target), span name and field
/// count (the arity); `nodetrace log` streams events.
pub fn tracing_layer<S>() -> tracing_subscriber::filter::Filtered<Bridge, BridgeFilter, S>
where
    S: tracing_core::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    Bridge::default().with_filter(BridgeFilter::default())
}

/// A bridge layer is in a subscriber.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Some session traces calls: spans may be selected, and the `ret` and
/// `err` events of `#[instrument]` carry their return values.
static CALLS: AtomicBool = AtomicBool::new(false);
/// The most verbose level wanted, as a `LevelFilter` index (0 is `OFF`).
static HINT: AtomicU8 = AtomicU8::new(0);

/// The nodetrace callsite of each `tracing` callsite registered: read on
/// every traced span without a lock, copied whole on a registration (rare).
static BY_ID: LazyLock<ArcSwap<FxHashMap<Identifier, &'static Callsite>>> =
    LazyLock::new(|| ArcSwap::from_pointee(FxHashMap::default()));
/// Registrations take this, so that two never copy the map at once.
static REGISTERING: Mutex<()> = Mutex::new(());
/// Some log session runs: spans keep their fields for log lines' context.
static LOGS: AtomicBool = AtomicBool::new(false);

/// Whether a bridge layer is installed: a pattern matching nothing may
/// then wait for a span not reached yet.
pub(crate) fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// What sessions want changed: the filter's answers are worked out again
/// and `tracing` asks again. Call it with no session lock held: `tracing`
/// calls back into the filter.
pub(crate) fn refresh() {
    let wants = session::tracing_wants();
    CALLS.store(wants.calls, Ordering::Relaxed);
    LOGS.store(wants.level.is_some(), Ordering::Relaxed);
    let hint = match (wants.calls, wants.level) {
        (true, _) => 5,
        (false, Some(level)) => 5 - level as u8,
        (false, None) => 0,
    };
    HINT.store(hint, Ordering::Relaxed);
    if is_installed() {
        tracing_core::callsite::rebuild_interest_cache();
    }
}

/// Whether some session asks for spans or events: the hint is not `OFF`.
fn wanted() -> bool {
    HINT.load(Ordering::Relaxed) != 0
}

/// The filter's `max_level_hint`: `OFF` while idle.
fn level_hint() -> LevelFilter {
    match HINT.load(Ordering::Relaxed) {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The nodetrace callsite of a registered `tracing` callsite.
fn lookup(meta: &tracing_core::Metadata<'_>) -> Option<&'static Callsite> {
    BY_ID.load().get(&meta.callsite()).copied()
}

/// The nodetrace callsite of `meta`, made (and switched on for standing
/// patterns) the first time `tracing` registers it.
fn register(meta: &'static tracing_core::Metadata<'static>) -> &'static Callsite {
    if let Some(cs) = lookup(meta) {
        return cs;
    }
    session::adopt(|| {
        let _one = REGISTERING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cs) = lookup(meta) {
            return cs;
        }
        let (kind, arity) = if meta.is_span() {
            let fields = meta.fields().len().min(u8::MAX as usize) as u8;
            (CallsiteKind::Span, fields)
        } else {
            (CallsiteKind::Event, 0)
        };
        let info = Metadata {
            module_path: meta.module_path().unwrap_or(meta.target()),
            self_type: None,
            trait_name: None,
            name: meta.name(),
            arity,
            file: meta.file().unwrap_or("?"),
            line: meta.line().unwrap_or(0),
            is_async: false,
        };
        let cs = callsite::register(info, kind, level(meta), meta.target());
        let mut by_id = FxHashMap::clone(&BY_ID.load());
        by_id.insert(meta.callsite(), cs);
        BY_ID.store(Arc::new(by_id));
        cs
    })
}

fn level(meta: &tracing_core::Metadata<'_>) -> Level {
    match *meta.level() {
        tracing_core::Level::TRACE => Level::Trace,
        tracing_core::Level::DEBUG => Level::Debug,
        tracing_core::Level::INFO => Level::Info,
        tracing_core::Level::WARN => Level::Warn,
        _ => Level::Error,
    }
}

/// Whether `meta` is the `ret` or `err` event of `#[instrument]`: one
/// field, `return` or `error`, and no message.
fn is_return_event(meta: &tracing_core::Metadata<'_>) -> bool {
    let fields = meta.fields();
    meta.is_event()
        && fields.len() == 1
        && fields
            .iter()
            .next()
            .is_some_and(|f| matches!(f.name(), "return" | "error"))
}
