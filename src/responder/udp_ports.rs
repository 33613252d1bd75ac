//! The echo for `kind: udp_ports`: answers datagrams on a range of UDP ports, from the port
//! they were sent to.
//!
//! A vendor's media range is up to 49,152 ports (`16384-65535`); a socket per port is not an
//! option (file descriptors, memory, and a responder that fails to start when one port is
//! taken). Two ways, both supported and documented in `docs/responder.md`:
//!
//! 1. **A bounded range of sockets**, `udp_echo_ports: 20000-20999` (at most
//!    [`MAX_ECHO_PORTS`] ports): one socket per port, each served by the ordinary UDP echo
//!    (`udp_echo::serve`). Enough to test a sub-range, or a sample of the vendor's range
//!    configured as the probe's `ports:`.
//! 2. **The whole range onto one socket** with an nftables `redirect` in the responder host's
//!    `prerouting` (`udp dport 16384-65535 redirect to :3479`), where the ordinary `udp_echo`
//!    listens. The echo needs nothing special to answer "from the original port": the
//!    redirect is a DNAT, so conntrack keeps the original tuple and rewrites the *reply's*
//!    source port back to the port the client sent to. The echo only has to send its answer
//!    from the socket that received the datagram to the datagram's source, which it does.
//!    That is why we do not read the original destination (`IP_RECVORIGDSTADDR`) or use
//!    `IP_PKTINFO`: those are for a transparent proxy (TPROXY), where no NAT state exists and
//!    the answering socket would have to bind the original port itself.
//!    `tests/udp_ports.rs` checks this path on a real kernel.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::config::PortRange;
use super::metrics::Counters;
use super::{bind_udp, ResponderError, Shutdown};

/// Most ports `udp_echo_ports` may bind (one socket each).
pub const MAX_ECHO_PORTS: u32 = 1024;

/// Binds every port of `range` on `ip` (all or nothing: a port already taken fails the start).
pub async fn bind(ip: IpAddr, range: PortRange) -> Result<Vec<UdpSocket>, ResponderError> {
    let count = u32::from(range.max) - u32::from(range.min) + 1;
    if count > MAX_ECHO_PORTS {
        return Err(ResponderError::Config(format!(
            "udp_echo_ports {}-{}: {count} ports, at most {MAX_ECHO_PORTS} (one socket each); for a whole media range, redirect it with nftables onto udp_echo (see docs/responder.md)",
            range.min, range.max
        )));
    }
    let mut sockets = Vec::with_capacity(count as usize);
    for port in range.min..=range.max {
        sockets.push(bind_udp("UDP echo range", SocketAddr::new(ip, port)).await?);
    }
    Ok(sockets)
}

/// Echoes on every socket until shutdown.
pub fn serve(sockets: Vec<UdpSocket>, counters: &Arc<Counters>, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
    sockets
        .into_iter()
        .map(|s| tokio::spawn(super::udp_echo::serve(s, counters.clone(), shutdown.clone())))
        .collect()
}
