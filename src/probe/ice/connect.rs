//! `connectivity: true`: a full ICE connectivity check between the probe's agent and a second,
//! relay-only local agent (the "remote"), candidates and ufrag/pwd exchanged in-process.
//!
//! The remote can only be reached through its TURN allocation, so a `Connected` state proves
//! the relayed path carries STUN checks end to end (permissions, relaying, responses), which
//! gathering alone does not.
//!
//! **The selected pair** is reported by candidate types and protocols only (`host -> relay`,
//! `udp`), never by address. **Its RTT** is timed by us over the connection the agents
//! return: [`RTT_SAMPLES`] small datagrams from the local agent over the selected pair, each
//! echoed by the remote agent, [`RTT_PACING`] apart. That is a media-like round trip over the
//! exact path a call would take (through the TURN relay), in user space on both ends. Both
//! agents run here, so each round trip crosses the client↔TURN leg four times (out to the
//! relay, back to the remote agent, out again, back to us) and twice the relay itself: it is
//! about twice the RTT a call to a far peer would see on that leg, not a peer-to-peer figure.
//! The sampling is capped at [`RTT_BUDGET`] after `Connected` and counts inside the
//! `connectivity` phase's duration (`connected_after` stops at `Connected`); whatever
//! happens during it, connectivity stays proven (loss is counted, never a failure), and a
//! pair with no answered sample reports no RTT rather than 0 ms.
//! webrtc-ice 0.17.2 cannot give it: its `get_candidate_pairs_stats()` fills only the ids,
//! state and nomination; `current_round_trip_time` and `total_round_trip_time` stay 0.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc_ice::agent::Agent;
use webrtc_ice::candidate::candidate_base::unmarshal_candidate;
use webrtc_ice::candidate::{Candidate, CandidateType};

use webrtc_ice::network_type::NetworkType;
use webrtc_util::Conn;

use super::agent::{Arrival, Gathering};
use crate::config::CandidateKind;
use crate::outcome::details::{IcePair, RttStats};
use crate::outcome::{Fault, Reason};

/// Datagrams timed over the selected pair once it connected.
pub(crate) const RTT_SAMPLES: u32 = 5;
/// Gap between them.
const RTT_PACING: Duration = Duration::from_millis(20);
/// How long one waits for its echo (never past the budget); unanswered counts as lost.
const RTT_WAIT: Duration = Duration::from_millis(250);
/// Most time the RTT sampling adds to the connectivity phase.
pub(crate) const RTT_BUDGET: Duration = Duration::from_millis(300);
/// Magic at the start of an RTT datagram.
const RTT_MAGIC: &[u8; 4] = b"EPRT";

/// What the check established.
pub(crate) struct Connected {
    /// From the start of the checks (dial/accept) to the local agent's `Connected`.
    pub after: Duration,
    /// `local_type -> remote_type`, e.g. `host -> relay`.
    pub selected_pair: Option<String>,
    /// The selected pair's types and protocols, and its RTT.
    pub pair: Option<IcePair>,
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
        (r, started.elapsed())
    };
    let accept = async { remote.accept(cancel_remote_rx, local_ufrag, local_pwd).await };
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
    let local_conn = dialed.map_err(|e| Fault::new(Reason::Io, format!("local agent (controlling) failed: {e}")))?;
    let remote_conn = accepted.map_err(|e| Fault::new(Reason::Io, format!("remote agent (controlled) failed: {e}")))?;
    let selected = local.get_selected_candidate_pair();
    let selected_pair = selected.as_ref().map(|p| {
        format!(
            "{} -> {}",
            type_word(p.local.candidate_type()),
            type_word(p.remote.candidate_type())
        )
    });
    // Ends short of the deadline: connectivity is proven and must not read as a timeout.
    let rtt_until = deadline
        .checked_sub(super::stream::RTT_MARGIN)
        .unwrap_or(deadline)
        .min(Instant::now() + RTT_BUDGET);
    let rtt = echo_rtt(local_conn.as_ref(), remote_conn.as_ref(), rtt_until).await;
    let pair = selected.map(|p| {
        let (lt, rt) = (p.local.candidate_type(), p.remote.candidate_type());
        IcePair {
            local_type: type_word(lt).into(),
            local_protocol: protocol_word(p.local.network_type()).into(),
            remote_type: type_word(rt).into(),
            remote_protocol: protocol_word(p.remote.network_type()).into(),
            // webrtc-ice relays only over TURN/UDP: a pair with a relay end goes through one.
            relay_protocol: (lt == CandidateType::Relay || rt == CandidateType::Relay).then(|| "udp".to_string()),
            // Nothing answered: no RTT, never a 0 ms one.
            rtt: (rtt.received > 0).then_some(rtt),
            rtt_method: "data_echo".into(),
        }
    });
    Ok(Connected {
        after,
        selected_pair,
        pair,
    })
}

/// Times [`RTT_SAMPLES`] datagrams sent by `local` and echoed by `remote` over the selected
/// pair. Loss (no echo within [`RTT_WAIT`]) is counted, never fatal: connectivity is proven.
async fn echo_rtt<L: Conn + ?Sized, R: Conn + ?Sized>(local: &L, remote: &R, deadline: Instant) -> RttStats {
    let echo = async {
        let mut buf = [0u8; 64];
        loop {
            match remote.recv(&mut buf).await {
                Ok(n) => {
                    let _ = remote.send(&buf[..n]).await;
                }
                // The connection closed: nothing more to echo.
                Err(_) => std::future::pending::<()>().await,
            }
        }
    };
    let ping = async {
        let mut sent = 0u32;
        let mut samples = Vec::new();
        let mut buf = [0u8; 64];
        for seq in 0..RTT_SAMPLES {
            if seq > 0 {
                if Instant::now() + RTT_PACING >= deadline {
                    break;
                }
                tokio::time::sleep(RTT_PACING).await;
            } else if Instant::now() >= deadline {
                break;
            }
            let mut d = [0u8; 8];
            d[..4].copy_from_slice(RTT_MAGIC);
            d[4..].copy_from_slice(&seq.to_be_bytes());
            let at = Instant::now();
            if local.send(&d).await.is_err() {
                break;
            }
            sent += 1;
            let until = (at + RTT_WAIT).min(deadline);
            let answered = tokio::time::timeout_at(until, async {
                loop {
                    match local.recv(&mut buf).await {
                        Ok(n) if buf[..n] == d => return true,
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await;
            if answered == Ok(true) {
                samples.push(at.elapsed());
            }
        }
        RttStats::from_samples(sent, samples)
    };
    tokio::select! {
        stats = ping => stats,
        () = echo => RttStats::default(),
    }
}

fn protocol_word(n: NetworkType) -> &'static str {
    match n {
        NetworkType::Udp4 | NetworkType::Udp6 => "udp",
        NetworkType::Tcp4 | NetworkType::Tcp6 => "tcp",
        NetworkType::Unspecified => "unspecified",
    }
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
