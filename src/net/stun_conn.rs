//! One STUN/TURN connection over UDP, TCP or TLS: framing, transactions, retransmission.
//!
//! The STUN and TURN probes (and nothing else) speak through a [`StunConn`]. It is one
//! implementation for all three transports, because the differences are small and exactly
//! specified:
//!
//! - **Framing.** Over UDP a datagram is one message. Over TCP/TLS (RFC 6062/5766 §11,
//!   RFC 8656 §12.5) messages follow each other on the byte stream: a STUN message is
//!   delimited by its 20-byte header's length field; a ChannelData message by its 4-byte header
//!   (channel number 0x4000..=0x4FFF, length), its payload padded to a multiple of 4 bytes.
//!   The first two bits tell them apart (`00` STUN, `01` ChannelData); anything else, and
//!   ChannelData on a channel we did not bind, is a server that does not speak STUN
//!   (`bad_response`: an HTTP answer starts with `HT` = 0x4854, a valid-looking channel).
//! - **Transactions.** Over UDP a request is retransmitted (RFC 5389 §7.2.1: RTO 500 ms,
//!   doubled after each transmission, at most 7 transmissions), never past the caller's
//!   deadline. Over TCP/TLS it is sent once: the transport is reliable, and a missing answer is
//!   the server's (or a middlebox's) silence, which we want to see as `timeout`.
//!
//! - **RTT.** From right before a request's send to its answer's arrival: over UDP the
//!   kernel's receive timestamp of the datagram (`SO_TIMESTAMPNS`), so the time the probe's
//!   task waited for a CPU after the answer arrived is not counted (on a loaded host that is
//!   milliseconds); over TCP/TLS, and whenever the stamp is missing or implausible (a wall
//!   clock step), the monotonic time until the answer was read.
//!
//! The codec is `stun-rs`; it has no notion of transactions or transports, which is why this
//! module exists. [`open`] dials through the shared `net` path (resolve, connect or proxy
//! CONNECT, TLS with the probe's [`TlsOptions`]), so phases and reasons mean the same as for
//! every other probe.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, MessageMethod, StunMessage, MAGIC_COOKIE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::config::{IceTransport, IceUrl, ProxyUrl, TlsOptions};
use crate::outcome::{Failure, Fault, Phase, Reason, Run};

use super::classify::fault_from_io;

/// RFC 5389 initial retransmission timeout for UDP.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);
/// RFC 5389 `Rc`: transmissions of one request over UDP at most.
pub const MAX_TRANSMISSIONS: u32 = 7;
/// Lowest and highest ChannelData channel numbers (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;

/// A byte stream a STUN connection can run over (plain TCP or TLS). `Sync` because probes hold
/// `&StunConn` across awaits and the scheduler spawns probe futures, which must be `Send`.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> ByteStream for T {}

/// One message received from the server.
#[derive(Debug)]
pub enum Frame {
    /// A STUN message and its raw bytes (kept to verify MESSAGE-INTEGRITY).
    Stun(StunMessage, Vec<u8>),
    /// TURN ChannelData: relayed payload on a bound channel.
    ChannelData { channel: u16, data: Vec<u8> },
}

/// The answer to a request.
#[derive(Debug)]
pub struct Answer {
    pub msg: StunMessage,
    pub raw: Vec<u8>,
    /// Time from the last transmission to the answer (Karn: the earlier ones are ambiguous).
    pub rtt: Duration,
    /// How often the request went out (1 over TCP/TLS).
    pub transmissions: u32,
}

/// The RTT from the wall-clock send time to the kernel's receive stamp, when there is a stamp
/// and it is plausible (not before the send, not after the answer was read: a wall clock step
/// in between would make it so); else `waited`, the monotonic time until the answer was read.
fn kernel_rtt(sent_wall: SystemTime, stamp: Option<SystemTime>, waited: Duration) -> Duration {
    stamp
        .and_then(|rx| rx.duration_since(sent_wall).ok())
        .filter(|rtt| *rtt <= waited)
        .unwrap_or(waited)
}

/// One `recvmsg` on a non-blocking UDP socket: length, sender and the kernel's receive stamp
/// (`SCM_TIMESTAMPNS`, when the socket has `SO_TIMESTAMPNS` on). `WouldBlock` when empty.
fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<SocketAddr>, Option<SystemTime>)> {
    // u64s: the control buffer must be aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut stamp = None;
    // SAFETY: `try_init` hands a zeroed sockaddr_storage and its length; the msghdr points at
    // it, at one iovec over `buf` and at `control`, all alive for the call; the cmsg walk stays
    // within msg_controllen as the CMSG_* macros guarantee, and reads the timespec unaligned.
    let (n, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(fd, &mut msg, 0);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    if ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec) {
                        stamp = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            Ok(n as usize)
        })?
    };
    Ok((n, addr.as_socket(), stamp))
}

enum Link {
    Datagram {
        socket: Arc<UdpSocket>,
        server: SocketAddr,
        /// A connected socket reports ICMP port unreachable as ECONNREFUSED (`refused`);
        /// an unconnected one can talk to several servers (NAT mapping tests).
        connected: bool,
        buf: Vec<u8>,
    },
    Stream {
        stream: Box<dyn ByteStream>,
        buf: BytesMut,
    },
}

/// A STUN/TURN connection to one server.
pub struct StunConn {
    link: Link,
    transport: &'static str,
    local: Option<SocketAddr>,
    /// Channels bound with ChannelBind: the only ones ChannelData may arrive on.
    channels: Vec<u16>,
    /// Requests put on the wire so far, retransmissions included (for loss figures).
    pub transmissions: u32,
    /// The kernel's receive time of the last datagram [`StunConn::recv`] returned, if it
    /// stamped it (UDP with `SO_TIMESTAMPNS` on).
    last_stamp: Option<SystemTime>,
}

impl std::fmt::Debug for StunConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunConn")
            .field("transport", &self.transport)
            .field("local", &self.local)
            .finish()
    }
}

impl StunConn {
    /// A connection over a UDP socket to `server`; `connected` if the socket is connected to it.
    pub fn datagram(socket: Arc<UdpSocket>, server: SocketAddr, connected: bool) -> StunConn {
        let local = socket.local_addr().ok();
        // Receive timestamps for the RTT; without them (an old kernel) the RTT is monotonic.
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on a descriptor the socket owns, with an int option value.
        let _ = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        StunConn {
            link: Link::Datagram {
                socket,
                server,
                connected,
                buf: vec![0; 65536],
            },
            transport: "udp",
            local,
            channels: Vec::new(),
            transmissions: 0,
            last_stamp: None,
        }
    }

    /// A connection over an established TCP or TLS stream. `transport` is `tcp` or `tls`.
    pub fn stream(stream: impl ByteStream + 'static, transport: &'static str, local: Option<SocketAddr>) -> StunConn {
        StunConn {
            link: Link::Stream {
                stream: Box::new(stream),
                buf: BytesMut::with_capacity(4096),
            },
            transport,
            local,
            channels: Vec::new(),
            transmissions: 0,
            last_stamp: None,
        }
    }

    /// Moves a connected datagram connection to a fresh local port towards the same server
    /// (a TURN client answered 437: the server still holds an allocation for the old 5-tuple).
    /// `Ok(false)` for streams and unconnected sockets, which are left as they are.
    pub async fn move_to_new_port(&mut self) -> Result<bool, Fault> {
        let Link::Datagram {
            server, connected: true, ..
        } = &self.link
        else {
            return Ok(false);
        };
        let server = *server;
        let socket = bind_udp(server).await?;
        socket
            .connect(server)
            .await
            .map_err(|e| fault_from_io(&format!("UDP connect to {server}"), &e))?;
        let transmissions = self.transmissions;
        *self = StunConn::datagram(Arc::new(socket), server, true);
        self.transmissions = transmissions;
        Ok(true)
    }

    /// Accepts ChannelData on `channel` from now on (after a successful ChannelBind).
    pub fn bind_channel(&mut self, channel: u16) {
        if !self.channels.contains(&channel) {
            self.channels.push(channel);
        }
    }

    /// `udp`, `tcp` or `tls`.
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// Our local address (over a proxy: the one towards the proxy).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The UDP socket of an unconnected datagram connection, to reach a second server from the
    /// same local port (NAT mapping tests); `None` for streams and connected sockets.
    pub fn udp_socket(&self) -> Option<Arc<UdpSocket>> {
        match &self.link {
            Link::Datagram {
                socket, connected: false, ..
            } => Some(socket.clone()),
            _ => None,
        }
    }

    /// Whether the transport is reliable (no retransmission, ChannelData padded).
    pub fn is_stream(&self) -> bool {
        matches!(self.link, Link::Stream { .. })
    }

    /// Sends one encoded message (request, indication or ChannelData) as is.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        match &mut self.link {
            Link::Datagram {
                socket, server, connected, ..
            } => {
                let sent = if *connected {
                    socket.send(bytes).await
                } else {
                    socket.send_to(bytes, *server).await
                };
                sent.map(|_| ()).map_err(|e| fault_from_io(&format!("send to {server}"), &e))
            }
            Link::Stream { stream, .. } => {
                stream.write_all(bytes).await.map_err(|e| fault_from_io("send", &e))?;
                stream.flush().await.map_err(|e| fault_from_io("send", &e))
            }
        }
    }

    /// Encodes and sends a message that expects no answer (an indication).
    pub async fn send_message(&mut self, msg: &StunMessage) -> Result<(), Fault> {
        let bytes = encode(msg)?;
        self.send_bytes(&bytes).await
    }

    /// Sends relayed payload on a bound channel: 4-byte header, padded to 4 bytes on streams.
    pub async fn send_channel_data(&mut self, channel: u16, data: &[u8]) -> Result<(), Fault> {
        let len = u16::try_from(data.len()).map_err(|_| Fault::new(Reason::Config, "ChannelData payload over 65535 bytes"))?;
        let pad = if self.is_stream() { (4 - data.len() % 4) % 4 } else { 0 };
        let mut frame = Vec::with_capacity(4 + data.len() + pad);
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(data);
        frame.resize(frame.len() + pad, 0);
        self.send_bytes(&frame).await
    }

    /// Receives the next message. Cancel-safe: a cancelled call loses no data.
    pub async fn recv(&mut self) -> Result<Frame, Fault> {
        let channels = &self.channels;
        self.last_stamp = None;
        match &mut self.link {
            Link::Datagram {
                socket,
                server,
                connected,
                buf,
            } => loop {
                let received = socket
                    .async_io(tokio::io::Interest::READABLE, || recv_stamped(socket.as_raw_fd(), buf))
                    .await;
                let (n, from, stamp) = received.map_err(|e| fault_from_io(&format!("receive from {server}"), &e))?;
                // A connected socket only receives from its server (and may not name it).
                let from = if *connected { *server } else { from.unwrap_or(*server) };
                self.last_stamp = stamp;
                if from != *server {
                    continue; // not our server: ignore, as a STUN client must
                }
                let data = &buf[..n];
                return match frame_len(data, channels)? {
                    Some((len, true)) if len <= n => parse_stun(&data[..len]),
                    Some((len, false)) if len <= n + 3 => channel_frame(data, n),
                    _ => Err(Fault::new(
                        Reason::BadResponse,
                        format!("truncated datagram of {n} bytes from {server}"),
                    )),
                };
            },
            Link::Stream { stream, buf } => loop {
                if let Some((len, is_stun)) = frame_len(buf, channels)? {
                    if buf.len() >= len {
                        let frame = buf.split_to(len);
                        return if is_stun {
                            parse_stun(&frame)
                        } else {
                            channel_frame(&frame, frame.len())
                        };
                    }
                }
                let n = stream.read_buf(buf).await.map_err(|e| fault_from_io("receive", &e))?;
                if n == 0 {
                    return Err(Fault::new(Reason::Closed, "the server closed the connection"));
                }
            },
        }
    }

    /// Sends `msg` (a request) and waits for its answer (success or error response) until
    /// `until`, retransmitting over UDP. Other messages arriving meanwhile are dropped.
    pub async fn transaction(&mut self, msg: &StunMessage, until: Instant) -> Result<Answer, Fault> {
        let bytes = encode(msg)?;
        let tid = *msg.transaction_id();
        let what = method_name(msg.method());
        let started = Instant::now();
        let mut rto = INITIAL_RTO;
        let mut transmissions = 0u32;
        loop {
            // The clock starts before the send, as the connect phase's before connect(): the
            // request leaves inside the send call, so the RTT never misses part of the wire.
            let sent_at = Instant::now();
            let sent_wall = SystemTime::now();
            self.send_bytes(&bytes).await?;
            transmissions += 1;
            self.transmissions += 1;
            let wait_until = if self.is_stream() || transmissions >= MAX_TRANSMISSIONS {
                until
            } else {
                (sent_at + rto).min(until)
            };
            rto *= 2;
            loop {
                match tokio::time::timeout_at(wait_until, self.recv()).await {
                    Err(_) => break,
                    Ok(Err(f)) => return Err(f),
                    Ok(Ok(Frame::Stun(m, raw)))
                        if *m.transaction_id() == tid
                            && matches!(m.class(), MessageClass::SuccessResponse | MessageClass::ErrorResponse) =>
                    {
                        let waited = sent_at.elapsed();
                        return Ok(Answer {
                            msg: m,
                            raw,
                            rtt: kernel_rtt(sent_wall, self.last_stamp, waited),
                            transmissions,
                        });
                    }
                    Ok(Ok(_)) => continue,
                }
            }
            if Instant::now() >= until {
                return Err(Fault::new(
                    Reason::Timeout,
                    format!(
                        "no answer to {what} over {} after {transmissions} transmission(s) in {} ms",
                        self.transport,
                        started.elapsed().as_millis()
                    ),
                ));
            }
        }
    }

    /// Closes a stream politely (TLS close_notify, TCP FIN). Bound it by the caller's deadline.
    pub async fn shutdown(&mut self) {
        if let Link::Stream { stream, .. } = &mut self.link {
            let _ = stream.shutdown().await;
        }
    }
}

/// Length of the frame at the start of `buf` and whether it is STUN (`true`) or ChannelData,
/// or `None` when fewer than 4 bytes (8 for STUN) are there yet.
fn frame_len(buf: &[u8], channels: &[u16]) -> Result<Option<(usize, bool)>, Fault> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let word = u16::from_be_bytes([buf[0], buf[1]]);
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0b00 => {
            if buf.len() < 8 {
                return Ok(None);
            }
            if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE.as_u32() || len % 4 != 0 {
                return Err(not_stun(buf));
            }
            Ok(Some((20 + len, true)))
        }
        0b01 if channels.contains(&word) => Ok(Some((4 + len.div_ceil(4) * 4, false))),
        _ => Err(not_stun(buf)),
    }
}

fn not_stun(buf: &[u8]) -> Fault {
    let printable: String = buf
        .iter()
        .take(16)
        .map(|b| if b.is_ascii_graphic() || *b == b' ' { *b as char } else { '.' })
        .collect();
    Fault::new(
        Reason::BadResponse,
        format!("the server answered with something that is not STUN (starts with {printable:?})"),
    )
}

fn channel_frame(frame: &[u8], available: usize) -> Result<Frame, Fault> {
    let mut b = &frame[..available];
    let channel = b.get_u16();
    let len = usize::from(b.get_u16());
    let data = b
        .get(..len)
        .ok_or_else(|| Fault::new(Reason::BadResponse, "truncated ChannelData message"))?
        .to_vec();
    Ok(Frame::ChannelData { channel, data })
}

fn parse_stun(bytes: &[u8]) -> Result<Frame, Fault> {
    let decoder = MessageDecoderBuilder::default().build();
    let (msg, _) = decoder
        .decode(bytes)
        .map_err(|e| Fault::new(Reason::BadResponse, format!("undecodable STUN message: {e}")))?;
    Ok(Frame::Stun(msg, bytes.to_vec()))
}

/// Whether `raw` (a response carrying MESSAGE-INTEGRITY) was signed with `key`: proves the
/// server knows our password, i.e. we did not reach an impostor.
pub fn integrity_ok(raw: &[u8], key: &HMACKey) -> bool {
    let ctx = DecoderContextBuilder::default().with_key(key.clone()).with_validation().build();
    MessageDecoderBuilder::default().with_context(ctx).build().decode(raw).is_ok()
}

/// Encodes a message (buffer sized for any TURN payload).
pub fn encode(msg: &StunMessage) -> Result<Vec<u8>, Fault> {
    let encoder = MessageEncoderBuilder::default().build();
    let mut buf = vec![0u8; 1500];
    let n = match encoder.encode(&mut buf, msg) {
        Ok(n) => n,
        Err(_) => {
            buf = vec![0u8; 66_000];
            encoder
                .encode(&mut buf, msg)
                .map_err(|e| Fault::new(Reason::Config, format!("cannot encode {}: {e}", method_name(msg.method()))))?
        }
    };
    buf.truncate(n);
    Ok(buf)
}

/// `Binding`, `Allocate`, ... for messages.
pub fn method_name(m: MessageMethod) -> &'static str {
    match m.as_u16() {
        0x001 => "Binding",
        0x003 => "Allocate",
        0x004 => "Refresh",
        0x006 => "Send",
        0x007 => "Data",
        0x008 => "CreatePermission",
        0x009 => "ChannelBind",
        _ => "STUN request",
    }
}

/// Binds a UDP socket of `server`'s family on an ephemeral port.
pub async fn bind_udp(server: SocketAddr) -> Result<UdpSocket, Fault> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(local).await.map_err(|e| fault_from_io("bind UDP socket", &e))
}

/// How [`open`] reaches the server.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions<'a> {
    pub tls: &'a TlsOptions,
    /// HTTP CONNECT proxy for TCP/TLS (UDP never goes through a proxy, as in browsers).
    pub proxy: Option<&'a ProxyUrl>,
    /// Skip resolution and use this server address (`addresses: all`, second TURN client).
    pub fixed: Option<SocketAddr>,
    /// UDP only: leave the socket unconnected (to reach a second server from the same port).
    pub unconnected_udp: bool,
}

/// Opens a connection to `url` with timed phases: `resolve`, then for TCP/TLS `connect` (or
/// `proxy`) and for `stuns:`/`turns:` `tls` (SNI = the URI host, no ALPN unless configured).
/// Returns the connection and the server address (`None` through a proxy).
pub async fn open(run: &mut Run, url: &IceUrl, opts: OpenOptions<'_>) -> Result<(StunConn, Option<SocketAddr>), Failure> {
    let hp = url.host_port();
    if url.transport == IceTransport::Udp && !url.is_tls() {
        let server = match opts.fixed {
            Some(a) => a,
            None => {
                let addrs = super::resolve(run, &hp).await?;
                addrs
                    .first()
                    .copied()
                    .ok_or_else(|| Failure::new(Phase::Resolve, Reason::NoAnswer, format!("{hp}: no address")))?
            }
        };
        let socket = bind_udp(server).await.map_err(|f| f.at(Phase::Connect))?;
        if !opts.unconnected_udp {
            socket
                .connect(server)
                .await
                .map_err(|e| fault_from_io(&format!("UDP connect to {server}"), &e).at(Phase::Connect))?;
        }
        run.detail.peer = Some(server);
        return Ok((StunConn::datagram(Arc::new(socket), server, !opts.unconnected_udp), Some(server)));
    }
    let (tcp, peer) = match opts.fixed {
        Some(a) => (super::connect(run, a).await?, Some(a)),
        None => {
            let d = super::dial(run, &hp, opts.proxy).await?;
            (d.stream, d.peer)
        }
    };
    let local = tcp.local_addr().ok();
    if !url.is_tls() {
        return Ok((StunConn::stream(tcp, "tcp", local), peer));
    }
    let client = super::tls::TlsClient::new(opts.tls, &url.host, &[]).map_err(|f| f.at(Phase::Tls))?;
    let tls = super::tls::handshake(run, &client, tcp).await?;
    Ok((StunConn::stream(tls, "tls", local), peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_udp_answer_carries_the_kernel_receive_time_and_its_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let server_addr = server.local_addr().unwrap();
        let mut conn = StunConn::datagram(client.clone(), server_addr, false);
        let before = SystemTime::now();
        // A Binding success response with no attributes: a valid STUN message to frame.
        let mut msg = vec![0x01, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[7; 12]);
        server.send_to(&msg, client.local_addr().unwrap()).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(2), conn.recv()).await.unwrap();
        let after = SystemTime::now();
        assert!(matches!(frame, Ok(Frame::Stun(..))), "{frame:?}");
        let stamp = conn.last_stamp.expect("SO_TIMESTAMPNS stamp");
        assert!(stamp >= before && stamp <= after, "{stamp:?} not within {before:?}..{after:?}");
    }

    #[test]
    fn rtt_uses_the_kernel_stamp_only_when_it_is_plausible() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let waited = Duration::from_micros(900);
        // The answer arrived 300 µs after the send; the task read it 600 µs later.
        assert_eq!(
            kernel_rtt(sent, Some(sent + Duration::from_micros(300)), waited),
            Duration::from_micros(300)
        );
        // No stamp (TCP, TLS, an old kernel): the monotonic wait.
        assert_eq!(kernel_rtt(sent, None, waited), waited);
        // A wall clock step made the stamp precede the send or exceed the wait: the wait.
        assert_eq!(kernel_rtt(sent, Some(sent - Duration::from_secs(1)), waited), waited);
        assert_eq!(kernel_rtt(sent, Some(sent + Duration::from_secs(5)), waited), waited);
    }

    #[test]
    fn framing_tells_stun_channeldata_and_garbage_apart() {
        let mut stun = vec![0x01, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        stun.resize(28, 0);
        let bound = [CHANNEL_MIN];
        assert_eq!(frame_len(&stun, &bound).unwrap(), Some((28, true)));
        // ChannelData of 5 bytes occupies 4 + 8 bytes on a stream.
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05], &bound).unwrap(), Some((12, false)));
        assert_eq!(frame_len(&[0x40, 0x00], &bound).unwrap(), None);
        // "HT" = 0x4854 looks like a channel number: only bound channels count.
        let http = b"HTTP/1.1 400 Bad Request\r\n";
        assert_eq!(frame_len(http, &bound).unwrap_err().reason, Reason::BadResponse);
        let tls_alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28, 0x00];
        assert_eq!(frame_len(&tls_alert, &bound).unwrap_err().reason, Reason::BadResponse);
    }

    #[test]
    fn channel_frame_ignores_padding() {
        let f = channel_frame(&[0x40, 0x01, 0x00, 0x03, 1, 2, 3, 0], 8).unwrap();
        match f {
            Frame::ChannelData { channel, data } => assert_eq!((channel, data), (0x4001, vec![1, 2, 3])),
            other => panic!("unexpected {other:?}"),
        }
    }
}
