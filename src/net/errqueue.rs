//! Who answered: the socket error queue (`IP_RECVERR` / `IPV6_RECVERR`), read without raw
//! sockets or privileges.
//!
//! With `IP_RECVERR` set, the kernel keeps every ICMP error that concerns a UDP or TCP socket
//! (time exceeded, port/host unreachable, administratively prohibited) on the socket's error
//! queue, with the ICMP type/code and the *offender*: the address of the router or host that
//! sent it. `recvmsg(MSG_ERRQUEUE)` reads it back. That is what `tracepath` and `traceroute -M
//! tcpconn` use, and what lets a `connect/refused` say "refused by 10.0.0.1 (not the server)".
//! A TCP RST leaves nothing there: an empty queue after `ECONNREFUSED` means the target itself
//! (or something answering with its address) reset the connection.
//!
//! Linux only (the libc calls are behind `cfg(target_os = "linux")`; elsewhere nothing is ever
//! queued and every answer reads as "no ICMP seen").

use std::net::IpAddr;
#[cfg(target_os = "linux")]
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

/// One ICMP error read from a socket's error queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// The router or host that sent the ICMP message.
    pub offender: Option<IpAddr>,
    /// ICMP (v4) or ICMPv6 type.
    pub icmp_type: u8,
    pub code: u8,
    /// Whether it came as ICMPv6.
    pub v6: bool,
    /// The errno the kernel mapped it to.
    pub errno: i32,
}

/// What an ICMP error says, in the words of a path report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    /// TTL / hop limit ran out at a router: the hop answered, the path goes on.
    TimeExceeded,
    /// Port unreachable: nothing listens (from the target) or a REJECT rule (from elsewhere).
    PortUnreachable,
    /// Administratively prohibited (a firewall's REJECT).
    Prohibited,
    /// Host or network unreachable (no route further on).
    Unreachable,
    /// Anything else (parameter problem, fragmentation needed...).
    Other,
}

impl IcmpError {
    /// Classifies the type/code.
    pub fn kind(&self) -> IcmpKind {
        match (self.v6, self.icmp_type, self.code) {
            (false, 11, _) | (true, 3, _) => IcmpKind::TimeExceeded,
            (false, 3, 3) | (true, 1, 4) => IcmpKind::PortUnreachable,
            (false, 3, 9 | 10 | 13) | (true, 1, 1) => IcmpKind::Prohibited,
            (false, 3, _) | (true, 1, _) => IcmpKind::Unreachable,
            _ => IcmpKind::Other,
        }
    }

    /// A short word for JSON and tables: `time_exceeded`, `port_unreachable`, ...
    pub fn word(&self) -> &'static str {
        match self.kind() {
            IcmpKind::TimeExceeded => "time_exceeded",
            IcmpKind::PortUnreachable => "port_unreachable",
            IcmpKind::Prohibited => "admin_prohibited",
            IcmpKind::Unreachable => "unreachable",
            IcmpKind::Other => "icmp_other",
        }
    }
}

/// Asks the kernel to queue ICMP errors on `fd` (`IP_RECVERR`, and `IPV6_RECVERR` for v6).
pub fn enable(fd: RawFd, v6: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if v6 {
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
        } else {
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, v6);
        Ok(())
    }
}

/// Stops queueing ICMP errors on `fd` (a connected TCP socket must not keep `IP_RECVERR`: it
/// turns transient ICMP errors on an established connection into resets).
pub fn disable(fd: RawFd, v6: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if v6 {
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 0)
        } else {
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 0)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, v6);
        Ok(())
    }
}

/// Sets the TTL (`IP_TTL`) or hop limit (`IPV6_UNICAST_HOPS`) of packets sent on `fd`.
pub fn set_ttl(fd: RawFd, v6: bool, ttl: u8) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if v6 {
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, i32::from(ttl))
        } else {
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TTL, i32::from(ttl))
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, v6, ttl);
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: `value` lives for the call; the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads one queued ICMP error from `fd` without blocking; `None` when the queue is empty.
/// Errors that did not come from ICMP (local errors) are skipped.
pub fn read(fd: RawFd) -> Option<IcmpError> {
    #[cfg(target_os = "linux")]
    {
        // Bounded: a queue never holds more than a few entries per probe packet.
        for _ in 0..16 {
            match read_one(fd) {
                Some(Some(e)) => return Some(e),
                Some(None) => continue,
                None => return None,
            }
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

/// `None`: queue empty; `Some(None)`: an entry that is not an ICMP error.
#[cfg(target_os = "linux")]
fn read_one(fd: RawFd) -> Option<Option<IcmpError>> {
    let mut data = [0u8; 512];
    let mut control = [0u64; 64]; // 512 bytes, aligned for cmsghdr
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: fd is a socket owned by the caller; msg points at live buffers.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let v4 = c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR;
            let v6 = c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_RECVERR;
            if v4 || v6 {
                let ee_ptr = libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err;
                let ee = std::ptr::read_unaligned(ee_ptr);
                if ee.ee_origin != libc::SO_EE_ORIGIN_ICMP && ee.ee_origin != libc::SO_EE_ORIGIN_ICMP6 {
                    return Some(None);
                }
                let offender = offender_of(ee_ptr);
                return Some(Some(IcmpError {
                    offender,
                    icmp_type: ee.ee_type,
                    code: ee.ee_code,
                    v6: ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6,
                    errno: ee.ee_errno as i32,
                }));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Some(None)
}

/// `SO_EE_OFFENDER`: the sockaddr right after the `sock_extended_err`.
///
/// # Safety
/// `ee` must point into a control message the kernel filled with an `IP(V6)_RECVERR` entry.
#[cfg(target_os = "linux")]
unsafe fn offender_of(ee: *const libc::sock_extended_err) -> Option<IpAddr> {
    let sa = ee.add(1) as *const libc::sockaddr;
    let family = std::ptr::read_unaligned(std::ptr::addr_of!((*sa).sa_family));
    match i32::from(family) {
        libc::AF_INET => {
            let sin = std::ptr::read_unaligned(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            let sin6 = std::ptr::read_unaligned(sa as *const libc::sockaddr_in6);
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v6: bool, t: u8, c: u8) -> IcmpError {
        IcmpError {
            offender: None,
            icmp_type: t,
            code: c,
            v6,
            errno: 0,
        }
    }

    #[test]
    fn icmp_types_read_as_path_words() {
        assert_eq!(e(false, 11, 0).word(), "time_exceeded");
        assert_eq!(e(false, 3, 3).word(), "port_unreachable");
        assert_eq!(e(false, 3, 13).word(), "admin_prohibited");
        assert_eq!(e(false, 3, 1).word(), "unreachable");
        assert_eq!(e(true, 3, 0).word(), "time_exceeded");
        assert_eq!(e(true, 1, 4).word(), "port_unreachable");
        assert_eq!(e(true, 1, 1).word(), "admin_prohibited");
    }

    #[test]
    fn a_udp_send_to_a_closed_loopback_port_queues_port_unreachable_from_the_target() {
        use std::os::fd::AsRawFd;
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(s.as_raw_fd(), false).unwrap();
        s.send_to(b"x", target).unwrap();
        let mut got = None;
        for _ in 0..100 {
            got = read(s.as_raw_fd());
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let got = got.expect("an ICMP port unreachable is queued");
        assert_eq!(got.kind(), IcmpKind::PortUnreachable);
        assert_eq!(got.offender, Some(target.ip()));
    }
}
