//! The `media:` block (turn probes, `kind: media`): the stream's shape and its pass/fail
//! thresholds, every value range-checked at its own line and column.
//!
//! Kept apart from `kinds.rs` because two kinds share it and its numbers (percentages, a MOS)
//! need converters the other kinds do not.

use std::time::Duration;

use super::super::types::{MediaSpec, MediaThresholds, MAX_MEDIA_DURATION};
use super::super::yaml::{Node, Val};
use super::node::*;

/// Keys of `media:`; `peer` only on turn probes.
pub(in crate::config) const MEDIA: &[&str] = &[
    "duration",
    "packet_ms",
    "payload",
    "max_rtt",
    "max_loss",
    "max_jitter",
    "min_mos",
    "peer",
];

/// `media: {...}` (or `media: {}` / `media: true` for the defaults). `peer` is accepted only
/// when `allow_peer` (turn: stream to a UDP echo through the relay).
pub(super) fn media(v: &Node, what: &str, allow_peer: bool, p: &mut Problems) -> Option<MediaSpec> {
    if let Val::Scalar { .. } = &v.val {
        return match boolean(v, "media", p)? {
            true => Some(MediaSpec::default()),
            false => {
                p.at(v.pos, format!("{what}: `media: false` — omit `media` for no stream"));
                None
            }
        };
    }
    let what = format!("{what} media");
    let f = Fields::of(v, &what, p)?;
    let allowed: Vec<&str> = MEDIA.iter().copied().filter(|k| allow_peer || *k != "peer").collect();
    f.reject_unknown(&allowed, &what, p);
    let d = MediaSpec::default();
    let t = MediaThresholds::default();
    let duration = or_default(&f, "duration", d.duration, p, |v, p| {
        bounded_duration(v, "duration", Duration::from_secs(1), MAX_MEDIA_DURATION, p)
    });
    let packet = or_default(&f, "packet_ms", d.packet, p, |v, p| {
        uint(v, "packet_ms", 10, 120, p).map(Duration::from_millis)
    });
    let payload = or_default(&f, "payload", d.payload, p, |v, p| {
        uint(v, "payload", 16, 1200, p).map(|n| n as usize)
    });
    let max_rtt = or_default(&f, "max_rtt", t.max_rtt, p, |v, p| {
        bounded_duration(v, "max_rtt", Duration::from_millis(1), Duration::from_secs(10), p)
    });
    let max_jitter = or_default(&f, "max_jitter", t.max_jitter, p, |v, p| {
        bounded_duration(v, "max_jitter", Duration::from_millis(1), Duration::from_secs(10), p)
    });
    let max_loss = or_default(&f, "max_loss", t.max_loss, p, loss_fraction);
    let min_mos = optional(&f, "min_mos", p, mos);
    let peer = if allow_peer {
        optional(&f, "peer", p, |v, p| socket_addr(v, "peer", None, p))
    } else {
        Some(None)
    };
    Some(MediaSpec {
        duration: duration?,
        packet: packet?,
        payload: payload?,
        thresholds: MediaThresholds {
            max_rtt: max_rtt?,
            max_loss: max_loss?,
            max_jitter: max_jitter?,
            min_mos: min_mos?,
        },
        peer: peer?,
    })
}

fn bounded_duration(v: &Node, key: &str, min: Duration, max: Duration, p: &mut Problems) -> Option<Duration> {
    let d = duration(v, key, p)?;
    if d < min || d > max {
        p.at(
            v.pos,
            format!(
                "{key} must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(d)
            ),
        );
        return None;
    }
    Some(d)
}

/// `1%`, `0.5 %` or a fraction below 1 (`0.01`); 0 to 100 %. A bare `1` or more is refused:
/// `max_loss: 1` reads as 1 % to some and as 100 % (a fraction) to others, so it must say `%`.
fn loss_fraction(v: &Node, p: &mut Problems) -> Option<f64> {
    let text = v.scalar().map(str::trim).unwrap_or_default().to_string();
    let parsed = match text.strip_suffix('%') {
        Some(pc) => pc.trim().parse::<f64>().ok().map(|x| x / 100.0),
        None => match text.parse::<f64>().ok() {
            Some(x) if x >= 1.0 => {
                p.at(
                    v.pos,
                    format!(
                        "max_loss: {text} is ambiguous (1 % or a fraction meaning 100 %?): write a percentage like {text}% or a fraction below 1 like 0.01"
                    ),
                );
                return None;
            }
            x => x,
        },
    };
    match parsed {
        Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Some(x),
        Some(_) => {
            p.at(v.pos, format!("max_loss must be between 0% and 100% (or 0 to 1), got {text:?}"));
            None
        }
        None => {
            p.at(
                v.pos,
                format!(
                    "max_loss must be a percentage like 1% or a fraction like 0.01, found {}",
                    v.describe()
                ),
            );
            None
        }
    }
}

/// A MOS from 1.0 to 4.5 (the E-model's range for narrowband).
fn mos(v: &Node, p: &mut Problems) -> Option<f64> {
    match v.scalar().and_then(|s| s.trim().parse::<f64>().ok()) {
        Some(x) if x.is_finite() && (1.0..=4.5).contains(&x) => Some(x),
        Some(x) => {
            p.at(v.pos, format!("min_mos must be between 1.0 and 4.5, got {x}"));
            None
        }
        None => {
            p.at(v.pos, format!("min_mos must be a number like 3.6, found {}", v.describe()));
            None
        }
    }
}
