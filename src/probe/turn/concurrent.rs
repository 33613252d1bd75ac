//! `concurrent: N` on turn probes: N allocations held at once, to make a per-user quota
//! (coturn's `user-quota`, `total-quota`, a platform's per-tenant limit) show up as a number.
//!
//! Shape: connection 1 is opened on the probe's own run (its `resolve`, `connect`/`proxy` and
//! `tls` phases are the report's); connections 2..N are then opened in parallel on the server
//! address connection 1 reached (through the same proxy when there is one), each its own
//! 5-tuple, so every one is its own allocation. Then all N Allocates go out together, each
//! with its own 401 challenge round; phase `allocate` lasts until every one is decided, so all
//! granted allocations exist at the same time. No relay round trip is run (`count`, `size`,
//! `channel` are refused by the config check with `concurrent > 1`).
//!
//! The report: `detail.concurrent` (requested, established; exported as
//! `egress_probe_concurrent_established`, the same gauge as websocket's `concurrent`) and,
//! when fewer than N were granted, the first refusal in connection order as the run's failure
//! (`allocate/quota` for 486 Allocation Quota Reached, `allocate/capacity` for 508,
//! `connect/refused`...), its message naming the connection and the count.
//!
//! Every allocation that may exist is released with Refresh(lifetime 0) and the answer
//! awaited, in parallel, also when the run failed, within the slice of the timeout kept for
//! it ([`super::cleanup_reserve`]); `detail.relay.deallocated` is true only if every one
//! was confirmed.

use std::time::SystemTime;

use futures::future::join_all;
use tokio::time::Instant;

use crate::config::TurnSpec;
use crate::net::stun_conn::{self, OpenOptions};
use crate::outcome::details::{ConcurrentDetails, RelayDetails};
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

use super::{cleanup_reserve, finish_with_release, ProbeContext, TurnClient};

/// Runs a turn probe with `spec.concurrent` allocations at once.
pub(super) async fn probe(spec: &TurnSpec, ctx: &ProbeContext) -> Outcome {
    let deadline = ctx.deadline;
    let n = spec.concurrent.max(1);
    let reserve = cleanup_reserve(deadline.saturating_duration_since(Instant::now()));
    let mut run = Run::new(deadline - reserve);
    run.detail.relay = Some(RelayDetails {
        transport: spec.server.transport_label().to_string(),
        ..Default::default()
    });
    let mut clients: Vec<TurnClient> = Vec::with_capacity(n as usize);
    let result = allocate_all(&mut run, spec, ctx, n, &mut clients).await;
    let established = clients.iter().filter(|c| c.allocation().is_some()).count() as u32;
    run.detail.concurrent = Some(ConcurrentDetails {
        requested: n,
        established,
        ..Default::default()
    });

    // Release every allocation that may exist, in parallel, bounded by the real deadline.
    let started = Instant::now();
    let releases = tokio::time::timeout_at(
        deadline,
        join_all(clients.iter_mut().filter(|c| c.needs_deallocate()).map(|c| c.deallocate(deadline))),
    )
    .await;
    let close_time = started.elapsed();
    let unconfirmed: Vec<Fault> = match releases {
        Ok(all) => all.into_iter().filter_map(Result::err).collect(),
        Err(_) => vec![Fault::new(Reason::Timeout, "no answer to Refresh(lifetime 0) before the deadline")],
    };
    let _ = tokio::time::timeout_at(deadline, join_all(clients.iter_mut().map(|c| c.shutdown()))).await;
    drop(clients);
    let released = match unconfirmed.first() {
        None => Ok(()),
        Some(f) => Err(Fault::new(
            f.reason.clone(),
            format!("deallocation not confirmed for {} allocation(s): {}", unconfirmed.len(), f.message),
        )),
    };
    if let Some(r) = run.detail.relay.as_mut() {
        r.deallocated = released.is_ok() && established > 0;
    }
    finish_with_release(run, result, released, close_time)
}

/// Opens the N connections and sends the N Allocates at once. Every client that got as far as
/// an Allocate is left in `clients` for the release; `Err` is the first refusal.
async fn allocate_all(run: &mut Run, spec: &TurnSpec, ctx: &ProbeContext, n: u32, clients: &mut Vec<TurnClient>) -> Result<(), Failure> {
    let url = &spec.server;
    let proxy = ctx.proxy_for(&url.host_port());
    let opts = OpenOptions {
        tls: &spec.tls,
        proxy,
        fixed: None,
        unconnected_udp: false,
    };
    let until = run.deadline();
    let numbered = |i: u32, f: Failure| Failure::new(f.phase, f.reason, format!("allocation {i} of {n}: {}", f.message));

    // Connection 1 on the probe's run: its phases are the report's.
    let (conn, server) = stun_conn::open(run, url, opts).await.map_err(|f| numbered(1, f))?;
    let (user, pass) = spec.credentials.resolve(SystemTime::now());
    // Connections 2..N in parallel, to the same server address (or through the same proxy).
    let opts_rest = OpenOptions {
        fixed: server,
        proxy: if server.is_some() { None } else { proxy },
        ..opts
    };
    let rest = join_all((2..=n).map(|i| async move {
        let mut side = Run::new(until);
        stun_conn::open(&mut side, url, opts_rest)
            .await
            .map(|(c, _)| c)
            .map_err(|f| numbered(i, f))
    }))
    .await;
    // Index in `clients` → connection number, and the failures of connections that never opened.
    let mut numbers = vec![1u32];
    let mut failures: Vec<(u32, Failure)> = Vec::new();
    clients.push(TurnClient::new(conn, user.clone(), pass.clone()));
    for (i, r) in (2..=n).zip(rest) {
        match r {
            Ok(c) => {
                numbers.push(i);
                clients.push(TurnClient::new(c, user.clone(), pass.clone()));
            }
            Err(f) => failures.push((i, f)),
        }
    }

    // All Allocates at once, each with its own 401 round.
    let started = Instant::now();
    let answers = join_all(clients.iter_mut().map(|c| async move {
        let t = Instant::now();
        let r = tokio::time::timeout_at(until, c.allocate(until)).await;
        let r = r.unwrap_or_else(|_| Err(Fault::new(Reason::Timeout, "no answer to Allocate within the probe timeout")));
        (r, t.elapsed())
    }))
    .await;
    run.record(Phase::Allocate, started.elapsed());
    for ((r, took), &i) in answers.into_iter().zip(&numbers) {
        match r {
            Ok(a) if i == 1 => {
                if let Some(d) = run.detail.relay.as_mut() {
                    d.relayed = Some(a.relayed);
                    d.mapped = a.mapped;
                    d.allocate = Some(took);
                }
            }
            Ok(_) => {}
            Err(f) => failures.push((i, f.at(Phase::Allocate))),
        }
    }
    let established = clients.iter().filter(|c| c.allocation().is_some()).count();
    match reported(failures) {
        None => Ok(()),
        Some((i, f)) => {
            let message = if f.message.starts_with("allocation ") {
                f.message
            } else {
                format!("allocation {i} of {n}: {}", f.message)
            };
            Err(Failure::new(
                f.phase,
                f.reason,
                format!("{message} ({established} of {n} established at once)"),
            ))
        }
    }
}

/// The failure a concurrent run reports: a server's refusal (486 quota, 508 capacity) is the
/// finding a cap needs, so it wins over a lower-numbered connection's timeout or connect
/// error; among equals, the lowest connection number.
fn reported(mut failures: Vec<(u32, Failure)>) -> Option<(u32, Failure)> {
    failures.sort_by_key(|(i, f)| (!matches!(f.reason, Reason::Quota | Reason::Capacity), *i));
    failures.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refusal_is_reported_over_an_earlier_connections_timeout() {
        let f = |phase, reason| Failure::new(phase, reason, "x");
        let got = reported(vec![
            (5, f(Phase::Allocate, Reason::Quota)),
            (2, f(Phase::Connect, Reason::Timeout)),
            (6, f(Phase::Allocate, Reason::Capacity)),
        ]);
        assert_eq!(got.map(|(i, f)| (i, f.code())), Some((5, "allocate/quota".to_string())));
        let got = reported(vec![
            (4, f(Phase::Allocate, Reason::Timeout)),
            (3, f(Phase::Connect, Reason::Refused)),
        ]);
        assert_eq!(got.map(|(i, _)| i), Some(3), "no refusal: the lowest number");
    }
}
