//! `kind: http` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::HttpSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one http probe.
pub async fn probe(spec: &HttpSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "http probe not implemented yet",
    ))
}
