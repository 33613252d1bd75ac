//! `kind: path`: *where* on the path traffic stops. Phases `resolve`, `trace`.
//!
//! A TTL-stepped trace towards the target over the protocol and port that matter (`tcp` SYNs or
//! `udp` datagrams carrying a STUN Binding request), like `tcptraceroute`/`tracepath`: TTL 1,
//! 2, 3... each drawing an ICMP time exceeded from the router that many hops out, until the
//! target answers (handshake, reply datagram, RST, port unreachable), a hop rejects (ICMP
//! prohibited / unreachable from an address that is not the target), or the path goes silent.
//!
//! Unprivileged: ordinary UDP/TCP sockets with `IP_TTL` and `IP_RECVERR`, answers read from the
//! socket's error queue (see `net::hop`). No raw sockets and no `CAP_NET_RAW`; a raw-socket
//! fallback is not implemented (the error queue gives every answer a raw socket would for
//! these probes). IPv4 is preferred when the name has both families; IPv6 works the same way
//! (`IPV6_UNICAST_HOPS`, `IPV6_RECVERR`).
//!
//! Bounded: at most `max_hops` TTLs, `probes_per_hop` attempts for a silent TTL, each waiting
//! `hop_timeout`, all within the run's deadline; [`SILENT_HOPS`] silent TTLs in a row end the
//! trace ("silence after hop N": dropped after that hop). One trace per run.

use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

use crate::config::{PathProtocol, PathSpec};
use crate::net::errqueue::IcmpKind;
use crate::net::hop::{self, HopAnswer};
use crate::outcome::details::{PathDetails, PathHop, RejectOrigin};
use crate::outcome::{Failure, Outcome, Phase, Reason, Run};

use super::ProbeContext;

/// Silent TTLs in a row after which the trace stops: the packets are being dropped.
pub const SILENT_HOPS: u32 = 3;

/// How the trace runs, as written in `detail.path.mode`.
pub const MODE: &str = "unprivileged (UDP/TCP sockets with IP_TTL and IP_RECVERR; no raw sockets)";

/// Runs one path trace.
pub async fn probe(spec: &PathSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = trace(&mut run, spec).await;
    run.finish(result)
}

/// How a trace ended.
enum End {
    Reached,
    /// Rejected (RST, port unreachable, prohibited) by this origin.
    Rejected(RejectOrigin),
    /// Host/network unreachable reported by this origin.
    Unreachable(RejectOrigin),
}

async fn trace(run: &mut Run, spec: &PathSpec) -> Result<(), Failure> {
    let addrs = crate::net::resolve(run, &spec.target).await?;
    let target = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| Failure::new(Phase::Resolve, Reason::NoAnswer, "the target resolved to no address"))?;
    let deadline = run.deadline();
    let started = Instant::now();
    let mut path = PathDetails {
        protocol: spec.protocol.as_str().to_string(),
        port: target.port(),
        target: Some(target.ip()),
        mode: MODE.to_string(),
        ..Default::default()
    };
    let payload = stun_binding_request();
    let mut end: Option<End> = None;
    let mut silent = 0u32;
    let mut local_error: Option<std::io::Error> = None;
    for ttl in 1..=spec.max_hops.min(255) {
        if Instant::now() >= deadline {
            break;
        }
        let mut h = PathHop {
            ttl,
            answer: "silence".into(),
            ..Default::default()
        };
        for _ in 0..spec.probes_per_hop.max(1) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let until = (now + spec.hop_timeout).min(deadline);
            h.sent += 1;
            let (answer, rtt) = match spec.protocol {
                PathProtocol::Tcp => hop::tcp(target, ttl as u8, until).await,
                PathProtocol::Udp => hop::udp(target, ttl as u8, &payload, until).await,
            };
            match answer {
                HopAnswer::Silence => continue,
                HopAnswer::Local(e) => {
                    local_error = Some(e);
                    break;
                }
                HopAnswer::Connected | HopAnswer::Datagram(_) => {
                    h.address = Some(match answer {
                        HopAnswer::Datagram(from) => from,
                        _ => target.ip(),
                    });
                    h.rtt = Some(rtt);
                    h.answer = "reached".into();
                    end = Some(End::Reached);
                }
                HopAnswer::Reset => {
                    h.address = Some(target.ip());
                    h.rtt = Some(rtt);
                    h.answer = "rst".into();
                    end = Some(End::Rejected(origin(&path, target, target.ip(), "rst", ttl)));
                }
                HopAnswer::Icmp(icmp) => {
                    h.address = icmp.offender;
                    h.rtt = Some(rtt);
                    h.answer = icmp.word().into();
                    let from = icmp.offender.unwrap_or(target.ip());
                    let o = || origin(&path, target, from, icmp.word(), ttl);
                    end = match icmp.kind() {
                        IcmpKind::TimeExceeded => None,
                        IcmpKind::Unreachable => Some(End::Unreachable(o())),
                        IcmpKind::PortUnreachable | IcmpKind::Prohibited | IcmpKind::Other => Some(End::Rejected(o())),
                    };
                }
            }
            break;
        }
        if h.address.is_some() {
            path.last_answered = Some(ttl);
            silent = 0;
        } else {
            silent += 1;
        }
        path.hops.push(h);
        if end.is_some() || local_error.is_some() || silent >= SILENT_HOPS {
            break;
        }
    }
    run.record(Phase::Trace, started.elapsed());
    let proto = format!("{}/{}", path.protocol, path.port);
    let result = if let Some(e) = local_error {
        path.end = "local_error".into();
        Err(crate::net::fault_from_io(&format!("tracing {proto} towards {target}"), &e).at(Phase::Trace))
    } else {
        match end {
            Some(End::Reached) => {
                path.end = "reached".into();
                path.end_hop = path.hops.len() as u32;
                Ok(())
            }
            Some(End::Rejected(o)) => {
                path.end = "rejected".into();
                path.end_hop = o.hop.unwrap_or(path.hops.len() as u32);
                let msg = if o.is_target {
                    format!("{proto} to {target} {}: the path is open up to the server", o.phrase("refused"))
                } else {
                    format!("{proto} to {target} {}: a firewall before the server", o.phrase("rejected"))
                };
                path.rejected_by = Some(o);
                Err(Failure::new(Phase::Trace, Reason::Refused, msg))
            }
            Some(End::Unreachable(o)) => {
                path.end = "unreachable".into();
                path.end_hop = o.hop.unwrap_or(path.hops.len() as u32);
                let msg = format!("{proto} to {target} {}", o.phrase("reported unreachable"));
                path.rejected_by = Some(o);
                Err(Failure::new(Phase::Trace, Reason::Unreachable, msg))
            }
            None => {
                path.end = "silence".into();
                path.end_hop = path.last_answered.unwrap_or(0);
                let msg = match path.last_answered {
                    Some(n) => {
                        let who = path
                            .hops
                            .iter()
                            .find(|h| h.ttl == n)
                            .and_then(|h| h.address)
                            .map(|a| format!(" ({a})"))
                            .unwrap_or_default();
                        format!("{proto} to {target}: silence after hop {n}{who}: dropped after it")
                    }
                    None => format!("{proto} to {target}: no hop answered: dropped before the first router, or routers do not answer"),
                };
                Err(Failure::new(Phase::Trace, Reason::Timeout, msg))
            }
        }
    };
    run.detail.path = Some(path);
    result
}

/// The origin of an answer at `ttl`: its hop is where that address first answered.
fn origin(path: &PathDetails, target: SocketAddr, from: IpAddr, answer: &str, ttl: u32) -> RejectOrigin {
    let hop = path.hops.iter().find(|h| h.address == Some(from)).map(|h| h.ttl).unwrap_or(ttl);
    RejectOrigin {
        address: from,
        is_target: from == target.ip(),
        answer: answer.to_string(),
        hop: Some(hop),
    }
}

/// A STUN Binding request (RFC 5389): what a softphone sends first over UDP, so a STUN/TURN
/// server at the target answers and the trace reads "reached".
fn stun_binding_request() -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    m[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    m[8..20].copy_from_slice(&nanos.to_be_bytes()[4..16]);
    m
}
