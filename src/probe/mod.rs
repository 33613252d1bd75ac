//! Probes: one file per protocol, all returning the same [`Outcome`].
//!
//! Protocol code knows nothing of Prometheus, the scheduler or the HTTP server: it gets a
//! spec and a [`ProbeContext`], and reports phases, a reason on failure, and details.
//!
//! Layer: imports `config`, `net` and `outcome` only (never `schedule`, `server`, `metrics`,
//! `report` or `commands`; `tests/layers.rs` enforces it).

pub mod cleanup;

pub mod dns;
pub mod http;
pub mod ice;
pub mod media;
pub mod oauth2;
pub mod path;
pub mod session;
pub mod stun;
pub mod tcp;
pub mod tls;
pub mod turn;
pub mod udp_ports;
pub mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{HostPort, ProbeSpec, ProxySetting, ProxyUrl};
use crate::outcome::{details, Failure, Outcome, Phase, Reason, Run};

/// What a probe run needs besides its spec: when it must end and how to reach the network.
#[derive(Clone, Debug)]
pub struct ProbeContext {
    /// Nothing the probe awaits may outlive this.
    pub deadline: Instant,
    /// HTTP CONNECT proxy in effect for this probe, already resolved from config/env.
    pub proxy: Option<ProxyUrl>,
}

impl ProbeContext {
    /// A context whose deadline is `timeout` from now.
    pub fn with_timeout(timeout: Duration, proxy: Option<ProxyUrl>) -> ProbeContext {
        ProbeContext {
            deadline: Instant::now() + timeout,
            proxy,
        }
    }

    /// The proxy for `target`, or `None` when `NO_PROXY`/`no_proxy` excludes it (curl's rules,
    /// see [`crate::net::proxy::NoProxy`]; applied to configured and `env` proxies alike).
    pub fn proxy_for(&self, target: &HostPort) -> Option<&ProxyUrl> {
        let proxy = self.proxy.as_ref()?;
        if crate::net::proxy::bypass(target) {
            return None;
        }
        Some(proxy)
    }
}

/// Picks the proxy in effect: the probe's own setting, else the top-level one.
pub fn effective_proxy(top: Option<&ProxySetting>, probe: Option<&ProxySetting>) -> Option<ProxyUrl> {
    match probe.or(top) {
        None | Some(ProxySetting::None) => None,
        Some(ProxySetting::Url(u)) => Some(u.clone()),
        Some(ProxySetting::Env) => crate::net::proxy::from_env(),
    }
}

/// How long past its deadline [`run`] lets a probe go before cancelling it as overrun.
pub const OVERRUN_GRACE: Duration = Duration::from_millis(250);

/// Runs one probe of any kind to completion (never past `ctx.deadline` + [`OVERRUN_GRACE`]).
pub async fn run(spec: &ProbeSpec, ctx: &ProbeContext) -> Outcome {
    // The larger probes' futures (TURN with a media stream, ICE, sessions: tens of KB in a
    // debug build) live on the heap, so `run`'s own future stays the size of a TCP/TLS/HTTP
    // probe's and a caller joining several runs on one thread's stack does not overflow it.
    let fut = async {
        match spec {
            ProbeSpec::Dns(s) => dns::probe(s, ctx).await,
            ProbeSpec::Tcp(s) => tcp::probe(s, ctx).await,
            ProbeSpec::Tls(s) => tls::probe(s, ctx).await,
            ProbeSpec::Http(s) => http::probe(s, ctx).await,
            ProbeSpec::Websocket(s) => Box::pin(websocket::probe(s, ctx)).await,
            ProbeSpec::Stun(s) => Box::pin(stun::probe(s, ctx)).await,
            ProbeSpec::Turn(s) => Box::pin(turn::probe(s, ctx)).await,
            ProbeSpec::Ice(s) => Box::pin(ice::probe(s, ctx)).await,
            ProbeSpec::Session(s) => Box::pin(session::probe(s, ctx)).await,
            ProbeSpec::Path(s) => Box::pin(path::probe(s, ctx)).await,
            ProbeSpec::UdpPorts(s) => Box::pin(udp_ports::probe(s, ctx)).await,
            ProbeSpec::Media(s) => Box::pin(media::probe(s, ctx)).await,
        }
    };
    bounded(ctx.deadline, fut).await
}

/// Belt and braces: every probe bounds its own awaits, but a bug must not hang the daemon.
/// A probe still running [`OVERRUN_GRACE`] after `deadline` is dropped (closing its sockets)
/// and reads `internal/overrun`: the program's failure, not the network's.
async fn bounded(deadline: Instant, fut: impl Future<Output = Outcome>) -> Outcome {
    match tokio::time::timeout_at(deadline + OVERRUN_GRACE, fut).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::failed_before_start(Failure::new(
            Phase::Internal,
            Reason::Overrun,
            "probe overran its deadline and was cancelled",
        )),
    }
}

/// `addresses: all`: resolves `target` once, then runs `each` for every address
/// concurrently (same deadline), recording one [`details::AddressResult`] per address.
/// The run fails if any address fails (one bad relay in a pool is the intermittent 15%),
/// and reports the first failing address's phase and reason.
pub async fn per_address<F, Fut>(run: &mut Run, target: &HostPort, each: F) -> Result<(), Failure>
where
    F: Fn(SocketAddr, Instant) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let addrs = crate::net::resolve(run, target).await?;
    let deadline = run.deadline();
    let outcomes = futures::future::join_all(addrs.iter().map(|a| each(*a, deadline))).await;
    let mut first_failure = None;
    for (addr, o) in addrs.into_iter().zip(outcomes) {
        if first_failure.is_none() {
            if let Some(f) = &o.failure {
                first_failure = Some(Failure::new(f.phase, f.reason.clone(), format!("{addr}: {}", f.message)));
            }
        }
        run.detail.per_address.push(details::AddressResult {
            address: addr,
            success: o.success,
            failure: o.failure,
            total: o.total,
            tls: o.detail.tls,
        });
    }
    match first_failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_overruns_its_deadline_is_cancelled_as_internal_overrun() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        let out = bounded(deadline, async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Outcome::default()
        })
        .await;
        let f = out.failure.expect("an overrun fails the run");
        assert_eq!(f.code(), "internal/overrun");
        assert_eq!(start.elapsed(), Duration::from_millis(100) + OVERRUN_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_ends_in_time_keeps_its_own_outcome() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let out = bounded(deadline, async {
            tokio::time::sleep(Duration::from_millis(90)).await;
            Outcome::failed_before_start(Failure::new(Phase::Connect, Reason::Refused, "closed port"))
        })
        .await;
        assert_eq!(out.failure.map(|f| f.code()).as_deref(), Some("connect/refused"));
    }
}
