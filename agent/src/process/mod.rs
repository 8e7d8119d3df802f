//! Processes: which pid a call runs in, and the registry of names.
//!
//! A call belongs to the innermost of: the gen_server whose message is being
//! handled, the tokio task being polled, or else the OS thread. gen_servers
//! and threads are numbered by the agent from one counter (`<0.N.0>`); a
//! tokio task is known by its task id (`<0.N.1>`).
//!
//! The registry knows the processes `ps` lists: gen_servers, tasks spawned
//! with [`task::spawn`], tasks a trace saw run traced code, processes given
//! a name, and the owners of traced channels ([`crate::sync`]).

pub mod gen_server;
pub(crate) mod marker;
pub(crate) mod message;
pub mod sys;
pub mod task;

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use nodetrace_protocol::Pid;

use crate::process::gen_server::ServerShared;
use crate::process::task::Seen;
pub use crate::process::task::TaskInfo;
use crate::sync::{Mailbox, MailboxFigures};

static NEXT_PID: AtomicU64 = AtomicU64::new(1);

/// Who runs on this thread, as far as the agent knows: one thread-local,
/// so that a recorded call reaches both with one access.
struct Running {
    /// The gen_server being polled on this thread, or null.
    server: Cell<*const ServerShared>,
    /// This thread's own pid, or 0 until first asked.
    thread_pid: Cell<u64>,
}

thread_local! {
    static RUNNING: Running = const {
        Running {
            server: Cell::new(std::ptr::null()),
            thread_pid: Cell::new(0),
        }
    };
}

/// A fresh pid for a new gen_server or thread.
pub(crate) fn next_pid() -> Pid {
    Pid::process(NEXT_PID.fetch_add(1, Ordering::Relaxed))
}

/// The highest pid number handed out so far: the line between "existing"
/// and "new" processes.
pub(crate) fn pid_watermark() -> u64 {
    NEXT_PID.load(Ordering::Relaxed) - 1
}

/// The pid of whatever is running now: gen_server, tokio task or thread.
///
/// ```
/// let me = nodetrace_agent::self_pid();
/// assert_eq!(me, nodetrace_agent::self_pid());
/// assert!(!me.is_task());
/// ```
pub fn self_pid() -> Pid {
    RUNNING.with(|running| {
        // Safety: as in `with_current_server`; only the pid is read.
        if let Some(server) = unsafe { running.server.get().as_ref() } {
            return server.pid;
        }
        if let Some(id) = tokio::task::try_id() {
            return Pid::task(task_number(id));
        }
        running.thread_pid()
    })
}

/// The number inside a tokio task id, which only shows it through `Hash`
/// and `Display`.
pub(crate) fn task_number(id: tokio::task::Id) -> u64 {
    struct Capture(u64);
    impl Hasher for Capture {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 << 8) | u64::from(*b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }
    let mut h = Capture(0);
    id.hash(&mut h);
    h.finish()
}

/// Calls `f` with the gen_server being polled on this thread, if any.
pub(crate) fn with_current_server<R>(f: impl FnOnce(Option<&ServerShared>) -> R) -> R {
    let ptr = RUNNING.with(|r| r.server.get());
    // Safety: the pointer is set only by `as_server`, which borrows an `Arc`
    // of the server for as long as the pointer is set and restores the
    // previous value before returning; the reference does not outlive `f`.
    f(unsafe { ptr.as_ref() })
}

/// Runs `f` as gen_server `server`: calls in it are attributed to the server.
pub(crate) fn as_server<R>(server: &Arc<ServerShared>, f: impl FnOnce() -> R) -> R {
    struct Restore(*const ServerShared);
    impl Drop for Restore {
        fn drop(&mut self) {
            RUNNING.with(|r| r.server.set(self.0));
        }
    }
    let _restore = Restore(RUNNING.with(|r| r.server.replace(Arc::as_ptr(server))));
    f()
}

/// What kind of process a pid is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// A gen_server started by [`crate::gen_server`].
    GenServer,
    /// A tokio task spawned with [`task::spawn`].
    Task,
    /// A task spawned with plain `tokio::spawn` that a trace saw run
    /// traced code: known from then on, without counters.
    SeenTask,
    /// A tokio task or an OS thread that was given a name or owns a traced
    /// channel.
    Other,
}

impl ProcessKind {
    /// The word `ps` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessKind::GenServer => "gen_server",
            ProcessKind::Task => "task",
            ProcessKind::SeenTask => "task (seen)",
            ProcessKind::Other => "process",
        }
    }
}

/// A process as `ps` lists it.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name, if any.
    pub name: Option<String>,
    /// What it is.
    pub kind: ProcessKind,
    /// It is a gen_server or receives on traced channels.
    pub has_mailbox: bool,
    /// Messages waiting in its mailbox.
    pub mailbox_len: u64,
    /// Messages sent to it.
    pub messages_in: u64,
    /// Messages it handled.
    pub handled: u64,
    /// When it started (a seen task: when first seen).
    pub started: SystemTime,
    /// A task's poll figures, counted while the node is observed.
    pub task: Option<TaskInfo>,
}

/// A name or a pid, as a user names a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRef {
    /// By pid.
    Pid(Pid),
    /// By registered name.
    Name(String),
}

impl From<Pid> for ProcessRef {
    fn from(pid: Pid) -> ProcessRef {
        ProcessRef::Pid(pid)
    }
}

impl From<&str> for ProcessRef {
    fn from(name: &str) -> ProcessRef {
        match name.parse() {
            Ok(pid) => ProcessRef::Pid(pid),
            Err(_) => ProcessRef::Name(name.to_owned()),
        }
    }
}

impl std::fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessRef::Pid(pid) => pid.fmt(f),
            ProcessRef::Name(name) => f.write_str(name),
        }
    }
}

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is taken.
    #[error("the name {name} is already registered to {pid}; unregister it first or pick another")]
    AlreadyRegistered {
        /// The name asked for.
        name: String,
        /// Who holds it.
        pid: Pid,
    },
    /// No process has that name or pid.
    #[error("no process {0}: see `nodetrace ps` for the processes of this node")]
    NoProcess(ProcessRef),
    /// Several tasks share the name.
    #[error("{count} tasks are named {name}: name one by its pid (see `nodetrace ps`)")]
    Ambiguous {
        /// The name.
        name: String,
        /// How many tasks have it.
        count: usize,
    },
}

#[derive(Default)]
pub(crate) struct Registry {
    names: HashMap<String, Pid>,
    servers: HashMap<Pid, Arc<ServerShared>>,
    started: HashMap<Pid, SystemTime>,
    mailboxes: HashMap<Pid, Vec<Weak<Mailbox>>>,
    /// The sessions that `sys` trace each mailbox owner: a channel it
    /// adopts later is traced for them too.
    mailbox_sys: HashMap<Pid, u32>,
    seen: Seen,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub(crate) fn register(&mut self, name: &str, pid: Pid) -> Result<(), RegistryError> {
        if let Some(&holder) = self.names.get(name) {
            return Err(RegistryError::AlreadyRegistered {
                name: name.to_owned(),
                pid: holder,
            });
        }
        self.names.insert(name.to_owned(), pid);
        self.started.entry(pid).or_insert_with(SystemTime::now);
        Ok(())
    }

    pub(crate) fn add_server(&mut self, server: Arc<ServerShared>) {
        self.started.insert(server.pid, server.started);
        self.servers.insert(server.pid, server);
    }

    /// Forgets a process that ended, and every name it held.
    pub(crate) fn remove(&mut self, pid: Pid) {
        marker::ended(pid, || self.name_of(pid));
        self.servers.remove(&pid);
        self.started.remove(&pid);
        self.names.retain(|_, p| *p != pid);
    }

    pub(crate) fn resolve(&self, target: &ProcessRef) -> Result<Pid, RegistryError> {
        let name = match target {
            ProcessRef::Pid(pid) => return Ok(*pid),
            ProcessRef::Name(name) => name,
        };
        if let Some(pid) = self.names.get(name) {
            return Ok(*pid);
        }
        let named = task::named(name);
        match (named.first(), named.len()) {
            (Some(pid), 1) => Ok(*pid),
            (Some(_), count) => Err(RegistryError::Ambiguous {
                name: name.clone(),
                count,
            }),
            (None, _) => Err(RegistryError::NoProcess(target.clone())),
        }
    }

    /// `mailbox` is now `pid`'s: its first receive happened there.
    pub(crate) fn add_mailbox(&mut self, pid: Pid, mailbox: &Arc<Mailbox>) {
        if let Some(&bits) = self.mailbox_sys.get(&pid) {
            mailbox
                .sys_mask
                .fetch_or(bits, std::sync::atomic::Ordering::Relaxed);
        }
        let boxes = self.mailboxes.entry(pid).or_default();
        boxes.retain(|m| m.strong_count() > 0);
        boxes.push(Arc::downgrade(mailbox));
    }

    pub(crate) fn remove_mailbox(&mut self, pid: Pid, mailbox: &Arc<Mailbox>) {
        if let Some(boxes) = self.mailboxes.get_mut(&pid) {
            let gone = Arc::as_ptr(mailbox);
            boxes.retain(|m| m.as_ptr() != gone && m.strong_count() > 0);
            if boxes.is_empty() {
                self.mailboxes.remove(&pid);
                self.mailbox_sys.remove(&pid);
            }
        }
    }

    /// The traced channels `pid` receives on.
    pub(crate) fn mailboxes_of(&self, pid: Pid) -> Vec<Arc<Mailbox>> {
        self.mailboxes
            .get(&pid)
            .map(|boxes| boxes.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// Switches `sys` tracing of `pid`'s channels, present and future, on or
    /// off for the sessions in `bits`; false if it has none.
    pub(crate) fn sys_trace_mailboxes(&mut self, pid: Pid, bits: u32, on: bool) -> bool {
        let boxes = self.mailboxes_of(pid);
        if boxes.is_empty() {
            return false;
        }
        let mask = self.mailbox_sys.entry(pid).or_default();
        if on {
            *mask |= bits;
        } else {
            *mask &= !bits;
        }
        for m in boxes {
            if on {
                m.sys_mask
                    .fetch_or(bits, std::sync::atomic::Ordering::Relaxed);
            } else {
                m.sys_mask
                    .fetch_and(!bits, std::sync::atomic::Ordering::Relaxed);
            }
        }
        true
    }

    /// Ends `sys` tracing of every mailbox for the sessions in `bits`.
    pub(crate) fn clear_mailbox_sys(&mut self, bits: u32) {
        self.mailbox_sys.values_mut().for_each(|m| *m &= !bits);
        for m in self.mailboxes.values().flatten().filter_map(Weak::upgrade) {
            m.sys_mask
                .fetch_and(!bits, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The sum of `pid`'s live traced channels' counters, if it has any.
    pub(crate) fn mailbox_figures(&self, pid: Pid) -> Option<MailboxFigures> {
        let boxes = self.mailboxes.get(&pid)?;
        let mut sum = MailboxFigures::default();
        let mut live = false;
        for m in boxes.iter().filter_map(Weak::upgrade) {
            live = true;
            let f = m.figures();
            sum.messages_in += f.messages_in;
            sum.handled += f.handled;
            sum.len += f.len;
        }
        live.then_some(sum)
    }

    /// When `pid` started, if it is a task or a named process.
    pub(crate) fn started_of(&self, pid: Pid) -> Option<SystemTime> {
        task::started(pid).or_else(|| self.started.get(&pid).copied())
    }

    /// How many processes of each kind the node has.
    pub(crate) fn counts(&self) -> nodetrace_protocol::ProcessCounts {
        nodetrace_protocol::ProcessCounts {
            gen_servers: self.servers.len() as u64,
            tasks: task::count() as u64,
            seen_tasks: self.seen.len() as u64,
            mailbox_owners: self.mailboxes.len() as u64,
            registered_names: self.names.len() as u64,
        }
    }

    pub(crate) fn server(&self, target: &ProcessRef) -> Result<Arc<ServerShared>, RegistryError> {
        let pid = self.resolve(target)?;
        self.servers
            .get(&pid)
            .cloned()
            .ok_or_else(|| RegistryError::NoProcess(target.clone()))
    }

    pub(crate) fn servers(&self) -> impl Iterator<Item = &Arc<ServerShared>> {
        self.servers.values()
    }

    fn name_of(&self, pid: Pid) -> Option<String> {
        self.names
            .iter()
            .find(|(_, p)| **p == pid)
            .map(|(n, _)| n.clone())
    }
}

/// Sets (`on`) or clears `bits` of a word of session bits.
pub(crate) fn set_bits(mask: &std::sync::atomic::AtomicU32, bits: u32, on: bool) {
    if on {
        mask.fetch_or(bits, Ordering::Relaxed);
    } else {
        mask.fetch_and(!bits, Ordering::Relaxed);
    }
}

/// Registers `name` for `pid`, like `erlang:register/2`.
///
/// ```
/// use nodetrace_agent::{register, self_pid, unregister, whereis};
///
/// register("doc_example", self_pid()).unwrap();
/// assert_eq!(whereis("doc_example"), Some(self_pid()));
/// assert!(register("doc_example", self_pid()).is_err());
/// unregister("doc_example");
/// assert_eq!(whereis("doc_example"), None);
/// ```
pub fn register(name: &str, pid: Pid) -> Result<(), RegistryError> {
    registry().register(name, pid)
}

/// The pid registered as `name`, like `erlang:whereis/1`.
pub fn whereis(name: &str) -> Option<Pid> {
    registry().names.get(name).copied()
}

/// Removes `name` from the registry; true if it was there.
pub fn unregister(name: &str) -> bool {
    registry().names.remove(name).is_some()
}

/// Every known process, by pid: gen_servers, tasks (spawned with
/// [`task::spawn`] or seen by a trace), named processes and the owners of
/// traced channels.
pub fn processes() -> Vec<ProcessInfo> {
    let mut all = processes_unsorted();
    all.sort_unstable_by_key(|p| p.pid);
    all
}

/// [`processes`] in no order: what `top` ranks itself.
pub(crate) fn processes_unsorted() -> Vec<ProcessInfo> {
    let observation = task::observation();
    let reg = registry();
    let mut all: rustc_hash::FxHashMap<Pid, ProcessInfo> =
        rustc_hash::FxHashMap::with_capacity_and_hasher(
            task::count() + reg.seen.len() + reg.started.len() + reg.mailboxes.len(),
            Default::default(),
        );
    let plain = |pid: Pid, kind, started| ProcessInfo {
        pid,
        name: None,
        kind,
        has_mailbox: false,
        mailbox_len: 0,
        messages_in: 0,
        handled: 0,
        started,
        task: None,
    };
    for (pid, first, _) in reg.seen.iter() {
        all.insert(pid, plain(pid, ProcessKind::SeenTask, first));
    }
    for (&pid, &started) in &reg.started {
        all.insert(pid, plain(pid, ProcessKind::Other, started));
    }
    for (&pid, mailbox) in &reg.mailboxes {
        let created = mailbox.iter().filter_map(Weak::upgrade).map(|m| m.created);
        if let Some(created) = created.min() {
            all.entry(pid)
                .or_insert_with(|| plain(pid, ProcessKind::Other, created));
        }
    }
    task::for_each(|pid, task| {
        let p = all
            .entry(pid)
            .or_insert_with(|| plain(pid, ProcessKind::Task, task.started()));
        p.kind = ProcessKind::Task;
        p.started = task.started();
        p.name = task.name.as_ref().map(|n| n.to_string());
        p.task = Some(task.figures(observation));
    });
    for p in all.values_mut() {
        if let Some(server) = reg.servers.get(&p.pid) {
            p.kind = ProcessKind::GenServer;
            p.has_mailbox = true;
            p.mailbox_len = server.stats.mailbox_len();
            p.messages_in = server.stats.messages_in();
            p.handled = server.stats.handled();
        } else if let Some(m) = reg.mailbox_figures(p.pid) {
            p.has_mailbox = true;
            p.mailbox_len = m.len;
            p.messages_in = m.messages_in;
            p.handled = m.handled;
        }
        if !reg.names.is_empty()
            && let Some(name) = reg.name_of(p.pid)
        {
            p.name = Some(name);
        }
    }
    all.into_values().collect()
}

/// The names of those of `pids` that have one: the registered name, else
/// the name a task was spawned with (as `ps` shows them).
pub(crate) fn names_of(pids: &[Pid]) -> Vec<(Pid, String)> {
    let mut names = Vec::new();
    let mut tasks = Vec::new();
    {
        let reg = registry();
        for &pid in pids {
            match reg.name_of(pid) {
                Some(name) => names.push((pid, name)),
                None if task::is_task(pid) => tasks.push(pid),
                None => {}
            }
        }
    }
    if !tasks.is_empty() {
        task::for_each(|pid, t| {
            if let Some(name) = &t.name
                && tasks.contains(&pid)
            {
                names.push((pid, name.to_string()));
            }
        });
    }
    names
}

/// Notes tasks a trace saw run traced code (the collector calls it with
/// each batch's task pids): those not spawned with [`task::spawn`] are
/// listed as seen.
pub(crate) fn saw_tasks(pids: &[Pid]) {
    let now = SystemTime::now();
    let mut reg = registry();
    for &pid in pids {
        if !task::is_task(pid) {
            reg.seen.saw(pid, now);
        }
    }
}

/// The tokio runtime whose metrics `top` and `info` show: the one
/// `node::start` ran in, else the first a gen_server or a named task was
/// started in.
static RUNTIME: Mutex<Option<tokio::runtime::Handle>> = Mutex::new(None);
/// Whether [`RUNTIME`] is set: a spawn checks this one flag.
static RUNTIME_KNOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Remembers the current tokio runtime, if any and if none is known yet.
#[inline]
pub(crate) fn remember_runtime() {
    if !RUNTIME_KNOWN.load(Ordering::Relaxed) {
        set_runtime(false);
    }
}

/// Remembers the current tokio runtime; `replace`: even if one is known
/// (the node's own start names the runtime that matters).
pub(crate) fn set_runtime(replace: bool) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let mut known = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
        if replace || known.is_none() {
            *known = Some(handle);
            RUNTIME_KNOWN.store(true, Ordering::Relaxed);
        }
    }
}

/// The runtime remembered.
pub(crate) fn runtime() -> Option<tokio::runtime::Handle> {
    RUNTIME.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// This OS thread's pid, whatever runs on it.
pub(crate) fn thread_pid() -> Pid {
    RUNNING.with(Running::thread_pid)
}

impl Running {
    fn thread_pid(&self) -> Pid {
        if self.thread_pid.get() == 0 {
            self.thread_pid.set(next_pid().to_bits());
        }
        Pid::from_bits(self.thread_pid.get())
    }
}
