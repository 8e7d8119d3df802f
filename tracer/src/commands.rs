//! The commands that ask once and print: `nodes`, `ls`, `ps`, `sys
//! get-state`, `sys statistics`, `stop-clear`. Each has a renderer over
//! plain data (tested on its own) and a function that asks the node.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use comfy_table::{CellAlignment, Table, presets};
use nodetrace_protocol::Pid;
use nodetrace_protocol::home::{Home, NodeEntry};
use nodetrace_protocol::{
    CallsiteInfo, Command, Pattern, ProcessList, ProcessRow, Reply, StatisticsRow,
};
use serde::Serialize;

use crate::conn::message_name;
use crate::{Connection, Format, TracerError};

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time.
pub fn format_time_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
}

/// Columns separated by two spaces, no borders, no trailing blanks.
pub(crate) fn table(header: Option<&[&str]>, rows: Vec<Vec<String>>, right: &[usize]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    if let Some(header) = header {
        t.set_header(header.iter().copied());
    }
    for row in rows {
        t.add_row(row);
    }
    let count = t.column_count();
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == count { 0 } else { 2 }));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut text = String::new();
    for line in t.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn json_line(w: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *w, value).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

pub(crate) fn unexpected(conn: &Connection, what: &str, reply: Reply) -> TracerError {
    TracerError::Unexpected {
        node: conn.name().to_owned(),
        what: what.to_owned(),
        got: message_name(&nodetrace_protocol::NodeMessage::Reply(reply)).to_owned(),
    }
}

#[derive(Serialize)]
struct NodeJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    os_pid: u32,
    addr: String,
    started_ms: u64,
    started: String,
}

/// Writes the registered nodes, like `epmd -names`.
pub fn render_nodes(w: &mut dyn Write, nodes: &[NodeEntry], format: Format) -> io::Result<()> {
    match format {
        Format::Text => {
            let rows = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.os_pid.to_string(),
                        n.addr.to_string(),
                        format_time_ms(n.started_ms),
                    ]
                })
                .collect();
            w.write_all(
                table(Some(&["NAME", "OS PID", "ADDRESS", "STARTED"]), rows, &[1]).as_bytes(),
            )
        }
        Format::Json => {
            for n in nodes {
                json_line(
                    w,
                    &NodeJson {
                        kind: "node",
                        name: &n.name,
                        os_pid: n.os_pid,
                        addr: n.addr.to_string(),
                        started_ms: n.started_ms,
                        started: format_time_ms(n.started_ms),
                    },
                )?;
            }
            Ok(())
        }
    }
}

/// `nodetrace nodes`: the registered live nodes. Returns how many.
pub fn nodes(home: &Home, w: &mut dyn Write, format: Format) -> Result<usize, TracerError> {
    let nodes = home.nodes()?;
    if !nodes.is_empty() || format == Format::Json {
        render_nodes(w, &nodes, format).map_err(TracerError::Output)?;
    }
    Ok(nodes.len())
}

#[derive(Serialize)]
struct CallsiteJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    id: u32,
    module: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    self_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trait_name: Option<&'a str>,
    function: &'a str,
    /// The Rust path, with the type of a method.
    path: String,
    arity: u8,
    file: &'a str,
    line: u32,
    #[serde(rename = "async")]
    is_async: bool,
    /// `traced` or `span`.
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
}

/// Writes traceable functions, `module:function/arity  file:line`.
pub fn render_callsites(
    w: &mut dyn Write,
    node: &str,
    callsites: &[CallsiteInfo],
    format: Format,
) -> io::Result<()> {
    match format {
        Format::Text => {
            let rows = callsites
                .iter()
                .map(|c| {
                    let mut mfa = c.mfa();
                    if c.is_async {
                        mfa.push_str(" (async)");
                    }
                    let from = match c.level {
                        Some(level) => format!("{} {level}", c.kind.as_str()),
                        None => c.kind.as_str().to_owned(),
                    };
                    vec![mfa, from, format!("{}:{}", c.file, c.line)]
                })
                .collect();
            w.write_all(table(None, rows, &[]).as_bytes())
        }
        Format::Json => {
            for c in callsites {
                json_line(
                    w,
                    &CallsiteJson {
                        kind: "function",
                        node,
                        id: c.id,
                        module: &c.module,
                        self_type: c.self_type.as_deref(),
                        trait_name: c.trait_name.as_deref(),
                        function: &c.function,
                        path: c.rust_path(),
                        arity: c.arity,
                        file: &c.file,
                        line: c.line,
                        is_async: c.is_async,
                        source: c.kind.as_str(),
                        level: c.level.map(|l| l.as_str()),
                        target: c.target.as_deref(),
                    },
                )?;
            }
            Ok(())
        }
    }
}

/// `nodetrace ls [PATTERN]`: asks the node for its traceable functions.
pub fn callsites(
    conn: &mut Connection,
    pattern: Option<Pattern>,
) -> Result<Vec<CallsiteInfo>, TracerError> {
    match conn.request(Command::Callsites { pattern })? {
        Reply::Callsites(mut list) => {
            list.sort_by(|a, b| {
                (&a.module, a.function_path(), a.arity).cmp(&(
                    &b.module,
                    b.function_path(),
                    b.arity,
                ))
            });
            Ok(list)
        }
        other => Err(unexpected(conn, "Callsites", other)),
    }
}

#[derive(Serialize)]
struct ProcessJson<'a> {
    #[serde(rename = "type")]
    record: &'static str,
    node: &'a str,
    pid: String,
    name: Option<&'a str>,
    kind: &'a str,
    has_mailbox: bool,
    mailbox_len: u64,
    messages_in: u64,
    handled: u64,
    started_ms: u64,
    started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    polls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    busy_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wakes: Option<u64>,
}

/// A duration in nanoseconds as `ps` and `top` show it: `1.25s`, `340ms`,
/// `12µs`, `0`.
pub fn short_duration_ns(ns: u64) -> String {
    match ns {
        0 => "0".to_owned(),
        n if n >= 10_000_000_000 => format!("{}s", n / 1_000_000_000),
        n if n >= 1_000_000_000 => format!("{:.2}s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{}ms", n / 1_000_000),
        n if n >= 1_000 => format!("{}µs", n / 1_000),
        n => format!("{n}ns"),
    }
}

/// Writes processes, like `i()` in the shell.
pub fn render_processes(
    w: &mut dyn Write,
    node: &str,
    rows: &[ProcessRow],
    format: Format,
) -> io::Result<()> {
    match format {
        Format::Text => {
            let rows = rows
                .iter()
                .map(|p| {
                    let task = |f: fn(&nodetrace_protocol::TaskRow) -> String| {
                        p.task.as_ref().map_or_else(|| "-".to_owned(), f)
                    };
                    vec![
                        p.pid.to_string(),
                        p.name.clone().unwrap_or_else(|| "-".to_owned()),
                        p.kind.clone(),
                        task(|t| t.state.as_str().to_owned()),
                        task(|t| t.polls.to_string()),
                        task(|t| t.wakes.to_string()),
                        task(|t| short_duration_ns(t.busy_ns)),
                        task(|t| short_duration_ns(t.idle_ns)),
                        p.mailbox_len.to_string(),
                        p.messages_in.to_string(),
                        p.handled.to_string(),
                        format_time_ms(p.started_ms),
                    ]
                })
                .collect();
            w.write_all(
                table(
                    Some(&[
                        "PID", "NAME", "KIND", "STATE", "POLLS", "WAKES", "BUSY", "IDLE",
                        "MAILBOX", "IN", "HANDLED", "STARTED",
                    ]),
                    rows,
                    &[4, 5, 6, 7, 8, 9, 10],
                )
                .as_bytes(),
            )
        }
        Format::Json => {
            for p in rows {
                json_line(
                    w,
                    &ProcessJson {
                        record: "process",
                        node,
                        pid: p.pid.to_string(),
                        name: p.name.as_deref(),
                        kind: &p.kind,
                        has_mailbox: p.has_mailbox,
                        mailbox_len: p.mailbox_len,
                        messages_in: p.messages_in,
                        handled: p.handled,
                        started_ms: p.started_ms,
                        started: format_time_ms(p.started_ms),
                        state: p.task.map(|t| t.state.as_str()),
                        polls: p.task.map(|t| t.polls),
                        busy_ns: p.task.map(|t| t.busy_ns),
                        idle_ns: p.task.map(|t| t.idle_ns),
                        wakes: p.task.map(|t| t.wakes),
                    },
                )?;
            }
            Ok(())
        }
    }
}

/// `nodetrace ps`: asks the node for its processes.
pub fn processes(conn: &mut Connection) -> Result<ProcessList, TracerError> {
    match conn.request(Command::Processes)? {
        Reply::Processes(mut list) => {
            list.rows.sort_by_key(|p| (p.pid.is_task(), p.pid.number()));
            Ok(list)
        }
        other => Err(unexpected(conn, "Processes", other)),
    }
}

/// Refuses the registered `names` (pids pass) that no process of the node
/// has, naming the nearest one: a typo is caught before anything runs.
pub fn check_process_names(conn: &mut Connection, names: &[String]) -> Result<(), TracerError> {
    let names: Vec<&String> = names.iter().filter(|n| n.parse::<Pid>().is_err()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let rows = processes(conn)?.rows;
    let known: Vec<&str> = rows.iter().filter_map(|r| r.name.as_deref()).collect();
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        None => Ok(()),
        Some(name) => {
            let hint = match crate::suggest::nearest(name, known.iter().copied()) {
                Some(near) => format!("did you mean {near}? "),
                None => String::new(),
            };
            Err(TracerError::NoMatch(format!(
                "no process named {name} on {}; {hint}`nodetrace ps` lists the processes",
                conn.name()
            )))
        }
    }
}

/// A note for a message trace of `processes` in which no process has a
/// mailbox a trace sees: their receives cannot show, and sends only to
/// gen_servers and traced channels do.
pub fn mailbox_hint(
    conn: &mut Connection,
    traced: &nodetrace_protocol::Processes,
) -> Result<Option<String>, TracerError> {
    use nodetrace_protocol::Processes;
    let rows = processes(conn)?.rows;
    let chosen: Vec<&ProcessRow> = match traced {
        Processes::Some(names) => rows
            .iter()
            .filter(|r| {
                names
                    .iter()
                    .any(|n| r.name.as_deref() == Some(n.as_str()) || r.pid.to_string() == *n)
            })
            .collect(),
        _ => rows.iter().collect(),
    };
    if chosen.iter().any(|r| r.has_mailbox) {
        return Ok(None);
    }
    Ok(Some(format!(
        "{}: no process traced here has a mailbox a trace sees; messages show when they go through a gen_server (`nodetrace_agent::gen_server`) or a traced channel: use `nodetrace_agent::sync::{{mpsc, oneshot}}` where the code uses `tokio::sync::{{mpsc, oneshot}}`",
        conn.name()
    )))
}

#[derive(Serialize)]
struct StateJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    target: &'a str,
    state: &'a str,
}

/// Writes a gen_server's state.
pub fn render_state(
    w: &mut dyn Write,
    node: &str,
    target: &str,
    state: &str,
    format: Format,
) -> io::Result<()> {
    match format {
        Format::Text => writeln!(w, "{state}"),
        Format::Json => json_line(
            w,
            &StateJson {
                kind: "state",
                node,
                target,
                state,
            },
        ),
    }
}

/// `nodetrace sys get-state NAME`.
pub fn get_state(conn: &mut Connection, target: &str) -> Result<String, TracerError> {
    match conn.request(Command::GetState {
        target: target.to_owned(),
    })? {
        Reply::State(state) => Ok(state),
        other => Err(unexpected(conn, "GetState", other)),
    }
}

#[derive(Serialize)]
struct StatisticsJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    target: &'a str,
    pid: String,
    started_ms: u64,
    started: String,
    messages_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages_out: Option<u64>,
    handled: u64,
    mailbox_len: u64,
}

/// Writes a gen_server's counters, like `sys:statistics/2` (or those of a
/// process's traced channels).
pub fn render_statistics(
    w: &mut dyn Write,
    node: &str,
    target: &str,
    s: &StatisticsRow,
    format: Format,
) -> io::Result<()> {
    match format {
        Format::Text => {
            writeln!(w, "{target} ({}) on {node}", s.pid)?;
            writeln!(w, "  started:         {}", format_time_ms(s.started_ms))?;
            writeln!(w, "  messages in:     {}", s.messages_in)?;
            if let Some(out) = s.messages_out {
                writeln!(w, "  messages out:    {out}")?;
            }
            writeln!(w, "  handled:         {}", s.handled)?;
            writeln!(w, "  mailbox length:  {}", s.mailbox_len)
        }
        Format::Json => json_line(
            w,
            &StatisticsJson {
                kind: "statistics",
                node,
                target,
                pid: s.pid.to_string(),
                started_ms: s.started_ms,
                started: format_time_ms(s.started_ms),
                messages_in: s.messages_in,
                messages_out: s.messages_out,
                handled: s.handled,
                mailbox_len: s.mailbox_len,
            },
        ),
    }
}

/// `nodetrace sys statistics NAME`.
pub fn statistics(conn: &mut Connection, target: &str) -> Result<StatisticsRow, TracerError> {
    match conn.request(Command::Statistics {
        target: target.to_owned(),
    })? {
        Reply::Statistics(row) => Ok(row),
        other => Err(unexpected(conn, "Statistics", other)),
    }
}

#[derive(Serialize)]
struct ClearedJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    traces: u64,
}

/// Writes what `stop-clear` did.
pub fn render_cleared(
    w: &mut dyn Write,
    node: &str,
    traces: u64,
    format: Format,
) -> io::Result<()> {
    match format {
        Format::Text => writeln!(
            w,
            "stop-clear on {node}: ended {traces} trace{}",
            if traces == 1 { "" } else { "s" }
        ),
        Format::Json => json_line(
            w,
            &ClearedJson {
                kind: "cleared",
                node,
                traces,
            },
        ),
    }
}

/// `nodetrace stop-clear`: ends every trace on the node. Returns how many.
pub fn stop_clear(conn: &mut Connection) -> Result<u64, TracerError> {
    match conn.request(Command::StopClear)? {
        Reply::Cleared { traces } => Ok(traces),
        other => Err(unexpected(conn, "StopClear", other)),
    }
}

#[cfg(test)]
mod tests {
    use nodetrace_protocol::Pid;

    use super::*;

    fn render(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn nodes_print_like_epmd_names() {
        let nodes = [
            NodeEntry {
                name: "todo@localhost".into(),
                os_pid: 4242,
                addr: "127.0.0.1:40001".parse().unwrap(),
                started_ms: 1_700_000_000_000,
            },
            NodeEntry {
                name: "todo2@localhost".into(),
                os_pid: 7,
                addr: "127.0.0.1:5".parse().unwrap(),
                started_ms: 1_700_000_060_000,
            },
        ];
        let text = render(|w| render_nodes(w, &nodes, Format::Text));
        assert_eq!(
            text,
            "\
NAME             OS PID  ADDRESS          STARTED
todo@localhost     4242  127.0.0.1:40001  2023-11-14T22:13:20Z
todo2@localhost       7  127.0.0.1:5      2023-11-14T22:14:20Z
"
        );
        let json = render(|w| render_nodes(w, &nodes, Format::Json));
        assert_eq!(
            json.lines().next().unwrap(),
            r#"{"type":"node","name":"todo@localhost","os_pid":4242,"addr":"127.0.0.1:40001","started_ms":1700000000000,"started":"2023-11-14T22:13:20Z"}"#
        );
    }

    #[test]
    fn callsites_print_as_mfa_and_place() {
        let list = [
            CallsiteInfo {
                id: 0,
                module: "todo::server".into(),
                function: "entries".into(),
                self_type: None,
                trait_name: None,
                arity: 2,
                file: "examples/todo/src/server.rs".into(),
                line: 50,
                is_async: true,
                ..CallsiteInfo::default()
            },
            CallsiteInfo {
                id: 1,
                module: "todo::list".into(),
                function: "add".into(),
                self_type: None,
                trait_name: None,
                arity: 2,
                file: "examples/todo/src/list.rs".into(),
                line: 7,
                is_async: false,
                ..CallsiteInfo::default()
            },
        ];
        let text = render(|w| render_callsites(w, "n@h", &list, Format::Text));
        assert_eq!(
            text,
            "\
todo::server:entries/2 (async)  traced  examples/todo/src/server.rs:50
todo::list:add/2                traced  examples/todo/src/list.rs:7
"
        );
        let json = render(|w| render_callsites(w, "n@h", &list, Format::Json));
        assert_eq!(
            json.lines().nth(1).unwrap(),
            r#"{"type":"function","node":"n@h","id":1,"module":"todo::list","function":"add","path":"todo::list::add","arity":2,"file":"examples/todo/src/list.rs","line":7,"async":false,"source":"traced"}"#
        );
    }

    #[test]
    fn processes_print_as_a_table() {
        let rows = [
            ProcessRow {
                pid: Pid::process(12),
                name: Some("todo_server:bob".into()),
                kind: "gen_server".into(),
                has_mailbox: true,
                mailbox_len: 0,
                messages_in: 1234,
                handled: 1234,
                started_ms: 1_700_000_000_000,
                task: None,
            },
            ProcessRow {
                pid: Pid::task(40),
                name: Some("audit".into()),
                kind: "task".into(),
                has_mailbox: true,
                mailbox_len: 3,
                messages_in: 10,
                handled: 7,
                started_ms: 1_700_000_000_000,
                task: Some(nodetrace_protocol::TaskRow {
                    polls: 21,
                    busy_ns: 340_000_000,
                    idle_ns: 2_500_000_000,
                    wakes: 20,
                    state: nodetrace_protocol::TaskStateRow::Idle,
                }),
            },
        ];
        let text = render(|w| render_processes(w, "n@h", &rows, Format::Text));
        assert_eq!(
            text,
            "\
PID       NAME             KIND        STATE  POLLS  WAKES   BUSY   IDLE  MAILBOX    IN  HANDLED  STARTED
<0.12.0>  todo_server:bob  gen_server  -          -      -      -      -        0  1234     1234  2023-11-14T22:13:20Z
<0.40.1>  audit            task        idle      21     20  340ms  2.50s        3    10        7  2023-11-14T22:13:20Z
"
        );
        let json = render(|w| render_processes(w, "n@h", &rows, Format::Json));
        assert_eq!(
            json,
            "{\"type\":\"process\",\"node\":\"n@h\",\"pid\":\"<0.12.0>\",\"name\":\"todo_server:bob\",\"kind\":\"gen_server\",\"has_mailbox\":true,\"mailbox_len\":0,\"messages_in\":1234,\"handled\":1234,\"started_ms\":1700000000000,\"started\":\"2023-11-14T22:13:20Z\"}\n\
{\"type\":\"process\",\"node\":\"n@h\",\"pid\":\"<0.40.1>\",\"name\":\"audit\",\"kind\":\"task\",\"has_mailbox\":true,\"mailbox_len\":3,\"messages_in\":10,\"handled\":7,\"started_ms\":1700000000000,\"started\":\"2023-11-14T22:13:20Z\",\"state\":\"idle\",\"polls\":21,\"busy_ns\":340000000,\"idle_ns\":2500000000,\"wakes\":20}\n"
        );
    }

    #[test]
    fn state_statistics_and_cleared_print() {
        let s = StatisticsRow {
            pid: Pid::process(12),
            started_ms: 1_700_000_000_000,
            messages_in: 5,
            messages_out: Some(4),
            handled: 5,
            mailbox_len: 0,
        };
        let text = render(|w| render_statistics(w, "n@h", "todo_server:bob", &s, Format::Text));
        assert_eq!(
            text,
            "\
todo_server:bob (<0.12.0>) on n@h
  started:         2023-11-14T22:13:20Z
  messages in:     5
  messages out:    4
  handled:         5
  mailbox length:  0
"
        );
        let json = render(|w| render_statistics(w, "n@h", "todo_server:bob", &s, Format::Json));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["messages_in"], 5);
        assert_eq!(v["pid"], "<0.12.0>");
        assert_eq!(
            render(|w| render_state(w, "n@h", "t", "State { n: 1 }", Format::Text)),
            "State { n: 1 }\n"
        );
        assert_eq!(
            render(|w| render_state(w, "n@h", "t", "S", Format::Json)),
            "{\"type\":\"state\",\"node\":\"n@h\",\"target\":\"t\",\"state\":\"S\"}\n"
        );
        assert_eq!(
            render(|w| render_cleared(w, "n@h", 1, Format::Text)),
            "stop-clear on n@h: ended 1 trace\n"
        );
        assert_eq!(
            render(|w| render_cleared(w, "n@h", 0, Format::Text)),
            "stop-clear on n@h: ended 0 traces\n"
        );
        assert_eq!(
            render(|w| render_cleared(w, "n@h", 2, Format::Json)),
            "{\"type\":\"cleared\",\"node\":\"n@h\",\"traces\":2}\n"
        );
    }
}
