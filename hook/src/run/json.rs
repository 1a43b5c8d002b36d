//! The `checkdef run --json` document (schema in docs/ci.md): typed, like `plan --json`'s, so
//! that its fields cannot drift from the outcomes they describe. Fields serialise in the order
//! declared here; new fields come only with a new [`RUN_JSON_VERSION`].
use serde::Serialize;

use super::{RunReport, SegmentOutcome};
use crate::result::Status;

/// The `version` of the document.
pub const RUN_JSON_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct RunJson {
    pub version: u32,
    /// The commit checked (`null` for the work tree).
    pub commit: Option<String>,
    /// Ctrl-C or SIGTERM stopped the run; nothing partial was stored.
    pub interrupted: bool,
    pub segments: Vec<SegmentRunJson>,
    pub summary: SummaryJson,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentRunJson {
    pub name: String,
    pub status: Status,
    /// `local`, `remote` (a cached result) or `run`.
    pub source: &'static str,
    /// Time spent on it in this run (lookup or run), seconds.
    pub duration_s: f64,
    /// A cached result's original run time, seconds.
    pub original_duration_s: Option<f64>,
    pub exit_code: Option<i32>,
    /// Why it failed (`null` when it passed).
    pub reason: Option<String>,
    pub input_hash: crate::manifest::InputHash,
    pub store_path: String,
    pub signed_by: Option<String>,
    pub warnings: Vec<String>,
    /// For a segment that ran: `warm` (a child of the warm pytest server) or `process`
    /// (`null` for cached segments).
    pub runner: Option<&'static str>,
    /// Why a segment that allows the warm runner ran as a fresh process.
    pub runner_note: Option<String>,
    /// For a segment that ran: what changed since its most recent earlier local result
    /// (`null` when there is none, and for cached segments).
    pub explain: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryJson {
    pub passed: usize,
    pub failed: usize,
    pub ran: usize,
    pub cached: usize,
    pub seconds_saved: f64,
    pub wall_s: f64,
}

impl SegmentRunJson {
    fn new(s: &SegmentOutcome) -> SegmentRunJson {
        SegmentRunJson {
            name: s.name.clone(),
            status: s.status(),
            source: s.origin.as_str(),
            duration_s: s.duration_s,
            original_duration_s: s.original_duration_s,
            exit_code: s.exit_code(),
            reason: s.reason(),
            input_hash: s.input_hash,
            store_path: s.store_path.to_string(),
            signed_by: s.signed_by.clone(),
            warnings: s.warnings.clone(),
            runner: s.runner.map(crate::config::Runner::as_str),
            runner_note: s.runner_note.clone(),
            explain: None,
        }
    }
}

/// The document for `r`; `explain` gives the line for a segment that ran (see
/// `commands::explain::summary_line`).
pub fn run_json(r: &RunReport, explain: impl Fn(&SegmentOutcome) -> Option<String>) -> RunJson {
    RunJson {
        version: RUN_JSON_VERSION,
        commit: r.commit.clone(),
        interrupted: r.interrupted,
        segments: r
            .segments
            .iter()
            .map(|s| SegmentRunJson {
                explain: (s.origin == super::Origin::Run)
                    .then(|| explain(s))
                    .flatten(),
                ..SegmentRunJson::new(s)
            })
            .collect(),
        summary: SummaryJson {
            passed: r.passed(),
            failed: r.failed(),
            ran: r.ran(),
            cached: r.cached(),
            seconds_saved: r.seconds_saved(),
            wall_s: r.wall_s,
        },
    }
}
