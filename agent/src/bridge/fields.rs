//! `tracing` fields as text: a span's fields as its call's arguments, an
//! event's message and fields as a log line, the value of a `ret` event.

use std::fmt::{Debug, Write};

use tracing_core::field::{Field, Visit};

use crate::record::fmt::ArgWriter;

/// A span's fields, formatted when it is made (its values are gone after),
/// each as `name=value`, the way `tracing_subscriber::fmt` shows them.
#[derive(Debug, Default)]
pub(crate) struct SpanFields(Vec<String>);

impl SpanFields {
    /// At most this many bytes of one field's value are kept.
    const VALUE_BOUND: usize = 1024;

    /// The fields as a call's arguments: `key="a", n=3`.
    pub(crate) fn as_args(&self) -> String {
        self.0.join(", ")
    }

    /// The fields as a span shows in a log line's context: `key="a" n=3`.
    pub(crate) fn as_context(&self) -> String {
        self.0.join(" ")
    }
}

impl Visit for SpanFields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let mut text = ArgWriter::bounded(Self::VALUE_BOUND);
        let _ = write!(text, "{}={value:?}", field.name());
        self.0.push(text.finish().into());
    }
}

/// An event's message, then its other fields (`stored key="a"`), as
/// `fmt` writes them; `log.*` fields (a `log` record's origin) are left out.
pub(crate) struct EventText<'a> {
    pub(crate) out: &'a mut ArgWriter,
    pub(crate) written: usize,
}

impl Visit for EventText<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.separate();
            self.out.text(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.separate();
        if name == "message" {
            let _ = write!(self.out, "{value:?}");
        } else {
            let _ = write!(self.out, "{name}={value:?}");
        }
    }
}

impl EventText<'_> {
    fn separate(&mut self) {
        if self.written > 0 {
            self.out.text(" ");
        }
        self.written += 1;
    }
}

/// The one value of a `ret` or `err` event of `#[instrument]`.
#[derive(Default)]
pub(crate) struct ReturnValue(pub(crate) Option<String>);

impl Visit for ReturnValue {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let mut text = ArgWriter::bounded(SpanFields::VALUE_BOUND);
        let _ = match field.name() {
            "error" => write!(text, "Err({value:?})"),
            _ => write!(text, "{value:?}"),
        };
        self.0 = Some(text.finish().into());
    }
}

/// `text` without its ANSI colour sequences (`ESC [ ... m`): the app's
/// `fmt` layer colours the span fields it keeps when it writes to a terminal.
pub(crate) fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: parameters, then one final byte in `@`..=`~`.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn colours_are_taken_out() {
        let coloured = "\u{1b}[3mn\u{1b}[0m\u{1b}[2m=\u{1b}[0m5 k=\"\u{1b}[\"";
        assert_eq!(super::without_ansi(coloured), "n=5 k=\"");
    }
}
