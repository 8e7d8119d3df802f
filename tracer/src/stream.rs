//! Running a trace on one or more nodes: start it, keep each connection
//! alive, merge the events as they come, stop on request, and count.
//!
//! Each node gets two threads: a reader, which forwards event batches and
//! the trace's end to the caller's thread, and a pinger, which sends `Ping`
//! every [`PING_EVERY`] (the node ends the trace of a tracer silent for 800 ms)
//! and `Stop` when asked. The caller's thread renders; a full output
//! (a slow terminal) slows the readers, the socket fills, and the node counts
//! what it cannot deliver as lost instead of waiting.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nodetrace_protocol::frame::{self, FrameError};
use nodetrace_protocol::{
    CallsiteInfo, Command, Event, NodeMessage, Pattern, Pid, Processes, Reply, TraceEnd, TraceSpec,
    TracerMessage,
};

use crate::conn::message_name;
use crate::export::otlp::{OtlpConfig, OtlpCounts, OtlpExporter};
use crate::export::{EventSink, Timeline, timeline_sink};
use crate::render::{NodeView, Renderer};
use crate::spec::describe_limits;
use crate::{Connection, Credentials, Format, Target, TracerError};

/// How often the pinger says the tracer is still there (the node ends the
/// trace of a tracer it has not heard from in 800 ms).
pub const PING_EVERY: Duration = Duration::from_millis(250);

/// How long a node may take to confirm a Stop before the tracer gives up
/// (and closes the connection, which clears the trace too).
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long past its time limit a trace may run before the tracer gives up
/// on the node.
pub const DURATION_GRACE: Duration = Duration::from_secs(10);

const READ_POLL: Duration = Duration::from_millis(200);
const BATCHES_IN_FLIGHT: usize = 64;

/// Asks a running trace to stop, e.g. from a Ctrl-C handler.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Stops the trace: each node is sent Stop and answers with the end.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`stop`](StopSignal::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How one node's trace ended.
#[derive(Debug)]
pub struct NodeOutcome {
    /// The node.
    pub node: String,
    /// Its end as the node reported it, or why it could not report one.
    pub result: Result<TraceEnd, TracerError>,
    /// Lines written for this node.
    pub shown: u64,
}

/// How a trace went, node by node.
#[derive(Debug)]
pub struct TraceReport {
    /// One per node, in the order given.
    pub outcomes: Vec<NodeOutcome>,
    /// The output was closed (`| head`); the trace was stopped for it.
    pub output_closed: bool,
    /// What became of the spans, when they were exported over OTLP.
    pub otlp: Option<OtlpCounts>,
}

impl TraceReport {
    /// Whether every node reported its end.
    pub fn is_ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.result.is_ok())
    }

    /// The errors, node by node.
    pub fn errors(&self) -> impl Iterator<Item = &TracerError> {
        self.outcomes.iter().filter_map(|o| o.result.as_ref().err())
    }
}

/// A trace to run.
#[derive(Debug, Clone)]
pub struct TraceRun {
    /// What to trace; the same on every node.
    pub spec: TraceSpec,
    /// How to print events (when no `timeline` is written).
    pub format: Format,
    /// Write the events as one timeline file in this format instead of
    /// lines.
    pub timeline: Option<Timeline>,
    /// Also export the calls as OpenTelemetry spans there.
    pub otlp: Option<OtlpConfig>,
    /// The limits are the default ones: say so when the trace starts.
    pub default_limits: bool,
    /// What the trace is, for the line that says it started
    /// (`calls of todo::server`).
    pub what: String,
    /// The patterns as typed (`Todo.Servr`), one per pattern of the spec,
    /// for suggestions when they match nothing; empty: the spec's patterns.
    pub typed_patterns: Vec<String>,
}

enum Msg {
    Events(usize, Vec<Event>),
    Callsites(usize, Vec<CallsiteInfo>),
    Names(usize, Vec<(Pid, String)>),
    Ended(usize, TraceEnd),
    Failed(usize, TracerError),
    Note(usize, String),
}

enum Ctl {
    Stop,
}

struct Node {
    view: NodeView,
    ctl: Option<mpsc::Sender<Ctl>>,
    result: Option<Result<TraceEnd, TracerError>>,
    shown: u64,
    threads: Vec<JoinHandle<()>>,
}

/// Runs `run` on every target at once: events go to `out`, one a line;
/// progress and the summary line of each node go to `log`. Returns when
/// every node's trace ended (its limit, `stop`, `stop-clear`, or a lost
/// connection).
///
/// Fails before any event if a node cannot be reached or refuses the trace;
/// a node that fails later is reported in its [`NodeOutcome`].
pub fn run(
    targets: &[Target],
    credentials: &Credentials,
    run: &TraceRun,
    out: &mut dyn Write,
    log: &mut dyn Write,
    stop: &StopSignal,
) -> Result<TraceReport, TracerError> {
    let mut conns = Vec::new();
    for target in targets {
        conns.push(Connection::open(target, credentials)?);
    }
    let mut named = run.spec.sys.clone();
    if let Processes::Some(names) = &run.spec.processes {
        named.extend(names.iter().cloned());
    }
    for conn in &mut conns {
        crate::commands::check_process_names(conn, &named)?;
        if run.spec.calls {
            check_patterns(conn, run)?;
        }
        if (run.spec.send || run.spec.receive)
            && !run.spec.calls
            && let Some(hint) = crate::commands::mailbox_hint(conn, &run.spec.processes)?
        {
            writeln!(log, "{hint}").map_err(TracerError::Output)?;
        }
    }
    let mut started = Vec::new();
    for conn in &mut conns {
        started.push(start(conn, run)?);
    }
    for (conn, s) in conns.iter().zip(&started) {
        let matched = match (run.spec.calls, &s.waiting[..]) {
            (false, _) => String::new(),
            (true, []) => format!("{} matched; ", plural(s.matched, "function")),
            (true, waiting) => format!(
                "{} matched, {} {} for `tracing` spans not reached yet{}; ",
                plural(s.matched, "function"),
                waiting.join(", "),
                if waiting.len() == 1 { "waits" } else { "wait" },
                s.hint,
            ),
        };
        let mut line = format!(
            "tracing {} on {}: {matched}limits: {}",
            run.what,
            conn.name(),
            describe_limits(&s.limits)
        );
        if run.default_limits {
            line.push_str(" (the default; set --max, --rate or --duration)");
        }
        if s.limits.max_events.is_none() && s.limits.duration_ms.is_none() {
            line.push_str("; Ctrl-C stops it");
        }
        let _ = writeln!(log, "{line}");
    }
    let _ = log.flush();

    let deadline = started
        .iter()
        .filter_map(|s| s.limits.duration_ms)
        .max()
        .filter(|_| started.iter().all(|s| s.limits.duration_ms.is_some()))
        .map(|ms| Instant::now() + Duration::from_millis(ms) + DURATION_GRACE);
    let mut sink: Box<dyn EventSink + Send> = match run.timeline {
        Some(timeline) => timeline_sink(timeline),
        None => Box::new(Renderer::new(run.format, conns.len() > 1)),
    };
    let mut otlp = match &run.otlp {
        Some(config) => Some(OtlpExporter::start(config.clone()).map_err(TracerError::Output)?),
        None => None,
    };
    let (tx, rx) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
    let abandon = Arc::new(AtomicBool::new(false));
    let mut nodes = Vec::new();
    for (index, (conn, s)) in conns.into_iter().zip(started).enumerate() {
        nodes.push(spawn_node(index, conn, s, tx.clone(), abandon.clone())?);
    }
    drop(tx);

    let mut output_closed = false;
    let looped = merge(
        &mut nodes,
        &rx,
        &mut *sink,
        otlp.as_mut(),
        out,
        log,
        stop,
        deadline,
        &mut output_closed,
    );
    abandon.store(true, Ordering::SeqCst);
    drop(rx);
    for node in &mut nodes {
        node.ctl = None;
    }
    for node in &mut nodes {
        for thread in node.threads.drain(..) {
            let _ = thread.join();
        }
    }
    looped?;
    if !output_closed {
        match sink.finish(out).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => output_closed = true,
            Err(e) => return Err(TracerError::Output(e)),
        }
    }
    let lines = run.timeline.is_none();
    let outcomes = nodes
        .into_iter()
        .map(|node| {
            let result = node.result.unwrap_or_else(|| {
                Err(TracerError::Timeout {
                    node: node.view.name().to_owned(),
                    what: "the end of the trace".to_owned(),
                    secs: STOP_GRACE.as_secs(),
                })
            });
            if let Ok(end) = &result {
                let _ = writeln!(log, "{}", crate::render::summary(node.view.name(), end));
                if lines && run.format == Format::Json && !output_closed {
                    let _ = crate::render::json_end(out, node.view.name(), end, node.shown)
                        .and_then(|()| out.flush());
                }
            }
            NodeOutcome {
                node: node.view.name().to_owned(),
                result,
                shown: node.shown,
            }
        })
        .collect();
    let otlp = otlp.map(|mut exporter| {
        let counts = exporter.finish();
        let last_error = exporter.last_error();
        let _ = writeln!(
            log,
            "{}",
            crate::export::otlp::summary(exporter.endpoint(), &counts, last_error.as_deref())
        );
        if lines && run.format == Format::Json && !output_closed {
            let _ = crate::render::json_otlp(out, exporter.endpoint(), &counts)
                .and_then(|()| out.flush());
        }
        counts
    });
    let _ = log.flush();
    Ok(TraceReport {
        outcomes,
        output_closed,
        otlp,
    })
}

/// The pattern of `run` whose canonical form is `canonical`, as it was
/// typed (the node reports patterns canonically).
fn typed_as(run: &TraceRun, canonical: &str) -> String {
    run.spec
        .patterns
        .iter()
        .zip(&run.typed_patterns)
        .find(|(p, _)| {
            p.to_string() == canonical
                || Pattern::clone(p).with_return_trace().to_string() == canonical
        })
        .map_or_else(|| canonical.to_owned(), |(_, typed)| typed.clone())
}

/// Refuses the patterns that match none of the node's functions, with the
/// nearest patterns that would.
fn check_patterns(conn: &mut Connection, run: &TraceRun) -> Result<(), TracerError> {
    let callsites = crate::commands::callsites(conn, None)?;
    let typed: Vec<String> = if run.typed_patterns.len() == run.spec.patterns.len() {
        run.typed_patterns.clone()
    } else {
        run.spec.patterns.iter().map(ToString::to_string).collect()
    };
    let unmatched: Vec<String> = run
        .spec
        .patterns
        .iter()
        .zip(typed)
        .filter(|(p, _)| {
            !callsites
                .iter()
                .any(|c| p.matches(&c.module, &c.function, c.arity))
        })
        .map(|(_, t)| t)
        .collect();
    // A node with the `tracing` bridge keeps them: they wait for spans.
    if unmatched.is_empty() || conn.node().tracing_bridge {
        return Ok(());
    }
    Err(TracerError::NoMatch(format!(
        "no traced function on {} matches {}{}",
        conn.name(),
        unmatched.join(", "),
        crate::suggest::did_you_mean(&unmatched, &callsites)
    )))
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

struct Started {
    matched: u64,
    waiting: Vec<String>,
    /// For waiting patterns: the nearest names the node knows.
    hint: String,
    limits: nodetrace_protocol::Limits,
    view: NodeView,
}

fn start(conn: &mut Connection, run: &TraceRun) -> Result<Started, TracerError> {
    let spec = &run.spec;
    let mut names = Vec::new();
    let mut registered = Vec::new();
    let exports = run.timeline.is_some() || run.otlp.is_some();
    if (!spec.sys.is_empty() || exports)
        && let Ok(Reply::Processes(list)) = conn.request(Command::Processes)
    {
        for row in list.rows {
            if let Some(name) = row.name {
                if spec.sys.contains(&name) {
                    names.push((row.pid, name.clone()));
                }
                registered.push((row.pid, name));
            }
        }
    }
    match conn.request(Command::Trace(spec.clone()))? {
        Reply::TraceStarted {
            matched,
            waiting,
            callsites,
            limits,
        } => {
            // The waiting patterns as they were typed, with the nearest
            // names the node knows now.
            let waiting: Vec<String> = waiting.iter().map(|w| typed_as(run, w)).collect();
            let hint = if waiting.is_empty() {
                String::new()
            } else {
                crate::suggest::did_you_mean(&waiting, &callsites)
            };
            let mut view = NodeView::new(conn.name(), callsites);
            for (pid, name) in names {
                view.name_process(pid, name);
            }
            if exports {
                view.set_os_pid(conn.node().os_pid);
                for (pid, name) in registered {
                    view.register(pid, name);
                }
            }
            if let [only] = &spec.sys[..]
                && only.parse::<Pid>().is_err()
            {
                view.set_sys_name(Some(only.clone()));
            }
            Ok(Started {
                matched,
                waiting,
                hint,
                limits,
                view,
            })
        }
        other => Err(TracerError::Unexpected {
            node: conn.name().to_owned(),
            what: "Trace".to_owned(),
            got: message_name(&NodeMessage::Reply(other)).to_owned(),
        }),
    }
}

fn spawn_node(
    index: usize,
    conn: Connection,
    started: Started,
    tx: SyncSender<Msg>,
    abandon: Arc<AtomicBool>,
) -> Result<Node, TracerError> {
    let name = conn.name().to_owned();
    let lost = |cause: io::Error| TracerError::Lost {
        node: name.clone(),
        cause: FrameError::Io(cause),
    };
    let writer = conn.try_clone_stream().map_err(lost)?;
    conn.set_read_timeout(Some(READ_POLL)).map_err(lost)?;
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let pinger = thread::Builder::new()
        .name(format!("ping {name}"))
        .spawn(move || ping(writer, ctl_rx))
        .map_err(lost)?;
    let reader = thread::Builder::new()
        .name(format!("read {name}"))
        .spawn(move || read(index, conn, tx, abandon))
        .map_err(lost)?;
    Ok(Node {
        view: started.view,
        ctl: Some(ctl_tx),
        result: None,
        shown: 0,
        threads: vec![reader, pinger],
    })
}

fn ping(mut stream: TcpStream, ctl: mpsc::Receiver<Ctl>) {
    loop {
        let message = match ctl.recv_timeout(PING_EVERY) {
            Ok(Ctl::Stop) => TracerMessage::Command(Command::Stop),
            Err(RecvTimeoutError::Timeout) => TracerMessage::Ping,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if frame::write_frame(&mut stream, &message).is_err() {
            return;
        }
    }
}

fn read(index: usize, mut conn: Connection, tx: SyncSender<Msg>, abandon: Arc<AtomicBool>) {
    let name = conn.name().to_owned();
    loop {
        if abandon.load(Ordering::SeqCst) {
            return;
        }
        let message = match conn.recv_frame() {
            Ok(message) => message,
            Err(e) if e.is_timeout() => continue,
            Err(cause) => {
                let _ = tx.send(Msg::Failed(
                    index,
                    TracerError::Lost {
                        node: name.clone(),
                        cause,
                    },
                ));
                return;
            }
        };
        let msg = match message {
            NodeMessage::Events(batch) => Msg::Events(index, batch),
            NodeMessage::Callsites(news) => Msg::Callsites(index, news),
            NodeMessage::Names(names) => Msg::Names(index, names),
            NodeMessage::Ended(end) => {
                let _ = tx.send(Msg::Ended(index, end));
                return;
            }
            // A Stop that crossed the trace's own end.
            NodeMessage::Reply(Reply::Error(text)) => Msg::Note(index, text),
            other => Msg::Note(
                index,
                format!("unexpected {} during the trace", message_name(&other)),
            ),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn merge(
    nodes: &mut [Node],
    rx: &Receiver<Msg>,
    sink: &mut dyn EventSink,
    mut otlp: Option<&mut OtlpExporter>,
    out: &mut dyn Write,
    log: &mut dyn Write,
    stop: &StopSignal,
    deadline: Option<Instant>,
    output_closed: &mut bool,
) -> Result<(), TracerError> {
    let mut stop_sent: Option<Instant> = None;
    loop {
        if let Some(otlp) = otlp.as_deref_mut() {
            otlp.tick();
        }
        if nodes.iter().all(|n| n.result.is_some()) {
            return Ok(());
        }
        if stop_sent.is_none() && (stop.is_stopped() || *output_closed) {
            for node in nodes.iter().filter(|n| n.result.is_none()) {
                if let Some(ctl) = &node.ctl {
                    let _ = ctl.send(Ctl::Stop);
                }
            }
            stop_sent = Some(Instant::now());
        }
        let now = Instant::now();
        if stop_sent.is_some_and(|at| now.duration_since(at) > STOP_GRACE) {
            give_up(nodes, "the end of the trace after Stop", STOP_GRACE);
            return Ok(());
        }
        if deadline.is_some_and(|d| now > d) {
            give_up(
                nodes,
                "the end of the trace at its time limit",
                DURATION_GRACE,
            );
            return Ok(());
        }
        let msg = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                give_up(nodes, "the end of the trace", STOP_GRACE);
                return Ok(());
            }
        };
        match msg {
            Msg::Events(i, batch) => {
                let node = &mut nodes[i];
                if let Some(otlp) = otlp.as_deref_mut() {
                    for event in &batch {
                        otlp.event(i, &node.view, event);
                    }
                }
                if *output_closed {
                    continue;
                }
                let mut written = Ok(());
                for event in &batch {
                    written = sink.event(out, i, &node.view, event);
                    if written.is_err() {
                        break;
                    }
                    node.shown += 1;
                }
                if written.is_ok() {
                    written = out.flush();
                }
                match written {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => *output_closed = true,
                    Err(e) => return Err(TracerError::Output(e)),
                }
            }
            Msg::Callsites(i, news) => nodes[i].view.add_callsites(news),
            Msg::Names(i, names) => {
                for (pid, name) in names {
                    nodes[i].view.register(pid, name);
                }
            }
            Msg::Ended(i, end) => {
                nodes[i].result = Some(Ok(end));
                nodes[i].ctl = None;
            }
            Msg::Failed(i, err) => {
                nodes[i].result = Some(Err(err));
                nodes[i].ctl = None;
            }
            Msg::Note(i, text) => {
                let _ = writeln!(log, "{}: {text}", nodes[i].view.name());
            }
        }
    }
}

fn give_up(nodes: &mut [Node], what: &str, waited: Duration) {
    for node in nodes.iter_mut().filter(|n| n.result.is_none()) {
        node.result = Some(Err(TracerError::Timeout {
            node: node.view.name().to_owned(),
            what: what.to_owned(),
            secs: waited.as_secs(),
        }));
        node.ctl = None;
    }
}
