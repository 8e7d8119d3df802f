//! Sample profiles: the top functions by self and total samples (like the
//! first screen of `perf report --stdio`), folded stacks, JSON and pprof.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use nodetrace_protocol::{Pid, SampledStack};
use pprof::protos::Message;

use crate::Profile;
use crate::tc::human_ns;

/// How many functions each text table shows.
pub const TOP: usize = 25;

/// One function's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSamples {
    /// Its name, as symbolised by the node.
    pub function: String,
    /// Samples taken while it was the innermost frame.
    pub self_samples: u64,
    /// Samples taken while it was on the stack (counted once per sample).
    pub total_samples: u64,
}

/// Every sample of the profile.
pub fn total(profile: &Profile<'_>) -> u64 {
    profile.snapshot.samples.iter().map(|s| s.samples).sum()
}

/// Every function seen, by self samples (most first), then total, then name.
pub fn functions(profile: &Profile<'_>) -> Vec<FunctionSamples> {
    function_rows(&profile.snapshot.samples)
}

/// [`functions`] of some of the stacks.
fn function_rows<'a>(stacks: impl IntoIterator<Item = &'a SampledStack>) -> Vec<FunctionSamples> {
    let mut by_name: HashMap<&str, (u64, u64)> = HashMap::new();
    for stack in stacks {
        let mut seen = HashSet::new();
        for frame in &stack.frames {
            if seen.insert(frame.function.as_str()) {
                by_name.entry(&frame.function).or_default().1 += stack.samples;
            }
        }
        if let Some(leaf) = stack.frames.last() {
            by_name.entry(&leaf.function).or_default().0 += stack.samples;
        }
    }
    let mut rows: Vec<FunctionSamples> = by_name
        .into_iter()
        .map(
            |(function, (self_samples, total_samples))| FunctionSamples {
                function: function.to_owned(),
                self_samples,
                total_samples,
            },
        )
        .collect();
    rows.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then(b.total_samples.cmp(&a.total_samples))
            .then(a.function.cmp(&b.function))
    });
    rows
}

/// Who a stack belongs to: its process (`<0.7.1> audit`) in a profile
/// split by process, else its thread.
pub fn owner(stack: &SampledStack) -> String {
    match (stack.pid, &stack.process) {
        (Some(pid), Some(name)) => format!("{pid} {name}"),
        (Some(pid), None) => pid.to_string(),
        (None, _) => stack.thread.clone(),
    }
}

/// Whether the profile was split by process (some stack has a pid).
fn split_by_process(profile: &Profile<'_>) -> bool {
    profile.snapshot.samples.iter().any(|s| s.pid.is_some())
}

/// Samples per owner ([`owner`]), most first; a thread's samples outside any
/// process are its own row.
pub fn owners(profile: &Profile<'_>) -> Vec<(String, Option<Pid>, u64)> {
    let mut by: HashMap<(String, Option<Pid>), u64> = HashMap::new();
    for stack in &profile.snapshot.samples {
        *by.entry((owner(stack), stack.pid)).or_default() += stack.samples;
    }
    let mut rows: Vec<_> = by.into_iter().map(|((o, p), n)| (o, p, n)).collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    rows
}

/// The text report: a header, then the top functions by self samples and
/// by total samples; split by process, the samples of each process and
/// each one's top functions.
pub fn write_text(w: &mut impl Write, profile: &Profile<'_>) -> io::Result<()> {
    let total = total(profile);
    let threads: HashSet<&str> = profile
        .snapshot
        .samples
        .iter()
        .map(|s| s.thread.as_str())
        .collect();
    writeln!(
        w,
        "%% sample of {}: {total} samples at {} Hz of CPU time over {}, {} threads",
        profile.node,
        profile.snapshot.frequency_hz,
        human_ns(profile.snapshot.elapsed_ns),
        threads.len()
    )?;
    if total == 0 {
        writeln!(
            w,
            "%% no samples: the node used no CPU time while sampled (or every sample landed in libc)"
        )?;
        return Ok(());
    }
    let pct = |n: u64| n as f64 * 100.0 / total as f64;
    if split_by_process(profile) {
        return write_by_process(w, profile, total);
    }
    let mut rows = functions(profile);
    writeln!(w)?;
    writeln!(w, "# by self samples (top {TOP})")?;
    self_table(w, &rows, TOP, total)?;
    rows.sort_by(|a, b| {
        b.total_samples
            .cmp(&a.total_samples)
            .then(b.self_samples.cmp(&a.self_samples))
            .then(a.function.cmp(&b.function))
    });
    writeln!(w)?;
    writeln!(w, "# by total samples, callees included (top {TOP})")?;
    writeln!(
        w,
        "{:>8} {:>8} {:>8} {:>8}  FUNCTION",
        "TOTAL%", "TOTAL", "SELF%", "SELF"
    )?;
    for row in rows.iter().take(TOP) {
        writeln!(
            w,
            "{:>7.2}% {:>8} {:>7.2}% {:>8}  {}",
            pct(row.total_samples),
            row.total_samples,
            pct(row.self_samples),
            row.self_samples,
            row.function
        )?;
    }
    Ok(())
}

/// The `SELF% SELF TOTAL% TOTAL FUNCTION` table of at most `limit` of
/// `rows` (those with self samples), shares of `total`.
fn self_table(
    w: &mut impl Write,
    rows: &[FunctionSamples],
    limit: usize,
    total: u64,
) -> io::Result<()> {
    let pct = |n: u64| n as f64 * 100.0 / total as f64;
    writeln!(
        w,
        "{:>8} {:>8} {:>8} {:>8}  FUNCTION",
        "SELF%", "SELF", "TOTAL%", "TOTAL"
    )?;
    for row in rows.iter().take(limit) {
        if row.self_samples == 0 {
            break;
        }
        writeln!(
            w,
            "{:>7.2}% {:>8} {:>7.2}% {:>8}  {}",
            pct(row.self_samples),
            row.self_samples,
            pct(row.total_samples),
            row.total_samples,
            row.function
        )?;
    }
    Ok(())
}

/// How many functions each process's table shows.
const TOP_PER_PROCESS: usize = 10;

/// How many processes (or threads) get a table of their own, most samples
/// first.
const SECTIONS: usize = 10;

fn write_by_process(w: &mut impl Write, profile: &Profile<'_>, total: u64) -> io::Result<()> {
    let pct = |n: u64| n as f64 * 100.0 / total as f64;
    let owners = owners(profile);
    writeln!(w)?;
    writeln!(w, "# by process (threads: samples outside any process)")?;
    writeln!(w, "{:>8} {:>8}  PROCESS", "SAMPLES%", "SAMPLES")?;
    for (owner, pid, samples) in owners.iter().take(TOP) {
        let owner = match pid {
            Some(_) => owner.clone(),
            None => format!("thread {owner}"),
        };
        writeln!(w, "{:>7.2}% {samples:>8}  {owner}", pct(*samples))?;
    }
    if owners.len() > TOP {
        let rest: u64 = owners[TOP..].iter().map(|o| o.2).sum();
        writeln!(
            w,
            "{:>7.2}% {rest:>8}  ({} more; --format json lists every one)",
            pct(rest),
            owners.len() - TOP
        )?;
    }
    for (owner, pid, samples) in owners.iter().take(SECTIONS) {
        let stacks = profile
            .snapshot
            .samples
            .iter()
            .filter(|s| s.pid == *pid && self::owner(s) == *owner);
        let title = match pid {
            Some(_) => format!("process {owner}"),
            None => format!("thread {owner}"),
        };
        writeln!(w)?;
        writeln!(
            w,
            "****** {title} -- {:.2} % of samples, by self samples (top {TOP_PER_PROCESS}) ***",
            pct(*samples)
        )?;
        self_table(w, &function_rows(stacks), TOP_PER_PROCESS, total)?;
    }
    Ok(())
}

/// `owner;outer;...;inner samples`, one line per stack: the owner is the
/// thread, or the process in a profile split by process.
pub fn folded_lines(profile: &Profile<'_>) -> Vec<String> {
    profile
        .snapshot
        .samples
        .iter()
        .filter(|s| s.samples > 0)
        .map(|s| {
            let mut line = folded_name(&owner(s));
            for frame in &s.frames {
                line.push(';');
                line.push_str(&folded_name(&frame.function));
            }
            format!("{line} {}", s.samples)
        })
        .collect()
}

/// A name as a folded frame: no `;` (the separator) and no newline.
fn folded_name(name: &str) -> String {
    name.replace([';', '\n'], "_")
}

/// The profile's JSON object.
pub fn json(profile: &Profile<'_>) -> serde_json::Value {
    use serde_json::json;
    let functions: Vec<_> = functions(profile)
        .into_iter()
        .map(|f| {
            json!({
                "function": f.function,
                "self_samples": f.self_samples,
                "total_samples": f.total_samples,
            })
        })
        .collect();
    let stacks: Vec<_> = profile
        .snapshot
        .samples
        .iter()
        .map(|s| {
            json!({
                "thread": s.thread,
                "pid": s.pid.map(|p| p.to_string()),
                "process": s.process,
                "frames": s.frames.iter().map(|f| f.function.as_str()).collect::<Vec<_>>(),
                "samples": s.samples,
            })
        })
        .collect();
    let processes: Vec<_> = owners(profile)
        .into_iter()
        .filter_map(|(owner, pid, samples)| {
            let pid = pid?;
            Some(json!({ "pid": pid.to_string(), "owner": owner, "samples": samples }))
        })
        .collect();
    json!({
        "type": "profile",
        "profiler": profile.mode.name(),
        "node": profile.node,
        "complete": profile.complete,
        "elapsed_ns": profile.snapshot.elapsed_ns,
        "frequency_hz": profile.snapshot.frequency_hz,
        "samples": total(profile),
        "functions": functions,
        "processes": processes,
        "stacks": stacks,
    })
}

/// The profile in pprof's protobuf format (`perftools.profiles.Profile`),
/// gzipped when `gzip` (as `go tool pprof` writes it; it reads both):
/// sample types `samples/count` and `cpu/nanoseconds`, a `thread` label
/// (the process, in a profile split by process: see [`owner`]).
pub fn write_pprof(w: &mut impl Write, profile: &Profile<'_>, gzip: bool) -> io::Result<()> {
    let report = pprof_report(profile);
    let proto = report
        .pprof()
        .map_err(|e| io::Error::other(format!("building the pprof profile failed: {e}")))?;
    let bytes = proto.encode_to_vec();
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(w, flate2::Compression::default());
        encoder.write_all(&bytes)?;
        encoder.finish()?;
        Ok(())
    } else {
        w.write_all(&bytes)
    }
}

/// The stacks as a pprof-rs report, so that pprof-rs writes the protobuf.
fn pprof_report(profile: &Profile<'_>) -> pprof::Report {
    let started = SystemTime::now()
        .checked_sub(Duration::from_nanos(profile.snapshot.elapsed_ns))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut data = HashMap::new();
    for (i, stack) in profile.snapshot.samples.iter().enumerate() {
        *data.entry(frames(stack, i as u64, started)).or_insert(0) += stack.samples as isize;
    }
    let mut report = pprof::Report {
        data,
        timing: Default::default(),
    };
    report.timing.frequency = profile.snapshot.frequency_hz.max(1) as i32;
    report.timing.start_time = started;
    report.timing.duration = Duration::from_nanos(profile.snapshot.elapsed_ns);
    report
}

/// One stack as pprof-rs frames: innermost first, one symbol per frame.
fn frames(stack: &SampledStack, id: u64, at: SystemTime) -> pprof::Frames {
    pprof::Frames {
        frames: stack
            .frames
            .iter()
            .rev()
            .map(|f| {
                vec![pprof::Symbol {
                    name: Some(f.function.clone().into_bytes()),
                    addr: None,
                    lineno: f.line,
                    filename: f.file.as_ref().map(PathBuf::from),
                }]
            })
            .collect(),
        thread_name: owner(stack),
        // Distinct per stack: pprof-rs keys its samples by thread id and
        // frame addresses, which names alone do not have.
        thread_id: id,
        sample_timestamp: at,
    }
}

#[cfg(test)]
mod tests {
    use nodetrace_protocol::{Pid, ProfileMode, ProfileSnapshot, SampledFrame, SampledStack};

    use super::*;

    fn stack(pid: Option<Pid>, leaf: &str, samples: u64) -> SampledStack {
        SampledStack {
            thread: "worker".into(),
            pid,
            process: pid.map(|p| format!("conn:{}", p.number())),
            frames: ["main", leaf]
                .map(|f| SampledFrame {
                    function: f.into(),
                    file: None,
                    line: None,
                })
                .to_vec(),
            samples,
        }
    }

    #[test]
    fn a_split_profile_shows_the_busiest_processes_and_counts_the_rest() {
        let mut samples: Vec<SampledStack> = (1..=30)
            .map(|n| stack(Some(Pid::task(n)), &format!("work_{n}"), n))
            .collect();
        samples.push(stack(None, "idle", 3));
        let snapshot = ProfileSnapshot {
            samples,
            frequency_hz: 99,
            ..ProfileSnapshot::default()
        };
        let profile = Profile {
            mode: ProfileMode::Sample,
            node: "n@h",
            snapshot: &snapshot,
            callsites: &[],
            complete: true,
        };
        let mut out = Vec::new();
        write_text(&mut out, &profile).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("<0.30.1> conn:30\n"), "{text}");
        assert!(
            text.contains("(6 more; --format json lists every one)"),
            "{text}"
        );
        assert_eq!(text.matches("****** ").count(), SECTIONS, "{text}");
        let busiest = text.split("****** ").nth(1).unwrap();
        assert!(
            busiest.starts_with("process <0.30.1> conn:30 -- "),
            "{busiest}"
        );
        assert!(
            busiest.lines().nth(2).unwrap().ends_with("work_30"),
            "{busiest}"
        );
        // Folded stacks and pprof threads are rooted at the process, a
        // thread's samples outside any at the thread.
        let folded = folded_lines(&profile);
        assert!(folded.contains(&"<0.30.1> conn:30;main;work_30 30".to_owned()));
        assert!(folded.contains(&"worker;main;idle 3".to_owned()));
    }
}
