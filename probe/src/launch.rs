//! A command started for a trace, held before its first instruction until
//! the probes are in place, so that not one early call is missed.
//!
//! The child asks to be traced (`PTRACE_TRACEME`) between its fork and its
//! `exec`; the kernel then stops it with SIGTRAP right after the `exec`,
//! before the dynamic loader or `main` run. By then `/proc/PID/exe` is the
//! command's binary, so the probes are placed as on any running process;
//! detaching (`PTRACE_DETACH`) lets it run, no longer traced by ptrace.
//! Everything happens on the thread that spawned it, its tracer.

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
