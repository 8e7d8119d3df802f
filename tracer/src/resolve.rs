//! Finding a node: by name through the registry (like `epmd`), by address,
//! or the only one running.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use nodetrace_protocol::home::{Home, NodeEntry};

use crate::TracerError;

/// A node to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its registered name, when it was found by name.
    pub name: Option<String>,
    /// Its control server.
    pub addr: SocketAddr,
}

impl Target {
    /// A node at an address, name unknown until it says it.
    pub fn at(addr: SocketAddr) -> Target {
        Target { name: None, addr }
    }

    /// `todo@localhost at 127.0.0.1:4000`, or the address alone.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} at {}", self.addr),
            None => self.addr.to_string(),
        }
    }

    /// The name if known, else the address: how errors refer to the node.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.addr.to_string(),
        }
    }
}

impl From<&NodeEntry> for Target {
    fn from(entry: &NodeEntry) -> Target {
        Target {
            name: Some(entry.name.clone()),
            addr: entry.addr,
        }
    }
}

/// Why no node could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No `--node` and no node registered.
    #[error("no nodes are running (none registered in {})", dir.display())]
    NoNodes {
        /// The registry directory.
        dir: PathBuf,
    },
    /// No `--node` and several nodes registered.
    #[error("{} nodes are running ({}): pick one with --node NAME", names.len(), names.join(", "))]
    Several {
        /// Their names.
        names: Vec<String>,
    },
    /// `--node NAME` names no registered node.
    #[error("unknown node {name}; {}{}", DidYouMean(nearest.as_deref()), Known(known, dir))]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered name nearest to it, if one is near.
        nearest: Option<String>,
        /// The registered names.
        known: Vec<String>,
        /// The registry directory.
        dir: PathBuf,
    },
    /// `--node HOST:PORT` does not resolve.
    #[error("cannot resolve the address {addr}: {reason}")]
    BadAddress {
        /// As typed.
        addr: String,
        /// Why.
        reason: String,
    },
}

struct DidYouMean<'a>(Option<&'a str>);

impl fmt::Display for DidYouMean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "did you mean {name}? "),
            None => Ok(()),
        }
    }
}

struct Known<'a>(&'a [String], &'a Path);

impl fmt::Display for Known<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            write!(
                f,
                "no nodes are running (none registered in {})",
                self.1.display()
            )
        } else {
            write!(f, "known nodes: {}", self.0.join(", "))
        }
    }
}

/// The registry directory of `home`.
pub fn nodes_dir(home: &Home) -> PathBuf {
    home.dir().join("nodes")
}

/// Whether `spec` is an address (`127.0.0.1:4369`, `localhost:4369`,
/// `[::1]:4369`) rather than a node name (`todo@localhost`, `todo`).
pub fn looks_like_address(spec: &str) -> bool {
    if spec.parse::<SocketAddr>().is_ok() {
        return true;
    }
    !spec.contains('@')
        && spec
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Chooses the node `spec` names among the registered `nodes`; `dir` is
/// the registry, for messages.
///
/// A name matches a registered name exactly, or its part before `@`
/// (`todo` finds `todo@localhost` when it is the only `todo@...`).
pub fn resolve_in(
    nodes: &[NodeEntry],
    dir: &Path,
    spec: Option<&str>,
) -> Result<Target, ResolveError> {
    let names = || nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
        return match nodes {
            [] => Err(ResolveError::NoNodes {
                dir: dir.to_owned(),
            }),
            [one] => Ok(one.into()),
            _ => Err(ResolveError::Several { names: names() }),
        };
    };
    if looks_like_address(spec) {
        let addr = spec
            .to_socket_addrs()
            .map_err(|e| ResolveError::BadAddress {
                addr: spec.to_owned(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| ResolveError::BadAddress {
                addr: spec.to_owned(),
                reason: "no address found".to_owned(),
            })?;
        let name = nodes
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.name.clone());
        return Ok(Target { name, addr });
    }
    if let Some(entry) = nodes.iter().find(|n| n.name == spec) {
        return Ok(entry.into());
    }
    if !spec.contains('@') {
        let short: Vec<&NodeEntry> = nodes
            .iter()
            .filter(|n| n.name.split('@').next() == Some(spec))
            .collect();
        if let [one] = short[..] {
            return Ok(one.into());
        }
    }
    // Names are compared by their part before `@` among the nodes of the
    // host typed (all of them for a short name), so that a shared
    // `@localhost` does not make every name look near.
    let (typed, host) = spec.split_once('@').unwrap_or((spec, ""));
    let short = |n: &NodeEntry| n.name.split('@').next().unwrap_or_default().to_owned();
    let same_host: Vec<&NodeEntry> = nodes
        .iter()
        .filter(|n| host.is_empty() || n.name.split_once('@').is_some_and(|(_, h)| h == host))
        .collect();
    let shorts: Vec<String> = same_host.iter().map(|n| short(n)).collect();
    let nearest = crate::suggest::nearest(typed, shorts.iter().map(String::as_str))
        .and_then(|s| same_host.iter().find(|n| short(n) == s))
        .map(|n| n.name.clone());
    Err(ResolveError::Unknown {
        name: spec.to_owned(),
        nearest,
        known: names(),
        dir: dir.to_owned(),
    })
}

/// Resolves `spec` through `home`'s registry.
pub fn resolve(home: &Home, spec: Option<&str>) -> Result<Target, TracerError> {
    let nodes = home.nodes()?;
    Ok(resolve_in(&nodes, &nodes_dir(home), spec)?)
}

/// Resolves every `--node` (or the only node when none is given),
/// without duplicates.
pub fn resolve_all(home: &Home, specs: &[String]) -> Result<Vec<Target>, TracerError> {
    let nodes = home.nodes()?;
    let dir = nodes_dir(home);
    if specs.is_empty() {
        return Ok(vec![resolve_in(&nodes, &dir, None)?]);
    }
    let mut targets: Vec<Target> = Vec::new();
    for spec in specs {
        let target = resolve_in(&nodes, &dir, Some(spec))?;
        if !targets.iter().any(|t| t.addr == target.addr) {
            targets.push(target);
        }
    }
    Ok(targets)
}

/// Resolves at most one `--node`; several are refused with `command`'s name.
pub fn resolve_one(home: &Home, specs: &[String], command: &str) -> Result<Target, TracerError> {
    match specs {
        [] => resolve(home, None),
        [one] => resolve(home, Some(one)),
        _ => Err(TracerError::Refused(format!(
            "`{command}` talks to one node; give --node once"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, port: u16) -> NodeEntry {
        NodeEntry {
            name: name.to_owned(),
            os_pid: 1,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            started_ms: 0,
        }
    }

    #[test]
    fn the_only_node_is_chosen_without_a_name() {
        let nodes = [entry("todo@localhost", 4000)];
        let t = resolve_in(&nodes, Path::new("/h/nodes"), None).unwrap();
        assert_eq!(t.name.as_deref(), Some("todo@localhost"));
        assert_eq!(t.addr.port(), 4000);
    }

    #[test]
    fn no_node_and_several_nodes_say_what_to_do() {
        let err = resolve_in(&[], Path::new("/h/nodes"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no nodes are running (none registered in /h/nodes)"
        );
        let nodes = [entry("a@localhost", 1), entry("b@localhost", 2)];
        let err = resolve_in(&nodes, Path::new("/h/nodes"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 nodes are running (a@localhost, b@localhost): pick one with --node NAME"
        );
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let nodes = [entry("todo@localhost", 1), entry("todo2@localhost", 2)];
        let err = resolve_in(&nodes, Path::new("/h/nodes"), Some("foo@localhost")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown node foo@localhost; known nodes: todo@localhost, todo2@localhost"
        );
        let err = resolve_in(&[], Path::new("/h/nodes"), Some("foo@localhost")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown node foo@localhost; no nodes are running (none registered in /h/nodes)"
        );
    }

    #[test]
    fn a_mistyped_name_suggests_the_nearest() {
        let nodes = [entry("todo@localhost", 1), entry("billing@localhost", 2)];
        let dir = Path::new("/h/nodes");
        let err = resolve_in(&nodes, dir, Some("tood@localhost")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown node tood@localhost; did you mean todo@localhost? known nodes: todo@localhost, billing@localhost"
        );
        let err = resolve_in(&nodes, dir, Some("biling")).unwrap_err();
        assert!(
            err.to_string().contains("did you mean billing@localhost?"),
            "{err}"
        );
    }

    #[test]
    fn names_short_names_and_addresses_resolve() {
        let nodes = [entry("todo@localhost", 1), entry("todo2@localhost", 2)];
        let dir = Path::new("/h/nodes");
        let t = resolve_in(&nodes, dir, Some("todo2@localhost")).unwrap();
        assert_eq!(t.addr.port(), 2);
        let t = resolve_in(&nodes, dir, Some("todo")).unwrap();
        assert_eq!(t.name.as_deref(), Some("todo@localhost"));
        let t = resolve_in(&nodes, dir, Some("127.0.0.1:2")).unwrap();
        assert_eq!(
            t.name.as_deref(),
            Some("todo2@localhost"),
            "named if registered"
        );
        let t = resolve_in(&nodes, dir, Some("127.0.0.1:9")).unwrap();
        assert_eq!(t, Target::at("127.0.0.1:9".parse().unwrap()));
        assert_eq!(t.label(), "127.0.0.1:9");
        assert!(resolve_in(&nodes, dir, Some("localhost:9")).is_ok());
    }

    #[test]
    fn addresses_and_names_are_told_apart() {
        for addr in ["127.0.0.1:4000", "localhost:4000", "[::1]:4000"] {
            assert!(looks_like_address(addr), "{addr}");
        }
        for name in ["todo@localhost", "todo", "todo@host:1", "a:b"] {
            assert!(!looks_like_address(name), "{name}");
        }
    }
}
