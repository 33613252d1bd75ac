//! Field-by-field validation of the position-carrying YAML tree into the typed [`Config`]:
//! the file's shape (top level, `defaults`, the common probe keys) and the option groups that
//! several kinds share (TLS options, TURN credentials, headers, labels).
//!
//! Split in three so each part has one job: `node` is the schema-free toolkit (a mapping view,
//! scalar converters, "did you mean" hints), `kinds` holds one definition per probe kind (its
//! keys and its builder in one table entry), and this file the rest of the schema.
//!
//! Every check records its problem at the position of the offending key or value and carries on,
//! so one `validate` run lists everything wrong with a file. Builders return `Option`: `None`
//! means "a problem was recorded here", and the caller assembles a value only when all its parts
//! are present. Enum words (`record: AAAA`, `min_version: "1.3"` ...) go through serde_norway and
//! the `Deserialize` derives in `types.rs`, so the accepted words are defined in one place.

// `kinds` and the key tables are also read by `config::schema` (one source for both).
pub(in crate::config) mod kinds;
pub(in crate::config) mod media;
mod node;
pub(in crate::config) mod push;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::types::*;
use super::values::{parse_percent, CaBundle};
use super::yaml::{Node, Pos, Val};
use kinds::{Kind, KINDS};
use node::*;

pub use node::Problems;

// ---------------------------------------------------------------------------------------------
// Field lists (also the "allowed:" part of unknown-field messages).

pub(in crate::config) const TOP: &[&str] = &["listen", "defaults", "proxy", "probes", "push", "web", "metrics"];
pub(in crate::config) const METRICS: &[&str] = &["histograms"];
pub(in crate::config) const DEFAULTS: &[&str] = &["interval", "timeout", "jitter", "concurrency"];
/// Keys every probe takes, whatever its kind (`kinds::KINDS` lists the rest).
const COMMON: &[&str] = &["name", "kind", "interval", "timeout", "labels", "proxy"];
/// The shared TLS option group, flat on the probe or under `tls:`.
pub(in crate::config) const TLS_OPTS: &[&str] = &["server_name", "alpn", "ca_file", "pin_sha256", "min_version"];
pub(in crate::config) const CREDENTIALS: &[&str] = &["username", "password", "rest_secret", "rest_user", "ttl"];
pub(in crate::config) const AUTH: &[&str] = &["oauth2"];
pub(in crate::config) const OAUTH2: &[&str] = &["token_url", "client_id", "client_secret", "scopes", "audience", "extra_params"];
/// Label names the exporter sets itself.
const RESERVED_LABELS: &[&str] = &["probe", "kind", "target", "phase", "reason", "result", "transport", "type", "le"];

// ---------------------------------------------------------------------------------------------
// Option groups shared by several kinds.

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
    label_map(v, "labels", RESERVED_LABELS, p)
}

/// A map of Prometheus label names to string values (`labels:` on a probe, a push receiver's
/// `external_labels:`), refusing invalid names and the `reserved` ones egress-probe sets itself.
pub(in crate::config) fn label_map(v: &Node, what: &str, reserved: &[&str], p: &mut Problems) -> Option<BTreeMap<String, String>> {
    let f = Fields::of(v, what, p)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, k, val) in &f.entries {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        if !valid {
            p.at(
                k.pos,
                format!("{what}: {name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"),
            );
            ok = false;
        } else if reserved.contains(name) {
            p.at(
                k.pos,
                format!("{what}: `{name}` is set by egress-probe itself; choose another name"),
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
    let f = &Fields::new(probe.pos, entries);
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
    // Read and parsed here, once per load: a regular file of at most 1 MiB with a certificate.
    let ca_file = optional(f, "ca_file", p, |v, p| {
        let s = non_empty(v, "ca_file", p)?;
        let path = PathBuf::from(s);
        match CaBundle::read(&path) {
            Ok(ca) => Some((path, ca)),
            Err(e) => {
                p.at(v.pos, format!("ca_file: {e}"));
                None
            }
        }
    });
    let pin_sha256 = or_default(f, "pin_sha256", Vec::new(), p, |v, p| {
        list_of(v, "pin_sha256", p, |i, p| {
            let s = string(i, "pin_sha256", p)?;
            super::values::Pin::parse(&s).map(|_| s).map_err(|e| p.at(i.pos, e)).ok()
        })
    });
    let min_version = optional(f, "min_version", p, |v, p| word::<TlsVersion>(v, "min_version", p));
    let (ca_file, ca) = ca_file?.unzip();
    Some(TlsOptions {
        server_name: server_name?,
        alpn: alpn?,
        ca_file,
        ca,
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

/// `auth: {oauth2: {token_url, client_id, client_secret, scopes?, audience?, extra_params?}}`
/// (http and websocket probes). The secret is a secret reference like any other.
fn auth(v: &Node, what: &str, p: &mut Problems) -> Option<OAuth2Spec> {
    let what = format!("{what} auth");
    let f = Fields::of(v, &what, p)?;
    f.reject_unknown(AUTH, &what, p);
    let node = f.need("oauth2", &what, p)?;
    let what = format!("{what} oauth2");
    let o = Fields::of(node, &what, p)?;
    o.reject_unknown(OAUTH2, &what, p);
    let token_url = o
        .need("token_url", &what, p)
        .and_then(|v| url(v, "token_url", &["http", "https"], p));
    let client_id = o.need("client_id", &what, p).and_then(|v| non_empty(v, "client_id", p));
    let client_secret = o.need("client_secret", &what, p).and_then(|v| secret(v, "client_secret", p));
    let scopes = or_default(&o, "scopes", Vec::new(), p, |v, p| {
        list_of(v, "scopes", p, |i, p| {
            let s = non_empty(i, "scopes", p)?;
            if s.contains(' ') {
                p.at(i.pos, format!("scopes: {s:?} contains a space; give one scope per list item"));
                return None;
            }
            Some(s)
        })
    });
    let audience = optional(&o, "audience", p, |v, p| non_empty(v, "audience", p));
    let extra = or_default(&o, "extra_params", BTreeMap::new(), p, |v, p| {
        let e = Fields::of(v, "extra_params", p)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, k, val) in &e.entries {
            if ["grant_type", "client_id", "client_secret", "scope", "audience"].contains(name) {
                p.at(k.pos, format!("extra_params: `{name}` is set from the oauth2 keys; remove it here"));
                ok = false;
                continue;
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
    Some(OAuth2Spec {
        token_url: token_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes: scopes?,
        audience: audience?,
        extra_params: extra?,
        cache: TokenCache::default(),
    })
}

/// `hold: DURATION` with `ping_interval: DURATION` (pings while holding) or `idle: true` (no
/// traffic at all: what an idle timer cuts). Without `hold`, neither may be given.
fn hold(f: &Fields, what: &str, p: &mut Problems) -> Option<Option<HoldSpec>> {
    let hold = optional(f, "hold", p, |v, p| {
        let d = duration(v, "hold", p)?;
        if d.is_zero() {
            p.at(v.pos, "hold: must be longer than 0s (omit it for no hold)");
            return None;
        }
        Some(d)
    });
    let interval = optional(f, "ping_interval", p, |v, p| {
        let d = duration(v, "ping_interval", p)?;
        if d < Duration::from_millis(100) {
            p.at(v.pos, "ping_interval: at least 100ms");
            return None;
        }
        Some(d)
    });
    let idle = optional(f, "idle", p, |v, p| boolean(v, "idle", p));
    let (hold, interval, idle) = (hold?, interval?, idle?);
    let Some(duration) = hold else {
        for k in ["ping_interval", "idle"] {
            if let Some(n) = f.get(k) {
                p.at(n.pos, format!("{what}: `{k}` only applies with `hold`"));
            }
        }
        return if f.get("ping_interval").is_some() || f.get("idle").is_some() {
            None
        } else {
            Some(None)
        };
    };
    match (interval, idle) {
        (Some(_), Some(true)) => {
            if let Some(n) = f.get("idle") {
                p.at(
                    n.pos,
                    format!("{what}: `idle: true` means no pings; drop `ping_interval` or `idle`"),
                );
            }
            None
        }
        (None, Some(false) | None) => {
            if let Some(n) = f.get("hold") {
                p.at(
                    n.pos,
                    format!("{what}: `hold` needs `ping_interval: DURATION` (keepalive pings) or `idle: true` (no traffic)"),
                );
            }
            None
        }
        (ping_interval, _) => Some(Some(HoldSpec { duration, ping_interval })),
    }
}

// ---------------------------------------------------------------------------------------------
// The file.

/// Builds the config from the tree, recording every problem in `p`. The result is only
/// meaningful when `p` stays empty.
pub fn config(root: &Node, p: &mut Problems) -> Option<Config> {
    let f = Fields::of(root, "the config file", p)?;
    // `x-…` keys hold anchors for reuse (as in docker compose) and are otherwise ignored.
    let f_top = Fields::new(f.pos, f.entries.iter().filter(|(k, _, _)| !k.starts_with("x-")).copied().collect());
    f_top.reject_unknown(TOP, "the top level", p);
    let listen = optional(&f, "listen", p, |v, p| socket_addr(v, "listen", None, p));
    let defaults = or_default(&f, "defaults", Defaults::default(), p, defaults);
    let top_proxy = optional(&f, "proxy", p, |v, p| proxy(v, "proxy", p));
    let push = or_default(&f, "push", Vec::new(), p, push::push_section);
    let web = or_default(&f, "web", Default::default(), p, crate::config::web::web);
    let metrics = or_default(&f, "metrics", MetricsSettings::default(), p, metrics_settings);
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
        web: web?,
        metrics: metrics?,
    })
}

fn metrics_settings(v: &Node, p: &mut Problems) -> Option<MetricsSettings> {
    let f = Fields::of(v, "metrics", p)?;
    f.reject_unknown(METRICS, "metrics", p);
    let histograms = or_default(&f, "histograms", Histograms::default(), p, |n, p| word(n, "histograms", p));
    Some(MetricsSettings { histograms: histograms? })
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
        Some(v) => string(v, "kind", p).and_then(|k| match Kind::find(&k) {
            Some(k) => Some(k),
            None => {
                let words: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
                p.at(v.pos, format!("{what}: unknown kind {k:?}; expected one of {}", words.join(", ")));
                None
            }
        }),
    };
    match kind {
        Some(k) => f.reject_unknown(&k.fields(), &format!("{what} (kind {})", k.name), p),
        None => {
            // Still catch typos: a field no kind knows.
            let any: Vec<&str> = KINDS.iter().flat_map(Kind::fields).collect();
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

    let spec = kind.and_then(|k| k.build(&f, &what, p));
    // Timeout (plus any hold) vs interval after defaults; reported where the offending value
    // was written.
    if let (Some(iv), Some(to)) = (
        interval.map_or(Some(d.interval), |(x, _)| x),
        timeout.map_or(Some(d.timeout), |(x, _)| x),
    ) {
        let held = spec.as_ref().map_or(Duration::ZERO, ProbeSpec::hold);
        if to + held > iv {
            // Both defaulted is impossible here: `defaults` was checked already.
            let pfx = format!("{what}: ");
            let (extra, key) = match &spec {
                Some(ProbeSpec::Turn(_) | ProbeSpec::Media(_)) => ("media duration", "media"),
                Some(ProbeSpec::Stun(_)) => ("binding_lifetime search (2 x max + 4s)", "binding_lifetime"),
                _ => ("hold", "hold"),
            };
            // With a hold, at the probe's own interval if written, else at the key that holds
            // (binding_lifetime, media, hold): never at the probe's first line.
            let written = |k: &str| f.get(k).map(|n| n.pos);
            let pos = if held.is_zero() {
                timeout.map(|t| t.1).or(interval.map(|i| i.1)).unwrap_or(f.pos)
            } else {
                interval
                    .map(|i| i.1)
                    .or_else(|| written(key))
                    .or(timeout.map(|t| t.1))
                    .unwrap_or(f.pos)
            };
            if held.is_zero() {
                p.at(pos, too_long(to, iv, &pfx));
            } else {
                p.at(
                    pos,
                    format!(
                        "{pfx}{extra} {} plus timeout {} is longer than interval {}; runs of one probe must not overlap",
                        humantime::format_duration(held),
                        humantime::format_duration(to),
                        humantime::format_duration(iv)
                    ),
                );
            }
        }
    }

    // udp_ports: a port's verdict needs a send, a retry and a full port_timeout after each.
    if let (Some(ProbeSpec::UdpPorts(u)), Some(to)) = (&spec, timeout.map_or(Some(d.timeout), |(x, _)| x)) {
        let need = super::ports::needed(u.sample, u.port_timeout) + super::ports::LOAD_SLACK;
        if to < need {
            let pos = timeout
                .map(|t| t.1)
                .or_else(|| f.get("port_timeout").map(|n| n.pos))
                .unwrap_or(f.pos);
            p.at(
                pos,
                format!(
                    "{what}: timeout {} is shorter than a run of {} port(s) needs: {} (twice port_timeout {}, the sending and a margin); raise timeout or lower port_timeout",
                    humantime::format_duration(to),
                    u.sample,
                    humantime::format_duration(need),
                    humantime::format_duration(u.port_timeout)
                ),
            );
        }
    }

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
