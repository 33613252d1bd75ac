//! Resolve and connect, each a timed phase, optionally through an HTTP CONNECT proxy.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::config::{HostPort, ProxyUrl};
use crate::probe::{Failure, Fault, Phase, Reason, Run};

use super::classify::fault_from_io;

/// Resolves `host:port` with the system resolver (phase `resolve`). IP literals skip the
/// lookup but still record a zero-length phase so every probe has the same phase list.
pub async fn resolve(run: &mut Run, target: &HostPort) -> Result<Vec<SocketAddr>, Failure> {
    let host = target.host.clone();
    let port = target.port;
    let addrs = run
        .phase(Phase::Resolve, async move {
            if let Ok(ip) = host.parse::<IpAddr>() {
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
        })
        .await?;
    run.detail.resolved = addrs.clone();
    Ok(addrs)
}

fn resolve_fault(host: &str, e: &std::io::Error) -> Fault {
    // getaddrinfo reports through strings only; map the glibc texts we know.
    let text = e.to_string();
    let reason = if text.contains("not known") || text.contains("No address associated") || text.contains("nodename nor servname") {
        Reason::Nxdomain
    } else if text.contains("Temporary failure") {
        Reason::Servfail
    } else {
        Reason::Io
    };
    Fault::new(reason, format!("resolving {host}: {text}"))
}

/// Connects to one address (phase `connect`).
pub async fn connect(run: &mut Run, addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = run
        .phase(Phase::Connect, async move {
            TcpStream::connect(addr)
                .await
                .map_err(|e| fault_from_io(&format!("connect to {addr}"), &e))
        })
        .await?;
    let _ = stream.set_nodelay(true);
    run.detail.peer = Some(addr);
    Ok(stream)
}

/// What [`dial`] produced: the stream and, without a proxy, the address it reached.
#[derive(Debug)]
pub struct Dialed {
    pub stream: TcpStream,
    /// `None` when the connection goes through a proxy (the proxy resolves the target).
    pub peer: Option<SocketAddr>,
}

/// Resolve → connect (first address that answers) → proxy CONNECT when `proxy` is set.
///
/// Without a proxy, addresses are tried in resolver order; a refused/unreachable address
/// moves on to the next one, a timeout ends the probe (the deadline is spent). Through a
/// proxy, the *proxy* is resolved and connected (its failures are `proxy/...`), then asked to
/// CONNECT to the target by name, as browsers do.
pub async fn dial(run: &mut Run, target: &HostPort, proxy: Option<&ProxyUrl>) -> Result<Dialed, Failure> {
    if let Some(p) = proxy {
        let stream = super::proxy::connect_via(run, p, target).await?;
        return Ok(Dialed { stream, peer: None });
    }
    let addrs = resolve(run, target).await?;
    let mut last: Option<Failure> = None;
    for addr in addrs {
        match connect(run, addr).await {
            Ok(stream) => return Ok(Dialed { stream, peer: Some(addr) }),
            Err(f) if f.reason == Reason::Timeout => return Err(f),
            Err(f) => last = Some(f),
        }
    }
    Err(last.unwrap_or_else(|| Failure::new(Phase::Connect, Reason::NoAnswer, format!("{target}: no address to connect to"))))
}
