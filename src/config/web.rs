//! `web:` — what the HTTP endpoint's `/probe` may be pointed at, and the one rule that decides
//! it ([`probe_request`]).
//!
//! `/probe?module=M&target=T` runs module M's settings against T. Those settings can hold
//! secrets (a bearer header, TURN credentials), so the default is the strictest useful one: a
//! module probes only its own configured target (the same host and port; an http path may
//! differ), keeps its own scheme (an `https` module is never sent to `http://`), and its
//! secrets go only to the host(s) it was configured for. Other targets need an explicit
//! allow-list:
//!
//! ```yaml
//! web:
//!   probe_targets: [10.20.0.0/16, "*.media.example.com", turn1.example.net]
//! ```
//!
//! CIDRs match IP-literal targets; host globs (`*` matches any run of characters, case
//! insensitive) match names — a name is not resolved to be matched against a CIDR, so DNS
//! cannot widen the list. An allowed foreign target gets the module's settings *without* its
//! secrets: credential headers (`Authorization`, `Proxy-Authorization`, `Cookie`, and every
//! header given as `env:`/`file:`) are dropped; a module whose credentials are required
//! (turn, ice with TURN servers) is refused for any host but its own. The proxy is unchanged:
//! its credentials go to the configured proxy, whatever the target.
//!
//! This file holds the schema, its parser (called from `check` for the `web` key) and the
//! decision; the server only maps [`Refusal`] to `403` and counts it.

use std::net::IpAddr;

use super::check::Problems;
use super::types::ProbeSpec;
use super::yaml::{Node, Val};

/// The `web:` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebSettings {
    /// Extra targets `/probe` may be pointed at; empty = each module's own target only.
    pub probe_targets: Vec<TargetRule>,
}

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetRule {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    Cidr(ipnet::IpNet),
    /// `*.example.com`, `turn?.example.com` is not special: only `*` is.
    Glob(String),
}

impl TargetRule {
    /// Parses one entry: a CIDR or address, else a host glob of DNS characters and `*`.
    pub fn parse(s: &str) -> Result<TargetRule, String> {
        let t = s.trim();
        if let Ok(net) = t.parse::<ipnet::IpNet>() {
            return Ok(TargetRule::Cidr(net.trunc()));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(TargetRule::Cidr(ipnet::IpNet::from(ip)));
        }
        let ok = !t.is_empty() && t.len() <= 253 && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'));
        if !ok || t.chars().all(|c| c == '*' || c == '.') {
            return Err(format!(
                "{s:?} is neither a CIDR (10.0.0.0/8) nor a host glob (*.example.com); a bare `*` would allow every host"
            ));
        }
        Ok(TargetRule::Glob(t.to_ascii_lowercase()))
    }

    /// Whether `host` (a name or an IP literal, without port or brackets) is allowed.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            TargetRule::Cidr(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
            TargetRule::Glob(g) => host.parse::<IpAddr>().is_err() && glob(g, &host.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

/// `*` matches any (possibly empty) run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Why `/probe` refuses a target (answered `403` with this one line, and counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// A small label word: `scheme`, `not_allowed`, `credentials`.
    pub reason: &'static str,
    pub message: String,
}

/// What `/probe` asked for, decided: the spec to run, or why not.
#[derive(Debug)]
pub enum ProbeRequest {
    /// Run this spec (the module's own target, or an allowed one with secrets removed).
    Run(Box<ProbeSpec>),
    /// The target is not a target at all (unparsable): `400`.
    BadTarget(String),
    /// Not allowed: `403`.
    Refused(Refusal),
}

/// Decides a `/probe` request for module `name` with `spec`, pointed at `target`.
pub fn probe_request(name: &str, spec: &ProbeSpec, target: &str, web: &WebSettings) -> ProbeRequest {
    let new = match spec.with_target(target) {
        Ok(s) => s,
        Err(e) => return ProbeRequest::BadTarget(e),
    };
    if let (Some(old), Some(now)) = (scheme(spec), scheme(&new)) {
        if old != now {
            return refused(
                "scheme",
                format!("module {name:?} is {old}; a target may not change its scheme to {now}"),
            );
        }
    }
    // An ice module's credentials belong to one server: pointing the servers elsewhere must
    // not hand them to another of the module's hosts (a credential-less STUN server's, say).
    if ice_credentials_move(spec, &new) {
        return refused(
            "credentials",
            format!("module {name:?} carries TURN credentials for its own server only; it is not sent to another host"),
        );
    }
    let own = endpoints(spec);
    let asked = endpoints(&new);
    if asked.iter().all(|e| own.contains(e)) {
        return ProbeRequest::Run(Box::new(new));
    }
    let foreign: Vec<&(String, u16)> = asked.iter().filter(|e| !own.contains(e)).collect();
    if web.probe_targets.is_empty() {
        return refused(
            "not_allowed",
            format!(
                "module {name:?} may probe only its own target {}; list other targets in web.probe_targets",
                own.first().map(|(h, p)| format!("{h}:{p}")).unwrap_or_default()
            ),
        );
    }
    if let Some((host, _)) = foreign.iter().find(|(h, _)| !web.probe_targets.iter().any(|r| r.matches(h))) {
        return refused("not_allowed", format!("target {host} is not in web.probe_targets"));
    }
    let own_hosts: Vec<&String> = own.iter().map(|(h, _)| h).collect();
    let new_host_is_own = |h: &String| own_hosts.contains(&h);
    match strip_secrets(new, foreign.iter().all(|(h, _)| new_host_is_own(h)), url_query(spec)) {
        Ok(s) => ProbeRequest::Run(Box::new(s)),
        Err(what) => refused(
            "credentials",
            format!("module {name:?} carries {what} for its own server only; it is not sent to another host"),
        ),
    }
}

/// Whether a credentialed ice server would be pointed at a host other than its own.
fn ice_credentials_move(spec: &ProbeSpec, new: &ProbeSpec) -> bool {
    let (ProbeSpec::Ice(old), ProbeSpec::Ice(now)) = (spec, new) else {
        return false;
    };
    let host = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
    old.servers
        .iter()
        .zip(&now.servers)
        .any(|(a, b)| a.credentials.is_some() && host(&a.url.host) != host(&b.url.host))
}

/// The module's own URL query (it may carry a token, as `redact_url` assumes).
fn url_query(spec: &ProbeSpec) -> Option<String> {
    match spec {
        ProbeSpec::Http(s) => s.url.query().map(str::to_string),
        ProbeSpec::Websocket(s) => s.url.query().map(str::to_string),
        _ => None,
    }
}

fn refused(reason: &'static str, message: String) -> ProbeRequest {
    ProbeRequest::Refused(Refusal { reason, message })
}

/// The URL scheme of URL-based kinds, the ICE scheme of stun/turn.
fn scheme(spec: &ProbeSpec) -> Option<String> {
    match spec {
        ProbeSpec::Http(s) => Some(s.url.scheme().to_string()),
        ProbeSpec::Websocket(s) => Some(s.url.scheme().to_string()),
        ProbeSpec::Stun(s) => Some(format!("{:?}/{:?}", s.server.scheme, s.server.transport)),
        ProbeSpec::Turn(s) => Some(format!("{:?}/{:?}", s.server.scheme, s.server.transport)),
        _ => None,
    }
}

/// The hosts a spec sends traffic to (for the per-host concurrency limit). A dns probe
/// talks to its resolver, not to the name it asks about: its host is the resolver's address
/// (none for the system resolver).
pub fn target_hosts(spec: &ProbeSpec) -> Vec<String> {
    match spec {
        ProbeSpec::Dns(s) => s.resolver.map(|a| a.ip().to_string()).into_iter().collect(),
        other => endpoints(other).into_iter().map(|(h, _)| h).collect(),
    }
}

/// Every (lower-case host, port) the spec sends traffic to (for dns: the query name, port 0).
fn endpoints(spec: &ProbeSpec) -> Vec<(String, u16)> {
    let norm = |h: &str| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase()
    };
    let url = |u: &url::Url| (norm(u.host_str().unwrap_or_default()), u.port_or_known_default().unwrap_or(0));
    match spec {
        ProbeSpec::Tcp(s) => vec![(norm(&s.target.host), s.target.port)],
        ProbeSpec::Path(s) => vec![(norm(&s.target.host), s.target.port)],
        ProbeSpec::UdpPorts(s) => vec![(norm(&s.host), s.ports.first())],
        ProbeSpec::Tls(s) => vec![(norm(&s.target.host), s.target.port)],
        ProbeSpec::Http(s) => vec![url(&s.url)],
        ProbeSpec::Websocket(s) => vec![url(&s.url)],
        ProbeSpec::Stun(s) => vec![(norm(&s.server.host), s.server.port)],
        ProbeSpec::Turn(s) => std::iter::once((norm(&s.server.host), s.server.port))
            .chain(s.media.as_ref().and_then(|m| m.peer).map(|a| (a.ip().to_string(), a.port())))
            .collect(),
        ProbeSpec::Media(s) => vec![(norm(&s.target.host), s.target.port)],
        ProbeSpec::Ice(s) => s.servers.iter().map(|x| (norm(&x.url.host), x.url.port)).collect(),
        ProbeSpec::Dns(s) => vec![(norm(&s.query), 0)],
        // Steps with a literal URL; a `${var}` URL comes from a server at run time.
        ProbeSpec::Session(s) => s
            .steps
            .iter()
            .filter(|st| !st.url.contains("${"))
            .filter_map(|st| url::Url::parse(&st.url).ok())
            .map(|u| url(&u))
            .collect(),
    }
}

/// Headers that are credentials whatever their source.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Keeps only the headers that may go to a host the probe was not configured for: no
/// credential header (`Authorization`, `Cookie`...) and no value from a secret reference.
/// Used by `/probe` for other targets, by redirects to another origin and by session steps
/// whose URL a server supplied.
pub fn drop_secret_headers(h: &mut std::collections::BTreeMap<String, super::values::Secret>) {
    h.retain(|k, v| !CREDENTIAL_HEADERS.contains(&k.to_ascii_lowercase().as_str()) && v.source() == "literal")
}

/// Removes what must not leave for another host; `Err(what)` when the probe cannot run
/// without it. `same_hosts`: only the port differs (credentials then stay: same server).
/// `own_query`: the module's URL query, dropped when it would travel to another host (a
/// query the request itself brought stays).
fn strip_secrets(mut spec: ProbeSpec, same_hosts: bool, own_query: Option<String>) -> Result<ProbeSpec, &'static str> {
    if same_hosts {
        return Ok(spec);
    }
    let drop_own_query = |u: &mut url::Url| {
        if own_query.is_some() && u.query().map(str::to_string) == own_query {
            u.set_query(None);
        }
    };
    match &mut spec {
        // The bearer would go to the new host: an OAuth2 probe runs only against its own.
        ProbeSpec::Http(s) if s.auth.is_some() => return Err("an OAuth2 bearer token"),
        ProbeSpec::Session(_) => return Err("a session's steps and token"),
        ProbeSpec::Websocket(s) if s.auth.is_some() => return Err("an OAuth2 bearer token"),
        ProbeSpec::Http(s) => {
            drop_secret_headers(&mut s.headers);
            drop_own_query(&mut s.url);
        }
        ProbeSpec::Websocket(s) => {
            drop_secret_headers(&mut s.headers);
            drop_own_query(&mut s.url);
        }
        ProbeSpec::Turn(_) => return Err("TURN credentials"),
        ProbeSpec::Ice(s) if s.servers.iter().any(|x| x.credentials.is_some()) => return Err("TURN credentials"),
        _ => {}
    }
    Ok(spec)
}

/// Parses the `web:` mapping, recording problems at their positions.
pub(super) fn web(v: &Node, p: &mut Problems) -> Option<WebSettings> {
    let Val::Map(entries) = &v.val else {
        p.at(v.pos, format!("web must be a mapping, found {}", v.describe()));
        return None;
    };
    let mut out = WebSettings::default();
    let mut ok = true;
    for (k, val) in entries {
        match k.scalar() {
            Some("probe_targets") => {
                let Val::Seq(items) = &val.val else {
                    p.at(val.pos, format!("web.probe_targets must be a list, found {}", val.describe()));
                    ok = false;
                    continue;
                };
                for item in items {
                    match item.scalar().map(TargetRule::parse) {
                        Some(Ok(rule)) => out.probe_targets.push(rule),
                        Some(Err(e)) => {
                            p.at(item.pos, format!("web.probe_targets: {e}"));
                            ok = false;
                        }
                        None => {
                            p.at(
                                item.pos,
                                format!("web.probe_targets: expected a CIDR or host glob, found {}", item.describe()),
                            );
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                p.at(
                    k.pos,
                    format!("unknown field {:?} in web (allowed: probe_targets)", k.scalar().unwrap_or("?")),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn module(yaml: &str) -> ProbeSpec {
        parse_str(&format!("probes:\n  - name: m\n{yaml}"), "t.yaml")
            .unwrap()
            .probes
            .remove(0)
            .spec
    }

    fn allow(rules: &[&str]) -> WebSettings {
        WebSettings {
            probe_targets: rules.iter().map(|r| TargetRule::parse(r).unwrap()).collect(),
        }
    }

    fn decide(spec: &ProbeSpec, target: &str, web: &WebSettings) -> Result<ProbeSpec, String> {
        match probe_request("m", spec, target, web) {
            ProbeRequest::Run(s) => Ok(*s),
            ProbeRequest::BadTarget(e) => Err(format!("bad: {e}")),
            ProbeRequest::Refused(r) => Err(r.reason.to_string()),
        }
    }

    #[test]
    fn own_target_runs_and_others_are_refused_without_an_allow_list() {
        let tcp = module("    kind: tcp\n    target: relay.example.com:443\n");
        assert!(decide(&tcp, "relay.example.com:443", &WebSettings::default()).is_ok());
        assert!(decide(&tcp, "RELAY.example.com.:443", &WebSettings::default()).is_ok());
        assert_eq!(decide(&tcp, "10.0.0.5:22", &WebSettings::default()).unwrap_err(), "not_allowed");
        assert_eq!(
            decide(&tcp, "relay.example.com:22", &WebSettings::default()).unwrap_err(),
            "not_allowed"
        );
    }

    #[test]
    fn a_module_keeps_its_scheme() {
        let https = module("    kind: http\n    url: https://api.example.com/health\n");
        assert_eq!(
            decide(&https, "http://api.example.com/x", &WebSettings::default()).unwrap_err(),
            "scheme"
        );
        assert!(decide(&https, "https://api.example.com/other", &WebSettings::default()).is_ok());
    }

    #[test]
    fn allow_list_matches_cidrs_for_addresses_and_globs_for_names() {
        let tcp = module("    kind: tcp\n    target: relay.example.com:443\n");
        let web = allow(&["10.20.0.0/16", "*.media.example.com"]);
        assert!(decide(&tcp, "10.20.3.4:443", &web).is_ok());
        assert!(decide(&tcp, "a.media.example.com:3478", &web).is_ok());
        assert_eq!(decide(&tcp, "10.21.0.1:443", &web).unwrap_err(), "not_allowed");
        assert_eq!(decide(&tcp, "media.example.com.evil.net:443", &web).unwrap_err(), "not_allowed");
        assert_eq!(decide(&tcp, "evil-media.example.com:443", &web).unwrap_err(), "not_allowed");
        assert!(TargetRule::parse("*").is_err());
        assert!(TargetRule::parse("a b").is_err());
    }

    #[test]
    fn secrets_are_dropped_for_allowed_foreign_hosts_and_turn_is_refused() {
        std::env::set_var("WEB_RS_TEST_TOKEN", "Bearer t0k");
        let https = module(
            "    kind: http\n    url: https://api.example.com/\n    headers: { Authorization: env:WEB_RS_TEST_TOKEN, X-Key: env:WEB_RS_TEST_TOKEN, Origin: https://app.example.com }\n",
        );
        let web = allow(&["*.example.net"]);
        let ProbeSpec::Http(s) = decide(&https, "https://x.example.net/", &web).unwrap() else {
            panic!()
        };
        assert_eq!(s.headers.keys().collect::<Vec<_>>(), vec!["Origin"]);
        let ProbeSpec::Http(own) = decide(&https, "https://api.example.com/", &web).unwrap() else {
            panic!()
        };
        assert_eq!(own.headers.len(), 3, "its own host keeps every header");
        let turn = module("    kind: turn\n    server: turn:turn.example.com:3478\n    credentials: { username: u, password: p }\n");
        assert_eq!(decide(&turn, "t.example.net:3478", &web).unwrap_err(), "credentials");
        assert!(decide(&turn, "turn.example.com:3478", &web).is_ok());
        // An OAuth2 bearer never goes to an allowed foreign host either.
        let oauth = module(
            "    kind: websocket\n    url: wss://ws.example.com/\n    auth: {oauth2: {token_url: https://idp.example.com/t, client_id: c, client_secret: s}}\n",
        );
        assert_eq!(decide(&oauth, "wss://x.example.net/", &web).unwrap_err(), "credentials");
        assert!(decide(&oauth, "wss://ws.example.com/other", &web).is_ok());
    }

    #[test]
    fn an_ice_modules_turn_credentials_never_follow_a_target_to_its_other_servers() {
        let ice = module(
            "    kind: ice\n    servers:\n      - stun:stun.example.com:3478\n      - { url: \"turn:turn.example.com:3478\", credentials: { username: u, password: p } }\n",
        );
        // Every server pointed at the credential-less STUN host: all "own" endpoints, but the
        // TURN credentials would go to stun.example.com.
        assert_eq!(
            decide(&ice, "stun.example.com:3478", &WebSettings::default()).unwrap_err(),
            "credentials"
        );
        assert_eq!(
            decide(&ice, "stun.example.com:3478", &allow(&["*.example.com"])).unwrap_err(),
            "credentials"
        );
    }

    #[test]
    fn the_modules_own_url_query_never_travels_to_another_host() {
        let https = module("    kind: http\n    url: https://api.example.com/x?api_key=s3cret\n");
        let web = allow(&["*.example.net"]);
        let ProbeSpec::Http(s) = decide(&https, "x.example.net:443", &web).unwrap() else {
            panic!()
        };
        assert_eq!(s.url.query(), None, "{}", s.url);
        let ProbeSpec::Http(own) = decide(&https, "api.example.com:443", &web).unwrap() else {
            panic!()
        };
        assert_eq!(own.url.query(), Some("api_key=s3cret"), "its own host keeps the query");
        // A query the request brings itself stays.
        let ProbeSpec::Http(asked) = decide(&https, "https://x.example.net/y?q=1", &web).unwrap() else {
            panic!()
        };
        assert_eq!(asked.url.query(), Some("q=1"));
    }
}
