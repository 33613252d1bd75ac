//! The one way a probe runs once. The daemon's loops (`schedule`), `/probe` (`server`) and
//! `check` (`commands::check`) all start runs through a [`Launcher`], so what a run needs is
//! resolved in one place: the timeout (`ProbeConfig::timeout`), the proxy in effect
//! (`probe::effective_proxy`), the deadline, a permit of the shared concurrency limit, and
//! (in the daemon) a slot per target host ([`HostLimiter`], at most 2 runs in flight to one
//! host across the schedule and `/probe`). A scheduled run waits for its host slot before its
//! deadline starts (its ticks are skipped and counted meanwhile); `/probe` must get it before
//! its deadline, else [`Busy`].
//!
//! Each scheduled run is its own task ([`Launch`]): a panic in a probe ends that run as
//! `internal/panic` instead of taking the caller (a scheduler loop) with it, a task cancelled
//! before it finished reads `internal/cancelled`, and dropping a [`Launch`] aborts the task,
//! which drops the probe and closes its sockets. `/probe`'s run ([`Launcher::launch_within`])
//! runs in the handler's own task with the panic caught the same way (one task and wake-up
//! fewer per request); dropping the handler drops the run. How a probe is run is a [`Runner`], so the
//! scheduler's timing tests inject synthetic ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::config::web::target_hosts;
use crate::config::{Config, Defaults, ProbeConfig, ProxySetting};
use crate::net::host_limit::{HostLimiter, HostSlots};
use crate::outcome::{Failure, Outcome, Phase, Reason};
use crate::probe::{self, ProbeContext};

/// Runs one probe with its resolved context; the real one is [`probe::run`] (see
/// [`probe_runner`]), tests inject their own.
pub type Runner = Arc<dyn Fn(Arc<ProbeConfig>, ProbeContext) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// The real runner: dispatches to the probe of the configured kind.
pub fn probe_runner() -> Runner {
    Arc::new(|p: Arc<ProbeConfig>, ctx: ProbeContext| {
        Box::pin(async move {
            #[cfg(feature = "fault-injection")]
            fault::before_run(&p.name);
            probe::run(&p.spec, &ctx).await
        })
    })
}

/// Test-only faults, compiled only with the `fault-injection` feature (enabled for the test
/// suite through the dev-dependency on this crate; never in a release build).
#[cfg(feature = "fault-injection")]
pub mod fault {
    /// `EGRESS_PROBE_FAULT_PANIC=NAME[,NAME...]`: every run of the named probes panics inside
    /// its task, as a bug in a probe would.
    pub const PANIC_ENV: &str = "EGRESS_PROBE_FAULT_PANIC";

    /// Panics when [`PANIC_ENV`] names `probe`.
    pub fn before_run(probe: &str) {
        if std::env::var(PANIC_ENV).is_ok_and(|v| v.split(',').any(|n| n.trim() == probe)) {
            panic!("fault injection: probe {probe:?} panics because {PANIC_ENV} names it");
        }
    }
}

/// No concurrency permit (or no slot at the target's host) came before the run's deadline
/// (`/probe` under load).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("every concurrency slot (or every slot at the target's host) stayed busy until the probe's timeout")]
pub struct Busy;

/// The one way a probe runs once: the daemon's loops, `/probe` and `check` all start runs
/// here. Cheap to clone (the limit and the runner are shared).
#[derive(Clone)]
pub struct Launcher {
    defaults: Defaults,
    proxy: Option<ProxySetting>,
    permits: Arc<Semaphore>,
    runner: Runner,
    hosts: Option<Arc<HostLimiter>>,
}

impl Launcher {
    /// Runs `config`'s probes with its defaults and top-level proxy, at most
    /// `defaults.concurrency` at once.
    pub fn new(config: &Config) -> Launcher {
        Launcher {
            defaults: config.defaults.clone(),
            proxy: config.proxy.clone(),
            permits: Arc::new(Semaphore::new(config.defaults.concurrency.max(1))),
            runner: probe_runner(),
            hosts: None,
        }
    }

    /// Runs also take a slot per target host from `hosts` (shared by every generation of the
    /// daemon and by `/probe`); `check` runs without.
    pub fn with_host_limiter(mut self, hosts: Arc<HostLimiter>) -> Launcher {
        self.hosts = Some(hosts);
        self
    }

    /// Replaces how a probe is run (tests use synthetic runners to check timing and faults).
    pub fn with_runner(mut self, runner: Runner) -> Launcher {
        self.runner = runner;
        self
    }

    /// The time one run of `probe` may take: its timeout (its own, else the default) plus
    /// any `hold:` (see [`ProbeConfig::run_time`]).
    pub fn timeout(&self, probe: &ProbeConfig) -> Duration {
        probe.run_time(&self.defaults)
    }

    /// Starts a run of `probe` now, as its own task: it waits for a concurrency permit, then
    /// runs with a deadline of the probe's timeout from that moment.
    pub fn spawn(&self, probe: Arc<ProbeConfig>) -> Launch {
        let this = self.clone();
        let name = probe.name.clone();
        let started = Arc::new(std::sync::OnceLock::new());
        let started_at = started.clone();
        Launch::new(
            name,
            started,
            tokio::spawn(async move {
                let slots = match &this.hosts {
                    Some(h) => Some(h.wait(&target_hosts(&probe.spec)).await),
                    None => None,
                };
                let Ok(permit) = this.permits.clone().acquire_owned().await else {
                    return cancelled("the scheduler is shutting down");
                };
                let now = Instant::now();
                let _ = started_at.set(now);
                let deadline = now + this.timeout(&probe);
                this.run(probe, deadline, permit, slots).await
            }),
        )
    }

    /// Runs `probe` once (see [`Launcher::spawn`]) and returns its outcome.
    pub async fn launch(&self, probe: Arc<ProbeConfig>) -> Outcome {
        self.spawn(probe).await
    }

    /// Runs `probe` once with a deadline fixed now: its timeout, shortened to `cap` when that
    /// is smaller (`/probe` keeps within Prometheus' scrape timeout). The permit must come
    /// before the deadline, else [`Busy`].
    pub async fn launch_within(&self, probe: Arc<ProbeConfig>, cap: Option<Duration>) -> Result<Outcome, Busy> {
        let timeout = cap.map_or(self.timeout(&probe), |c| self.timeout(&probe).min(c));
        let deadline = Instant::now() + timeout;
        let slots = match &self.hosts {
            Some(h) => match h.acquire(&target_hosts(&probe.spec), deadline).await {
                Some(s) => Some(s),
                None => return Err(Busy),
            },
            None => None,
        };
        let permit = match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Ok(cancelled("the scheduler is shutting down")),
            Err(_) => return Err(Busy),
        };
        // In the caller's task (the `/probe` handler's), not a task of its own: that saves a
        // task, its join and a cross-task wake-up per request. A panic still ends the run as
        // `internal/panic` (caught here), and dropping the caller still drops the run.
        let name = probe.name.clone();
        let run = std::panic::AssertUnwindSafe(self.run(probe, deadline, permit, slots));
        Ok(match futures::FutureExt::catch_unwind(run).await {
            Ok(outcome) => outcome,
            Err(_) => panicked(&name),
        })
    }

    async fn run(&self, probe: Arc<ProbeConfig>, deadline: Instant, _permit: OwnedSemaphorePermit, _slots: Option<HostSlots>) -> Outcome {
        let proxy = probe::effective_proxy(self.proxy.as_ref(), probe.proxy.as_ref());
        (self.runner)(probe, ProbeContext { deadline, proxy }).await
    }
}

/// A run in flight, as its own task. Awaiting it yields the run's outcome; a panic in the task
/// yields `internal/panic`, a cancelled task `internal/cancelled`. Dropping it cancels the run
/// (the task is aborted, which drops the probe and closes its sockets).
pub struct Launch {
    /// The probe's name, for the log line of a panic.
    probe: String,
    /// When the run got its slot and its deadline (unset while it waits, or if it never ran).
    started: Arc<std::sync::OnceLock<Instant>>,
    task: JoinHandle<Outcome>,
}

impl Launch {
    fn new(probe: String, started: Arc<std::sync::OnceLock<Instant>>, task: JoinHandle<Outcome>) -> Launch {
        Launch { probe, started, task }
    }

    /// When the run actually started (host and concurrency slots acquired), if it did.
    pub fn started(&self) -> Option<Instant> {
        self.started.get().copied()
    }
}

impl Future for Launch {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let joined = std::task::ready!(Pin::new(&mut self.task).poll(cx));
        Poll::Ready(outcome_of(&self.probe, joined))
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cancelled(message: &str) -> Outcome {
    Outcome::failed_before_start(Failure::new(Phase::Internal, Reason::Cancelled, message))
}

/// The outcome of a joined run task: the run's own, or the program's failure.
fn outcome_of(probe: &str, joined: Result<Outcome, JoinError>) -> Outcome {
    match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => panicked(probe),
        Err(_) => cancelled("the run was cancelled before it finished"),
    }
}

/// The outcome of a run whose probe panicked.
fn panicked(probe: &str) -> Outcome {
    tracing::error!(
        probe,
        "the probe task panicked (a bug in egress-probe); the run counts as internal/panic"
    );
    Outcome::failed_before_start(Failure::new(
        Phase::Internal,
        Reason::Panic,
        "the probe task panicked: a bug in egress-probe (the panic message is on stderr)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyUrl;
    use crate::schedule::tests::{config, panicker, probe, sleeper, Log};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    #[tokio::test(start_paused = true)]
    async fn launching_a_panicking_probe_returns_internal_panic_to_the_caller() {
        let log = Arc::new(Log::default());
        let launcher = Launcher::new(&config(vec![], 100, 0.0, 1)).with_runner(panicker(log, Instant::now(), &["boom"]));
        let out = launcher.launch(Arc::new(probe("boom"))).await;
        assert_eq!(out.failure.map(|f| f.code()).as_deref(), Some("internal/panic"));
        let next = launcher.launch(Arc::new(probe("fine"))).await;
        assert!(next.success, "the panic gave its permit back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_launched_run_gets_its_own_timeout_and_proxy_from_the_moment_it_has_a_permit() {
        /// (probe, time left to the deadline at start, proxy host) of every run.
        type Seen = Mutex<Vec<(String, Duration, Option<String>)>>;
        let seen: Arc<Seen> = Arc::default();
        let record = seen.clone();
        let runner: Runner = Arc::new(move |p: Arc<ProbeConfig>, ctx: ProbeContext| {
            let record = record.clone();
            Box::pin(async move {
                let left = ctx.deadline.duration_since(Instant::now());
                record.lock().unwrap().push((p.name.clone(), left, ctx.proxy.map(|u| u.host)));
                tokio::time::sleep(Duration::from_millis(200)).await;
                Outcome {
                    success: true,
                    ..Default::default()
                }
            })
        });
        let own = ProbeConfig {
            timeout: Some(Duration::from_millis(300)),
            proxy: Some(ProxySetting::None),
            ..probe("own")
        };
        let mut cfg = config(vec![], 100, 0.0, 1);
        cfg.proxy = Some(ProxySetting::Url(ProxyUrl {
            host: "proxy.test".into(),
            port: 3128,
            username: None,
            password: None,
        }));
        let launcher = Launcher::new(&cfg).with_runner(runner);
        // One permit: the second run waits 200 ms for it, and its deadline counts from then.
        let first = launcher.spawn(Arc::new(probe("default")));
        let second = launcher.spawn(Arc::new(own));
        let t0 = Instant::now();
        let (a, b) = futures::join!(first, second);
        assert!(a.success && b.success);
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                ("default".to_string(), Duration::from_millis(1000), Some("proxy.test".to_string())),
                ("own".to_string(), Duration::from_millis(300), None),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn launch_within_turns_a_panic_into_internal_panic_and_gives_the_permit_back() {
        let log = Arc::new(Log::default());
        let launcher = Launcher::new(&config(vec![], 100, 0.0, 1)).with_runner(panicker(log, Instant::now(), &["boom"]));
        let out = launcher.launch_within(Arc::new(probe("boom")), None).await.expect("a free permit");
        assert_eq!(out.failure.map(|f| f.code()).as_deref(), Some("internal/panic"));
        let next = launcher
            .launch_within(Arc::new(probe("fine")), Some(Duration::from_millis(100)))
            .await
            .expect("the panicked run gave its permit back");
        assert!(next.success);
    }

    #[tokio::test(start_paused = true)]
    async fn launch_within_is_busy_when_no_permit_comes_before_the_capped_deadline() {
        let log = Arc::new(Log::default());
        let launcher =
            Launcher::new(&config(vec![], 100, 0.0, 1)).with_runner(sleeper(log.clone(), Instant::now(), Duration::from_secs(5), false));
        let _holder = launcher.spawn(Arc::new(probe("holder")));
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        let busy = launcher
            .launch_within(Arc::new(probe("on-demand")), Some(Duration::from_millis(200)))
            .await;
        assert!(busy.is_err(), "no permit within 200 ms");
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
        let runs: Vec<String> = log.starts.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(runs, vec!["holder"]);
    }

    #[tokio::test]
    async fn dropping_a_launch_cancels_its_run_and_frees_the_permit() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let runner: Runner = Arc::new(move |_p: Arc<ProbeConfig>, _ctx: ProbeContext| {
            let guard = SetOnDrop(flag.clone());
            Box::pin(async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Outcome::default()
            })
        });
        let launcher = Launcher::new(&config(vec![], 100, 0.0, 1)).with_runner(runner);
        let run = launcher.spawn(Arc::new(probe("hang")));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(run);
        let permit = tokio::time::timeout(Duration::from_secs(2), launcher.permits.clone().acquire_owned()).await;
        assert!(matches!(permit, Ok(Ok(_))), "the cancelled run gave its permit back");
        assert!(dropped.load(Ordering::SeqCst), "the probe future was dropped");
    }

    #[tokio::test]
    async fn a_cancelled_task_reads_internal_cancelled() {
        let task = tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Outcome::default()
        });
        task.abort();
        let out = outcome_of("aborted", task.await);
        assert_eq!(out.failure.map(|f| f.code()).as_deref(), Some("internal/cancelled"));
    }
}
