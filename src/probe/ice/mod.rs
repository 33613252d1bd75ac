//! `kind: ice`: the candidate gathering a browser's WebRTC stack runs, against the configured
//! STUN/TURN servers. Phases `gather` and, with `connectivity: true`, `connectivity`.
//!
//! What a softphone experiences with UDP blocked is a gathering that yields only host
//! candidates, or a relay over TURN/TLS on 443 and nothing else. This probe says which
//! candidate types appeared (`detail.ice.candidates`), after how long (`first_arrival`), which
//! TURN server produced each relay candidate and over which relay protocol (`relays`,
//! `relay_protocols`, `first_relay`: `udp`, `tcp`, `tls`, as Chromium's `relayProtocol`), and
//! fails `gather/no_srflx`, `gather/no_relay` or `gather/no_host` when an expected type is
//! missing when gathering completes, or at the deadline at the latest (never after it).
//!
//! Host, srflx and TURN/UDP relay candidates come from the webrtc-rs `webrtc-ice` 0.17.2 agent.
//! That agent cannot allocate over TURN/TCP or TURN/TLS, so relay candidates over `turn:
//! ...?transport=tcp` and `turns:` servers come from the project's own TURN client, started at
//! the same instant and reported alongside (`stream`, where the choice is argued); with
//! `connectivity: true` the check runs through every relay protocol that gave a candidate: the
//! agent-to-agent ICE check for UDP, a relayed STUN Binding transaction between two allocations
//! for TCP/TLS; it passes when one relay path carries it, as a browser's call does. The
//! selected pair (the agent's, else the TCP/TLS relay path that answered first) is reported
//! by candidate types and protocols in `detail.ice.selected`, never by address, with its
//! round-trip time; `rtt_via` has the RTT through each relay protocol that connected
//! (`connect` and `stream` say how each is timed).
//!
//! Other limits of webrtc-ice, reported rather than hidden (`detail.ice.unsupported`): no
//! ICE-TCP candidates, relay sockets IPv4 only, no srflx over `stuns:`/TCP, and a failed UDP
//! allocation is only logged, so the probe re-asks the server once to learn its error
//! (`diagnose`). mDNS is disabled. Every agent is closed and every TCP/TLS allocation released
//! with Refresh(lifetime 0) at the end of every run, failures and deadlines included.
//!
//! Submodules: `servers` (who gathers what), `agent` (build, gather, release), `stream` (relays
//! over TURN/TCP and TURN/TLS), `connect` (the two-agent check through a UDP relay),
//! `diagnose` (the server's TURN error).

mod agent;
mod connect;
mod diagnose;
mod servers;
mod stream;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use webrtc_ice::agent::Agent;

use crate::config::{CandidateKind, IcePolicy, IceSpec};

use super::ProbeContext;
use crate::outcome::details::{IceDetails, IcePair, IceRelay, RttStats};
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};
pub use agent::HostInterfaces;
use agent::{AgentSetup, Gathering};
use servers::{ServerPlan, TurnServer};
use stream::{Attempt, Dial, Remote};

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
    let mut streams = Streams::default();
    let result = gather_and_check(&mut run, &mut ice, &mut agents, &mut streams, spec, ctx, opts).await;
    let (agents_released, streams_released) = futures::join!(
        agents.release_all(ctx.deadline),
        stream::release(streams.take_clients(), ctx.deadline)
    );
    ice.released = agents_released && streams_released;
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

/// The TURN/TCP and TURN/TLS clients of one run (gathering and the remote sides of checks),
/// kept here so every allocation is released whatever cut the run short.
#[derive(Default)]
struct Streams {
    attempts: Vec<Attempt>,
    remotes: Vec<Remote>,
}

impl Streams {
    /// Every client opened so far (leaving none behind).
    fn take_clients(&mut self) -> Vec<crate::probe::turn::TurnClient> {
        let gathered = std::mem::take(&mut self.attempts).into_iter().filter_map(|a| a.client);
        let remotes = std::mem::take(&mut self.remotes).into_iter().filter_map(|r| r.client);
        gathered.chain(remotes).collect()
    }
}

impl Drop for Streams {
    /// A run dropped before its release (the daemon cancelling it at shutdown) still releases
    /// its allocations, in the background.
    fn drop(&mut self) {
        let clients = self.take_clients();
        if clients.iter().any(|c| c.needs_deallocate()) && tokio::runtime::Handle::try_current().is_ok() {
            drop(stream::spawn_release(clients)); // nobody waits for the answer
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn gather_and_check(
    run: &mut Run,
    ice: &mut IceDetails,
    agents: &mut Agents,
    streams: &mut Streams,
    spec: &IceSpec,
    ctx: &ProbeContext,
    opts: IceOptions,
) -> Result<(), Failure> {
    let deadline = run.deadline();
    let mut plan = servers::plan(&spec.servers, SystemTime::now());
    let network_types = servers::network_types(&spec.network_types, &mut plan.unsupported);
    ice.unsupported = plan.unsupported.clone();
    let expect = expected(spec, &plan);
    streams.attempts = plan.turn_stream.iter().cloned().map(Attempt::new).collect();
    let dial = Dial {
        tls: &spec.tls,
        proxy: None,
    };

    let setup = AgentSetup {
        urls: plan.agent_urls.clone(),
        network_types,
        relay_only: spec.policy == IcePolicy::Relay,
        interfaces: opts.host_interfaces,
    };
    let local = agent::build(setup, deadline).await.map_err(|f| f.at(Phase::Gather))?;
    agents.add(&local);
    // The remote agent checks UDP relays; it is only needed when a TURN/UDP server is there.
    let remote = if spec.connectivity && !plan.turn_udp.is_empty() {
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

    // Gather: the agent (host, srflx, relay over UDP) and our TURN/TCP/TLS allocations start
    // together. The remote (if any) gathers alongside; its wait belongs to `connectivity`.
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
    let started = gathering.started;
    let proxies: Vec<_> = streams.attempts.iter().map(|a| ctx.proxy_for(&a.server.url.host_port())).collect();
    let (granted, mut granted_rx) = mpsc::unbounded_channel();
    let (mut agent_done, mut streams_done, mut stream_relays) = (false, false, 0usize);
    {
        let stream_gathering = stream::gather(&mut streams.attempts, &proxies, &spec.tls, started, deadline, granted);
        tokio::pin!(stream_gathering);
        // With connectivity, checks start once every expected type is there and the rest had
        // SETTLE to arrive (trickle ICE, as browsers do), so a dropped UDP allocation that
        // retransmits until the deadline does not eat the time the checks need.
        let mut settle_at: Option<Instant> = None;
        while !(agent_done && streams_done) {
            if spec.connectivity && settle_at.is_none() && satisfied(&expect, &gathering, stream_relays) {
                settle_at = Some(Instant::now() + SETTLE);
            }
            let stop = settle_at.map_or(deadline, |s| s.min(deadline));
            tokio::select! {
                () = &mut stream_gathering, if !streams_done => streams_done = true,
                Some(()) = granted_rx.recv() => stream_relays += 1,
                step = gathering.next(stop), if !agent_done => {
                    match step {
                        agent::Step::Candidate => {}
                        agent::Step::Complete => agent_done = true,
                        agent::Step::Deadline => break,
                    }
                }
                () = tokio::time::sleep_until(stop) => break,
            }
        }
    }
    let agent_complete = gathering.complete;
    let gather_time = started.elapsed();
    run.record(Phase::Gather, gather_time);
    let complete = agent_complete && streams.attempts.iter().all(|a| a.result.is_some());
    let udp_relays = attribute_relays(&gathering, &plan.turn_udp, deadline).await;
    record(ice, &gathering, &udp_relays, &streams.attempts, &plan, complete);

    let silent = silent_turn_servers(&gathering, &plan.turn_udp, &ice.relay_servers);
    if agent_complete {
        for s in silent {
            ice.server_errors.push(diagnose::allocate_error(s, deadline).await);
        }
    }
    for a in &streams.attempts {
        match &a.result {
            Some(Err(f)) => ice.server_errors.push(format!("{}: {}: {}", a.server.url, f.code(), f.message)),
            None => ice
                .server_errors
                .push(format!("{}: no answer to Allocate before gathering ended", a.server.url)),
            Some(Ok(_)) => {}
        }
    }
    check_expected(ice, &expect, &plan, complete, gather_time)?;

    if spec.connectivity {
        let run_agent = gathering.count(CandidateKind::Relay) > 0 || !streams.attempts.iter().any(|a| a.relay().is_some());
        // One check per relay protocol: the first server of that protocol that gave a relay.
        let mut seen: Vec<&'static str> = Vec::new();
        let chosen: Vec<&mut Attempt> = streams
            .attempts
            .iter_mut()
            .filter(|a| {
                let first = a.relay().is_some() && !seen.contains(&a.protocol);
                if first {
                    seen.push(a.protocol);
                }
                first
            })
            .collect();
        streams.remotes = chosen.iter().map(|_| Remote::default()).collect();
        let remotes = streams.remotes.iter_mut();
        let local_arrivals = &gathering.arrivals;
        let checks = async {
            let agent_check = async {
                match (&remote, remote_gathering.as_mut()) {
                    (Some(r), Some(rg)) if run_agent => Some(connect::check(&local, local_arrivals, r, rg, deadline).await),
                    _ => None,
                }
            };
            let stream_checks = futures::future::join_all(chosen.into_iter().zip(remotes).map(|(a, r)| async {
                let proxy = if a.peer.is_some() {
                    None
                } else {
                    ctx.proxy_for(&a.server.url.host_port())
                };
                let protocol = a.protocol;
                (protocol, stream::check(a, r, Dial { proxy, ..dial }, deadline).await)
            }));
            let (agent_result, stream_results) = futures::join!(agent_check, stream_checks);
            combine(agent_result, stream_results)
        };
        let connected = run.phase(Phase::Connectivity, checks).await?;
        ice.connected_after = Some(connected.after);
        ice.selected_pair = connected.selected_pair;
        ice.selected = connected.selected;
        ice.connected_via = connected.via;
        ice.rtt_via = connected.rtt_via;
    }
    Ok(())
}

/// How long, with connectivity, gathering goes on once every expected type arrived.
const SETTLE: Duration = Duration::from_millis(300);

/// Whether every expected candidate type has arrived (relays: the agent's or ours).
fn satisfied(expect: &[CandidateKind], g: &Gathering, stream_relays: usize) -> bool {
    expect.iter().all(|k| match k {
        CandidateKind::Relay => g.count(*k) + stream_relays > 0,
        _ => g.count(*k) > 0,
    })
}

/// What the connectivity phase established over all relay paths.
struct Connectivity {
    after: Duration,
    selected_pair: Option<String>,
    selected: Option<IcePair>,
    via: BTreeMap<String, Duration>,
    rtt_via: BTreeMap<String, RttStats>,
}

/// Passes when one relay path connected (a call needs one); otherwise fails with the first
/// path's reason and every path's message. The selected pair is the agent's when it
/// connected (what a browser would nominate), else the TURN/TCP or TURN/TLS relay path that
/// answered first.
fn combine(
    agent: Option<Result<connect::Connected, Fault>>,
    streams: Vec<(&'static str, Result<stream::Checked, Fault>)>,
) -> Result<Connectivity, Fault> {
    let mut via = BTreeMap::new();
    let mut rtt_via = BTreeMap::new();
    let mut faults: Vec<(&'static str, Fault)> = Vec::new();
    let mut selected_pair = None;
    let mut selected = None;
    let mut after: Option<Duration> = None;
    match agent {
        Some(Ok(c)) => {
            via.insert("udp".to_string(), c.after);
            if let Some(rtt) = c.pair.as_ref().and_then(|p| p.rtt.clone()) {
                rtt_via.insert("udp".to_string(), rtt);
            }
            selected_pair = c.selected_pair;
            selected = c.pair;
            after = Some(c.after);
        }
        Some(Err(f)) => faults.push(("udp", f)),
        None => {}
    }
    let mut fastest_stream: Option<(Duration, IcePair)> = None;
    for (protocol, r) in streams {
        match r {
            Ok(c) => {
                via.insert(protocol.to_string(), c.after);
                // Nothing answered during the sampling: no RTT, never a 0 ms one.
                let rtt = (c.rtt.received > 0).then_some(c.rtt);
                if let Some(r) = &rtt {
                    rtt_via.insert(protocol.to_string(), r.clone());
                }
                if fastest_stream.as_ref().is_none_or(|(a, _)| c.after < *a) {
                    let pair = IcePair {
                        local_type: "relay".into(),
                        local_protocol: "udp".into(),
                        remote_type: "relay".into(),
                        remote_protocol: "udp".into(),
                        relay_protocol: Some(protocol.to_string()),
                        rtt,
                        rtt_method: "stun_binding".into(),
                    };
                    fastest_stream = Some((c.after, pair));
                }
            }
            Err(f) => faults.push((protocol, f)),
        }
    }
    if after.is_none() {
        if let Some((d, pair)) = fastest_stream {
            after = Some(d);
            selected_pair = Some("relay -> relay".to_string());
            selected = Some(pair);
        }
    }
    if let Some(after) = after {
        return Ok(Connectivity {
            after,
            selected_pair,
            selected,
            via,
            rtt_via,
        });
    }
    let Some((_, first)) = faults.first() else {
        return Err(Fault::new(Reason::NoRelay, "no relay candidate to check connectivity through"));
    };
    let reason = first.reason.clone();
    let message = if faults.len() == 1 {
        first.message.clone()
    } else {
        faults
            .iter()
            .map(|(p, f)| format!("through the {p} relay: {}", f.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Err(Fault::new(reason, message))
}

/// `expect` as configured; when empty: `relay` under `policy: relay`, else `srflx` if a server
/// can give one and `relay` if a TURN server is configured (usable or not).
fn expected(spec: &IceSpec, plan: &ServerPlan) -> Vec<CandidateKind> {
    if !spec.expect.is_empty() {
        return spec.expect.clone();
    }
    let any_turn = !plan.turn_udp.is_empty() || !plan.turn_stream.is_empty();
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

/// Counts and first arrivals per candidate type (relay: the agent's UDP relays and ours over
/// TCP/TLS), and per relay protocol.
fn record(ice: &mut IceDetails, g: &Gathering, udp_relays: &[(String, String)], attempts: &[Attempt], plan: &ServerPlan, complete: bool) {
    ice.complete = complete;
    for kind in KINDS {
        let mut count = g.count(kind) as u32;
        let mut first = g.arrivals.iter().filter(|a| a.kind == kind).map(|a| a.at).min();
        if kind == CandidateKind::Relay {
            for (_, at) in attempts.iter().filter_map(Attempt::relay) {
                count += 1;
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        ice.candidates.insert(kind.as_str().to_string(), count);
        if let Some(first) = first {
            ice.first_arrival.insert(kind.as_str().to_string(), first);
        }
    }
    let agent_relays = g.arrivals.iter().filter(|a| a.kind == CandidateKind::Relay);
    for (a, (address, server)) in agent_relays.zip(udp_relays) {
        ice.relays.push(IceRelay {
            protocol: "udp".into(),
            address: address.clone(),
            server: server.clone(),
            at: a.at,
        });
    }
    for a in attempts {
        if let Some((alloc, at)) = a.relay() {
            ice.relays.push(IceRelay {
                protocol: a.protocol.into(),
                address: alloc.relayed.to_string(),
                server: a.server.url.to_string(),
                at,
            });
        }
    }
    ice.relays.sort_by_key(|r| r.at);
    ice.relay_servers = ice.relays.iter().map(|r| format!("{} via {}", r.address, r.server)).collect();
    let mut protocols: Vec<&str> = Vec::new();
    if !plan.turn_udp.is_empty() {
        protocols.push("udp");
    }
    protocols.extend(attempts.iter().map(|a| a.protocol));
    for p in protocols {
        let n = ice.relays.iter().filter(|r| r.protocol == p).count() as u32;
        ice.relay_protocols.insert(p.to_string(), n);
        if let Some(first) = ice.relays.iter().filter(|r| r.protocol == p).map(|r| r.at).min() {
            ice.first_relay.insert(p.to_string(), first);
        }
    }
}

/// Which TURN server produced each of the agent's relay candidates, as (relayed address,
/// server): the only one configured, else the one whose address is the relayed address's IP
/// (webrtc-ice does not say; the candidate's related address is the agent's own `0.0.0.0:port`
/// socket).
async fn attribute_relays(g: &Gathering, turn: &[TurnServer], deadline: Instant) -> Vec<(String, String)> {
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
                return (addr, turn[0].url.to_string());
            }
            let ip = r.address.parse::<IpAddr>().ok();
            let matching: Vec<String> = turn
                .iter()
                .zip(&server_ips)
                .filter(|(_, ips)| ip.is_some_and(|ip| ips.contains(&ip)))
                .map(|(s, _)| s.url.to_string())
                .collect();
            let server = match matching.len() {
                0 => "an unidentified TURN server (relayed address is on none of their addresses)".to_string(),
                1 => matching[0].clone(),
                _ => format!("one of {}", matching.join(", ")),
            };
            (addr, server)
        })
        .collect()
}

/// TURN/UDP servers that produced no relay candidate.
fn silent_turn_servers<'a>(g: &Gathering, turn: &'a [TurnServer], relay_servers: &[String]) -> Vec<&'a TurnServer> {
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
    expect: &[CandidateKind],
    plan: &ServerPlan,
    complete: bool,
    gather_time: Duration,
) -> Result<(), Failure> {
    let count = |k: CandidateKind| ice.candidates.get(k.as_str()).copied().unwrap_or(0);
    let missing: Vec<CandidateKind> = expect.iter().copied().filter(|k| count(*k) == 0).collect();
    let Some(&kind) = missing.first() else {
        return Ok(());
    };
    let counts = KINDS
        .iter()
        .map(|k| format!("{}={}", k.as_str(), count(*k)))
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
    let reason = match kind {
        CandidateKind::Host => Reason::NoHost,
        CandidateKind::Srflx => Reason::NoSrflx,
        CandidateKind::Relay => Reason::NoRelay,
        // Peer-reflexive candidates appear only during connectivity checks.
        CandidateKind::Prflx => Reason::ExpectFailed,
    };
    let no_turn = plan.turn_udp.is_empty() && plan.turn_stream.is_empty();
    let why = match kind {
        CandidateKind::Relay if no_turn => "no usable TURN server (with credentials) is configured".to_string(),
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
            missing[1..].iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
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
