//! STUN and TURN endpoints (UDP, TCP, TLS), served by the webrtc-rs `turn` crate's server.
//!
//! UDP: one `turn::server::Server` with one `ConnConfig` per UDP listener (its intended use).
//! TCP/TLS: the crate's server only takes datagram `Conn`s, so each accepted stream is framed
//! as one (see `stream_conn.rs`) and gets a server of its own. We chose this over writing a
//! second TURN server: the allocation, permission, channel and relay logic stays the crate's
//! (the same code the UDP path uses and coturn's client interoperates with), and one server
//! per connection ties allocations to their connection as RFC 8656 requires. Relayed
//! addresses are UDP in every case (REQUESTED-TRANSPORT=UDP; RFC 6062 TCP relays are not
//! offered). STUN Binding is answered on every listener, as coturn does.
//!
//! Credentials: long-term users (`users:`) and REST/ephemeral ones (`rest_secret:`, coturn's
//! `use-auth-secret`: username `expiry[:name]`, password base64(HMAC-SHA1(secret, username)),
//! refused once `expiry` is past).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use turn::allocation::AllocationInfo;
use turn::auth::{generate_auth_key, AuthHandler};
use turn::relay::relay_range::RelayAddressGeneratorRanges;
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::relay::RelayAddressGenerator;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::vnet::net::Net;
use webrtc_util::Conn;

use super::auth_fix::AuthFix;
use super::config::PortRange;
use super::metrics::{Counters, OpenGuard};
use super::stream_conn::StreamConn;
use super::Shutdown;

/// Transport labels of the TURN listeners.
pub const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];
/// A TLS handshake (TURN over TLS) must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Asking a server for its allocations must not stall a scrape.
const INFO_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything a TURN server needs besides its listener.
#[derive(Clone)]
pub struct TurnSettings {
    pub realm: String,
    pub auth: Arc<ResponderAuth>,
    /// IP the relayed sockets bind to.
    pub relay_bind: IpAddr,
    /// IP advertised in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    pub relay_ports: Option<PortRange>,
    pub counters: Arc<Counters>,
}

impl TurnSettings {
    fn relay_generator(&self) -> Box<dyn RelayAddressGenerator + Send + Sync> {
        let net = Arc::new(Net::new(None));
        match self.relay_ports {
            Some(r) => Box::new(RelayAddressGeneratorRanges {
                relay_address: self.relay_ip,
                min_port: r.min,
                max_port: r.max,
                max_retries: 20,
                address: self.relay_bind.to_string(),
                net,
            }),
            None => Box::new(RelayAddressGeneratorStatic {
                relay_address: self.relay_ip,
                address: self.relay_bind.to_string(),
                net,
            }),
        }
    }

    /// A channel that counts ended allocations for `transport`.
    fn close_notify(&self, transport: &'static str) -> mpsc::Sender<AllocationInfo> {
        let (tx, mut rx) = mpsc::channel::<AllocationInfo>(64);
        let counter = self.counters.turn_allocations_closed_total.with_label_values(&[transport]);
        // Ends by itself when the last server/allocation holding `tx` is gone.
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                counter.inc();
            }
        });
        tx
    }
}

/// Long-term users and/or a REST secret. Passwords never leave this struct.
pub struct ResponderAuth {
    users: HashMap<String, String>,
    rest_secret: Option<String>,
}

impl ResponderAuth {
    /// `users` maps username → password; `rest_secret` enables ephemeral credentials.
    pub fn new(users: BTreeMap<String, String>, rest_secret: Option<String>) -> ResponderAuth {
        ResponderAuth {
            users: users.into_iter().collect(),
            rest_secret,
        }
    }
}

impl AuthHandler for ResponderAuth {
    fn auth_handle(&self, username: &str, realm: &str, _src: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        if let Some(pw) = self.users.get(username) {
            return Ok(generate_auth_key(username, realm, pw));
        }
        let secret = self
            .rest_secret
            .as_deref()
            .ok_or_else(|| turn::Error::Other("unknown user".into()))?;
        let expiry: u64 = username
            .split(':')
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| turn::Error::Other("unknown user (not a REST username)".into()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if expiry < now {
            return Err(turn::Error::Other("expired REST credentials".into()));
        }
        let pw = crate::config::rest_password(secret, username);
        Ok(generate_auth_key(username, realm, &pw))
    }
}

/// The STUN/TURN method word of a received message, for counters and debug logs.
pub fn method_word(msg: &[u8]) -> &'static str {
    if msg.len() < 2 {
        return "other";
    }
    if msg[0] >> 6 == 0b01 {
        return "channel_data";
    }
    let t = u16::from_be_bytes([msg[0], msg[1]]);
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    match method {
        0x001 => "binding",
        0x003 => "allocate",
        0x004 => "refresh",
        0x006 => "send",
        0x008 => "create_permission",
        0x009 => "channel_bind",
        _ => "other",
    }
}

/// Counts one received message under `transport`.
pub fn count_message(counters: &Counters, transport: &str, msg: &[u8]) -> &'static str {
    let m = method_word(msg);
    counters.turn_messages_total.with_label_values(&[transport, m]).inc();
    m
}

/// A UDP listener that counts (and debug-logs requests) on the way in.
struct CountingUdp {
    socket: UdpSocket,
    counters: Arc<Counters>,
    /// 401 instead of the crate's 400 for wrong credentials (see `auth_fix.rs`).
    auth_fix: AuthFix,
}

#[async_trait]
impl Conn for CountingUdp {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.recv(buf).await?)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (n, from) = self.socket.recv_from(buf).await?;
        let m = count_message(&self.counters, "udp", &buf[..n]);
        if !matches!(m, "channel_data" | "send" | "binding") {
            self.auth_fix.inspect(&buf[..n], from);
        }
        if !matches!(m, "channel_data" | "send") {
            tracing::debug!(peer = %from, method = m, "STUN/TURN over UDP");
        }
        Ok((n, from))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if let Some(fixed) = self.auth_fix.rewrite(buf) {
            self.socket.send_to(&fixed, target).await?;
            return Ok(buf.len());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The live TURN servers, so that allocations can be counted and everything closed.
#[derive(Default)]
pub struct TurnServers {
    udp: tokio::sync::Mutex<Option<Server>>,
    streams: tokio::sync::Mutex<HashMap<u64, (&'static str, Arc<Server>)>>,
    next_id: AtomicU64,
}

impl TurnServers {
    /// Live allocations per transport, asked of each server.
    pub async fn active_allocations(&self) -> Vec<(&'static str, usize)> {
        let mut counts: BTreeMap<&'static str, usize> = TRANSPORTS.iter().map(|t| (*t, 0)).collect();
        if let Some(s) = self.udp.lock().await.as_ref() {
            if let Ok(Ok(m)) = tokio::time::timeout(INFO_TIMEOUT, s.get_allocations_info(None)).await {
                *counts.entry("udp").or_default() += m.len();
            }
        }
        let streams: Vec<(&'static str, Arc<Server>)> = self.streams.lock().await.values().cloned().collect();
        for (t, s) in streams {
            if let Ok(Ok(m)) = tokio::time::timeout(INFO_TIMEOUT, s.get_allocations_info(None)).await {
                *counts.entry(t).or_default() += m.len();
            }
        }
        counts.into_iter().collect()
    }

    /// Closes every server (and so every allocation).
    pub async fn close_all(&self) {
        if let Some(s) = self.udp.lock().await.take() {
            let _ = tokio::time::timeout(INFO_TIMEOUT, s.close()).await;
        }
        let streams: Vec<Arc<Server>> = self.streams.lock().await.drain().map(|(_, (_, s))| s).collect();
        for s in streams {
            let _ = tokio::time::timeout(INFO_TIMEOUT, s.close()).await;
        }
    }
}

/// Starts the UDP TURN server on `sockets` (may be empty: nothing started).
pub async fn start_udp(sockets: Vec<UdpSocket>, settings: &TurnSettings, servers: &TurnServers) -> Result<(), turn::Error> {
    if sockets.is_empty() {
        return Ok(());
    }
    let conn_configs = sockets
        .into_iter()
        .map(|socket| ConnConfig {
            conn: Arc::new(CountingUdp {
                socket,
                counters: settings.counters.clone(),
                auth_fix: AuthFix::new(settings.auth.clone()),
            }),
            relay_addr_generator: settings.relay_generator(),
        })
        .collect();
    let server = Server::new(ServerConfig {
        conn_configs,
        realm: settings.realm.clone(),
        auth_handler: settings.auth.clone(),
        channel_bind_timeout: Duration::from_secs(0),
        alloc_close_notify: Some(settings.close_notify("udp")),
    })
    .await?;
    *servers.udp.lock().await = Some(server);
    Ok(())
}

/// Accepts TURN-over-TCP (`tls: None`) or TURN-over-TLS connections until shutdown.
pub async fn serve_stream(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: TurnSettings,
    servers: Arc<TurnServers>,
    shutdown: Shutdown,
) {
    let transport: &'static str = if tls.is_some() { "tls" } else { "tcp" };
    let endpoint: &'static str = if tls.is_some() { "turn_tls" } else { "turn_tcp" };
    let close_notify = settings.close_notify(transport);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("TURN/{transport} accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        tracing::debug!(%peer, transport, "TURN connection");
        let guard = OpenGuard::connection(&settings.counters, endpoint);
        let local = tcp.local_addr().unwrap_or(peer);
        let (tls, settings, servers, shutdown, notify) = (
            tls.clone(),
            settings.clone(),
            servers.clone(),
            shutdown.clone(),
            close_notify.clone(),
        );
        tokio::spawn(async move {
            let _guard = guard;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => {
                    let conn = Arc::new(StreamConn::new(
                        tcp,
                        local,
                        peer,
                        transport,
                        settings.counters.clone(),
                        AuthFix::new(settings.auth.clone()),
                    ));
                    run_stream_server(conn, transport, &settings, &servers, &shutdown, notify).await;
                }
                Some(acceptor) => {
                    let stream = tokio::select! {
                        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TURN/TLS handshake failed: {e}");
                                settings.counters.tls_failures_total.with_label_values(&[endpoint]).inc();
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TURN/TLS handshake timed out");
                                settings.counters.tls_failures_total.with_label_values(&[endpoint]).inc();
                                return;
                            }
                        },
                        _ = shutdown.wait() => return,
                    };
                    let conn = Arc::new(StreamConn::new(
                        stream,
                        local,
                        peer,
                        transport,
                        settings.counters.clone(),
                        AuthFix::new(settings.auth.clone()),
                    ));
                    run_stream_server(conn, transport, &settings, &servers, &shutdown, notify).await;
                }
            }
        });
    }
}

/// Runs one TURN server over one connection until the connection ends or shutdown.
async fn run_stream_server<S>(
    conn: Arc<StreamConn<S>>,
    transport: &'static str,
    settings: &TurnSettings,
    servers: &TurnServers,
    shutdown: &Shutdown,
    notify: mpsc::Sender<AllocationInfo>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut ended = conn.ended();
    let server = match Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: conn.clone(),
            relay_addr_generator: settings.relay_generator(),
        }],
        realm: settings.realm.clone(),
        auth_handler: settings.auth.clone(),
        channel_bind_timeout: Duration::from_secs(0),
        alloc_close_notify: Some(notify),
    })
    .await
    {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!("TURN/{transport}: cannot start a server for a connection: {e}");
            return;
        }
    };
    let id = servers.next_id.fetch_add(1, Ordering::Relaxed);
    servers.streams.lock().await.insert(id, (transport, server.clone()));
    let stopping = tokio::select! {
        _ = ended.wait_for(|e| *e) => false,
        _ = shutdown.wait() => true,
    };
    if stopping {
        conn.shutdown().await;
    }
    // Stops the server's command task; its read loop has ended (or ends now) and its
    // allocation manager closes this connection's allocations.
    let _ = tokio::time::timeout(INFO_TIMEOUT, server.close()).await;
    servers.streams.lock().await.remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_words() {
        assert_eq!(method_word(&[0x00, 0x01]), "binding");
        assert_eq!(method_word(&[0x00, 0x03]), "allocate");
        assert_eq!(method_word(&[0x01, 0x03]), "allocate"); // success response
        assert_eq!(method_word(&[0x00, 0x16]), "send"); // Send indication
        assert_eq!(method_word(&[0x00, 0x08]), "create_permission");
        assert_eq!(method_word(&[0x40, 0x00, 0, 4]), "channel_data");
    }

    #[test]
    fn rest_credentials_expire() {
        let auth = ResponderAuth::new(
            BTreeMap::from([("test".to_string(), "secret".to_string())]),
            Some("labsecret".into()),
        );
        let src: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            auth.auth_handle("test", "r", src).unwrap(),
            generate_auth_key("test", "r", "secret")
        );
        let future = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
        let user = format!("{future}:alice");
        let pw = crate::config::rest_password("labsecret", &user);
        assert_eq!(auth.auth_handle(&user, "r", src).unwrap(), generate_auth_key(&user, "r", &pw));
        assert!(auth.auth_handle("1000:alice", "r", src).is_err(), "expired");
        assert!(auth.auth_handle("mallory", "r", src).is_err());
    }
}
