//! TLS material for the responder's TLS listeners (TURN over TLS, HTTPS/WSS).
//!
//! Either the operator's own chain (`tls.cert` + `tls.key`, e.g. from an ACME client, so
//! probes need no special trust), or a private CA generated with rcgen that signs a fresh leaf
//! at every start. The CA is what probes trust (`ca_file`) or pin (`pin_sha256`, SPKI): with
//! `tls.dir` it is kept across restarts so a probe fleet is configured once; without, it lives
//! in a temporary file for the life of the process (the demo's case). The served chain is
//! leaf + CA so that an SPKI pin of the CA matches "anywhere in the chain".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::config::TlsSource;

/// ALPN the HTTPS/WSS listener agrees to.
pub const WEB_ALPN: &[&[u8]] = &[b"http/1.1"];
/// ALPN for TURN over TLS (RFC 7443); clients offering none are accepted too.
pub const TURN_ALPN: &[&[u8]] = &[b"stun.turn"];

/// Why TLS material could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("TLS server setup failed: {0}")]
    Rustls(String),
    #[error("tls.cert and tls.key must be given together")]
    Incomplete,
}

/// Certificates and keys ready for rustls, plus what probes need to trust them.
pub struct TlsMaterial {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// PEM file of the CA to put in a probe's `ca_file` (generated CA only).
    pub ca_file: Option<PathBuf>,
    /// SPKI SHA-256 (hex) of the CA (generated) or of the leaf (operator chain): a probe's
    /// `pin_sha256`.
    pub pin_sha256: String,
    /// Keeps a temporary CA file alive; deleted on drop.
    _temp: Option<tempfile::TempDir>,
}

impl TlsMaterial {
    /// Loads or generates the material described by `src`; `default_names` are used for a
    /// generated leaf when `src.names` is empty.
    pub fn prepare(src: &TlsSource, default_names: &[String]) -> Result<TlsMaterial, CertError> {
        match (&src.cert, &src.key) {
            (Some(cert), Some(key)) => Self::from_files(cert, key),
            (None, None) => {
                let names = if src.names.is_empty() { default_names } else { &src.names };
                Self::generate(names, src.dir.as_deref())
            }
            _ => Err(CertError::Incomplete),
        }
    }

    /// The operator's own chain and key (PEM).
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsMaterial, CertError> {
        let file_err = |p: &Path, m: String| CertError::File {
            path: p.display().to_string(),
            message: m,
        };
        // Read first so a missing file reads like everywhere else ("cannot read: No such file
        // or directory"), then parse.
        let read = |p: &Path| std::fs::read(p).map_err(|e| file_err(p, format!("cannot read: {e}")));
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(cert, e.to_string()))?;
        let leaf = chain.first().ok_or_else(|| file_err(cert, "no certificate in file".into()))?;
        let pin = crate::net::tls::spki_sha256(leaf).map(hex::encode).unwrap_or_default();
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| file_err(key, e.to_string()))?;
        Ok(TlsMaterial {
            chain,
            key,
            ca_file: None,
            pin_sha256: pin,
            _temp: None,
        })
    }

    /// A CA (kept in `dir` when given, else temporary) and a fresh leaf for `names`.
    pub fn generate(names: &[String], dir: Option<&Path>) -> Result<TlsMaterial, CertError> {
        let gen = |e: rcgen::Error| CertError::Generate(e.to_string());
        let (temp, dir) = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| CertError::File {
                    path: d.display().to_string(),
                    message: e.to_string(),
                })?;
                (None, d.to_path_buf())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("egress-probe-responder-")
                    .tempdir()
                    .map_err(|e| CertError::Generate(format!("temporary directory: {e}")))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let (ca_pem, issuer) = load_or_make_ca(&dir)?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| CertError::Generate(e.to_string()))?;
        let pin = crate::net::tls::spki_sha256(&ca_der).map(hex::encode).unwrap_or_default();

        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        let cn = names.first().map(String::as_str).unwrap_or("egress-probe responder");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| CertError::Generate(format!("{n:?} is not a DNS name or IP"))),
            })
            .collect::<Result<_, _>>()?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(90);
        let key = KeyPair::generate().map_err(gen)?;
        let leaf = params.signed_by(&key, &issuer).map_err(gen)?;
        let leaf_der = leaf.der().clone();
        let key_der =
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(|e| CertError::Generate(format!("leaf key: {e}")))?;
        Ok(TlsMaterial {
            chain: vec![leaf_der, ca_der],
            key: key_der,
            ca_file: Some(dir.join("ca.pem")),
            pin_sha256: pin,
            _temp: temp,
        })
    }

    /// A rustls server config presenting this chain, agreeing to `alpn` (or to no ALPN).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, CertError> {
        let mut cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError::Rustls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| CertError::Rustls(e.to_string()))?;
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

/// Reads `dir/ca.pem` + `dir/ca.key`, or creates and writes them (key mode 0600).
fn load_or_make_ca(dir: &Path) -> Result<(String, Issuer<'static, KeyPair>), CertError> {
    let gen = |e: rcgen::Error| CertError::Generate(e.to_string());
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let file_err = |p: &Path, e: std::io::Error| CertError::File {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    if cert_path.exists() && key_path.exists() {
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| file_err(&cert_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| file_err(&key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(gen)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(gen)?;
        return Ok((cert_pem, issuer));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    params.distinguished_name.push(DnType::CommonName, "egress-probe responder CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    let key = KeyPair::generate().map_err(gen)?;
    let cert = params.self_signed(&key).map_err(gen)?;
    let cert_pem = cert.pem();
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|e| file_err(&key_path, e))?;
    std::fs::write(&cert_path, &cert_pem).map_err(|e| file_err(&cert_path, e))?;
    Ok((cert_pem, Issuer::new(params, key)))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_is_kept_in_dir_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = TlsMaterial::generate(&["localhost".into(), "127.0.0.1".into()], Some(dir.path())).unwrap();
        let b = TlsMaterial::generate(&["localhost".into()], Some(dir.path())).unwrap();
        assert_eq!(a.pin_sha256, b.pin_sha256, "same CA across restarts");
        assert_eq!(a.pin_sha256.len(), 64);
        assert!(dir.path().join("ca.pem").exists());
        let cfg = a.server_config(WEB_ALPN).unwrap();
        assert_eq!(cfg.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn temporary_ca_file_disappears_on_drop() {
        let m = TlsMaterial::generate(&["localhost".into()], None).unwrap();
        let p = m.ca_file.clone().unwrap();
        assert!(p.exists());
        drop(m);
        assert!(!p.exists());
    }

    #[test]
    fn operator_chain_is_loaded_and_pinned_by_its_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["relay.example.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (crt_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&crt_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let src = TlsSource {
            cert: Some(crt_path.clone()),
            key: Some(key_path),
            ..TlsSource::default()
        };
        let m = TlsMaterial::prepare(&src, &[]).unwrap();
        assert_eq!(m.ca_file, None);
        assert_eq!(m.pin_sha256, hex::encode(crate::net::tls::spki_sha256(cert.der()).unwrap()));
        let cfg = m.server_config(TURN_ALPN).unwrap();
        assert_eq!(cfg.alpn_protocols, [b"stun.turn".to_vec()]);
        let half = TlsSource {
            cert: Some(crt_path),
            ..TlsSource::default()
        };
        assert!(matches!(TlsMaterial::prepare(&half, &[]), Err(CertError::Incomplete)));
    }
}
