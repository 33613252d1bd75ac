//! The endpoint's listener, bounded: a connection cap, a TLS handshake timeout, a header-read
//! timeout, a header size limit, a body size limit, a connection lifetime, and the web config's
//! TLS / Basic auth in front of the router.
//!
//! `axum::serve` has none of these limits (a half-sent request is held forever, and every
//! unfinished request pins its buffer), so connections are served here with hyper's own
//! HTTP/1 builder. Over the cap a connection is accepted and closed at once — the kernel's
//! backlog never fills with attackers' sockets, and the refusal is counted. `/healthz` stays
//! open without credentials so liveness checks need no secret; everything else asks for them
//! when the web config has `basic_auth_users`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::{Access, WebSecurity};

/// The listener's bounds. [`Limits::default`] is what the daemon uses.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Time for a TLS client to finish its handshake.
    pub tls_handshake_timeout: Duration,
    /// Time for a request's headers to arrive (also the keep-alive idle time between requests).
    pub header_read_timeout: Duration,
    /// Read buffer per connection, which bounds a request head (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// Request body limit (no endpoint takes a body).
    pub max_body_bytes: usize,
    /// Longest a connection may live (a `/probe` runs within its probe's timeout).
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 4096,
            max_connection_age: Duration::from_secs(300),
        }
    }
}

/// Counters of what the listener refused (exported by the server as metrics).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections closed on accept because `max_connections` were open.
    pub over_capacity: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failed: AtomicU64,
    /// Requests answered 401.
    pub unauthorized: AtomicU64,
}

/// Serves `app` on `listener` until `shutdown` resolves; then open connections are dropped.
/// `security` is read per connection, so a reload takes effect for new connections.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    security: watch::Receiver<Arc<WebSecurity>>,
    limits: Limits,
    stats: Arc<ListenerStats>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.over_capacity.fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        let sec = security.borrow().clone();
        let (app, stats) = (app.clone(), stats.clone());
        conns.spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let work = async {
                match sec.tls.clone() {
                    Some(cfg) => {
                        let hs = tokio::time::timeout(limits.tls_handshake_timeout, TlsAcceptor::from(cfg).accept(tcp)).await;
                        match hs {
                            Ok(Ok(tls)) => connection(TokioIo::new(tls), app, sec, limits, stats).await,
                            _ => {
                                stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    None => connection(TokioIo::new(tcp), app, sec, limits, stats).await,
                }
            };
            let _ = tokio::time::timeout(limits.max_connection_age, work).await;
        });
    }
    conns.shutdown().await;
    Ok(())
}

async fn connection<I>(io: TokioIo<I>, app: axum::Router, sec: Arc<WebSecurity>, limits: Limits, stats: Arc<ListenerStats>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (app, sec, stats) = (app.clone(), sec.clone(), stats.clone());
        async move { Ok::<_, Infallible>(handle(req, app, sec, limits, stats).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(io, service)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    app: axum::Router,
    sec: Arc<WebSecurity>,
    limits: Limits,
    stats: Arc<ListenerStats>,
) -> Response<Body> {
    if req.uri().path() != "/healthz" && sec.requires_auth() {
        let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if sec.check(auth).await == Access::Denied {
            stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            return plain(
                StatusCode::UNAUTHORIZED,
                "authentication required\n",
                Some("Basic realm=\"egress-probe\""),
            );
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n", None);
    }
    let req = req.map(|b| Body::new(http_body_util::Limited::new(b, limits.max_body_bytes)));
    match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

fn plain(status: StatusCode, body: &'static str, challenge: Option<&'static str>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(c) = challenge {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(c));
    }
    r
}
