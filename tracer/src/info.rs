//! `nodetrace info`: a node's system information in one screen, what
//! `:erlang.system_info/1` and `:erlang.memory/0` tell of a BEAM node.

use std::io::{self, Write};

use nodetrace_protocol::{Command, NodeInfo, Reply, SystemInfo};
use serde::Serialize;

use crate::commands::format_time_ms;
use crate::top::{bytes, uptime};
use crate::{Connection, Format, TracerError};

/// Asks the node for its system information.
pub fn info(conn: &mut Connection) -> Result<SystemInfo, TracerError> {
    match conn.request(Command::Info)? {
        Reply::Info(info) => Ok(*info),
        other => Err(crate::commands::unexpected(conn, "Info", other)),
    }
}

#[derive(Serialize)]
struct InfoJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    os_pid: u32,
    started_ms: u64,
    started: String,
    tracing_bridge: bool,
    #[serde(flatten)]
    info: &'a SystemInfo,
}

/// Writes what the node said of itself, one field a line, or as one JSON
/// object.
pub fn render_info(
    w: &mut dyn Write,
    node: &NodeInfo,
    info: &SystemInfo,
    format: Format,
) -> io::Result<()> {
    if format == Format::Json {
        let value = InfoJson {
            kind: "info",
            node: &node.name,
            os_pid: node.os_pid,
            started_ms: node.started_ms,
            started: format_time_ms(node.started_ms),
            tracing_bridge: node.tracing_bridge,
            info,
        };
        serde_json::to_writer(&mut *w, &value).map_err(io::Error::other)?;
        return w.write_all(b"\n");
    }
    let s = &info.system;
    let p = &info.processes;
    let c = &info.callsites;
    let line = |w: &mut dyn Write, key: &str, value: String| writeln!(w, "{key:<12}{value}");
    line(w, "node", format!("{} (OS pid {})", node.name, node.os_pid))?;
    line(
        w,
        "agent",
        format!(
            "nodetrace-agent {}, protocol {}{}",
            info.agent_version,
            info.protocol_version,
            if node.tracing_bridge {
                ", tracing bridge installed"
            } else {
                ""
            }
        ),
    )?;
    line(w, "os", info.os.clone())?;
    line(
        w,
        "uptime",
        format!(
            "{} (started {})",
            uptime(s.uptime_ms),
            format_time_ms(node.started_ms)
        ),
    )?;
    line(
        w,
        "memory",
        format!(
            "{} resident (peak {}), {} virtual; allocator figures: not reported",
            bytes(s.rss_bytes),
            bytes(info.peak_rss_bytes),
            bytes(s.virtual_bytes)
        ),
    )?;
    line(
        w,
        "cpu",
        format!("{:.1}% of a core over its life", s.cpu_percent),
    )?;
    line(w, "threads", s.threads.to_string())?;
    line(
        w,
        "open files",
        format!("{} of {}", s.open_files, info.max_open_files),
    )?;
    line(
        w,
        "runtime",
        match &s.runtime {
            Some(r) => format!(
                "tokio: {} workers, {} tasks alive, {} in the global queue",
                r.workers, r.alive_tasks, r.global_queue_depth
            ),
            None => "no tokio runtime seen".to_owned(),
        },
    )?;
    line(
        w,
        "processes",
        format!(
            "{} gen_servers, {} tasks, {} seen tasks, {} own traced channels, {} registered names",
            p.gen_servers, p.tasks, p.seen_tasks, p.mailbox_owners, p.registered_names
        ),
    )?;
    line(
        w,
        "callsites",
        format!(
            "{} traced functions, {} spans, {} log events",
            c.traced, c.spans, c.events
        ),
    )?;
    line(
        w,
        "rings",
        format!(
            "{} records a thread, {} dropped",
            info.ring_capacity, s.ring_drops
        ),
    )?;
    if info.sessions.is_empty() {
        line(w, "sessions", "none".to_owned())?;
    }
    for (i, session) in info.sessions.iter().enumerate() {
        let l = &session.limits;
        let mut limits = Vec::new();
        if let Some(max) = l.max_events {
            limits.push(format!("at most {max} events"));
        }
        if let Some(rate) = l.rate {
            limits.push(format!("at most {rate}"));
        }
        if let Some(ms) = l.duration_ms {
            limits.push(format!("for {}", nodetrace_protocol::display_ms(ms)));
        }
        let limits = if limits.is_empty() {
            "no limit".to_owned()
        } else {
            limits.join(", ")
        };
        line(
            w,
            if i == 0 { "sessions" } else { "" },
            format!(
                "slot {}: {}, {} events delivered, {limits}",
                session.slot, session.kind, session.delivered
            ),
        )?;
    }
    Ok(())
}
