//! One webrtc-ice agent's life in a probe: build it, gather with per-candidate arrival times,
//! and release it (sockets and TURN allocations) within the deadline.
//!
//! Arrival times are taken inside the agent's `on_candidate` callback, so they measure the
//! agent, not our channel. webrtc-ice 0.17.2 cannot cancel a gathering in progress
//! (`gather_candidate_cancel` is a TODO), and a candidate that arrives after `close()` is added
//! to the closed agent and never closed: its socket stays open and a TURN allocation stays on
//! the server until its lifetime ends. So an agent whose gathering has not completed by the
//! deadline is closed in the background *after* its gathering completes (bounded by
//! [`GATHER_TAIL`], the longest webrtc-ice's own timeouts let it run); the outcome is not
//! delayed by it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use webrtc_ice::agent::agent_config::AgentConfig;
use webrtc_ice::agent::Agent;
use webrtc_ice::candidate::{Candidate, CandidateType};
use webrtc_ice::mdns::MulticastDnsMode;
use webrtc_ice::network_type::NetworkType;
use webrtc_ice::url::Url;

use crate::config::CandidateKind;
use crate::outcome::{Fault, Reason};

/// How long after the deadline `close()` may still run inline (under `probe::run`'s grace).
const CLOSE_GRACE: Duration = Duration::from_millis(100);
/// Connectivity-check pacing (RFC 8445 Ta).
const CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Longest a webrtc-ice gathering runs: DNS + two TURN transactions of 7 transmissions
/// (200 ms doubling, capped at 1.6 s) ≈ 16 s; a STUN Binding waits 5 s.
pub(crate) const GATHER_TAIL: Duration = Duration::from_secs(30);
/// Bound on `Agent::close()` itself (it only sends Refresh(0) without waiting).
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Which local interfaces host candidates come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostInterfaces {
    /// Every non-loopback interface, as a softphone does.
    #[default]
    All,
    /// Only 127.0.0.1/::1 (labs and tests: nothing is bound on real interfaces).
    LoopbackOnly,
}

/// What the agent is allowed to gather.
pub(crate) struct AgentSetup {
    pub urls: Vec<Url>,
    pub network_types: Vec<NetworkType>,
    pub relay_only: bool,
    pub interfaces: HostInterfaces,
}

/// A candidate as the probe records it (copied out of the agent's callback).
#[derive(Clone, Debug)]
pub(crate) struct Arrival {
    pub kind: CandidateKind,
    /// Since `gather_candidates()` was called.
    pub at: Duration,
    pub address: String,
    pub port: u16,
    /// `candidate:...` line, to hand to the other agent for connectivity checks.
    pub marshal: String,
}

/// Builds an agent with mDNS disabled (no multicast leaves a strict network).
pub(crate) async fn build(setup: AgentSetup, deadline: Instant) -> Result<Arc<Agent>, Fault> {
    let candidate_types = if setup.relay_only {
        vec![CandidateType::Relay]
    } else {
        vec![CandidateType::Host, CandidateType::ServerReflexive, CandidateType::Relay]
    };
    let mut config = AgentConfig {
        urls: setup.urls,
        network_types: setup.network_types,
        candidate_types,
        multicast_dns_mode: MulticastDnsMode::Disabled,
        // webrtc-ice waits up to 2 s before nominating a relay pair (pion's defaults); a probe
        // measures the path, so every pair may be nominated as soon as its check succeeds.
        host_acceptance_min_wait: Some(Duration::ZERO),
        srflx_acceptance_min_wait: Some(Duration::ZERO),
        prflx_acceptance_min_wait: Some(Duration::ZERO),
        relay_acceptance_min_wait: Some(Duration::ZERO),
        // Pace checks at RFC 8445's Ta (50 ms) like browsers, not webrtc-ice's 200 ms default.
        check_interval: CHECK_INTERVAL,
        ..Default::default()
    };
    if setup.interfaces == HostInterfaces::LoopbackOnly {
        config.include_loopback = true;
        config.interface_filter = Arc::new(Some(Box::new(|name: &str| name == "lo")));
        config.ip_filter = Arc::new(Some(Box::new(|ip: std::net::IpAddr| ip.is_loopback())));
    }
    match tokio::time::timeout_at(deadline, Agent::new(config)).await {
        Ok(Ok(agent)) => Ok(Arc::new(agent)),
        Ok(Err(e)) => Err(Fault::new(Reason::Config, format!("ICE agent could not be created: {e}"))),
        Err(_) => Err(Fault::new(
            Reason::Timeout,
            "ICE agent could not be created within the probe timeout",
        )),
    }
}

/// A running gathering: candidates arrive on `rx`; `None` means gathering completed.
pub(crate) struct Gathering {
    rx: mpsc::UnboundedReceiver<Option<Arrival>>,
    /// Becomes true when the agent reports gathering complete (also after we stop listening).
    pub done: watch::Receiver<bool>,
    pub arrivals: Vec<Arrival>,
    pub complete: bool,
    pub started: Instant,
}

/// Starts gathering on `agent`.
pub(crate) fn start(agent: &Agent) -> Result<Gathering, Fault> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (done_tx, done) = watch::channel(false);
    let started = Instant::now();
    agent.on_candidate(Box::new(move |c: Option<Arc<dyn Candidate + Send + Sync>>| {
        let at = started.elapsed();
        match c {
            Some(c) => {
                if let Some(a) = arrival(&*c, at) {
                    let _ = tx.send(Some(a));
                }
            }
            None => {
                let _ = done_tx.send(true);
                let _ = tx.send(None);
            }
        }
        Box::pin(async {})
    }));
    agent
        .gather_candidates()
        .map_err(|e| Fault::new(Reason::Io, format!("ICE gathering could not start: {e}")))?;
    Ok(Gathering {
        rx,
        done,
        arrivals: Vec::new(),
        complete: false,
        started,
    })
}

fn arrival(c: &(dyn Candidate + Send + Sync), at: Duration) -> Option<Arrival> {
    let kind = match c.candidate_type() {
        CandidateType::Host => CandidateKind::Host,
        CandidateType::ServerReflexive => CandidateKind::Srflx,
        CandidateType::PeerReflexive => CandidateKind::Prflx,
        CandidateType::Relay => CandidateKind::Relay,
        CandidateType::Unspecified => return None,
    };
    Some(Arrival {
        kind,
        at,
        address: c.address(),
        port: c.port(),
        marshal: c.marshal(),
    })
}

/// What [`Gathering::next`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Candidate,
    Complete,
    Deadline,
}

impl Gathering {
    /// Collects candidates until gathering completes or `deadline`; returns whether it completed.
    pub async fn collect(&mut self, deadline: Instant) -> bool {
        while self.next(deadline).await == Step::Candidate {}
        self.complete
    }

    /// Waits for the next candidate (recorded in `arrivals`), completion, or `deadline`.
    /// Cancel-safe: a cancelled call loses no candidate.
    pub async fn next(&mut self, deadline: Instant) -> Step {
        if self.complete {
            return Step::Complete;
        }
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(Some(Some(a))) => {
                self.arrivals.push(a);
                Step::Candidate
            }
            // `None` candidate: complete. A closed channel means the agent went away.
            Ok(Some(None)) | Ok(None) => {
                self.complete = true;
                Step::Complete
            }
            Err(_) => Step::Deadline,
        }
    }

    /// How many candidates of `kind` arrived.
    pub fn count(&self, kind: CandidateKind) -> usize {
        self.arrivals.iter().filter(|a| a.kind == kind).count()
    }
}

/// Closes `agent` (its sockets and TURN allocations: Refresh lifetime 0). If its gathering
/// completed (or never started: `done` is `None`), the close runs inline until the deadline
/// plus a short grace and continues in the background past that; otherwise the agent is closed
/// in the background once gathering completes. Returns whether the close finished inline.
pub(crate) async fn release(agent: Arc<Agent>, done: Option<watch::Receiver<bool>>, deadline: Instant) -> bool {
    match done {
        Some(mut done) if !*done.borrow() => {
            crate::probe::cleanup::spawn(async move {
                let _ = tokio::time::timeout(GATHER_TAIL, done.wait_for(|d| *d)).await;
                let _ = tokio::time::timeout(CLOSE_BOUND, agent.close()).await;
            });
            false
        }
        _ => {
            let closing = tokio::spawn(async move {
                let _ = tokio::time::timeout(CLOSE_BOUND, agent.close()).await;
            });
            let bound = deadline.max(Instant::now()) + CLOSE_GRACE;
            matches!(tokio::time::timeout_at(bound, closing).await, Ok(Ok(())))
        }
    }
}
