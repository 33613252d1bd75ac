//! The endpoints run *outside* the firewall, so that probes inside have something real to
//! reach on exactly the ports in question: STUN/TURN over UDP, TCP and TLS (`turn.rs`, the
//! webrtc-rs server), HTTPS and a WebSocket echo sharing a TLS listener (`https.rs`,
//! `websocket.rs`), a UDP echo peer for relay round trips (`udp_echo.rs`), an optional DNS
//! answerer for one test name (`dns.rs`), an optional RFC 5780 NAT behaviour discovery
//! server on two addresses × two ports (`nat_stun.rs`), and the
//! responder's own `/metrics` (`metrics.rs`) that proves nothing leaks.
//!
//! [`Responder::start`] binds everything first (so a port clash fails the start, not a later
//! task), then spawns one accept loop per listener. Dropping the [`Responder`] or calling
//! [`Responder::shutdown`] stops every loop; shutdown also closes TURN allocations and sends
//! WebSocket close frames.

mod auth_fix;
pub mod certs;
pub mod config;
pub mod dns;
pub mod https;
pub mod metrics;
pub mod nat_stun;
pub mod signalling;
pub mod stream_conn;
pub mod turn;
pub mod udp_echo;
pub mod udp_ports;
pub mod websocket;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

// The accept loops stop on the process-wide stop signal; it fires when the `Responder` is
// dropped (its `StopOnDrop`), also half-way through `start`.
use crate::shutdown::{Shutdown, StopOnDrop};

pub use certs::TlsMaterial;
pub use config::{Listen, ResponderConfig};
use metrics::Counters;
use turn::{ResponderAuth, TurnServers, TurnSettings};

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    #[error("cannot listen on {proto} {addr} for {what}: {source}")]
    Bind {
        what: &'static str,
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] certs::CertError),
    #[error("TURN server: {0}")]
    Turn(String),
    #[error("{0}")]
    Config(String),
}

/// Where each endpoint actually listens (ports resolved when 0 was asked).
#[derive(Clone, Debug, Default)]
pub struct Addresses {
    pub turn_udp: Vec<SocketAddr>,
    pub turn_tcp: Vec<SocketAddr>,
    pub turn_tls: Vec<SocketAddr>,
    /// HTTPS and WSS.
    pub web: Vec<SocketAddr>,
    pub udp_echo: Vec<SocketAddr>,
    /// `udp_echo_ports`: the address and the range of ports echoing (for `kind: udp_ports`).
    pub udp_echo_ports: Option<(IpAddr, config::PortRange)>,
    /// DNS answerer (UDP), when configured.
    pub dns: Vec<SocketAddr>,
    /// RFC 5780 STUN, when configured: primary IP (primary port, alternate port), then the
    /// alternate IP's two (absent with one IP).
    pub nat_stun: Vec<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// A running responder. Everything stops when it is dropped.
pub struct Responder {
    pub addrs: Addresses,
    /// CA file / pin probes use to trust the TLS endpoints.
    pub tls: TlsMaterial,
    /// The address advertised for relayed candidates.
    pub relay_ip: IpAddr,
    counters: Arc<Counters>,
    turn: Arc<TurnServers>,
    stop: StopOnDrop,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind_udp(what: &'static str, addr: SocketAddr) -> Result<UdpSocket, ResponderError> {
    UdpSocket::bind(addr).await.map_err(|source| ResponderError::Bind {
        what,
        proto: "udp",
        addr,
        source,
    })
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ResponderError> {
    TcpListener::bind(addr).await.map_err(|source| ResponderError::Bind {
        what,
        proto: "tcp",
        addr,
        source,
    })
}

/// The address of the interface holding the default route (no packet is sent: a UDP
/// `connect` only selects a route). Used as the relay address when binding to 0.0.0.0.
fn default_route_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

impl Responder {
    /// Binds every configured listener and starts serving.
    pub async fn start(cfg: &ResponderConfig) -> Result<Responder, ResponderError> {
        cfg.check_udp_overlaps().map_err(ResponderError::Config)?;
        let relay_ip = match cfg.relay_ip {
            Some(ip) => ip,
            None if !cfg.bind.is_unspecified() => cfg.bind,
            // Without TURN listeners nothing is relayed: a host without a default route (a
            // NAT-test-only responder in a lab) needs no relay address.
            None => default_route_ip()
                .or_else(|| cfg.turn.is_empty().then_some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
                .ok_or_else(|| {
                    ResponderError::Config("cannot find this host's address for relayed candidates; set relay_ip (--relay-ip)".into())
                })?,
        };
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            relay_ip.to_string(),
        ];
        if !cfg.bind.is_unspecified() {
            names.push(cfg.bind.to_string());
        }
        names.dedup();
        let tls = TlsMaterial::prepare(&cfg.tls, &names)?;
        let counters = Counters::new();
        let turn_servers = Arc::new(TurnServers::default());
        let stop = Shutdown::new().stop_on_drop();
        let shutdown = stop.signal().clone();
        let mut addrs = Addresses::default();

        // Bind everything before spawning anything.
        let mut udp_turn = Vec::new();
        for l in &cfg.turn.udp {
            let s = bind_udp("STUN/TURN", l.resolve(cfg.bind)).await?;
            addrs.turn_udp.push(local(&s)?);
            udp_turn.push(s);
        }
        let mut tcp_turn = Vec::new();
        for (i, l) in cfg.turn.tcp.iter().enumerate() {
            let want = l.resolve(cfg.bind);
            // Ephemeral TCP next to an ephemeral UDP listener: try the same port number first,
            // as real deployments serve 3478 on both.
            let same = addrs.turn_udp.get(i).filter(|u| want.port() == 0 && u.ip() == want.ip()).copied();
            let listener = match same {
                Some(u) => match TcpListener::bind(u).await {
                    Ok(t) => t,
                    Err(_) => bind_tcp("STUN/TURN", want).await?,
                },
                None => bind_tcp("STUN/TURN", want).await?,
            };
            addrs.turn_tcp.push(local(&listener)?);
            tcp_turn.push(listener);
        }
        let mut tls_turn = Vec::new();
        for l in &cfg.turn.tls {
            let t = bind_tcp("TURN over TLS", l.resolve(cfg.bind)).await?;
            addrs.turn_tls.push(local(&t)?);
            tls_turn.push(t);
        }
        let mut web = Vec::new();
        for l in &cfg.web {
            let t = bind_tcp("HTTPS/WSS", l.resolve(cfg.bind)).await?;
            addrs.web.push(local(&t)?);
            web.push(t);
        }
        let mut echo = Vec::new();
        for l in &cfg.udp_echo {
            let s = bind_udp("UDP echo", l.resolve(cfg.bind)).await?;
            addrs.udp_echo.push(local(&s)?);
            echo.push(s);
        }
        let echo_range = match cfg.udp_echo_ports {
            Some(range) => {
                addrs.udp_echo_ports = Some((cfg.bind, range));
                udp_ports::bind(cfg.bind, range).await?
            }
            None => Vec::new(),
        };
        let mut dns_sockets = Vec::new();
        if let Some(z) = &cfg.dns {
            for l in &z.listen {
                let s = bind_udp("DNS", l.resolve(cfg.bind)).await?;
                addrs.dns.push(local(&s)?);
                dns_sockets.push(s);
            }
        }
        let nat_stun = match &cfg.nat_stun {
            Some(n) => {
                let set = nat_stun::NatStun::bind(n).await?;
                addrs.nat_stun = set.addrs();
                Some(set)
            }
            None => None,
        };
        let metrics_listener = match cfg.metrics {
            Some(a) => {
                let t = bind_tcp("responder /metrics", a).await?;
                addrs.metrics = Some(local(&t)?);
                Some(t)
            }
            None => None,
        };

        let users = cfg.users.iter().map(|(u, p)| (u.clone(), p.expose().to_string())).collect();
        let settings = TurnSettings {
            realm: cfg.realm.clone(),
            auth: Arc::new(ResponderAuth::new(users, cfg.rest_secret.as_ref().map(|s| s.expose().to_string()))),
            relay_bind: cfg.bind,
            relay_ip,
            relay_ports: cfg.relay_ports,
            counters: counters.clone(),
        };
        if !cfg.has_credentials() {
            tracing::warn!("no TURN users or rest_secret configured: STUN works, TURN allocations will be refused (401)");
        }
        turn::start_udp(udp_turn, &settings, &turn_servers)
            .await
            .map_err(|e| ResponderError::Turn(e.to_string()))?;

        let mut tasks = Vec::new();
        for l in tcp_turn {
            tasks.push(tokio::spawn(turn::serve_stream(
                l,
                None,
                settings.clone(),
                turn_servers.clone(),
                shutdown.clone(),
            )));
        }
        if !tls_turn.is_empty() {
            let acceptor = TlsAcceptor::from(tls.server_config(certs::TURN_ALPN)?);
            for l in tls_turn {
                tasks.push(tokio::spawn(turn::serve_stream(
                    l,
                    Some(acceptor.clone()),
                    settings.clone(),
                    turn_servers.clone(),
                    shutdown.clone(),
                )));
            }
        }
        if !web.is_empty() {
            let acceptor = TlsAcceptor::from(tls.server_config(certs::WEB_ALPN)?);
            let state = Arc::new(https::WebState {
                cap: Arc::new(websocket::WsCap::new(cfg.websocket_cap)),
                idle: std::time::Duration::from_secs(cfg.websocket_idle_timeout.clamp(1, 86_400)),
                issuer: signalling::Issuer::new(
                    cfg.oauth2_clients.clone(),
                    std::time::Duration::from_secs(cfg.oauth2_token_ttl.clamp(1, 86_400)),
                ),
            });
            for l in web {
                tasks.push(tokio::spawn(https::serve(
                    l,
                    acceptor.clone(),
                    counters.clone(),
                    state.clone(),
                    shutdown.clone(),
                )));
            }
        }
        if let Some(z) = &cfg.dns {
            let ips = if z.addresses.is_empty() {
                vec![relay_ip]
            } else {
                z.addresses.clone()
            };
            let answers = Arc::new(dns::Answers::new(&z.name, ips));
            for s in dns_sockets {
                tasks.push(tokio::spawn(dns::serve(s, answers.clone(), counters.clone(), shutdown.clone())));
            }
        }
        for s in echo {
            tasks.push(tokio::spawn(udp_echo::serve(s, counters.clone(), shutdown.clone())));
        }
        tasks.extend(udp_ports::serve(echo_range, &counters, &shutdown));
        if let Some(set) = nat_stun {
            tasks.extend(set.spawn(&shutdown));
        }
        if let Some(l) = metrics_listener {
            tasks.push(tokio::spawn(metrics::serve(
                l,
                counters.clone(),
                turn_servers.clone(),
                shutdown.clone(),
            )));
        }
        Ok(Responder {
            addrs,
            tls,
            relay_ip,
            counters,
            turn: turn_servers,
            stop,
            tasks,
        })
    }

    /// The responder's `/metrics` text right now.
    pub async fn metrics_text(&self) -> String {
        self.counters.render(&self.turn).await
    }

    /// Live TURN allocations over all transports.
    pub async fn active_allocations(&self) -> usize {
        self.turn.active_allocations().await.iter().map(|(_, n)| n).sum()
    }

    /// Stops accepting, closes WebSockets (1001) and TURN allocations, and waits (bounded)
    /// for the listeners to finish.
    pub async fn shutdown(mut self) {
        self.stop.signal().trigger();
        self.turn.close_all().await;
        let tasks = std::mem::take(&mut self.tasks);
        let _ = tokio::time::timeout(Duration::from_secs(3), futures::future::join_all(tasks)).await;
        // Let per-connection tasks send their close frames.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.signal().trigger();
        let turn = self.turn.clone();
        // Close TURN servers in the background if a runtime is still there.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move { turn.close_all().await });
        }
    }
}

fn local<T: LocalAddr>(s: &T) -> Result<SocketAddr, ResponderError> {
    s.local().map_err(|e| ResponderError::Config(format!("local address: {e}")))
}

trait LocalAddr {
    fn local(&self) -> std::io::Result<SocketAddr>;
}
impl LocalAddr for UdpSocket {
    fn local(&self) -> std::io::Result<SocketAddr> {
        self.local_addr()
    }
}
impl LocalAddr for TcpListener {
    fn local(&self) -> std::io::Result<SocketAddr> {
        self.local_addr()
    }
}
