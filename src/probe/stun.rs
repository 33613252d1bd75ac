//! `kind: stun` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::StunSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one stun probe.
pub async fn probe(spec: &StunSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "stun probe not implemented yet",
    ))
}
