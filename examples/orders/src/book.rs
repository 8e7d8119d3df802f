//! The order book: an actor that owns the orders; requests come through
//! an mpsc channel with a oneshot for each reply.

use std::collections::HashMap;

use nodetrace_agent::sync::{mpsc, oneshot};
use nodetrace_agent::{task, traced};

/// A side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Wants to buy.
    Buy,
    /// Wants to sell.
    Sell,
}

/// What the book is asked.
#[derive(Debug)]
pub enum Request {
    /// Places an order; the reply is its id.
    Place {
        /// Buy or sell.
        side: Side,
        /// What.
        item: String,
        /// How many.
        qty: u32,
        /// The order's id.
        reply: oneshot::Sender<u64>,
    },
    /// The quantities wanted on each side of one item.
    Depth {
        /// What.
        item: String,
        /// Buy and sell quantities.
        reply: oneshot::Sender<(u64, u64)>,
    },
    /// Drops the oldest orders beyond the book's bound; the reply is how
    /// many went.
    Sweep {
        /// How many went.
        reply: oneshot::Sender<usize>,
    },
}

/// The most orders the book keeps; sweeps drop the oldest beyond it.
pub const MAX_ORDERS: usize = 10_000;

/// A handle to the book actor.
#[derive(Clone, Debug)]
pub struct Book {
    tx: mpsc::Sender<Request>,
}

/// The book actor stopped.
#[derive(Debug)]
pub struct Gone;

#[derive(Debug, Default)]
struct Orders {
    next_id: u64,
    open: Vec<(u64, Side, String, u32)>,
    depth: HashMap<String, (u64, u64)>,
}

impl Orders {
    #[traced]
    fn place(&mut self, side: Side, item: String, qty: u32) -> u64 {
        self.next_id += 1;
        let depth = self.depth.entry(item.clone()).or_default();
        match side {
            Side::Buy => depth.0 += u64::from(qty),
            Side::Sell => depth.1 += u64::from(qty),
        }
        self.open.push((self.next_id, side, item, qty));
        self.next_id
    }

    #[traced]
    fn sweep(&mut self) -> usize {
        let over = self.open.len().saturating_sub(MAX_ORDERS);
        for (_, side, item, qty) in self.open.drain(..over) {
            if let Some(d) = self.depth.get_mut(&item) {
                match side {
                    Side::Buy => d.0 -= u64::from(qty),
                    Side::Sell => d.1 -= u64::from(qty),
                }
            }
        }
        over
    }
}

/// Starts the book actor, registered as `book`.
pub fn start() -> Book {
    let (tx, mut rx) = mpsc::channel::<Request>(256);
    task::spawn("book", async move {
        let mut orders = Orders::default();
        while let Some(request) = rx.recv().await {
            match request {
                Request::Place {
                    side,
                    item,
                    qty,
                    reply,
                } => {
                    let _ = reply.send(orders.place(side, item, qty));
                }
                Request::Depth { item, reply } => {
                    let _ = reply.send(orders.depth.get(&item).copied().unwrap_or_default());
                }
                Request::Sweep { reply } => {
                    let _ = reply.send(orders.sweep());
                }
            }
        }
    });
    Book { tx }
}

impl Book {
    async fn ask<T: std::fmt::Debug>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, Gone> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// Places an order.
    pub async fn place(&self, side: Side, item: String, qty: u32) -> Result<u64, Gone> {
        self.ask(|reply| Request::Place {
            side,
            item,
            qty,
            reply,
        })
        .await
    }

    /// The buy and sell quantities of `item`.
    pub async fn depth(&self, item: String) -> Result<(u64, u64), Gone> {
        self.ask(|reply| Request::Depth { item, reply }).await
    }

    /// Drops the oldest orders beyond [`MAX_ORDERS`].
    pub async fn sweep(&self) -> Result<usize, Gone> {
        self.ask(|reply| Request::Sweep { reply }).await
    }
}
