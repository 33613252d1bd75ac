//! YAML → [`Config`]. PROVISIONAL: first-error-only loader; to be replaced by the
//! line:column collecting validator (issue 2).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::types::*;
use super::values::{parse_duration, HostPort, IceUrl, Secret};

/// One problem in a config file, with its position (1-based) when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigErrors {
    /// File name as given, for `FILE:LINE:COLUMN:` prefixes.
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.origin, e.line, e.column, e.message)?;
        }
        Ok(())
    }
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        origin: origin.clone(),
        errors: vec![ConfigError {
            line: 0,
            column: 0,
            message: format!("cannot read config: {e}"),
        }],
    })?;
    parse_str(&text, &origin)
}

/// Parses and validates config text; `origin` names it in error messages.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let fail = |line: usize, column: usize, message: String| ConfigErrors {
        origin: origin.to_string(),
        errors: vec![ConfigError { line, column, message }],
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        #[serde(default)]
        listen: Option<std::net::SocketAddr>,
        #[serde(default)]
        defaults: Defaults,
        #[serde(default)]
        proxy: Option<ProxySetting>,
        #[serde(default)]
        probes: Vec<Value>,
    }
    let raw: Raw = serde_norway::from_str(text).map_err(|e| {
        let (l, c) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        fail(l, c, e.to_string())
    })?;
    let mut probes = Vec::new();
    for (i, v) in raw.probes.into_iter().enumerate() {
        probes.push(probe_from_value(v).map_err(|m| fail(0, 0, format!("probes[{i}]: {m}")))?);
    }
    Ok(Config {
        listen: raw.listen,
        defaults: raw.defaults,
        proxy: raw.proxy,
        probes,
    })
}

fn take<T: serde::de::DeserializeOwned>(m: &mut serde_norway::Mapping, key: &str) -> Result<Option<T>, String> {
    match m.remove(key) {
        None => Ok(None),
        Some(v) => serde_norway::from_value(v).map(Some).map_err(|e| format!("{key}: {e}")),
    }
}

fn need<T: serde::de::DeserializeOwned>(m: &mut serde_norway::Mapping, key: &str, kind: &str) -> Result<T, String> {
    take(m, key)?.ok_or_else(|| format!("missing field `{key}` (required for kind {kind})"))
}

fn dur(m: &mut serde_norway::Mapping, key: &str) -> Result<Option<Duration>, String> {
    take::<String>(m, key)?
        .map(|s| parse_duration(&s))
        .transpose()
        .map_err(|e| format!("{key}: {e}"))
}

fn tls_opts(m: &mut serde_norway::Mapping) -> Result<TlsOptions, String> {
    Ok(TlsOptions {
        server_name: take(m, "server_name")?,
        alpn: take(m, "alpn")?.unwrap_or_default(),
        ca_file: take(m, "ca_file")?,
        pin_sha256: take(m, "pin_sha256")?.unwrap_or_default(),
        min_version: take(m, "min_version")?,
    })
}

fn url_field(m: &mut serde_norway::Mapping, kind: &str, schemes: &[&str]) -> Result<url::Url, String> {
    let s: String = need(m, "url", kind)?;
    let u = url::Url::parse(&s).map_err(|e| format!("url: {e}"))?;
    if !schemes.contains(&u.scheme()) {
        return Err(format!("url: scheme must be one of {schemes:?}"));
    }
    Ok(u)
}

fn status_ranges(v: Option<Vec<Value>>) -> Result<Vec<StatusRange>, String> {
    let Some(v) = v else {
        return Ok(vec![StatusRange { low: 200, high: 399 }]);
    };
    v.into_iter()
        .map(|x| {
            let s = match x {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s,
                _ => return Err("expect_status entries are codes, ranges (200-299) or classes (2xx)".to_string()),
            };
            parse_status_range(&s)
        })
        .collect()
}

/// Parses `200`, `200-299` or `2xx`.
pub fn parse_status_range(s: &str) -> Result<StatusRange, String> {
    let bad = || format!("bad status {s:?}; use 200, 200-299 or 2xx");
    let code = |t: &str| t.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c)).ok_or_else(bad);
    if let Some(d) = s.strip_suffix("xx") {
        let c = d.parse::<u16>().ok().filter(|c| (1..=5).contains(c)).ok_or_else(bad)?;
        return Ok(StatusRange {
            low: c * 100,
            high: c * 100 + 99,
        });
    }
    if let Some((a, b)) = s.split_once('-') {
        let (low, high) = (code(a)?, code(b)?);
        return if low <= high { Ok(StatusRange { low, high }) } else { Err(bad()) };
    }
    let c = code(s)?;
    Ok(StatusRange { low: c, high: c })
}

fn credentials(v: Value) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct C {
        username: Option<Secret>,
        password: Option<Secret>,
        rest_secret: Option<Secret>,
        rest_user: Option<String>,
        ttl: Option<String>,
    }
    let c: C = serde_norway::from_value(v).map_err(|e| format!("credentials: {e}"))?;
    match (c.username, c.password, c.rest_secret) {
        (Some(username), Some(password), None) => Ok(Credentials::LongTerm { username, password }),
        (None, None, Some(secret)) => Ok(Credentials::Rest {
            secret,
            user: c.rest_user.unwrap_or_else(|| "egress-probe".into()),
            ttl: c.ttl.map(|t| parse_duration(&t)).transpose()?.unwrap_or(Duration::from_secs(3600)),
        }),
        _ => Err("credentials: give either username and password, or rest_secret".into()),
    }
}

fn probe_from_value(v: Value) -> Result<ProbeConfig, String> {
    let Value::Mapping(mut m) = v else {
        return Err("a probe must be a mapping".into());
    };
    let name: String = need(&mut m, "name", "any")?;
    let kind: String = need(&mut m, "kind", "any")?;
    let interval = dur(&mut m, "interval")?;
    let timeout = dur(&mut m, "timeout")?;
    let labels: BTreeMap<String, String> = take(&mut m, "labels")?.unwrap_or_default();
    let proxy: Option<ProxySetting> = take(&mut m, "proxy")?;
    let addresses: AddressMode = take(&mut m, "addresses")?.unwrap_or_default();
    let k = kind.as_str();
    let spec = match k {
        "dns" => ProbeSpec::Dns(serde_norway::from_value(Value::Mapping(std::mem::take(&mut m))).map_err(|e| e.to_string())?),
        "tcp" => ProbeSpec::Tcp(TcpSpec {
            target: need(&mut m, "target", k)?,
            addresses,
        }),
        "tls" => ProbeSpec::Tls(TlsSpec {
            target: need(&mut m, "target", k)?,
            addresses,
            tls: tls_opts(&mut m)?,
        }),
        "http" => ProbeSpec::Http(HttpSpec {
            url: url_field(&mut m, k, &["http", "https"])?,
            method: take(&mut m, "method")?.unwrap_or_default(),
            headers: take(&mut m, "headers")?.unwrap_or_default(),
            body: take(&mut m, "body")?,
            expect_status: status_ranges(take(&mut m, "expect_status")?)?,
            expect_body: take::<String>(&mut m, "expect_body")?
                .map(|r| regex::Regex::new(&r))
                .transpose()
                .map_err(|e| format!("expect_body: {e}"))?,
            follow_redirects: take(&mut m, "follow_redirects")?.unwrap_or(0),
            tls: tls_opts(&mut m)?,
        }),
        "websocket" => ProbeSpec::Websocket(WebsocketSpec {
            url: url_field(&mut m, k, &["ws", "wss"])?,
            headers: take(&mut m, "headers")?.unwrap_or_default(),
            ping: take(&mut m, "ping")?.unwrap_or(3),
            send: take(&mut m, "send")?,
            expect: take::<String>(&mut m, "expect")?
                .map(|r| regex::Regex::new(&r))
                .transpose()
                .map_err(|e| format!("expect: {e}"))?,
            tls: tls_opts(&mut m)?,
        }),
        "stun" => ProbeSpec::Stun(StunSpec {
            server: need(&mut m, "server", k)?,
            count: take(&mut m, "count")?.unwrap_or(3),
            nat_mapping: take(&mut m, "nat_mapping")?.unwrap_or(false),
            second_server: take(&mut m, "second_server")?,
            tls: tls_opts(&mut m)?,
        }),
        "turn" => ProbeSpec::Turn(TurnSpec {
            server: need(&mut m, "server", k)?,
            credentials: credentials(need(&mut m, "credentials", k)?)?,
            count: take(&mut m, "count")?.unwrap_or(5),
            size: take(&mut m, "size")?.unwrap_or(100),
            channel: take(&mut m, "channel")?.unwrap_or(false),
            addresses,
            tls: tls_opts(&mut m)?,
        }),
        "ice" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct S {
                url: IceUrl,
                credentials: Option<Value>,
            }
            let servers: Vec<S> = need(&mut m, "servers", k)?;
            let servers = servers
                .into_iter()
                .map(|s| {
                    Ok(IceServer {
                        url: s.url,
                        credentials: s.credentials.map(credentials).transpose()?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            ProbeSpec::Ice(IceSpec {
                servers,
                policy: take(&mut m, "policy")?.unwrap_or_default(),
                network_types: take(&mut m, "network_types")?.unwrap_or_else(|| vec![NetworkType::Udp4]),
                expect: take(&mut m, "expect")?.unwrap_or_default(),
                connectivity: take(&mut m, "connectivity")?.unwrap_or(false),
            })
        }
        other => {
            return Err(format!(
                "unknown kind {other:?}; expected dns, tcp, tls, http, websocket, stun, turn or ice"
            ))
        }
    };
    if let Some((k, _)) = m.into_iter().next() {
        return Err(format!("unknown field {:?} for kind {kind}", k.as_str().unwrap_or("?")));
    }
    let _ = HostPort::parse; // used by later validation
    Ok(ProbeConfig {
        name,
        interval,
        timeout,
        labels,
        proxy,
        spec,
    })
}
