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
//! * [`Target::add_libraries`] adds the functions of the shared libraries
//!   the process has mapped (`/proc/PID/maps`): a uprobe takes a file and
//!   an offset in it, so a library mapped by many processes is probed
//!   like the binary, the hits of the others dropped by their pid.
//!
//! What is not built: other architectures.

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
    /// The shared libraries read ([`Target::add_libraries`]).
    libraries: Vec<Library>,
}

/// A shared library of the process: the path it is mapped at, and its
/// bytes.
#[derive(Debug)]
struct Library {
    path: String,
    data: Vec<u8>,
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
            libraries: Vec::new(),
        })
    }

    /// Adds the functions of every shared library the process has mapped
    /// executable (the file-backed `x` mappings of `/proc/PID/maps` other
    /// than the binary), each read through `/proc/PID/root`, so that a
    /// process in another mount namespace is read right. Returns the
    /// libraries that could not be read, with why (a library deleted
    /// since it was mapped cannot be opened by its path).
    pub fn add_libraries(&mut self) -> Vec<(String, String)> {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)) else {
            return vec![(
                format!("/proc/{}/maps", self.pid),
                "cannot be read".to_owned(),
            )];
        };
        let mut failed = Vec::new();
        for path in executable_mappings(&maps) {
            if path == self.binary || self.libraries.iter().any(|l| l.path == path) {
                continue;
            }
            if path.ends_with(" (deleted)") {
                failed.push((path, "deleted since it was mapped".to_owned()));
                continue;
            }
            let data = match std::fs::read(self.in_root(&path)) {
                Ok(data) => data,
                Err(e) => {
                    failed.push((path, e.to_string()));
                    continue;
                }
            };
            match symbols::library_functions(&data, &path) {
                Ok(functions) => self.functions.extend(functions),
                Err(e) => {
                    failed.push((path, e.to_string()));
                    continue;
                }
            }
            self.libraries.push(Library { path, data });
        }
        self.sort();
        failed
    }

    /// The shared libraries whose functions were added, by the paths the
    /// process maps them at.
    pub fn libraries(&self) -> Vec<&str> {
        self.libraries.iter().map(|l| l.path.as_str()).collect()
    }

    /// `path` as the process sees it, from here.
    pub(crate) fn in_root(&self, path: &str) -> String {
        format!("/proc/{}/root{path}", self.pid)
    }

    /// The bytes of the file `function` is in: the binary or its library.
    fn data_of(&self, function: &Function) -> &[u8] {
        match &function.library {
            None => &self.data,
            Some(path) => self
                .libraries
                .iter()
                .find(|l| &l.path == path)
                .map_or(&[][..], |l| &l.data),
        }
    }

    /// Reads what the debug info of the binary (and of the libraries added)
    /// says of the functions `wanted` selects ([`dwarf::annotate`]): only
    /// those, since reading a large binary's whole DWARF takes seconds.
    pub fn describe(&mut self, wanted: impl Fn(&Function) -> bool) {
        dwarf::annotate(&self.data, &mut self.functions, |f| {
            f.library.is_none() && wanted(f)
        });
        for library in &self.libraries {
            dwarf::annotate(&library.data, &mut self.functions, |f| {
                f.library.as_ref() == Some(&library.path) && wanted(f)
            });
        }
        self.sort();
    }

    fn sort(&mut self) {
        self.functions.sort_by(|a, b| {
            a.path
                .cmp(&b.path)
                .then(a.library.cmp(&b.library))
                .then(a.address.cmp(&b.address))
        });
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The binary's path, as the kernel names it.
    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// Every probeable function (of the libraries too, once added), sorted
    /// by path.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The machine code of `function`, read from the binary or its
    /// library.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Process`] if the file cannot be read there.
    pub fn code(&self, function: &Function) -> Result<&[u8], ProbeError> {
        let start = usize::try_from(function.file_offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(function.size).unwrap_or(usize::MAX));
        self.data_of(function)
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

/// The files of the executable mappings of a `/proc/PID/maps` text, each
/// once, in the order they are mapped: `start-end perms offset dev inode
/// path`, perms with `x`, a path that is a file (not `[vdso]`).
fn executable_mappings(maps: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for line in maps.lines() {
        let mut fields = line.splitn(6, ' ');
        let perms = fields.nth(1).unwrap_or("");
        let path = fields.nth(3).unwrap_or("").trim_start();
        if perms.as_bytes().get(2) == Some(&b'x')
            && path.starts_with('/')
            && !paths.iter().any(|p| p == path)
        {
            paths.push(path.to_owned());
        }
    }
    paths
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_file_mappings_are_the_libraries() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 1234 /opt/plain
55d0c0001000-55d0c0002000 r-xp 00001000 08:01 1234 /opt/plain
7f0000000000-7f0000020000 r--p 00000000 08:01 77 /usr/lib/libc.so.6
7f0000020000-7f0000180000 r-xp 00028000 08:01 77 /usr/lib/libc.so.6
7f0000200000-7f0000201000 r-xp 00001000 08:01 78 /opt/my lib/libx.so (deleted)
7f0000300000-7f0000301000 rw-p 00000000 00:00 0 \n\
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
";
        assert_eq!(
            executable_mappings(maps),
            vec![
                "/opt/plain".to_owned(),
                "/usr/lib/libc.so.6".to_owned(),
                "/opt/my lib/libx.so (deleted)".to_owned(),
            ]
        );
    }

    #[test]
    fn this_process_maps_libc_and_its_functions_are_added() {
        let mut me = Target::open(std::process::id()).unwrap();
        let failed = me.add_libraries();
        assert_eq!(failed, Vec::<(String, String)>::new());
        assert!(
            me.libraries().iter().any(|l| l.contains("libc.so")),
            "{:?}",
            me.libraries()
        );
        let getpid = me
            .functions()
            .iter()
            .find(|f| f.module == "libc" && f.function == "getpid")
            .expect("libc's getpid is listed");
        assert!(
            getpid
                .library
                .as_deref()
                .is_some_and(|l| l.contains("libc.so"))
        );
        assert_eq!(me.code(getpid).unwrap().len() as u64, getpid.size);
    }
}
