//! Control: how this node is started, found and reached.
//!
//! [`node`] starts the node (its registration and control server) from a
//! [`node::NodeConfig`]; [`server`] speaks the protocol to tracer nodes:
//! the cookie handshake, then commands that start sessions and profiles
//! through the `session` and `profile` modules. Nothing here is on a traced
//! function's path.

pub mod node;
mod observe;
pub(crate) mod server;

pub(crate) use server::{connect_back, start, unix_ms};
