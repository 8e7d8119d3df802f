//! Todo.Database: stores each list under its name, through a pool of workers.
//!
//! As in the book, a key always goes to the same one of
//! [`WORKERS`] worker processes (a hash of the key), so the writes of one list
//! are serialised while different lists are written in parallel. A store is a
//! call that returns once the file is durably in place (a temporary file,
//! synced, then renamed over the old one), so a crash never leaves half a
//! list and an acknowledged write survives a restart. Without a data
//! directory the workers keep the lists in memory instead.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use nodetrace_agent::gen_server::{self, GenServer, GenServerRef};
use nodetrace_agent::{Pid, traced};

use crate::Error;
use crate::list::TodoList;

/// How many worker processes a database has.
pub const WORKERS: usize = 3;

/// The registered name of worker `n` (1-based), e.g. `todo_database_worker:1`.
pub fn worker_name(n: usize) -> String {
    format!("todo_database_worker:{n}")
}

/// A handle to a running database: its workers.
#[derive(Clone)]
pub struct Database {
    workers: Vec<GenServerRef<Worker>>,
    dir: Option<PathBuf>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dir {
            Some(dir) => write!(f, "Database({})", dir.display()),
            None => f.write_str("Database(memory)"),
        }
    }
}

#[traced]
impl Database {
    /// Starts the workers, registered as [`worker_name`]`(1..=3)`. With a
    /// `dir` (created if missing) lists are files in it; without, they live
    /// in memory.
    pub async fn start(dir: Option<PathBuf>) -> Result<Database, Error> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|cause| Error::Io {
                action: "create the data directory",
                path: dir.clone(),
                cause,
            })?;
        }
        let mut workers = Vec::with_capacity(WORKERS);
        for n in 1..=WORKERS {
            let store = match &dir {
                Some(dir) => Store::Files(dir.clone()),
                None => Store::Memory(HashMap::new()),
            };
            match gen_server::start_named(&worker_name(n), Worker { n, store }).await {
                Ok(worker) => workers.push(worker),
                Err(err) => {
                    for worker in &workers {
                        let _ = worker.stop().await;
                    }
                    return Err(err.into());
                }
            }
        }
        Ok(Database { workers, dir })
    }

    /// Stores `list` under `key`; returns once it is on disk (or in memory).
    pub async fn store(&self, key: &str, list: &TodoList) -> Result<(), Error> {
        let request = Request::Store(key.to_owned(), list.clone());
        match self.choose_worker(key).call(request).await? {
            Reply::Stored => Ok(()),
            Reply::Failed(err) => Err(err),
            Reply::Found(_) => unreachable!("a worker answers a store with Stored or Failed"),
        }
    }

    /// The list stored under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<TodoList>, Error> {
        match self
            .choose_worker(key)
            .call(Request::Get(key.to_owned()))
            .await?
        {
            Reply::Found(list) => Ok(list),
            Reply::Failed(err) => Err(err),
            Reply::Stored => unreachable!("a worker answers a get with Found or Failed"),
        }
    }

    /// Stops the workers, waiting for what they were doing.
    pub async fn stop(&self) {
        for worker in &self.workers {
            let _ = worker.stop().await;
        }
    }
}

impl Database {
    /// The worker that owns `key`: always the same one for a key.
    fn choose_worker(&self, key: &str) -> &GenServerRef<Worker> {
        &self.workers[worker_index(key, self.workers.len())]
    }

    /// The data directory, or `None` when the lists live in memory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The workers' pids, worker 1 first.
    pub fn worker_pids(&self) -> Vec<Pid> {
        self.workers.iter().map(GenServerRef::pid).collect()
    }
}

/// Which of `workers` owns `key`, like the book's `:erlang.phash2(key, 3)`.
///
/// FNV-1a: fixed across runs and builds, unlike `DefaultHasher`.
fn worker_index(key: &str, workers: usize) -> usize {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    key.hash(&mut h);
    (h.finish() % workers as u64) as usize
}

/// A request to a database worker.
#[derive(Debug)]
pub enum Request {
    /// Store the list under the key.
    Store(String, TodoList),
    /// Fetch the list stored under the key.
    Get(String),
}

/// A database worker's answer.
#[derive(Debug)]
pub enum Reply {
    /// The list is stored.
    Stored,
    /// The stored list, if there is one.
    Found(Option<TodoList>),
    /// The request failed.
    Failed(Error),
}

/// Where a worker keeps its lists.
enum Store {
    /// One JSON file per list in this directory.
    Files(PathBuf),
    /// In memory, by key.
    Memory(HashMap<String, TodoList>),
}

/// Todo.DatabaseWorker: a process that reads and writes the lists of its keys.
pub struct Worker {
    n: usize,
    store: Store,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.store {
            Store::Files(dir) => write!(f, "Worker({}, {:?})", self.n, dir),
            Store::Memory(lists) => write!(f, "Worker({}, memory, {} lists)", self.n, lists.len()),
        }
    }
}

#[traced]
impl GenServer for Worker {
    type Call = Request;
    type Cast = ();
    type Info = ();
    type Reply = Reply;

    async fn handle_call(&mut self, request: Request, _from: Pid) -> Reply {
        match (&mut self.store, request) {
            (Store::Memory(lists), Request::Store(key, list)) => {
                lists.insert(key, list);
                Reply::Stored
            }
            (Store::Memory(lists), Request::Get(key)) => Reply::Found(lists.get(&key).cloned()),
            (Store::Files(dir), Request::Store(key, list)) => {
                let path = file_name(dir, &key);
                match blocking(move || write_file(&path, &list)).await {
                    Ok(()) => Reply::Stored,
                    Err(err) => Reply::Failed(err),
                }
            }
            (Store::Files(dir), Request::Get(key)) => {
                let path = file_name(dir, &key);
                match blocking(move || read_file(&path)).await {
                    Ok(list) => Reply::Found(list),
                    Err(err) => Reply::Failed(err),
                }
            }
        }
    }
}

/// Runs file I/O on tokio's blocking pool, so a slow disk never stalls the
/// runtime's workers (which also serve HTTP).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|err| Err(Error::Internal(format!("file task failed: {err}"))))
}

/// The file of list `key` in `dir`: the key with every byte but
/// `[A-Za-z0-9_-]` written `%XX`, so no key can name a path outside `dir`
/// or a temporary file.
pub fn file_name(dir: &Path, key: &str) -> PathBuf {
    let mut name = String::with_capacity(key.len() + 5);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".json");
    dir.join(name)
}

/// Writes `list` to `path` atomically and durably: a synced temporary file
/// renamed over the old one, then the directory synced.
#[traced]
fn write_file(path: &Path, list: &TodoList) -> Result<(), Error> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |cause| Error::Io {
            action,
            path,
            cause,
        }
    };
    let json = serde_json::to_vec(list).map_err(|err| Error::Internal(err.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(&json).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    if let Some(dir) = path.parent() {
        // Makes the rename itself durable; not possible on every platform.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Reads the list at `path`; `None` if there is no such file.
#[traced]
fn read_file(path: &Path) -> Result<Option<TodoList>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(Error::Io {
                action: "read",
                path: path.to_owned(),
                cause,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|cause| Error::Corrupt {
            path: path.to_owned(),
            cause,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_goes_to_the_same_worker_and_keys_spread() {
        assert_eq!(worker_index("bob", 3), worker_index("bob", 3));
        let used: std::collections::HashSet<_> = (0..30)
            .map(|i| worker_index(&format!("list{i}"), 3))
            .collect();
        assert_eq!(used.len(), 3);
    }

    #[test]
    fn file_names_cannot_escape_the_directory() {
        let dir = Path::new("/data");
        assert_eq!(file_name(dir, "bob"), Path::new("/data/bob.json"));
        assert_eq!(
            file_name(dir, "../etc/x.y"),
            Path::new("/data/%2E%2E%2Fetc%2Fx%2Ey.json")
        );
    }

    #[test]
    fn files_are_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_name(dir.path(), "bob");
        assert!(read_file(&path).unwrap().is_none());
        let mut list = TodoList::new();
        list.add_entry(crate::list::NewEntry::new(
            chrono::NaiveDate::from_ymd_opt(2023, 12, 19).unwrap(),
            "Dentist",
        ));
        write_file(&path, &list).unwrap();
        assert_eq!(read_file(&path).unwrap(), Some(list));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["bob.json"], "no temporary file is left behind");

        std::fs::write(&path, "{\"auto_id\":").unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
