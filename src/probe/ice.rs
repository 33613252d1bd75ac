//! `kind: ice` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::IceSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one ice probe.
pub async fn probe(spec: &IceSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "ice probe not implemented yet",
    ))
}
