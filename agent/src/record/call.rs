//! The recording path of a traced function: what `#[traced]` expands to call.
//!
//! [`flags`] and the `flags != 0` test before [`enter`] (or in
//! [`start_call`]) are the only code a switched-off function runs: one
//! relaxed load of its callsite's flags and a branch, inlined, and the test
//! of the [`Call`]'s flag when it returns. Everything else lives behind
//! those branches, out of line: choosing the sessions that want this call
//! in this process, formatting the arguments if asked (bounded), and
//! writing a call record with a timestamp. [`Call::exit`] then writes the
//! return record with the elapsed time, or, if the function unwinds, the
//! [`Call`]'s drop writes an exception record with the panic message;
//! [`Traced`] does the same for an async call.
//!
//! A sync call reaches that code through one pointer that the first
//! switch-on sets ([`switch_on`]), so a binary that never switches a
//! callsite on, and has no traced `async fn`, links none of the recording
//! runtime.

use std::cell::{RefCell, RefMut};
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::task::{Context, Poll};

use nodetrace_protocol::{EventKind, Pid};

use crate::process::self_pid;
use crate::profile;
use crate::record::callsite::Callsite;
use crate::record::fmt::ArgWriter;
use crate::record::ring::{is_agent_thread, push, untraced};
use crate::record::{clock, panics};
use crate::session::{POLL_SESSIONS, Plain, SLOTS, for_each_slot};

/// A call being recorded: who, for which sessions, since when.
#[doc(hidden)]
#[derive(Debug)]
pub struct Active {
    /// The callsite's id, found once per call (finding it reads the
    /// callsite slice's bounds).
    id: u32,
    /// A sync call's profile frame is pushed and popped around it; an
    /// async call's or a span's around each of its polls.
    polled: bool,
    pid: Pid,
    /// Sessions that recorded the call.
    mask: u32,
    /// Those of them that want its return event.
    returns: u32,
    /// Those of them that want the return value.
    ret: u32,
    /// The profile that has this call's frame (for an async call or a
    /// span, its first poll's), by generation; zero: none.
    profile: u64,
    bound: usize,
    start: u64,
}

/// Sessions that want a call, decided before anything is formatted.
#[doc(hidden)]
#[derive(Debug)]
pub struct Pending {
    pid: Pid,
    mask: u32,
    returns: u32,
    /// A profile wants the call.
    profile: bool,
    /// Bound on the argument text, zero if no session wants arguments.
    args_bound: usize,
    bound: usize,
}

#[inline(always)]
fn sessions_for(flags: u64) -> Option<Pending> {
    if is_agent_thread() {
        return None;
    }
    let pid = self_pid();
    if let Some(plain) = plain_session(flags) {
        return Some(Pending::plain(pid, flags, plain));
    }
    let (mut mask, mut returns, mut args_bound, mut bound) = (0u32, 0u32, 0usize, 0usize);
    let mut profile = false;
    for_each_slot(
        flags as u32,
        #[inline(always)]
        |i, s| {
            if s.profile.load(Ordering::Relaxed) {
                profile |= s.traces_calls_of(pid);
            } else if s.traces_calls_of(pid) && s.admit() {
                mask |= 1 << i;
                if s.returns.load(Ordering::Relaxed) {
                    returns |= 1 << i;
                }
                bound = bound.max(s.text_bound.load(Ordering::Relaxed));
                args_bound = args_bound.max(s.args_bound.load(Ordering::Relaxed));
            }
        },
    );
    (mask != 0 || profile).then_some(Pending {
        pid,
        mask,
        returns,
        profile,
        args_bound,
        bound,
    })
}

/// The one plain session that `flags` names, if so (the common case): its
/// slot's word is all a call then reads of it.
#[inline(always)]
fn plain_session(flags: u64) -> Option<Plain> {
    let one = flags as u32;
    if !one.is_power_of_two() {
        return None;
    }
    SLOTS[one.trailing_zeros() as usize].plain()
}

impl Pending {
    #[inline(always)]
    fn plain(pid: Pid, flags: u64, plain: Plain) -> Pending {
        let mask = flags as u32;
        Pending {
            pid,
            mask,
            returns: if plain.returns() { mask } else { 0 },
            profile: false,
            args_bound: plain.args_bound(),
            bound: plain.text_bound(),
        }
    }
}

/// Starts recording a call for the sessions and profile `pending` names;
/// `sync`: the call is a traced `fn`'s, whose frame is never polled.
#[inline(always)]
fn begin(
    cs: &'static Callsite,
    flags: u64,
    sync: bool,
    pending: Pending,
    args: Option<Box<str>>,
) -> Option<Active> {
    let mut mask = pending.mask;
    if let Some(text) = &args {
        for_each_slot(mask, |i, s| {
            if !s.accepts_args(text) {
                mask &= !(1 << i);
            }
        });
    }
    if mask == 0 && !pending.profile {
        return None;
    }
    // One clock read starts both the trace's call and the profile's frame.
    let start = clock::now();
    let (id, polled) = (cs.id(), !sync && cs.is_polled());
    let profile = pending
        .profile
        .then(|| profile::enter(id, start))
        .flatten()
        .map_or(0, NonZeroU64::get);
    if mask == 0 && profile == 0 {
        return None;
    }
    if mask != 0 {
        push(
            EventKind::Call,
            mask,
            id,
            u64::MAX,
            pending.pid,
            start,
            0,
            args,
        );
    }
    Some(Active {
        id,
        polled,
        pid: pending.pid,
        mask,
        returns: pending.returns & mask,
        ret: (flags >> 32) as u32 & pending.returns & mask,
        profile,
        bound: pending.bound,
        start,
    })
}

/// What writes a call's arguments or its value, as a trait object: the
/// recording code then exists once in the binary, not once per traced
/// function (the writer runs only when a session asks, where one indirect
/// call is nothing next to the formatting).
type Writer<'a> = &'a mut dyn FnMut(&mut ArgWriter);

/// Records an async call if any session traces `cs` in this process;
/// `args` writes the arguments and runs only if a session wants them.
/// Called only when `flags` is not zero (the expansion tests it).
#[doc(hidden)]
#[inline(always)]
pub fn start_call(
    cs: &'static Callsite,
    flags: u64,
    mut args: impl FnMut(&mut ArgWriter),
) -> Option<Active> {
    record_call(cs, flags, &mut args)
}

#[inline(never)]
fn record_call(cs: &'static Callsite, flags: u64, args: Writer<'_>) -> Option<Active> {
    record(cs, flags, args)
}

/// The recording runtime as a traced `fn` reaches it: through one
/// pointer, [`OFF`] until the first callsite is switched on
/// ([`switch_on`]), then [`ON`]. A binary that never starts a session, a
/// profile or a node so links none of the runtime (sessions, rings, the
/// collector, the profiler), as `tracing`'s global dispatcher leaves out
/// the subscribers nobody sets; a switched-on call pays two loads and an
/// indirect call for it, at its call and at its return. An `async fn`
/// calls [`start_call`] directly: its wrapper's polls call the
/// recording anyway.
struct Runtime {
    enter: fn(&'static Callsite, u64, Writer<'_>) -> u64,
    returned: fn(u64, Writer<'_>),
    dropped: fn(u64),
}

/// No callsite was ever switched on. Its return and drop never run: a
/// `Call` is only recorded by [`ON`], and a thread that has read `ON` here
/// never reads `OFF` again.
static OFF: Runtime = Runtime {
    enter: enter_off,
    returned: |_, _| {},
    dropped: |_| {},
};

/// A call whose flags read set while its thread still read [`OFF`] (on a
/// weakly ordered CPU, racing the first switch-on): the fence pairs with
/// the flags' release in `Callsite::set_bits`, after which the pointer
/// reads `ON`. Naming `ON` only through the pointer keeps it unlinked.
#[cold]
fn enter_off(cs: &'static Callsite, flags: u64, args: Writer<'_>) -> u64 {
    std::sync::atomic::fence(Ordering::Acquire);
    let runtime = runtime();
    if std::ptr::eq(runtime, &OFF) {
        return 0;
    }
    (runtime.enter)(cs, flags, args)
}

static ON: Runtime = Runtime {
    enter: enter_on,
    returned: returned_on,
    dropped: dropped_on,
};

static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::from_ref(&OFF).cast_mut());

#[inline(always)]
fn runtime() -> &'static Runtime {
    // Safety: `RUNTIME` only ever holds `&OFF` or `&ON`.
    unsafe { &*RUNTIME.load(Ordering::Relaxed) }
}

/// Points traced functions at the recording runtime; called before a
/// callsite's flags are set, which they are with release ordering, so a
/// call that reads them set finds it (see [`enter_off`]).
pub(crate) fn switch_on() {
    RUNTIME.store(std::ptr::from_ref(&ON).cast_mut(), Ordering::Relaxed);
}

#[inline(always)]
fn record(cs: &'static Callsite, flags: u64, args: Writer<'_>) -> Option<Active> {
    if counted(cs, flags) {
        return None;
    }
    if flags == profile::TIMED_ONLY.load(Ordering::Relaxed) {
        return timed(cs);
    }
    record_sessions(cs, flags, false, args)
}

/// An async call or a span that only a profile times (of every process,
/// not split by them): its frame is pushed, and no session is chosen.
#[inline(never)]
fn timed(cs: &'static Callsite) -> Option<Active> {
    if is_agent_thread() {
        return None;
    }
    let start = clock::now();
    let id = cs.id();
    let generation = profile::enter(id, start)?;
    Some(Active {
        id,
        polled: cs.is_polled(),
        pid: NOT_READ,
        mask: 0,
        returns: 0,
        ret: 0,
        profile: generation.get(),
        bound: 0,
        start,
    })
}

/// The pid of a call that only a profile not split by process wants: it
/// is not read.
const NOT_READ: Pid = Pid::process(0);

/// Counts the call if only a cprof of every process wants it: then
/// nothing else is done. The first step of every switched-on call, it
/// reads the profile words ([`profile::COUNT_ONLY`], then
/// [`profile::TIMED_ONLY`]) after an acquire fence that pairs with the
/// flags' release in `Callsite::set_bits` (no instruction on x86-64,
/// which does not reorder loads).
#[inline(always)]
fn counted(cs: &'static Callsite, flags: u64) -> bool {
    std::sync::atomic::fence(Ordering::Acquire);
    if flags == profile::COUNT_ONLY.load(Ordering::Relaxed) {
        profile::count(cs.id());
        return true;
    }
    false
}

#[inline(always)]
fn record_sessions(
    cs: &'static Callsite,
    flags: u64,
    sync: bool,
    args: Writer<'_>,
) -> Option<Active> {
    let pending = sessions_for(flags)?;
    record_pending(cs, flags, sync, pending, args)
}

/// Formats the arguments if a session wants them, and records the call.
#[inline(always)]
fn record_pending(
    cs: &'static Callsite,
    flags: u64,
    sync: bool,
    pending: Pending,
    args: Writer<'_>,
) -> Option<Active> {
    let text = (pending.args_bound > 0 && pending.mask != 0).then(|| {
        let mut w = ArgWriter::new(pending.args_bound, pending.pid);
        untraced(|| args(&mut w));
        w.finish()
    });
    begin(cs, flags, sync, pending, text)
}

impl Active {
    /// Whether a profile has this call's frame and still runs.
    #[inline(always)]
    fn profiled(&self) -> bool {
        self.profile != 0 && profile::is_running(self.profile)
    }

    /// The return value's text, if a session wants it: the test inline,
    /// the formatting out of line.
    #[inline(always)]
    fn value(&self, ret: Writer<'_>) -> Option<Box<str>> {
        if self.ret == 0 {
            return None;
        }
        self.format_value(ret)
    }

    #[inline(never)]
    fn format_value(&self, ret: Writer<'_>) -> Option<Box<str>> {
        let mut w = ArgWriter::new(self.bound, self.pid);
        untraced(|| ret(&mut w));
        Some(w.finish()).filter(|text| !text.is_empty())
    }

    /// Records the end of the call for the sessions that want it; a
    /// profile's call (no session) returns before any of the push's code.
    #[inline(always)]
    fn end(&self, kind: EventKind, end: u64, busy: Option<u64>, text: Option<Box<str>>) {
        let mask = if kind == EventKind::Return {
            self.returns
        } else {
            self.mask
        };
        if mask != 0 {
            self.push_end(kind, mask, end, busy, text);
        }
    }

    #[inline(never)]
    fn push_end(
        &self,
        kind: EventKind,
        mask: u32,
        end: u64,
        busy: Option<u64>,
        text: Option<Box<str>>,
    ) {
        push(
            kind,
            mask,
            self.id,
            busy.unwrap_or(u64::MAX),
            self.pid,
            end,
            end.saturating_sub(self.start),
            text,
        );
    }

    /// Records a sync call's return: the clock read, the profile frame's
    /// pop and the return record's push, inlined into the one function a
    /// return runs (each out of line had its own prologue).
    #[inline(always)]
    fn returned(&self, ret: Writer<'_>) {
        let end = clock::now();
        self.leave_profile(end);
        let text = self.value(ret);
        if self.returns != 0 {
            let ticks = end.saturating_sub(self.start);
            push(
                EventKind::Return,
                self.returns,
                self.id,
                u64::MAX,
                self.pid,
                end,
                ticks,
                text,
            );
        }
    }

    /// Pops a sync call's profile frame.
    #[inline(always)]
    fn leave_profile(&self, end: u64) {
        if !self.polled && self.profiled() {
            profile::exit(self.id, self.pid, end);
        }
    }

    /// The sessions that recorded this call and want its polls: one load
    /// of a word that stays zero unless a session asked for polls.
    #[inline(always)]
    fn polls(&self) -> u32 {
        self.mask & POLL_SESSIONS.load(Ordering::Relaxed)
    }

    #[cold]
    #[inline(never)]
    fn unwound(&self, message: String) {
        let end = clock::now();
        self.leave_profile(end);
        self.end(
            EventKind::Exception,
            end,
            None,
            Some(message.into_boxed_str()),
        );
    }
}

/// Records a poll's `in` (at its start, `ticks` zero) or `out` (at its
/// end, `ticks` its length) for the sessions in `polls`.
#[cold]
#[inline(never)]
fn record_poll(kind: EventKind, polls: u32, cs: u32, pid: Pid, ts: u64, ticks: u64) {
    push(kind, polls, cs, u64::MAX, pid, ts, ticks, None);
}

/// A sync traced call: whether it was recorded, as the depth of this
/// thread's stack of calls once it was pushed (zero: not recorded), or,
/// for a call that only a profile times, [`TIMED`] with its callsite and
/// the depth of the thread's profile stack. The
/// recorded call itself waits on that stack (sync calls nest, so their
/// ends come in the reverse order of their starts), so that the traced
/// function's frame holds one word: a switched-off call keeps it in a
/// register, and a switched-on one adds no more than that to the stack of
/// a deep recursion. The depth keeps a return from taking another call's
/// record if calls did not nest (a stackful coroutine switched stacks on
/// this thread): the records above its own are dropped, and a return whose
/// record is gone records nothing.
#[doc(hidden)]
pub struct Call(u64);

/// The bit of a [`Call`] that only a profile times: bits 32 to 62 hold its
/// callsite id, bits 0 to 31 the depth of its frame.
const TIMED: u64 = 1 << 63;

thread_local! {
    /// The recorded sync calls of this thread that have not returned.
    static CALLS: RefCell<Vec<Active>> = const { RefCell::new(Vec::new()) };
}

/// Pushes a recorded call on this thread's stack and returns the depth;
/// the call back if the stack is busy (a traced function ran inside a
/// push: from the allocator growing the stack, or a signal handler). Past
/// the thread-locals' destruction the call is dropped (depth zero).
fn push_call(active: Active) -> Result<u32, Active> {
    CALLS
        .try_with(|calls| match calls.try_borrow_mut() {
            Ok(mut calls) => {
                calls.push(active);
                Ok(calls.len() as u32)
            }
            Err(_) => Err(active),
        })
        .unwrap_or(Ok(0))
}

/// Ends the call pushed at `depth` on this thread's stack with `end`, and
/// takes it off, dropping any left above it. The call stays on the stack
/// while `end` runs, so it is not copied off it; a traced function that
/// runs meanwhile outside `untraced` (from the allocator) finds the stack
/// busy, as in a push.
#[inline(always)]
fn pop_call(depth: u32, end: impl FnOnce(&Active)) {
    /// Takes the call off even if `end` unwinds (a return value's `Debug`
    /// that panics).
    struct Pop<'a>(RefMut<'a, Vec<Active>>);
    impl Drop for Pop<'_> {
        fn drop(&mut self) {
            self.0.pop();
        }
    }
    let _ = CALLS.try_with(|calls| {
        let Ok(mut calls) = calls.try_borrow_mut() else {
            return;
        };
        let depth = depth as usize;
        if depth == 0 || calls.len() < depth {
            return;
        }
        calls.truncate(depth);
        let calls = Pop(calls);
        if let Some(active) = calls.0.last() {
            end(active);
        }
    });
}

/// The flags word of `cs`, read once per call: zero makes the call a
/// switched-off one (one load and a branch, then the [`Call`]'s zero
/// tested at its return); the switched-on path is handed the same word
/// rather than reading it again.
#[doc(hidden)]
#[inline(always)]
pub fn flags(cs: &'static Callsite) -> u64 {
    cs.flags()
}

/// Gives the body's closure of a traced function the kind `FnOnce`, so that
/// it may return borrows of what it captured (a `&mut self` lends through
/// it as it does through the function).
#[doc(hidden)]
#[inline(always)]
pub fn body<R, F: FnOnce() -> R>(body: F) -> F {
    body
}

/// Pins the output type of an async body: `if false { return never() }` as
/// its first statement makes every `return`, `?` and its tail coerce to the
/// declared type, as in the `async fn` itself. Never runs.
#[doc(hidden)]
#[inline(always)]
pub fn never<T>() -> T {
    unreachable!("nodetrace: a type pin that never runs")
}

/// Records a sync call of `cs` if a session traces it in this process (or
/// a profile counts or times it); `args` writes the arguments and runs
/// only if a session wants them. Called only when `flags` is not zero;
/// returns what the [`Call`] carries, zero if nothing was recorded. A call
/// that cannot wait on the thread's stack returns at once.
///
/// A cprof count, and a call only a profile times, return before the
/// prologue of the rest, which saves every register and aligns the stack
/// for a record.
#[doc(hidden)]
#[inline(always)]
pub fn enter(cs: &'static Callsite, flags: u64, args: Writer<'_>) -> u64 {
    (runtime().enter)(cs, flags, args)
}

fn enter_on(cs: &'static Callsite, flags: u64, args: Writer<'_>) -> u64 {
    if counted(cs, flags) {
        return 0;
    }
    if flags == profile::TIMED_ONLY.load(Ordering::Relaxed) {
        return enter_timed(cs);
    }
    if let Some(plain) = plain_session(flags) {
        return enter_plain(cs, flags, plain, args);
    }
    enter_sessions(cs, flags, args)
}

/// A sync call for one plain session: a function of its own, so that it
/// holds little across its calls (the pid, the clock) and spills little.
#[inline(never)]
fn enter_plain(cs: &'static Callsite, flags: u64, plain: Plain, args: Writer<'_>) -> u64 {
    if is_agent_thread() {
        return 0;
    }
    let pending = Pending::plain(self_pid(), flags, plain);
    match record_pending(cs, flags, true, pending, args) {
        Some(active) => wait_on_stack(active),
        None => 0,
    }
}

#[inline(never)]
fn enter_sessions(cs: &'static Callsite, flags: u64, args: Writer<'_>) -> u64 {
    match record_sessions(cs, flags, true, args) {
        Some(active) => wait_on_stack(active),
        None => 0,
    }
}

/// Puts a recorded sync call on the thread's stack of calls and returns
/// what its `Call` carries: the depth, or zero if it could not wait there
/// (then it returns at once).
#[inline(always)]
fn wait_on_stack(active: Active) -> u64 {
    let depth = push_call(active).unwrap_or_else(|active| {
        active.returned(&mut |_| {});
        0
    });
    u64::from(depth)
}

/// A sync call that only a profile times (of every process, not split by
/// them): its frame on the profile stack is all its record.
#[inline(never)]
fn enter_timed(cs: &'static Callsite) -> u64 {
    if is_agent_thread() {
        return 0;
    }
    let id = cs.id();
    debug_assert!(id < 1 << 31, "a callsite id fits a `Call`'s 31 bits");
    profile::enter_timed(id, clock::now())
        .map_or(0, |depth| TIMED | u64::from(id) << 32 | u64::from(depth))
}

impl Call {
    /// The call: `call` is `if flags != 0 { enter(..) } else { 0 }`.
    #[inline(always)]
    pub fn new(call: u64) -> Call {
        Call(call)
    }

    /// Ends the call with the value it returns, which passes through;
    /// `ret` writes it if a session asks. `ret` is a function, not a
    /// closure, so that the recording of a return exists once per returned
    /// type in the binary, not once per traced function.
    #[inline(always)]
    pub fn exit<R>(self, value: R, ret: fn(&mut ArgWriter, &R)) -> R {
        let call = std::mem::ManuallyDrop::new(self);
        if call.0 != 0 {
            std::hint::cold_path();
            return exit_on(call.0, value, ret);
        }
        value
    }
}

/// The end of a recorded call, out of line, with the value passed in and
/// out, so that a switched-off call never takes the value's address.
#[inline(never)]
fn exit_on<R>(call: u64, value: R, ret: fn(&mut ArgWriter, &R)) -> R {
    (runtime().returned)(call, &mut |w| ret(w, &value));
    value
}

fn returned_on(call: u64, ret: Writer<'_>) {
    if call & TIMED != 0 {
        exit_timed(call);
    } else {
        returned_sessions(call as u32, ret);
    }
}

/// The return of a call recorded for sessions, out of line (a tail call),
/// so that a call only a profile times does not pay its prologue.
#[inline(never)]
fn returned_sessions(depth: u32, ret: Writer<'_>) {
    pop_call(depth, |active| active.returned(ret));
}

/// A call that only a profile times returned or unwound.
fn exit_timed(call: u64) {
    let id = ((call & !TIMED) >> 32) as u32;
    profile::exit_timed(id, call as u32, clock::now());
}

impl Drop for Call {
    /// Ends a recorded call that did not pass through [`Call::exit`]: it is
    /// unwinding, or it is a `#[track_caller]` function (whose body runs
    /// inline, see `#[traced]`) that left through a `return` or a `?`,
    /// with a value this drop cannot see.
    #[inline(always)]
    fn drop(&mut self) {
        if self.0 != 0 {
            std::hint::cold_path();
            (runtime().dropped)(self.0);
        }
    }
}

#[cold]
fn dropped_on(call: u64) {
    if call & TIMED != 0 {
        return exit_timed(call);
    }
    pop_call(call as u32, |active| {
        if std::thread::panicking() {
            active.unwound(panics::message());
        } else {
            active.returned(&mut |_| {});
        }
    });
}

pin_project_lite::pin_project! {
    /// An async traced call: its call was recorded as its first poll
    /// began; it records its return at completion with wall time and busy
    /// time (the sum of its polls), and each poll's `in` and `out` for the
    /// sessions that ask.
    #[doc(hidden)]
    pub struct Traced<F, R> {
        #[pin]
        fut: F,
        active: Option<Active>,
        // Sessions that want each poll's `in` and `out`.
        polls: u32,
        // A poll ran: the next one reads its own start.
        polled: bool,
        busy: u64,
        // Own ticks of the polls, for a profile.
        own: u64,
        ret: R,
    }

    impl<F, R> PinnedDrop for Traced<F, R> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(active) = this.project().active.take() {
                let why = if std::thread::panicking() {
                    panics::message()
                } else {
                    "cancelled: dropped before completion".to_owned()
                };
                active.unwound(why);
            }
        }
    }
}

/// Wraps the body of an async traced call whose call was recorded; the
/// expansion awaits it at once, so its first poll begins with the call.
#[doc(hidden)]
pub fn instrument<F, R>(active: Active, fut: F, ret: R) -> Traced<F, R>
where
    F: Future,
    R: FnMut(&mut ArgWriter, &F::Output),
{
    Traced {
        fut,
        polls: active.polls(),
        active: Some(active),
        polled: false,
        busy: 0,
        own: 0,
        ret,
    }
}

impl<F, R> Future for Traced<F, R>
where
    F: Future,
    R: FnMut(&mut ArgWriter, &F::Output),
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some((profiled, cs, pid, start)) = this
            .active
            .as_ref()
            .map(|a| (a.profiled(), a.id, a.pid, a.start))
        else {
            return this.fut.poll(cx);
        };
        // The first poll begins with the call: the call's clock read is
        // its start, and the call's profile frame its frame.
        let t0 = if *this.polled {
            let t0 = clock::now();
            if profiled {
                profile::enter_poll(cs, t0);
            }
            t0
        } else {
            *this.polled = true;
            start
        };
        let polls = *this.polls;
        if polls != 0 {
            record_poll(EventKind::In, polls, cs, pid, t0, 0);
        }
        // A poll that panics still pops its profile frame, so later calls
        // on this thread are not charged to it.
        let frame = profiled.then(|| PollFrame(cs));
        let polled = this.fut.poll(cx);
        std::mem::forget(frame);
        let t1 = clock::now();
        *this.busy += t1.saturating_sub(t0);
        if polls != 0 {
            record_poll(EventKind::Out, polls, cs, pid, t1, t1.saturating_sub(t0));
        }
        let Poll::Ready(out) = &polled else {
            if profiled {
                *this.own += profile::exit_poll(cs, t1).0;
            }
            return polled;
        };
        if let Some(active) = this.active.take() {
            if profiled {
                let wall = t1.saturating_sub(start);
                let (own, busy) = (*this.own, *this.busy);
                profile::exit_last_poll(active.profile, cs, pid, t1, own, busy, wall);
            }
            let text = active.value(&mut |w| (this.ret)(w, out));
            active.end(EventKind::Return, t1, Some(*this.busy), text);
        }
        polled
    }
}

/// The profile frame of a poll, popped by its drop if the poll unwinds.
struct PollFrame(u32);

impl Drop for PollFrame {
    fn drop(&mut self) {
        profile::exit_poll(self.0, clock::now());
    }
}

/// A `tracing` span traced as a call: recorded at its first enter, its
/// enters and exits are its polls (busy time; a profile's frames), and it
/// returns when it closes (wall time), with the value its `ret` or `err`
/// event carried, if a session asks for it.
#[derive(Debug)]
pub(crate) struct SpanCall {
    active: Active,
    /// Sessions that want each enter's `in` and exit's `out`.
    polls: u32,
    busy: u64,
    own: u64,
    at: profile::PolledAt,
    /// Enters not yet exited, and when the first of them began.
    depth: u32,
    entered: u64,
}

impl SpanCall {
    /// Records the call of span `cs` if a session traces it in this
    /// process; `args` writes its fields. The span is entered.
    pub(crate) fn start(cs: &'static Callsite, args: Writer<'_>) -> Option<SpanCall> {
        let flags = cs.flags();
        if flags == 0 {
            return None;
        }
        let active = record(cs, flags, args)?;
        Some(SpanCall::entered(active, cs))
    }

    fn entered(active: Active, cs: &'static Callsite) -> SpanCall {
        // Its first enter's profile frame was pushed with the call.
        let start = active.start;
        let polls = active.polls();
        if polls != 0 {
            record_poll(EventKind::In, polls, cs.id(), active.pid, start, 0);
        }
        SpanCall {
            active,
            polls,
            busy: 0,
            own: 0,
            at: profile::PolledAt::NOWHERE,
            depth: 1,
            entered: start,
        }
    }

    /// The span was entered again (the next poll of its future).
    pub(crate) fn enter(&mut self) {
        self.depth += 1;
        if self.depth == 1 {
            self.entered = clock::now();
            if self.active.profiled() {
                profile::enter_poll(self.active.id, self.entered);
            }
            if self.polls != 0 {
                let a = &self.active;
                record_poll(EventKind::In, self.polls, a.id, a.pid, self.entered, 0);
            }
        }
    }

    /// The span was exited.
    pub(crate) fn exit(&mut self) {
        if self.depth == 0 {
            return;
        }
        self.depth -= 1;
        if self.depth == 0 {
            let end = clock::now();
            let ticks = end.saturating_sub(self.entered);
            self.busy += ticks;
            if self.polls != 0 {
                let a = &self.active;
                record_poll(EventKind::Out, self.polls, a.id, a.pid, end, ticks);
            }
            if self.active.profiled() {
                let (own, at) = profile::exit_poll(self.active.id, end);
                self.own += own;
                self.at = at;
            }
        }
    }

    /// The span closed: the call returns, with `value` (its `ret` or `err`
    /// event's) if a session wants it.
    pub(crate) fn close(mut self, value: Option<&str>) {
        if self.depth > 0 {
            self.depth = 1;
            self.exit();
        }
        let end = clock::now();
        let active = self.active;
        if active.profiled() {
            let wall = end.saturating_sub(active.start);
            profile::complete_async(
                active.profile,
                active.id,
                active.pid,
                self.at,
                self.own,
                self.busy,
                wall,
            );
        }
        let text = value.and_then(|v| active.value(&mut |w| w.text(v)));
        active.end(EventKind::Return, end, Some(self.busy), text);
    }
}

/// Records a `tracing` event of `cs` for the log sessions in `flags` that
/// watch this process: `text` writes its message and fields, `context`
/// the spans it happened in.
pub(crate) fn record_log(cs: &'static Callsite, flags: u64, text: Writer<'_>, context: Writer<'_>) {
    // The sessions that want it, chosen as for a call (an event's
    // callsite is never a profile's).
    let Some(Pending {
        pid,
        mut mask,
        bound,
        ..
    }) = sessions_for(flags)
    else {
        return;
    };
    if mask == 0 {
        return;
    }
    let ts = clock::now();
    let format = |write: Writer<'_>| {
        let mut w = ArgWriter::new(bound, pid);
        untraced(|| write(&mut w));
        w.finish()
    };
    let message = format(text);
    for_each_slot(mask, |i, s| {
        if !s.accepts_args(&message) {
            mask &= !(1 << i);
        }
    });
    if mask == 0 {
        return;
    }
    let mut all = String::from(message);
    let split = all.len() as u64;
    all.push_str(&format(context));
    push(
        EventKind::Log,
        mask,
        cs.id(),
        split,
        pid,
        ts,
        0,
        Some(all.into_boxed_str()),
    );
}

/// Records a message or sys event for the sessions in `mask`.
pub(crate) fn record_event(
    kind: EventKind,
    mask: u32,
    pid: Pid,
    peer: Option<Pid>,
    text: Option<String>,
    extra: Option<String>,
) {
    let mut text = text.unwrap_or_default();
    let split = text.len() as u32;
    if let Some(extra) = extra {
        text.push_str(&extra);
    }
    let peer = peer.map_or(0, Pid::to_bits);
    let text = Some(text.into_boxed_str());
    push(kind, mask, split, peer, pid, clock::now(), 0, text);
}

/// Records a sys event that took `ticks` of the raw clock up to now (a
/// mailbox's message handled) for the sessions in `mask`.
pub(crate) fn record_timed_event(kind: EventKind, mask: u32, pid: Pid, ticks: u64) {
    push(kind, mask, 0, 0, pid, clock::now(), ticks, None);
}
