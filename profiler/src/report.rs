//! The text tables: cprof's counts by module, eprof's own time per
//! function, fprof's call graph paragraphs, and latency percentiles.

use std::collections::BTreeMap;
use std::io::{self, Write};

use nodetrace_protocol::{FunctionProfile, Pid, ProfileMode};

use crate::Profile;

/// How to order a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Own time (eprof's order: smallest first, the hot spots at the bottom).
    Time,
    /// Calls, most first.
    Calls,
    /// Own time, most first.
    Own,
    /// Accumulated time, most first (fprof's order).
    Acc,
    /// By name.
    Name,
}

/// How a report is laid out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportOptions {
    /// Row order; `None` is each profiler's own.
    pub sort: Option<Sort>,
    /// eprof: one table per process.
    pub per_process: bool,
    /// Add a latency percentile table.
    pub histogram: bool,
}

/// Writes the profile's report as its profiler prints it.
pub fn write_text(
    w: &mut impl Write,
    profile: &Profile<'_>,
    options: &ReportOptions,
) -> io::Result<()> {
    if !profile.complete {
        writeln!(
            w,
            "%% {} died before its final report: these are its last periodic figures",
            profile.node
        )?;
    }
    match profile.mode {
        ProfileMode::Cprof => cprof(w, profile, options)?,
        ProfileMode::Eprof => eprof(w, profile, options)?,
        ProfileMode::Fprof => fprof(w, profile, options)?,
        ProfileMode::Sample => crate::sample::write_text(w, profile)?,
    }
    if options.histogram {
        histogram(w, profile)?;
    }
    Ok(())
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn millis(ns: u64) -> f64 {
    ns as f64 / 1_000_000.0
}

/// Functions merged over processes: one row per callsite.
fn merged(profile: &Profile<'_>) -> Vec<FunctionProfile> {
    let mut by: BTreeMap<u32, FunctionProfile> = BTreeMap::new();
    for f in &profile.snapshot.functions {
        let row = by.entry(f.callsite).or_insert_with(|| FunctionProfile {
            pid: None,
            calls: 0,
            own_ns: 0,
            acc_ns: 0,
            busy_ns: None,
            histogram: f.histogram,
            ..f.clone()
        });
        row.calls += f.calls;
        row.own_ns += f.own_ns;
        row.acc_ns += f.acc_ns;
        if let Some(busy) = f.busy_ns {
            *row.busy_ns.get_or_insert(0) += busy;
        }
    }
    by.into_values().collect()
}

fn sort_rows(rows: &mut [FunctionProfile], profile: &Profile<'_>, sort: Sort) {
    match sort {
        Sort::Time => rows.sort_by_key(|f| (f.own_ns, f.calls)),
        Sort::Calls => rows.sort_by_key(|f| std::cmp::Reverse(f.calls)),
        Sort::Own => rows.sort_by_key(|f| std::cmp::Reverse(f.own_ns)),
        Sort::Acc => rows.sort_by_key(|f| std::cmp::Reverse(f.acc_ns)),
        Sort::Name => rows.sort_by_key(|f| profile.name(f.callsite)),
    }
}

fn cprof(w: &mut impl Write, profile: &Profile<'_>, options: &ReportOptions) -> io::Result<()> {
    let rows = merged(profile);
    let total: u64 = rows.iter().map(|f| f.calls).sum();
    let mut modules: BTreeMap<&str, Vec<&FunctionProfile>> = BTreeMap::new();
    for f in &rows {
        modules
            .entry(profile.module(f.callsite))
            .or_default()
            .push(f);
    }
    let mut modules: Vec<(&str, u64, Vec<&FunctionProfile>)> = modules
        .into_iter()
        .map(|(m, fs)| (m, fs.iter().map(|f| f.calls).sum(), fs))
        .collect();
    let by_name = options.sort == Some(Sort::Name);
    if !by_name {
        modules.sort_by_key(|(_, n, _)| std::cmp::Reverse(*n));
    }
    let width = rows
        .iter()
        .map(|f| profile.name(f.callsite).len() + 2)
        .max()
        .unwrap_or(0)
        .max(40);
    writeln!(w, "{:<width$}  {:>10}", "", "CNT")?;
    writeln!(w, "{:<width$}  {:>10}", "Total", total)?;
    for (module, count, mut functions) in modules {
        writeln!(w, "{module:<width$}  {count:>10}  <--")?;
        if by_name {
            functions.sort_by_key(|f| profile.name(f.callsite));
        } else {
            functions.sort_by_key(|f| (std::cmp::Reverse(f.calls), profile.name(f.callsite)));
        }
        for f in functions {
            writeln!(
                w,
                "  {:<w2$}  {:>10}",
                profile.name(f.callsite),
                f.calls,
                w2 = width - 2
            )?;
        }
    }
    writeln!(w, "Profile done over {} matching functions", rows.len())
}

fn eprof(w: &mut impl Write, profile: &Profile<'_>, options: &ReportOptions) -> io::Result<()> {
    let sort = options.sort.unwrap_or(Sort::Time);
    if options.per_process && profile.snapshot.functions.iter().any(|f| f.pid.is_some()) {
        let total: u64 = profile.snapshot.functions.iter().map(|f| f.own_ns).sum();
        let mut by_pid: BTreeMap<Option<Pid>, Vec<FunctionProfile>> = BTreeMap::new();
        for f in &profile.snapshot.functions {
            by_pid.entry(f.pid).or_default().push(f.clone());
        }
        let mut sections: Vec<_> = by_pid.into_iter().collect();
        sections.sort_by_key(|(_, fs)| std::cmp::Reverse(fs.iter().map(|f| f.own_ns).sum::<u64>()));
        for (pid, mut rows) in sections {
            let own: u64 = rows.iter().map(|f| f.own_ns).sum();
            let pid = pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
            writeln!(
                w,
                "\n****** Process {pid:<12} -- {:.2} % of profiled time ***",
                own as f64 * 100.0 / total.max(1) as f64
            )?;
            sort_rows(&mut rows, profile, sort);
            eprof_table(w, profile, &rows)?;
        }
        return Ok(());
    }
    let mut rows = merged(profile);
    sort_rows(&mut rows, profile, sort);
    eprof_table(w, profile, &rows)
}

fn eprof_table(
    w: &mut impl Write,
    profile: &Profile<'_>,
    rows: &[FunctionProfile],
) -> io::Result<()> {
    let width = rows
        .iter()
        .map(|f| profile.name(f.callsite).len())
        .max()
        .unwrap_or(0)
        .max(37);
    let total_calls: u64 = rows.iter().map(|f| f.calls).sum();
    let total_ns: u64 = rows.iter().map(|f| f.own_ns).sum();
    let line = |w: &mut dyn Write, name: &str, calls: &str, pct: &str, time: &str, per: &str| {
        writeln!(
            w,
            "{name:<width$}  {calls:>7}  {pct:>7}  {time:>8}  [{per:>10}]"
        )
    };
    line(w, "FUNCTION", "CALLS", "%", "TIME", "uS / CALLS")?;
    line(w, "--------", "-----", "-------", "----", "----------")?;
    for f in rows {
        let pct = f.own_ns as f64 * 100.0 / total_ns.max(1) as f64;
        let per = micros(f.own_ns) / f.calls.max(1) as f64;
        line(
            w,
            &profile.name(f.callsite),
            &f.calls.to_string(),
            &format!("{pct:.2}"),
            &format!("{:.0}", micros(f.own_ns)),
            &format!("{per:.2}"),
        )?;
    }
    let dashes = "-".repeat(width);
    line(w, &dashes, "-----", "-------", "----", "----------")?;
    let per = micros(total_ns) / total_calls.max(1) as f64;
    line(
        w,
        "Total:",
        &total_calls.to_string(),
        "100.00%",
        &format!("{:.0}", micros(total_ns)),
        &format!("{per:.2}"),
    )?;
    let asynchronous: Vec<&FunctionProfile> = rows.iter().filter(|f| f.busy_ns.is_some()).collect();
    if !asynchronous.is_empty() {
        writeln!(w)?;
        writeln!(
            w,
            "{:<width$}  {:>7}  {:>10}  {:>10}",
            "ASYNC FUNCTION", "CALLS", "BUSY uS", "WALL uS"
        )?;
        for f in asynchronous {
            writeln!(
                w,
                "{:<width$}  {:>7}  {:>10.0}  {:>10.0}",
                profile.name(f.callsite),
                f.calls,
                micros(f.busy_ns.unwrap_or(0)),
                micros(f.acc_ns)
            )?;
        }
    }
    Ok(())
}

fn fprof(w: &mut impl Write, profile: &Profile<'_>, options: &ReportOptions) -> io::Result<()> {
    let mut rows = merged(profile);
    sort_rows(&mut rows, profile, options.sort.unwrap_or(Sort::Acc));
    let total_calls: u64 = rows.iter().map(|f| f.calls).sum();
    let total_own: u64 = rows.iter().map(|f| f.own_ns).sum();
    let entry = |name: &str, cnt: u64, acc: u64, own: u64| {
        format!(
            "{:<44}{cnt:>6},{:>10.3},{:>10.3}}}",
            format!("{name},"),
            millis(acc),
            millis(own)
        )
    };
    writeln!(w, "%% Analysis results (times in ms):")?;
    writeln!(w, "%{:>50}{:>10}{:>10}", "CNT", "ACC", "OWN")?;
    writeln!(
        w,
        "[{{ {}].  %%%",
        entry(
            "totals",
            total_calls,
            profile.snapshot.elapsed_ns,
            total_own
        )
    )?;
    for f in &rows {
        let name = profile.name(f.callsite);
        let callers: Vec<_> = profile
            .snapshot
            .edges
            .iter()
            .filter(|e| e.callee == f.callsite)
            .collect();
        let callees: Vec<_> = profile
            .snapshot
            .edges
            .iter()
            .filter(|e| e.caller == Some(f.callsite))
            .collect();
        let edge_name = |caller: Option<u32>| {
            caller.map_or_else(|| "(untraced)".to_owned(), |c| profile.name(c))
        };
        writeln!(w)?;
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "[]".to_owned()
            } else {
                format!("[{{{}]", items.join(",\n  {"))
            }
        };
        let callers = list(
            callers
                .iter()
                .map(|e| entry(&edge_name(e.caller), e.calls, e.acc_ns, e.own_ns))
                .collect(),
        );
        let callees = list(
            callees
                .iter()
                .map(|e| entry(&profile.name(e.callee), e.calls, e.acc_ns, e.own_ns))
                .collect(),
        );
        writeln!(w, "{{{callers},")?;
        writeln!(
            w,
            " {{ {},     %",
            entry(&name, f.calls, f.acc_ns, f.own_ns)
        )?;
        writeln!(w, " {callees}}}.")?;
    }
    Ok(())
}

fn histogram(w: &mut impl Write, profile: &Profile<'_>) -> io::Result<()> {
    let rows: Vec<FunctionProfile> = merged(profile)
        .into_iter()
        .filter(|f| f.histogram.is_some())
        .collect();
    writeln!(w)?;
    if rows.is_empty() {
        return writeln!(w, "%% no latency histogram: cprof reads no clock");
    }
    let width = rows
        .iter()
        .map(|f| profile.name(f.callsite).len())
        .max()
        .unwrap_or(0)
        .max(37);
    writeln!(
        w,
        "{:<width$}  {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
        "LATENCY (uS)", "CALLS", "P50", "P90", "P99", "P99.9", "MAX"
    )?;
    for f in rows {
        let h = f.histogram.expect("filtered");
        writeln!(
            w,
            "{:<width$}  {:>7}  {:>9.2}  {:>9.2}  {:>9.2}  {:>9.2}  {:>9.2}",
            profile.name(f.callsite),
            f.calls,
            micros(h.p50),
            micros(h.p90),
            micros(h.p99),
            micros(h.p999),
            micros(h.max)
        )?;
    }
    Ok(())
}
