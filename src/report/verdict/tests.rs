//! One unit test per rule of the table, on constructed outcomes (the real-outcome tests live in
//! `tests/verdict.rs`). `every_rule_has_a_case` keeps the table and the cases in step.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::outcome::details::{
    BindingLifetime, ConcurrentDetails, Details, HoldDetails, IceDetails, IceRelay, PathDetails, PathHop, RejectOrigin, RelayDetails,
    StunDetails, TlsDetails, UdpPortsDetails, WebsocketDetails,
};
use crate::outcome::{Endpoint, Failure, PhaseTiming};

/// The typed endpoint a real check would carry for `target` of `kind` (the cases below are
/// written as the display target, for readability).
fn endpoint(kind: &str, target: &str) -> Endpoint {
    use crate::config::{endpoint_of_url, HostPort};
    let first = target.split([',', ' ']).next().unwrap_or_default();
    let host_only = |transport| Endpoint {
        host: first.trim_end_matches('.').to_string(),
        port: None,
        transport,
    };
    match kind {
        "stun" | "turn" | "ice" => IceUrl::parse(first)
            .map(|u| u.endpoint())
            .unwrap_or_else(|_| host_only(Transport::Udp)),
        "http" | "websocket" | "remote_write" => url::Url::parse(first)
            .map(|u| endpoint_of_url(&u))
            .unwrap_or_else(|_| host_only(Transport::Tcp)),
        "dns" => host_only(Transport::Udp),
        other => {
            let (transport, rest) = match first.split_once(':') {
                Some(("udp", rest)) if other == "path" => (Transport::Udp, rest),
                Some(("tcp", rest)) if other == "path" => (Transport::Tcp, rest),
                _ if other == "media" => (Transport::Udp, first),
                _ if other == "tls" => (Transport::Tls, first),
                _ => (Transport::Tcp, first),
            };
            match HostPort::parse(rest, None) {
                Ok(hp) => Endpoint {
                    host: hp.host,
                    port: Some(hp.port),
                    transport,
                },
                Err(_) => host_only(transport),
            }
        }
    }
}

fn pass(name: &str, kind: &str, target: &str) -> ProbeResult {
    ProbeResult {
        name: name.into(),
        kind: kind.into(),
        target: target.into(),
        endpoint: endpoint(kind, target),
        outcome: Outcome {
            success: true,
            phases: vec![PhaseTiming {
                phase: Phase::Connect,
                duration: Duration::from_millis(3),
            }],
            failure: None,
            total: Duration::from_millis(3),
            detail: Details::default(),
        },
    }
}

fn fail(name: &str, kind: &str, target: &str, phase: Phase, reason: Reason) -> ProbeResult {
    let mut r = pass(name, kind, target);
    r.outcome.success = false;
    r.outcome.phases.push(PhaseTiming {
        phase,
        duration: Duration::from_millis(5),
    });
    // The message carries a "secret" to prove verdicts never echo messages.
    r.outcome.failure = Some(Failure::new(phase, reason, "password=hunter2"));
    r
}

fn tls_detail(r: &mut ProbeResult, issuer: &str, server_name: &str) {
    r.outcome.detail.tls = Some(TlsDetails {
        issuer: issuer.into(),
        server_name: server_name.into(),
        ..Default::default()
    });
}

/// One hold: (lifetime in seconds, pings during the hold, survived).
type Held = (f64, u32, bool);

fn hold(&(secs, pings, survived): &Held) -> HoldDetails {
    HoldDetails {
        planned: Duration::from_secs(6),
        lifetime: Duration::from_secs_f64(secs),
        pings,
        survived,
    }
}

/// A websocket probe with these holds: one hold (the first), or with several the holds of a
/// `concurrent: N` run. Fails `hold/closed` when its first hold was cut.
fn held(name: &str, holds: &[Held]) -> ProbeResult {
    let target = "wss://sig.example.com/ws";
    let mut r = if holds[0].2 {
        pass(name, "websocket", target)
    } else {
        fail(name, "websocket", target, Phase::Hold, Reason::Closed)
    };
    r.outcome.detail.websocket = Some(WebsocketDetails {
        status: Some(101),
        hold: Some(hold(&holds[0])),
        ..Default::default()
    });
    if holds.len() > 1 {
        r.outcome.detail.concurrent = Some(ConcurrentDetails {
            requested: holds.len() as u32,
            established: holds.len() as u32,
            holds: holds.iter().map(hold).collect(),
        });
    }
    r
}

/// (rule id, results, the sentence expected from that rule)
fn cases() -> Vec<(&'static str, Vec<ProbeResult>, String)> {
    let turns443 = "turns:relay.example.com:443?transport=tcp";
    let stun3478 = "stun:relay.example.com:3478?transport=udp";
    let mut intercepted = fail("tls-443", "tls", "relay.example.com:443", Phase::Tls, Reason::PinMismatch);
    tls_detail(&mut intercepted, "C=US, O=Corp, CN=Corp Proxy CA", "relay.example.com");
    let mut intercepted_turn = fail("turn-tls", "turn", turns443, Phase::Tls, Reason::PinMismatch);
    tls_detail(&mut intercepted_turn, "CN=Corp Proxy CA", "relay.example.com");
    let mut untrusted = fail("turn-tls", "turn", turns443, Phase::Tls, Reason::UntrustedIssuer);
    tls_detail(&mut untrusted, "CN=Corp Proxy CA", "relay.example.com");
    let mut untrusted_configured = fail("turn-tls", "turn", turns443, Phase::Tls, Reason::UntrustedIssuer);
    tls_detail(&mut untrusted_configured, "CN=Our Relay CA", "relay.example.com");
    if let Some(t) = untrusted_configured.outcome.detail.tls.as_mut() {
        t.issuer_configured = true;
    }
    let mut mismatch = fail("wss", "websocket", "wss://sig.example.com/", Phase::Tls, Reason::NameMismatch);
    tls_detail(&mut mismatch, "CN=Corp Proxy CA", "sig.example.com");
    let mut limited = fail("api", "http", "https://api.example.com/health", Phase::Request, Reason::Status(429));
    limited.outcome.detail.retry_after = Some(Duration::from_secs(30));
    let mut relay_udp = fail(
        "turn-udp",
        "turn",
        "turn:relay.example.com:3478?transport=udp",
        Phase::Relay,
        Reason::Timeout,
    );
    relay_udp.outcome.detail.relay = Some(RelayDetails {
        transport: "udp".into(),
        ..Default::default()
    });
    let ice_udp_only = ice_fail(&[("udp", 0)], &[]);
    let mut ice_tls_only = pass("ice", "ice", "turn:relay.example.com:3478?transport=udp");
    ice_tls_only.outcome.detail.ice = Some(ice_detail(
        &[("udp", 0), ("tls", 1)],
        &[("tls", "turns:relay.example.com:443?transport=tcp")],
    ));
    let nat = |name: &str, mapping: &str, filtering: Option<&str>, lifetime: Option<(u64, Option<u64>)>| {
        let mut r = pass(name, "stun", "stun:nat.example.com:3480");
        r.outcome.detail.stun = Some(StunDetails {
            transport: "udp".into(),
            nat_mapping: Some(mapping.into()),
            nat_filtering: filtering.map(str::to_string),
            binding_lifetime: lifetime.map(|(a, e)| BindingLifetime {
                alive: Duration::from_secs(a),
                expired: e.map(Duration::from_secs),
                checks: 7,
            }),
            ..Default::default()
        });
        r
    };
    let mut peer_only = fail("odd", "tcp", "not a target", Phase::Close, Reason::Io);
    peer_only.outcome.detail.peer = Some("10.0.0.1:5060".parse::<SocketAddr>().unwrap());
    vec![
        (
            "nat_symmetric",
            vec![
                nat("nat-b", "address_and_port_dependent", Some("address_and_port_dependent"), None),
                nat("nat-a", "address_and_port_dependent", None, None),
            ],
            "Symmetric NAT (address-and-port-dependent mapping, seen by nat-a, nat-b): direct media fails towards peers behind NAT; calls need the relay (Genesys Cloud requires endpoint-independent mapping)".into(),
        ),
        (
            "nat_short_lifetime",
            vec![nat("nat", "endpoint_independent", None, Some((8, Some(12))))],
            "Idle UDP mappings expire after about 10 s (nat), below the 2 minutes RFC 4787 (REQ-5) asks for: media and keepalives must never pause that long, or calls lose audio".into(),
        ),
        (
            "nat_endpoint_independent",
            vec![nat("nat", "endpoint_independent", Some("address_and_port_dependent"), Some((60, None)))],
            "NAT mapping is endpoint-independent with address-and-port-dependent filtering, as Genesys Cloud requires (nat): direct media can work once this side has sent to the peer, as ICE does".into(),
        ),
        (
            "udp_dropped_relay_works",
            vec![
                fail("stun-udp", "stun", stun3478, Phase::Stun, Reason::Timeout),
                pass("turn-tcp", "turn", "turn:relay.example.com:3478?transport=tcp"),
                pass("turn-tls", "turn", turns443),
            ],
            "UDP to 3478 is dropped (stun/timeout); TURN/TLS on 443 works, so calls will relay over it with higher latency".into(),
        ),
        (
            "udp_dropped_relay_fails",
            vec![
                fail("stun-udp", "stun", stun3478, Phase::Stun, Reason::Timeout),
                fail("turn-tls", "turn", turns443, Phase::Connect, Reason::Timeout),
            ],
            "UDP to 3478 is dropped (stun/timeout) and TURN over TCP/TLS fails too: calls will have no media path".into(),
        ),
        (
            "udp_dropped",
            vec![fail("turn-udp", "turn", "turn:relay.example.com?transport=udp", Phase::Allocate, Reason::Timeout)],
            "UDP to 3478 is dropped (allocate/timeout): media needs TURN over TLS (e.g. on 443); add a turns: probe to check that fallback".into(),
        ),
        (
            "tls_intercepted",
            vec![intercepted, intercepted_turn],
            "TLS on 443 is intercepted (pin mismatch, issuer 'Corp Proxy CA'): TURN over TLS will fail".into(),
        ),
        (
            "tls_untrusted",
            vec![untrusted],
            "TLS on 443 presents a certificate from an untrusted issuer 'Corp Proxy CA' (tls/untrusted_issuer), likely an intercepting proxy: TURN over TLS will fail".into(),
        ),
        (
            "tls_untrusted_configured",
            vec![untrusted_configured],
            "TLS on 443 presents a certificate that the configured ca_file does not validate, although its issuer 'Our Relay CA' is one you configured (tls/untrusted_issuer): check the ca_file and the server's chain; TURN over TLS will fail".into(),
        ),
        (
            "tls_expired",
            vec![fail("tls", "tls", "relay.example.com:5349", Phase::Tls, Reason::Expired)],
            "The certificate on relay.example.com:5349 has expired (tls/expired): clients that verify the certificate (TURN over TLS, WebSocket signalling) will fail".into(),
        ),
        (
            "tls_name_mismatch",
            vec![mismatch],
            "The certificate on 443 is not for sig.example.com (tls/name_mismatch), issuer 'Corp Proxy CA': a wrong endpoint or an intercepting proxy; WebSocket signalling will fail".into(),
        ),
        (
            "tls_failed",
            vec![fail("https", "http", "https://app.example.com:8443/", Phase::Tls, Reason::Reset)],
            "TLS on 8443 fails during the handshake (tls/reset): a middlebox may be interfering; HTTPS will fail".into(),
        ),
        (
            "dns_nxdomain",
            vec![fail("dns", "dns", "relay.example.com A", Phase::Resolve, Reason::Nxdomain)],
            "DNS for relay.example.com does not resolve (resolve/nxdomain)".into(),
        ),
        (
            "dns_failed",
            vec![fail("tcp", "tcp", "relay.example.com:443", Phase::Resolve, Reason::Servfail)],
            "DNS for relay.example.com fails (resolve/servfail): the resolver is broken, refuses, or is blocked".into(),
        ),
        (
            "dns_no_answer",
            vec![fail("dns6", "dns", "relay.example.com AAAA", Phase::Resolve, Reason::NoAnswer)],
            "DNS for relay.example.com has no record of the asked type (resolve/no_answer)".into(),
        ),
        (
            "proxy_auth",
            vec![fail("wss", "websocket", "wss://sig.example.com/ws", Phase::Proxy, Reason::Auth)],
            "The HTTP proxy demands authentication for sig.example.com:443 (proxy/auth): configure proxy credentials".into(),
        ),
        (
            "proxy_upstream_failed",
            vec![fail("wss", "websocket", "wss://sig.example.com/ws", Phase::Proxy, Reason::Status(503))],
            "The HTTP proxy could not reach the target sig.example.com:443 (proxy/status_503): the target is down or unreachable from the proxy (not a policy block)".into(),
        ),
        (
            "proxy_denied",
            vec![fail("tls", "tls", "relay.example.com:5349", Phase::Proxy, Reason::Status(403))],
            "The HTTP proxy does not let relay.example.com:5349 through (proxy/status_403)".into(),
        ),
        (
            "connection_cap",
            vec![{
                let mut r = fail("wss-cap", "websocket", "wss://sig.example.com/ws", Phase::Upgrade, Reason::Status(429));
                r.outcome.detail.retry_after = Some(Duration::from_secs(5));
                r.outcome.detail.concurrent = Some(ConcurrentDetails {
                    requested: 8,
                    established: 5,
                    holds: vec![],
                });
                r
            }],
            "WebSocket signalling on 443 allows only 5 of 8 connections at once (upgrade/status_429): a cap of 5 per client or user (Retry-After 5 s); more parallel clients with these credentials are refused".into(),
        ),
        (
            "connection_cap",
            vec![{
                let mut r = fail("turn-quota", "turn", "turn:relay.example.com:3478?transport=udp", Phase::Allocate, Reason::Quota);
                r.outcome.detail.concurrent = Some(ConcurrentDetails {
                    requested: 8,
                    established: 5,
                    holds: vec![],
                });
                r
            }],
            "TURN on 3478 allows only 5 of 8 allocations at once (allocate/quota): an allocation quota of 5 (486: these credentials' own quota, or the server's total quota for all users); more parallel calls with these credentials are refused".into(),
        ),
        (
            "rate_limited",
            vec![limited],
            "429 from api.example.com: clients are retrying too fast (Retry-After 30 s)".into(),
        ),
        (
            "ws_upgrade_timeout",
            vec![fail("wss", "websocket", "wss://sig.example.com/ws", Phase::Upgrade, Reason::Timeout)],
            "WebSocket signalling on 443 times out during upgrade (upgrade/timeout): a proxy or firewall holds the Upgrade request".into(),
        ),
        (
            "ws_not_upgraded",
            vec![fail("ws", "websocket", "ws://sig.example.com:8080/ws", Phase::Upgrade, Reason::NotUpgraded)],
            "WebSocket signalling on 8080 is not upgraded (upgrade/not_upgraded): a proxy strips the Upgrade header or the server refuses it".into(),
        ),
        (
            "ws_idle_timeout",
            vec![held("wss-idle", &[(3.02, 0, false)]), held("wss-idle-2", &[(3.11, 0, false)])],
            "WebSocket cut after ~3 s of idle, every time (2 idle holds cut between 3.0 and 3.1 s, hold/closed): a proxy or firewall idle timeout of about 3 s; send pings more often than that (ping_interval < 3 s)".into(),
        ),
        (
            "ws_lifetime_limit",
            vec![
                held("wss-pinged", &[(60.4, 59, false), (60.2, 59, false), (59.8, 58, false)]),
                held("wss-pinged-2", &[(60.1, 59, false)]),
            ],
            "WebSocket cut after ~60 s although kept alive with pings, every time (4 pinged holds cut between 59.8 and 60.4 s, hold/closed): a proxy or firewall limits a connection's lifetime to about 60 s; pings do not help, the softphone must reconnect before that".into(),
        ),
        (
            "ws_hold_cut",
            vec![held("wss-idle", &[(3.02, 0, false)])],
            "The WebSocket of probe wss-idle (websocket to sig.example.com:443) was cut 3.0 s into a hold (idle, hold/closed): one cut is not yet a pattern: hold several sockets at once (concurrent: N) or watch egress_probe_websocket_hold_seconds for cuts at the same age (an idle or lifetime timer)".into(),
        ),
        (
            "turn_auth",
            vec![fail("turn-tls", "turn", turns443, Phase::Allocate, Reason::Auth)],
            "TURN on 443 rejects the credentials (allocate/auth): check the username/password or REST secret and the clock".into(),
        ),
        (
            "turn_forbidden",
            vec![fail("turn", "turn", "turn:relay.example.com:3478?transport=udp", Phase::Permission, Reason::Forbidden)],
            "TURN on 3478 refuses the request (permission/forbidden): the server's policy forbids it".into(),
        ),
        (
            "turn_capacity",
            vec![fail("turn", "turn", turns443, Phase::Allocate, Reason::Quota)],
            "TURN on 443 has no allocation to give (allocate/quota): the relay is full or the user's quota is used up".into(),
        ),
        (
            "relay_no_echo",
            vec![relay_udp],
            "TURN over UDP on 3478 allocates but relayed packets do not come back (relay/timeout): the relay cannot reach the peer".into(),
        ),
        (
            "call_quality_poor",
            vec![{
                let mut r = fail("turn-call", "turn", "turn:relay.example.com:3478", Phase::Media, Reason::Loss);
                r.outcome.detail.media = Some(crate::outcome::details::MediaDetails {
                    sent: 100,
                    received: 95,
                    loss: 0.05,
                    one_way_loss: 0.0253,
                    crossings: 2,
                    jitter: Some(Duration::from_micros(1200)),
                    rtt_avg: Some(Duration::from_millis(42)),
                    mos: 3.88,
                    ..Default::default()
                });
                r
            }],
            "Media over UDP to 3478 on relay.example.com gets through but not at call quality (media/loss: loss 5.0% (≈2.5% one way), jitter 1.2 ms, round trip 42 ms, MOS 3.9): expect choppy or delayed calls".into(),
        ),
        (
            "media_silent",
            vec![{
                let mut r = fail("call", "media", "127.0.0.1:9999", Phase::Media, Reason::Loss);
                r.outcome.detail.media = Some(crate::outcome::details::MediaDetails {
                    sent: 100,
                    received: 0,
                    loss: 1.0,
                    ..Default::default()
                });
                r
            }],
            "Media over UDP to 9999 on 127.0.0.1 does not come back: none of 100 packets returned (media/loss): UDP to that port is dropped on the way out or back, or no UDP echo answers there".into(),
        ),
        (
            "ice_no_relay_fallback",
            vec![ice_udp_only.clone(), pass("turn-tls", "turn", turns443)],
            "ICE gathered no relay candidate over UDP (gather/no_relay), but TURN/TLS on 443 works: give softphones that server (turns:relay.example.com:443) and calls will relay over it".into(),
        ),
        (
            "ice_no_relay",
            vec![ice_udp_only, fail("turn-tls", "turn", turns443, Phase::Connect, Reason::Timeout)],
            "ICE gathered no relay candidate over UDP (gather/no_relay): softphones cannot fall back to the relay".into(),
        ),
        (
            "ice_no_srflx",
            vec![fail("ice", "ice", stun3478, Phase::Gather, Reason::NoSrflx)],
            "ICE gathered no server-reflexive candidate (gather/no_srflx): STUN over UDP is blocked, direct media will not work".into(),
        ),
        (
            "rejected_before_server",
            vec![{
                let mut r = fail("tcp-443", "tcp", "relay.example.com:443", Phase::Connect, Reason::Refused);
                r.outcome.detail.reject_origin = Some(RejectOrigin {
                    address: "10.0.0.1".parse().unwrap(),
                    is_target: false,
                    answer: "port_unreachable".into(),
                    hop: None,
                });
                r
            }],
            "TCP to 443 on relay.example.com is rejected (connect/refused), and the reject comes from 10.0.0.1, not the server: a firewall before it".into(),
        ),
        (
            "rejected_before_server",
            vec![{
                let mut r = fail("path-443", "path", "tcp:relay.example.com:443", Phase::Trace, Reason::Refused);
                r.outcome.detail.path = Some(PathDetails {
                    end: "rejected".into(),
                    rejected_by: Some(RejectOrigin {
                        address: "10.0.0.1".parse().unwrap(),
                        is_target: false,
                        answer: "admin_prohibited".into(),
                        hop: Some(2),
                    }),
                    ..Default::default()
                });
                r
            }],
            "TCP to 443 on relay.example.com is rejected (trace/refused), and the reject comes from 10.0.0.1, 2 hops out, not the server: a firewall before it".into(),
        ),
        (
            "udp_ports_closed",
            vec![{
                let mut r = fail("media", "udp_ports", "udp:relay.example.com:20000-20099", Phase::Udp, Reason::Closed);
                r.endpoint = Endpoint {
                    host: "relay.example.com".into(),
                    port: Some(20000),
                    transport: Transport::Udp,
                };
                r.outcome.detail.udp_ports = Some(UdpPortsDetails {
                    set: "20000-20099".into(),
                    open: vec!["20000-20049".into()],
                    closed: vec!["20050-20099".into()],
                    set_size: 100,
                    open_ports: 50,
                    closed_ports: 50,
                    covered: 100,
                    coverage: 1.0,
                    ..Default::default()
                });
                r
            }],
            "UDP media ports on relay.example.com: 20050-20099 get no echo while 20000-20049 do: a firewall passes only part of the media range, so calls whose media lands on a closed port have no audio (udp/closed; 100 of 100 ports tried so far)".into(),
        ),
        (
            "udp_ports_closed",
            vec![{
                let mut r = fail("media", "udp_ports", "udp:relay.example.com:16384-65535", Phase::Udp, Reason::Closed);
                r.endpoint = Endpoint {
                    host: "relay.example.com".into(),
                    port: Some(16384),
                    transport: Transport::Udp,
                };
                r.outcome.detail.udp_ports = Some(UdpPortsDetails {
                    set: "16384-65535".into(),
                    set_size: 49152,
                    sampled: 64,
                    silent_once: 64,
                    ..Default::default()
                });
                r
            }],
            "UDP media ports on relay.example.com: none of the 64 port(s) of 16384-65535 tried so far answers: UDP to the media range is blocked, or no echo responder runs there (udp/closed; 64 of 49152 ports tried so far)".into(),
        ),
        (
            "path_silent_after_hop",
            vec![{
                let mut r = fail("path-3478", "path", "udp:relay.example.com:3478", Phase::Trace, Reason::Timeout);
                r.outcome.detail.path = Some(PathDetails {
                    end: "silence".into(),
                    last_answered: Some(1),
                    hops: vec![
                        PathHop {
                            ttl: 1,
                            address: Some("10.0.0.1".parse().unwrap()),
                            answer: "time_exceeded".into(),
                            ..Default::default()
                        },
                        PathHop {
                            ttl: 2,
                            answer: "silence".into(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                });
                r
            }],
            "UDP to 3478 on relay.example.com goes silent after hop 1 (10.0.0.1) (trace/timeout): packets are dropped after that hop".into(),
        ),
        (
            "rejected",
            vec![fail("tcp-8443", "tcp", "relay.example.com:8443", Phase::Connect, Reason::Refused)],
            "TCP to 8443 on relay.example.com is rejected (connect/refused): a firewall rejects it or nothing listens there".into(),
        ),
        (
            "dropped",
            vec![fail("wss", "websocket", "wss://sig.example.com/", Phase::Connect, Reason::Timeout)],
            "TCP to 443 on sig.example.com is silently dropped (connect/timeout): a firewall DROP rule".into(),
        ),
        (
            "unreachable",
            vec![fail("tcp", "tcp", "[2001:db8::1]:443", Phase::Connect, Reason::Unreachable)],
            "2001:db8::1 is unreachable (connect/unreachable): no route from this network".into(),
        ),
        (
            "reset",
            vec![fail("tcp", "tcp", "relay.example.com:443", Phase::Request, Reason::Reset)],
            "TCP to 443 on relay.example.com is cut by a reset (request/reset): a middlebox ends the connection".into(),
        ),
        (
            "blocked_locally",
            vec![fail("stun", "stun", stun3478, Phase::Stun, Reason::BlockedLocally)],
            "This host's own firewall blocks UDP to 3478 (stun/blocked_locally)".into(),
        ),
        (
            "http_status",
            vec![fail("api", "http", "https://api.example.com/health", Phase::Request, Reason::Status(503))],
            "api.example.com answers HTTP 503 on 443 (request/status_503)".into(),
        ),
        ("other_failure", vec![peer_only], "probe odd (tcp to not:5060) fails (close/io)".into()),
        (
            "ice_relay_only_over_stream",
            vec![ice_tls_only.clone(), pass("tcp", "tcp", "relay.example.com:443")],
            "ICE got no relay over TURN/UDP, only over TURN/TLS on 443: calls will relay over TLS with higher latency (is UDP to the TURN server blocked?)".into(),
        ),
        (
            "all_pass",
            vec![pass("tcp", "tcp", "relay.example.com:443"), pass("turn-tls", "turn", turns443)],
            "all paths work (2 probes passed)".into(),
        ),
        (
            "some_pass",
            vec![
                pass("tcp", "tcp", "relay.example.com:443"),
                fail("tcp-8443", "tcp", "relay.example.com:8443", Phase::Connect, Reason::Refused),
            ],
            "1 of 2 probes pass".into(),
        ),
    ]
}

/// A failed ice probe (`gather/no_relay` unless it gathered relays) with these relay protocol
/// counts and relays (protocol, server).
fn ice_fail(protocols: &[(&str, u32)], relays: &[(&str, &str)]) -> ProbeResult {
    let reason = if relays.is_empty() { Reason::NoRelay } else { Reason::NoSrflx };
    let mut r = fail("ice", "ice", "turn:relay.example.com:3478?transport=udp", Phase::Gather, reason);
    r.outcome.detail.ice = Some(ice_detail(protocols, relays));
    r
}

fn ice_detail(protocols: &[(&str, u32)], relays: &[(&str, &str)]) -> IceDetails {
    IceDetails {
        relay_protocols: protocols.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
        relays: relays
            .iter()
            .map(|(p, server)| IceRelay {
                protocol: p.to_string(),
                address: "198.51.100.7:50000".into(),
                server: server.to_string(),
                at: Duration::from_millis(72),
            })
            .collect(),
        ..Default::default()
    }
}

fn check(rule: &str) {
    let (_, results, expected) = cases().into_iter().find(|(id, _, _)| *id == rule).expect("case for rule");
    let verdicts = assess(&results);
    let v = verdicts
        .iter()
        .find(|v| v.rule == rule)
        .unwrap_or_else(|| panic!("rule {rule} did not fire: {verdicts:#?}"));
    assert_eq!(v.text, expected);
    for v in &verdicts {
        assert!(!v.text.contains("hunter2"), "message leaked into {v:?}");
        assert!(!v.text.contains('{') && !v.text.contains('\u{0}'), "unfilled hole in {v:?}");
    }
    assert_eq!(contradictions(&verdicts), Vec::<String>::new(), "{verdicts:#?}");
}

#[test]
fn rejected_before_server() {
    check("rejected_before_server");
}
#[test]
fn rejected_before_server_on_a_trace_says_how_many_hops_out() {
    let (_, results, expected) = cases()
        .into_iter()
        .filter(|(id, _, _)| *id == "rejected_before_server")
        .nth(1)
        .expect("the trace case");
    let verdicts = assess(&results);
    assert_eq!(
        verdicts.first().map(|v| (v.rule, v.text.clone())),
        Some(("rejected_before_server", expected))
    );
}
#[test]
fn udp_ports_closed() {
    check("udp_ports_closed");
}

#[test]
fn udp_ports_with_nothing_answering_names_only_the_ports_tried_not_the_whole_range() {
    let (_, results, expected) = cases()
        .into_iter()
        .filter(|(id, _, _)| *id == "udp_ports_closed")
        .nth(1)
        .expect("the nothing-answers case");
    let verdicts = assess(&results);
    let v = verdicts.iter().find(|v| v.rule == "udp_ports_closed").expect("fired");
    assert_eq!(v.text, expected);
}

#[test]
fn path_silent_after_hop() {
    check("path_silent_after_hop");
}

#[test]
fn nat_symmetric() {
    check("nat_symmetric");
}
#[test]
fn nat_short_lifetime() {
    check("nat_short_lifetime");
}
#[test]
fn nat_endpoint_independent() {
    check("nat_endpoint_independent");
}
/// A stun probe's detail with mapping `endpoint_independent` and a lifetime bracket in ms.
fn nat_lifetime_ms(alive: u64, expired: Option<u64>) -> Vec<ProbeResult> {
    let mut r = pass("nat", "stun", "stun:nat.example.com:3480");
    r.outcome.detail.stun = Some(StunDetails {
        transport: "udp".into(),
        nat_mapping: Some("endpoint_independent".into()),
        binding_lifetime: Some(BindingLifetime {
            alive: Duration::from_millis(alive),
            expired: expired.map(Duration::from_millis),
            checks: 9,
        }),
        ..Default::default()
    });
    vec![r]
}

#[test]
fn linux_default_conntrack_udp_timeout_is_a_short_lifetime() {
    // nf_conntrack_udp_timeout = 30 s: alive at 28.8 s, gone at 32 s (the check lands late).
    let verdicts = assess(&nat_lifetime_ms(28_800, Some(32_000)));
    let short = verdicts.iter().find(|v| v.rule == "nat_short_lifetime");
    assert_eq!(
        short.map(|v| v.text.as_str()),
        Some("Idle UDP mappings expire after about 30 s (nat), below the 2 minutes RFC 4787 (REQ-5) asks for: media and keepalives must never pause that long, or calls lose audio"),
        "{verdicts:#?}"
    );
    assert!(verdicts.iter().all(|v| v.rule != "all_pass"), "{verdicts:#?}");
}

#[test]
fn a_lifetime_of_two_minutes_or_one_that_never_expired_is_no_warning() {
    for (alive, expired) in [(120_000, Some(125_000)), (30_000, None)] {
        let verdicts = assess(&nat_lifetime_ms(alive, expired));
        assert!(
            verdicts.iter().all(|v| v.rule != "nat_short_lifetime"),
            "{alive} {expired:?}: {verdicts:#?}"
        );
    }
}

#[test]
fn a_path_without_nat_is_not_called_an_endpoint_independent_nat() {
    let mut results = nat_lifetime_ms(60_000, None);
    let stun = results[0].outcome.detail.stun.as_mut().unwrap();
    let own: SocketAddr = "10.202.0.2:40000".parse().unwrap();
    (stun.local, stun.mapped) = (Some(own), Some(own));
    stun.nat_filtering = Some("endpoint_independent".into());
    let verdicts = assess(&results);
    let v = verdicts.iter().find(|v| v.rule == "nat_endpoint_independent").expect("verdict");
    assert_eq!(
        v.text,
        "No NAT between this host and the STUN server (it sees our own address) with endpoint-independent filtering, as Genesys Cloud requires (nat): direct media can work"
    );
}

#[test]
fn a_symmetric_nat_is_not_all_paths_work() {
    let (_, results, _) = cases().into_iter().find(|(id, _, _)| *id == "nat_symmetric").unwrap();
    let verdicts = assess(&results);
    assert!(verdicts.iter().all(|v| v.rule != "all_pass"), "{verdicts:#?}");
    assert!(verdicts.iter().any(|v| v.rule == "some_pass"), "{verdicts:#?}");
}

#[test]
fn every_rule_has_a_case() {
    let cases = cases();
    for rule in RULES {
        assert!(cases.iter().any(|(id, _, _)| *id == rule.id), "no case for rule {}", rule.id);
    }
    let mut ids: Vec<_> = RULES.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), RULES.len(), "rule ids must be unique");
}

#[test]
fn udp_dropped_relay_works() {
    check("udp_dropped_relay_works");
}
#[test]
fn udp_dropped_relay_fails() {
    check("udp_dropped_relay_fails");
}
#[test]
fn udp_dropped() {
    check("udp_dropped");
}
#[test]
fn tls_intercepted() {
    check("tls_intercepted");
}
#[test]
fn tls_untrusted() {
    check("tls_untrusted");
}
#[test]
fn tls_untrusted_configured() {
    check("tls_untrusted_configured");
}
#[test]
fn tls_expired() {
    check("tls_expired");
}
#[test]
fn tls_name_mismatch() {
    check("tls_name_mismatch");
}
#[test]
fn tls_failed() {
    check("tls_failed");
}
#[test]
fn dns_nxdomain() {
    check("dns_nxdomain");
}
#[test]
fn dns_failed() {
    check("dns_failed");
}
#[test]
fn dns_no_answer() {
    check("dns_no_answer");
}
#[test]
fn proxy_auth() {
    check("proxy_auth");
}
#[test]
fn proxy_denied() {
    check("proxy_denied");
}
#[test]
fn rate_limited() {
    check("rate_limited");
}
#[test]
fn ws_upgrade_timeout() {
    check("ws_upgrade_timeout");
}
#[test]
fn ws_not_upgraded() {
    check("ws_not_upgraded");
}
#[test]
fn connection_cap() {
    check("connection_cap");
}
#[test]
fn a_turn_quota_shows_as_a_cap_of_five() {
    let (_, results, expected) = cases()
        .into_iter()
        .filter(|(id, _, _)| *id == "connection_cap")
        .nth(1)
        .expect("the turn case");
    assert_eq!(rule_and_text(&results)[0], ("connection_cap", expected));
}
#[test]
fn a_proxy_limit_and_a_full_relay_are_not_called_a_per_user_cap() {
    let cap = |mut r: ProbeResult| {
        r.outcome.detail.concurrent = Some(ConcurrentDetails {
            requested: 8,
            established: 5,
            holds: vec![],
        });
        rule_and_text(&[r])
    };
    let v = cap(fail(
        "wss-cap",
        "websocket",
        "wss://sig.example.com/ws",
        Phase::Proxy,
        Reason::Status(503),
    ));
    assert_eq!(
        v[0],
        (
            "connection_cap",
            "WebSocket signalling on 443 allows only 5 of 8 connections at once (proxy/status_503): the HTTP proxy's own connection limit (e.g. MaxClients), shared by every client behind that proxy whatever its credentials; busy hours leave fewer".to_string()
        )
    );
    let v = cap(fail(
        "turn-full",
        "turn",
        "turn:relay.example.com:3478?transport=udp",
        Phase::Allocate,
        Reason::Capacity,
    ));
    assert_eq!(
        v[0],
        (
            "connection_cap",
            "TURN on 3478 allows only 5 of 8 allocations at once (allocate/capacity): the server ran out of relay capacity after 5 (508, server-wide: not a quota on these credentials); other users' calls take from the same pool".to_string()
        )
    );
    for (_, text) in v {
        assert!(!text.contains("per client or user"), "{text}");
    }
}
#[test]
fn none_established_or_all_established_is_no_cap() {
    for established in [0, 8] {
        let mut r = fail(
            "turn-quota",
            "turn",
            "turn:relay.example.com:3478?transport=udp",
            Phase::Allocate,
            Reason::Quota,
        );
        r.outcome.detail.concurrent = Some(ConcurrentDetails {
            requested: 8,
            established,
            holds: vec![],
        });
        assert_eq!(rule_and_text(&[r])[0].0, "turn_capacity");
    }
}
#[test]
fn ws_idle_timeout() {
    check("ws_idle_timeout");
}
#[test]
fn ws_lifetime_limit() {
    check("ws_lifetime_limit");
}
#[test]
fn ws_hold_cut() {
    check("ws_hold_cut");
}

fn rule_and_text(results: &[ProbeResult]) -> Vec<(&'static str, String)> {
    let verdicts = assess(results);
    assert_eq!(contradictions(&verdicts), Vec::<String>::new(), "{verdicts:#?}");
    verdicts.into_iter().map(|v| (v.rule, v.text)).collect()
}

#[test]
fn the_idle_holds_of_one_concurrent_run_alone_may_be_one_event_not_an_idle_timeout() {
    // Four sockets opened together and cut at one age were cut at one moment: a timer, or a
    // proxy restart. Alone they are no proof of an idle timer.
    let run = [(30.1, 0, false), (30.0, 0, false), (29.6, 0, false), (30.3, 0, false)];
    let v = rule_and_text(&[held("wss-4", &run)]);
    assert!(v.iter().all(|(r, _)| *r != "ws_idle_timeout"), "{v:?}");
    assert_eq!(v[0].0, "ws_hold_cut", "{v:?}");
    assert!(
        v[0].1.contains("the 4 holds of one run were all cut at 29.6 to 30.3 s: a timer, or one event that cut them together (a proxy or server restart)"),
        "{v:?}"
    );
    // A pinged hold that lived through it is the control: an event would have cut it too.
    let v = rule_and_text(&[held("wss-4", &run), held("wss-pinged", &[(40.0, 8, true)])]);
    assert_eq!(v[0].0, "ws_idle_timeout", "{v:?}");
    assert!(
        v[0].1
            .starts_with("WebSocket cut after ~30 s of idle, every time (4 idle holds cut between 29.6 and 30.3 s"),
        "{v:?}"
    );
    // So are cuts at the same age in a second run (another probe).
    let v = rule_and_text(&[held("wss-4", &run), held("wss-1", &[(30.2, 0, false)])]);
    assert_eq!(v[0].0, "ws_idle_timeout", "{v:?}");
}

#[test]
fn the_pinged_holds_of_one_run_need_a_second_run_for_a_lifetime_limit() {
    let run = [(60.4, 59, false), (60.2, 59, false), (59.8, 58, false)];
    let v = rule_and_text(&[held("wss-pinged", &run)]);
    assert_eq!(v[0].0, "ws_hold_cut", "{v:?}");
    let v = rule_and_text(&[held("wss-pinged", &run), held("wss-pinged-2", &[(60.1, 59, false)])]);
    assert_eq!(v[0].0, "ws_lifetime_limit", "{v:?}");
}

#[test]
fn scattered_cut_lifetimes_are_no_timer() {
    let v = rule_and_text(&[held("a", &[(3.0, 0, false)]), held("b", &[(12.0, 0, false)])]);
    assert!(v.iter().all(|(r, _)| *r != "ws_idle_timeout"), "{v:?}");
    let (rule, text) = &v[0];
    assert_eq!(*rule, "ws_hold_cut");
    assert!(
        text.contains("2 holds were cut at ages from 3.0 to 12.0 s, too far apart for one timer"),
        "{text}"
    );
}

#[test]
fn an_idle_hold_that_outlived_the_cluster_rules_out_one_idle_timer() {
    let v = rule_and_text(&[
        held("a", &[(3.0, 0, false)]),
        held("b", &[(3.1, 0, false)]),
        held("c", &[(6.0, 0, true)]),
    ]);
    assert!(v.iter().all(|(r, _)| *r != "ws_idle_timeout"), "{v:?}");
    assert!(v[0].1.contains("but another hold of the same kind lived longer"), "{v:?}");
}

#[test]
fn pinged_cuts_do_not_count_as_idle_evidence_and_idle_cuts_not_as_lifetime_evidence() {
    // One idle cut at 3 s and one pinged cut at 3 s: neither kind has two samples.
    let v = rule_and_text(&[held("idle", &[(3.0, 0, false)]), held("pinged", &[(3.0, 2, false)])]);
    assert!(
        v.iter().filter(|(r, _)| *r != "some_pass").all(|(r, _)| *r == "ws_hold_cut"),
        "{v:?}"
    );
    // An idle pair clusters even beside a surviving pinged hold (the pings kept that one alive).
    let v = rule_and_text(&[
        held("idle", &[(3.0, 0, false)]),
        held("idle-2", &[(3.05, 0, false)]),
        held("pinged", &[(6.0, 6, true)]),
    ]);
    assert_eq!(v[0].0, "ws_idle_timeout", "{v:?}");
}

#[test]
fn turn_auth() {
    check("turn_auth");
}
#[test]
fn turn_forbidden() {
    check("turn_forbidden");
}
#[test]
fn turn_capacity() {
    check("turn_capacity");
}
#[test]
fn relay_no_echo() {
    check("relay_no_echo");
}
#[test]
fn call_quality_poor() {
    check("call_quality_poor");
}
#[test]
fn media_silent() {
    check("media_silent");
}
#[test]
fn a_turn_probe_that_failed_only_at_media_is_still_a_working_relay() {
    // UDP is dropped; TURN over TLS allocated and relayed its round trips, only its call
    // quality fell short. Calls do have a media path: over that relay.
    let turns = "turns:relay.example.com:443?transport=tcp";
    let mut poor = fail("turn-tls", "turn", turns, Phase::Media, Reason::Loss);
    poor.outcome.detail.media = Some(crate::outcome::details::MediaDetails {
        sent: 100,
        received: 95,
        loss: 0.05,
        one_way_loss: 0.0253,
        crossings: 4,
        mos: 3.9,
        ..Default::default()
    });
    let udp = fail(
        "stun",
        "stun",
        "stun:relay.example.com:3478?transport=udp",
        Phase::Stun,
        Reason::Timeout,
    );
    let v = rule_and_text(&[udp, poor]);
    let rules: Vec<&str> = v.iter().map(|(r, _)| *r).collect();
    assert!(rules.contains(&"udp_dropped_relay_works"), "{v:?}");
    assert!(!rules.contains(&"udp_dropped_relay_fails"), "{v:?}");
    assert!(rules.contains(&"call_quality_poor"), "{v:?}");
}
#[test]
fn ice_no_relay_fallback() {
    check("ice_no_relay_fallback");
}
#[test]
fn proxy_upstream_failed() {
    check("proxy_upstream_failed");
}
#[test]
fn ice_no_relay() {
    check("ice_no_relay");
}
#[test]
fn ice_no_srflx() {
    check("ice_no_srflx");
}
#[test]
fn rejected() {
    check("rejected");
}
#[test]
fn dropped() {
    check("dropped");
}
#[test]
fn unreachable() {
    check("unreachable");
}
#[test]
fn reset() {
    check("reset");
}
#[test]
fn blocked_locally() {
    check("blocked_locally");
}
#[test]
fn http_status() {
    check("http_status");
}
#[test]
fn other_failure() {
    check("other_failure");
}
#[test]
fn ice_relay_only_over_stream() {
    check("ice_relay_only_over_stream");
    // Every probe passed, yet the relay is degraded: not "all paths work" but "2 of 2".
    let (_, results, _) = cases()
        .into_iter()
        .find(|(id, _, _)| *id == "ice_relay_only_over_stream")
        .expect("case");
    assert_eq!(verdicts(&results).last().map(String::as_str), Some("2 of 2 probes pass"));
}
#[test]
fn other_failure_names_a_probe_called_after_its_kind_once_and_its_target_readably() {
    let ice = fail("ice", "ice", "stun:127.0.0.1:1", Phase::Gather, Reason::NoSrflx);
    let dns = fail("dns", "dns", "relay.example.test", Phase::Resolve, Reason::Mismatch);
    let v6 = fail("v6", "tcp", "[2001:db8::1]:5060", Phase::Close, Reason::Reset);
    for (r, want) in [
        (&ice, "the ice probe to 127.0.0.1:1 fails"),
        (&dns, "the dns probe for relay.example.test fails"),
        (&v6, "probe v6 (tcp to [2001:db8::1]:5060) fails"),
    ] {
        let f = Facts::of(r);
        let rule = RULES.iter().find(|x| x.id == "other_failure").unwrap();
        let Scope::Failure(when) = rule.when else { panic!() };
        let vars = when(&f, std::slice::from_ref(&f)).unwrap();
        let text = render(rule.template, &f.common_vars(), &vars);
        assert!(text.starts_with(want), "{text}");
    }
}
#[test]
fn all_pass() {
    check("all_pass");
}
#[test]
fn some_pass() {
    check("some_pass");
}

#[test]
fn identical_sentences_merge_and_severe_comes_first() {
    let results = vec![
        pass("tcp", "tcp", "relay.example.com:443"),
        fail("a", "tcp", "relay.example.com:8443", Phase::Connect, Reason::Refused),
        fail("b", "tcp", "relay.example.com:8443", Phase::Connect, Reason::Refused),
    ];
    let v = assess(&results);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert_eq!(v[0].rule, "rejected");
    assert_eq!(v[0].probes, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(v[1].rule, "some_pass");
    assert_eq!(verdicts(&results)[0], v[0].text);
}

#[test]
fn relay_transport_from_details_wins_over_target() {
    // A TURN probe whose target says tcp but whose relay ran over UDP is a UDP drop.
    let mut r = fail(
        "turn",
        "turn",
        "turn:relay.example.com:3478?transport=tcp",
        Phase::Allocate,
        Reason::Timeout,
    );
    r.outcome.detail.relay = Some(RelayDetails {
        transport: "udp".into(),
        ..Default::default()
    });
    assert_eq!(assess(&[r])[0].rule, "udp_dropped");
}

#[test]
fn no_results_give_no_verdict() {
    assert!(assess(&[]).is_empty());
}

/// The strict-egress row (UDP dropped, TCP only to 443): before, the verdicts said both
/// "TURN over TLS on 443 works" and "ICE ... cannot fall back to the relay", and "UDP to 3478
/// is dropped" once per probe.
#[test]
fn strict_egress_is_one_sentence_per_finding_without_contradiction() {
    let turns443 = "turns:relay.example.com:443?transport=tcp";
    let stun = fail("stun-udp", "stun", "stun:relay.example.com:3478", Phase::Stun, Reason::Timeout);
    let turn_udp = fail("turn-udp", "turn", "turn:relay.example.com:3478", Phase::Allocate, Reason::Timeout);
    let turn_tls = pass("turn-tls-443", "turn", turns443);
    // An ice probe with UDP-only TURN servers (what webrtc-ice alone could gather).
    let ice_udp = ice_fail(&[("udp", 0)], &[]);
    let results = vec![stun.clone(), turn_udp.clone(), turn_tls.clone(), ice_udp];
    assert_eq!(
        verdicts(&results),
        [
            "UDP to 3478 is dropped (allocate/timeout, stun/timeout); TURN/TLS on 443 works, so calls will relay over it with higher latency",
            "ICE gathered no relay candidate over UDP (gather/no_relay), but TURN/TLS on 443 works: give softphones that server (turns:relay.example.com:443) and calls will relay over it",
            "1 of 4 probes pass",
        ]
    );
    assert_eq!(contradictions(&assess(&results)), Vec::<String>::new());
    let udp = &assess(&results)[0];
    assert_eq!(udp.probes, ["stun-udp", "turn-udp"]);

    // The ice probe now gathers over TURN/TLS itself and passes; it alone is evidence enough.
    let mut ice_tls = pass("ice", "ice", "turn:relay.example.com:3478?transport=udp");
    ice_tls.outcome.detail.ice = Some(ice_detail(&[("udp", 0), ("tls", 1)], &[("tls", turns443)]));
    let results = vec![stun, turn_udp, ice_tls];
    assert_eq!(
        verdicts(&results),
        [
            "UDP to 3478 is dropped (allocate/timeout, stun/timeout); TURN/TLS on 443 works, so calls will relay over it with higher latency",
            "1 of 3 probes pass",
        ]
    );
    assert_eq!(contradictions(&assess(&results)), Vec::<String>::new());
}

#[test]
fn an_ice_probe_that_tried_tls_and_got_no_relay_means_no_media_path() {
    let results = vec![
        fail("stun-udp", "stun", "stun:relay.example.com:3478", Phase::Stun, Reason::Timeout),
        ice_fail(&[("udp", 0), ("tls", 0)], &[]),
    ];
    let v = assess(&results);
    let rules: Vec<&str> = v.iter().map(|v| v.rule).collect();
    assert_eq!(rules, ["udp_dropped_relay_fails", "ice_no_relay"], "{v:#?}");
    assert_eq!(
        v[1].text,
        "ICE gathered no relay candidate over TLS and UDP (gather/no_relay): softphones cannot fall back to the relay"
    );
    assert_eq!(contradictions(&v), Vec::<String>::new());
}

#[test]
fn interception_is_one_sentence_whatever_the_probe_order() {
    let mut wss = fail("wss", "websocket", "wss://sig.example.com/", Phase::Tls, Reason::UntrustedIssuer);
    tls_detail(&mut wss, "CN=Corp Proxy CA", "sig.example.com");
    let mut turn = fail(
        "turn-tls",
        "turn",
        "turns:relay.example.com:443",
        Phase::Tls,
        Reason::UntrustedIssuer,
    );
    tls_detail(&mut turn, "CN=Corp Proxy CA", "relay.example.com");
    let one = verdicts(&[wss.clone(), turn.clone()]);
    let other = verdicts(&[turn, wss]);
    assert_eq!(one, other);
    assert_eq!(
        one[0],
        "TLS on 443 presents a certificate from an untrusted issuer 'Corp Proxy CA' (tls/untrusted_issuer), likely an intercepting proxy: TURN over TLS and WebSocket signalling will fail"
    );
    assert_eq!(one.len(), 1, "{one:#?}");
}

#[test]
fn a_passing_service_on_the_intercepted_port_is_not_said_to_fail() {
    let mut pinned = fail("tls-443", "tls", "relay.example.com:443", Phase::Tls, Reason::PinMismatch);
    tls_detail(&mut pinned, "CN=Corp Proxy CA", "relay.example.com");
    let v = verdicts(&[pinned, pass("turn-tls", "turn", "turns:relay.example.com:443")]);
    assert!(!v[0].contains("TURN over TLS will fail"), "{v:#?}");
}

#[test]
fn contradictions_finds_repeats_and_opposite_claims() {
    let v = |rule: &'static str, severity, text: &str| Verdict {
        rule,
        severity,
        text: text.into(),
        probes: vec![],
    };
    let works = v("udp_dropped_relay_works", Severity::Degraded, "relay works");
    let none = v("ice_no_relay", Severity::Broken, "cannot fall back");
    let unchecked = v("udp_dropped", Severity::Broken, "add a turns: probe");
    let all = v("all_pass", Severity::Ok, "all paths work");
    assert_eq!(contradictions(&[works.clone(), none.clone()]).len(), 1);
    assert_eq!(contradictions(&[works.clone(), unchecked]).len(), 1);
    assert_eq!(contradictions(&[none.clone(), none.clone()]).len(), 1);
    assert_eq!(contradictions(&[all.clone(), none]).len(), 1);
    assert_eq!(
        contradictions(&[all, works.clone()]).len(),
        1,
        "all paths work beside a degraded finding"
    );
    assert!(contradictions(&[works, v("some_pass", Severity::Ok, "1 of 2 probes pass")]).is_empty());
}

#[test]
fn truncated_answer_with_tcp_refused_is_a_resolver_path_problem() {
    let v = assess(&[fail(
        "dns",
        "dns",
        "relay.example.com A",
        Phase::Resolve,
        Reason::TruncatedTcpRefused,
    )]);
    assert!(
        v.iter()
            .any(|v| v.rule == "dns_failed" && v.text.contains("resolve/truncated_tcp_refused")),
        "{v:#?}"
    );
}
