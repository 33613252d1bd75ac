//! Plain-language verdicts derived from a check's outcomes, for the network team reading a
//! `check`: "UDP to 3478 is dropped (stun/timeout) but TURN over TLS on 443 works: softphones
//! will connect through the relay with higher latency".
//!
//! All rules live in ONE ordered table, [`RULES`]: a condition on the facts of a failed probe
//! (and, for cross-probe rules, on the other probes) and a sentence template with `{holes}`.
//! Each failed probe gets the sentence of the first rule that matches (the table ends with a
//! catch-all); rules of [`Scope::Whole`] look at the check as a whole ("all paths work").
//! Identical sentences from several probes are merged.
//!
//! Facts come only from the typed result: the port and transport from the target (`host:port`,
//! an [`IceUrl`], a URL), `detail.relay`/`detail.stun` transports, `detail.peer`,
//! `detail.tls.issuer`, `detail.retry_after`. `failure.message` is never used, so no secret
//! and no free text from a server can reach a verdict. The table is documented in words in
//! `docs/verdicts.md`.

use std::time::Duration;

use serde::Serialize;

use crate::config::{HostPort, IceUrl};
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
/// whole-check rules; identical sentences merged; ordered by severity (stable otherwise).
pub fn assess(results: &[ProbeResult]) -> Vec<Verdict> {
    let facts: Vec<Facts> = results.iter().map(Facts::of).collect();
    let mut out: Vec<Verdict> = Vec::new();
    for subject in facts.iter().filter(|f| !f.success) {
        let matched = RULES.iter().find_map(|rule| match rule.when {
            Scope::Failure(cond) => cond(subject, &facts).map(|vars| (rule, vars)),
            Scope::Whole(_) => None,
        });
        if let Some((rule, vars)) = matched {
            push_merged(
                &mut out,
                rule,
                render(rule.template, &subject.common_vars(), &vars),
                Some(subject.name),
            );
        }
    }
    for rule in RULES {
        if let Scope::Whole(cond) = rule.when {
            if let Some(vars) = cond(&facts) {
                push_merged(&mut out, rule, render(rule.template, &[], &vars), None);
            }
        }
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.severity));
    out
}

fn push_merged(out: &mut Vec<Verdict>, rule: &Rule, text: String, probe: Option<&str>) {
    if let Some(v) = out.iter_mut().find(|v| v.text == text) {
        v.probes.extend(probe.map(str::to_string));
        return;
    }
    out.push(Verdict {
        rule: rule.id,
        severity: rule.severity,
        text,
        probes: probe.map(str::to_string).into_iter().collect(),
    });
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
    /// `{proto}` (UDP/TCP/TLS), `{code}` (`phase/reason`) and `{phase}`.
    pub template: &'static str,
}

/// The rule table, in priority order. The last failure rule matches everything.
pub static RULES: &[Rule] = &[
    Rule {
        id: "udp_dropped_relay_works",
        severity: Severity::Degraded,
        when: Scope::Failure(udp_dropped_relay_works),
        template: "UDP to {port} is dropped ({code}) but TURN over {fallback} on {fallback_port} works: softphones will connect through the relay with higher latency",
    },
    Rule {
        id: "udp_dropped_relay_fails",
        severity: Severity::Broken,
        when: Scope::Failure(udp_dropped_relay_fails),
        template: "UDP to {port} is dropped ({code}) and TURN over TCP/TLS fails too: calls will have no media path",
    },
    Rule {
        id: "udp_dropped",
        severity: Severity::Broken,
        when: Scope::Failure(udp_dropped),
        template: "UDP to {port} is dropped ({code}): media needs TURN over TLS (e.g. on 443); add a turns: probe to check that fallback",
    },
    Rule {
        id: "tls_intercepted",
        severity: Severity::Broken,
        when: Scope::Failure(tls_intercepted),
        template: "TLS on {port} is intercepted (pin mismatch, issuer '{issuer}'): {impact}",
    },
    Rule {
        id: "tls_untrusted",
        severity: Severity::Broken,
        when: Scope::Failure(tls_untrusted),
        template: "TLS on {port} presents a certificate from an untrusted issuer '{issuer}' ({code}), likely an intercepting proxy: {impact}",
    },
    Rule {
        id: "tls_expired",
        severity: Severity::Broken,
        when: Scope::Failure(tls_expired),
        template: "The certificate on {host}:{port} has expired ({code}): {impact}",
    },
    Rule {
        id: "tls_name_mismatch",
        severity: Severity::Broken,
        when: Scope::Failure(tls_name_mismatch),
        template: "The certificate on {port} is not for {server_name} ({code}), issuer '{issuer}': a wrong endpoint or an intercepting proxy; {impact}",
    },
    Rule {
        id: "tls_failed",
        severity: Severity::Broken,
        when: Scope::Failure(tls_failed),
        template: "TLS on {port} fails during the handshake ({code}): a middlebox may be interfering; {impact}",
    },
    Rule {
        id: "dns_nxdomain",
        severity: Severity::Broken,
        when: Scope::Failure(dns_nxdomain),
        template: "DNS for {qname} does not resolve ({code})",
    },
    Rule {
        id: "dns_failed",
        severity: Severity::Broken,
        when: Scope::Failure(dns_failed),
        template: "DNS for {qname} fails ({code}): the resolver is broken, refuses, or is blocked",
    },
    Rule {
        id: "dns_no_answer",
        severity: Severity::Broken,
        when: Scope::Failure(dns_no_answer),
        template: "DNS for {qname} has no record of the asked type ({code})",
    },
    Rule {
        id: "proxy_auth",
        severity: Severity::Broken,
        when: Scope::Failure(proxy_auth),
        template: "The HTTP proxy demands authentication for {host}:{port} ({code}): configure proxy credentials",
    },
    Rule {
        id: "proxy_denied",
        severity: Severity::Broken,
        when: Scope::Failure(proxy_denied),
        template: "The HTTP proxy does not let {host}:{port} through ({code})",
    },
    Rule {
        id: "rate_limited",
        severity: Severity::Degraded,
        when: Scope::Failure(rate_limited),
        template: "429 from {host}: clients are retrying too fast{retry_after}",
    },
    Rule {
        id: "ws_upgrade_timeout",
        severity: Severity::Broken,
        when: Scope::Failure(ws_upgrade_timeout),
        template: "WebSocket signalling on {port} times out during upgrade ({code}): a proxy or firewall holds the Upgrade request",
    },
    Rule {
        id: "ws_not_upgraded",
        severity: Severity::Broken,
        when: Scope::Failure(ws_not_upgraded),
        template: "WebSocket signalling on {port} is not upgraded ({code}): a proxy strips the Upgrade header or the server refuses it",
    },
    Rule {
        id: "turn_auth",
        severity: Severity::Broken,
        when: Scope::Failure(turn_auth),
        template: "TURN on {port} rejects the credentials ({code}): check the username/password or REST secret and the clock",
    },
    Rule {
        id: "turn_forbidden",
        severity: Severity::Broken,
        when: Scope::Failure(turn_forbidden),
        template: "TURN on {port} refuses the request ({code}): the server's policy forbids it",
    },
    Rule {
        id: "turn_capacity",
        severity: Severity::Broken,
        when: Scope::Failure(turn_capacity),
        template: "TURN on {port} has no allocation to give ({code}): the relay is full or the user's quota is used up",
    },
    Rule {
        id: "relay_no_echo",
        severity: Severity::Broken,
        when: Scope::Failure(relay_no_echo),
        template: "TURN over {proto} on {port} allocates but relayed packets do not come back ({code}): the relay cannot reach the peer",
    },
    Rule {
        id: "ice_no_relay",
        severity: Severity::Broken,
        when: Scope::Failure(ice_no_relay),
        template: "ICE gathered no relay candidate ({code}): softphones cannot fall back to the relay",
    },
    Rule {
        id: "ice_no_srflx",
        severity: Severity::Degraded,
        when: Scope::Failure(ice_no_srflx),
        template: "ICE gathered no server-reflexive candidate ({code}): STUN over UDP is blocked, direct media will not work",
    },
    Rule {
        id: "rejected",
        severity: Severity::Broken,
        when: Scope::Failure(rejected),
        template: "{proto} to {port} on {host} is rejected ({code}): a firewall rejects it or nothing listens there",
    },
    Rule {
        id: "dropped",
        severity: Severity::Broken,
        when: Scope::Failure(dropped),
        template: "{proto} to {port} on {host} is silently dropped ({code}): a firewall DROP rule",
    },
    Rule {
        id: "unreachable",
        severity: Severity::Broken,
        when: Scope::Failure(unreachable),
        template: "{host} is unreachable ({code}): no route from this network",
    },
    Rule {
        id: "reset",
        severity: Severity::Broken,
        when: Scope::Failure(reset),
        template: "{proto} to {port} on {host} is cut by a reset ({code}): a middlebox ends the connection",
    },
    Rule {
        id: "blocked_locally",
        severity: Severity::Broken,
        when: Scope::Failure(blocked_locally),
        template: "This host's own firewall blocks {proto} to {port} ({code})",
    },
    Rule {
        id: "http_status",
        severity: Severity::Broken,
        when: Scope::Failure(http_status),
        template: "{host} answers HTTP {status} on {port} ({code})",
    },
    Rule {
        id: "other_failure",
        severity: Severity::Broken,
        when: Scope::Failure(|_, _| Some(Vec::new())),
        template: "{name} ({kind} to {host}:{port}) fails ({code})",
    },
    Rule {
        id: "all_pass",
        severity: Severity::Ok,
        when: Scope::Whole(all_pass),
        template: "all paths work ({count} probes passed)",
    },
    Rule {
        id: "some_pass",
        severity: Severity::Ok,
        when: Scope::Whole(some_pass),
        template: "{passed} of {count} probes pass",
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
    pub server_name: Option<String>,
    pub retry_after: Option<Duration>,
    pub outcome: &'a Outcome,
}

impl<'a> Facts<'a> {
    /// Digests one result: target parsed per kind, transport refined by the details.
    pub fn of(r: &'a ProbeResult) -> Facts<'a> {
        let o = &r.outcome;
        let (host, mut port, mut transport) = parse_target(&r.kind, &r.target);
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
            server_name: tls.map(|t| t.server_name.clone()).filter(|s| !s.is_empty()),
            retry_after: o.detail.retry_after,
            outcome: o,
        }
    }

    fn reason_is(&self, r: &Reason) -> bool {
        self.reason == Some(r)
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

fn transport_word(s: &str) -> Option<&'static str> {
    Transport::parse(s).map(Transport::as_str)
}

/// Host, port and transport from a `target` string as `ProbeSpec::target` writes it.
fn parse_target(kind: &str, target: &str) -> (String, Option<u16>, &'static str) {
    let first = target.split([',', ' ']).next().unwrap_or_default();
    match kind {
        "stun" | "turn" | "ice" => match IceUrl::parse(first) {
            Ok(u) => (u.host.clone(), Some(u.port), u.transport_label()),
            Err(_) => (first.to_string(), None, "udp"),
        },
        "http" | "websocket" | "remote_write" => match url::Url::parse(first) {
            Ok(u) => {
                let tls = matches!(u.scheme(), "https" | "wss");
                (
                    u.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string(),
                    u.port_or_known_default(),
                    if tls { "tls" } else { "tcp" },
                )
            }
            Err(_) => (first.to_string(), None, "tcp"),
        },
        "dns" => (first.trim_end_matches('.').to_string(), None, "udp"),
        other => match HostPort::parse(first, None) {
            Ok(hp) => (hp.host, Some(hp.port), if other == "tls" { "tls" } else { "tcp" }),
            Err(_) => (first.to_string(), None, "tcp"),
        },
    }
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

/// TURN over a stream transport (the fallback when UDP is blocked).
fn is_stream_turn(f: &Facts) -> bool {
    f.kind == "turn" && matches!(f.transport, "tls" | "tcp")
}

fn udp_dropped_relay_works(f: &Facts, all: &[Facts]) -> Option<Vars> {
    if !is_udp_drop(f) {
        return None;
    }
    // Prefer the TLS fallback (it passes DPI-less proxies and port-443-only firewalls).
    let fallback = all
        .iter()
        .filter(|o| o.success && is_stream_turn(o))
        .max_by_key(|o| (o.transport == "tls", o.port == Some(443)))?;
    Some(vec![
        ("fallback", fallback.transport.to_ascii_uppercase()),
        ("fallback_port", fallback.port_str()),
    ])
}

fn udp_dropped_relay_fails(f: &Facts, all: &[Facts]) -> Option<Vars> {
    (is_udp_drop(f) && all.iter().any(is_stream_turn)).then(Vec::new)
}

fn udp_dropped(f: &Facts, _: &[Facts]) -> Option<Vars> {
    is_udp_drop(f).then(Vec::new)
}

/// What breaks when TLS on this port is broken: the services probed on the same port.
fn tls_impact(f: &Facts, all: &[Facts]) -> Vars {
    let mut services: Vec<&str> = Vec::new();
    for o in std::iter::once(f).chain(all.iter().filter(|o| o.port == f.port && o.transport == "tls")) {
        let s = match o.kind {
            "turn" => "TURN over TLS",
            "websocket" => "WebSocket signalling",
            "http" => "HTTPS",
            "stun" => "STUN over TLS",
            _ => continue,
        };
        if !services.contains(&s) {
            services.push(s);
        }
    }
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

fn tls_untrusted(f: &Facts, all: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::UntrustedIssuer).then(|| with_issuer(f, tls_impact(f, all)))
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
    let resolver_trouble = matches!(f.reason, Some(Reason::Servfail | Reason::DnsRefused))
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

fn proxy_denied(f: &Facts, _: &[Facts]) -> Option<Vars> {
    (f.phase == Some(Phase::Proxy) && !f.reason_is(&Reason::Timeout)).then(Vec::new)
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

fn ice_no_relay(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::NoRelay).then(Vec::new)
}

fn ice_no_srflx(f: &Facts, _: &[Facts]) -> Option<Vars> {
    f.reason_is(&Reason::NoSrflx).then(Vec::new)
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

fn all_pass(all: &[Facts]) -> Option<Vars> {
    (!all.is_empty() && all.iter().all(|f| f.success)).then(|| vec![("count", all.len().to_string())])
}

fn some_pass(all: &[Facts]) -> Option<Vars> {
    let passed = all.iter().filter(|f| f.success).count();
    (passed > 0 && passed < all.len()).then(|| vec![("passed", passed.to_string()), ("count", all.len().to_string())])
}

#[cfg(test)]
mod tests;
