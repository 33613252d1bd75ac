//! Securing the HTTP endpoint the Prometheus way: the exporter-toolkit `web-config.yml`
//! (`--web.config.file`), so the very file that protects a node_exporter protects egress-probe.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/egress-probe/tls.crt
//!   key_file: /etc/egress-probe/tls.key
//!   client_auth_type: RequireAndVerifyClientCert   # mTLS; needs client_ca_file
//!   client_ca_file: /etc/egress-probe/clients-ca.crt
//!   min_version: TLS12                             # TLS12 | TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Supported as exporter-toolkit defines them: `cert_file`, `key_file`, `client_ca_file`,
//! `client_auth_type` (`NoClientCert`, `RequestClientCert`, `RequireAnyClientCert`,
//! `VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`), `min_version`, `max_version`,
//! `basic_auth_users`. rustls always verifies a client certificate it accepts, so
//! `RequestClientCert` behaves as `VerifyClientCertIfGiven` and `RequireAnyClientCert` as
//! `RequireAndVerifyClientCert` (both need `client_ca_file`); `cipher_suites`,
//! `curve_preferences`, `prefer_server_cipher_suites`, `client_allowed_sans` and
//! `http_server_config` are accepted so a shared file loads, and ignored (rustls' defaults are
//! modern; a warning says so). Unknown keys are errors, as in exporter-toolkit.
//!
//! Every file is read once per load, only if it is a regular file, at most [`MAX_FILE`] bytes.
//! With users configured every path but `/healthz` needs HTTP Basic credentials; bcrypt (slow by
//! design) runs on the blocking pool, and a verified pair is remembered by its SHA-256 so a
//! scrape every few seconds does not cost a bcrypt each. [`listen`] is the bounded listener.

pub mod listen;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Largest file read (certificates, keys, the web config itself).
pub const MAX_FILE: u64 = 1024 * 1024;

/// Why a web config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    tls_server_config: Option<TlsSchema>,
    #[serde(default)]
    http_server_config: Option<serde_norway::Value>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSchema {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Accepted for compatibility with shared exporter-toolkit files; rustls' defaults apply.
    #[serde(default)]
    cipher_suites: Option<serde_norway::Value>,
    #[serde(default)]
    curve_preferences: Option<serde_norway::Value>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<serde_norway::Value>,
    #[serde(default)]
    client_allowed_sans: Option<serde_norway::Value>,
    // Go-style inline certificate fields are not supported: files only.
}

/// The endpoint's security, loaded from a web config file (or none: open HTTP).
#[derive(Default)]
pub struct WebSecurity {
    /// TLS for the listener (with a client verifier for mTLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: HashMap<String, String>,
    /// SHA-256(user NUL password) of pairs bcrypt has already accepted.
    verified: Mutex<Vec<[u8; 32]>>,
    /// Settings accepted but ignored, for a warning at load.
    pub ignored: Vec<String>,
}

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.len())
            .finish()
    }
}

/// The outcome of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// No or wrong credentials: answer 401 with a `WWW-Authenticate` challenge.
    Denied,
}

/// Reads a file the config names: regular file only (checked on the opened handle, never
/// blocking on a FIFO), at most [`MAX_FILE`] bytes; the config's own bounded reader.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, WebConfigError> {
    crate::config::read_bounded(path, MAX_FILE).map_err(|e| WebConfigError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl WebSecurity {
    /// Loads and checks `path` (blocking file reads: call off the async runtime, e.g. in
    /// `spawn_blocking`, or before it starts).
    pub fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
        let shown = path.display().to_string();
        let invalid = |message: String| WebConfigError::Invalid {
            path: shown.clone(),
            message,
        };
        let text = read_bounded(path)?;
        let text = String::from_utf8(text).map_err(|_| invalid("not UTF-8 text".into()))?;
        let schema: FileSchema = if text.trim().is_empty() {
            FileSchema::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| invalid(one_line(&e.to_string())))?
        };
        let mut ignored = Vec::new();
        if schema.http_server_config.is_some() {
            ignored.push("http_server_config".to_string());
        }
        for (user, hash) in &schema.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(invalid(format!("basic_auth_users: user name {user:?} is empty or contains ':'")));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(invalid(format!(
                    "basic_auth_users: the password of {user:?} is not a bcrypt hash ($2y$...)"
                )));
            }
        }
        let tls = match schema.tls_server_config {
            None => None,
            Some(t) => Some(tls_config(t, &mut ignored).map_err(invalid)?),
        };
        Ok(WebSecurity {
            tls,
            users: schema.basic_auth_users.into_iter().collect(),
            verified: Mutex::new(Vec::new()),
            ignored,
        })
    }

    /// Whether requests need Basic credentials.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization` header value (or its absence). Runs bcrypt on the blocking
    /// pool for a pair not verified before.
    pub async fn check(self: &Arc<Self>, authorization: Option<&str>) -> Access {
        if !self.requires_auth() {
            return Access::Allowed;
        }
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Access::Denied;
        };
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if self.verified.lock().map(|v| v.contains(&key)).unwrap_or(false) {
            return Access::Allowed;
        }
        let me = self.clone();
        let ok = tokio::task::spawn_blocking(move || match me.users.get(&user) {
            Some(hash) => bcrypt::verify(password.as_bytes(), hash).unwrap_or(false),
            None => {
                // Same work for an unknown user, so timing does not tell names apart.
                let _ = bcrypt::verify(password.as_bytes(), DUMMY_HASH);
                false
            }
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Access::Denied;
        }
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= 64 {
                v.remove(0);
            }
            v.push(key);
        }
        Access::Allowed
    }
}

/// bcrypt("x", cost 10), used to spend the same time on unknown users.
const DUMMY_HASH: &str = "$2b$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z3x4Zl7C5ZC8F1Jc3V9dxJQy";

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(v: &str) -> Option<(String, String)> {
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || rest.len() > 4096 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn tls_config(t: TlsSchema, ignored: &mut Vec<String>) -> Result<Arc<rustls::ServerConfig>, String> {
    for (name, set) in [
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("prefer_server_cipher_suites", t.prefer_server_cipher_suites.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ] {
        if set {
            ignored.push(format!("tls_server_config.{name}"));
        }
    }
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        return Err("tls_server_config needs both cert_file and key_file".into());
    };
    let file = |p: &Path| read_bounded(p).map_err(|e| e.to_string());
    let chain = CertificateDer::pem_slice_iter(&file(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("cert_file {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&file(key)?).map_err(|e| format!("key_file {}: {e}", key.display()))?;
    let version = |v: &Option<String>, default: u8| -> Result<u8, String> {
        match v.as_deref() {
            None => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => Err(format!(
                "TLS version {other:?}: use TLS12 or TLS13 (older versions are not offered)"
            )),
        }
    };
    let (min, max) = (version(&t.min_version, 12)?, version(&t.max_version, 13)?);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let (wanted, required) = match auth {
        "NoClientCert" => (false, false),
        "RequestClientCert" | "VerifyClientCertIfGiven" => (true, false),
        "RequireAnyClientCert" | "RequireAndVerifyClientCert" => (true, true),
        other => {
            return Err(format!(
                "client_auth_type {other:?}: use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ))
        }
    };
    let builder = if wanted {
        let Some(ca) = &t.client_ca_file else {
            return Err(format!("client_auth_type {auth} needs client_ca_file"));
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&file(ca)?) {
            let c = c.map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("client_ca_file {}: no certificate", ca.display()));
        }
        let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if !required {
            v = v.allow_unauthenticated();
        }
        builder.with_client_cert_verifier(v.build().map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?)
    } else {
        if t.client_ca_file.is_some() {
            return Err("client_ca_file is set but client_auth_type is NoClientCert".into());
        }
        builder.with_no_client_auth()
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("cert_file/key_file: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parses_and_garbage_does_not() {
        let h = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("prom:pa:ss"));
        assert_eq!(parse_basic(&h), Some(("prom".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[test]
    fn the_dummy_hash_is_a_bcrypt_hash() {
        assert!(DUMMY_HASH.parse::<bcrypt::HashParts>().is_ok());
    }
}
