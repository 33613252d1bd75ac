//! The daemon's HTTP endpoints (axum):
//!
//! * `/metrics` — the process registry (see `metrics`).
//! * `/probe?module=NAME&target=HOST:PORT` — run probe NAME's settings once against TARGET and
//!   answer with blackbox-compatible `probe_success` / `probe_duration_seconds` plus our
//!   families for that run, so Prometheus multi-target relabelling works unchanged. Without
//!   `target` the probe runs against its configured target. The run's timeout is the probe's,
//!   shortened to Prometheus' `X-Prometheus-Scrape-Timeout-Seconds` minus 0.5 s when that is
//!   smaller (as blackbox_exporter does). It runs through the scheduler's [`Launcher`], so it
//!   shares the concurrency limit and the per-host slots, and a panic in the probe reads
//!   `internal/panic`. The target is decided by `config::web::probe_request`: by default only
//!   the module's own target, always its own scheme, secrets only to their own host; a refusal
//!   is a `403` with a one-line reason, counted in `egress_probe_probe_refused_total`.
//! * `/healthz` — 200 while the process serves.
//! * `/ready` — 503 until every configured probe has completed its first run, then 200.
//! * `/status` — JSON with the last outcome of every probe.
//! * `POST /-/reload` — with `--web.enable-lifecycle` only: the same reload as SIGHUP.
//!
//! [`serve`] runs the router behind `web::listen` (connection cap, header-read timeout, size
//! limits) and the web config's TLS / basic auth.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::web::{probe_request, ProbeRequest};
use crate::config::{Config, ProbeConfig};
use crate::metrics::{render_single_run, EndpointCounters, Metrics};
use crate::net::host_limit::HostLimiter;
use crate::outcome::Outcome;
use crate::report::ProbeResult;
use crate::schedule::{Launcher, Sink};
use crate::shutdown::Shutdown;
use crate::web::listen::{Limits, ListenerStats};
use crate::web::WebSecurity;

/// Prometheus text exposition content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Taken off Prometheus' scrape timeout so the answer arrives before Prometheus gives up.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

/// The last outcome of one probe, as `/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeStatus {
    #[serde(flatten)]
    pub result: ProbeResult,
    /// RFC 3339 time the run finished.
    pub finished_at: String,
}

/// `/status` document (the shape [`StatusBoard::snapshot_json`] writes).
#[derive(Clone, Debug, Serialize)]
pub struct StatusDoc {
    /// Whether every probe has completed a run.
    pub ready: bool,
    pub probes: Vec<ProbeStatus>,
}

/// Last outcome per probe: backs `/ready` and `/status`. A [`Sink`] of the scheduler.
///
/// Each probe's last [`ProbeStatus`] is kept as its JSON text (a TCP probe's is ~300 bytes)
/// rather than as the struct (~2 KB inline, mostly empty detail slots): 10,000 probes would
/// otherwise hold ~20 MB here. `/status` joins the texts in config order.
pub struct StatusBoard {
    /// Probe name → its slot in `last` (config order).
    index: HashMap<String, usize>,
    /// The last status of each probe as JSON, `None` until its first run.
    last: Mutex<Vec<Option<Box<str>>>>,
}

impl StatusBoard {
    /// A board expecting the probes of `config`.
    pub fn new(config: &Config) -> StatusBoard {
        let index: HashMap<String, usize> = config.probes.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
        StatusBoard {
            last: Mutex::new(vec![None; config.probes.len()]),
            index,
        }
    }

    /// Whether every configured probe has completed at least one run.
    pub fn ready(&self) -> bool {
        let (done, all) = self.progress();
        done == all
    }

    /// `(completed, configured)` probe counts.
    pub fn progress(&self) -> (usize, usize) {
        match self.last.lock() {
            Ok(l) => (l.iter().filter(|s| s.is_some()).count(), l.len()),
            Err(_) => (0, self.index.len().max(1)),
        }
    }

    /// The `/status` document as JSON text (what `Json(StatusDoc)` would write).
    pub fn snapshot_json(&self) -> String {
        let Ok(l) = self.last.lock() else {
            return r#"{"ready":false,"probes":[]}"#.to_string();
        };
        let ready = l.iter().all(Option::is_some);
        let mut out = String::with_capacity(32 + l.iter().flatten().map(|s| s.len() + 1).sum::<usize>());
        out.push_str(if ready {
            r#"{"ready":true,"probes":["#
        } else {
            r#"{"ready":false,"probes":["#
        });
        for (i, s) in l.iter().flatten().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(s);
        }
        out.push_str("]}");
        out
    }
}

impl Sink for StatusBoard {
    fn record(&self, probe: &ProbeConfig, outcome: &Outcome) {
        let Some(slot) = self.index.get(&probe.name).copied() else {
            return;
        };
        let status = ProbeStatus {
            result: ProbeResult::of(&probe.name, &probe.spec, outcome.clone()),
            finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        };
        let Ok(json) = serde_json::to_string(&status) else {
            return;
        };
        if let Ok(mut l) = self.last.lock() {
            if let Some(s) = l.get_mut(slot) {
                *s = Some(json.into_boxed_str());
            }
        }
    }
}

/// What the handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub board: Arc<StatusBoard>,
    /// How on-demand runs start: the scheduler's launcher (its concurrency limit included).
    pub launcher: Launcher,
    /// What outlives a config reload: per-host slots, endpoint counters, the lifecycle hook.
    pub process: Arc<ProcessState>,
}

/// A reload request from `POST /-/reload`, answered with the problems if it failed.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Endpoint state for the life of the process (shared by every config generation).
pub struct ProcessState {
    /// Per-target-host run slots, shared with the scheduler.
    pub hosts: Arc<HostLimiter>,
    pub counters: EndpointCounters,
    pub listener: Arc<ListenerStats>,
    /// `POST /-/reload` asks the daemon loop through this (`None`: lifecycle disabled).
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
}

/// The state in effect now; a config reload sends a new one.
pub type LiveState = watch::Receiver<Arc<AppState>>;

/// The router with every endpoint, reading the state in effect at each request.
pub fn router(state: LiveState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/probe", get(probe_once))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/-/reload", post(reload))
        .with_state(state)
}

/// Serves `router(state)` on `listener` behind the bounded listener and `security` until
/// `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: LiveState,
    security: watch::Receiver<Arc<WebSecurity>>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let stats = state.borrow().process.listener.clone();
    crate::web::listen::serve(listener, router(state), security, Limits::default(), stats, async move {
        shutdown.wait().await
    })
    .await
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response()
}

fn current(live: &LiveState) -> Arc<AppState> {
    live.borrow().clone()
}

async fn metrics(State(live): State<LiveState>, headers: HeaderMap) -> Response {
    let st = current(&live);
    let pr = &st.process;
    pr.counters.sync_listener(
        pr.listener.over_capacity.load(std::sync::atomic::Ordering::Relaxed),
        pr.listener.tls_failed.load(std::sync::atomic::Ordering::Relaxed),
        pr.listener.unauthorized.load(std::sync::atomic::Ordering::Relaxed),
    );
    let endpoint = match pr.counters.render() {
        Ok(e) => e,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let vary = (header::VARY, "Accept-Encoding");
    // Encoding 10,000 probes' text takes tens of ms: on a blocking thread, so the probes' timers
    // on the runtime's workers are not held up behind it (schedule lag, BENCHMARKS.md).
    let metrics = st.metrics.clone();
    if accepts_gzip(&headers) {
        let rendered = tokio::task::spawn_blocking(move || metrics.render_gzip(&endpoint)).await;
        let Ok(rendered) = rendered else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding /metrics failed\n".into());
        };
        return match rendered {
            Ok(gz) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, TEXT_FORMAT), (header::CONTENT_ENCODING, "gzip"), vary],
                gz,
            )
                .into_response(),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        };
    }
    let Ok(rendered) = tokio::task::spawn_blocking(move || metrics.render()).await else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding /metrics failed\n".into());
    };
    match rendered {
        // The cached text and the endpoint counters as two chunks: no copy of the (large) text.
        Ok(body) => {
            let len = body.len() + endpoint.len();
            let chunks = [bytes::Bytes::from_owner(ArcText(body)), bytes::Bytes::from(endpoint)];
            let stream = futures::stream::iter(chunks.map(Ok::<_, std::convert::Infallible>));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, TEXT_FORMAT), vary],
                [(header::CONTENT_LENGTH, len.to_string())],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// The shared `/metrics` text as the owner of a response chunk.
struct ArcText(Arc<String>);

impl AsRef<[u8]> for ArcText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero
        })
}

async fn reload(State(live): State<LiveState>) -> Response {
    let st = current(&live);
    let Some(tx) = st.process.reload.clone() else {
        return text(
            StatusCode::FORBIDDEN,
            "lifecycle endpoints are disabled; start with --web.enable-lifecycle\n".into(),
        );
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    if tx.send(done_tx).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down\n".into());
    }
    match tokio::time::timeout(Duration::from_secs(30), done_rx).await {
        Ok(Ok(Ok(()))) => text(StatusCode::OK, "config reloaded\n".into()),
        Ok(Ok(Err(problems))) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{problems}\n")),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "the reload did not finish\n".into()),
    }
}

async fn ready(State(live): State<LiveState>) -> Response {
    let st = current(&live);
    let (done, all) = st.board.progress();
    if done == all {
        text(StatusCode::OK, "ready\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {done} of {all} probes have completed a run\n"),
        )
    }
}

async fn status(State(live): State<LiveState>) -> Response {
    let body = current(&live).board.snapshot_json();
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn probe_once(State(live): State<LiveState>, Query(q): Query<BTreeMap<String, String>>, headers: HeaderMap) -> Response {
    let st = current(&live);
    let Some(module) = q.get("module") else {
        return text(StatusCode::BAD_REQUEST, "missing query parameter `module` (a probe name)\n".into());
    };
    let Some(p) = st.config.probes.iter().find(|p| &p.name == module) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unknown module {module:?}: not a probe name in the config\n"),
        );
    };
    let spec = match q.get("target") {
        Some(t) => match probe_request(&p.name, &p.spec, t, &st.config.web) {
            ProbeRequest::Run(s) => *s,
            ProbeRequest::BadTarget(e) => return text(StatusCode::BAD_REQUEST, format!("bad target for module {module:?}: {e}\n")),
            ProbeRequest::Refused(r) => {
                st.process.counters.probe_refused(r.reason);
                tracing::info!(probe = %p.name, reason = r.reason, "on-demand probe refused");
                return text(StatusCode::FORBIDDEN, format!("{}\n", r.message));
            }
        },
        None => p.spec.clone(),
    };
    let cap = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|scrape| {
            // A huge header value must not panic the handler: it is simply no cap.
            let scrape = Duration::try_from_secs_f64(scrape).unwrap_or(Duration::MAX);
            let budget = scrape.saturating_sub(SCRAPE_TIMEOUT_OFFSET);
            budget.max(Duration::from_millis(100))
        });
    let probe = Arc::new(ProbeConfig { spec, ..p.clone() });
    let outcome = match st.launcher.launch_within(probe.clone(), cap).await {
        Ok(outcome) => outcome,
        Err(busy) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{busy}\n")),
    };
    let spec = &probe.spec;
    if let Some(f) = &outcome.failure {
        tracing::info!(
            probe = p.name.as_str(),
            target = spec.target().as_str(),
            phase = f.phase.as_str(),
            reason = f.reason.label().as_str(),
            total_ms = crate::outcome::ms(outcome.total),
            error = f.message.as_str(),
            "on-demand probe failed"
        );
    }
    match render_single_run(&p.name, spec.kind(), &spec.target(), &outcome, st.config.metrics.histograms) {
        Ok(body) => text(StatusCode::OK, body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn gzip_is_chosen_only_when_the_scraper_accepts_it_with_a_nonzero_quality() {
        // What Prometheus sends, browsers' lists, wildcards and repeated headers.
        for yes in [
            &["gzip"][..],
            &["GZip"],
            &["deflate, gzip;q=0.5"],
            &["*"],
            &["identity", "br, gzip"],
        ] {
            assert!(accepts_gzip(&with(yes)), "{yes:?}");
        }
        for no in [
            &[][..],
            &["identity"],
            &["gzip;q=0"],
            &["br, deflate"],
            &["gzipx"],
            &["gzip; q=0.0"],
        ] {
            assert!(!accepts_gzip(&with(no)), "{no:?}");
        }
    }
}
