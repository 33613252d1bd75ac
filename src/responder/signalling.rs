//! The softphone's signalling set-up, reproducible outside the firewall: an OAuth2 token
//! endpoint for configured clients and a REST endpoint that returns a WebSocket URL, on the
//! HTTPS listener (so `kind: session` and `auth: {oauth2}` probes have something real to walk).
//!
//! `POST /oauth/token`: the client-credentials grant (RFC 6749 §4.4), client authenticated by
//! HTTP Basic or form `client_id`/`client_secret`; a wrong client is `401 invalid_client`, any
//! other grant `400 unsupported_grant_type`; otherwise a random bearer token living
//! `oauth2_token_ttl` seconds. `POST|GET /api/channels`: with clients configured, a valid
//! unexpired bearer is required (`401` otherwise); answers
//! `{"id": ..., "connectUri": "wss://<Host>/channels/<id>"}` pointing back at this listener.
//!
//! Bounded: request bodies at most [`MAX_FORM`] bytes read within [`READ_TIMEOUT`]; at most
//! [`MAX_TOKENS`] live tokens (expired ones are dropped first, then the oldest).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use crate::config::Secret;

/// Largest token request body read.
pub const MAX_FORM: usize = 16 * 1024;
/// A token request body must arrive within this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most live tokens kept.
pub const MAX_TOKENS: usize = 10_000;

/// The configured clients and the tokens issued to them.
pub struct Issuer {
    clients: BTreeMap<String, Secret>,
    ttl: Duration,
    tokens: Mutex<HashMap<String, Instant>>,
}

impl Issuer {
    pub fn new(clients: BTreeMap<String, Secret>, ttl: Duration) -> Issuer {
        Issuer {
            clients,
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `Authorization: Bearer <t>` carries a live token (always true with no clients).
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        if self.clients.is_empty() {
            return true;
        }
        let Some(token) = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).is_some_and(|until| Instant::now() < *until)
    }

    fn client_ok(&self, id: &str, secret: &str) -> bool {
        self.clients.get(id).is_some_and(|s| {
            // Compared as SHA-256 digests, byte by byte without an early exit: neither the
            // secret's content nor its length shows in the time taken.
            use sha2::{Digest, Sha256};
            let (a, b) = (Sha256::digest(s.expose().as_bytes()), Sha256::digest(secret.as_bytes()));
            a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
    }

    fn issue(&self) -> String {
        let token = format!("{:032x}", rand::random::<u128>());
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, until| *until > now);
        if tokens.len() >= MAX_TOKENS {
            if let Some(oldest) = tokens.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone()) {
                tokens.remove(&oldest);
            }
        }
        tokens.insert(token.clone(), now + self.ttl);
        token
    }
}

/// Whether this module answers `path`.
pub fn handles(path: &str) -> bool {
    path == "/oauth/token" || path == "/api/channels"
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let mut r = json(status, format!(r#"{{"error":"{code}"}}"#));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"egress-probe responder\""));
    }
    r
}

/// Answers `/oauth/token` and `/api/channels`.
pub async fn route(req: Request<Incoming>, issuer: &Issuer) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/oauth/token" => token(req, issuer).await,
        _ => channels(req, issuer),
    }
}

async fn token(req: Request<Incoming>, issuer: &Issuer) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return oauth_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    }
    let basic = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let dec = |x: &str| {
                url::form_urlencoded::parse(format!("a={x}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((dec(id)?, dec(secret)?))
        });
    let body = match tokio::time::timeout(READ_TIMEOUT, Limited::new(req.into_body(), MAX_FORM).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let client = basic.or_else(|| Some((form.get("client_id")?.clone(), form.get("client_secret")?.clone())));
    match client {
        Some((id, secret)) if issuer.client_ok(&id, &secret) => {}
        _ => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client"),
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let token = issuer.issue();
    json(
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{}}}"#,
            issuer.ttl.as_secs()
        ),
    )
}

fn channels(req: Request<Incoming>, issuer: &Issuer) -> Response<Full<Bytes>> {
    if !issuer.authorized(&req) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    // The URL points back at the listener the client reached, as the client named it.
    let host = req.headers().get(HOST).and_then(|v| v.to_str().ok()).filter(|h| {
        h.len() <= 255
            && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            && url::Url::parse(&format!("wss://{h}/")).is_ok_and(|u| u.path() == "/" && u.username().is_empty())
    });
    let Some(host) = host else {
        return json(StatusCode::BAD_REQUEST, r#"{"error":"missing or invalid Host"}"#.into());
    };
    let id = format!("{:016x}", rand::random::<u64>());
    json(
        StatusCode::OK,
        serde_json::json!({ "id": id, "connectUri": format!("wss://{host}/channels/{id}") }).to_string(),
    )
}
