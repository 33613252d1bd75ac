//! `kind: stun`: does a Binding request get through, how fast, and what does the server see?
//!
//! Phases: `resolve`, (`connect`, `tls` for `?transport=tcp` / `stuns:`), `stun`. `count`
//! Binding requests go out one after the other, [`PACING`] apart, each with an equal share of
//! the time left; over UDP each is retransmitted per RFC 5389 (RTO 500 ms, doubling). RTT
//! min/avg/max and loss (unanswered transmissions / transmissions) land in `detail.stun`; so
//! does the mapped address (XOR-MAPPED-ADDRESS) next to our local address — for humans only,
//! never a metric label. The probe fails (`stun/timeout`) only if no request is answered.
//!
//! `nat_mapping: true` (UDP): from the same local socket, a Binding to a second server address
//! (`second_server`, else the first server's RFC 5780 OTHER-ADDRESS); the same mapped address
//! both times is `endpoint_independent` mapping, different ones `endpoint_dependent`.

use std::net::SocketAddr;
use std::time::Duration;

use stun_rs::attributes::discovery::OtherAddress;
use stun_rs::attributes::stun::{ErrorCode, Fingerprint, MappedAddress, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, StunMessage, StunMessageBuilder};
use tokio::time::Instant;

use crate::config::{IceTransport, StunSpec};
use crate::net::stun_conn::{self, OpenOptions, StunConn};

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
    let opts = OpenOptions {
        tls: &spec.tls,
        proxy: ctx.proxy_for(&spec.server.host_port()),
        fixed: None,
        unconnected_udp: spec.nat_mapping && udp,
    };
    let (mut conn, server) = stun_conn::open(run, &spec.server, opts).await?;
    let mut detail = StunDetails {
        transport: conn.transport().to_string(),
        local: conn.local_addr(),
        ..Default::default()
    };
    let count = spec.count.max(1);
    let until = run.deadline();
    let result = run.phase(Phase::Stun, bindings(&mut conn, count, until, &mut detail)).await;
    if result.is_ok() && spec.nat_mapping {
        if let Err(note) = nat_mapping(spec, &conn, server, until, &mut detail).await {
            run.detail.notes.push(format!("nat_mapping: {note}"));
        }
    }
    run.detail.stun = Some(detail);
    let _ = tokio::time::timeout_at(ctx.deadline, conn.shutdown()).await;
    result
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

/// RFC 5780 mapping behaviour from the same local socket to a second server address.
/// Problems here become notes (`Err`): the Binding itself already succeeded.
async fn nat_mapping(
    spec: &StunSpec,
    conn: &StunConn,
    server: Option<SocketAddr>,
    until: Instant,
    detail: &mut StunDetails,
) -> Result<(), String> {
    let Some(socket) = conn.udp_socket() else {
        return Err("needs a UDP server (every TCP connection gets a mapping of its own)".into());
    };
    let second = match &spec.second_server {
        Some(url) => {
            let hp = url.host_port();
            let lookup = tokio::time::timeout_at(until, tokio::net::lookup_host((hp.host.as_str(), hp.port))).await;
            let found = match lookup {
                Ok(Ok(mut addrs)) => addrs.find(|a| Some(a.is_ipv4()) == server.map(|s| s.is_ipv4())),
                _ => None,
            };
            match found {
                Some(a) => a,
                None => return Err(format!("cannot resolve second_server {hp}")),
            }
        }
        None => match detail.other_address {
            Some(a) => a,
            None => return Err("no second_server configured and the server advertises no OTHER-ADDRESS (RFC 5780)".into()),
        },
    };
    let mut conn2 = StunConn::datagram(socket, second, false);
    let b = binding(&mut conn2, until)
        .await
        .map_err(|f| format!("second server {second}: {}", f.message))?;
    detail.second_mapped = b.mapped;
    detail.nat_mapping = Some(if b.mapped == detail.mapped {
        "endpoint_independent".into()
    } else {
        "endpoint_dependent".into()
    });
    Ok(())
}
