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
//!
//! **Bounds.** Sending stops after `duration` (at most 60 s, checked in the config) or at the
//! run's deadline, whichever is first; then the stream waits for late packets for twice the
//! slowest round trip seen (at least 250 ms, at most 2 s, never past the deadline). Anything
//! later is lost. The scheduler gives the run `timeout + duration` (see
//! `ProbeSpec::hold`), and the config requires the interval to cover that.
//!
//! **Verdict.** [`judge`] compares loss, the final RFC 3550 jitter and the average round trip
//! with `max_loss`, `max_jitter` and `max_rtt` (Teams' client targets by default), then the MOS
//! with `min_mos` if set, and fails phase `media` with `loss`, `jitter`, `rtt` or `mos` — the
//! first exceeded in that order, the message naming every one exceeded.

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
/// pacing tick and send what it returns, and [`Stream::on_receive`] with every datagram.
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
    arrivals: Vec<Arrival>,
    /// Which sequence numbers came back, and how many distinct ones.
    seen: Vec<bool>,
    back: u32,
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
            arrivals: Vec::new(),
            seen: vec![false; planned as usize],
            back: 0,
        }
    }

    /// The pacing clock for this stream: first tick at once, then every `packet_ms`, missed
    /// ticks skipped (see the module docs).
    pub fn interval(&self) -> tokio::time::Interval {
        let mut iv = tokio::time::interval_at(self.start, self.packet);
        iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
        iv
    }

    /// Whether every planned slot has passed (or [`Stream::stop`] was called).
    pub fn done_sending(&self) -> bool {
        self.done
    }

    /// Stops sending (the deadline came first).
    pub fn stop(&mut self) {
        self.done = true;
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
        let offset = now.saturating_duration_since(self.start).as_micros() as u64;
        let mut p = vec![0xFFu8; RTP_HEADER + self.payload];
        p[0] = 0x80; // version 2, no padding, no extension, no CSRC
        p[1] = 0x00; // no marker, payload type 0 (PCMU)
        p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        let samples = (self.packet.as_micros() * 8 / 1000) as u32; // 8 kHz clock
        p[4..8].copy_from_slice(&seq.wrapping_mul(samples).to_be_bytes());
        p[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        p[12..16].copy_from_slice(&seq.to_be_bytes());
        p[16..24].copy_from_slice(&offset.to_be_bytes());
        self.sent += 1;
        self.last_send = Some(now);
        Some(p)
    }

    /// Records a datagram that came back at `at`; anything not one of ours is ignored.
    pub fn on_receive(&mut self, data: &[u8], at: Instant) {
        if data.len() != RTP_HEADER + self.payload || data[0] != 0x80 || data[8..12] != self.ssrc.to_be_bytes() {
            return;
        }
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&data[12..16]);
        let seq = u32::from_be_bytes(seq);
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&data[16..24]);
        let sent = Duration::from_micros(u64::from_be_bytes(sent));
        // Bounded: at most two arrivals per packet sent (a peer that floods copies is cut off).
        if seq >= self.sent || self.arrivals.len() >= 2 * self.sent as usize {
            return;
        }
        self.arrivals.push(Arrival {
            seq,
            sent,
            received: at.saturating_duration_since(self.start),
        });
        if let Some(s) = self.seen.get_mut(seq as usize).filter(|s| !**s) {
            *s = true;
            self.back += 1;
        }
    }

    /// Whether every packet sent has come back (no need to wait for stragglers).
    pub fn all_back(&self) -> bool {
        self.done && self.back >= self.sent
    }

    /// When to stop waiting for late packets: twice the slowest round trip so far after the
    /// last send (250 ms to 2 s).
    pub fn drain_until(&self) -> Instant {
        let slowest = self
            .arrivals
            .iter()
            .map(|a| a.received.saturating_sub(a.sent))
            .max()
            .unwrap_or_default();
        let wait = (slowest * 2).clamp(DRAIN_MIN, DRAIN_MAX);
        self.last_send.unwrap_or(self.start) + wait
    }

    /// The stream's figures, as `path` (`udp_echo`, `turn_pair`, `turn_peer`) carried it.
    pub fn finish(self, path: &str) -> MediaDetails {
        let s = stats::summarise(self.sent, &self.arrivals);
        let (r_factor, mos) = if s.received == 0 {
            (0.0, 1.0) // nothing heard
        } else {
            let d = emodel::one_way_delay(s.rtt_avg, s.jitter, self.packet);
            let r = emodel::r_factor(d, s.loss);
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
            duplicates: s.duplicates,
            loss: s.loss,
            reordered: s.reordered,
            longest_loss_burst: s.longest_loss_burst,
            rtt_min: s.rtt_min,
            rtt_avg: s.rtt_avg,
            rtt_p95: s.rtt_p95,
            rtt_max: s.rtt_max,
            jitter: s.jitter,
            jitter_max: s.jitter_max,
            r_factor,
            mos,
            duration: self.start.elapsed(),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Compares a finished stream with its thresholds (see the module docs for the order).
pub fn judge(d: &MediaDetails, t: &MediaThresholds) -> Result<(), Fault> {
    let ms = |x: Duration| format!("{:.1} ms", x.as_secs_f64() * 1000.0);
    if d.sent > 0 && d.received == 0 {
        return Err(Fault::new(
            Reason::Loss,
            format!("none of {} media packets came back ({})", d.sent, d.path),
        ));
    }
    let mut failed: Vec<(Reason, String)> = Vec::new();
    if d.loss > t.max_loss {
        failed.push((
            Reason::Loss,
            format!(
                "loss {:.1}% ({} of {} packets, longest burst {}) is above max_loss {:.1}%",
                d.loss * 100.0,
                d.sent - d.received,
                d.sent,
                d.longest_loss_burst,
                t.max_loss * 100.0
            ),
        ));
    }
    if d.jitter > t.max_jitter {
        failed.push((
            Reason::Jitter,
            format!("jitter {} is above max_jitter {}", ms(d.jitter), ms(t.max_jitter)),
        ));
    }
    if d.rtt_avg > t.max_rtt {
        failed.push((
            Reason::Rtt,
            format!(
                "average round trip {} (p95 {}) is above max_rtt {}",
                ms(d.rtt_avg),
                ms(d.rtt_p95),
                ms(t.max_rtt)
            ),
        ));
    }
    if let Some(min) = t.min_mos {
        if d.mos < min {
            failed.push((
                Reason::Mos,
                format!("MOS {:.2} (R {:.1}) is below min_mos {min:.2}", d.mos, d.r_factor),
            ));
        }
    }
    let Some((reason, _)) = failed.first() else {
        return Ok(());
    };
    let reason = reason.clone();
    let text = failed.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ");
    Err(Fault::new(reason, format!("{text} (MOS {:.2})", d.mos)))
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
        Err(Fault::new(
            Reason::Refused,
            format!("{addr} answered ICMP port unreachable: nothing listens there (no UDP echo), or a REJECT rule"),
        ))
    } else {
        judge(&details, &spec.media.thresholds)
    };
    run.detail.media = Some(details);
    verdict.map_err(|f| f.at(Phase::Media))
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
        tokio::select! {
            r = sock.recv(&mut buf) => match r {
                Ok(n) => stream.on_receive(&buf[..n], Instant::now()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused = true,
                Err(e) => return Err(crate::net::fault_from_io("receiving the media stream", &e)),
            },
            t = tick.tick(), if !stream.done_sending() => {
                if let Some(p) = stream.on_tick(t) {
                    match sock.send(&p).await {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused = true,
                        Err(e) => return Err(crate::net::fault_from_io("sending the media stream", &e)),
                    }
                }
            }
            _ = tokio::time::sleep_until(drain) => {
                if !stream.done_sending() {
                    stream.stop(); // the deadline came before the duration ended
                }
                break;
            }
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

    #[tokio::test(start_paused = true)]
    async fn packets_are_rtp_v2_pcmu_with_sequence_timestamp_and_ssrc_and_foreign_ones_are_ignored() {
        let mut s = Stream::new(&spec(1));
        let start = s.start;
        let p0 = s.on_tick(start).expect("first packet");
        tokio::time::advance(Duration::from_millis(20)).await;
        let p1 = s.on_tick(start + Duration::from_millis(20)).expect("second packet");
        assert_eq!(p0.len(), RTP_HEADER + 160);
        assert_eq!((p0[0], p0[1]), (0x80, 0x00), "RTP version 2, payload type 0 (PCMU)");
        assert_eq!(u16::from_be_bytes([p1[2], p1[3]]), 1);
        assert_eq!(
            u32::from_be_bytes([p1[4], p1[5], p1[6], p1[7]]),
            160,
            "8 kHz timestamp: 160 samples per 20 ms"
        );
        assert_eq!(p0[8..12], p1[8..12], "one SSRC per stream");
        tokio::time::advance(Duration::from_millis(30)).await;
        let mut foreign = p1.clone();
        foreign[8] ^= 0xFF; // another SSRC
        s.on_receive(&foreign, Instant::now());
        s.on_receive(&p1[..p1.len() - 1], Instant::now()); // another size
        s.on_receive(&p1, Instant::now());
        s.on_receive(&p1, Instant::now()); // a copy
        let d = s.finish("udp_echo");
        assert_eq!((d.sent, d.received, d.duplicates), (2, 1, 1));
        assert_eq!(d.rtt_avg, Duration::from_millis(30), "sent at 20 ms, back at 50 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_the_clock_skipped_is_counted_not_sent_and_the_stream_ends_after_its_duration() {
        let mut s = Stream::new(&spec(1));
        let start = s.start;
        let ms = Duration::from_millis;
        assert!(s.on_tick(start).is_some());
        assert!(s.on_tick(start + ms(20)).is_some());
        // The host stalled: slot 2 passed unsent, the clock resumes at slot 3.
        let p = s.on_tick(start + ms(60)).expect("slot 3");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 2, "sequence numbers stay consecutive");
        assert!(s.on_tick(start + ms(1000)).is_none(), "50 slots of 20 ms in 1 s");
        assert!(s.done_sending());
        let d = s.finish("udp_echo");
        assert_eq!((d.planned, d.sent, d.skipped_ticks), (50, 3, 47));
        assert_eq!((d.loss, d.mos), (1.0, 1.0), "nothing came back");
    }

    #[test]
    fn judge_names_the_first_exceeded_in_order_loss_jitter_rtt_mos_and_every_one_in_the_message() {
        let t = MediaThresholds {
            min_mos: Some(4.0),
            ..MediaThresholds::default()
        };
        let good = MediaDetails {
            sent: 100,
            received: 100,
            rtt_avg: Duration::from_millis(40),
            jitter: Duration::from_millis(2),
            mos: 4.3,
            ..Default::default()
        };
        assert_eq!(judge(&good, &t), Ok(()));
        let bad = MediaDetails {
            received: 97,
            loss: 0.03,
            rtt_avg: Duration::from_millis(150),
            mos: 3.5,
            ..good.clone()
        };
        let f = judge(&bad, &t).unwrap_err();
        assert_eq!(f.reason, Reason::Loss);
        for part in [
            "loss 3.0% (3 of 100 packets",
            "average round trip 150.0 ms",
            "MOS 3.50",
            "below min_mos 4.00",
        ] {
            assert!(f.message.contains(part), "{part} missing: {}", f.message);
        }
        assert!(!f.message.contains("jitter"), "jitter was within its limit: {}", f.message);
        let jittery = MediaDetails {
            jitter: Duration::from_millis(31),
            ..good.clone()
        };
        assert_eq!(judge(&jittery, &t).unwrap_err().reason, Reason::Jitter);
        let low = MediaDetails { mos: 3.9, ..good.clone() };
        assert_eq!(judge(&low, &t).unwrap_err().reason, Reason::Mos);
        let silent = MediaDetails {
            received: 0,
            loss: 1.0,
            ..good
        };
        assert_eq!(judge(&silent, &MediaThresholds::default()).unwrap_err().reason, Reason::Loss);
    }
}
