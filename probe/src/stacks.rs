//! Hits of probes in time order turned into events: calls, and returns
//! paired with their call by thread and stack pointer.
//!
//! A thread's calls of probed functions form a stack of frames, each
//! known by the stack pointer at its entry (rsp points at the return
//! address). A `ret` runs with rsp where it was at the entry, so a return
//! hit pairs with the frame of that stack pointer. Frames below it (a
//! smaller rsp: deeper) are calls that ended without a return hit: a
//! panic unwound them, or they left by a jump the code could not tell
//! from a jump inside (see [`crate::code::exits`]). They are reported as
//! such and dropped, so one missed return never shifts the pairs that
//! follow. A new call drops the frames at or below its own stack pointer
//! for the same reason: the slot it returns through was theirs.

use std::collections::HashMap;

use nodetrace_protocol::{Event, EventKind, Pid};

use crate::code::ExitKind;

/// Frames kept per thread at most; a deeper recursion forgets its
/// outermost frames (their returns are then not shown).
const MAX_DEPTH: usize = 1024;

/// What the text of a call that ended without a return hit says.
pub(crate) const NO_RETURN: &str =
    "ended without a return: a panic unwound it, or it left by a jump through a register";

/// Where a probe fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// The function's first instruction.
    Entry,
    /// One of its exits.
    Exit(ExitKind),
}

/// One probe hit of the traced process, its registers read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The OS thread.
    pub tid: u32,
    /// Wall clock, ns since the epoch.
    pub time_ns: u64,
    /// Which function (its index among the probes).
    pub probe: u32,
    /// Where in it.
    pub at: At,
    /// rsp.
    pub sp: u64,
    /// rax.
    pub value: u64,
    /// rdi, rsi, rdx, rcx, r8, r9.
    pub args: [u64; 6],
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    probe: u32,
    sp: u64,
    time_ns: u64,
}

/// The frames of every thread with a call in progress.
#[derive(Debug, Default)]
pub(crate) struct Stacks {
    threads: HashMap<u32, Vec<Frame>>,
}

impl Stacks {
    /// Turns `hit` into events appended to `into`: a call (`text`: its
    /// arguments), a return (`text`: its value), or none (a return of a
    /// call made before the trace began), after the frames it shows ended
    /// without a return. `returns` says which probes pair their returns.
    pub fn hit(
        &mut self,
        hit: &Hit,
        text: Option<String>,
        returns: &[bool],
        into: &mut Vec<Event>,
    ) {
        let event = |kind, callsite, text, duration_ns| Event {
            kind,
            pid: Pid::process(u64::from(hit.tid)),
            peer: None,
            callsite: Some(callsite),
            timestamp_ns: hit.time_ns,
            duration_ns,
            busy_ns: None,
            text,
            extra: None,
        };
        let frames = self.threads.entry(hit.tid).or_default();
        // Entry: frames at or below this sp are gone; exit: those below.
        let gone = |f: &Frame| match hit.at {
            At::Entry => f.sp <= hit.sp,
            At::Exit(_) => f.sp < hit.sp,
        };
        while let Some(frame) = frames.last().filter(|f| gone(f)).copied() {
            frames.pop();
            into.push(event(
                EventKind::Exception,
                frame.probe,
                Some(NO_RETURN.to_owned()),
                None,
            ));
        }
        match hit.at {
            At::Entry => {
                into.push(event(EventKind::Call, hit.probe, text, None));
                if returns.get(hit.probe as usize) == Some(&true) {
                    if frames.len() == MAX_DEPTH {
                        frames.remove(0);
                    }
                    frames.push(Frame {
                        probe: hit.probe,
                        sp: hit.sp,
                        time_ns: hit.time_ns,
                    });
                }
            }
            At::Exit(_) => {
                if let Some(frame) = frames
                    .last()
                    .filter(|f| f.sp == hit.sp && f.probe == hit.probe)
                    .copied()
                {
                    frames.pop();
                    let elapsed = hit.time_ns.saturating_sub(frame.time_ns);
                    into.push(event(EventKind::Return, hit.probe, text, Some(elapsed)));
                }
            }
        }
        if frames.is_empty() {
            self.threads.remove(&hit.tid);
        }
    }

    /// Threads with a call in progress.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.threads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(tid: u32, time_ns: u64, probe: u32, at: At, sp: u64, value: u64) -> Hit {
        Hit {
            tid,
            time_ns,
            probe,
            at,
            sp,
            value,
            args: [0; 6],
        }
    }

    fn run(hits: &[Hit]) -> (Vec<Event>, Stacks) {
        let mut stacks = Stacks::default();
        let mut out = Vec::new();
        for h in hits {
            let text = match h.at {
                At::Exit(ExitKind::Return) => Some(format!("{:#x}", h.value)),
                _ => None,
            };
            stacks.hit(h, text, &[true, true, false], &mut out);
        }
        (out, stacks)
    }

    fn kinds(events: &[Event]) -> Vec<(EventKind, u32, Option<&str>, Option<u64>)> {
        events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.callsite.unwrap(),
                    e.text.as_deref(),
                    e.duration_ns,
                )
            })
            .collect()
    }

    const RET: At = At::Exit(ExitKind::Return);

    #[test]
    fn returns_pair_with_their_calls_by_thread_and_stack_pointer() {
        let (events, stacks) = run(&[
            hit(1, 100, 0, At::Entry, 0x7000, 0),
            hit(2, 110, 0, At::Entry, 0x9000, 0),
            hit(1, 120, 1, At::Entry, 0x6f00, 0),
            hit(1, 150, 1, RET, 0x6f00, 7),
            hit(2, 160, 0, RET, 0x9000, 9),
            hit(1, 200, 0, RET, 0x7000, 0x2a),
        ]);
        assert_eq!(
            kinds(&events),
            vec![
                (EventKind::Call, 0, None, None),
                (EventKind::Call, 0, None, None),
                (EventKind::Call, 1, None, None),
                (EventKind::Return, 1, Some("0x7"), Some(30)),
                (EventKind::Return, 0, Some("0x9"), Some(50)),
                (EventKind::Return, 0, Some("0x2a"), Some(100)),
            ]
        );
        assert_eq!(events[4].pid, Pid::process(2));
        assert_eq!(stacks.threads(), 0, "nothing left in progress");
    }

    #[test]
    fn a_call_a_panic_unwound_is_reported_and_the_next_pairs_again() {
        let (events, _) = run(&[
            // f calls g, g panics: unwinding skips both rets; f's caller
            // catches it and calls g again from a shallower frame.
            hit(1, 100, 0, At::Entry, 0x7000, 0),
            hit(1, 110, 1, At::Entry, 0x6f00, 0),
            hit(1, 200, 1, At::Entry, 0x7000, 0),
            hit(1, 210, 1, RET, 0x7000, 3),
            // The same depth again: the unwound frame at that sp is gone.
            hit(1, 300, 0, At::Entry, 0x7000, 0),
            hit(1, 310, 0, At::Entry, 0x7000, 0),
            hit(1, 320, 0, RET, 0x7000, 4),
        ]);
        assert_eq!(
            kinds(&events),
            vec![
                (EventKind::Call, 0, None, None),
                (EventKind::Call, 1, None, None),
                (EventKind::Exception, 1, Some(NO_RETURN), None),
                (EventKind::Exception, 0, Some(NO_RETURN), None),
                (EventKind::Call, 1, None, None),
                (EventKind::Return, 1, Some("0x3"), Some(10)),
                (EventKind::Call, 0, None, None),
                (EventKind::Exception, 0, Some(NO_RETURN), None),
                (EventKind::Call, 0, None, None),
                (EventKind::Return, 0, Some("0x4"), Some(10)),
            ]
        );
    }

    #[test]
    fn a_return_found_at_a_shallower_exit_drops_the_deeper_frames() {
        let (events, _) = run(&[
            hit(1, 100, 0, At::Entry, 0x7000, 0),
            hit(1, 110, 1, At::Entry, 0x6000, 0),
            hit(1, 200, 0, RET, 0x7000, 5),
        ]);
        assert_eq!(
            kinds(&events)[2..],
            [
                (EventKind::Exception, 1, Some(NO_RETURN), None),
                (EventKind::Return, 0, Some("0x5"), Some(100)),
            ]
        );
    }

    #[test]
    fn tail_calls_end_the_frame_without_a_value_and_old_calls_are_ignored() {
        let (events, stacks) = run(&[
            // A return of a call made before the trace: nothing.
            hit(1, 50, 0, RET, 0x7000, 1),
            hit(1, 100, 0, At::Entry, 0x7000, 0),
            hit(1, 150, 0, At::Exit(ExitKind::TailCall), 0x7000, 1),
            // Probe 2 pairs no returns: no frame.
            hit(1, 160, 2, At::Entry, 0x7000, 0),
        ]);
        assert_eq!(
            kinds(&events),
            vec![
                (EventKind::Call, 0, None, None),
                (EventKind::Return, 0, None, Some(50)),
                (EventKind::Call, 2, None, None),
            ]
        );
        assert_eq!(stacks.threads(), 0);
    }

    #[test]
    fn deep_recursion_keeps_the_innermost_frames() {
        let mut hits: Vec<Hit> = (0..MAX_DEPTH as u64 + 10)
            .map(|i| hit(1, i, 0, At::Entry, 0x100_000 - 64 * i, 0))
            .collect();
        hits.push(hit(
            1,
            5000,
            0,
            RET,
            0x100_000 - 64 * (MAX_DEPTH as u64 + 9),
            1,
        ));
        let (events, stacks) = run(&hits);
        assert_eq!(events.last().unwrap().kind, EventKind::Return);
        assert_eq!(stacks.threads[&1].len(), MAX_DEPTH - 1);
    }
}
