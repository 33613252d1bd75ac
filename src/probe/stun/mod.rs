//! `kind: stun`: does a Binding request get through, how fast, and what does the server see?
//!
//! Phases: `resolve`, (`connect`, `tls` for `?transport=tcp` / `stuns:`), `stun`. `count`
//! Binding requests go out one after the other, [`PACING`] apart, each with an equal share of
//! the time left; over UDP each is retransmitted per RFC 5389 (RTO 500 ms, doubling). RTT
//! min/avg/max and loss (unanswered transmissions / transmissions) land in `detail.stun`; so
//! does the mapped address (XOR-MAPPED-ADDRESS) next to our local address — for humans only,
//! never a metric label. The probe fails (`stun/timeout`) only if no request is answered.
//!
//! NAT behaviour (UDP only; `nat.rs`): with a server that advertises RFC 5780 OTHER-ADDRESS,
//! `nat_mapping: true` classifies the mapping (`endpoint_independent`, `address_dependent`,
//! `address_and_port_dependent`), `nat_filtering: true` the filtering, and `binding_lifetime:
//! {max}` searches how long an idle mapping survives. Without OTHER-ADDRESS, `nat_mapping`
//! falls back to a Binding to `second_server` from the same socket (refused when it resolves
//! to the server's own address): the same mapped address is `endpoint_independent`, another
//! `endpoint_dependent` (which of the two dependent kinds needs the alternate port). `local`
//! is the address the kernel picks towards the server even on the NAT tests' unconnected
//! socket, so `local == mapped` says there is no NAT on the path. These tests run after the `stun` phase and never fail the
//! probe: what they could not find out is a note. The Binding phase and the mapping/filtering
//! tests keep to the probe's `timeout`; the lifetime search uses the budget its config adds
//! to the run's deadline.

use std::net::SocketAddr;
use std::time::Duration;

use stun_rs::attributes::discovery::OtherAddress;
use stun_rs::attributes::stun::{ErrorCode, Fingerprint, MappedAddress, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, StunMessage, StunMessageBuilder};
use tokio::time::Instant;

use crate::config::{IceTransport, StunSpec};
use crate::net::stun_conn::{self, OpenOptions, StunConn};

mod nat;

use super::ProbeContext;
use crate::outcome::details::{RttStats, StunDetails};
use crate::outcome::{Fault, Outcome, Phase, Reason, Run};

/// Gap between consecutive Binding requests.
pub const PACING: Duration = Duration::from_millis(20);

/// Runs one stun probe.
pub async fn probe(spec: &StunSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = session(&mut run, spec, ctx).await;
    run.finish(result)
}

async fn session(run: &mut Run, spec: &StunSpec, ctx: &ProbeContext) -> Result<(), super::Failure> {
    let udp = spec.server.transport == IceTransport::Udp && !spec.server.is_tls();
    let nat_tests = udp && (spec.nat_mapping || spec.nat_filtering || spec.binding_lifetime.is_some());
    let opts = OpenOptions {
        tls: &spec.tls,
        proxy: ctx.proxy_for(&spec.server.host_port()),
        fixed: None,
        unconnected_udp: nat_tests,
    };
    let (mut conn, server) = stun_conn::open(run, &spec.server, opts).await?;
    let mut detail = StunDetails {
        transport: conn.transport().to_string(),
        local: conn.local_addr().map(|l| match server {
            // The NAT tests' socket is unconnected (bound to 0.0.0.0): name the address the
            // kernel would pick towards the server, so `local` can be compared with `mapped`.
            Some(s) if l.ip().is_unspecified() => nat::local_ip_towards(s).map_or(l, |ip| SocketAddr::new(ip, l.port())),
            _ => l,
        }),
        ..Default::default()
    };
    let count = spec.count.max(1);
    // The lifetime search's budget sits on top of the timeout: the rest keeps to the timeout.
    let budget = spec.binding_lifetime.map_or(Duration::ZERO, |l| l.budget());
    let until = run
        .deadline()
        .checked_sub(budget)
        .filter(|u| *u > Instant::now())
        .unwrap_or_else(|| run.deadline());
    let result = run.phase(Phase::Stun, bindings(&mut conn, count, until, &mut detail)).await;
    if result.is_ok() && nat_tests {
        if let Some(primary) = server {
            nat_behaviour(spec, &conn, primary, until, run.deadline(), &mut detail, &mut run.detail.notes).await;
        }
    }
    run.detail.stun = Some(detail);
    let _ = tokio::time::timeout_at(ctx.deadline, conn.shutdown()).await;
    result
}

/// The RFC 5780 tests the spec asks for, in the order that keeps them independent: mapping
/// (on the main socket), filtering and lifetime (each on fresh sockets).
async fn nat_behaviour(
    spec: &StunSpec,
    conn: &StunConn,
    primary: SocketAddr,
    until: Instant,
    deadline: Instant,
    detail: &mut StunDetails,
    notes: &mut Vec<String>,
) {
    let wait = nat::silence_wait(detail.rtt.as_ref().map_or(Duration::ZERO, |r| r.max));
    if spec.nat_mapping {
        let found = match (detail.other_address, detail.mapped, conn.udp_socket()) {
            (Some(other), Some(first), Some(socket)) => nat::mapping(&socket, primary, first, other, wait, until).await,
            _ if spec.second_server.is_some() => second_server_mapping(spec, conn, Some(primary), until, detail).await,
            _ => Err("the server advertises no OTHER-ADDRESS (RFC 5780) and no second_server is configured".into()),
        };
        match found {
            Ok(m) => {
                detail.nat_mapping = Some(m.behavior.to_string());
                detail.second_mapped = m.second;
                detail.third_mapped = m.third;
            }
            Err(e) => notes.push(format!("nat_mapping: {e}")),
        }
    }
    if spec.nat_filtering {
        match nat::filtering(primary, wait, until).await {
            Ok(f) => detail.nat_filtering = Some(f.to_string()),
            Err(e) => notes.push(format!("nat_filtering: {e}")),
        }
    }
    if let Some(search) = spec.binding_lifetime {
        match nat::lifetime(primary, search, wait, deadline).await {
            Ok((l, found)) => {
                detail.binding_lifetime = Some(l);
                notes.extend(found.into_iter().map(|n| format!("binding_lifetime: {n}")));
            }
            Err(e) => notes.push(format!("binding_lifetime: {e}")),
        }
    }
}

/// `count` Binding transactions; fails only when none is answered.
async fn bindings(conn: &mut StunConn, count: u32, until: Instant, detail: &mut StunDetails) -> Result<(), Fault> {
    let mut samples = Vec::new();
    let mut last_timeout = None;
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(PACING).await;
        }
        let share = until.saturating_duration_since(Instant::now()) / (count - i);
        match binding(conn, Instant::now() + share).await {
            Ok(b) => {
                samples.push(b.rtt);
                detail.mapped = b.mapped.or(detail.mapped);
                detail.other_address = b.other.or(detail.other_address);
            }
            Err(f) if f.reason == Reason::Timeout => last_timeout = Some(f),
            Err(f) => return Err(f),
        }
    }
    let answered = samples.len();
    // Loss counts transmissions: over UDP a retransmitted-then-answered request lost one packet.
    detail.rtt = Some(RttStats::from_samples(conn.transmissions, samples));
    match (answered, last_timeout) {
        (0, Some(f)) => Err(Fault::new(
            Reason::Timeout,
            format!("none of {count} Binding requests was answered ({})", f.message),
        )),
        _ => Ok(()),
    }
}

struct Binding {
    rtt: Duration,
    mapped: Option<SocketAddr>,
    other: Option<SocketAddr>,
}

async fn binding(conn: &mut StunConn, until: Instant) -> Result<Binding, Fault> {
    let req = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_attribute(Fingerprint::default())
        .build();
    let ans = conn.transaction(&req, until).await?;
    if ans.msg.class() == MessageClass::ErrorResponse {
        let code = ans
            .msg
            .get::<ErrorCode>()
            .and_then(|e| e.as_error_code().ok())
            .map(|e| e.error_code().error_code())
            .unwrap_or(0);
        return Err(Fault::new(
            Reason::from_stun_code(code),
            format!("Binding answered with error {code}"),
        ));
    }
    let mapped = mapped_address(&ans.msg);
    if mapped.is_none() {
        return Err(Fault::new(Reason::BadResponse, "Binding success without a (XOR-)MAPPED-ADDRESS"));
    }
    let other = ans
        .msg
        .get::<OtherAddress>()
        .and_then(|a| a.as_other_address().ok())
        .map(|a| *a.socket_address());
    Ok(Binding {
        rtt: ans.rtt,
        mapped,
        other,
    })
}

fn mapped_address(msg: &StunMessage) -> Option<SocketAddr> {
    msg.get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
        .map(|a| *a.socket_address())
        .or_else(|| {
            msg.get::<MappedAddress>()
                .and_then(|a| a.as_mapped_address().ok())
                .map(|a| *a.socket_address())
        })
}

/// Without OTHER-ADDRESS: a Binding to `second_server` from the same local socket. Tells
/// `endpoint_independent` from `endpoint_dependent` only (no alternate port to go further).
async fn second_server_mapping(
    spec: &StunSpec,
    conn: &StunConn,
    server: Option<SocketAddr>,
    until: Instant,
    detail: &StunDetails,
) -> Result<nat::Mapping, String> {
    let Some(socket) = conn.udp_socket() else {
        return Err("needs a UDP server (every TCP connection gets a mapping of its own)".into());
    };
    let Some(url) = &spec.second_server else {
        return Err("no second_server configured".into());
    };
    let hp = url.host_port();
    let lookup = tokio::time::timeout_at(until, tokio::net::lookup_host((hp.host.as_str(), hp.port))).await;
    let found = match lookup {
        Ok(Ok(mut addrs)) => addrs.find(|a| Some(a.is_ipv4()) == server.map(|s| s.is_ipv4())),
        _ => None,
    };
    let Some(second) = found else {
        return Err(format!("cannot resolve second_server {hp}"));
    };
    if Some(second) == server {
        return Err(format!(
            "second_server {hp} resolves to the server's own address {second}: it cannot test mapping"
        ));
    }
    let mut conn2 = StunConn::datagram(socket, second, false);
    let b = binding(&mut conn2, until)
        .await
        .map_err(|f| format!("second server {second}: {}", f.message))?;
    Ok(nat::Mapping {
        behavior: if b.mapped == detail.mapped {
            "endpoint_independent"
        } else {
            "endpoint_dependent"
        },
        second: b.mapped,
        third: None,
    })
}
