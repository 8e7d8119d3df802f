//! Process identifiers, printed the way BEAM users read them.
//!
//! A pid names the "process" a call ran in. The agent numbers its own
//! processes (gen_servers) and plain OS threads from one counter and prints
//! them `<0.N.0>`; a tokio task keeps its task id and prints `<0.N.1>`, so the
//! two kinds never collide and a reader can tell them apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const TASK_BIT: u64 = 1 << 63;

/// The identity of a process: a gen_server, a tokio task or an OS thread.
///
/// ```
/// use nodetrace_protocol::Pid;
///
/// assert_eq!(Pid::process(42).to_string(), "<0.42.0>");
/// assert_eq!(Pid::task(7).to_string(), "<0.7.1>");
/// assert_eq!("<0.42.0>".parse::<Pid>().unwrap(), Pid::process(42));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pid(u64);

impl Pid {
    /// A process numbered by the agent: a gen_server or an OS thread.
    pub const fn process(number: u64) -> Pid {
        Pid(number & !TASK_BIT)
    }

    /// A tokio task, by its task id.
    pub const fn task(id: u64) -> Pid {
        Pid(id | TASK_BIT)
    }

    /// Whether this pid names a tokio task.
    pub const fn is_task(self) -> bool {
        self.0 & TASK_BIT != 0
    }

    /// The number in the middle of `<0.N.0>`.
    pub const fn number(self) -> u64 {
        self.0 & !TASK_BIT
    }

    /// The raw encoding, as it travels in records.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// The inverse of [`Pid::to_bits`].
    pub const fn from_bits(bits: u64) -> Pid {
        Pid(bits)
    }
}

/// A pid debugs as it displays, `<0.42.0>`, so that traced arguments read
/// the way BEAM users know them.
impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<0.{}.{}>", self.number(), u8::from(self.is_task()))
    }
}

/// A string that is not a pid such as `<0.42.0>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pid {0:?}: expected <0.N.0> (a process or thread) or <0.N.1> (a tokio task)")]
pub struct ParsePidError(String);

impl FromStr for Pid {
    type Err = ParsePidError;

    /// Parses `<0.N.0>`, `<0.N.1>`, or the same without the angle brackets.
    fn from_str(s: &str) -> Result<Pid, ParsePidError> {
        let err = || ParsePidError(s.to_owned());
        let inner = s.trim();
        let inner = inner
            .strip_prefix('<')
            .and_then(|rest| rest.strip_suffix('>'))
            .unwrap_or(inner);
        let mut parts = inner.split('.');
        let (Some("0"), Some(number), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let number: u64 = number.parse().map_err(|_| err())?;
        if number & TASK_BIT != 0 {
            return Err(err());
        }
        match kind {
            "0" => Ok(Pid::process(number)),
            "1" => Ok(Pid::task(number)),
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_and_tasks_print_apart() {
        assert_eq!(Pid::process(9).to_string(), "<0.9.0>");
        assert_eq!(Pid::task(9).to_string(), "<0.9.1>");
        assert_ne!(Pid::process(9), Pid::task(9));
        assert!(Pid::task(9).is_task());
        assert_eq!(format!("{:?}", Pid::task(9)), "<0.9.1>");
        assert_eq!(Pid::task(9).number(), 9);
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        for pid in [Pid::process(0), Pid::process(123), Pid::task(77)] {
            assert_eq!(pid.to_string().parse::<Pid>(), Ok(pid));
        }
        assert_eq!("0.5.0".parse::<Pid>(), Ok(Pid::process(5)));
        for bad in [
            "",
            "<0.5>",
            "<1.5.0>",
            "<0.x.0>",
            "<0.5.2>",
            "<0.5.0.0>",
            "bob",
        ] {
            let err = bad.parse::<Pid>().unwrap_err();
            assert!(err.to_string().contains("expected <0.N.0>"), "{bad}: {err}");
        }
    }
}
