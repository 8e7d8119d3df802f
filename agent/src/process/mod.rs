//! Processes: which pid a call runs in, and the registry of names.
//!
//! A call belongs to the innermost of: the gen_server whose message is being
//! handled, the tokio task being polled, or else the OS thread. gen_servers
//! and threads are numbered by the agent from one counter (`<0.N.0>`); a
//! tokio task is known by its task id (`<0.N.1>`).

pub mod gen_server;
pub mod sys;

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::SystemTime;

use nodetrace_protocol::Pid;

use crate::process::gen_server::ServerShared;

static NEXT_PID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The gen_server being polled on this thread, or null.
    static CURRENT_SERVER: Cell<*const ServerShared> = const { Cell::new(std::ptr::null()) };
    /// This thread's own pid, or 0 until first asked.
    static THREAD_PID: Cell<u64> = const { Cell::new(0) };
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
    if let Some(pid) = with_current_server(|s| s.map(|s| s.pid)) {
        return pid;
    }
    if let Some(id) = tokio::task::try_id() {
        return Pid::task(task_number(id));
    }
    thread_pid()
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
    let ptr = CURRENT_SERVER.with(Cell::get);
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
            CURRENT_SERVER.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT_SERVER.with(|c| c.replace(Arc::as_ptr(server))));
    f()
}

/// What kind of process a pid is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// A gen_server started by [`crate::gen_server`].
    GenServer,
    /// A tokio task or an OS thread that was given a name.
    Other,
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
    /// Messages waiting in its mailbox.
    pub mailbox_len: u64,
    /// Messages it handled.
    pub handled: u64,
    /// When it started.
    pub started: SystemTime,
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
}

#[derive(Default)]
pub(crate) struct Registry {
    names: HashMap<String, Pid>,
    servers: HashMap<Pid, Arc<ServerShared>>,
    started: HashMap<Pid, SystemTime>,
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
        self.servers.remove(&pid);
        self.started.remove(&pid);
        self.names.retain(|_, p| *p != pid);
    }

    pub(crate) fn resolve(&self, target: &ProcessRef) -> Result<Pid, RegistryError> {
        match target {
            ProcessRef::Pid(pid) => Ok(*pid),
            ProcessRef::Name(name) => self
                .names
                .get(name)
                .copied()
                .ok_or_else(|| RegistryError::NoProcess(target.clone())),
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

/// Every known process: gen_servers and named processes, by pid.
pub fn processes() -> Vec<ProcessInfo> {
    let reg = registry();
    let mut all: Vec<ProcessInfo> = reg
        .started
        .iter()
        .map(|(&pid, &started)| {
            let server = reg.servers.get(&pid);
            ProcessInfo {
                pid,
                name: reg.name_of(pid),
                kind: if server.is_some() {
                    ProcessKind::GenServer
                } else {
                    ProcessKind::Other
                },
                mailbox_len: server.map_or(0, |s| s.stats.mailbox_len()),
                handled: server.map_or(0, |s| s.stats.handled()),
                started,
            }
        })
        .collect();
    all.sort_by_key(|p| p.pid);
    all
}

/// This OS thread's pid, whatever runs on it.
pub(crate) fn thread_pid() -> Pid {
    THREAD_PID.with(|p| {
        if p.get() == 0 {
            p.set(next_pid().to_bits());
        }
        Pid::from_bits(p.get())
    })
}
