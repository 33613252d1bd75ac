//! Push delivery: Prometheus remote_write 1.0 out through the egress path, for networks where
//! nothing can scrape `/metrics`. A sibling of `metrics` (it reads the same registry) rather
//! than a scheduler [`Sink`](crate::schedule::Sink): it sends *families*, not outcomes, so
//! what a central Prometheus receives is exactly what a scrape would have seen.
//!
//! Per configured receiver, two tasks share one bounded [`queue::Queue`]:
//!
//! * the **gatherer** snapshots every family on a fixed grid (`interval`, first at start) with
//!   one timestamp per gather ([`wire::snapshot`]), and once more at stop;
//! * the **sender** sends the oldest snapshots as one request ([`MAX_BATCH_SAMPLES`] at most,
//!   whole snapshots), one request at a time, so samples arrive in time order. Accepted ⇒
//!   removed and counted `sent`. 5xx, 429 and network failures ⇒ kept and retried after an
//!   exponential backoff with jitter ([`queue::retry_delay`]), never before `Retry-After`.
//!   Any other 4xx ⇒ the receiver will never take it: removed, counted `failed`, logged with the
//!   first line of the answer. While the receiver is away the queue fills (bounded by
//!   `max_samples` and `max_age`, oldest dropped and counted) and drains in order afterwards.
//! * **Stop**: the gatherer takes a last snapshot; the sender gets [`FLUSH_GRACE`] (inside the
//!   daemon's 1 s stop budget) to finish its request and send what is queued, one try each.
//!   What is left is counted `dropped`.
//!
//! Every request goes through [`send::Receiver`], i.e. the probes' dial path, and its failure
//! is counted in `egress_probe_push_failures_total{phase,reason}` with the probes' words.

pub mod queue;
pub mod send;
pub mod wire;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{endpoint_of_url, redact_url, Config, ProxySetting, RemoteWriteConfig};
use crate::metrics::Metrics;
use crate::outcome::{Endpoint, Failure, Outcome, Phase, Reason};
use crate::shutdown::Shutdown;

use queue::{Batch, Queue};
use send::{Receiver, SendError};
use wire::Interner;

/// Most samples in one request (whole gathers; a single larger gather goes alone).
pub const MAX_BATCH_SAMPLES: usize = 20_000;

/// How long after stop the sender may still deliver (part of the daemon's 1 s stop budget).
pub const FLUSH_GRACE: Duration = Duration::from_millis(500);

/// One receiver's delivery: its request template, queue and self-metrics.
pub struct Pusher {
    cfg: RemoteWriteConfig,
    remote: String,
    receiver: Receiver,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    notify: Notify,
}

struct State {
    queue: Queue,
    interner: Interner,
    /// Timestamp of the previous gather: the next one is always later, so a wall clock stepped
    /// back (NTP) cannot make the receiver refuse the batch as out of order.
    last_ms: i64,
}

fn unix_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Pusher {
    /// Builds the delivery for one `remote_write` entry; `top_proxy` is the config's `proxy:`.
    pub fn new(cfg: &RemoteWriteConfig, top_proxy: Option<&ProxySetting>, metrics: Arc<Metrics>) -> Result<Pusher, Failure> {
        let receiver = Receiver::new(cfg, top_proxy)?;
        let remote = cfg.remote_label();
        metrics.push_families().init(&remote);
        Ok(Pusher {
            cfg: cfg.clone(),
            remote,
            receiver,
            metrics,
            state: Mutex::new(State {
                queue: Queue::new(cfg.queue),
                interner: Interner::default(),
                last_ms: 0,
            }),
            notify: Notify::new(),
        })
    }

    /// The receiver's `host:port`, the `remote` label of the self-metrics.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent queue (every update is one call).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Samples waiting to be sent.
    pub fn queued(&self) -> usize {
        self.state().queue.samples()
    }

    /// Snapshots every family now and queues it (dropping the oldest if full).
    pub fn gather(&self) {
        let families = self.metrics.gather();
        let now = unix_ms();
        let (dropped, queued) = {
            let mut st = self.state();
            let State { queue, interner, last_ms } = &mut *st;
            let ts = now.max(*last_ms + 1);
            *last_ms = ts;
            let snap = wire::snapshot(&families, &self.cfg.external_labels, ts, interner);
            let dropped = queue.push(snap) + queue.expire(now);
            (dropped, queue.samples())
        };
        let push = self.metrics.push_families();
        if dropped > 0 {
            push.samples(&self.remote, "dropped", dropped);
            tracing::warn!(remote = %self.remote, dropped, "push queue full or too old; oldest samples dropped");
        }
        push.queue(&self.remote, queued);
        self.notify.notify_one();
    }

    /// Empties the queue without sending (benches); returns the samples it held, not counted.
    pub fn clear(&self) -> usize {
        self.state().queue.clear()
    }

    /// The oldest batch, encoded; `None` when the queue is empty.
    pub fn next_body(&self) -> Option<(Batch, Bytes)> {
        let mut st = self.state();
        let dropped = st.queue.expire(unix_ms());
        if dropped > 0 {
            self.metrics.push_families().samples(&self.remote, "dropped", dropped);
        }
        let batch = st.queue.batch(MAX_BATCH_SAMPLES)?;
        let encoded = wire::encode_batch(st.queue.snapshots(batch));
        drop(st);
        match encoded {
            Ok(body) => Some((batch, Bytes::from(body))),
            Err(e) => {
                // Cannot happen for in-memory input; drop the batch rather than loop on it.
                tracing::error!(remote = %self.remote, error = %e, "snappy encoding failed; batch dropped");
                let removed = self.state().queue.remove(batch);
                self.metrics.push_families().samples(&self.remote, "dropped", removed);
                None
            }
        }
    }

    /// Sends the oldest batch once and settles it; `None` when there was nothing to send.
    pub async fn attempt(&self, until: Option<Instant>) -> Option<(Outcome, Result<(), SendError>)> {
        let (batch, body) = self.next_body()?;
        let (outcome, result) = self.receiver.write(body, until).await;
        let push = self.metrics.push_families();
        match &result {
            Ok(()) => {
                let removed = self.state().queue.remove(batch);
                push.samples(&self.remote, "sent", removed);
                push.success(&self.remote);
                tracing::debug!(remote = %self.remote, samples = removed, ms = outcome.total.as_millis() as u64, "remote_write accepted");
            }
            Err(e) => {
                let f = e.failure();
                push.failure(&self.remote, f.phase.as_str(), &f.reason.label());
                if let SendError::Refused { .. } = e {
                    let removed = self.state().queue.remove(batch);
                    push.samples(&self.remote, "failed", removed);
                }
            }
        }
        push.queue(&self.remote, self.queued());
        Some((outcome, result))
    }

    /// Logs a failed attempt of the daemon's loop (`check --push` shows it in its table instead).
    fn log_failure(&self, e: &SendError) {
        let f = e.failure();
        match e {
            SendError::Refused { first_line, .. } => tracing::warn!(remote = %self.remote, phase = f.phase.as_str(), reason = %f.reason,
                answer = %first_line, "remote_write refused; batch dropped, not retried"),
            SendError::Retry { .. } => tracing::warn!(remote = %self.remote, phase = f.phase.as_str(), reason = %f.reason,
                error = %f.message, queued = self.queued(), "remote_write failed; will retry"),
        }
    }

    /// `check --push`: gathers the current families and writes them once.
    pub async fn write_now(&self) -> Outcome {
        self.gather();
        match self.attempt(None).await {
            Some((outcome, _)) => outcome,
            None => Outcome::failed_before_start(Failure::new(Phase::Request, Reason::Io, "nothing to push: no families")),
        }
    }

    /// Gathers on the grid and sends until `stop`, then flushes within [`FLUSH_GRACE`].
    pub async fn run(self: Arc<Self>, stop: Shutdown) {
        tracing::info!(remote = %self.remote, url = %self.receiver.shown(), interval_s = self.cfg.interval.as_secs_f64(), "remote_write push started");
        let gatherer = tokio::spawn(self.clone().gather_loop(stop.clone()));
        let flush_until = self.send_loop(&stop).await;
        let _ = gatherer.await;
        while Instant::now() < flush_until {
            match self.attempt(Some(flush_until)).await {
                Some((_, Ok(()))) => {}
                Some((_, Err(e))) => {
                    self.log_failure(&e);
                    if let SendError::Retry { .. } = e {
                        break;
                    }
                }
                None => break,
            }
        }
        let left = self.state().queue.clear();
        let push = self.metrics.push_families();
        push.queue(&self.remote, 0);
        if left > 0 {
            push.samples(&self.remote, "dropped", left);
            tracing::warn!(remote = %self.remote, samples = left, "stopping with undelivered samples");
        }
    }

    async fn gather_loop(self: Arc<Self>, stop: Shutdown) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => self.gather(),
                _ = stop.wait() => break,
            }
        }
        // The last results before stopping are worth the flush.
        self.gather();
    }

    /// Sends oldest-first until `stop`; returns the flush deadline.
    async fn send_loop(&self, stop: &Shutdown) -> Instant {
        let mut failures = 0u32;
        loop {
            while self.state().queue.is_empty() {
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = stop.wait() => return Instant::now() + FLUSH_GRACE,
                }
            }
            let attempt = self.attempt(None);
            tokio::pin!(attempt);
            let result = tokio::select! {
                r = &mut attempt => r,
                _ = stop.wait() => {
                    let until = Instant::now() + FLUSH_GRACE;
                    let _ = tokio::time::timeout_at(until, attempt).await;
                    return until;
                }
            };
            let Some((_, result)) = result else { continue };
            if let Err(e) = &result {
                self.log_failure(e);
            }
            match result {
                Ok(()) if failures > 0 => {
                    tracing::info!(remote = %self.remote, failures, queued = self.queued(), "remote_write accepted again; delivering the backlog");
                    failures = 0;
                }
                Ok(()) | Err(SendError::Refused { .. }) => failures = 0,
                Err(SendError::Retry { retry_after, .. }) => {
                    failures = failures.saturating_add(1);
                    let wait = queue::retry_delay(failures, retry_after, rand::random::<f64>());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait() => return Instant::now() + FLUSH_GRACE,
                    }
                }
            }
        }
    }
}

/// Starts one [`Pusher`] per `push:` receiver; a receiver whose settings can never work
/// (unreadable `ca_file` ...) is logged and counted instead of stopping the daemon.
pub fn start(
    receivers: &[RemoteWriteConfig],
    top_proxy: Option<&ProxySetting>,
    metrics: &Arc<Metrics>,
    stop: &Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for cfg in receivers {
        match Pusher::new(cfg, top_proxy, metrics.clone()) {
            Ok(p) => tasks.push(tokio::spawn(Arc::new(p).run(stop.clone()))),
            Err(f) => {
                let remote = cfg.remote_label();
                metrics.push_families().init(&remote);
                metrics.push_families().failure(&remote, f.phase.as_str(), &f.reason.label());
                tracing::error!(remote = %remote, phase = f.phase.as_str(), reason = %f.reason, error = %f.message, "remote_write push cannot start");
            }
        }
    }
    tasks
}

/// One row of `check --push`: which receiver, where, and how the write went.
pub struct CheckRow {
    /// `push <host:port>`.
    pub name: String,
    /// The receiver URL without credentials or query.
    pub target: String,
    /// The receiver's host, port and transport.
    pub endpoint: Endpoint,
    pub outcome: Outcome,
}

/// `check --push`: one write of `metrics`' current families to every `push:` receiver of
/// `config`, in config order.
pub async fn check(config: &Config, metrics: &Arc<Metrics>) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for cfg in &config.push {
        let outcome = match Pusher::new(cfg, config.proxy.as_ref(), metrics.clone()) {
            Ok(p) => p.write_now().await,
            Err(f) => Outcome::failed_before_start(f),
        };
        rows.push(CheckRow {
            name: format!("push {}", cfg.remote_label()),
            target: redact_url(&cfg.url),
            endpoint: endpoint_of_url(&cfg.url),
            outcome,
        });
    }
    rows
}
