//! A process's pid, written into the stack as frames, so that a sample
//! taken in its poll says which process it was.
//!
//! The sampler (pprof-rs) records a thread's frames and nothing else: its
//! signal handler takes no per-sample data. So while a sample profile split
//! by process runs, the poll of each process (a named task, a gen_server)
//! runs below a chain of frames that spell the pid: `pid_task` or
//! `pid_process`, then one frame per hex digit of its number, most
//! significant first (`digit_7`, `digit_2`, ...). The unwinder records them
//! like any other frames; the node reads the pid back from the symbolised
//! stack ([`read`]) and drops them. A marked poll costs a handful of calls
//! through function pointers; an unmarked one, nothing here (the caller's
//! one flag load decides).
//!
//! The frames need the binary's symbol table: a binary stripped of its
//! symbols shows no names at all, and its samples stay split by thread.

use std::hint::black_box;
use std::sync::Mutex;

use nodetrace_protocol::Pid;

use crate::process::task::marking;

/// Names of processes that ended while marking, so that a split profile's
/// report still names a process that is gone by its end.
static ENDED: Mutex<Vec<(Pid, String)>> = Mutex::new(Vec::new());

/// How many ended processes' names a profile keeps; those ending later (a
/// task per connection, say) are shown by their pid only.
const ENDED_KEPT: usize = 4096;

/// Notes the name of a process that ends now, if a split profile runs.
pub(crate) fn ended(pid: Pid, name: impl FnOnce() -> Option<String>) {
    if !marking() {
        return;
    }
    let mut ended = ENDED.lock().unwrap_or_else(|p| p.into_inner());
    if ended.len() < ENDED_KEPT
        && let Some(name) = name()
    {
        ended.push((pid, name));
    }
}

/// The names [`ended`] noted, forgotten here.
pub(crate) fn take_ended() -> Vec<(Pid, String)> {
    std::mem::take(&mut *ENDED.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The path every frame of this module starts with.
const PREFIX: &str = "nodetrace_agent::process::marker::";

type Body<'a> = &'a mut dyn FnMut();

/// Runs `body` below the frames that spell `pid`.
#[inline(never)]
pub(crate) fn under<R>(pid: Pid, body: impl FnOnce() -> R) -> R {
    let mut body = Some(body);
    let mut out = None;
    let mut run = || out = body.take().map(|f| f());
    let (digits, len) = hex_digits(pid.number());
    if pid.is_task() {
        pid_task(&digits[16 - len..], &mut run);
    } else {
        pid_process(&digits[16 - len..], &mut run);
    }
    out.expect("the marked body ran")
}

/// The hex digits of `n`, right-aligned in 16 bytes, and how many there
/// are (at least one).
fn hex_digits(n: u64) -> ([u8; 16], usize) {
    let mut digits = [0u8; 16];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[15 - len] = (rest & 0xf) as u8;
        len += 1;
        rest >>= 4;
        if rest == 0 {
            return (digits, len);
        }
    }
}

/// The next digit's frame, or the body below the last.
#[inline(always)]
fn next(digits: &[u8], body: Body<'_>) {
    match digits.split_first() {
        Some((&d, rest)) => DIGITS[usize::from(d)](rest, body),
        None => body(),
    }
}

// Each frame calls on and then uses a value of its own: the call is not
// a tail call (which would leave no frame), and no two frames have the same
// code (which a linker could fold into one symbol).
#[inline(never)]
fn pid_task(digits: &[u8], body: Body<'_>) {
    next(digits, body);
    black_box(16u8);
}

#[inline(never)]
fn pid_process(digits: &[u8], body: Body<'_>) {
    next(digits, body);
    black_box(17u8);
}

macro_rules! digit_frames {
    ($($name:ident = $value:literal),* $(,)?) => {
        $(
            #[inline(never)]
            fn $name(digits: &[u8], body: Body<'_>) {
                next(digits, body);
                black_box($value);
            }
        )*
        const DIGITS: [fn(&[u8], Body<'_>); 16] = [$($name),*];
    };
}

digit_frames!(
    digit_0 = 0u8,
    digit_1 = 1u8,
    digit_2 = 2u8,
    digit_3 = 3u8,
    digit_4 = 4u8,
    digit_5 = 5u8,
    digit_6 = 6u8,
    digit_7 = 7u8,
    digit_8 = 8u8,
    digit_9 = 9u8,
    digit_a = 10u8,
    digit_b = 11u8,
    digit_c = 12u8,
    digit_d = 13u8,
    digit_e = 14u8,
    digit_f = 15u8,
);

/// Whether a (demangled, hash-free) frame is one of the marker's.
pub(crate) fn is_marker_frame(function: &str) -> bool {
    function.starts_with(PREFIX)
}

/// The pid spelled by the innermost marker in `root_first`, a sampled
/// stack's frame names, outermost first.
pub(crate) fn read<'a>(root_first: impl DoubleEndedIterator<Item = &'a str>) -> Option<Pid> {
    // Innermost first: digits come before (inside) their kind frame.
    let mut digits: Vec<u8> = Vec::new();
    for function in root_first.rev() {
        let Some(name) = function.strip_prefix(PREFIX) else {
            // A marker's chain is unbroken up to its kind frame.
            digits.clear();
            continue;
        };
        if let Some(d) = name.strip_prefix("digit_") {
            if let Ok(d) = u8::from_str_radix(d, 16) {
                digits.push(d);
            }
            continue;
        }
        let kind: fn(u64) -> Pid = match name {
            "pid_task" => Pid::task,
            "pid_process" => Pid::process,
            // `under` and its closure, around the chain.
            _ => continue,
        };
        if digits.is_empty() || digits.len() > 16 {
            digits.clear();
            continue;
        }
        // Collected innermost first: the last digit is the most significant.
        let number = digits
            .iter()
            .rev()
            .fold(0u64, |n, &d| (n << 4) | u64::from(d));
        return Some(kind(number));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_number_in_hex() {
        let (digits, len) = hex_digits(0x2a7);
        assert_eq!(&digits[16 - len..], [2, 0xa, 7]);
        let (digits, len) = hex_digits(0);
        assert_eq!(&digits[16 - len..], [0]);
        assert_eq!(hex_digits(u64::MAX >> 1).1, 16);
    }

    #[test]
    fn the_body_runs_once_and_its_value_comes_back() {
        let mut runs = 0;
        let value = under(Pid::task(0x2a7), || {
            runs += 1;
            42
        });
        assert_eq!((runs, value), (1, 42));
    }

    #[test]
    fn a_stack_reads_back_the_innermost_marker() {
        let frame = |s: &str| format!("{PREFIX}{s}");
        let stack = [
            "tokio::runtime::task::harness::poll".to_owned(),
            frame("under"),
            frame("pid_process"),
            frame("digit_1"),
            frame("under::{{closure}}"),
            "app::serve".to_owned(),
            frame("under"),
            frame("pid_task"),
            frame("digit_2"),
            frame("digit_a"),
            frame("digit_7"),
            frame("under::{{closure}}"),
            "app::work".to_owned(),
        ];
        let names = || stack.iter().map(String::as_str);
        assert_eq!(read(names()), Some(Pid::task(0x2a7)));
        assert_eq!(read(names().take(5)), Some(Pid::process(1)));
        assert_eq!(read(names().skip(12)), None);
    }

    #[test]
    fn a_sampled_stack_inside_a_marked_body_names_its_pid() {
        // The real frames, unwound and symbolised as the sampler does.
        let pid = Pid::task(0x1b3);
        let names = under(pid, || {
            let mut names = Vec::new();
            backtrace::trace(|frame| {
                backtrace::resolve_frame(frame, |symbol| {
                    if let Some(name) = symbol.name() {
                        let name = format!("{name:#}");
                        names.push(name);
                    }
                });
                true
            });
            names
        });
        let root_first: Vec<&str> = names.iter().rev().map(String::as_str).collect();
        assert_eq!(read(root_first.into_iter()), Some(pid), "{names:#?}");
    }
}
