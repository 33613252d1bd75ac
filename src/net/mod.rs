//! The shared dial path: resolve → connect → (proxy CONNECT) → TLS, each step timed as a
//! phase of the caller's [`Run`](crate::outcome::Run), every error classified into a
//! [`Reason`](crate::outcome::Reason). TCP, TLS, HTTP, WebSocket, STUN/TURN over TCP/TLS all
//! dial through here, so "dropped vs rejected vs intercepted" means the same for every probe.
//!
//! Layer: imports `config` and `outcome` only; `probe` and everything above build on it.

pub mod classify;
pub mod dial;
pub mod errqueue;
pub mod hop;
pub mod host_limit;
pub mod http;
pub mod proxy;
pub mod stun_conn;
pub mod tls;

pub use classify::{classify_io, fault_from_io};
pub use dial::{connect, connect_first, dial, resolve, Dialed};
pub use tls::{handshake, TlsClient};
