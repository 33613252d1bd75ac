//! TLS client side of the dial path (rustls, ring backend).
//!
//! The verifier wraps rustls' webpki verifier so that, pass or fail, we learn what the server
//! presented (subject, issuer, earliest expiry): an `untrusted_issuer` with issuer
//! "Corp Proxy CA" tells a network team more than any error string. Pins (SHA-256 of a
//! certificate's SPKI or DER, anywhere in the chain) are checked after the chain verifies,
//! so a trusted-but-intercepting proxy shows up as `tls/pin_mismatch`.
//!
//! A certificate in `ca_file` that is byte-for-byte the server's leaf is trusted as it is (as
//! OpenSSL and Go do), still checked for name and validity: that is how coturn's docs and most
//! TURN operators make a certificate (`openssl req -x509`, self-signed with CA:TRUE), which
//! webpki alone rejects as "a CA used as an end entity". Whether the leaf's issuer is one of the
//! `ca_file` certificates goes into `detail.tls.issuer_configured`, so a trust failure against
//! the user's own CA is not reported as interception. Verification errors become sentences
//! ([`describe_tls_error`]), never a Debug dump of a rustls/webpki enum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, Tls12Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{CaBundle, TlsOptions, TlsVersion};
use crate::outcome::details::TlsDetails;
use crate::outcome::{Failure, Fault, Phase, Reason, Run};

use super::classify::classify_io;

/// A ready-to-use TLS client for one probe's settings. Build one per run (cheap: roots are
/// loaded once per process). It records what the server presented for [`handshake`], so run
/// one handshake at a time per client (`addresses: all` builds one client per address).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    record: Arc<Mutex<ChainRecord>>,
    server_name: String,
    alpn_required: bool,
}

/// What the verifier saw, shared with the caller after the handshake.
#[derive(Debug, Default, Clone)]
struct ChainRecord {
    subject: String,
    issuer: String,
    earliest_expiry_unix: Option<i64>,
    chain_len: usize,
    pin_matched: Option<bool>,
    issuer_configured: bool,
}

/// A certificate from the probe's `ca_file`: its DER (to recognise a self-signed leaf given
/// as its own anchor) and its subject (to tell "issued by a CA the user configured").
#[derive(Debug)]
struct Anchor {
    der: CertificateDer<'static>,
    subject: String,
}

impl Anchor {
    fn new(der: &CertificateDer<'static>) -> Anchor {
        let subject = x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_default();
        Anchor { der: der.clone(), subject }
    }
}

impl TlsClient {
    /// Builds a client from probe settings. `default_name` is the target host (SNI default).
    /// `default_alpn` applies when the probe configures none (e.g. `http/1.1` for HTTPS).
    pub fn new(opts: &TlsOptions, default_name: &str, default_alpn: &[&str]) -> Result<TlsClient, Fault> {
        // The loaded config carries the bundle (`ca`); options built in code may give only
        // the path, read here with the loader's limits (regular file, 1 MiB).
        let ca = match (&opts.ca, &opts.ca_file) {
            (Some(ca), _) => Some(ca.clone()),
            (None, Some(path)) => Some(CaBundle::read(path).map_err(|e| Fault::new(Reason::Config, format!("ca_file: {e}")))?),
            (None, None) => None,
        };
        let trust = match ca {
            Some(ca) => bundle_trust(&ca).ok_or_else(|| {
                let shown = opts.ca_file.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default();
                Fault::new(Reason::Config, format!("ca_file{shown}: no usable certificate"))
            })?,
            None => default_trust().map_err(|e| Fault::new(Reason::Config, format!("TLS verifier: {e}")))?,
        };
        let pins = opts
            .pin_sha256
            .iter()
            .map(|p| crate::config::Pin::parse(p).map(|p| p.0).map_err(|m| Fault::new(Reason::Config, m)))
            .collect::<Result<Vec<_>, _>>()?;
        let record = Arc::new(Mutex::new(ChainRecord::default()));
        let verifier = Arc::new(RecordingVerifier {
            inner: trust.verifier.clone(),
            record: record.clone(),
            pins,
            anchors: trust.anchors.clone(),
        });
        // A copy of the bundle's template (built once), with this run's recording verifier.
        let template = trust
            .template(matches!(opts.min_version, Some(TlsVersion::Tls13)))
            .map_err(|e| Fault::new(Reason::Config, format!("TLS versions: {e}")))?;
        let mut config = ClientConfig::clone(&template);
        config.dangerous().set_certificate_verifier(verifier);
        let alpn: Vec<Vec<u8>> = if opts.alpn.is_empty() {
            default_alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
        } else {
            opts.alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
        };
        config.alpn_protocols = alpn;
        Ok(TlsClient {
            config: Arc::new(config),
            record,
            server_name: opts.server_name.clone().unwrap_or_else(|| default_name.to_string()),
            alpn_required: !opts.alpn.is_empty(),
        })
    }

    /// The SNI / verified name.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }
}

/// Runs the TLS handshake over `stream` as phase `tls`, filling `run.detail.tls` (also when
/// it fails, with whatever the server presented).
pub async fn handshake<S>(run: &mut Run, client: &TlsClient, stream: S) -> Result<TlsStream<S>, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(client.server_name.clone()).map_err(|_| {
        Failure::new(
            Phase::Tls,
            Reason::Config,
            format!("invalid TLS server name {:?}", client.server_name),
        )
    })?;
    if let Ok(mut r) = client.record.lock() {
        *r = ChainRecord::default();
    }
    let connector = TlsConnector::from(client.config.clone());
    // `connect` builds the ClientHello (key share included) right here, before the clock
    // starts: phase `tls` runs from the ClientHello's write to the handshake's end, the
    // exchange a capture of the wire shows (BENCHMARKS.md, timing truth).
    let connecting = connector.connect(name, stream);
    let result = run
        .phase(Phase::Tls, async move {
            connecting
                .await
                .map_err(|e| Fault::new(classify_tls_io(&e), format!("TLS handshake: {}", describe_tls_io(&e))))
        })
        .await;
    let rec = client.record.lock().map(|r| r.clone()).unwrap_or_default();
    let mut details = TlsDetails {
        server_name: client.server_name.clone(),
        subject: rec.subject,
        issuer: rec.issuer,
        earliest_expiry_unix: rec.earliest_expiry_unix,
        chain_len: rec.chain_len,
        pin_matched: rec.pin_matched,
        issuer_configured: rec.issuer_configured,
        ..Default::default()
    };
    let stream = match result {
        Ok(s) => s,
        Err(mut f) => {
            if rec.pin_matched == Some(false) {
                f.reason = Reason::PinMismatch;
                f.message = format!(
                    "no certificate in the chain matches pin_sha256 (issuer {:?}): TLS is likely intercepted",
                    details.issuer
                );
            } else if f.reason == Reason::UntrustedIssuer && !details.issuer.is_empty() {
                f.message = format!("{} (issuer {:?})", f.message, details.issuer);
            }
            run.detail.tls = Some(details);
            return Err(f);
        }
    };
    let (_, conn) = stream.get_ref();
    details.version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    details.alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    details.cipher_suite = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    let missing_alpn = client.alpn_required && details.alpn.is_none();
    run.detail.tls = Some(details);
    if missing_alpn {
        close(stream, run.deadline()).await;
        return Err(Failure::new(
            Phase::Tls,
            Reason::Alpn,
            "server selected none of the offered ALPN protocols (it may not support them, or ALPN was stripped)",
        ));
    }
    Ok(stream)
}

/// Ends a TLS session politely: close_notify, then FIN; bounded by `deadline`, errors ignored
/// (the probe's verdict is already made).
pub async fn close<S>(mut stream: TlsStream<S>, deadline: tokio::time::Instant)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
}

/// A readable sentence for a failed handshake's error (never a Debug dump).
fn describe_tls_io(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(inner) => describe_tls_error(inner),
        None => e.to_string(),
    }
}

/// rustls error → a sentence a network team can act on.
pub fn describe_tls_error(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => describe_certificate_error(c),
        E::AlertReceived(alert) => format!("the server ended the handshake with the TLS alert {}", alert_words(alert)),
        E::NoApplicationProtocol => "the server selected none of the offered ALPN protocols".into(),
        E::PeerIncompatible(_) => "the server supports no TLS version or cipher suite this client offers".into(),
        E::PeerMisbehaved(_) => "the server broke the TLS protocol during the handshake".into(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the server sent something that is not a valid TLS handshake message".into()
        }
        E::DecryptError => "a TLS record failed to decrypt (corrupted or tampered in transit)".into(),
        other => format!("TLS error: {}", other.to_string().replace('_', " ")),
    }
}

fn describe_certificate_error(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => "the certificate chain does not lead to a trusted root".into(),
        CertificateError::BadSignature => "a certificate's signature does not verify against its issuer's key".into(),
        CertificateError::Expired => "the certificate has expired".into(),
        CertificateError::NotValidYet => "the certificate is not valid yet".into(),
        CertificateError::NotValidForName => "the certificate is not valid for the server name".into(),
        CertificateError::Revoked => "the certificate is revoked".into(),
        CertificateError::BadEncoding => "the certificate is not valid DER".into(),
        CertificateError::UnhandledCriticalExtension => "the certificate has a critical extension this client does not understand".into(),
        CertificateError::InvalidPurpose => "the certificate is not meant for TLS servers (extended key usage)".into(),
        CertificateError::Other(o) => {
            if o.0.downcast_ref::<PinMismatch>().is_some() {
                return "no certificate in the chain matches pin_sha256".into();
            }
            match o.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => {
                    "the server's own certificate is a CA certificate (CA:TRUE) that is not in ca_file; \
                     to trust a self-signed server certificate, put exactly that certificate in ca_file"
                        .into()
                }
                Some(webpki::Error::EndEntityUsedAsCa) => {
                    "the server's certificate was signed by a certificate that is not a CA (CA:FALSE)".into()
                }
                Some(webpki::Error::PathLenConstraintViolated) => "the chain is longer than a CA's path length constraint allows".into(),
                Some(webpki::Error::NameConstraintViolation) => "the server name is outside a CA's name constraints".into(),
                Some(webpki::Error::MaximumPathDepthExceeded | webpki::Error::MaximumPathBuildCallsExceeded) => {
                    "the presented chain is too long or too tangled to verify".into()
                }
                _ => format!("the certificate was rejected ({})", words(&o.0.to_string())),
            }
        }
        // The context variants of rustls have readable Display texts.
        other => other.to_string(),
    }
}

/// `HandshakeFailure` → `handshake failure`.
fn alert_words(alert: &rustls::AlertDescription) -> String {
    words(&format!("{alert:?}"))
}

/// CamelCase identifier → lower-case words, for the rare error without a sentence of its own.
fn words(ident: &str) -> String {
    let mut out = String::new();
    for (i, ch) in ident.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 && !out.ends_with(' ') {
            out.push(' ');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

fn classify_tls_io(e: &std::io::Error) -> Reason {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return classify_rustls(inner);
    }
    classify_io(e)
}

/// rustls error → reason word.
pub fn classify_rustls(e: &rustls::Error) -> Reason {
    use rustls::{AlertDescription as A, Error as E, PeerIncompatible as P};
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Reason::UntrustedIssuer,
            CertificateError::Expired
            | CertificateError::NotValidYet
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYetContext { .. } => Reason::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => Reason::NameMismatch,
            CertificateError::Other(o) if o.0.downcast_ref::<PinMismatch>().is_some() => Reason::PinMismatch,
            CertificateError::BadEncoding => Reason::Handshake,
            // Revoked, wrong purpose, unknown critical extension...: not a chain we can trust.
            _ => Reason::UntrustedIssuer,
        },
        E::NoApplicationProtocol | E::AlertReceived(A::NoApplicationProtocol) => Reason::Alpn,
        E::AlertReceived(A::ProtocolVersion)
        | E::PeerIncompatible(
            P::ServerDoesNotSupportTls12Or13
            | P::ServerTlsVersionIsDisabledByOurConfig
            | P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled,
        ) => Reason::Version,
        _ => Reason::Handshake,
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, the usual pin (`openssl x509 -pubkey | ...`).
pub fn spki_sha256(cert: &[u8]) -> Option<[u8; 32]> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(Sha256::digest(parsed.tbs_certificate.subject_pki.raw).into())
}

/// The crypto provider (ring), made once: every client of the process shares it.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// What a client trusts: the webpki verifier over its roots, and the `ca_file` certificates
/// as [`Anchor`]s (none for the default roots). Built once per distinct bundle and shared, so
/// a run does not parse certificates again; every run still gets its own `ClientConfig`
/// (no session resumption across runs: each probe is a full handshake).
#[derive(Clone)]
struct Trust {
    verifier: Arc<WebPkiServerVerifier>,
    anchors: Arc<Vec<Anchor>>,
    /// Client configs over these roots, TLS 1.3 + 1.2 and 1.3 only, built on first use; a run
    /// clones one and sets its own recording verifier (see [`Trust::template`]).
    templates: Arc<[OnceLock<Arc<ClientConfig>>; 2]>,
}

impl Trust {
    fn new(verifier: Arc<WebPkiServerVerifier>, anchors: Vec<Anchor>) -> Trust {
        Trust {
            verifier,
            anchors: Arc::new(anchors),
            templates: Arc::new([OnceLock::new(), OnceLock::new()]),
        }
    }

    /// The client config a run starts from. Building one through rustls' builder allocates a
    /// 256-session resumption cache (~100 KB) that a probe never uses; a clone of this
    /// template does not. Resumption stays off in effect: no session is ever stored
    /// (`Resumption::disabled`), so every run is a full handshake, and TLS 1.2 still offers
    /// the empty session ticket extension the builder's default offers (the same ClientHello).
    fn template(&self, tls13_only: bool) -> Result<Arc<ClientConfig>, rustls::Error> {
        let slot = &self.templates[usize::from(tls13_only)];
        if let Some(t) = slot.get() {
            return Ok(t.clone());
        }
        let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)?
            .with_webpki_verifier(self.verifier.clone())
            .with_no_client_auth();
        config.resumption = Resumption::disabled().tls12_resumption(Tls12Resumption::SessionIdOrTickets);
        Ok(slot.get_or_init(|| Arc::new(config)).clone())
    }
}

/// Distinct `ca_file` bundles kept at most; past that the cache starts over (a config has a
/// handful of bundles; a reload that changes them all should not keep the old ones forever).
const TRUST_CACHE_MAX: usize = 64;

/// The [`Trust`] of a `ca_file` bundle, keyed by the SHA-256 of its certificates; `None` when
/// no certificate of the bundle is usable as a root.
fn bundle_trust(ca: &CaBundle) -> Option<Trust> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Trust>>> = OnceLock::new();
    let mut h = Sha256::new();
    for c in ca.certs() {
        h.update((c.len() as u64).to_be_bytes());
        h.update(c.as_ref());
    }
    let key: [u8; 32] = h.finalize().into();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(t) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Some(t);
    }
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(ca.certs().iter().cloned());
    if added == 0 {
        return None;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .ok()?;
    let trust = Trust::new(verifier, ca.certs().iter().map(Anchor::new).collect());
    if let Ok(mut c) = cache.lock() {
        if c.len() >= TRUST_CACHE_MAX {
            c.clear();
        }
        c.insert(key, trust.clone());
    }
    Some(trust)
}

/// The [`Trust`] of the default roots (webpki-roots plus the system's), built on first use:
/// a process whose probes all name a `ca_file` (or use no TLS) never loads them.
fn default_trust() -> Result<Trust, String> {
    static TRUST: OnceLock<Result<Trust, String>> = OnceLock::new();
    TRUST
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            let _ = store.add_parsable_certificates(native.certs);
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Trust::new(verifier, Vec::new()))
        })
        .clone()
}

#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    record: Arc<Mutex<ChainRecord>>,
    pins: Vec<[u8; 32]>,
    anchors: Arc<Vec<Anchor>>,
}

impl RecordingVerifier {
    /// The leaf is byte-for-byte a configured anchor: trusted as such, if it is valid now and
    /// for `server_name` (what OpenSSL and Go do with a self-signed certificate in the trust
    /// store). The handshake signature is still checked against its key by rustls.
    fn verify_self_anchored(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Option<Result<ServerCertVerified, rustls::Error>> {
        if !self.anchors.iter().any(|a| a.der.as_ref() == end_entity.as_ref()) {
            return None;
        }
        let parsed = match rustls::server::ParsedCertificate::try_from(end_entity) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = rustls::client::verify_server_name(&parsed, server_name) {
            return Some(Err(e));
        }
        let Ok((_, x)) = x509_parser::parse_x509_certificate(end_entity) else {
            return Some(Err(rustls::Error::InvalidCertificate(CertificateError::BadEncoding)));
        };
        let secs = now.as_secs() as i64;
        let (nb, na) = (x.validity().not_before.timestamp(), x.validity().not_after.timestamp());
        let to_unix = |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64));
        if secs < nb {
            return Some(Err(CertificateError::NotValidYetContext {
                time: now,
                not_before: to_unix(nb),
            }
            .into()));
        }
        if secs > na {
            return Some(Err(CertificateError::ExpiredContext {
                time: now,
                not_after: to_unix(na),
            }
            .into()));
        }
        Some(Ok(ServerCertVerified::assertion()))
    }
}

#[derive(Debug)]
struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("certificate pin mismatch")
    }
}
impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut rec = ChainRecord {
            chain_len: 1 + intermediates.len(),
            ..Default::default()
        };
        // Each certificate is parsed once: the leaf for its names and expiry, the others for
        // their expiry.
        for (i, c) in std::iter::once(end_entity).chain(intermediates.iter()).enumerate() {
            if let Ok((_, x)) = x509_parser::parse_x509_certificate(c) {
                if i == 0 {
                    rec.subject = x.subject().to_string();
                    rec.issuer = x.issuer().to_string();
                }
                let t = x.validity().not_after.timestamp();
                rec.earliest_expiry_unix = Some(rec.earliest_expiry_unix.map_or(t, |e| e.min(t)));
            }
        }
        rec.issuer_configured = self
            .anchors
            .iter()
            .any(|a| a.der.as_ref() == end_entity.as_ref() || (!rec.issuer.is_empty() && a.subject == rec.issuer));
        let mut verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if verdict.is_err() {
            if let Some(own) = self.verify_self_anchored(end_entity, server_name, now) {
                verdict = own;
            }
        }
        if verdict.is_ok() && !self.pins.is_empty() {
            let matched = std::iter::once(end_entity).chain(intermediates.iter()).any(|c| {
                let whole: [u8; 32] = Sha256::digest(c.as_ref()).into();
                let spki = spki_sha256(c);
                self.pins.iter().any(|p| *p == whole || Some(*p) == spki)
            });
            rec.pin_matched = Some(matched);
            if let Ok(mut r) = self.record.lock() {
                *r = rec;
            }
            if !matched {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(PinMismatch),
                ))));
            }
            return verdict;
        }
        if let Ok(mut r) = self.record.lock() {
            *r = rec;
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
