//! What a traced node reports: one [`Event`] per call, return, exception,
//! message or gen_server step, and the [`CallsiteInfo`] that names the
//! function an event's callsite id stands for.

use serde::{Deserialize, Serialize};

use crate::Pid;

/// A traceable function, as the node describes it to a tracer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsiteInfo {
    /// Index of the callsite in the node's registry; events refer to it.
    pub id: u32,
    /// Rust module path, e.g. `todo::server`.
    pub module: String,
    /// Function name, e.g. `entries`.
    pub function: String,
    /// For a method, the type of its `impl` block as written there, without
    /// generics, e.g. `Store`.
    pub self_type: Option<String>,
    /// For a method of a trait impl, the trait, e.g. `Storage`.
    pub trait_name: Option<String>,
    /// Number of parameters, a `self` receiver included.
    pub arity: u8,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
    /// Whether the function is `async`.
    pub is_async: bool,
    /// Where the callsite comes from: a `#[traced]` function, a `tracing`
    /// span or a `tracing` event.
    pub kind: CallsiteKind,
    /// The `tracing` level of a span or event callsite.
    pub level: Option<Level>,
    /// The `tracing` target of a span or event callsite, when it is not
    /// its module path.
    pub target: Option<String>,
}

/// Where a callsite comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallsiteKind {
    /// A `#[traced]` function: known from the start.
    #[default]
    Function,
    /// A `tracing` span (`#[instrument]`, `span!`): known once first reached.
    Span,
    /// A `tracing` event (`info!`...): a log line's origin, never a call.
    Event,
}

impl CallsiteKind {
    /// The word `ls` prints: `traced`, `span` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallsiteKind::Function => "traced",
            CallsiteKind::Span => "span",
            CallsiteKind::Event => "event",
        }
    }
}

/// A `tracing` level, least verbose last.
///
/// ```
/// use nodetrace_protocol::Level;
///
/// let debug: Level = "debug".parse().unwrap();
/// assert!(Level::Info > debug);
/// assert_eq!(debug.to_string(), "DEBUG");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// `trace!`: the most verbose.
    Trace,
    /// `debug!`.
    Debug,
    /// `info!`.
    Info,
    /// `warn!`.
    Warn,
    /// `error!`.
    Error,
}

impl Level {
    /// Every level, most verbose first.
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`, as `tracing` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("`{s}` is not a level: use trace, debug, info, warn or error"))
    }
}

impl CallsiteInfo {
    /// Whether its calls are polled, each poll a time it runs: an async
    /// function, or a `tracing` span (entered and exited).
    pub fn is_polled(&self) -> bool {
        self.is_async || self.kind == CallsiteKind::Span
    }

    /// The function with its type, if it is a method: `entries`,
    /// `Store::get`, `<Store as Storage>::get`.
    pub fn function_path(&self) -> String {
        match (&self.self_type, &self.trait_name) {
            (Some(ty), Some(tr)) => format!("<{ty} as {tr}>::{}", self.function),
            (Some(ty), None) => format!("{ty}::{}", self.function),
            _ => self.function.clone(),
        }
    }

    /// `module:function/arity`, as dbg prints a function; a method keeps
    /// its type (`kv::store:Store::get/2`), so two `get`s never merge.
    pub fn mfa(&self) -> String {
        format!("{}:{}/{}", self.module, self.function_path(), self.arity)
    }

    /// The target a log line names: the `tracing` target, else the module.
    pub fn log_target(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.module)
    }

    /// The Rust path of the function: `kv::store::Store::get`, and for a
    /// trait method `<kv::store::Store as Storage>::get`.
    ///
    /// ```
    /// use nodetrace_protocol::CallsiteInfo;
    ///
    /// let get = CallsiteInfo {
    ///     module: "kv::store".into(),
    ///     self_type: Some("Store".into()),
    ///     trait_name: Some("Storage".into()),
    ///     function: "get".into(),
    ///     arity: 2,
    ///     ..CallsiteInfo::default()
    /// };
    /// assert_eq!(get.rust_path(), "<kv::store::Store as Storage>::get");
    /// assert_eq!(get.mfa(), "kv::store:<Store as Storage>::get/2");
    /// ```
    pub fn rust_path(&self) -> String {
        match (&self.self_type, &self.trait_name) {
            (Some(ty), Some(tr)) => format!("<{}::{ty} as {tr}>::{}", self.module, self.function),
            (Some(ty), None) => format!("{}::{ty}::{}", self.module, self.function),
            _ => format!("{}::{}", self.module, self.function),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A traced function was entered; `text` holds its arguments if asked.
    Call,
    /// A traced function returned; `duration_ns` is its wall time, `text`
    /// its return value if asked.
    Return,
    /// A panic unwound through a traced function; `text` is the message.
    Exception,
    /// `pid` sent a message (`text`) to `peer`.
    Send,
    /// `pid` received a message (`text`) from `peer`.
    Receive,
    /// sys trace: a gen_server got a call (`text`) from `peer`.
    GotCall,
    /// sys trace: a gen_server got a cast (`text`).
    GotCast,
    /// sys trace: a gen_server got an info message (`text`).
    GotInfo,
    /// sys trace: a gen_server sent a reply (`text`) to `peer`; `extra` is its new state.
    Sent,
    /// sys trace: a gen_server's new state (`extra`) after a cast or info.
    NewState,
    /// sys trace: a process took a message (`text`) from its traced
    /// channel (`peer`: the sender, when known).
    Got,
    /// sys trace: a process finished handling the message it took last;
    /// `duration_ns` is how long that took.
    Handled,
    /// A `tracing` event: `callsite` is the event's, `text` its message and
    /// fields, `extra` the span context it happened in (`apply{key=1}:`).
    Log,
    /// A poll of a traced async call (or an enter of a traced span) began:
    /// the call runs, like BEAM's `in` of a process scheduled in. Only for
    /// a trace that asks for polls ([`TraceSpec::polls`](crate::TraceSpec)).
    In,
    /// That poll ended (the future returned, ready or not; the span was
    /// exited), like BEAM's `out`; `duration_ns` is how long it ran.
    Out,
}

/// One traced event, as the node's collector delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The process it happened in.
    pub pid: Pid,
    /// The other process of a message or a call, if any.
    pub peer: Option<Pid>,
    /// The traced function, for calls, returns and exceptions.
    pub callsite: Option<u32>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Wall time of a call, on its return or exception.
    pub duration_ns: Option<u64>,
    /// Time spent in polls of an async call, on its return.
    pub busy_ns: Option<u64>,
    /// Arguments, return value, panic message or message, bounded.
    pub text: Option<String>,
    /// A gen_server's state, for sys trace events.
    pub extra: Option<String>,
}
