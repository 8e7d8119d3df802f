//! tokio's `mpsc` channels, as traceable mailboxes.
//!
//! The same API as `tokio::sync::mpsc` for what actors use: [`channel`] and
//! [`unbounded_channel`], `send`, `try_send`, `send_timeout`,
//! `blocking_send`, `closed`, `recv`, `try_recv`, `blocking_recv`,
//! `poll_recv`, `close`, `len`. The error types are tokio's. Two
//! differences: messages must be `Debug` (a trace shows them), and the
//! permit API (`reserve`, `try_reserve`), `WeakSender`, `recv_many` and the
//! `tokio-stream` wrappers are not here yet.
//!
//! A send is reported when it is made, as dbg reports a send to a process
//! that is gone: a `try_send` refused as full shows too.
//!
//! ```
//! use nodetrace_agent::sync::mpsc;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (tx, mut rx) = mpsc::channel::<u32>(8);
//! tx.send(1).await.unwrap();
//! assert_eq!(rx.recv().await, Some(1));
//! # });
//! ```

use std::fmt::{self, Debug};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc as tokio_mpsc;

use error::{SendError, SendTimeoutError, TryRecvError, TrySendError};
pub use tokio::sync::mpsc::error;

use super::{Mailbox, Receiving, sender_pid, sending, sent};

/// A message and who sent it (pid bits, 0 when nothing traced messages).
struct Envelope<T> {
    from: u64,
    message: T,
}

/// A bounded channel of `buffer` messages: `tokio::sync::mpsc::channel`.
///
/// # Panics
/// If `buffer` is 0, as tokio's does.
pub fn channel<T: Debug>(buffer: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio_mpsc::channel(buffer);
    let mailbox = Mailbox::new();
    (
        Sender {
            inner: tx,
            mailbox: mailbox.clone(),
        },
        Receiver {
            inner: rx,
            receiving: Receiving::new(mailbox),
        },
    )
}

/// An unbounded channel: `tokio::sync::mpsc::unbounded_channel`.
pub fn unbounded_channel<T: Debug>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let (tx, rx) = tokio_mpsc::unbounded_channel();
    let mailbox = Mailbox::new();
    (
        UnboundedSender {
            inner: tx,
            mailbox: mailbox.clone(),
        },
        UnboundedReceiver {
            inner: rx,
            receiving: Receiving::new(mailbox),
        },
    )
}

/// The sending half of a bounded channel.
pub struct Sender<T> {
    inner: tokio_mpsc::Sender<Envelope<T>>,
    mailbox: Arc<Mailbox>,
}

/// The receiving half of a bounded channel: the mailbox of the process that
/// receives on it.
pub struct Receiver<T> {
    inner: tokio_mpsc::Receiver<Envelope<T>>,
    receiving: Receiving,
}

/// The sending half of an unbounded channel.
pub struct UnboundedSender<T> {
    inner: tokio_mpsc::UnboundedSender<Envelope<T>>,
    mailbox: Arc<Mailbox>,
}

/// The receiving half of an unbounded channel: the mailbox of the process
/// that receives on it.
pub struct UnboundedReceiver<T> {
    inner: tokio_mpsc::UnboundedReceiver<Envelope<T>>,
    receiving: Receiving,
}

fn unwrap_send<T>(e: SendError<Envelope<T>>) -> SendError<T> {
    SendError(e.0.message)
}

impl<T: Debug> Sender<T> {
    /// Sends, waiting for room: `tokio::sync::mpsc::Sender::send`.
    pub async fn send(&self, message: T) -> Result<(), SendError<T>> {
        let from = sender_pid();
        sending(&self.mailbox, from, &message);
        self.inner
            .send(Envelope { from, message })
            .await
            .map_err(unwrap_send)?;
        sent(&self.mailbox);
        Ok(())
    }

    /// Sends if there is room now.
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        let from = sender_pid();
        sending(&self.mailbox, from, &message);
        self.inner
            .try_send(Envelope { from, message })
            .map_err(|e| match e {
                TrySendError::Full(e) => TrySendError::Full(e.message),
                TrySendError::Closed(e) => TrySendError::Closed(e.message),
            })?;
        sent(&self.mailbox);
        Ok(())
    }

    /// Sends, waiting for room at most `timeout`.
    pub async fn send_timeout(
        &self,
        message: T,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        let from = sender_pid();
        sending(&self.mailbox, from, &message);
        self.inner
            .send_timeout(Envelope { from, message }, timeout)
            .await
            .map_err(|e| match e {
                SendTimeoutError::Timeout(e) => SendTimeoutError::Timeout(e.message),
                SendTimeoutError::Closed(e) => SendTimeoutError::Closed(e.message),
            })?;
        sent(&self.mailbox);
        Ok(())
    }

    /// Sends from outside the runtime, blocking the thread.
    pub fn blocking_send(&self, message: T) -> Result<(), SendError<T>> {
        let from = sender_pid();
        sending(&self.mailbox, from, &message);
        self.inner
            .blocking_send(Envelope { from, message })
            .map_err(unwrap_send)?;
        sent(&self.mailbox);
        Ok(())
    }
}

impl<T> Sender<T> {
    /// Completes when the receiver is dropped or closed.
    pub async fn closed(&self) {
        self.inner.closed().await
    }

    /// Whether the receiver is dropped or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Room for messages now.
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// The channel's buffer size.
    pub fn max_capacity(&self) -> usize {
        self.inner.max_capacity()
    }

    /// Whether both senders send to the same channel.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        self.inner.same_channel(&other.inner)
    }
}

impl<T: Debug> UnboundedSender<T> {
    /// Sends without waiting: `tokio::sync::mpsc::UnboundedSender::send`.
    pub fn send(&self, message: T) -> Result<(), SendError<T>> {
        let from = sender_pid();
        sending(&self.mailbox, from, &message);
        self.inner
            .send(Envelope { from, message })
            .map_err(unwrap_send)?;
        sent(&self.mailbox);
        Ok(())
    }
}

impl<T> UnboundedSender<T> {
    /// Completes when the receiver is dropped or closed.
    pub async fn closed(&self) {
        self.inner.closed().await
    }

    /// Whether the receiver is dropped or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Whether both senders send to the same channel.
    pub fn same_channel(&self, other: &UnboundedSender<T>) -> bool {
        self.inner.same_channel(&other.inner)
    }
}

/// The receiving methods, the same for both kinds of channel.
macro_rules! receiver {
    ($receiver:ident) => {
        impl<T: Debug> $receiver<T> {
            /// Receives the next message; `None` once every sender is gone.
            pub async fn recv(&mut self) -> Option<T> {
                self.receiving.before_receive();
                let envelope = self.inner.recv().await?;
                Some(self.took(envelope))
            }

            /// Receives a message if one is waiting.
            pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
                self.receiving.before_receive();
                let envelope = self.inner.try_recv()?;
                Ok(self.took(envelope))
            }

            /// Receives from outside the runtime, blocking the thread.
            pub fn blocking_recv(&mut self) -> Option<T> {
                self.receiving.before_receive();
                let envelope = self.inner.blocking_recv()?;
                Some(self.took(envelope))
            }

            /// Polls for the next message, as `Stream` adapters do.
            pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.receiving.before_receive();
                self.inner
                    .poll_recv(cx)
                    .map(|m| m.map(|envelope| self.took(envelope)))
            }

            #[inline]
            fn took(&mut self, envelope: Envelope<T>) -> T {
                self.receiving.took(envelope.from, &envelope.message);
                envelope.message
            }
        }

        impl<T> $receiver<T> {
            /// Closes the channel: senders fail from now on, and the
            /// messages already in can still be received.
            pub fn close(&mut self) {
                self.inner.close()
            }

            /// Whether the channel is closed.
            pub fn is_closed(&self) -> bool {
                self.inner.is_closed()
            }

            /// Messages waiting.
            pub fn len(&self) -> usize {
                self.inner.len()
            }

            /// Whether no message is waiting.
            pub fn is_empty(&self) -> bool {
                self.inner.is_empty()
            }
        }

        impl<T> Debug for $receiver<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($receiver))
                    .field("len", &self.inner.len())
                    .finish_non_exhaustive()
            }
        }
    };
}

receiver!(Receiver);
receiver!(UnboundedReceiver);

macro_rules! sender_traits {
    ($sender:ident) => {
        impl<T> Clone for $sender<T> {
            fn clone(&self) -> Self {
                $sender {
                    inner: self.inner.clone(),
                    mailbox: self.mailbox.clone(),
                }
            }
        }

        impl<T> Debug for $sender<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.mailbox.owner() {
                    Some(pid) => write!(f, "{}({pid})", stringify!($sender)),
                    None => f.write_str(stringify!($sender)),
                }
            }
        }
    };
}

sender_traits!(Sender);
sender_traits!(UnboundedSender);
