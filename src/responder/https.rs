//! The HTTPS endpoint: TLS (tokio-rustls) + HTTP/1.1 (hyper), on the same listener as the
//! WebSocket echo (`websocket.rs`), as signalling servers share 443 in real deployments.
//!
//! Routes: `GET /` → 200 with a short text; `/status/NNN` → status NNN (100..=599), with
//! `Retry-After: 5` on 429/503 so probes can show it; any request with `Upgrade: websocket` →
//! the echo endpoint (429 + `Retry-After: 5` past the per-client `websocket_cap`);
//! `/oauth/token` and `/api/channels` → the signalling set-up (`signalling.rs`); anything else
//! → 404. Bodies are tiny: this measures reachability, not
//! throughput.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::metrics::{Counters, OpenGuard};
use super::websocket::WsCap;

/// What the HTTPS/WSS endpoint shares between connections.
pub struct WebState {
    /// Per-client WebSocket cap (`websocket_cap`).
    pub cap: Arc<WsCap>,
    /// Idle cut of WebSocket sessions (`websocket_idle_timeout`).
    pub idle: Duration,
    /// OAuth2 token endpoint and the REST channel endpoint (`oauth2_clients`).
    pub issuer: super::signalling::Issuer,
}
use super::Shutdown;

/// A TLS handshake must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP connection with no request for this long is closed.
const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts HTTPS/WSS connections until shutdown.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, counters: Arc<Counters>, web: Arc<WebState>, shutdown: Shutdown) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("HTTPS accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        tracing::debug!(%peer, "HTTPS/WSS connection");
        let guard = OpenGuard::connection(&counters, "web");
        let (acceptor, counters, web, shutdown) = (acceptor.clone(), counters.clone(), web.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let _ = tcp.set_nodelay(true);
            let tls = tokio::select! {
                r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "HTTPS TLS handshake failed: {e}");
                        counters.tls_failures_total.with_label_values(&["web"]).inc();
                        return;
                    }
                    Err(_) => {
                        counters.tls_failures_total.with_label_values(&["web"]).inc();
                        return;
                    }
                },
                _ = shutdown.wait() => return,
            };
            serve_connection(tls, peer, counters, web, shutdown).await;
        });
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, counters: Arc<Counters>, web: Arc<WebState>, shutdown: Shutdown)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let svc = {
        let (counters, shutdown) = (counters.clone(), shutdown.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (counters, web, shutdown) = (counters.clone(), web.clone(), shutdown.clone());
            async move { Ok::<_, Infallible>(route(req, peer, counters, web, shutdown).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HTTP_IDLE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "HTTPS connection: {e}");
            }
        }
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    counters: Arc<Counters>,
    web: Arc<WebState>,
    shutdown: Shutdown,
) -> Response<Full<Bytes>> {
    if super::websocket::is_upgrade(&req) {
        let resp = super::websocket::upgrade(req, peer, counters.clone(), &web.cap, web.idle, shutdown);
        counters.http_responses_total.with_label_values(&[resp.status().as_str()]).inc();
        return resp;
    }
    if super::signalling::handles(req.uri().path()) {
        let resp = super::signalling::route(req, &web.issuer).await;
        counters.http_responses_total.with_label_values(&[resp.status().as_str()]).inc();
        return resp;
    }
    let path = req.uri().path();
    let (status, body) = if path == "/" {
        (StatusCode::OK, "egress-probe responder\n".to_string())
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(s) if (200..=599).contains(&s.as_u16()) => (s, format!("status {}\n", s.as_u16())),
            _ => (StatusCode::BAD_REQUEST, "status must be 200..599\n".to_string()),
        }
    } else {
        (StatusCode::NOT_FOUND, "not found\n".to_string())
    };
    counters.http_responses_total.with_label_values(&[status.as_str()]).inc();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    if matches!(status.as_u16(), 429 | 503) {
        h.insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("5"));
    }
    resp
}
