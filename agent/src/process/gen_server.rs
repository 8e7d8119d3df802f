//! gen_server: a process with a mailbox, on a tokio task.
//!
//! A [`GenServer`] holds its state and handles one message at a time, as
//! Erlang's does: [`call`](GenServerRef::call) waits for a reply (5 s by
//! default), [`cast`](GenServerRef::cast) does not. Every server gets a pid
//! and a place in the registry, so it can be named, listed and traced.
//!
//! Tracing costs one relaxed load per message while off: the sessions that
//! trace messages (`dbg:p(Pid, [m])`) and the server's `sys` trace bits. Only
//! when one is on is a message formatted (bounded) and recorded.
//!
//! ```
//! use nodetrace_agent::gen_server::{self, GenServer};
//! use nodetrace_agent::Pid;
//!
//! #[derive(Debug, Default)]
//! struct Counter(u64);
//!
//! impl GenServer for Counter {
//!     type Call = ();
//!     type Cast = u64;
//!     type Info = ();
//!     type Reply = u64;
//!
//!     async fn handle_call(&mut self, _: (), _from: Pid) -> u64 {
//!         self.0
//!     }
//!
//!     async fn handle_cast(&mut self, n: u64) {
//!         self.0 += n;
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let counter = gen_server::start(Counter::default()).await.unwrap();
//! counter.cast(2).unwrap();
//! assert_eq!(counter.call(()).await.unwrap(), 2);
//! counter.stop().await.unwrap();
//! # });
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use nodetrace_protocol::{EventKind, Pid};
use tokio::sync::{mpsc, oneshot};

use crate::process::message::{bounded, text_bound, trace_receive, trace_send};
use crate::process::{
    RegistryError, as_server, marker, next_pid, registry, self_pid, with_current_server,
};
use crate::record::call::record_event;
use crate::record::fmt::AsPid;
use crate::session::admitted;

/// How long [`GenServerRef::call`] waits for a reply.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A process with state, handling one message at a time.
///
/// Messages, replies and the state itself are `Debug`, so that a tracer can
/// show them; they are formatted only while something traces the server.
pub trait GenServer: Debug + Send + Sized + 'static {
    /// Requests that want a reply.
    type Call: Debug + Send + 'static;
    /// Requests that do not.
    type Cast: Debug + Send + 'static;
    /// Plain messages (`handle_info`).
    type Info: Debug + Send + 'static;
    /// Replies to calls.
    type Reply: Debug + Send + 'static;

    /// Runs in the new process before it takes messages; an error stops it
    /// and is returned by [`start`].
    fn init(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Handles a call from process `from` and returns the reply.
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: Pid,
    ) -> impl Future<Output = Self::Reply> + Send;

    /// Handles a cast. The default ignores it.
    fn handle_cast(&mut self, request: Self::Cast) -> impl Future<Output = ()> + Send {
        drop(request);
        async {}
    }

    /// Handles a plain message. The default ignores it.
    fn handle_info(&mut self, message: Self::Info) -> impl Future<Output = ()> + Send {
        drop(message);
        async {}
    }

    /// Runs when the server stops normally.
    fn terminate(&mut self, reason: StopReason) {
        let _ = reason;
    }
}

/// Why a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// [`GenServerRef::stop`] was called.
    Normal,
    /// Every handle to it was dropped.
    Shutdown,
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// There is no tokio runtime to run it on.
    #[error("a gen_server runs on a tokio runtime: start it from within one")]
    NoRuntime,
    /// The name is taken.
    #[error(transparent)]
    AlreadyStarted(#[from] RegistryError),
    /// `init` returned an error or panicked.
    #[error("init failed: {0}")]
    Init(String),
}

/// Why a call or cast failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The server is not running.
    #[error("no process {0}: it has stopped")]
    NoProc(Pid),
    /// The server stopped (or panicked) before replying.
    #[error("{0} exited before replying")]
    Exited(Pid),
    /// No reply within the timeout.
    #[error("{pid} did not reply within {timeout:?}")]
    Timeout {
        /// The server.
        pid: Pid,
        /// How long the caller waited.
        timeout: Duration,
    },
}

pub(crate) enum SystemMessage {
    GetState(oneshot::Sender<String>),
    Stop(oneshot::Sender<()>),
}

enum Message<S: GenServer> {
    Call {
        request: S::Call,
        from: Pid,
        reply: oneshot::Sender<S::Reply>,
    },
    Cast {
        request: S::Cast,
        from: Pid,
    },
    Info {
        message: S::Info,
        from: Pid,
    },
    System(SystemMessage),
}

/// A server's counters, as `sys:statistics` reports them.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    messages_in: AtomicU64,
    taken: AtomicU64,
    messages_out: AtomicU64,
    handled: AtomicU64,
}

impl Stats {
    pub(crate) fn mailbox_len(&self) -> u64 {
        let taken = self.taken.load(Ordering::Relaxed);
        self.messages_in
            .load(Ordering::Relaxed)
            .saturating_sub(taken)
    }

    pub(crate) fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    pub(crate) fn messages_in(&self) -> u64 {
        self.messages_in.load(Ordering::Relaxed)
    }

    pub(crate) fn messages_out(&self) -> u64 {
        self.messages_out.load(Ordering::Relaxed)
    }
}

type Control = Box<dyn Fn(SystemMessage) -> bool + Send + Sync>;

/// What the registry, `sys` and `ps` know of a server, whatever its type.
pub(crate) struct ServerShared {
    pub(crate) pid: Pid,
    pub(crate) started: SystemTime,
    /// Sessions that `sys` trace this server.
    pub(crate) sys_mask: AtomicU32,
    pub(crate) stats: Stats,
    control: Control,
}

impl ServerShared {
    /// Sends a system message through the mailbox; false if the server is gone.
    pub(crate) fn system(&self, message: SystemMessage) -> bool {
        (self.control)(message)
    }
}

/// A handle to a running server: its pid and its mailbox.
pub struct GenServerRef<S: GenServer> {
    sender: mpsc::UnboundedSender<Message<S>>,
    shared: Arc<ServerShared>,
}

impl<S: GenServer> Clone for GenServerRef<S> {
    fn clone(&self) -> Self {
        GenServerRef {
            sender: self.sender.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: GenServer> Debug for GenServerRef<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.shared.pid)
    }
}

impl<S: GenServer> AsPid for GenServerRef<S> {
    fn as_pid(&self) -> Pid {
        self.shared.pid
    }
}

impl<S: GenServer> GenServerRef<S> {
    /// The server's pid.
    pub fn pid(&self) -> Pid {
        self.shared.pid
    }

    /// Sends `request` and waits up to [`DEFAULT_CALL_TIMEOUT`] for the reply.
    pub async fn call(&self, request: S::Call) -> Result<S::Reply, CallError> {
        self.call_timeout(request, DEFAULT_CALL_TIMEOUT).await
    }

    /// Sends `request` and waits up to `timeout` for the reply.
    pub async fn call_timeout(
        &self,
        request: S::Call,
        timeout: Duration,
    ) -> Result<S::Reply, CallError> {
        let pid = self.shared.pid;
        let from = self_pid();
        let (reply, answer) = oneshot::channel();
        trace_send(from, Some(pid), &request);
        self.send(Message::Call {
            request,
            from,
            reply,
        })?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(reply)) => {
                trace_receive(from, Some(pid), &reply);
                Ok(reply)
            }
            Ok(Err(_)) => Err(CallError::Exited(pid)),
            Err(_) => Err(CallError::Timeout { pid, timeout }),
        }
    }

    /// Sends `request` without waiting.
    pub fn cast(&self, request: S::Cast) -> Result<(), CallError> {
        let from = self_pid();
        trace_send(from, Some(self.shared.pid), &request);
        self.send(Message::Cast { request, from })
    }

    /// Sends a plain message, handled by `handle_info`.
    pub fn send_info(&self, message: S::Info) -> Result<(), CallError> {
        let from = self_pid();
        trace_send(from, Some(self.shared.pid), &message);
        self.send(Message::Info { message, from })
    }

    /// Stops the server after the messages before this one, runs its
    /// `terminate`, and waits for it.
    pub async fn stop(&self) -> Result<(), CallError> {
        let pid = self.shared.pid;
        let (done, stopped) = oneshot::channel();
        if !self.shared.system(SystemMessage::Stop(done)) {
            return Err(CallError::NoProc(pid));
        }
        stopped.await.map_err(|_| CallError::Exited(pid))
    }

    fn send(&self, message: Message<S>) -> Result<(), CallError> {
        let pid = self.shared.pid;
        self.shared
            .stats
            .messages_in
            .fetch_add(1, Ordering::Relaxed);
        with_current_server(|s| s.map(|s| s.stats.messages_out.fetch_add(1, Ordering::Relaxed)));
        self.sender.send(message).map_err(|_| {
            self.shared
                .stats
                .messages_in
                .fetch_sub(1, Ordering::Relaxed);
            CallError::NoProc(pid)
        })
    }
}

/// Starts `server` as a new process and waits for its `init`.
pub async fn start<S: GenServer>(server: S) -> Result<GenServerRef<S>, StartError> {
    start_inner(server, None).await
}

/// Starts `server` registered as `name`; fails if the name is taken.
pub async fn start_named<S: GenServer>(
    name: &str,
    server: S,
) -> Result<GenServerRef<S>, StartError> {
    start_inner(server, Some(name)).await
}

async fn start_inner<S: GenServer>(
    mut server: S,
    name: Option<&str>,
) -> Result<GenServerRef<S>, StartError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
    crate::process::remember_runtime();
    let pid = next_pid();
    let (sender, mailbox) = mpsc::unbounded_channel::<Message<S>>();
    let weak = sender.downgrade();
    let shared = Arc::new(ServerShared {
        pid,
        started: SystemTime::now(),
        sys_mask: AtomicU32::new(0),
        stats: Stats::default(),
        control: Box::new(move |m| {
            weak.upgrade()
                .is_some_and(|s| s.send(Message::System(m)).is_ok())
        }),
    });
    {
        let mut reg = registry();
        if let Some(name) = name {
            reg.register(name, pid)?;
        }
        reg.add_server(shared.clone());
    }
    let (ready, init_result) = oneshot::channel();
    let scope = shared.clone();
    runtime.spawn(InProcess {
        server: scope,
        fut: async move {
            let _deregister = Deregister(pid);
            let init = server.init().await;
            let ok = init.is_ok();
            let _ = ready.send(init);
            if ok {
                let reason = serve(&mut server, mailbox, &shared).await;
                server.terminate(reason.0);
                drop(_deregister);
                if let Some(done) = reason.1 {
                    let _ = done.send(());
                }
            }
        },
    });
    match init_result.await {
        Ok(Ok(())) => Ok(GenServerRef {
            sender,
            shared: registry().server(&pid.into())?,
        }),
        Ok(Err(reason)) => Err(StartError::Init(reason)),
        Err(_) => Err(StartError::Init("init panicked".to_owned())),
    }
}

/// Removes a server from the registry when its task ends, however it ends.
struct Deregister(Pid);

impl Drop for Deregister {
    fn drop(&mut self) {
        registry().remove(self.0);
    }
}

async fn serve<S: GenServer>(
    server: &mut S,
    mut mailbox: mpsc::UnboundedReceiver<Message<S>>,
    shared: &ServerShared,
) -> (StopReason, Option<oneshot::Sender<()>>) {
    let me = shared.pid;
    while let Some(message) = mailbox.recv().await {
        shared.stats.taken.fetch_add(1, Ordering::Relaxed);
        match message {
            Message::Call {
                request,
                from,
                reply,
            } => {
                trace_receive(me, Some(from), &request);
                sys_event(shared, EventKind::GotCall, Some(from), &request, None::<&S>);
                let answer = server.handle_call(request, from).await;
                sys_event(shared, EventKind::Sent, Some(from), &answer, Some(&*server));
                trace_send(me, Some(from), &answer);
                shared.stats.messages_out.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(answer);
            }
            Message::Cast { request, from } => {
                trace_receive(me, Some(from), &request);
                sys_event(shared, EventKind::GotCast, None, &request, None::<&S>);
                server.handle_cast(request).await;
                sys_state(shared, &*server);
            }
            Message::Info { message, from } => {
                trace_receive(me, Some(from), &message);
                sys_event(shared, EventKind::GotInfo, Some(from), &message, None::<&S>);
                server.handle_info(message).await;
                sys_state(shared, &*server);
            }
            Message::System(SystemMessage::GetState(answer)) => {
                let _ = answer.send(bounded_debug(&*server, STATE_BOUND));
            }
            Message::System(SystemMessage::Stop(done)) => {
                shared.stats.handled.fetch_add(1, Ordering::Relaxed);
                return (StopReason::Normal, Some(done));
            }
        }
        shared.stats.handled.fetch_add(1, Ordering::Relaxed);
    }
    (StopReason::Shutdown, None)
}

/// The most of a state `sys::get_state` answers with, in bytes: far below
/// a frame's limit, so a huge state is cut, never refused on the way.
pub const STATE_BOUND: usize = 1 << 20;

/// `value`'s `Debug`, at most `bound` bytes of it, then how much was cut.
fn bounded_debug(value: &impl std::fmt::Debug, bound: usize) -> String {
    struct Keep {
        text: String,
        bound: usize,
        total: usize,
    }
    impl std::fmt::Write for Keep {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.total += s.len();
            let room = self.bound.saturating_sub(self.text.len());
            let mut end = room.min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            Ok(())
        }
    }
    let mut keep = Keep {
        text: String::new(),
        bound,
        total: 0,
    };
    let _ = std::fmt::write(&mut keep, format_args!("{value:?}"));
    if keep.total > keep.text.len() {
        let cut = keep.total - keep.text.len();
        keep.text
            .push_str(&format!("… ({cut} of {} bytes cut)", keep.total));
    }
    keep.text
}

pin_project_lite::pin_project! {
    /// A server's task: every poll runs as the server's process.
    struct InProcess<F> {
        server: Arc<ServerShared>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for InProcess<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if crate::process::task::marking() {
            let pid = this.server.pid;
            return marker::under(pid, || as_server(this.server, || this.fut.poll(cx)));
        }
        as_server(this.server, || this.fut.poll(cx))
    }
}

#[inline]
fn sys_event<S: Debug>(
    shared: &ServerShared,
    kind: EventKind,
    peer: Option<Pid>,
    message: &dyn Debug,
    state: Option<&S>,
) {
    let mask = shared.sys_mask.load(Ordering::Relaxed);
    if mask != 0 {
        sys_event_on(shared, kind, peer, message, state, mask);
    }
}

#[cold]
fn sys_event_on<S: Debug>(
    shared: &ServerShared,
    kind: EventKind,
    peer: Option<Pid>,
    message: &dyn Debug,
    state: Option<&S>,
    mask: u32,
) {
    let mask = admitted(mask);
    if mask != 0 {
        let bound = text_bound(mask);
        let text = bounded(shared.pid, bound, message);
        let extra = state.map(|s| bounded(shared.pid, bound, s));
        record_event(kind, mask, shared.pid, peer, Some(text), extra);
    }
}

#[inline]
fn sys_state<S: Debug>(shared: &ServerShared, state: &S) {
    let mask = shared.sys_mask.load(Ordering::Relaxed);
    let mask = if mask == 0 { 0 } else { admitted(mask) };
    if mask != 0 {
        let extra = bounded(shared.pid, text_bound(mask), state);
        record_event(
            EventKind::NewState,
            mask,
            shared.pid,
            None,
            None,
            Some(extra),
        );
    }
}
