//! Which configured servers go to the webrtc-ice agent, which to the probe's own TURN/TCP and
//! TURN/TLS gathering (`stream`), and which nobody can use (said out loud).
//!
//! webrtc-ice 0.17.2 gathers relay candidates only from `turn:` over UDP: `turns:` and
//! `turn:...?transport=tcp` are skipped with a log line, and it sends srflx Binding requests over
//! UDP to *every* URL it is given, TLS ports included. So the probe hands the agent only the
//! servers it really uses over UDP; TURN over TCP/TLS servers are allocated on by the probe's
//! own TURN client (as a browser does), and only `stuns:`/STUN over TCP (which browsers do not
//! use for srflx either) and TURN servers without credentials are listed in
//! `detail.ice.unsupported`.

use std::time::SystemTime;

use webrtc_ice::url::{ProtoType, SchemeType, Url};

use crate::config::{IceScheme, IceServer, IceTransport, IceUrl, NetworkType};

/// A TURN server with its credentials resolved (REST credentials minted at plan time).
#[derive(Clone)]
pub(crate) struct TurnServer {
    pub url: IceUrl,
    pub username: String,
    pub password: String,
}

/// The split of the configured servers.
#[derive(Default)]
pub(crate) struct ServerPlan {
    /// Handed to the agent (with credentials for TURN).
    pub agent_urls: Vec<Url>,
    /// TURN/UDP servers the agent allocates on.
    pub turn_udp: Vec<TurnServer>,
    /// TURN over TCP (`turn:...?transport=tcp`) and TLS (`turns:`) servers, allocated on by the
    /// probe's own TURN client.
    pub turn_stream: Vec<TurnServer>,
    /// Human-readable entries: server or network type, and why it is not used.
    pub unsupported: Vec<String>,
    /// Servers usable for srflx (stun: over UDP and turn: over UDP).
    pub srflx_servers: usize,
}

/// Splits `servers` into what the agent uses and what it cannot, minting REST credentials now.
pub(crate) fn plan(servers: &[IceServer], now: SystemTime) -> ServerPlan {
    let mut p = ServerPlan::default();
    for s in servers {
        let url = &s.url;
        match (url.scheme, url.transport) {
            (IceScheme::Turns, _) | (IceScheme::Turn, IceTransport::Tcp) => match &s.credentials {
                Some(c) => {
                    let (username, password) = c.resolve(now);
                    p.turn_stream.push(TurnServer {
                        url: url.clone(),
                        username,
                        password,
                    });
                }
                None => p.unsupported.push(format!("{url}: TURN server without credentials: no relay")),
            },
            (IceScheme::Stuns, _) | (IceScheme::Stun, IceTransport::Tcp) => {
                p.unsupported.push(format!(
                    "{url}: webrtc-ice 0.17.2 sends STUN Binding requests over UDP only (STUN over {} is not supported)",
                    url.transport_label().to_uppercase()
                ));
            }
            (IceScheme::Stun, IceTransport::Udp) => {
                p.srflx_servers += 1;
                p.agent_urls.push(agent_url(url, SchemeType::Stun, String::new(), String::new()));
            }
            (IceScheme::Turn, IceTransport::Udp) => {
                p.srflx_servers += 1;
                match &s.credentials {
                    Some(c) => {
                        let (username, password) = c.resolve(now);
                        p.agent_urls
                            .push(agent_url(url, SchemeType::Turn, username.clone(), password.clone()));
                        p.turn_udp.push(TurnServer {
                            url: url.clone(),
                            username,
                            password,
                        });
                    }
                    None => {
                        // webrtc-ice aborts relay gathering for *all* TURN URLs when one has no
                        // username, so a credential-less TURN server is used as STUN only.
                        p.unsupported
                            .push(format!("{url}: TURN server without credentials: used for srflx only, no relay"));
                        p.agent_urls.push(agent_url(url, SchemeType::Stun, String::new(), String::new()));
                    }
                }
            }
        }
    }
    p
}

fn agent_url(url: &IceUrl, scheme: SchemeType, username: String, password: String) -> Url {
    // webrtc-ice formats `host:port` without brackets before resolving: bracket IPv6 literals.
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    Url {
        scheme,
        host,
        port: url.port,
        username,
        password,
        proto: ProtoType::Udp,
    }
}

/// The agent's network types; ICE-TCP types are reported as unsupported (webrtc-ice 0.17.2
/// gathers UDP candidates only, and would gather UDP host candidates for a `tcp4` entry).
pub(crate) fn network_types(configured: &[NetworkType], unsupported: &mut Vec<String>) -> Vec<webrtc_ice::network_type::NetworkType> {
    use webrtc_ice::network_type::NetworkType as N;
    let configured = if configured.is_empty() {
        &[NetworkType::Udp4][..]
    } else {
        configured
    };
    let mut out = Vec::new();
    for t in configured {
        match t {
            NetworkType::Udp4 => out.push(N::Udp4),
            NetworkType::Udp6 => out.push(N::Udp6),
            NetworkType::Tcp4 | NetworkType::Tcp6 => {
                let name = if *t == NetworkType::Tcp4 { "tcp4" } else { "tcp6" };
                unsupported.push(format!("network type {name}: webrtc-ice 0.17.2 gathers no ICE-TCP candidates"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credentials, Secret};

    fn server(url: &str, creds: bool) -> IceServer {
        IceServer {
            url: IceUrl::parse(url).unwrap(),
            credentials: creds.then(|| Credentials::LongTerm {
                username: Secret::literal("u"),
                password: Secret::literal("p"),
            }),
        }
    }

    #[test]
    fn tls_and_tcp_turn_servers_go_to_the_stream_gathering_not_the_agent() {
        let p = plan(
            &[
                server("stun:127.0.0.1:3478", false),
                server("turn:127.0.0.1:3478", true),
                server("turns:127.0.0.1:5349", true),
                server("turn:127.0.0.1:3478?transport=tcp", true),
                server("turn:127.0.0.1:3479", false),
            ],
            SystemTime::now(),
        );
        assert_eq!(p.agent_urls.len(), 3);
        assert_eq!(p.turn_udp.len(), 1);
        let stream: Vec<&str> = p.turn_stream.iter().map(|s| s.url.transport_label()).collect();
        assert_eq!(stream, ["tls", "tcp"]);
        // Only the credential-less TURN server is listed (it still serves srflx).
        assert_eq!(p.unsupported.len(), 1, "{:?}", p.unsupported);
        assert!(p.unsupported[0].starts_with("turn:127.0.0.1:3479"));
    }

    #[test]
    fn tcp_network_types_are_unsupported() {
        let mut unsupported = Vec::new();
        let n = network_types(&[NetworkType::Udp4, NetworkType::Tcp4], &mut unsupported);
        assert_eq!(n.len(), 1);
        assert_eq!(unsupported.len(), 1);
    }
}
