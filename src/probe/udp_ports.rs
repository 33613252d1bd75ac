//! `kind: udp_ports`: are the vendor's UDP media ranges open from here? Phases `resolve`,
//! `udp`.
//!
//! A softphone's media goes to whatever port of a published range (`16384-65535`,
//! `10000-60000`) the platform picks for the call, so one blocked sub-range is a call in ten
//! with no audio. Each run sends one small datagram to each of `sample` ports of the set
//! (≤ 256) on the echo responder and waits for it to come back; successive runs walk a fixed
//! permutation of the set, so every port is tried within `ceil(set / sample)` runs (the cursor,
//! the permutation and the per-port memory live in `config::ports::PortSweep`, the one place
//! the state can sit: it must outlive a run and belong to one probe, and `config` is below
//! both `probe` and `schedule`).
//!
//! Per port: a 16-byte datagram `EPUP | nonce (8) | index (2) | port (2)`, the nonce random per
//! run, so a late echo from an earlier run, or anything else arriving on the socket, never
//! counts. An echo counts only from the target's address *and* the port it was sent to, with
//! the same index and port inside. Unanswered after `port_timeout`, the port gets one retry,
//! then another `port_timeout`; still silent, it is `closed`. All of it within the probe's
//! deadline: a port whose retry the deadline cut stays unknown (neither open nor closed).
//! The first round goes out in bursts of [`BURST`] datagrams [`PACE`] apart, so 256 ports take
//! ~16 ms to send, not one line-rate burst a policer might drop.
//!
//! The result is ranges, never a label per port: `detail.udp_ports` holds this run's sample
//! (counts and the silent ports as ranges) and what the sweep knows of the whole set so far
//! (`open`, `closed` ranges, `coverage`). The run fails `udp/closed` when any sampled port
//! stayed silent (a firewall DROP, a REJECT, or no echo there: UDP cannot tell them apart
//! without ICMP, which an unprivileged unconnected socket does not see).
//!
//! The far side is the responder's echo (`egress-probe responder`, `udp_echo_ports`, see
//! `responder::udp_ports` for how a whole range is answered without one socket per port).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ports::{range_text, PortState, SamplePort};
use crate::config::{HostPort, UdpPortsSpec};
use crate::net;
use crate::outcome::details::{RttStats, UdpPortsDetails};
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

use super::ProbeContext;

/// Datagrams sent back to back before a pause.
pub const BURST: usize = 16;
/// Pause between bursts.
pub const PACE: Duration = Duration::from_millis(1);
/// Magic at the start of every datagram.
const MAGIC: &[u8; 4] = b"EPUP";
/// Size of a datagram (and of an echo).
const DATAGRAM: usize = 16;
/// Margin before the deadline at which the exchange stops on its own (keeping its results).
const MARGIN: Duration = Duration::from_millis(5);

/// Runs one udp_ports probe.
pub async fn probe(spec: &UdpPortsSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = ports(&mut run, spec).await;
    run.finish(result)
}

async fn ports(run: &mut Run, spec: &UdpPortsSpec) -> Result<(), Failure> {
    let target = HostPort {
        host: spec.host.clone(),
        port: spec.ports.first(),
    };
    let addrs = net::resolve(run, &target).await?;
    let Some(ip) = addrs.first().map(SocketAddr::ip) else {
        return Err(Failure::new(
            Phase::Resolve,
            Reason::NoAnswer,
            format!("{} resolved to no address", spec.host),
        ));
    };
    let start = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sample = spec.sweep.next_sample(&spec.ports, spec.sample, start);
    let until = run.deadline().checked_sub(MARGIN).unwrap_or_else(|| run.deadline());
    let found = run.phase(Phase::Udp, exchange(ip, &sample, spec.port_timeout, until)).await?;

    let results: Vec<(u32, PortState)> = sample.iter().zip(&found.states).map(|(p, s)| (p.ordinal, *s)).collect();
    spec.sweep.record(&spec.ports, &results);
    let known = spec.sweep.known_ranges(&spec.ports);
    let covered = spec.sweep.covered();
    let closed_now: Vec<u16> = sample
        .iter()
        .zip(&found.states)
        .filter(|(_, s)| **s == PortState::Closed)
        .map(|(p, _)| p.port)
        .collect();
    let count = |state| found.states.iter().filter(|s| **s == state).count() as u32;
    let detail = UdpPortsDetails {
        set: spec.ports.to_string(),
        set_size: spec.ports.len(),
        target: Some(ip),
        sampled: sample.len() as u32,
        sampled_open: count(PortState::Open),
        sampled_closed: count(PortState::Closed),
        sampled_closed_ranges: ranges_of(closed_now),
        open: known.open.clone(),
        closed: known.closed.clone(),
        more_ranges: known.more,
        open_ports: known.open_ports,
        closed_ports: known.closed_ports,
        covered,
        coverage: f64::from(covered) / f64::from(spec.ports.len().max(1)),
        rtt: Some(RttStats::from_samples(sample.len() as u32, found.rtts)),
    };
    let unknown = count(PortState::Unknown);
    if unknown > 0 {
        run.detail.notes.push(format!(
            "{unknown} sampled port(s) got no verdict: the probe timeout ended before their retry was answered or sent (raise timeout or lower sample)"
        ));
    }
    let failure = (detail.sampled_closed > 0).then(|| {
        let whole = if detail.sampled_open == 0 {
            " (none of the sampled ports answered: UDP to this host dropped, or no echo responder there)".to_string()
        } else {
            String::new()
        };
        Failure::new(
            Phase::Udp,
            Reason::Closed,
            format!(
                "{} of {} sampled ports got no echo after a retry: {}{whole}; so far {} of {} ports tried, open {}, closed {}",
                detail.sampled_closed,
                detail.sampled,
                listing(&detail.sampled_closed_ranges, 0),
                covered,
                detail.set_size,
                listing(&detail.open, 0),
                listing(&detail.closed, known.more),
            ),
        )
    });
    run.detail.udp_ports = Some(detail);
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Ranges as one readable phrase, shortened past 8.
fn listing(ranges: &[String], more: u32) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    let shown = ranges.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    let left = ranges.len().saturating_sub(8) as u32 + more;
    if left > 0 {
        format!("{shown} and {left} more range(s)")
    } else {
        shown
    }
}

/// Consecutive ports folded into ranges.
fn ranges_of(mut ports: Vec<u16>) -> Vec<String> {
    ports.sort_unstable();
    ports.dedup();
    let mut out = Vec::new();
    let mut iter = ports.into_iter();
    let Some(first) = iter.next() else { return out };
    let (mut lo, mut hi) = (first, first);
    for p in iter {
        if u32::from(p) == u32::from(hi) + 1 {
            hi = p;
        } else {
            out.push(range_text(lo, hi));
            (lo, hi) = (p, p);
        }
    }
    out.push(range_text(lo, hi));
    out
}

/// What one run's exchange found, per sample index.
struct Found {
    states: Vec<PortState>,
    /// Round trips of echoes answering a first transmission.
    rtts: Vec<std::time::Duration>,
}

/// Per sample index, while the exchange runs.
#[derive(Clone, Copy)]
struct Slot {
    sent: u8,
    first_sent: Option<Instant>,
    answered: bool,
}

/// The guarded value (a poisoned lock only means another branch panicked: keep its data).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn datagram(nonce: u64, index: u16, port: u16) -> [u8; DATAGRAM] {
    let mut d = [0u8; DATAGRAM];
    d[..4].copy_from_slice(MAGIC);
    d[4..12].copy_from_slice(&nonce.to_be_bytes());
    d[12..14].copy_from_slice(&index.to_be_bytes());
    d[14..16].copy_from_slice(&port.to_be_bytes());
    d
}

/// The sample index an echo answers, if it is one of ours (nonce, index and port match).
fn echo_index(data: &[u8], nonce: u64, from_port: u16, len: usize) -> Option<usize> {
    if data.len() != DATAGRAM || &data[..4] != MAGIC || data[4..12] != nonce.to_be_bytes() {
        return None;
    }
    let index = usize::from(u16::from_be_bytes([data[12], data[13]]));
    let port = u16::from_be_bytes([data[14], data[15]]);
    (port == from_port && index < len).then_some(index)
}

/// Sends to every sampled port, retries the silent ones once, and collects echoes until
/// each answered or the second `port_timeout` passed, never past `until`.
async fn exchange(ip: IpAddr, sample: &[SamplePort], port_timeout: Duration, until: Instant) -> Result<Found, Fault> {
    let any: IpAddr = if ip.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind((any, 0)).await.map_err(|e| net::fault_from_io("UDP socket", &e))?;
    let nonce: u64 = rand::random();
    let slots = Mutex::new(vec![
        Slot {
            sent: 0,
            first_sent: None,
            answered: false,
        };
        sample.len()
    ]);
    let rtts = Mutex::new(Vec::new());
    let all_answered = Notify::new();
    let send_errors: Mutex<Vec<std::io::Error>> = Mutex::new(Vec::new());

    let send_round = |round: u8| {
        let (socket, slots, send_errors) = (&socket, &slots, &send_errors);
        async move {
            let mut in_burst = 0;
            for (i, p) in sample.iter().enumerate() {
                if lock(slots)[i].answered || Instant::now() >= until {
                    continue;
                }
                let d = datagram(nonce, i as u16, p.port);
                match socket.send_to(&d, (ip, p.port)).await {
                    Ok(_) => {
                        let mut s = lock(slots);
                        s[i].sent = round;
                        s[i].first_sent.get_or_insert_with(Instant::now);
                    }
                    Err(e) => lock(send_errors).push(e),
                }
                in_burst += 1;
                if in_burst == BURST {
                    in_burst = 0;
                    tokio::time::sleep(PACE).await;
                }
            }
        }
    };
    let wait = |after: Instant| {
        let all_answered = &all_answered;
        async move {
            let at = (after + port_timeout).min(until);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = all_answered.notified() => {}
            }
        }
    };
    let sender = async {
        send_round(1).await;
        wait(Instant::now()).await;
        if lock(&slots).iter().any(|s| !s.answered) && Instant::now() < until {
            send_round(2).await;
            wait(Instant::now()).await;
        }
    };
    let receiver = async {
        let mut buf = [0u8; 64];
        let mut left = sample.len();
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                // An error queued on the socket (ICMP): nothing to match; pause, keep listening.
                tokio::time::sleep(PACE).await;
                continue;
            };
            if from.ip() != ip {
                continue;
            }
            let Some(i) = echo_index(&buf[..n], nonce, from.port(), sample.len()) else {
                continue;
            };
            let mut s = lock(&slots);
            if s[i].answered {
                continue;
            }
            s[i].answered = true;
            if let (1, Some(t)) = (s[i].sent, s[i].first_sent) {
                lock(&rtts).push(t.elapsed());
            }
            left -= 1;
            if left == 0 {
                all_answered.notify_one();
            }
        }
    };
    tokio::select! {
        () = sender => {}
        () = receiver => {}
        () = tokio::time::sleep_until(until) => {}
    }
    let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
    if slots.iter().all(|s| s.sent == 0) {
        if let Some(e) = send_errors.into_inner().unwrap_or_else(|e| e.into_inner()).first() {
            return Err(net::fault_from_io("sending to the sampled ports", e));
        }
    }
    let states = slots
        .iter()
        .map(|s| match (s.answered, s.sent) {
            (true, _) => PortState::Open,
            (false, 2) => PortState::Closed,
            _ => PortState::Unknown,
        })
        .collect();
    Ok(Found {
        states,
        rtts: rtts.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_ports_fold_into_ranges() {
        assert_eq!(ranges_of(vec![20051, 20050, 20052, 20060, 3478]), ["3478", "20050-20052", "20060"]);
        assert!(ranges_of(vec![]).is_empty());
    }

    #[test]
    fn only_an_echo_of_this_run_to_that_port_counts() {
        let d = datagram(7, 3, 20000);
        assert_eq!(echo_index(&d, 7, 20000, 4), Some(3));
        assert_eq!(echo_index(&d, 8, 20000, 4), None, "another run's nonce");
        assert_eq!(echo_index(&d, 7, 20001, 4), None, "from another port");
        assert_eq!(echo_index(&d, 7, 20000, 3), None, "index out of the sample");
        assert_eq!(echo_index(&d[..15], 7, 20000, 4), None);
    }
}
