//! `kind: tls` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::TlsSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one tls probe.
pub async fn probe(spec: &TlsSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "tls probe not implemented yet",
    ))
}
