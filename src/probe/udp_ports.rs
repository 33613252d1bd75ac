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
//! counts. The responder answers with the same bytes under the reply marker `EPUR` (which it
//! never answers itself, so two echoes cannot bounce datagrams between each other). A reply
//! counts only from the target's address *and* the port the sample's slot was sent to, with
//! the same index and port inside. Unanswered after `port_timeout`, the port gets one retry,
//! then another `port_timeout`. A port is *silent* only when its retry had that whole wait
//! before the deadline; a port whose retry the deadline cut (or never let go out) gets no
//! result (unknown), never `closed`.
//!
//! **Closed takes two runs.** One lost datagram plus its lost retry must not read as a
//! firewall: a port silent for the first time is *silent once* and re-tested first in the next
//! run (`PortSweep`), and it is closed only when silent there too. The run fails `udp/closed`
//! when a sampled port is closed, or when *no* sampled port answered at all (the whole host
//! silent is not a lost datagram: UDP to it is dropped, or no echo responder runs there). A
//! run in which no sampled port got any result fails `udp/timeout`: a probe that saw nothing
//! must not pass. The load check keeps `timeout` ≥ 2 × `port_timeout` + sending time +
//! margin; a shorter budget from `/probe` (Prometheus' scrape timeout) shrinks the sample to
//! what fits, and fails `udp/timeout` before sending when not even one port fits.
//!
//! The first round goes out in bursts of [`BURST`] datagrams [`PACE`] apart, so 256 ports take
//! ~16 ms to send, not one line-rate burst a policer might drop.
//!
//! The result is ranges, never a label per port: `detail.udp_ports` holds this run's sample
//! (counts and the closed ports as ranges) and what the sweep knows of the whole set so far
//! (`open`, `closed` ranges, `coverage`). Silent is a firewall DROP, a REJECT, or no echo
//! there: UDP cannot tell them apart without ICMP, which an unprivileged unconnected socket
//! does not see.
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

pub use crate::config::ports::{needed, BURST, PACE};

/// Magic at the start of every probe datagram.
pub const MAGIC: &[u8; 4] = b"EPUP";
/// Magic at the start of the responder's reply (never answered by anyone).
pub const REPLY_MAGIC: &[u8; 4] = b"EPUR";
/// Size of a datagram (and of a reply).
pub const DATAGRAM: usize = 16;
/// Margin before the deadline at which the exchange stops on its own (keeping its results).
const MARGIN: Duration = crate::config::ports::RUN_MARGIN;

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
    // A budget shorter than the configured run (a `/probe` scrape timeout) shrinks the
    // sample; the sweep is not touched when not even one port fits.
    let budget = run.deadline().saturating_duration_since(Instant::now());
    let fits = (1..=spec.sample).rev().find(|k| needed(*k, spec.port_timeout) <= budget);
    let Some(take) = fits else {
        return Err(Failure::new(
            Phase::Udp,
            Reason::Timeout,
            format!(
                "{} ms left for the run, but one port needs {} ms (a send, a retry and port_timeout {} ms after each): no port could get a result; raise the timeout (or the scrape timeout) or lower port_timeout",
                budget.as_millis(),
                needed(1, spec.port_timeout).as_millis(),
                spec.port_timeout.as_millis()
            ),
        ));
    };
    if take < spec.sample {
        run.detail.notes.push(format!(
            "sample shrunk from {} to {take} port(s) to fit the {} ms left (a shorter scrape timeout)",
            spec.sample,
            budget.as_millis()
        ));
    }
    let start = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sample = spec.sweep.next_sample(&spec.ports, take, start);
    let until = run.deadline().checked_sub(MARGIN).unwrap_or_else(|| run.deadline());
    let found = match run.phase(Phase::Udp, exchange(ip, &sample, spec.port_timeout, until)).await {
        Ok(f) => f,
        Err(f) => {
            // No result for any of them: back into the re-test queue, the sweep moves on
            // only past ports that got one.
            let none: Vec<(u32, PortState)> = sample.iter().map(|p| (p.ordinal, PortState::Unknown)).collect();
            spec.sweep.record(&spec.ports, &none);
            return Err(f);
        }
    };

    let results: Vec<(u32, PortState)> = sample.iter().zip(&found.states).map(|(p, s)| (p.ordinal, *s)).collect();
    let after = spec.sweep.record(&spec.ports, &results);
    let known = spec.sweep.known_ranges(&spec.ports);
    let covered = spec.sweep.covered();
    let closed_now: Vec<u16> = sample
        .iter()
        .zip(&after)
        .filter(|(_, s)| **s == PortState::Closed)
        .map(|(p, _)| p.port)
        .collect();
    let silent_now: Vec<u16> = sample
        .iter()
        .zip(&found.states)
        .filter(|(_, s)| **s == PortState::Closed)
        .map(|(p, _)| p.port)
        .collect();
    let count = |v: &[PortState], state| v.iter().filter(|s| **s == state).count() as u32;
    let sampled_open = count(&found.states, PortState::Open);
    let detail = UdpPortsDetails {
        set: spec.ports.to_string(),
        set_size: spec.ports.len(),
        target: Some(ip),
        sampled: sample.len() as u32,
        sampled_open,
        sampled_closed: count(&after, PortState::Closed),
        sampled_silent_once: count(&after, PortState::SilentOnce),
        sampled_unknown: count(&found.states, PortState::Unknown),
        sampled_closed_ranges: ranges_of(closed_now),
        open: known.open.clone(),
        closed: known.closed.clone(),
        more_ranges: known.more,
        open_ports: known.open_ports,
        closed_ports: known.closed_ports,
        silent_once: spec.sweep.silent_once(),
        covered,
        coverage: f64::from(covered) / f64::from(spec.ports.len().max(1)),
        // Loss over the ports that answered at all: a closed port is not a lost datagram.
        rtt: Some(RttStats::from_samples(sampled_open, found.rtts)),
    };
    if detail.sampled_unknown > 0 {
        run.detail.notes.push(format!(
            "{} sampled port(s) got no result: the probe timeout ended before their retry had its full port_timeout (raise timeout or lower sample); they are tried again next run",
            detail.sampled_unknown
        ));
    }
    if detail.sampled_silent_once > 0 && sampled_open > 0 {
        run.detail.notes.push(format!(
            "{} sampled port(s) silent for the first time ({}): re-tested next run before being called closed",
            detail.sampled_silent_once,
            listing(&ranges_of(silent_now.clone()), 0)
        ));
    }
    let silent = silent_now.len() as u32;
    let tried = format!(
        "so far {covered} of {} ports settled, open {}, closed {}",
        detail.set_size,
        listing(&detail.open, 0),
        listing(&detail.closed, known.more)
    );
    let failure = if sampled_open == 0 && silent == 0 {
        Some(Failure::new(
            Phase::Udp,
            Reason::Timeout,
            format!(
                "none of the {} sampled ports got a result: the probe timeout ended before any retry had its full port_timeout ({} ms); raise timeout or lower sample",
                detail.sampled,
                spec.port_timeout.as_millis()
            ),
        ))
    } else if sampled_open == 0 {
        Some(Failure::new(
            Phase::Udp,
            Reason::Closed,
            format!(
                "none of the {} sampled ports answered, each after a retry ({}): UDP to this host dropped, or no echo responder there; {tried}",
                detail.sampled,
                listing(&ranges_of(silent_now), 0)
            ),
        ))
    } else if detail.sampled_closed > 0 {
        Some(Failure::new(
            Phase::Udp,
            Reason::Closed,
            format!(
                "{} of {} sampled ports got no echo after a retry, here and in an earlier run: {}; {tried}",
                detail.sampled_closed,
                detail.sampled,
                listing(&detail.sampled_closed_ranges, 0),
            ),
        ))
    } else {
        None
    };
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
    /// When the retry went out (its full `port_timeout` decides silent vs unknown).
    retry_sent: Option<Instant>,
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

/// The sample index a reply answers, if it is one of ours: reply marker and nonce, an index
/// in the sample, and the port inside equal both to the port it came from and to the port
/// that index was sent to.
fn echo_index(data: &[u8], nonce: u64, from_port: u16, sample: &[SamplePort]) -> Option<usize> {
    if data.len() != DATAGRAM || &data[..4] != REPLY_MAGIC || data[4..12] != nonce.to_be_bytes() {
        return None;
    }
    let index = usize::from(u16::from_be_bytes([data[12], data[13]]));
    let port = u16::from_be_bytes([data[14], data[15]]);
    let sent_to = sample.get(index)?.port;
    (port == from_port && port == sent_to).then_some(index)
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
            retry_sent: None,
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
                        let now = Instant::now();
                        s[i].first_sent.get_or_insert(now);
                        if round == 2 {
                            s[i].retry_sent = Some(now);
                        }
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
            let Some(i) = echo_index(&buf[..n], nonce, from.port(), sample) else {
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
    let ended = Instant::now();
    let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
    if slots.iter().all(|s| s.sent == 0) {
        if let Some(e) = send_errors.into_inner().unwrap_or_else(|e| e.into_inner()).first() {
            return Err(net::fault_from_io("sending to the sampled ports", e));
        }
    }
    let states = slots
        .iter()
        .map(|s| match (s.answered, s.retry_sent) {
            (true, _) => PortState::Open,
            // Silent only when the retry had its whole wait before the exchange ended.
            (false, Some(t)) if ended >= t + port_timeout => PortState::Closed,
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

    fn reply(nonce: u64, index: u16, port: u16) -> [u8; DATAGRAM] {
        let mut d = datagram(nonce, index, port);
        d[..4].copy_from_slice(REPLY_MAGIC);
        d
    }

    fn sample_of(ports: &[u16]) -> Vec<SamplePort> {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| SamplePort {
                ordinal: i as u32,
                port: *p,
            })
            .collect()
    }

    #[test]
    fn only_a_reply_of_this_run_from_the_port_its_slot_was_sent_to_counts() {
        let sample = sample_of(&[20003, 20002, 20001, 20000]);
        let d = reply(7, 3, 20000);
        assert_eq!(echo_index(&d, 7, 20000, &sample), Some(3));
        assert_eq!(echo_index(&d, 8, 20000, &sample), None, "another run's nonce");
        assert_eq!(echo_index(&d, 7, 20001, &sample), None, "from another port");
        assert_eq!(echo_index(&d, 7, 20000, &sample[..3]), None, "index out of the sample");
        assert_eq!(echo_index(&d[..15], 7, 20000, &sample), None);
        // Index 2 was sent to 20001: a reply naming 20000 from 20000 does not answer it.
        assert_eq!(echo_index(&reply(7, 2, 20000), 7, 20000, &sample), None, "port of another slot");
        // Our own request bounced back unchanged (a generic echo, a loop) is not a reply.
        assert_eq!(echo_index(&datagram(7, 3, 20000), 7, 20000, &sample), None, "request magic");
    }

    #[test]
    fn the_budget_for_one_port_is_two_port_timeouts_and_its_sending() {
        assert_eq!(needed(1, Duration::from_millis(500)), Duration::from_millis(1007));
        assert_eq!(needed(256, Duration::from_millis(200)), Duration::from_millis(437));
    }

    /// A real socket on loopback that never answers: with the deadline cutting the retry's
    /// wait the port has no result; with the whole wait it is silent.
    #[tokio::test]
    async fn a_retry_cut_by_the_deadline_is_unknown_and_a_full_one_silent() {
        let sink = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = sink.local_addr().expect("addr").port();
        let sample = sample_of(&[port]);
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        let pt = Duration::from_millis(100);
        let cut = exchange(ip, &sample, pt, Instant::now() + Duration::from_millis(150))
            .await
            .expect("exchange");
        assert_eq!(cut.states, [PortState::Unknown]);
        let full = exchange(ip, &sample, pt, Instant::now() + Duration::from_secs(2))
            .await
            .expect("exchange");
        assert_eq!(full.states, [PortState::Closed]);
        drop(sink);
    }
}
