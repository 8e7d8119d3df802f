//! Running a profile: on a running node for a while (`--node N --duration
//! D`), or on a command from its start to its exit (`-- CMD ARGS`).
//!
//! Either way the tracer sends the node a [`ProfileSpec`], then keeps the
//! connection alive with a pinger thread (the node ends the profile of a
//! silent tracer) while a reader thread hands over the node's snapshots.
//! The final report (`last`) is the profile; if it never comes (the node
//! died, the command was killed) the last periodic snapshot is shown,
//! marked incomplete, and a line on stderr says why.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nodetrace_protocol::frame::{self, FrameError};
use nodetrace_protocol::{
    CallsiteInfo, Command as NodeCommand, NodeMessage, PROFILER_ADDR_ENV, PROFILER_COOKIE_ENV,
    ProfileMode, ProfileSnapshot, ProfileSpec, Reply, TracerMessage, display_ms, handshake,
};
use nodetrace_tracer::conn::message_name;
use nodetrace_tracer::stream::{PING_EVERY, STOP_GRACE};
use nodetrace_tracer::{Connection, Credentials, Format, StopSignal, Target, TracerError};

use crate::exit::{describe_status, display_command, exit_code, signal_name};
use crate::tc::human_ns;
use crate::{
    FlameError, Profile, ReportOptions, write_flamegraph, write_folded, write_json, write_text,
};

/// How to link the agent, for a command that never connected.
pub const AGENT_HINT: &str = "add nodetrace-agent and call nodetrace_agent::node::start(NodeConfig::new(\"name@host\")) at start-up";

/// How long a command may take to connect back, unless told otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a profile of a running node lasts unless told otherwise.
pub const DEFAULT_DURATION_MS: u64 = 10_000;

/// The snapshot period unless told otherwise.
pub const DEFAULT_INTERVAL_MS: u64 = 500;

/// How long past its end a profile's final report may take.
const REPORT_GRACE: Duration = Duration::from_secs(10);

/// How long after a command exits its last frames may take to arrive.
const EXIT_GRACE: Duration = Duration::from_secs(3);

const READ_POLL: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(50);

/// Why a profile could not be made or shown; each displays as one line.
#[derive(thiserror::Error)]
pub enum ProfileError {
    /// Connecting to the node, the handshake or the profile command failed.
    #[error(transparent)]
    Tracer(#[from] TracerError),
    /// The request is not acceptable (refused before anything runs).
    #[error("{0}")]
    Refused(String),
    /// The command could not be started.
    #[error("cannot start {command}: {cause}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        cause: io::Error,
    },
    /// The command never connected back: it does not link the agent.
    #[error("{0}: is the nodetrace agent linked? {AGENT_HINT}")]
    NeverConnected(String),
    /// The command links the agent (its program holds the agent's
    /// environment variable) but never connected back: its `node::start`
    /// failed (a name already taken, say) or was not called.
    #[error(
        "{0}: it links the nodetrace agent, but no node started: node::start failed (see the command's own error above; `nodetrace nodes` lists the names taken) or was not called ({AGENT_HINT})"
    )]
    AgentDidNotStart(String),
    /// The listener for the command's agent failed.
    #[error("cannot listen for the command's agent on 127.0.0.1: {0}")]
    Listen(io::Error),
    /// Waiting for the command failed.
    #[error("cannot wait for `{command}`: {cause}")]
    Wait {
        /// The command line.
        command: String,
        /// Why.
        cause: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {cause}", path.display())]
    File {
        /// Which.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// The report could not be written to stdout.
    #[error("cannot write the report: {0}")]
    Output(io::Error),
    /// The flamegraph could not be drawn.
    #[error("{}: {cause}", path.display())]
    Flame {
        /// Which file.
        path: PathBuf,
        /// Why.
        cause: FlameError,
    },
    /// The node ended before any figures came.
    #[error("{0}: no figures to show")]
    NoFigures(String),
}

/// Reads like `Display`, so that `?` in a `main` prints one line.
impl std::fmt::Debug for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ProfileError {
    /// Whether this is a write to a closed pipe (`nodetrace profile ... |
    /// head`), which ends the command quietly.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            ProfileError::Output(e) => e.kind() == io::ErrorKind::BrokenPipe,
            ProfileError::Tracer(e) => e.is_broken_pipe(),
            _ => false,
        }
    }

    /// The exit code for this error: 127 or 126 for a command that could
    /// not be started (as a shell says), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProfileError::Spawn { cause, .. } => crate::exit::spawn_error_code(cause),
            ProfileError::Tracer(e) => i32::from(e.exit_code()),
            _ => 1,
        }
    }
}

/// Where and how a profile's figures go.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Text tables or one JSON object.
    pub format: Format,
    /// Sort, per-process tables, histograms.
    pub report: ReportOptions,
    /// The report's file; stdout if `None`.
    pub output: Option<PathBuf>,
    /// A flamegraph SVG to draw (eprof, fprof).
    pub flamegraph: Option<PathBuf>,
    /// Folded stacks to write (eprof, fprof, sample).
    pub folded: Option<PathBuf>,
    /// Stacks to write in speedscope's file format (eprof, fprof, sample).
    pub speedscope: Option<PathBuf>,
    /// A pprof protobuf to write; gzipped if it ends in `.gz`.
    pub pprof: Option<PathBuf>,
}

impl Outputs {
    /// Refuses what cannot be done before anything runs: stacks of a
    /// cprof profile, files in directories that do not exist.
    pub fn check(&self, mode: ProfileMode) -> Result<(), ProfileError> {
        let stacks =
            self.flamegraph.is_some() || self.folded.is_some() || self.speedscope.is_some();
        if mode == ProfileMode::Cprof && stacks {
            return Err(ProfileError::Refused(
                "--flamegraph, --folded and --speedscope draw call stacks, which cprof does not keep (it only counts calls): use eprof or fprof".to_owned(),
            ));
        }
        for path in [
            &self.output,
            &self.flamegraph,
            &self.folded,
            &self.speedscope,
            &self.pprof,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(ProfileError::Refused(format!(
                    "cannot write {}: there is no directory {}",
                    path.display(),
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// Writes the folded stacks, the flamegraph and the report; says on
    /// `log` where the files are.
    pub fn write(&self, profile: &Profile<'_>, log: &mut dyn Write) -> Result<(), ProfileError> {
        if let Some(path) = &self.folded {
            let mut file = create(path)?;
            write_folded(&mut file, profile)
                .and_then(|()| file.flush())
                .map_err(|cause| file_error(path, cause))?;
            note(log, &format!("folded stacks written to {}", path.display()));
        }
        if let Some(path) = &self.speedscope {
            let mut file = create(path)?;
            let title = format!("{} of {}", profile.mode.name(), profile.node);
            crate::speedscope::write(&mut file, profile, &title)
                .and_then(|()| file.flush())
                .map_err(|cause| file_error(path, cause))?;
            note(
                log,
                &format!("speedscope profile written to {}", path.display()),
            );
        }
        if let Some(path) = &self.pprof {
            let mut file = create(path)?;
            let gzip = path.extension().is_some_and(|e| e == "gz");
            let written = if profile.mode == ProfileMode::Sample {
                crate::write_pprof(&mut file, profile, gzip)
            } else {
                crate::traced_pprof::write(&mut file, profile, gzip)
            };
            written
                .and_then(|()| file.flush())
                .map_err(|cause| file_error(path, cause))?;
            note(log, &format!("pprof profile written to {}", path.display()));
        }
        if let Some(path) = &self.flamegraph {
            let mut file = create(path)?;
            let title = format!("{} of {}", profile.mode.name(), profile.node);
            write_flamegraph(&mut file, profile, &title).map_err(|cause| ProfileError::Flame {
                path: path.clone(),
                cause,
            })?;
            file.flush().map_err(|cause| file_error(path, cause))?;
            note(log, &format!("flamegraph written to {}", path.display()));
        }
        let (mut out, path): (Box<dyn Write>, Option<&Path>) = match &self.output {
            Some(path) => (Box::new(create(path)?), Some(path)),
            None => (Box::new(BufWriter::new(io::stdout().lock())), None),
        };
        let written = match self.format {
            Format::Text => write_text(&mut out, profile, &self.report),
            Format::Json => write_json(&mut out, profile),
        }
        .and_then(|()| out.flush());
        match (written, path) {
            (Ok(()), _) => Ok(()),
            (Err(cause), Some(path)) => Err(file_error(path, cause)),
            (Err(e), None) => Err(ProfileError::Output(e)),
        }
    }
}

/// Writes `nodetrace: TEXT` as one line in one write, so that it does not
/// interleave with what a command writes to the same terminal.
fn note(log: &mut dyn Write, text: &str) {
    let _ = log.write_all(format!("nodetrace: {text}\n").as_bytes());
    let _ = log.flush();
}

fn create(path: &Path) -> Result<BufWriter<File>, ProfileError> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|cause| file_error(path, cause))
}

fn file_error(path: &Path, cause: io::Error) -> ProfileError {
    ProfileError::File {
        path: path.to_owned(),
        cause,
    }
}

/// A profile to run and where its figures go.
#[derive(Debug, Clone)]
pub struct ProfileRequest {
    /// What the node is asked.
    pub spec: ProfileSpec,
    /// The duration is the default one: say so.
    pub default_duration: bool,
    /// Where the figures go.
    pub outputs: Outputs,
}

impl ProfileRequest {
    /// `eprof of todo::server, todo::cache` or `cprof of every traceable
    /// function`.
    pub fn describe(&self) -> String {
        if self.spec.mode == ProfileMode::Sample {
            return format!("sample of every thread at {} Hz", self.spec.frequency_hz);
        }
        let what = if self.spec.patterns.is_empty() {
            "every traceable function".to_owned()
        } else {
            self.spec
                .patterns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("{} of {what}", self.spec.mode.name())
    }
}

/// Interrupts (SIGINT, SIGTERM) of a profile of a command, as a signal
/// handler reports them.
///
/// The first one ends the command gracefully: a terminal's Ctrl-C reaches
/// the command by itself (the terminal signals the whole foreground process
/// group), so nodetrace only waits for it to exit; a signal sent to
/// nodetrace alone (`kill -INT`, a supervisor's SIGTERM) is forwarded to
/// the command, as `timeout` and `docker run` do. The second one kills the
/// command.
#[derive(Debug, Clone, Default)]
pub struct Interrupts(Arc<Mutex<Vec<Interrupt>>>);

/// One interrupt: the signal and whether the terminal sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// The signal number (`libc::SIGINT`).
    pub signal: i32,
    /// The terminal sent it (Ctrl-C), so the command got it too.
    pub from_terminal: bool,
}

impl Interrupts {
    /// None yet.
    pub fn new() -> Interrupts {
        Interrupts::default()
    }

    /// Records one (from a signal-handling thread).
    pub fn hit(&self, interrupt: Interrupt) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(interrupt);
    }

    /// How many so far.
    pub fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn get(&self, index: usize) -> Option<Interrupt> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .copied()
    }
}

/// Acts on the interrupts not handled yet: the first is forwarded to the
/// command unless the terminal sent it (see [`Interrupts`]); the second
/// kills the command.
#[derive(Debug, Default)]
pub struct InterruptHandler {
    handled: usize,
}

impl InterruptHandler {
    /// None handled yet.
    pub fn new() -> InterruptHandler {
        InterruptHandler::default()
    }

    /// Handles the interrupts that came since the last call, saying on
    /// `log` what it did to `child` (shown as `display`).
    pub fn handle(
        &mut self,
        interrupts: &Interrupts,
        child: &mut Child,
        display: &str,
        log: &mut dyn Write,
    ) {
        while let Some(interrupt) = interrupts.get(self.handled) {
            self.handled += 1;
            let name = signal_name(interrupt.signal).unwrap_or("the signal");
            if self.handled == 1 {
                if interrupt.from_terminal {
                    note(
                        log,
                        &format!(
                            "waiting for `{display}` to exit (the terminal sent {name} to it too); interrupt again to kill it"
                        ),
                    );
                } else {
                    forward(child, interrupt.signal);
                    note(
                        log,
                        &format!(
                            "forwarded {name} to `{display}` (pid {}); waiting for it to exit; interrupt again to kill it",
                            child.id()
                        ),
                    );
                }
            } else if self.handled == 2 {
                note(log, &format!("killing `{display}` (second interrupt)"));
                let _ = child.kill();
            }
        }
    }
}

#[cfg(unix)]
fn forward(child: &Child, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // Safety: kill(2) with a pid we spawned and have not waited for
        // yet (so it is not reused) and a valid signal number.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

#[cfg(not(unix))]
fn forward(child: &mut Child, _signal: i32) {
    let _ = child.kill();
}

struct Started {
    functions: u64,
    callsites: Vec<CallsiteInfo>,
}

fn start(conn: &mut Connection, spec: &ProfileSpec) -> Result<Started, TracerError> {
    match conn.request(NodeCommand::Profile(spec.clone()))? {
        Reply::ProfileStarted {
            functions,
            callsites,
        } => Ok(Started {
            functions,
            callsites,
        }),
        other => Err(TracerError::Unexpected {
            node: conn.name().to_owned(),
            what: "Profile".to_owned(),
            got: message_name(&NodeMessage::Reply(other)).to_owned(),
        }),
    }
}

/// What a profile covers, for its opening line: `12 functions`, or for a
/// sample profile that it needs no annotation.
fn covers(request: &ProfileRequest, started: &Started) -> String {
    if request.spec.mode == ProfileMode::Sample {
        "no annotation needed".to_owned()
    } else {
        plural(started.functions, "function")
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// What the reader thread hands over.
enum Incoming {
    Snapshot(ProfileSnapshot, bool),
    /// Callsites the node registered after the profile began (`tracing`
    /// spans first reached), sent before the figures that name them.
    Callsites(Vec<CallsiteInfo>),
    Closed(String),
    Note(String),
}

/// A profile's connection after it started: a pinger and a reader.
struct Live {
    rx: Receiver<Incoming>,
    ctl: Option<Sender<()>>,
    socket: TcpStream,
    threads: Vec<JoinHandle<()>>,
}

impl Live {
    fn start(conn: Connection) -> Result<Live, TracerError> {
        let name = conn.name().to_owned();
        let lost = |cause: io::Error| TracerError::Lost {
            node: name.clone(),
            cause: FrameError::Io(cause),
        };
        let writer = conn.try_clone_stream().map_err(lost)?;
        let socket = conn.try_clone_stream().map_err(lost)?;
        conn.set_read_timeout(Some(READ_POLL)).map_err(lost)?;
        let (ctl_tx, ctl_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let pinger = thread::Builder::new()
            .name(format!("ping {name}"))
            .spawn(move || ping(writer, &ctl_rx))
            .map_err(lost)?;
        let reader = thread::Builder::new()
            .name(format!("read {name}"))
            .spawn(move || read(conn, &tx))
            .map_err(lost)?;
        Ok(Live {
            rx,
            ctl: Some(ctl_tx),
            socket,
            threads: vec![pinger, reader],
        })
    }

    /// Asks the node to end the profile (it sends its final report).
    fn stop(&self) {
        if let Some(ctl) = &self.ctl {
            let _ = ctl.send(());
        }
    }

    fn recv(&self, timeout: Duration) -> Option<Incoming> {
        match self.rx.recv_timeout(timeout) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                thread::sleep(timeout);
                None
            }
        }
    }

    /// Closes the connection and waits for both threads.
    fn close(mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        self.ctl = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn ping(mut stream: TcpStream, ctl: &Receiver<()>) {
    loop {
        let message = match ctl.recv_timeout(PING_EVERY) {
            Ok(()) => TracerMessage::Command(NodeCommand::Stop),
            Err(RecvTimeoutError::Timeout) => TracerMessage::Ping,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if frame::write_frame(&mut stream, &message).is_err() {
            return;
        }
    }
}

fn read(mut conn: Connection, tx: &Sender<Incoming>) {
    loop {
        let incoming = match conn.recv_frame() {
            Ok(NodeMessage::Profile { snapshot, last }) => Incoming::Snapshot(snapshot, last),
            Ok(NodeMessage::Callsites(news)) => Incoming::Callsites(news),
            // A Stop that crossed the profile's own end.
            Ok(NodeMessage::Reply(Reply::Error(text))) => Incoming::Note(text),
            Ok(other) => Incoming::Note(format!(
                "unexpected {} during the profile",
                message_name(&other)
            )),
            Err(e) if e.is_timeout() => continue,
            Err(FrameError::Closed) => {
                let _ = tx.send(Incoming::Closed("the connection was closed".to_owned()));
                return;
            }
            Err(e) => {
                let _ = tx.send(Incoming::Closed(format!("the connection was lost: {e}")));
                return;
            }
        };
        if tx.send(incoming).is_err() {
            return;
        }
    }
}

/// The figures received so far.
#[derive(Default)]
struct Figures {
    /// Callsites announced during the profile.
    callsites: Vec<CallsiteInfo>,
    latest: Option<ProfileSnapshot>,
    last: Option<ProfileSnapshot>,
    closed: Option<String>,
}

impl Figures {
    fn absorb(&mut self, incoming: Incoming, node: &str, log: &mut dyn Write) {
        match incoming {
            Incoming::Snapshot(snapshot, true) => self.last = Some(snapshot),
            Incoming::Snapshot(snapshot, false) => self.latest = Some(snapshot),
            Incoming::Closed(why) => self.closed = Some(why),
            Incoming::Callsites(news) => self.callsites.extend(news),
            Incoming::Note(text) => {
                note(log, &format!("{node}: {text}"));
            }
        }
    }

    /// Calls aggregated so far, by the latest figures.
    fn calls(&self) -> u64 {
        self.last
            .as_ref()
            .or(self.latest.as_ref())
            .map_or(0, |s| s.functions.iter().map(|f| f.calls).sum())
    }

    fn done(&self) -> bool {
        self.last.is_some() || self.closed.is_some()
    }

    /// `; 1234 calls`, for the progress line (a sample profile's stacks
    /// come only at its end: nothing).
    fn so_far(&self, mode: ProfileMode) -> String {
        if mode == ProfileMode::Sample {
            String::new()
        } else {
            format!("; {} calls", self.calls())
        }
    }
}

/// A countdown over `duration_ms` (a spinner with the elapsed time when
/// `None`) on stderr, drawn only when stderr is a terminal.
fn progress(duration_ms: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    match duration_ms {
        Some(ms) => {
            let bar = ProgressBar::with_draw_target(Some(ms), target);
            if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {msg}") {
                bar.set_style(style);
            }
            bar
        }
        None => {
            let spinner = ProgressBar::with_draw_target(None, target);
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
                spinner.set_style(style);
            }
            spinner
        }
    }
}

/// The figures to show: the final report, else the last periodic
/// snapshot (incomplete, and `log` says `why`), else an error.
fn conclude(
    figures: Figures,
    why: String,
    log: &mut dyn Write,
) -> Result<(ProfileSnapshot, bool), ProfileError> {
    match (figures.last, figures.latest) {
        (Some(last), _) => Ok((last, true)),
        (None, Some(latest)) => {
            note(
                log,
                &format!(
                    "{why}: showing its last periodic figures, {} into the profile",
                    human_ns(latest.elapsed_ns)
                ),
            );
            Ok((latest, false))
        }
        (None, None) => Err(ProfileError::NoFigures(why)),
    }
}

/// Profiles the running node `target` until the profile's duration ends
/// (or `stop` is given), then writes the figures. Returns whether they are
/// the node's final report (false: its last periodic figures, because the
/// connection was lost).
pub fn profile_node(
    target: &Target,
    credentials: &Credentials,
    request: &ProfileRequest,
    log: &mut dyn Write,
    stop: &StopSignal,
) -> Result<bool, ProfileError> {
    request.outputs.check(request.spec.mode)?;
    let mut conn = Connection::open(target, credentials)?;
    let node = conn.name().to_owned();
    let started = start(&mut conn, &request.spec)?;
    let duration = match request.spec.duration_ms {
        Some(ms) if request.default_duration => {
            format!(" for {} (the default; set --duration)", display_ms(ms))
        }
        Some(ms) => format!(" for {}", display_ms(ms)),
        None => String::new(),
    };
    note(
        log,
        &format!(
            "{} on {node} ({}){duration}; Ctrl-C stops it early",
            request.describe(),
            covers(request, &started)
        ),
    );
    let live = Live::start(conn)?;
    let deadline = request
        .spec
        .duration_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms) + REPORT_GRACE);
    let mut figures = Figures::default();
    let mut stop_sent: Option<Instant> = None;
    let mut gave_up = None;
    let began = Instant::now();
    let countdown = progress(request.spec.duration_ms);
    while !figures.done() {
        if let Some(ms) = request.spec.duration_ms {
            let elapsed = began.elapsed().as_millis().min(u128::from(ms)) as u64;
            countdown.set_position(elapsed);
            countdown.set_message(format!(
                "{} left{}",
                display_ms((ms - elapsed).div_ceil(1000) * 1000),
                figures.so_far(request.spec.mode)
            ));
        }
        if stop_sent.is_none() && stop.is_stopped() {
            live.stop();
            stop_sent = Some(Instant::now());
        }
        if stop_sent.is_some_and(|at| at.elapsed() > STOP_GRACE) {
            gave_up = Some(format!(
                "{node} sent no final report within {}s of Stop",
                STOP_GRACE.as_secs()
            ));
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            gave_up = Some(format!(
                "{node} sent no final report within {}s of the profile's end",
                REPORT_GRACE.as_secs()
            ));
            break;
        }
        if let Some(incoming) = live.recv(POLL) {
            figures.absorb(incoming, &node, log);
        }
    }
    countdown.finish_and_clear();
    live.close();
    let why = gave_up.unwrap_or_else(|| {
        let closed = figures.closed.as_deref().unwrap_or("the connection ended");
        format!("lost {node} before its final report ({closed})")
    });
    let callsites = all_callsites(started, &mut figures);
    let (snapshot, complete) = conclude(figures, why, log)?;
    let profile = Profile {
        mode: request.spec.mode,
        node: &node,
        snapshot: &snapshot,
        callsites: &callsites,
        complete,
    };
    request.outputs.write(&profile, log)?;
    Ok(complete)
}

/// The callsites of the start reply and those announced since.
fn all_callsites(started: Started, figures: &mut Figures) -> Vec<CallsiteInfo> {
    let mut all = started.callsites;
    all.append(&mut figures.callsites);
    all
}

/// Kills the command if it still runs when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn one_time_cookie() -> String {
    handshake::challenge()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a command did not connect back: [`ProfileError::AgentDidNotStart`]
/// when its program links the agent, else
/// [`ProfileError::NeverConnected`].
fn never_connected(program: &OsStr, what: String) -> ProfileError {
    if links_agent(program) {
        ProfileError::AgentDidNotStart(what)
    } else {
        ProfileError::NeverConnected(what)
    }
}

/// Whether the program file (found on `PATH` when it has no `/`) holds
/// the name of the agent's connect-back variable, which every program
/// linking the agent does. A script that starts such a program does not.
fn links_agent(program: &OsStr) -> bool {
    let path = Path::new(program);
    let candidates: Vec<PathBuf> = if path.components().count() > 1 {
        vec![path.to_owned()]
    } else {
        std::env::var_os("PATH")
            .map(|dirs| std::env::split_paths(&dirs).map(|d| d.join(path)).collect())
            .unwrap_or_default()
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read(p).ok())
        .is_some_and(|bytes| memchr::memmem::find(&bytes, PROFILER_ADDR_ENV.as_bytes()).is_some())
}

/// Runs `command` with the agent told to connect back, profiles it from
/// its start to its exit, writes the figures, and returns the command's
/// exit code (128 + N if signal N killed it).
///
/// The command's stdin, stdout and stderr are this process's; the report
/// follows its output. A command that does not connect within
/// `connect_timeout` (or exits first) is killed and reported as
/// [`ProfileError::AgentDidNotStart`] if its program links the agent, else
/// [`ProfileError::NeverConnected`].
pub fn profile_command(
    command: &[OsString],
    request: &ProfileRequest,
    connect_timeout: Duration,
    interrupts: &Interrupts,
    log: &mut dyn Write,
) -> Result<i32, ProfileError> {
    request.outputs.check(request.spec.mode)?;
    let (program, args) = command.split_first().ok_or_else(|| {
        ProfileError::Refused(
            "profile needs a command after `--`, or a running node (--node NAME)".to_owned(),
        )
    })?;
    let display = display_command(command);
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(ProfileError::Listen)?;
    let addr = listener.local_addr().map_err(ProfileError::Listen)?;
    listener
        .set_nonblocking(true)
        .map_err(ProfileError::Listen)?;
    let cookie = one_time_cookie();
    let child = Command::new(program)
        .args(args)
        .env(PROFILER_ADDR_ENV, addr.to_string())
        .env(PROFILER_COOKIE_ENV, &cookie)
        .spawn()
        .map_err(|cause| ProfileError::Spawn {
            command: display.clone(),
            cause,
        })?;
    let mut child = ChildGuard(child);
    let wait_error = |cause| ProfileError::Wait {
        command: display.clone(),
        cause,
    };

    let mut handler = InterruptHandler::new();
    let deadline = Instant::now() + connect_timeout;
    let (stream, peer) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProfileError::Listen(e)),
        }
        if let Some(status) = child.0.try_wait().map_err(wait_error)? {
            return Err(never_connected(
                program,
                format!(
                    "`{display}` {} without connecting to the profiler",
                    describe_status(status)
                ),
            ));
        }
        handler.handle(interrupts, &mut child.0, &display, log);
        let interrupted = interrupts.count() >= 2;
        if interrupted || Instant::now() > deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            let what = if interrupted {
                format!(
                    "`{display}` was killed on the second interrupt, before it connected to the profiler"
                )
            } else {
                format!(
                    "`{display}` did not connect to the profiler within {} (killed it)",
                    display_ms(connect_timeout.as_millis().max(1) as u64)
                )
            };
            return Err(if interrupted {
                ProfileError::NeverConnected(what)
            } else {
                never_connected(program, what)
            });
        }
        thread::sleep(Duration::from_millis(20));
    };
    // One program is profiled; others started with the same environment
    // are refused at once rather than left waiting.
    drop(listener);
    let target = Target {
        name: Some(format!("`{display}`")),
        addr: peer,
    };
    let credentials = Credentials::new(cookie, "(the one-time cookie of nodetrace profile)");
    let mut conn = Connection::accepted(stream, &target, &credentials)?;
    let node = conn.name().to_owned();
    let started = start(&mut conn, &request.spec)?;
    note(
        log,
        &format!(
            "{} in `{display}` ({node}, {}); the report follows when it exits",
            request.describe(),
            covers(request, &started)
        ),
    );
    let live = Live::start(conn)?;

    let mut figures = Figures::default();
    let spinner = progress(None);
    let status: ExitStatus = loop {
        spinner.set_message(format!(
            "`{display}` running{}",
            figures.so_far(request.spec.mode)
        ));
        spinner.tick();
        if let Some(status) = child.0.try_wait().map_err(wait_error)? {
            break status;
        }
        handler.handle(interrupts, &mut child.0, &display, log);
        if let Some(incoming) = live.recv(POLL) {
            figures.absorb(incoming, &node, log);
        }
    };
    spinner.finish_and_clear();
    // The final report may still be on its way: the command's exit closes
    // the connection after it.
    let grace = Instant::now() + EXIT_GRACE;
    while !figures.done() && Instant::now() < grace {
        if let Some(incoming) = live.recv(POLL) {
            figures.absorb(incoming, &node, log);
        }
    }
    live.close();
    let code = exit_code(status);
    let why = format!(
        "`{display}` {} before its final report",
        describe_status(status)
    );
    let callsites = all_callsites(started, &mut figures);
    let (snapshot, complete) = match conclude(figures, why, log) {
        Ok(figures) => figures,
        Err(e) => {
            note(log, &format!("{e}"));
            return Ok(if code == 0 { 1 } else { code });
        }
    };
    let profile = Profile {
        mode: request.spec.mode,
        node: &node,
        snapshot: &snapshot,
        callsites: &callsites,
        complete,
    };
    request.outputs.write(&profile, log)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_of_cprof_and_missing_directories_are_refused_up_front() {
        let outputs = Outputs {
            flamegraph: Some("f.svg".into()),
            ..Outputs::default()
        };
        let err = outputs.check(ProfileMode::Cprof).unwrap_err();
        assert!(err.to_string().contains("use eprof or fprof"), "{err}");
        assert!(outputs.check(ProfileMode::Eprof).is_ok());
        let outputs = Outputs {
            folded: Some("/no/such/dir/f.txt".into()),
            ..Outputs::default()
        };
        let err = outputs.check(ProfileMode::Fprof).unwrap_err();
        assert!(
            err.to_string().contains("no directory /no/such/dir"),
            "{err}"
        );
    }

    #[test]
    fn cookies_are_fresh_hex() {
        let (a, b) = (one_time_cookie(), one_time_cookie());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
