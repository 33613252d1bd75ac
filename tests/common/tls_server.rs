//! An in-process tokio-rustls server on loopback that reports what it saw of each
//! connection (a clean close_notify, or why the handshake failed); aborted on drop.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// What the server saw of one connection.
#[derive(Debug)]
pub enum Seen {
    /// Handshake done; `clean` = the client ended with close_notify (not a bare FIN/RST).
    Closed {
        clean: bool,
    },
    HandshakeFailed(String),
}

/// A TLS server on 127.0.0.1:port, aborted on drop.
pub struct Server {
    pub port: u16,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(config: Arc<rustls::ServerConfig>) -> Server {
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), config)
}

pub fn serve_on(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> Server {
    let port = listener.local_addr().unwrap().port();
    let (tx, seen) = mpsc::unbounded_channel();
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let mut buf = [0u8; 64];
                        let clean = matches!(tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await, Ok(Ok(0)));
                        let _ = tx.send(Seen::Closed { clean });
                    }
                    Err(e) => {
                        let _ = tx.send(Seen::HandshakeFailed(e.to_string()));
                    }
                }
            });
        }
    });
    Server { port, seen, task }
}
