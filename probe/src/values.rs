//! Arguments and return values as text: read from the registers a sample
//! carries by the System V calling convention, named and typed by the
//! debug info when the binary has it ([`crate::dwarf`]), else shown raw.
//!
//! A `&str` or `&[u8]` argument is two registers, pointer and length; its
//! bytes are read from the process's memory (`/proc/PID/mem`) when the hit
//! is turned into an event, so after the call began: the text says
//! `(read later)`, since the call may have changed them by then.

use std::fmt::Write as _;

use crate::dwarf::{Kind, Param};

/// Reads the traced process's memory.
pub(crate) trait Memory {
    /// `len` bytes at `address`, or `None` if they cannot be read.
    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>>;
}

/// The arguments of a call: with `params`, the first `shown` of them by
/// name (`a: 84, word: "probe" (read later)`), after the hidden pointer a
/// value `returns` [`Kind::Indirect`] takes; without, `shown` raw
/// registers in hexadecimal. `None` when there is nothing to show.
pub(crate) fn call_text(
    params: Option<&[Param]>,
    returns: Option<&Param>,
    shown: usize,
    regs: &[u64; 6],
    memory: &dyn Memory,
    bound: usize,
) -> Option<String> {
    if shown == 0 {
        return None;
    }
    let Some(params) = params else {
        let raw: Vec<String> = regs.iter().take(shown).map(|r| format!("{r:#x}")).collect();
        return Some(raw.join(", "));
    };
    if params.is_empty() {
        return None;
    }
    let mut next = Some(usize::from(
        returns.is_some_and(|r| r.kind == Kind::Indirect),
    ));
    let mut parts = Vec::new();
    for p in params.iter().take(shown) {
        let taken = next.and_then(|n| p.kind.registers().map(|k| (n, k)));
        let value = match taken {
            Some((n, k)) if n + k <= regs.len() => {
                next = Some(n + k);
                value(p.kind, &p.ty, &regs[n..n + k], memory, bound)
            }
            // On the stack, or after a value of unknown layout.
            _ => {
                next = None;
                "?".to_owned()
            }
        };
        parts.push(format!("{}: {value}", p.name));
    }
    Some(parts.join(", "))
}

/// A return value: rax read as the debug info's return type says (a type
/// that does not fit one register, or of unknown layout, raw); a function
/// that returns nothing has no value. Without debug info, rax raw.
pub(crate) fn return_text(
    params: Option<&[Param]>,
    returns: Option<&Param>,
    rax: u64,
) -> Option<String> {
    match (params, returns) {
        (Some(_), None) => None,
        (_, Some(r)) if scalar(r.kind) => Some(value(r.kind, &r.ty, &[rax], &NoMemory, 0)),
        _ => Some(format!("{rax:#x}")),
    }
}

fn scalar(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Bool | Kind::Char | Kind::Pointer | Kind::Unsigned(..=8) | Kind::Signed(..=8)
    )
}

struct NoMemory;

impl Memory for NoMemory {
    fn read(&self, _: u64, _: usize) -> Option<Vec<u8>> {
        None
    }
}

/// One value from its registers.
fn value(kind: Kind, ty: &str, regs: &[u64], memory: &dyn Memory, bound: usize) -> String {
    let reg = regs.first().copied().unwrap_or(0);
    match kind {
        Kind::Unsigned(n) if n <= 8 => (reg & mask(n)).to_string(),
        Kind::Signed(n) if n <= 8 => {
            let shift = 64 - 8 * u32::from(n.max(1));
            (((reg << shift) as i64) >> shift).to_string()
        }
        Kind::Unsigned(_) => (u128::from(regs[1]) << 64 | u128::from(reg)).to_string(),
        Kind::Signed(_) => ((u128::from(regs[1]) << 64 | u128::from(reg)) as i128).to_string(),
        Kind::Bool => (reg & 0xff != 0).to_string(),
        Kind::Char => match char::from_u32(reg as u32) {
            Some(c) => format!("{c:?}"),
            None => format!("{:#x}", reg as u32),
        },
        Kind::Pointer => format!("{reg:#x}"),
        Kind::Str | Kind::Bytes => {
            let len = regs.get(1).copied().unwrap_or(0);
            let want = usize::try_from(len).unwrap_or(usize::MAX).min(bound);
            match memory.read(reg, want) {
                Some(bytes) => {
                    let mut text = if kind == Kind::Str {
                        format!("{:?}", String::from_utf8_lossy(&bytes))
                    } else {
                        format!("b\"{}\"", bytes.escape_ascii())
                    };
                    if (want as u64) < len {
                        let _ = write!(text, "..({len} bytes)");
                    }
                    text.push_str(" (read later)");
                    text
                }
                None => format!("<{len} bytes at {reg:#x}, unreadable>"),
            }
        }
        Kind::Slice => format!(
            "{ty} at {reg:#x}, len {}",
            regs.get(1).copied().unwrap_or(0)
        ),
        Kind::Float => "? (in an SSE register)".to_owned(),
        Kind::Zero => ty.to_owned(),
        Kind::Indirect => format!("{ty} at {reg:#x}"),
        Kind::Other => "?".to_owned(),
    }
}

fn mask(bytes: u8) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(bytes))) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;

    impl Memory for Fake {
        fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
            (address == 0x1000).then(|| b"probe and more"[..len.min(14)].to_vec())
        }
    }

    fn p(name: &str, ty: &str, kind: Kind) -> Param {
        Param {
            name: name.into(),
            ty: ty.into(),
            kind,
        }
    }

    #[test]
    fn arguments_are_read_by_type_in_calling_order() {
        let params = [
            p("a", "u64", Kind::Unsigned(8)),
            p("n", "i32", Kind::Signed(4)),
            p("word", "&str", Kind::Str),
            p("even", "bool", Kind::Bool),
            p("c", "char", Kind::Char),
        ];
        // i32 -1 with garbage in the upper half; bool in the low byte.
        let regs = [84, 0xdead_beef_ffff_ffff, 0x1000, 5, 0x1_01, 'é' as u64];
        assert_eq!(
            call_text(Some(&params), None, 9, &regs, &Fake, 256).unwrap(),
            "a: 84, n: -1, word: \"probe\" (read later), even: true, c: 'é'"
        );
        assert_eq!(
            call_text(Some(&params), None, 1, &regs, &Fake, 256).unwrap(),
            "a: 84",
            "/1 shows one"
        );
        assert_eq!(
            call_text(None, None, 2, &regs, &Fake, 256).unwrap(),
            "0x54, 0xdeadbeefffffffff"
        );
        assert_eq!(call_text(None, None, 0, &regs, &Fake, 256), None);
        assert_eq!(call_text(Some(&[]), None, 6, &regs, &Fake, 256), None);
    }

    #[test]
    fn long_unreadable_and_unknown_values_say_so() {
        let params = [
            p("s", "&str", Kind::Str),
            p("t", "&[u8]", Kind::Bytes),
            p("x", "f64", Kind::Float),
            p("v", "alloc::vec::Vec<u8>", Kind::Other),
            p("after", "u8", Kind::Unsigned(1)),
        ];
        let regs = [0x1000, 14, 0x2000, 3, 0, 0];
        assert_eq!(
            call_text(Some(&params), None, 9, &regs, &Fake, 5).unwrap(),
            "s: \"probe\"..(14 bytes) (read later), t: <3 bytes at 0x2000, unreadable>, x: ? (in an SSE register), v: ?, after: ?"
        );
    }

    #[test]
    fn a_large_return_value_s_hidden_pointer_comes_before_the_arguments() {
        // `fn get(&self, key: &str) -> Option<String>`: rdi is where the
        // Option goes, rsi `self`, rdx and rcx the `&str`.
        let params = [
            p("self", "&Store", Kind::Pointer),
            p("key", "&str", Kind::Str),
            p("cache", "Cache", Kind::Indirect),
        ];
        let returns = p("", "Option<String>", Kind::Indirect);
        let regs = [0x7ff0, 0x5000, 0x1000, 5, 0x6000, 0];
        assert_eq!(
            call_text(Some(&params), Some(&returns), 9, &regs, &Fake, 256).unwrap(),
            r#"self: 0x5000, key: "probe" (read later), cache: Cache at 0x6000"#
        );
        assert_eq!(
            return_text(Some(&params), Some(&returns), 0x7ff0).unwrap(),
            "0x7ff0"
        );
    }

    #[test]
    fn return_values_are_read_by_their_type() {
        let params: &[Param] = &[];
        let bool_ = p("", "bool", Kind::Bool);
        assert_eq!(
            return_text(Some(params), Some(&bool_), 0x7f00).as_deref(),
            Some("false")
        );
        let u = p("", "u64", Kind::Unsigned(8));
        assert_eq!(
            return_text(Some(params), Some(&u), 42).as_deref(),
            Some("42")
        );
        assert_eq!(return_text(Some(params), None, 42), None, "returns ()");
        assert_eq!(return_text(None, None, 42).as_deref(), Some("0x2a"));
        let s = p("", "&str", Kind::Str);
        assert_eq!(
            return_text(Some(params), Some(&s), 42).as_deref(),
            Some("0x2a")
        );
    }
}
