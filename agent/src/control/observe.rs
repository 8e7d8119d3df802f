//! `ps`, `top` and `info` on the node: its processes, their counters, and
//! the figures of the OS process the node is.
//!
//! Asking is observing: each of these switches task timing on for
//! [`OBSERVE_LINGER`](crate::task::OBSERVE_LINGER). A `top` connection
//! keeps what it saw last, so the deltas and the sorting are done here and
//! only the top rows travel. Nothing here switches tracing on.

use std::time::{Instant, SystemTime};

use rustc_hash::FxHashMap;

use nodetrace_protocol::{
    CallsiteCounts, CallsiteKind, PROTOCOL_VERSION, Pid, ProcessList, ProcessRow, RuntimeFigures,
    SessionRow, SystemFigures, SystemInfo, TaskRow, TaskStateRow, TopFrame, TopRow, TopSpec,
};

use crate::process::task::{self, TaskState};
use crate::process::{ProcessInfo, processes, processes_unsorted, registry, runtime};
use crate::record::callsite::callsites;
use crate::record::ring::{ring_capacity, ring_drops_total};
use crate::session::{EVENTS_DELIVERED, active_sessions};

use super::server::unix_ms;

/// `ps`: every process, its counters as of now.
pub(crate) fn process_list() -> ProcessList {
    let since = task::observe();
    ProcessList {
        rows: processes().into_iter().map(row).collect(),
        observed_for_ms: SystemTime::now()
            .duration_since(since)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

fn state(s: TaskState) -> TaskStateRow {
    match s {
        TaskState::Running => TaskStateRow::Running,
        TaskState::Idle => TaskStateRow::Idle,
        TaskState::Done => TaskStateRow::Done,
    }
}

fn row(p: ProcessInfo) -> ProcessRow {
    ProcessRow {
        pid: p.pid,
        name: p.name,
        kind: p.kind.as_str().to_owned(),
        has_mailbox: p.has_mailbox,
        mailbox_len: p.mailbox_len,
        messages_in: p.messages_in,
        handled: p.handled,
        started_ms: unix_ms(p.started),
        task: p.task.map(|t| TaskRow {
            polls: t.polls,
            busy_ns: t.busy_ns,
            idle_ns: t.idle_ns,
            wakes: t.wakes,
            state: state(t.state),
        }),
    }
}

/// What one `top` connection saw at its last refresh.
pub(crate) struct TopState {
    at: Instant,
    cpu_ns: u64,
    events: u64,
    /// Polls, busy time and messages in, by pid.
    seen: FxHashMap<Pid, (u64, u64, u64)>,
}

impl TopState {
    /// A connection's state before its first refresh: deltas of the first
    /// cover the time since the node began timing tasks.
    pub(crate) fn new() -> TopState {
        TopState {
            at: Instant::now(),
            cpu_ns: cpu_time_ns(),
            events: EVENTS_DELIVERED.load(std::sync::atomic::Ordering::Relaxed),
            seen: FxHashMap::default(),
        }
    }

    /// One refresh: the node's figures over the interval since the last,
    /// and the top `spec.limit` processes by `spec.sort`.
    pub(crate) fn frame(&mut self, spec: TopSpec, started_ms: u64) -> TopFrame {
        task::observe();
        let now = Instant::now();
        let interval = now.duration_since(self.at);
        let secs = interval.as_secs_f64().max(1e-9);
        let cpu_ns = cpu_time_ns();
        let events = EVENTS_DELIVERED.load(std::sync::atomic::Ordering::Relaxed);
        let system = system_figures(
            started_ms,
            cpu_ns.saturating_sub(self.cpu_ns) as f64 / 1e9 / secs * 100.0,
            events.saturating_sub(self.events) as f64 / secs,
        );
        self.at = now;
        self.cpu_ns = cpu_ns;
        self.events = events;

        let all = processes_unsorted();
        let total = all.len() as u64;
        let mut seen = FxHashMap::with_capacity_and_hasher(all.len(), Default::default());
        let mut rows: Vec<TopRow> = all
            .into_iter()
            .map(|p| {
                let (polls, busy) = p.task.map_or((0, 0), |t| (t.polls, t.busy_ns));
                let (p0, b0, m0) = self.seen.get(&p.pid).copied().unwrap_or_default();
                seen.insert(p.pid, (polls, busy, p.messages_in));
                TopRow {
                    pid: p.pid,
                    name: p.name,
                    kind: p.kind.as_str().to_owned(),
                    state: p.task.map(|t| state(t.state)),
                    polls: polls.saturating_sub(p0),
                    busy_ns: busy.saturating_sub(b0),
                    messages_in: p.messages_in.saturating_sub(m0),
                    mailbox_len: p.mailbox_len,
                }
            })
            .collect();
        self.seen = seen;
        let largest_first = |a: &TopRow, b: &TopRow| b.order(a, spec.sort);
        let limit = (spec.limit as usize).min(rows.len());
        if limit < rows.len() && limit > 0 {
            rows.select_nth_unstable_by(limit - 1, largest_first);
        }
        rows.truncate(limit);
        rows.sort_by(largest_first);
        TopFrame {
            interval_ms: interval.as_millis() as u64,
            system,
            processes: total,
            rows,
        }
    }
}

/// `info`: everything about the node in one answer.
pub(crate) fn system_info(started_ms: u64) -> SystemInfo {
    task::observe();
    let uptime_s = (unix_ms(SystemTime::now()).saturating_sub(started_ms) as f64 / 1e3).max(1e-3);
    let events = EVENTS_DELIVERED.load(std::sync::atomic::Ordering::Relaxed);
    let system = system_figures(
        started_ms,
        cpu_time_ns() as f64 / 1e9 / uptime_s * 100.0,
        events as f64 / uptime_s,
    );
    let mut cs = CallsiteCounts::default();
    for c in callsites() {
        match c.kind() {
            CallsiteKind::Function => cs.traced += 1,
            CallsiteKind::Span => cs.spans += 1,
            CallsiteKind::Event => cs.events += 1,
        }
    }
    SystemInfo {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        os: os_name(),
        peak_rss_bytes: status().peak_rss,
        max_open_files: max_open_files(),
        system,
        processes: registry().counts(),
        callsites: cs,
        sessions: active_sessions()
            .into_iter()
            .map(|s| SessionRow {
                slot: s.slot as u32,
                kind: if s.profile { "profile" } else { "trace" }.to_owned(),
                delivered: s.delivered,
                limits: s.limits,
            })
            .collect(),
        ring_capacity: ring_capacity() as u64,
    }
}

fn system_figures(started_ms: u64, cpu_percent: f64, events_per_s: f64) -> SystemFigures {
    let status = status();
    SystemFigures {
        uptime_ms: unix_ms(SystemTime::now()).saturating_sub(started_ms),
        rss_bytes: status.rss,
        virtual_bytes: status.virt,
        threads: status.threads,
        open_files: open_files(),
        cpu_percent,
        runtime: runtime().map(|rt| {
            let m = rt.metrics();
            RuntimeFigures {
                workers: m.num_workers() as u64,
                alive_tasks: m.num_alive_tasks() as u64,
                global_queue_depth: m.global_queue_depth() as u64,
            }
        }),
        sessions: active_sessions().len() as u64,
        events_per_s,
        ring_drops: ring_drops_total(),
    }
}

/// What `/proc/self/status` says of memory and threads.
#[derive(Debug, Default, PartialEq, Eq)]
struct Status {
    rss: u64,
    virt: u64,
    peak_rss: u64,
    threads: u64,
}

fn status() -> Status {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| parse_status(&s))
        .unwrap_or_default()
}

fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = || {
            value
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match key {
            "VmRSS" => s.rss = number() * 1024,
            "VmSize" => s.virt = number() * 1024,
            "VmHWM" => s.peak_rss = number() * 1024,
            "Threads" => s.threads = number(),
            _ => {}
        }
    }
    s
}

fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// CPU time the process used, user and system, in nanoseconds.
fn cpu_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn max_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: `limit` is a valid rlimit to write to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur
}

fn os_name() -> String {
    // Safety: utsname is plain bytes, and uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return std::env::consts::OS.to_owned();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_is_read_in_bytes() {
        let text =
            "Name:\tnode\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nVmSize:\t 8192 kB\nThreads:\t7\n";
        assert_eq!(
            parse_status(text),
            Status {
                rss: 1024 * 1024,
                virt: 8192 * 1024,
                peak_rss: 2048 * 1024,
                threads: 7
            }
        );
    }

    #[test]
    fn this_process_has_figures() {
        let s = status();
        assert!(s.rss > 0 && s.virt >= s.rss && s.threads >= 1, "{s:?}");
        assert!(open_files() >= 3);
        assert!(max_open_files() >= open_files());
        assert!(cpu_time_ns() > 0);
        assert!(os_name().starts_with("Linux"), "{}", os_name());
    }
}
