//! The `egress-probe` binary: parse the command line, set up logging, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use egress_probe::cli::{Cli, Command, LogFormat};
use egress_probe::commands;
use egress_probe::log_redact::RedactWire;

fn main() -> ExitCode {
    egress_probe::allocator::tune();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("egress-probe: cannot start the async runtime: {e}");
            return ExitCode::from(commands::EXIT_USAGE);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(a) => commands::run::main(a).await,
            Command::Check(a) => commands::check::main(a).await,
            Command::Validate(a) => commands::validate::main(a).await,
            Command::Responder(a) => commands::responder::main(*a).await,
            Command::Diff(a) => commands::diff::main(a).await,
            Command::Schema => commands::schema::main(),
            Command::Completions(a) => commands::completions::main(a),
            Command::Man => commands::completions::man(),
        }
    });
    let withheld = egress_probe::log_redact::withheld();
    if withheld > 0 {
        tracing::debug!(
            withheld,
            "dependency log events withheld: they carry request headers or protocol messages"
        );
    }
    // Do not wait for stray blocking tasks (e.g. a getaddrinfo) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("egress-probe: {e:#}");
            ExitCode::from(commands::EXIT_USAGE)
        }
    }
}

fn init_logging(format: LogFormat) {
    // The webrtc-rs crates' info lines and webrtc-ice's warnings are noise next to our own
    // per-run lines (see `DEFAULT_FILTER`), unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(egress_probe::log_redact::DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(egress_probe::cli::colour_on(std::io::stderr().is_terminal()));
    // A separate layer over the formatter: dependencies' wire dumps (request headers, TURN
    // messages) never reach the log, whatever RUST_LOG asks for (see `log_redact`).
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match format {
        LogFormat::Json => builder.json().finish().with(RedactWire).init(),
        LogFormat::Text => builder.finish().with(RedactWire).init(),
    }
}
