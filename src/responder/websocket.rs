//! The WebSocket echo endpoint (tokio-tungstenite over the HTTPS listener's TLS stream).
//!
//! The upgrade is answered by hyper (so HTTPS and WSS share one port), then the upgraded
//! stream becomes a server-side `WebSocketStream`: text and binary messages are echoed, pings
//! answered with pongs, a client's close frame answered with a close frame (clean close), and
//! at shutdown or after the idle timeout ([`WS_IDLE_TIMEOUT`] unless configured) the server closes with 1001 "going away". The
//! first offered subprotocol (e.g. `sip`) is accepted, as strict clients require one back.
//!
//! With `websocket_cap: N` a client (source IP) may hold at most N sessions at once; further
//! upgrades get `429 Too Many Requests` with `Retry-After: 5`, as per-tenant platform limits
//! answer. A slot is taken before the 101 and given back when the session ends (also when the
//! upgrade never completes), so a client that closes its sockets is never refused for long.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::metrics::{Counters, OpenGuard};
use super::Shutdown;

/// By default a session with no message for this long is closed by the server
/// (`websocket_idle_timeout`).
pub const WS_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Seconds a refused client is told to wait (`Retry-After`).
pub const CAP_RETRY_AFTER: &str = "5";

/// The per-client cap on open WebSocket sessions (`websocket_cap`).
pub struct WsCap {
    cap: Option<usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's session slot, given back on drop.
pub struct CapSlot {
    owner: Arc<WsCap>,
    ip: IpAddr,
}

impl WsCap {
    pub fn new(cap: Option<u32>) -> WsCap {
        WsCap {
            cap: cap.map(|c| c as usize),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `ip`, or `None` when it holds `cap` sessions already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<CapSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if self.cap.is_some_and(|cap| *n >= cap) {
            return None;
        }
        *n += 1;
        Some(CapSlot { owner: self.clone(), ip })
    }
}

impl Drop for CapSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Whether `req` asks for a WebSocket upgrade.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Answers the upgrade (101, 400, or 429 past the cap) and, on 101, spawns the echo session.
pub fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    counters: Arc<Counters>,
    cap: &Arc<WsCap>,
    idle: Duration,
    shutdown: Shutdown,
) -> Response<Full<Bytes>> {
    let key = match req.headers().get(SEC_WEBSOCKET_KEY) {
        Some(k) => derive_accept_key(k.as_bytes()),
        None => return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"),
    };
    if req.headers().get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return plain(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13\n");
    }
    let protocol = req
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    let Some(slot) = cap.take(peer.ip()) else {
        tracing::debug!(%peer, "WebSocket refused: per-client cap reached");
        let mut r = plain(StatusCode::TOO_MANY_REQUESTS, "too many open WebSockets for this client\n");
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static(CAP_RETRY_AFTER));
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, "WebSocket upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(ws, peer, counters, idle, shutdown).await;
    });
    let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

/// Echoes until the client closes, the session idles out, or shutdown.
async fn echo<S>(mut ws: WebSocketStream<S>, peer: SocketAddr, counters: Arc<Counters>, idle: Duration, shutdown: Shutdown)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    counters.websockets_total.inc();
    let _open = OpenGuard::gauge(counters.websockets_open.clone());
    tracing::debug!(%peer, "WebSocket session open");
    loop {
        let next = tokio::select! {
            m = tokio::time::timeout(idle, ws.next()) => m,
            _ = shutdown.wait() => {
                going_away(&mut ws, "responder shutting down").await;
                break;
            }
        };
        let msg = match next {
            Err(_) => {
                going_away(&mut ws, "idle").await;
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(%peer, "WebSocket read: {e}");
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        let sent = match msg {
            Message::Text(_) | Message::Binary(_) => {
                counters.websocket_messages_total.inc();
                ws.send(msg).await
            }
            // tungstenite queued the pong; flush it now rather than on the next read.
            Message::Ping(_) => ws.flush().await,
            // tungstenite answers the close frame itself; keep reading until the stream ends.
            Message::Close(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        };
        if let Err(e) = sent {
            tracing::debug!(%peer, "WebSocket write: {e}");
            break;
        }
    }
    tracing::debug!(%peer, "WebSocket session closed");
}

async fn going_away<S>(ws: &mut WebSocketStream<S>, why: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: why.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}
