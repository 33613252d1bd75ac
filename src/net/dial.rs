//! Resolve and connect, each a timed phase, optionally through an HTTP CONNECT proxy.
//!
//! Resolution uses the system resolver (getaddrinfo, so `/etc/hosts`, `nsswitch` and the
//! system's DNS servers apply, exactly as for the softphone). Connecting to a name with several
//! addresses follows Happy Eyeballs (RFC 8305) in spirit: addresses are tried in resolver order,
//! the next one starts when the previous fails or after [`STAGGER`] without an answer, and the
//! first that answers wins. One blackholed address therefore costs 250 ms, not the whole timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;

use crate::config::{HostPort, ProxyUrl};
use crate::outcome::details::RejectOrigin;
use crate::outcome::{Failure, Fault, Phase, Reason, Run};

use super::classify::{classify_io, fault_from_io};
use super::errqueue;

/// A failed connect and, for a reject or an unreachable, who said so.
type ConnectError = (Fault, Option<RejectOrigin>);

/// How long a connection attempt may stay unanswered before the next address is tried too
/// (RFC 8305 "Connection Attempt Delay").
pub const STAGGER: Duration = Duration::from_millis(250);

/// Resolves `host:port` with the system resolver (phase `resolve`). IP literals skip the
/// lookup but still record a zero-length phase so every probe has the same phase list.
pub async fn resolve(run: &mut Run, target: &HostPort) -> Result<Vec<SocketAddr>, Failure> {
    let addrs = run.phase(Phase::Resolve, lookup(target.host.clone(), target.port)).await?;
    run.detail.resolved = addrs.clone();
    Ok(addrs)
}

/// The lookup itself, without a phase: for callers that time it inside another phase (the
/// proxy's own name is resolved inside phase `proxy`).
pub(crate) async fn lookup(host: String, port: u16) -> Result<Vec<SocketAddr>, Fault> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| resolve_fault(&host, &e))?;
    let mut v: Vec<SocketAddr> = Vec::new();
    for a in found {
        if !v.contains(&a) {
            v.push(a);
        }
    }
    if v.is_empty() {
        return Err(Fault::new(Reason::NoAnswer, format!("{host} has no A/AAAA records")));
    }
    Ok(v)
}

/// getaddrinfo failure → reason. getaddrinfo reports only an `EAI_*` code, which std turns into
/// its `gai_strerror` text (English: Rust programs never call `setlocale`), so we map the texts.
fn resolve_fault(host: &str, e: &std::io::Error) -> Fault {
    let text = e.to_string();
    let reason = gai_reason(&text);
    let hint = match reason {
        Reason::Nxdomain => " (the name does not exist: NXDOMAIN)",
        Reason::NoAnswer => " (the name exists but has no A/AAAA record)",
        Reason::Servfail => " (temporary resolver failure: SERVFAIL, or no DNS server answered)",
        _ => "",
    };
    Fault::new(reason, format!("resolving {host}: {text}{hint}"))
}

/// Maps a glibc/musl `gai_strerror` text to a reason.
fn gai_reason(text: &str) -> Reason {
    if text.contains("No address associated") {
        // EAI_NODATA: NOERROR with no A/AAAA answer.
        Reason::NoAnswer
    } else if text.contains("not known") || text.contains("nodename nor servname") || text.contains("Name does not resolve") {
        // EAI_NONAME (glibc / BSD / musl wording).
        Reason::Nxdomain
    } else if text.contains("Temporary failure") || text.contains("Try again") || text.contains("Non-recoverable") {
        // EAI_AGAIN (SERVFAIL or resolver timeout), EAI_FAIL (REFUSED/FORMERR).
        Reason::Servfail
    } else {
        Reason::Io
    }
}

/// Connects to one address (phase `connect`).
pub async fn connect(run: &mut Run, addr: SocketAddr) -> Result<TcpStream, Failure> {
    let mut origin = None;
    // The socket is made (and IP_RECVERR set) before the phase starts: the phase is the
    // exchange on the wire, not the process's own socket set-up.
    let prepared = prepare(addr);
    let result = run
        .phase(Phase::Connect, async {
            let result = match prepared {
                Ok(p) => connect_prepared(p).await,
                Err(e) => Err(e),
            };
            result.map_err(|(f, o)| {
                origin = o;
                f
            })
        })
        .await;
    if origin.is_some() {
        run.detail.reject_origin = origin;
    }
    let stream = ready(result?)?;
    run.detail.peer = Some(addr);
    Ok(stream)
}

/// A socket set up for one connection attempt (outside any timed span): non-blocking, with
/// `IP_RECVERR` on and, when that worked, a second descriptor of the same socket whose error
/// queue stays readable after a failed `connect` has consumed (and closed) the first.
struct Prepared {
    socket: socket2::Socket,
    watch: Option<OwnedFd>,
    addr: SocketAddr,
}

/// A connected socket: already writable when `connect()` returned (loopback, a LAN), so not
/// yet registered with the runtime, or registered because its answer had to be awaited.
enum Connected {
    Immediate(socket2::Socket, SocketAddr),
    Registered(TcpStream, SocketAddr),
}

impl Connected {
    fn addr(&self) -> SocketAddr {
        match self {
            Connected::Immediate(_, a) | Connected::Registered(_, a) => *a,
        }
    }
}

fn prepare(addr: SocketAddr) -> Result<Prepared, ConnectError> {
    let setup = |e: std::io::Error| (fault_from_io(&format!("connect to {addr}"), &e), None);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(setup)?;
    socket.set_nonblocking(true).map_err(setup)?;
    let watch = match errqueue::enable(socket.as_raw_fd(), addr.is_ipv6()) {
        Ok(()) => socket.as_fd().try_clone_to_owned().ok(),
        Err(_) => None,
    };
    Ok(Prepared { socket, watch, addr })
}

/// `connect()` and the wait for the answer: the timed part. The clock stops when the socket is
/// writable: at once when the handshake completed inside the `connect()` call (a `poll` with
/// no wait tells), else on the runtime's writable event. Registering an immediately connected
/// socket with the runtime and the socket options for the established connection come after.
async fn connect_prepared(p: Prepared) -> Result<Connected, ConnectError> {
    let Prepared { socket, watch, addr } = p;
    let fail = |e: &std::io::Error| failed(addr, e, watch.as_ref());
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if !writable_now(&socket) {
                let std: std::net::TcpStream = socket.into();
                let stream = TcpStream::from_std(std).map_err(|e| fail(&e))?;
                stream.writable().await.map_err(|e| fail(&e))?;
                if let Some(e) = stream.take_error().map_err(|e| fail(&e))? {
                    return Err(fail(&e));
                }
                return Ok(Connected::Registered(stream, addr));
            }
        }
        Err(e) => return Err(fail(&e)),
    }
    if let Some(e) = socket.take_error().map_err(|e| fail(&e))? {
        return Err(fail(&e));
    }
    Ok(Connected::Immediate(socket, addr))
}

/// Whether the connecting socket is writable (connected, or failed) right now, without waiting.
fn writable_now(socket: &socket2::Socket) -> bool {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for a descriptor we own, a zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// A connected socket as the runtime's stream, with the options of an established connection:
/// `IP_RECVERR` off again (on an established socket it would turn a transient ICMP error into
/// a reset) and no Nagle delay. Done after the phase's clock stopped.
fn ready(c: Connected) -> Result<TcpStream, Failure> {
    let addr = c.addr();
    let stream = match c {
        Connected::Registered(s, _) => s,
        Connected::Immediate(socket, _) => {
            let std: std::net::TcpStream = socket.into();
            TcpStream::from_std(std).map_err(|e| fault_from_io(&format!("connect to {addr}"), &e).at(Phase::Connect))?
        }
    };
    let _ = errqueue::disable(stream.as_raw_fd(), addr.is_ipv6());
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A failed connect as a fault, with who answered when the error queue or the reset says so.
fn failed(addr: SocketAddr, e: &std::io::Error, watch: Option<&OwnedFd>) -> ConnectError {
    let mut fault = fault_from_io(&format!("connect to {addr}"), e);
    let origin = match (watch, classify_io(e)) {
        (Some(fd), reason @ (Reason::Refused | Reason::Unreachable)) => {
            let o = reject_origin(fd.as_raw_fd(), addr, &reason);
            if let Some(o) = &o {
                let verb = match o.answer.as_str() {
                    "rst" | "port_unreachable" | "admin_prohibited" => "refused",
                    _ => "reported unreachable",
                };
                fault.message = format!("{}; {}", fault.message, o.phrase(verb));
            }
            o
        }
        _ => None,
    };
    (fault, origin)
}

/// Who answered a failed connect: the queued ICMP error's offender, else (for a refusal) the
/// target itself.
fn reject_origin(fd: std::os::fd::RawFd, addr: SocketAddr, reason: &Reason) -> Option<RejectOrigin> {
    match errqueue::read(fd) {
        Some(icmp) => {
            let from = icmp.offender?;
            Some(RejectOrigin {
                address: from,
                is_target: from == addr.ip(),
                answer: icmp.word().to_string(),
                hop: None,
            })
        }
        None if *reason == Reason::Refused => Some(RejectOrigin {
            address: addr.ip(),
            is_target: true,
            answer: "rst".into(),
            hop: None,
        }),
        None => None,
    }
}

/// Connects to the first of `addrs` that answers (one phase `connect`), staggering attempts by
/// [`STAGGER`]. When every address fails, the reason is theirs if they agree, else the last one's;
/// the message lists each address. At the deadline the phase is `connect/timeout`.
pub async fn connect_first(run: &mut Run, addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), Failure> {
    let mut origin = None;
    // The first attempt's socket is set up before the clock starts (see [`connect`]).
    let first = addrs.first().map(|a| prepare(*a));
    let result = run
        .phase(Phase::Connect, async {
            connect_any_origin(addrs.to_vec(), first).await.map_err(|(f, o)| {
                origin = o;
                f
            })
        })
        .await;
    if origin.is_some() {
        run.detail.reject_origin = origin;
    }
    let connected = result?;
    let addr = connected.addr();
    let stream = ready(connected)?;
    run.detail.peer = Some(addr);
    Ok((stream, addr))
}

/// [`connect_first`] without a phase: for callers that time it inside another phase (the
/// connection to a proxy is part of phase `proxy`).
pub(crate) async fn connect_any(addrs: Vec<SocketAddr>) -> Result<(TcpStream, SocketAddr), Fault> {
    let connected = connect_any_origin(addrs, None).await.map_err(|(f, _)| f)?;
    let addr = connected.addr();
    let stream = ready(connected).map_err(|f| Fault::new(f.reason, f.message))?;
    Ok((stream, addr))
}

/// [`connect_any`] keeping who rejected the last failed attempt. `first` is the first
/// address's socket when the caller set it up already.
async fn connect_any_origin(addrs: Vec<SocketAddr>, mut first: Option<Result<Prepared, ConnectError>>) -> Result<Connected, ConnectError> {
    let mut pending = FuturesUnordered::new();
    let mut next = 0usize;
    let mut errors: Vec<(SocketAddr, Fault)> = Vec::new();
    let mut origin = None;
    loop {
        if pending.is_empty() {
            match addrs.get(next) {
                Some(a) => {
                    pending.push(attempt(*a, first.take()));
                    next += 1;
                }
                None => return Err((combine(errors), origin)),
            }
        }
        let more = next < addrs.len();
        tokio::select! {
            Some((a, res)) = pending.next() => match res {
                Ok(c) => return Ok(c),
                Err((f, o)) => {
                    errors.push((a, f));
                    origin = o;
                }
            },
            _ = tokio::time::sleep(STAGGER), if more => {
                pending.push(attempt(addrs[next], None));
                next += 1;
            }
        }
    }
}

async fn attempt(addr: SocketAddr, prepared: Option<Result<Prepared, ConnectError>>) -> (SocketAddr, Result<Connected, ConnectError>) {
    let result = match prepared.unwrap_or_else(|| prepare(addr)) {
        Ok(p) => connect_prepared(p).await,
        Err(e) => Err(e),
    };
    (addr, result)
}

fn combine(errors: Vec<(SocketAddr, Fault)>) -> Fault {
    let Some((_, last)) = errors.last() else {
        return Fault::new(Reason::NoAnswer, "no address to connect to");
    };
    if errors.len() == 1 {
        return last.clone();
    }
    let reason = last.reason.clone();
    let message = errors.iter().map(|(_, f)| f.message.as_str()).collect::<Vec<_>>().join("; ");
    Fault::new(reason, message)
}

/// What [`dial`] produced: the stream and, without a proxy, the address it reached.
#[derive(Debug)]
pub struct Dialed {
    pub stream: TcpStream,
    /// `None` when the connection goes through a proxy (the proxy resolves the target).
    pub peer: Option<SocketAddr>,
}

/// Resolve → connect (first address that answers, see [`connect_first`]) → proxy CONNECT
/// when `proxy` is set.
///
/// Through a proxy, the *proxy* is resolved and connected (its failures are `proxy/...`), then
/// asked to CONNECT to the target by name, as browsers do.
pub async fn dial(run: &mut Run, target: &HostPort, proxy: Option<&ProxyUrl>) -> Result<Dialed, Failure> {
    if let Some(p) = proxy {
        let stream = super::proxy::connect_via(run, p, target).await?;
        return Ok(Dialed { stream, peer: None });
    }
    let addrs = resolve(run, target).await?;
    let (stream, peer) = connect_first(run, &addrs).await?;
    Ok(Dialed { stream, peer: Some(peer) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getaddrinfo_texts_map_to_reasons() {
        let r = |s: &str| gai_reason(&format!("failed to lookup address information: {s}"));
        assert_eq!(r("Name or service not known"), Reason::Nxdomain);
        assert_eq!(r("No address associated with hostname"), Reason::NoAnswer);
        assert_eq!(r("Temporary failure in name resolution"), Reason::Servfail);
        assert_eq!(r("Non-recoverable failure in name resolution"), Reason::Servfail);
        assert_eq!(r("System error"), Reason::Io);
    }

    #[tokio::test]
    async fn refused_address_moves_to_the_next() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut run = Run::new(tokio::time::Instant::now() + Duration::from_secs(2));
        let (_s, peer) = connect_first(&mut run, &[closed, good]).await.unwrap();
        assert_eq!(peer, good);
        assert_eq!(run.detail.peer, Some(good));
    }

    #[tokio::test]
    async fn all_refused_is_refused_naming_each_address() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut run = Run::new(tokio::time::Instant::now() + Duration::from_secs(2));
        let f = connect_first(&mut run, &[a, b]).await.unwrap_err();
        assert_eq!(f.code(), "connect/refused");
        assert!(
            f.message.contains(&a.to_string()) && f.message.contains(&b.to_string()),
            "{}",
            f.message
        );
    }
}
