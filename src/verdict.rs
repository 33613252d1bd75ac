//! Plain-language verdicts derived from a check's outcomes. PROVISIONAL stub (issue 6).

use crate::report::ProbeResult;

/// Short sentences for a network team, e.g. "UDP to 3478 is dropped ... TURN over TLS on 443 works".
pub fn verdicts(results: &[ProbeResult]) -> Vec<String> {
    let _ = results;
    Vec::new()
}
