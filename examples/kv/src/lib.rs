//! `kv`: a small key-value store over TCP, instrumented with `tracing` the
//! way a real service is, and nothing else: the example node of the
//! `tracing` bridge (`nodetrace_agent::tracing_layer()`), and what its
//! end-to-end tests run against.
//!
//! Its spans become nodetrace callsites once reached, so that `nodetrace
//! trace calls`, `profile` and `log` see them without a second annotation:
//!
//! - [`conn::handle`]: one async span per connection (`skip(stream)`);
//! - [`cmd::parse`]: a sync span with `err` (bad commands are its errors);
//! - [`cmd::apply`]: a sync span with fields (`op`, `key`), inside `handle`;
//! - [`store::Store::get`] (with `ret`), `set` and `del`: spans on methods
//!   (`skip(self)`), inside `apply`;
//! - [`cmd::slow`]: an async span that awaits a timer, so its busy time is
//!   less than its wall time;
//! - [`stats::summary`]: a `#[nodetrace_agent::traced]` function calling the
//!   instrumented [`store::Store::len`], so a profile shows a span under a
//!   traced function.
//!
//! The request path has an event at every level, `trace!` to `error!`.
//!
//! # Protocol
//!
//! One command a line, one reply a line:
//!
//! | command           | reply                                   |
//! |-------------------|-----------------------------------------|
//! | `SET key value`   | `OK` (`ERR value too long` past 1 KiB)  |
//! | `GET key`         | the value, or `NIL`                     |
//! | `DEL key`         | `OK`, or `NIL` if there was none        |
//! | `SLOW ms`         | `OK` after `ms` milliseconds (≤ 10 s)   |
//! | `STATS`           | `keys=N`                                |
//! | anything else     | `ERR ...`                               |
//!
//! ```
//! use kv::cmd::{self, Reply};
//! use kv::store::Store;
//!
//! let store = Store::default();
//! let set = cmd::parse("SET a 1").unwrap();
//! assert_eq!(cmd::apply(&store, &set), Reply::Ok);
//! let get = cmd::parse("GET a").unwrap();
//! assert_eq!(cmd::apply(&store, &get), Reply::Value("1".into()));
//! assert!(cmd::parse("FLY a").is_err());
//! ```

pub mod cmd;
pub mod conn;
pub mod stats;
pub mod store;
