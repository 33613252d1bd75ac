//! TLS client side of the dial path (rustls, ring backend).
//!
//! The verifier wraps rustls' webpki verifier so that, pass or fail, we learn what the server
//! presented (subject, issuer, earliest expiry): an `untrusted_issuer` with issuer
//! "Corp Proxy CA" tells a network team more than any error string. Pins (SHA-256 of a
//! certificate's SPKI or DER, anywhere in the chain) are checked after the chain verifies,
//! so a trusted-but-intercepting proxy shows up as `tls/pin_mismatch`.

use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
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
        let roots = match ca {
            Some(ca) => {
                let mut store = RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(ca.certs().iter().cloned());
                if added == 0 {
                    let shown = opts.ca_file.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default();
                    return Err(Fault::new(Reason::Config, format!("ca_file{shown}: no usable certificate")));
                }
                Arc::new(store)
            }
            None => default_roots(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| Fault::new(Reason::Config, format!("TLS verifier: {e}")))?;
        let pins = opts
            .pin_sha256
            .iter()
            .map(|p| crate::config::Pin::parse(p).map(|p| p.0).map_err(|m| Fault::new(Reason::Config, m)))
            .collect::<Result<Vec<_>, _>>()?;
        let record = Arc::new(Mutex::new(ChainRecord::default()));
        let verifier = Arc::new(RecordingVerifier {
            inner: webpki,
            record: record.clone(),
            pins,
        });
        let versions: &[&'static rustls::SupportedProtocolVersion] = match opts.min_version {
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| Fault::new(Reason::Config, format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
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
    let result = run
        .phase(Phase::Tls, async move {
            connector.connect(name, stream).await.map_err(|e| {
                let reason = classify_tls_io(&e);
                Fault::new(reason, format!("TLS handshake: {e}"))
            })
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

fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            let _ = store.add_parsable_certificates(native.certs);
            Arc::new(store)
        })
        .clone()
}

#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    record: Arc<Mutex<ChainRecord>>,
    pins: Vec<[u8; 32]>,
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
        if let Ok((_, leaf)) = x509_parser::parse_x509_certificate(end_entity) {
            rec.subject = leaf.subject().to_string();
            rec.issuer = leaf.issuer().to_string();
        }
        for c in std::iter::once(end_entity).chain(intermediates.iter()) {
            if let Ok((_, x)) = x509_parser::parse_x509_certificate(c) {
                let t = x.validity().not_after.timestamp();
                rec.earliest_expiry_unix = Some(rec.earliest_expiry_unix.map_or(t, |e| e.min(t)));
            }
        }
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
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
