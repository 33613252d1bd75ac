//! Plain-language verdicts derived from a check's outcomes, for the network team reading a
//! `check`: "UDP to 3478 is dropped (allocate/timeout, stun/timeout); TURN/TLS on 443 works, so
//! calls will relay over it with higher latency".
//!
//! All rules live in ONE ordered table, [`RULES`]: a condition on the facts of a failed probe
//! (and, for cross-probe rules, on the other probes) and a sentence template with `{holes}`.
//! Each failed probe gets the sentence of the first rule that matches (the table ends with a
//! catch-all); rules of [`Scope::Whole`] look at the check as a whole ("all paths work").
//!
//! One sentence per finding: sentences of the same rule that differ only in `{code}` are one
//! finding ("UDP to 3478 is dropped (allocate/timeout, stun/timeout)"), codes and probe names
//! listed sorted, and lists inside a sentence (the services a TLS problem breaks) come in a
//! fixed order, so the output does not depend on probe order. Rules weigh each other: a relay
//! that works over TURN/TCP or TURN/TLS (a passing `turn` probe, or a relay an `ice` probe
//! gathered over TCP/TLS) turns "UDP is dropped" into "calls will relay over TURN/TLS on 443"
//! and "ICE gathered no relay" into "give softphones that server", never "no media path". Each
//! rule declares what it claims about the relay ([`Claim`]); [`contradictions`] checks a
//! verdict list for repeated sentences and opposite claims (tests run it on every case).
//!
//! Facts come only from the typed result: the port and transport from the target (`host:port`,
//! an [`IceUrl`], a URL), `detail.relay`/`detail.stun` transports, `detail.peer`,
//! `detail.tls.issuer`, `detail.retry_after`. `failure.message` is never used, so no secret
//! and no free text from a server can reach a verdict. The table is documented in words in
//! `docs/verdicts.md`.

use std::time::Duration;

use serde::Serialize;

use crate::config::IceUrl;
use crate::outcome::details::HoldDetails;
use crate::outcome::{Outcome, Phase, Reason, Transport};
use crate::report::ProbeResult;

/// How bad a verdict is, for ordering and colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Everything works.
    Ok,
    /// Calls work, but worse (e.g. relay-only through TLS).
    Degraded,
    /// Something a softphone needs does not work.
    Broken,
}

/// One sentence of the summary, with the rule that produced it and the probes it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The [`Rule::id`] that matched (stable; used in docs and tests).
    pub rule: &'static str,
    pub severity: Severity,
    pub text: String,
    /// Names of the probes the sentence is about (empty for whole-check rules).
    pub probes: Vec<String>,
}

/// Short sentences for a network team, most severe first (see [`assess`]).
pub fn verdicts(results: &[ProbeResult]) -> Vec<String> {
    assess(results).into_iter().map(|v| v.text).collect()
}

/// The full verdicts: every failed probe explained by the first matching rule, then the
/// whole-check rules; one sentence per finding; ordered by severity (stable otherwise).
pub fn assess(results: &[ProbeResult]) -> Vec<Verdict> {
    let facts: Vec<Facts> = results.iter().map(Facts::of).collect();
    let mut found: Vec<Finding> = Vec::new();
    for subject in facts.iter().filter(|f| !f.success) {
        let matched = RULES.iter().find_map(|rule| match rule.when {
            Scope::Failure(cond) => cond(subject, &facts).map(|vars| (rule, vars)),
            Scope::Whole(_) => None,
        });
        if let Some((rule, vars)) = matched {
            let mut common = subject.common_vars();
            common.retain(|(k, _)| *k != "code");
            common.push(("code", CODE_MARK.to_string()));
            let text = render(rule.template, &common, &vars);
            merge(&mut found, rule, text, Some((subject.name, subject.code())));
        }
    }
    for rule in RULES {
        if let Scope::Whole(cond) = rule.when {
            if let Some(vars) = cond(&facts) {
                merge(&mut found, rule, render(rule.template, &[], &vars), None);
            }
        }
    }
    let mut out: Vec<Verdict> = found.into_iter().map(Finding::into_verdict).collect();
    out.sort_by_key(|v| std::cmp::Reverse(v.severity));
    out
}

/// Stands for `{code}` until a finding's codes are all known.
const CODE_MARK: &str = "\u{0}code\u{0}";

/// One finding: a rule's sentence with `{code}` still open, the codes and probes it covers.
struct Finding {
    rule: &'static Rule,
    text: String,
    codes: Vec<String>,
    probes: Vec<String>,
}

impl Finding {
    fn into_verdict(mut self) -> Verdict {
        self.codes.sort();
        self.codes.dedup();
        self.probes.sort();
        self.probes.dedup();
        Verdict {
            rule: self.rule.id,
            severity: self.rule.severity,
            text: self.text.replace(CODE_MARK, &self.codes.join(", ")),
            probes: self.probes,
        }
    }
}

fn merge(found: &mut Vec<Finding>, rule: &'static Rule, text: String, probe: Option<(&str, String)>) {
    let i = match found.iter().position(|f| f.rule.id == rule.id && f.text == text) {
        Some(i) => i,
        None => {
            found.push(Finding {
                rule,
                text,
                codes: Vec::new(),
                probes: Vec::new(),
            });
            found.len() - 1
        }
    };
    if let Some((name, code)) = probe {
        found[i].probes.push(name.to_string());
        found[i].codes.push(code);
    }
}

/// What a verdict says about the relay (the media path of last resort).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nothing about the relay as a whole.
    None,
    /// A relay path works (calls will connect, maybe through TURN over TCP/TLS).
    RelayWorks,
    /// No relay path works (calls have no media path / cannot fall back to the relay).
    NoRelay,
    /// The relay fallback was not checked (and needs checking).
    RelayUnchecked,
}

/// Problems in a verdict list: a sentence given twice, or two sentences that contradict each
/// other (a working relay and no relay; a working relay and an unchecked one; "all paths work"
/// beside a failure). Empty when the list is consistent.
pub fn contradictions(verdicts: &[Verdict]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, v) in verdicts.iter().enumerate() {
        if verdicts[..i].iter().any(|w| w.text == v.text) {
            problems.push(format!("said twice: {:?}", v.text));
        }
    }
    let claim = |v: &Verdict| RULES.iter().find(|r| r.id == v.rule).map_or(Claim::None, |r| r.claim);
    for a in verdicts.iter().filter(|v| claim(v) == Claim::RelayWorks) {
        for b in verdicts
            .iter()
            .filter(|v| matches!(claim(v), Claim::NoRelay | Claim::RelayUnchecked))
        {
            problems.push(format!("contradiction: {:?} versus {:?}", a.text, b.text));
        }
    }
    if let Some(all) = verdicts.iter().find(|v| v.rule == "all_pass") {
        for v in verdicts.iter().filter(|v| v.severity != Severity::Ok) {
            problems.push(format!("contradiction: {:?} versus {:?}", all.text, v.text));
        }
    }
    problems
}

/// Template values: `("port", "443")` fills `{port}`.
pub type Vars = Vec<(&'static str, String)>;

/// When a rule applies.
#[derive(Clone, Copy)]
pub enum Scope {
    /// To one failed probe, given all probes' facts (for cross-probe rules).
    Failure(fn(&Facts, &[Facts]) -> Option<Vars>),
    /// To the check as a whole.
    Whole(fn(&[Facts]) -> Option<Vars>),
}

/// One row of the table: condition → sentence.
pub struct Rule {
    /// Stable identifier, e.g. `udp_dropped_relay_works`.
    pub id: &'static str,
    pub severity: Severity,
    pub when: Scope,
    /// Sentence with `{holes}`. Failure rules can always use `{name}`, `{host}`, `{port}`,
    /// `{proto}` (UDP/TCP/TLS), `{code}` (`phase/reason`; the sorted codes of every probe the
    /// finding covers) and `{phase}`.
    pub template: &'static str,
    /// What the sentence says about the relay, for [`contradictions`].
    pub claim: Claim,
}

/// The rule table, in priority order. The last failure rule matches everything.
pub static RULES: &[Rule] = &[
    Rule {
        id: "udp_dropped_relay_works",
        severity: Severity::Degraded,
        when: Scope::Failure(udp_dropped_relay_works),
        template: "UDP to {port} is dropped ({code}); TURN/{fallback} on {fallback_port} works, so calls will relay over it with higher latency",
        claim: Claim::RelayWorks,
    },
    Rule {
        id: "udp_dropped_relay_fails",
        severity: Severity::Broken,
        when: Scope::Failure(udp_dropped_relay_fails),
        template: "UDP to {port} is dropped ({code}) and TURN over TCP/TLS fails too: calls will have no media path",
        claim: Claim::NoRelay,
    },
    Rule {
        id: "udp_dropped",
        severity: Severity::Broken,
        when: Scope::Failure(udp_dropped),
        template: "UDP to {port} is dropped ({code}): media needs TURN over TLS (e.g. on 443); add a turns: probe to check that fallback",
        claim: Claim::RelayUnchecked,
    },
    Rule {
        id: "tls_intercepted",
        severity: Severity::Broken,
        when: Scope::Failure(tls_intercepted),
        template: "TLS on {port} is intercepted (pin mismatch, issuer '{issuer}'): {impact}",
        claim: Claim::None,
    },
    Rule {
        id: "tls_untrusted",
        severity: Severity::Broken,
        when: Scope::Failure(tls_untrusted),
        template: "TLS on {port} presents a certificate from an untrusted issuer '{issuer}' ({code}), likely an intercepting proxy: {impact}",
        claim: Claim::None,
    },
    Rule {
        id: "tls_untrusted_configured",
        severity: Severity::Broken,
        when: Scope::Failure(tls_untrusted_configured),
        template: "TLS on {port} presents a certificate that the configured ca_file does not validate, although its issuer '{issuer}' is one you configured ({code}): check the ca_file and the server's chain; {impact}",
        claim: Claim::None,
    },
    Rule {
        id: "tls_expired",
        severity: Severity::Broken,
        when: Scope::Failure(tls_expired),
        template: "The certificate on {host}:{port} has expired ({code}): {impact}",
        claim: Claim::None,
    },
    Rule {
        id: "tls_name_mismatch",
        severity: Severity::Broken,
        when: Scope::Failure(tls_name_mismatch),
        template: "The certificate on {port} is not for {server_name} ({code}), issuer '{issuer}': a wrong endpoint or an intercepting proxy; {impact}",
        claim: Claim::None,
    },
    Rule {
        id: "tls_failed",
        severity: Severity::Broken,
        when: Scope::Failure(tls_failed),
        template: "TLS on {port} fails during the handshake ({code}): a middlebox may be interfering; {impact}",
        claim: Claim::None,
    },
    Rule {
        id: "dns_nxdomain",
        severity: Severity::Broken,
        when: Scope::Failure(dns_nxdomain),
        template: "DNS for {qname} does not resolve ({code})",
        claim: Claim::None,
    },
    Rule {
        id: "dns_failed",
        severity: Severity::Broken,
        when: Scope::Failure(dns_failed),
        template: "DNS for {qname} fails ({code}): the resolver is broken, refuses, or is blocked",
        claim: Claim::None,
    },
    Rule {
        id: "dns_no_answer",
        severity: Severity::Broken,
        when: Scope::Failure(dns_no_answer),
        template: "DNS for {qname} has no record of the asked type ({code})",
        claim: Claim::None,
    },
    Rule {
        id: "proxy_auth",
        severity: Severity::Broken,
        when: Scope::Failure(proxy_auth),
        template: "The HTTP proxy demands authentication for {host}:{port} ({code}): configure proxy credentials",
        claim: Claim::None,
    },
    Rule {
        id: "proxy_upstream_failed",
        severity: Severity::Broken,
        when: Scope::Failure(proxy_upstream_failed),
        template: "The HTTP proxy could not reach the target {host}:{port} ({code}): the target is down or unreachable from the proxy (not a policy block)",
        claim: Claim::None,
    },
    Rule {
        id: "proxy_denied",
        severity: Severity::Broken,
        when: Scope::Failure(proxy_denied),
        template: "The HTTP proxy does not let {host}:{port} through ({code})",
        claim: Claim::None,
    },
    Rule {
        id: "connection_cap",
        severity: Severity::Degraded,
        when: Scope::Failure(connection_cap),
        template: "{service} on {port} allows only {established} of {requested} {things} at once ({code}): {cause}",
        claim: Claim::None,
    },
    Rule {
        id: "rate_limited",
        severity: Severity::Degraded,
        when: Scope::Failure(rate_limited),
        template: "429 from {host}: clients are retrying too fast{retry_after}",
        claim: Claim::None,
    },
    Rule {
        id: "ws_upgrade_timeout",
        severity: Severity::Broken,
        when: Scope::Failure(ws_upgrade_timeout),
        template: "WebSocket signalling on {port} times out during upgrade ({code}): a proxy or firewall holds the Upgrade request",
        claim: Claim::None,
    },
    Rule {
        id: "ws_not_upgraded",
        severity: Severity::Broken,
        when: Scope::Failure(ws_not_upgraded),
        template: "WebSocket signalling on {port} is not upgraded ({code}): a proxy strips the Upgrade header or the server refuses it",
        claim: Claim::None,
    },
    Rule {
        id: "ws_idle_timeout",
        severity: Severity::Broken,
        when: Scope::Failure(ws_idle_timeout),
        template: "WebSocket cut after ~{secs} s of idle, every time ({samples} idle holds cut between {low} and {high} s, {code}): a proxy or firewall idle timeout of about {secs} s; send pings more often than that (ping_interval < {secs} s)",
        claim: Claim::None,
    },
    Rule {
        id: "ws_lifetime_limit",
        severity: Severity::Broken,
        when: Scope::Failure(ws_lifetime_limit),
        template: "WebSocket cut after ~{secs} s although kept alive with pings, every time ({samples} pinged holds cut between {low} and {high} s, {code}): a proxy or firewall limits a connection's lifetime to about {secs} s; pings do not help, the softphone must reconnect before that",
        claim: Claim::None,
    },
    Rule {
        id: "ws_hold_cut",
        severity: Severity::Broken,
        when: Scope::Failure(ws_hold_cut),
        template: "The WebSocket of {probe} was cut {secs} s into a hold ({mode}, {code}): {evidence}",
        claim: Claim::None,
    },
    Rule {
        id: "turn_auth",
        severity: Severity::Broken,
        when: Scope::Failure(turn_auth),
        template: "TURN on {port} rejects the credentials ({code}): check the username/password or REST secret and the clock",
        claim: Claim::None,
    },
    Rule {
        id: "turn_forbidden",
        severity: Severity::Broken,
        when: Scope::Failure(turn_forbidden),
        template: "TURN on {port} refuses the request ({code}): the server's policy forbids it",
        claim: Claim::None,
    },
    Rule {
        id: "turn_capacity",
        severity: Severity::Broken,
        when: Scope::Failure(turn_capacity),
        template: "TURN on {port} has no allocation to give ({code}): the relay is full or the user's quota is used up",
        claim: Claim::None,
    },
    Rule {
        id: "relay_no_echo",
        severity: Severity::Broken,
        when: Scope::Failure(relay_no_echo),
        template: "TURN over {proto} on {port} allocates but relayed packets do not come back ({code}): the relay cannot reach the peer",
        claim: Claim::None,
    },
    Rule {
        id: "call_quality_poor",
        severity: Severity::Degraded,
        when: Scope::Failure(call_quality_poor),
        template: "Media over {proto} to {port} on {host} gets through but not at call quality ({code}: {figures}): expect choppy or delayed calls",
        claim: Claim::None,
    },
    Rule {
        id: "media_silent",
        severity: Severity::Broken,
        when: Scope::Failure(media_silent),
        template: "Media over {proto} to {port} on {host} does not come back: none of {sent} packets returned ({code}){cause}",
        claim: Claim::None,
    },
    Rule {
        id: "ice_no_relay_fallback",
        severity: Severity::Degraded,
        when: Scope::Failure(ice_no_relay_fallback),
        template: "ICE gathered no relay candidate{tried} ({code}), but TURN/{fallback} on {fallback_port} works: give softphones that server ({fallback_uri}) and calls will relay over it",
        claim: Claim::RelayWorks,
    },
    Rule {
        id: "ice_no_relay",
        severity: Severity::Broken,
        when: Scope::Failure(ice_no_relay),
        template: "ICE gathered no relay candidate{tried} ({code}): softphones cannot fall back to the relay",
        claim: Claim::NoRelay,
    },
    Rule {
        id: "ice_no_srflx",
        severity: Severity::Degraded,
        when: Scope::Failure(ice_no_srflx),
        template: "ICE gathered no server-reflexive candidate ({code}): STUN over UDP is blocked, direct media will not work",
        claim: Claim::None,
    },
    Rule {
        id: "rejected_before_server",
        severity: Severity::Broken,
        when: Scope::Failure(rejected_before_server),
        template: "{proto} to {port} on {host} is rejected ({code}), and the reject comes from {origin}{hops_out}, not the server: a firewall before it",
        claim: Claim::None,
    },
    Rule {
        id: "path_silent_after_hop",
        severity: Severity::Broken,
        when: Scope::Failure(path_silent_after_hop),
        template: "{proto} to {port} on {host} goes silent after hop {hop} ({hop_address}) ({code}): packets are dropped after that hop",
        claim: Claim::None,
    },
    Rule {
        id: "udp_ports_closed",
        severity: Severity::Broken,
        when: Scope::Failure(udp_ports_closed),
        template: "UDP media ports on {host}: {finding} ({code}; {tried} ports tried so far)",
        claim: Claim::None,
    },
    Rule {
        id: "rejected",
        severity: Severity::Broken,
        when: Scope::Failure(rejected),
        template: "{proto} to {port} on {host} is rejected ({code}): a firewall rejects it or nothing listens there",
        claim: Claim::None,
    },
    Rule {
        id: "dropped",
        severity: Severity::Broken,
        when: Scope::Failure(dropped),
        template: "{proto} to {port} on {host} is silently dropped ({code}): a firewall DROP rule",
        claim: Claim::None,
    },
    Rule {
        id: "unreachable",
        severity: Severity::Broken,
        when: Scope::Failure(unreachable),
        template: "{host} is unreachable ({code}): no route from this network",
        claim: Claim::None,
    },
    Rule {
        id: "reset",
        severity: Severity::Broken,
        when: Scope::Failure(reset),
        template: "{proto} to {port} on {host} is cut by a reset ({code}): a middlebox ends the connection",
        claim: Claim::None,
    },
    Rule {
        id: "blocked_locally",
        severity: Severity::Broken,
        when: Scope::Failure(blocked_locally),
        template: "This host's own firewall blocks {proto} to {port} ({code})",
        claim: Claim::None,
    },
    Rule {
        id: "http_status",
        severity: Severity::Broken,
        when: Scope::Failure(http_status),
        template: "{host} answers HTTP {status} on {port} ({code})",
        claim: Claim::None,
    },
    Rule {
        id: "other_failure",
        severity: Severity::Broken,
        when: Scope::Failure(|f, _| Some(vec![("probe", f.probe_phrase())])),
        template: "{probe} fails ({code})",
        claim: Claim::None,
    },
    Rule {
        id: "ice_relay_only_over_stream",
        severity: Severity::Degraded,
        when: Scope::Whole(ice_relay_only_over_stream),
        template: "ICE got no relay over TURN/UDP, only over TURN/{fallback} on {fallback_port}: calls will relay over {fallback} with higher latency (is UDP to the TURN server blocked?)",
        claim: Claim::RelayWorks,
    },
    Rule {
        id: "nat_symmetric",
        severity: Severity::Degraded,
        when: Scope::Whole(nat_symmetric),
        template: "Symmetric NAT ({mapping} mapping, seen by {probes}): direct media fails towards peers behind NAT; calls need the relay (Genesys Cloud requires endpoint-independent mapping)",
        claim: Claim::None,
    },
    Rule {
        id: "nat_short_lifetime",
        severity: Severity::Degraded,
        when: Scope::Whole(nat_short_lifetime),
        template: "Idle UDP mappings expire after about {lifetime} s ({probes}), below the 2 minutes RFC 4787 (REQ-5) asks for: media and keepalives must never pause that long, or calls lose audio",
        claim: Claim::None,
    },
    Rule {
        id: "nat_endpoint_independent",
        severity: Severity::Ok,
        when: Scope::Whole(nat_endpoint_independent),
        template: "{what}{filtering}, as Genesys Cloud requires ({probes}): direct media can work{once}",
        claim: Claim::None,
    },
    Rule {
        id: "all_pass",
        severity: Severity::Ok,
        when: Scope::Whole(all_pass),
        template: "all paths work ({count} probes passed)",
        claim: Claim::None,
    },
    Rule {
        id: "some_pass",
        severity: Severity::Ok,
        when: Scope::Whole(some_pass),
        template: "{passed} of {count} probes pass",
        claim: Claim::None,
    },
];

/// What the rules know about one probe result.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub success: bool,
    pub phase: Option<Phase>,
    pub reason: Option<&'a Reason>,
    /// Target host (for `dns`, the queried name).
    pub host: String,
    pub port: Option<u16>,
    /// `udp`, `tcp` or `tls`: how the probe reached its target.
    pub transport: &'static str,
    /// Common name of the leaf certificate's issuer (else the whole issuer DN).
    pub issuer: Option<String>,
    /// The issuer (or the leaf itself) is a certificate from the probe's own `ca_file`.
    pub issuer_configured: bool,
    pub server_name: Option<String>,
    pub retry_after: Option<Duration>,
    /// Relays this probe showed working, as (client-to-server transport, server port): a
    /// passing `turn` probe's own, every relay an `ice` probe gathered (with its protocol).
    pub relays: Vec<WorkingRelay>,
    /// Relay transports this probe tried (`turn`: its own; `ice`: every configured protocol).
    pub relay_tried: Vec<&'static str>,
    /// WebSocket holds of this run: each connection's with `concurrent: N`, else the one.
    pub holds: Vec<&'a HoldDetails>,
    pub outcome: &'a Outcome,
}

impl<'a> Facts<'a> {
    /// Digests one result: target parsed per kind, transport refined by the details.
    pub fn of(r: &'a ProbeResult) -> Facts<'a> {
        let o = &r.outcome;
        let host = r.endpoint.host.clone();
        let mut port = r.endpoint.port;
        let mut transport = r.endpoint.transport.as_str();
        if port.is_none() {
            port = o.detail.peer.map(|p| p.port());
        }
        let detail_transport = o.detail.relay.as_ref().map(|d| d.transport.as_str()).or(o
            .detail
            .stun
            .as_ref()
            .map(|d| d.transport.as_str()));
        if let Some(t) = detail_transport.and_then(transport_word) {
            transport = t;
        }
        let tls = o.detail.tls.as_ref();
        let (relays, relay_tried) = relay_facts(&r.kind, o, &host, transport, port);
        Facts {
            name: &r.name,
            kind: &r.kind,
            success: o.success,
            phase: o.failure.as_ref().map(|f| f.phase),
            reason: o.failure.as_ref().map(|f| &f.reason),
            host,
            port,
            transport,
            issuer: tls.map(|t| issuer_name(&t.issuer)).filter(|s| !s.is_empty()),
            issuer_configured: tls.is_some_and(|t| t.issuer_configured),
            server_name: tls.map(|t| t.server_name.clone()).filter(|s| !s.is_empty()),
            retry_after: o.detail.retry_after,
            relays,
            relay_tried,
            holds: match o.detail.concurrent.as_ref().filter(|c| !c.holds.is_empty()) {
                Some(c) => c.holds.iter().collect(),
                None => o.detail.websocket.iter().filter_map(|w| w.hold.as_ref()).collect(),
            },
            outcome: o,
        }
    }

    fn reason_is(&self, r: &Reason) -> bool {
        self.reason == Some(r)
    }

    /// The probe and its target for a sentence: `probe ice (ice to 127.0.0.1:3478)` would read
    /// twice, so a probe named after its kind is `the ice probe to 127.0.0.1:3478`, another
    /// `probe odd (tcp to not:5060)`; a target without a port (a DNS name) has none.
    fn probe_phrase(&self) -> String {
        let target = match self.port {
            Some(p) if self.host.contains(':') => format!("[{}]:{p}", self.host),
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        };
        let to = if self.kind == "dns" { "for" } else { "to" };
        if self.name == self.kind {
            format!("the {} probe {to} {target}", self.kind)
        } else {
            format!("probe {} ({} {to} {target})", self.name, self.kind)
        }
    }

    fn port_str(&self) -> String {
        self.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
    }

    fn code(&self) -> String {
        self.outcome.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "success".into())
    }

    /// `UDP`/`TCP`/`TLS`; a TLS probe that failed before its handshake failed on plain TCP.
    fn proto(&self) -> String {
        let before_tls = matches!(self.phase, Some(Phase::Resolve | Phase::Connect | Phase::Proxy));
        if self.transport == "tls" && before_tls {
            "TCP".into()
        } else {
            self.transport.to_ascii_uppercase()
        }
    }

    fn common_vars(&self) -> Vars {
        vec![
            ("name", self.name.to_string()),
            ("kind", self.kind.to_string()),
            ("host", self.host.clone()),
            ("port", self.port_str()),
            ("proto", self.proto()),
            ("code", self.code()),
            ("phase", self.phase.map(|p| p.to_string()).unwrap_or_default()),
        ]
    }
}

/// A relay a probe showed working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkingRelay {
    /// How the client reaches the TURN server: `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    pub host: String,
    pub port: Option<u16>,
}

/// Working relays and tried relay transports of one probe (see [`Facts::relays`]).
fn relay_facts(kind: &str, o: &Outcome, host: &str, transport: &'static str, port: Option<u16>) -> (Vec<WorkingRelay>, Vec<&'static str>) {
    match kind {
        "turn" => {
            // A probe that failed only at `media` allocated and relayed its round trips: the
            // relay works, the call quality is another finding (`call_quality_poor`).
            let relayed = o.success || o.failure.as_ref().is_some_and(|f| f.phase == Phase::Media);
            let works = relayed.then(|| WorkingRelay {
                transport,
                host: host.to_string(),
                port,
            });
            (works.into_iter().collect(), vec![transport])
        }
        "ice" => {
            let Some(ice) = &o.detail.ice else {
                return (Vec::new(), Vec::new());
            };
            let relays = ice
                .relays
                .iter()
                .filter_map(|r| {
                    let url = IceUrl::parse(&r.server).ok()?;
                    Some(WorkingRelay {
                        transport: transport_word(&r.protocol)?,
                        host: url.host.clone(),
                        port: Some(url.port),
                    })
                })
                .collect();
            let tried = ice.relay_protocols.keys().filter_map(|p| transport_word(p)).collect();
            (relays, tried)
        }
        _ => (Vec::new(), Vec::new()),
    }
}

fn transport_word(s: &str) -> Option<&'static str> {
    Transport::parse(s).map(Transport::as_str)
}

/// `CN=Corp Proxy CA, O=Corp` → `Corp Proxy CA`; a DN without CN is kept whole.
fn issuer_name(dn: &str) -> String {
    dn.split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("CN="))
        .unwrap_or(dn)
        .to_string()
}

/// Fills `{key}` holes; the probe's common values first, the rule's own override them.
fn render(template: &str, common: &[(&'static str, String)], vars: &[(&'static str, String)]) -> String {
    let mut text = template.to_string();
    for (key, value) in vars.iter().chain(common) {
        text = text.replace(&format!("{{{key}}}"), value);
    }
    text
}

// ---- conditions -------------------------------------------------------------------------

/// UDP STUN/TURN with no answer at all: a silent drop of UDP.
fn is_udp_drop(f: &Facts) -> bool {
    f.transport == "udp"
        && matches!(f.kind, "stun" | "turn")
        && f.reason_is(&Reason::Timeout)
        && matches!(f.phase, Some(Phase::Stun | Phase::Allocate | Phase::Connect))
}

/// The best working relay over TURN/TCP or TURN/TLS anywhere in the check (TLS and port 443
/// preferred: it passes DPI-less proxies and port-443-only firewalls).
fn stream_fallback<'f>(all: &'f [Facts]) -> Option<&'f WorkingRelay> {
    all.iter()
        .flat_map(|f| f.relays.iter())
        .filter(|r| matches!(r.transport, "tcp" | "tls"))
        .max_by_key(|r| {
            (
                r.transport == "tls",
                r.port == Some(443),
                std::cmp::Reverse(r.port),
                std::cmp::Reverse(&r.host),
            )
        })
}

fn fallback_vars(r: &WorkingRelay) -> Vars {
    let port = r.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    let host = if r.host.contains(':') {
        format!("[{}]", r.host)
    } else {
        r.host.clone()
    };
    let uri = if r.transport == "tls" {
        format!("turns:{host}:{port}")
    } else {
        format!("turn:{host}:{port}?transport=tcp")
    };
    vec![
        ("fallback", r.transport.to_ascii_uppercase()),
        ("fallback_port", port),
        ("fallback_uri", uri),
    ]
}

fn udp_dropped_relay_works(f: &Facts, all: &[Facts]) -> Option<Vars> {
    if !is_udp_drop(f) {
        return None;
    }
    stream_fallback(all).map(fallback_vars)
}

fn udp_dropped_relay_fails(f: &Facts, all: &[Facts]) -> Option<Vars> {
    let stream_tried = all.iter().any(|o| o.relay_tried.iter().any(|t| matches!(*t, "tcp" | "tls")));
    (is_udp_drop(f) && stream_tried).then(Vec::new)
}

fn udp_dropped(f: &Facts, _: &[Facts]) -> Option<Vars> {
    is_udp_drop(f).then(Vec::new)
}

/// What breaks when TLS on this port is broken: the services of this probe and of the other
/// probes that failed over TLS on the same port, in a fixed order (a passing probe on that
/// port is not broken, and saying so would contradict it).
fn tls_impact(f: &Facts, all: &[Facts]) -> Vars {
    const ORDER: [(&str, &str); 4] = [
        ("turn", "TURN over TLS"),
        ("websocket", "WebSocket signalling"),
        ("http", "HTTPS"),
        ("stun", "STUN over TLS"),
    ];
    let affected = |kind: &str| {
        f.kind == kind
            || all
                .iter()
                .any(|o| !o.success && o.kind == kind && o.port == f.port && o.transport == "tls")
    };
    let services: Vec<&str> = ORDER.iter().filter(|(k, _)| affected(k)).map(|(_, s)| *s).collect();
    let impact = if services.is_empty() {
        "clients that verify the certificate (TURN over TLS, WebSocket signalling) will fail".to_string()
    } else {
        format!("{} will fail", services.join(" and "))
    };
    vec![("impact", impact)]
}

fn with_issuer(f: &Facts, mut vars: Vars) -> Vars {
    vars.push(("issuer", f.issuer.clone().unwrap_or_else(|| "unknown".into())));
    vars
}

fn tls_intercepted(f: &Facts, all: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::PinMismatch).then(|| with_issuer(f, tls_impact(f, all)))
}

/// An untrusted issuer that is not one the user configured: the interception suspicion.
fn tls_untrusted(f: &Facts, all: &[Facts]) -> Option<Vars> {
    (f.reason_is(&Reason::UntrustedIssuer) && !f.issuer_configured).then(|| with_issuer(f, tls_impact(f, all)))
}

/// An untrusted chain whose issuer (or leaf) is in the probe's own `ca_file`: a configuration
/// or server-chain problem, never worded as interception.
fn tls_untrusted_configured(f: &Facts, all: &[Facts]) -> Option<Vars> {
    (f.reason_is(&Reason::UntrustedIssuer) && f.issuer_configured).then(|| with_issuer(f, tls_impact(f, all)))
}

fn tls_expired(f: &Facts, all: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::Expired).then(|| tls_impact(f, all))
}

fn tls_name_mismatch(f: &Facts, all: &[Facts]) -> Option<Vars> {
    if !f.reason_is(&Reason::NameMismatch) {
        return None;
    }
    let mut vars = with_issuer(f, tls_impact(f, all));
    vars.push(("server_name", f.server_name.clone().unwrap_or_else(|| f.host.clone())));
    Some(vars)
}

fn tls_failed(f: &Facts, all: &[Facts]) -> Option<Vars> {
    (f.phase == Some(Phase::Tls) && !f.reason_is(&Reason::Config)).then(|| tls_impact(f, all))
}

fn qname(f: &Facts) -> Vars {
    vec![("qname", f.host.clone())]
}

fn dns_nxdomain(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::Nxdomain).then(|| qname(f))
}

fn dns_failed(f: &Facts, _: &[Facts]) -> Option<Vars> {
    let resolver_trouble = matches!(f.reason, Some(Reason::Servfail | Reason::DnsRefused | Reason::TruncatedTcpRefused))
        || (f.phase == Some(Phase::Resolve) && f.reason_is(&Reason::Timeout))
        || (f.kind == "dns" && f.reason_is(&Reason::Timeout));
    resolver_trouble.then(|| qname(f))
}

fn dns_no_answer(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::NoAnswer).then(|| qname(f))
}

fn proxy_auth(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.phase == Some(Phase::Proxy) && matches!(f.reason, Some(Reason::Auth | Reason::Status(407)))).then(Vec::new)
}

/// With `concurrent: N` and some established through the proxy, its 429/503 for the rest is
/// its own connection limit (`connection_cap`), neither an unreachable target nor a policy.
fn proxy_cap(f: &Facts) -> bool {
    f.outcome.detail.concurrent.as_ref().is_some_and(|c| c.established > 0) && matches!(f.reason, Some(Reason::Status(429 | 503)))
}

fn proxy_upstream_failed(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.phase == Some(Phase::Proxy) && matches!(f.reason, Some(Reason::Status(502..=504))) && !proxy_cap(f)).then(Vec::new)
}

fn proxy_denied(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.phase == Some(Phase::Proxy) && !f.reason_is(&Reason::Timeout) && !proxy_cap(f)).then(Vec::new)
}

/// `concurrent: N` with some but not all N established, refused by a cap: a 429/503 on the
/// upgrade or the proxy, or a TURN quota/capacity answer.
fn connection_cap(f: &Facts, _: &[Facts]) -> Option<Vars> {
    let c = f.outcome.detail.concurrent.as_ref()?;
    if c.established == 0 || c.established >= c.requested {
        return None;
    }
    let refused = matches!(
        (f.phase, f.reason),
        (Some(Phase::Upgrade | Phase::Proxy), Some(Reason::Status(429 | 503)))
            | (Some(Phase::Allocate), Some(Reason::Quota | Reason::Capacity))
    );
    if !refused {
        return None;
    }
    let (service, things) = if f.kind == "turn" {
        ("TURN", "allocations")
    } else {
        ("WebSocket signalling", "connections")
    };
    let retry_after = f
        .retry_after
        .map(|d| format!(" (Retry-After {} s)", d.as_secs()))
        .unwrap_or_default();
    let e = c.established;
    // Who set the limit decides who else it hits.
    let cause = match (f.phase, f.reason) {
        (Some(Phase::Proxy), _) => format!(
            "the HTTP proxy's own connection limit (e.g. MaxClients){retry_after}, shared by every client behind that proxy whatever its credentials; busy hours leave fewer"
        ),
        (_, Some(Reason::Capacity)) => format!(
            "the server ran out of relay capacity after {e} (508, server-wide: not a quota on these credentials); other users' calls take from the same pool"
        ),
        (_, Some(Reason::Quota)) => format!(
            "an allocation quota of {e} (486: these credentials' own quota, or the server's total quota for all users); more parallel calls with these credentials are refused"
        ),
        _ => format!(
            "a cap of {e} per client or user{retry_after}; more parallel clients with these credentials are refused"
        ),
    };
    Some(vec![
        ("service", service.to_string()),
        ("things", things.to_string()),
        ("established", c.established.to_string()),
        ("requested", c.requested.to_string()),
        ("cause", cause),
    ])
}

fn rate_limited(f: &Facts, _: &[Facts]) -> Option<Vars> {
    if !f.reason_is(&Reason::Status(429)) {
        return None;
    }
    let retry = match f.retry_after {
        Some(d) => format!(" (Retry-After {} s)", d.as_secs()),
        None => " (no Retry-After)".to_string(),
    };
    Some(vec![("retry_after", retry)])
}

fn ws_upgrade_timeout(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.kind == "websocket" && f.phase == Some(Phase::Upgrade) && f.reason_is(&Reason::Timeout)).then(Vec::new)
}

fn ws_not_upgraded(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.kind == "websocket" && f.phase == Some(Phase::Upgrade) && matches!(f.reason, Some(Reason::NotUpgraded | Reason::Status(_))))
        .then(Vec::new)
}

/// A hold of this probe cut by the peer or a middlebox (`hold/closed`, `hold/reset`).
fn cut_hold<'f>(f: &Facts<'f>) -> Option<&'f HoldDetails> {
    if f.phase != Some(Phase::Hold) || !matches!(f.reason, Some(Reason::Closed | Reason::Reset)) {
        return None;
    }
    f.holds.iter().copied().find(|h| !h.survived)
}

/// An idle hold carried no traffic after the exchange before it ended (`idle: true`, or a
/// `ping_interval` longer than the socket lived): its lifetime is the idle time.
fn idle(h: &HoldDetails) -> bool {
    h.pings == 0
}

/// How close lifetimes must be to read as one timer: within ±10 % of their median.
const CLUSTER: f64 = 0.10;

/// Cut lifetimes (seconds, sorted) of the `is_idle` (or pinged) holds in the whole check.
fn cut_lifetimes(all: &[Facts], is_idle: bool) -> Vec<f64> {
    let mut cut: Vec<f64> = cut_holds(all, is_idle).map(|(_, l)| l).collect();
    cut.sort_by(f64::total_cmp);
    cut
}

/// (index of the result, lifetime) of every cut `is_idle` (or pinged) hold in the check.
fn cut_holds<'a>(all: &'a [Facts], is_idle: bool) -> impl Iterator<Item = (usize, f64)> + 'a {
    all.iter().enumerate().flat_map(move |(i, f)| {
        f.holds
            .iter()
            .filter(move |h| idle(h) == is_idle && !h.survived)
            .map(move |h| (i, h.lifetime.as_secs_f64()))
    })
}

/// The median of sorted `cut` when there are at least two, all within ±10 % of it.
fn clustered(cut: &[f64]) -> Option<f64> {
    let median = *cut.get(cut.len() / 2).filter(|_| cut.len() >= 2)?;
    (median > 0.0 && cut.iter().all(|l| (l - median).abs() <= CLUSTER * median)).then_some(median)
}

/// A hold of the same kind that survived longer than the cluster's top (which a timer of
/// that length would have cut), if any.
fn outlived(all: &[Facts], is_idle: bool, high: f64) -> bool {
    all.iter()
        .flat_map(|f| f.holds.iter().copied())
        .any(|h| idle(h) == is_idle && h.survived && h.lifetime.as_secs_f64() > high * (1.0 + CLUSTER))
}

/// Whether the cuts can be told from one event that cut every socket at once (a proxy or
/// server restart): the N holds of one `concurrent` run start together, so cuts at one age
/// are cuts at one moment. They can when the cuts come from two or more results (separate
/// probes or runs), or, for idle cuts, when a pinged hold in the check survived past them
/// (a control: an event would have cut it too; an idle timer spares it).
fn not_one_event(all: &[Facts], is_idle: bool, high: f64) -> bool {
    let mut sources: Vec<usize> = cut_holds(all, is_idle).map(|(i, _)| i).collect();
    sources.dedup();
    let control = is_idle
        && all
            .iter()
            .flat_map(|f| f.holds.iter().copied())
            .any(|h| !idle(h) && h.survived && h.lifetime.as_secs_f64() >= high);
    sources.len() >= 2 || control
}

/// The timer's evidence when the cut lifetimes of `is_idle` holds cluster, no hold of the
/// same kind outlived them and they are not one event: median, count and range.
fn cut_cluster(all: &[Facts], is_idle: bool) -> Option<Vars> {
    let cut = cut_lifetimes(all, is_idle);
    let median = clustered(&cut)?;
    let (low, high) = (cut[0], cut[cut.len() - 1]);
    if outlived(all, is_idle, high) || !not_one_event(all, is_idle, high) {
        return None;
    }
    Some(vec![
        ("secs", secs(median)),
        ("samples", cut.len().to_string()),
        ("low", format!("{low:.1}")),
        ("high", format!("{high:.1}")),
    ])
}

/// Seconds for a sentence: whole from 2 s on, else one decimal.
fn secs(s: f64) -> String {
    if s >= 2.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

fn ws_idle_timeout(f: &Facts, all: &[Facts]) -> Option<Vars> {
    cut_hold(f).filter(|h| idle(h))?;
    cut_cluster(all, true)
}

fn ws_lifetime_limit(f: &Facts, all: &[Facts]) -> Option<Vars> {
    cut_hold(f).filter(|h| !idle(h))?;
    cut_cluster(all, false)
}

/// A cut hold without the evidence of a timer: one cut, or lifetimes that do not cluster.
fn ws_hold_cut(f: &Facts, all: &[Facts]) -> Option<Vars> {
    let h = cut_hold(f)?;
    let mode = if idle(h) { "idle" } else { "with pings" };
    let same = cut_lifetimes(all, idle(h));
    let (lo, hi) = (same.first().copied().unwrap_or(0.0), same.last().copied().unwrap_or(0.0));
    let evidence = if same.len() < 2 {
        "one cut is not yet a pattern: hold several sockets at once (concurrent: N) or watch egress_probe_websocket_hold_seconds for cuts at the same age (an idle or lifetime timer)".to_string()
    } else if clustered(&same).is_none() {
        format!(
            "{} holds were cut at ages from {lo:.1} to {hi:.1} s, too far apart for one timer: an unstable path or a server closing sockets",
            same.len()
        )
    } else if outlived(all, idle(h), hi) {
        format!(
            "{} holds were cut at {lo:.1} to {hi:.1} s, but another hold of the same kind lived longer: not one timer on every path (different proxies or servers?)",
            same.len()
        )
    } else {
        format!(
            "the {} holds of one run were all cut at {lo:.1} to {hi:.1} s: a timer, or one event that cut them together (a proxy or server restart); repeat the probe{}",
            same.len(),
            if idle(h) {
                ", or hold a pinged socket beside the idle ones as a control"
            } else {
                ""
            }
        )
    };
    Some(vec![
        ("probe", f.probe_phrase()),
        ("secs", format!("{:.1}", h.lifetime.as_secs_f64())),
        ("mode", mode.to_string()),
        ("evidence", evidence),
    ])
}

fn turn_auth(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (matches!(f.kind, "turn" | "ice") && matches!(f.reason, Some(Reason::Auth | Reason::WrongCredentials | Reason::StaleNonce)))
        .then(Vec::new)
}

fn turn_forbidden(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (matches!(f.kind, "turn" | "stun") && f.reason_is(&Reason::Forbidden)).then(Vec::new)
}

fn turn_capacity(f: &Facts, _: &[Facts]) -> Option<Vars> {
    matches!(f.reason, Some(Reason::Quota | Reason::Capacity)).then(Vec::new)
}

fn relay_no_echo(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.kind == "turn" && matches!(f.phase, Some(Phase::Relay | Phase::Permission)) && f.reason_is(&Reason::Timeout)).then(Vec::new)
}

/// A `media:` stream that ran but missed a threshold: the figures, never the message.
fn call_quality_poor(f: &Facts, _: &[Facts]) -> Option<Vars> {
    let m = f.outcome.detail.media.as_ref().filter(|m| m.received > 0)?;
    (f.phase == Some(Phase::Media)
        && f.reason
            .is_some_and(|r| matches!(r, Reason::Loss | Reason::Jitter | Reason::Rtt | Reason::Mos)))
    .then(|| {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let leg = if m.crossings == 4 {
            format!(" (≈{:.0} ms per client leg)", ms(m.leg_rtt_avg.unwrap_or_default()))
        } else {
            String::new()
        };
        vec![(
            "figures",
            format!(
                "loss {:.1}% (≈{:.1}% one way), jitter {:.1} ms, round trip {:.0} ms{leg}, MOS {:.1}",
                m.loss * 100.0,
                m.one_way_loss * 100.0,
                ms(m.jitter.unwrap_or_default()),
                ms(m.rtt_avg.unwrap_or_default()),
                m.mos
            ),
        )]
    })
}

/// A `media:` stream of which nothing came back (`media/loss` with none received).
fn media_silent(f: &Facts, _: &[Facts]) -> Option<Vars> {
    let m = f.outcome.detail.media.as_ref().filter(|m| m.sent > 0 && m.received == 0)?;
    if f.phase != Some(Phase::Media) || !f.reason_is(&Reason::Loss) {
        return None;
    }
    let cause = if f.kind == "turn" {
        ": the relay allocated and relayed its round trips, but not the stream; a rate limit or a policy on the relay's media, or the peer does not echo"
    } else {
        ": UDP to that port is dropped on the way out or back, or no UDP echo answers there"
    };
    Some(vec![("sent", m.sent.to_string()), ("cause", cause.to_string())])
}

/// ` over UDP and TLS`: the relay transports an ice probe tried (empty when unknown).
fn tried(f: &Facts) -> Vars {
    let mut t: Vec<String> = f.relay_tried.iter().map(|t| t.to_ascii_uppercase()).collect();
    t.sort();
    t.dedup();
    let text = match t.len() {
        0 => String::new(),
        1 => format!(" over {}", t[0]),
        n => format!(" over {} and {}", t[..n - 1].join(", "), t[n - 1]),
    };
    vec![("tried", text)]
}

fn ice_no_relay_fallback(f: &Facts, all: &[Facts]) -> Option<Vars> {
    if !f.reason_is(&Reason::NoRelay) {
        return None;
    }
    let fallback = stream_fallback(all)?;
    let mut vars = tried(f);
    vars.extend(fallback_vars(fallback));
    Some(vars)
}

fn ice_no_relay(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::NoRelay).then(|| tried(f))
}

fn ice_no_srflx(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::NoSrflx).then(Vec::new)
}

/// Who rejected, from a connect's `reject_origin` or a trace's `rejected_by`.
fn reject_origin<'f>(f: &Facts<'f>) -> Option<&'f crate::outcome::details::RejectOrigin> {
    if !matches!(f.reason, Some(Reason::Refused | Reason::Unreachable)) {
        return None;
    }
    let d = &f.outcome.detail;
    d.reject_origin
        .as_ref()
        .or_else(|| d.path.as_ref().and_then(|p| p.rejected_by.as_ref()))
}

fn rejected_before_server(f: &Facts, _: &[Facts]) -> Option<Vars> {
    let o = reject_origin(f).filter(|o| !o.is_target)?;
    let hops_out = o.hop.map(|h| format!(", {h} hops out")).unwrap_or_default();
    Some(vec![("origin", o.address.to_string()), ("hops_out", hops_out)])
}

fn path_silent_after_hop(f: &Facts, _: &[Facts]) -> Option<Vars> {
    let p = f.outcome.detail.path.as_ref().filter(|p| p.end == "silence")?;
    let n = p.last_answered?;
    let addr = p.hops.iter().find(|h| h.ttl == n).and_then(|h| h.address)?;
    Some(vec![("hop", n.to_string()), ("hop_address", addr.to_string())])
}

/// `udp_ports` with silent ports: which part of the range is closed, as ranges.
fn udp_ports_closed(f: &Facts, _: &[Facts]) -> Option<Vars> {
    if f.phase != Some(Phase::Udp) || !f.reason_is(&Reason::Closed) {
        return None;
    }
    let u = f.outcome.detail.udp_ports.as_ref()?;
    let list = |v: &[String]| {
        let shown = v.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 4 {
            format!("{shown}, …")
        } else {
            shown
        }
    };
    let finding = if u.open_ports == 0 {
        // Only what was tried: a sample of 64 says nothing of the other 49,088 ports.
        let silent = u.closed_ports + u.silent_once;
        format!(
            "none of the {silent} port(s) of {} tried so far answers: UDP to the media range is blocked, or no echo responder runs there",
            u.set
        )
    } else {
        format!(
            "{} get no echo while {} do: a firewall passes only part of the media range, so calls whose media lands on a closed port have no audio",
            list(&u.closed),
            list(&u.open)
        )
    };
    let tried = format!("{} of {}", u.covered + u.silent_once, u.set_size);
    Some(vec![("finding", finding), ("tried", tried)])
}

fn rejected(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::Refused).then(Vec::new)
}

fn dropped(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.phase == Some(Phase::Connect) && f.reason_is(&Reason::Timeout)).then(Vec::new)
}

fn unreachable(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::Unreachable).then(Vec::new)
}

fn reset(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::Reset).then(Vec::new)
}

fn blocked_locally(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::BlockedLocally).then(Vec::new)
}

fn http_status(f: &Facts, _: &[Facts]) -> Option<Vars> {
    match f.reason {
        Some(Reason::Status(code)) if f.kind == "http" => Some(vec![("status", code.to_string())]),
        _ => None,
    }
}

/// An ice probe whose TURN/UDP servers gave no relay while a TCP/TLS server did, when no
/// failed probe already says UDP is dropped (`udp_dropped_relay_works` covers that).
fn ice_relay_only_over_stream(all: &[Facts]) -> Option<Vars> {
    if all.iter().any(|f| !f.success && is_udp_drop(f)) {
        return None;
    }
    all.iter()
        .filter(|f| f.kind == "ice")
        .filter(|f| {
            let udp = f.outcome.detail.ice.as_ref().and_then(|i| i.relay_protocols.get("udp"));
            udp == Some(&0)
        })
        .find_map(|f| stream_fallback(std::slice::from_ref(f)))
        .map(fallback_vars)
}

/// RFC 4787 REQ-5: an idle UDP mapping must live at least 2 minutes. A search that saw a
/// mapping expire while the longest alive idle time was below this warns (Linux's default
/// conntrack UDP timer of 30 s brackets at about 29–32 s: the expiry may lie above 30 s).
const SHORT_LIFETIME: Duration = Duration::from_secs(120);

/// Names of the stun probes whose NAT `pick` returns `Some`, sorted, and the first value.
fn nat_probes<'f>(all: &'f [Facts], pick: impl Fn(&'f crate::outcome::details::StunDetails) -> Option<String>) -> Option<(String, String)> {
    let mut hits: Vec<(&str, String)> = all
        .iter()
        .filter(|f| f.kind == "stun")
        .filter_map(|f| Some((f.name, pick(f.outcome.detail.stun.as_ref()?)?)))
        .collect();
    hits.sort();
    let first = hits.first()?.1.clone();
    let names: Vec<&str> = hits.iter().map(|(n, _)| *n).collect();
    Some((names.join(", "), first))
}

/// `address_and_port_dependent` → `address-and-port-dependent`.
fn behaviour_words(b: &str) -> String {
    b.replace('_', "-")
}

/// A stun probe found a mapping that changes with the destination (RFC 3489's "symmetric").
fn nat_symmetric(all: &[Facts]) -> Option<Vars> {
    let (probes, mapping) = nat_probes(all, |s| {
        s.nat_mapping.clone().filter(|m| {
            matches!(
                m.as_str(),
                "address_dependent" | "address_and_port_dependent" | "endpoint_dependent"
            )
        })
    })?;
    Some(vec![("probes", probes), ("mapping", behaviour_words(&mapping))])
}

fn nat_short_lifetime(all: &[Facts]) -> Option<Vars> {
    let (probes, secs) = nat_probes(all, |s| {
        let l = s.binding_lifetime.as_ref()?;
        l.expired?;
        (l.alive < SHORT_LIFETIME).then_some(())?;
        Some(format!("{:.0}", l.estimate().as_secs_f64()))
    })?;
    Some(vec![("probes", probes), ("lifetime", secs)])
}

/// Endpoint-independent mapping; when the server saw the probe's own address (`mapped ==
/// local`) there is no NAT at all on the path, and the verdict says that instead.
fn nat_endpoint_independent(all: &[Facts]) -> Option<Vars> {
    let (probes, seen) = nat_probes(all, |s| {
        let no_nat = s.mapped.is_some() && s.mapped == s.local;
        (s.nat_mapping.as_deref() == Some("endpoint_independent")).then(|| {
            format!(
                "{}{}",
                if no_nat { "-" } else { "+" },
                s.nat_filtering.as_deref().unwrap_or_default()
            )
        })
    })?;
    let (nat, filtering) = seen.split_at(1);
    let what = if nat == "-" {
        "No NAT between this host and the STUN server (it sees our own address)"
    } else {
        "NAT mapping is endpoint-independent"
    };
    let filtering = filtering.to_string();
    let (filtering, once) = match filtering.as_str() {
        "" => (String::new(), ""),
        "endpoint_independent" => (" with endpoint-independent filtering".to_string(), ""),
        f => (
            format!(" with {} filtering", behaviour_words(f)),
            " once this side has sent to the peer, as ICE does",
        ),
    };
    Some(vec![
        ("probes", probes),
        ("what", what.to_string()),
        ("filtering", filtering),
        ("once", once.to_string()),
    ])
}

fn all_pass(all: &[Facts]) -> Option<Vars> {
    let every = !all.is_empty() && all.iter().all(|f| f.success);
    // A degraded relay or NAT is not "all paths work".
    let degraded = ice_relay_only_over_stream(all).is_some() || nat_symmetric(all).is_some() || nat_short_lifetime(all).is_some();
    (every && !degraded).then(|| vec![("count", all.len().to_string())])
}

fn some_pass(all: &[Facts]) -> Option<Vars> {
    let passed = all.iter().filter(|f| f.success).count();
    (passed > 0 && all_pass(all).is_none()).then(|| vec![("passed", passed.to_string()), ("count", all.len().to_string())])
}

#[cfg(test)]
mod tests;
