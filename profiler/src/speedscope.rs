//! Stacks in speedscope's file format (<https://www.speedscope.app>, its
//! `file-format-schema.json`): one "sampled" profile whose samples are the
//! folded stacks, each weighted by its own time (nanoseconds) or, for a
//! sample profile, its samples.

use std::collections::HashMap;
use std::io::{self, Write};

use nodetrace_protocol::ProfileMode;
use serde_json::json;

use crate::Profile;
use crate::flame::folded_lines;

/// Writes `profile`'s stacks as a speedscope file named `title`.
pub fn write(w: &mut impl Write, profile: &Profile<'_>, title: &str) -> io::Result<()> {
    let mut frames: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let lines = folded_lines(profile);
    let (mut samples, mut weights) = (Vec::new(), Vec::new());
    for line in &lines {
        let Some((stack, weight)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(weight) = weight.parse::<u64>() else {
            continue;
        };
        let stack: Vec<usize> = stack
            .split(';')
            .map(|frame| {
                *index.entry(frame).or_insert_with(|| {
                    frames.push(frame);
                    frames.len() - 1
                })
            })
            .collect();
        samples.push(stack);
        weights.push(weight);
    }
    let unit = if profile.mode == ProfileMode::Sample {
        "none"
    } else {
        "nanoseconds"
    };
    let file = json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "exporter": concat!("nodetrace ", env!("CARGO_PKG_VERSION")),
        "name": title,
        "activeProfileIndex": 0,
        "shared": { "frames": frames.iter().map(|f| json!({ "name": f })).collect::<Vec<_>>() },
        "profiles": [{
            "type": "sampled",
            "name": title,
            "unit": unit,
            "startValue": 0,
            "endValue": weights.iter().sum::<u64>(),
            "samples": samples,
            "weights": weights,
        }],
    });
    serde_json::to_writer(&mut *w, &file).map_err(io::Error::other)?;
    w.write_all(b"\n")
}
