//! `kind: dns`: does `query` resolve, to what, and if not, *how* does it fail? Phase `resolve`.
//!
//! Asks either the configured `resolver` (`ip:port`) or the servers of the system configuration
//! (`/etc/resolv.conf`; `/etc/hosts` is never consulted: this probe measures DNS), on our own
//! sockets ([`wire`]): every run sends its packets (no cache, no name answered locally, not even
//! `*.localhost` or `*.invalid`), and what the wire did is what the result says.
//!
//! Transport: first UDP, given half the remaining time. A truncated UDP answer (TC) is asked
//! again over TCP; if TCP/53 then refuses, the result is `resolve/truncated_tcp_refused` (the
//! name works only where TCP/53 passes). If UDP gets no answer at all (timeout, or an ICMP error
//! on the connected socket), the query is repeated over TCP with the rest of the time.
//! `detail.dns.transport` says which transport answered and `detail.dns.truncated` whether UDP
//! was truncated, so "UDP/53 blocked, TCP/53 open" is visible. Failure words:
//! `resolve/nxdomain`, `resolve/servfail`, `resolve/dns_refused`, `resolve/no_answer`,
//! `resolve/refused` (the resolver's port answers ICMP port unreachable / RST: closed or
//! REJECTed), `resolve/timeout` (silently dropped), `resolve/truncated_tcp_refused`,
//! `resolve/bad_response`, `resolve/expect_failed`.

mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::RecordType;
use tokio::time::Instant;

use crate::config::{DnsSpec, RecordKind};

use super::ProbeContext;
use crate::outcome::details::DnsDetails;
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};
use wire::Transport;

/// Smallest per-transport timeout worth giving the resolver.
const MIN_TRY: Duration = Duration::from_millis(50);

/// Runs one dns probe.
pub async fn probe(spec: &DnsSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = resolve(&mut run, spec).await;
    run.finish(result)
}

/// A DNS-level answer: records of the asked type, or a negative response code.
struct Answer {
    rcode: ResponseCode,
    answers: Vec<String>,
    transport: Transport,
    truncated: bool,
    /// Why this answer is a failure unless `expect.rcode` asks for exactly this code.
    negative: Option<Fault>,
}

async fn resolve(run: &mut Run, spec: &DnsSpec) -> Result<(), Failure> {
    let servers = match spec.resolver {
        Some(addr) => vec![addr],
        // resolv.conf is a file read: off the runtime, like every file read.
        None => tokio::task::spawn_blocking(system_servers)
            .await
            .unwrap_or_else(|e| {
                Err(Fault::new(
                    Reason::Config,
                    format!("reading the system resolver configuration: {e}"),
                ))
            })
            .map_err(|f| f.at(Phase::Resolve))?,
    };
    run.detail.dns = Some(DnsDetails {
        record: spec.record.to_string(),
        resolver: spec.resolver.map_or_else(|| "system".to_string(), |a| a.to_string()),
        ..Default::default()
    });
    let name = if spec.query.ends_with('.') {
        spec.query.clone()
    } else {
        format!("{}.", spec.query)
    };
    let rtype = record_type(spec.record);
    let deadline = run.deadline();
    let answer = run
        .phase(Phase::Resolve, async move {
            let query = wire::query(&name, rtype)?;
            // Every server at once; the first that answers (with any code) wins.
            let mut tries: FuturesUnordered<_> = servers.iter().map(|s| ask(*s, &query, &name, rtype, deadline)).collect();
            let mut first_error: Option<Fault> = None;
            while let Some(result) = tries.next().await {
                match result {
                    Ok(answer) => return Ok(answer),
                    Err(f) => first_error = Some(most_telling(first_error, f)),
                }
            }
            Err(first_error.unwrap_or_else(|| Fault::new(Reason::Config, "no name server to ask")))
        })
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(f) => {
            if f.reason == Reason::TruncatedTcpRefused {
                if let Some(d) = run.detail.dns.as_mut() {
                    d.truncated = true;
                }
            }
            return Err(f);
        }
    };
    if let Some(d) = run.detail.dns.as_mut() {
        d.answers = answer.answers.clone();
        d.rcode = rcode_label(answer.rcode);
        d.transport = answer.transport.label().to_string();
        d.truncated = answer.truncated;
    }
    check_expect(spec, answer).map_err(|f| f.at(Phase::Resolve))
}

/// One server: UDP with half the remaining time; TCP after truncation or when UDP got no
/// answer at all.
async fn ask(server: SocketAddr, query: &Message, name: &str, rtype: RecordType, deadline: Instant) -> Result<Answer, Fault> {
    let udp_deadline = Instant::now() + (deadline.saturating_duration_since(Instant::now()) / 2).max(MIN_TRY);
    match wire::exchange(server, query, Transport::Udp, udp_deadline.min(deadline)).await {
        Ok(m) if !m.metadata.truncation => Ok(answer(&m, name, rtype, Transport::Udp, false)),
        Ok(_) => match wire::exchange(server, query, Transport::Tcp, deadline.max(Instant::now() + MIN_TRY)).await {
            Ok(m) => Ok(answer(&m, name, rtype, Transport::Tcp, true)),
            Err(tcp) if matches!(tcp.reason, Reason::Refused | Reason::Reset) => Err(Fault::new(
                Reason::TruncatedTcpRefused,
                format!(
                    "the UDP answer for {name} {rtype} was truncated (TC) and TCP/53 is needed for the full answer, but {}",
                    tcp.message
                ),
            )),
            Err(tcp) => Err(Fault::new(
                tcp.reason,
                format!("the UDP answer for {name} {rtype} was truncated (TC); TCP retry: {}", tcp.message),
            )),
        },
        Err(udp) if no_answer_at_all(&udp) => {
            match wire::exchange(server, query, Transport::Tcp, deadline.max(Instant::now() + MIN_TRY)).await {
                Ok(m) => Ok(answer(&m, name, rtype, Transport::Tcp, false)),
                // UDP silent and TCP no better: the UDP verdict is what a client sees first
                // (`timeout` = dropped, `refused` = closed or REJECTed), TCP's story attached.
                Err(tcp) if no_answer_at_all(&tcp) && matches!(udp.reason, Reason::Timeout | Reason::Refused) => {
                    Err(Fault::new(udp.reason, format!("{}; TCP fallback: {}", udp.message, tcp.message)))
                }
                Err(tcp) => Err(tcp),
            }
        }
        Err(other) => Err(other),
    }
}

/// Of two failures from different servers, the one that says more about the wire.
fn most_telling(previous: Option<Fault>, current: Fault) -> Fault {
    fn rank(r: &Reason) -> u8 {
        match r {
            Reason::Timeout => 0,
            Reason::Io => 1,
            Reason::Refused | Reason::Unreachable | Reason::Reset | Reason::BlockedLocally => 2,
            _ => 3,
        }
    }
    match previous {
        Some(p) if rank(&p.reason) >= rank(&current.reason) => p,
        _ => current,
    }
}

fn check_expect(spec: &DnsSpec, answer: Answer) -> Result<(), Fault> {
    let got = rcode_label(answer.rcode);
    match (&spec.expect.rcode, answer.negative) {
        (Some(want), _) if !want.eq_ignore_ascii_case(&got) => {
            return Err(Fault::new(Reason::ExpectFailed, format!("expected rcode {want}, got {got}")));
        }
        (Some(_), _) => {}
        (None, Some(negative)) => return Err(negative),
        (None, None) => {}
    }
    let missing: Vec<&String> = spec
        .expect
        .contains
        .iter()
        .filter(|want| !answer.answers.iter().any(|a| a.contains(want.as_str())))
        .collect();
    if !missing.is_empty() {
        return Err(Fault::new(
            Reason::ExpectFailed,
            format!("answers {:?} do not contain {:?}", answer.answers, missing),
        ));
    }
    Ok(())
}

/// The name servers of the system configuration (resolv.conf), with their ports.
fn system_servers() -> Result<Vec<SocketAddr>, Fault> {
    let (cfg, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| Fault::new(Reason::Config, format!("reading the system resolver configuration: {e}")))?;
    let mut out = Vec::new();
    for ns in cfg.name_servers() {
        let port = ns.connections.first().map_or(53, |c| c.port);
        let a = SocketAddr::new(ns.ip, port);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(Fault::new(Reason::Config, "the system resolver configuration lists no name server"));
    }
    Ok(out)
}

/// A response message → an [`Answer`]: records of the asked type, or a negative code.
fn answer(m: &Message, name: &str, rtype: RecordType, transport: Transport, truncated: bool) -> Answer {
    let rcode = m.metadata.response_code;
    let via = transport.label();
    let answers: Vec<String> = m
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype)
        .map(|r| r.data.to_string())
        .collect();
    let negative = match rcode {
        ResponseCode::NoError if answers.is_empty() => Some(Fault::new(
            Reason::NoAnswer,
            format!("{name} exists but has no {rtype} record (via {via})"),
        )),
        ResponseCode::NoError => None,
        ResponseCode::NXDomain => Some(Fault::new(Reason::Nxdomain, format!("{name} does not exist: NXDOMAIN (via {via})"))),
        code => {
            let reason = match code {
                ResponseCode::ServFail => Reason::Servfail,
                ResponseCode::Refused => Reason::DnsRefused,
                _ => Reason::BadResponse,
            };
            Some(Fault::new(
                reason,
                format!("the resolver answered {code} for {name} {rtype} (via {via})"),
            ))
        }
    };
    Answer {
        rcode,
        answers,
        transport,
        truncated,
        negative,
    }
}

/// Whether an error means "no DNS answer came back at all" (worth retrying over TCP).
fn no_answer_at_all(f: &Fault) -> bool {
    matches!(f.reason, Reason::Timeout | Reason::Refused | Reason::Unreachable | Reason::Io)
}

fn record_type(k: RecordKind) -> RecordType {
    match k {
        RecordKind::A => RecordType::A,
        RecordKind::Aaaa => RecordType::AAAA,
        RecordKind::Cname => RecordType::CNAME,
        RecordKind::Srv => RecordType::SRV,
        RecordKind::Txt => RecordType::TXT,
    }
}

/// `noerror`, `nxdomain`, `servfail`, `refused`, ... (the words `expect.rcode` uses).
fn rcode_label(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "noerror".into(),
        ResponseCode::NXDomain => "nxdomain".into(),
        ResponseCode::ServFail => "servfail".into(),
        ResponseCode::Refused => "refused".into(),
        ResponseCode::FormErr => "formerr".into(),
        ResponseCode::NotImp => "notimp".into(),
        other => format!("rcode_{}", u16::from(other)),
    }
}
