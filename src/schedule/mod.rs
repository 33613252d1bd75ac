//! When probes run, and the one way a probe runs once.
//!
//! * **One launch path** (`launch.rs`). [`Launcher`] is how every run starts — the daemon's loops below,
//!   `/probe` (`server`) and `check` (`commands::check`): it resolves the timeout
//!   (`ProbeConfig::timeout`), the proxy in effect (`probe::effective_proxy`) and the deadline,
//!   takes a permit of the global concurrency limit, and runs the probe as its own task. A
//!   panic in that task ends the run as `internal/panic` and the daemon keeps probing; a run
//!   cancelled before it finished reads `internal/cancelled` (see [`Launch`]).
//! * **Grid, not sleep-after-run.** Probe `p` starts at `t0 + offset + k·interval`, so a slow
//!   target does not drift its own schedule. `offset` ([`first_offset`]) is the probe's place in
//!   an even spread of the configured probes (the `i`-th of `n` at `i · min(interval / n,
//!   START_SPACING)`) plus a random fraction (`jitter`) of the interval drawn once, taken modulo
//!   the interval. The spread keeps 10,000 probes at 10 s from all falling due within the
//!   jitter window (10,000 starts in 1 s with the default 10 %, a schedule lag p99 of 229 ms on
//!   one core; one start per ms when spread), while a handful of probes still all start within
//!   a few [`START_SPACING`]s (ready at once); the jitter keeps a fleet of daemons with the same
//!   config from firing in lockstep.
//! * **Deadline = timeout.** A run gets `timeout` from the moment it obtains a concurrency permit.
//! * **No overlap.** If a probe's previous run is still in flight at its next grid point, that
//!   tick is skipped and counted (`Sink::skipped`), never queued.
//! * **Global concurrency limit** (`defaults.concurrency`) with a semaphore shared by every probe
//!   and by `/probe` requests (the server holds the scheduler's [`Scheduler::launcher`]).
//! * **Backoff** after consecutive failures: the next run is not before
//!   `end + max(backoff, Retry-After)`, still on the grid (see [`Backoff`]).
//! * **Shutdown**: when the [`Shutdown`] fires, loops stop at once; in-flight runs get
//!   [`SHUTDOWN_GRACE`] to finish and are then cancelled (dropping a [`Launch`] aborts its task,
//!   which closes its sockets), so the daemon exits within 1 s.
//!
//! Results go to [`Sink`]s; the scheduler knows none of them: metrics and the status board
//! implement the trait where they live, [`LogSink`] (here, as it needs only `tracing`) is
//! added by `commands::run`; a push delivery is one more sink. Config
//! reload swaps the whole scheduler: start a new one, then fire the old one's shutdown (see
//! `commands::run`).

mod launch;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, Defaults, ProbeConfig};
use crate::outcome::Outcome;
use crate::shutdown::Shutdown;

#[cfg(feature = "fault-injection")]
pub use launch::fault;
pub use launch::{probe_runner, Busy, Launch, Launcher, Runner};

/// How long in-flight runs may continue after shutdown before they are cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(600);

/// Where finished runs go. Implementations must be cheap and must not block (they are called
/// from the scheduler's loops).
pub trait Sink: Send + Sync {
    /// A run of `probe` finished with `outcome`.
    fn record(&self, probe: &ProbeConfig, outcome: &Outcome);
    /// A grid point of `probe` was skipped because its previous run was still in flight.
    fn skipped(&self, probe: &ProbeConfig) {
        let _ = probe;
    }
    /// A scheduled run of `probe` started `lag` after its grid point (waiting for a
    /// concurrency slot included). On-demand runs (`/probe`, `check`) have no plan and do not
    /// report here.
    fn started(&self, probe: &ProbeConfig, lag: Duration) {
        let _ = (probe, lag);
    }
}

/// Logs one line per failed run (probe, kind, phase, reason, the failure's message as `error`)
/// and each skipped tick. The event text stays the log's `message`; the failure's own message
/// goes under a distinct key so a JSON line never holds `message` twice. Messages are written
/// by probes for humans and never contain secrets.
pub struct LogSink;

impl Sink for LogSink {
    fn record(&self, probe: &ProbeConfig, outcome: &Outcome) {
        match &outcome.failure {
            // Every string field is recorded as a `&str`: quoted in text logs (`probe="a b"`
            // stays one field), a plain JSON string with `--log-format json`. Times in ms with
            // µs precision (`total_ms=0.154`), like the JSON report.
            Some(f) => tracing::warn!(
                probe = probe.name.as_str(),
                kind = probe.spec.kind(),
                phase = f.phase.as_str(),
                reason = f.reason.label().as_str(),
                total_ms = crate::outcome::ms(outcome.total),
                error = f.message.as_str(),
                "probe failed"
            ),
            None => tracing::debug!(
                probe = probe.name.as_str(),
                kind = probe.spec.kind(),
                total_ms = crate::outcome::ms(outcome.total),
                "probe passed"
            ),
        }
    }
    fn skipped(&self, probe: &ProbeConfig) {
        tracing::warn!(probe = probe.name.as_str(), "previous run still in flight; tick skipped");
    }
}

/// Exponential backoff after consecutive failures, so a rate-limited or overloaded target is
/// not hammered: `min(cap, floor · 2^(n-1))` with ± `jitter`, and never less than a server's
/// `Retry-After`. `cap` is `max(floor, 8 · interval)` so a probe still reports regularly.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub floor: Duration,
    /// Fraction (0..1) of random spread applied to the computed delay.
    pub jitter: f64,
    /// Upper bound for an honoured `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            floor: Duration::from_secs(2),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// Minimum time from the end of the last run to the next start, after `failures`
    /// consecutive failures. `u` is a uniform random number in 0..1 (injected for tests).
    pub fn delay(&self, failures: u32, interval: Duration, retry_after: Option<Duration>, u: f64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let cap = self.floor.max(interval.saturating_mul(8));
        let exp = self.floor.saturating_mul(1u32 << (failures - 1).min(16)).min(cap);
        let spread = 1.0 + self.jitter * (2.0 * u.clamp(0.0, 1.0) - 1.0);
        let base = exp.mul_f64(spread.max(0.0)).max(self.floor);
        base.max(retry_after.unwrap_or(Duration::ZERO).min(self.max_retry_after))
    }
}

/// The most time between the first grid points of two neighbouring probes in the spread: a
/// small config starts at once, a large one is spread over the whole interval.
pub const START_SPACING: Duration = Duration::from_millis(10);

/// The first grid point's offset from the scheduler's start for the `index`-th of `count`
/// probes: its slot in the even spread (`index · min(interval / count, spacing)`) plus a random
/// fraction of `jitter` (0..=0.5) of the interval, modulo the interval. `u` is a uniform random
/// number in 0..1.
pub fn first_offset(interval: Duration, index: usize, count: usize, spacing: Duration, jitter: f64, u: f64) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(u32::MAX).min(count - 1);
    let slot = (interval / count).min(spacing).saturating_mul(index);
    let offset = slot.saturating_add(interval.mul_f64((jitter * u).clamp(0.0, 1.0)));
    let step = interval.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(offset.as_nanos() % step).unwrap_or(0))
}

/// Stands in for a grid point too far away to represent (a year: beyond any validated interval).
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The first grid point `tick + k·interval` (k ≥ 0) that is not before `t`.
pub fn grid_at_or_after(tick: Instant, interval: Duration, t: Instant) -> Instant {
    if tick >= t {
        return tick;
    }
    let behind = t.duration_since(tick).as_nanos();
    let step = interval.as_nanos().max(1);
    let steps = behind.div_ceil(step);
    // Checked all the way: a grid point beyond what `Instant` can hold is "never" (far future),
    // not a panic in the probe's loop.
    let ahead = u64::try_from(steps.saturating_mul(step)).unwrap_or(u64::MAX);
    tick.checked_add(Duration::from_nanos(ahead)).unwrap_or_else(|| t + FAR_FUTURE)
}

/// Every probe's loop plus what they share.
pub struct Scheduler {
    probes: Vec<Arc<ProbeConfig>>,
    defaults: Defaults,
    launcher: Launcher,
    sinks: Vec<Arc<dyn Sink>>,
    backoff: Option<Backoff>,
    /// Most time between neighbouring first grid points ([`START_SPACING`]).
    spacing: Duration,
}

impl Scheduler {
    /// A scheduler for `config`'s probes, reporting to `sinks`.
    pub fn new(config: &Config, sinks: Vec<Arc<dyn Sink>>) -> Scheduler {
        Scheduler {
            probes: config.probes.iter().cloned().map(Arc::new).collect(),
            defaults: config.defaults.clone(),
            launcher: Launcher::new(config),
            sinks,
            backoff: Some(Backoff::default()),
            spacing: START_SPACING,
        }
    }

    /// Sets the most time between neighbouring first grid points (`ZERO`: every probe's grid
    /// starts at the same point, plus its jitter; tests of simultaneous runs use that).
    pub fn with_start_spacing(mut self, spacing: Duration) -> Scheduler {
        self.spacing = spacing;
        self
    }

    /// Runs take a slot per target host from `hosts` (shared with `/probe`); the daemon sets
    /// it, `check` does not.
    pub fn with_host_limiter(mut self, hosts: Arc<crate::net::host_limit::HostLimiter>) -> Scheduler {
        self.launcher = self.launcher.with_host_limiter(hosts);
        self
    }

    /// Replaces how a probe is run (tests use a synthetic runner to check timing).
    pub fn with_runner(mut self, runner: Runner) -> Scheduler {
        self.launcher = self.launcher.with_runner(runner);
        self
    }

    /// Sets or disables (`None`) the backoff after failures.
    pub fn with_backoff(mut self, backoff: Option<Backoff>) -> Scheduler {
        self.backoff = backoff;
        self
    }

    /// The launcher of this scheduler's runs, for on-demand runs (`/probe`) that share its
    /// concurrency limit.
    pub fn launcher(&self) -> Launcher {
        self.launcher.clone()
    }

    /// Runs every probe's loop until `shutdown` fires; returns after in-flight runs finished
    /// or were cancelled (at most [`SHUTDOWN_GRACE`] later).
    pub async fn run(self, shutdown: Shutdown) {
        let shared = Arc::new(Shared {
            launcher: self.launcher,
            sinks: self.sinks,
            backoff: self.backoff,
        });
        let count = self.probes.len();
        let loops: Vec<JoinHandle<()>> = self
            .probes
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let interval = p.interval(&self.defaults);
                let u = rand::random::<f64>();
                let plan = Plan {
                    interval,
                    offset: first_offset(interval, i, count, self.spacing, self.defaults.jitter, u),
                };
                tokio::spawn(probe_loop(p, plan, shared.clone(), shutdown.clone()))
            })
            .collect();
        for l in loops {
            let _ = l.await;
        }
    }
}

struct Shared {
    launcher: Launcher,
    sinks: Vec<Arc<dyn Sink>>,
    backoff: Option<Backoff>,
}

#[derive(Clone, Copy)]
struct Plan {
    interval: Duration,
    offset: Duration,
}

async fn probe_loop(p: Arc<ProbeConfig>, plan: Plan, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = Instant::now() + plan.offset;
    let mut in_flight: Option<Launch> = None;
    // The grid point the run in flight was planned for (its schedule lag is measured from it).
    let mut planned = tick;
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            outcome = async {
                match in_flight.as_mut() {
                    Some(run) => run.await,
                    None => std::future::pending().await,
                }
            }, if in_flight.is_some() => {
                let started = in_flight.take().and_then(|run| run.started());
                for s in &shared.sinks {
                    if let Some(at) = started {
                        s.started(&p, at.saturating_duration_since(planned));
                    }
                    s.record(&p, &outcome);
                }
                failures = if outcome.success { 0 } else { failures.saturating_add(1) };
                if let Some(b) = &shared.backoff {
                    let delay = b.delay(failures, plan.interval, outcome.detail.retry_after, rand::random::<f64>());
                    tick = grid_at_or_after(tick, plan.interval, Instant::now() + delay);
                }
            }
            _ = tokio::time::sleep_until(tick) => {
                if in_flight.is_some() {
                    for s in &shared.sinks {
                        s.skipped(&p);
                    }
                } else {
                    planned = tick;
                    in_flight = Some(shared.launcher.spawn(p.clone()));
                }
                tick = grid_at_or_after(tick + plan.interval, plan.interval, Instant::now());
            }
        }
    }
    if let Some(mut run) = in_flight {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut run).await {
            Ok(outcome) => {
                for s in &shared.sinks {
                    s.record(&p, &outcome);
                }
            }
            Err(_) => {
                drop(run);
                tracing::info!(
                    probe = p.name.as_str(),
                    phase = "internal",
                    reason = "cancelled",
                    "in-flight run cancelled at shutdown"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Scheduler tests on paused time, and the synthetic probes and sinks `launch` tests share.
    use super::*;
    use crate::config::{HostPort, ProbeSpec, TcpSpec};
    use crate::outcome::{Failure, Phase, Reason};
    use crate::probe::ProbeContext;
    use std::sync::Mutex;

    pub(super) fn probe(name: &str) -> ProbeConfig {
        ProbeConfig {
            name: name.into(),
            interval: None,
            timeout: None,
            labels: Default::default(),
            proxy: None,
            spec: ProbeSpec::Tcp(TcpSpec {
                target: HostPort {
                    host: "127.0.0.1".into(),
                    port: 9,
                },
                addresses: Default::default(),
            }),
        }
    }

    pub(super) fn config(probes: Vec<ProbeConfig>, interval_ms: u64, jitter: f64, concurrency: usize) -> Config {
        Config {
            defaults: Defaults {
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(interval_ms * 10),
                jitter,
                concurrency,
            },
            probes,
            ..Default::default()
        }
    }

    /// Records (probe, start offset from t0, in flight at start) of every run.
    #[derive(Default)]
    pub(super) struct Log {
        pub(super) starts: Mutex<Vec<(String, Duration)>>,
        in_flight: Mutex<(usize, usize)>,
        skipped: Mutex<Vec<String>>,
        outcomes: Mutex<Vec<String>>,
        /// (probe, `phase/reason` or `pass`) of every recorded run.
        codes: Mutex<Vec<(String, String)>>,
        /// (probe, schedule lag) of every started run.
        lags: Mutex<Vec<(String, Duration)>>,
    }

    impl Log {
        fn codes_of(&self, probe: &str) -> Vec<String> {
            let codes = self.codes.lock().unwrap();
            codes.iter().filter(|(p, _)| p == probe).map(|(_, c)| c.clone()).collect()
        }
    }

    impl Sink for Log {
        fn record(&self, probe: &ProbeConfig, outcome: &Outcome) {
            self.outcomes.lock().unwrap().push(probe.name.clone());
            let code = outcome.failure.as_ref().map_or("pass".to_string(), |f| f.code());
            self.codes.lock().unwrap().push((probe.name.clone(), code));
        }
        fn skipped(&self, probe: &ProbeConfig) {
            self.skipped.lock().unwrap().push(probe.name.clone());
        }
        fn started(&self, probe: &ProbeConfig, lag: Duration) {
            self.lags.lock().unwrap().push((probe.name.clone(), lag));
        }
    }

    /// A runner that "probes" for `busy` (paused time) and fails when `fail` says so.
    pub(super) fn sleeper(log: Arc<Log>, t0: Instant, busy: Duration, fail: bool) -> Runner {
        Arc::new(move |p: Arc<ProbeConfig>, _ctx: ProbeContext| {
            let log = log.clone();
            Box::pin(async move {
                log.starts.lock().unwrap().push((p.name.clone(), t0.elapsed()));
                {
                    let mut f = log.in_flight.lock().unwrap();
                    f.0 += 1;
                    f.1 = f.1.max(f.0);
                }
                tokio::time::sleep(busy).await;
                log.in_flight.lock().unwrap().0 -= 1;
                Outcome {
                    success: !fail,
                    failure: fail.then(|| Failure::new(Phase::Connect, Reason::Refused, "test")),
                    ..Default::default()
                }
            })
        })
    }

    async fn run_for(s: Scheduler, d: Duration) {
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let h = tokio::spawn(s.run(shutdown));
        tokio::time::sleep(d).await;
        stop.trigger();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_waiting_for_a_concurrency_slot_reports_that_wait_as_schedule_lag() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        // One slot, two probes due at the same grid point: the second starts 30 ms late.
        let s = Scheduler::new(&config(vec![probe("a"), probe("b")], 100, 0.0, 1), vec![log.clone()])
            .with_start_spacing(Duration::ZERO)
            .with_runner(sleeper(log.clone(), t0, Duration::from_millis(30), false));
        run_for(s, Duration::from_millis(280)).await;
        let mut lags: Vec<u128> = log.lags.lock().unwrap().iter().map(|(_, d)| d.as_millis()).collect();
        lags.sort();
        // Three grid points (0, 100, 200 ms): each has one run on time and one 30 ms late.
        assert_eq!(lags, [0, 0, 0, 30, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_start_on_a_fixed_grid_that_a_slow_run_does_not_drift() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        // Each run takes 70% of the interval: with sleep-after-run the starts would drift.
        let s = Scheduler::new(&config(vec![probe("a")], 100, 0.0, 4), vec![log.clone()]).with_runner(sleeper(
            log.clone(),
            t0,
            Duration::from_millis(70),
            false,
        ));
        run_for(s, Duration::from_millis(1050)).await;
        let starts: Vec<u128> = log.starts.lock().unwrap().iter().map(|(_, d)| d.as_millis()).collect();
        assert_eq!(starts, (0..11).map(|k| k * 100).collect::<Vec<u128>>());
    }

    #[tokio::test(start_paused = true)]
    async fn first_start_is_offset_by_at_most_the_jitter_fraction_past_its_slot() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        let probes = (0..20).map(|i| probe(&format!("p{i}"))).collect();
        let s = Scheduler::new(&config(probes, 1000, 0.5, 64), vec![log.clone()]).with_runner(sleeper(
            log.clone(),
            t0,
            Duration::from_millis(1),
            false,
        ));
        run_for(s, Duration::from_millis(999)).await;
        let starts = log.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 20);
        // Slot i·10 ms (20 probes: 0..190 ms) plus at most half the interval.
        for (name, d) in &starts {
            let i: u64 = name[1..].parse().unwrap();
            let slot = Duration::from_millis(i * 10);
            assert!(*d >= slot && *d <= slot + Duration::from_millis(500), "{starts:?}");
        }
        let distinct: std::collections::BTreeSet<u128> = starts.iter().map(|(_, d)| d.as_millis()).collect();
        assert!(distinct.len() > 5, "offsets should be spread: {starts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn many_probes_spread_their_first_runs_evenly_over_the_whole_interval() {
        // 2,000 probes at 2 s without jitter: one first start per ms over the whole interval
        // (not 2,000 at once), and the second round keeps the same grid.
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        let probes = (0..2000).map(|i| probe(&format!("p{i}"))).collect();
        let s = Scheduler::new(&config(probes, 2000, 0.0, 64), vec![log.clone()]).with_runner(sleeper(
            log.clone(),
            t0,
            Duration::from_micros(100),
            false,
        ));
        run_for(s, Duration::from_micros(3_999_500)).await;
        let starts = log.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 4000);
        for (name, d) in &starts {
            let i: u128 = name[1..].parse().unwrap();
            assert!(d.as_millis() == i || d.as_millis() == i + 2000, "{name} started at {d:?}");
        }
        let mut per_ms = std::collections::BTreeMap::<u128, usize>::new();
        for (_, d) in &starts {
            *per_ms.entry(d.as_millis()).or_default() += 1;
        }
        assert_eq!(per_ms.len(), 4000, "exactly one start in every ms of both rounds");
        let lags = log.lags.lock().unwrap();
        assert!(lags.iter().all(|(_, l)| l.is_zero()), "no start waited for a slot");
    }

    #[test]
    fn a_few_probes_start_within_a_few_spacings_and_the_spread_wraps_into_the_interval() {
        // 5 probes at 30 s: slots 0, 10, …, 40 ms, so a small config is ready at once.
        let slots: Vec<u128> = (0..5)
            .map(|i| first_offset(Duration::from_secs(30), i, 5, START_SPACING, 0.0, 0.0).as_millis())
            .collect();
        assert_eq!(slots, [0, 10, 20, 30, 40]);
        // 10,000 at 10 s: 1 ms apart, the last one just inside the interval.
        let ten_s = Duration::from_secs(10);
        assert_eq!(first_offset(ten_s, 9_999, 10_000, START_SPACING, 0.0, 0.0).as_millis(), 9_999);
        // Slot plus jitter past the interval wraps around instead of leaving the grid's period.
        assert_eq!(first_offset(ten_s, 9_000, 10_000, START_SPACING, 0.5, 0.5).as_millis(), 1_500);
        // Degenerate inputs stay inside the interval.
        assert!(first_offset(ten_s, 5, 0, START_SPACING, 0.5, 1.0) < ten_s);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_still_in_flight_skips_the_tick_and_counts_it() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        // 250 ms runs on a 100 ms grid: starts at 0, 300, 600, 900; ticks 100, 200, 400, ... skipped.
        let s = Scheduler::new(&config(vec![probe("slow")], 100, 0.0, 4), vec![log.clone()]).with_runner(sleeper(
            log.clone(),
            t0,
            Duration::from_millis(250),
            false,
        ));
        run_for(s, Duration::from_millis(950)).await;
        let starts: Vec<u128> = log.starts.lock().unwrap().iter().map(|(_, d)| d.as_millis()).collect();
        assert_eq!(starts, vec![0, 300, 600, 900]);
        assert_eq!(log.in_flight.lock().unwrap().1, 1, "two runs of one probe overlapped");
        assert_eq!(log.skipped.lock().unwrap().len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_limit_bounds_runs_in_flight() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        let probes = (0..10).map(|i| probe(&format!("p{i}"))).collect();
        let s = Scheduler::new(&config(probes, 1000, 0.0, 3), vec![log.clone()])
            .with_start_spacing(Duration::ZERO)
            .with_runner(sleeper(log.clone(), t0, Duration::from_millis(100), false));
        run_for(s, Duration::from_millis(900)).await;
        assert_eq!(log.in_flight.lock().unwrap().1, 3);
        // 10 runs through 3 permits in 100 ms waves: starts at 0, 100, 200, 300.
        let mut starts: Vec<u128> = log.starts.lock().unwrap().iter().map(|(_, d)| d.as_millis()).collect();
        starts.sort();
        assert_eq!(starts, vec![0, 0, 0, 100, 100, 100, 200, 200, 200, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_back_off_exponentially_on_the_grid() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        let b = Backoff {
            floor: Duration::from_secs(2),
            jitter: 0.0,
            max_retry_after: Duration::from_secs(60),
        };
        let s = Scheduler::new(&config(vec![probe("down")], 1000, 0.0, 4), vec![log.clone()])
            .with_runner(sleeper(log.clone(), t0, Duration::from_millis(10), true))
            .with_backoff(Some(b));
        run_for(s, Duration::from_millis(17_500)).await;
        let starts: Vec<u64> = log.starts.lock().unwrap().iter().map(|(_, d)| d.as_secs()).collect();
        // End 0.01 + 2 s ⇒ grid point 3; 3.01 + 4 ⇒ 8; 8.01 + 8 ⇒ 17.
        assert_eq!(starts, vec![0, 3, 8, 17]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_a_hanging_run_within_the_grace() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        let s = Scheduler::new(&config(vec![probe("hang")], 100, 0.0, 4), vec![log.clone()]).with_runner(sleeper(
            log.clone(),
            t0,
            Duration::from_secs(3600),
            false,
        ));
        let started = Instant::now();
        run_for(s, Duration::from_millis(50)).await;
        assert!(started.elapsed() <= Duration::from_millis(50) + SHUTDOWN_GRACE + Duration::from_millis(5));
        assert!(log.outcomes.lock().unwrap().is_empty(), "a cancelled run records nothing");
    }

    /// `sleeper`, except that every run of the probes named in `panics` panics in its task.
    pub(super) fn panicker(log: Arc<Log>, t0: Instant, panics: &'static [&'static str]) -> Runner {
        let sleep = sleeper(log, t0, Duration::from_millis(10), false);
        Arc::new(move |p: Arc<ProbeConfig>, ctx: ProbeContext| {
            if panics.contains(&p.name.as_str()) {
                Box::pin(async move { panic!("test: probe {} panics", p.name) })
            } else {
                sleep(p, ctx)
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_probe_ends_as_internal_panic_and_the_others_keep_running() {
        let log = Arc::new(Log::default());
        let t0 = Instant::now();
        let s = Scheduler::new(&config(vec![probe("boom"), probe("fine")], 100, 0.0, 4), vec![log.clone()])
            .with_runner(panicker(log.clone(), t0, &["boom"]))
            .with_backoff(None);
        run_for(s, Duration::from_millis(1050)).await;
        let boom = log.codes_of("boom");
        assert_eq!(boom.len(), 11, "the panicking probe keeps its grid: {boom:?}");
        assert!(boom.iter().all(|c| c == "internal/panic"), "{boom:?}");
        assert_eq!(log.codes_of("fine"), vec!["pass"; 11]);
    }

    #[test]
    fn backoff_grows_from_the_floor_to_the_cap_and_honours_retry_after() {
        let b = Backoff {
            floor: Duration::from_secs(2),
            jitter: 0.0,
            max_retry_after: Duration::from_secs(3600),
        };
        let i = Duration::from_secs(30);
        let s = |n, ra| b.delay(n, i, ra, 0.5).as_secs();
        assert_eq!((s(0, None), s(1, None), s(2, None), s(3, None)), (0, 2, 4, 8));
        assert_eq!(s(30, None), 240, "capped at 8 intervals");
        assert_eq!(s(1, Some(Duration::from_secs(120))), 120);
        assert_eq!(s(1, Some(Duration::from_secs(100_000))), 3600);
        let j = Backoff { jitter: 0.2, ..b };
        assert!(j.delay(3, i, None, 0.0) >= Duration::from_millis(6400));
        assert!(j.delay(3, i, None, 1.0) <= Duration::from_millis(9600));
    }

    #[test]
    fn ticks_stay_on_the_grid() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(grid_at_or_after(t, ms(100), t), t);
        assert_eq!(grid_at_or_after(t, ms(100), t + ms(350)), t + ms(400));
        assert_eq!(grid_at_or_after(t, ms(100), t + ms(200)), t + ms(200));
        assert_eq!(grid_at_or_after(t, ms(100), t + ms(201)), t + ms(300));
        assert_eq!(grid_at_or_after(t + ms(500), ms(100), t), t + ms(500));
        assert_eq!(first_offset(ms(1000), 0, 1, START_SPACING, 0.1, 0.999).as_millis(), 99);
    }

    #[test]
    fn a_grid_point_beyond_what_an_instant_holds_is_far_future_not_a_panic() {
        let t = Instant::now();
        let next = grid_at_or_after(t, Duration::MAX, t + Duration::from_millis(1));
        assert!(next >= t + FAR_FUTURE);
    }
}
