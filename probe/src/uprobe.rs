//! Uprobes through `perf_event_open` and the `uprobe` PMU, and the ring
//! buffers their hits arrive in.
//!
//! A probe is one perf event per (probe site, CPU) with `pid = -1`: it
//! fires in every thread that runs the code, threads started later
//! included, and the hits of other processes running the same binary are
//! dropped here by their pid. Per-thread events with `inherit` would follow
//! new threads too, but the kernel copies the probe's path from user memory
//! again when a new thread inherits the event, from the new thread's
//! address space, where that pointer means nothing: its `clone` fails with
//! EFAULT. Every event on a CPU writes, through
//! `PERF_EVENT_IOC_SET_OUTPUT`, into the one ring buffer of that CPU. A
//! uprobe made this way is a "local" one: it lives as long as its file
//! descriptors, so closing them (the [`Trace`] dropped, or the tracer
//! killed) removes every breakpoint from the process.
//!
//! The sites of a function are its first instruction and, when its
//! returns are traced, each of its exits ([`crate::code::exits`]): plain
//! uprobes there, not uretprobes, which put the kernel's trampoline in
//! place of the return address on the stack and so stand between an
//! unwinding panic and the frames it must find.
//!
//! A sample carries the process and thread, the time, the event's id
//! (which site), rsp, rax and the six integer argument registers of the
//! System V calling convention. The rings are read one CPU after another,
//! so a thread that moved between CPUs can have a later hit read before an
//! earlier one: hits are released in time order, once every ring has been
//! read past their time.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodetrace_protocol::Event;
use perf_event_open_sys as sys;
use sys::bindings::{self as b, perf_event_attr, perf_event_mmap_page};

use crate::code::{self, ExitKind};
use crate::dwarf::Param;
use crate::stacks::{At, Hit, Stacks};
use crate::values;
use crate::{Function, MAX_ARGS, ProbeError, ProbeSpec, Target};

/// Data pages of each CPU's ring buffer (a power of two): 256 KiB.
const RING_PAGES: usize = 64;

/// The registers a sample carries, in the order it carries them (by
/// `perf_event_x86_regs` number): rax, rcx, rdx, rsi, rdi, rsp, r8, r9.
const REGS: [u32; 8] = [
    b::PERF_REG_X86_AX,
    b::PERF_REG_X86_CX,
    b::PERF_REG_X86_DX,
    b::PERF_REG_X86_SI,
    b::PERF_REG_X86_DI,
    b::PERF_REG_X86_SP,
    b::PERF_REG_X86_R8,
    b::PERF_REG_X86_R9,
];

/// Where argument n (rdi, rsi, rdx, rcx, r8, r9) is among [`REGS`].
const ARG_SLOT: [usize; 6] = [4, 3, 2, 1, 6, 7];
/// Where rax is among [`REGS`].
const RAX_SLOT: usize = 0;
/// Where rsp is among [`REGS`].
const RSP_SLOT: usize = 5;

/// How long after a hit's time its ring is surely written: a hit is
/// stamped and written in the same trap, microseconds apart.
const SETTLE_NS: u64 = 1_000_000;

/// The probes of one trace, and the rings their hits arrive in. Dropping
/// it closes every event: the kernel removes the breakpoints.
#[derive(Debug)]
pub struct Trace {
    pid: u32,
    rings: Vec<Ring>,
    /// Events that write into a ring but have none of their own.
    _events: Vec<OwnedFd>,
    /// Event id → probe and site.
    sites: HashMap<u64, (u32, At)>,
    /// Per probe: the arguments shown (registers, or parameters when the
    /// debug info names them).
    args: Vec<u8>,
    /// Per probe: its parameters and return type, from the debug info.
    params: Vec<Option<Vec<Param>>>,
    results: Vec<Option<Param>>,
    /// The process's memory, for `&str` and `&[u8]` arguments.
    memory: ProcessMemory,
    /// Bytes of such an argument shown at most.
    bound: usize,
    /// Per probe: returns are paired.
    returns: Vec<bool>,
    /// Hits read but not yet released: their order is known only once
    /// every ring has been read past them.
    pending: Vec<Hit>,
    stacks: Stacks,
    /// Wall clock minus the monotonic clock samples are stamped with.
    clock_offset_ns: i128,
    /// When the last probe was placed (wall clock): hits before that are
    /// dropped, so that a trace sees every probe or none.
    armed_ns: u64,
    lost: u64,
    exits: usize,
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
    /// Puts a uprobe on the entry of each function of `probes` and, for
    /// those that trace returns, on each of its exits, in every thread of
    /// the process and every thread started later, and returns the trace
    /// that reads their hits. Either every probe is placed or none: a
    /// failure closes what was opened.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Privileges`] without CAP_SYS_ADMIN (or CAP_PERFMON),
    /// [`ProbeError::NoUprobes`] on a kernel without the `uprobe` PMU,
    /// [`ProbeError::Process`] if the binary's code cannot be read,
    /// [`ProbeError::System`] for other failures.
    pub fn attach(&self, probes: &[ProbeSpec<'_>]) -> Result<Trace, ProbeError> {
        let pmu = uprobe_pmu()?;
        raise_fd_limit();
        let cpus = online_cpus()?;
        let paths = probes
            .iter()
            .map(|p| self.probe_path(p.function))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sites: Vec<(u32, At, u64)> = Vec::new();
        for (index, probe) in probes.iter().enumerate() {
            let index = index as u32;
            let f = probe.function;
            sites.push((index, At::Entry, f.file_offset));
            if probe.returns {
                for exit in code::exits(self.code(f)?, f.address) {
                    let offset = f.file_offset + (exit.address - f.address);
                    sites.push((index, At::Exit(exit.kind), offset));
                }
            }
        }
        let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut trace = Trace {
            pid: self.pid,
            rings: Vec::new(),
            _events: Vec::new(),
            sites: HashMap::new(),
            args: probes
                .iter()
                .map(|p| match p.function.params {
                    Some(_) => p.args,
                    None => p.args.min(MAX_ARGS),
                })
                .collect(),
            params: probes.iter().map(|p| p.function.params.clone()).collect(),
            results: probes.iter().map(|p| p.function.returns.clone()).collect(),
            memory: ProcessMemory(std::fs::File::open(format!("/proc/{}/mem", self.pid)).ok()),
            bound: 256,
            returns: probes.iter().map(|p| p.returns).collect(),
            pending: Vec::new(),
            stacks: Stacks::default(),
            clock_offset_ns: wall - monotonic,
            armed_ns: 0,
            lost: 0,
            exits: sites.iter().filter(|s| s.1 != At::Entry).count(),
        };
        for &cpu in &cpus {
            let ring = trace.rings.len();
            for (n, &(probe, at, offset)) in sites.iter().enumerate() {
                let path = &paths[probe as usize];
                let fd = open_event(pmu, path, offset, cpu, Report::Samples)?;
                trace.sites.insert(event_id(&fd)?, (probe, at));
                if n == 0 {
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
        trace.armed_ns =
            u64::try_from(clock_ns(libc::CLOCK_MONOTONIC) + trace.clock_offset_ns).unwrap_or(0);
        Ok(trace)
    }

    /// The path the kernel opens `function`'s probes on: for the binary,
    /// /proc/PID/exe, the very file the process runs even if it was
    /// replaced since; for a library, its path under /proc/PID/root.
    pub(crate) fn probe_path(&self, function: &Function) -> Result<CString, ProbeError> {
        let path = match &function.library {
            None => format!("/proc/{}/exe", self.pid),
            Some(library) => self.in_root(library),
        };
        CString::new(path).map_err(|e| ProbeError::System {
            what: "cannot probe a file whose path holds a NUL byte".to_owned(),
            cause: io::Error::other(e),
        })
    }
}

pub(crate) fn uprobe_pmu() -> Result<u32, ProbeError> {
    std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .ok_or(ProbeError::NoUprobes)
}

fn event_id(fd: &OwnedFd) -> Result<u64, ProbeError> {
    let mut id = 0u64;
    // SAFETY: an ioctl on our own perf fd writing one u64.
    if unsafe { sys::ioctls::ID(fd.as_raw_fd(), &mut id) } < 0 {
        return Err(system("cannot read a perf event's id"));
    }
    Ok(id)
}

impl Trace {
    /// Waits up to `timeout` for hits and appends them to `into` as events
    /// in time order (pid: the OS thread, callsite: the probe's index):
    /// calls, and for probes that trace returns, returns paired with their
    /// calls and calls that ended without one ([`crate::stacks`]). Returns
    /// `false` once the process has exited, every hit then released.
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
        let alive = process_alive(self.pid);
        // Every hit stamped before this is in its ring by now.
        let horizon = u64::try_from(clock_ns(libc::CLOCK_MONOTONIC) + self.clock_offset_ns)
            .unwrap_or(0)
            .saturating_sub(SETTLE_NS);
        self.read_rings();
        self.release(alive.then_some(horizon), into);
        Ok(alive)
    }

    /// Reads what is left in the rings and releases every hit, whatever
    /// its time: for the end of a trace.
    pub fn finish(&mut self, into: &mut Vec<Event>) {
        self.read_rings();
        self.release(None, into);
    }

    fn read_rings(&mut self) {
        let (pid, sites, offset) = (self.pid, &self.sites, self.clock_offset_ns);
        let (pending, armed, mut lost) = (&mut self.pending, self.armed_ns, 0);
        for ring in &mut self.rings {
            ring.drain(|kind, body| match kind {
                b::PERF_RECORD_SAMPLE => {
                    pending.extend(sample(body, pid, sites, offset).filter(|h| h.time_ns >= armed))
                }
                b::PERF_RECORD_LOST => lost += u64_at(body, 8),
                _ => {}
            });
        }
        self.lost += lost;
    }

    /// Turns the pending hits up to `horizon` (all: `None`) into events.
    fn release(&mut self, horizon: Option<u64>, into: &mut Vec<Event>) {
        self.pending.sort_by_key(|h| h.time_ns);
        let ready = match horizon {
            Some(t) => self.pending.partition_point(|h| h.time_ns <= t),
            None => self.pending.len(),
        };
        for hit in self.pending.drain(..ready) {
            let probe = hit.probe as usize;
            let params = self.params.get(probe).and_then(Option::as_deref);
            let text = match hit.at {
                At::Entry => {
                    let shown = usize::from(self.args.get(probe).copied().unwrap_or(0));
                    let result = self.results.get(probe).and_then(Option::as_ref);
                    values::call_text(params, result, shown, &hit.args, &self.memory, self.bound)
                }
                At::Exit(ExitKind::Return) => {
                    let result = self.results.get(probe).and_then(Option::as_ref);
                    values::return_text(params, result, hit.value)
                }
                At::Exit(ExitKind::TailCall) => None,
            };
            self.stacks.hit(&hit, text, &self.returns, into);
        }
    }

    /// Shows at most `bytes` of a `&str` or `&[u8]` argument (256 unless
    /// set).
    pub fn set_text_bound(&mut self, bytes: usize) {
        self.bound = bytes;
    }

    /// Hits the kernel could not write because a ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The perf events open: probe sites × CPUs.
    pub fn events(&self) -> usize {
        self.rings.len() + self._events.len()
    }

    /// The exits probed for returns, over all functions.
    pub fn exits(&self) -> usize {
        self.exits
    }
}

/// `/proc/PID/mem`, opened when the probes are placed (none if it could
/// not be: such arguments then show as unreadable).
#[derive(Debug)]
struct ProcessMemory(Option<std::fs::File>);

impl values::Memory for ProcessMemory {
    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = self.0.as_ref()?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, address).ok()?;
        Some(bytes)
    }
}

/// A sample's body: pid, tid (u32 each), time, id, then the user registers
/// (abi, and the [`REGS`] when abi is not 0). A hit in another process than
/// `pid` is none of ours; one without registers (abi 0) cannot be read.
fn sample(
    body: &[u8],
    pid: u32,
    sites: &HashMap<u64, (u32, At)>,
    clock_offset_ns: i128,
) -> Option<Hit> {
    if body.len() < 32 + 8 * REGS.len() {
        return None;
    }
    if u32::from_ne_bytes(body[0..4].try_into().ok()?) != pid {
        return None;
    }
    let tid = u32::from_ne_bytes(body[4..8].try_into().ok()?);
    let time = u64_at(body, 8);
    let &(probe, at) = sites.get(&u64_at(body, 16))?;
    if u64_at(body, 24) == 0 {
        return None;
    }
    let reg = |slot: usize| u64_at(body, 32 + 8 * slot);
    Some(Hit {
        tid,
        time_ns: u64::try_from(i128::from(time) + clock_offset_ns).unwrap_or(0),
        probe,
        at,
        sp: reg(RSP_SLOT),
        value: reg(RAX_SLOT),
        args: ARG_SLOT.map(reg),
    })
}

fn u64_at(body: &[u8], at: usize) -> u64 {
    body.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// How an event reports its hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// A sample each, with the thread, time and [`REGS`], into a ring.
    Samples,
    /// Only a count, read from the event's fd: no sample is written.
    Count,
}

/// One uprobe at `offset` of `path` on `cpu`, in every process.
pub(crate) fn open_event(
    pmu: u32,
    path: &CString,
    offset: u64,
    cpu: usize,
    report: Report,
) -> Result<OwnedFd, ProbeError> {
    // SAFETY: perf_event_attr is plain data; all zeroes is its default.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = pmu;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.config = 0; // a plain uprobe (bit 0 would make it a uretprobe)
    attr.__bindgen_anon_3.uprobe_path = path.as_ptr() as u64;
    attr.__bindgen_anon_4.probe_offset = offset;
    if report == Report::Samples {
        attr.__bindgen_anon_1.sample_period = 1;
        attr.sample_type = u64::from(b::PERF_SAMPLE_TID | b::PERF_SAMPLE_TIME | b::PERF_SAMPLE_ID)
            | u64::from(b::PERF_SAMPLE_REGS_USER);
        attr.sample_regs_user = REGS.iter().fold(0, |mask, r| mask | 1u64 << r);
        attr.set_use_clockid(1);
        attr.clockid = libc::CLOCK_MONOTONIC;
        // Wake the reader when a quarter of the ring is full; it also
        // reads whenever its poll times out.
        attr.set_watermark(1);
        attr.__bindgen_anon_2.wakeup_watermark = (RING_PAGES * page_size() / 4) as u32;
    }
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

pub(crate) fn system(what: &str) -> ProbeError {
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

/// Whether `pid` runs: it exists and is not a zombie (exited, not yet
/// reaped by its parent), by the state in `/proc/PID/stat`.
pub(crate) fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| running(&stat))
}

/// The state is the field after the command's `(name)`, which may hold
/// spaces and parentheses itself.
fn running(stat: &str) -> bool {
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (`0-3,6`).
pub(crate) fn online_cpus() -> Result<Vec<usize>, ProbeError> {
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
pub(crate) fn raise_fd_limit() {
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
    fn zombies_do_not_run() {
        assert!(running("42 (a (b) c) S 1 42"));
        assert!(!running("42 (plain) Z 1 42"));
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-3,6\n"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
    }

    fn body(pid: u32, tid: u32, id: u64, regs: [u64; 8]) -> Vec<u8> {
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
    fn samples_are_read_as_hits_with_arguments_in_calling_order() {
        let sites = HashMap::from([(5, (0, At::Entry)), (6, (1, At::Exit(ExitKind::Return)))]);
        // rax, rcx, rdx, rsi, rdi, rsp, r8, r9 as the kernel orders them.
        let regs = [0x2a, 4, 3, 2, 1, 0x7ff0, 5, 6];
        let hit = sample(&body(40, 42, 5, regs), 40, &sites, 10).unwrap();
        assert_eq!(
            hit,
            Hit {
                tid: 42,
                time_ns: 1_010,
                probe: 0,
                at: At::Entry,
                sp: 0x7ff0,
                value: 0x2a,
                args: [1, 2, 3, 4, 5, 6],
            }
        );
        let hit = sample(&body(40, 42, 6, regs), 40, &sites, 0).unwrap();
        assert_eq!((hit.probe, hit.at), (1, At::Exit(ExitKind::Return)));
        // Another process running the same binary, an unknown event.
        assert!(sample(&body(41, 43, 5, regs), 40, &sites, 0).is_none());
        assert!(sample(&body(40, 42, 99, regs), 40, &sites, 0).is_none());
    }

    #[test]
    fn records_are_read_across_the_end_of_the_ring() {
        let data = [5, 6, 7, 1, 2, 3, 4];
        assert_eq!(read_wrapped(&data, 3, 6), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(read_wrapped(&data, 0, 2), vec![5, 6]);
    }
}
