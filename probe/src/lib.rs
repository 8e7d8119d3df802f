//! Probes on a running process that has no agent: the functions of its
//! binary, found by their demangled Rust paths, and entry uprobes on them
//! that turn every hit into the same [`Event`](nodetrace_protocol::Event)s
//! a node sends, so the tracer renders them unchanged.
//!
//! * [`symbols`] reads a binary's ELF symbol table and matches it with a
//!   [`Pattern`](nodetrace_protocol::Pattern); it is plain parsing, built on
//!   every system.
//! * [`dwarf`] adds what debug info says: source file and line, parameter
//!   names and types, a generic copy's type arguments.
//! * [`code`] finds where a function's frame ends (its `ret`s and tail
//!   calls) by decoding its machine code with `iced-x86`.
//! * [`Target`] is a running process and its binary; [`Target::attach`]
//!   puts uprobes on functions' entries and exits (Linux on x86-64 only:
//!   `perf_event_open` with the `uprobe` PMU), and the [`Trace`] it returns
//!   reads the hits, pairing returns with their calls; [`Target::count`]
//!   counts calls exactly (in the kernel where it can), and
//!   [`Target::launch`] starts a command held until its probes are placed.
//!
//! What is not built: shared libraries, other architectures.

use std::io;

pub mod code;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod count;
pub mod dwarf;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod launch;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod stacks;
pub mod symbols;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod uprobe;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod values;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use count::Counter;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use launch::Held;
pub use symbols::Function;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use uprobe::Trace;

/// Why probing a process failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Probes are built on Linux x86-64 only.
    #[error(
        "probing a process (--pid) works on Linux x86-64 only; elsewhere trace functions marked #[traced] or the `tracing` bridge through the agent"
    )]
    Unsupported,
    /// No such process, or its binary cannot be read.
    #[error(
        "cannot read the binary of process {pid}: {cause}; check the pid (`ps`) and that nodetrace may read /proc/{pid}/exe"
    )]
    Process {
        /// The process.
        pid: u32,
        /// Why.
        cause: io::Error,
    },
    /// A command to trace could not be started.
    #[error("cannot start {command}: {cause}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        cause: io::Error,
    },
    /// The binary is not an ELF file.
    #[error("the binary is not an ELF file ({0}); probes need a Linux executable")]
    NotElf(String),
    /// The binary has no symbol table.
    #[error(
        "the binary has no symbol table (it was stripped): build it without `strip` (profile setting strip = false) to probe it"
    )]
    NoSymbols,
    /// The kernel refused: creating uprobes needs privileges.
    #[error(
        "creating uprobes needs root (CAP_SYS_ADMIN, or CAP_PERFMON on Linux 5.8+): run nodetrace as root, or trace without probes by marking functions #[traced] or through the `tracing` bridge of the agent"
    )]
    Privileges,
    /// The kernel has no `uprobe` PMU.
    #[error(
        "this kernel has no uprobe PMU (/sys/bus/event_source/devices/uprobe): it needs CONFIG_UPROBE_EVENTS; trace functions marked #[traced] instead"
    )]
    NoUprobes,
    /// A system call failed.
    #[error("{what}: {cause}")]
    System {
        /// What was being done.
        what: String,
        /// The error.
        cause: io::Error,
    },
}

impl ProbeError {
    /// The exit code a shell reports for a command that could not be
    /// started (127: not found, 126: not runnable); `None` for the others.
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            ProbeError::Spawn { cause, .. } => Some(match cause.kind() {
                io::ErrorKind::NotFound => 127,
                io::ErrorKind::PermissionDenied => 126,
                _ => 1,
            }),
            _ => None,
        }
    }
}

/// A running process and the functions of its binary.
#[derive(Debug)]
pub struct Target {
    pid: u32,
    binary: String,
    /// The binary's bytes, for its debug info.
    data: Vec<u8>,
    functions: Vec<Function>,
}

impl Target {
    /// Reads the binary of process `pid` (through `/proc/PID/exe`, which
    /// works even if the file was replaced or deleted since) and lists its
    /// functions.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Process`] for a pid that is not running or whose
    /// binary cannot be read, [`ProbeError::NotElf`],
    /// [`ProbeError::NoSymbols`].
    pub fn open(pid: u32) -> Result<Target, ProbeError> {
        let exe = format!("/proc/{pid}/exe");
        let process = |cause| ProbeError::Process { pid, cause };
        let binary = std::fs::read_link(&exe)
            .map_err(process)?
            .display()
            .to_string();
        let data = std::fs::read(&exe).map_err(process)?;
        let functions = symbols::functions(&data)?;
        Ok(Target {
            pid,
            binary,
            data,
            functions,
        })
    }

    /// Reads what the binary's debug info says of the functions `wanted`
    /// selects ([`dwarf::annotate`]): only those, since reading a large
    /// binary's whole DWARF takes seconds.
    pub fn describe(&mut self, wanted: impl Fn(&Function) -> bool) {
        dwarf::annotate(&self.data, &mut self.functions, wanted);
        self.functions
            .sort_by(|a, b| a.path.cmp(&b.path).then(a.address.cmp(&b.address)));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The binary's path, as the kernel names it.
    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// Every probeable function, sorted by path.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The machine code of `function`, read from the binary.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Process`] if the binary cannot be read there.
    pub fn code(&self, function: &Function) -> Result<&[u8], ProbeError> {
        let start = usize::try_from(function.file_offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(function.size).unwrap_or(usize::MAX));
        self.data
            .get(start..end)
            .ok_or_else(|| ProbeError::Process {
                pid: self.pid,
                cause: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the function's code is past the end of the binary",
                ),
            })
    }
}

/// A function to probe, how many argument registers its calls show, and
/// whether its returns are traced.
#[derive(Debug, Clone)]
pub struct ProbeSpec<'a> {
    /// The function.
    pub function: &'a Function,
    /// Arguments shown: parameters when the debug info names them, else
    /// registers, at most [`MAX_ARGS`].
    pub args: u8,
    /// Also probe its exits ([`code::exits`]): returns with rax and the
    /// time since the call.
    pub returns: bool,
}

/// How many argument registers a call can show: the six integer argument
/// registers of the System V x86-64 calling convention (rdi, rsi, rdx, rcx,
/// r8, r9).
pub const MAX_ARGS: u8 = 6;
