//! Profile reports: cprof, eprof and fprof tables, sample profiles' top
//! functions and pprof files, in the shapes OTP users
//! read every day, latency histograms, JSON, folded stacks and flamegraphs.
//!
//! Every renderer writes to any [`std::io::Write`], so tests render into a
//! `Vec<u8>` and compare with golden files.
//!
//! Around the renderers: [`session`] runs a profile on a running node
//! ([`profile_node`]) or on a command from its start to its exit
//! ([`profile_command`], the command's agent connecting back), and [`tc`]
//! times a command's runs like `:timer.tc`. [`exit`] maps how a command
//! ended to the exit code a shell reports.
//!
//! ```
//! use nodetrace_profiler::{Profile, ReportOptions, write_text};
//! use nodetrace_protocol::{ProfileMode, ProfileSnapshot};
//!
//! let snapshot = ProfileSnapshot::default();
//! let profile = Profile { mode: ProfileMode::Eprof, node: "todo@localhost", snapshot: &snapshot, callsites: &[], complete: true };
//! let mut out = Vec::new();
//! write_text(&mut out, &profile, &ReportOptions::default()).unwrap();
//! assert!(String::from_utf8(out).unwrap().contains("FUNCTION"));
//! ```

pub mod exit;
mod flame;
mod json;
mod report;
pub mod sample;
pub mod session;
mod speedscope;
pub mod tc;
mod traced_pprof;

pub use flame::{FlameError, write_flamegraph, write_folded};
pub use json::write_json;
pub use report::{ReportOptions, Sort, write_text};
pub use sample::write_pprof;
pub use session::{
    Interrupt, InterruptHandler, Interrupts, Outputs, ProfileError, ProfileRequest,
    profile_command, profile_node,
};

use nodetrace_protocol::{CallsiteInfo, ProfileMode, ProfileSnapshot};

/// What a report is made of.
#[derive(Debug, Clone, Copy)]
pub struct Profile<'a> {
    /// The profiler that measured it.
    pub mode: ProfileMode,
    /// The node it measured.
    pub node: &'a str,
    /// The figures.
    pub snapshot: &'a ProfileSnapshot,
    /// The node's callsites, which the figures refer to by id.
    pub callsites: &'a [CallsiteInfo],
    /// False when these are the last periodic figures of a node that died.
    pub complete: bool,
}

impl Profile<'_> {
    /// `module:function/arity` of callsite `id`.
    pub fn name(&self, id: u32) -> String {
        self.callsites
            .get(id as usize)
            .map_or_else(|| format!("<callsite {id}>"), CallsiteInfo::mfa)
    }

    /// The module of callsite `id`.
    pub fn module(&self, id: u32) -> &str {
        self.callsites
            .get(id as usize)
            .map_or("<unknown>", |c| c.module.as_str())
    }
}
