//! ITU-T G.107 E-model, simplified, for G.711: a transmission rating R from delay and loss, and
//! the MOS (conversational quality, 1–4.5) it predicts. The same reduction Twilio's and
//! Microsoft's network tests and most VoIP monitors use (Cole & Rosenbluth, "Voice over IP
//! performance monitoring", 2001).
//!
//! ```text
//! R   = 93.2 − Id(d) − Ie,eff               93.2: G.107's default R (all inputs default, T = 0)
//! Id(d) = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)          d: one-way delay in ms, H: step
//! Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl)       Ppl: loss in %, BurstR = 1
//!        G.711: Ie = 0, Bpl = 25.1 (with packet loss concealment, G.113 Appendix I)
//! MOS = 1                                       R < 0
//!     = 1 + 0.035·R + R·(R − 60)·(100 − R)·7e−6  0 ≤ R ≤ 100   (clamped to 1..4.5)
//!     = 4.5                                     R > 100
//! ```
//!
//! 93.2 is not `R0 − Is`: it is G.107's whole default rating, `R0 − Is − Id − Ie + A` with
//! every input at its default (R0 − Is ≈ 94.77 − 1.41 = 93.36, less the default Id of about
//! 0.15 at T = 0; Ie = 0, A = 0). `Id(d)` above is Cole & Rosenbluth's fit of how much *more*
//! delay impairs than at zero delay (`Id(0) = 0`), so subtracting it from 93.2 does not count
//! the default Id twice: at no delay and no loss R is exactly G.107's default 93.2.
//!
//! The one-way delay `d` is estimated from what an echo can measure: the average round trip
//! divided by the crossings of the client's leg it contains (2 for an echo or a relay peer,
//! 4 between two allocations; see `probe::media`), plus a jitter buffer of twice the jitter,
//! plus one packet time of packetisation. The loss fed in is the same per-crossing estimate
//! the `max_loss` threshold judges.
//!
//! Limits, say them when quoting a MOS: every other G.107 input is at its default (no echo, no
//! noise, no sidetone problems, advantage factor 0); loss is treated as random (BurstR = 1)
//! although the stream's longest burst is reported beside it; the delay is a share of the
//! round trip, which hides asymmetric paths; the codec is G.711 whatever the softphone uses (Opus
//! tolerates loss better). It ranks paths and tracks change over time; it is not a listening
//! test. No loss and a short path give R = 93.2, MOS 4.41: the ceiling for G.711.

use std::time::Duration;

/// G.107's default rating R with every input at its default (R0 − Is − Id at T = 0 − Ie + A
/// ≈ 93.36 − 0.15); the delay impairment subtracted from it is the part added by delay.
pub const R_DEFAULT: f64 = 93.2;
/// Equipment impairment of G.711 (G.113 Appendix I).
pub const G711_IE: f64 = 0.0;
/// Packet-loss robustness of G.711 with packet loss concealment (G.113 Appendix I).
pub const G711_BPL: f64 = 25.1;

/// Delay impairment `Id` for a one-way delay of `d_ms` milliseconds.
pub fn delay_impairment(d_ms: f64) -> f64 {
    let d = d_ms.max(0.0);
    0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 }
}

/// Effective equipment impairment `Ie,eff` of G.711 for a loss of `loss` (fraction 0..=1),
/// random loss (BurstR = 1).
pub fn loss_impairment(loss: f64) -> f64 {
    let ppl = (loss.clamp(0.0, 1.0)) * 100.0;
    G711_IE + (95.0 - G711_IE) * ppl / (ppl + G711_BPL)
}

/// The rating R for a one-way delay and a loss fraction.
pub fn r_factor(one_way: Duration, loss: f64) -> f64 {
    R_DEFAULT - delay_impairment(one_way.as_secs_f64() * 1000.0) - loss_impairment(loss)
}

/// The MOS that R predicts (G.107 Annex B), 1.0 to 4.5.
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
}

/// Mouth-to-ear delay for the E-model: the network's one-way share of the round trip
/// (`rtt_avg / crossings`), a jitter buffer of `2 · jitter` and one `packet` of packetisation.
pub fn one_way_delay(network_one_way: Duration, jitter: Duration, packet: Duration) -> Duration {
    network_one_way + jitter * 2 + packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() < eps
    }

    #[test]
    fn mos_of_well_known_ratings() {
        // The G.107 Annex B curve at the points its users tabulate.
        assert!(close(mos(93.2), 4.409, 0.001), "{}", mos(93.2));
        assert!(close(mos(90.0), 4.339, 0.001), "{}", mos(90.0));
        assert!(close(mos(80.0), 4.024, 0.001), "{}", mos(80.0));
        assert!(close(mos(70.0), 3.597, 0.001), "{}", mos(70.0));
        assert!(close(mos(60.0), 3.1, 0.001), "{}", mos(60.0));
        assert!(close(mos(50.0), 2.575, 0.001), "{}", mos(50.0));
        assert_eq!(mos(-5.0), 1.0);
        assert_eq!(mos(120.0), 4.5);
        assert!(mos(3.0) >= 1.0, "clamped at the bottom");
    }

    #[test]
    fn delay_costs_little_below_177_ms_and_much_above() {
        assert_eq!(delay_impairment(0.0), 0.0);
        assert!(close(delay_impairment(100.0), 2.4, 1e-9));
        assert!(close(delay_impairment(177.3), 4.2552, 1e-9));
        // 300 ms: 7.2 + 0.11 * 122.7 = 20.697
        assert!(close(delay_impairment(300.0), 20.697, 1e-9));
    }

    #[test]
    fn loss_impairment_of_g711_with_concealment() {
        assert_eq!(loss_impairment(0.0), 0.0);
        // 1 %: 95 * 1 / 26.1 = 3.6398; 5 %: 95 * 5 / 30.1 = 15.7807
        assert!(close(loss_impairment(0.01), 3.6398, 1e-4));
        assert!(close(loss_impairment(0.05), 15.7807, 1e-4));
        // Total loss: 95 * 100 / 125.1
        assert!(close(loss_impairment(1.0), 75.9392, 1e-4));
    }

    #[test]
    fn a_clean_short_path_rates_93_and_five_percent_loss_drops_the_mos_by_half_a_point() {
        let clean = r_factor(Duration::ZERO, 0.0);
        assert!(close(clean, 93.2, 1e-9));
        // 40 ms one way and 5 % random loss: 93.2 - 0.96 - 15.7807 = 76.459
        let lossy = r_factor(Duration::from_millis(40), 0.05);
        assert!(close(lossy, 76.4593, 1e-3), "{lossy}");
        assert!(close(mos(lossy), 3.8835, 0.001), "{}", mos(lossy));
        assert!(mos(lossy) < mos(clean));
    }

    #[test]
    fn one_way_delay_is_the_network_share_plus_buffer_and_packetisation() {
        let d = one_way_delay(Duration::from_millis(40), Duration::from_millis(5), Duration::from_millis(20));
        assert_eq!(d, Duration::from_millis(40 + 10 + 20));
    }
}
