//! egress-probe: probes the path a WebRTC softphone needs out of a strict network (DNS, TCP,
//! TLS, HTTP, WebSocket, STUN, TURN, ICE) and says, per phase, what is dropped, rejected or
//! intercepted. Results become Prometheus metrics (`metrics`, `server`), a `check` report
//! (`report`), and plain-language verdicts (`verdict`).
//!
//! Layout: `config` (YAML schema and validation) → `schedule` (when probes run) →
//! `probe::*` (one file per protocol, using the `net` dial path) → `Outcome` → `metrics` /
//! `report`. `responder` runs the matching endpoints outside the firewall.

pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod log_redact;
pub mod metrics;
pub mod net;
pub mod outcome;
pub mod probe;
pub mod report;
pub mod responder;
pub mod schedule;
pub mod server;
