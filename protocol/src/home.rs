//! The per-user home of nodetrace: the cookie and the node registry.
//!
//! Like `~/.erlang.cookie` and `epmd`, without a daemon: the home directory
//! (`NODETRACE_HOME`, else `~/.nodetrace`, mode 0700) holds `cookie` (random,
//! mode 0600, created on first use) and `nodes/`, one small file per running
//! node saying its name, OS pid, address and start time. A node writes its
//! file when it starts and removes it when it stops; readers skip and remove
//! the files of nodes whose process is gone.
//!
//! The home is checked as ssh checks `~/.ssh`: the directory, the cookie
//! and each registry file must be the user's own, not links, and not
//! writable (the cookie: not readable) by anyone else. A home that fails is
//! an error naming the path and the fix, never silently changed; a
//! registry file that fails is not believed.

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
    /// A file or directory could not be read or written. (The error is
    /// said in the message, not as a source, so that it is said once.)
    #[error("{path}: {error}")]
    Io {
        /// Which.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// The cookie file is empty.
    #[error("{0}: the cookie file is empty; delete it to get a new one, or set NODETRACE_COOKIE")]
    EmptyCookie(PathBuf),
    /// A path of the home is not safely the user's own.
    #[error("{path} {why}; {fix}")]
    Untrusted {
        /// Which.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
        /// What to do.
        fix: String,
    },
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
    move |error| HomeError::Io {
        path: path.to_owned(),
        error,
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

    /// Makes `dir` (mode 0700) if it is missing, else checks that it is
    /// safely the user's own; an existing directory is never changed.
    fn ensure_dir(&self, dir: &Path) -> Result<(), HomeError> {
        match fs::symlink_metadata(dir) {
            Ok(_) => check_private(dir, Private::Dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                create_private_dir(dir).map_err(io_err(dir))
            }
            Err(e) => Err(io_err(dir)(e)),
        }
    }

    /// The cookie: the file's, created (random, mode 0600) if missing.
    pub fn cookie(&self) -> Result<String, HomeError> {
        let path = self.dir.join("cookie");
        if fs::symlink_metadata(&self.dir).is_ok() {
            check_private(&self.dir, Private::Dir)?;
        }
        if fs::symlink_metadata(&path).is_ok() {
            check_private(&path, Private::Secret)?;
        }
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
        let _ = fs::remove_file(&tmp);
        let mut file = create_private(&tmp).map_err(io_err(&tmp))?;
        file.write_all(entry.to_text().as_bytes())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(Registration { path })
    }

    /// The live registered nodes, by name; files of dead nodes are removed.
    pub fn nodes(&self) -> Result<Vec<NodeEntry>, HomeError> {
        if fs::symlink_metadata(&self.dir).is_ok() {
            check_private(&self.dir, Private::Dir)?;
        }
        let dir = self.nodes_dir();
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        check_private(&dir, Private::Dir)?;
        let mut nodes = Vec::new();
        for file in read.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "node") {
                continue;
            }
            // Only the user's own entries are believed (or pruned).
            if check_private(&path, Private::File).is_err() {
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

/// What a checked path must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Private {
    /// A directory no one else may write.
    Dir,
    /// A file no one else may write.
    File,
    /// A file no one else may read or write: the cookie.
    Secret,
}

/// Checks, without following a link, that `path` is the user's own and
/// closed to others as `kind` requires.
#[cfg(unix)]
fn check_private(path: &Path, kind: Private) -> Result<(), HomeError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    let untrusted = |why: String, fix: String| HomeError::Untrusted {
        path: path.to_owned(),
        why,
        fix,
    };
    let shown = path.display();
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            "is a symbolic link".into(),
            format!(
                "replace it with a {} of your own, or set NODETRACE_HOME to one",
                match kind {
                    Private::Dir => "directory",
                    _ => "file",
                }
            ),
        ));
    }
    // Safety: `geteuid` has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(untrusted(
            format!("belongs to uid {}, not to you (uid {me})", meta.uid()),
            "use a nodetrace home of your own (NODETRACE_HOME)".into(),
        ));
    }
    let mode = meta.mode() & 0o7777;
    let (closed, chmod) = match kind {
        Private::Dir => (0o022, "700"),
        Private::File => (0o022, "600"),
        Private::Secret => (0o077, "600"),
    };
    if mode & closed != 0 {
        let who = if kind == Private::Secret {
            "readable or writable"
        } else {
            "writable"
        };
        return Err(untrusted(
            format!("is {who} by others (mode {mode:o})"),
            format!("chmod {chmod} {shown}"),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: Private) -> Result<(), HomeError> {
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(path)
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)
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

    #[cfg(unix)]
    fn mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Checked as ssh checks `~/.ssh`: each failure names the path and the
    /// fix, and nothing is changed.
    #[cfg(unix)]
    #[test]
    fn a_home_not_safely_ours_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        mode(&shared, 0o1777);
        let err = Home::at(&shared).cookie().unwrap_err().to_string();
        assert!(err.contains("is writable by others (mode 1777)"), "{err}");
        assert!(
            err.contains(&format!("chmod 700 {}", shared.display())),
            "{err}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::symlink_metadata(&shared).unwrap().permissions().mode() & 0o7777,
            0o1777,
            "left as it was"
        );

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        let err = Home::at(&link).cookie().unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");

        let home = Home::at(tmp.path().join("h"));
        home.cookie().unwrap();
        mode(&home.dir().join("cookie"), 0o644);
        let err = home.cookie().unwrap_err().to_string();
        assert!(
            err.contains("readable or writable by others (mode 644)"),
            "{err}"
        );
        assert!(err.contains("chmod 600"), "{err}");
    }

    /// A registry entry someone else could have written is not believed.
    #[cfg(unix)]
    #[test]
    fn only_our_own_registry_entries_are_believed() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        let me = NodeEntry {
            name: "a@h".into(),
            os_pid: std::process::id(),
            addr: "127.0.0.1:1".parse().unwrap(),
            started_ms: 1,
        };
        let registration = home.register(&me).unwrap();
        assert_eq!(home.nodes().unwrap(), std::slice::from_ref(&me));
        let planted = home.nodes_dir().join("b@h.node");
        fs::write(
            &planted,
            NodeEntry {
                name: "b@h".into(),
                ..me.clone()
            }
            .to_text(),
        )
        .unwrap();
        mode(&planted, 0o666);
        assert_eq!(
            home.nodes().unwrap(),
            std::slice::from_ref(&me),
            "a world-writable entry"
        );
        assert!(planted.exists(), "and it is not ours to remove");
        // Owned by another user: as root, give it away.
        // Safety: `geteuid` has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            mode(&planted, 0o644);
            std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
            assert_eq!(home.nodes().unwrap(), [me], "an entry of another uid");
        }
        drop(registration);
    }

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
