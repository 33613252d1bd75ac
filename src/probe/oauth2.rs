//! `auth: {oauth2: ...}`: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4) an http or
//! websocket probe runs before its own request, as the softphone does per tenant.
//!
//! The token request is one phase, `auth`, whatever step of it failed: its own resolve,
//! connect (or CONNECT through the probe's proxy), TLS and POST run on a scratch [`Run`] with
//! the probe's deadline, and a failure there becomes `auth/<reason>` (`auth/status_401` for a
//! wrong secret, `auth/status_400` with the OAuth `error` code in the message,
//! `auth/timeout`, `auth/bad_response`, `auth/refused`...), the inner phase named in the
//! message. So a token server's trouble never reads as the target's.
//!
//! Why not the `oauth2` crate: its client-credentials exchange is one form POST and a JSON
//! parse; plugging our dial path into it needs an adapter for its `AsyncHttpClient` whose
//! errors come back as one opaque variant, losing the `timeout`/`refused`/`untrusted_issuer`
//! words our phases need, and it would add a dependency tree for ~100 lines. The request
//! follows RFC 6749 exactly: `client_secret_basic` (the method every server must support),
//! `grant_type=client_credentials`, space-joined `scope`, optional `audience` and extra params.
//!
//! The token lives in the probe's own [`TokenCache`] (built per probe at load, so probes never
//! share one), reused until shortly before `expires_in` ends ([`use_until`]), dropped when the
//! target answers 401. It is a [`Secret`]: never in logs, messages, details or labels.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::config::{redact_url, CachedToken, HostPort, OAuth2Spec, Secret, TlsOptions, MAX_DURATION};
use crate::net::{self, TlsClient};
use crate::outcome::details::AuthDetails;
use crate::outcome::{Failure, Fault, Phase, Reason, Run};

use super::ProbeContext;
use crate::net::http::{hyper_fault, send};

/// Most bytes of a token response read; a token answer is a few hundred bytes.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// The longest a token is used before its `expires_in` ends (a clock skew and in-flight
/// margin): a tenth of its life, at most a minute.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// The token this run sends as `Authorization: Bearer`: the cached one while still usable,
/// else a fresh one from the token endpoint (phase `auth`).
pub async fn bearer(run: &mut Run, spec: &OAuth2Spec, tls: &TlsOptions, ctx: &ProbeContext) -> Result<Secret, Failure> {
    let token_url = redact_url(&spec.token_url);
    if let Some(token) = spec.cache.get(Instant::now()) {
        run.record(Phase::Auth, Duration::ZERO);
        run.detail.auth = Some(AuthDetails {
            token_url,
            cached: true,
            ..Default::default()
        });
        return Ok(token);
    }
    let asked_at = Instant::now();
    let mut sub = Run::new(run.deadline());
    let mut status = None;
    let result = request(&mut sub, spec, tls, ctx, &mut status).await;
    run.record(Phase::Auth, asked_at.elapsed());
    let mut details = AuthDetails {
        token_url: token_url.clone(),
        cached: false,
        status,
        expires_in_s: None,
    };
    let answer = match result {
        Ok(a) => a,
        Err(f) => {
            run.detail.auth = Some(details);
            let inner = if f.phase == Phase::Request {
                String::new()
            } else {
                format!(" ({} phase)", f.phase)
            };
            return Err(Failure::new(
                Phase::Auth,
                f.reason,
                format!("token request to {token_url}{inner}: {}", f.message),
            ));
        }
    };
    details.expires_in_s = answer.expires_in;
    run.detail.auth = Some(details);
    let token = Secret::obtained(answer.access_token, "oauth2 token");
    spec.cache.put(answer.expires_in.map(|secs| CachedToken {
        token: token.clone(),
        use_until: asked_at + use_until(secs),
    }));
    Ok(token)
}

/// Forgets the probe's token (the target answered 401: revoked or not accepted).
pub fn forget(spec: &OAuth2Spec) {
    spec.cache.put(None);
}

/// How long after the request a token that `expires_in` seconds may be used.
pub fn use_until(expires_in: u64) -> Duration {
    let life = Duration::from_secs(expires_in).min(MAX_DURATION);
    life - (life / 10).min(MAX_MARGIN)
}

/// The fields of a token response we use (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// An error response (RFC 6749 §5.2).
#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

struct Answer {
    access_token: String,
    expires_in: Option<u64>,
}

async fn request(
    sub: &mut Run,
    spec: &OAuth2Spec,
    tls: &TlsOptions,
    ctx: &ProbeContext,
    status: &mut Option<u16>,
) -> Result<Answer, Failure> {
    let target = HostPort::of_url(&spec.token_url).map_err(|m| Fault::new(Reason::Config, m).at(Phase::Resolve))?;
    let req = build(spec, &target).map_err(|f| f.at(Phase::Request))?;
    // The probe's CA and minimum version apply; its server name, pins and ALPN are the target's.
    let opts = TlsOptions {
        ca_file: tls.ca_file.clone(),
        ca: tls.ca.clone(),
        min_version: tls.min_version,
        ..Default::default()
    };
    let client = match spec.token_url.scheme() {
        "https" => Some(TlsClient::new(&opts, &target.host, &["http/1.1"]).map_err(|f| f.at(Phase::Tls))?),
        _ => None,
    };
    let dialed = net::dial(sub, &target, ctx.proxy_for(&target)).await?;
    match client {
        Some(c) => {
            let stream = net::handshake(sub, &c, dialed.stream).await?;
            post(sub, req, stream, status).await
        }
        None => post(sub, req, dialed.stream, status).await,
    }
}

/// The token request: `client_secret_basic`, form body (RFC 6749 §2.3.1, §4.4.2).
fn build(spec: &OAuth2Spec, target: &HostPort) -> Result<Request<Full<Bytes>>, Fault> {
    let bad = |e: String| Fault::new(Reason::Config, e);
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if !spec.scopes.is_empty() {
        form.append_pair("scope", &spec.scopes.join(" "));
    }
    if let Some(a) = &spec.audience {
        form.append_pair("audience", a);
    }
    for (k, v) in &spec.extra_params {
        form.append_pair(k, v);
    }
    let body = form.finish();
    // §2.3.1: id and secret are form-urlencoded before being joined for Basic.
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(&spec.client_id), enc(spec.client_secret.expose())));
    let mut auth = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
        bad(format!(
            "client_secret from {} is not usable in a header",
            spec.client_secret.source()
        ))
    })?;
    auth.set_sensitive(true);
    let path = match spec.token_url.query() {
        Some(q) => format!("{}?{q}", spec.token_url.path()),
        None => spec.token_url.path().to_string(),
    };
    let host = match spec.token_url.port() {
        Some(_) => target.to_string(),
        None if target.host.contains(':') => format!("[{}]", target.host),
        None => target.host.clone(),
    };
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(
            HOST,
            HeaderValue::from_str(&host).map_err(|_| bad(format!("invalid host {host:?}")))?,
        )
        .header(USER_AGENT, concat!("egress-probe/", env!("CARGO_PKG_VERSION")))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json")
        .header(AUTHORIZATION, auth)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| bad(format!("token request for {}: {e}", redact_url(&spec.token_url))))
}

async fn post<S>(sub: &mut Run, req: Request<Full<Bytes>>, stream: S, status: &mut Option<u16>) -> Result<Answer, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (response, _driver) = send(sub, req, stream).await?;
    let code = response.status().as_u16();
    *status = Some(code);
    sub.phase(Phase::Body, async {
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| hyper_fault("reading the token response", &e))?;
            if let Some(d) = frame.data_ref() {
                if bytes.len() + d.len() > MAX_TOKEN_RESPONSE {
                    return Err(Fault::new(
                        Reason::BadResponse,
                        format!("token response longer than {MAX_TOKEN_RESPONSE} bytes"),
                    ));
                }
                bytes.extend_from_slice(d);
            }
        }
        interpret(code, &bytes)
    })
    .await
}

/// A token response → the token, or the fault it stands for.
fn interpret(code: u16, body: &[u8]) -> Result<Answer, Fault> {
    if code != 200 {
        let oauth = serde_json::from_slice::<ErrorResponse>(body).ok().map(|e| {
            let desc = e
                .error_description
                .map(|d| format!(" ({})", printable(&d, 120)))
                .unwrap_or_default();
            format!(": OAuth error {}{desc}", printable(&e.error, 40))
        });
        return Err(Fault::new(
            Reason::Status(code),
            format!("token endpoint answered {code}{}", oauth.unwrap_or_default()),
        ));
    }
    // serde_json's own message may quote values (a token in the wrong place): not shown.
    let t: TokenResponse = serde_json::from_slice(body).map_err(|_| {
        Fault::new(
            Reason::BadResponse,
            format!(
                "token response ({} bytes) is not an OAuth2 token answer (JSON with access_token and token_type)",
                body.len()
            ),
        )
    })?;
    if !t.token_type.eq_ignore_ascii_case("bearer") {
        return Err(Fault::new(
            Reason::BadResponse,
            format!("token_type {:?} is not Bearer", printable(&t.token_type, 20)),
        ));
    }
    if t.access_token.is_empty() || HeaderValue::from_str(&format!("Bearer {}", t.access_token)).is_err() {
        return Err(Fault::new(Reason::BadResponse, "access_token is empty or not usable in a header"));
    }
    Ok(Answer {
        access_token: t.access_token,
        expires_in: t.expires_in.filter(|s| *s > 0),
    })
}

/// Server text for a message: printable ASCII only, at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_dropped_a_tenth_of_their_life_before_expiry_at_most_a_minute() {
        assert_eq!(use_until(2), Duration::from_millis(1800));
        assert_eq!(use_until(3600), Duration::from_secs(3540));
        assert_eq!(use_until(u64::MAX), MAX_DURATION - MAX_MARGIN);
    }

    #[test]
    fn error_answers_carry_the_oauth_error_code_and_bad_answers_are_bad_response() {
        let f = interpret(400, br#"{"error":"invalid_scope","error_description":"no such scope"}"#)
            .err()
            .unwrap();
        assert_eq!(
            (f.reason.label(), f.message.as_str()),
            (
                "status_400".into(),
                "token endpoint answered 400: OAuth error invalid_scope (no such scope)"
            )
        );
        let f = interpret(200, br#"{"access_token":"x","token_type":"mac"}"#).err().unwrap();
        assert_eq!(f.reason, Reason::BadResponse);
        let f = interpret(200, b"<html>login</html>").err().unwrap();
        assert_eq!(f.reason, Reason::BadResponse);
        let a = interpret(200, br#"{"access_token":"x","token_type":"Bearer","expires_in":0}"#)
            .ok()
            .unwrap();
        assert_eq!(a.expires_in, None);
    }
}
