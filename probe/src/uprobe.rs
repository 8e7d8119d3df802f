//! Entry uprobes through `perf_event_open` and the `uprobe` PMU, and the
//! ring buffers their hits arrive in.
//!
//! A probe is one perf event per (function, CPU) with `pid = -1`: it fires
//! in every thread that runs the function, threads started later included,
//! and the hits of other processes running the same binary are dropped
//! here by their pid. Per-thread events with `inherit` would follow new
//! threads too, but the kernel copies the probe's path from user memory
//! again when a new thread inherits the event, from the new thread's
//! address space, where that pointer means nothing: its `clone` fails with
//! EFAULT. Every event on a CPU writes, through
//! `PERF_EVENT_IOC_SET_OUTPUT`, into the one ring buffer of that CPU. A
//! uprobe made this way is a "local" one: it lives as long as its file
//! descriptors, so closing them (the [`Trace`] dropped, or the tracer
//! killed) removes every breakpoint from the process.
//!
//! A sample carries the process and thread, the time, the event's id (which
//! probe) and the six integer argument registers of the System V calling
//! convention.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodetrace_protocol::{Event, EventKind, Pid};
use perf_event_open_sys as sys;
use sys::bindings::{self as b, perf_event_attr, perf_event_mmap_page};

use crate::{MAX_ARGS, ProbeError, ProbeSpec, Target};

/// Data pages of each CPU's ring buffer (a power of two): 256 KiB.
const RING_PAGES: usize = 64;

/// The argument registers, in the order the sample carries them (by
/// `perf_event_x86_regs` number): rcx, rdx, rsi, rdi, r8, r9.
const REGS: [u32; 6] = [
    b::PERF_REG_X86_CX,
    b::PERF_REG_X86_DX,
    b::PERF_REG_X86_SI,
    b::PERF_REG_X86_DI,
    b::PERF_REG_X86_R8,
    b::PERF_REG_X86_R9,
];

/// Where argument n (rdi, rsi, rdx, rcx, r8, r9) is among [`REGS`].
const ARG_SLOT: [usize; 6] = [3, 2, 1, 0, 4, 5];

/// The probes of one trace, and the rings their hits arrive in. Dropping
/// it closes every event: the kernel removes the breakpoints.
#[derive(Debug)]
pub struct Trace {
    pid: u32,
    rings: Vec<Ring>,
    /// Events that write into a ring but have none of their own.
    _events: Vec<OwnedFd>,
    /// Event id → probe.
    ids: HashMap<u64, u32>,
    args: Vec<u8>,
    /// Wall clock minus the monotonic clock samples are stamped with.
    clock_offset_ns: i128,
    lost: u64,
}

#[derive(Debug)]
struct Ring {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the ring and only read or written through
// `&mut Trace`.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the mapping made in `Ring::map`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Ring {
    fn map(fd: OwnedFd) -> Result<Ring, ProbeError> {
        let page = page_size();
        let len = page * (1 + RING_PAGES);
        // SAFETY: a fresh shared mapping of a perf event fd, as
        // perf_event_open(2) describes.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(system("cannot map a perf ring buffer"));
        }
        Ok(Ring {
            fd,
            base: base.cast(),
            len,
        })
    }

    /// Copies out every record written since the last call.
    fn drain(&mut self, mut each: impl FnMut(u32, &[u8])) {
        let page = self.base.cast::<perf_event_mmap_page>();
        // SAFETY: the first page of the mapping is the kernel's
        // `perf_event_mmap_page`; `data_head` is read before the data
        // (acquire), `data_tail` written after it (release).
        unsafe {
            let head = std::ptr::read_volatile(&raw const (*page).data_head);
            fence(Ordering::Acquire);
            let mut tail = std::ptr::read_volatile(&raw const (*page).data_tail);
            let offset = (*page).data_offset as usize;
            let size = (*page).data_size as usize;
            let data = std::slice::from_raw_parts(self.base.add(offset), size);
            let mut record = Vec::new();
            while tail < head {
                let at = (tail % size as u64) as usize;
                let header = read_wrapped(data, at, 8);
                let kind = u32::from_ne_bytes(header[0..4].try_into().unwrap_or_default());
                let len = usize::from(u16::from_ne_bytes(
                    header[6..8].try_into().unwrap_or_default(),
                ));
                if len < 8 {
                    break;
                }
                record.clear();
                record.extend(read_wrapped(data, at, len));
                each(kind, &record[8..]);
                tail += len as u64;
            }
            fence(Ordering::Release);
            std::ptr::write_volatile(&raw mut (*page).data_tail, tail);
        }
    }
}

fn read_wrapped(data: &[u8], at: usize, len: usize) -> Vec<u8> {
    let first = len.min(data.len() - at);
    let mut out = data[at..at + first].to_vec();
    out.extend_from_slice(&data[..len - first]);
    out
}

impl Target {
    /// Puts an entry uprobe on each function of `probes`, in every thread
    /// of the process and every thread started later, and returns the
    /// trace that reads their hits. Either every probe is placed or none:
    /// a failure closes what was opened.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Privileges`] without CAP_SYS_ADMIN (or CAP_PERFMON),
    /// [`ProbeError::NoUprobes`] on a kernel without the `uprobe` PMU,
    /// [`ProbeError::System`] for other failures.
    pub fn attach(&self, probes: &[ProbeSpec<'_>]) -> Result<Trace, ProbeError> {
        let pmu = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .ok_or(ProbeError::NoUprobes)?;
        raise_fd_limit();
        let cpus = online_cpus()?;
        // The kernel resolves the path when the event is opened; through
        // /proc/PID/exe it finds the very file the process runs.
        let path =
            CString::new(format!("/proc/{}/exe", self.pid)).map_err(|_| ProbeError::NoUprobes)?;
        let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut trace = Trace {
            pid: self.pid,
            rings: Vec::new(),
            _events: Vec::new(),
            ids: HashMap::new(),
            args: probes.iter().map(|p| p.args.min(MAX_ARGS)).collect(),
            clock_offset_ns: wall - monotonic,
            lost: 0,
        };
        for &cpu in &cpus {
            let ring = trace.rings.len();
            for (index, probe) in probes.iter().enumerate() {
                let fd = open_event(pmu, &path, probe.function.file_offset, cpu)?;
                let mut id = 0u64;
                // SAFETY: an ioctl on our own perf fd writing one u64.
                if unsafe { sys::ioctls::ID(fd.as_raw_fd(), &mut id) } < 0 {
                    return Err(system("cannot read a perf event's id"));
                }
                trace.ids.insert(id, index as u32);
                if index == 0 {
                    trace.rings.push(Ring::map(fd)?);
                    continue;
                }
                let into = trace.rings[ring].fd.as_raw_fd();
                // SAFETY: both are our perf fds, on the same CPU.
                if unsafe { sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), into) } < 0 {
                    return Err(system("cannot direct a probe into its CPU's ring buffer"));
                }
                trace._events.push(fd);
            }
        }
        Ok(trace)
    }
}

impl Trace {
    /// Waits up to `timeout` for hits and appends them to `into` as call
    /// events (pid: the OS thread, callsite: the probe's index). Returns
    /// `false` once the process has exited.
    ///
    /// # Errors
    ///
    /// A failed `poll(2)`.
    pub fn poll(&mut self, timeout: Duration, into: &mut Vec<Event>) -> io::Result<bool> {
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|r| libc::pollfd {
                fd: r.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of pollfd of that length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let (pid, ids, args, offset) = (self.pid, &self.ids, &self.args, self.clock_offset_ns);
        let mut lost = 0;
        for ring in &mut self.rings {
            ring.drain(|kind, body| match kind {
                b::PERF_RECORD_SAMPLE => {
                    if let Some(event) = sample(body, pid, ids, args, offset) {
                        into.push(event);
                    }
                }
                b::PERF_RECORD_LOST => lost += u64_at(body, 8),
                _ => {}
            });
        }
        self.lost += lost;
        Ok(process_alive(self.pid))
    }

    /// Hits the kernel could not write because a ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The perf events open: functions × CPUs.
    pub fn events(&self) -> usize {
        self.rings.len() + self._events.len()
    }
}

/// A sample's body: pid, tid (u32 each), time, id, then the user registers
/// (abi, and the six registers when abi is not 0). A hit in another process
/// than `pid` is none of ours.
fn sample(
    body: &[u8],
    pid: u32,
    ids: &HashMap<u64, u32>,
    args: &[u8],
    clock_offset_ns: i128,
) -> Option<Event> {
    if body.len() < 32 {
        return None;
    }
    if u32::from_ne_bytes(body[0..4].try_into().ok()?) != pid {
        return None;
    }
    let tid = u32::from_ne_bytes(body[4..8].try_into().ok()?);
    let time = u64_at(body, 8);
    let id = u64_at(body, 16);
    let abi = u64_at(body, 24);
    let &probe = ids.get(&id)?;
    let shown = usize::from(*args.get(probe as usize)?);
    let text = if abi == 0 || shown == 0 || body.len() < 32 + 8 * REGS.len() {
        None
    } else {
        let regs: Vec<String> = ARG_SLOT[..shown]
            .iter()
            .map(|&slot| format!("{:#x}", u64_at(body, 32 + 8 * slot)))
            .collect();
        Some(regs.join(", "))
    };
    Some(Event {
        kind: EventKind::Call,
        pid: Pid::process(u64::from(tid)),
        peer: None,
        callsite: Some(probe),
        timestamp_ns: u64::try_from(i128::from(time) + clock_offset_ns).unwrap_or(0),
        duration_ns: None,
        busy_ns: None,
        text,
        extra: None,
    })
}

fn u64_at(body: &[u8], at: usize) -> u64 {
    body.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn open_event(pmu: u32, path: &CString, offset: u64, cpu: usize) -> Result<OwnedFd, ProbeError> {
    // SAFETY: perf_event_attr is plain data; all zeroes is its default.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = pmu;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.config = 0; // an entry probe (bit 0 would make it a uretprobe)
    attr.__bindgen_anon_3.uprobe_path = path.as_ptr() as u64;
    attr.__bindgen_anon_4.probe_offset = offset;
    attr.__bindgen_anon_1.sample_period = 1;
    attr.sample_type = u64::from(b::PERF_SAMPLE_TID | b::PERF_SAMPLE_TIME | b::PERF_SAMPLE_ID)
        | u64::from(b::PERF_SAMPLE_REGS_USER);
    attr.sample_regs_user = REGS.iter().fold(0, |mask, r| mask | 1u64 << r);
    attr.set_use_clockid(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
    // Wake the reader when a quarter of the ring is full; it also reads
    // whenever its poll times out.
    attr.set_watermark(1);
    attr.__bindgen_anon_2.wakeup_watermark = (RING_PAGES * page_size() / 4) as u32;
    let cpu = libc::c_int::try_from(cpu).unwrap_or(0);
    // SAFETY: `attr` is initialised and `path` outlives the call.
    let fd: RawFd = unsafe {
        sys::perf_event_open(
            &mut attr,
            -1,
            cpu,
            -1,
            libc::c_ulong::from(b::PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => ProbeError::Privileges,
            Some(libc::EMFILE | libc::ENFILE) => ProbeError::System {
                what: "too many probes for the open-file limit (one file a function and CPU): select fewer functions".to_owned(),
                cause: e,
            },
            _ => ProbeError::System {
                what: "cannot create a uprobe".to_owned(),
                cause: e,
            },
        });
    }
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn system(what: &str) -> ProbeError {
    ProbeError::System {
        what: what.to_owned(),
        cause: io::Error::last_os_error(),
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task")).exists()
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (`0-3,6`).
fn online_cpus() -> Result<Vec<usize>, ProbeError> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").map_err(|cause| {
        ProbeError::System {
            what: "cannot read the online CPUs".to_owned(),
            cause,
        }
    })?;
    Ok(parse_cpu_list(&text))
}

fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

/// One file per function and CPU: lift the soft open-file limit
/// to the hard one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-3,6\n"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
    }

    fn body(pid: u32, tid: u32, id: u64, regs: [u64; 6]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(pid.to_ne_bytes());
        b.extend(tid.to_ne_bytes());
        b.extend(1_000u64.to_ne_bytes());
        b.extend(id.to_ne_bytes());
        b.extend(2u64.to_ne_bytes());
        for r in regs {
            b.extend(r.to_ne_bytes());
        }
        b
    }

    #[test]
    fn samples_become_calls_with_arguments_in_calling_order() {
        let ids = HashMap::from([(5, 0), (6, 1)]);
        // rcx, rdx, rsi, rdi, r8, r9 as the kernel orders them.
        let regs = [4, 3, 2, 1, 5, 6];
        let e = sample(&body(40, 42, 5, regs), 40, &ids, &[3, 6], 10).unwrap();
        assert_eq!(e.kind, EventKind::Call);
        assert_eq!(e.pid, Pid::process(42));
        assert_eq!(e.callsite, Some(0));
        assert_eq!(e.timestamp_ns, 1_010);
        assert_eq!(e.text.as_deref(), Some("0x1, 0x2, 0x3"));
        let e = sample(&body(40, 42, 6, regs), 40, &ids, &[3, 6], 0).unwrap();
        assert_eq!(e.text.as_deref(), Some("0x1, 0x2, 0x3, 0x4, 0x5, 0x6"));
        let e = sample(&body(40, 42, 6, regs), 40, &ids, &[3, 0], 0).unwrap();
        assert_eq!(e.text, None, "no registers asked");
        // Another process running the same binary, an unknown event.
        assert!(sample(&body(41, 43, 5, regs), 40, &ids, &[3, 6], 0).is_none());
        assert!(sample(&body(40, 42, 99, regs), 40, &ids, &[3, 6], 0).is_none());
    }

    #[test]
    fn records_are_read_across_the_end_of_the_ring() {
        let data = [5, 6, 7, 1, 2, 3, 4];
        assert_eq!(read_wrapped(&data, 3, 6), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(read_wrapped(&data, 0, 2), vec![5, 6]);
    }
}
