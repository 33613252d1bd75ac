//! HTTP CONNECT through an explicit proxy. PROVISIONAL stub: returns a config fault until
//! the signalling issue (3) implements CONNECT, 407 → `proxy/auth`, status → `proxy/status_N`.

use tokio::net::TcpStream;

use crate::config::{HostPort, ProxyUrl};
use crate::probe::{Failure, Phase, Reason, Run};

/// Opens a tunnel to `target` through `proxy`; every failure is in phase `proxy`.
pub async fn connect_via(_run: &mut Run, proxy: &ProxyUrl, target: &HostPort) -> Result<TcpStream, Failure> {
    Err(Failure::new(
        Phase::Proxy,
        Reason::Config,
        format!("proxy {}:{} for {target}: HTTP CONNECT not implemented yet", proxy.host, proxy.port),
    ))
}

/// Proxy from `HTTPS_PROXY`/`https_proxy` (for `proxy: env`). PROVISIONAL.
pub fn from_env() -> Option<ProxyUrl> {
    None
}
