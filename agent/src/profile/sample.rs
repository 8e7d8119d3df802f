//! Sampling profiles: full stacks of every thread of this process, taken
//! on a CPU-time timer, with no annotation.
//!
//! The sampler is pprof-rs: while a sample profile runs, an `ITIMER_PROF`
//! timer raises SIGPROF every 1/frequency seconds of the process's CPU
//! time, on the thread that was running, and pprof-rs's handler unwinds
//! that thread's stack with backtrace-rs (the unwinder of libgcc over the
//! binary's `.eh_frame` call frame information, which a release build
//! keeps: no frame pointers needed) into a fixed table. The stacks are
//! symbolised here, in the node, once at the end: the node has its own
//! binary and its libraries mapped at the addresses the samples hold, so
//! the tracer needs neither the binary nor its load addresses.
//!
//! Nothing of it exists until the first sample profile starts: no timer, no
//! handler. When one ends, the timer is stopped, pprof-rs sets SIGPROF to
//! ignored (which discards a signal still pending) and this module puts
//! back the disposition SIGPROF had before the profile. A process whose
//! SIGPROF already has a handler, or whose profiling timer already runs
//! (another profiler), is refused rather than disturbed.
//!
//! Split by process ([`Split::Processes`]), the poll of each process the
//! agent runs (a named task, a gen_server) runs, while the profile lasts,
//! below frames that spell its pid ([`crate::process::marker`]): the
//! handler records them with the rest, and the symbolised stack says which
//! process was running when the sample was taken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nodetrace_protocol::{CallsiteKind, Pid, ProfileSnapshot, SampledFrame, SampledStack};

use crate::process::{marker, processes_unsorted, task};
use crate::record::callsite::callsites;

/// The highest frequency a node samples at.
pub const MAX_FREQUENCY_HZ: u32 = 1000;

/// The longest sample profile a node runs, in milliseconds (5 min).
pub const MAX_SAMPLE_MS: u64 = 300_000;

/// Libraries whose code is not unwound from: a sample that lands in them is
/// dropped, since unwinding from inside the C library or the unwinder
/// itself may deadlock (pprof-rs's advice).
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Why a sample profile could not start.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// One runs already: the timer and SIGPROF belong to the process.
    #[error("a sample profile already runs on this node: one at a time")]
    Busy,
    /// Out of range.
    #[error("a sample frequency is 1 to {MAX_FREQUENCY_HZ} Hz, not {0}")]
    Frequency(u32),
    /// SIGPROF has a handler that is not ours.
    #[error(
        "SIGPROF already has a handler in this process (another profiler?): the sampler leaves it alone"
    )]
    SignalTaken,
    /// `ITIMER_PROF` runs already.
    #[error(
        "a profiling timer (ITIMER_PROF) already runs in this process (another profiler?): the sampler leaves it alone"
    )]
    TimerTaken,
    /// pprof-rs refused.
    #[error("the sampler could not start: {0}")]
    Start(String),
}

static RUNNING: AtomicBool = AtomicBool::new(false);

/// How a sample profile's stacks are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// By the OS thread that was sampled.
    Threads,
    /// Also by the process that was running on it: the node's named tasks
    /// and gen_servers (other code stays with its thread).
    Processes,
}

/// A running sample profile; dropping it stops the sampler and restores
/// SIGPROF's disposition.
pub struct SampleProfile {
    guard: Option<pprof::ProfilerGuard<'static>>,
    previous: libc::sigaction,
    frequency_hz: u32,
    split: Split,
    started: Instant,
}

// Safety: `libc::sigaction` holds plain integers and a function address;
// the guard is only reached through `&mut self` or `&self` calls that
// pprof-rs synchronises with its own lock.
unsafe impl Send for SampleProfile {}
unsafe impl Sync for SampleProfile {}

impl SampleProfile {
    /// Starts sampling every thread at `frequency_hz` samples per second of
    /// CPU time.
    ///
    /// ```no_run
    /// use nodetrace_agent::{SampleProfile, Split};
    ///
    /// let profile = SampleProfile::start(99, Split::Processes).unwrap();
    /// // ... the work to profile ...
    /// let stacks = profile.stop().samples;
    /// ```
    pub fn start(frequency_hz: u32, split: Split) -> Result<SampleProfile, SampleError> {
        if !(1..=MAX_FREQUENCY_HZ).contains(&frequency_hz) {
            return Err(SampleError::Frequency(frequency_hz));
        }
        if RUNNING.swap(true, Ordering::AcqRel) {
            return Err(SampleError::Busy);
        }
        match Self::start_sampler(frequency_hz, split) {
            Ok(profile) => {
                marker::take_ended();
                task::set_marking(split == Split::Processes);
                Ok(profile)
            }
            Err(e) => {
                RUNNING.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    fn start_sampler(frequency_hz: u32, split: Split) -> Result<SampleProfile, SampleError> {
        let previous = sigprof_disposition();
        if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN {
            return Err(SampleError::SignalTaken);
        }
        if profiling_timer_runs() {
            return Err(SampleError::TimerTaken);
        }
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(frequency_hz as i32)
            .blocklist(&BLOCKLIST)
            .build()
            .map_err(|e| SampleError::Start(e.to_string()))?;
        Ok(SampleProfile {
            guard: Some(guard),
            previous,
            frequency_hz,
            split,
            started: Instant::now(),
        })
    }

    /// The frequency it samples at.
    pub fn frequency_hz(&self) -> u32 {
        self.frequency_hz
    }

    /// How long it has run, without its stacks (symbolising is for the end).
    pub fn snapshot(&self) -> ProfileSnapshot {
        ProfileSnapshot {
            elapsed_ns: self.started.elapsed().as_nanos() as u64,
            frequency_hz: self.frequency_hz,
            ..ProfileSnapshot::default()
        }
    }

    /// Stops sampling and returns every stack seen, symbolised.
    pub fn stop(mut self) -> ProfileSnapshot {
        let mut snapshot = self.snapshot();
        snapshot.samples = self.stacks();
        self.end();
        snapshot
    }

    /// The stacks so far, symbolised, merged by thread and frames.
    fn stacks(&self) -> Vec<SampledStack> {
        let Some(report) = self.guard.as_ref().and_then(|g| g.report().build().ok()) else {
            return Vec::new();
        };
        let names = callsite_names();
        type Key = (String, Option<Pid>, Vec<SampledFrame>);
        let mut merged: HashMap<Key, u64> = HashMap::new();
        for (frames, count) in &report.data {
            if *count <= 0 {
                continue;
            }
            // pprof-rs lists frames innermost first, and within a frame the
            // inlined functions innermost first.
            let mut leaf_first: Vec<SampledFrame> = frames
                .frames
                .iter()
                .flat_map(|frame| frame.iter())
                .map(|symbol| SampledFrame {
                    function: without_hash(&symbol.name()),
                    file: symbol.filename.as_ref().map(|f| f.display().to_string()),
                    line: symbol.lineno,
                })
                .collect();
            // The unwinder's own frames, above the interrupted code.
            let own = leaf_first
                .iter()
                .take_while(|f| is_sampler_frame(&f.function))
                .count();
            leaf_first.drain(..own);
            leaf_first.reverse();
            let mut pid = None;
            if self.split == Split::Processes {
                pid = marker::read(leaf_first.iter().map(|f| f.function.as_str()));
                leaf_first.retain(|f| !marker::is_marker_frame(&f.function));
            }
            let root_first = link_callsites(leaf_first, &names);
            *merged
                .entry((frames.thread_name_or_id(), pid, root_first))
                .or_default() += *count as u64;
        }
        let registered: HashMap<Pid, String> = match self.split {
            Split::Threads => HashMap::new(),
            Split::Processes => marker::take_ended()
                .into_iter()
                .chain(
                    processes_unsorted()
                        .into_iter()
                        .filter_map(|p| Some((p.pid, p.name?))),
                )
                .collect(),
        };
        let mut stacks: Vec<SampledStack> = merged
            .into_iter()
            .map(|((thread, pid, frames), samples)| SampledStack {
                thread,
                process: pid.and_then(|p| registered.get(&p).cloned()),
                pid,
                frames,
                samples,
            })
            .collect();
        stacks.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.thread.cmp(&b.thread)));
        stacks
    }

    /// Stops the timer, removes the handler (pprof-rs leaves SIGPROF
    /// ignored, which discards one still pending) and restores the
    /// disposition SIGPROF had before.
    fn end(&mut self) {
        if let Some(guard) = self.guard.take() {
            task::set_marking(false);
            drop(guard);
            // Safety: sigaction(2) with a disposition read by sigaction(2)
            // before the profile started (SIG_DFL or SIG_IGN, checked).
            unsafe {
                libc::sigaction(libc::SIGPROF, &self.previous, std::ptr::null_mut());
            }
            RUNNING.store(false, Ordering::Release);
        }
    }
}

impl Drop for SampleProfile {
    fn drop(&mut self) {
        self.end();
    }
}

fn sigprof_disposition() -> libc::sigaction {
    // Safety: a zeroed sigaction is a valid out-parameter; a null new
    // action only reads the current one.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut current);
        current
    }
}

fn profiling_timer_runs() -> bool {
    // Safety: getitimer(2) fills a zeroed itimerval.
    let timer = unsafe {
        let mut timer: libc::itimerval = std::mem::zeroed();
        libc::getitimer(libc::ITIMER_PROF, &mut timer);
        timer
    };
    let set = |t: libc::timeval| t.tv_sec != 0 || t.tv_usec != 0;
    set(timer.it_value) || set(timer.it_interval)
}

/// The callsite name (`todo::server:entries/2`) of each `#[traced]`
/// function and span, by its Rust path (`todo::server::entries`).
fn callsite_names() -> HashMap<String, String> {
    callsites()
        .into_iter()
        .filter(|cs| cs.kind() != CallsiteKind::Event)
        .map(|cs| {
            let info = cs.info();
            (info.rust_path(), info.mfa())
        })
        .collect()
}

/// Frames of the code `#[traced]` wraps a body in, between the function
/// and its body.
fn is_wrapper_frame(function: &str) -> bool {
    function.starts_with("nodetrace_agent::record::call::")
        || function.starts_with("core::ops::function::FnOnce::call_once")
        || function.starts_with("<F as core::future::into_future::IntoFuture>")
}

/// Names the frames of traced functions and spans as the callsites are
/// named, so that a sampled flamegraph reads like an fprof one: the
/// function, its `#[traced]` wrapper frames and its body (a closure) are
/// one frame `module:function/arity`.
fn link_callsites(
    root_first: Vec<SampledFrame>,
    names: &HashMap<String, String>,
) -> Vec<SampledFrame> {
    let named = |mut frame: SampledFrame| {
        let mut path = frame.function.as_str();
        while let Some(outer) = path.strip_suffix("::{{closure}}") {
            path = outer;
        }
        if let Some(name) = names.get(path) {
            frame.function = name.clone();
        }
        frame
    };
    let frames: Vec<SampledFrame> = root_first.into_iter().map(named).collect();
    let is_callsite = |f: &SampledFrame| names.values().any(|n| *n == f.function);
    let mut out: Vec<SampledFrame> = Vec::with_capacity(frames.len());
    let mut i = 0;
    while i < frames.len() {
        let frame = &frames[i];
        let last_traced = out.last().filter(|l| is_callsite(l));
        if let Some(last) = last_traced {
            // Wrappers between a traced function and its own body go.
            let next = (i..frames.len()).find(|&j| !is_wrapper_frame(&frames[j].function));
            if is_wrapper_frame(&frame.function)
                && next.is_some_and(|j| frames[j].function == last.function)
            {
                i = next.map_or(frames.len(), |j| j + 1);
                continue;
            }
            if frame.function == last.function {
                i += 1;
                continue;
            }
        }
        out.push(frame.clone());
        i += 1;
    }
    out
}

fn is_sampler_frame(function: &str) -> bool {
    function.starts_with("backtrace::")
        || function.starts_with("pprof::")
        || function.starts_with("<pprof::")
        || function == "perf_signal_handler"
}

/// `todo::spin::h0123456789abcdef` → `todo::spin`.
fn without_hash(name: &str) -> String {
    match name.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            path.to_owned()
        }
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> SampledFrame {
        SampledFrame {
            function: name.into(),
            file: None,
            line: None,
        }
    }

    #[test]
    fn a_traced_function_and_its_body_are_one_frame_named_as_its_callsite() {
        let names: HashMap<String, String> =
            [("hot::rounds".to_owned(), "hot:rounds/1".to_owned())].into();
        let stack = [
            "std::rt::main",
            "hot::rounds",
            "core::ops::function::FnOnce::call_once",
            "hot::rounds::{{closure}}",
            "hot::hot_spin",
        ]
        .map(frame)
        .to_vec();
        let linked: Vec<String> = link_callsites(stack, &names)
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert_eq!(linked, ["std::rt::main", "hot:rounds/1", "hot::hot_spin"]);
    }

    #[test]
    fn hashes_go_and_names_stay() {
        assert_eq!(without_hash("todo::spin::h0123456789abcdef"), "todo::spin");
        assert_eq!(without_hash("todo::spin"), "todo::spin");
        assert_eq!(without_hash("a::hello"), "a::hello");
    }
}
