//! The responder's own counters, served as Prometheus text on its own plain-HTTP `/metrics`.
//!
//! They exist so that tests (and operators) can prove nothing leaks: after every client is
//! done, `egress_responder_turn_allocations_active`, `egress_responder_websockets_open` and
//! `egress_responder_connections_open` must be back to 0. Allocation counts are asked of the
//! TURN servers themselves at scrape time (ground truth, not bookkeeping of our own).
//! These families use the `egress_responder_` prefix and a private registry, so they never mix
//! with the probe daemon's `egress_probe_` families (owned by `crate::metrics`).
//! Labels are small fixed words (endpoint, transport, method, status code); never a client
//! address or a username.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

use super::turn::TurnServers;
use super::Shutdown;

/// Every counter the responder keeps.
pub struct Counters {
    registry: Registry,
    /// Accepted TCP connections per endpoint (`turn_tcp`, `turn_tls`, `web`).
    pub connections_total: IntCounterVec,
    /// Currently open TCP connections per endpoint.
    pub connections_open: IntGaugeVec,
    /// TLS handshakes that failed (or timed out) per endpoint.
    pub tls_failures_total: IntCounterVec,
    /// STUN/TURN messages received per transport and method (`binding`, `allocate`, ...).
    pub turn_messages_total: IntCounterVec,
    /// Allocations ended (Refresh 0, expiry, connection closed) per transport.
    pub turn_allocations_closed_total: IntCounterVec,
    /// Live allocations per transport, filled at scrape time from the TURN servers.
    pub turn_allocations_active: IntGaugeVec,
    pub websockets_total: IntCounter,
    pub websockets_open: IntGauge,
    /// Text/binary messages echoed over WebSocket.
    pub websocket_messages_total: IntCounter,
    /// HTTP responses per status code.
    pub http_responses_total: IntCounterVec,
    pub udp_echo_datagrams_total: IntCounter,
    pub dns_responses_total: IntCounter,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on an invalid metric name or a duplicate registration: programming errors
    // in this file, caught by its unit test.
    match r {
        Ok(v) => v,
        Err(e) => panic!("responder metric definition: {e}"),
    }
}

impl Counters {
    /// Creates and registers every family (values start at 0).
    pub fn new() -> Arc<Counters> {
        let registry = Registry::new();
        let cv = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gv = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let c = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let g = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let counters = Counters {
            connections_total: cv(
                "egress_responder_connections_total",
                "TCP connections accepted, per endpoint.",
                &["endpoint"],
            ),
            connections_open: gv(
                "egress_responder_connections_open",
                "TCP connections currently open, per endpoint.",
                &["endpoint"],
            ),
            tls_failures_total: cv(
                "egress_responder_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, per endpoint.",
                &["endpoint"],
            ),
            turn_messages_total: cv(
                "egress_responder_turn_messages_total",
                "STUN/TURN messages received, per transport and method.",
                &["transport", "method"],
            ),
            turn_allocations_closed_total: cv(
                "egress_responder_turn_allocations_closed_total",
                "TURN allocations ended (refresh 0, expiry or connection closed), per transport.",
                &["transport"],
            ),
            turn_allocations_active: gv(
                "egress_responder_turn_allocations_active",
                "TURN allocations alive now, per transport.",
                &["transport"],
            ),
            websockets_total: c("egress_responder_websockets_total", "WebSocket sessions upgraded."),
            websockets_open: g("egress_responder_websockets_open", "WebSocket sessions open now."),
            websocket_messages_total: c("egress_responder_websocket_messages_total", "WebSocket data messages echoed."),
            http_responses_total: cv(
                "egress_responder_http_responses_total",
                "HTTP responses sent, per status code.",
                &["code"],
            ),
            udp_echo_datagrams_total: c(
                "egress_responder_udp_echo_datagrams_total",
                "Datagrams echoed by the UDP echo peer.",
            ),
            dns_responses_total: c(
                "egress_responder_dns_responses_total",
                "DNS responses sent by the test-name answerer.",
            ),
            registry,
        };
        for t in super::turn::TRANSPORTS {
            counters.turn_allocations_active.with_label_values(&[t]).set(0);
            counters.turn_allocations_closed_total.with_label_values(&[t]);
        }
        for e in ["turn_tcp", "turn_tls", "web"] {
            counters.connections_open.with_label_values(&[e]).set(0);
            counters.connections_total.with_label_values(&[e]);
        }
        Arc::new(counters)
    }

    /// Prometheus text exposition of every family, allocations refreshed from `turn`.
    pub async fn render(&self, turn: &TurnServers) -> String {
        for (transport, n) in turn.active_allocations().await {
            self.turn_allocations_active.with_label_values(&[transport]).set(n as i64);
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// An open-connection gauge held for as long as a connection lives (decrements on drop,
/// also when a task is cancelled at shutdown).
pub struct OpenGuard(IntGauge);

impl OpenGuard {
    /// Counts one more connection on `endpoint` (total and open).
    pub fn connection(c: &Counters, endpoint: &str) -> OpenGuard {
        c.connections_total.with_label_values(&[endpoint]).inc();
        Self::gauge(c.connections_open.with_label_values(&[endpoint]))
    }

    /// Increments `g` now and decrements it on drop.
    pub fn gauge(g: IntGauge) -> OpenGuard {
        g.inc();
        OpenGuard(g)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `GET /metrics` (and `/healthz`) over plain HTTP until shutdown.
pub async fn serve(listener: TcpListener, counters: Arc<Counters>, turn: Arc<TurnServers>, shutdown: Shutdown) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("metrics accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let (counters, turn, shutdown) = (counters.clone(), turn.clone(), shutdown.clone());
        tokio::spawn(async move {
            tracing::debug!(%peer, "metrics scrape connection");
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (counters, turn) = (counters.clone(), turn.clone());
                async move { Ok::<_, std::convert::Infallible>(metrics_response(&req, &counters, &turn).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.wait() => {}
            }
        });
    }
}

async fn metrics_response(req: &Request<hyper::body::Incoming>, counters: &Counters, turn: &TurnServers) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (200, "text/plain; version=0.0.4", counters.render(turn).await),
        "/healthz" => (200, "text/plain", "ok\n".to_string()),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Convenience for tests and the demo: where `/metrics` ended up.
pub fn metrics_url(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_and_render() {
        let c = Counters::new();
        c.websockets_total.inc();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&c.registry.gather(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("egress_responder_websockets_total 1"));
        assert!(text.contains("egress_responder_turn_allocations_active{transport=\"udp\"} 0"));
    }
}
