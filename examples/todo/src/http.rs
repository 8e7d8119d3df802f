//! Todo.Web: the book's HTTP interface, plain text in and out.
//!
//! - `POST /add_entry?list=bob&date=2023-12-19&title=Movies` answers `OK`
//!   once the entry is stored;
//! - `GET /entries?list=bob&date=2023-12-19` answers the entries due that
//!   day, one line each: `2023-12-19 Movies`.
//!
//! A bad or missing query parameter answers `400` with a one-line reason, so
//! that `curl` shows what to fix. Each request goes through the cache to the
//! list's server, as the book's handlers do.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use nodetrace_agent::gen_server::CallError;
use nodetrace_agent::traced;
use tokio::net::TcpListener;

use crate::list::NewEntry;
use crate::{Error, System, cache, server};

/// The book's port.
pub const DEFAULT_PORT: u16 = 5454;

/// The longest list name accepted.
pub const MAX_LIST_NAME: usize = 64;

/// The longest title accepted, in bytes.
pub const MAX_TITLE: usize = 1000;

/// Why the HTTP server could not listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something else listens on the port.
    #[error(
        "port {port} on 127.0.0.1 is already in use: stop what holds it, or pick another port with --port (--port 0 picks a free one)"
    )]
    InUse {
        /// The port asked for.
        port: u16,
    },
    /// Any other reason.
    #[error("cannot listen on 127.0.0.1:{port}: {cause}")]
    Other {
        /// The port asked for.
        port: u16,
        /// Why.
        cause: std::io::Error,
    },
}

/// Listens on `127.0.0.1:port`; port 0 picks a free port (see
/// [`TcpListener::local_addr`]).
pub async fn bind(port: u16) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr).await.map_err(|cause| {
        if cause.kind() == ErrorKind::AddrInUse {
            BindError::InUse { port }
        } else {
            BindError::Other { port, cause }
        }
    })
}

/// The routes, serving `system`.
pub fn router(system: System) -> Router {
    Router::new()
        .route("/add_entry", post(add_entry_route))
        .route("/entries", get(entries_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(system)
}

/// Serves `system` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, system: System) -> std::io::Result<()> {
    axum::serve(listener, router(system)).await
}

/// A request the server cannot act on, and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, format!("{}\n", self.0)).into_response()
    }
}

/// A query string, as name-value pairs.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a raw query string such as `list=bob&date=2023-12-19`.
    pub fn parse(query: &str) -> Params {
        Params(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The value of `name`; the last one if it is given twice.
    fn get(&self, name: &str) -> Result<&str, BadRequest> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| BadRequest(format!("missing query parameter {name:?}")))
    }

    /// The `list` parameter: a list name.
    pub fn list(&self) -> Result<String, BadRequest> {
        let list = self.get("list")?;
        let ok = (1..=MAX_LIST_NAME).contains(&list.chars().count())
            && list
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(list.to_owned())
        } else {
            Err(BadRequest(format!(
                "bad list {}: expected 1 to {MAX_LIST_NAME} letters, digits, '_' or '-'",
                quoted(list)
            )))
        }
    }

    /// The `date` parameter: exactly `YYYY-MM-DD`.
    pub fn date(&self) -> Result<NaiveDate, BadRequest> {
        let text = self.get("date")?;
        match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            // Only the canonical form: no `2023-1-5`, no `+2023-01-05`.
            Ok(date) if date.format("%Y-%m-%d").to_string() == text => Ok(date),
            _ => Err(BadRequest(format!(
                "bad date {}: expected YYYY-MM-DD",
                quoted(text)
            ))),
        }
    }

    /// The `title` parameter: one line of text.
    pub fn title(&self) -> Result<String, BadRequest> {
        let title = self.get("title")?;
        if title.trim().is_empty() || title.len() > MAX_TITLE || title.chars().any(char::is_control)
        {
            Err(BadRequest(format!(
                "bad title {}: expected one line of 1 to {MAX_TITLE} bytes",
                quoted(title)
            )))
        } else {
            Ok(title.to_owned())
        }
    }

    /// The query of `POST /add_entry`: the list and the entry.
    pub fn add_entry(&self) -> Result<(String, NewEntry), BadRequest> {
        let list = self.list()?;
        Ok((list, NewEntry::new(self.date()?, self.title()?)))
    }

    /// The query of `GET /entries`: the list and the date.
    pub fn entries(&self) -> Result<(String, NaiveDate), BadRequest> {
        Ok((self.list()?, self.date()?))
    }
}

/// `text` quoted for an error message, cut after 40 characters so that the
/// reason stays one short line.
fn quoted(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// An error of the system as a response: 503 if a process is too busy to
/// answer, 500 otherwise.
fn failure(err: Error) -> Response {
    let status = match err {
        Error::Call(CallError::Timeout { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{err}\n")).into_response()
}

/// Query strings as pairs, whatever they hold: the handlers say what is
/// wrong with them.
type RawParams = Query<Vec<(String, String)>>;

async fn add_entry_route(State(system): State<System>, Query(params): RawParams) -> Response {
    add_entry(&system, Params(params)).await
}

async fn entries_route(State(system): State<System>, Query(params): RawParams) -> Response {
    entries(&system, Params(params)).await
}

/// `POST /add_entry?list=&date=&title=`.
#[traced(skip(system))]
async fn add_entry(system: &System, params: Params) -> Response {
    let (list, entry) = match params.add_entry() {
        Ok(query) => query,
        Err(err) => return err.into_response(),
    };
    let added = async {
        let server = cache::server_process(system.cache(), &list).await?;
        server::add_entry(&server, entry).await
    };
    match added.await {
        Ok(_) => "OK".into_response(),
        Err(err) => failure(err),
    }
}

/// `GET /entries?list=&date=`.
#[traced(skip(system))]
async fn entries(system: &System, params: Params) -> Response {
    let (list, date) = match params.entries() {
        Ok(query) => query,
        Err(err) => return err.into_response(),
    };
    let found = async {
        let server = cache::server_process(system.cache(), &list).await?;
        server::entries(&server, date).await
    };
    match found.await {
        Ok(entries) => entries
            .iter()
            .map(|e| format!("{} {}\n", e.date, e.title))
            .collect::<String>()
            .into_response(),
        Err(err) => failure(err),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such page: try POST /add_entry?list=&date=&title= or GET /entries?list=&date=\n",
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong method: POST /add_entry, GET /entries\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<impl std::fmt::Debug, BadRequest>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn good_parameters_parse() {
        let p = Params::parse("list=bob&date=2023-12-19&title=Movies%20night");
        assert_eq!(p.list().unwrap(), "bob");
        assert_eq!(
            p.date().unwrap(),
            NaiveDate::from_ymd_opt(2023, 12, 19).unwrap()
        );
        assert_eq!(p.title().unwrap(), "Movies night");
    }

    #[test]
    fn missing_parameters_are_named() {
        let p = Params::parse("date=2023-12-19");
        assert_eq!(err(p.list()), r#"missing query parameter "list""#);
        assert_eq!(err(p.title()), r#"missing query parameter "title""#);
        assert_eq!(
            err(Params::parse("").date()),
            r#"missing query parameter "date""#
        );
    }

    #[test]
    fn bad_dates_say_the_format() {
        for bad in ["2023-13-40", "2023-1-5", "19.12.2023", "", "+2023-12-19"] {
            let p = Params::parse(&format!("date={bad}").replace('+', "%2B"));
            assert_eq!(
                err(p.date()),
                format!("bad date {bad:?}: expected YYYY-MM-DD")
            );
        }
    }

    #[test]
    fn list_names_and_titles_are_checked() {
        assert_eq!(
            err(Params::parse("list=..%2Fetc").list()),
            r#"bad list "../etc": expected 1 to 64 letters, digits, '_' or '-'"#
        );
        assert!(Params::parse("list=").list().is_err());
        assert!(Params::parse("title=a%0Ab").title().is_err());
        assert!(Params::parse("title=%20").title().is_err());
        assert!(Params::parse("list=shopping_2-b").list().is_ok());
        let long = "x".repeat(2000);
        assert_eq!(
            err(Params::parse(&format!("title={long}")).title()),
            format!(
                "bad title \"{}\"…: expected one line of 1 to 1000 bytes",
                &long[..40]
            )
        );
    }
}
