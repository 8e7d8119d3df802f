//! Todo.Cache: finds the Todo.Server of a list by name, starting it on demand.
//!
//! One process maps names to servers, as in the book, so two requests for a
//! new list never start two servers for it. Every request passes through it,
//! which makes it the first place to look when the node is slow (a long
//! mailbox in `nodetrace ps`). A server that has died is started again on the
//! next request for its list.

use std::collections::HashMap;
use std::fmt;

use nodetrace_agent::gen_server::{self, GenServer, GenServerRef};
use nodetrace_agent::{Pid, traced, whereis};

use crate::Error;
use crate::database::Database;
use crate::server::{self, TodoServer};

/// The registered name of the cache process.
pub const NAME: &str = "todo_cache";

/// A handle to the running Todo.Cache; its `Debug` is its pid.
pub type TodoCache = GenServerRef<Cache>;

/// Starts the cache, registered as [`NAME`], starting servers that use `db`.
#[traced]
pub async fn start(db: &Database) -> Result<TodoCache, Error> {
    let cache = Cache {
        servers: HashMap::new(),
        db: db.clone(),
    };
    Ok(gen_server::start_named(NAME, cache).await?)
}

/// The server of list `name`, started (and its list loaded) if needed.
#[traced]
pub async fn server_process(cache: &TodoCache, name: &str) -> Result<TodoServer, Error> {
    match cache.call(Request::ServerProcess(name.to_owned())).await? {
        Reply::Server(server) => server,
        Reply::Servers(_) => unreachable!("the cache answers server_process with Server"),
    }
}

/// Stops every server the cache started, waits for them, and forgets them.
#[traced]
pub async fn stop_servers(cache: &TodoCache) -> Result<(), Error> {
    match cache.call(Request::TakeServers).await? {
        Reply::Servers(servers) => {
            for server in servers {
                let _ = server.stop().await;
            }
            Ok(())
        }
        Reply::Server(_) => unreachable!("the cache answers take_servers with Servers"),
    }
}

/// A request to the cache.
#[derive(Debug)]
pub enum Request {
    /// The server of this list.
    ServerProcess(String),
    /// Hand over every server and forget them (for a clean stop).
    TakeServers,
}

/// The cache's answer.
#[derive(Debug)]
pub enum Reply {
    /// The server asked for, or why it could not start.
    Server(Result<TodoServer, Error>),
    /// Every server the cache held.
    Servers(Vec<TodoServer>),
}

/// The state of the cache: the servers by list name.
pub struct Cache {
    servers: HashMap<String, TodoServer>,
    db: Database,
}

impl fmt::Debug for Cache {
    /// The names and pids, like the book's `%{"bob" => #PID<0.9.0>}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.servers.iter()).finish()
    }
}

#[traced]
impl GenServer for Cache {
    type Call = Request;
    type Cast = ();
    type Info = ();
    type Reply = Reply;

    async fn handle_call(&mut self, request: Request, _from: Pid) -> Reply {
        match request {
            Request::ServerProcess(name) => {
                if let Some(server) = self.servers.get(&name) {
                    // Alive while its name is registered to it.
                    if whereis(&server::registered_name(&name)) == Some(server.pid()) {
                        return Reply::Server(Ok(server.clone()));
                    }
                }
                let started = server::start(&name, &self.db).await;
                if let Ok(server) = &started {
                    self.servers.insert(name, server.clone());
                }
                Reply::Server(started)
            }
            Request::TakeServers => Reply::Servers(self.servers.drain().map(|(_, s)| s).collect()),
        }
    }
}
