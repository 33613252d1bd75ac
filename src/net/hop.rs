//! One probe packet at a given TTL, and what came back: the building block of `kind: path`.
//!
//! Unprivileged on purpose: a UDP datagram or a TCP SYN from an ordinary socket with `IP_TTL`
//! (`IPV6_UNICAST_HOPS`) and `IP_RECVERR` (`IPV6_RECVERR`) set, the answer read from the
//! socket itself (a reply datagram, a completed handshake, a RST) or from its error queue (the
//! ICMP error and the router that sent it, see [`super::errqueue`]). No raw sockets, no
//! `CAP_NET_RAW`. Each attempt uses a fresh socket, so an answer can only belong to it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use super::errqueue::{self, IcmpError};

/// What one probe packet drew.
#[derive(Debug)]
pub enum HopAnswer {
    /// An ICMP error (time exceeded, unreachable, prohibited) and who sent it.
    Icmp(IcmpError),
    /// TCP: the handshake completed (the target accepts on that port).
    Connected,
    /// TCP: reset without any ICMP (the target, or something using its address).
    Reset,
    /// UDP: a datagram came back from this address.
    Datagram(IpAddr),
    /// The local host refused to send (e.g. EPERM from its own firewall) or another local error.
    Local(io::Error),
    /// Nothing before the wait ran out.
    Silence,
}

/// Sends one TCP SYN to `addr` with `ttl` and waits up to `until` for what comes back.
/// Returns the answer and the time from the send to it.
pub async fn tcp(addr: SocketAddr, ttl: u8, until: Instant) -> (HopAnswer, Duration) {
    let start = Instant::now();
    let fd = match tcp_socket(addr, ttl) {
        Ok(fd) => fd,
        Err(e) => return (HopAnswer::Local(e), start.elapsed()),
    };
    // SAFETY: the OwnedFd is moved into the AsyncFd and stays open, unchanged, while it lives.
    let afd = match unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE | Interest::ERROR) } {
        Ok(a) => a,
        Err(e) => return (HopAnswer::Local(e.into_parts().1), start.elapsed()),
    };
    let wait = async {
        // Bounded: each pass either returns or clears a readiness the kernel reported.
        loop {
            let mut guard = match afd.ready(Interest::WRITABLE | Interest::ERROR).await {
                Ok(g) => g,
                Err(e) => return HopAnswer::Local(e),
            };
            let raw = afd.get_ref().as_raw_fd();
            match so_error(raw) {
                Ok(0) => {
                    if guard.ready().is_writable() {
                        return HopAnswer::Connected;
                    }
                }
                Ok(code) => {
                    if let Some(icmp) = errqueue::read(raw) {
                        return HopAnswer::Icmp(icmp);
                    }
                    if code == libc::ECONNREFUSED {
                        return HopAnswer::Reset;
                    }
                    return HopAnswer::Local(io::Error::from_raw_os_error(code));
                }
                Err(e) => return HopAnswer::Local(e),
            }
            guard.clear_ready();
        }
    };
    match tokio::time::timeout_at(until, wait).await {
        Ok(a) => (a, start.elapsed()),
        Err(_) => (HopAnswer::Silence, start.elapsed()),
    }
}

/// A non-blocking TCP socket with TTL and IP_RECVERR set, connect started.
fn tcp_socket(addr: SocketAddr, ttl: u8) -> io::Result<OwnedFd> {
    let v6 = addr.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    errqueue::enable(fd.as_raw_fd(), v6)?;
    errqueue::set_ttl(fd.as_raw_fd(), v6, ttl)?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes for the call.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(fd)
}

fn so_error(fd: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: value/len are live and sized for SO_ERROR's int.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, zero is a valid start.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Sends one UDP datagram (`payload`) to `addr` with `ttl` and waits up to `until` for an ICMP
/// error or a reply datagram.
pub async fn udp(addr: SocketAddr, ttl: u8, payload: &[u8], until: Instant) -> (HopAnswer, Duration) {
    let start = Instant::now();
    let sock = match udp_socket(addr, ttl) {
        Ok(s) => s,
        Err(e) => return (HopAnswer::Local(e), start.elapsed()),
    };
    // SAFETY: the socket is moved into the AsyncFd and stays open, unchanged, while it lives.
    let afd = match unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::ERROR) } {
        Ok(a) => a,
        Err(e) => return (HopAnswer::Local(e.into_parts().1), start.elapsed()),
    };
    let start = Instant::now();
    if let Err(e) = afd.get_ref().send(payload) {
        return (HopAnswer::Local(e), start.elapsed());
    }
    let wait = async {
        let mut buf = [0u8; 1500];
        loop {
            let mut guard = match afd.ready(Interest::READABLE | Interest::ERROR).await {
                Ok(g) => g,
                Err(e) => return HopAnswer::Local(e),
            };
            if let Some(icmp) = errqueue::read(afd.get_ref().as_raw_fd()) {
                return HopAnswer::Icmp(icmp);
            }
            match afd.get_ref().recv_from(&mut buf) {
                Ok((_, from)) => return HopAnswer::Datagram(from.ip()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                // The pending error was reported by recv; the queue entry is read next pass.
                Err(_) => {
                    if let Some(icmp) = errqueue::read(afd.get_ref().as_raw_fd()) {
                        return HopAnswer::Icmp(icmp);
                    }
                    guard.clear_ready();
                }
            }
        }
    };
    match tokio::time::timeout_at(until, wait).await {
        Ok(a) => (a, start.elapsed()),
        Err(_) => (HopAnswer::Silence, start.elapsed()),
    }
}

fn udp_socket(addr: SocketAddr, ttl: u8) -> io::Result<std::net::UdpSocket> {
    let v6 = addr.is_ipv6();
    let local: SocketAddr = if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(local)?;
    sock.set_nonblocking(true)?;
    errqueue::enable(sock.as_raw_fd(), v6)?;
    errqueue::set_ttl(sock.as_raw_fd(), v6, ttl)?;
    sock.connect(addr)?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_loopback_tcp_port_answers_with_a_reset_from_the_target() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (a, _) = tcp(port, 64, Instant::now() + Duration::from_secs(2)).await;
        assert!(matches!(a, HopAnswer::Reset), "{a:?}");
    }

    #[tokio::test]
    async fn an_open_loopback_tcp_port_completes_the_handshake() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, _) = tcp(l.local_addr().unwrap(), 64, Instant::now() + Duration::from_secs(2)).await;
        assert!(matches!(a, HopAnswer::Connected), "{a:?}");
    }

    #[tokio::test]
    async fn a_closed_loopback_udp_port_answers_port_unreachable() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (a, _) = udp(port, 64, b"x", Instant::now() + Duration::from_secs(2)).await;
        match a {
            HopAnswer::Icmp(e) => {
                assert_eq!(e.word(), "port_unreachable");
                assert_eq!(e.offender, Some(port.ip()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn ipv6_answers_come_from_the_error_queue_too() {
        let tcp_port = std::net::TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap();
        let (a, _) = tcp(tcp_port, 64, Instant::now() + Duration::from_secs(2)).await;
        assert!(matches!(a, HopAnswer::Reset), "{a:?}");
        let udp_port = std::net::UdpSocket::bind("[::1]:0").unwrap().local_addr().unwrap();
        let (a, _) = udp(udp_port, 64, b"x", Instant::now() + Duration::from_secs(2)).await;
        match a {
            HopAnswer::Icmp(e) => {
                assert!(e.v6);
                assert_eq!(e.word(), "port_unreachable");
                assert_eq!(e.offender, Some(udp_port.ip()));
            }
            other => panic!("{other:?}"),
        }
    }
}
