//! A TCP or TLS stream presented as a datagram [`webrtc_util::Conn`], so that the webrtc-rs
//! TURN server (which only takes datagram listeners) can serve TURN over TCP and TLS.
//!
//! Decision (see also `turn.rs`): we do not write a TURN server of our own. Each accepted
//! stream gets its own `turn::server::Server` whose single "listener" is this adapter. Over a
//! stream, STUN messages are self-delimiting (20-byte header + length) and ChannelData
//! messages carry a length and are padded to 4 bytes (RFC 8656 §12.5, same framing coturn
//! uses, RFC 6062 §4 / RFC 4571 in spirit): `recv_from` returns one whole message per call,
//! `send_to` writes one message. One server per connection gives the RFC semantics for free:
//! when the client's connection ends, `recv_from` fails, the server's read loop stops and its
//! allocation manager closes every allocation made over that connection.
//!
//! `close()` is deliberately a no-op: the TURN crate closes the "turn socket" whenever an
//! allocation ends (e.g. Refresh lifetime 0), but the connection must stay open to carry the
//! Refresh response and further requests. The connection ends when the client closes it, on
//! a framing error, or after [`IDLE_TIMEOUT`] without a message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{watch, Mutex};
use webrtc_util::Conn;

use super::auth_fix::AuthFix;
use super::metrics::Counters;

/// A connection with no message for this long is closed (longer than the default 10-minute
/// allocation lifetime, so a client refreshing on time is never cut).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(11 * 60);
/// A single write that cannot complete in this time ends the connection (stuck reader).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A stream framed as STUN/ChannelData messages.
pub struct StreamConn<S> {
    reader: Mutex<ReadHalf<S>>,
    writer: Mutex<WriteHalf<S>>,
    local: SocketAddr,
    peer: SocketAddr,
    transport: &'static str,
    counters: Arc<Counters>,
    /// 401 instead of the crate's 400 for wrong credentials (see `auth_fix.rs`).
    auth_fix: AuthFix,
    /// Becomes `true` when the stream has ended (read error, EOF, idle, bad framing).
    ended: watch::Sender<bool>,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> StreamConn<S> {
    /// Wraps `stream`; `transport` (`tcp`/`tls`) labels the message counters.
    pub fn new(
        stream: S,
        local: SocketAddr,
        peer: SocketAddr,
        transport: &'static str,
        counters: Arc<Counters>,
        auth_fix: AuthFix,
    ) -> StreamConn<S> {
        let (r, w) = tokio::io::split(stream);
        StreamConn {
            reader: Mutex::new(r),
            writer: Mutex::new(w),
            local,
            peer,
            transport,
            counters,
            auth_fix,
            ended: watch::channel(false).0,
        }
    }

    /// Resolves once the stream has ended (the server's read loop then stops too).
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    async fn read_message(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut r = self.reader.lock().await;
        let mut head = [0u8; 4];
        r.read_exact(&mut head).await?;
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let total = match head[0] >> 6 {
            // STUN: 20-byte header, attribute length a multiple of 4.
            0b00 => 20 + len,
            // ChannelData (0x4000..=0x7FFF): 4-byte header, padded to 4 over streams.
            0b01 => 4 + len.div_ceil(4) * 4,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "neither STUN nor ChannelData framing",
                ))
            }
        };
        let mut msg = vec![0u8; total];
        msg[..4].copy_from_slice(&head);
        r.read_exact(&mut msg[4..]).await?;
        let method = super::turn::count_message(&self.counters, self.transport, &msg);
        if !matches!(method, "channel_data" | "send" | "binding") {
            self.auth_fix.inspect(&msg, self.peer);
        }
        let n = total.min(buf.len());
        buf[..n].copy_from_slice(&msg[..n]);
        Ok(n)
    }
}

fn util_err(e: std::io::Error) -> webrtc_util::Error {
    webrtc_util::Error::from(e)
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Send + 'static> Conn for StreamConn<S> {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        if *self.ended.borrow() {
            return Err(util_err(std::io::ErrorKind::NotConnected.into()));
        }
        let r = match tokio::time::timeout(IDLE_TIMEOUT, self.read_message(buf)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection")),
        };
        match r {
            Ok(n) => Ok((n, self.peer)),
            Err(e) => {
                tracing::debug!(peer = %self.peer, transport = self.transport, "TURN stream ended: {e}");
                self.ended.send_replace(true);
                Err(util_err(e))
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.send_to(buf, self.peer).await
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        if *self.ended.borrow() {
            return Err(util_err(std::io::ErrorKind::NotConnected.into()));
        }
        let fixed = self.auth_fix.rewrite(buf);
        let out = fixed.as_deref().unwrap_or(buf);
        let mut w = self.writer.lock().await;
        let write = async {
            w.write_all(out).await?;
            w.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(buf.len()),
            Ok(Err(e)) => {
                self.ended.send_replace(true);
                Err(util_err(e))
            }
            Err(_) => {
                self.ended.send_replace(true);
                Err(util_err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")))
            }
        }
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        // See the module doc: allocations ending must not end the connection.
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

impl<S> StreamConn<S> {
    /// Ends the connection from our side (shutdown): the next read fails.
    pub async fn shutdown(&self)
    where
        S: AsyncWrite,
    {
        self.ended.send_replace(true);
        let mut w = self.writer.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
    }
}
