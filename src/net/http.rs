//! The HTTP/1.1 pieces shared by everything that speaks HTTP over a dialled stream (the http
//! probe and the remote_write push): one request on hyper's client connection, timed as phase
//! `request`, its connection task aborted on every path; `Retry-After`; hyper errors → reasons.
//!
//! hyper gets the stream [`super::dial`] (and [`super::handshake`]) produced, never its own
//! pooled connector, so proxy, TLS pinning and the phase/reason words are those of the probes.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, RETRY_AFTER};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use crate::outcome::{Failure, Fault, Phase, Reason, Run};

use super::classify::fault_from_io;

/// Aborts hyper's connection task when dropped, so the socket is closed on every path.
pub struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `request` over `stream` as phase `request` (until the response head arrived). Keep
/// the returned [`Driver`] while reading the body; dropping it closes the connection.
pub async fn send<S>(run: &mut Run, request: Request<Full<Bytes>>, stream: S) -> Result<(Response<Incoming>, Driver), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut driver = None;
    let response = run
        .phase(Phase::Request, async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| hyper_fault("HTTP handshake", &e))?;
            driver = Some(Driver(tokio::spawn(async move {
                let _ = conn.await;
            })));
            sender
                .send_request(request)
                .await
                .map_err(|e| hyper_fault("waiting for the response", &e))
        })
        .await;
    match (response, driver) {
        (Ok(r), Some(d)) => Ok((r, d)),
        (Err(f), _) => Err(f),
        (Ok(_), None) => Err(Failure::new(Phase::Request, Reason::Io, "HTTP connection task missing")),
    }
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP-date>` (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// hyper error → reason: the connection closing early is `closed`, unparsable answers
/// `bad_response`, socket errors as classified by `net::classify`.
pub fn hyper_fault(doing: &str, e: &hyper::Error) -> Fault {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return fault_from_io(doing, io);
        }
        source = s.source();
    }
    let reason = if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        Reason::Closed
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Reason::BadResponse
    } else {
        Reason::Io
    };
    Fault::new(reason, format!("{doing}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        h.insert(RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(3590) && d <= Duration::from_secs(3600), "{d:?}");
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
