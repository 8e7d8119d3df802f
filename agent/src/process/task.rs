//! Tasks as processes: a tokio task with a name, a pid and counters.
//!
//! [`spawn`] is `tokio::spawn` with a name. The task's pid is its tokio task
//! id (`<0.N.1>`, what [`self_pid`](crate::self_pid) answers inside it),
//! its name is registered (names may repeat: `conn:<peer>` for every
//! connection), and `ps` and `top` show its counters. Tasks
//! spawned with plain `tokio::spawn` are listed too once a trace or profile
//! has seen them run traced code, marked as seen.
//!
//! What it costs: one allocation at spawn (the counters, which hold the
//! name; a `&'static str` name is not copied) and one lock of one of 16
//! shards of the task table at spawn and at the end. Per poll, one relaxed load while nothing observes the node; while
//! an observer does (`ps`, `top` or `info` asked in the
//! last [`OBSERVE_LINGER`]), two clock reads, a few stores to the task's
//! own counters, and a waker of its own that counts wakes. Unlike tokio-console this needs no `--cfg tokio_unstable`
//! and no instrumentation of the runtime: only the tasks spawned here are
//! timed.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let ticker = nodetrace_agent::task::spawn("ticker", async { 7 });
//! assert_eq!(ticker.await.unwrap(), 7);
//! # });
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use nodetrace_protocol::Pid;
use rustc_hash::FxHashMap;
use tokio::task::JoinHandle;

use crate::process::{marker, task_number};
use crate::record::clock;

/// The live named tasks, by pid, in shards: a spawn and an end each lock
/// one shard, so workers spawning at once rarely meet.
static TASKS: [Mutex<FxHashMap<Pid, Arc<TaskShared>>>; SHARDS] =
    [const { Mutex::new(FxHashMap::with_hasher(rustc_hash::FxBuildHasher)) }; SHARDS];
const SHARDS: usize = 16;

fn shard(pid: Pid) -> std::sync::MutexGuard<'static, FxHashMap<Pid, Arc<TaskShared>>> {
    TASKS[pid.number() as usize % SHARDS]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Calls `f` with every live named task.
pub(crate) fn for_each(mut f: impl FnMut(Pid, &TaskShared)) {
    for s in &TASKS {
        for (pid, task) in s.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            f(*pid, task);
        }
    }
}

/// The pids of the live tasks named `name`.
pub(crate) fn named(name: &str) -> Vec<Pid> {
    let mut pids = Vec::new();
    for_each(|pid, t| {
        if t.name.as_deref() == Some(name) {
            pids.push(pid);
        }
    });
    pids.sort();
    pids
}

/// Whether `pid` is a live task spawned with [`spawn`].
pub(crate) fn is_task(pid: Pid) -> bool {
    shard(pid).contains_key(&pid)
}

/// When task `pid` started, if it is one.
pub(crate) fn started(pid: Pid) -> Option<SystemTime> {
    shard(pid).get(&pid).map(|t| t.started())
}

/// Live tasks spawned with [`spawn`].
pub(crate) fn count() -> usize {
    TASKS
        .iter()
        .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
        .sum()
}

/// How long the node keeps timing tasks after the last observer asked.
pub const OBSERVE_LINGER: Duration = Duration::from_secs(60);

/// What a poll does besides polling: the one load a poll makes when
/// nothing is asked ([`TIMED`], [`MARKED`]).
static HOOKS: AtomicU8 = AtomicU8::new(0);

/// Polls are timed: the node is observed.
const TIMED: u8 = 1;

/// Polls run below their pid's marker frames: a sample profile split by
/// process runs.
const MARKED: u8 = 2;

fn set_hook(hook: u8, on: bool) {
    if on {
        HOOKS.fetch_or(hook, Ordering::Relaxed);
    } else {
        HOOKS.fetch_and(!hook, Ordering::Relaxed);
    }
}

/// Whether processes' polls run below marker frames now.
pub(crate) fn marking() -> bool {
    HOOKS.load(Ordering::Relaxed) & MARKED != 0
}

/// Starts or stops running processes' polls below marker frames that
/// spell their pids ([`crate::process::marker`]).
pub(crate) fn set_marking(on: bool) {
    set_hook(MARKED, on);
}

/// When observing began (raw clock), and when it ends unless asked again.
static OBSERVATION: Mutex<Option<Observation>> = Mutex::new(None);

/// Observations begun so far: a task's counters belong to one of them and
/// start again from zero in the next.
static GENERATION: AtomicU64 = AtomicU64::new(0);

struct Observation {
    since_raw: u64,
    generation: u64,
    since: SystemTime,
    until: Instant,
}

/// Starts (or prolongs) timing every task's polls; returns when the
/// current observation began. A thread switches it off again once
/// [`OBSERVE_LINGER`] passes with no observer asking.
pub(crate) fn observe() -> SystemTime {
    let mut obs = OBSERVATION.lock().unwrap_or_else(|p| p.into_inner());
    let until = Instant::now() + OBSERVE_LINGER;
    if let Some(o) = obs.as_mut() {
        o.until = until;
        return o.since;
    }
    let since = SystemTime::now();
    *obs = Some(Observation {
        since_raw: clock::now(),
        generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
        since,
        until,
    });
    set_hook(TIMED, true);
    // Without a thread to end it, the observation lasts: timing for good
    // is better than never.
    let _ = std::thread::Builder::new()
        .name("nodetrace-observer".into())
        .spawn(end_observation_when_idle);
    since
}

/// The observer thread: sleeps until the observation's end, then ends it.
fn end_observation_when_idle() {
    loop {
        let wait = {
            let mut obs = OBSERVATION.lock().unwrap_or_else(|p| p.into_inner());
            let Some(o) = obs.as_ref() else { return };
            let now = Instant::now();
            if now >= o.until {
                set_hook(TIMED, false);
                *obs = None;
                return;
            }
            o.until - now
        };
        std::thread::sleep(wait);
    }
}

/// The current observation, if one runs: the raw clock reading at which
/// it began, and its generation.
pub(crate) fn observation() -> Option<(u64, u64)> {
    OBSERVATION
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|o| (o.since_raw, o.generation))
}

/// Whether a task's poll is being timed: tests and benches switch it.
#[doc(hidden)]
pub fn set_observing(on: bool) {
    if on {
        observe();
    } else {
        set_hook(TIMED, false);
        *OBSERVATION.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What a task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Being polled now.
    Running,
    /// Waiting to be woken.
    Idle,
    /// Finished or dropped.
    Done,
}

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// A named task's counters, written only by the task's own polls.
pub(crate) struct TaskShared {
    pub(crate) name: Option<Cow<'static, str>>,
    started_raw: u64,
    pid: AtomicU64,
    polls: AtomicU64,
    busy_ns: AtomicU64,
    /// Wakes of the task while observed: its polls are given a waker of
    /// its own that counts, then wakes the runtime's, kept here.
    wakes: AtomicU64,
    /// The runtime's waker of this task, kept from its first observed
    /// poll: it wakes the same task for the task's whole life.
    runtime_waker: OnceLock<Waker>,
    /// The observation the counters belong to.
    generation: AtomicU64,
    /// Raw clock at the end of the last timed poll, or when done.
    last_raw: AtomicU64,
    state: AtomicU8,
}

/// A task's counters, as `ps` and `top` show them: those of the current
/// observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    /// Polls.
    pub polls: u64,
    /// Time spent in polls, in nanoseconds.
    pub busy_ns: u64,
    /// Time not spent in polls since it was first observed, in nanoseconds.
    pub idle_ns: u64,
    /// Times it was woken.
    pub wakes: u64,
    /// What it does now.
    pub state: TaskState,
}

impl TaskShared {
    fn new(name: Option<Cow<'static, str>>) -> TaskShared {
        TaskShared {
            name,
            started_raw: clock::now(),
            pid: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            runtime_waker: OnceLock::new(),
            generation: AtomicU64::new(0),
            last_raw: AtomicU64::new(0),
            state: AtomicU8::new(IDLE),
        }
    }

    /// When the task was spawned (read from the raw clock taken then: a
    /// spawn reads no wall clock).
    pub(crate) fn started(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(clock::unix_nanos(self.started_raw))
    }

    /// Counters of the current observation as of now: idle time is the
    /// time observed (since the later of its start and the observation's)
    /// that was not spent in polls. `observation`: when it began (raw) and
    /// its generation, if one runs; the caller reads it once for every task
    /// it lists.
    pub(crate) fn figures(&self, observation: Option<(u64, u64)>) -> TaskInfo {
        let state = match self.state.load(Ordering::Relaxed) {
            RUNNING => TaskState::Running,
            DONE => TaskState::Done,
            _ => TaskState::Idle,
        };
        let current =
            observation.is_some_and(|(_, g)| g == self.generation.load(Ordering::Relaxed));
        // Counters of an earlier observation count for nothing now.
        let counted = |c: &AtomicU64| {
            if current {
                c.load(Ordering::Relaxed)
            } else {
                0
            }
        };
        let busy_ns = counted(&self.busy_ns);
        let idle_ns = match observation {
            Some((since, _)) => {
                let from = since.max(self.started_raw);
                let to = match state {
                    TaskState::Done => self.last_raw.load(Ordering::Relaxed),
                    _ => clock::now(),
                };
                clock::nanos_between(from, to).saturating_sub(busy_ns)
            }
            None => 0,
        };
        TaskInfo {
            polls: counted(&self.polls),
            busy_ns,
            idle_ns,
            wakes: counted(&self.wakes),
            state,
        }
    }

    /// The task's own poll, timed. Only the task writes its counters, one
    /// poll at a time, so plain loads and stores do.
    #[inline(never)]
    fn timed_poll<F: Future>(&self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let generation = GENERATION.load(Ordering::Relaxed);
        if self.generation.load(Ordering::Relaxed) != generation {
            for c in [&self.polls, &self.busy_ns, &self.wakes] {
                c.store(0, Ordering::Relaxed);
            }
            self.generation.store(generation, Ordering::Relaxed);
        }
        self.state.store(RUNNING, Ordering::Relaxed);
        let start = clock::now();
        let poll = fut.poll(cx);
        let end = clock::now();
        let add = |c: &AtomicU64, n| c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        add(&self.polls, 1);
        add(&self.busy_ns, clock::nanos_between(start, end));
        self.last_raw.store(end, Ordering::Relaxed);
        self.state
            .store(if poll.is_ready() { DONE } else { IDLE }, Ordering::Relaxed);
        poll
    }

    fn done(&self) {
        self.last_raw.store(clock::now(), Ordering::Relaxed);
        self.state.store(DONE, Ordering::SeqCst);
        let pid = self.pid.load(Ordering::SeqCst);
        if pid != 0 {
            let pid = Pid::from_bits(pid);
            marker::ended(pid, || self.name.as_ref().map(|n| n.to_string()));
            shard(pid).remove(&pid);
        }
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::SeqCst) == DONE
    }
}

/// The waker an observed poll hands the task: counts the wake, then wakes
/// the runtime's waker of the task (kept, never taken: a future that keeps
/// this waker after observation ends still wakes its task).
impl Wake for TaskShared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        if let Some(waker) = self.runtime_waker.get() {
            waker.wake_by_ref();
        }
    }
}

pin_project_lite::pin_project! {
    /// A named task's future: times its polls while observed, and leaves
    /// the registry when it ends, however it ends.
    struct Named<F> {
        shared: Arc<TaskShared>,
        // The counting waker, made at the first observed poll.
        counting: Option<Waker>,
        #[pin]
        fut: F,
    }

    impl<F> PinnedDrop for Named<F> {
        fn drop(this: Pin<&mut Self>) {
            this.shared.done();
        }
    }
}

impl<F: Future> Future for Named<F> {
    type Output = F::Output;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let hooks = HOOKS.load(Ordering::Relaxed);
        if hooks == 0 {
            return this.fut.poll(cx);
        }
        hooked_poll(hooks, this.shared, this.counting, this.fut, cx)
    }
}

/// A poll that is timed, marked, or both.
#[inline(never)]
fn hooked_poll<F: Future>(
    hooks: u8,
    shared: &Arc<TaskShared>,
    counting: &mut Option<Waker>,
    fut: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    let mut poll = |fut: Pin<&mut F>, cx: &mut Context<'_>| {
        if hooks & TIMED == 0 {
            return fut.poll(cx);
        }
        shared.runtime_waker.get_or_init(|| cx.waker().clone());
        let counting = counting.get_or_insert_with(|| Waker::from(shared.clone()));
        shared.timed_poll(fut, &mut Context::from_waker(counting))
    };
    if hooks & MARKED == 0 {
        return poll(fut, cx);
    }
    let pid = match shared.pid.load(Ordering::Relaxed) {
        0 => crate::process::self_pid(),
        bits => Pid::from_bits(bits),
    };
    marker::under(pid, || poll(fut, cx))
}

/// Spawns `future` on the current tokio runtime as a process named `name`.
///
/// Like `tokio::spawn`, it panics outside a runtime.
#[track_caller]
pub fn spawn<F>(name: impl Into<Cow<'static, str>>, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Builder::new().name(name).spawn(future)
}

/// Spawns `future` on the current `LocalSet` as a process named `name`.
///
/// Like `tokio::task::spawn_local`, it panics outside a `LocalSet`.
#[track_caller]
pub fn spawn_local<F>(name: impl Into<Cow<'static, str>>, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    Builder::new().name(name).spawn_local(future)
}

/// Spawns tasks with options, like `std::thread::Builder`.
///
/// ```
/// use nodetrace_agent::task::Builder;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let peer = "127.0.0.1:4242";
/// let conn = Builder::new().name(format!("conn:{peer}")).spawn(async {});
/// conn.await.unwrap();
/// # });
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    name: Option<Cow<'static, str>>,
}

impl Builder {
    /// A builder of unnamed tasks: they still get counters and a place in
    /// `ps`.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The name to register the task under; several tasks may share one.
    /// A `&'static str` is kept as it is: no allocation.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Spawns on the current runtime.
    #[track_caller]
    pub fn spawn<F>(self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with(future, tokio::spawn)
    }

    /// Spawns on `handle`'s runtime.
    #[track_caller]
    pub fn spawn_on<F>(self, future: F, handle: &tokio::runtime::Handle) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with(future, |f| handle.spawn(f))
    }

    /// Spawns on the current `LocalSet`.
    #[track_caller]
    pub fn spawn_local<F>(self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_with(future, tokio::task::spawn_local)
    }

    #[track_caller]
    fn spawn_with<F: Future>(
        self,
        fut: F,
        spawn: impl FnOnce(Named<F>) -> JoinHandle<F::Output>,
    ) -> JoinHandle<F::Output> {
        let shared = Arc::new(TaskShared::new(self.name));
        crate::process::remember_runtime();
        let handle = spawn(Named {
            shared: shared.clone(),
            counting: None,
            fut,
        });
        let pid = Pid::task(task_number(handle.id()));
        shared.pid.store(pid.to_bits(), Ordering::SeqCst);
        let mut tasks = shard(pid);
        // A task that already ended removed itself before it was added.
        if !shared.is_done() {
            tasks.insert(pid, shared);
        }
        handle
    }
}

/// Tasks spawned with plain `tokio::spawn` that a trace or profile saw run
/// traced code: pid and when first and last seen. Bounded: the least
/// recently seen go first.
#[derive(Default)]
pub(crate) struct Seen {
    tasks: HashMap<Pid, (SystemTime, SystemTime)>,
}

/// The most unnamed tasks `ps` remembers.
pub(crate) const MAX_SEEN: usize = 4096;

impl Seen {
    pub(crate) fn saw(&mut self, pid: Pid, at: SystemTime) {
        if let Some(entry) = self.tasks.get_mut(&pid) {
            entry.1 = at;
            return;
        }
        if self.tasks.len() >= MAX_SEEN {
            // The least recently seen quarter goes at once: one scan per
            // MAX_SEEN / 4 new tasks, not one per task.
            let mut last: Vec<SystemTime> = self.tasks.values().map(|t| t.1).collect();
            let cut = MAX_SEEN / 4;
            let (_, &mut line, _) = last.select_nth_unstable(cut);
            self.tasks.retain(|_, t| t.1 > line);
        }
        self.tasks.insert(pid, (at, at));
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Pid, SystemTime, SystemTime)> + '_ {
        self.tasks.iter().map(|(p, (f, l))| (*p, *f, *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_tasks_are_bounded_and_keep_the_recent() {
        let mut seen = Seen::default();
        let t0 = SystemTime::UNIX_EPOCH;
        for n in 0..MAX_SEEN as u64 + 10 {
            seen.saw(Pid::task(n + 1), t0 + Duration::from_secs(n));
        }
        assert!(seen.tasks.len() <= MAX_SEEN && seen.tasks.len() > MAX_SEEN / 2);
        assert!(!seen.tasks.contains_key(&Pid::task(1)));
        assert!(seen.tasks.contains_key(&Pid::task(MAX_SEEN as u64 + 10)));
    }
}
