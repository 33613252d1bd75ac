//! `kind: tls`: does a TLS handshake with `target` succeed, and with what? Phases `resolve`,
//! `connect`, `tls`.
//!
//! Besides pass/fail it reports what a network team needs to spot interception and expiry:
//! negotiated version and ALPN, leaf subject and issuer, the earliest `notAfter` in the chain,
//! and whether a configured pin matched (`tls/pin_mismatch` on a trusted chain is the sign of a
//! TLS-inspecting proxy). The session is ended with close_notify and a FIN.

use std::net::SocketAddr;

use tokio::time::Instant;

use crate::config::{AddressMode, TlsSpec};
use crate::net::{self, TlsClient};

use super::{per_address, ProbeContext};
use crate::outcome::{Failure, Outcome, Phase, Run};

/// Runs one tls probe.
pub async fn probe(spec: &TlsSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = match spec.addresses {
        AddressMode::First => first(&mut run, spec, ctx).await,
        AddressMode::All => all(&mut run, spec).await,
    };
    run.finish(result)
}

fn client(spec: &TlsSpec) -> Result<TlsClient, Failure> {
    TlsClient::new(&spec.tls, &spec.target.host, &[]).map_err(|f| f.at(Phase::Tls))
}

async fn first(run: &mut Run, spec: &TlsSpec, ctx: &ProbeContext) -> Result<(), Failure> {
    // Build the client first: an unreadable ca_file is a config problem, not a network one.
    let client = client(spec)?;
    let dialed = net::dial(run, &spec.target, ctx.proxy_for(&spec.target)).await?;
    let stream = net::handshake(run, &client, dialed.stream).await?;
    net::tls::close(stream, run.deadline()).await;
    Ok(())
}

/// `addresses: all`: one connect + handshake per resolved address, each with its own client.
/// The run's `detail.tls` is the address whose chain expires first (what the expiry alert needs).
async fn all(run: &mut Run, spec: &TlsSpec) -> Result<(), Failure> {
    client(spec)?;
    let result = per_address(run, &spec.target, |addr, deadline| one_address(spec, addr, deadline)).await;
    run.detail.tls = run
        .detail
        .per_address
        .iter()
        .filter_map(|a| a.tls.clone())
        .min_by_key(|t| t.earliest_expiry_unix.unwrap_or(i64::MAX));
    result
}

async fn one_address(spec: &TlsSpec, addr: SocketAddr, deadline: Instant) -> Outcome {
    let mut run = Run::new(deadline);
    let result = async {
        let client = client(spec)?;
        let stream = net::connect(&mut run, addr).await?;
        let stream = net::handshake(&mut run, &client, stream).await?;
        net::tls::close(stream, deadline).await;
        Ok(())
    }
    .await;
    run.finish(result)
}
