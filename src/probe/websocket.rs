//! `kind: websocket`: can the softphone's signalling WebSocket (`ws://` or `wss://`, usually
//! on 443 or 8443) be opened, does it carry traffic, and does it close cleanly?
//!
//! Phases: `resolve`, `connect` (or `proxy` through an HTTP CONNECT proxy), `tls` (wss),
//! `upgrade` (the HTTP/1.1 Upgrade handshake), `ping` (N ping/pong round trips), `request`
//! (the optional `send`/`expect` text exchange) and `close`. We dial with `src/net` ourselves
//! and hand the stream to `tokio_tungstenite::client_async`, so each phase is timed exactly.
//!
//! Upgrade answers are told apart because each points at a different culprit:
//! a non-101 status is `upgrade/status_<code>` (403 policy, 429 rate limit, 408 a proxy's idle
//! timer); a 2xx, or a 101 without `Upgrade: websocket`, is `upgrade/not_upgraded` (a
//! middlebox stripped the Upgrade header); silence is `upgrade/timeout`.
//!
//! With `auth: {oauth2: ...}` a bearer token is obtained first (phase `auth`, see
//! [`super::oauth2`]) and sent as `Authorization: Bearer` on the upgrade; a 401 there drops the
//! probe's cached token.
//!
//! With `hold: DURATION` the socket is then kept open (phase `hold`), with a ping every
//! `ping_interval` or, with `idle: true`, no traffic at all: what an idle timer in a proxy or
//! firewall cuts. A cut is `hold/closed` (close frame or EOF) or `hold/reset` (RST), its
//! lifetime in the message and in `detail.websocket.hold`. The run's deadline is the timeout
//! plus the hold (see `ProbeConfig::run_time`); a hold that would pass the deadline is
//! shortened to it, with a note.
//!
//! With `concurrent: N` (1–64) the probe opens N WebSockets at once, each on its own
//! connection (and, with `auth`, its own token: every client of a tenant has one), holds every
//! established one until all N upgrades are decided, then runs each to its close. It reports
//! `detail.concurrent` (requested, established, and with `hold` every connection's hold) and,
//! when fewer than N got through, the first refusal as the run's failure (`upgrade/status_429`
//! from a per-client cap, `proxy/status_503` from a proxy's `MaxClients`...), the connection's
//! number in the message.
//!
//! Every opened WebSocket is ended with a close frame, and we wait (bounded by the deadline,
//! at most [`CLOSE_WAIT`]) for the server's close frame: also after a failed ping or exchange.
//! A WebSocket left open is how clients exhaust per-tenant connection pools.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::{redact_url, HoldSpec, HostPort, Secret, WebsocketSpec};
use crate::net::{self, classify::fault_from_io, TlsClient};

use super::ProbeContext;
use crate::config::TokenCache;
use crate::outcome::details::{ConcurrentDetails, HoldDetails, RttStats, WebsocketDetails};
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

/// Longest wait for the server's close frame after ours.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Largest message or frame accepted from the server (the probe only needs short answers).
const MAX_MESSAGE: usize = 1 << 20;

/// Runs one websocket probe.
pub async fn probe(spec: &WebsocketSpec, ctx: &ProbeContext) -> Outcome {
    if spec.concurrent > 1 {
        return concurrent(spec, ctx).await;
    }
    let mut run = Run::new(ctx.deadline);
    let result = session(&mut run, spec, ctx, None).await;
    run.finish(result)
}

/// Waits for all N upgrades of a `concurrent` run to be decided, so the established sockets
/// are open at the same time (else a fast one could close before a slow one upgrades).
struct Gate {
    left: AtomicUsize,
    all: Notify,
}

/// One connection's place at the [`Gate`]; arrives exactly once (at the latest on drop).
pub(crate) struct Ticket<'a> {
    gate: &'a Gate,
    arrived: bool,
}

impl Ticket<'_> {
    fn arrive(&mut self) {
        if !self.arrived {
            self.arrived = true;
            if self.gate.left.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.gate.all.notify_waiters();
            }
        }
    }

    /// Arrives, then waits (until `deadline`) for every other connection to arrive.
    async fn wait_all(&mut self, deadline: Instant) {
        self.arrive();
        let notified = self.gate.all.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.gate.left.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.arrive();
    }
}

/// `concurrent: N`: N sessions at once; the outcome of the first failing one (or the first),
/// with `detail.concurrent`.
async fn concurrent(spec: &WebsocketSpec, ctx: &ProbeContext) -> Outcome {
    let started = Instant::now();
    let n = spec.concurrent;
    let gate = Gate {
        left: AtomicUsize::new(n as usize),
        all: Notify::new(),
    };
    let specs: Vec<WebsocketSpec> = (0..n)
        .map(|i| {
            let mut s = spec.clone();
            // The first connection uses the probe's cached token; the others each get their own.
            if let (true, Some(a)) = (i > 0, s.auth.as_mut()) {
                a.cache = TokenCache::default();
            }
            s
        })
        .collect();
    let gate = &gate;
    let attempts = futures::future::join_all(specs.iter().map(|s| async move {
        let mut run = Run::new(ctx.deadline);
        let mut ticket = Ticket { gate, arrived: false };
        let result = session(&mut run, s, ctx, Some(&mut ticket)).await;
        drop(ticket);
        run.finish(result)
    }))
    .await;
    let established = attempts
        .iter()
        .filter(|o| o.detail.websocket.as_ref().and_then(|w| w.status) == Some(101))
        .count() as u32;
    let first_failure = reported(&attempts);
    let mut out = attempts[first_failure.unwrap_or(0)].clone();
    if let (Some(i), Some(f)) = (first_failure, out.failure.as_mut()) {
        f.message = format!("connection {} of {n}: {} ({established} of {n} established)", i + 1, f.message);
    }
    let holds = attempts.iter().filter_map(|o| o.detail.websocket.as_ref()?.hold.clone()).collect();
    out.detail.concurrent = Some(ConcurrentDetails {
        requested: n,
        established,
        holds,
    });
    out.total = started.elapsed();
    out
}

/// Which connection of a concurrent run the outcome reports: a server's or proxy's refusal
/// (429/503 on the upgrade or the proxy) is the finding a cap needs, so it wins over a
/// lower-numbered connection's timeout, connect error or cut hold; else the first failure.
fn reported(attempts: &[Outcome]) -> Option<usize> {
    let refused = |o: &Outcome| {
        o.failure
            .as_ref()
            .is_some_and(|f| matches!(f.phase, Phase::Upgrade | Phase::Proxy) && matches!(f.reason, Reason::Status(429 | 503)))
    };
    attempts
        .iter()
        .position(refused)
        .or_else(|| attempts.iter().position(|o| !o.success))
}

async fn session(run: &mut Run, spec: &WebsocketSpec, ctx: &ProbeContext, gate: Option<&mut Ticket<'_>>) -> Result<(), Failure> {
    HostPort::of_url(&spec.url).map_err(|m| Fault::new(Reason::Config, m).at(Phase::Resolve))?;
    // Config problems (bad header, unreadable ca_file) before touching the network.
    build_request(spec, None).map_err(|f| f.at(Phase::Upgrade))?;
    let bearer = match &spec.auth {
        Some(a) => Some(super::oauth2::bearer(run, a, &spec.tls, ctx).await?),
        None => None,
    };
    open(run, spec, ctx, gate, bearer.as_ref()).await
}

/// Dial, upgrade (with `bearer`), converse and close. Session steps call this.
pub(crate) async fn open(
    run: &mut Run,
    spec: &WebsocketSpec,
    ctx: &ProbeContext,
    gate: Option<&mut Ticket<'_>>,
    bearer: Option<&Secret>,
) -> Result<(), Failure> {
    let target = HostPort::of_url(&spec.url).map_err(|m| Fault::new(Reason::Config, m).at(Phase::Resolve))?;
    let request = build_request(spec, bearer).map_err(|f| f.at(Phase::Upgrade))?;
    let tls = match spec.url.scheme() {
        "wss" => Some(TlsClient::new(&spec.tls, &target.host, &["http/1.1"]).map_err(|f| f.at(Phase::Tls))?),
        _ => None,
    };
    let dialed = net::dial(run, &target, ctx.proxy_for(&target)).await?;
    match tls {
        Some(client) => {
            let stream = net::handshake(run, &client, dialed.stream).await?;
            converse(run, spec, request, stream, gate).await
        }
        None => converse(run, spec, request, dialed.stream, gate).await,
    }
}

/// The Upgrade request: the URL plus configured headers (Origin, Authorization,
/// Sec-WebSocket-Protocol...). Header values may come from secret refs; they are marked
/// sensitive and never appear in messages.
fn build_request(spec: &WebsocketSpec, bearer: Option<&Secret>) -> Result<Request, Fault> {
    let mut url = spec.url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Fault::new(Reason::Config, format!("{}: {e}", redact_url(&spec.url))))?;
    for (name, value) in &spec.headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Fault::new(Reason::Config, format!("invalid header name {name:?}")))?;
        let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
            Fault::new(
                Reason::Config,
                format!("header {name}: value from {} is not a valid header value", value.source()),
            )
        })?;
        v.set_sensitive(true);
        request.headers_mut().insert(n, v);
    }
    if let Some(token) = bearer {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| Fault::new(Reason::Config, "the OAuth2 access token is not a valid header value"))?;
        v.set_sensitive(true);
        request
            .headers_mut()
            .insert(tokio_tungstenite::tungstenite::http::header::AUTHORIZATION, v);
    }
    Ok(request)
}

/// Upgrade, then pings and the exchange, then always the close handshake.
async fn converse<S>(run: &mut Run, spec: &WebsocketSpec, request: Request, stream: S, gate: Option<&mut Ticket<'_>>) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut status = None;
    let mut retry = None;
    let upgraded = run
        .phase(Phase::Upgrade, async {
            match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
                Ok(ok) => Ok(ok),
                Err(e) => {
                    if let WsError::Http(resp) = &e {
                        status = Some(resp.status().as_u16());
                        retry = crate::net::http::retry_after(resp.headers());
                    }
                    Err(upgrade_fault(e))
                }
            }
        })
        .await;
    let (mut ws, response) = match upgraded {
        Ok(ok) => ok,
        Err(f) => {
            if let (Some(a), Some(401)) = (&spec.auth, status) {
                super::oauth2::forget(a);
            }
            run.detail.retry_after = retry;
            run.detail.websocket = Some(WebsocketDetails {
                status,
                ..Default::default()
            });
            return Err(f);
        }
    };
    run.detail.websocket = Some(WebsocketDetails {
        status: Some(response.status().as_u16()),
        subprotocol: response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..Default::default()
    });
    if let Some(t) = gate {
        t.wait_all(run.deadline()).await;
    }

    let mut peer_closed = false;
    let mut result = exchange(run, spec, &mut ws, &mut peer_closed).await;
    if let (Ok(()), Some(h)) = (&result, spec.hold) {
        result = hold(run, h, &mut ws, &mut peer_closed).await;
    }

    let started = Instant::now();
    let clean = close(&mut ws, run.deadline(), peer_closed).await;
    let took = started.elapsed();
    drop(ws);
    if let Some(d) = run.detail.websocket.as_mut() {
        d.clean_close = clean;
    }
    if !clean {
        run.detail
            .notes
            .push("the server did not answer our close frame with its own (not a clean close)".into());
    }
    if result.is_ok() {
        run.record(Phase::Close, took);
    }
    result
}

/// Pings (phase `ping`) and the optional `send`/`expect` exchange (phase `request`).
async fn exchange<S>(run: &mut Run, spec: &WebsocketSpec, ws: &mut WebSocketStream<S>, peer_closed: &mut bool) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if spec.ping > 0 {
        let payloads: Vec<Vec<u8>> = (0..spec.ping).map(|i| format!("egress-probe ping {i}").into_bytes()).collect();
        let mut samples = Vec::with_capacity(payloads.len());
        let res = run
            .phase(Phase::Ping, async {
                for payload in &payloads {
                    let start = Instant::now();
                    ws.send(Message::Ping(payload.clone().into()))
                        .await
                        .map_err(|e| ws_fault("sending a ping", e))?;
                    loop {
                        match next_message(ws, peer_closed, "waiting for a pong").await? {
                            Message::Pong(p) if p.as_ref() == payload.as_slice() => break,
                            _ => continue,
                        }
                    }
                    samples.push(start.elapsed());
                }
                Ok(())
            })
            .await;
        let stats = RttStats::from_samples(spec.ping, samples);
        if let Some(d) = run.detail.websocket.as_mut() {
            d.ping_rtt = Some(stats);
        }
        res?;
    }
    if spec.send.is_some() || spec.expect.is_some() {
        run.phase(Phase::Request, async {
            if let Some(text) = &spec.send {
                ws.send(Message::text(text.clone()))
                    .await
                    .map_err(|e| ws_fault("sending the text message", e))?;
            }
            let Some(expect) = &spec.expect else { return Ok(()) };
            loop {
                let answer = match next_message(ws, peer_closed, "waiting for the answer").await? {
                    Message::Text(t) => t.as_str().to_string(),
                    Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    _ => continue,
                };
                if expect.is_match(&answer) {
                    return Ok(());
                }
                let shown: String = answer.chars().take(80).collect();
                return Err(Fault::new(
                    Reason::ExpectFailed,
                    format!("answer {shown:?} does not match /{}/", expect.as_str()),
                ));
            }
        })
        .await?;
    }
    Ok(())
}

/// Keeps the socket open for `h.duration` (to the deadline at most), pinging every
/// `h.ping_interval` if set; records phase `hold` and `detail.websocket.hold`.
async fn hold<S>(run: &mut Run, h: HoldSpec, ws: &mut WebSocketStream<S>, peer_closed: &mut bool) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let mut end = start + h.duration;
    if end > run.deadline() {
        end = run.deadline();
        run.detail.notes.push(format!(
            "hold shortened to {} ms: the probe's deadline comes first (give the run hold + timeout)",
            end.saturating_duration_since(start).as_millis()
        ));
    }
    let mut pings = 0u32;
    let mut next_ping = h.ping_interval.map(|i| start + i);
    let cut: Option<Fault> = loop {
        let wake = next_ping.map_or(end, |p| p.min(end));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= end {
                    break None;
                }
                if let (Some(at), Some(i)) = (next_ping.as_mut(), h.ping_interval) {
                    *at += i;
                }
                let payload = format!("egress-probe hold {pings}").into_bytes();
                // Bounded: a socket whose send buffer never drains is cut too.
                match tokio::time::timeout_at(end, ws.send(Message::Ping(payload.into()))).await {
                    Ok(Ok(())) => pings += 1,
                    Ok(Err(e)) => break Some(ws_fault("sending a keepalive ping", e)),
                    Err(_) => break None,
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => {
                    *peer_closed = true;
                    let why = frame
                        .map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str()))
                        .unwrap_or_default();
                    break Some(Fault::new(Reason::Closed, format!("the server or a middlebox sent a close frame{why}")));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Some(ws_fault("holding the socket", e)),
                None => break Some(Fault::new(Reason::Closed, "the connection was closed (EOF) by the server or a middlebox")),
            },
        }
    };
    let lifetime = start.elapsed();
    run.record(Phase::Hold, lifetime);
    if let Some(d) = run.detail.websocket.as_mut() {
        d.hold = Some(HoldDetails {
            planned: h.duration,
            lifetime,
            pings,
            survived: cut.is_none(),
        });
    }
    match cut {
        None => Ok(()),
        Some(f) => {
            let mode = match h.ping_interval {
                Some(i) => format!("pinging every {}", humantime::format_duration(i)),
                None => "idle".to_string(),
            };
            Err(Failure::new(
                Phase::Hold,
                f.reason,
                format!(
                    "socket cut after {:.1} s of a {} hold ({mode}): {}",
                    lifetime.as_secs_f64(),
                    humantime::format_duration(h.duration),
                    f.message
                ),
            ))
        }
    }
}

/// The next message; the server closing (frame or EOF) is `closed`.
async fn next_message<S>(ws: &mut WebSocketStream<S>, peer_closed: &mut bool, doing: &str) -> Result<Message, Fault>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match ws.next().await {
        Some(Ok(Message::Close(frame))) => {
            *peer_closed = true;
            let why = frame
                .map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str()))
                .unwrap_or_default();
            Err(Fault::new(Reason::Closed, format!("server sent a close frame while {doing}{why}")))
        }
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(ws_fault(doing, e)),
        None => Err(Fault::new(Reason::Closed, format!("connection closed while {doing}"))),
    }
}

/// Sends our close frame (unless the server closed first, in which case tungstenite has already
/// queued the reply) and waits for the server's, until `deadline` and at most [`CLOSE_WAIT`].
/// Returns whether the close handshake completed. Errors are swallowed: the verdict is made.
async fn close<S>(ws: &mut WebSocketStream<S>, deadline: Instant, peer_closed: bool) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let until = deadline.min(Instant::now() + CLOSE_WAIT);
    // `timeout_at` polls the future before the deadline, so the frame still goes out when the
    // deadline has just passed (a ping timeout) and the socket is writable.
    let _ = tokio::time::timeout_at(until, ws.close(None)).await;
    if peer_closed {
        return true;
    }
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return false,
            }
        }
    };
    tokio::time::timeout_at(until, wait).await.unwrap_or(false)
}

/// Classifies a failed Upgrade.
fn upgrade_fault(e: WsError) -> Fault {
    match e {
        WsError::Http(resp) => {
            let code = resp.status().as_u16();
            if (200..300).contains(&code) {
                Fault::new(
                    Reason::NotUpgraded,
                    format!("server answered {code} instead of 101 Switching Protocols: the Upgrade header was stripped (intercepting proxy?) or this is not a WebSocket endpoint"),
                )
            } else {
                let text = resp.status().canonical_reason().unwrap_or("");
                Fault::new(Reason::Status(code), format!("upgrade refused: {code} {text}"))
            }
        }
        WsError::Protocol(ProtocolError::MissingUpgradeWebSocketHeader | ProtocolError::MissingConnectionUpgradeHeader) => Fault::new(
            Reason::NotUpgraded,
            "101 without `Upgrade: websocket` / `Connection: Upgrade`: a middlebox rewrote the handshake",
        ),
        WsError::Protocol(ProtocolError::HandshakeIncomplete) => {
            Fault::new(Reason::Closed, "connection closed before the upgrade response was complete")
        }
        WsError::Protocol(p) => Fault::new(Reason::BadResponse, format!("invalid upgrade response: {p}")),
        other => ws_fault("upgrading", other),
    }
}

/// Classifies an error on an established WebSocket.
fn ws_fault(doing: &str, e: WsError) -> Fault {
    match e {
        WsError::Io(io) => fault_from_io(doing, &io),
        WsError::ConnectionClosed | WsError::AlreadyClosed => Fault::new(Reason::Closed, format!("connection closed while {doing}")),
        // EOF without a close frame: the peer or a middlebox (an idle timer) dropped the TCP
        // connection with FIN. An RST arrives as an I/O error (`reset`).
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Fault::new(Reason::Closed, format!("connection closed (EOF, no close frame) while {doing}"))
        }
        WsError::Capacity(c) => Fault::new(Reason::BadResponse, format!("{doing}: {c}")),
        other => Fault::new(Reason::BadResponse, format!("{doing}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_refusal_is_reported_over_an_earlier_connections_cut_hold_or_timeout() {
        let o = |f: Option<(Phase, Reason)>| Outcome {
            success: f.is_none(),
            failure: f.map(|(p, r)| Failure::new(p, r, "x")),
            ..Default::default()
        };
        let attempts = [
            o(None),
            o(Some((Phase::Hold, Reason::Closed))),
            o(Some((Phase::Connect, Reason::Timeout))),
            o(Some((Phase::Upgrade, Reason::Status(429)))),
        ];
        assert_eq!(reported(&attempts), Some(3));
        assert_eq!(reported(&attempts[..3]), Some(1), "no refusal: the first failure");
        assert_eq!(reported(&attempts[..1]), None);
    }

    #[test]
    fn default_ports_and_brackets() {
        let t = HostPort::of_url(&url::Url::parse("wss://media.example/x").unwrap()).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("media.example", 443));
        let t = HostPort::of_url(&url::Url::parse("ws://[::1]:8080/").unwrap()).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
    }
}
