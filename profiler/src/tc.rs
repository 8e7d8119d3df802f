//! `nodetrace tc -- CMD`: `:timer.tc` for commands. Warm-up runs (not
//! measured), then timed runs; statistics over the runs that succeeded,
//! the failed ones listed, never averaged in.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nodetrace_tracer::Format;
use serde_json::json;

use crate::exit::{display_command, exit_code, spawn_error_code};

/// How to time a command.
#[derive(Debug, Clone)]
pub struct TcOptions {
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// Timed runs.
    pub runs: u32,
    /// Runs before the timed ones, not measured.
    pub warmup: u32,
    /// Let the command write to this terminal (else its output is discarded).
    pub show_output: bool,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a
    /// terminal).
    pub progress: bool,
}

/// Why the command could not be timed.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// Nothing to run.
    #[error("tc needs a command after `--`, e.g. nodetrace tc -n 10 -- sleep 0.1")]
    NoCommand,
    /// The command could not be started.
    #[error("cannot start {command}: {cause}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        cause: io::Error,
    },
}

impl TcError {
    /// The exit code a shell would give: 127 for a command not found.
    pub fn exit_code(&self) -> i32 {
        match self {
            TcError::NoCommand => 2,
            TcError::Spawn { cause, .. } => spawn_error_code(cause),
        }
    }
}

/// One run: how long it took and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// Wall time from start to exit, in nanoseconds.
    pub wall_ns: u64,
    /// Its exit code (128 + N for signal N).
    pub code: i32,
}

/// Wall-time statistics over successful runs, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcStats {
    /// Runs the figures cover.
    pub runs: usize,
    /// Fastest.
    pub min: u64,
    /// Median (hdrhistogram, 3 significant digits).
    pub median: u64,
    /// Mean.
    pub mean: u64,
    /// 99th percentile (hdrhistogram, 3 significant digits).
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

impl TcStats {
    /// The statistics of `wall_ns`; `None` if it is empty.
    pub fn of(wall_ns: &[u64]) -> Option<TcStats> {
        let min = *wall_ns.iter().min()?;
        let max = *wall_ns.iter().max()?;
        let mut histogram = Histogram::<u64>::new(3).expect("3 significant digits is valid");
        for &ns in wall_ns {
            histogram.record(ns.max(1)).expect("the histogram resizes");
        }
        let quantile = |q: f64| histogram.value_at_quantile(q).clamp(min, max);
        let sum: u128 = wall_ns.iter().map(|&n| u128::from(n)).sum();
        Some(TcStats {
            runs: wall_ns.len(),
            min,
            median: quantile(0.5),
            mean: (sum / wall_ns.len() as u128) as u64,
            p99: quantile(0.99),
            max,
        })
    }
}

/// What `tc` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcReport {
    /// The command line, for display.
    pub command: String,
    /// The warm-up runs, in order.
    pub warmup: Vec<RunOutcome>,
    /// The timed runs, in order.
    pub runs: Vec<RunOutcome>,
}

impl TcReport {
    /// Statistics over the timed runs that succeeded.
    pub fn stats(&self) -> Option<TcStats> {
        let ok: Vec<u64> = self
            .runs
            .iter()
            .filter(|r| r.code == 0)
            .map(|r| r.wall_ns)
            .collect();
        TcStats::of(&ok)
    }

    /// Timed runs that failed: `(run number from 1, exit code)`.
    pub fn failures(&self) -> Vec<(usize, i32)> {
        failed(&self.runs)
    }

    /// Warm-up runs that failed: `(run number from 1, exit code)`.
    pub fn warmup_failures(&self) -> Vec<(usize, i32)> {
        failed(&self.warmup)
    }

    /// Timed runs by exit code.
    pub fn exit_codes(&self) -> BTreeMap<i32, usize> {
        let mut codes = BTreeMap::new();
        for run in &self.runs {
            *codes.entry(run.code).or_insert(0) += 1;
        }
        codes
    }

    /// Whether every run, warm-up ones included, succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.failures().is_empty() && self.warmup_failures().is_empty()
    }
}

fn failed(runs: &[RunOutcome]) -> Vec<(usize, i32)> {
    runs.iter()
        .enumerate()
        .filter(|(_, r)| r.code != 0)
        .map(|(i, r)| (i + 1, r.code))
        .collect()
}

/// Runs the command `warmup` times, then `runs` times timed.
pub fn run(options: &TcOptions) -> Result<TcReport, TcError> {
    let (program, args) = options.command.split_first().ok_or(TcError::NoCommand)?;
    let display = display_command(&options.command);
    let total = u64::from(options.warmup) + u64::from(options.runs);
    let bar = if options.progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let once = |bar: &ProgressBar| -> Result<RunOutcome, TcError> {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null());
        if !options.show_output {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let start = Instant::now();
        let status = command.status().map_err(|cause| TcError::Spawn {
            command: display.clone(),
            cause,
        })?;
        let wall = start.elapsed();
        bar.inc(1);
        Ok(RunOutcome {
            wall_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
            code: exit_code(status),
        })
    };
    let mut report = TcReport {
        command: display.clone(),
        warmup: Vec::new(),
        runs: Vec::new(),
    };
    bar.set_message("warm-up");
    for _ in 0..options.warmup {
        report
            .warmup
            .push(once(&bar).inspect_err(|_| bar.abandon())?);
    }
    bar.set_message("runs");
    for _ in 0..options.runs {
        report.runs.push(once(&bar).inspect_err(|_| bar.abandon())?);
    }
    bar.finish_and_clear();
    Ok(report)
}

/// A duration the way people read it: `850ns`, `12.3us`, `4.521ms`, `1.204s`.
pub fn human_ns(ns: u64) -> String {
    let d = Duration::from_nanos(ns);
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

fn list(failures: &[(usize, i32)]) -> String {
    failures
        .iter()
        .map(|(run, code)| format!("#{run} (exit {code})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the report as text or as one JSON object.
pub fn write_report(w: &mut dyn Write, report: &TcReport, format: Format) -> io::Result<()> {
    match format {
        Format::Text => write_text(w, report),
        Format::Json => write_json(w, report),
    }
}

fn write_text(w: &mut dyn Write, report: &TcReport) -> io::Result<()> {
    let runs = report.runs.len();
    let warmup = match report.warmup.len() {
        0 => String::new(),
        1 => ", after 1 warm-up run".to_owned(),
        n => format!(", after {n} warm-up runs"),
    };
    writeln!(
        w,
        "{}: {runs} run{}{warmup}",
        report.command,
        if runs == 1 { "" } else { "s" }
    )?;
    match report.stats() {
        Some(s) => {
            writeln!(
                w,
                "{:<9}  {:>8}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
                "", "RUNS OK", "MIN", "MEDIAN", "MEAN", "P99", "MAX"
            )?;
            writeln!(
                w,
                "{:<9}  {:>8}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
                "wall time",
                format!("{}/{runs}", s.runs),
                human_ns(s.min),
                human_ns(s.median),
                human_ns(s.mean),
                human_ns(s.p99),
                human_ns(s.max)
            )?;
        }
        None if runs > 0 => writeln!(w, "no run succeeded: no statistics")?,
        None => {}
    }
    let codes: Vec<String> = report
        .exit_codes()
        .iter()
        .map(|(code, n)| format!("{code} ({n} run{})", if *n == 1 { "" } else { "s" }))
        .collect();
    if !codes.is_empty() {
        writeln!(w, "exit codes: {}", codes.join(", "))?;
    }
    let failures = report.failures();
    if !failures.is_empty() {
        writeln!(
            w,
            "FAILED: {} of {runs} runs, not in the statistics: {}",
            failures.len(),
            list(&failures)
        )?;
    }
    let warmup_failures = report.warmup_failures();
    if !warmup_failures.is_empty() {
        writeln!(
            w,
            "FAILED warm-up: {} of {} warm-up runs: {}",
            warmup_failures.len(),
            report.warmup.len(),
            list(&warmup_failures)
        )?;
    }
    Ok(())
}

fn write_json(w: &mut dyn Write, report: &TcReport) -> io::Result<()> {
    let failures = |f: Vec<(usize, i32)>| {
        f.into_iter()
            .map(|(run, code)| json!({"run": run, "exit_code": code}))
            .collect::<Vec<_>>()
    };
    let value = json!({
        "type": "tc",
        "command": report.command,
        "runs": report.runs.len(),
        "warmup": report.warmup.len(),
        "succeeded": report.runs.iter().filter(|r| r.code == 0).count(),
        "failed": failures(report.failures()),
        "warmup_failed": failures(report.warmup_failures()),
        "exit_codes": report.exit_codes().iter().map(|(code, n)| (code.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        "wall_ns": report.stats().map(|s| json!({
            "runs": s.runs, "min": s.min, "median": s.median, "mean": s.mean, "p99": s.p99, "max": s.max,
        })),
        "runs_wall_ns": report.runs.iter().map(|r| r.wall_ns).collect::<Vec<_>>(),
    });
    serde_json::to_writer(&mut *w, &value)?;
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ms: u64, code: i32) -> RunOutcome {
        RunOutcome {
            wall_ns: ms * 1_000_000,
            code,
        }
    }

    fn within(value: u64, expected: u64) -> bool {
        // hdrhistogram keeps 3 significant digits.
        value.abs_diff(expected) <= expected / 1000 + 1
    }

    #[test]
    fn statistics_cover_the_successful_runs_only() {
        let report = TcReport {
            command: "x".into(),
            warmup: vec![outcome(500, 0)],
            runs: vec![
                outcome(10, 0),
                outcome(20, 0),
                outcome(1000, 1),
                outcome(30, 0),
                outcome(40, 0),
                outcome(2000, 137),
                outcome(50, 0),
            ],
        };
        let s = report.stats().unwrap();
        assert_eq!(s.runs, 5);
        assert_eq!(s.min, 10_000_000);
        assert_eq!(s.max, 50_000_000);
        assert_eq!(
            s.mean, 30_000_000,
            "warm-up and failures are not averaged in"
        );
        assert!(within(s.median, 30_000_000), "{}", s.median);
        assert!(within(s.p99, 50_000_000), "{}", s.p99);
        assert!(s.p99 <= s.max && s.median >= s.min);
        assert_eq!(report.failures(), [(3, 1), (6, 137)]);
        assert!(report.warmup_failures().is_empty());
        assert!(!report.all_succeeded());
        assert_eq!(
            report.exit_codes().into_iter().collect::<Vec<_>>(),
            [(0, 5), (1, 1), (137, 1)]
        );
    }

    #[test]
    fn percentiles_of_many_runs() {
        let wall: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = TcStats::of(&wall).unwrap();
        assert_eq!((s.min, s.max), (1000, 1_000_000));
        assert_eq!(s.mean, 500_500);
        assert!(within(s.median, 500_000), "{}", s.median);
        assert!(within(s.p99, 990_000), "{}", s.p99);
        let one = TcStats::of(&[7]).unwrap();
        assert_eq!(
            (one.min, one.median, one.mean, one.p99, one.max),
            (7, 7, 7, 7, 7)
        );
        assert!(TcStats::of(&[]).is_none());
    }

    #[test]
    fn the_text_lists_failures_and_the_json_parses() {
        let report = TcReport {
            command: "sh -c 'exit 1'".into(),
            warmup: vec![outcome(1, 2)],
            runs: vec![outcome(2, 0), outcome(3, 1)],
        };
        let mut text = Vec::new();
        write_report(&mut text, &report, Format::Text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with("sh -c 'exit 1': 2 runs, after 1 warm-up run\n"),
            "{text}"
        );
        assert!(text.contains("wall time       1/2"), "{text}");
        assert!(text.contains("exit codes: 0 (1 run), 1 (1 run)"), "{text}");
        assert!(
            text.contains("FAILED: 1 of 2 runs, not in the statistics: #2 (exit 1)"),
            "{text}"
        );
        assert!(
            text.contains("FAILED warm-up: 1 of 1 warm-up runs: #1 (exit 2)"),
            "{text}"
        );

        let mut json = Vec::new();
        write_report(&mut json, &report, Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["succeeded"], 1);
        assert_eq!(v["failed"][0]["run"], 2);
        assert_eq!(v["failed"][0]["exit_code"], 1);
        assert_eq!(v["wall_ns"]["min"], 2_000_000);
        assert_eq!(v["exit_codes"]["1"], 1);

        let none = TcReport {
            command: "false".into(),
            warmup: vec![],
            runs: vec![outcome(1, 1)],
        };
        let mut text = Vec::new();
        write_report(&mut text, &none, Format::Text).unwrap();
        assert!(
            String::from_utf8(text)
                .unwrap()
                .contains("no run succeeded")
        );
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_300), "12.3us");
        assert_eq!(human_ns(4_521_000), "4.521ms");
        assert_eq!(human_ns(1_204_000_000), "1.204s");
    }
}
