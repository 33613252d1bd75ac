//! The RFC 5780 NAT behaviour discovery server: STUN Binding on two addresses × two ports.
//!
//! A probe inside learns how the NAT in front of it maps and filters only from a server that
//! can answer from *another* address: this one binds four UDP sockets, primary/alternate IP ×
//! primary/alternate port, and answers every Binding request with
//!
//! - XOR-MAPPED-ADDRESS: where the request came from (the NAT's mapping; no MAPPED-ADDRESS:
//!   stun-rs rejects RFC 3489 requests without the magic cookie anyway, and every attribute
//!   more is amplification);
//! - RESPONSE-ORIGIN: the socket the answer leaves from;
//! - OTHER-ADDRESS: the alternate IP *and* port relative to the socket that received it (the
//!   address a client tests mapping and filtering against);
//!
//! and honours CHANGE-REQUEST (answer from the other IP, the other port, or both: the
//! filtering tests) and RESPONSE-PORT (answer to the request's IP on another port: the
//! binding lifetime test, RFC 5780 §4.6; ports below 1024 are not answered, so the server
//! cannot be aimed at a requester's DNS, NTP or other privileged service). FINGERPRINT on
//! everything.
//!
//! With only one IP configured the server says so rather than pretend: two sockets (one IP ×
//! two ports), no OTHER-ADDRESS in answers (a client then knows it cannot run the RFC 5780
//! tests), change-port honoured, and change-IP answered 420 with UNKNOWN-ATTRIBUTES
//! CHANGE-REQUEST (RFC 5780 §7.2: no alternate address for it).
//!
//! It is a separate endpoint from the TURN listeners on purpose: the webrtc-rs TURN server
//! answers Binding itself and knows nothing of CHANGE-REQUEST. Only Binding requests are
//! answered; anything else (undecodable, other methods, responses) is dropped without a word.
//!
//! A UDP server answers whatever source address a packet claims, and its answer (64 bytes)
//! is larger than the smallest request (20): it is a reflector. That is bounded, not
//! prevented: answers go only to the request's source IP, a [`Limiter`] caps them per source
//! IP ([`SOURCE_RATE`]/s, bursts of [`SOURCE_BURST`]; a fixed table of [`SOURCE_SLOTS`]
//! buckets keyed by a randomly seeded hash, so memory stays fixed whatever the number of
//! sources) and in total ([`GLOBAL_RATE`]/s), and whatever goes over is dropped silently.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stun_rs::attributes::discovery::{ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin, ResponsePort};
use stun_rs::attributes::stun::{ErrorCode, Fingerprint, UnknownAttributes, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder};
use tokio::net::UdpSocket;

use super::config::NatStunConfig;
use super::{ResponderError, Shutdown};

/// CHANGE-REQUEST's attribute type, for UNKNOWN-ATTRIBUTES in a 420.
const CHANGE_REQUEST_TYPE: u16 = 0x0003;
/// Largest request read; STUN Binding requests are tiny (bigger ones are not ours).
const MAX_REQUEST: usize = 2048;
/// Attempts at finding a free port number free on both addresses (ports `0`).
const PORT_ATTEMPTS: usize = 32;
/// Lowest RESPONSE-PORT answered.
const MIN_RESPONSE_PORT: u16 = 1024;
/// Answers per second to one source IP, and the burst allowed (a probe's `count` of up to
/// 100 Bindings paced 20 ms apart, or a lifetime round's dozen idle mappings, fit).
pub const SOURCE_RATE: f64 = 50.0;
pub const SOURCE_BURST: f64 = 100.0;
/// Answers per second in total, and the burst allowed.
pub const GLOBAL_RATE: f64 = 2000.0;
pub const GLOBAL_BURST: f64 = 2000.0;
/// Per-source buckets (sources sharing a slot share a bucket; a new source takes the slot).
pub const SOURCE_SLOTS: usize = 256;

/// A token bucket: `rate` tokens a second, at most `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, last: now }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.last = now;
    }
}

/// The answer budget: one global bucket and a fixed table of per-source buckets.
pub struct Limiter {
    global: Bucket,
    slots: Vec<Option<(IpAddr, Bucket)>>,
    seed: RandomState,
}

impl Limiter {
    pub fn new(now: Instant) -> Limiter {
        Limiter {
            global: Bucket::full(GLOBAL_BURST, now),
            slots: vec![None; SOURCE_SLOTS],
            seed: RandomState::new(),
        }
    }

    /// Whether one more answer to `ip` is within budget (and takes it if so).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let slot = (self.seed.hash_one(ip) % SOURCE_SLOTS as u64) as usize;
        let entry = self.slots[slot].get_or_insert((ip, Bucket::full(SOURCE_BURST, now)));
        if entry.0 != ip {
            *entry = (ip, Bucket::full(SOURCE_BURST, now));
        }
        let source = &mut entry.1;
        source.refill(SOURCE_RATE, SOURCE_BURST, now);
        self.global.refill(GLOBAL_RATE, GLOBAL_BURST, now);
        if source.tokens < 1.0 || self.global.tokens < 1.0 {
            return false;
        }
        source.tokens -= 1.0;
        self.global.tokens -= 1.0;
        true
    }
}

/// The bound sockets: index `ip * 2 + port` (0 = primary, 1 = alternate).
pub struct NatStun {
    sockets: Vec<Arc<UdpSocket>>,
    addrs: Vec<SocketAddr>,
    limiter: Mutex<Limiter>,
}

impl NatStun {
    /// Binds primary (and alternate) IP × both ports. Ports `0` pick free numbers that are
    /// free on both addresses, as RFC 5780 needs the same port numbers on both.
    pub async fn bind(cfg: &NatStunConfig) -> Result<NatStun, ResponderError> {
        let mut ips = vec![cfg.primary];
        ips.extend(cfg.alternate);
        let mut per_port: Vec<Vec<UdpSocket>> = Vec::new();
        for want in cfg.ports {
            let taken: Vec<u16> = per_port.iter().filter_map(|s| s[0].local_addr().ok()).map(|a| a.port()).collect();
            per_port.push(bind_on_all(&ips, want, &taken).await?);
        }
        let mut per_port: Vec<Vec<Option<UdpSocket>>> = per_port.into_iter().map(|v| v.into_iter().map(Some).collect()).collect();
        let mut sockets = Vec::new();
        let mut addrs = Vec::new();
        // Ip-major order: [ip0 port0, ip0 port1, ip1 port0, ip1 port1].
        for ip in 0..ips.len() {
            for port_set in per_port.iter_mut() {
                let Some(s) = port_set.get_mut(ip).and_then(Option::take) else {
                    return Err(ResponderError::Config("RFC 5780 STUN: socket missing".into()));
                };
                addrs.push(s.local_addr().map_err(|e| ResponderError::Config(format!("local address: {e}")))?);
                sockets.push(Arc::new(s));
            }
        }
        Ok(NatStun {
            sockets,
            addrs,
            limiter: Mutex::new(Limiter::new(Instant::now())),
        })
    }

    /// Where it listens, in the order primary IP (primary port, alternate port), then the
    /// alternate IP's two.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// One serving loop per socket until shutdown.
    pub fn spawn(self, shutdown: &Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let shared = Arc::new(self);
        (0..shared.sockets.len())
            .map(|i| tokio::spawn(serve(shared.clone(), i, shutdown.clone())))
            .collect()
    }

    fn two_ips(&self) -> bool {
        self.sockets.len() == 4
    }
}

/// Binds `want` (or, for 0, one free number) on every IP; `taken` are numbers already used.
async fn bind_on_all(ips: &[IpAddr], want: u16, taken: &[u16]) -> Result<Vec<UdpSocket>, ResponderError> {
    let bind_err = |addr: SocketAddr, source: std::io::Error| ResponderError::Bind {
        what: "RFC 5780 STUN",
        proto: "udp",
        addr,
        source,
    };
    let attempts = if want == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let first_addr = SocketAddr::new(ips[0], want);
        let first = UdpSocket::bind(first_addr).await.map_err(|e| bind_err(first_addr, e))?;
        let port = first.local_addr().map_err(|e| bind_err(first_addr, e))?.port();
        if taken.contains(&port) {
            continue;
        }
        let mut all = vec![first];
        let mut ok = true;
        for ip in &ips[1..] {
            let addr = SocketAddr::new(*ip, port);
            match UdpSocket::bind(addr).await {
                Ok(s) => all.push(s),
                Err(e) if want == 0 => {
                    last = Some(bind_err(addr, e));
                    ok = false;
                    break;
                }
                Err(e) => return Err(bind_err(addr, e)),
            }
        }
        if ok {
            return Ok(all);
        }
    }
    Err(last.unwrap_or_else(|| ResponderError::Config("RFC 5780 STUN: no port number free on every address".into())))
}

async fn serve(set: Arc<NatStun>, index: usize, shutdown: Shutdown) {
    let socket = set.sockets[index].clone();
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                Err(e) => {
                    tracing::debug!("RFC 5780 STUN recv: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let Some(answer) = answer(&set, index, &buf[..n], from) else {
            continue;
        };
        let allowed = set
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(answer.to.ip(), Instant::now());
        if !allowed {
            continue;
        }
        tracing::debug!(peer = %from, to = %answer.to, from_socket = %set.addrs[answer.via], "RFC 5780 Binding");
        if let Err(e) = set.sockets[answer.via].send_to(&answer.bytes, answer.to).await {
            tracing::debug!("RFC 5780 STUN send to {}: {e}", answer.to);
        }
    }
}

/// A response: its bytes, the socket it leaves from, where it goes.
#[derive(Debug)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub via: usize,
    pub to: SocketAddr,
}

/// The answer to `request` received on socket `index` from `from`, or `None` to stay silent.
fn answer(set: &NatStun, index: usize, request: &[u8], from: SocketAddr) -> Option<Answer> {
    let (req, _) = MessageDecoderBuilder::default().build().decode(request).ok()?;
    if req.method() != BINDING || req.class() != MessageClass::Request {
        return None;
    }
    let flags = req
        .get::<ChangeRequest>()
        .and_then(|a| a.as_change_request().ok())
        .map(|c| c.flags())
        .unwrap_or_default();
    let change_ip = flags.contains(ChangeRequestFlags::ChangeIp);
    let change_port = flags.contains(ChangeRequestFlags::ChangePort);
    let (ip, port) = (index / 2, index % 2);
    if change_ip && !set.two_ips() {
        let error = stun_rs::ErrorCode::new(420, "Unknown Attribute: no alternate address").ok()?;
        let msg = StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
            .with_transaction_id(*req.transaction_id())
            .with_attribute(ErrorCode::from(error))
            .with_attribute(UnknownAttributes::from(&[CHANGE_REQUEST_TYPE][..]))
            .with_attribute(Fingerprint::default())
            .build();
        return Some(Answer {
            bytes: encode(&msg)?,
            via: index,
            to: from,
        });
    }
    let via = (ip ^ usize::from(change_ip)) * 2 + (port ^ usize::from(change_port));
    let to = match req.get::<ResponsePort>().and_then(|a| a.as_response_port().ok()) {
        // Privileged ports are services (DNS, NTP, …), never a probe's idle mapping.
        Some(p) if p.as_u16() != 0 && p.as_u16() < MIN_RESPONSE_PORT => return None,
        Some(p) if p.as_u16() != 0 => SocketAddr::new(from.ip(), p.as_u16()),
        _ => from,
    };
    let mut b = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*req.transaction_id())
        .with_attribute(XorMappedAddress::from(from))
        .with_attribute(ResponseOrigin::from(set.addrs[via]));
    if set.two_ips() {
        b = b.with_attribute(OtherAddress::from(set.addrs[(1 - ip) * 2 + (1 - port)]));
    }
    let msg = b.with_attribute(Fingerprint::default()).build();
    Some(Answer {
        bytes: encode(&msg)?,
        via,
        to,
    })
}

fn encode(msg: &StunMessage) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 512];
    let n = MessageEncoderBuilder::default().build().encode(&mut buf, msg).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_rs::attributes::stun::ErrorCode as ErrorCodeAttr;

    async fn server(two: bool) -> NatStun {
        let cfg = NatStunConfig {
            primary: "127.0.0.1".parse().unwrap(),
            alternate: two.then(|| "127.0.0.2".parse().unwrap()),
            ports: [0, 0],
        };
        NatStun::bind(&cfg).await.unwrap()
    }

    fn request(change: Option<ChangeRequest>, response_port: Option<u16>) -> Vec<u8> {
        let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request);
        if let Some(c) = change {
            b = b.with_attribute(c);
        }
        if let Some(p) = response_port {
            b = b.with_attribute(ResponsePort::from(p));
        }
        encode(&b.build()).unwrap()
    }

    fn decode(a: &Answer) -> StunMessage {
        MessageDecoderBuilder::default().build().decode(&a.bytes).unwrap().0
    }

    #[tokio::test]
    async fn change_request_picks_the_socket_and_other_address_is_the_opposite_corner() {
        let s = server(true).await;
        let a = s.addrs();
        assert_eq!((a[0].port(), a[1].port()), (a[2].port(), a[3].port()), "same ports on both IPs");
        let client: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let plain = answer(&s, 0, &request(None, None), client).unwrap();
        assert_eq!((plain.via, plain.to), (0, client));
        let m = decode(&plain);
        let other = m.get::<OtherAddress>().unwrap().as_other_address().unwrap();
        assert_eq!(*other.socket_address(), a[3]);
        let mapped = m.get::<XorMappedAddress>().unwrap().as_xor_mapped_address().unwrap();
        assert_eq!(*mapped.socket_address(), client);
        let both = answer(
            &s,
            0,
            &request(
                Some(ChangeRequest::new(Some(
                    ChangeRequestFlags::ChangeIp | ChangeRequestFlags::ChangePort,
                ))),
                None,
            ),
            client,
        )
        .unwrap();
        assert_eq!(both.via, 3);
        let origin = decode(&both)
            .get::<ResponseOrigin>()
            .unwrap()
            .as_response_origin()
            .unwrap()
            .socket_address()
            .to_owned();
        assert_eq!(origin, a[3]);
        let port_only = answer(
            &s,
            0,
            &request(Some(ChangeRequest::new(Some(ChangeRequestFlags::ChangePort.into()))), None),
            client,
        )
        .unwrap();
        assert_eq!(port_only.via, 1);
        let from_alt = answer(
            &s,
            3,
            &request(Some(ChangeRequest::new(Some(ChangeRequestFlags::ChangeIp.into()))), None),
            client,
        )
        .unwrap();
        assert_eq!(from_alt.via, 1);
        let elsewhere = answer(&s, 0, &request(None, Some(6000)), client).unwrap();
        assert_eq!(
            elsewhere.to,
            "127.0.0.9:6000".parse().unwrap(),
            "RESPONSE-PORT keeps the requester's IP"
        );
    }

    #[tokio::test]
    async fn one_address_has_no_other_address_and_refuses_change_ip() {
        let s = server(false).await;
        let client: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let plain = decode(&answer(&s, 0, &request(None, None), client).unwrap());
        assert!(plain.get::<OtherAddress>().is_none());
        let refused = answer(
            &s,
            0,
            &request(Some(ChangeRequest::new(Some(ChangeRequestFlags::ChangeIp.into()))), None),
            client,
        )
        .unwrap();
        let m = decode(&refused);
        assert_eq!(m.class(), MessageClass::ErrorResponse);
        let code = m.get::<ErrorCodeAttr>().unwrap().as_error_code().unwrap().error_code().error_code();
        assert_eq!(code, 420);
        let port_only = answer(
            &s,
            1,
            &request(Some(ChangeRequest::new(Some(ChangeRequestFlags::ChangePort.into()))), None),
            client,
        )
        .unwrap();
        assert_eq!(port_only.via, 0);
    }

    #[tokio::test]
    async fn answers_carry_no_mapped_address_and_privileged_response_ports_get_none() {
        let s = server(true).await;
        let client: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let plain = answer(&s, 0, &request(None, None), client).unwrap();
        assert!(decode(&plain).get::<stun_rs::attributes::stun::MappedAddress>().is_none());
        // 20-byte header, XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS, FINGERPRINT.
        assert_eq!(plain.bytes.len(), 64);
        for port in [53, 123, 1023] {
            assert!(answer(&s, 0, &request(None, Some(port)), client).is_none(), "{port}");
        }
        assert!(answer(&s, 0, &request(None, Some(1024)), client).is_some());
    }

    #[test]
    fn the_limiter_bounds_one_source_and_all_sources_with_fixed_memory() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let granted = (0..1000).filter(|_| l.allow(a, t0)).count();
        assert_eq!(granted as f64, SOURCE_BURST);
        // A second later the bucket has refilled by the rate, not more.
        let t1 = t0 + std::time::Duration::from_secs(1);
        let granted = (0..1000).filter(|_| l.allow(a, t1)).count();
        assert_eq!(granted as f64, SOURCE_RATE);
        // Many sources (spoofed ones, say): the global bucket caps the total, the table stays.
        let mut l = Limiter::new(t0);
        let total = (0..100_000u32)
            .filter(|i| l.allow(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), t0))
            .count();
        assert_eq!(total as f64, GLOBAL_BURST);
        assert_eq!(l.slots.len(), SOURCE_SLOTS);
    }

    #[tokio::test]
    async fn a_burst_from_one_source_gets_a_bounded_number_of_answers() {
        let s = server(true).await;
        let target = s.addrs()[0];
        let stop = Shutdown::new();
        let tasks = s.spawn(&stop);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent = 400;
        let started = Instant::now();
        let req = request(None, None);
        for _ in 0..sent {
            client.send_to(&req, target).await.unwrap();
        }
        let mut buf = [0u8; 512];
        let mut answers = 0usize;
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        while let Ok(Ok(_)) = tokio::time::timeout_at(until, client.recv_from(&mut buf)).await {
            answers += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        stop.trigger();
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
        }
        let bound = SOURCE_BURST + SOURCE_RATE * elapsed + 1.0;
        assert!(
            (answers as f64) <= bound,
            "{answers} answers to {sent} requests in {elapsed:.2} s (bound {bound:.0})"
        );
        assert!(answers as f64 >= SOURCE_BURST * 0.9, "the burst itself is answered: {answers}");
        eprintln!("{sent} requests from one source: {answers} answers in {elapsed:.2} s");
    }

    #[tokio::test]
    async fn garbage_and_non_binding_get_no_answer() {
        let s = server(true).await;
        let client: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        assert!(answer(&s, 0, b"GET / HTTP/1.1\r\n\r\n", client).is_none());
        let resp = encode(&StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse).build()).unwrap();
        assert!(answer(&s, 0, &resp, client).is_none());
    }
}
