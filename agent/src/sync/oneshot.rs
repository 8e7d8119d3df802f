//! tokio's `oneshot` channel, with its message traced: the reply of the
//! actor pattern.
//!
//! The same API as `tokio::sync::oneshot`: [`channel`], `Sender::send`,
//! `is_closed`, `closed`, and a `Receiver` that is a future, with
//! `try_recv`, `blocking_recv` and `close`. The reply's send is reported
//! as a message to the process that made the channel (the caller that
//! waits for it), its receive with the replying process as the sender.
//!
//! ```
//! use nodetrace_agent::sync::oneshot;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (reply, answer) = oneshot::channel::<u32>();
//! reply.send(7).unwrap();
//! assert_eq!(answer.await.unwrap(), 7);
//! # });
//! ```

use std::fmt::{self, Debug};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use nodetrace_protocol::Pid;
use tokio::sync::oneshot as tokio_oneshot;

use error::{RecvError, TryRecvError};
pub use tokio::sync::oneshot::error;

use crate::process::message::{trace_receive, trace_send};
use crate::session::MESSAGE_SESSIONS;

use super::sender_pid;

/// A channel for one message: `tokio::sync::oneshot::channel`.
pub fn channel<T: Debug>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio_oneshot::channel();
    (
        Sender {
            inner: tx,
            to: sender_pid(),
        },
        Receiver { inner: rx },
    )
}

/// Sends the one message.
pub struct Sender<T> {
    inner: tokio_oneshot::Sender<(u64, T)>,
    /// The process that made the channel, when messages were traced then.
    to: u64,
}

/// Receives the one message: a future of it.
pub struct Receiver<T> {
    inner: tokio_oneshot::Receiver<(u64, T)>,
}

fn pid(bits: u64) -> Option<Pid> {
    (bits != 0).then(|| Pid::from_bits(bits))
}

impl<T: Debug> Sender<T> {
    /// Sends `message`; gives it back if the receiver is gone.
    pub fn send(self, message: T) -> Result<(), T> {
        let from = sender_pid();
        if from != 0 {
            trace_send(Pid::from_bits(from), pid(self.to), &message);
        }
        self.inner.send((from, message)).map_err(|(_, m)| m)
    }
}

impl<T> Sender<T> {
    /// Whether the receiver is dropped or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Completes when the receiver is dropped or closed.
    pub async fn closed(&mut self) {
        self.inner.closed().await
    }
}

/// Reports the receive of a traced message.
#[inline]
fn received<T: Debug>(from: u64, message: &T) {
    if MESSAGE_SESSIONS.load(Ordering::Relaxed) != 0 {
        trace_receive(crate::self_pid(), pid(from), message);
    }
}

impl<T: Debug> Receiver<T> {
    /// Takes the message if it was sent.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let (from, message) = self.inner.try_recv()?;
        received(from, &message);
        Ok(message)
    }

    /// Waits for the message from outside the runtime, blocking the thread.
    pub fn blocking_recv(self) -> Result<T, RecvError> {
        let (from, message) = self.inner.blocking_recv()?;
        received(from, &message);
        Ok(message)
    }
}

impl<T> Receiver<T> {
    /// Refuses the message: the sender's `send` fails from now on.
    pub fn close(&mut self) {
        self.inner.close()
    }
}

impl<T: Debug> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner).poll(cx).map(|r| {
            r.map(|(from, message)| {
                received(from, &message);
                message
            })
        })
    }
}

impl<T> Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot::Sender")
    }
}

impl<T> Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}
