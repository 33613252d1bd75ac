//! Keeps what dependencies log about the wire out of our logs, whatever `RUST_LOG` says.
//!
//! Secrets travel in request headers (a WebSocket `Authorization`, a proxy's
//! `Proxy-Authorization`), TURN credentials and TLS handshakes, and the libraries that carry them
//! log what they send at debug/trace: tungstenite logs the whole upgrade request, hyper its
//! headers, the webrtc-rs TURN client its messages. Our own code never puts a secret in an event
//! (the config's `Secret` type has no Display), but we cannot vouch for theirs. So this layer
//! decides per event, before any formatter sees it:
//!
//! - events from this crate pass (they are secret-free by construction);
//! - debug/trace events from the crates that handle request bytes ([`WIRE_CRATES`]) are
//!   dropped: their debug output *is* the protocol exchange;
//! - any other dependency event (any level) whose text mentions a credential-bearing header or
//!   word ([`MARKERS`]) is dropped.
//!
//! It is a filter (`Layer::event_enabled`) rather than a rewriter because a half-redacted
//! header dump is still a dump. `log`-crate records (tungstenite, rustls use `log`) arrive
//! through tracing-log with the target `log` and the real one in the `log.target` field; both
//! are read.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Crates whose debug/trace output is the bytes they send or receive.
pub const WIRE_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "http",
    "rustls",
    "tokio_rustls",
    "turn",
    "stun",
    "stun_rs",
    "webrtc_ice",
    "webrtc_util",
    "webrtc_mdns",
    "axum",
    "tower",
    "tower_http",
];

/// Lower-case words that mark an event as possibly carrying a credential.
pub const MARKERS: &[&str] = &[
    "authorization",
    "cookie",
    "password",
    "passwd",
    "secret",
    "bearer",
    "basic ",
    "credential",
    "token",
    "message-integrity",
    "message_integrity",
];

/// The log filter when `RUST_LOG` is unset: our own events from info up; the webrtc-rs crates
/// (`turn`, `stun`, `webrtc_util`) from warn, since they log every ICE state change at info;
/// `webrtc_ice` from error only, because its warnings are its own housekeeping after a probe
/// already succeeded or failed ("pingAllCandidates called with no candidate pairs", "Failed to
/// close candidate … the agent is closed" while agents are closed) and every failure that
/// matters is in the probe's result. `RUST_LOG=webrtc_ice=warn` shows them again.
pub const DEFAULT_FILTER: &str = "info,webrtc_ice=error,turn=warn,webrtc_util=warn,stun=warn";

static WITHHELD: AtomicU64 = AtomicU64::new(0);

/// How many events this process has withheld so far (logged once at exit, at debug, so an
/// operator at `RUST_LOG=trace` sees that dependency wire dumps are held back on purpose).
pub fn withheld() -> u64 {
    WITHHELD.load(Ordering::Relaxed)
}

/// The layer; add it to any subscriber (`fmt().finish().with(RedactWire)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactWire;

impl<S: Subscriber> Layer<S> for RedactWire {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        let mut text = Collect::default();
        event.record(&mut text);
        let target = match (meta.target(), text.log_target.as_deref()) {
            ("log", Some(real)) => real.to_string(),
            (t, _) => t.to_string(),
        };
        let ok = allowed(&target, *meta.level(), &text.all);
        if !ok {
            WITHHELD.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// The decision, apart from tracing's types (unit-tested below).
pub fn allowed(target: &str, level: Level, text: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    if krate == "egress_probe" {
        return true;
    }
    if level >= Level::DEBUG && WIRE_CRATES.contains(&krate) {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    !MARKERS.iter().any(|m| lower.contains(m))
}

/// Every field of an event as text, plus tracing-log's `log.target`.
#[derive(Default)]
struct Collect {
    all: String,
    log_target: Option<String>,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_string());
        }
        let _ = write!(self.all, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.all, " {}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_events_pass_and_wire_crates_debug_is_dropped() {
        assert!(allowed("egress_probe::schedule", Level::TRACE, "password reference resolved"));
        assert!(!allowed(
            "tungstenite::handshake::client",
            Level::TRACE,
            "Request: \"GET / HTTP/1.1\""
        ));
        assert!(!allowed("hyper::proto::h1", Level::DEBUG, "headers"));
        assert!(allowed("tungstenite::protocol", Level::WARN, "connection closed"));
    }

    #[test]
    fn any_dependency_event_naming_a_credential_is_dropped() {
        assert!(!allowed("some_crate", Level::INFO, "sending Authorization: Bearer x"));
        assert!(!allowed("some_crate", Level::WARN, "proxy-authorization: Basic eA=="));
        assert!(allowed("hickory_net::udp", Level::TRACE, "received 1 message"));
    }

    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_default_filter_hides_webrtc_ice_warnings_but_keeps_ours_and_its_errors() {
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(DEFAULT_FILTER))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "webrtc_ice::agent::agent_internal", "pingAllCandidates called with no candidate pairs");
            tracing::info!(target: "turn::client", "state change");
            tracing::warn!(target: "egress_probe::probe::ice", "our own warning");
            tracing::info!(target: "egress_probe::schedule", "our own info");
            tracing::error!(target: "webrtc_ice::agent", "a real error");
        });
        let text = String::from_utf8(out.0.lock().expect("capture").clone()).expect("utf-8");
        assert!(!text.contains("pingAllCandidates") && !text.contains("state change"), "{text}");
        for kept in ["our own warning", "our own info", "a real error"] {
            assert!(text.contains(kept), "{kept} hidden: {text}");
        }
    }
}
