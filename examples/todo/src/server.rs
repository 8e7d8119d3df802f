//! Todo.Server: one process per to-do list, owning it, as in the book.
//!
//! Each list is served by its own gen_server, so requests to one list are
//! handled in order while different lists proceed in parallel. It loads its
//! list from the database when it starts, and [`add_entry`] replies only
//! after the database has stored the new list: an `OK` from the HTTP server
//! means the entry is on disk.

use std::fmt;

use chrono::NaiveDate;
use nodetrace_agent::gen_server::{self, GenServer, GenServerRef};
use nodetrace_agent::{Pid, traced};

use crate::Error;
use crate::database::Database;
use crate::list::{Entry, NewEntry, TodoList};

/// A handle to a running Todo.Server; its `Debug` is its pid, `<0.9.0>`.
pub type TodoServer = GenServerRef<Server>;

/// The registered name of the server of list `name`, e.g. `todo_server:bob`.
pub fn registered_name(name: &str) -> String {
    format!("todo_server:{name}")
}

/// Starts the server of list `name`, registered as [`registered_name`], with
/// the list stored in `db` (or a new one).
#[traced]
pub async fn start(name: &str, db: &Database) -> Result<TodoServer, Error> {
    let server = Server {
        name: name.to_owned(),
        list: TodoList::new(),
        db: db.clone(),
    };
    Ok(gen_server::start_named(&registered_name(name), server).await?)
}

/// Adds `entry` to the server's list; returns its id once the list is stored.
#[traced]
pub async fn add_entry(server: &TodoServer, entry: NewEntry) -> Result<u64, Error> {
    match server.call(Request::AddEntry(entry)).await? {
        Reply::Added(result) => result,
        Reply::Entries(_) => unreachable!("a Todo.Server answers add_entry with Added"),
    }
}

/// The entries of the server's list due on `date`.
#[traced]
pub async fn entries(server: &TodoServer, date: NaiveDate) -> Result<Vec<Entry>, Error> {
    match server.call(Request::Entries(date)).await? {
        Reply::Entries(entries) => Ok(entries),
        Reply::Added(_) => unreachable!("a Todo.Server answers entries with Entries"),
    }
}

/// A request to a Todo.Server.
#[derive(Debug)]
pub enum Request {
    /// Add an entry and store the list.
    AddEntry(NewEntry),
    /// The entries due on a date.
    Entries(NaiveDate),
}

/// A Todo.Server's answer.
#[derive(Debug)]
pub enum Reply {
    /// The new entry's id, or why the list could not be stored.
    Added(Result<u64, Error>),
    /// The entries asked for.
    Entries(Vec<Entry>),
}

/// The state of a Todo.Server: its list's name and the list.
pub struct Server {
    name: String,
    list: TodoList,
    db: Database,
}

impl fmt::Debug for Server {
    /// Like the book's state `{name, todo_list}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("")
            .field(&self.name)
            .field(&self.list)
            .finish()
    }
}

#[traced]
impl GenServer for Server {
    type Call = Request;
    type Cast = ();
    type Info = ();
    type Reply = Reply;

    async fn init(&mut self) -> Result<(), String> {
        match self.db.get(&self.name).await {
            Ok(Some(list)) => {
                self.list = list;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(err) => Err(format!("cannot load list {:?}: {err}", self.name)),
        }
    }

    async fn handle_call(&mut self, request: Request, _from: Pid) -> Reply {
        match request {
            Request::AddEntry(entry) => {
                // The new list replaces the old one only once it is stored,
                // so a failed store leaves the server as the disk is.
                let mut list = self.list.clone();
                let id = list.add_entry(entry);
                let stored = self.db.store(&self.name, &list).await;
                Reply::Added(stored.map(|()| {
                    self.list = list;
                    id
                }))
            }
            Request::Entries(date) => Reply::Entries(self.list.entries(date)),
        }
    }
}
