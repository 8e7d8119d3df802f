//! A load generator: the HTTP server's work without HTTP.
//!
//! `todo load` drives the same path as the handlers (cache lookup, then the
//! list's server, then the database) from several client tasks at once, so
//! that the system can be measured and profiled (`nodetrace profile -- todo
//! load ...`) without a socket in the way. The operations are a fixed
//! function of their number: two runs do the same work.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use nodetrace_agent::traced;
use tokio::task::JoinSet;

use crate::list::NewEntry;
use crate::{Error, System, cache, server};

/// What a load run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadConfig {
    /// Operations in all, half `add_entry` and half `entries`.
    pub requests: u64,
    /// Lists they go to, named `list0`, `list1`, ...; at least one.
    pub lists: u64,
    /// Client tasks sharing the operations; at least one.
    pub clients: u64,
}

/// What a load run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReport {
    /// Operations done.
    pub operations: u64,
    /// Wall time for all of them.
    pub elapsed: Duration,
    /// Operations per second of wall time.
    pub ops_per_sec: f64,
}

impl fmt::Display for LoadReport {
    /// `200000 operations in 0.41 s: 487805 ops/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} operations in {:.2} s: {:.0} ops/s",
            self.operations,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec
        )
    }
}

/// Runs `config.requests` operations against `system` from `config.clients`
/// concurrent tasks and reports the throughput. The first failed operation
/// ends the run with its error.
#[traced]
pub async fn run(system: &System, config: LoadConfig) -> Result<LoadReport, Error> {
    let lists = config.lists.max(1);
    let clients = config.clients.max(1);
    let started = Instant::now();
    // Dropping the set (on the first error) aborts the other clients.
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let ops = share(config.requests, clients, c);
        tasks.spawn(client(system.clone(), ops, lists));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|err| Error::Internal(format!("load client failed: {err}")))??;
    }
    let elapsed = started.elapsed();
    Ok(LoadReport {
        operations: config.requests,
        elapsed,
        ops_per_sec: config.requests as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

/// The operations of client `c` of `clients`: a contiguous share of
/// `0..requests`, so every client alternates adds and reads.
fn share(requests: u64, clients: u64, c: u64) -> Range<u64> {
    let bound = |c: u64| (u128::from(requests) * u128::from(c) / u128::from(clients)) as u64;
    bound(c)..bound(c + 1)
}

/// One operation, as a function of its number `i`: even numbers add an entry,
/// odd numbers read back the day of the entry just before.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    AddEntry(String, NewEntry),
    Entries(String, NaiveDate),
}

fn op(i: u64, lists: u64) -> Op {
    let pair = i / 2;
    let list = format!("list{}", pair % lists);
    let base = NaiveDate::from_ymd_opt(2023, 1, 1).expect("a valid date");
    let date = base + Days::new(pair / lists % 36_500);
    if i.is_multiple_of(2) {
        Op::AddEntry(list, NewEntry::new(date, format!("task {pair}")))
    } else {
        Op::Entries(list, date)
    }
}

/// One client: does operations `ops` in order, each through the cache.
#[traced]
async fn client(system: System, ops: Range<u64>, lists: u64) -> Result<(), Error> {
    for i in ops {
        match op(i, lists) {
            Op::AddEntry(list, entry) => {
                let server = cache::server_process(system.cache(), &list).await?;
                server::add_entry(&server, entry).await?;
            }
            Op::Entries(list, date) => {
                let server = cache::server_process(system.cache(), &list).await?;
                server::entries(&server, date).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_every_operation_once() {
        let shares: Vec<_> = (0..3).map(|c| share(10, 3, c)).collect();
        assert_eq!(shares, [0..3, 3..6, 6..10]);
        assert_eq!(share(2, 4, 0), 0..0);
    }

    #[test]
    fn operations_alternate_and_read_what_was_added() {
        let date = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
        assert_eq!(
            op(0, 3),
            Op::AddEntry("list0".into(), NewEntry::new(date, "task 0"))
        );
        assert_eq!(op(1, 3), Op::Entries("list0".into(), date));
        assert_eq!(
            op(6, 3),
            Op::AddEntry("list0".into(), NewEntry::new(date + Days::new(1), "task 3"))
        );
    }
}
