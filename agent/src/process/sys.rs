//! `sys`: look into a running gen_server, like Erlang's `sys` module.
//!
//! [`trace`] makes a server report every message it gets, what it replies
//! and its new state to one session, as `sys:trace/2` prints them;
//! [`get_state`] and [`statistics`] answer what `sys:get_state/1` and
//! `sys:statistics/2` answer. All of it is free while off: a server checks
//! one word of trace bits per message.
//!
//! A process that owns traced channels ([`crate::sync`]) answers
//! [`trace`] (each message it takes, and how long it took to handle) and
//! [`statistics`] (its channels' counters) too; its state is its own.

use std::time::{Duration, SystemTime};

use nodetrace_protocol::Pid;
use tokio::sync::oneshot;

use crate::process::gen_server::SystemMessage;
use crate::process::{ProcessRef, RegistryError, registry, set_bits};
use crate::session::Session;

/// How long [`get_state`] waits for the server to answer.
pub const GET_STATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a `sys` request failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// No such gen_server.
    #[error(transparent)]
    NoProcess(#[from] RegistryError),
    /// The process has no mailbox to report on.
    #[error(
        "{0} is not a gen_server and receives on no traced channel: make its channel a `nodetrace_agent::sync::mpsc` one"
    )]
    NoMailbox(Pid),
    /// The server stopped before answering.
    #[error("{0} stopped before answering")]
    Exited(Pid),
    /// The server is busy with a message and did not answer in time.
    #[error("{0} did not answer within {GET_STATE_TIMEOUT:?}: it is busy or stuck in a handler")]
    Timeout(Pid),
}

/// Turns `sys` tracing of one gen_server on or off for `session`.
///
/// While on, the session gets a `got call … from …`, `got cast …` or
/// `got info …` event for each message, then `sent … to …, new state …`
/// or `new state …` after it is handled; texts are bounded by the session's
/// text bound.
pub fn trace(session: &Session, target: impl Into<ProcessRef>, on: bool) -> Result<(), SysError> {
    let target = target.into();
    let mut reg = registry();
    let bit = 1u32 << session.slot();
    if let Ok(server) = reg.server(&target) {
        set_bits(&server.sys_mask, bit, on);
        return Ok(());
    }
    let pid = reg.resolve(&target)?;
    if reg.sys_trace_mailboxes(pid, bit, on) {
        Ok(())
    } else {
        Err(SysError::NoMailbox(pid))
    }
}

/// The server's state, formatted with `Debug`, taken between two messages.
pub async fn get_state(target: impl Into<ProcessRef>) -> Result<String, SysError> {
    let server = registry().server(&target.into())?;
    let (answer, state) = oneshot::channel();
    if !server.system(SystemMessage::GetState(answer)) {
        return Err(SysError::Exited(server.pid));
    }
    match tokio::time::timeout(GET_STATE_TIMEOUT, state).await {
        Ok(Ok(state)) => Ok(state),
        Ok(Err(_)) => Err(SysError::Exited(server.pid)),
        Err(_) => Err(SysError::Timeout(server.pid)),
    }
}

/// A server's counters, like `sys:statistics/2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statistics {
    /// The server.
    pub pid: Pid,
    /// When it started.
    pub start_time: SystemTime,
    /// Messages sent to it.
    pub messages_in: u64,
    /// Replies it sent, and messages it sent to other servers (a
    /// gen_server's; a channel's owner does not count them).
    pub messages_out: Option<u64>,
    /// Messages it handled.
    pub handled: u64,
    /// Messages waiting in its mailbox.
    pub mailbox_len: u64,
}

/// The counters of one gen_server, or of the traced channels a process
/// receives on.
pub fn statistics(target: impl Into<ProcessRef>) -> Result<Statistics, SysError> {
    let target = target.into();
    let reg = registry();
    if let Ok(server) = reg.server(&target) {
        return Ok(Statistics {
            pid: server.pid,
            start_time: server.started,
            messages_in: server.stats.messages_in(),
            messages_out: Some(server.stats.messages_out()),
            handled: server.stats.handled(),
            mailbox_len: server.stats.mailbox_len(),
        });
    }
    let pid = reg.resolve(&target)?;
    let figures = reg.mailbox_figures(pid).ok_or(SysError::NoMailbox(pid))?;
    let start_time = reg
        .mailboxes_of(pid)
        .iter()
        .map(|m| m.created)
        .min()
        .unwrap_or_else(SystemTime::now);
    Ok(Statistics {
        pid,
        start_time: reg.started_of(pid).unwrap_or(start_time),
        messages_in: figures.messages_in,
        messages_out: None,
        handled: figures.handled,
        mailbox_len: figures.len,
    })
}
