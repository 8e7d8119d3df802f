use std::io;
use std::path::PathBuf;

use nodetrace_protocol::frame::FrameError;
use nodetrace_protocol::home::HomeError;

use crate::resolve::ResolveError;

/// The exit code of every command whose pattern, node name or process name
/// matches nothing (grep's 1 and clap's 2 are taken).
pub const EXIT_NO_MATCH: u8 = 3;

/// What can go wrong between the tracer and a node; each displays as one
/// line that says what to do.
#[derive(thiserror::Error)]
pub enum TracerError {
    /// The node could not be found.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The nodetrace home (cookie, registry) could not be used.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// Nothing accepts connections at the node's address.
    #[error("cannot connect to {node}: {cause}; the node may have exited (see `nodetrace nodes`)")]
    Connect {
        /// The node and its address.
        node: String,
        /// Why.
        cause: io::Error,
    },
    /// Something answers at the address, but not as a nodetrace node.
    #[error(
        "{node} is not a nodetrace node ({detail}); the node may have exited (see `nodetrace nodes`)"
    )]
    NotANode {
        /// The node and its address.
        node: String,
        /// What it did instead.
        detail: String,
    },
    /// The node speaks another protocol version.
    #[error(
        "{node} speaks nodetrace protocol version {node_version}, this tracer speaks version {tracer_version}: use a nodetrace built with the same version as the node's agent"
    )]
    VersionMismatch {
        /// The node as named.
        node: String,
        /// The node's version.
        node_version: u16,
        /// Ours.
        tracer_version: u16,
    },
    /// The node refused our cookie.
    #[error("{node} refused the cookie: use the node's cookie (--cookie, NODETRACE_COOKIE or {})", cookie_file.display())]
    CookieRefused {
        /// The node as named.
        node: String,
        /// Where the cookie file is.
        cookie_file: PathBuf,
    },
    /// The node accepted us but could not prove that it knows the cookie.
    #[error(
        "{node} failed to prove that it knows the cookie: refusing to trace a node that may not be the one you meant"
    )]
    NodeProofFailed {
        /// The node and its address.
        node: String,
    },
    /// The connection broke or timed out.
    #[error(
        "lost the connection to {node}: {cause}; the node may have exited (see `nodetrace nodes`)"
    )]
    Lost {
        /// The node.
        node: String,
        /// Why.
        cause: FrameError,
    },
    /// The node did not answer in time.
    #[error("{node} did not answer {what} within {secs}s")]
    Timeout {
        /// The node.
        node: String,
        /// What we waited for.
        what: String,
        /// How long.
        secs: u64,
    },
    /// The node answered a command with an error.
    #[error("{node}: {message}")]
    Node {
        /// The node.
        node: String,
        /// Its message.
        message: String,
    },
    /// The node said something the protocol does not allow here.
    #[error("{node} answered {what} with an unexpected {got}")]
    Unexpected {
        /// The node.
        node: String,
        /// What we asked.
        what: String,
        /// What came.
        got: String,
    },
    /// A pattern, node name or process name matches nothing; the message
    /// names the nearest ones when there are.
    #[error("{0}")]
    NoMatch(String),
    /// The request itself is not acceptable (refused before any node is asked).
    #[error("{0}")]
    Refused(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

/// Reads like `Display`, so that `?` in a `main` prints one line.
impl std::fmt::Debug for TracerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl TracerError {
    /// Whether this is a write to a closed pipe (`nodetrace ... | head`),
    /// which ends a command quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, TracerError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The exit code for this error: [`EXIT_NO_MATCH`] when something
    /// named matches nothing, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            TracerError::NoMatch(_) | TracerError::Resolve(ResolveError::Unknown { .. }) => {
                EXIT_NO_MATCH
            }
            _ => 1,
        }
    }
}
