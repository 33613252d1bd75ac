//! One file per subcommand; each returns the process exit code.
//! Exit codes: 0 ok, 1 a probe failed / a regression, 2 config or usage error.

pub mod check;
pub mod completions;
pub mod diff;
pub mod responder;
pub mod run;
pub mod schema;
pub mod validate;

/// Exit code: everything passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: a probe failed (check) or something regressed (diff).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad config or usage.
pub const EXIT_USAGE: u8 = 2;

/// The config a command runs: the embedded demo's (its responder lives as long as the
/// returned [`crate::demo::Demo`]) or the file's. `Ok(Err(code))` when it printed why not.
pub(crate) async fn load_config(
    command: &str,
    demo: bool,
    path: Option<&std::path::Path>,
) -> anyhow::Result<Result<(crate::config::Config, Option<crate::demo::Demo>), u8>> {
    if demo {
        let demo = crate::demo::start().await?;
        return Ok(Ok((demo.config.clone(), Some(demo))));
    }
    let Some(path) = path else {
        eprintln!("egress-probe {command}: give --config FILE or --demo");
        return Ok(Err(EXIT_USAGE));
    };
    match crate::config::load(path).await {
        Ok(c) => Ok(Ok((c, None))),
        Err(errors) => {
            eprintln!("{errors}");
            Ok(Err(EXIT_USAGE))
        }
    }
}

/// The config of a vendor preset (`check --preset`). `Err(code)` when it printed why not.
pub(crate) fn load_preset(req: &crate::config::PresetRequest) -> Result<(crate::config::Config, Option<crate::demo::Demo>), u8> {
    match crate::config::load_preset(req) {
        Ok(c) => Ok((c, None)),
        Err(errors) => {
            eprintln!("{errors}");
            Err(EXIT_USAGE)
        }
    }
}
