//! The node: this process as tracers know it, by name.

use std::sync::OnceLock;

use crate::collector;

/// The name a node has unless configured, like `nonode@nohost`.
pub const DEFAULT_NODE_NAME: &str = "nonode@nohost";

/// How a node presents itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Its name, e.g. `todo@localhost`.
    pub name: String,
}

impl NodeConfig {
    /// A node named `name`.
    pub fn new(name: impl Into<String>) -> NodeConfig {
        NodeConfig { name: name.into() }
    }

    /// The name from `NODETRACE_NODE` if set, else `default`.
    pub fn from_env_or(default: &str) -> NodeConfig {
        NodeConfig::new(std::env::var("NODETRACE_NODE").unwrap_or_else(|_| default.to_owned()))
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `start` ran twice.
    #[error("this process already runs node {0}; a process is one node")]
    AlreadyStarted(String),
}

static NODE: OnceLock<NodeConfig> = OnceLock::new();

/// Makes this process the node `config.name` and starts the collector.
pub fn start(config: NodeConfig) -> Result<(), NodeError> {
    let mut fresh = false;
    let node = NODE.get_or_init(|| {
        fresh = true;
        config.clone()
    });
    if !fresh {
        return Err(NodeError::AlreadyStarted(node.name.clone()));
    }
    collector::ensure_running();
    Ok(())
}

/// This node's name ([`DEFAULT_NODE_NAME`] until [`start`]).
pub fn name() -> &'static str {
    NODE.get().map_or(DEFAULT_NODE_NAME, |n| n.name.as_str())
}
