//! `kind: dns`: does `query` resolve, to what, and if not, *how* does it fail? Phase `resolve`.
//!
//! Uses hickory-resolver against either the configured `resolver` (`ip:port`) or the servers of
//! the system configuration (`/etc/resolv.conf`; `/etc/hosts` is never consulted: this probe
//! measures DNS). A fresh resolver per run, so no answer comes from a cache of an earlier run.
//!
//! Transport: first UDP (hickory retries over TCP by itself when an answer is truncated), given
//! half the remaining time; if UDP gets no answer at all (timeout or an ICMP error), the query is
//! repeated over TCP with the rest of the time. `detail.dns.transport` says which answered, so
//! "UDP/53 blocked, TCP/53 open" is visible. Failure words: `resolve/nxdomain`,
//! `resolve/servfail`, `resolve/dns_refused`, `resolve/no_answer`, `resolve/timeout`,
//! `resolve/expect_failed`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::Resolver;

use crate::config::{DnsSpec, RecordKind};

use super::ProbeContext;
use crate::outcome::details::DnsDetails;
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

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
    transport: &'static str,
    /// Why this answer is a failure unless `expect.rcode` asks for exactly this code.
    negative: Option<Fault>,
}

async fn resolve(run: &mut Run, spec: &DnsSpec) -> Result<(), Failure> {
    let servers = match spec.resolver {
        Some(addr) => vec![addr],
        None => system_servers().map_err(|f| f.at(Phase::Resolve))?,
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
            let udp_budget = (deadline.saturating_duration_since(tokio::time::Instant::now()) / 2).max(MIN_TRY);
            match lookup(&servers, false, &name, rtype, udp_budget).await {
                Err(udp) if no_answer_at_all(&udp) => {
                    let rest = deadline.saturating_duration_since(tokio::time::Instant::now()).max(MIN_TRY);
                    match lookup(&servers, true, &name, rtype, rest).await {
                        // UDP silent and TCP no better: the UDP verdict is what a client
                        // sees first (e.g. `timeout` = dropped), with TCP's story attached.
                        Err(tcp) if no_answer_at_all(&tcp) && udp.reason == Reason::Timeout => {
                            Err(Fault::new(udp.reason, format!("{}; TCP fallback: {}", udp.message, tcp.message)))
                        }
                        other => other,
                    }
                }
                other => other,
            }
        })
        .await?;
    if let Some(d) = run.detail.dns.as_mut() {
        d.answers = answer.answers.clone();
        d.rcode = rcode_label(answer.rcode);
        d.transport = answer.transport.to_string();
    }
    check_expect(spec, answer).map_err(|f| f.at(Phase::Resolve))
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

/// One lookup with a fresh resolver: UDP (TCP on truncation), or TCP only.
async fn lookup(servers: &[SocketAddr], tcp_only: bool, name: &str, rtype: RecordType, timeout: Duration) -> Result<Answer, Fault> {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut conns = Vec::new();
            if !tcp_only {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                conns.push(udp);
            }
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            conns.push(tcp);
            NameServerConfig::new(s.ip(), true, conns)
        })
        .collect();
    let mut builder = Resolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), TokioRuntimeProvider::default());
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 0; // retries after the first try: none, the deadline is ours
    opts.use_hosts_file = ResolveHosts::Never;
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.num_concurrent_reqs = servers.len().max(1);
    let resolver = builder
        .build()
        .map_err(|e| Fault::new(Reason::Config, format!("building the resolver: {e}")))?;
    let transport = if tcp_only { "tcp" } else { "udp" };
    let lookup = match resolver.lookup(name, rtype).await {
        Ok(l) => l,
        Err(e) => return negative(&e, name, rtype, transport),
    };
    let answers: Vec<String> = lookup
        .answers()
        .iter()
        .filter(|r| r.record_type() == rtype)
        .map(|r| r.data.to_string())
        .collect();
    // Only other types (e.g. a CNAME whose target has no record of this type) is no answer.
    let negative = answers
        .is_empty()
        .then(|| Fault::new(Reason::NoAnswer, format!("{name} has no {rtype} record (via {transport})")));
    Ok(Answer {
        rcode: ResponseCode::NoError,
        answers,
        transport,
        negative,
    })
}

/// Whether an error means "no DNS answer came back at all" (worth retrying over TCP).
fn no_answer_at_all(f: &Fault) -> bool {
    matches!(f.reason, Reason::Timeout | Reason::Refused | Reason::Unreachable | Reason::Io)
}

/// hickory error → a negative [`Answer`] (the server answered with a code) or a [`Fault`]
/// (no usable answer came back).
fn negative(e: &NetError, name: &str, rtype: RecordType, transport: &'static str) -> Result<Answer, Fault> {
    let (rcode, fault) = match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.response_code == ResponseCode::NXDomain => (
            nr.response_code,
            Fault::new(Reason::Nxdomain, format!("{name} does not exist: NXDOMAIN (via {transport})")),
        ),
        NetError::Dns(DnsError::NoRecordsFound(nr)) => (
            nr.response_code,
            Fault::new(
                Reason::NoAnswer,
                format!("{name} exists but has no {rtype} record (via {transport})"),
            ),
        ),
        NetError::Dns(DnsError::ResponseCode(code)) => {
            let reason = match code {
                ResponseCode::ServFail => Reason::Servfail,
                ResponseCode::Refused => Reason::DnsRefused,
                ResponseCode::NXDomain => Reason::Nxdomain,
                _ => Reason::BadResponse,
            };
            (
                *code,
                Fault::new(reason, format!("the resolver answered {code} for {name} {rtype} (via {transport})")),
            )
        }
        NetError::Timeout => {
            return Err(Fault::new(
                Reason::Timeout,
                format!("no DNS answer over {transport} for {name} {rtype}"),
            ))
        }
        NetError::Io(io) => return Err(crate::net::fault_from_io(&format!("DNS over {transport}"), io)),
        NetError::NoConnections => {
            return Err(Fault::new(
                Reason::Io,
                format!("DNS over {transport}: no connection to any name server"),
            ))
        }
        other => return Err(Fault::new(Reason::BadResponse, format!("DNS over {transport}: {other}"))),
    };
    Ok(Answer {
        rcode,
        answers: Vec::new(),
        transport,
        negative: Some(fault),
    })
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
