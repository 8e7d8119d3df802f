//! A command started for a trace, held before its first instruction until
//! the probes are in place, so that not one early call is missed.
//!
//! The child asks to be traced (`PTRACE_TRACEME`) between its fork and its
//! `exec`; the kernel then stops it with SIGTRAP right after the `exec`,
//! before the dynamic loader or `main` run. By then `/proc/PID/exe` is the
//! command's binary, so the probes are placed as on any running process;
//! detaching (`PTRACE_DETACH`) lets it run, no longer traced by ptrace.
//! Everything happens on the thread that spawned it, its tracer.
//!
//! The shared libraries are not mapped yet then: the loader maps them
//! before it jumps to the binary's entry point. [`Held::run_to_entry`]
//! lets it run that far, with a breakpoint (`int3`) on the entry point
//! (`AT_ENTRY` of `/proc/PID/auxv`), and holds it there: the libraries it
//! links are mapped, their initializers have run (unprobed), and not one
//! instruction of the binary has.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use crate::{ProbeError, Target};

/// A command stopped right after its `exec`; dropping it kills the
/// command, which never ran a single instruction of its own.
#[derive(Debug)]
pub struct Held {
    child: Option<Child>,
}

impl Target {
    /// Starts `command` and holds it stopped after its `exec`, returning
    /// its binary's functions and the held child: put the probes on it,
    /// then [`Held::resume`] it.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Spawn`] if it cannot be started, and those of
    /// [`Target::open`] for its binary.
    pub fn launch(command: &mut Command) -> Result<(Target, Held), ProbeError> {
        let display = command.get_program().to_string_lossy().into_owned();
        // SAFETY: the closure runs in the child between fork and exec and
        // makes one system call, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|cause| ProbeError::Spawn {
            command: display.clone(),
            cause,
        })?;
        let mut held = Held { child: Some(child) };
        let pid = held.pid();
        let mut status = 0;
        // SAFETY: waitpid on our own child, writing one int.
        let waited = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if waited < 0 {
            return Err(ProbeError::System {
                what: format!("cannot wait for {display} to start"),
                cause: io::Error::last_os_error(),
            });
        }
        if !libc::WIFSTOPPED(status) {
            // It ended before its first instruction (killed meanwhile).
            held.child = None;
            return Err(ProbeError::Spawn {
                command: display,
                cause: io::Error::other("it ended before its first instruction"),
            });
        }
        let target = Target::open(pid)?;
        Ok((target, held))
    }
}

impl Held {
    /// Lets the command run until its binary's entry point, the loader
    /// having mapped the libraries it links, and holds it there.
    ///
    /// # Errors
    ///
    /// [`ProbeError::System`] if the command cannot be run so far (it
    /// ended before, or ptrace refused).
    pub fn run_to_entry(&mut self) -> Result<(), ProbeError> {
        let pid = self.pid() as libc::pid_t;
        let failed = |what: &str| ProbeError::System {
            what: format!("cannot run the command to its entry point: {what}"),
            cause: io::Error::last_os_error(),
        };
        let auxv =
            std::fs::read(format!("/proc/{pid}/auxv")).map_err(|cause| ProbeError::System {
                what: "cannot read the command's auxiliary vector".to_owned(),
                cause,
            })?;
        let entry = entry_point(&auxv).ok_or_else(|| ProbeError::System {
            what: "cannot run the command to its entry point".to_owned(),
            cause: io::Error::other("its auxiliary vector has no AT_ENTRY"),
        })?;
        let at = entry as *mut libc::c_void;
        // SAFETY (every ptrace call below): on our own stopped tracee, the
        // word read and written being the one at its entry point.
        let word = unsafe {
            *libc::__errno_location() = 0;
            libc::ptrace(libc::PTRACE_PEEKTEXT, pid, at, 0)
        };
        if word == -1 && io::Error::last_os_error().raw_os_error() != Some(0) {
            return Err(failed("PTRACE_PEEKTEXT"));
        }
        let trap = (word & !0xff) | 0xcc;
        if unsafe { libc::ptrace(libc::PTRACE_POKETEXT, pid, at, trap) } < 0 {
            return Err(failed("PTRACE_POKETEXT"));
        }
        let mut signal = 0;
        loop {
            if unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, signal) } < 0 {
                return Err(failed("PTRACE_CONT"));
            }
            let mut status = 0;
            // SAFETY: waitpid on our own child, writing one int.
            if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                return Err(failed("waitpid"));
            }
            if !libc::WIFSTOPPED(status) {
                self.child = None;
                return Err(ProbeError::System {
                    what: "cannot run the command to its entry point".to_owned(),
                    cause: io::Error::other("it ended before it"),
                });
            }
            match libc::WSTOPSIG(status) {
                libc::SIGTRAP => break,
                // A signal meant for the command: delivered as it goes on.
                other => signal = other,
            }
        }
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        if unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &raw mut regs) } < 0 {
            return Err(failed("PTRACE_GETREGS"));
        }
        if regs.rip != entry + 1 {
            return Err(ProbeError::System {
                what: "cannot run the command to its entry point".to_owned(),
                cause: io::Error::other(format!(
                    "it stopped at {:#x}, not after {entry:#x}",
                    regs.rip
                )),
            });
        }
        regs.rip = entry;
        if unsafe { libc::ptrace(libc::PTRACE_POKETEXT, pid, at, word) } < 0 {
            return Err(failed("PTRACE_POKETEXT"));
        }
        if unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0, &raw const regs) } < 0 {
            return Err(failed("PTRACE_SETREGS"));
        }
        Ok(())
    }

    /// The command's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Lets the command run.
    ///
    /// # Errors
    ///
    /// [`ProbeError::System`] if the kernel refuses to let it go (it is
    /// killed then).
    pub fn resume(mut self) -> Result<Child, ProbeError> {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: detaching our own stopped tracee, with no signal.
        if unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) } < 0 {
            return Err(ProbeError::System {
                what: "cannot let the command run (PTRACE_DETACH)".to_owned(),
                cause: io::Error::last_os_error(),
            });
        }
        Ok(self.child.take().expect("a held child"))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `AT_ENTRY` of an auxiliary vector: (type, value) pairs of u64.
fn entry_point(auxv: &[u8]) -> Option<u64> {
    const AT_ENTRY: u64 = 9;
    auxv.chunks_exact(16).find_map(|pair| {
        let kind = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (kind == AT_ENTRY).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_point_is_read_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (kind, value) in [(6u64, 4096u64), (9, 0x5555_0000_1040), (0, 0)] {
            auxv.extend(kind.to_ne_bytes());
            auxv.extend(value.to_ne_bytes());
        }
        assert_eq!(entry_point(&auxv), Some(0x5555_0000_1040));
        assert_eq!(entry_point(&auxv[..16]), None);
    }
}
