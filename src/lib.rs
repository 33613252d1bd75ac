//! egress-probe: probes the path a WebRTC softphone needs out of a strict network (DNS, TCP,
//! TLS, HTTP, WebSocket, STUN, TURN, ICE) and says, per phase, what is dropped, rejected or
//! intercepted. Results become Prometheus metrics (`metrics`, `server`), a `check` report
//! (`report`), and plain-language verdicts (`report::verdict`).
//!
//! # Layers
//!
//! Arrows point at what a module may import; nothing points upwards. `tests/layers.rs` fails
//! the build's tests when a file breaks this.
//!
//! ```text
//! commands/, cli.rs        thin edge: arguments → one library call → exit code
//!    │
//!    ├── server.rs         /metrics /probe /healthz /ready /status
//!    ├── metrics.rs        Outcome → Prometheus families; implements schedule::Sink
//!    ├── push/             remote_write delivery of those families (over net/, like a probe)
//!    ├── report/           JSON report + loader, the table renderer, verdicts, diff
//!    ├── demo.rs ─→ responder/   the embedded responder / the endpoints outside the firewall
//!    │
//! schedule.rs              when probes run + the one launch path (daemon, check, /probe)
//!    │
//! probe/                   one file or folder per protocol, each returning an Outcome
//!    │
//! net/                     resolve → connect → proxy → TLS, STUN framing; the one classifier
//!    │
//! config/                  YAML schema, values, validation with line:column
//!    │
//! outcome/                 Outcome, Run, Phase, Reason, Fault, Failure, Details, Transport
//! ```
//!
//! `report` sits beside `metrics` rather than above `probe`: it reads finished `Outcome`s and
//! the config's value types, never runs anything, so `diff` and the verdicts can be tested on
//! stored reports alone. `shutdown` (one stop signal) has no crate imports and is used by the
//! scheduler, the server and the responder alike. `log_redact` (the tracing layer that keeps
//! dependencies' wire dumps out of the log) has no crate imports either; only `main.rs` uses it.
//! `allocator` (glibc malloc settings applied at start) has no crate imports; only `main.rs` uses it.

pub mod allocator;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod log_redact;
pub mod metrics;
pub mod net;
pub mod outcome;
pub mod probe;
pub mod push;
pub mod report;
pub mod responder;
pub mod schedule;
pub mod server;
pub mod shutdown;
pub mod web;
