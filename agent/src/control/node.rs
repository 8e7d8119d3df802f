//! The node: this process as tracers know it, by name.
//!
//! [`start`] names the node, starts the collector and the control server
//! (see `control`), and registers the node so that `nodetrace nodes` lists
//! it and `nodetrace trace --node NAME` finds it.

pub use crate::control::server::MAX_CONNECTIONS;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use nodetrace_protocol::NodeInfo;
use nodetrace_protocol::home::HomeError;

use crate::control;
use crate::session::collector;

/// The name a node has unless configured, like `nonode@nohost`.
pub const DEFAULT_NODE_NAME: &str = "nonode@nohost";

/// How a node presents itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Its name, e.g. `todo@localhost`.
    pub name: String,
    /// The cookie tracers must know; `None` reads `NODETRACE_COOKIE`, else
    /// the cookie file of the nodetrace home.
    pub cookie: Option<String>,
    /// Where the control server listens; `None` is 127.0.0.1 on a port the
    /// OS picks.
    pub listen: Option<SocketAddr>,
    /// The nodetrace home holding the cookie and the registry; `None` is
    /// `NODETRACE_HOME`, else `~/.nodetrace`.
    pub home: Option<PathBuf>,
}

impl NodeConfig {
    /// A node named `name`, with the cookie and address from the environment.
    pub fn new(name: impl Into<String>) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            cookie: None,
            listen: None,
            home: None,
        }
    }

    /// The name from `NODETRACE_NODE` if set, else `default`.
    pub fn from_env_or(default: &str) -> NodeConfig {
        NodeConfig::new(std::env::var("NODETRACE_NODE").unwrap_or_else(|_| default.to_owned()))
    }
}

/// Why a node did not start.
///
/// Its `Debug` is its `Display`, so that `node::start(config)?` in a
/// `main` returning `Result<(), Box<dyn Error>>` (or `anyhow::Result`)
/// prints one line that says what to do, not the variant's fields.
#[derive(thiserror::Error)]
pub enum NodeError {
    /// `start` ran twice.
    #[error("this process already runs node {0}; a process is one node")]
    AlreadyStarted(String),
    /// The cookie or the registry could not be used.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The control server could not listen.
    #[error("the control server cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

impl std::fmt::Debug for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

struct Node {
    name: String,
    addr: SocketAddr,
}

static NODE: OnceLock<Node> = OnceLock::new();

/// Makes this process the node `config.name`: starts the collector and the
/// control server and registers the node. Returns the control address.
pub fn start(config: NodeConfig) -> Result<SocketAddr, NodeError> {
    if let Some(node) = NODE.get() {
        return Err(NodeError::AlreadyStarted(node.name.clone()));
    }
    collector::ensure_running();
    crate::process::set_runtime(true);
    let info = NodeInfo {
        name: config.name.clone(),
        os_pid: std::process::id(),
        started_ms: control::unix_ms(SystemTime::now()),
        tracing_bridge: false,
    };
    let addr = control::start(&config, info.clone())?;
    NODE.set(Node {
        name: config.name.clone(),
        addr,
    })
    .map_err(|_| NodeError::AlreadyStarted(config.name))?;
    control::connect_back(&info);
    Ok(addr)
}

/// This node's name ([`DEFAULT_NODE_NAME`] until [`start`]).
pub fn name() -> &'static str {
    NODE.get().map_or(DEFAULT_NODE_NAME, |n| n.name.as_str())
}

/// Where this node's control server listens, once started.
pub fn control_addr() -> Option<SocketAddr> {
    NODE.get().map(|n| n.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_of_an_error_reads_like_its_display() {
        let err = NodeError::AlreadyStarted("todo@localhost".to_owned());
        assert_eq!(format!("{err:?}"), err.to_string());
        assert_eq!(
            format!("{err:?}"),
            "this process already runs node todo@localhost; a process is one node"
        );
    }
}
