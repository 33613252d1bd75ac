//! io::Error → [`Reason`]: the one place that decides what an OS error means on the wire.
//!
//! `ETIMEDOUT`/our deadline = dropped, `ECONNREFUSED` = rejected (RST or ICMP port
//! unreachable), `EHOSTUNREACH`/`ENETUNREACH` = no route or ICMP host unreachable,
//! `ECONNRESET` = reset mid-stream, `EPERM`/`EACCES` = the probe host's own firewall.

use std::io;

use crate::outcome::{Fault, Reason};

/// Classifies an OS-level error.
pub fn classify_io(err: &io::Error) -> Reason {
    if let Some(code) = err.raw_os_error() {
        match code {
            111 => return Reason::Refused,                      // ECONNREFUSED
            110 => return Reason::Timeout,                      // ETIMEDOUT
            113 | 101 | 112 | 99 => return Reason::Unreachable, // EHOSTUNREACH ENETUNREACH EHOSTDOWN EADDRNOTAVAIL
            104 | 103 | 32 => return Reason::Reset,             // ECONNRESET ECONNABORTED EPIPE
            1 | 13 => return Reason::BlockedLocally,            // EPERM EACCES
            _ => {}
        }
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Reason::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Reason::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Reason::Unreachable,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => Reason::Reset,
        io::ErrorKind::PermissionDenied => Reason::BlockedLocally,
        io::ErrorKind::UnexpectedEof => Reason::Closed,
        _ => Reason::Io,
    }
}

/// A [`Fault`] from an io::Error, with `what` as context ("connect to 10.0.0.1:443").
pub fn fault_from_io(what: &str, err: &io::Error) -> Fault {
    Fault::new(classify_io(err), format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_map_to_reasons() {
        assert_eq!(classify_io(&io::Error::from_raw_os_error(111)), Reason::Refused);
        assert_eq!(classify_io(&io::Error::from_raw_os_error(113)), Reason::Unreachable);
        assert_eq!(classify_io(&io::Error::from_raw_os_error(1)), Reason::BlockedLocally);
        assert_eq!(classify_io(&io::Error::from(io::ErrorKind::UnexpectedEof)), Reason::Closed);
    }
}
