//! cprof, eprof and fprof figures as a pprof profile
//! (`perftools.profiles.Profile`, the protobuf `go tool pprof`,
//! Pyroscope and Grafana read), with pprof-rs's generated message types.
//!
//! cprof keeps no stacks: one sample per function, its calls
//! (`calls/count`). eprof and fprof: one sample per folded stack, the own
//! time of its innermost function (`own/nanoseconds`), so pprof's `flat`
//! is a function's own time and `cum` its time with the traced functions
//! it called. The totals are the report's: the calls cprof counted, the
//! own time of the stacks.

use std::collections::HashMap;
use std::io::{self, Write};

use nodetrace_protocol::ProfileMode;
use pprof::protos::{Function, Line, Location, Message, Profile as Proto, Sample, ValueType};

use crate::Profile;

/// Builds the string table and the function and location of each callsite.
#[derive(Default)]
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    locations: Vec<Location>,
    by_callsite: HashMap<u32, u64>,
}

impl Tables {
    fn new() -> Tables {
        let mut t = Tables::default();
        t.string(""); // pprof: string 0 is the empty string
        t
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    /// The location of callsite `id` (one function, one line).
    fn location(&mut self, profile: &Profile<'_>, id: u32) -> u64 {
        if let Some(&loc) = self.by_callsite.get(&id) {
            return loc;
        }
        let n = self.locations.len() as u64 + 1;
        let site = profile.callsites.get(id as usize);
        let name = self.string(&profile.name(id));
        let system_name = match site {
            Some(c) => self.string(&c.rust_path()),
            None => name,
        };
        let filename = self.string(site.map_or("", |c| c.file.as_str()));
        let start_line = site.map_or(0, |c| i64::from(c.line));
        self.functions.push(Function {
            id: n,
            name,
            system_name,
            filename,
            start_line,
        });
        self.locations.push(Location {
            id: n,
            mapping_id: 0,
            address: 0,
            line: vec![Line {
                function_id: n,
                line: start_line,
            }],
            is_folded: false,
        });
        self.by_callsite.insert(id, n);
        n
    }
}

/// The profile as pprof's message.
pub fn traced_profile(profile: &Profile<'_>) -> Proto {
    let mut t = Tables::new();
    let mut samples = Vec::new();
    let (kind, unit) = if profile.mode == ProfileMode::Cprof {
        let mut calls: HashMap<u32, u64> = HashMap::new();
        for f in &profile.snapshot.functions {
            *calls.entry(f.callsite).or_default() += f.calls;
        }
        let mut calls: Vec<(u32, u64)> = calls.into_iter().filter(|(_, n)| *n > 0).collect();
        calls.sort_unstable();
        for (id, n) in calls {
            samples.push(Sample {
                location_id: vec![t.location(profile, id)],
                value: vec![i64::try_from(n).unwrap_or(i64::MAX)],
                label: Vec::new(),
            });
        }
        ("calls", "count")
    } else {
        for stack in profile.snapshot.stacks.iter().filter(|s| s.own_ns > 0) {
            samples.push(Sample {
                // pprof: innermost first.
                location_id: stack
                    .frames
                    .iter()
                    .rev()
                    .map(|&id| t.location(profile, id))
                    .collect(),
                value: vec![i64::try_from(stack.own_ns).unwrap_or(i64::MAX)],
                label: Vec::new(),
            });
        }
        ("own", "nanoseconds")
    };
    let sample_type = ValueType {
        ty: t.string(kind),
        unit: t.string(unit),
    };
    let comment = t.string(&format!("{} of {}", profile.mode.name(), profile.node));
    let time_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
        .saturating_sub(profile.snapshot.elapsed_ns as i64);
    Proto {
        sample_type: vec![sample_type],
        sample: samples,
        location: t.locations,
        function: t.functions,
        time_nanos,
        duration_nanos: i64::try_from(profile.snapshot.elapsed_ns).unwrap_or(i64::MAX),
        comment: vec![comment],
        string_table: t.strings,
        ..Proto::default()
    }
}

/// Writes the profile in pprof's protobuf format, gzipped when `gzip`.
pub fn write(w: &mut impl Write, profile: &Profile<'_>, gzip: bool) -> io::Result<()> {
    let bytes = traced_profile(profile).encode_to_vec();
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(w, flate2::Compression::default());
        encoder.write_all(&bytes)?;
        encoder.finish()?;
        Ok(())
    } else {
        w.write_all(&bytes)
    }
}
