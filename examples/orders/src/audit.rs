//! The audit trail: an actor that records every request it is sent, on an
//! unbounded channel, taking `delay` per record (a slow disk, say).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nodetrace_agent::sync::mpsc;
use nodetrace_agent::task;

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The peer that asked.
    pub peer: String,
    /// The request line.
    pub line: String,
}

/// A handle to the audit actor.
#[derive(Clone, Debug)]
pub struct Audit {
    tx: mpsc::UnboundedSender<Record>,
    seen: Arc<AtomicU64>,
}

/// Starts the audit actor, registered as `audit`.
pub fn start(delay: Duration) -> Audit {
    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    task::spawn("audit", async move {
        while let Some(record) = rx.recv().await {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            drop(record);
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    Audit { tx, seen }
}

impl Audit {
    /// Records a request; never waits.
    pub fn record(&self, peer: &str, line: &str) {
        let _ = self.tx.send(Record {
            peer: peer.to_owned(),
            line: line.to_owned(),
        });
    }

    /// Records handled so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}
