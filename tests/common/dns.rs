//! A real DNS server in-process (hickory-server 0.26, UDP + TCP on one loopback port) serving a
//! small `example.test.` zone, plus names that misbehave on purpose:
//!
//! | name | answer |
//! |---|---|
//! | `relay.example.test.` | A 127.0.0.1, AAAA ::1 |
//! | `alias.example.test.` | CNAME relay.example.test. (+ the target's records) |
//! | `_turn._udp.example.test.` | SRV 0 0 3478 relay.example.test. |
//! | `txt.example.test.` | TXT "v=softphone1" |
//! | `v4only.example.test.` | A 127.0.0.2 only (AAAA: NOERROR, no answer) |
//! | `servfail.example.test.` | SERVFAIL |
//! | `refused.example.test.` | REFUSED |
//! | `big.example.test.` | over UDP: truncated (TC=1, empty); over TCP: A 127.0.0.9 |
//! | anything else | NXDOMAIN |
//!
//! The server counts queries per transport so tests can see retries and the absence of caching.
//! Must be started inside a tokio runtime; its tasks stop when it is dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;

/// Query counters, shared with the handler.
#[derive(Default, Debug)]
pub struct Counts {
    pub udp: AtomicUsize,
    pub tcp: AtomicUsize,
}

pub struct Zone {
    records: HashMap<String, Vec<Record>>,
    counts: Arc<Counts>,
}

fn name(s: &str) -> Name {
    Name::from_str(s).expect("name")
}

fn rec(owner: &str, data: RData) -> Record {
    Record::from_rdata(name(owner), 0, data)
}

impl Zone {
    fn new(counts: Arc<Counts>) -> Zone {
        let mut records: HashMap<String, Vec<Record>> = HashMap::new();
        let mut add = |owner: &str, data: RData| records.entry(owner.to_string()).or_default().push(rec(owner, data));
        add("relay.example.test.", RData::A(A(Ipv4Addr::new(127, 0, 0, 1))));
        add("relay.example.test.", RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
        add("alias.example.test.", RData::CNAME(CNAME(name("relay.example.test."))));
        add(
            "_turn._udp.example.test.",
            RData::SRV(SRV::new(0, 0, 3478, name("relay.example.test."))),
        );
        add("txt.example.test.", RData::TXT(TXT::new(vec!["v=softphone1".into()])));
        add("v4only.example.test.", RData::A(A(Ipv4Addr::new(127, 0, 0, 2))));
        add("big.example.test.", RData::A(A(Ipv4Addr::new(127, 0, 0, 9))));
        Zone { records, counts }
    }

    /// Records answering `qname`/`qtype`, following one CNAME like an authoritative server.
    fn answer(&self, qname: &str, qtype: RecordType) -> Option<Vec<Record>> {
        let at = self.records.get(qname)?;
        let mut out: Vec<Record> = at.iter().filter(|r| r.record_type() == qtype).cloned().collect();
        if out.is_empty() && qtype != RecordType::CNAME {
            for r in at.iter().filter(|r| r.record_type() == RecordType::CNAME) {
                out.push(r.clone());
                if let RData::CNAME(target) = &r.data {
                    let t = target.0.to_string().to_lowercase();
                    out.extend(
                        self.records
                            .get(&t)
                            .into_iter()
                            .flatten()
                            .filter(|r| r.record_type() == qtype)
                            .cloned(),
                    );
                }
            }
        }
        Some(out)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Zone {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        let tcp = request.protocol() == Protocol::Tcp;
        if tcp {
            self.counts.tcp.fetch_add(1, Ordering::SeqCst);
        } else {
            self.counts.udp.fetch_add(1, Ordering::SeqCst);
        }
        let info = request.request_info().expect("one query");
        let qname = info.query.name().to_string().to_lowercase();
        let qtype = info.query.query_type();
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let special = match qname.as_str() {
            "servfail.example.test." => Some(ResponseCode::ServFail),
            "refused.example.test." => Some(ResponseCode::Refused),
            _ => None,
        };
        if let Some(code) = special {
            let resp = builder.error_msg(&request.metadata, code);
            return response_handle.send_response(resp).await.expect("send");
        }
        if qname == "big.example.test." && !tcp {
            meta.truncation = true;
            let resp = builder.build_no_records(meta);
            return response_handle.send_response(resp).await.expect("send");
        }
        let answers = match self.answer(&qname, qtype) {
            Some(a) => a,
            None => {
                meta.response_code = ResponseCode::NXDomain;
                Vec::new()
            }
        };
        let resp = builder.build(meta, answers.iter(), [], [], []);
        response_handle.send_response(resp).await.expect("send")
    }
}

/// A running DNS server on 127.0.0.1:port (UDP and TCP).
pub struct DnsServer {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    _server: Server<Zone>,
    _silent_udp: Option<std::net::UdpSocket>,
}

impl DnsServer {
    /// Starts the zone on a fresh port, UDP and TCP.
    pub async fn start() -> DnsServer {
        Self::start_with(true).await
    }

    /// Starts the zone on TCP only, with a UDP socket on the same port that never answers
    /// (a network where UDP/53 is dropped but TCP/53 passes).
    pub async fn start_tcp_only() -> DnsServer {
        Self::start_with(false).await
    }

    /// Starts the zone on a given address (e.g. 127.0.0.1:53 inside a test's own network
    /// namespace, where the system resolver can be pointed at it).
    pub async fn start_on(addr: SocketAddr) -> DnsServer {
        let tcp = std::net::TcpListener::bind(addr).expect("bind dns tcp");
        let udp = std::net::UdpSocket::bind(addr).expect("bind dns udp");
        Self::serve(tcp, udp, true)
    }

    /// Starts the zone on UDP only; nothing listens on TCP at that port, so TCP/53 is refused
    /// (a firewall that REJECTs TCP/53). Truncated answers then cannot be completed.
    pub async fn start_udp_only() -> DnsServer {
        let counts = Arc::new(Counts::default());
        let mut server = Server::new(Zone::new(counts.clone()));
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind dns udp");
        let addr = sock.local_addr().expect("addr");
        sock.set_nonblocking(true).expect("nonblocking");
        server.register_socket(tokio::net::UdpSocket::from_std(sock).expect("tokio udp"));
        DnsServer {
            addr,
            counts,
            _server: server,
            _silent_udp: None,
        }
    }

    /// Serves the zone on `tcp` only, counting into `counts` (nothing on UDP).
    pub fn serve_tcp(tcp: std::net::TcpListener, counts: Arc<Counts>) -> Server<Zone> {
        let mut server = Server::new(Zone::new(counts));
        tcp.set_nonblocking(true).expect("nonblocking");
        server.register_listener(
            tokio::net::TcpListener::from_std(tcp).expect("tokio tcp"),
            Duration::from_secs(5),
            4096,
        );
        server
    }

    async fn start_with(udp: bool) -> DnsServer {
        let (tcp, sock) = bind_pair();
        Self::serve(tcp, sock, udp)
    }

    fn serve(tcp: std::net::TcpListener, sock: std::net::UdpSocket, udp: bool) -> DnsServer {
        let counts = Arc::new(Counts::default());
        let mut server = Server::new(Zone::new(counts.clone()));
        let addr = tcp.local_addr().expect("addr");
        let mut silent_udp = None;
        if udp {
            sock.set_nonblocking(true).expect("nonblocking");
            server.register_socket(tokio::net::UdpSocket::from_std(sock).expect("tokio udp"));
        } else {
            silent_udp = Some(sock);
        }
        tcp.set_nonblocking(true).expect("nonblocking");
        server.register_listener(
            tokio::net::TcpListener::from_std(tcp).expect("tokio tcp"),
            Duration::from_secs(5),
            4096,
        );
        DnsServer {
            addr,
            counts,
            _server: server,
            _silent_udp: silent_udp,
        }
    }
}

/// A TCP listener and a UDP socket on the same free 127.0.0.1 port.
fn bind_pair() -> (std::net::TcpListener, std::net::UdpSocket) {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        if let Ok(udp) = std::net::UdpSocket::bind(tcp.local_addr().expect("addr")) {
            return (tcp, udp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// A "DNS server" that never answers: a bound UDP socket nobody reads and a listening TCP
/// socket nobody accepts from (the kernel completes the handshake, the query goes unanswered).
pub struct SilentDns {
    pub addr: SocketAddr,
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
}

impl SilentDns {
    pub fn start() -> SilentDns {
        let (tcp, udp) = bind_pair();
        SilentDns {
            addr: tcp.local_addr().expect("addr"),
            _udp: udp,
            _tcp: tcp,
        }
    }
}
