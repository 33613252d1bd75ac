//! Reading probe outcomes in tests: `phase/reason` codes, the phase list, and a run with a
//! plain timeout and no proxy.

use std::time::Duration;

use egress_probe::config::ProbeSpec;
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};

/// `phase/reason` of a failed outcome, or `success`.
pub fn code(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "success".into())
}

/// The phases in the order they ran.
pub fn phases(o: &Outcome) -> Vec<Phase> {
    o.phases.iter().map(|p| p.phase).collect()
}

/// Runs `spec` once with `timeout` and no proxy.
pub async fn run(spec: &ProbeSpec, timeout: Duration) -> Outcome {
    probe::run(spec, &ProbeContext::with_timeout(timeout, None)).await
}
