//! Plain HTTP pieces the end-to-end tests share: a GET to scrape the daemon's `/metrics` and
//! `/status`, and an in-test hyper server on loopback (token endpoints, REST resources) whose
//! routes the test writes as one closure. Kept apart from `signalling` (fixed routes, TLS,
//! WebSocket) because here the test decides every answer.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A server's accept loop, aborted on drop.
pub struct Task(pub JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A plain HTTP/1.0 GET, 1 s to connect and 5 s to read; (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    get_within(addr, path, Duration::from_secs(5))
}

/// As [`get`], with `read` to read the answer (a slow scrape under load, a quick failure).
pub fn get_within(addr: SocketAddr, path: &str, read: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(read)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A JSON answer with status `code`.
pub fn json(code: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// The request's `Authorization` header, "" when absent or not text.
pub fn authorization<B>(req: &Request<B>) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// An HTTP/1 server on 127.0.0.1 (port 0) answering every request with `handler`; each
/// connection is bounded to 30 s. The port and the accept loop (aborted on drop).
pub async fn serve<F, Fut>(handler: F) -> (u16, Task)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
                )
                .await;
            });
        }
    });
    (port, Task(task))
}
