//! `kind: websocket` probe. PROVISIONAL: not implemented yet (tracked by its issue).

use crate::config::WebsocketSpec;

use super::{Failure, Outcome, Phase, ProbeContext, Reason};

/// Runs one websocket probe.
pub async fn probe(spec: &WebsocketSpec, ctx: &ProbeContext) -> Outcome {
    let _ = (spec, ctx);
    Outcome::failed_before_start(Failure::new(
        Phase::Connect,
        Reason::UnsupportedTransport,
        "websocket probe not implemented yet",
    ))
}
