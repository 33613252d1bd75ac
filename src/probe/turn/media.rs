//! `media:` on a turn probe: the call-quality stream (see `probe::media`) through the relay,
//! after the relay round trips proved the path (phase `media`).
//!
//! Where the stream goes, and why:
//! - **Default: to the second allocation (B) and back.** A sends to B's relayed address, B's
//!   client echoes each packet to A's relayed address. It needs nothing but the TURN server, so
//!   it works against any vendor's relay with the credentials a softphone gets, and every
//!   packet crosses the customer's egress path the way a call's does (client ↔ relay, UDP or
//!   TCP/TLS 443). The price: the round trip contains the client ↔ relay leg twice (A's and
//!   B's), so `rtt_*` is about twice what one call leg sees and jitter and loss are those of two
//!   legs — a conservative reading (`detail.media.path: turn_pair`).
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
use crate::outcome::{Failure, Fault, Phase, Run};
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
    let verdict = result.and_then(|()| judge(&details, &spec.thresholds));
    run.detail.media = Some(details);
    verdict.map_err(|f| f.at(Phase::Media))
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
        tokio::select! {
            r = ca.recv_from_peer() => stream.on_receive(&r?.data, Instant::now()),
            r = echo_recv(cb.as_deref_mut()) => {
                let data = r?;
                if let Some(b) = cb.as_deref_mut() {
                    // B's echo uses B's channel to A when channels are on (same number).
                    b.send_to_peer(echo_to, channel, &data).await?;
                }
            }
            t = tick.tick(), if !stream.done_sending() => {
                if let Some(p) = stream.on_tick(t) {
                    ca.send_to_peer(dest, channel, &p).await?;
                }
            }
            _ = tokio::time::sleep_until(drain) => {
                stream.stop();
                return Ok(());
            }
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
