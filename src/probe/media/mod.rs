//! Call quality: a paced stream of RTP-sized packets that comes back to the sender, judged as a
//! softphone's audio would be (loss, jitter, round trip, an E-model MOS).
//!
//! This folder owns the stream and its maths; the transports that carry it live with their
//! protocol: `kind: media` below sends straight over UDP to a UDP echo (the responder's
//! `udp_echo`), and `turn/media.rs` sends through a TURN allocation (to a second allocation on
//! the same server, or to a UDP echo peer). [`stats`] turns what came back into figures,
//! [`emodel`] the figures into R and MOS; both are pure and unit-tested with exact values.
//!
//! **Packets.** Each is a 12-byte RTP header (version 2, payload type 0 = PCMU, sequence
//! number, timestamp at 8 kHz, a random SSRC per run) followed by `payload` bytes: a 32-bit
//! sequence number and the send time (µs since the stream started) in the first 12, the rest
//! PCMU silence (0xFF). What returns with another SSRC, a sequence number never sent, or a
//! different size is not ours and is ignored.
//!
//! **Pacing.** One packet per `packet_ms` on a `tokio::time::interval` whose
//! `MissedTickBehavior` is `Skip`: when the probe host is too busy to send on time, the missed
//! slots are *not* sent later in a burst (which would measure our own backlog as network
//! jitter and stretch the run past `duration`); they are counted as `skipped_ticks` and the
//! packets actually sent keep consecutive sequence numbers, so a busy host never reads as
//! loss. Send and receive times are taken with `Instant::now()` right at the socket calls;
//! jitter uses each packet's own send time, so pacing lateness is not counted as jitter either.
//! That send time is the stream's own record, indexed by sequence number: the stamp the echo
//! returns is only compared with it (a mismatch is not our packet), never trusted. Only the
//! first arrival of a packet is stored, copies are counted, so stored arrivals never exceed
//! the packets sent and a flood of copies cannot displace a real packet.
//!
//! **Bounds.** Sending stops after `duration` (at most 60 s, checked in the config) or at the
//! run's deadline, whichever is first; then the stream waits for late packets for twice the
//! slowest round trip seen (at least 250 ms, at most 2 s, never past the deadline). Anything
//! later is lost. The scheduler gives the run `timeout + duration` (see
//! `ProbeSpec::hold`), and the config requires the interval to cover that. The transports'
//! loops are `biased` with the deadline first: once it is due no tick can win a random draw
//! and send one more packet. A deadline before the last slot marks the stream `truncated`
//! (`media/timeout`: set-up ate its time, common under `/probe`'s scrape-timeout deadline); a
//! deadline during the drain wait leaves the packets sent within one drain wait of it `in
//! flight`, neither received nor lost.
//!
//! **Per leg.** A round trip crosses the client's path `k` times (`crossings`: 2 for
//! `udp_echo` and `turn_peer`, 4 for `turn_pair`, whose A → relay → B → relay → A crosses the
//! client ↔ relay leg four times). Teams' targets are per leg, so `max_rtt` judges
//! `rtt_avg · 2 / k` (one leg's round trip), `max_loss` the one-way loss
//! `1 − (1 − loss)^(1/k)`, and the E-model gets that loss and the one-way delay
//! `rtt_avg / k` (+ jitter buffer + packetisation). Jitter is the round trip's, undivided.
//!
//! **Verdict.** [`judge`]: a truncated stream is `media/timeout`; then it compares the one-way
//! loss, the final RFC 3550 jitter and the leg's average round trip with `max_loss`,
//! `max_jitter` and `max_rtt` (Teams' client targets by default), then the MOS with `min_mos`
//! if set, and fails phase `media` with `loss`, `jitter`, `rtt` or `mos` — the first exceeded
//! in that order, the message naming every one exceeded. When the host was too busy to pace
//! the stream (over 5 % of slots skipped or sends over a packet time late) a timing failure
//! (jitter, rtt, mos) is `internal/busy` instead: it measured this host, not the network.

pub mod emodel;
pub mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{MediaProbeSpec, MediaSpec, MediaThresholds};
use crate::outcome::details::MediaDetails;
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

use super::ProbeContext;
use stats::Arrival;

/// RTP header bytes before the payload.
pub const RTP_HEADER: usize = 12;
/// Bytes of the payload we use (sequence number + send time); the config's minimum payload.
const STAMP: usize = 12;
/// Shortest and longest wait for late packets after the last send.
const DRAIN_MIN: Duration = Duration::from_millis(250);
const DRAIN_MAX: Duration = Duration::from_secs(2);

/// One stream: what was sent, what came back. Transports call [`Stream::on_tick`] on each
/// pacing tick and send what it returns, [`Stream::on_receive`] with every datagram, and
/// [`Stream::end`] when their deadline (or the drain wait) fires.
#[derive(Debug)]
pub struct Stream {
    ssrc: u32,
    payload: usize,
    packet: Duration,
    planned: u32,
    sent: u32,
    skipped: u32,
    start: Instant,
    last_send: Option<Instant>,
    done: bool,
    /// The deadline ended sending before the duration: how long the stream had.
    truncated: Option<Duration>,
    /// When the deadline cut the stream (sending or the drain wait).
    cut: Option<Instant>,
    /// Our own send time of each packet (offset from `start`), indexed by sequence number:
    /// round trips are measured against these, the echoed stamp is only checked.
    sends: Vec<Duration>,
    /// First arrivals only (at most one per packet sent); copies are counted, not stored.
    arrivals: Vec<Arrival>,
    seen: Vec<bool>,
    duplicates: u32,
    late_sends: u32,
    late_max: Duration,
}

impl Stream {
    /// A stream as `spec` describes, starting now.
    pub fn new(spec: &MediaSpec) -> Stream {
        let packet = spec.packet.max(Duration::from_millis(1));
        let planned = (spec.duration.as_micros() / packet.as_micros()).max(1) as u32;
        Stream {
            ssrc: rand::random(),
            payload: spec.payload.max(STAMP),
            packet,
            planned,
            sent: 0,
            skipped: 0,
            start: Instant::now(),
            last_send: None,
            done: false,
            truncated: None,
            cut: None,
            sends: Vec::with_capacity(planned as usize),
            arrivals: Vec::with_capacity(planned as usize),
            seen: vec![false; planned as usize],
            duplicates: 0,
            late_sends: 0,
            late_max: Duration::ZERO,
        }
    }

    /// The pacing clock for this stream: first tick at once, then every `packet_ms`, missed
    /// ticks skipped (see the module docs).
    pub fn interval(&self) -> tokio::time::Interval {
        let mut iv = tokio::time::interval_at(self.start, self.packet);
        iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
        iv
    }

    /// Whether every planned slot has passed (or [`Stream::end`] was called).
    pub fn done_sending(&self) -> bool {
        self.done
    }

    /// The transport's sleep fired at `now`: the drain wait is over, or the run's deadline
    /// `until` came. A deadline before the last slot truncates the stream (judged
    /// `media/timeout`); a deadline during the drain wait leaves the last packets in flight.
    pub fn end(&mut self, now: Instant, until: Instant) {
        if !self.done {
            self.truncated = Some(now.saturating_duration_since(self.start));
            self.done = true;
        }
        if now >= until {
            self.cut = Some(now);
        }
    }

    /// For the tick scheduled at `tick`: the next packet to send now, or `None` once the
    /// stream's duration is over. Slots the clock skipped are counted, not sent.
    pub fn on_tick(&mut self, tick: Instant) -> Option<Vec<u8>> {
        let slot = (tick.saturating_duration_since(self.start).as_micros() / self.packet.as_micros()) as u32;
        if self.done || slot >= self.planned {
            if !self.done {
                // Every slot not sent by the end of the duration was skipped.
                self.skipped = self.planned.saturating_sub(self.sent);
            }
            self.done = true;
            return None;
        }
        // Every earlier slot was either sent or skipped.
        self.skipped = slot.saturating_sub(self.sent);
        let seq = self.sent;
        let now = Instant::now();
        let late = now.saturating_duration_since(tick);
        if late > self.packet {
            self.late_sends += 1;
        }
        self.late_max = self.late_max.max(late);
        let offset = now.saturating_duration_since(self.start);
        let mut p = vec![0xFFu8; RTP_HEADER + self.payload];
        p[0] = 0x80; // version 2, no padding, no extension, no CSRC
        p[1] = 0x00; // no marker, payload type 0 (PCMU)
        p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        let samples = (self.packet.as_micros() * 8 / 1000) as u32; // 8 kHz clock
        p[4..8].copy_from_slice(&seq.wrapping_mul(samples).to_be_bytes());
        p[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        p[12..16].copy_from_slice(&seq.to_be_bytes());
        p[16..24].copy_from_slice(&(offset.as_micros() as u64).to_be_bytes());
        self.sent += 1;
        self.sends.push(offset);
        self.last_send = Some(now);
        Some(p)
    }

    /// Records a datagram that came back at `at`; anything not one of ours is ignored: another
    /// size or SSRC, a sequence number not sent, or a send stamp that is not the one we sent
    /// (the round trip is timed from our own record, never from what the peer echoes).
    pub fn on_receive(&mut self, data: &[u8], at: Instant) {
        if data.len() != RTP_HEADER + self.payload || data[0] != 0x80 || data[8..12] != self.ssrc.to_be_bytes() {
            return;
        }
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&data[12..16]);
        let seq = u32::from_be_bytes(seq);
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&data[16..24]);
        let Some(&sent) = self.sends.get(seq as usize) else {
            return;
        };
        if u64::from_be_bytes(stamp) != sent.as_micros() as u64 {
            return;
        }
        match self.seen.get_mut(seq as usize) {
            Some(s) if !*s => *s = true,
            Some(_) => {
                self.duplicates = self.duplicates.saturating_add(1);
                return;
            }
            None => return,
        }
        self.arrivals.push(Arrival {
            seq,
            sent,
            received: at.saturating_duration_since(self.start),
        });
    }

    /// Whether every packet sent has come back (no need to wait for stragglers).
    pub fn all_back(&self) -> bool {
        self.done && self.arrivals.len() >= self.sent as usize
    }

    /// How long to wait for late packets: twice the slowest round trip so far (250 ms to 2 s).
    fn drain_wait(&self) -> Duration {
        let slowest = self
            .arrivals
            .iter()
            .map(|a| a.received.saturating_sub(a.sent))
            .max()
            .unwrap_or_default();
        (slowest * 2).clamp(DRAIN_MIN, DRAIN_MAX)
    }

    /// When to stop waiting for late packets: the drain wait after the last send.
    pub fn drain_until(&self) -> Instant {
        self.last_send.unwrap_or(self.start) + self.drain_wait()
    }

    /// The stream's figures, as `path` (`udp_echo`, `turn_pair`, `turn_peer`) carried it.
    pub fn finish(self, path: &str) -> MediaDetails {
        // At a cut, what was sent within one drain wait of it had no fair chance to return.
        let in_flight_from = match self.cut {
            Some(cut) => {
                let since = cut.saturating_duration_since(self.start).saturating_sub(self.drain_wait());
                self.sends.partition_point(|s| *s <= since) as u32
            }
            None => self.sent,
        };
        let s = stats::summarise(self.sent, &self.arrivals, in_flight_from);
        let crossings = crossings(path);
        let one_way_loss = one_way(s.loss, crossings);
        let leg_rtt_avg = s.rtt_avg * 2 / crossings;
        let one_way_delay = emodel::one_way_delay(s.rtt_avg / crossings, s.jitter, self.packet);
        // With nothing back there is no round trip and no jitter to report (not zero).
        let heard = |d: Duration| (s.received > 0).then_some(d);
        let (r_factor, mos) = if s.received == 0 {
            (0.0, 1.0) // nothing heard
        } else {
            let r = emodel::r_factor(one_way_delay, one_way_loss);
            (round2(r), round2(emodel::mos(r)))
        };
        MediaDetails {
            path: path.to_string(),
            packet: self.packet,
            payload: self.payload,
            planned: self.planned,
            sent: s.sent,
            skipped_ticks: self.skipped,
            received: s.received,
            duplicates: self.duplicates,
            loss: s.loss,
            reordered: s.reordered,
            longest_loss_burst: s.longest_loss_burst,
            rtt_min: heard(s.rtt_min),
            rtt_avg: heard(s.rtt_avg),
            rtt_p95: heard(s.rtt_p95),
            rtt_max: heard(s.rtt_max),
            jitter: heard(s.jitter),
            jitter_max: heard(s.jitter_max),
            r_factor,
            mos,
            duration: self.start.elapsed(),
            crossings,
            one_way_loss,
            leg_rtt_avg: heard(leg_rtt_avg),
            one_way_delay: heard(one_way_delay),
            truncated: self.truncated.is_some() || s.sent == 0,
            in_flight: s.in_flight,
            late_sends: self.late_sends,
            send_late_max: self.late_max,
        }
    }
}

/// One-way crossings of the client's path in one round trip of `path` (see the module docs).
fn crossings(path: &str) -> u32 {
    if path == "turn_pair" {
        4
    } else {
        2
    }
}

/// The loss of one of `crossings` alike crossings that lose `round_trip` together.
fn one_way(round_trip: f64, crossings: u32) -> f64 {
    if round_trip <= 0.0 {
        return 0.0;
    }
    1.0 - (1.0 - round_trip.min(1.0)).powf(1.0 / f64::from(crossings))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Whether the probe host was too busy to pace the stream: more than 5 % of the slots
/// skipped, or more than 5 % of the sends over one packet time late.
pub fn busy(d: &MediaDetails) -> bool {
    d.skipped_ticks.saturating_mul(20) > d.planned || d.late_sends.saturating_mul(20) > d.sent
}

/// How a round trip of `crossings` crosses the client's path, for messages.
fn crossing_words(crossings: u32) -> &'static str {
    if crossings == 4 {
        "the client↔relay leg four times: A up, B down, B up, A down"
    } else {
        "the path twice: out and back"
    }
}

/// Compares a finished stream with its thresholds (see the module docs for the order). The
/// failure is at phase `media`, except `internal/busy` when the probe host could not pace
/// the stream and only the timing figures missed.
pub fn judge(d: &MediaDetails, t: &MediaThresholds) -> Result<(), Failure> {
    let ms = |x: Duration| format!("{:.1} ms", x.as_secs_f64() * 1000.0);
    let fail = |reason: Reason, message: String| Err(Failure::new(Phase::Media, reason, message));
    if d.truncated || d.sent == 0 {
        let planned = d.packet * d.planned;
        return fail(
            Reason::Timeout,
            format!(
                "the deadline left {:.1} of {:.1} s for the stream: {} of {} packets sent, {} came back (the set-up before it used the rest of the probe's time; raise the probe's timeout or shorten media duration)",
                d.duration.as_secs_f64().min(planned.as_secs_f64()),
                planned.as_secs_f64(),
                d.sent,
                d.planned,
                d.received
            ),
        );
    }
    let k = d.crossings.max(2);
    if d.received == 0 {
        return fail(Reason::Loss, format!("none of {} media packets came back ({})", d.sent, d.path));
    }
    // Something came back, so the timing figures are all present.
    let get = |x: Option<Duration>| x.unwrap_or_default();
    let (jitter, rtt_avg, rtt_p95, leg_rtt_avg) = (get(d.jitter), get(d.rtt_avg), get(d.rtt_p95), get(d.leg_rtt_avg));
    let mut failed: Vec<(Reason, String)> = Vec::new();
    if d.one_way_loss > t.max_loss {
        let counted = d.sent - d.in_flight;
        failed.push((
            Reason::Loss,
            format!(
                "one-way loss ≈ {:.1}% ({} of {} packets lost over the round trip, {:.1}%, which crosses {}; longest burst {}) is above max_loss {:.1}%",
                d.one_way_loss * 100.0,
                counted - d.received,
                counted,
                d.loss * 100.0,
                crossing_words(k),
                d.longest_loss_burst,
                t.max_loss * 100.0
            ),
        ));
    }
    if jitter > t.max_jitter {
        failed.push((
            Reason::Jitter,
            format!("jitter {} (of the round trip) is above max_jitter {}", ms(jitter), ms(t.max_jitter)),
        ));
    }
    if leg_rtt_avg > t.max_rtt {
        let text = if k == 4 {
            format!(
                "one leg's round trip ≈ {} (half the measured average {}, which crosses {}; p95 {}) is above max_rtt {}",
                ms(leg_rtt_avg),
                ms(rtt_avg),
                crossing_words(k),
                ms(rtt_p95),
                ms(t.max_rtt)
            )
        } else {
            format!(
                "average round trip {} (p95 {}) is above max_rtt {}",
                ms(rtt_avg),
                ms(rtt_p95),
                ms(t.max_rtt)
            )
        };
        failed.push((Reason::Rtt, text));
    }
    if let Some(min) = t.min_mos {
        if d.mos < min {
            failed.push((
                Reason::Mos,
                format!(
                    "MOS {:.2} (R {:.1}, from one-way loss {:.1}% and delay {}) is below min_mos {min:.2}",
                    d.mos,
                    d.r_factor,
                    d.one_way_loss * 100.0,
                    ms(get(d.one_way_delay))
                ),
            ));
        }
    }
    let Some((reason, _)) = failed.first() else {
        return Ok(());
    };
    let reason = reason.clone();
    let text = failed.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ");
    if reason != Reason::Loss && busy(d) {
        return Err(Failure::new(
            Phase::Internal,
            Reason::Busy,
            format!(
                "this host was too busy to pace the stream ({} of {} slots skipped, {} sends over {} late, the latest by {}): not blaming the network for {text}",
                d.skipped_ticks,
                d.planned,
                d.late_sends,
                ms(d.packet),
                ms(d.send_late_max)
            ),
        ));
    }
    // The MOS failure already names the MOS; the others get it appended for context.
    if text.contains("is below min_mos") {
        fail(reason, text)
    } else {
        fail(reason, format!("{text} (MOS {:.2})", d.mos))
    }
}

/// Runs one `kind: media` probe: resolve, then the stream over UDP to the echo (phase `media`).
pub async fn probe(spec: &MediaProbeSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = udp_echo(&mut run, spec).await;
    run.finish(result)
}

async fn udp_echo(run: &mut Run, spec: &MediaProbeSpec) -> Result<(), Failure> {
    let addrs = crate::net::resolve(run, &spec.target).await?;
    let Some(addr) = addrs.first().copied() else {
        return Err(Failure::new(
            Phase::Resolve,
            Reason::NoAnswer,
            format!("{} has no address", spec.target),
        ));
    };
    run.detail.peer = Some(addr);
    let started = Instant::now();
    let result = stream_udp(addr, &spec.media, run.deadline()).await;
    run.record(Phase::Media, started.elapsed());
    let (details, refused) = result.map_err(|f| f.at(Phase::Media))?;
    let verdict = if refused && details.received == 0 {
        Err(Failure::new(
            Phase::Media,
            Reason::Refused,
            format!("{addr} answered ICMP port unreachable: nothing listens there (no UDP echo), or a REJECT rule"),
        ))
    } else {
        judge(&details, &spec.media.thresholds)
    };
    run.detail.media = Some(details);
    verdict
}

/// The stream over a connected UDP socket; `true` when the kernel reported ICMP port
/// unreachable (ECONNREFUSED) at least once.
async fn stream_udp(addr: SocketAddr, spec: &MediaSpec, until: Instant) -> Result<(MediaDetails, bool), Fault> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| crate::net::fault_from_io("opening a UDP socket", &e))?;
    sock.connect(addr)
        .await
        .map_err(|e| crate::net::fault_from_io(&format!("setting the UDP peer {addr}"), &e))?;
    let mut stream = Stream::new(spec);
    let mut tick = stream.interval();
    let mut buf = vec![0u8; 2048];
    let mut refused = false;
    loop {
        let drain = if stream.done_sending() {
            stream.drain_until().min(until)
        } else {
            until
        };
        if stream.done_sending() && stream.all_back() {
            break;
        }
        // Biased: once the deadline (or the drain wait) is due it wins over a ready tick, so a
        // stream whose set-up ate the time sends nothing rather than a random few packets;
        // the tick comes before receiving so a flood of datagrams cannot starve the pacing.
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(drain) => {
                stream.end(Instant::now(), until);
                break;
            }
            t = tick.tick(), if !stream.done_sending() => {
                if let Some(p) = stream.on_tick(t) {
                    match tokio::time::timeout_at(until, sock.send(&p)).await {
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused = true,
                        Ok(Err(e)) => return Err(crate::net::fault_from_io("sending the media stream", &e)),
                    }
                }
            }
            r = sock.recv(&mut buf) => match r {
                Ok(n) => stream.on_receive(&buf[..n], Instant::now()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused = true,
                Err(e) => return Err(crate::net::fault_from_io("receiving the media stream", &e)),
            },
        }
    }
    Ok((stream.finish("udp_echo"), refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(secs: u64) -> MediaSpec {
        MediaSpec {
            duration: Duration::from_secs(secs),
            ..MediaSpec::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn packets_are_rtp_v2_pcmu_with_sequence_timestamp_and_ssrc_and_foreign_ones_are_ignored() {
        let mut s = Stream::new(&spec(1));
        let start = s.start;
        let p0 = s.on_tick(start).expect("first packet");
        tokio::time::advance(ms(20)).await;
        let p1 = s.on_tick(start + ms(20)).expect("second packet");
        assert_eq!(p0.len(), RTP_HEADER + 160);
        assert_eq!((p0[0], p0[1]), (0x80, 0x00), "RTP version 2, payload type 0 (PCMU)");
        assert_eq!(u16::from_be_bytes([p1[2], p1[3]]), 1);
        assert_eq!(
            u32::from_be_bytes([p1[4], p1[5], p1[6], p1[7]]),
            160,
            "8 kHz timestamp: 160 samples per 20 ms"
        );
        assert_eq!(p0[8..12], p1[8..12], "one SSRC per stream");
        tokio::time::advance(ms(30)).await;
        let mut foreign = p1.clone();
        foreign[8] ^= 0xFF; // another SSRC
        s.on_receive(&foreign, Instant::now());
        s.on_receive(&p1[..p1.len() - 1], Instant::now()); // another size
        s.on_receive(&p1, Instant::now());
        s.on_receive(&p1, Instant::now()); // a copy
        let d = s.finish("udp_echo");
        assert_eq!((d.sent, d.received, d.duplicates), (2, 1, 1));
        assert_eq!(d.rtt_avg, Some(ms(30)), "sent at 20 ms, back at 50 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn the_round_trip_is_timed_from_our_own_send_time_and_a_rewritten_stamp_is_not_ours() {
        let mut s = Stream::new(&spec(1));
        let start = s.start;
        let p0 = s.on_tick(start).expect("packet 0");
        tokio::time::advance(ms(20)).await;
        let p1 = s.on_tick(start + ms(20)).expect("packet 1");
        tokio::time::advance(ms(10)).await;
        // A peer that rewrites the send stamp (here: claims packet 0 left at 25 ms, which
        // would read as a 5 ms round trip) is not echoing our packet.
        let mut forged = p0.clone();
        forged[16..24].copy_from_slice(&25_000u64.to_be_bytes());
        s.on_receive(&forged, Instant::now());
        s.on_receive(&p1, Instant::now());
        let d = s.finish("udp_echo");
        assert_eq!((d.sent, d.received), (2, 1), "the forged copy of packet 0 is not counted");
        assert_eq!(d.rtt_avg, Some(ms(10)), "packet 1: sent at 20 ms by our clock, back at 30 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_copies_never_pushes_out_a_real_packet() {
        let mut s = Stream::new(&spec(1));
        let start = s.start;
        let p0 = s.on_tick(start).expect("packet 0");
        tokio::time::advance(ms(20)).await;
        let p1 = s.on_tick(start + ms(20)).expect("packet 1");
        tokio::time::advance(ms(5)).await;
        for _ in 0..10 {
            s.on_receive(&p0, Instant::now());
        }
        s.on_receive(&p1, Instant::now());
        assert!(s.arrivals.len() <= s.sent as usize, "first arrivals only are stored");
        let d = s.finish("udp_echo");
        assert_eq!((d.received, d.duplicates, d.loss), (2, 9, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_the_clock_skipped_is_counted_not_sent_and_the_stream_ends_after_its_duration() {
        // The real pacing clock: tokio's Skip hands out the first missed instant late, then
        // resumes on the next multiple of the period after now.
        let mut s = Stream::new(&spec(1));
        let mut tick = s.interval();
        let mut seqs = Vec::new();
        for _ in 0..2 {
            let t = tick.tick().await;
            seqs.push(s.on_tick(t).map(|p| u16::from_be_bytes([p[2], p[3]])));
        }
        // The host stalls 45 ms after slot 1 (20 ms): slots 2 (40 ms) and 3 (60 ms) pass.
        tokio::time::advance(ms(45)).await;
        let late = tick.tick().await; // the first missed instant, 40 ms, handed out at 65 ms
        assert_eq!(late - s.start, ms(40));
        seqs.push(s.on_tick(late).map(|p| u16::from_be_bytes([p[2], p[3]])));
        let next = tick.tick().await; // Skip: the next multiple of 20 ms after 65 ms
        assert_eq!(next - s.start, ms(80));
        seqs.push(s.on_tick(next).map(|p| u16::from_be_bytes([p[2], p[3]])));
        assert_eq!(seqs, [Some(0), Some(1), Some(2), Some(3)], "sequence numbers stay consecutive");
        loop {
            let t = tick.tick().await;
            if s.on_tick(t).is_none() {
                break;
            }
        }
        assert!(s.done_sending());
        let d = s.finish("udp_echo");
        assert_eq!((d.planned, d.sent, d.skipped_ticks), (50, 49, 1), "slot 3 (60 ms) was skipped");
        assert_eq!(d.late_sends, 1, "slot 2 went out 25 ms late, more than one packet time");
        assert_eq!(d.send_late_max, ms(25));
        assert_eq!((d.loss, d.mos), (1.0, 1.0), "nothing came back");
        assert_eq!(
            (d.rtt_min, d.rtt_avg, d.rtt_p95, d.rtt_max, d.jitter, d.jitter_max),
            (None, None, None, None, None, None),
            "nothing came back: no round trip and no jitter, not zeros"
        );
        let json = serde_json::to_value(&d).expect("serialises");
        for key in ["rtt_min_ms", "rtt_avg_ms", "rtt_p95_ms", "rtt_max_ms", "jitter_ms", "jitter_max_ms"] {
            assert!(json.get(key).is_none(), "{key} is absent with nothing back: {json}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_during_sending_truncates_and_packets_in_the_last_drain_window_are_in_flight() {
        let mut s = Stream::new(&spec(1));
        let mut tick = s.interval();
        let mut sent = Vec::new();
        for _ in 0..25 {
            let t = tick.tick().await;
            sent.push(s.on_tick(t).expect("a packet"));
        }
        // 25 sent at 0..480 ms; the deadline cuts at 485 ms. The 12 sent up to 220 ms are
        // back; the 13 sent from 240 ms on are within the drain wait (250 ms) of the cut and
        // not back: in flight, not lost.
        tokio::time::advance(ms(5)).await;
        for p in &sent[..12] {
            s.on_receive(p, Instant::now());
        }
        let until = Instant::now();
        s.end(until, until);
        let d = s.finish("udp_echo");
        assert!(d.truncated);
        assert_eq!((d.sent, d.received, d.in_flight, d.loss), (25, 12, 13, 0.0), "{d:?}");
        let f = judge(&d, &MediaThresholds::default()).unwrap_err();
        assert_eq!(f.code(), "media/timeout");
        assert!(
            f.message
                .starts_with("the deadline left 0.5 of 1.0 s for the stream: 25 of 50 packets sent"),
            "{}",
            f.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_before_the_first_tick_sends_nothing_and_is_media_timeout_not_a_perfect_call() {
        let mut s = Stream::new(&spec(1));
        let now = Instant::now();
        s.end(now, now);
        let d = s.finish("udp_echo");
        assert_eq!((d.sent, d.truncated), (0, true));
        assert_eq!(judge(&d, &MediaThresholds::default()).unwrap_err().code(), "media/timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn between_two_allocations_the_leg_is_half_the_round_trip_and_the_loss_a_fourth_root() {
        let mut s = Stream::new(&spec(1));
        let mut tick = s.interval();
        let mut sent = Vec::new();
        while let Some(p) = s.on_tick(tick.tick().await) {
            sent.push(p);
        }
        // Back 80 ms after the last send, all but 2 of 50.
        tokio::time::advance(ms(80)).await;
        for p in &sent[2..] {
            s.on_receive(p, Instant::now());
        }
        let d = s.finish("turn_pair");
        assert_eq!((d.crossings, d.sent, d.received), (4, 50, 48));
        assert_eq!(d.loss, 0.04);
        assert!((d.one_way_loss - (1.0 - 0.96f64.powf(0.25))).abs() < 1e-12, "{}", d.one_way_loss);
        let (rtt_avg, jitter) = (d.rtt_avg.expect("packets came back"), d.jitter.expect("jitter"));
        assert_eq!(d.leg_rtt_avg, Some(rtt_avg / 2));
        assert_eq!(d.one_way_delay, Some(rtt_avg / 4 + jitter * 2 + ms(20)));
        let r = emodel::r_factor(rtt_avg / 4 + jitter * 2 + ms(20), d.one_way_loss);
        assert_eq!(d.r_factor, round2(r), "the E-model gets the same per-leg loss and delay");
        let f = judge(
            &d,
            &MediaThresholds {
                max_rtt: ms(50),
                ..MediaThresholds::default()
            },
        )
        .unwrap_err();
        assert_eq!(f.code(), "media/loss");
        assert!(
            f.message.contains(
                "one-way loss ≈ 1.0% (2 of 50 packets lost over the round trip, 4.0%, which crosses the client↔relay leg four times"
            ),
            "{}",
            f.message
        );
        assert!(f.message.contains("one leg's round trip ≈ "), "{}", f.message);
    }

    fn good() -> MediaDetails {
        MediaDetails {
            planned: 100,
            sent: 100,
            received: 100,
            crossings: 2,
            rtt_avg: Some(ms(40)),
            leg_rtt_avg: Some(ms(40)),
            jitter: Some(ms(2)),
            mos: 4.3,
            ..Default::default()
        }
    }

    #[test]
    fn judge_names_the_first_exceeded_in_order_loss_jitter_rtt_mos_and_every_one_in_the_message() {
        let t = MediaThresholds {
            min_mos: Some(4.0),
            ..MediaThresholds::default()
        };
        assert_eq!(judge(&good(), &t), Ok(()));
        let bad = MediaDetails {
            received: 97,
            loss: 0.03,
            one_way_loss: 1.0 - 0.97f64.sqrt(),
            rtt_avg: Some(ms(150)),
            leg_rtt_avg: Some(ms(150)),
            mos: 3.5,
            ..good()
        };
        let f = judge(&bad, &t).unwrap_err();
        assert_eq!(f.code(), "media/loss");
        for part in [
            "one-way loss ≈ 1.5% (3 of 100 packets lost over the round trip, 3.0%, which crosses the path twice",
            "average round trip 150.0 ms",
            "MOS 3.50",
            "below min_mos 4.00",
        ] {
            assert!(f.message.contains(part), "{part} missing: {}", f.message);
        }
        assert!(!f.message.contains("jitter"), "jitter was within its limit: {}", f.message);
        let jittery = MediaDetails {
            jitter: Some(ms(31)),
            ..good()
        };
        assert_eq!(judge(&jittery, &t).unwrap_err().code(), "media/jitter");
        let low = MediaDetails { mos: 3.9, ..good() };
        let f = judge(&low, &t).unwrap_err();
        assert_eq!(f.code(), "media/mos");
        assert_eq!(f.message.matches("MOS").count(), 1, "the MOS is named once: {}", f.message);
        let silent = MediaDetails {
            received: 0,
            loss: 1.0,
            ..good()
        };
        assert_eq!(judge(&silent, &MediaThresholds::default()).unwrap_err().code(), "media/loss");
    }

    #[test]
    fn one_way_loss_exactly_at_max_loss_passes() {
        let at = MediaDetails {
            received: 95,
            loss: 0.05,
            one_way_loss: 0.05,
            ..good()
        };
        let t = MediaThresholds {
            max_loss: 0.05,
            ..MediaThresholds::default()
        };
        assert_eq!(judge(&at, &t), Ok(()));
    }

    #[test]
    fn a_busy_host_is_not_blamed_on_the_network_for_jitter_but_loss_still_is() {
        let busy = MediaDetails {
            sent: 90,
            received: 90,
            skipped_ticks: 10,
            jitter: Some(ms(40)),
            ..good()
        };
        let f = judge(&busy, &MediaThresholds::default()).unwrap_err();
        assert_eq!(f.code(), "internal/busy");
        assert!(
            f.message.contains("10 of 100 slots skipped") && f.message.contains("jitter 40.0 ms"),
            "{}",
            f.message
        );
        let late = MediaDetails {
            late_sends: 6,
            jitter: Some(ms(40)),
            ..good()
        };
        assert_eq!(judge(&late, &MediaThresholds::default()).unwrap_err().code(), "internal/busy");
        let lossy = MediaDetails {
            received: 80,
            loss: 0.2,
            one_way_loss: 0.1,
            ..busy
        };
        assert_eq!(judge(&lossy, &MediaThresholds::default()).unwrap_err().code(), "media/loss");
    }
}
