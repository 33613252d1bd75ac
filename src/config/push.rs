//! The typed `push:` section: where results are *sent* when nothing can scrape `/metrics`.
//!
//! ```yaml
//! push:
//!   - remote_write:
//!       url: https://metrics.example.com/api/v1/write
//!       interval: 15s                      # default 15s
//!       timeout: 10s                       # default 10s, every request bounded by it
//!       external_labels: {tenant: acme, site: paris-1}
//!       headers: {X-Scope-OrgID: acme}     # values may be secret refs (env:, file:)
//!       basic_auth: {username: u, password: env:RW_PASSWORD}   # or bearer_token: file:/run/token
//!       tls: {ca_file: ..., pin_sha256: [...], server_name: ...}
//!       proxy: env                         # none | env | http://user:pass@proxy:3128
//!       queue: {max_samples: 100000, max_age: 2h}
//! ```
//!
//! Only the values live here; `config::check` turns YAML into them with line:column problems.
//! Credentials are [`Secret`]s so no `Debug` of this struct can show them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::types::{ProxySetting, TlsOptions};
use super::values::Secret;

/// Default time between two gathers of the families (and pushes).
pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(15);
/// Default bound of one write request, dial to answer.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default queue bound in samples.
pub const DEFAULT_QUEUE_SAMPLES: usize = 100_000;
/// Default oldest sample kept while the receiver is unreachable.
pub const DEFAULT_QUEUE_AGE: Duration = Duration::from_secs(2 * 3600);

/// One `- remote_write: {...}` entry of `push:`.
#[derive(Clone, Debug)]
pub struct RemoteWriteConfig {
    /// `http(s)://host[:port]/path` of the receiver (Prometheus `/api/v1/write`, Mimir
    /// `/api/v1/push`, ...). Never carries credentials (validation refuses `user:pass@`).
    pub url: url::Url,
    pub interval: Duration,
    pub timeout: Duration,
    /// Added to every series unless the series already has the label.
    pub external_labels: BTreeMap<String, String>,
    /// Extra request headers (`X-Scope-OrgID` ...); values may be secrets.
    pub headers: BTreeMap<String, Secret>,
    pub auth: Option<PushAuth>,
    /// `server_name`, `ca_file`, `pin_sha256` (and `min_version`) as for probes.
    pub tls: TlsOptions,
    /// `None`: the top-level `proxy:` applies, as for probes.
    pub proxy: Option<ProxySetting>,
    pub queue: QueueLimits,
}

impl RemoteWriteConfig {
    /// A config with every default, for `url` (tests and benches).
    pub fn new(url: url::Url) -> RemoteWriteConfig {
        RemoteWriteConfig {
            url,
            interval: DEFAULT_PUSH_INTERVAL,
            timeout: DEFAULT_PUSH_TIMEOUT,
            external_labels: BTreeMap::new(),
            headers: BTreeMap::new(),
            auth: None,
            tls: TlsOptions::default(),
            proxy: None,
            queue: QueueLimits::default(),
        }
    }

    /// `host:port` of the receiver: the `remote` label of the push self-metrics (never a path,
    /// a query or credentials).
    pub fn remote_label(&self) -> String {
        let host = self.url.host_str().unwrap_or("unknown");
        match self.url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

/// How the receiver authenticates us.
#[derive(Clone, Debug)]
pub enum PushAuth {
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

/// Bounds of the in-memory queue that holds samples while the receiver is unreachable.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Most samples held; the oldest are dropped (and counted) beyond it.
    pub max_samples: usize,
    /// Samples older than this are dropped (and counted) instead of sent.
    pub max_age: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_samples: DEFAULT_QUEUE_SAMPLES,
            max_age: DEFAULT_QUEUE_AGE,
        }
    }
}
