//! The figures of one media stream, from what was sent and what came back: loss, RFC 3550
//! interarrival jitter, round-trip time (min/avg/p95/max), reordering, duplicates and the
//! longest loss burst.
//!
//! Pure functions of the packets' sequence numbers and times (offsets from the start of the
//! stream), so every figure is unit-tested with exact numbers and no socket. The packets come
//! back to the sender (an echo), so "transit" is the round trip measured on one clock and the
//! jitter is that of the round trip: both directions' variation, never less than a one-way
//! receiver would see.

use std::time::Duration;

/// One packet that came back: its sequence number, when it was sent and when it returned
/// (both as offsets from the start of the stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub seq: u32,
    pub sent: Duration,
    pub received: Duration,
}

/// What [`summarise`] makes of a stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamStats {
    pub sent: u32,
    /// Distinct sequence numbers that came back.
    pub received: u32,
    pub duplicates: u32,
    /// Packets from `in_flight_from` on that had not come back when the stream was cut:
    /// neither received nor lost.
    pub in_flight: u32,
    /// `(counted − received) / counted` with `counted = sent − in_flight` (0 when nothing was
    /// counted). Integer difference first, so 5 of 100 is exactly 0.05.
    pub loss: f64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u32,
    /// Longest run of consecutive sequence numbers that never came back.
    pub longest_loss_burst: u32,
    pub rtt_min: Duration,
    pub rtt_avg: Duration,
    /// 95th percentile, nearest rank (the smallest sample with at least 95 % at or below it).
    pub rtt_p95: Duration,
    pub rtt_max: Duration,
    /// RFC 3550 §6.4.1 jitter after the last arrival, and its highest value along the way.
    pub jitter: Duration,
    pub jitter_max: Duration,
}

/// Summarises `sent` packets (sequence numbers `0..sent`) from `arrivals` in the order they
/// arrived. Arrivals with a sequence number outside `0..sent` are ignored. Packets from
/// `in_flight_from` on that never came back were still in flight when the deadline cut the
/// stream (pass `sent` when it was not cut): they count neither as received nor as lost.
///
/// Jitter follows RFC 3550 §6.4.1 exactly: for each packet received, in arrival order,
/// `D = (Rj - Ri) - (Sj - Si)` against the previous arrival and `J += (|D| - J) / 16`.
pub fn summarise(sent: u32, arrivals: &[Arrival], in_flight_from: u32) -> StreamStats {
    let mut seen = vec![false; sent as usize];
    let mut rtts: Vec<Duration> = Vec::with_capacity(arrivals.len().min(sent as usize));
    let (mut duplicates, mut reordered) = (0u32, 0u32);
    let mut highest: Option<u32> = None;
    let mut jitter = 0f64; // seconds
    let mut jitter_max = 0f64;
    let mut previous_transit: Option<f64> = None;
    for a in arrivals {
        let Some(slot) = seen.get_mut(a.seq as usize) else {
            continue;
        };
        if *slot {
            duplicates += 1;
            continue;
        }
        *slot = true;
        if highest.is_some_and(|h| a.seq < h) {
            reordered += 1;
        }
        highest = Some(highest.map_or(a.seq, |h| h.max(a.seq)));
        let transit = a.received.as_secs_f64() - a.sent.as_secs_f64();
        rtts.push(a.received.saturating_sub(a.sent));
        if let Some(prev) = previous_transit {
            let d = (transit - prev).abs();
            jitter += (d - jitter) / 16.0;
            jitter_max = jitter_max.max(jitter);
        }
        previous_transit = Some(transit);
    }
    let received = rtts.len() as u32;
    let in_flight = seen.iter().skip(in_flight_from as usize).filter(|got| !**got).count() as u32;
    let counted = sent - in_flight;
    let loss = if counted == 0 {
        0.0
    } else {
        f64::from(counted - received) / f64::from(counted)
    };
    let mut longest_loss_burst = 0u32;
    let mut run = 0u32;
    for (seq, got) in seen.iter().enumerate() {
        if *got || seq >= in_flight_from as usize {
            run = 0;
        } else {
            run += 1;
            longest_loss_burst = longest_loss_burst.max(run);
        }
    }
    let mut stats = StreamStats {
        sent,
        received,
        duplicates,
        in_flight,
        loss,
        reordered,
        longest_loss_burst,
        jitter: Duration::from_secs_f64(jitter),
        jitter_max: Duration::from_secs_f64(jitter_max),
        ..Default::default()
    };
    if !rtts.is_empty() {
        let avg = rtts.iter().sum::<Duration>() / received;
        rtts.sort_unstable();
        stats.rtt_min = rtts[0];
        stats.rtt_max = rtts[rtts.len() - 1];
        stats.rtt_avg = avg;
        stats.rtt_p95 = nearest_rank(&rtts, 0.95);
    }
    stats
}

/// The nearest-rank percentile `q` (0..=1) of sorted, non-empty `v`.
fn nearest_rank(v: &[Duration], q: f64) -> Duration {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    /// Packets sent every 20 ms, each back after `rtt(seq)` ms, those with `keep(seq)` false lost.
    fn stream(sent: u32, keep: impl Fn(u32) -> bool, rtt: impl Fn(u32) -> f64) -> Vec<Arrival> {
        let mut v: Vec<Arrival> = (0..sent)
            .filter(|s| keep(*s))
            .map(|seq| Arrival {
                seq,
                sent: ms(20.0 * f64::from(seq)),
                received: ms(20.0 * f64::from(seq) + rtt(seq)),
            })
            .collect();
        v.sort_by_key(|a| a.received);
        v
    }

    #[test]
    fn every_twentieth_packet_dropped_is_five_percent_loss_in_bursts_of_one() {
        let s = summarise(100, &stream(100, |s| s % 20 != 19, |_| 30.0), 100);
        assert_eq!(s.received, 95);
        assert!((s.loss - 0.05).abs() < 1e-12, "{s:?}");
        assert_eq!(s.longest_loss_burst, 1);
        assert_eq!(s.reordered, 0);
        assert_eq!(s.jitter, Duration::ZERO, "a constant delay has no jitter");
        assert_eq!((s.rtt_min, s.rtt_avg, s.rtt_max), (ms(30.0), ms(30.0), ms(30.0)));
    }

    #[test]
    fn the_longest_loss_burst_counts_consecutive_missing_sequence_numbers() {
        let s = summarise(50, &stream(50, |s| !(10..14).contains(&s) && s != 30 && s != 49, |_| 5.0), 50);
        assert_eq!(s.longest_loss_burst, 4);
        assert_eq!(s.received, 44);
    }

    #[test]
    fn rfc3550_jitter_moves_a_sixteenth_of_the_way_per_packet() {
        // Transit 10 ms then 20 ms: D = 10 ms, J = 10/16 = 0.625 ms.
        let a = [
            Arrival {
                seq: 0,
                sent: ms(0.0),
                received: ms(10.0),
            },
            Arrival {
                seq: 1,
                sent: ms(20.0),
                received: ms(40.0),
            },
        ];
        let s = summarise(2, &a, 2);
        assert!((s.jitter.as_secs_f64() * 1000.0 - 0.625).abs() < 1e-9, "{s:?}");
        // Alternating 10/20 ms transit: J_n = 10 * (1 - (15/16)^n) ms after n differences.
        let s = summarise(200, &stream(200, |_| true, |seq| if seq % 2 == 0 { 10.0 } else { 20.0 }), 200);
        let expected = 10.0 * (1.0 - (15.0f64 / 16.0).powi(199));
        assert!((s.jitter.as_secs_f64() * 1000.0 - expected).abs() < 1e-6, "{s:?}");
        assert!(s.jitter_max >= s.jitter);
    }

    #[test]
    fn late_packets_count_as_reordered_and_copies_as_duplicates() {
        let mk = |seq: u32, at: f64| Arrival {
            seq,
            sent: ms(20.0 * f64::from(seq)),
            received: ms(at),
        };
        let a = [mk(0, 5.0), mk(2, 45.0), mk(1, 50.0), mk(3, 65.0), mk(3, 66.0), mk(7, 1.0)];
        let s = summarise(4, &a, 4);
        assert_eq!((s.received, s.reordered, s.duplicates), (4, 1, 1), "{s:?}");
        assert_eq!(s.loss, 0.0);
    }

    #[test]
    fn rtt_percentile_is_the_nearest_rank() {
        // RTTs 1..=100 ms: p95 is the 95th smallest, 95 ms; the average 50.5 ms.
        let s = summarise(100, &stream(100, |_| true, |seq| f64::from(seq + 1)), 100);
        assert_eq!(s.rtt_p95, ms(95.0));
        assert_eq!(s.rtt_min, ms(1.0));
        assert_eq!(s.rtt_max, ms(100.0));
        assert!((s.rtt_avg.as_secs_f64() - 0.0505).abs() < 1e-9);
    }

    #[test]
    fn nothing_back_is_total_loss_and_nothing_sent_is_no_loss() {
        let s = summarise(10, &[], 10);
        assert_eq!((s.loss, s.longest_loss_burst), (1.0, 10));
        assert_eq!(summarise(0, &[], 0).loss, 0.0);
    }

    #[test]
    fn five_of_a_hundred_lost_is_exactly_five_percent() {
        // 1 − 95/100 is 0.050000000000000044 in floating point: above a max_loss of 5 %.
        let s = summarise(100, &stream(100, |s| s >= 5, |_| 1.0), 100);
        assert_eq!(s.loss, 0.05);
    }

    #[test]
    fn packets_still_in_flight_at_a_cut_are_neither_received_nor_lost() {
        // 50 sent, the last 10 in the drain window: 3 of them back, 7 in flight; 2 lost before.
        let s = summarise(50, &stream(50, |s| s != 5 && s != 6 && !(43..50).contains(&s), |_| 2.0), 40);
        assert_eq!((s.received, s.in_flight), (41, 7), "{s:?}");
        assert_eq!(s.loss, 2.0 / 43.0);
        assert_eq!(s.longest_loss_burst, 2, "the in-flight tail is no burst");
    }
}
