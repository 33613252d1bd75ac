//! Configuration: the YAML schema (`types`), its small value types (`values`), and loading
//! with validation that reports every problem as `FILE:LINE:COLUMN: message`.
//!
//! Secrets (`env:NAME`, `file:/path`) are resolved at load time, so a missing variable is a
//! validation error with a position, not a probe failure at 3 a.m.
//!
//! Layer: a leaf above `outcome`; imports nothing else from the crate, so validation can never
//! depend on how a probe runs.

mod check;
mod load;
pub mod push;
mod target;
pub mod types;
pub mod values;
mod yaml;

pub use load::{load_file, parse_str, ConfigError, ConfigErrors};
pub use push::{PushAuth, QueueLimits, RemoteWriteConfig};
pub use types::*;
pub use values::{parse_pin, HostPort, IceScheme, IceTransport, IceUrl, Secret};
