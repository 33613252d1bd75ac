//! One file per subcommand; each returns the process exit code.
//! Exit codes: 0 ok, 1 a probe failed / a regression, 2 config or usage error.

pub mod check;
pub mod diff;
pub mod responder;
pub mod run;
pub mod validate;

/// Exit code: everything passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: a probe failed (check) or something regressed (diff).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad config or usage.
pub const EXIT_USAGE: u8 = 2;
