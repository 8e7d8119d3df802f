//! The Todo system of *Elixir in Action*, as a Rust node that nodetrace can
//! trace: the example service the tracer, the profiler and the end-to-end
//! tests run against.
//!
//! The processes are the book's, so that the book's tracing sessions work as
//! written (`Todo.Server` names [`server`], `Todo.Cache` [`cache`],
//! `Todo.Database` [`database`]):
//!
//! - [`cache`]: one Todo.Cache process, list name → Todo.Server;
//! - [`server`]: one Todo.Server process per list (`todo_server:<list>`);
//! - [`database`]: three worker processes (`todo_database_worker:1..3`)
//!   that store the lists, as files or in memory;
//! - [`http`]: `POST /add_entry` and `GET /entries` on port 5454;
//! - [`load`]: the same requests without HTTP, to measure and profile.
//!
//! ```
//! use todo::list::NewEntry;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let system = todo::start(None).await.unwrap();
//! let bob = todo::cache::server_process(system.cache(), "bob").await.unwrap();
//! let date = chrono::NaiveDate::from_ymd_opt(2023, 12, 19).unwrap();
//! todo::server::add_entry(&bob, NewEntry::new(date, "Dentist")).await.unwrap();
//! let entries = todo::server::entries(&bob, date).await.unwrap();
//! assert_eq!(entries[0].title, "Dentist");
//! system.stop().await;
//! # });
//! ```

pub mod cache;
pub mod database;
pub mod http;
pub mod list;
pub mod load;
pub mod server;

use std::path::PathBuf;

use nodetrace_agent::gen_server::{CallError, StartError};
use nodetrace_agent::traced;

use crate::cache::TodoCache;
use crate::database::Database;

/// What can go wrong in the Todo system.
///
/// Each message includes its cause, so one line says it all (in an HTTP
/// answer or on stderr); the causes are therefore not also chained as
/// `source()`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A process did not answer.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A process did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A file operation failed.
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which file.
        path: PathBuf,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// A stored list could not be read back.
    #[error("{} is not a stored to-do list: {cause}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        cause: serde_json::Error,
    },
    /// A bug: something that should not happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A running Todo system: the database and the cache. Cheap to clone.
///
/// Its processes have fixed registered names, so a process runs one system
/// at a time: [`System::stop`] one before starting the next.
#[derive(Debug, Clone)]
pub struct System {
    cache: TodoCache,
    db: Database,
}

/// Starts the database (files in `data_dir`, or in memory if `None`) and the
/// cache.
#[traced]
pub async fn start(data_dir: Option<PathBuf>) -> Result<System, Error> {
    let db = Database::start(data_dir).await?;
    match cache::start(&db).await {
        Ok(cache) => Ok(System { cache, db }),
        Err(err) => {
            db.stop().await;
            Err(err)
        }
    }
}

impl System {
    /// The Todo.Cache, for [`cache::server_process`].
    pub fn cache(&self) -> &TodoCache {
        &self.cache
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Stops every process of the system and waits for them, which frees
    /// their registered names. Stored lists stay stored.
    pub async fn stop(&self) {
        let _ = cache::stop_servers(&self.cache).await;
        let _ = self.cache.stop().await;
        self.db.stop().await;
    }
}
