//! The per-user home of nodetrace: the cookie and the node registry.
//!
//! Like `~/.erlang.cookie` and `epmd`, without a daemon: the home directory
//! (`NODETRACE_HOME`, else `~/.nodetrace`, mode 0700) holds `cookie` (random,
//! mode 0600, created on first use) and `nodes/`, one small file per running
//! node saying its name, OS pid, address and start time. A node writes its
//! file when it starts and removes it when it stops; readers skip and remove
//! the files of nodes whose process is gone.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the home is, unless `NODETRACE_HOME` says otherwise: `~/.nodetrace`.
pub const HOME_DIR_NAME: &str = ".nodetrace";

/// Why the home could not be used.
#[derive(thiserror::Error)]
pub enum HomeError {
    /// Neither `NODETRACE_HOME` nor `HOME` is set.
    #[error("no home for nodetrace: set NODETRACE_HOME (or HOME)")]
    NoHome,
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The cookie file is empty.
    #[error("{0}: the cookie file is empty; delete it to get a new one, or set NODETRACE_COOKIE")]
    EmptyCookie(PathBuf),
    /// Another live node has the name.
    #[error("the node name {name} is taken by OS process {os_pid}; pick another name")]
    NameTaken {
        /// The name.
        name: String,
        /// Its holder.
        os_pid: u32,
    },
}

/// Reads like `Display`, so that `?` in a `main` prints one line.
impl std::fmt::Debug for HomeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A registered node: what `nodetrace nodes` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its name, e.g. `todo@localhost`.
    pub name: String,
    /// Its OS process id.
    pub os_pid: u32,
    /// Where its control server listens.
    pub addr: SocketAddr,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
}

impl NodeEntry {
    fn to_text(&self) -> String {
        format!(
            "name={}\nos_pid={}\naddr={}\nstarted_ms={}\n",
            self.name, self.os_pid, self.addr, self.started_ms
        )
    }

    fn from_text(text: &str) -> Option<NodeEntry> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        };
        Some(NodeEntry {
            name: field("name")?.to_owned(),
            os_pid: field("os_pid")?.parse().ok()?,
            addr: field("addr")?.parse().ok()?,
            started_ms: field("started_ms")?.parse().ok()?,
        })
    }
}

/// The nodetrace home of this user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `NODETRACE_HOME` if set, else `~/.nodetrace`.
    pub fn from_env() -> Result<Home, HomeError> {
        if let Some(dir) = std::env::var_os("NODETRACE_HOME").filter(|d| !d.is_empty()) {
            return Ok(Home::at(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .ok_or(HomeError::NoHome)?;
        Ok(Home::at(Path::new(&home).join(HOME_DIR_NAME)))
    }

    /// A home at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Home {
        Home { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), HomeError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        restrict(dir, 0o700).map_err(io_err(dir))
    }

    /// The cookie: the file's, created (random, mode 0600) if missing.
    pub fn cookie(&self) -> Result<String, HomeError> {
        let path = self.dir.join("cookie");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let cookie = text.trim().to_owned();
                if cookie.is_empty() {
                    return Err(HomeError::EmptyCookie(path));
                }
                Ok(cookie)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_dir(&self.dir)?;
                let cookie = random_cookie();
                let mut file = create_private(&path).map_err(io_err(&path))?;
                file.write_all(cookie.as_bytes()).map_err(io_err(&path))?;
                Ok(cookie)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }

    fn entry_path(&self, name: &str) -> PathBuf {
        let safe: String = name
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c == '\0' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        self.nodes_dir().join(format!("{safe}.node"))
    }

    /// Adds `entry` to the registry; fails if a live node has the name.
    pub fn register(&self, entry: &NodeEntry) -> Result<Registration, HomeError> {
        let dir = self.nodes_dir();
        self.ensure_dir(&self.dir)?;
        self.ensure_dir(&dir)?;
        if let Some(holder) = self.nodes()?.into_iter().find(|n| n.name == entry.name)
            && holder.os_pid != entry.os_pid
        {
            return Err(HomeError::NameTaken {
                name: entry.name.clone(),
                os_pid: holder.os_pid,
            });
        }
        let path = self.entry_path(&entry.name);
        let tmp = path.with_extension(format!("tmp{}", entry.os_pid));
        fs::write(&tmp, entry.to_text()).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(Registration { path })
    }

    /// The live registered nodes, by name; files of dead nodes are removed.
    pub fn nodes(&self) -> Result<Vec<NodeEntry>, HomeError> {
        let dir = self.nodes_dir();
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut nodes = Vec::new();
        for file in read.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "node") {
                continue;
            }
            match fs::read_to_string(&path)
                .ok()
                .and_then(|t| NodeEntry::from_text(&t))
            {
                Some(entry) if process_alive(entry.os_pid) => nodes.push(entry),
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }
}

/// A node's registry file; removed when dropped.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn random_cookie() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Whether OS process `pid` runs (on Linux, by `/proc`; elsewhere assumed).
pub fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// The cookie to use: `explicit` (`--cookie`), else `NODETRACE_COOKIE`,
/// else the home's cookie file.
pub fn resolve_cookie(explicit: Option<&str>, home: &Home) -> Result<String, HomeError> {
    if let Some(cookie) = explicit.filter(|c| !c.is_empty()) {
        return Ok(cookie.to_owned());
    }
    if let Some(cookie) = std::env::var("NODETRACE_COOKIE")
        .ok()
        .filter(|c| !c.is_empty())
    {
        return Ok(cookie);
    }
    home.cookie()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_created_once_private_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        let cookie = home.cookie().unwrap();
        assert_eq!(cookie.len(), 20);
        assert_eq!(home.cookie().unwrap(), cookie);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&home.dir().join("cookie")), 0o600);
            assert_eq!(mode(home.dir()), 0o700);
        }
        assert_eq!(resolve_cookie(Some("given"), &home).unwrap(), "given");
    }

    #[test]
    fn nodes_register_list_and_leave_and_dead_ones_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path());
        let me = NodeEntry {
            name: "a@localhost".into(),
            os_pid: std::process::id(),
            addr: "127.0.0.1:4000".parse().unwrap(),
            started_ms: 7,
        };
        let registration = home.register(&me).unwrap();
        assert_eq!(home.nodes().unwrap(), std::slice::from_ref(&me));

        let taken = NodeEntry {
            os_pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(matches!(
            home.register(&taken),
            Err(HomeError::NameTaken { .. })
        ));

        let dead = NodeEntry {
            name: "dead@localhost".into(),
            os_pid: u32::MAX - 1,
            ..me.clone()
        };
        fs::write(home.entry_path(&dead.name), dead.to_text()).unwrap();
        assert_eq!(
            home.nodes().unwrap(),
            std::slice::from_ref(&me),
            "a dead node is not listed"
        );
        assert!(
            !home.entry_path(&dead.name).exists(),
            "and its file is removed"
        );

        drop(registration);
        assert!(home.nodes().unwrap().is_empty());
    }
}
