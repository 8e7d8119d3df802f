//! Folded stacks and flamegraphs: one frame per traced function on the
//! stack, widths from own time (nanoseconds); for a sample profile, one
//! frame per function of the sampled stack under its thread, widths from
//! samples.

use std::io::{self, Write};

use crate::Profile;

/// Why a flamegraph could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum FlameError {
    /// eprof and fprof keep stacks; cprof does not.
    #[error("a cprof profile has no stacks: use eprof or fprof for a flamegraph")]
    NoStacks,
    /// inferno failed, or writing failed.
    #[error("drawing the flamegraph failed: {0}")]
    Draw(String),
}

/// The stacks as folded lines: `outer;inner weight`.
pub(crate) fn folded_lines(profile: &Profile<'_>) -> Vec<String> {
    if profile.mode == nodetrace_protocol::ProfileMode::Sample {
        return crate::sample::folded_lines(profile);
    }
    profile
        .snapshot
        .stacks
        .iter()
        .filter(|s| s.own_ns > 0)
        .map(|s| {
            let frames: Vec<String> = s.frames.iter().map(|f| profile.name(*f)).collect();
            format!("{} {}", frames.join(";"), s.own_ns)
        })
        .collect()
}

/// Writes the stacks folded, `outer;inner own_ns` a line, as inferno and
/// flamegraph.pl read them.
pub fn write_folded(w: &mut impl Write, profile: &Profile<'_>) -> io::Result<()> {
    for line in folded_lines(profile) {
        writeln!(w, "{line}")?;
    }
    Ok(())
}

/// Draws the stacks as a flamegraph SVG.
pub fn write_flamegraph(
    w: &mut impl Write,
    profile: &Profile<'_>,
    title: &str,
) -> Result<(), FlameError> {
    if profile.mode == nodetrace_protocol::ProfileMode::Cprof {
        return Err(FlameError::NoStacks);
    }
    let lines = folded_lines(profile);
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    let sampled = profile.mode == nodetrace_protocol::ProfileMode::Sample;
    options.count_name = if sampled { "samples" } else { "ns" }.to_owned();
    if lines.is_empty() {
        // inferno refuses an empty graph; draw one frame that says so.
        let empty = [if sampled {
            "no samples 1"
        } else {
            "no traced call completed 1"
        }
        .to_owned()];
        return inferno::flamegraph::from_lines(&mut options, empty.iter().map(String::as_str), w)
            .map_err(|e| FlameError::Draw(e.to_string()));
    }
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), w)
        .map_err(|e| FlameError::Draw(e.to_string()))
}
