//! `kind: http`: does an HTTP(S) request to the signalling/REST endpoint get the expected answer?
//!
//! Phases: `resolve`, `connect` (or `proxy` through an HTTP CONNECT proxy), `tls` (https),
//! `request` (request sent until the response head arrived: time to first byte) and `body`
//! (reading the body, bounded to [`MAX_BODY`] bytes). With `follow_redirects: N` each hop adds
//! its own phases (summed by `Outcome::phase_time`).
//!
//! We dial with `src/net` and hand the stream to hyper's HTTP/1.1 client connection, so the
//! phases are exact (a pooled client would hide connect and TLS). HTTPS offers ALPN `http/1.1`.
//! A status outside `expect_status` (default 200-399) is `request/status_<code>`, so a proxy's
//! 408 or a rate limiter's 429 is its own label; a `Retry-After` on 429/503 is kept in
//! `detail.retry_after` for the scheduler's backoff. `expect_body` failing is
//! `body/expect_failed`.
//!
//! With `auth: {oauth2: ...}` a bearer token is obtained first (phase `auth`, see
//! [`super::oauth2`]) and sent as `Authorization: Bearer` on every hop; a 401 from the target
//! drops the probe's cached token so the next run asks for a fresh one.
//!
//! Plain `http://` through a proxy also uses CONNECT (one dial path for every probe); a proxy
//! that only forwards absolute-form GETs on port 80 reports `proxy/status_403` then.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST, LOCATION, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{redact_url, HostPort, HttpMethod, HttpSpec, Secret};
use crate::net::http::{hyper_fault, retry_after};
use crate::net::{self, TlsClient};

use super::ProbeContext;
use crate::outcome::details::HttpDetails;
use crate::outcome::{Failure, Fault, Outcome, Phase, Reason, Run};

/// Most body bytes read (and matched against `expect_body`); the rest is not downloaded.
pub const MAX_BODY: usize = 1 << 20;

/// Runs one http probe.
pub async fn probe(spec: &HttpSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = follow(&mut run, spec, ctx).await;
    run.finish(result)
}

/// One request per hop, following up to `follow_redirects` redirects.
async fn follow(run: &mut Run, spec: &HttpSpec, ctx: &ProbeContext) -> Result<(), Failure> {
    let bearer = match &spec.auth {
        Some(a) => Some(super::oauth2::bearer(run, a, &spec.tls, ctx).await?),
        None => None,
    };
    follow_with(run, spec, ctx, bearer.as_ref()).await.map(|_| ())
}

/// The request (and redirects) with an already obtained bearer; returns the final body (at
/// most [`MAX_BODY`] bytes; empty for HEAD). Session steps call this.
pub(crate) async fn follow_with(run: &mut Run, spec: &HttpSpec, ctx: &ProbeContext, bearer: Option<&Secret>) -> Result<Vec<u8>, Failure> {
    let mut hop = Hop {
        url: spec.url.clone(),
        method: match spec.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Post => Method::POST,
        },
        body: spec.body.clone(),
    };
    let mut redirects = 0u32;
    // Credentials (the bearer, secret and credential headers) go to the configured origin
    // only: a redirect to another host, or from https to http, gets the request without them
    // (as curl and browsers do).
    let mut public = spec.clone();
    crate::config::web::drop_secret_headers(&mut public.headers);
    loop {
        let follow_more = redirects < spec.follow_redirects;
        let own_origin = hop.url.origin() == spec.url.origin();
        let (hop_spec, hop_bearer) = if own_origin { (spec, bearer) } else { (&public, None) };
        let answer = fetch(run, hop_spec, ctx, &hop, follow_more, hop_bearer).await;
        if let (Some(a), Some(401)) = (&spec.auth, run.detail.http.as_ref().map(|d| d.status)) {
            super::oauth2::forget(a);
        }
        let details = run.detail.http.get_or_insert_with(HttpDetails::default);
        details.redirects = redirects;
        details.final_url = redact_url(&hop.url);
        match answer? {
            Answer::Done(body) => return Ok(body),
            Answer::Redirect(next) => {
                redirects += 1;
                hop = next;
            }
        }
    }
}

/// One request's target.
struct Hop {
    url: url::Url,
    method: Method,
    body: Option<String>,
}

enum Answer {
    /// The final answer, with its body.
    Done(Vec<u8>),
    Redirect(Hop),
}

async fn fetch(
    run: &mut Run,
    spec: &HttpSpec,
    ctx: &ProbeContext,
    hop: &Hop,
    follow_more: bool,
    bearer: Option<&Secret>,
) -> Result<Answer, Failure> {
    let target = HostPort::of_url(&hop.url).map_err(|m| Fault::new(Reason::Config, m).at(Phase::Resolve))?;
    let request = build_request(spec, hop, &target, bearer).map_err(|f| f.at(Phase::Request))?;
    let tls = match hop.url.scheme() {
        "https" => Some(TlsClient::new(&spec.tls, &target.host, &["http/1.1"]).map_err(|f| f.at(Phase::Tls))?),
        _ => None,
    };
    let dialed = net::dial(run, &target, ctx.proxy_for(&target)).await?;
    match tls {
        Some(client) => {
            let stream = net::handshake(run, &client, dialed.stream).await?;
            exchange(run, spec, hop, follow_more, request, stream).await
        }
        None => exchange(run, spec, hop, follow_more, request, dialed.stream).await,
    }
}

fn build_request(spec: &HttpSpec, hop: &Hop, target: &HostPort, bearer: Option<&Secret>) -> Result<Request<Full<Bytes>>, Fault> {
    let path = match hop.url.query() {
        Some(q) => format!("{}?{q}", hop.url.path()),
        None => hop.url.path().to_string(),
    };
    let host = match hop.url.port() {
        Some(_) => target.to_string(),
        None if target.host.contains(':') => format!("[{}]", target.host),
        None => target.host.clone(),
    };
    let mut headers = HeaderMap::new();
    let bad = |e: String| Fault::new(Reason::Config, e);
    headers.insert(
        HOST,
        HeaderValue::from_str(&host).map_err(|_| bad(format!("invalid host {host:?}")))?,
    );
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("egress-probe/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in &spec.headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(format!("invalid header name {name:?}")))?;
        let mut v = HeaderValue::from_str(value.expose())
            .map_err(|_| bad(format!("header {name}: value from {} is not a valid header value", value.source())))?;
        v.set_sensitive(true);
        headers.insert(n, v);
    }
    if let Some(token) = bearer {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| bad("the OAuth2 access token is not a valid header value".into()))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    let body = Bytes::from(hop.body.clone().unwrap_or_default());
    let mut req = Request::builder()
        .method(hop.method.clone())
        .uri(path)
        .body(Full::new(body))
        .map_err(|e| bad(format!("request for {}: {e}", redact_url(&hop.url))))?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Request (phase `request`), status check, then the body (phase `body`) unless redirected.
async fn exchange<S>(
    run: &mut Run,
    spec: &HttpSpec,
    hop: &Hop,
    follow_more: bool,
    request: Request<Full<Bytes>>,
    stream: S,
) -> Result<Answer, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (response, _driver) = net::http::send(run, request, stream).await?;
    let status = response.status();
    let code = status.as_u16();
    run.detail.http.get_or_insert_with(HttpDetails::default).status = code;
    if code == 429 || code == 503 {
        run.detail.retry_after = retry_after(response.headers());
    }

    if follow_more && is_redirect(status) {
        if let Some(next) = redirect_target(hop, status, response.headers()) {
            return Ok(Answer::Redirect(next));
        }
    }
    if !expected(spec, code) {
        let text = status.canonical_reason().unwrap_or("");
        let mut msg = format!("{} answered {code} {text}", redact_url(&hop.url));
        if let Some(ra) = run.detail.retry_after {
            msg.push_str(&format!(" (Retry-After {} s)", ra.as_secs()));
        }
        return Err(Failure::new(Phase::Request, Reason::Status(code), msg));
    }
    if hop.method == Method::HEAD {
        return Ok(Answer::Done(Vec::new()));
    }

    let mut body = Vec::new();
    let mut truncated = false;
    let read = run
        .phase(Phase::Body, read_body(response.into_body(), &mut body, &mut truncated))
        .await;
    if let Some(d) = run.detail.http.as_mut() {
        d.body_bytes = body.len() as u64;
    }
    read?;
    if truncated {
        run.detail
            .notes
            .push(format!("body longer than {MAX_BODY} bytes: only the first {MAX_BODY} were read"));
    }
    if let Some(re) = &spec.expect_body {
        let text = String::from_utf8_lossy(&body);
        if !re.is_match(&text) {
            return Err(Failure::new(
                Phase::Body,
                Reason::ExpectFailed,
                format!("body ({} bytes) does not match /{}/", body.len(), re.as_str()),
            ));
        }
    }
    Ok(Answer::Done(body))
}

/// Reads at most [`MAX_BODY`] bytes into `out`.
async fn read_body(mut body: Incoming, out: &mut Vec<u8>, truncated: &mut bool) -> Result<(), Fault> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| hyper_fault("reading the body", &e))?;
        if let Some(data) = frame.data_ref() {
            let room = MAX_BODY - out.len();
            if data.len() > room {
                out.extend_from_slice(&data[..room]);
                *truncated = true;
                return Ok(());
            }
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

fn expected(spec: &HttpSpec, code: u16) -> bool {
    if spec.expect_status.is_empty() {
        return (200..=399).contains(&code);
    }
    spec.expect_status.iter().any(|r| r.contains(code))
}

fn is_redirect(s: StatusCode) -> bool {
    matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The next hop of a redirect: 303 (and 301/302 after a POST, as browsers do) become a GET
/// without body; 307/308 keep method and body. Non-HTTP locations are not followed.
fn redirect_target(hop: &Hop, status: StatusCode, headers: &HeaderMap) -> Option<Hop> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    let url = hop.url.join(location).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let (method, body) = match status.as_u16() {
        307 | 308 => (hop.method.clone(), hop.body.clone()),
        303 => (Method::GET, None),
        _ if hop.method == Method::POST => (Method::GET, None),
        _ => (hop.method.clone(), hop.body.clone()),
    };
    Some(Hop { url, method, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_switch_post_to_get_except_307_308() {
        let hop = Hop {
            url: url::Url::parse("https://a.example/x").unwrap(),
            method: Method::POST,
            body: Some("b".into()),
        };
        let mut h = HeaderMap::new();
        h.insert(LOCATION, HeaderValue::from_static("/y?z=1"));
        let n = redirect_target(&hop, StatusCode::FOUND, &h).unwrap();
        assert_eq!((n.url.as_str(), n.method, n.body), ("https://a.example/y?z=1", Method::GET, None));
        let n = redirect_target(&hop, StatusCode::PERMANENT_REDIRECT, &h).unwrap();
        assert_eq!(n.method, Method::POST);
        h.insert(LOCATION, HeaderValue::from_static("ftp://x/"));
        assert!(redirect_target(&hop, StatusCode::FOUND, &h).is_none());
    }
}
