//! The UDP echo peer: sends datagrams back to where they came from, refusing what would make
//! it a reflector.
//!
//! A TURN probe that relays to a real peer needs someone on the far side to answer; this is
//! it (`media: {peer: IP:PORT}` on a turn probe), and `kind: media` streams straight to it.
//! Media datagrams are echoed unchanged, one for one, so the probe measures round-trip time and
//! loss through the relay; that is why this echo stays generic (any payload of a media
//! stream, up to [`MAX_DATAGRAM`] bytes).
//!
//! A generic UDP echo on the Internet is a loop-DoS reflector (CVE-2024-2169: a spoofed
//! datagram from another echo or a service port makes two servers answer each other
//! forever). So it does not answer:
//! - sources with a port below 1024 (DNS, NTP, echo/7, chargen/19 and other UDP services that
//!   answer anything: never a softphone or a TURN relay port);
//! - a `kind: udp_ports` *reply* (marker `EPUR`): ours, so answering it could only loop;
//! - a `kind: udp_ports` *request* (`EPUP`, 16 bytes) is answered as the port-range echo does,
//!   with the reply marker (see [`answer_ports_probe`]), so the nftables redirect of a whole
//!   media range onto this socket serves `udp_ports` too;
//! - datagrams longer than [`MAX_DATAGRAM`] (truncated reads are dropped, not echoed).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::metrics::Counters;
use super::Shutdown;

/// Largest datagram echoed: the media stream's largest payload (1200) plus RTP-size headroom.
pub const MAX_DATAGRAM: usize = 1500;
/// Sources below this port are never answered (well-known UDP services reflect too).
pub const LOWEST_SOURCE_PORT: u16 = 1024;
/// A `kind: udp_ports` request and the echo's reply (`probe::udp_ports`'s format).
const PORTS_REQUEST: &[u8; 4] = b"EPUP";
const PORTS_REPLY: &[u8; 4] = b"EPUR";
const PORTS_DATAGRAM: usize = 16;

/// The reply to a `kind: udp_ports` request (`EPUP | nonce | index | port`, 16 bytes): the
/// same bytes under the reply marker. `None` for anything else, and for a request naming
/// another port than `own_port` (when known: the port-range echo's socket).
pub fn answer_ports_probe(data: &[u8], own_port: Option<u16>) -> Option<[u8; PORTS_DATAGRAM]> {
    if data.len() != PORTS_DATAGRAM || &data[..4] != PORTS_REQUEST {
        return None;
    }
    let named = u16::from_be_bytes([data[14], data[15]]);
    if own_port.is_some_and(|p| p != named) {
        return None;
    }
    let mut reply = [0u8; PORTS_DATAGRAM];
    reply.copy_from_slice(data);
    reply[..4].copy_from_slice(PORTS_REPLY);
    Some(reply)
}

/// What the generic echo sends back for `data` from `from`: `None` when it must stay silent.
pub fn echo_reply(data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if from.port() < LOWEST_SOURCE_PORT || data.len() > MAX_DATAGRAM {
        return None;
    }
    if data.len() >= 4 && &data[..4] == PORTS_REPLY {
        return None;
    }
    if data.len() >= 4 && &data[..4] == PORTS_REQUEST {
        return answer_ports_probe(data, None).map(|r| r.to_vec());
    }
    Some(data.to_vec())
}

/// Echoes datagrams on `socket` until shutdown.
pub async fn serve(socket: UdpSocket, counters: Arc<Counters>, shutdown: Shutdown) {
    // One byte more than echoed, so a longer datagram shows as too long instead of truncated.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                Err(e) => {
                    tracing::debug!("UDP echo recv: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        tracing::trace!(peer = %from, bytes = n, "UDP echo");
        let Some(reply) = echo_reply(&buf[..n], from) else { continue };
        if socket.send_to(&reply, from).await.is_ok() {
            counters.udp_echo_datagrams_total.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(port: u16) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(PORTS_REQUEST);
        d[4..12].copy_from_slice(&7u64.to_be_bytes());
        d[14..16].copy_from_slice(&port.to_be_bytes());
        d
    }

    #[test]
    fn the_echo_never_answers_service_ports_its_own_replies_or_oversized_datagrams() {
        let client: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let media = vec![0x80u8; 172];
        assert_eq!(echo_reply(&media, client), Some(media.clone()), "media is echoed unchanged");
        for low in [7u16, 19, 53, 123, 1023] {
            let from = SocketAddr::new(client.ip(), low);
            assert_eq!(echo_reply(&media, from), None, "source port {low}");
        }
        let reply = answer_ports_probe(&request(20000), None).expect("a request is answered");
        assert_eq!(&reply[..4], PORTS_REPLY);
        assert_eq!(reply[4..], request(20000)[4..]);
        assert_eq!(echo_reply(&reply, client), None, "a reply is never answered");
        assert_eq!(echo_reply(&request(20000), client), Some(reply.to_vec()));
        assert_eq!(echo_reply(&vec![0u8; MAX_DATAGRAM + 1], client), None);
        assert_eq!(answer_ports_probe(&request(20001), Some(20000)), None, "names another port");
        assert_eq!(answer_ports_probe(&media[..16], Some(20000)), None, "not a probe datagram");
    }
}
