//! Profiling inside the node: cprof, eprof and fprof as aggregates.
//!
//! A profile is a session whose callsites, instead of recording events,
//! update figures kept per thread: call counts (cprof, one owner-written
//! counter per callsite, no clock), and for eprof and fprof a shadow stack of
//! traced frames from which each return adds its own time, accumulated time,
//! caller edge and stack to the thread's aggregates. A snapshot merges the
//! threads' figures; their size is bounded by the functions, edges and
//! distinct stacks seen, never by the number of calls. The aggregates are
//! [`table::Table`]s, which only their thread writes and a snapshot reads
//! without a lock: no lock is taken on a call's path (latency histograms,
//! asked for with `histogram`, are the one exception).
//!
//! An async function is on the stack only while it is polled: each poll
//! adds its own time; its call counts once, at completion, with its wall
//! time as accumulated time and the sum of its polls as busy time.

pub(crate) mod sample;
mod table;
pub(crate) mod tc;

use std::cell::{Cell, RefCell};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use hdrhistogram::Histogram;
use nodetrace_protocol::{
    CallEdge, FunctionProfile, Pattern, Percentiles, Pid, ProfileMode, ProfileSnapshot, StackSample,
};
use rustc_hash::FxHashMap;

use crate::profile::table::{Row, RowRef, Table};
use crate::record::callsite::{callsite_count, callsites, session_bits};
use crate::record::clock;
use crate::session::{ProcFlags, Procs, Session, SessionError, SessionOptions};

/// The caller id of a call whose caller is not traced.
const ROOT: u32 = u32::MAX;

/// No callsite: the child a stack node has before its first.
const NO_ROW: u32 = u32::MAX;

/// Why a profile did not start.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A profile already runs; one node runs one at a time.
    #[error("a profile already runs on this node: wait for it or stop it")]
    Busy,
    /// The patterns match no function.
    #[error("{0} matches no traceable function of this node: see `nodetrace ls`")]
    NothingMatched(String),
    /// The session could not start.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A sample profile is not a call profile.
    #[error("a sample profile is started with SampleProfile::start")]
    Sampled,
}

/// How a profile is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileOptions {
    /// The profiler.
    pub mode: ProfileMode,
    /// Keep a latency histogram per function (eprof, fprof).
    pub histogram: bool,
    /// Keep the figures per process.
    pub per_process: bool,
}

struct Profiler {
    generation: u64,
    options: ProfileOptions,
    start: u64,
    threads: Mutex<Vec<Arc<ThreadData>>>,
}

/// One thread's figures: the owner thread writes them, a snapshot reads
/// them, neither locks (but for histograms).
struct ThreadData {
    /// cprof: calls by callsite id.
    counts: Box<[AtomicU64]>,
    /// By (pid key, callsite): [`CALLS`], [`OWN`], [`ACC`], [`BUSY`],
    /// [`ASYNC`]; cprof's counts of callsites registered after the thread
    /// joined (`tracing` spans) too.
    functions: Table<5>,
    /// fprof, by (caller, callee): [`CALLS`], [`ACC`] and [`OWN`] ticks.
    edges: Table<3>,
    /// Stack nodes by (parent node, callsite), own ticks: node `i + 1` is
    /// row `i`; node 0 is the root.
    nodes: Table<1>,
    /// Latency histograms, with `histogram`, by (pid key, callsite).
    histograms: Mutex<FxHashMap<(u64, u32), Histogram<u64>>>,
}

// Counters of a function row (the first three of an edge row too).
const CALLS: usize = 0;
const OWN: usize = 1;
const ACC: usize = 2;
/// Ticks of its polls, for async functions.
const BUSY: usize = 3;
/// Async calls: nonzero when [`BUSY`] means something.
const ASYNC: usize = 4;

#[derive(Default)]
struct FunctionAggregate {
    calls: u64,
    own: u64,
    acc: u64,
    busy: Option<u64>,
    histogram: Option<Histogram<u64>>,
}

#[derive(Default)]
struct EdgeAggregate {
    calls: u64,
    acc: u64,
    own: u64,
}

struct Frame {
    cs: u32,
    start: u64,
    children: u64,
    node: u32,
}

/// What a thread keeps of one node of its stack tree. The rows are of
/// the thread's own tables, which its [`ThreadProfile`] keeps alive.
#[derive(Clone, Copy)]
struct NodeInfo {
    /// Its child last pushed, `(callsite, node)`, or `(NO_ROW, 0)`.
    last_child: (u32, u32),
    /// Its row of `nodes` (none for the root).
    row: Option<RowRef<1>>,
    /// fprof: the edge `(caller, callsite)` of its calls and its row of
    /// `edges`, once found. The key is kept and compared: a node's calls
    /// have one edge, but for a frame left at the root by a full table, or
    /// a span closed on another thread than the one that last entered it
    /// (its node is then of another thread's tree).
    edge: Option<((u32, u32), RowRef<3>)>,
}

impl NodeInfo {
    const fn new(row: Option<RowRef<1>>) -> NodeInfo {
        NodeInfo {
            last_child: (NO_ROW, 0),
            row,
            edge: None,
        }
    }
}

struct ThreadProfile {
    generation: u64,
    profiler: Arc<Profiler>,
    data: Arc<ThreadData>,
    stack: Vec<Frame>,
    /// `(parent node, callsite)` to node, this thread's stack tree.
    tree: FxHashMap<(u32, u32), u32>,
    /// By node (0, the root, first): what its calls find again without
    /// hashing or locating a row.
    node_info: Vec<NodeInfo>,
    /// `(pid key, callsite)` to its row of `data.functions`, for the keys
    /// `function_by_cs` does not hold.
    function_rows: FxHashMap<(u64, u32), u32>,
    /// Callsite id to the row of `(0, callsite)` (a profile not split by
    /// process), once it has one.
    function_by_cs: Box<[Option<RowRef<5>>]>,
    /// `(caller, callee)` to its row of `data.edges`.
    edge_rows: FxHashMap<(u32, u32), u32>,
}

static PROFILER: ArcSwapOption<Profiler> = ArcSwapOption::const_empty();

/// The flags word of a callsite that only a cprof of every process counts
/// (zero when there is none): such a call is counted and nothing else,
/// without choosing sessions or reading the pid.
pub(crate) static COUNT_ONLY: AtomicU64 = AtomicU64::new(0);
/// The flags word of a callsite that only an eprof or fprof of every
/// process, not split by process, times (zero when there is none): such a
/// call's frame on the thread's profile stack is all there is of it, made
/// without choosing sessions or reading the pid.
///
/// A call reads this word and [`COUNT_ONLY`] after its flags, ordered
/// after them (`record::call::counted`), which pairs with the flags'
/// release in `Callsite::set_bits`: a thread that reads the flags of a
/// profile split by process never reads the word of one of every process
/// that held the slot before it, and so never skips the new one's filter.
pub(crate) static TIMED_ONLY: AtomicU64 = AtomicU64::new(0);
static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static THREAD: RefCell<Option<ThreadProfile>> = const { RefCell::new(None) };
    /// The cprof counters of this thread's profile and its generation, so
    /// that a count skips the `RefCell` and its destructor's state: set by
    /// a count through [`THREAD`], cleared when that profile state drops.
    static COUNTERS: Cell<(u64, *const [AtomicU64])> = const { Cell::new(NO_COUNTERS) };
}

/// No profile's counters: generation zero is no profile's.
const NO_COUNTERS: (u64, *const [AtomicU64]) =
    (0, std::ptr::slice_from_raw_parts(std::ptr::null(), 0));

impl Drop for ThreadProfile {
    fn drop(&mut self) {
        COUNTERS.set(NO_COUNTERS);
    }
}

/// Runs `f` on this thread's profile state for the running profile. A
/// traced function that runs while that state is in use (from the
/// allocator growing one of its tables) finds it busy, and its call is
/// not profiled.
#[inline]
fn with_thread<R>(f: impl FnOnce(&mut ThreadProfile) -> R) -> Option<R> {
    THREAD
        .try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            let generation = GENERATION.load(Ordering::Acquire);
            if slot.as_ref().is_none_or(|t| t.generation != generation) {
                *slot = join(generation);
            }
            slot.as_mut().map(f)
        })
        .ok()
        .flatten()
}

#[cold]
fn join(generation: u64) -> Option<ThreadProfile> {
    let profiler = PROFILER
        .load_full()
        .filter(|p| p.generation == generation)?;
    let data = Arc::new(ThreadData {
        counts: (0..callsite_count()).map(|_| AtomicU64::new(0)).collect(),
        functions: Table::default(),
        edges: Table::default(),
        nodes: Table::default(),
        histograms: Mutex::new(FxHashMap::default()),
    });
    profiler
        .threads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(data.clone());
    Some(ThreadProfile {
        generation,
        profiler,
        data,
        stack: Vec::new(),
        tree: FxHashMap::default(),
        node_info: vec![NodeInfo::new(None)],
        function_rows: FxHashMap::default(),
        function_by_cs: vec![None; callsite_count()].into_boxed_slice(),
        edge_rows: FxHashMap::default(),
    })
}

impl ThreadProfile {
    /// Counts a call for cprof: in this thread's counter of `cs`, or, for a
    /// callsite registered after the thread joined (a `tracing` span), in
    /// its aggregates.
    fn count(&mut self, cs: u32) {
        match self.data.counts.get(cs as usize) {
            Some(counter) => {
                counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            None => {
                if let Some(row) = self.function((0, cs)) {
                    row.add(CALLS, 1);
                }
            }
        }
    }

    fn pid_key(&self, pid: Pid) -> u64 {
        if self.profiler.options.per_process {
            pid.to_bits()
        } else {
            0
        }
    }

    fn push(&mut self, cs: u32, start: u64) {
        let parent = self.stack.last().map_or(0, |f| f.node);
        // The child a node had last is the likeliest again (a loop calling
        // one function): looked up without hashing.
        let node = match self.node_info.get(parent as usize) {
            Some(&NodeInfo {
                last_child: (last, node),
                ..
            }) if last == cs => node,
            _ => self.child(parent, cs),
        };
        self.stack.push(Frame {
            cs,
            start,
            children: 0,
            node,
        });
    }

    /// The node of `cs` under `parent`, made at its first call.
    fn child(&mut self, parent: u32, cs: u32) -> u32 {
        let nodes = &self.data.nodes;
        let node_info = &mut self.node_info;
        // A full table (never, in practice) keeps the frame at the root:
        // its own time then counts in no stack.
        let node = *self.tree.entry((parent, cs)).or_insert_with(|| {
            let Some(row) = nodes.append((u64::from(parent), u64::from(cs))) else {
                return 0;
            };
            node_info.push(NodeInfo::new(Some(nodes.row_ref(row))));
            row + 1
        });
        if let Some(info) = self.node_info.get_mut(parent as usize) {
            info.last_child = (cs, node);
        }
        node
    }

    /// Pops `cs`'s frame: its elapsed and own ticks, its caller, its node,
    /// and whether it is recursive (an outer frame of the same function).
    fn pop(&mut self, cs: u32, end: u64) -> Option<(u64, u64, u32, u32, bool)> {
        if self.stack.last().is_none_or(|f| f.cs != cs) {
            return None;
        }
        let frame = self.stack.pop()?;
        let elapsed = end.saturating_sub(frame.start);
        let own = elapsed.saturating_sub(frame.children);
        let caller = self.stack.last_mut().map_or(ROOT, |parent| {
            parent.children += elapsed;
            parent.cs
        });
        let recursive = self.stack.iter().any(|f| f.cs == cs);
        Some((elapsed, own, caller, frame.node, recursive))
    }

    /// The row of function `key`, appended at its first call (`None`
    /// only if the table is full).
    #[inline]
    fn function(&mut self, key: (u64, u32)) -> Option<&Row<5>> {
        // Not split by process, a function's row is found by its callsite
        // id alone, with one load.
        if key.0 == 0
            && let Some(Some(row)) = self.function_by_cs.get(key.1 as usize)
        {
            // Safety: a row of `self.data`, which `self` keeps.
            return Some(unsafe { row.get() });
        }
        self.function_slow(key)
    }

    #[inline(never)]
    fn function_slow(&mut self, key: (u64, u32)) -> Option<&Row<5>> {
        let functions = &self.data.functions;
        let row = match self.function_rows.get(&key).copied() {
            Some(row) => row,
            None => {
                let row = functions.append((key.0, u64::from(key.1)))?;
                match self.function_by_cs.get_mut(key.1 as usize) {
                    Some(slot) if key.0 == 0 => *slot = Some(functions.row_ref(row)),
                    _ => {
                        self.function_rows.insert(key, row);
                    }
                }
                row
            }
        };
        Some(functions.row(row))
    }

    /// The row of edge `key`, appended at its first call.
    #[inline]
    fn edge(&mut self, key: (u32, u32)) -> Option<&Row<3>> {
        let edges = &self.data.edges;
        let row = match self.edge_rows.get(&key) {
            Some(&row) => row,
            None => {
                let row = edges.append((u64::from(key.0), u64::from(key.1)))?;
                self.edge_rows.insert(key, row);
                row
            }
        };
        Some(edges.row(row))
    }

    /// The fprof edge row `key`, `(caller, callsite)`, of a call in stack
    /// node `node`: kept in the node once found.
    #[inline]
    fn edge_of(&mut self, node: u32, key: (u32, u32)) -> Option<&Row<3>> {
        match self.node_info.get(node as usize) {
            Some(NodeInfo {
                edge: Some((kept, edge)),
                ..
            }) if *kept == key => {
                // Safety: a row of `self.data`, which `self` keeps.
                Some(unsafe { edge.get() })
            }
            _ => {
                let edge = self.edge(key)?;
                let found = RowRef::from(edge);
                if let Some(info) = self.node_info.get_mut(node as usize) {
                    info.edge = Some((key, found));
                }
                // Safety: as above.
                Some(unsafe { found.get() })
            }
        }
    }

    /// Adds own ticks to stack node `node` (0, the root, has none).
    #[inline]
    fn add_own(&self, node: u32, own: u64) {
        if let Some(NodeInfo { row: Some(row), .. }) = self.node_info.get(node as usize) {
            // Safety: a row of `self.data`, which `self` keeps.
            unsafe { row.get() }.add(0, own);
        }
    }
}

/// Counts a call of `cs` for cprof.
#[inline(never)]
pub(crate) fn count(cs: u32) {
    let (generation, counters) = COUNTERS.get();
    if generation == GENERATION.load(Ordering::Acquire) && !counters.is_null() {
        // Safety: the counters of this thread's profile state of this
        // generation, which this thread alone replaces or drops, and whose
        // drop clears them here first.
        if let Some(counter) = unsafe { &*counters }.get(cs as usize) {
            counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return;
        }
    }
    count_slowly(cs);
}

#[cold]
fn count_slowly(cs: u32) {
    with_thread(|t| {
        t.count(cs);
        COUNTERS.set((t.generation, &raw const *t.data.counts));
    });
}

/// A call entered `cs` at `start` (the clock read its trace record uses
/// too): cprof counts it; eprof and fprof push its frame, for an async
/// call or a span the frame of its first poll, which begins with the
/// call. Returns the profile's generation, if the call is profiled.
#[inline(never)]
pub(crate) fn enter(cs: u32, start: u64) -> Option<NonZeroU64> {
    with_thread(|t| {
        t.enter(cs, start)
            .then(|| NonZeroU64::new(t.generation))
            .flatten()
    })
    .flatten()
}

/// [`enter`] for a sync call that only this profile times (see
/// [`TIMED_ONLY`]): returns the depth of the thread's profile stack with
/// its frame on it.
#[inline(never)]
pub(crate) fn enter_timed(cs: u32, start: u64) -> Option<u32> {
    with_thread(|t| {
        let pushed = t.enter(cs, start);
        pushed.then_some(t.stack.len() as u32)
    })
    .flatten()
}

impl ThreadProfile {
    /// Counts the call (cprof, which has no frames) or pushes its frame:
    /// whether it did the latter.
    #[inline(always)]
    fn enter(&mut self, cs: u32, start: u64) -> bool {
        if self.profiler.options.mode == ProfileMode::Cprof {
            self.count(cs);
            return false;
        }
        self.push(cs, start);
        true
    }
}

/// Whether the profile of `generation` still runs: a call begun under a
/// profile that ended is no later one's.
#[inline(always)]
pub(crate) fn is_running(generation: u64) -> bool {
    GENERATION.load(Ordering::Relaxed) == generation
}

/// One completed call's figures.
struct Completed {
    cs: u32,
    /// The key of its process (zero if the profile is not split by them).
    process: u64,
    caller: u32,
    own: u64,
    /// Time from call to return; for async, wall time.
    acc: u64,
    /// For async, the time of its polls.
    busy: Option<u64>,
    /// An outer frame of the same function is on the stack: its `acc`
    /// already counts this call's time.
    recursive: bool,
    /// The stack node the call ran in (for async, its last poll): where
    /// its fprof edge is kept, and, for a sync call, whose own time grows
    /// (async polls add theirs as they end).
    node: u32,
}

/// Where a poll of an async call ran: its traced caller and its stack
/// node, kept by the call until it completes (fprof's edge).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PolledAt {
    caller: u32,
    node: u32,
}

impl PolledAt {
    /// Before any poll: no traced caller.
    pub(crate) const NOWHERE: PolledAt = PolledAt {
        caller: ROOT,
        node: 0,
    };
}

impl ThreadProfile {
    /// Adds one completed call to the function's figures and, for fprof,
    /// to its caller edge.
    #[inline(always)]
    fn complete(&mut self, c: Completed) {
        let key = (c.process, c.cs);
        let options = self.profiler.options;
        if let Some(f) = self.function(key) {
            f.add(CALLS, 1);
            f.add(OWN, c.own);
            if !c.recursive {
                f.add(ACC, c.acc);
            }
            if let Some(busy) = c.busy {
                f.add(BUSY, busy);
                f.add(ASYNC, 1);
            }
        }
        if options.histogram {
            self.record_latency(key, c.acc);
        }
        if options.mode == ProfileMode::Fprof
            && let Some(e) = self.edge_of(c.node, (c.caller, c.cs))
        {
            e.add(CALLS, 1);
            e.add(OWN, c.own);
            e.add(ACC, c.acc);
        }
        if c.busy.is_none() {
            self.add_own(c.node, c.own);
        }
    }

    /// Adds a call's latency to its histogram: the one lock on a call's
    /// path, taken only when histograms were asked for.
    #[cold]
    fn record_latency(&self, key: (u64, u32), acc: u64) {
        let mut histograms = self
            .data
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let h = histograms
            .entry(key)
            .or_insert_with(|| Histogram::new(3).expect("3 significant figures"));
        let _ = h.record(clock::nanos_between(0, acc).max(1));
    }
}

/// A sync call of `cs` returned or unwound at `end`.
#[inline(never)]
pub(crate) fn exit(cs: u32, pid: Pid, end: u64) {
    with_thread(|t| {
        let process = t.pid_key(pid);
        t.exit(cs, process, end);
    });
}

/// A sync call of `cs` that only this profile times (see [`TIMED_ONLY`])
/// returned or unwound at `end`; its frame was pushed at `depth`. A frame
/// at another depth is another call's, of the same function, if calls did
/// not nest (a stackful coroutine switched stacks on this thread).
#[inline(never)]
pub(crate) fn exit_timed(cs: u32, depth: u32, end: u64) {
    with_thread(|t| {
        if t.stack.len() == depth as usize {
            t.exit(cs, 0, end);
        }
    });
}

impl ThreadProfile {
    /// Pops a sync call's frame and adds the call, in process `process`
    /// (its pid's key).
    #[inline(always)]
    fn exit(&mut self, cs: u32, process: u64, end: u64) {
        let Some((elapsed, own, caller, node, recursive)) = self.pop(cs, end) else {
            return;
        };
        self.complete(Completed {
            cs,
            process,
            caller,
            own,
            acc: elapsed,
            busy: None,
            recursive,
            node,
        });
    }
}

/// A poll of async `cs` after its first begins (the first's frame is
/// pushed by [`enter`]): its frame is on the stack while it runs.
#[inline(never)]
pub(crate) fn enter_poll(cs: u32, start: u64) {
    with_thread(|t| t.push(cs, start));
}

/// A poll of async `cs` ended; returns its own ticks (the poll's time less
/// its traced callees') and where it ran.
#[inline(never)]
pub(crate) fn exit_poll(cs: u32, end: u64) -> (u64, PolledAt) {
    with_thread(|t| t.pop_poll(cs, end))
        .flatten()
        .unwrap_or((0, PolledAt::NOWHERE))
}

/// Async `cs` completed: one call, with the own and busy ticks of its polls
/// and its wall ticks, for the profile of `generation` (the one its first
/// poll's frame was pushed in) if it still runs.
#[inline(never)]
pub(crate) fn complete_async(
    generation: u64,
    cs: u32,
    pid: Pid,
    at: PolledAt,
    own: u64,
    busy: u64,
    wall: u64,
) {
    with_thread(|t| {
        if t.generation == generation {
            t.complete_async(cs, pid, at, own, busy, wall);
        }
    });
}

/// The last poll of async `cs` ended at `end`, and the call completes:
/// [`exit_poll`] and [`complete_async`] in one visit of the thread's
/// state. `own` is the own ticks of the earlier polls; `busy` and `wall`
/// count this one. A profile that began during the poll is not the
/// call's (`generation`): it gets nothing.
#[inline(never)]
pub(crate) fn exit_last_poll(
    generation: u64,
    cs: u32,
    pid: Pid,
    end: u64,
    own: u64,
    busy: u64,
    wall: u64,
) {
    with_thread(|t| {
        if t.generation != generation {
            return;
        }
        let (last, at) = t.pop_poll(cs, end).unwrap_or((0, PolledAt::NOWHERE));
        t.complete_async(cs, pid, at, own + last, busy, wall);
    });
}

impl ThreadProfile {
    /// Pops a poll's frame: its own ticks go to its stack node.
    #[inline(always)]
    fn pop_poll(&mut self, cs: u32, end: u64) -> Option<(u64, PolledAt)> {
        let (_, own, caller, node, _) = self.pop(cs, end)?;
        self.add_own(node, own);
        Some((own, PolledAt { caller, node }))
    }

    #[inline(always)]
    fn complete_async(&mut self, cs: u32, pid: Pid, at: PolledAt, own: u64, busy: u64, wall: u64) {
        self.complete(Completed {
            cs,
            process: self.pid_key(pid),
            caller: at.caller,
            own,
            acc: wall,
            busy: Some(busy),
            recursive: false,
            node: at.node,
        });
    }
}

/// A running profile: `cprof`, `eprof` or `fprof` of this node.
///
/// ```
/// use nodetrace_agent::{Profile, ProfileOptions};
/// use nodetrace_protocol::ProfileMode;
///
/// #[nodetrace_agent::traced]
/// fn work(n: u64) -> u64 { n + 1 }
///
/// let options = ProfileOptions { mode: ProfileMode::Cprof, histogram: false, per_process: false };
/// let profile = Profile::start(options, &[]).unwrap();
/// for i in 0..10 { work(i); }
/// let snapshot = profile.stop();
/// assert_eq!(snapshot.functions[0].calls, 10);
/// ```
pub struct Profile {
    session: Session,
    profiler: Arc<Profiler>,
}

impl Profile {
    /// Starts profiling the functions `patterns` match (every traceable
    /// function if none) in every process; returns the profile and how many
    /// functions it covers.
    pub fn start(options: ProfileOptions, patterns: &[Pattern]) -> Result<Profile, ProfileError> {
        Profile::start_in(options, patterns, Procs::All)
    }

    /// Like [`Profile::start`], in the processes `procs` selects.
    pub fn start_in(
        options: ProfileOptions,
        patterns: &[Pattern],
        procs: Procs,
    ) -> Result<Profile, ProfileError> {
        if options.mode == ProfileMode::Sample {
            return Err(ProfileError::Sampled);
        }
        let session = Session::start(SessionOptions {
            args: false,
            returns: false,
            profile: Some(options.mode),
            ..SessionOptions::default()
        })?;
        let generation = GENERATION.load(Ordering::Relaxed) + 1;
        let profiler = Arc::new(Profiler {
            generation,
            options,
            start: clock::now(),
            threads: Mutex::new(Vec::new()),
        });
        let previous = PROFILER.compare_and_swap(&None::<Arc<Profiler>>, Some(profiler.clone()));
        if previous.is_some() {
            return Err(ProfileError::Busy);
        }
        GENERATION.store(generation, Ordering::Release);
        let profile = Profile { session, profiler };
        let everyone = matches!(procs, Procs::All);
        profile.session.processes(procs, ProcFlags::CALLS)?;
        let every: [Pattern; 1] = ["*".parse().expect("`*` is a pattern")];
        let patterns = if patterns.is_empty() {
            &every[..]
        } else {
            patterns
        };
        for pattern in patterns {
            // With the `tracing` bridge, a pattern may name spans not reached yet.
            if profile.session.trace_pattern(pattern) == 0 && !crate::bridge::is_installed() {
                return Err(ProfileError::NothingMatched(pattern.to_string()));
            }
        }
        if everyone {
            let bits = session_bits(profile.session.slot(), true, false);
            match options.mode {
                ProfileMode::Cprof => COUNT_ONLY.store(bits, Ordering::Relaxed),
                _ if !options.per_process => TIMED_ONLY.store(bits, Ordering::Relaxed),
                _ => {}
            }
        }
        Ok(profile)
    }

    /// Functions the profile covers.
    pub fn functions(&self) -> usize {
        callsites().iter().filter(|c| c.is_enabled()).count()
    }

    /// Everything measured so far, merged over threads.
    pub fn snapshot(&self) -> ProfileSnapshot {
        snapshot(&self.profiler)
    }

    /// Stops profiling (every callsite it switched on goes off) and returns
    /// the final figures.
    pub fn stop(self) -> ProfileSnapshot {
        self.session.stop();
        snapshot(&self.profiler)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        COUNT_ONLY.store(0, Ordering::Relaxed);
        TIMED_ONLY.store(0, Ordering::Relaxed);
        self.session.stop();
        // The generation moves on before the profile leaves: a profile
        // started as soon as it left keeps the generation it stores.
        GENERATION.fetch_add(1, Ordering::AcqRel);
        PROFILER.compare_and_swap(&Some(self.profiler.clone()), None::<Arc<Profiler>>);
    }
}

fn snapshot(profiler: &Profiler) -> ProfileSnapshot {
    let ns = |ticks: u64| clock::nanos_between(0, ticks);
    let threads = profiler
        .threads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut functions: FxHashMap<(u64, u32), FunctionAggregate> = FxHashMap::default();
    let mut edges: FxHashMap<(u32, u32), EdgeAggregate> = FxHashMap::default();
    let mut stacks: FxHashMap<Vec<u32>, u64> = FxHashMap::default();
    for thread in &threads {
        if profiler.options.mode == ProfileMode::Cprof {
            for (cs, count) in thread.counts.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                if n > 0 {
                    functions.entry((0, cs as u32)).or_default().calls += n;
                }
            }
        }
        for row in thread.functions.rows() {
            let (pid, cs) = row.key();
            let into = functions.entry((pid, cs as u32)).or_default();
            into.calls += row.get(CALLS);
            into.own += row.get(OWN);
            into.acc += row.get(ACC);
            if row.get(ASYNC) > 0 {
                *into.busy.get_or_insert(0) += row.get(BUSY);
            }
        }
        let histograms = thread.histograms.lock().unwrap_or_else(|p| p.into_inner());
        for (key, h) in histograms.iter() {
            match &mut functions.entry(*key).or_default().histogram {
                Some(merged) => {
                    let _ = merged.add(h);
                }
                into => *into = Some(h.clone()),
            }
        }
        drop(histograms);
        for row in thread.edges.rows() {
            let (caller, callee) = row.key();
            let into = edges.entry((caller as u32, callee as u32)).or_default();
            into.calls += row.get(CALLS);
            into.acc += row.get(ACC);
            into.own += row.get(OWN);
        }
        let nodes: Vec<((u64, u64), u64)> =
            thread.nodes.rows().map(|r| (r.key(), r.get(0))).collect();
        for (i, &(_, own)) in nodes.iter().enumerate().filter(|(_, n)| n.1 > 0) {
            let mut frames = Vec::new();
            let mut node = i + 1;
            while node != 0 {
                let ((parent, cs), _) = nodes[node - 1];
                frames.push(cs as u32);
                node = parent as usize;
            }
            frames.reverse();
            *stacks.entry(frames).or_default() += own;
        }
    }
    let percentile = |h: &Histogram<u64>| Percentiles {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    };
    let mut snapshot = ProfileSnapshot {
        elapsed_ns: ns(clock::now().saturating_sub(profiler.start)),
        functions: functions
            .into_iter()
            .map(|((pid, cs), f)| FunctionProfile {
                callsite: cs,
                pid: profiler.options.per_process.then(|| Pid::from_bits(pid)),
                calls: f.calls,
                own_ns: ns(f.own),
                acc_ns: ns(f.acc),
                busy_ns: f.busy.map(ns),
                histogram: f.histogram.as_ref().map(percentile),
            })
            .collect(),
        edges: edges
            .into_iter()
            .map(|((caller, callee), e)| CallEdge {
                caller: (caller != ROOT).then_some(caller),
                callee,
                calls: e.calls,
                acc_ns: ns(e.acc),
                own_ns: ns(e.own),
            })
            .collect(),
        stacks: stacks
            .into_iter()
            .map(|(frames, own)| StackSample {
                frames,
                own_ns: ns(own),
            })
            .collect(),
        ..ProfileSnapshot::default()
    };
    snapshot.functions.sort_by_key(|f| (f.callsite, f.pid));
    snapshot.edges.sort_by_key(|e| (e.caller, e.callee));
    snapshot.stacks.sort_by(|a, b| a.frames.cmp(&b.frames));
    snapshot
}
