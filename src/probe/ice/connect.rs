//! `connectivity: true`: a full ICE connectivity check between the probe's agent and a second,
//! relay-only local agent (the "remote"), candidates and ufrag/pwd exchanged in-process.
//!
//! The remote can only be reached through its TURN allocation, so a `Connected` state proves
//! the relayed path carries STUN checks end to end (permissions, relaying, responses), which
//! gathering alone does not.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc_ice::agent::Agent;
use webrtc_ice::candidate::candidate_base::unmarshal_candidate;
use webrtc_ice::candidate::{Candidate, CandidateType};

use super::agent::{Arrival, Gathering};
use crate::config::CandidateKind;
use crate::outcome::{Fault, Reason};

/// What the check established.
pub(crate) struct Connected {
    /// From the start of the checks (dial/accept) to the local agent's `Connected`.
    pub after: Duration,
    /// `local_type -> remote_type`, e.g. `host -> relay`.
    pub selected_pair: Option<String>,
}

/// Waits for the remote's gathering, exchanges candidates and credentials, and runs the
/// checks with the local agent controlling. Bounded by `deadline`.
pub(crate) async fn check(
    local: &Arc<Agent>,
    local_candidates: &[Arrival],
    remote: &Arc<Agent>,
    remote_gathering: &mut Gathering,
    deadline: Instant,
) -> Result<Connected, Fault> {
    let complete = remote_gathering.collect(deadline).await;
    if remote_gathering.count(CandidateKind::Relay) == 0 {
        let why = if complete {
            "its gathering completed without one"
        } else {
            "none arrived within the probe timeout"
        };
        return Err(Fault::new(
            Reason::NoRelay,
            format!("the remote (relay-only) agent got no relay candidate: {why}"),
        ));
    }
    add_all(remote, local_candidates)?;
    add_all(local, &remote_gathering.arrivals)?;
    let (local_ufrag, local_pwd) = local.get_local_user_credentials().await;
    let (remote_ufrag, remote_pwd) = remote.get_local_user_credentials().await;

    // Dropping a cancel sender cancels dial/accept, so both stay alive until the checks end.
    let (_cancel_local, cancel_local_rx) = mpsc::channel(1);
    let (_cancel_remote, cancel_remote_rx) = mpsc::channel(1);
    let started = Instant::now();
    let dial = async {
        let r = local.dial(cancel_local_rx, remote_ufrag, remote_pwd).await;
        (r.map(|_| ()), started.elapsed())
    };
    let accept = async { remote.accept(cancel_remote_rx, local_ufrag, local_pwd).await.map(|_| ()) };
    let ((dialed, after), accepted) = match tokio::time::timeout_at(deadline, futures::future::join(dial, accept)).await {
        Ok(r) => r,
        Err(_) => {
            return Err(Fault::new(
                Reason::Timeout,
                format!(
                    "ICE checks through the relay did not reach Connected within the probe timeout ({} ms of checks)",
                    started.elapsed().as_millis()
                ),
            ))
        }
    };
    dialed.map_err(|e| Fault::new(Reason::Io, format!("local agent (controlling) failed: {e}")))?;
    accepted.map_err(|e| Fault::new(Reason::Io, format!("remote agent (controlled) failed: {e}")))?;
    let selected_pair = local.get_selected_candidate_pair().map(|p| {
        format!(
            "{} -> {}",
            type_word(p.local.candidate_type()),
            type_word(p.remote.candidate_type())
        )
    });
    Ok(Connected { after, selected_pair })
}

fn add_all(agent: &Agent, candidates: &[Arrival]) -> Result<(), Fault> {
    for a in candidates {
        let c = unmarshal_candidate(&a.marshal).map_err(|e| {
            Fault::new(
                Reason::Io,
                format!("candidate {}:{} could not be exchanged: {e}", a.address, a.port),
            )
        })?;
        let c: Arc<dyn Candidate + Send + Sync> = Arc::new(c);
        agent
            .add_remote_candidate(&c)
            .map_err(|e| Fault::new(Reason::Io, format!("candidate {}:{} was refused: {e}", a.address, a.port)))?;
    }
    Ok(())
}

fn type_word(t: CandidateType) -> &'static str {
    match t {
        CandidateType::Host => "host",
        CandidateType::ServerReflexive => "srflx",
        CandidateType::PeerReflexive => "prflx",
        CandidateType::Relay => "relay",
        CandidateType::Unspecified => "unspecified",
    }
}
