//! The `push:` section: a list of `- remote_write: {...}` receivers, validated like the rest
//! (every problem at its line:column). The TLS group, proxy and header rules are the probes'
//! (`super::tls_options`, `super::proxy`, `super::headers`), so a receiver is configured with
//! the same words as a probe.

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::push::{PushAuth, QueueLimits, RemoteWriteConfig, DEFAULT_PUSH_INTERVAL, DEFAULT_PUSH_TIMEOUT};
use super::super::yaml::Node;
use super::node::*;
use super::{headers, proxy, tls_options};

const PUSH_KINDS: &[&str] = &["remote_write"];
pub(in crate::config) const REMOTE_WRITE: &[&str] = &[
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
/// Shortest accepted `interval`.
const MIN_PUSH_INTERVAL: Duration = Duration::from_secs(1);
pub(in crate::config) const BASIC_AUTH: &[&str] = &["username", "password"];
pub(in crate::config) const QUEUE: &[&str] = &["max_samples", "max_age"];

/// `push:`: a list of `- remote_write: {...}`.
pub fn push_section(v: &Node, p: &mut Problems) -> Option<Vec<RemoteWriteConfig>> {
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
    // One gather per millisecond timestamp at most, and nothing a receiver would call abuse.
    let interval = or_default(&f, "interval", DEFAULT_PUSH_INTERVAL, p, |n, p| {
        let d = duration(n, "interval", p)?;
        if d < MIN_PUSH_INTERVAL {
            p.at(n.pos, "interval: a push interval must be at least 1s");
            return None;
        }
        Some(d)
    });
    let timeout = or_default(&f, "timeout", DEFAULT_PUSH_TIMEOUT, p, |n, p| duration(n, "timeout", p));
    let external_labels = or_default(&f, "external_labels", BTreeMap::new(), p, |n, p| {
        super::label_map(n, "external_labels", &[], p)
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
    let tls_group = Fields::new(f.pos, f.entries.iter().filter(|(k, _, _)| *k == "tls").copied().collect());
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
