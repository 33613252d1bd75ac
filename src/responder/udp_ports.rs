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
//!
//! **Not a reflector.** A UDP echo answering anything is a loop-DoS amplifier
//! (CVE-2024-2169). The range sockets answer only the probe's own datagram (16 bytes, magic
//! `EPUP`, naming the socket's port) from a source port ≥ 1024, with the reply marker `EPUR`
//! that no echo of ours answers, and read into a 32-byte buffer (1024 sockets, 32 KiB, not
//! 64 MiB). The plain `udp_echo` must stay generic for media streams; it applies the same
//! source-port and reply-marker refusals (see `udp_echo`).
//!
//! **File descriptors.** Up to [`MAX_ECHO_PORTS`] sockets next to the other listeners
//! exceed the common soft `RLIMIT_NOFILE` of 1024, so [`bind`] raises the soft limit to the
//! hard one first and refuses to start, in a plain sentence, when even that is too few.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::config::PortRange;
use super::metrics::Counters;
use super::{bind_udp, udp_echo, ResponderError, Shutdown};

/// Most ports `udp_echo_ports` may bind (one socket each).
pub const MAX_ECHO_PORTS: u32 = 1024;

/// File descriptors kept free for everything else (listeners, connections, TURN relays).
const FD_HEADROOM: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when `needed` descriptors would not fit.
fn ensure_open_files(needed: u64) -> Result<(), ResponderError> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // Unknown limit: the binds themselves report EMFILE.
    }
    let (soft, hard): (u64, u64) = (lim.rlim_cur, lim.rlim_max);
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(ResponderError::Config(format!(
            "udp_echo_ports needs about {needed} open files (one socket per port plus the rest), but this process may open at most {hard} (hard RLIMIT_NOFILE); raise it (ulimit -Hn, LimitNOFILE= in the systemd unit) or give a smaller range"
        )));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads one rlimit we own; raising soft up to hard needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(ResponderError::Config(format!(
            "udp_echo_ports needs about {needed} open files but the soft limit is {soft} and raising it to {hard} failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    tracing::info!(from = soft, to = hard, "raised the open-file limit for udp_echo_ports");
    Ok(())
}

/// Binds every port of `range` on `ip` (all or nothing: a port already taken fails the start).
pub async fn bind(ip: IpAddr, range: PortRange) -> Result<Vec<UdpSocket>, ResponderError> {
    let count = u32::from(range.max) - u32::from(range.min) + 1;
    if count > MAX_ECHO_PORTS {
        return Err(ResponderError::Config(format!(
            "udp_echo_ports {}-{}: {count} ports, at most {MAX_ECHO_PORTS} (one socket each); for a whole media range, redirect it with nftables onto udp_echo (see docs/responder.md)",
            range.min, range.max
        )));
    }
    ensure_open_files(u64::from(count) + FD_HEADROOM)?;
    let mut sockets = Vec::with_capacity(count as usize);
    for port in range.min..=range.max {
        sockets.push(bind_udp("UDP echo range", SocketAddr::new(ip, port)).await?);
    }
    Ok(sockets)
}

/// Largest datagram read on a range socket: a probe datagram is 16 bytes, so anything
/// that fills this buffer is not one.
const READ_BUF: usize = 32;

/// Answers on every socket until shutdown: only a `kind: udp_ports` request naming the
/// socket's own port, from a source port ≥ 1024, with the reply marker (which no echo
/// answers). Anything else is dropped: this range is not a generic echo (see the module doc).
pub fn serve(sockets: Vec<UdpSocket>, counters: &Arc<Counters>, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
    sockets
        .into_iter()
        .map(|s| tokio::spawn(serve_one(s, counters.clone(), shutdown.clone())))
        .collect()
}

async fn serve_one(socket: UdpSocket, counters: Arc<Counters>, shutdown: Shutdown) {
    let own = socket.local_addr().ok().map(|a| a.port());
    let mut buf = [0u8; READ_BUF];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(_) => {
                    // An ICMP error queued by an earlier send; keep serving.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        if from.port() < udp_echo::LOWEST_SOURCE_PORT {
            continue;
        }
        let Some(reply) = udp_echo::answer_ports_probe(&buf[..n], own) else {
            continue;
        };
        if socket.send_to(&reply, from).await.is_ok() {
            counters.udp_echo_datagrams_total.inc();
        }
    }
}
