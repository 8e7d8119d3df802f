//! An order book over TCP, written the way tokio services are written.
//!
//! - `book`: an actor owning the orders, behind an mpsc channel; callers
//!   send a request with a oneshot for the reply.
//! - `audit`: an actor that records every request, deliberately slow when
//!   asked (`--audit-delay`), so its mailbox grows under load.
//! - `expiry`: a background task that sweeps old orders every interval.
//! - `stats`: a plain `tokio::spawn` task that runs traced code: nodetrace
//!   lists it once a trace has seen it.
//! - one task per connection, named `conn:<peer>`.
//!
//! Lines in: `BUY item qty`, `SELL item qty`, `BOOK item`, `QUIT`. Lines
//! out: `OK id`, `item buy N sell M`, or `ERR why`.
//!
//! The only change from plain tokio is where the actors are spawned
//! ([`nodetrace_agent::task::spawn`]) and where their channels come from
//! ([`nodetrace_agent::sync`]).

pub mod audit;
pub mod book;
pub mod conn;

use std::time::Duration;

use nodetrace_agent::task;

/// The running services a connection talks to.
#[derive(Clone, Debug)]
pub struct Services {
    /// The order book actor.
    pub book: book::Book,
    /// The audit actor.
    pub audit: audit::Audit,
}

/// Starts the actors and the background tasks on the current runtime.
pub fn start(audit_delay: Duration, expiry_every: Duration) -> Services {
    let book = book::start();
    let audit = audit::start(audit_delay);
    let sweeper = book.clone();
    task::spawn("expiry", async move {
        let mut every = tokio::time::interval(expiry_every);
        loop {
            every.tick().await;
            if sweeper.sweep().await.is_err() {
                return;
            }
        }
    });
    let counted = audit.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            stats::report(counted.seen());
        }
    });
    Services { book, audit }
}

/// The periodic report of the plain `tokio::spawn` task.
pub mod stats {
    use std::sync::atomic::{AtomicU64, Ordering};

    static LAST: AtomicU64 = AtomicU64::new(0);

    /// Notes how many requests the audit has seen.
    #[nodetrace_agent::traced]
    pub fn report(seen: u64) -> u64 {
        LAST.swap(seen, Ordering::Relaxed)
    }
}
