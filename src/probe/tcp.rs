//! `kind: tcp`: can a TCP connection to `target` be opened? Phases `resolve`, `connect`.
//!
//! The answer a network team needs is *how* it fails: `connect/timeout` (SYN silently dropped),
//! `connect/refused` (RST: a REJECT rule or nothing listening), `connect/unreachable` (no route
//! or ICMP unreachable). With `addresses: all` every resolved address is connected separately
//! and reported in `detail.per_address`. The connection is closed with a FIN right after.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{AddressMode, TcpSpec};
use crate::net;

use super::{per_address, ProbeContext};
use crate::outcome::{Failure, Outcome, Run};

/// Runs one tcp probe.
pub async fn probe(spec: &TcpSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = match spec.addresses {
        AddressMode::First => first(&mut run, spec, ctx).await,
        AddressMode::All => per_address(&mut run, &spec.target, one_address).await,
    };
    run.finish(result)
}

async fn first(run: &mut Run, spec: &TcpSpec, ctx: &ProbeContext) -> Result<(), Failure> {
    let dialed = net::dial(run, &spec.target, ctx.proxy_for(&spec.target)).await?;
    close(dialed.stream, run.deadline()).await;
    Ok(())
}

/// One address of `addresses: all`: its own run (connect only; resolution was shared).
async fn one_address(addr: SocketAddr, deadline: Instant) -> Outcome {
    let mut run = Run::new(deadline);
    let result = match net::connect(&mut run, addr).await {
        Ok(stream) => {
            close(stream, deadline).await;
            Ok(())
        }
        Err(f) => Err(f),
    };
    run.finish(result)
}

/// Sends FIN and drops the socket; bounded by the deadline, never fails the probe.
async fn close(mut stream: TcpStream, deadline: Instant) {
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
}
