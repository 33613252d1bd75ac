//! HTTP CONNECT through an explicit forward proxy (RFC 9110 §9.3.6), for every TCP-based probe.
//!
//! In strict-egress networks the softphone often reaches the internet only through a corporate
//! proxy, so the question "does wss://…:443 work?" really is "does the proxy let us CONNECT to
//! it, and what is on the other side?". Everything up to an established tunnel is one phase,
//! `proxy`: resolving and connecting to the proxy *and* the CONNECT exchange. A dead proxy is
//! therefore `proxy/refused` or `proxy/timeout`, never `connect/...` of the target (which the
//! probe host never talks to directly). Answers map to reasons: 407 (or 401, which tinyproxy
//! sends for wrong credentials) ⇒ `proxy/auth` (missing or wrong credentials), any other non-2xx ⇒ `proxy/status_<code>` (403: the proxy's policy
//! forbids the port or host; 502/503/504: the proxy could not reach the target).
//!
//! The target is sent by name, as browsers do, so the proxy resolves it (in many such networks
//! the probe host cannot resolve external names at all). The tunnel is a plain [`TcpStream`]:
//! TLS, HTTP, WebSocket and TURN-over-TCP/TLS run on it unchanged.
//!
//! `NO_PROXY` (or `no_proxy`) is honoured for every proxy, configured or from the environment,
//! like curl does: see [`bypass`].

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HostPort, ProxySetting, ProxyUrl};
use crate::outcome::{Failure, Fault, Phase, Reason, Run};

use super::classify::fault_from_io;
use super::dial::{connect_any, lookup};

/// Longest proxy response header we read before calling the answer garbage.
const MAX_RESPONSE_HEADER: usize = 16 * 1024;

/// Opens a tunnel to `target` through `proxy`; every failure is in phase `proxy`.
///
/// Basic credentials from the proxy URL (secret refs allowed) are sent up front in
/// `Proxy-Authorization`; they never appear in messages.
pub async fn connect_via(run: &mut Run, proxy: &ProxyUrl, target: &HostPort) -> Result<TcpStream, Failure> {
    let proxy_hp = HostPort {
        host: proxy.host.clone(),
        port: proxy.port,
    };
    let request = connect_request(proxy, target);
    let target = target.clone();
    let stream = run
        .phase(Phase::Proxy, async move {
            let addrs = lookup(proxy_hp.host.clone(), proxy_hp.port)
                .await
                .map_err(|f| Fault::new(f.reason, format!("proxy {proxy_hp}: {}", f.message)))?;
            let (mut stream, _) = connect_any(addrs)
                .await
                .map_err(|f| Fault::new(f.reason, format!("proxy {proxy_hp}: {}", f.message)))?;
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| fault_from_io(&format!("sending CONNECT to proxy {proxy_hp}"), &e))?;
            let head = read_head(&mut stream)
                .await
                .map_err(|f| Fault::new(f.reason, format!("proxy {proxy_hp}: {}", f.message)))?;
            check_status(&head, &proxy_hp, &target)?;
            Ok(stream)
        })
        .await?;
    run.detail.notes.push(format!("via proxy {}:{}", proxy.host, proxy.port));
    Ok(stream)
}

/// The CONNECT request, with `Proxy-Authorization: Basic` when a username is configured.
fn connect_request(proxy: &ProxyUrl, target: &HostPort) -> String {
    let authority = target.to_string();
    let mut req = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: egress-probe/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(user) = &proxy.username {
        let pass = proxy.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{pass}", user.expose()));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Reads the proxy's response header up to the blank line, one byte at a time so that no byte
/// of the tunnelled stream is consumed.
async fn read_head(stream: &mut TcpStream) -> Result<String, Fault> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_RESPONSE_HEADER {
            return Err(Fault::new(Reason::BadResponse, "response header to CONNECT is too long"));
        }
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|e| fault_from_io("reading the CONNECT response", &e))?;
        if n == 0 {
            let what = if head.is_empty() {
                "closed the connection without answering CONNECT"
            } else {
                "closed the connection in the middle of its CONNECT response"
            };
            return Err(Fault::new(Reason::Closed, what));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// `HTTP/1.x 200 ...` ⇒ tunnel open; 407 ⇒ `auth`; other codes ⇒ `status_<code>`.
fn check_status(head: &str, proxy: &HostPort, target: &HostPort) -> Result<(), Fault> {
    let line = head.lines().next().unwrap_or("").trim();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let text = parts.next().unwrap_or("").trim();
    let Some(code) = code.filter(|_| version.starts_with("HTTP/")) else {
        return Err(Fault::new(
            Reason::BadResponse,
            format!(
                "proxy {proxy} answered CONNECT with something that is not HTTP: {:?}",
                truncate(line, 80)
            ),
        ));
    };
    match code {
        200..=299 => Ok(()),
        // 407 is the standard answer; tinyproxy 1.11 answers wrong Basic credentials with 401.
        401 | 407 => Err(Fault::new(
            Reason::Auth,
            format!("proxy {proxy} requires authentication for CONNECT {target} ({code} {text}): credentials missing or rejected"),
        )),
        403 => Err(Fault::new(
            Reason::Status(403),
            format!("proxy {proxy} refused CONNECT {target} (403 {text}): its policy forbids this host or port"),
        )),
        // tinyproxy says 500 "Unable to connect"; squid and most others 502/503/504.
        500 | 502..=504 => Err(Fault::new(
            Reason::Status(code),
            format!("proxy {proxy} could not reach {target} ({code} {text})"),
        )),
        _ => Err(Fault::new(
            Reason::Status(code),
            format!("proxy {proxy} refused CONNECT {target} ({code} {text})"),
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Proxy from the environment (for `proxy: env`): `HTTPS_PROXY`, `https_proxy`, then
/// `ALL_PROXY`, `all_proxy`. Every probe we run is TLS or tunnelled, so the https variable is
/// the one that applies (as curl does for https URLs). A value without a scheme
/// (`proxy.corp:3128`) is read as `http://`. `None` when unset, empty or unparsable.
pub fn from_env() -> Option<ProxyUrl> {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .and_then(|v| parse_env_value(&v))
}

fn parse_env_value(v: &str) -> Option<ProxyUrl> {
    let v = v.trim();
    let with_scheme = if v.contains("://") { v.to_string() } else { format!("http://{v}") };
    match ProxySetting::parse(&with_scheme) {
        Ok(ProxySetting::Url(u)) => Some(u),
        _ => None,
    }
}

/// Whether `target` must bypass the proxy according to `NO_PROXY`/`no_proxy`, read at each call.
pub fn bypass(target: &HostPort) -> bool {
    let list = std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy")).unwrap_or_default();
    NoProxy::parse(&list).matches(target)
}

/// A parsed `NO_PROXY` list, curl-compatible: comma/space separated entries; `*` matches
/// everything; `example.com` and `.example.com` match the domain and its subdomains; IP
/// literals and CIDR blocks (`10.0.0.0/8`, `::1`) match addresses; `host:port` matches only
/// that port.
#[derive(Clone, Debug, Default)]
pub struct NoProxy {
    entries: Vec<String>,
}

impl NoProxy {
    /// Parses a `NO_PROXY` value.
    pub fn parse(list: &str) -> NoProxy {
        NoProxy {
            entries: list
                .split([',', ' '])
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    /// Whether `target` is excluded from proxying.
    pub fn matches(&self, target: &HostPort) -> bool {
        let host = target.host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let ip: Option<std::net::IpAddr> = host.parse().ok();
        self.entries.iter().any(|e| entry_matches(e, host, ip, target.port))
    }
}

fn entry_matches(entry: &str, host: &str, ip: Option<std::net::IpAddr>, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    // `host:port` (but not a bare IPv6 address or a CIDR block).
    let (pattern, want_port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
            Ok(p) => (h.trim_start_matches('[').trim_end_matches(']'), Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    };
    if want_port.is_some_and(|p| p != port) {
        return false;
    }
    if let Some((net, bits)) = pattern.split_once('/') {
        let (Ok(net), Ok(bits), Some(ip)) = (net.parse::<std::net::IpAddr>(), bits.parse::<u32>(), ip) else {
            return false;
        };
        return in_cidr(ip, net, bits);
    }
    if let (Ok(p), Some(ip)) = (pattern.parse::<std::net::IpAddr>(), ip) {
        return p == ip;
    }
    let domain = pattern.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
    !domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}")))
}

fn in_cidr(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u32) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (ip, net) {
        (V4(a), V4(n)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (V6(a), V6(n)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn hp(h: &str, p: u16) -> HostPort {
        HostPort { host: h.into(), port: p }
    }

    #[test]
    fn no_proxy_matches_like_curl() {
        let np = NoProxy::parse("localhost, .corp.example,example.org:8443 10.0.0.0/8,::1");
        assert!(np.matches(&hp("localhost", 443)));
        assert!(np.matches(&hp("a.corp.example", 443)));
        assert!(np.matches(&hp("corp.example", 443)));
        assert!(!np.matches(&hp("notcorp.example", 443)));
        assert!(np.matches(&hp("example.org", 8443)));
        assert!(!np.matches(&hp("example.org", 443)));
        assert!(np.matches(&hp("10.1.2.3", 443)));
        assert!(!np.matches(&hp("11.1.2.3", 443)));
        assert!(np.matches(&hp("::1", 443)));
        assert!(NoProxy::parse("*").matches(&hp("anything", 1)));
        assert!(!NoProxy::parse("").matches(&hp("anything", 1)));
    }

    #[test]
    fn connect_request_carries_basic_auth_and_status_maps() {
        let p = ProxyUrl {
            host: "proxy".into(),
            port: 3128,
            username: Some(Secret::literal("u")),
            password: Some(Secret::literal("p")),
        };
        let req = connect_request(&p, &hp("media.example", 443));
        assert!(req.starts_with("CONNECT media.example:443 HTTP/1.1\r\n"));
        assert!(req.contains("Proxy-Authorization: Basic dTpw\r\n"));
        let t = hp("t", 1);
        assert!(check_status("HTTP/1.1 200 Connection established\r\n\r\n", &t, &t).is_ok());
        assert_eq!(check_status("HTTP/1.0 407 Auth\r\n\r\n", &t, &t).unwrap_err().reason, Reason::Auth);
        assert_eq!(
            check_status("HTTP/1.0 403 No\r\n\r\n", &t, &t).unwrap_err().reason,
            Reason::Status(403)
        );
        assert_eq!(check_status("SSH-2.0\r\n\r\n", &t, &t).unwrap_err().reason, Reason::BadResponse);
    }

    #[test]
    fn env_values_without_scheme_are_http() {
        let u = parse_env_value("proxy.corp:3128").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("proxy.corp", 3128));
        assert!(parse_env_value("socks5://x:1").is_none());
    }
}
