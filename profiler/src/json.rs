//! A profile as one JSON object, for tools.

use std::io::{self, Write};

use serde_json::json;

use crate::Profile;

/// Writes the profile as one JSON object and a newline.
pub fn write_json(w: &mut impl Write, profile: &Profile<'_>) -> io::Result<()> {
    if profile.mode == nodetrace_protocol::ProfileMode::Sample {
        serde_json::to_writer(&mut *w, &crate::sample::json(profile))?;
        return writeln!(w);
    }
    let info = |id: u32| profile.callsites.get(id as usize);
    let functions: Vec<_> = profile
        .snapshot
        .functions
        .iter()
        .map(|f| {
            let c = info(f.callsite);
            json!({
                "module": c.map(|c| c.module.as_str()),
                "self_type": c.and_then(|c| c.self_type.as_deref()),
                "trait_name": c.and_then(|c| c.trait_name.as_deref()),
                "function": c.map(|c| c.function.as_str()),
                "arity": c.map(|c| c.arity),
                "pid": f.pid.map(|p| p.to_string()),
                "calls": f.calls,
                "own_ns": f.own_ns,
                "acc_ns": f.acc_ns,
                "busy_ns": f.busy_ns,
                "histogram_ns": f.histogram.map(|h| json!({
                    "p50": h.p50, "p90": h.p90, "p99": h.p99, "p999": h.p999, "max": h.max
                })),
            })
        })
        .collect();
    let edges: Vec<_> = profile
        .snapshot
        .edges
        .iter()
        .map(|e| {
            json!({
                "caller": e.caller.map(|c| profile.name(c)),
                "callee": profile.name(e.callee),
                "calls": e.calls,
                "acc_ns": e.acc_ns,
                "own_ns": e.own_ns,
            })
        })
        .collect();
    let stacks: Vec<_> = profile
        .snapshot
        .stacks
        .iter()
        .map(|s| {
            json!({
                "frames": s.frames.iter().map(|f| profile.name(*f)).collect::<Vec<_>>(),
                "own_ns": s.own_ns,
            })
        })
        .collect();
    let value = json!({
        "type": "profile",
        "profiler": profile.mode.name(),
        "node": profile.node,
        "complete": profile.complete,
        "elapsed_ns": profile.snapshot.elapsed_ns,
        "functions": functions,
        "edges": edges,
        "stacks": stacks,
    });
    serde_json::to_writer(&mut *w, &value)?;
    writeln!(w)
}
