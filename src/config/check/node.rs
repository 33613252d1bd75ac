//! The YAML accessor toolkit the schema is written with: a problem list, a checked view of one
//! mapping ([`Fields`]), "did you mean" hints, and scalar converters.
//!
//! Nothing here knows which keys a config has; `check/mod.rs` (the file, shared option groups)
//! and `check/kinds.rs` (one definition per probe kind) do. Every converter records its own
//! problem at the node's position and returns `None`, so callers only combine `Option`s.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::super::values::{parse_duration, shorten, HostPort, IceUrl, Secret};
use super::super::yaml::{Node, Pos, Val};

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
// Mapping access.

/// A mapping's entries by key, checked for non-string and duplicate keys.
pub struct Fields<'a> {
    pub pos: Pos,
    pub entries: Vec<(&'a str, &'a Node, &'a Node)>,
    /// Every key asked for with [`Fields::get`]/[`Fields::need`], present or not: lets a test
    /// prove that a kind's declared keys and the keys its builder reads are the same set.
    asked: RefCell<Vec<String>>,
}

impl<'a> Fields<'a> {
    /// `None` (with a problem recorded) unless `node` is a mapping. `what` names it in messages.
    pub fn of(node: &'a Node, what: &str, p: &mut Problems) -> Option<Fields<'a>> {
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
        Some(Fields::new(node.pos, entries))
    }

    /// A view over entries picked from other mappings (the top level without `x-` keys, the
    /// flat and grouped TLS options).
    pub fn new(pos: Pos, entries: Vec<(&'a str, &'a Node, &'a Node)>) -> Fields<'a> {
        Fields {
            pos,
            entries,
            asked: RefCell::new(Vec::new()),
        }
    }

    /// The keys asked for so far, in first-asked order.
    #[cfg(test)]
    pub fn asked(&self) -> Vec<String> {
        self.asked.borrow().clone()
    }

    /// Records every key not in `allowed`.
    pub fn reject_unknown(&self, allowed: &[&str], what: &str, p: &mut Problems) {
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
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        {
            let mut asked = self.asked.borrow_mut();
            if !asked.iter().any(|k| k == key) {
                asked.push(key.to_string());
            }
        }
        self.entries
            .iter()
            .find(|(n, _, _)| *n == key)
            .map(|(_, _, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// Like [`Fields::get`], recording "missing required field" at the mapping when absent.
    pub fn need(&self, key: &str, what: &str, p: &mut Problems) -> Option<&'a Node> {
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
pub fn close_match<'b>(key: &str, allowed: &[&'b str]) -> Option<&'b str> {
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

/// Longest regex pattern accepted (`expect_body`, websocket `expect`): 4 KiB of text.
pub const MAX_REGEX_LEN: usize = 4096;
/// Most memory one compiled regex may take (regex's `size_limit`): 1 MiB.
pub const MAX_REGEX_COMPILED: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Scalar conversions. Each records its own problem and returns None on failure.

pub fn string(v: &Node, key: &str, p: &mut Problems) -> Option<String> {
    match v.scalar() {
        Some(s) => Some(s.to_string()),
        None => {
            p.at(v.pos, format!("`{key}` must be a string, found {}", v.describe()));
            None
        }
    }
}

pub fn non_empty(v: &Node, key: &str, p: &mut Problems) -> Option<String> {
    let s = string(v, key, p)?;
    if s.trim().is_empty() {
        p.at(v.pos, format!("`{key}` must not be empty"));
        return None;
    }
    Some(s)
}

pub fn duration(v: &Node, key: &str, p: &mut Problems) -> Option<Duration> {
    let s = string(v, key, p)?;
    parse_duration(&s).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

pub fn boolean(v: &Node, key: &str, p: &mut Problems) -> Option<bool> {
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
pub fn uint(v: &Node, key: &str, min: u64, max: u64, p: &mut Problems) -> Option<u64> {
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
pub fn word<T: serde::de::DeserializeOwned>(v: &Node, key: &str, p: &mut Problems) -> Option<T> {
    let s = string(v, key, p)?;
    serde_norway::from_value(serde_norway::Value::String(s.clone()))
        .map_err(|e| {
            let e = e.to_string().replace("unknown variant", "unknown value");
            p.at(v.pos, format!("{key}: {e}"))
        })
        .ok()
}

/// [`word`] for upper-case words (`record: aaaa`, `method: get` are accepted too).
pub fn upper_word<T: serde::de::DeserializeOwned>(v: &Node, key: &str, p: &mut Problems) -> Option<T> {
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

pub fn secret(v: &Node, key: &str, p: &mut Problems) -> Option<Secret> {
    let s = string(v, key, p)?;
    Secret::resolve(&s).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

pub fn regex(v: &Node, key: &str, p: &mut Problems) -> Option<regex::Regex> {
    let s = string(v, key, p)?;
    if s.len() > MAX_REGEX_LEN {
        p.at(
            v.pos,
            format!(
                "{key}: regex of {} bytes is longer than the limit of {MAX_REGEX_LEN} bytes ({})",
                s.len(),
                shorten(&s)
            ),
        );
        return None;
    }
    regex::RegexBuilder::new(&s)
        .size_limit(MAX_REGEX_COMPILED)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            // regex's message is a multi-line drawing; keep its `error:` line.
            let why = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or(text.as_str())
                .to_string();
            p.at(v.pos, format!("{key}: invalid regex {}: {why}", shorten(&s)))
        })
        .ok()
}

pub fn host_port(v: &Node, key: &str, p: &mut Problems) -> Option<HostPort> {
    let s = string(v, key, p)?;
    HostPort::parse(&s, None).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

pub fn ice_url(v: &Node, key: &str, p: &mut Problems) -> Option<IceUrl> {
    let s = string(v, key, p)?;
    IceUrl::parse(&s).map_err(|e| p.at(v.pos, format!("{key}: {e}"))).ok()
}

/// `ip:port`, or a bare IP with `default_port`.
pub fn socket_addr(v: &Node, key: &str, default_port: Option<u16>, p: &mut Problems) -> Option<SocketAddr> {
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
    } else if key == "peer" {
        "198.51.100.7:3479, the UDP echo to stream to"
    } else {
        "0.0.0.0:9469 or [::]:9469"
    };
    p.at(v.pos, format!("{key}: {s:?} is not an IP address and port (e.g. {example})"));
    None
}

pub fn url(v: &Node, key: &str, schemes: &[&str], p: &mut Problems) -> Option<url::Url> {
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

pub fn list<'a>(v: &'a Node, key: &str, p: &mut Problems) -> Option<&'a [Node]> {
    match &v.val {
        Val::Seq(items) => Some(items),
        _ => {
            p.at(v.pos, format!("`{key}` must be a list, found {}", v.describe()));
            None
        }
    }
}

/// A list whose every item converts; all bad items are reported.
pub fn list_of<T>(v: &Node, key: &str, p: &mut Problems, mut each: impl FnMut(&Node, &mut Problems) -> Option<T>) -> Option<Vec<T>> {
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

/// An optional field with a default: `Some(default)` when absent, `None` when invalid.
pub fn or_default<T>(
    f: &Fields,
    key: &str,
    default: T,
    p: &mut Problems,
    conv: impl FnOnce(&Node, &mut Problems) -> Option<T>,
) -> Option<T> {
    match f.get(key) {
        None => Some(default),
        Some(v) => conv(v, p),
    }
}

/// An optional field without a default: `Some(None)` when absent, `None` when invalid.
pub fn optional<T>(f: &Fields, key: &str, p: &mut Problems, conv: impl FnOnce(&Node, &mut Problems) -> Option<T>) -> Option<Option<T>> {
    match f.get(key) {
        None => Some(None),
        Some(v) => conv(v, p).map(Some),
    }
}
