//! Real servers for the signalling tests: an in-process HTTP(S) server (hyper + tokio-rustls),
//! an in-process WebSocket server (tokio-tungstenite) with well- and misbehaving modes, and a
//! real tinyproxy from Debian. Each listens on its own loopback port and stops on drop.
// tungstenite fixes the callback signature (`Result<Response, ErrorResponse>`).
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response as WsResponse};
use tokio_tungstenite::tungstenite::Message;

use super::certs::TestCa;
use super::proc::{wait_until, ChildGuard};

/// A CA, a leaf for `localhost`/`127.0.0.1`, and the CA written to a temp dir for `ca_file`.
pub struct Pki {
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub tls: Arc<rustls::ServerConfig>,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(alpn: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("egress-probe signalling test CA");
        let leaf = ca.leaf(&["localhost", "127.0.0.1"], None);
        let tls = leaf.rustls_server_config(Some(&ca), alpn);
        let ca_file = ca.write_ca(dir.path());
        Pki { ca, ca_file, tls, dir }
    }
}

/// Counters a server keeps about what it saw.
#[derive(Default)]
pub struct Seen {
    /// Connections currently open (accepted, task not yet ended).
    pub open: AtomicUsize,
    /// Connections accepted in total.
    pub accepted: AtomicUsize,
    /// Successful WebSocket upgrades.
    pub upgrades: AtomicUsize,
    /// Close frames received from clients.
    pub close_frames: AtomicUsize,
    /// Request headers of each upgrade (name: value, lowercase names).
    pub headers: Mutex<Vec<Vec<(String, String)>>>,
}

impl Seen {
    pub fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }
}

/// A listener task, aborted on drop (its connection tasks end with the test's runtime).
pub struct Server {
    pub port: u16,
    pub seen: Arc<Seen>,
    pub pki: Option<Pki>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// The CA file clients must trust (TLS servers only).
    pub fn ca_file(&self) -> PathBuf {
        self.pki.as_ref().expect("TLS server").ca_file.clone()
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn accept_loop<F, Fut>(tls: Option<Arc<rustls::ServerConfig>>, handle: F) -> (u16, Arc<Seen>, JoinHandle<()>)
where
    F: Fn(Io, Arc<Seen>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    let handle = Arc::new(handle);
    let task = tokio::spawn(async move {
        let acceptor = tls.map(TlsAcceptor::from);
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let seen = seen2.clone();
            let acceptor = acceptor.clone();
            let handle = handle.clone();
            seen.open.fetch_add(1, Ordering::SeqCst);
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let io = match acceptor {
                    Some(a) => match tokio::time::timeout(Duration::from_secs(10), a.accept(tcp)).await {
                        Ok(Ok(s)) => Some(Io::Tls(Box::new(s))),
                        _ => None,
                    },
                    None => Some(Io::Plain(tcp)),
                };
                if let Some(io) = io {
                    handle(io, seen.clone()).await;
                }
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen, task)
}

// ---------------------------------------------------------------------------------------------
// HTTP(S)

/// Starts the HTTP server (HTTPS with a fresh PKI when `tls`). Routes:
/// `/ok` 200 "hello egress-probe"; `/408`; `/429` with `Retry-After: 7`; `/503` with an
/// HTTP-date Retry-After one hour ahead; `/slow` answers after 5 s; `/redirect` 302 → `/ok`;
/// `/loop` 302 → `/loop`; `/big` 2 MiB; `/echo` returns the request body;
/// `/auth` 200 iff `Authorization: Bearer t0k`, else 401.
pub async fn http_server(tls: bool) -> Server {
    let pki = tls.then(|| Pki::new(&["http/1.1"]));
    let (port, seen, task) = accept_loop(pki.as_ref().map(|p| p.tls.clone()), |io, _seen| async move {
        let svc = hyper::service::service_fn(route);
        let builder = hyper::server::conn::http1::Builder::new();
        let _ = match io {
            Io::Plain(s) => builder.serve_connection(TokioIo::new(s), svc).await,
            Io::Tls(s) => builder.serve_connection(TokioIo::new(s), svc).await,
        };
    })
    .await;
    Server { port, seen, pki, task }
}

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let r = |code: u16, body: &str| {
        Response::builder()
            .status(code)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("response")
    };
    let path = req.uri().path().to_string();
    Ok(match path.as_str() {
        "/ok" => r(200, "hello egress-probe"),
        "/408" => r(408, "request timeout"),
        "/429" => {
            let mut resp = r(429, "slow down");
            resp.headers_mut().insert("retry-after", "7".parse().expect("hv"));
            resp
        }
        "/503" => {
            let mut resp = r(503, "maintenance");
            let later = std::time::SystemTime::now() + Duration::from_secs(3600);
            resp.headers_mut()
                .insert("retry-after", httpdate::fmt_http_date(later).parse().expect("hv"));
            resp
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            r(200, "late")
        }
        "/redirect" => {
            let mut resp = r(302, "");
            resp.headers_mut().insert("location", "/ok".parse().expect("hv"));
            resp
        }
        "/loop" => {
            let mut resp = r(302, "");
            resp.headers_mut().insert("location", "/loop".parse().expect("hv"));
            resp
        }
        "/big" => Response::new(Full::new(Bytes::from(vec![b'x'; 2 << 20]))),
        "/echo" => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::new(Full::new(body))
        }
        "/auth" => {
            let ok = req.headers().get("authorization").map(|v| v == "Bearer t0k").unwrap_or(false);
            if ok {
                r(200, "authorized")
            } else {
                r(401, "who are you")
            }
        }
        _ => r(404, "not found"),
    })
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// How the WebSocket server behaves.
#[derive(Clone, Copy, Debug)]
pub enum WsMode {
    /// Upgrades, answers pings, echoes text as `echo: <text>`, answers close frames.
    Good,
    /// Answers the upgrade request with `200 OK` (an Upgrade-stripping middlebox).
    Plain200,
    /// Answers `101` without `Upgrade: websocket`.
    Stripped101,
    /// Accepts TCP and never answers.
    Silent,
    /// Refuses the upgrade with this status.
    Refuse(u16),
    /// Upgrades but never answers pings or close frames (reads nothing).
    Deaf,
}

/// Starts a WebSocket server (wss with a fresh PKI when `tls`).
pub async fn ws_server(mode: WsMode, tls: bool) -> Server {
    let pki = tls.then(|| Pki::new(&["http/1.1"]));
    let (port, seen, task) = accept_loop(pki.as_ref().map(|p| p.tls.clone()), move |io, seen| async move {
        match io {
            Io::Plain(s) => ws_conn(s, mode, seen).await,
            Io::Tls(s) => ws_conn(s, mode, seen).await,
        }
    })
    .await;
    Server { port, seen, pki, task }
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    head
}

/// Reads until the client closes (EOF or error), at most 30 s.
async fn until_eof<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn ws_conn<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, mode: WsMode, seen: Arc<Seen>) {
    match mode {
        WsMode::Plain200 => {
            read_head(&mut s).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            until_eof(&mut s).await;
        }
        WsMode::Stripped101 => {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n")
                .await;
            until_eof(&mut s).await;
        }
        WsMode::Silent => until_eof(&mut s).await,
        WsMode::Refuse(code) => {
            let cb = move |_req: &WsRequest, _resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
                let mut e = ErrorResponse::new(Some("refused by test".into()));
                *e.status_mut() = code.try_into().expect("status");
                Err(e)
            };
            let _ = tokio_tungstenite::accept_hdr_async(s, cb).await;
        }
        WsMode::Good | WsMode::Deaf => {
            let seen2 = seen.clone();
            let cb = move |req: &WsRequest, mut resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                if let Some(p) = req.headers().get("sec-websocket-protocol") {
                    let first = p.to_str().unwrap_or("").split(',').next().unwrap_or("").trim().to_string();
                    resp.headers_mut().insert("sec-websocket-protocol", first.parse().expect("hv"));
                }
                seen2.headers.lock().expect("lock").push(headers);
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
                return;
            };
            seen.upgrades.fetch_add(1, Ordering::SeqCst);
            if matches!(mode, WsMode::Deaf) {
                // Hold the socket without reading: pings and close frames go unanswered.
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            let _ = ws.send(Message::text(format!("echo: {}", t.as_str()))).await;
                        }
                        Message::Close(_) => {
                            seen.close_frames.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
            })
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tinyproxy

/// A real tinyproxy on a fresh loopback port, killed on drop.
pub struct Tinyproxy {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _guard: ChildGuard,
}

impl Tinyproxy {
    /// `auth`: Basic credentials the proxy requires; `connect_ports`: the only ports CONNECT
    /// may reach (empty = any).
    pub fn start(auth: Option<(&str, &str)>, connect_ports: &[u16]) -> Tinyproxy {
        Tinyproxy::start_with_timeout(auth, connect_ports, 10)
    }

    /// As [`Tinyproxy::start`], with tinyproxy's `Timeout` (its idle timeout: a tunnel with no
    /// traffic either way for this many seconds is closed).
    pub fn start_with_timeout(auth: Option<(&str, &str)>, connect_ports: &[u16], idle_secs: u32) -> Tinyproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::free_port();
        let mut conf = vec![
            format!("Port {port}"),
            "Listen 127.0.0.1".into(),
            format!("Timeout {idle_secs}"),
            "MaxClients 100".into(),
            "LogLevel Info".into(),
            format!("LogFile \"{}\"", dir.path().join("tinyproxy.log").display()),
            format!("PidFile \"{}\"", dir.path().join("tinyproxy.pid").display()),
        ];
        for p in connect_ports {
            conf.push(format!("ConnectPort {p}"));
        }
        if let Some((u, p)) = auth {
            conf.push(format!("BasicAuth {u} {p}"));
        }
        let path = dir.path().join("tinyproxy.conf");
        std::fs::write(&path, conf.join("\n") + "\n").expect("write tinyproxy.conf");
        let guard = ChildGuard::spawn(
            "tinyproxy",
            Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "tinyproxy did not listen on {port}"
        );
        Tinyproxy { port, dir, _guard: guard }
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}
