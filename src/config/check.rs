//! Field-by-field validation of the position-carrying YAML tree into the typed [`Config`].
//!
//! Every check records its problem at the position of the offending key or value and carries on,
//! so one `validate` run lists everything wrong with a file. Builders return `Option`: `None`
//! means "a problem was recorded here", and the caller assembles a value only when all its parts
//! are present. Enum words (`record: AAAA`, `min_version: "1.3"` ...) go through serde_norway and
//! the `Deserialize` derives in `types.rs`, so the accepted words are defined in one place.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::push::{PushAuth, QueueLimits, RemoteWriteConfig};
use super::types::*;
use super::values::{parse_duration, parse_percent, HostPort, IceUrl, Secret};
use super::yaml::{Node, Pos, Val};

/// Problems found so far, each at a position.
#[derive(Default)]
pub struct Problems {
    pub list: Vec<(Pos, String)>,
}

impl Problems {
    /// Records a problem; messages are kept to one line so the output stays one per line.
    pub fn at(&mut self, pos: Pos, message: impl Into<String>) {
        let m: String = message.into();
        let m = m
            .split('\n')
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        self.list.push((pos, m));
    }
}

// ---------------------------------------------------------------------------------------------
// Field lists (also the "allowed:" part of unknown-field messages).

const TOP: &[&str] = &["listen", "defaults", "proxy", "probes", "push"];
const DEFAULTS: &[&str] = &["interval", "timeout", "jitter", "concurrency"];
const COMMON: &[&str] = &["name", "kind", "interval", "timeout", "labels", "proxy"];
const TLS_OPTS: &[&str] = &["server_name", "alpn", "ca_file", "pin_sha256", "min_version"];
const CREDENTIALS: &[&str] = &["username", "password", "rest_secret", "rest_user", "ttl"];
const ICE_SERVER: &[&str] = &["url", "credentials"];
const DNS_EXPECT: &[&str] = &["contains", "rcode"];
const KINDS: &[&str] = &["dns", "tcp", "tls", "http", "websocket", "stun", "turn", "ice"];
const RCODES: &[&str] = &["noerror", "formerr", "servfail", "nxdomain", "notimp", "refused"];
/// Label names the exporter sets itself.
const RESERVED_LABELS: &[&str] = &["probe", "kind", "target", "phase", "reason", "result", "transport", "type", "le"];

/// Fields of each kind besides [`COMMON`].
fn kind_fields(kind: &str) -> Vec<&'static str> {
    let (own, tls): (&[&str], bool) = match kind {
        "dns" => (&["query", "record", "resolver", "expect"], false),
        "tcp" => (&["target", "addresses"], false),
        "tls" => (&["target", "addresses"], true),
        "http" => (
            &[
                "url",
                "method",
                "headers",
                "body",
                "expect_status",
                "expect_body",
                "follow_redirects",
            ],
            true,
        ),
        "websocket" => (&["url", "headers", "ping", "send", "expect"], true),
        "stun" => (&["server", "count", "nat_mapping", "second_server"], true),
        "turn" => (&["server", "credentials", "count", "size", "channel", "addresses"], true),
        "ice" => (&["servers", "policy", "network_types", "expect", "connectivity"], false),
        _ => (&[], false),
    };
    let mut v: Vec<&'static str> = COMMON.to_vec();
    v.extend_from_slice(own);
    if tls {
        v.extend_from_slice(TLS_OPTS);
        v.push("tls");
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Mapping access.

/// A mapping's entries by key, checked for non-string and duplicate keys.
struct Fields<'a> {
    pos: Pos,
    entries: Vec<(&'a str, &'a Node, &'a Node)>,
}

impl<'a> Fields<'a> {
    /// `None` (with a problem recorded) unless `node` is a mapping. `what` names it in messages.
    fn of(node: &'a Node, what: &str, p: &mut Problems) -> Option<Fields<'a>> {
        let Val::Map(m) = &node.val else {
            p.at(node.pos, format!("{what} must be a mapping, found {}", node.describe()));
            return None;
        };
        let mut entries: Vec<(&'a str, &'a Node, &'a Node)> = Vec::new();
        for (k, v) in m {
            let Some(key) = k.scalar() else {
                p.at(k.pos, format!("{what}: keys must be plain words, found {}", k.describe()));
                continue;
            };
            if let Some((_, first, _)) = entries.iter().find(|(n, _, _)| *n == key) {
                p.at(
                    k.pos,
                    format!("duplicate field `{key}` in {what} (first given at line {})", first.pos.line),
                );
                continue;
            }
            entries.push((key, k, v));
        }
        Some(Fields { pos: node.pos, entries })
    }

    /// Records every key not in `allowed`.
    fn reject_unknown(&self, allowed: &[&str], what: &str, p: &mut Problems) {
        for (key, k, _) in &self.entries {
            if !allowed.contains(key) {
                let hint = close_match(key, allowed)
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                p.at(
                    k.pos,
                    format!("unknown field `{key}` in {what}{hint}; allowed: {}", allowed.join(", ")),
                );
            }
        }
    }

    /// The value of `key`, unless absent or explicitly null (`key:` / `key: ~`).
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == key)
            .map(|(_, _, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// Like [`Fields::get`], recording "missing required field" at the mapping when absent.
    fn need(&self, key: &str, what: &str, p: &mut Problems) -> Option<&'a Node> {
        let v = self.get(key);
        if v.is_none() {
            match self.entries.iter().find(|(n, _, _)| *n == key) {
                // Written but empty (`target:`): point at the key.
                Some((_, k, _)) => p.at(k.pos, format!("{what}: required field `{key}` has no value")),
                None => p.at(self.pos, format!("{what}: missing required field `{key}`")),
            }
        }
        v
    }
}

/// The allowed name closest to a misspelt `key` (at most 2 edits), for "did you mean" hints.
fn close_match<'b>(key: &str, allowed: &[&'b str]) -> Option<&'b str> {
    allowed
        .iter()
        .map(|a| (edit_distance(&key.to_ascii_lowercase().replace('-', "_"), a), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance (field names are short; this is O(n·m) on a few dozen chars).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(cur).min(row[j]) };
            prev = cur;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Scalar conversions. Each records its own problem and returns None on failure.

fn string(v: &Node, key: &str, p: &mut Problems) -> Option<String> {
    match v.scalar() {
        Some(s) => Some(s.to_string()),
        None => {
            p.at(v.pos, format!("`{key}` must be a string, found {}", v.describe()));
            None
        }
    }
}

fn non_empty(v: &Node, key: &str, p: &mut Problems) -> Option<String> {
    let s = string(v, key, p)?;
    if s.trim().is_empty() {
        p.at(v.pos, format!("`{key}` must not be empty"));
        return None;
    }
    Some(s)
}

fn duration(v: &Node, key: &str, p: &mut Problems) -> Option<Duration> {
    let s = string(v, key, p)?;
    parse_duration(&s).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

fn boolean(v: &Node, key: &str, p: &mut Problems) -> Option<bool> {
    match &v.val {
        Val::Scalar { text, plain: true } if matches!(text.as_str(), "true" | "True" | "TRUE") => Some(true),
        Val::Scalar { text, plain: true } if matches!(text.as_str(), "false" | "False" | "FALSE") => Some(false),
        _ => {
            p.at(v.pos, format!("`{key}` must be true or false, found {}", v.describe()));
            None
        }
    }
}

/// An unsigned integer in `min..=max`.
fn uint(v: &Node, key: &str, min: u64, max: u64, p: &mut Problems) -> Option<u64> {
    let n = match &v.val {
        Val::Scalar { text, plain: true } => text.replace('_', "").parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            p.at(v.pos, format!("`{key}` must be between {min} and {max}, got {n}"));
            None
        }
        None => {
            p.at(
                v.pos,
                format!("`{key}` must be a whole number from {min} to {max}, found {}", v.describe()),
            );
            None
        }
    }
}

/// A word accepted by a serde-derived enum in `types.rs`.
fn word<T: serde::de::DeserializeOwned>(v: &Node, key: &str, p: &mut Problems) -> Option<T> {
    let s = string(v, key, p)?;
    serde_norway::from_value(serde_norway::Value::String(s.clone()))
        .map_err(|e| {
            let e = e.to_string().replace("unknown variant", "unknown value");
            p.at(v.pos, format!("{key}: {e}"))
        })
        .ok()
}

/// [`word`] for upper-case words (`record: aaaa`, `method: get` are accepted too).
fn upper_word<T: serde::de::DeserializeOwned>(v: &Node, key: &str, p: &mut Problems) -> Option<T> {
    match &v.val {
        Val::Scalar { text, plain } => word(
            &Node {
                pos: v.pos,
                val: Val::Scalar {
                    text: text.to_ascii_uppercase(),
                    plain: *plain,
                },
            },
            key,
            p,
        ),
        _ => word(v, key, p),
    }
}

fn secret(v: &Node, key: &str, p: &mut Problems) -> Option<Secret> {
    let s = string(v, key, p)?;
    Secret::resolve(&s).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

fn regex(v: &Node, key: &str, p: &mut Problems) -> Option<regex::Regex> {
    let s = string(v, key, p)?;
    regex::Regex::new(&s)
        .map_err(|e| {
            let text = e.to_string();
            // regex's message is a multi-line drawing; keep its `error:` line.
            let why = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or(text.as_str())
                .to_string();
            p.at(v.pos, format!("{key}: invalid regex {s:?}: {why}"))
        })
        .ok()
}

fn host_port(v: &Node, key: &str, p: &mut Problems) -> Option<HostPort> {
    let s = string(v, key, p)?;
    HostPort::parse(&s, None).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

fn ice_url(v: &Node, key: &str, p: &mut Problems) -> Option<IceUrl> {
    let s = string(v, key, p)?;
    IceUrl::parse(&s).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

/// `ip:port`, or a bare IP with `default_port`.
fn socket_addr(v: &Node, key: &str, default_port: Option<u16>, p: &mut Problems) -> Option<SocketAddr> {
    let s = string(v, key, p)?;
    if let Ok(a) = s.trim().parse::<SocketAddr>() {
        return Some(a);
    }
    if let (Some(port), Ok(ip)) = (
        default_port,
        s.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>(),
    ) {
        return Some(SocketAddr::new(ip, port));
    }
    let example = if default_port.is_some() {
        "127.0.0.1:53 or 10.0.0.2"
    } else {
        "0.0.0.0:9469 or [::]:9469"
    };
    p.at(v.pos, format!("{key}: {s:?} is not an IP address and port (e.g. {example})"));
    None
}

fn url(v: &Node, key: &str, schemes: &[&str], p: &mut Problems) -> Option<url::Url> {
    let s = string(v, key, p)?;
    let u = match url::Url::parse(s.trim()) {
        Ok(u) => u,
        Err(e) => {
            p.at(v.pos, format!("{key}: bad URL {s:?} ({e})"));
            return None;
        }
    };
    if !schemes.contains(&u.scheme()) {
        p.at(
            v.pos,
            format!("{key}: scheme must be {}, got {:?}", schemes.join(" or "), u.scheme()),
        );
        return None;
    }
    if u.host_str().is_none_or(str::is_empty) {
        p.at(v.pos, format!("{key}: URL {s:?} has no host"));
        return None;
    }
    Some(u)
}

fn list<'a>(v: &'a Node, key: &str, p: &mut Problems) -> Option<&'a [Node]> {
    match &v.val {
        Val::Seq(items) => Some(items),
        _ => {
            p.at(v.pos, format!("`{key}` must be a list, found {}", v.describe()));
            None
        }
    }
}

/// A list whose every item converts; all bad items are reported.
fn list_of<T>(v: &Node, key: &str, p: &mut Problems, mut each: impl FnMut(&Node, &mut Problems) -> Option<T>) -> Option<Vec<T>> {
    let items = list(v, key, p)?;
    let mut out = Vec::new();
    let mut ok = true;
    for i in items {
        match each(i, p) {
            Some(x) => out.push(x),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn proxy(v: &Node, key: &str, p: &mut Problems) -> Option<ProxySetting> {
    let s = secret(v, key, p)?;
    ProxySetting::parse(s.expose()).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

/// Header names and values (values may be `env:`/`file:` secrets; never echoed).
fn headers(v: &Node, p: &mut Problems) -> Option<BTreeMap<String, HeaderValue>> {
    let f = Fields::of(v, "headers", p)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, k, val) in &f.entries {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.at(k.pos, format!("headers: {name:?} is not a valid HTTP header name"));
            ok = false;
            continue;
        }
        match secret(val, name, p) {
            Some(s) if http::HeaderValue::from_str(s.expose()).is_err() => {
                p.at(
                    val.pos,
                    format!("headers: value of {name} ({}) is not a valid header value", s.source()),
                );
                ok = false;
            }
            Some(s) => {
                out.insert(name.to_string(), s);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn labels(v: &Node, p: &mut Problems) -> Option<BTreeMap<String, String>> {
    let f = Fields::of(v, "labels", p)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, k, val) in &f.entries {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        if !valid {
            p.at(
                k.pos,
                format!("labels: {name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"),
            );
            ok = false;
        } else if RESERVED_LABELS.contains(name) {
            p.at(
                k.pos,
                format!("labels: `{name}` is set by egress-probe itself; choose another name"),
            );
            ok = false;
        }
        match string(val, name, p) {
            Some(s) => {
                out.insert(name.to_string(), s);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// TLS options, written flat on the probe (`server_name: ...`) or grouped (`tls: {...}`);
/// both forms may be mixed, but one option may not be given twice.
fn tls_options(probe: &Fields, p: &mut Problems) -> Option<TlsOptions> {
    let mut entries: Vec<_> = probe.entries.iter().filter(|(k, _, _)| TLS_OPTS.contains(k)).copied().collect();
    if let Some(group) = probe.get("tls").and_then(|v| Fields::of(v, "tls", p)) {
        group.reject_unknown(TLS_OPTS, "tls", p);
        for (key, k, v) in group.entries {
            match entries.iter().find(|(n, _, _)| *n == key) {
                Some((_, first, _)) => p.at(
                    k.pos,
                    format!("`{key}` is given twice: here and at line {} (as a probe field)", first.pos.line),
                ),
                None if TLS_OPTS.contains(&key) => entries.push((key, k, v)),
                None => {}
            }
        }
    }
    let f = &Fields { pos: probe.pos, entries };
    let server_name = optional(f, "server_name", p, |v, p| {
        let s = non_empty(v, "server_name", p)?;
        match rustls_pki_types::ServerName::try_from(s.as_str()) {
            Ok(_) => Some(s),
            Err(_) => {
                p.at(v.pos, format!("server_name: {s:?} is not a DNS name or IP address"));
                None
            }
        }
    });
    let alpn = or_default(f, "alpn", Vec::new(), p, |v, p| {
        list_of(v, "alpn", p, |i, p| non_empty(i, "alpn", p))
    });
    let ca_file = optional(f, "ca_file", p, |v, p| {
        let s = non_empty(v, "ca_file", p)?;
        match std::fs::File::open(&s) {
            Ok(_) => Some(PathBuf::from(s)),
            Err(e) => {
                p.at(v.pos, format!("ca_file: cannot read {s:?} ({})", e.kind()));
                None
            }
        }
    });
    let pin_sha256 = or_default(f, "pin_sha256", Vec::new(), p, |v, p| {
        list_of(v, "pin_sha256", p, |i, p| {
            let s = string(i, "pin_sha256", p)?;
            super::values::parse_pin(&s).map(|_| s).map_err(|e| p.at(i.pos, e)).ok()
        })
    });
    let min_version = optional(f, "min_version", p, |v, p| word::<TlsVersion>(v, "min_version", p));
    Some(TlsOptions {
        server_name: server_name?,
        alpn: alpn?,
        ca_file: ca_file?,
        pin_sha256: pin_sha256?,
        min_version: min_version?,
    })
}

fn credentials(v: &Node, what: &str, p: &mut Problems) -> Option<Credentials> {
    let what = format!("{what} credentials");
    let f = Fields::of(v, &what, p)?;
    f.reject_unknown(CREDENTIALS, &what, p);
    let has = |k: &str| f.get(k).is_some();
    let long_term = has("username") || has("password");
    let rest = has("rest_secret");
    if long_term && rest {
        p.at(
            f.pos,
            format!("{what}: give either username and password, or rest_secret, not both"),
        );
        return None;
    }
    if !long_term && !rest {
        p.at(f.pos, format!("{what}: give username and password, or rest_secret (TURN REST API)"));
        return None;
    }
    if long_term {
        for k in ["rest_user", "ttl"] {
            if let Some(n) = f.get(k) {
                p.at(n.pos, format!("{what}: `{k}` only applies with rest_secret"));
            }
        }
        let username = f.need("username", &what, p).and_then(|n| secret(n, "username", p));
        let password = f.need("password", &what, p).and_then(|n| secret(n, "password", p));
        return Some(Credentials::LongTerm {
            username: username?,
            password: password?,
        });
    }
    let secret_v = f.get("rest_secret").and_then(|n| secret(n, "rest_secret", p));
    let user = match f.get("rest_user") {
        None => Some("egress-probe".to_string()),
        Some(n) => non_empty(n, "rest_user", p).and_then(|u| {
            if u.contains(':') {
                p.at(n.pos, "rest_user: must not contain ':' (the username is expiry:user)");
                None
            } else {
                Some(u)
            }
        }),
    };
    let ttl = match f.get("ttl") {
        None => Some(Duration::from_secs(3600)),
        Some(n) => duration(n, "ttl", p),
    };
    Some(Credentials::Rest {
        secret: secret_v?,
        user: user?,
        ttl: ttl?,
    })
}

// ---------------------------------------------------------------------------------------------
// The file.

/// Builds the config from the tree, recording every problem in `p`. The result is only
/// meaningful when `p` stays empty.
pub fn config(root: &Node, p: &mut Problems) -> Option<Config> {
    let f = Fields::of(root, "the config file", p)?;
    // `x-…` keys hold anchors for reuse (as in docker compose) and are otherwise ignored.
    let f_top = Fields {
        pos: f.pos,
        entries: f.entries.iter().filter(|(k, _, _)| !k.starts_with("x-")).copied().collect(),
    };
    f_top.reject_unknown(TOP, "the top level", p);
    let listen = optional(&f, "listen", p, |v, p| socket_addr(v, "listen", None, p));
    let defaults = or_default(&f, "defaults", Defaults::default(), p, defaults);
    let top_proxy = optional(&f, "proxy", p, |v, p| proxy(v, "proxy", p));
    let push = or_default(&f, "push", Vec::new(), p, push_section);
    let d = defaults.clone().unwrap_or_default();

    let mut probes = Vec::new();
    let mut all_ok = true;
    match f.get("probes") {
        None => p.at(
            f.pos,
            "missing required field `probes` (a list of probes); a config without probes would export nothing",
        ),
        Some(v) => {
            if let Some(items) = list(v, "probes", p) {
                if items.is_empty() {
                    p.at(v.pos, "`probes` is empty; a config without probes would export nothing");
                }
                let mut names: HashMap<String, Pos> = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    match probe(item, i, &d, &mut names, p) {
                        Some(pc) => probes.push(pc),
                        None => all_ok = false,
                    }
                }
            }
        }
    }
    if !all_ok {
        return None;
    }
    Some(Config {
        listen: listen?,
        defaults: defaults?,
        proxy: top_proxy?,
        probes,
        push: push?,
    })
}

fn defaults(v: &Node, p: &mut Problems) -> Option<Defaults> {
    let f = Fields::of(v, "defaults", p)?;
    f.reject_unknown(DEFAULTS, "defaults", p);
    let base = Defaults::default();
    let interval = f.get("interval").map(|n| (duration(n, "interval", p), n.pos));
    let timeout = f.get("timeout").map(|n| (duration(n, "timeout", p), n.pos));
    let jitter = f.get("jitter").map(|n| {
        let s = n.scalar().map(str::to_string);
        match s {
            Some(s) => parse_percent(&s).map_err(|e| p.at(n.pos, format!("jitter: {e}"))).ok(),
            None => {
                p.at(
                    n.pos,
                    format!("`jitter` must be a fraction like 10% or 0.1, found {}", n.describe()),
                );
                None
            }
        }
    });
    let concurrency = f.get("concurrency").map(|n| uint(n, "concurrency", 1, 10_000, p));
    let iv = match interval {
        None => base.interval,
        Some((d, _)) => d?,
    };
    let to = match timeout {
        None => base.timeout,
        Some((d, _)) => d?,
    };
    if to > iv {
        let pos = timeout.map(|t| t.1).or(interval.map(|i| i.1)).unwrap_or(f.pos);
        p.at(pos, too_long(to, iv, "defaults: "));
        return None;
    }
    Some(Defaults {
        interval: iv,
        timeout: to,
        jitter: match jitter {
            None => base.jitter,
            Some(j) => j?,
        },
        concurrency: match concurrency {
            None => base.concurrency,
            Some(c) => usize::try_from(c?).ok()?,
        },
    })
}

fn too_long(timeout: Duration, interval: Duration, prefix: &str) -> String {
    format!(
        "{prefix}timeout {} is longer than interval {}; runs of one probe must not overlap",
        humantime::format_duration(timeout),
        humantime::format_duration(interval)
    )
}

fn probe(node: &Node, index: usize, d: &Defaults, names: &mut HashMap<String, Pos>, p: &mut Problems) -> Option<ProbeConfig> {
    // Name the probe in messages about its own mapping (e.g. duplicate keys) when possible.
    let early_name = match &node.val {
        Val::Map(m) => m.iter().find(|(k, _)| k.scalar() == Some("name")).and_then(|(_, v)| v.scalar()),
        _ => None,
    };
    let label = early_name.map_or_else(|| format!("probe #{}", index + 1), |n| format!("probe `{n}`"));
    let f = Fields::of(node, &label, p)?;
    let name = f.need("name", &label, p).and_then(|n| non_empty(n, "name", p));
    let what = match &name {
        Some(n) => format!("probe `{n}`"),
        None => format!("probe #{}", index + 1),
    };
    if let (Some(n), Some(v)) = (&name, f.get("name")) {
        if let Some(first) = names.get(n) {
            p.at(v.pos, format!("duplicate probe name `{n}` (first defined at line {})", first.line));
        } else {
            names.insert(n.clone(), v.pos);
        }
    }
    let kind = match f.need("kind", &what, p) {
        None => None,
        Some(v) => string(v, "kind", p).and_then(|k| match KINDS.iter().find(|x| **x == k) {
            Some(k) => Some(*k),
            None => {
                p.at(v.pos, format!("{what}: unknown kind {k:?}; expected one of {}", KINDS.join(", ")));
                None
            }
        }),
    };
    match kind {
        Some(k) => f.reject_unknown(&kind_fields(k), &format!("{what} (kind {k})"), p),
        None => {
            // Still catch typos: a field no kind knows.
            let any: Vec<&str> = KINDS.iter().flat_map(|k| kind_fields(k)).collect();
            for (key, k, _) in &f.entries {
                if !any.contains(key) {
                    let hint = close_match(key, &any)
                        .map(|m| format!(" (did you mean `{m}`?)"))
                        .unwrap_or_default();
                    p.at(k.pos, format!("unknown field `{key}` in {what}{hint}"));
                }
            }
        }
    }
    let interval = f.get("interval").map(|n| (duration(n, "interval", p), n.pos));
    let timeout = f.get("timeout").map(|n| (duration(n, "timeout", p), n.pos));
    let labels = f.get("labels").map(|n| labels(n, p));
    let proxy = f.get("proxy").map(|n| proxy(n, "proxy", p));

    // Timeout vs interval after defaults; reported where the offending value was written.
    if let (Some(iv), Some(to)) = (
        interval.map_or(Some(d.interval), |(x, _)| x),
        timeout.map_or(Some(d.timeout), |(x, _)| x),
    ) {
        if to > iv {
            // Both defaulted is impossible here: `defaults` was checked already.
            let pos = timeout.map(|t| t.1).or(interval.map(|i| i.1)).unwrap_or(f.pos);
            let pfx = format!("{what}: ");
            p.at(pos, too_long(to, iv, &pfx));
        }
    }

    let spec = kind.and_then(|k| spec(k, &f, &what, p));
    Some(ProbeConfig {
        name: name?,
        interval: match interval {
            None => None,
            Some((x, _)) => Some(x?),
        },
        timeout: match timeout {
            None => None,
            Some((x, _)) => Some(x?),
        },
        labels: match labels {
            None => BTreeMap::new(),
            Some(x) => x?,
        },
        proxy: match proxy {
            None => None,
            Some(x) => Some(x?),
        },
        spec: spec?,
    })
}

/// An optional field with a default: `Some(default)` when absent, `None` when invalid.
fn or_default<T>(f: &Fields, key: &str, default: T, p: &mut Problems, conv: impl FnOnce(&Node, &mut Problems) -> Option<T>) -> Option<T> {
    match f.get(key) {
        None => Some(default),
        Some(v) => conv(v, p),
    }
}

/// An optional field without a default: `Some(None)` when absent, `None` when invalid.
fn optional<T>(f: &Fields, key: &str, p: &mut Problems, conv: impl FnOnce(&Node, &mut Problems) -> Option<T>) -> Option<Option<T>> {
    match f.get(key) {
        None => Some(None),
        Some(v) => conv(v, p).map(Some),
    }
}

fn spec(kind: &str, f: &Fields, what: &str, p: &mut Problems) -> Option<ProbeSpec> {
    let need_what = format!("{what} (kind {kind})");
    let addresses_checked = |p: &mut Problems| or_default(f, "addresses", AddressMode::First, p, |v, p| word(v, "addresses", p));
    match kind {
        "dns" => {
            let query = f.need("query", &need_what, p).and_then(|v| non_empty(v, "query", p));
            let record = or_default(f, "record", RecordKind::A, p, |v, p| upper_word(v, "record", p));
            let resolver = optional(f, "resolver", p, |v, p| socket_addr(v, "resolver", Some(53), p));
            let expect = or_default(f, "expect", DnsExpect::default(), p, dns_expect);
            Some(ProbeSpec::Dns(DnsSpec {
                query: query?,
                record: record?,
                resolver: resolver?,
                expect: expect?,
            }))
        }
        "tcp" => {
            let target = f.need("target", &need_what, p).and_then(|v| host_port(v, "target", p));
            let addresses = addresses_checked(p);
            Some(ProbeSpec::Tcp(TcpSpec {
                target: target?,
                addresses: addresses?,
            }))
        }
        "tls" => {
            let target = f.need("target", &need_what, p).and_then(|v| host_port(v, "target", p));
            let addresses = addresses_checked(p);
            let tls = tls_options(f, p);
            Some(ProbeSpec::Tls(TlsSpec {
                target: target?,
                addresses: addresses?,
                tls: tls?,
            }))
        }
        "http" => {
            let u = f.need("url", &need_what, p).and_then(|v| url(v, "url", &["http", "https"], p));
            let method = or_default(f, "method", HttpMethod::Get, p, |v, p| upper_word(v, "method", p));
            let headers = or_default(f, "headers", BTreeMap::new(), p, headers);
            let body = optional(f, "body", p, |v, p| string(v, "body", p));
            let expect_status = or_default(f, "expect_status", vec![StatusRange { low: 200, high: 399 }], p, status_ranges);
            let expect_body = optional(f, "expect_body", p, |v, p| regex(v, "expect_body", p));
            let follow = or_default(f, "follow_redirects", 0, p, |v, p| {
                uint(v, "follow_redirects", 0, 20, p).map(|n| n as u32)
            });
            let tls = tls_options(f, p);
            Some(ProbeSpec::Http(HttpSpec {
                url: u?,
                method: method?,
                headers: headers?,
                body: body?,
                expect_status: expect_status?,
                expect_body: expect_body?,
                follow_redirects: follow?,
                tls: tls?,
            }))
        }
        "websocket" => {
            let u = f.need("url", &need_what, p).and_then(|v| url(v, "url", &["ws", "wss"], p));
            let headers = or_default(f, "headers", BTreeMap::new(), p, headers);
            let ping = or_default(f, "ping", 3, p, |v, p| uint(v, "ping", 0, 100, p).map(|n| n as u32));
            let send = optional(f, "send", p, |v, p| string(v, "send", p));
            let expect = optional(f, "expect", p, |v, p| regex(v, "expect", p));
            if let (Some(e), None) = (f.get("expect"), f.get("send")) {
                p.at(
                    e.pos,
                    format!("{what}: `expect` needs `send` (the message whose answer it matches)"),
                );
            }
            let tls = tls_options(f, p);
            Some(ProbeSpec::Websocket(WebsocketSpec {
                url: u?,
                headers: headers?,
                ping: ping?,
                send: send?,
                expect: expect?,
                tls: tls?,
            }))
        }
        "stun" => {
            let server = f.need("server", &need_what, p).and_then(|v| stun_url(v, "server", p));
            let count = or_default(f, "count", 3, p, |v, p| uint(v, "count", 1, 100, p).map(|n| n as u32));
            let nat_mapping = or_default(f, "nat_mapping", false, p, |v, p| boolean(v, "nat_mapping", p));
            let second = optional(f, "second_server", p, |v, p| stun_url(v, "second_server", p));
            let tls = tls_options(f, p);
            Some(ProbeSpec::Stun(StunSpec {
                server: server?,
                count: count?,
                nat_mapping: nat_mapping?,
                second_server: second?,
                tls: tls?,
            }))
        }
        "turn" => {
            let server = f.need("server", &need_what, p).and_then(|v| turn_url(v, "server", p));
            let creds = f.need("credentials", &need_what, p).and_then(|v| credentials(v, what, p));
            let count = or_default(f, "count", 5, p, |v, p| uint(v, "count", 1, 1000, p).map(|n| n as u32));
            let size = or_default(f, "size", 100, p, |v, p| uint(v, "size", 8, 16_384, p).map(|n| n as usize));
            let channel = or_default(f, "channel", false, p, |v, p| boolean(v, "channel", p));
            let addresses = addresses_checked(p);
            let tls = tls_options(f, p);
            Some(ProbeSpec::Turn(TurnSpec {
                server: server?,
                credentials: creds?,
                count: count?,
                size: size?,
                channel: channel?,
                addresses: addresses?,
                tls: tls?,
            }))
        }
        "ice" => ice(f, &need_what, what, p).map(ProbeSpec::Ice),
        _ => None,
    }
}

fn stun_url(v: &Node, key: &str, p: &mut Problems) -> Option<IceUrl> {
    let u = ice_url(v, key, p)?;
    if u.is_turn() {
        p.at(
            v.pos,
            format!(
                "{key}: a stun probe takes a stun: or stuns: URI (a TURN server answers Binding requests too: write stun:{})",
                u.host_port()
            ),
        );
        return None;
    }
    Some(u)
}

fn turn_url(v: &Node, key: &str, p: &mut Problems) -> Option<IceUrl> {
    let u = ice_url(v, key, p)?;
    if !u.is_turn() {
        p.at(v.pos, format!("{key}: a turn probe takes a turn: or turns: URI, got {u}"));
        return None;
    }
    Some(u)
}

fn dns_expect(v: &Node, p: &mut Problems) -> Option<DnsExpect> {
    let f = Fields::of(v, "expect", p)?;
    f.reject_unknown(DNS_EXPECT, "dns expect", p);
    let contains = or_default(&f, "contains", Vec::new(), p, |v, p| {
        list_of(v, "contains", p, |i, p| non_empty(i, "contains", p))
    });
    let rcode = optional(&f, "rcode", p, |v, p| {
        let s = string(v, "rcode", p)?.to_ascii_lowercase();
        let numeric = s.strip_prefix("rcode_").is_some_and(|n| n.parse::<u16>().is_ok_and(|n| n < 4096));
        if RCODES.contains(&s.as_str()) || numeric {
            Some(s)
        } else {
            p.at(
                v.pos,
                format!(
                    "rcode: unknown response code {s:?}; expected one of {} or rcode_<number>",
                    RCODES.join(", ")
                ),
            );
            None
        }
    });
    Some(DnsExpect {
        contains: contains?,
        rcode: rcode?,
    })
}

/// `expect_status`: one code/range/class or a list of them.
fn status_ranges(v: &Node, p: &mut Problems) -> Option<Vec<StatusRange>> {
    let one = |i: &Node, p: &mut Problems| {
        let s = string(i, "expect_status", p)?;
        super::load::parse_status_range(&s)
            .map_err(|e| p.at(i.pos, format!("expect_status: {e}")))
            .ok()
    };
    match &v.val {
        Val::Seq(items) if items.is_empty() => {
            p.at(v.pos, "expect_status: empty list; omit it for the default 200-399");
            None
        }
        Val::Seq(_) => list_of(v, "expect_status", p, one),
        _ => one(v, p).map(|r| vec![r]),
    }
}

fn ice(f: &Fields, need_what: &str, what: &str, p: &mut Problems) -> Option<IceSpec> {
    let servers = f.need("servers", need_what, p).and_then(|v| {
        let items = list(v, "servers", p)?;
        if items.is_empty() {
            p.at(v.pos, "servers: give at least one stun: or turn: server");
            return None;
        }
        list_of(v, "servers", p, |i, p| ice_server(i, what, p))
    });
    let policy = or_default(f, "policy", IcePolicy::All, p, |v, p| word(v, "policy", p));
    let network_types = or_default(f, "network_types", vec![NetworkType::Udp4], p, |v, p| {
        let l = list_of(v, "network_types", p, |i, p| word::<NetworkType>(i, "network_types", p))?;
        if l.is_empty() {
            p.at(v.pos, "network_types: empty list; omit it for the default [udp4]");
            return None;
        }
        Some(l)
    });
    let expect = or_default(f, "expect", Vec::new(), p, |v, p| {
        list_of(v, "expect", p, |i, p| word::<CandidateKind>(i, "expect", p))
    });
    let connectivity = or_default(f, "connectivity", false, p, |v, p| boolean(v, "connectivity", p));
    // Cross-checks: what the agent is asked to find must be findable with these servers.
    if let Some(servers) = &servers {
        let has_turn = servers.iter().any(|s| s.url.is_turn());
        if policy == Some(IcePolicy::Relay) && !has_turn {
            if let Some(v) = f.get("policy") {
                p.at(v.pos, format!("{what}: policy relay needs at least one turn: server"));
            }
        }
        if let (Some(exp), Some(v)) = (&expect, f.get("expect")) {
            if exp.contains(&CandidateKind::Relay) && !has_turn {
                p.at(v.pos, format!("{what}: expecting relay candidates needs at least one turn: server"));
            }
        }
        if connectivity == Some(true) && !has_turn {
            if let Some(v) = f.get("connectivity") {
                p.at(
                    v.pos,
                    format!("{what}: connectivity through the relay needs at least one turn: server"),
                );
            }
        }
    }
    Some(IceSpec {
        servers: servers?,
        policy: policy?,
        network_types: network_types?,
        expect: expect?,
        connectivity: connectivity?,
    })
}

/// An ICE server: `stun:host` or `{url: turn:host, credentials: {...}}`.
fn ice_server(v: &Node, what: &str, p: &mut Problems) -> Option<IceServer> {
    let (url_node, creds) = match &v.val {
        Val::Map(_) => {
            let f = Fields::of(v, "ICE server", p)?;
            f.reject_unknown(ICE_SERVER, "ICE server", p);
            let u = f.need("url", "ICE server", p)?;
            let creds = match f.get("credentials") {
                None => Some(None),
                Some(c) => credentials(c, what, p).map(Some),
            };
            (u, creds)
        }
        _ => (v, Some(None)),
    };
    let url = ice_url(url_node, "servers", p)?;
    let creds = creds?;
    if url.is_turn() && creds.is_none() {
        p.at(
            v.pos,
            format!("{what}: TURN server {url} needs credentials: write {{url: ..., credentials: {{username: ..., password: ...}}}}"),
        );
        return None;
    }
    Some(IceServer { url, credentials: creds })
}

// ---------------------------------------------------------------------------------------------
// `push:` — remote_write receivers.

const PUSH_KINDS: &[&str] = &["remote_write"];
const REMOTE_WRITE: &[&str] = &[
    "url",
    "interval",
    "timeout",
    "external_labels",
    "headers",
    "basic_auth",
    "bearer_token",
    "tls",
    "proxy",
    "queue",
];
const BASIC_AUTH: &[&str] = &["username", "password"];
const QUEUE: &[&str] = &["max_samples", "max_age"];

/// `push:`: a list of `- remote_write: {...}`.
fn push_section(v: &Node, p: &mut Problems) -> Option<Vec<RemoteWriteConfig>> {
    list_of(v, "push", p, |item, p| {
        let f = Fields::of(item, "a push entry", p)?;
        f.reject_unknown(PUSH_KINDS, "a push entry", p);
        match f.entries.as_slice() {
            [("remote_write", _, _)] => remote_write(f.need("remote_write", "a push entry", p)?, p),
            // A single unknown key was reported just above.
            [(k, _, _)] if !PUSH_KINDS.contains(k) => None,
            _ => {
                p.at(f.pos, "a push entry has exactly one key: `remote_write`");
                None
            }
        }
    })
}

fn remote_write(v: &Node, p: &mut Problems) -> Option<RemoteWriteConfig> {
    let what = "remote_write";
    let f = Fields::of(v, what, p)?;
    f.reject_unknown(REMOTE_WRITE, what, p);
    let url = f.need("url", what, p).and_then(|n| {
        let u = url(n, "url", &["http", "https"], p)?;
        if !u.username().is_empty() || u.password().is_some() {
            p.at(
                n.pos,
                "url: no credentials in the URL; use basic_auth (the password may be env: or file:)",
            );
            return None;
        }
        Some(u)
    });
    let interval = or_default(&f, "interval", super::push::DEFAULT_PUSH_INTERVAL, p, |n, p| {
        duration(n, "interval", p)
    });
    let timeout = or_default(&f, "timeout", super::push::DEFAULT_PUSH_TIMEOUT, p, |n, p| {
        duration(n, "timeout", p)
    });
    let external_labels = or_default(&f, "external_labels", BTreeMap::new(), p, |n, p| {
        let l = Fields::of(n, "external_labels", p)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, k, val) in &l.entries {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            if !valid {
                p.at(
                    k.pos,
                    format!("external_labels: {name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"),
                );
                ok = false;
            }
            match string(val, name, p) {
                Some(s) => {
                    out.insert(name.to_string(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    let headers = or_default(&f, "headers", BTreeMap::new(), p, headers);
    let basic = optional(&f, "basic_auth", p, |n, p| {
        let b = Fields::of(n, "basic_auth", p)?;
        b.reject_unknown(BASIC_AUTH, "basic_auth", p);
        let username = b.need("username", "basic_auth", p).and_then(|n| non_empty(n, "username", p));
        let password = b.need("password", "basic_auth", p).and_then(|n| secret(n, "password", p));
        let username = username?;
        if username.contains(':') {
            p.at(b.pos, "basic_auth: the username must not contain ':'");
            return None;
        }
        Some(PushAuth::Basic {
            username,
            password: password?,
        })
    });
    let bearer = optional(&f, "bearer_token", p, |n, p| secret(n, "bearer_token", p).map(PushAuth::Bearer));
    if let (Some(_), Some(b)) = (f.get("basic_auth"), f.get("bearer_token")) {
        p.at(b.pos, "remote_write: give basic_auth or bearer_token, not both");
    }
    let tls_group = Fields {
        pos: f.pos,
        entries: f.entries.iter().filter(|(k, _, _)| *k == "tls").copied().collect(),
    };
    let tls = tls_options(&tls_group, p);
    let push_proxy = optional(&f, "proxy", p, |n, p| proxy(n, "proxy", p));
    let queue = or_default(&f, "queue", QueueLimits::default(), p, |n, p| {
        let q = Fields::of(n, "queue", p)?;
        q.reject_unknown(QUEUE, "queue", p);
        let d = QueueLimits::default();
        let max_samples = or_default(&q, "max_samples", d.max_samples as u64, p, |n, p| {
            uint(n, "max_samples", 1000, 100_000_000, p)
        });
        let max_age = or_default(&q, "max_age", d.max_age, p, |n, p| duration(n, "max_age", p));
        Some(QueueLimits {
            max_samples: usize::try_from(max_samples?).ok()?,
            max_age: max_age?,
        })
    });
    let (basic, bearer) = (basic?, bearer?);
    Some(RemoteWriteConfig {
        url: url?,
        interval: interval?,
        timeout: timeout?,
        external_labels: external_labels?,
        headers: headers?,
        auth: basic.or(bearer),
        tls: tls?,
        proxy: push_proxy?,
        queue: queue?,
    })
}
