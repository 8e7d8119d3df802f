//! Exact call counts of probed functions, for `profile cprof --pid`.
//!
//! The cheapest way is a counting uprobe: a perf event with no sample
//! period counts its hits in the kernel, which writes nothing per hit and
//! is read once at the end. But an event with `pid = -1` (the only kind
//! that follows new threads, see [`crate::Trace`]) counts the hits of
//! every process that runs the binary. So counters are used when the
//! process is the only one running its binary and no function counted is
//! in a shared library (which other processes map as a rule); otherwise
//! each hit is a sample whose pid tells ours from the others', as a trace
//! does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nodetrace_protocol::{Event, EventKind};

use crate::uprobe::{
    Report, online_cpus, open_event, process_alive, raise_fd_limit, system, uprobe_pmu,
};
use crate::{Function, ProbeError, ProbeSpec, Target, Trace};

/// Call counts in progress; dropping it removes the probes.
#[derive(Debug)]
pub struct Counter {
    pid: u32,
    how: How,
    /// Other processes running the binary when counting began.
    shared_with: Vec<u32>,
}

#[derive(Debug)]
enum How {
    /// Counting events: function index, and one fd a CPU.
    Kernel(Vec<(usize, OwnedFd)>),
    /// Samples of every hit, counted here by function.
    Samples { trace: Box<Trace>, counts: Vec<u64> },
}

impl Target {
    /// Counts the calls of `functions` from now on, in every thread of
    /// the process and every thread started later: in the kernel when no
    /// other process runs the binary and none is a library's, else by
    /// samples.
    ///
    /// # Errors
    ///
    /// Those of [`Target::attach`].
    pub fn count(&self, functions: &[&Function]) -> Result<Counter, ProbeError> {
        let shared_with = self.others_running();
        if !shared_with.is_empty() || functions.iter().any(|f| f.library.is_some()) {
            let specs: Vec<ProbeSpec<'_>> = functions
                .iter()
                .map(|&function| ProbeSpec {
                    function,
                    args: 0,
                    returns: false,
                })
                .collect();
            return Ok(Counter {
                pid: self.pid,
                how: How::Samples {
                    trace: Box::new(self.attach(&specs)?),
                    counts: vec![0; functions.len()],
                },
                shared_with,
            });
        }
        let pmu = uprobe_pmu()?;
        raise_fd_limit();
        let cpus = online_cpus()?;
        let mut fds = Vec::new();
        for (index, f) in functions.iter().enumerate() {
            let path = self.probe_path(f)?;
            for &cpu in &cpus {
                fds.push((
                    index,
                    open_event(pmu, &path, f.file_offset, cpu, Report::Count)?,
                ));
            }
        }
        Ok(Counter {
            pid: self.pid,
            how: How::Kernel(fds),
            shared_with,
        })
    }

    /// The other processes that run this process's binary now (the same
    /// file: device and inode).
    pub fn others_running(&self) -> Vec<u32> {
        let Ok(me) = std::fs::metadata(format!("/proc/{}/exe", self.pid)) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut others: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != self.pid)
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/exe"))
                    .is_ok_and(|m| m.dev() == me.dev() && m.ino() == me.ino())
            })
            .collect();
        others.sort_unstable();
        others
    }
}

impl Counter {
    /// Waits up to `timeout` (reading the samples that came, if counted
    /// that way). Returns `false` once the process has exited.
    ///
    /// # Errors
    ///
    /// A failed `poll(2)`.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<bool> {
        match &mut self.how {
            How::Kernel(_) => {
                std::thread::sleep(timeout);
                Ok(process_alive(self.pid))
            }
            How::Samples { trace, counts } => {
                let mut events = Vec::new();
                let alive = trace.poll(timeout, &mut events)?;
                tally(&events, counts);
                Ok(alive)
            }
        }
    }

    /// The calls of each function counted so far, in the order they were
    /// given; every hit is read first.
    ///
    /// # Errors
    ///
    /// A counter that cannot be read.
    pub fn counts(&mut self) -> Result<Vec<u64>, ProbeError> {
        match &mut self.how {
            How::Kernel(fds) => {
                let functions = fds.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
                let mut counts = vec![0; functions];
                for (index, fd) in fds.iter() {
                    counts[*index] += read_count(fd)?;
                }
                Ok(counts)
            }
            How::Samples { trace, counts } => {
                let mut events = Vec::new();
                trace.finish(&mut events);
                tally(&events, counts);
                Ok(counts.clone())
            }
        }
    }

    /// Whether the kernel counts (no sample is written per call).
    pub fn in_kernel(&self) -> bool {
        matches!(self.how, How::Kernel(_))
    }

    /// The other processes that ran the binary when counting began (why
    /// calls are sampled rather than counted in the kernel, if no function
    /// of a library is counted).
    pub fn shared_with(&self) -> &[u32] {
        &self.shared_with
    }

    /// Calls sampled but lost to a full ring (counts are short by that
    /// many); 0 when the kernel counts.
    pub fn lost(&self) -> u64 {
        match &self.how {
            How::Kernel(_) => 0,
            How::Samples { trace, .. } => trace.lost(),
        }
    }
}

fn tally(events: &[Event], counts: &mut [u64]) {
    for e in events {
        if e.kind == EventKind::Call
            && let Some(n) = e.callsite.and_then(|c| counts.get_mut(c as usize))
        {
            *n += 1;
        }
    }
}

fn read_count(fd: &OwnedFd) -> Result<u64, ProbeError> {
    let mut value = 0u64;
    // SAFETY: reading one u64 (the default read_format) from our perf fd.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&raw mut value).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if n != std::mem::size_of::<u64>() as isize {
        return Err(system("cannot read a call counter"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use nodetrace_protocol::Pid;

    use super::*;

    #[test]
    fn calls_are_tallied_by_function() {
        let call = |callsite, kind| Event {
            kind,
            pid: Pid::process(1),
            peer: None,
            callsite: Some(callsite),
            timestamp_ns: 0,
            duration_ns: None,
            busy_ns: None,
            text: None,
            extra: None,
        };
        let mut counts = vec![0, 0];
        tally(
            &[
                call(0, EventKind::Call),
                call(1, EventKind::Call),
                call(1, EventKind::Call),
                call(1, EventKind::Return),
                call(7, EventKind::Call),
            ],
            &mut counts,
        );
        assert_eq!(counts, vec![1, 2]);
    }

    #[test]
    fn this_process_is_the_only_one_running_its_binary() {
        let me = Target::open(std::process::id()).unwrap();
        assert_eq!(me.others_running(), Vec::<u32>::new());
    }
}
