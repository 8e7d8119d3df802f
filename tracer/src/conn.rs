//! A connection to one node: connect, prove the cookie both ways, then
//! commands and replies.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use nodetrace_protocol::frame::{self, FrameError, MAX_FRAME};
use nodetrace_protocol::handshake::{self, Side};
use nodetrace_protocol::home::{self, Home};
use nodetrace_protocol::{
    Command, MAGIC, NodeInfo, NodeMessage, PROTOCOL_VERSION, Reply, TracerMessage,
};

use crate::{Target, TracerError};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A length prefix that is the text `HTTP`: an HTTP server's answer.
const HTTP: usize = u32::from_be_bytes(*b"HTTP") as usize;

/// How long the node may take to answer the handshake or a command.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The cookie to prove, and where it would be kept (for messages).
#[derive(Clone)]
pub struct Credentials {
    cookie: String,
    cookie_file: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cookie", &"<hidden>")
            .field("cookie_file", &self.cookie_file)
            .finish()
    }
}

impl Credentials {
    /// `--cookie`, else `NODETRACE_COOKIE`, else `home`'s cookie file.
    pub fn resolve(explicit: Option<&str>, home: &Home) -> Result<Credentials, TracerError> {
        Ok(Credentials {
            cookie: home::resolve_cookie(explicit, home)?,
            cookie_file: home.dir().join("cookie"),
        })
    }

    /// A given cookie.
    pub fn new(cookie: impl Into<String>, cookie_file: impl Into<PathBuf>) -> Credentials {
        Credentials {
            cookie: cookie.into(),
            cookie_file: cookie_file.into(),
        }
    }
}

/// An authenticated connection to a node.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    node: NodeInfo,
    addr: SocketAddr,
    /// Trace messages that came before the reply to the command that
    /// started the trace; read first.
    pending: VecDeque<NodeMessage>,
}

impl Connection {
    /// Connects to `target` and runs the handshake: both sides prove they
    /// know the cookie.
    pub fn open(target: &Target, credentials: &Credentials) -> Result<Connection, TracerError> {
        let addr = target.addr;
        let connect_error = |cause| TracerError::Connect {
            node: target.describe(),
            cause,
        };
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(connect_error)?;
        Connection::over(stream, target, credentials)
    }

    /// Runs the tracer's side of the handshake over a connection the node
    /// opened itself: a program started by `nodetrace profile -- CMD`
    /// connects back to the listener the profiler gave it. `target` names
    /// the peer in messages until the node says who it is.
    pub fn accepted(
        stream: TcpStream,
        target: &Target,
        credentials: &Credentials,
    ) -> Result<Connection, TracerError> {
        stream
            .set_nonblocking(false)
            .map_err(|cause| TracerError::Connect {
                node: target.describe(),
                cause,
            })?;
        Connection::over(stream, target, credentials)
    }

    fn over(
        stream: TcpStream,
        target: &Target,
        credentials: &Credentials,
    ) -> Result<Connection, TracerError> {
        let connect_error = |cause| TracerError::Connect {
            node: target.describe(),
            cause,
        };
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(connect_error)?;
        let mut conn = Connection {
            stream,
            node: NodeInfo {
                name: target.label(),
                os_pid: 0,
                started_ms: 0,
                tracing_bridge: false,
            },
            addr: target.addr,
            pending: VecDeque::new(),
        };
        conn.handshake(target, credentials)?;
        Ok(conn)
    }

    fn handshake(&mut self, target: &Target, credentials: &Credentials) -> Result<(), TracerError> {
        let label = &target.label();
        let not_a_node = |detail: String| TracerError::NotANode {
            node: target.describe(),
            detail,
        };
        let ours = handshake::challenge();
        self.send(&TracerMessage::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            challenge: ours,
        })
        .map_err(|e| not_a_node(format!("it did not take our greeting: {e}")))?;
        let theirs = match self.recv_handshake(target)? {
            NodeMessage::Challenge { version, challenge } if version == PROTOCOL_VERSION => {
                challenge
            }
            NodeMessage::Challenge { version, .. }
            | NodeMessage::VersionMismatch { node: version } => {
                return Err(TracerError::VersionMismatch {
                    node: label.to_owned(),
                    node_version: version,
                    tracer_version: PROTOCOL_VERSION,
                });
            }
            other => {
                return Err(not_a_node(format!(
                    "it answered the greeting with {}",
                    message_name(&other)
                )));
            }
        };
        let proof = handshake::prove(&credentials.cookie, Side::Tracer, &ours, &theirs);
        self.send(&TracerMessage::Answer { proof })
            .map_err(|cause| TracerError::Lost {
                node: label.to_owned(),
                cause,
            })?;
        match self.recv_handshake(target)? {
            NodeMessage::Welcome { proof, node } => {
                if !handshake::verify(&credentials.cookie, Side::Node, &ours, &theirs, &proof) {
                    let _ = self.stream.shutdown(Shutdown::Both);
                    return Err(TracerError::NodeProofFailed {
                        node: target.describe(),
                    });
                }
                self.node = node;
                Ok(())
            }
            NodeMessage::Denied => Err(TracerError::CookieRefused {
                node: label.to_owned(),
                cookie_file: credentials.cookie_file.clone(),
            }),
            other => Err(not_a_node(format!(
                "it answered the cookie proof with {}",
                message_name(&other)
            ))),
        }
    }

    fn recv_handshake(&mut self, target: &Target) -> Result<NodeMessage, TracerError> {
        let not_a_node = |detail: String| TracerError::NotANode {
            node: target.describe(),
            detail,
        };
        match frame::read_frame::<NodeMessage>(&mut self.stream, MAX_FRAME) {
            Ok(message) => Ok(message),
            Err(e) if e.is_timeout() => Err(not_a_node(format!(
                "no answer to the handshake within {}s",
                REPLY_TIMEOUT.as_secs()
            ))),
            Err(FrameError::Closed | FrameError::Truncated { .. }) => Err(not_a_node(
                "it closed the connection during the handshake".to_owned(),
            )),
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                Err(not_a_node(
                    "it closed the connection during the handshake".to_owned(),
                ))
            }
            Err(FrameError::TooLarge { size, .. }) if size == HTTP => Err(not_a_node(
                "it speaks HTTP: the control port is the ADDRESS `nodetrace nodes` shows"
                    .to_owned(),
            )),
            Err(e @ (FrameError::Malformed(_) | FrameError::TooLarge { .. })) => {
                Err(not_a_node(format!("it answered with something else: {e}")))
            }
            Err(cause) => Err(TracerError::Lost {
                node: target.label(),
                cause,
            }),
        }
    }

    /// The node, as it introduced itself.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one message.
    pub fn send(&mut self, message: &TracerMessage) -> Result<(), FrameError> {
        frame::write_frame(&mut self.stream, message)
    }

    /// Reads one message, waiting at most the socket's read timeout.
    pub fn recv_frame(&mut self) -> Result<NodeMessage, FrameError> {
        match self.pending.pop_front() {
            Some(message) => Ok(message),
            None => frame::read_frame::<NodeMessage>(&mut self.stream, MAX_FRAME),
        }
    }

    /// Reads the next message off the socket (not the pending ones).
    fn recv(&mut self) -> Result<NodeMessage, TracerError> {
        self.read_wire().map_err(|cause| {
            if cause.is_timeout() {
                TracerError::Timeout {
                    node: self.node.name.clone(),
                    what: "a command".to_owned(),
                    secs: REPLY_TIMEOUT.as_secs(),
                }
            } else {
                TracerError::Lost {
                    node: self.node.name.clone(),
                    cause,
                }
            }
        })
    }

    fn read_wire(&mut self) -> Result<NodeMessage, FrameError> {
        frame::read_frame::<NodeMessage>(&mut self.stream, MAX_FRAME)
    }

    /// Sends `command` and returns its reply; a [`Reply::Error`] becomes
    /// [`TracerError::Node`].
    pub fn request(&mut self, command: Command) -> Result<Reply, TracerError> {
        let what = command_name(&command);
        self.send(&TracerMessage::Command(command))
            .map_err(|cause| TracerError::Lost {
                node: self.node.name.clone(),
                cause,
            })?;
        loop {
            match self.recv()? {
                NodeMessage::Reply(Reply::Error(message)) => {
                    return Err(TracerError::Node {
                        node: self.node.name.clone(),
                        message,
                    });
                }
                NodeMessage::Reply(reply) => return Ok(reply),
                // A trace's first events may overtake the reply that
                // starts it: kept for the reader, in order.
                message @ (NodeMessage::Events(_) | NodeMessage::Ended(_)) => {
                    self.pending.push_back(message);
                }
                other => {
                    return Err(TracerError::Unexpected {
                        node: self.node.name.clone(),
                        what: what.to_owned(),
                        got: message_name(&other).to_owned(),
                    });
                }
            }
        }
    }

    /// Changes how long a read of the next message waits.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// A second handle on the socket, for a writer thread.
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }
}

/// The name of a command, for messages.
pub fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Callsites { .. } => "Callsites",
        Command::Processes => "Processes",
        Command::Top(_) => "Top",
        Command::Info => "Info",
        Command::Trace(_) => "Trace",
        Command::GetState { .. } => "GetState",
        Command::Statistics { .. } => "Statistics",
        Command::StopClear => "StopClear",
        Command::Stop => "Stop",
        Command::Profile(_) => "Profile",
    }
}

/// The name of a node message, for messages.
pub fn message_name(message: &NodeMessage) -> &'static str {
    match message {
        NodeMessage::Challenge { .. } => "Challenge",
        NodeMessage::VersionMismatch { .. } => "VersionMismatch",
        NodeMessage::Denied => "Denied",
        NodeMessage::Welcome { .. } => "Welcome",
        NodeMessage::Reply(reply) => match reply {
            Reply::Callsites(_) => "Reply(Callsites)",
            Reply::Processes(_) => "Reply(Processes)",
            Reply::Top(_) => "Reply(Top)",
            Reply::Info(_) => "Reply(Info)",
            Reply::TraceStarted { .. } => "Reply(TraceStarted)",
            Reply::State(_) => "Reply(State)",
            Reply::Statistics(_) => "Reply(Statistics)",
            Reply::Cleared { .. } => "Reply(Cleared)",
            Reply::ProfileStarted { .. } => "Reply(ProfileStarted)",
            Reply::Error(_) => "Reply(Error)",
        },
        NodeMessage::Events(_) => "Events",
        NodeMessage::Callsites(_) => "Callsites",
        NodeMessage::Names(_) => "Names",
        NodeMessage::Ended(_) => "Ended",
        NodeMessage::Profile { .. } => "Profile",
    }
}
