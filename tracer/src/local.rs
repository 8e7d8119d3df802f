//! A trace whose events are made in this process rather than received from
//! a node: a local [`EventSource`], such as uprobes on a process that has no
//! agent. The tracer does not care how the events were made; it enforces
//! the same limits a node does (`--max`, `--rate`, `--duration`), here and
//! before formatting, and renders with the same [`Renderer`].

use std::io::{self, Write};
use std::time::{Duration, Instant};

use nodetrace_protocol::{Counts, EndReason, Event, Limits, TraceEnd};

use crate::render::{NodeView, Renderer};
use crate::spec::describe_limits;
use crate::{Format, StopSignal};

/// How long one wait for events lasts at most: the stop signal and the
/// time limit are looked at this often.
const POLL: Duration = Duration::from_millis(100);

/// Where a local trace's events come from.
pub trait EventSource {
    /// Waits up to `timeout` for events and appends them to `into`.
    /// Returns `false` once the source can make no more (its process
    /// exited).
    ///
    /// # Errors
    ///
    /// The source failed; the trace ends with it.
    fn poll(&mut self, timeout: Duration, into: &mut Vec<Event>) -> io::Result<bool>;

    /// Events the source made but lost before they were read (full
    /// buffers).
    fn lost(&self) -> u64;
}

/// A local trace to run.
#[derive(Debug, Clone)]
pub struct LocalRun {
    /// The source as events name it (`pid 4242`), with the callsites its
    /// events refer to.
    pub view: NodeView,
    /// When the trace stops or thins itself.
    pub limits: Limits,
    /// The limits are the default ones: say so when the trace starts.
    pub default_limits: bool,
    /// Text or JSON lines.
    pub format: Format,
    /// What the trace is, for the line that says it started (`calls of
    /// plain::work:step`), and what it costs, appended to it.
    pub what: String,
}

/// How a local trace went.
#[derive(Debug)]
pub struct LocalReport {
    /// Why it ended and what it counted.
    pub end: TraceEnd,
    /// The output was closed (`| head`); the trace was stopped for it.
    pub output_closed: bool,
}

/// Runs `run` over `source`: events go to `out`, one a line, until a limit,
/// `stop`, the source's end or a closed output; the start line and the
/// summary go to `log` (and, in JSON, the `end` object to `out`).
///
/// # Errors
///
/// The source failed, or `out` failed otherwise than by being closed.
pub fn run_local(
    run: &LocalRun,
    source: &mut dyn EventSource,
    out: &mut dyn Write,
    log: &mut dyn Write,
    stop: &StopSignal,
) -> io::Result<LocalReport> {
    let limits = run.limits;
    let mut line = format!(
        "tracing {} on {}: limits: {}",
        run.what,
        run.view.name(),
        describe_limits(&limits)
    );
    if run.default_limits {
        line.push_str(" (the default; set --max, --rate or --duration)");
    }
    if limits.max_events.is_none() && limits.duration_ms.is_none() {
        line.push_str("; Ctrl-C stops it");
    }
    writeln!(log, "{line}")?;
    log.flush()?;

    let renderer = Renderer::new(run.format, false);
    let started = Instant::now();
    let deadline = limits
        .duration_ms
        .map(|ms| started + Duration::from_millis(ms));
    let mut counts = Counts::default();
    let mut window = (started, 0u64);
    let mut batch = Vec::new();
    let mut output_closed = false;
    let reason = 'trace: loop {
        if stop.is_stopped() {
            break EndReason::Stopped;
        }
        let now = Instant::now();
        let timeout = match deadline {
            Some(d) if d <= now => break EndReason::Duration(limits.duration_ms.unwrap_or(0)),
            Some(d) => POLL.min(d - now),
            None => POLL,
        };
        let alive = source.poll(timeout, &mut batch)?;
        for (i, event) in batch.iter().enumerate() {
            if let Some(rate) = limits.rate {
                let now = Instant::now();
                if now.duration_since(window.0) >= Duration::from_millis(rate.per_ms) {
                    window = (now, 0);
                }
                if window.1 >= rate.events {
                    counts.rate_dropped += 1;
                    continue;
                }
                window.1 += 1;
            }
            match renderer.event(out, &run.view, event) {
                Ok(()) => counts.delivered += 1,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    output_closed = true;
                    break 'trace EndReason::Stopped;
                }
                Err(e) => return Err(e),
            }
            if limits.max_events == Some(counts.delivered) {
                counts.discarded += (batch.len() - i - 1) as u64;
                break 'trace EndReason::MaxEvents(counts.delivered);
            }
        }
        batch.clear();
        match out.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                output_closed = true;
                break EndReason::Stopped;
            }
            Err(e) => return Err(e),
        }
        if !alive {
            writeln!(log, "{} exited", run.view.name())?;
            break EndReason::Stopped;
        }
    };
    counts.lost = source.lost();
    let end = TraceEnd { reason, counts };
    writeln!(log, "{}", crate::render::summary(run.view.name(), &end))?;
    if !output_closed {
        let written = if run.format == Format::Json {
            crate::render::json_end(out, run.view.name(), &end, counts.delivered)
        } else {
            Ok(())
        };
        match written.and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => output_closed = true,
            Err(e) => return Err(e),
        }
    }
    Ok(LocalReport { end, output_closed })
}

#[cfg(test)]
mod tests {
    use nodetrace_protocol::{CallsiteInfo, EventKind, Pid, Rate};

    use super::*;

    /// Gives `per_poll` calls at each poll, `polls` times, then ends.
    struct Calls {
        per_poll: usize,
        polls: usize,
    }

    impl EventSource for Calls {
        fn poll(&mut self, _: Duration, into: &mut Vec<Event>) -> io::Result<bool> {
            self.polls = self.polls.saturating_sub(1);
            for n in 0..self.per_poll {
                into.push(Event {
                    kind: EventKind::Call,
                    pid: Pid::process(4242),
                    peer: None,
                    callsite: Some(0),
                    timestamp_ns: 0,
                    duration_ns: None,
                    busy_ns: None,
                    text: Some(format!("{n:#x}")),
                    extra: None,
                });
            }
            Ok(self.polls > 0)
        }

        fn lost(&self) -> u64 {
            3
        }
    }

    fn run(limits: Limits, source: &mut Calls) -> (String, String, LocalReport) {
        let site = CallsiteInfo {
            module: "plain::work".into(),
            function: "step".into(),
            arity: 1,
            ..CallsiteInfo::default()
        };
        let mut view = NodeView::new("pid 4000", [site]);
        view.set_os_threads(true);
        let run = LocalRun {
            view,
            limits,
            default_limits: false,
            format: Format::Text,
            what: "calls of plain::work:step".into(),
        };
        let (mut out, mut log) = (Vec::new(), Vec::new());
        let report = run_local(&run, source, &mut out, &mut log, &StopSignal::new()).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(log).unwrap(),
            report,
        )
    }

    #[test]
    fn max_is_exact_and_the_rest_is_discarded_unformatted() {
        let limits = Limits {
            max_events: Some(5),
            rate: None,
            duration_ms: None,
        };
        let (out, log, report) = run(
            limits,
            &mut Calls {
                per_poll: 3,
                polls: 10,
            },
        );
        assert_eq!(out.lines().count(), 5);
        assert_eq!(
            out.lines().next(),
            Some("(<tid 4242>) call plain::work:step(0x0)")
        );
        assert_eq!(report.end.reason, EndReason::MaxEvents(5));
        assert_eq!(report.end.counts.delivered, 5);
        assert_eq!(report.end.counts.discarded, 1);
        assert_eq!(report.end.counts.lost, 3);
        assert!(log.starts_with("tracing calls of plain::work:step on pid 4000: limits: 5 events"));
        assert!(log.contains("trace ended on pid 4000: reached the limit of 5 events"));
    }

    #[test]
    fn the_rate_drops_and_counts_and_the_source_s_end_ends_the_trace() {
        let limits = Limits {
            max_events: None,
            rate: Some(Rate {
                events: 2,
                per_ms: 60_000,
            }),
            duration_ms: None,
        };
        let (out, log, report) = run(
            limits,
            &mut Calls {
                per_poll: 3,
                polls: 2,
            },
        );
        assert_eq!(out.lines().count(), 2);
        assert_eq!(report.end.counts.rate_dropped, 4);
        assert_eq!(report.end.reason, EndReason::Stopped);
        assert!(log.contains("pid 4000 exited"));
    }

    #[test]
    fn the_duration_ends_the_trace() {
        let limits = Limits {
            max_events: None,
            rate: None,
            duration_ms: Some(50),
        };
        let (_, _, report) = run(
            limits,
            &mut Calls {
                per_poll: 0,
                polls: usize::MAX,
            },
        );
        assert_eq!(report.end.reason, EndReason::Duration(50));
    }
}
