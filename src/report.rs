//! `check` output: the versioned JSON report (read back by `diff`) and the table.

use serde::{Deserialize, Serialize};

use crate::probe::Outcome;

/// Version of the JSON report format; bump on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole `check --output json` document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema: u32,
    /// RFC 3339 time the check started.
    pub started_at: String,
    pub results: Vec<ProbeResult>,
}

/// One probe's line in a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeResult {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub outcome: Outcome,
}
