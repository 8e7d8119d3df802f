//! The control server: how tracer nodes reach this node.
//!
//! It listens on a loopback port, registers the node in the per-user
//! registry, and serves each connection on its own agent thread (nothing on
//! them is traced): the cookie handshake first, then commands. A `Trace`
//! command starts a [`Session`] whose events a second thread streams back.
//! Whatever goes wrong with a connection (a malformed, oversized or
//! truncated frame, a wrong cookie, a tracer gone silent) closes that
//! connection, ends its trace and is logged in one line; the node serves on.

use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodetrace_protocol::frame::{self, FrameError, MAX_FRAME};
use nodetrace_protocol::handshake::{self, Side};
use nodetrace_protocol::home::{Home, NodeEntry, Registration, resolve_cookie};
use nodetrace_protocol::{
    CallsiteInfo, CallsiteKind, Command, EndReason, Event, Limits, MAGIC, NodeInfo, NodeMessage,
    PROFILER_ADDR_ENV, PROFILER_COOKIE_ENV, PROTOCOL_VERSION, Pid, Processes, ProfileMode,
    ProfileSnapshot, ProfileSpec, Reply, StatisticsRow, TraceEnd, TraceSpec, TracerMessage,
};

use crate::callsites;
use crate::control::node::{NodeConfig, NodeError};
use crate::control::observe;
use crate::process::ProcessRef;
use crate::process::sys;
use crate::profile::sample::{MAX_SAMPLE_MS, SampleProfile, Split};
use crate::profile::{Profile, ProfileOptions};
use crate::record::callsite::callsite_count;
use crate::record::fmt::DEFAULT_TEXT_BOUND;
use crate::record::ring::mark_agent_thread;
use crate::session::{ArgMatch, ProcFlags, Procs, RecvError, Session, SessionOptions, clear_all};

/// How long a tracer has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest handshake frame.
const HANDSHAKE_MAX_FRAME: usize = 4096;
/// A tracing tracer silent for this long is gone: its trace ends.
pub const SILENCE_LIMIT: Duration = Duration::from_millis(800);
/// A write to a tracer that does not read fails after this long: its trace
/// ends and its session slot is freed, whatever the tracer does.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the connection thread looks for silence and ended traces.
const TICK: Duration = Duration::from_millis(100);

/// The registry entry of this node, held for the life of the process (a
/// dead node's entry is pruned by whoever reads the registry next).
static REGISTRATION: OnceLock<Registration> = OnceLock::new();

/// Starts the control server for `config`; returns where it listens.
pub(crate) fn start(config: &NodeConfig, info: NodeInfo) -> Result<SocketAddr, NodeError> {
    let home = match &config.home {
        Some(dir) => Home::at(dir),
        None => Home::from_env()?,
    };
    let cookie = resolve_cookie(config.cookie.as_deref(), &home)?;
    let listen = config
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = TcpListener::bind(listen).map_err(|e| NodeError::Listen(listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| NodeError::Listen(listen, e))?;
    let registration = home.register(&NodeEntry {
        name: info.name.clone(),
        os_pid: info.os_pid,
        addr,
        started_ms: info.started_ms,
    })?;
    let _ = REGISTRATION.set(registration);
    let context = Arc::new(Context { cookie, info });
    thread::Builder::new()
        .name("nodetrace-control".into())
        .spawn(move || accept(listener, context))
        .map_err(|e| NodeError::Listen(listen, e))?;
    Ok(addr)
}

struct Context {
    cookie: String,
    info: NodeInfo,
}

/// Log lines allowed per second; the rest are counted, and the count is
/// said with the next line that gets through.
const LOG_LINES_PER_SECOND: u32 = 10;

/// Writes one line to stderr, unless more than [`LOG_LINES_PER_SECOND`]
/// were written this second: a flood of bad connections costs the node a
/// few lines, not its stderr.
fn log(message: std::fmt::Arguments<'_>) {
    struct Window {
        start: Option<Instant>,
        lines: u32,
        suppressed: u64,
    }
    static WINDOW: Mutex<Window> = Mutex::new(Window {
        start: None,
        lines: 0,
        suppressed: 0,
    });
    let mut w = WINDOW.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if w.start
        .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
    {
        w.start = Some(now);
        w.lines = 0;
    }
    if w.lines >= LOG_LINES_PER_SECOND {
        w.suppressed += 1;
        return;
    }
    w.lines += 1;
    match std::mem::take(&mut w.suppressed) {
        0 => eprintln!("nodetrace: {message}"),
        n => eprintln!("nodetrace: {message} ({n} similar lines suppressed)"),
    }
}

/// At most this many tracer connections are served at once; one more is
/// closed at once (a thread and two descriptors each).
pub const MAX_CONNECTIONS: usize = 64;

/// Connections being served now.
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// One served connection, counted until it ends.
struct Counted;

impl Counted {
    fn take() -> Option<Counted> {
        let taken = CONNECTIONS.fetch_add(1, Ordering::AcqRel);
        if taken >= MAX_CONNECTIONS {
            CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept(listener: TcpListener, context: Arc<Context>) {
    mark_agent_thread();
    // Accepting fails when the process is out of descriptors: wait before
    // trying again, longer each time, instead of spinning a core.
    let mut backoff = Duration::ZERO;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                log(format_args!(
                    "accepting a tracer failed: {e}; trying again in {} ms",
                    backoff.as_millis()
                ));
                thread::sleep(backoff);
                continue;
            }
        };
        let Some(counted) = Counted::take() else {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            log(format_args!(
                "refused a connection from {peer}: {MAX_CONNECTIONS} connections are served already"
            ));
            drop(stream);
            continue;
        };
        let context = context.clone();
        let spawned = thread::Builder::new()
            .name("nodetrace-conn".into())
            .spawn(move || {
                let _counted = counted;
                connection(stream, &context)
            });
        if let Err(e) = spawned {
            log(format_args!("cannot serve a tracer: {e}"));
        }
    }
}

fn connection(stream: TcpStream, context: &Context) {
    mark_agent_thread();
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "a tracer".to_owned(), |a| a.to_string());
    match Connection::open(stream, context, &peer) {
        Ok(Some(mut conn)) => {
            let result = conn.serve();
            conn.end_trace();
            match result {
                Ok(()) | Err(FrameError::Closed) => {}
                Err(e) => log(format_args!("closed the connection of {peer}: {e}")),
            }
        }
        Ok(None) => {}
        Err(FrameError::Closed) => {}
        Err(e) => log(format_args!("closed the connection of {peer}: {e}")),
    }
}

/// How long the agent waits for the profiler's first command.
const CONNECT_BACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects back to the profiler that started this process, if one did,
/// and serves it: the handshake and the profiler's first command (the
/// profile to run) complete before this returns, so the profile covers
/// everything the program does from here on. A failure is logged, not
/// returned: the program runs on unprofiled (a child process of the
/// profiled command inherits its environment, and the profiler takes one
/// connection).
pub(crate) fn connect_back(info: &NodeInfo) {
    if let Err(e) = try_connect_back(info) {
        log(format_args!("{e}; running without the profile"));
    }
}

/// The error says what failed, for the log line.
fn try_connect_back(info: &NodeInfo) -> Result<(), String> {
    let Some(addr) = std::env::var_os(PROFILER_ADDR_ENV) else {
        return Ok(());
    };
    let text = addr.to_string_lossy().into_owned();
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{PROFILER_ADDR_ENV}={text} is not an address"))?;
    let cookie = std::env::var(PROFILER_COOKIE_ENV).unwrap_or_default();
    let failed = |e: &dyn std::fmt::Display| {
        format!("cannot connect back to the profiler that started this program ({addr}): {e}")
    };
    let stream = TcpStream::connect_timeout(&addr, CONNECT_BACK_TIMEOUT).map_err(|e| failed(&e))?;
    let context = Context {
        cookie,
        info: info.clone(),
    };
    let Some(mut conn) =
        Connection::open(stream, &context, &addr.to_string()).map_err(|e| failed(&e))?
    else {
        return Err(failed(&"the profiler did not complete the handshake"));
    };
    conn.reader
        .get_ref()
        .set_read_timeout(Some(CONNECT_BACK_TIMEOUT))
        .map_err(|e| failed(&e))?;
    let first: TracerMessage =
        frame::read_frame(&mut conn.reader, MAX_FRAME).map_err(|e| failed(&e))?;
    if let Some(reply) = conn.handle(first).map_err(|e| failed(&e))? {
        send(&conn.writer, &NodeMessage::Reply(reply)).map_err(|e| failed(&e))?;
    }
    conn.reader
        .get_ref()
        .set_read_timeout(Some(TICK))
        .map_err(|e| failed(&e))?;
    thread::Builder::new()
        .name("nodetrace-profiler".into())
        .spawn(move || {
            mark_agent_thread();
            let result = conn.serve();
            conn.end_trace();
            if let Err(e) = result
                && !matches!(e, FrameError::Closed)
            {
                log(format_args!("the profiler's connection closed: {e}"));
            }
        })
        .map_err(|e| failed(&e))?;
    Ok(())
}

type Writer = Arc<Mutex<BufWriter<TcpStream>>>;

fn send(writer: &Writer, message: &NodeMessage) -> Result<(), FrameError> {
    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
    frame::write_frame(&mut *w, message)?;
    w.flush()?;
    Ok(())
}

/// Closes a connection so that what was sent last (a profile's final
/// report, a trace's end) is not lost: a socket closed with unread data
/// (the tracer's pings) is reset, and a reset drops what was not yet sent.
/// So: end the sending side, then read what is left, briefly.
fn close_gracefully(writer: &Writer) {
    let writer = writer.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(mut stream) = writer.get_ref().try_clone() else {
        return;
    };
    drop(writer);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match std::io::Read::read(&mut stream, &mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

/// The callsites a tracer was told of: those of the start reply, then each
/// `tracing` callsite registered since, sent before what refers to it.
struct Announced(AtomicUsize);

impl Announced {
    /// Every callsite there is now: what a start reply carries.
    fn start() -> (Announced, Vec<CallsiteInfo>) {
        let all: Vec<CallsiteInfo> = callsites().iter().map(|cs| cs.info()).collect();
        (Announced(AtomicUsize::new(all.len())), all)
    }

    /// Sends the callsites registered since the last word about them.
    fn announce(&self, writer: &Writer) -> Result<(), FrameError> {
        let known = self.0.load(Ordering::Relaxed);
        if callsite_count() <= known {
            return Ok(());
        }
        let news: Vec<CallsiteInfo> = callsites()[known..].iter().map(|cs| cs.info()).collect();
        self.0.store(known + news.len(), Ordering::Relaxed);
        send(writer, &NodeMessage::Callsites(news))
    }
}

/// The processes a trace's tracer was told the names of: each pid its
/// events name is looked up once, when it first appears, and its name
/// sent before those events.
#[derive(Default)]
struct Named(rustc_hash::FxHashSet<Pid>);

/// Pids a trace remembers having looked up; past it, it forgets them all
/// (telling a name twice is harmless).
const NAMED_PIDS: usize = 1 << 16;

impl Named {
    /// Sends the names of the processes `batch` names for the first time.
    fn announce(&mut self, batch: &[Event], writer: &Writer) -> Result<(), FrameError> {
        let mut news = Vec::new();
        for e in batch {
            for pid in std::iter::once(e.pid).chain(e.peer) {
                if self.0.insert(pid) {
                    news.push(pid);
                }
            }
        }
        if news.is_empty() {
            return Ok(());
        }
        if self.0.len() > NAMED_PIDS {
            self.0.clear();
        }
        let names = crate::process::names_of(&news);
        if names.is_empty() {
            return Ok(());
        }
        send(writer, &NodeMessage::Names(names))
    }
}

/// What runs on a connection: a trace and the thread streaming it, or a
/// profile and the thread sending its snapshots.
enum Running {
    Trace {
        session: Arc<Session>,
        streamer: JoinHandle<()>,
    },
    Profile {
        run: Arc<ProfileRun>,
        reporter: JoinHandle<()>,
    },
}

impl Running {
    /// Whether it ended (its thread may still be finishing).
    fn is_over(&self) -> bool {
        match self {
            Running::Trace { session, streamer } => session.is_ended() || streamer.is_finished(),
            Running::Profile { run, reporter } => run.is_over() || reporter.is_finished(),
        }
    }

    /// Ends it for `reason` (a profile sends its final report).
    fn end(&self, reason: EndReason) {
        match self {
            Running::Trace { session, .. } => session.end(reason),
            Running::Profile { run, .. } => run.finish(true),
        }
    }

    /// Ends it; `report` sends a profile's final report.
    fn stop(&self, report: bool) {
        match self {
            Running::Trace { session, .. } => session.stop(),
            Running::Profile { run, .. } => run.finish(report),
        }
    }

    fn join(self) {
        let thread = match self {
            Running::Trace { streamer, .. } => streamer,
            Running::Profile { reporter, .. } => reporter,
        };
        let _ = thread.join();
    }
}

/// What a profile measures with: callsite aggregates or the sampler.
enum Measure {
    Calls(Profile),
    Sample(SampleProfile),
}

impl Measure {
    fn snapshot(&self) -> ProfileSnapshot {
        match self {
            Measure::Calls(p) => p.snapshot(),
            Measure::Sample(p) => p.snapshot(),
        }
    }

    fn stop(self) -> ProfileSnapshot {
        match self {
            Measure::Calls(p) => p.stop(),
            Measure::Sample(p) => p.stop(),
        }
    }
}

/// A profile running for a connection. The exit hook reaches it too, so
/// that a program that exits (however: returning from main, an exit code,
/// `process::exit`, a panic) still sends its final report.
struct ProfileRun {
    profile: Mutex<Option<Measure>>,
    writer: Writer,
    deadline: Option<Instant>,
    announced: Announced,
}

impl ProfileRun {
    fn is_over(&self) -> bool {
        self.profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Ends the profile, once; `report` sends its final figures.
    fn finish(&self, report: bool) {
        let taken = self
            .profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(profile) = taken {
            let snapshot = profile.stop();
            if report && self.announced.announce(&self.writer).is_ok() {
                let _ = send(
                    &self.writer,
                    &NodeMessage::Profile {
                        snapshot,
                        last: true,
                    },
                );
            }
        }
    }

    /// Sends the figures so far; false once the profile is over.
    fn report(&self) -> bool {
        let snapshot = match self
            .profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(profile) => profile.snapshot(),
            None => return false,
        };
        if self.announced.announce(&self.writer).is_err() {
            return false;
        }
        send(
            &self.writer,
            &NodeMessage::Profile {
                snapshot,
                last: false,
            },
        )
        .is_ok()
    }
}

/// Profiles to finish when the program exits.
static AT_EXIT: Mutex<Vec<std::sync::Weak<ProfileRun>>> = Mutex::new(Vec::new());

extern "C" fn finish_profiles_at_exit() {
    let runs: Vec<_> = AT_EXIT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for run in runs.iter().filter_map(std::sync::Weak::upgrade) {
        run.finish(true);
        close_gracefully(&run.writer);
    }
}

fn finish_at_exit(run: &Arc<ProfileRun>) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        // Safety: `atexit` takes a plain `extern "C"` function with no
        // arguments, which `finish_profiles_at_exit` is; it runs once, on
        // the exiting thread, after `main` returns or `exit` is called.
        unsafe {
            libc::atexit(finish_profiles_at_exit);
        }
    });
    let mut runs = AT_EXIT.lock().unwrap_or_else(|p| p.into_inner());
    runs.retain(|r| r.strong_count() > 0);
    runs.push(Arc::downgrade(run));
}

/// Sends a profile's snapshots every `every` (never if zero) until it ends
/// or its deadline passes, then its final report.
fn report(run: &ProfileRun, every: Duration) {
    mark_agent_thread();
    let mut last = Instant::now();
    loop {
        thread::sleep(TICK.min(every.max(Duration::from_millis(10))));
        if run.is_over() {
            return;
        }
        if run.deadline.is_some_and(|d| Instant::now() >= d) {
            run.finish(true);
            return;
        }
        if !every.is_zero() && last.elapsed() >= every {
            if !run.report() {
                run.finish(false);
                return;
            }
            last = Instant::now();
        }
    }
}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: Writer,
    trace: Option<Running>,
    /// A runtime for the `sys` calls, which wait on a gen_server.
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// What this connection's `top` saw last.
    top: Option<observe::TopState>,
    /// When the node started, in milliseconds since the Unix epoch.
    started_ms: u64,
}

impl Connection {
    /// Runs the handshake; `None` if the tracer was refused.
    fn open(
        stream: TcpStream,
        context: &Context,
        peer: &str,
    ) -> Result<Option<Connection>, FrameError> {
        stream.set_nodelay(true)?;
        // The whole handshake, waits included, by one deadline; and no
        // write waits longer than WRITE_TIMEOUT for a tracer to read.
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let writer: Writer = Arc::new(Mutex::new(BufWriter::new(stream)));
        let TracerMessage::Hello {
            magic,
            version,
            challenge: theirs,
        } = frame::read_frame_by(&mut reader, HANDSHAKE_MAX_FRAME, deadline)?
        else {
            return Err(FrameError::Malformed(
                "expected a Hello to open the handshake".into(),
            ));
        };
        if magic != MAGIC {
            return Err(FrameError::Malformed("not a nodetrace tracer".into()));
        }
        if version != PROTOCOL_VERSION {
            send(
                &writer,
                &NodeMessage::VersionMismatch {
                    node: PROTOCOL_VERSION,
                },
            )?;
            log(format_args!(
                "refused a tracer from {peer} speaking protocol {version}; this node speaks {PROTOCOL_VERSION}"
            ));
            return Ok(None);
        }
        let ours = handshake::challenge();
        send(
            &writer,
            &NodeMessage::Challenge {
                version: PROTOCOL_VERSION,
                challenge: ours,
            },
        )?;
        let TracerMessage::Answer { proof } =
            frame::read_frame_by(&mut reader, HANDSHAKE_MAX_FRAME, deadline)?
        else {
            return Err(FrameError::Malformed(
                "expected an Answer to the challenge".into(),
            ));
        };
        if !handshake::verify(&context.cookie, Side::Tracer, &theirs, &ours, &proof) {
            send(&writer, &NodeMessage::Denied)?;
            log(format_args!("refused a tracer from {peer}: wrong cookie"));
            return Ok(None);
        }
        send(
            &writer,
            &NodeMessage::Welcome {
                proof: handshake::prove(&context.cookie, Side::Node, &theirs, &ours),
                node: NodeInfo {
                    tracing_bridge: crate::bridge::is_installed(),
                    ..context.info.clone()
                },
            },
        )?;
        reader.get_ref().set_read_timeout(Some(TICK))?;
        Ok(Some(Connection {
            reader,
            writer,
            trace: None,
            runtime: OnceLock::new(),
            top: None,
            started_ms: context.info.started_ms,
        }))
    }

    fn serve(&mut self) -> Result<(), FrameError> {
        let mut heard = Instant::now();
        loop {
            match frame::read_frame::<TracerMessage>(&mut self.reader, MAX_FRAME) {
                Ok(message) => {
                    if let Some(reply) = self.handle(message)? {
                        send(&self.writer, &NodeMessage::Reply(reply))?;
                    }
                    // After the command: the time it took (a sample
                    // profile's start loads the binary's symbols) is not
                    // the tracer's silence.
                    heard = Instant::now();
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
            if self.trace.as_ref().is_some_and(Running::is_over) {
                self.end_trace();
            }
            if self.trace.is_some() && heard.elapsed() > SILENCE_LIMIT {
                // Ended with its true reason; its end and counts go out
                // before the connection closes, in case the tracer reads.
                let ms = SILENCE_LIMIT.as_millis() as u64;
                if let Some(running) = &self.trace {
                    running.end(EndReason::TracerSilent(ms));
                }
                self.end_trace();
                close_gracefully(&self.writer);
                return Err(FrameError::Silent { ms });
            }
        }
    }

    fn handle(&mut self, message: TracerMessage) -> Result<Option<Reply>, FrameError> {
        let command = match message {
            TracerMessage::Ping => return Ok(None),
            TracerMessage::Command(command) => command,
            TracerMessage::Hello { .. } | TracerMessage::Answer { .. } => {
                return Err(FrameError::Malformed(
                    "a handshake message after the handshake".into(),
                ));
            }
        };
        Ok(match command {
            Command::Callsites { pattern } => Some(Reply::Callsites(
                callsites()
                    .iter()
                    .filter(|cs| cs.kind() != CallsiteKind::Event)
                    .filter(|cs| pattern.as_ref().is_none_or(|p| cs.matches(p)))
                    .map(|cs| cs.info())
                    .collect(),
            )),
            Command::Processes => Some(Reply::Processes(observe::process_list())),
            Command::Top(spec) => {
                let started_ms = self.started_ms;
                let top = self.top.get_or_insert_with(observe::TopState::new);
                Some(Reply::Top(Box::new(top.frame(spec, started_ms))))
            }
            Command::Info => Some(Reply::Info(Box::new(observe::system_info(self.started_ms)))),
            Command::GetState { target } => {
                let runtime = self.runtime();
                Some(match runtime.block_on(sys::get_state(target.as_str())) {
                    Ok(state) => Reply::State(state),
                    Err(e) => Reply::Error(e.to_string()),
                })
            }
            Command::Statistics { target } => Some(match sys::statistics(target.as_str()) {
                Ok(s) => Reply::Statistics(StatisticsRow {
                    pid: s.pid,
                    started_ms: unix_ms(s.start_time),
                    messages_in: s.messages_in,
                    messages_out: s.messages_out,
                    handled: s.handled,
                    mailbox_len: s.mailbox_len,
                }),
                Err(e) => Reply::Error(e.to_string()),
            }),
            Command::StopClear => Some(Reply::Cleared {
                traces: clear_all() as u64,
            }),
            Command::Stop => {
                if let Some(running) = &self.trace {
                    running.stop(true);
                }
                None
            }
            Command::Profile(spec) => self.start_profile(spec)?,
            Command::Trace(spec) => self.start_trace(spec)?,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime for sys calls")
        })
    }

    /// Starts a trace. Its reply goes out before any of its events: the
    /// streamer starts while this holds the writer and writes the reply.
    fn start_trace(&mut self, spec: TraceSpec) -> Result<Option<Reply>, FrameError> {
        if self.busy() {
            let busy = "a trace or profile already runs on this connection: stop it first";
            return Ok(Some(Reply::Error(busy.into())));
        }
        let (session, matched, waiting) = match open_session(&spec) {
            Ok(opened) => opened,
            Err(message) => return Ok(Some(Reply::Error(message))),
        };
        let session = Arc::new(session);
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (announced, callsites) = Announced::start();
        let streamer = {
            let (session, writer) = (session.clone(), self.writer.clone());
            thread::Builder::new()
                .name("nodetrace-stream".into())
                .spawn(move || stream(&session, &writer, &announced))
        };
        let reply = match streamer {
            Ok(streamer) => {
                self.trace = Some(Running::Trace { session, streamer });
                Reply::TraceStarted {
                    matched,
                    waiting,
                    callsites,
                    limits: session_limits(&spec),
                }
            }
            Err(e) => Reply::Error(format!("the node could not start a trace thread: {e}")),
        };
        frame::write_frame(&mut *writer, &NodeMessage::Reply(reply))?;
        writer.flush()?;
        Ok(None)
    }

    /// Whether a trace or profile still runs; one that ended is cleared.
    fn busy(&mut self) -> bool {
        if self.trace.as_ref().is_some_and(Running::is_over) {
            self.end_trace();
        }
        self.trace.is_some()
    }

    /// Starts a profile. Its reply goes out before any snapshot.
    fn start_profile(&mut self, spec: ProfileSpec) -> Result<Option<Reply>, FrameError> {
        if self.busy() {
            let busy = "a trace or profile already runs on this connection: stop it first";
            return Ok(Some(Reply::Error(busy.into())));
        }
        let (profile, functions, duration_ms) = match start_measure(&spec) {
            Ok(started) => started,
            Err(message) => return Ok(Some(Reply::Error(message))),
        };
        let (announced, callsites) = Announced::start();
        let run = Arc::new(ProfileRun {
            profile: Mutex::new(Some(profile)),
            writer: self.writer.clone(),
            deadline: duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
            announced,
        });
        finish_at_exit(&run);
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let every = Duration::from_millis(spec.snapshot_ms);
        let reporter = {
            let run = run.clone();
            thread::Builder::new()
                .name("nodetrace-profile".into())
                .spawn(move || report(&run, every))
        };
        let reply = match reporter {
            Ok(reporter) => {
                self.trace = Some(Running::Profile { run, reporter });
                Reply::ProfileStarted {
                    functions,
                    callsites,
                }
            }
            Err(e) => {
                run.finish(false);
                Reply::Error(format!("the node could not start a profile thread: {e}"))
            }
        };
        frame::write_frame(&mut *writer, &NodeMessage::Reply(reply))?;
        writer.flush()?;
        Ok(None)
    }

    /// Ends this connection's trace or profile, if any, and waits for its
    /// thread. A profile ended this way sends no report: its tracer is gone.
    fn end_trace(&mut self) {
        if let Some(running) = self.trace.take() {
            running.stop(false);
            running.join();
        }
    }
}

/// Starts what a profile measures with: how many functions it covers
/// (none for a sample profile, which needs no callsite) and how long it
/// runs. A sample profile runs at most [`MAX_SAMPLE_MS`], the whole life of
/// a profiled command included. The error says what to do.
fn start_measure(spec: &ProfileSpec) -> Result<(Measure, u64, Option<u64>), String> {
    if spec.mode == ProfileMode::Sample {
        let duration_ms = spec.duration_ms.unwrap_or(MAX_SAMPLE_MS);
        if duration_ms > MAX_SAMPLE_MS {
            return Err(format!(
                "a sample profile lasts at most {} on this node, not {}: ask for less",
                nodetrace_protocol::display_ms(MAX_SAMPLE_MS),
                nodetrace_protocol::display_ms(duration_ms)
            ));
        }
        let split = if spec.per_process {
            Split::Processes
        } else {
            Split::Threads
        };
        let profile = SampleProfile::start(spec.frequency_hz, split).map_err(|e| e.to_string())?;
        return Ok((Measure::Sample(profile), 0, Some(duration_ms)));
    }
    let options = ProfileOptions {
        mode: spec.mode,
        histogram: spec.histogram,
        per_process: spec.per_process,
    };
    let profile = Profile::start_in(options, &spec.patterns, procs(&spec.processes))
        .map_err(|e| e.to_string())?;
    let functions = profile.functions() as u64;
    Ok((Measure::Calls(profile), functions, spec.duration_ms))
}

fn procs(processes: &Processes) -> Procs {
    match processes {
        Processes::All => Procs::All,
        Processes::New => Procs::New,
        Processes::Existing => Procs::Existing,
        Processes::Some(names) => {
            Procs::Some(names.iter().map(|n| ProcessRef::from(n.as_str())).collect())
        }
    }
}

/// The limits a trace runs under: its own, or the default if it has none.
fn session_limits(spec: &TraceSpec) -> Limits {
    if spec.limits.is_unlimited() {
        Limits::DEFAULT
    } else {
        spec.limits
    }
}

/// Starts the session a spec asks for: the session, how many functions its
/// patterns matched, and the patterns that wait for `tracing` spans not
/// reached yet. The error says what to do.
fn open_session(spec: &TraceSpec) -> Result<(Session, u64, Vec<String>), String> {
    if !(spec.calls || spec.send || spec.receive || !spec.sys.is_empty() || spec.log.is_some()) {
        return Err(
            "the trace asks for nothing: trace calls, messages, logs or a gen_server".into(),
        );
    }
    let returns = spec.returns || spec.patterns.iter().any(|p| p.return_trace());
    let options = SessionOptions {
        args: spec.args,
        // An event's text stays far below the frame limit, whatever asked.
        text_bound: if spec.text_bound == 0 {
            DEFAULT_TEXT_BOUND
        } else {
            (spec.text_bound as usize).min(MAX_TEXT_BOUND)
        },
        arg_match: spec.arg_match.clone().map(ArgMatch::Substring),
        returns,
        polls: spec.polls,
        limits: session_limits(spec),
        ..SessionOptions::default()
    };
    let session = Session::start(options).map_err(|e| e.to_string())?;
    let flags = ProcFlags {
        // A log event is selected by process as a call is.
        calls: spec.calls || spec.log.is_some(),
        send: spec.send,
        receive: spec.receive,
    };
    session
        .processes(procs(&spec.processes), flags)
        .map_err(|e| e.to_string())?;
    let mut matched = 0u64;
    let mut waiting = Vec::new();
    if spec.calls {
        let mut none = Vec::new();
        for pattern in &spec.patterns {
            let n = if spec.returns {
                session.trace_pattern(&pattern.clone().with_return_trace())
            } else {
                session.trace_pattern(pattern)
            };
            if n == 0 {
                none.push(pattern.to_string());
            }
            matched += n as u64;
        }
        if !none.is_empty() && !crate::bridge::is_installed() {
            return Err(format!(
                "{} matches no traceable function of this node: see `nodetrace ls`",
                none.join(", ")
            ));
        }
        waiting = none;
    }
    if let Some(log) = &spec.log {
        session.trace_log(log.pattern.as_ref(), log.level);
    }
    for target in &spec.sys {
        sys::trace(&session, target.as_str(), true).map_err(|e| e.to_string())?;
    }
    Ok((session, matched, waiting))
}

/// Streams a session's events to the tracer until the session ends, then
/// says why and what it counted.
fn stream(session: &Session, writer: &Writer, announced: &Announced) {
    mark_agent_thread();
    let batches = session.batches();
    let mut named = Named::default();
    let mut send_batch = |batch: Vec<Event>| {
        announced.announce(writer)?;
        named.announce(&batch, writer)?;
        for part in split_by_bytes(batch, BATCH_BYTES) {
            send(writer, &NodeMessage::Events(part))?;
        }
        Ok::<(), FrameError>(())
    };
    loop {
        match batches.recv_timeout(TICK) {
            Ok(batch) => {
                if send_batch(batch).is_err() {
                    session.stop();
                    return;
                }
            }
            Err(RecvError::Timeout) => {}
            Err(RecvError::Ended) => return,
        }
        if let Some(reason) = session.end_reason() {
            session.flush();
            while let Some(batch) = batches.try_recv() {
                if send_batch(batch).is_err() {
                    return;
                }
            }
            let end = TraceEnd {
                reason,
                counts: session.counts(),
            };
            let _ = send(writer, &NodeMessage::Ended(end));
            return;
        }
    }
}

/// The largest `--text-bound` a trace gets: 1 MiB per argument list,
/// value or message.
const MAX_TEXT_BOUND: usize = 1 << 20;

/// Text bytes per `Events` frame at most (an event's text is bounded by
/// its trace's `--text-bound`; a batch of many is split to stay far below
/// the frame limit).
const BATCH_BYTES: usize = 4 << 20;

/// `batch` in parts whose events' texts add up to at most `bytes` each
/// (an event larger than that alone is a part of its own).
fn split_by_bytes(batch: Vec<Event>, bytes: usize) -> Vec<Vec<Event>> {
    let size = |e: &Event| {
        64 + e.text.as_ref().map_or(0, String::len) + e.extra.as_ref().map_or(0, String::len)
    };
    if batch.iter().map(size).sum::<usize>() <= bytes {
        return vec![batch];
    }
    let mut parts = vec![Vec::new()];
    let mut used = 0;
    for event in batch {
        let n = size(&event);
        if used + n > bytes && !parts.last().is_none_or(Vec::is_empty) {
            parts.push(Vec::new());
            used = 0;
        }
        used += n;
        parts.last_mut().expect("a part").push(event);
    }
    parts
}

pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use nodetrace_protocol::{Event, EventKind, Pid};

    use super::split_by_bytes;

    fn event(text: usize) -> Event {
        Event {
            kind: EventKind::Call,
            pid: Pid::process(1),
            peer: None,
            callsite: Some(0),
            timestamp_ns: 0,
            duration_ns: None,
            busy_ns: None,
            text: Some("x".repeat(text)),
            extra: None,
        }
    }

    #[test]
    fn a_batch_of_large_events_is_split_to_stay_under_the_bound() {
        let batch: Vec<Event> = (0..10).map(|_| event(1000)).collect();
        assert_eq!(split_by_bytes(batch.clone(), 1 << 20).len(), 1);
        let parts = split_by_bytes(batch, 2500);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 2, 2, 2]
        );
        let huge = split_by_bytes(vec![event(10), event(5000), event(10)], 1000);
        assert_eq!(huge.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
    }
}
