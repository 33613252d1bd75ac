//! `kind: tcp` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::TcpSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one tcp probe.
pub async fn probe(spec: &TcpSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "tcp probe not implemented yet",
    ))
}
