//! `kind: turn`: can a softphone get a relay, and does media flow through it?
//!
//! Phases: `resolve`, `connect` (TCP/TLS), `tls` (`turns:`), `allocate` (the 401 challenge
//! round included), `permission`, `relay`, `close`. The relay round trip needs no outside
//! peer: two allocations on the same server (two client connections, A and B), each permits
//! the other's relayed address (and binds a channel with `channel: true`); A sends `count`
//! packets of `size` bytes to B's relayed address, B echoes each back, A times the round trip.
//! The phases and the allocate time are A's (the "softphone"); B is the helper peer, and
//! a failure of B is reported in the phase where it happened, its message saying "peer side".
//!
//! With `media:` a paced call-quality stream follows the round trips (phase `media`, see
//! `media.rs` for where it goes and why); the run's deadline is then the timeout plus the
//! stream's duration.
//!
//! Both allocations are always released with Refresh(lifetime 0) and the answer awaited, also
//! when the probe failed: a slice of the timeout is kept for that ([`cleanup_reserve`]), so the
//! probe's own phases end that much before the configured timeout. `detail.relay.deallocated`
//! says whether the server confirmed.
//!
//! With `concurrent: N` (N > 1) the probe instead holds N allocations at once and reports how
//! many were granted: see [`concurrent`].

mod client;
mod concurrent;
mod media;

pub use client::{Allocation, Relayed, TurnClient};

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::{AddressMode, TurnSpec};
use crate::net::stun_conn::{self, OpenOptions};

use super::{per_address, ProbeContext};
use crate::outcome::details::{RelayDetails, RttStats};
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

/// The channel number both clients bind with `channel: true`.
const CHANNEL: u16 = stun_conn::CHANNEL_MIN;
/// Longest wait for one relayed packet before it counts as lost.
const PACKET_WAIT: Duration = Duration::from_secs(1);

/// Said when an Allocate answered 437 and was retried from a new local port.
const MOVED_PORT_NOTE: &str =
    "Allocate answered 437 (the server still held an allocation for our UDP 5-tuple, e.g. a just-released one on a reused port): retried once from a new local port";

/// Runs one turn probe.
pub async fn probe(spec: &TurnSpec, ctx: &ProbeContext) -> Outcome {
    if spec.concurrent > 1 {
        return concurrent::probe(spec, ctx).await;
    }
    if spec.addresses == AddressMode::All && ctx.proxy_for(&spec.server.host_port()).is_none() {
        let mut run = Run::new(ctx.deadline);
        let result = per_address(&mut run, &spec.server.host_port(), |addr, deadline| {
            run_one(spec, ctx, Some(addr), deadline)
        })
        .await;
        return run.finish(result);
    }
    run_one(spec, ctx, None, ctx.deadline).await
}

/// Time kept back from `total` for deallocation: a fifth, at least 100 ms, at most 1 s.
pub fn cleanup_reserve(total: Duration) -> Duration {
    (total / 5).clamp(Duration::from_millis(100), Duration::from_secs(1)).min(total / 2)
}

/// The probe against one server address (`fixed`) or the URI's name.
async fn run_one(spec: &TurnSpec, ctx: &ProbeContext, fixed: Option<SocketAddr>, deadline: Instant) -> Outcome {
    let reserve = cleanup_reserve(deadline.saturating_duration_since(Instant::now()));
    let mut run = Run::new(deadline - reserve);
    let mut a: Option<TurnClient> = None;
    let mut b: Option<TurnClient> = None;
    run.detail.relay = Some(RelayDetails {
        transport: spec.server.transport_label().to_string(),
        channel: spec.channel,
        ..Default::default()
    });
    let result = session(&mut run, spec, ctx, fixed, &mut a, &mut b).await;

    // Cleanup, bounded by the real deadline: Refresh(0) both, then close the transports.
    let started = Instant::now();
    let released = tokio::time::timeout_at(deadline, async {
        let (ra, rb) = futures::join!(release(a.as_mut(), deadline), release(b.as_mut(), deadline));
        ra.and(rb)
    })
    .await
    .unwrap_or_else(|_| Err(Fault::new(Reason::Timeout, "no answer to Refresh(lifetime 0) before the deadline")));
    let close_time = started.elapsed();
    let _ = tokio::time::timeout_at(deadline, async {
        for c in [a.as_mut(), b.as_mut()].into_iter().flatten() {
            c.shutdown().await;
        }
    })
    .await;
    let any_allocation = [a.as_ref(), b.as_ref()].into_iter().flatten().any(|c| c.allocation().is_some());
    drop((a, b));
    if let Some(r) = run.detail.relay.as_mut() {
        r.deallocated = released.is_ok() && (any_allocation || r.relayed.is_some());
    }
    let released = released.map_err(|f| Fault::new(f.reason, format!("deallocation not confirmed: {}", f.message)));
    finish_with_release(run, result, released, close_time)
}

/// Ends a TURN run (one pair of clients or N concurrent ones) with its release: a run that
/// passed and released fails at `close` if the release was not confirmed (`released` says so
/// in words), and times `close` either way; a run that had already failed keeps its own
/// failure, the unconfirmed release added as a note.
fn finish_with_release(mut run: Run, result: Result<(), Failure>, released: Result<(), Fault>, close_time: Duration) -> Outcome {
    let result = match (result, released) {
        (Ok(()), Ok(())) => {
            run.record(Phase::Close, close_time);
            Ok(())
        }
        (Ok(()), Err(f)) => {
            run.record(Phase::Close, close_time);
            Err(f.at(Phase::Close))
        }
        (Err(f), released) => {
            if let Err(d) = released {
                run.detail.notes.push(format!("cleanup: {}", d.message));
            }
            Err(f)
        }
    };
    run.finish(result)
}

async fn release(c: Option<&mut TurnClient>, until: Instant) -> Result<(), Fault> {
    match c {
        Some(c) if c.needs_deallocate() => c.deallocate(until).await,
        _ => Ok(()),
    }
}

/// Connect, allocate both, permit, relay. Clients are left in `a`/`b` for cleanup.
async fn session(
    run: &mut Run,
    spec: &TurnSpec,
    ctx: &ProbeContext,
    fixed: Option<SocketAddr>,
    a: &mut Option<TurnClient>,
    b: &mut Option<TurnClient>,
) -> Result<(), Failure> {
    let url = &spec.server;
    let proxy = if fixed.is_some() { None } else { ctx.proxy_for(&url.host_port()) };
    let opts = OpenOptions {
        tls: &spec.tls,
        proxy,
        fixed,
        unconnected_udp: false,
    };
    let until = run.deadline();

    // Client A: every phase timed.
    let (conn, server) = stun_conn::open(run, url, opts).await?;
    let (user, pass) = spec.credentials.resolve(SystemTime::now());
    let ca = a.insert(TurnClient::new(conn, user.clone(), pass.clone()));
    let started = Instant::now();
    let alloc_a = run.phase(Phase::Allocate, ca.allocate(until)).await;
    if let Some(r) = run.detail.relay.as_mut() {
        r.allocate = Some(started.elapsed());
    }
    if ca.moved_port() {
        run.detail.notes.push(MOVED_PORT_NOTE.into());
    }
    let alloc_a = alloc_a?;
    if let Some(r) = run.detail.relay.as_mut() {
        r.relayed = Some(alloc_a.relayed);
        r.mapped = alloc_a.mapped;
    }

    // Client B (the helper peer) on the same server address, timed on a scratch run.
    let mut side = Run::new(until);
    let peer_side = |f: Failure| Failure::new(f.phase, f.reason, format!("second allocation (peer side): {}", f.message));
    let opts_b = OpenOptions {
        fixed: server.or(fixed),
        proxy: if server.is_some() { None } else { proxy },
        ..opts
    };
    let (conn_b, _) = stun_conn::open(&mut side, url, opts_b).await.map_err(peer_side)?;
    let cb = b.insert(TurnClient::new(conn_b, user, pass));
    let alloc_b = side.phase(Phase::Allocate, cb.allocate(until)).await;
    if cb.moved_port() {
        run.detail.notes.push(format!("second allocation (peer side): {MOVED_PORT_NOTE}"));
    }
    let alloc_b = alloc_b.map_err(peer_side)?;

    // Mutual permissions (and channels).
    let channel = spec.channel.then_some(CHANNEL);
    run.phase(Phase::Permission, async {
        ca.create_permission(alloc_b.relayed, until).await?;
        cb.create_permission(alloc_a.relayed, until).await?;
        if let Some(ch) = channel {
            ca.channel_bind(ch, alloc_b.relayed, until).await?;
            cb.channel_bind(ch, alloc_a.relayed, until).await?;
        }
        Ok(())
    })
    .await?;

    // Relay round trips A → B → A.
    let count = spec.count.max(1);
    let size = spec.size.max(8);
    let stats = run
        .phase(
            Phase::Relay,
            relay_round_trips(ca, cb, &alloc_a, &alloc_b, channel, count, size, until),
        )
        .await;
    let stats = stats?;
    let received = stats.received;
    if let Some(r) = run.detail.relay.as_mut() {
        r.rtt = Some(stats);
    }
    if received == 0 {
        return Err(Failure::new(
            Phase::Relay,
            Reason::Timeout,
            format!("none of {count} packets came back through the relay (allocations and permissions were granted)"),
        ));
    }
    if let Some(m) = &spec.media {
        media::stream(run, m, ca, cb, &alloc_a, &alloc_b, spec.channel).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn relay_round_trips(
    ca: &mut TurnClient,
    cb: &mut TurnClient,
    alloc_a: &Allocation,
    alloc_b: &Allocation,
    channel: Option<u16>,
    count: u32,
    size: usize,
    until: Instant,
) -> Result<RttStats, Fault> {
    let tag: u32 = rand::random();
    let mut samples = Vec::with_capacity(count as usize);
    for seq in 0..count {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let wait = PACKET_WAIT.min(left / (count - seq));
        let packet_until = Instant::now() + wait;
        let mut payload = vec![0u8; size];
        payload[..4].copy_from_slice(&tag.to_be_bytes());
        payload[4..8].copy_from_slice(&seq.to_be_bytes());
        let started = Instant::now();
        ca.send_to_peer(alloc_b.relayed, channel, &payload).await?;
        // B receives and echoes to A's relayed address.
        if !recv_matching(cb, &payload, packet_until).await? {
            continue;
        }
        cb.send_to_peer(alloc_a.relayed, channel, &payload).await?;
        if recv_matching(ca, &payload, packet_until).await? {
            samples.push(started.elapsed());
        }
    }
    Ok(RttStats::from_samples(count, samples))
}

/// Waits until `until` for `payload` to arrive on `c`; `false` if it did not (lost).
async fn recv_matching(c: &mut TurnClient, payload: &[u8], until: Instant) -> Result<bool, Fault> {
    loop {
        match tokio::time::timeout_at(until, c.recv_from_peer()).await {
            Err(_) => return Ok(false),
            Ok(Err(f)) => return Err(f),
            Ok(Ok(r)) if r.data == payload => return Ok(true),
            Ok(Ok(_)) => continue, // a late packet of an earlier round
        }
    }
}
