//! Commands: parsed from a line in a span with `err` (a bad command is its
//! error), applied to the store in a span with the command's fields.

use std::fmt;
use std::time::Duration;

use tracing::instrument;

use crate::stats;
use crate::store::Store;

/// The longest value `SET` takes.
pub const MAX_VALUE: usize = 1024;

/// The longest `SLOW` waits.
pub const MAX_SLOW_MS: u64 = 10_000;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Set { key: String, value: String },
    Get { key: String },
    Del { key: String },
    Slow { ms: u64 },
    Stats,
}

impl Command {
    /// Its name, as typed.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Set { .. } => "SET",
            Command::Get { .. } => "GET",
            Command::Del { .. } => "DEL",
            Command::Slow { .. } => "SLOW",
            Command::Stats => "STATS",
        }
    }

    /// The key it is about ("" if none).
    pub fn key(&self) -> &str {
        match self {
            Command::Set { key, .. } | Command::Get { key } | Command::Del { key } => key,
            Command::Slow { .. } | Command::Stats => "",
        }
    }
}

/// What a command answers, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Value(String),
    Nil,
    Err(String),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("OK"),
            Reply::Value(v) => f.write_str(v),
            Reply::Nil => f.write_str("NIL"),
            Reply::Err(e) => write!(f, "ERR {e}"),
        }
    }
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses one line; `err` makes a bad command the span's return value.
#[instrument(err)]
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let mut words = line.split_whitespace();
    let op = words.next().unwrap_or("");
    let mut arg = |what: &str| {
        words
            .next()
            .map(str::to_owned)
            .ok_or_else(|| ParseError(format!("{op} needs a {what}")))
    };
    let command = match op.to_ascii_uppercase().as_str() {
        "SET" => {
            let key = arg("key")?;
            let value = arg("value")?;
            Command::Set { key, value }
        }
        "GET" => Command::Get { key: arg("key")? },
        "DEL" => Command::Del { key: arg("key")? },
        "SLOW" => {
            let ms = arg("duration in ms")?;
            let ms = ms
                .parse()
                .ok()
                .filter(|ms| *ms <= MAX_SLOW_MS)
                .ok_or_else(|| ParseError(format!("SLOW takes 0 to {MAX_SLOW_MS} ms, not {ms}")))?;
            Command::Slow { ms }
        }
        "STATS" => Command::Stats,
        "" => return Err(ParseError("empty command".into())),
        _ => return Err(ParseError(format!("unknown command {op}"))),
    };
    if words.next().is_some() {
        return Err(ParseError(format!("too many words for {op}")));
    }
    Ok(command)
}

/// Applies a command that does not wait (all but `SLOW`, see [`slow`]).
#[instrument(skip(store, command), fields(op = command.op(), key = command.key()))]
pub fn apply(store: &Store, command: &Command) -> Reply {
    tracing::debug!("applying");
    match command {
        Command::Set { value, .. } if value.len() > MAX_VALUE => {
            tracing::error!(len = value.len(), max = MAX_VALUE, "value too long");
            Reply::Err("value too long".into())
        }
        Command::Set { key, value } => {
            store.set(key, value);
            Reply::Ok
        }
        Command::Get { key } => store.get(key).map_or(Reply::Nil, Reply::Value),
        Command::Del { key } => {
            if store.del(key) {
                Reply::Ok
            } else {
                Reply::Nil
            }
        }
        Command::Stats => Reply::Value(stats::summary(store)),
        Command::Slow { .. } => Reply::Err("SLOW is applied by slow()".into()),
    }
}

/// `SLOW ms`: waits on a timer, so its span is mostly idle (busy < wall).
#[instrument]
pub async fn slow(ms: u64) -> Reply {
    tracing::debug!("sleeping");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Reply::Ok
}
