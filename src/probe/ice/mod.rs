//! `kind: ice`: the candidate gathering a WebRTC stack runs, with the webrtc-rs `webrtc-ice`
//! agent, against the configured STUN/TURN servers. Phases `gather` and, with
//! `connectivity: true`, `connectivity`.
//!
//! What a softphone experiences with UDP blocked is a gathering that yields only host
//! candidates, or times out, and a call that fails without a clear error. This probe says which
//! candidate types appeared (`detail.ice.candidates`), after how long (`first_arrival`), which
//! TURN server produced each relay candidate, and fails `gather/no_srflx`, `gather/no_relay` or
//! `gather/no_host` when an expected type is missing when gathering completes, or at the
//! deadline at the latest (never after it).
//!
//! Limits of webrtc-ice 0.17.2, reported rather than hidden (`detail.ice.unsupported`):
//! relay candidates only from `turn:` over UDP (not `turns:` nor `?transport=tcp`: use the
//! `turn` probe for TCP/TLS allocation), no ICE-TCP candidates, relay sockets IPv4 only, and a
//! failed allocation is only logged, so the probe re-asks the server once to learn its error
//! (`diagnose`). mDNS is disabled. Every agent is closed at the end of every run (`agent`).
//!
//! Submodules: `servers` (what the agent can use), `agent` (build, gather, release),
//! `connect` (the two-agent check through the relay), `diagnose` (the server's TURN error).

mod agent;
mod connect;
mod diagnose;
mod servers;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use webrtc_ice::agent::Agent;

use crate::config::{CandidateKind, IcePolicy, IceSpec};

use super::ProbeContext;
use crate::outcome::details::IceDetails;
use crate::outcome::{Failure, Outcome, Phase, Reason, Run};
pub use agent::HostInterfaces;
use agent::{AgentSetup, Gathering};
use servers::{ServerPlan, TurnUdp};

const KINDS: [CandidateKind; 4] = [
    CandidateKind::Host,
    CandidateKind::Srflx,
    CandidateKind::Prflx,
    CandidateKind::Relay,
];

/// Run-time choices that are not part of the probe's YAML (yet).
#[derive(Clone, Copy, Debug, Default)]
pub struct IceOptions {
    /// Where host candidates come from; tests and labs use loopback only.
    pub host_interfaces: HostInterfaces,
}

/// Runs one ice probe with host candidates from every interface.
pub async fn probe(spec: &IceSpec, ctx: &ProbeContext) -> Outcome {
    probe_with(spec, ctx, IceOptions::default()).await
}

/// Runs one ice probe with explicit [`IceOptions`].
pub async fn probe_with(spec: &IceSpec, ctx: &ProbeContext, opts: IceOptions) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let mut ice = IceDetails::default();
    let mut agents = Agents::default();
    let result = gather_and_check(&mut run, &mut ice, &mut agents, spec, opts).await;
    ice.released = agents.release_all(ctx.deadline).await;
    run.detail.ice = Some(ice);
    run.finish(result)
}

/// The agents of one run, with their gathering's completion signal, so every one is released.
#[derive(Default)]
struct Agents(Vec<(Arc<Agent>, Option<watch::Receiver<bool>>)>);

impl Agents {
    fn add(&mut self, agent: &Arc<Agent>) {
        self.0.push((Arc::clone(agent), None));
    }

    fn gathering(&mut self, agent: &Arc<Agent>, gathering: &Gathering) {
        if let Some(e) = self.0.iter_mut().find(|(a, _)| Arc::ptr_eq(a, agent)) {
            e.1 = Some(gathering.done.clone());
        }
    }

    /// Closes every agent; true when all closed inline.
    async fn release_all(self, deadline: Instant) -> bool {
        let all = self.0.into_iter().map(|(a, done)| agent::release(a, done, deadline));
        futures::future::join_all(all).await.into_iter().all(|ok| ok)
    }
}

async fn gather_and_check(
    run: &mut Run,
    ice: &mut IceDetails,
    agents: &mut Agents,
    spec: &IceSpec,
    opts: IceOptions,
) -> Result<(), Failure> {
    let deadline = run.deadline();
    let mut plan = servers::plan(&spec.servers, SystemTime::now());
    let network_types = servers::network_types(&spec.network_types, &mut plan.unsupported);
    ice.unsupported = plan.unsupported.clone();
    let expect = expected(spec, &plan);

    let setup = AgentSetup {
        urls: plan.agent_urls.clone(),
        network_types,
        relay_only: spec.policy == IcePolicy::Relay,
        interfaces: opts.host_interfaces,
    };
    let local = agent::build(setup, deadline).await.map_err(|f| f.at(Phase::Gather))?;
    agents.add(&local);
    let remote = if spec.connectivity {
        let setup = AgentSetup {
            urls: plan.agent_urls.iter().filter(|u| !u.username.is_empty()).cloned().collect(),
            network_types: vec![webrtc_ice::network_type::NetworkType::Udp4],
            relay_only: true,
            interfaces: opts.host_interfaces,
        };
        let remote = agent::build(setup, deadline).await.map_err(|f| f.at(Phase::Connectivity))?;
        agents.add(&remote);
        Some(remote)
    } else {
        None
    };

    // Gather. The remote (if any) gathers alongside; its wait belongs to `connectivity`.
    let mut gathering = agent::start(&local).map_err(|f| f.at(Phase::Gather))?;
    agents.gathering(&local, &gathering);
    let mut remote_gathering = match &remote {
        Some(r) => {
            let g = agent::start(r).map_err(|f| f.at(Phase::Connectivity))?;
            agents.gathering(r, &g);
            Some(g)
        }
        None => None,
    };
    let complete = gathering.collect(deadline).await;
    let gather_time = gathering.started.elapsed();
    run.record(Phase::Gather, gather_time);
    record(ice, &gathering, complete);
    ice.relay_servers = attribute_relays(&gathering, &plan.turn_udp, deadline).await;

    let silent = silent_turn_servers(&gathering, &plan.turn_udp, &ice.relay_servers);
    if complete {
        for s in silent {
            ice.server_errors.push(diagnose::allocate_error(s, deadline).await);
        }
    }
    check_expected(ice, &gathering, &expect, &plan, complete, gather_time)?;

    if let (Some(remote), Some(rg)) = (remote, remote_gathering.as_mut()) {
        let check = connect::check(&local, &gathering.arrivals, &remote, rg, deadline);
        let connected = run.phase(Phase::Connectivity, check).await?;
        ice.connected_after = Some(connected.after);
        ice.selected_pair = connected.selected_pair;
    }
    Ok(())
}

/// `expect` as configured; when empty: `relay` under `policy: relay`, else `srflx` if a server
/// can give one and `relay` if a TURN server is configured (usable or not).
fn expected(spec: &IceSpec, plan: &ServerPlan) -> Vec<CandidateKind> {
    if !spec.expect.is_empty() {
        return spec.expect.clone();
    }
    let any_turn = !plan.turn_udp.is_empty() || plan.unsupported_turn > 0;
    match spec.policy {
        IcePolicy::Relay => vec![CandidateKind::Relay],
        IcePolicy::All => {
            let mut v = vec![CandidateKind::Host];
            if plan.srflx_servers > 0 {
                v.push(CandidateKind::Srflx);
            }
            if any_turn {
                v.push(CandidateKind::Relay);
            }
            v
        }
    }
}

fn record(ice: &mut IceDetails, g: &Gathering, complete: bool) {
    ice.complete = complete;
    for kind in KINDS {
        ice.candidates.insert(kind.as_str().to_string(), g.count(kind) as u32);
        if let Some(first) = g.arrivals.iter().filter(|a| a.kind == kind).map(|a| a.at).min() {
            ice.first_arrival.insert(kind.as_str().to_string(), first);
        }
    }
}

/// Which TURN server produced each relay candidate: the only one configured, else the one
/// whose address is the relayed address's IP (webrtc-ice does not say; the candidate's related
/// address is the agent's own `0.0.0.0:port` socket).
async fn attribute_relays(g: &Gathering, turn: &[TurnUdp], deadline: Instant) -> Vec<String> {
    let relays: Vec<_> = g.arrivals.iter().filter(|a| a.kind == CandidateKind::Relay).collect();
    if relays.is_empty() {
        return Vec::new();
    }
    let mut server_ips: Vec<Vec<IpAddr>> = Vec::new();
    if turn.len() > 1 {
        for s in turn {
            let hp = s.url.host_port().to_string();
            let ips = match tokio::time::timeout_at(deadline, tokio::net::lookup_host(hp)).await {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                _ => Vec::new(),
            };
            server_ips.push(ips);
        }
    }
    relays
        .iter()
        .map(|r| {
            let addr = format!("{}:{}", r.address, r.port);
            if turn.len() == 1 {
                return format!("{addr} via {}", turn[0].url);
            }
            let ip = r.address.parse::<IpAddr>().ok();
            let matching: Vec<String> = turn
                .iter()
                .zip(&server_ips)
                .filter(|(_, ips)| ip.is_some_and(|ip| ips.contains(&ip)))
                .map(|(s, _)| s.url.to_string())
                .collect();
            match matching.len() {
                0 => format!("{addr} via an unidentified TURN server (relayed address is on none of their addresses)"),
                1 => format!("{addr} via {}", matching[0]),
                _ => format!("{addr} via one of {}", matching.join(", ")),
            }
        })
        .collect()
}

/// TURN/UDP servers that produced no relay candidate.
fn silent_turn_servers<'a>(g: &Gathering, turn: &'a [TurnUdp], relay_servers: &[String]) -> Vec<&'a TurnUdp> {
    let relays = g.count(CandidateKind::Relay);
    if relays >= turn.len() {
        return Vec::new();
    }
    turn.iter()
        .filter(|s| {
            let via = format!(" via {}", s.url);
            !relay_servers.iter().any(|r| r.ends_with(&via))
        })
        .collect()
}

fn check_expected(
    ice: &IceDetails,
    g: &Gathering,
    expect: &[CandidateKind],
    plan: &ServerPlan,
    complete: bool,
    gather_time: Duration,
) -> Result<(), Failure> {
    let missing: Vec<CandidateKind> = expect.iter().copied().filter(|k| g.count(*k) == 0).collect();
    let Some(&first) = missing.first() else {
        return Ok(());
    };
    let counts = KINDS
        .iter()
        .map(|k| format!("{}={}", k.as_str(), g.count(*k)))
        .collect::<Vec<_>>()
        .join(" ");
    let when = if complete {
        format!("gathering completed after {} ms ({counts})", gather_time.as_millis())
    } else {
        format!(
            "gathering had not completed when the probe timeout expired after {} ms ({counts})",
            gather_time.as_millis()
        )
    };
    let relay_unsupported = missing.contains(&CandidateKind::Relay) && plan.turn_udp.is_empty() && plan.unsupported_turn > 0;
    let (kind, reason) = if relay_unsupported {
        (CandidateKind::Relay, Reason::UnsupportedTransport)
    } else {
        let reason = match first {
            CandidateKind::Host => Reason::NoHost,
            CandidateKind::Srflx => Reason::NoSrflx,
            CandidateKind::Relay => Reason::NoRelay,
            // Peer-reflexive candidates appear only during connectivity checks.
            CandidateKind::Prflx => Reason::ExpectFailed,
        };
        (first, reason)
    };
    let why = match kind {
        CandidateKind::Relay if relay_unsupported => format!(
            "only servers webrtc-ice cannot allocate on could provide one: {}",
            ice.unsupported.join("; ")
        ),
        CandidateKind::Relay if plan.turn_udp.is_empty() => "no usable turn: server (UDP, with credentials) is configured".to_string(),
        CandidateKind::Relay if !ice.server_errors.is_empty() => {
            format!("TURN server configured but no relay; server said: {}", ice.server_errors.join("; "))
        }
        CandidateKind::Relay => {
            "TURN server configured but no relay: no Allocate succeeded over UDP (UDP to the TURN server dropped?)".into()
        }
        CandidateKind::Srflx if plan.srflx_servers == 0 => "no stun:/turn: server over UDP is configured".into(),
        CandidateKind::Srflx => "no STUN server answered a Binding request over UDP (UDP to the STUN/TURN servers dropped?)".into(),
        CandidateKind::Host => "no local interface gave a UDP host candidate for the configured network types".into(),
        CandidateKind::Prflx => "peer-reflexive candidates appear only during connectivity checks, never while gathering".into(),
    };
    let also = if missing.len() > 1 {
        format!(
            "; also missing: {}",
            missing
                .iter()
                .filter(|k| **k != kind)
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    Err(Failure::new(
        Phase::Gather,
        reason,
        format!("no {} candidate: {when}; {why}{also}", kind.as_str()),
    ))
}
