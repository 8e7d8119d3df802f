//! Callsites: one `static` per `#[traced]` function, known at link time.
//!
//! The `#[traced]` attribute gives every function a [`Callsite`] placed in
//! the `CALLSITES` distributed slice (`linkme`), so the registry lists every
//! traceable function of the binary before any of them ran, and a pattern set
//! by a tracer reaches functions that have not been called yet.
//!
//! `tracing` spans and events are callsites too, made when `tracing`
//! first registers them (see `crate::bridge`): they are leaked once,
//! numbered after the linked ones, and kept in an append-only list.
//!
//! A callsite's whole runtime state is one `AtomicU64` of flags. The low 32
//! bits say which sessions trace calls here, the high 32 bits which of those
//! want the return value. Zero means off: the function pays one relaxed load
//! and a predicted branch (and the test of the call's depth, zero, when it
//! returns), with no lock, no thread-local and no allocation.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use linkme::distributed_slice;
use nodetrace_protocol::{CallsiteInfo, CallsiteKind, Level, Pattern};

use crate::record::call;

/// Every `#[traced]` function of the binary, in link order.
///
/// The slice's name, and so its linker section, carries the version of the
/// agent that semver lets cargo link twice (`0.1`, then `1`, `2`...): two
/// such versions in one binary keep two registries instead of colliding
/// in one section. A test checks that the name follows the version.
#[distributed_slice]
pub static NODETRACE_CALLSITES_0_1: [Callsite];

pub use self::NODETRACE_CALLSITES_0_1 as CALLSITES;

/// What a callsite is: where the function lives and what it looks like.
#[derive(Debug)]
pub struct Metadata {
    /// `module_path!()` of the function, e.g. `todo::server`.
    pub module_path: &'static str,
    /// For a method of a traced `impl` block, its type as written there,
    /// without generics, e.g. `Store`.
    pub self_type: Option<&'static str>,
    /// For a method of a trait impl, the trait, e.g. `Storage`.
    pub trait_name: Option<&'static str>,
    /// The function's name.
    pub name: &'static str,
    /// Its parameter count, a `self` receiver included.
    pub arity: u8,
    /// Source file.
    pub file: &'static str,
    /// Source line.
    pub line: u32,
    /// Whether it is an `async fn`.
    pub is_async: bool,
}

/// One traceable function: its metadata and its flags word.
#[derive(Debug)]
pub struct Callsite {
    flags: AtomicU64,
    /// Its id once found, else `u32::MAX` (see [`Callsite::id`]).
    id: AtomicU32,
    meta: Metadata,
    origin: Origin,
}

/// Where a callsite comes from; `tracing`'s carry their own id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// A `#[traced]` function: its id is its index in the linked slice.
    Traced,
    /// A `tracing` span or event (its id is in the callsite).
    Tracing {
        kind: CallsiteKind,
        level: Level,
        target: &'static str,
    },
}

impl Callsite {
    /// A switched-off callsite; `#[traced]` writes one per function.
    pub const fn new(meta: Metadata) -> Callsite {
        Callsite {
            flags: AtomicU64::new(0),
            id: AtomicU32::new(u32::MAX),
            meta,
            origin: Origin::Traced,
        }
    }

    /// Where the callsite comes from.
    pub fn kind(&self) -> CallsiteKind {
        match self.origin {
            Origin::Traced => CallsiteKind::Function,
            Origin::Tracing { kind, .. } => kind,
        }
    }

    /// The level of a `tracing` callsite.
    pub(crate) fn level(&self) -> Option<Level> {
        match self.origin {
            Origin::Traced => None,
            Origin::Tracing { level, .. } => Some(level),
        }
    }

    /// The target of a `tracing` callsite.
    pub(crate) fn target(&self) -> Option<&'static str> {
        match self.origin {
            Origin::Traced => None,
            Origin::Tracing { target, .. } => Some(target),
        }
    }

    /// Whether a profile counts this callsite's time as polls (an async
    /// function, or a span, which may be entered many times) rather than
    /// as one frame from call to return.
    #[inline]
    pub(crate) fn is_polled(&self) -> bool {
        self.meta.is_async || !matches!(self.origin, Origin::Traced)
    }

    /// The function this callsite stands for.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The flags word: zero when off. This is the whole cost of a
    /// switched-off function.
    #[inline(always)]
    pub(crate) fn flags(&self) -> u64 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Whether any session traces this callsite now.
    pub fn is_enabled(&self) -> bool {
        self.flags() != 0
    }

    /// Index of this callsite in the registry; events refer to it.
    #[inline]
    pub fn id(&self) -> u32 {
        match self.id.load(Ordering::Relaxed) {
            u32::MAX => self.find_id(),
            id => id,
        }
    }

    /// A `#[traced]` callsite's id, its index in the linked slice, found
    /// at its first use (reading the slice's bounds is a dozen
    /// instructions) and kept. A `tracing` callsite has its id from
    /// [`register`].
    #[cold]
    #[inline(never)]
    fn find_id(&self) -> u32 {
        let base = CALLSITES.as_ptr() as usize;
        let offset = self as *const Callsite as usize - base;
        let id = (offset / size_of::<Callsite>()) as u32;
        self.id.store(id, Ordering::Relaxed);
        id
    }

    /// The callsite as a tracer sees it.
    pub fn info(&self) -> CallsiteInfo {
        CallsiteInfo {
            id: self.id(),
            module: self.meta.module_path.to_owned(),
            function: self.meta.name.to_owned(),
            self_type: self.meta.self_type.map(str::to_owned),
            trait_name: self.meta.trait_name.map(str::to_owned),
            arity: self.meta.arity,
            file: self.meta.file.to_owned(),
            line: self.meta.line,
            is_async: self.meta.is_async,
            kind: self.kind(),
            level: self.level(),
            target: match self.origin {
                Origin::Tracing { target, .. } if target != self.meta.module_path => {
                    Some(target.to_owned())
                }
                _ => None,
            },
        }
    }

    /// Whether `pattern` selects this callsite's calls: a function or a
    /// span, never an event.
    pub(crate) fn matches(&self, pattern: &Pattern) -> bool {
        self.kind() != CallsiteKind::Event
            && pattern.matches_method(
                self.meta.module_path,
                self.meta.self_type,
                self.meta.name,
                self.meta.arity,
            )
    }

    /// Switches on what `bits` asks for (and the recording runtime, the
    /// first time).
    pub(crate) fn set_bits(&self, bits: u64) {
        call::switch_on();
        self.flags.fetch_or(bits, Ordering::Release);
    }

    pub(crate) fn clear_bits(&self, bits: u64) {
        self.flags.fetch_and(!bits, Ordering::Relaxed);
    }
}

/// The `tracing` callsites registered so far, in the order they were.
static REGISTERED: RwLock<Vec<&'static Callsite>> = RwLock::new(Vec::new());

/// Every callsite of the binary: each `#[traced]` function, whether it ran
/// yet or not, then each `tracing` span and event `tracing` registered so
/// far (it registers one when it first runs).
///
/// ```
/// // In a binary with `#[traced] fn f() {}`, `callsites()` lists `f`
/// // before it is first called.
/// let all = nodetrace_agent::callsites();
/// assert!(all.iter().all(|c| !c.metadata().name.is_empty()));
/// ```
pub fn callsites() -> Vec<&'static Callsite> {
    let registered = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    CALLSITES.iter().chain(registered.iter().copied()).collect()
}

/// How many callsites there are now; ids run from zero to this.
pub(crate) fn callsite_count() -> usize {
    CALLSITES.len() + REGISTERED.read().unwrap_or_else(|p| p.into_inner()).len()
}

/// The callsite with index `id`, if there is one.
pub fn callsite(id: u32) -> Option<&'static Callsite> {
    let id = id as usize;
    CALLSITES.get(id).or_else(|| {
        let registered = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
        registered.get(id - CALLSITES.len()).copied()
    })
}

/// Makes a callsite for a `tracing` span or event, numbered after every
/// other. The caller holds the sessions' pattern lock (see
/// `session::adopt`), so no pattern is set between this and its adoption.
pub(crate) fn register(
    meta: Metadata,
    kind: CallsiteKind,
    level: Level,
    target: &'static str,
) -> &'static Callsite {
    let mut registered = REGISTERED.write().unwrap_or_else(|p| p.into_inner());
    let id = (CALLSITES.len() + registered.len()) as u32;
    let cs: &'static Callsite = Box::leak(Box::new(Callsite {
        flags: AtomicU64::new(0),
        id: AtomicU32::new(id),
        meta,
        origin: Origin::Tracing {
            kind,
            level,
            target,
        },
    }));
    registered.push(cs);
    cs
}

/// The callsite bits of session `slot`: `call` in the low word, `ret` in the high.
pub(crate) fn session_bits(slot: usize, call: bool, ret: bool) -> u64 {
    let bit = 1u64 << slot;
    (if call { bit } else { 0 }) | (if ret { bit << 32 } else { 0 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registry_is_named_for_the_linkable_version() {
        let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
        let minor = env!("CARGO_PKG_VERSION_MINOR");
        let expected = if major == 0 {
            format!("_0_{minor}")
        } else {
            format!("_{major}")
        };
        let source = include_str!("callsite.rs");
        assert!(
            source.contains(&format!("pub static NODETRACE_CALLSITES{expected}:")),
            "rename the callsite slice to NODETRACE_CALLSITES{expected} for this version"
        );
    }
}
