//! `kind: dns` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::DnsSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one dns probe.
pub async fn probe(spec: &DnsSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "dns probe not implemented yet",
    ))
}
