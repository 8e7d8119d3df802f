//! Bounded formatting of arguments and return values.
//!
//! A traced function's arguments are formatted only when a session asks for
//! them, and never past a byte bound: the writer refuses more text at the
//! bound, which makes `Debug` stop early. A gen_server's whole state costs no
//! more than the bound, where OTP's dbg pays for all of it on every event.
//!
//! `#[traced]` formats each value with "autoref specialization": a type that
//! implements `Debug` is shown with it, any other type by its type name, and a
//! `self` receiver as the process it stands for (see [`AsPid`]).

use std::cell::Cell;
use std::fmt::{self, Debug, Write};
use std::panic::AssertUnwindSafe;

use nodetrace_protocol::Pid;

/// The default bound, in bytes, on the text of one event's arguments or value.
pub const DEFAULT_TEXT_BOUND: usize = 256;

/// Marks a bounded text that was cut.
const ELLIPSIS: &str = "…";

/// Collects the text of one event's arguments, or of one value, up to a bound.
#[derive(Debug)]
pub struct ArgWriter {
    buf: String,
    bound: usize,
    cut: bool,
    args: usize,
    pid: Pid,
}

thread_local! {
    /// A formatting buffer kept per thread, so that formatting an event
    /// allocates once, for the exact text, however the `Debug` impls write.
    static SCRATCH: Cell<String> = const { Cell::new(String::new()) };
}

impl ArgWriter {
    pub(crate) fn new(bound: usize, pid: Pid) -> ArgWriter {
        ArgWriter {
            buf: SCRATCH.try_with(Cell::take).unwrap_or_default(),
            bound,
            cut: false,
            args: 0,
            pid,
        }
    }

    /// A writer of bounded text in which no receiver stands for a process
    /// (a `tracing` field, a value): its pid is never shown.
    pub(crate) fn bounded(bound: usize) -> ArgWriter {
        ArgWriter::new(bound, Pid::process(0))
    }

    /// Starts the next argument: separates it from the previous one.
    fn next_arg(&mut self) {
        if self.args > 0 {
            let _ = self.write_str(", ");
        }
        self.args += 1;
    }

    /// Writes one argument with its `Debug` impl, stopping at the bound. A
    /// `Debug` that panics is the traced code's own bug: the text says so,
    /// and the traced call goes on as it would untraced.
    pub fn debug(&mut self, value: &(impl Debug + ?Sized)) {
        self.next_arg();
        if !self.cut {
            let wrote = std::panic::catch_unwind(AssertUnwindSafe(|| write!(self, "{value:?}")));
            if wrote.is_err() {
                let _ = self.write_str("<Debug panicked>");
            }
        }
    }

    /// Writes one argument that has no `Debug` impl: its type name.
    pub fn opaque(&mut self, type_name: &str) {
        self.next_arg();
        let _ = write!(self, "<{type_name}>");
    }

    /// Writes one argument as a pid.
    pub fn pid(&mut self, pid: Pid) {
        self.next_arg();
        let _ = write!(self, "{pid}");
    }

    /// Writes a `self` receiver that is not a process handle: the current process.
    pub fn current_process(&mut self) {
        let pid = self.pid;
        self.pid(pid);
    }

    /// Writes text formatted elsewhere (a `tracing` span's fields), as it is.
    pub(crate) fn text(&mut self, text: &str) {
        let _ = self.write_str(text);
    }

    /// Writes a skipped argument.
    pub fn skipped(&mut self) {
        self.next_arg();
        let _ = self.write_str("_");
    }

    /// The text so far, ending in `…` if it was cut at the bound.
    pub(crate) fn finish(mut self) -> Box<str> {
        if self.cut {
            self.buf.push_str(ELLIPSIS);
        }
        let text = Box::from(self.buf.as_str());
        self.buf.clear();
        let _ = SCRATCH.try_with(|s| s.set(std::mem::take(&mut self.buf)));
        text
    }
}

impl Write for ArgWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        let room = self.bound.saturating_sub(self.buf.len());
        if s.len() <= room {
            self.buf.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.buf.push_str(&s[..end]);
        self.cut = true;
        Err(fmt::Error)
    }
}

/// A process handle that a `self` receiver stands for, like a gen_server's pid.
///
/// A traced method whose receiver implements `AsPid` shows the receiver as
/// that pid, the way Erlang shows a server's pid as the first argument.
pub trait AsPid {
    /// The process this value refers to.
    fn as_pid(&self) -> Pid;
}

/// A value on its way into an [`ArgWriter`]; see the module docs.
#[doc(hidden)]
pub struct Arg<'a, T: ?Sized>(pub &'a T);

#[doc(hidden)]
pub trait FmtDebug {
    fn nt_fmt(&self, w: &mut ArgWriter);
}

impl<T: Debug + ?Sized> FmtDebug for Arg<'_, T> {
    #[inline]
    fn nt_fmt(&self, w: &mut ArgWriter) {
        w.debug(self.0)
    }
}

#[doc(hidden)]
pub trait FmtOpaque {
    fn nt_fmt(&self, w: &mut ArgWriter);
}

impl<T: ?Sized> FmtOpaque for &Arg<'_, T> {
    #[inline]
    fn nt_fmt(&self, w: &mut ArgWriter) {
        w.opaque(std::any::type_name::<T>())
    }
}

/// A `self` receiver on its way into an [`ArgWriter`].
#[doc(hidden)]
pub struct SelfArg<'a, T: ?Sized>(pub &'a T);

#[doc(hidden)]
pub trait FmtSelfPid {
    fn nt_fmt(&self, w: &mut ArgWriter);
}

impl<T: AsPid + ?Sized> FmtSelfPid for SelfArg<'_, T> {
    #[inline]
    fn nt_fmt(&self, w: &mut ArgWriter) {
        w.pid(self.0.as_pid())
    }
}

#[doc(hidden)]
pub trait FmtSelfProcess {
    fn nt_fmt(&self, w: &mut ArgWriter);
}

impl<T: ?Sized> FmtSelfProcess for &SelfArg<'_, T> {
    #[inline]
    fn nt_fmt(&self, w: &mut ArgWriter) {
        w.current_process()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Opaque;

    struct Handle;
    impl AsPid for Handle {
        fn as_pid(&self) -> Pid {
            Pid::process(9)
        }
    }

    fn render(bound: usize, f: impl FnOnce(&mut ArgWriter)) -> String {
        let mut w = ArgWriter::new(bound, Pid::process(3));
        f(&mut w);
        w.finish().into()
    }

    #[test]
    // The borrow is what picks the impl: it is autoref specialization.
    #[allow(clippy::needless_borrow)]
    fn debug_values_opaque_types_and_receivers() {
        let text = render(256, |w| {
            (&Arg(&"bob")).nt_fmt(w);
            (&Arg(&42u32)).nt_fmt(w);
            (&Arg(&Opaque)).nt_fmt(w);
            (&SelfArg(&Handle)).nt_fmt(w);
            (&SelfArg(&Opaque)).nt_fmt(w);
        });
        assert_eq!(
            text,
            r#""bob", 42, <nodetrace_agent::record::fmt::tests::Opaque>, <0.9.0>, <0.3.0>"#
        );
    }

    #[test]
    fn formatting_stops_at_the_bound() {
        struct Counting<'a>(&'a std::cell::Cell<usize>);
        impl Debug for Counting<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for i in 0..10_000 {
                    self.0.set(self.0.get() + 1);
                    write!(f, "{i},")?;
                }
                Ok(())
            }
        }
        let steps = std::cell::Cell::new(0);
        let text = render(16, |w| w.debug(&Counting(&steps)));
        assert_eq!(text, "0,1,2,3,4,5,6,7,…");
        assert!(
            steps.get() < 20,
            "formatting went on after the bound: {}",
            steps.get()
        );
    }

    #[test]
    fn the_bound_never_splits_a_character() {
        let text = render(5, |w| w.debug("ééé"));
        assert_eq!(text, "\"éé…");
    }
}
