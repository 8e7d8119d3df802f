//! Timestamps: raw TSC ticks on the hot path, converted off it.
//!
//! Records carry `quanta` raw ticks (one `rdtsc` where the CPU has a stable
//! TSC); the collector turns them into nanoseconds since the Unix epoch using
//! an anchor taken when the clock was first used.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

struct Anchor {
    clock: quanta::Clock,
    raw: u64,
    unix_ns: u64,
}

static ANCHOR: LazyLock<Anchor> = LazyLock::new(|| {
    let clock = quanta::Clock::new();
    let raw = clock.raw();
    let unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Anchor {
        clock,
        raw,
        unix_ns,
    }
});

/// Raw ticks now: the cheapest timestamp the machine has.
#[inline]
pub(crate) fn now() -> u64 {
    ANCHOR.clock.raw()
}

/// Nanoseconds between two raw readings (zero if `end` is before `start`).
pub(crate) fn nanos_between(start: u64, end: u64) -> u64 {
    if end <= start {
        return 0;
    }
    ANCHOR.clock.delta_as_nanos(start, end)
}

/// A raw reading as nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos(raw: u64) -> u64 {
    let a = &*ANCHOR;
    if raw >= a.raw {
        a.unix_ns + a.clock.delta_as_nanos(a.raw, raw)
    } else {
        a.unix_ns - a.clock.delta_as_nanos(raw, a.raw)
    }
}
