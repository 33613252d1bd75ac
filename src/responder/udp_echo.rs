//! The UDP echo peer: sends every datagram back to where it came from.
//!
//! A TURN probe that relays to a real peer needs someone on the far side to answer; this is
//! it (`media: {peer: IP:PORT}` on a turn probe), and `kind: media` streams straight to it. Datagrams are echoed unchanged, one for one, so
//! the probe measures round-trip time and loss through the relay.

use std::sync::Arc;

use tokio::net::UdpSocket;

use super::metrics::Counters;
use super::Shutdown;

/// Largest datagram echoed (bigger ones are truncated by the kernel read).
const MAX_DATAGRAM: usize = 65_535;

/// Echoes datagrams on `socket` until shutdown.
pub async fn serve(socket: UdpSocket, counters: Arc<Counters>, shutdown: Shutdown) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
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
        if socket.send_to(&buf[..n], from).await.is_ok() {
            counters.udp_echo_datagrams_total.inc();
        }
    }
}
