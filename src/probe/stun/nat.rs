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
//!   is `address_dependent`, else `address_and_port_dependent`. When OTHER-ADDRESS's port is
//!   the primary port, II and III would ask the same destination: the test stops after II
//!   with `endpoint_dependent` (which of the two dependent kinds cannot be told).
//! - **Filtering** (from a fresh socket that has only talked to the primary address, or
//!   earlier tests would have opened the NAT): CHANGE-REQUEST change-IP+port answered from
//!   exactly OTHER-ADDRESS (it comes from an address we never sent to) is
//!   `endpoint_independent`; else change-port answered is `address_dependent`; else
//!   `address_and_port_dependent`. A silent test is asked once more (a fresh transaction)
//!   before silence counts: one lost answer must not read as filtering.
//! - OTHER-ADDRESS is checked before either test: same family, another IP than the primary,
//!   and not loopback, link-local, multicast, broadcast or unspecified unless the primary is
//!   in that scope too (a server must not steer the probe's packets at local addresses).
//! - **Lifetime**: sockets each make a mapping with one Binding and then stay idle; at idle
//!   time `t` a separate trigger socket asks the server (RESPONSE-PORT = that mapping's port)
//!   to answer to the idle mapping from the primary address, which the NAT lets through only
//!   while the mapping lives. All sockets of a round start together and are checked in
//!   order of `t`, so a round costs the longest `t` it reaches, not their sum: round 1 checks
//!   at 1 s, 2 s, 4 s, … up to `max` and stops at the first expired mapping; later rounds
//!   check [`REFINE_POINTS`] points evenly inside the bracket found, until it is narrower than
//!   a tenth of its upper end (or 500 ms), at most [`MAX_ROUNDS`] rounds, and only while the
//!   deadline leaves room for a whole round. A silent check counts as expiry only when the
//!   next longer idle mapping of the round is silent too (the round's last one: when asking
//!   it once more is silent too); otherwise it was loss, noted. A silence at or below an idle
//!   time already seen alive (a late alive) is no expiry either. An error in a refining round
//!   ends the search with the bracket found so far, and a note. Cost: the expiry found plus
//!   the bracket's upper end per refining round, one silence wait per round (two when a
//!   silence is confirmed); [`LifetimeSearch::budget`] (2 × max + 4 s) is added to the run's
//!   deadline, so usually two rounds fit.

use std::net::{IpAddr, SocketAddr};
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

/// Where an address points: the special scopes a server's OTHER-ADDRESS may only name when
/// the primary address is in the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Unspecified,
    Loopback,
    LinkLocal,
    Multicast,
    Broadcast,
    Routable,
}

fn scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Scope::Unspecified,
        IpAddr::V4(v4) if v4.is_loopback() => Scope::Loopback,
        IpAddr::V4(v4) if v4.is_link_local() => Scope::LinkLocal,
        IpAddr::V4(v4) if v4.is_multicast() => Scope::Multicast,
        IpAddr::V4(v4) if v4.is_broadcast() => Scope::Broadcast,
        IpAddr::V6(v6) if v6.is_unspecified() => Scope::Unspecified,
        IpAddr::V6(v6) if v6.is_loopback() => Scope::Loopback,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Scope::LinkLocal,
        IpAddr::V6(v6) if v6.is_multicast() => Scope::Multicast,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => scope(IpAddr::V4(v4)),
            None => Scope::Routable,
        },
        IpAddr::V4(_) => Scope::Routable,
    }
}

/// Whether the server's OTHER-ADDRESS is one to send tests to from a probe that asked
/// `primary`: same family, a port, another IP, and no special scope the primary is not in.
pub fn check_other(primary: SocketAddr, other: SocketAddr) -> Result<(), String> {
    let (p, o) = (scope(primary.ip()), scope(other.ip()));
    if o == Scope::Unspecified || other.port() == 0 || other.is_ipv4() != primary.is_ipv4() {
        return Err(format!("the server's OTHER-ADDRESS {other} is not an address to test against"));
    }
    if o != Scope::Routable && o != p {
        return Err(format!(
            "the server's OTHER-ADDRESS {other} is a {} address while the server is not: not followed",
            match o {
                Scope::Loopback => "loopback",
                Scope::LinkLocal => "link-local",
                Scope::Multicast => "multicast",
                _ => "broadcast",
            }
        ));
    }
    if other.ip() == primary.ip() {
        return Err(format!(
            "the server's OTHER-ADDRESS {other} has the server's own IP: it cannot test NAT behaviour"
        ));
    }
    Ok(())
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
    check_other(primary, other)?;
    let alt_ip = SocketAddr::new(other.ip(), primary.port());
    let second = answered_mapping(socket, alt_ip, window(wait, until, "mapping")?).await?;
    if second == first {
        return Ok(Mapping {
            behavior: "endpoint_independent",
            second: Some(second),
            third: None,
        });
    }
    if other.port() == primary.port() {
        // Test III would ask the destination test II asked: no way to tell the two apart.
        return Ok(Mapping {
            behavior: "endpoint_dependent",
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

/// [`ask`] once more with a fresh transaction when the first gets no answer: a test whose
/// *silence* is the finding must not conclude from one lost packet.
async fn ask_twice(
    socket: &UdpSocket,
    to: SocketAddr,
    msg: impl Fn() -> StunMessage,
    wait: Duration,
    until: Instant,
    what: &str,
) -> Result<Option<Reply>, String> {
    for _ in 0..2 {
        if let Some(r) = ask(socket, socket, to, &msg(), window(wait, until, what)?).await? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// RFC 5780 §4.4 from a fresh socket: `endpoint_independent`, `address_dependent` or
/// `address_and_port_dependent`.
pub async fn filtering(primary: SocketAddr, wait: Duration, until: Instant) -> Result<&'static str, String> {
    let socket = bind_udp(primary).await.map_err(|f| f.message)?;
    let other = match ask(&socket, &socket, primary, &binding(None, None), window(wait, until, "filtering")?).await? {
        Some(Reply {
            other: Some(o),
            error: None,
            ..
        }) => o,
        Some(_) => return Err("the server advertises no OTHER-ADDRESS (RFC 5780): it cannot test filtering".into()),
        None => return Err(format!("no answer from {primary} on a fresh socket")),
    };
    check_other(primary, other)?;
    let both = || {
        binding(
            Some(ChangeRequest::new(Some(
                ChangeRequestFlags::ChangeIp | ChangeRequestFlags::ChangePort,
            ))),
            None,
        )
    };
    if let Some(r) = ask_twice(&socket, primary, both, wait, until, "filtering").await? {
        return classify_change_both(&r, primary, other);
    }
    let port = || binding(Some(ChangeRequest::new(Some(ChangeRequestFlags::ChangePort.into()))), None);
    match ask_twice(&socket, primary, port, wait, until, "filtering").await? {
        Some(Reply { error: Some(code), .. }) => Err(format!("the server refused CHANGE-REQUEST (error {code})")),
        Some(r) if r.from == primary => Err("the server ignored CHANGE-REQUEST (answered from the address asked)".into()),
        Some(r) if r.from.ip() != primary.ip() || r.from.port() != other.port() => Err(format!(
            "the change-port answer came from {} (expected port {})",
            r.from,
            other.port()
        )),
        Some(_) => Ok("address_dependent"),
        None => Ok("address_and_port_dependent"),
    }
}

/// The change-IP-and-port answer: endpoint-independent filtering only when it came from
/// exactly OTHER-ADDRESS (any other source proves nothing about the NAT).
fn classify_change_both(r: &Reply, primary: SocketAddr, other: SocketAddr) -> Result<&'static str, String> {
    match r.error {
        Some(code) => Err(format!("the server refused CHANGE-REQUEST (error {code})")),
        None if r.from == primary => Err("the server ignored CHANGE-REQUEST (answered from the address asked)".into()),
        None if r.from != other => Err(format!(
            "the change-IP-and-port answer came from {}, not from OTHER-ADDRESS {other}",
            r.from
        )),
        None => Ok("endpoint_independent"),
    }
}

/// One idle mapping of the lifetime search.
struct Idle {
    socket: UdpSocket,
    mapped: SocketAddr,
    since: Instant,
    after: Duration,
}

/// Whether `m` still answers after its idle time, and the idle time actually reached (a busy
/// machine wakes up late), not the planned one.
async fn check_idle(
    m: &Idle,
    trigger: &UdpSocket,
    primary: SocketAddr,
    wait: Duration,
    until: Instant,
) -> Result<(bool, Duration), String> {
    tokio::time::sleep_until(m.since + m.after).await;
    let end = window(wait, until, "binding lifetime")?;
    let idle_for = m.since.elapsed();
    let msg = binding(None, Some(m.mapped.port()));
    Ok((ask(trigger, &m.socket, primary, &msg, end).await?.is_some(), idle_for))
}

/// The lifetime bracket: alive after `alive` of idleness, gone after `expired`; keeps
/// `alive < expired` whatever order the evidence arrives in.
#[derive(Debug, Default, PartialEq)]
struct Bracket {
    alive: Duration,
    expired: Option<Duration>,
}

impl Bracket {
    /// A mapping answered after `idle`. One alive beyond the expiry already found (a late
    /// check: the packet reached the NAT after the time counted) is clamped below it.
    fn alive(&mut self, idle: Duration, notes: &mut Vec<String>) {
        match self.expired {
            Some(e) if idle >= e => {
                notes.push(format!(
                    "a mapping answered after {} s idle although one was gone after {} s: timing noise, bracket kept",
                    secs(idle),
                    secs(e)
                ));
                self.alive = self.alive.max(e.saturating_sub(Duration::from_millis(1)));
            }
            _ => self.alive = self.alive.max(idle),
        }
    }

    /// A mapping stayed silent after `idle`; `confirmed`: a longer idle one was silent too.
    fn silent(&mut self, idle: Duration, confirmed: bool, notes: &mut Vec<String>) {
        if idle <= self.alive {
            notes.push(format!(
                "no answer after {} s idle although a mapping lived {} s: loss, not counted as expiry",
                secs(idle),
                secs(self.alive)
            ));
        } else if !confirmed {
            notes.push(format!(
                "no answer after {} s idle but a longer idle mapping answered: loss, not counted as expiry",
                secs(idle)
            ));
        } else {
            self.expired = Some(self.expired.map_or(idle, |e| e.min(idle)));
        }
    }

    /// Whether the bracket is narrow enough to stop refining.
    fn narrow(&self) -> bool {
        match self.expired {
            None => true,
            Some(h) => h.saturating_sub(self.alive) <= (h / 10).max(Duration::from_millis(500)),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// RFC 5780 §4.6: how long an idle mapping towards `primary` survives, up to `search.max`,
/// with notes on loss, timing noise or a search cut short.
pub async fn lifetime(
    primary: SocketAddr,
    search: LifetimeSearch,
    wait: Duration,
    until: Instant,
) -> Result<(BindingLifetime, Vec<String>), String> {
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
    let mut checks = 0;
    let mut notes = Vec::new();
    let mut bracket = Bracket::default();
    for round in 0..MAX_ROUNDS {
        let points = match (round, bracket.expired) {
            (0, _) => geometric(search.max),
            (_, Some(h)) => refine(bracket.alive, h),
            (_, None) => break,
        };
        let Some(&longest) = points.last() else { break };
        // The longest idle time, a silence and its confirmation.
        if Instant::now() + longest + wait * 3 > until {
            if round == 0 {
                return Err("not enough time left for the binding lifetime search".into());
            }
            break;
        }
        let done = lifetime_round(
            primary,
            &points,
            public,
            &trigger,
            wait,
            until,
            &mut bracket,
            &mut checks,
            &mut notes,
        )
        .await;
        match done {
            Err(e) if round == 0 && checks == 0 => return Err(e),
            Err(e) => {
                notes.push(format!("search stopped in round {} ({e}): the bracket so far is kept", round + 1));
                break;
            }
            Ok(()) if bracket.narrow() => break,
            Ok(()) => {}
        }
    }
    Ok((
        BindingLifetime {
            alive: bracket.alive,
            expired: bracket.expired,
            checks,
        },
        notes,
    ))
}

/// One round: fresh idle mappings for `points`, checked in order until a confirmed expiry.
#[allow(clippy::too_many_arguments)]
async fn lifetime_round(
    primary: SocketAddr,
    points: &[Duration],
    public: std::net::IpAddr,
    trigger: &UdpSocket,
    wait: Duration,
    until: Instant,
    bracket: &mut Bracket,
    checks: &mut u32,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let idle = open_idle(primary, points, public, wait, until).await?;
    let mut i = 0;
    while i < idle.len() {
        *checks += 1;
        let (alive, idle_for) = check_idle(&idle[i], trigger, primary, wait, until).await?;
        if alive {
            bracket.alive(idle_for, notes);
            i += 1;
            continue;
        }
        // Silence: expiry only if the next longer idle mapping is silent too (for the last
        // one: if asking it once more is).
        let (confirm_alive, confirm_idle) = match idle.get(i + 1) {
            Some(next) => {
                *checks += 1;
                check_idle(next, trigger, primary, wait, until).await?
            }
            None => {
                *checks += 1;
                let end = window(wait, until, "binding lifetime")?;
                let msg = binding(None, Some(idle[i].mapped.port()));
                (ask(trigger, &idle[i].socket, primary, &msg, end).await?.is_some(), idle_for)
            }
        };
        if confirm_alive {
            bracket.silent(idle_for, false, notes);
            bracket.alive(confirm_idle, notes);
            i += 2;
            continue;
        }
        bracket.silent(idle_for, true, notes);
        if bracket.expired.is_none() && confirm_idle > idle_for {
            // The first silence fell inside what was already seen alive; the second is
            // beyond it and, following a silence, confirmed.
            bracket.silent(confirm_idle, true, notes);
        }
        return Ok(()); // longer idle times expired too
    }
    Ok(())
}

/// The local IP the kernel picks for packets to `server` (a throwaway connected socket: no
/// packet is sent), for naming an unconnected socket's address.
pub fn local_ip_towards(server: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(server).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
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

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn other_address_in_a_special_scope_is_followed_only_from_the_same_scope() {
        let public = a("198.51.100.1:3478");
        assert!(check_other(public, a("198.51.100.2:3479")).is_ok());
        for bad in [
            "127.0.0.1:3479",
            "169.254.1.1:3479",
            "224.0.0.1:3479",
            "255.255.255.255:3479",
            "0.0.0.0:3479",
            "198.51.100.1:3479",
            "198.51.100.2:0",
            "[2001:db8::2]:3479",
        ] {
            assert!(check_other(public, a(bad)).is_err(), "{bad}");
        }
        // The responder on loopback advertises its other loopback address: that is fine.
        assert!(check_other(a("127.0.0.1:3478"), a("127.0.0.2:3479")).is_ok());
        assert!(check_other(a("[2001:db8::1]:3478"), a("[fe80::1]:3479")).is_err());
        assert!(check_other(a("[2001:db8::1]:3478"), a("[::1]:3479")).is_err());
    }

    #[test]
    fn endpoint_independent_filtering_needs_the_answer_from_exactly_other_address() {
        let (primary, other) = (a("198.51.100.1:3478"), a("198.51.100.2:3479"));
        let reply = |from: &str, error: Option<u16>| Reply {
            from: a(from),
            mapped: None,
            other: None,
            error,
        };
        assert_eq!(
            classify_change_both(&reply("198.51.100.2:3479", None), primary, other),
            Ok("endpoint_independent")
        );
        for from in ["198.51.100.1:3478", "198.51.100.1:3479", "198.51.100.2:3478", "203.0.113.9:3479"] {
            assert!(classify_change_both(&reply(from, None), primary, other).is_err(), "{from}");
        }
        assert!(classify_change_both(&reply("198.51.100.2:3479", Some(420)), primary, other).is_err());
    }

    #[test]
    fn a_silence_is_an_expiry_only_when_confirmed_and_beyond_what_lived() {
        let ms = Duration::from_millis;
        let mut notes = Vec::new();
        let mut b = Bracket::default();
        b.alive(ms(4000), &mut notes);
        // The 8 s mapping was silent but the 10 s one answered: loss, no expiry.
        b.silent(ms(8000), false, &mut notes);
        b.alive(ms(10_000), &mut notes);
        assert_eq!((b.alive, b.expired), (ms(10_000), None));
        assert!(notes.iter().any(|n| n.contains("loss")), "{notes:?}");
        // A silence below what already lived is no expiry either.
        b.silent(ms(9000), true, &mut notes);
        assert_eq!(b.expired, None);
        b.silent(ms(16_000), true, &mut notes);
        assert_eq!(b.expired, Some(ms(16_000)));
    }

    #[test]
    fn a_late_alive_never_inverts_the_bracket() {
        let ms = Duration::from_millis;
        let mut notes = Vec::new();
        let mut b = Bracket::default();
        b.silent(ms(4000), true, &mut notes);
        // A refining check woke up late and its answer came after the expiry found.
        b.alive(ms(4100), &mut notes);
        assert!(b.alive < b.expired.unwrap(), "{b:?}");
        assert_eq!(b.expired, Some(ms(4000)));
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn the_silence_wait_is_bounded() {
        assert_eq!(silence_wait(Duration::from_millis(1)), MIN_WAIT);
        assert_eq!(silence_wait(Duration::from_secs(5)), MAX_WAIT);
    }
}
