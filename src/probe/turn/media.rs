//! `media:` on a turn probe: the call-quality stream (see `probe::media`) through the relay,
//! after the relay round trips proved the path (phase `media`).
//!
//! Where the stream goes, and why:
//! - **Default: to the second allocation (B) and back.** A sends to B's relayed address, B's
//!   client echoes each packet to A's relayed address. It needs nothing but the TURN server, so
//!   it works against any vendor's relay with the credentials a softphone gets, and every
//!   packet crosses the customer's egress path the way a call's does (client ↔ relay, UDP or
//!   TCP/TLS 443). The price: A and B sit behind the same egress, so a round trip crosses the
//!   client ↔ relay leg four times (A up, B down, B up, A down): `detail.media.path:
//!   turn_pair`, `crossings: 4`, and the thresholds judge the per-leg estimates (one leg's
//!   round trip = half the measured one, one-way loss = the fourth root's complement; see
//!   `probe::media`).
//! - **With `peer: ip:port`: to a UDP echo through one allocation** (the responder's
//!   `udp_echo` next to the relay). A permits the peer and streams to it; the echo sends each
//!   packet back to A's relayed address. The round trip is then one client ↔ relay leg plus
//!   relay ↔ peer, which is what a call to a media server near the relay sees
//!   (`path: turn_peer`). Use it when you run the responder; the relay must allow that peer
//!   (coturn refuses loopback peers without `allow-loopback-peers`, and operators often deny
//!   private ranges with `denied-peer-ip`).
//!
//! The allocations are the probe's own A and B; releasing them stays with `turn/mod.rs`, which
//! deallocates both whatever happened here.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::{Allocation, TurnClient, CHANNEL};
use crate::config::MediaSpec;
use crate::outcome::{Failure, Fault, Phase, Reason, Run};
use crate::probe::media::{judge, Stream};

/// Runs the stream and records `detail.media`; fails phase `media` on a threshold or a
/// transport error, or phase `permission` when the peer is not permitted.
pub(super) async fn stream(
    run: &mut Run,
    spec: &MediaSpec,
    ca: &mut TurnClient,
    cb: &mut TurnClient,
    alloc_a: &Allocation,
    alloc_b: &Allocation,
    channel: bool,
) -> Result<(), Failure> {
    let until = run.deadline();
    let (dest, echo, ch_a, path) = match spec.peer {
        Some(peer) => {
            let ch = channel.then_some(CHANNEL + 1);
            run.phase(Phase::Permission, async {
                ca.create_permission(peer, until).await?;
                if let Some(c) = ch {
                    ca.channel_bind(c, peer, until).await?;
                }
                Ok(())
            })
            .await
            .map_err(|f| Failure::new(f.phase, f.reason, format!("media peer {peer}: {}", f.message)))?;
            (peer, None, ch, "turn_peer")
        }
        None => (alloc_b.relayed, Some(cb), channel.then_some(CHANNEL), "turn_pair"),
    };
    let started = Instant::now();
    let mut stream = Stream::new(spec);
    let result = pump(&mut stream, ca, echo, dest, alloc_a.relayed, ch_a, until).await;
    run.record(Phase::Media, started.elapsed());
    let details = stream.finish(path);
    let verdict = match result {
        // A truncated stream says so whatever ended it.
        Err(_) if details.truncated => judge(&details, &spec.thresholds),
        Err(f) => Err(f.at(Phase::Media)),
        Ok(()) => judge(&details, &spec.thresholds),
    };
    run.detail.media = Some(details);
    verdict
}

/// Sends on the pacing clock from A to `dest`, lets B (when given) echo to `echo_to`, and
/// records what A gets back; ends after the drain wait or at `until`.
async fn pump(
    stream: &mut Stream,
    ca: &mut TurnClient,
    mut cb: Option<&mut TurnClient>,
    dest: SocketAddr,
    echo_to: SocketAddr,
    channel: Option<u16>,
    until: Instant,
) -> Result<(), Fault> {
    let mut tick = stream.interval();
    loop {
        if stream.done_sending() && stream.all_back() {
            return Ok(());
        }
        let drain = if stream.done_sending() {
            stream.drain_until().min(until)
        } else {
            until
        };
        // Biased as in `probe::media`: a due deadline wins over a ready tick, the tick over
        // receiving. Sends over TCP/TLS can block on a full send buffer: each is bounded by
        // the deadline, so the probe always gets back to `turn/mod.rs` to release (Refresh 0).
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(drain) => {
                stream.end(Instant::now(), until);
                return Ok(());
            }
            t = tick.tick(), if !stream.done_sending() => {
                if let Some(p) = stream.on_tick(t) {
                    bounded(until, ca.send_to_peer(dest, channel, &p), stream).await?;
                }
            }
            r = ca.recv_from_peer() => stream.on_receive(&r?.data, Instant::now()),
            r = echo_recv(cb.as_deref_mut()) => {
                let data = r?;
                if let Some(b) = cb.as_deref_mut() {
                    // B's echo uses B's channel to A when channels are on (same number).
                    bounded(until, b.send_to_peer(echo_to, channel, &data), stream).await?;
                }
            }
        }
    }
}

/// A send through the relay, given until `until`; past it the stream ends there.
async fn bounded(until: Instant, send: impl std::future::Future<Output = Result<(), Fault>>, stream: &mut Stream) -> Result<(), Fault> {
    match tokio::time::timeout_at(until, send).await {
        Ok(r) => r,
        Err(_) => {
            stream.end(Instant::now(), until);
            Err(Fault::new(
                Reason::Timeout,
                "a send through the relay was still blocked at the deadline (the TCP/TLS connection to the server stopped taking data)",
            ))
        }
    }
}

/// The next payload B receives; never resolves without B (peer mode).
async fn echo_recv(cb: Option<&mut TurnClient>) -> Result<Vec<u8>, Fault> {
    match cb {
        Some(b) => b.recv_from_peer().await.map(|r| r.data),
        None => std::future::pending().await,
    }
}
