//! `nodetrace top`: the busiest processes of one or more nodes, refreshed
//! each interval, like observer_cli's main view or tokio-console's task list.
//!
//! Each refresh is one [`Command::Top`] per node: the node computes the
//! deltas since the connection's last refresh and sends its top rows only.
//! On a terminal [`view`] draws them live; otherwise [`render_frame`] prints
//! a snapshot (`top -b -n 1`) or, in JSON, one object per node and interval.
//! `top` never switches tracing on.

pub mod view;

use std::io::{self, Write};

use nodetrace_protocol::{Command, Reply, SystemFigures, TopFrame, TopRow, TopSort, TopSpec};
use serde::Serialize;

use crate::commands::short_duration_ns;
use crate::{Connection, Format, TracerError};

/// Asks `conn`'s node for one refresh.
pub fn refresh(conn: &mut Connection, spec: TopSpec) -> Result<TopFrame, TracerError> {
    match conn.request(Command::Top(spec))? {
        Reply::Top(frame) => Ok(*frame),
        other => Err(crate::commands::unexpected(conn, "Top", other)),
    }
}

/// Bytes as `top` shows them: `512B`, `12.3KiB`, `45.6MiB`, `1.2GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// Milliseconds as an uptime: `45s`, `12m 3s`, `5h 2m`, `3d 4h`.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// The header's lines: the node's figures over the interval.
pub fn header_lines(node: &str, frame: &TopFrame) -> [String; 3] {
    let s: &SystemFigures = &frame.system;
    let runtime = match &s.runtime {
        Some(r) => format!(
            "tokio {} workers, {} tasks alive, {} in the global queue",
            r.workers, r.alive_tasks, r.global_queue_depth
        ),
        None => "no tokio runtime seen".to_owned(),
    };
    [
        format!(
            "{node}  up {}  cpu {:.1}%  mem {} resident, {} virtual  threads {}  files {}",
            uptime(s.uptime_ms),
            s.cpu_percent,
            bytes(s.rss_bytes),
            bytes(s.virtual_bytes),
            s.threads,
            s.open_files
        ),
        format!("{runtime}  processes {}", frame.processes),
        format!(
            "agent: {} sessions, {:.0} events/s, {} ring drops  interval {}",
            s.sessions,
            s.events_per_s,
            s.ring_drops,
            short_duration_ns(frame.interval_ms * 1_000_000)
        ),
    ]
}

/// The table's header, in column order.
pub const COLUMNS: [&str; 9] = [
    "PID", "NAME", "KIND", "STATE", "POLLS", "BUSY", "BUSY%", "IN", "MAILBOX",
];

/// One row's cells, in [`COLUMNS`] order; busy percent is of the interval.
pub fn row_cells(row: &TopRow, interval_ms: u64) -> [String; 9] {
    let busy_pct = if interval_ms == 0 {
        0.0
    } else {
        row.busy_ns as f64 / (interval_ms as f64 * 1e6) * 100.0
    };
    [
        row.pid.to_string(),
        row.name.clone().unwrap_or_else(|| "-".to_owned()),
        row.kind.clone(),
        row.state.map_or("-", |s| s.as_str()).to_owned(),
        row.polls.to_string(),
        short_duration_ns(row.busy_ns),
        format!("{busy_pct:.1}"),
        row.messages_in.to_string(),
        row.mailbox_len.to_string(),
    ]
}

#[derive(Serialize)]
struct FrameJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    sort: &'static str,
    interval_ms: u64,
    processes: u64,
    system: &'a SystemFigures,
    rows: Vec<RowJson<'a>>,
}

#[derive(Serialize)]
struct RowJson<'a> {
    pid: String,
    name: Option<&'a str>,
    kind: &'a str,
    state: Option<&'static str>,
    polls: u64,
    busy_ns: u64,
    messages_in: u64,
    mailbox_len: u64,
}

/// Writes one refresh of one node: a header and a table, or one JSON
/// object.
pub fn render_frame(
    w: &mut dyn Write,
    node: &str,
    sort: TopSort,
    frame: &TopFrame,
    format: Format,
) -> io::Result<()> {
    match format {
        Format::Text => {
            for line in header_lines(node, frame) {
                writeln!(w, "{line}")?;
            }
            writeln!(w, "sorted by {}", sort.as_str())?;
            let rows: Vec<Vec<String>> = frame
                .rows
                .iter()
                .map(|r| row_cells(r, frame.interval_ms).to_vec())
                .collect();
            w.write_all(crate::commands::table(Some(&COLUMNS), rows, &[4, 5, 6, 7, 8]).as_bytes())
        }
        Format::Json => {
            let value = FrameJson {
                kind: "top",
                node,
                sort: sort.as_str(),
                interval_ms: frame.interval_ms,
                processes: frame.processes,
                system: &frame.system,
                rows: frame
                    .rows
                    .iter()
                    .map(|r| RowJson {
                        pid: r.pid.to_string(),
                        name: r.name.as_deref(),
                        kind: &r.kind,
                        state: r.state.map(|s| s.as_str()),
                        polls: r.polls,
                        busy_ns: r.busy_ns,
                        messages_in: r.messages_in,
                        mailbox_len: r.mailbox_len,
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut *w, &value).map_err(io::Error::other)?;
            w.write_all(b"\n")
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nodetrace_protocol::{Pid, RuntimeFigures, TaskStateRow};

    pub(crate) fn frame() -> TopFrame {
        TopFrame {
            interval_ms: 1000,
            system: SystemFigures {
                uptime_ms: 754_000,
                rss_bytes: 12_900_000,
                virtual_bytes: 1_300_000_000,
                threads: 9,
                open_files: 14,
                cpu_percent: 23.5,
                runtime: Some(RuntimeFigures {
                    workers: 2,
                    alive_tasks: 14,
                    global_queue_depth: 0,
                }),
                sessions: 0,
                events_per_s: 0.0,
                ring_drops: 0,
            },
            processes: 17,
            rows: vec![
                TopRow {
                    pid: Pid::task(40),
                    name: Some("audit".into()),
                    kind: "task".into(),
                    state: Some(TaskStateRow::Idle),
                    polls: 120,
                    busy_ns: 612_000_000,
                    messages_in: 118,
                    mailbox_len: 37,
                },
                TopRow {
                    pid: Pid::task(12),
                    name: Some("conn:127.0.0.1:50412".into()),
                    kind: "task".into(),
                    state: Some(TaskStateRow::Running),
                    polls: 240,
                    busy_ns: 4_100_000,
                    messages_in: 0,
                    mailbox_len: 0,
                },
            ],
        }
    }

    #[test]
    fn a_snapshot_prints_a_header_and_a_table() {
        let mut out = Vec::new();
        render_frame(
            &mut out,
            "shop@localhost",
            TopSort::Busy,
            &frame(),
            Format::Text,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
shop@localhost  up 12m 34s  cpu 23.5%  mem 12.3MiB resident, 1.2GiB virtual  threads 9  files 14
tokio 2 workers, 14 tasks alive, 0 in the global queue  processes 17
agent: 0 sessions, 0 events/s, 0 ring drops  interval 1.00s
sorted by busy
PID       NAME                  KIND  STATE    POLLS   BUSY  BUSY%   IN  MAILBOX
<0.40.1>  audit                 task  idle       120  612ms   61.2  118       37
<0.12.1>  conn:127.0.0.1:50412  task  running    240    4ms    0.4    0        0
"
        );
    }

    #[test]
    fn a_frame_is_one_json_object() {
        let mut out = Vec::new();
        render_frame(
            &mut out,
            "shop@localhost",
            TopSort::Mailbox,
            &frame(),
            Format::Json,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "top");
        assert_eq!(v["sort"], "mailbox");
        assert_eq!(v["rows"][0]["name"], "audit");
        assert_eq!(v["rows"][0]["mailbox_len"], 37);
        assert_eq!(v["system"]["runtime"]["workers"], 2);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
