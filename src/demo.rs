//! The embedded default (`--demo`). PROVISIONAL stub (issue 6): starts the responder on
//! loopback and returns a matching in-memory config exercising every probe kind.

use crate::config::Config;

/// A running demo: the config to probe, and the responder kept alive until this is dropped.
pub struct Demo {
    pub config: Config,
}

/// Starts the built-in responder on loopback (ephemeral ports) and builds the demo config.
pub async fn start() -> anyhow::Result<Demo> {
    anyhow::bail!("--demo is not implemented yet")
}
