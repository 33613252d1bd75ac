//! A tiny authoritative DNS answerer over UDP (hickory-proto codec) for one test name.
//!
//! It lets a `dns` probe pass (or fail in a known way) with no network and no system resolver
//! involved: the configured name answers A/AAAA with the configured addresses (default: the
//! relay address), other types of that name are NOERROR with no data, any other name is
//! NXDOMAIN. No recursion, no TCP (answers are far below 512 bytes, never truncated).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use serde::Deserialize;
use tokio::net::UdpSocket;

use super::config::Listen;
use super::metrics::Counters;
use super::Shutdown;

/// TTL of every answer: short, the demo's addresses change at every start.
const TTL: u32 = 30;

/// `dns:` in the responder config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsZone {
    /// UDP listeners.
    pub listen: Vec<Listen>,
    /// The one name answered, e.g. `relay.egress-probe.test`.
    pub name: String,
    /// Addresses returned for it; default: the relay address.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// The name and addresses actually answered.
#[derive(Clone, Debug)]
pub struct Answers {
    name: String,
    addresses: Vec<IpAddr>,
}

impl Answers {
    /// `name` (case-insensitive, trailing dot optional) answers with `addresses`.
    pub fn new(name: &str, addresses: Vec<IpAddr>) -> Answers {
        Answers {
            name: normalize(name),
            addresses,
        }
    }

    /// The response to one query datagram, or `None` if it is not a DNS query.
    pub fn respond(&self, query: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(query).ok()?;
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.authoritative = true;
        resp.add_queries(req.queries.clone());
        match req.queries.first() {
            Some(q) if normalize(&q.name().to_ascii()) == self.name => {
                for ip in &self.addresses {
                    let rdata = match (q.query_type(), ip) {
                        (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                        (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    resp.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
                }
            }
            Some(_) => resp.metadata.response_code = ResponseCode::NXDomain,
            None => resp.metadata.response_code = ResponseCode::FormErr,
        }
        resp.to_vec().ok()
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Answers queries on `socket` until shutdown.
pub async fn serve(socket: UdpSocket, answers: Arc<Answers>, counters: Arc<Counters>, shutdown: Shutdown) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("DNS recv: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        tracing::debug!(peer = %from, "DNS query");
        if let Some(resp) = answers.respond(&buf[..n]) {
            if socket.send_to(&resp, from).await.is_ok() {
                counters.dns_responses_total.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn ask(a: &Answers, name: &str, t: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_str(name).unwrap(), t));
        Message::from_vec(&a.respond(&q.to_vec().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn answers_its_name_and_nxdomain_otherwise() {
        let a = Answers::new(
            "relay.egress-probe.test",
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        );
        let r = ask(&a, "Relay.Egress-Probe.Test.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(ask(&a, "relay.egress-probe.test", RecordType::AAAA).answers.len(), 1);
        assert_eq!(ask(&a, "other.test", RecordType::A).metadata.response_code, ResponseCode::NXDomain);
    }
}
