//! One remote_write request through the probes' dial path: resolve → connect → (proxy
//! CONNECT) → TLS with pinning → POST, bounded as a whole by `timeout`, every failure an
//! [`Outcome`]-style phase/reason (`proxy/auth`, `tls/pin_mismatch`, `request/status_429`,
//! `connect/timeout`) so push failures read like probe failures.
//!
//! A fresh connection per request: a push every 15 s gains nothing from keep-alive that is
//! worth a pooled connection the proxy may have silently dropped, and each request's phases
//! stay exact.
//!
//! Secrets (bearer token, basic-auth password, secret header values) are put only into this
//! receiver's request headers, marked sensitive; messages and logs name where they came from,
//! never their value.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::config::{redact_url, HostPort, ProxySetting, ProxyUrl, PushAuth, RemoteWriteConfig};
use crate::net::{self, TlsClient};
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

/// Most bytes of an error answer read (its first line goes to the log).
const MAX_ERROR_BODY: usize = 4096;
/// Longest error line logged.
const MAX_ERROR_LINE: usize = 200;

/// What a failed write means for the batch.
#[derive(Debug)]
pub enum SendError {
    /// Network trouble, 5xx or 429: keep the batch and try again (not before `retry_after`).
    Retry { failure: Failure, retry_after: Option<Duration> },
    /// Any other answer (4xx, a redirect): the receiver will never take this batch; drop it
    /// (counted `failed`).
    Refused { failure: Failure, first_line: String },
}

impl SendError {
    pub fn failure(&self) -> &Failure {
        match self {
            SendError::Retry { failure, .. } | SendError::Refused { failure, .. } => failure,
        }
    }
}

/// Everything fixed about one receiver, built once from its config.
pub struct Receiver {
    /// Redacted URL for messages.
    shown: String,
    target: HostPort,
    path: String,
    tls: Option<TlsClient>,
    proxy: Option<ProxyUrl>,
    headers: HeaderMap,
    timeout: Duration,
}

impl Receiver {
    /// Builds the request template; `top_proxy` is the config's top-level `proxy:`, used when
    /// the receiver sets none. Fails on settings that can never work (unreadable `ca_file`,
    /// a header value that is not a valid header).
    pub fn new(cfg: &RemoteWriteConfig, top_proxy: Option<&ProxySetting>) -> Result<Receiver, Failure> {
        let shown = redact_url(&cfg.url);
        let target = HostPort::of_url(&cfg.url).map_err(|m| Failure::new(Phase::Resolve, Reason::Config, m))?;
        let tls = match cfg.url.scheme() {
            "https" => Some(TlsClient::new(&cfg.tls, &target.host, &["http/1.1"]).map_err(|f| f.at(Phase::Tls))?),
            _ => None,
        };
        let proxy = match cfg.proxy.as_ref().or(top_proxy) {
            None | Some(ProxySetting::None) => None,
            Some(ProxySetting::Env) => net::proxy::from_env(),
            Some(ProxySetting::Url(u)) => Some(u.clone()),
        };
        let path = match cfg.url.query() {
            Some(q) => format!("{}?{q}", cfg.url.path()),
            None => cfg.url.path().to_string(),
        };
        let headers = headers(cfg, &target).map_err(|f| f.at(Phase::Request))?;
        Ok(Receiver {
            shown,
            target,
            path,
            tls,
            proxy,
            headers,
            timeout: cfg.timeout,
        })
    }

    /// The receiver's URL without credentials or query, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// POSTs one snappy-compressed `WriteRequest`, within `timeout` (or `until`, if sooner).
    /// The [`Outcome`] (phases, failure) is what `check --push` shows as a table row.
    pub async fn write(&self, body: Bytes, until: Option<Instant>) -> (Outcome, Result<(), SendError>) {
        let mut deadline = Instant::now() + self.timeout;
        if let Some(u) = until {
            deadline = deadline.min(u);
        }
        let mut run = Run::new(deadline);
        let result = self.exchange(&mut run, body).await;
        let outcome = run.finish(result.as_ref().map(|_| ()).map_err(|e| e.failure().clone()));
        (outcome, result)
    }

    async fn exchange(&self, run: &mut Run, body: Bytes) -> Result<(), SendError> {
        let retry = |failure: Failure| SendError::Retry {
            failure,
            retry_after: None,
        };
        let proxy = self.proxy.as_ref().filter(|_| !net::proxy::bypass(&self.target));
        let dialed = net::dial(run, &self.target, proxy).await.map_err(retry)?;
        let request = self.request(body).map_err(|f| retry(f.at(Phase::Request)))?;
        let (response, driver) = match &self.tls {
            Some(client) => {
                let stream = net::handshake(run, client, dialed.stream).await.map_err(retry)?;
                net::http::send(run, request, stream).await.map_err(retry)?
            }
            None => net::http::send(run, request, dialed.stream).await.map_err(retry)?,
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let retry_after = net::http::retry_after(response.headers());
        let first_line = tokio::time::timeout_at(run.deadline(), first_line(response.into_body()))
            .await
            .unwrap_or_default();
        drop(driver);
        let text = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut message = format!("{} answered {status} {text}", self.shown);
        if !first_line.is_empty() {
            message.push_str(&format!(": {first_line}"));
        }
        if let Some(ra) = retry_after {
            message.push_str(&format!(" (Retry-After {} s)", ra.as_secs()));
        }
        let failure = Failure::new(Phase::Request, Reason::Status(status), message);
        if status == 429 || status >= 500 {
            Err(SendError::Retry { failure, retry_after })
        } else {
            Err(SendError::Refused { failure, first_line })
        }
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, Fault> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .body(Full::new(body))
            .map_err(|e| Fault::new(Reason::Config, format!("request for {}: {e}", self.shown)))?;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

/// The fixed headers of every write: the remote_write 1.0 ones, `Host`, auth, configured extras.
fn headers(cfg: &RemoteWriteConfig, target: &HostPort) -> Result<HeaderMap, Fault> {
    let bad = |e: String| Fault::new(Reason::Config, e);
    let mut h = HeaderMap::new();
    let host = match cfg.url.port() {
        Some(_) => target.to_string(),
        None if target.host.contains(':') => format!("[{}]", target.host),
        None => target.host.clone(),
    };
    h.insert(
        HOST,
        HeaderValue::from_str(&host).map_err(|_| bad(format!("invalid host {host:?}")))?,
    );
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("egress-probe/", env!("CARGO_PKG_VERSION"))),
    );
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    h.insert(
        HeaderName::from_static("x-prometheus-remote-write-version"),
        HeaderValue::from_static("0.1.0"),
    );
    for (name, value) in &cfg.headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(format!("invalid header name {name:?}")))?;
        let mut v = HeaderValue::from_str(value.expose())
            .map_err(|_| bad(format!("header {name}: value from {} is not a valid header value", value.source())))?;
        v.set_sensitive(true);
        h.insert(n, v);
    }
    let auth = match &cfg.auth {
        None => None,
        Some(PushAuth::Bearer(token)) => Some((format!("Bearer {}", token.expose()), token.source())),
        Some(PushAuth::Basic { username, password }) => {
            let raw = format!("{username}:{}", password.expose());
            Some((
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)),
                password.source(),
            ))
        }
    };
    if let Some((value, source)) = auth {
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| bad(format!("credentials from {source} are not valid in an Authorization header")))?;
        v.set_sensitive(true);
        h.insert(AUTHORIZATION, v);
    }
    Ok(h)
}

/// The first line of an error answer, bounded, control characters removed.
async fn first_line(mut body: hyper::body::Incoming) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_ERROR_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    buf.extend_from_slice(&d[..d.len().min(MAX_ERROR_BODY - buf.len())]);
                    if buf.contains(&b'\n') {
                        break;
                    }
                }
            }
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_LINE)
        .collect()
}
