//! Timestamps: raw TSC ticks on the hot path, converted off it.
//!
//! Records carry `quanta` raw ticks (one `rdtsc` where the CPU has a stable
//! TSC); the collector turns them into nanoseconds since the Unix epoch using
//! an anchor taken when the clock was first used.

use std::sync::LazyLock;
#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

struct Anchor {
    clock: quanta::Clock,
    raw: u64,
    unix_ns: u64,
}

static ANCHOR: LazyLock<Anchor> = LazyLock::new(|| {
    let clock = quanta::Clock::new();
    #[cfg(target_arch = "x86_64")]
    TSC.store(reads_the_tsc(&clock), Ordering::Relaxed);
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

/// Whether `quanta`'s raw reading is the TSC, once the anchor is taken:
/// then [`now`] reads it inline (an `rdtsc`, no call and no check of the
/// anchor), as `quanta` itself would.
#[cfg(target_arch = "x86_64")]
static TSC: AtomicBool = AtomicBool::new(false);

/// Whether `clock` reads the TSC: its raw reading falls between two reads
/// of the TSC taken around it, three times out of three. (Its other
/// source, the monotonic clock in nanoseconds, is nowhere near the TSC's
/// count of cycles.)
#[cfg(target_arch = "x86_64")]
fn reads_the_tsc(clock: &quanta::Clock) -> bool {
    (0..3).all(|_| {
        // Safety: `rdtsc` exists on every x86-64 CPU.
        let before = unsafe { std::arch::x86_64::_rdtsc() };
        let raw = clock.raw();
        let after = unsafe { std::arch::x86_64::_rdtsc() };
        before <= raw && raw <= after
    })
}

/// Raw ticks now: the cheapest timestamp the machine has.
#[inline(always)]
pub(crate) fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if TSC.load(Ordering::Relaxed) {
        // Safety: as in `reads_the_tsc`.
        return unsafe { std::arch::x86_64::_rdtsc() };
    }
    now_through_quanta()
}

/// [`now`] before the anchor is taken, or where the raw reading is not
/// the TSC: out of line, so that [`now`] stays small where it is inlined.
#[inline(never)]
fn now_through_quanta() -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_reads_what_quanta_reads() {
        // The anchor first, so that both reads of `now` take the path a
        // call takes once the clock is in use.
        LazyLock::force(&ANCHOR);
        let first = now();
        let quanta = ANCHOR.clock.raw();
        let last = now();
        assert!(first <= quanta && quanta <= last, "{first} {quanta} {last}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_clock_whose_reading_is_not_the_tsc_is_not_taken_for_it() {
        let (mock, time) = quanta::Clock::mock();
        time.increment(1_000_000);
        assert!(!reads_the_tsc(&mock));
    }
}
