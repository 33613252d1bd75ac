//! Configuration: the YAML schema (`types`), its small value types (`values`), and loading
//! with validation that reports every problem as `FILE:LINE:COLUMN: message`.
//!
//! Secrets (`env:NAME`, `file:/path`) are resolved at load time, so a missing variable is a
//! validation error with a position, not a probe failure at 3 a.m.
//!
//! Layer: a leaf above `outcome`; imports nothing else from the crate, so validation can never
//! depend on how a probe runs.
//!
//! `check/` is split into a schema-free toolkit (`node`), one definition per probe kind
//! (`kinds`) and the rest of the schema (`mod`); `files` reads the files a config names
//! (bounded); `values` holds the small parsed values (host:port, ICE URIs, durations, secrets,
//! CA bundles, status ranges, certificate pins, the TURN REST password).

mod check;
mod files;
mod load;
pub mod ports;
pub mod preset;
pub mod push;
pub mod schema;
mod target;
pub mod types;
pub mod values;
pub mod web;
mod yaml;

pub use files::{read_bounded, FileError, MAX_CONFIG_FILE, MAX_NAMED_FILE};
pub use load::{load, load_file, load_preset, parse_str, ConfigError, ConfigErrors};
pub use preset::PresetRequest;
pub use push::{PushAuth, QueueLimits, RemoteWriteConfig};
pub use types::*;
pub use values::{rest_password, CaBundle, HostPort, IceScheme, IceTransport, IceUrl, Pin, Secret, StatusRange, MAX_DURATION};
