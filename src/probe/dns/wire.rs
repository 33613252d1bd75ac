//! One DNS query/answer exchange with one server over UDP or TCP, on our own sockets.
//!
//! Why not hickory-resolver's lookup: a probe must say what the wire did, and a resolver
//! library hides exactly that. Its UDP sockets are unconnected, so an ICMP port unreachable
//! from a closed or REJECTing resolver port is never seen (a REJECT read as a DROP); it retries
//! over TCP after a truncated answer without saying which transport answered; and it answers
//! RFC 6761 names (`*.localhost`, `*.invalid`) itself, without sending a packet. Here the UDP
//! socket is *connected*, so the kernel reports the ICMP error as `ECONNREFUSED`; TCP uses the
//! RFC 1035 two-byte length framing; the caller decides about truncation. hickory-proto still
//! encodes and decodes the messages.
//!
//! Bounded: one query per exchange, answers up to 64 KiB (the protocol's own limit), at most
//! [`MAX_STRAY`] unrelated datagrams ignored before giving up, everything under `deadline`.

use std::net::SocketAddr;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_resolver::proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use crate::net::fault_from_io;
use crate::outcome::{Fault, Reason};

/// Which transport carried an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Datagrams with a wrong id (or not a response) ignored on one UDP exchange before the
/// exchange counts as a bad response (spoofing or a confused middlebox).
const MAX_STRAY: usize = 16;

/// EDNS UDP payload size offered (the DNS Flag Day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// The query message for `name`/`rtype`, recursion desired, with EDNS.
pub fn query(name: &str, rtype: RecordType) -> Result<Message, Fault> {
    let qname = Name::from_ascii(name).map_err(|e| Fault::new(Reason::Config, format!("invalid DNS name {name:?}: {e}")))?;
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    Ok(msg)
}

/// Sends `query` to `server` over `transport` and returns the matching response.
pub async fn exchange(server: SocketAddr, query: &Message, transport: Transport, deadline: Instant) -> Result<Message, Fault> {
    let bytes = query
        .to_vec()
        .map_err(|e| Fault::new(Reason::Config, format!("encoding the DNS query: {e}")))?;
    let what = format!("DNS over {} to {server}", transport.label());
    let result = timeout_at(deadline, async {
        match transport {
            Transport::Udp => udp(server, &bytes, query.metadata.id, &what).await,
            Transport::Tcp => tcp(server, &bytes, query.metadata.id, &what).await,
        }
    })
    .await;
    match result {
        Ok(r) => r,
        Err(_) => Err(Fault::new(Reason::Timeout, format!("{what}: no answer before the deadline"))),
    }
}

async fn udp(server: SocketAddr, bytes: &[u8], id: u16, what: &str) -> Result<Message, Fault> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| fault_from_io(what, &e))?;
    // Connected: the kernel then reports an ICMP port unreachable as ECONNREFUSED on recv.
    sock.connect(server).await.map_err(|e| fault_from_io(what, &e))?;
    sock.send(bytes).await.map_err(|e| refused_words(what, &e))?;
    let mut buf = vec![0u8; 65535];
    for _ in 0..MAX_STRAY {
        let n = sock.recv(&mut buf).await.map_err(|e| refused_words(what, &e))?;
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.id == id && m.metadata.message_type == MessageType::Response => return Ok(m),
            _ => continue, // not ours: keep listening (bounded)
        }
    }
    Err(Fault::new(
        Reason::BadResponse,
        format!("{what}: {MAX_STRAY} datagrams that are not the answer to this query"),
    ))
}

async fn tcp(server: SocketAddr, bytes: &[u8], id: u16, what: &str) -> Result<Message, Fault> {
    let mut stream = TcpStream::connect(server).await.map_err(|e| refused_words(what, &e))?;
    let len = u16::try_from(bytes.len()).map_err(|_| Fault::new(Reason::Config, "DNS query longer than 64 KiB"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(|e| fault_from_io(what, &e))?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(|e| fault_from_io(what, &e))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(|e| fault_from_io(what, &e))?;
    let _ = stream.shutdown().await;
    match Message::from_vec(&buf) {
        Ok(m) if m.metadata.id == id && m.metadata.message_type == MessageType::Response => Ok(m),
        Ok(m) => Err(Fault::new(
            Reason::BadResponse,
            format!("{what}: the answer has id {} (query id {id})", m.metadata.id),
        )),
        Err(e) => Err(Fault::new(Reason::BadResponse, format!("{what}: undecodable answer: {e}"))),
    }
}

/// An io error, worded for the common DNS case: `refused` = RST or ICMP port unreachable.
fn refused_words(what: &str, e: &std::io::Error) -> Fault {
    let f = fault_from_io(what, e);
    if f.reason == Reason::Refused {
        return Fault::new(
            Reason::Refused,
            format!("{what}: refused (ICMP port unreachable or TCP RST: a closed port or a REJECT rule)"),
        );
    }
    f
}
