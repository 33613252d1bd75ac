//! `egress-probe run`: the daemon. Loads the config (or starts the `--demo` responder),
//! serves `/metrics`, `/probe`, `/healthz`, `/ready`, `/status`, and runs every probe on its
//! schedule until SIGTERM/SIGINT, then exits 0 within about a second.
//!
//! SIGHUP reloads the config file. A bad file keeps the running config and sets
//! `egress_probe_config_reload_success 0`; a good one replaces the whole "generation"
//! (scheduler, metric registry, status board) at once: the new scheduler starts, the server
//! switches to the new state, the old scheduler is told to stop. Counters restart from 0, which
//! Prometheus treats as a counter reset. `listen` changes need a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::RunArgs;
use crate::config::{self, Config};
use crate::metrics::EndpointCounters;
use crate::metrics::Metrics;
use crate::net::host_limit::HostLimiter;
use crate::probe;
use crate::push;
use crate::schedule::{LogSink, Scheduler, Sink, SHUTDOWN_GRACE};
use crate::server::{self, AppState, ProcessState, StatusBoard};
use crate::shutdown::{Shutdown, Signal, Signals};
use crate::web::WebSecurity;

use super::EXIT_OK;

/// Part of the 1 s stop budget (after [`SHUTDOWN_GRACE`]) for background releases.
const CLEANUP_GRACE: Duration = Duration::from_millis(150);

/// Where the endpoints listen when neither `--listen` nor `listen:` says.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9469";

/// How long the HTTP server may take to finish after the scheduler has stopped.
const SERVER_GRACE: Duration = Duration::from_millis(200);

/// One config's worth of running state: what the server reads and the scheduler feeding it.
struct Generation {
    state: Arc<AppState>,
    stop: Shutdown,
    scheduler: JoinHandle<()>,
    /// One remote_write delivery per `push:` receiver; they flush on `stop`.
    push: Vec<JoinHandle<()>>,
}

impl Generation {
    fn start(config: Config, process: Arc<ProcessState>) -> anyhow::Result<Generation> {
        let metrics = Arc::new(Metrics::new(&config).context("building the metric registry")?);
        let board = Arc::new(StatusBoard::new(&config));
        let sinks: Vec<Arc<dyn Sink>> = vec![metrics.clone(), board.clone(), Arc::new(LogSink)];
        let scheduler = Scheduler::new(&config, sinks).with_host_limiter(process.hosts.clone());
        let state = Arc::new(AppState {
            launcher: scheduler.launcher(),
            config: Arc::new(config),
            metrics,
            board,
            process,
        });
        let stop = Shutdown::new();
        let push = push::start(&state.config.push, state.config.proxy.as_ref(), &state.metrics, &stop);
        let scheduler = tokio::spawn(scheduler.run(stop.clone()));
        Ok(Generation {
            state,
            stop,
            scheduler,
            push,
        })
    }
}

/// Runs the subcommand; returns the exit code.
pub async fn main(args: RunArgs) -> anyhow::Result<u8> {
    // The demo's responder must outlive the daemon loop: keep it bound until we return.
    let (config, _demo) = match super::load_config("run", args.demo, args.config.as_deref()).await? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let web_file = args.web_config_file.clone();
    let security = match load_web(web_file.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("egress-probe run: {e}");
            return Ok(super::EXIT_USAGE);
        }
    };
    let listen: SocketAddr = match args.listen.or(config.listen) {
        Some(a) => a,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().unwrap_or(listen);
    let mut signals = Signals::install(true).context("installing the SIGTERM/SIGINT/SIGHUP handlers")?;

    let probes = config.probes.len();
    let (lifecycle_tx, mut lifecycle_rx) = tokio::sync::mpsc::channel::<server::ReloadRequest>(4);
    let process = Arc::new(ProcessState {
        hosts: Arc::new(HostLimiter::default()),
        counters: EndpointCounters::new().context("building the endpoint counters")?,
        listener: Default::default(),
        reload: args.web_enable_lifecycle.then_some(lifecycle_tx),
    });
    let mut current = Generation::start(config, process.clone())?;
    let (live_tx, live_rx) = watch::channel(current.state.clone());
    let (security_tx, security_rx) = watch::channel(security);
    let shutdown = Shutdown::new();
    let server = tokio::spawn(server::serve(listener, live_rx, security_rx, shutdown.clone()));
    tracing::info!(listen = %local, probes, version = env!("CARGO_PKG_VERSION"), "egress-probe running");

    loop {
        tokio::select! {
            signal = signals.recv() => {
                if signal != Signal::Reload {
                    break;
                }
                let _ = reload_all(args.config.as_deref(), web_file.clone(), &process, &mut current, &live_tx, &security_tx).await;
            }
            Some(done) = lifecycle_rx.recv() => {
                let result = reload_all(args.config.as_deref(), web_file.clone(), &process, &mut current, &live_tx, &security_tx).await;
                let _ = done.send(result);
            }
        }
    }
    tracing::info!(grace_ms = SHUTDOWN_GRACE.as_millis() as u64, "shutting down");
    shutdown.trigger();
    current.stop.trigger();
    // The push deliveries flush within push::FLUSH_GRACE of the stop, alongside the scheduler.
    let push_done = tokio::time::Instant::now() + push::FLUSH_GRACE;
    let _ = current.scheduler.await;
    let _ = tokio::time::timeout_at(push_done, futures::future::join_all(current.push)).await;
    match tokio::time::timeout(SERVER_GRACE, server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(_) => {}
        Err(_) => tracing::info!("HTTP server still busy at shutdown; closing it"),
    }
    // Whatever is left of the 1 s stop budget goes to background releases (ICE agents still
    // gathering), so their TURN allocations are freed rather than left to expire.
    let left = probe::cleanup::wait(CLEANUP_GRACE).await;
    if left > 0 {
        tracing::info!(left, "ICE agents still gathering at exit; their allocations expire on the server");
    }
    tracing::info!("stopped");
    Ok(EXIT_OK)
}

/// Reads the web config off the runtime (files are read once per load, bounded); none = open.
async fn load_web(path: Option<std::path::PathBuf>) -> Result<Arc<WebSecurity>, String> {
    let Some(path) = path else {
        return Ok(Arc::new(WebSecurity::default()));
    };
    let loaded = tokio::task::spawn_blocking(move || WebSecurity::load(&path))
        .await
        .map_err(|e| format!("loading the web config: {e}"))?
        .map_err(|e| e.to_string())?;
    if !loaded.ignored.is_empty() {
        tracing::warn!(settings = %loaded.ignored.join(", "), "web config settings accepted for compatibility and ignored");
    }
    Ok(Arc::new(loaded))
}

/// SIGHUP or `POST /-/reload`: the web config and the probe config again; each replaced only
/// when valid.
async fn reload_all(
    path: Option<&Path>,
    web: Option<std::path::PathBuf>,
    process: &Arc<ProcessState>,
    current: &mut Generation,
    live_tx: &watch::Sender<Arc<AppState>>,
    security_tx: &watch::Sender<Arc<WebSecurity>>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    if web.is_some() {
        match load_web(web).await {
            Ok(s) => {
                security_tx.send_replace(s);
            }
            Err(e) => {
                tracing::error!(problem = %e, "web config reload failed; keeping the running one");
                problems.push(e);
            }
        }
    }
    match reload(path, &current.state.metrics, &current.state.config, process.clone()).await {
        Ok(next) => {
            let old = std::mem::replace(current, next);
            live_tx.send_replace(current.state.clone());
            old.stop.trigger();
        }
        Err(e) => problems.push(e),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Loads the file again; a new generation when it is valid, else the problems (also recorded
/// on the running generation's metrics).
async fn reload(
    path: Option<&Path>,
    metrics: &Metrics,
    running: &config::Config,
    process: Arc<ProcessState>,
) -> Result<Generation, String> {
    let Some(path) = path else {
        tracing::info!("reload ignored: running the built-in demo config");
        return Err("running the built-in demo config; nothing to reload".into());
    };
    match config::load(path).await {
        Ok(mut c) => {
            let probes = c.probes.len();
            // A udp_ports probe whose host and ports did not change keeps its sweep.
            config::ports::keep_sweeps(&mut c.probes, &running.probes);
            match Generation::start(c, process) {
                Ok(g) => {
                    tracing::info!(probes, "config reloaded");
                    Ok(g)
                }
                Err(e) => {
                    metrics.config_loaded(false);
                    tracing::error!(error = %format!("{e:#}"), "config reload failed; keeping the running config");
                    Err(format!("{e:#}"))
                }
            }
        }
        Err(errors) => {
            metrics.config_loaded(false);
            for line in errors.to_string().lines() {
                tracing::error!(problem = line, "config reload failed; keeping the running config");
            }
            Err(errors.to_string())
        }
    }
}
