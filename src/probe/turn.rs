//! `kind: turn` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::TurnSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one turn probe.
pub async fn probe(spec: &TurnSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "turn probe not implemented yet",
    ))
}
