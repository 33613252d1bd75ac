//! RFC 5780 NAT behaviour discovery: mapping (§4.3), filtering (§4.4) and binding lifetime
//! (§4.6), against a server that advertises OTHER-ADDRESS and honours CHANGE-REQUEST and
//! RESPONSE-PORT (e.g. `egress-probe responder` with `nat_stun:` on two addresses).
//!
//! Every test here talks through raw UDP sockets rather than a [`StunConn`]: the whole point is
//! that answers come back from *other* addresses than the one asked (a `StunConn` drops
//! those), or arrive on another socket than the one that asked (lifetime). Answers are matched
//! by transaction id only. Requests are retransmitted as RFC 5389 says (RTO 500 ms,
//! doubling), but every wait is bounded by the probe's deadline, and a wait that the deadline
//! would cut short is not started: a missing answer is the signal the filtering and lifetime
//! tests read, so it must never be an artefact of running out of time.
//!
//! - **Mapping** (from the socket the main Bindings used, test I = those): a Binding to the
//!   alternate IP on the primary port (II); the same mapped address as test I is
//!   `endpoint_independent`; otherwise one to the alternate IP and port (III): the same as II
//!   is `address_dependent`, else `address_and_port_dependent`.
//! - **Filtering** (from a fresh socket that has only talked to the primary address, or
//!   earlier tests would have opened the NAT): CHANGE-REQUEST change-IP+port answered (it
//!   comes from an address we never sent to) is `endpoint_independent`; else change-port
//!   answered is `address_dependent`; else `address_and_port_dependent`.
//! - **Lifetime**: sockets each make a mapping with one Binding and then stay idle; at idle
//!   time `t` a separate trigger socket asks the server (RESPONSE-PORT = that mapping's port)
//!   to answer to the idle mapping from the primary address, which the NAT lets through only
//!   while the mapping lives. All sockets of a round start together and are checked in
//!   order of `t`, so a round costs the longest `t` it reaches, not their sum: round 1 checks
//!   at 1 s, 2 s, 4 s, … up to `max` and stops at the first expired mapping; later rounds
//!   check [`REFINE_POINTS`] points evenly inside the bracket found, until it is narrower than
//!   a tenth of its upper end (or 500 ms), at most [`MAX_ROUNDS`] rounds, and only while the
//!   deadline leaves room for a whole round. Cost: the expiry found plus the bracket's upper
//!   end per refining round, one silence wait per round; [`LifetimeSearch::budget`]
//!   (2 × max + 4 s) is added to the run's deadline, so usually two rounds fit.

use std::net::SocketAddr;
use std::time::Duration;

use stun_rs::attributes::discovery::{ChangeRequest, ChangeRequestFlags, OtherAddress, ResponsePort};
use stun_rs::attributes::stun::{ErrorCode, Fingerprint};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, StunMessage, StunMessageBuilder, TransactionId};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::config::LifetimeSearch;
use crate::net::stun_conn::{bind_udp, encode, INITIAL_RTO};
use crate::outcome::details::BindingLifetime;

use super::mapped_address;

/// Points checked inside the bracket in each refining round of the lifetime search.
pub const REFINE_POINTS: u32 = 4;
/// Rounds of the lifetime search at most (the geometric one included).
pub const MAX_ROUNDS: u32 = 3;
/// Shortest idle time the lifetime search checks.
const FIRST_CHECK: Duration = Duration::from_secs(1);
/// Bounds of the wait for an answer that may legitimately never come (filtering, lifetime).
const MIN_WAIT: Duration = Duration::from_millis(1000);
const MAX_WAIT: Duration = Duration::from_millis(3000);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// How long to wait for an answer that may be filtered: four round trips of the main Binding,
/// between 1 and 3 s.
pub fn silence_wait(rtt: Duration) -> Duration {
    (rtt * 4).clamp(MIN_WAIT, MAX_WAIT)
}

/// One answer: where it came from and what it said.
#[derive(Debug)]
struct Reply {
    from: SocketAddr,
    mapped: Option<SocketAddr>,
    other: Option<SocketAddr>,
    error: Option<u16>,
}

fn binding(change: Option<ChangeRequest>, response_port: Option<u16>) -> StunMessage {
    let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request);
    if let Some(c) = change {
        b = b.with_attribute(c);
    }
    if let Some(p) = response_port {
        b = b.with_attribute(ResponsePort::from(p));
    }
    b.with_attribute(Fingerprint::default()).build()
}

/// Sends `msg` to `to` from `send` and waits on `recv` until `until` for the answer carrying
/// its transaction id, from any address; retransmits meanwhile. `Ok(None)`: no answer.
async fn ask(send: &UdpSocket, recv: &UdpSocket, to: SocketAddr, msg: &StunMessage, until: Instant) -> Result<Option<Reply>, String> {
    let bytes = encode(msg).map_err(|f| f.message)?;
    let tid = *msg.transaction_id();
    let mut rto = INITIAL_RTO;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        send.send_to(&bytes, to).await.map_err(|e| format!("send to {to}: {e}"))?;
        let next = (Instant::now() + rto).min(until);
        rto *= 2;
        loop {
            match tokio::time::timeout_at(next, recv.recv_from(&mut buf)).await {
                Err(_) => break,
                // ICMP errors of earlier sends may surface here: not an answer (and no spin).
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                Ok(Ok((n, from))) => {
                    if let Some(r) = decode(&buf[..n], &tid, from) {
                        return Ok(Some(r));
                    }
                }
            }
        }
        if Instant::now() >= until {
            return Ok(None);
        }
    }
}

fn decode(data: &[u8], tid: &TransactionId, from: SocketAddr) -> Option<Reply> {
    let (m, _) = MessageDecoderBuilder::default().build().decode(data).ok()?;
    if m.transaction_id() != tid || !matches!(m.class(), MessageClass::SuccessResponse | MessageClass::ErrorResponse) {
        return None;
    }
    let error = (m.class() == MessageClass::ErrorResponse).then(|| {
        m.get::<ErrorCode>()
            .and_then(|e| e.as_error_code().ok())
            .map_or(0, |e| e.error_code().error_code())
    });
    Some(Reply {
        from,
        mapped: mapped_address(&m),
        other: m
            .get::<OtherAddress>()
            .and_then(|a| a.as_other_address().ok())
            .map(|a| *a.socket_address()),
        error,
    })
}

/// Waits `wait` for an answer, or says there is not enough time left to tell silence apart.
fn window(wait: Duration, until: Instant, what: &str) -> Result<Instant, String> {
    let end = Instant::now() + wait;
    if end > until {
        return Err(format!("not enough time left for the {what} test (raise the probe's timeout)"));
    }
    Ok(end)
}

/// The mapping test's result: behaviour and the mapped addresses of tests II and III.
#[derive(Debug)]
pub struct Mapping {
    pub behavior: &'static str,
    pub second: Option<SocketAddr>,
    pub third: Option<SocketAddr>,
}

/// RFC 5780 §4.3 from `socket`, whose Binding to `primary` was mapped to `first`.
pub async fn mapping(
    socket: &UdpSocket,
    primary: SocketAddr,
    first: SocketAddr,
    other: SocketAddr,
    wait: Duration,
    until: Instant,
) -> Result<Mapping, String> {
    if other.ip().is_unspecified() || other.port() == 0 || other.is_ipv4() != primary.is_ipv4() {
        return Err(format!("the server's OTHER-ADDRESS {other} is not an address to test against"));
    }
    if other.ip() == primary.ip() {
        return Err(format!(
            "the server's OTHER-ADDRESS {other} has the server's own IP: it cannot test mapping"
        ));
    }
    let alt_ip = SocketAddr::new(other.ip(), primary.port());
    let second = answered_mapping(socket, alt_ip, window(wait, until, "mapping")?).await?;
    if second == first {
        return Ok(Mapping {
            behavior: "endpoint_independent",
            second: Some(second),
            third: None,
        });
    }
    let third = answered_mapping(socket, other, window(wait, until, "mapping")?).await?;
    Ok(Mapping {
        behavior: if third == second {
            "address_dependent"
        } else {
            "address_and_port_dependent"
        },
        second: Some(second),
        third: Some(third),
    })
}

async fn answered_mapping(socket: &UdpSocket, to: SocketAddr, until: Instant) -> Result<SocketAddr, String> {
    match ask(socket, socket, to, &binding(None, None), until).await? {
        Some(Reply {
            mapped: Some(m),
            error: None,
            ..
        }) => Ok(m),
        Some(Reply { error: Some(code), .. }) => Err(format!("{to} answered with error {code}")),
        Some(_) => Err(format!("{to} answered without a mapped address")),
        None => Err(format!("no answer from the alternate address {to} (is UDP to it blocked?)")),
    }
}

/// RFC 5780 §4.4 from a fresh socket: `endpoint_independent`, `address_dependent` or
/// `address_and_port_dependent`.
pub async fn filtering(primary: SocketAddr, wait: Duration, until: Instant) -> Result<&'static str, String> {
    let socket = bind_udp(primary).await.map_err(|f| f.message)?;
    let first = match ask(&socket, &socket, primary, &binding(None, None), window(wait, until, "filtering")?).await? {
        Some(Reply {
            other: Some(o),
            error: None,
            ..
        }) => o,
        Some(_) => return Err("the server advertises no OTHER-ADDRESS (RFC 5780): it cannot test filtering".into()),
        None => return Err(format!("no answer from {primary} on a fresh socket")),
    };
    let both = ChangeRequest::new(Some(ChangeRequestFlags::ChangeIp | ChangeRequestFlags::ChangePort));
    if let Some(r) = ask(
        &socket,
        &socket,
        primary,
        &binding(Some(both), None),
        window(wait, until, "filtering")?,
    )
    .await?
    {
        return match r.error {
            Some(code) => Err(format!("the server refused CHANGE-REQUEST (error {code})")),
            None if r.from == primary => Err("the server ignored CHANGE-REQUEST (answered from the address asked)".into()),
            None => Ok("endpoint_independent"),
        };
    }
    let port = ChangeRequest::new(Some(ChangeRequestFlags::ChangePort.into()));
    match ask(
        &socket,
        &socket,
        primary,
        &binding(Some(port), None),
        window(wait, until, "filtering")?,
    )
    .await?
    {
        Some(Reply { error: Some(code), .. }) => Err(format!("the server refused CHANGE-REQUEST (error {code})")),
        Some(r) if r.from == primary => Err("the server ignored CHANGE-REQUEST (answered from the address asked)".into()),
        Some(r) if r.from.ip() != primary.ip() || r.from.port() != first.port() => Err(format!(
            "the change-port answer came from {} (expected port {})",
            r.from,
            first.port()
        )),
        Some(_) => Ok("address_dependent"),
        None => Ok("address_and_port_dependent"),
    }
}

/// One idle mapping of the lifetime search.
struct Idle {
    socket: UdpSocket,
    mapped: SocketAddr,
    since: Instant,
    after: Duration,
}

/// RFC 5780 §4.6: how long an idle mapping towards `primary` survives, up to `search.max`.
pub async fn lifetime(primary: SocketAddr, search: LifetimeSearch, wait: Duration, until: Instant) -> Result<BindingLifetime, String> {
    let trigger = bind_udp(primary).await.map_err(|f| f.message)?;
    let public = match ask(
        &trigger,
        &trigger,
        primary,
        &binding(None, None),
        window(wait, until, "binding lifetime")?,
    )
    .await?
    {
        Some(Reply {
            mapped: Some(m),
            error: None,
            ..
        }) => m.ip(),
        _ => return Err(format!("no answer from {primary} to the trigger socket")),
    };
    let mut result = BindingLifetime::default();
    let (mut lo, mut hi): (Duration, Option<Duration>) = (Duration::ZERO, None);
    for round in 0..MAX_ROUNDS {
        let points = match (round, hi) {
            (0, _) => geometric(search.max),
            (_, Some(h)) => refine(lo, h),
            (_, None) => break,
        };
        let Some(&longest) = points.last() else { break };
        if Instant::now() + longest + wait * 2 > until {
            if round == 0 {
                return Err("not enough time left for the binding lifetime search".into());
            }
            break;
        }
        let idle = open_idle(primary, &points, public, wait, until).await?;
        for m in idle {
            tokio::time::sleep_until(m.since + m.after).await;
            let check = binding(None, Some(m.mapped.port()));
            let end = window(wait, until, "binding lifetime")?;
            result.checks += 1;
            // The idle time actually reached (a busy machine wakes up late), not the planned one.
            let idle_for = m.since.elapsed();
            let alive = ask(&trigger, &m.socket, primary, &check, end).await?.is_some();
            if alive {
                lo = lo.max(idle_for);
            } else {
                hi = Some(idle_for);
                break; // longer idle times expired too
            }
        }
        match hi {
            None => break, // survived the longest idle time asked
            Some(h) if h.saturating_sub(lo) <= (h / 10).max(Duration::from_millis(500)) => break,
            Some(_) => {}
        }
    }
    result.alive = lo;
    result.expired = hi;
    Ok(result)
}

/// 1 s, 2 s, 4 s, … below `max`, then `max`.
fn geometric(max: Duration) -> Vec<Duration> {
    let mut v = Vec::new();
    let mut t = FIRST_CHECK;
    while t < max {
        v.push(t);
        t *= 2;
    }
    v.push(max);
    v
}

/// [`REFINE_POINTS`] points evenly inside `(lo, hi)`.
fn refine(lo: Duration, hi: Duration) -> Vec<Duration> {
    let step = (hi - lo) / (REFINE_POINTS + 1);
    (1..=REFINE_POINTS).map(|i| lo + step * i).collect()
}

/// One fresh socket per idle time, each with a mapping made by one Binding (all at once).
async fn open_idle(
    primary: SocketAddr,
    points: &[Duration],
    public: std::net::IpAddr,
    wait: Duration,
    until: Instant,
) -> Result<Vec<Idle>, String> {
    let end = window(wait, until, "binding lifetime")?;
    let made = futures::future::join_all(points.iter().map(|after| async move {
        let socket = bind_udp(primary).await.map_err(|f| f.message)?;
        match ask(&socket, &socket, primary, &binding(None, None), end).await? {
            Some(Reply {
                mapped: Some(mapped),
                error: None,
                ..
            }) => Ok(Idle {
                socket,
                mapped,
                since: Instant::now(),
                after: *after,
            }),
            _ => Err(format!("no answer from {primary} while opening idle mappings")),
        }
    }))
    .await;
    let idle: Vec<Idle> = made.into_iter().collect::<Result<_, String>>()?;
    if let Some(m) = idle.iter().find(|m| m.mapped.ip() != public) {
        return Err(format!(
            "mappings leave from different public addresses ({} and {public}): the NAT pools addresses, the lifetime test needs one",
            m.mapped.ip()
        ));
    }
    Ok(idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_geometric_round_ends_at_max_and_refining_stays_inside() {
        let s = Duration::from_secs;
        assert_eq!(geometric(s(10)), vec![s(1), s(2), s(4), s(8), s(10)]);
        assert_eq!(geometric(s(2)), vec![s(1), s(2)]);
        let r = refine(s(2), s(4));
        assert_eq!(r.len() as u32, REFINE_POINTS);
        assert!(r.iter().all(|t| *t > s(2) && *t < s(4)), "{r:?}");
    }

    #[test]
    fn the_silence_wait_is_bounded() {
        assert_eq!(silence_wait(Duration::from_millis(1)), MIN_WAIT);
        assert_eq!(silence_wait(Duration::from_secs(5)), MAX_WAIT);
    }
}
