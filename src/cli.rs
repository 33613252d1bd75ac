//! Command-line contract (clap). `main.rs` only parses and dispatches to `commands::*`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Probes the egress path a WebRTC softphone needs and exports Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "egress-probe", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: probe on schedule, serve /metrics and /probe.
    Run(RunArgs),
    /// Run every (or the named) probe once, print a report, exit 0 if all pass, 1 if any fails.
    Check(CheckArgs),
    /// Validate a config file; print FILE:LINE:COLUMN: message for every problem.
    Validate(ValidateArgs),
    /// Run the endpoints the probes need (STUN/TURN/TLS/WebSocket/HTTPS) outside the firewall.
    Responder(Box<ResponderArgs>),
    /// Compare two `check --output json` reports; exit 1 if anything regressed.
    Diff(DiffArgs),
    /// Print the JSON Schema of the config file (for editors and CI validators).
    Schema,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff), as installed by the Debian package.
    #[command(hide = true)]
    Man,
}

/// `egress-probe completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `--preset NAME [--region R] [--input K=V]...`: run a vendor preset instead of a config file.
#[derive(Debug, Args)]
pub struct PresetArgs {
    /// Vendor preset to run (probes/presets/NAME.yaml, embedded).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::config::preset::names()), conflicts_with_all = ["config", "demo"])]
    pub preset: Option<String>,
    /// The preset's region (default: the preset's default region).
    #[arg(long, requires = "preset")]
    pub region: Option<String>,
    /// A preset input, NAME=VALUE (repeatable); credentials as env:NAME or file:/path.
    #[arg(long = "input", requires = "preset", value_parser = key_value)]
    pub inputs: Vec<(String, String)>,
}

impl PresetArgs {
    /// The request for `config::load_preset`, when `--preset` was given.
    pub fn request(&self) -> Option<crate::config::PresetRequest> {
        self.preset.as_ref().map(|name| crate::config::PresetRequest {
            name: name.clone(),
            region: self.region.clone(),
            inputs: self.inputs.iter().cloned().collect(),
        })
    }
}

/// `NAME=VALUE`.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected NAME=VALUE")),
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `check --output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// `egress-probe run`.
// One of the two is required: a bare `run`/`check` then says "<--config <CONFIG>|--demo>",
// so a new user learns about the demo from the error.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "demo"])))]
pub struct RunArgs {
    /// Probe config (YAML).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Start the built-in responder on loopback and probe it (no network needed).
    #[arg(long, conflicts_with = "config")]
    pub demo: bool,
    /// Address for /metrics, /probe, /healthz, /ready (overrides `listen:` in the config).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Prometheus exporter-toolkit web config (TLS, mTLS, basic_auth_users with bcrypt hashes).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Enable `POST /-/reload` (reloads the config like SIGHUP).
    #[arg(long = "web.enable-lifecycle")]
    pub web_enable_lifecycle: bool,
}

/// `egress-probe check`.
// One source is required: a bare `check` then says "<--config <CONFIG>|--demo|--preset
// <PRESET>>", so a new user learns about the demo and the presets from the error.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "demo", "preset"])))]
pub struct CheckArgs {
    /// Probe config (YAML).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Start the built-in responder on loopback and probe it (no network needed).
    #[arg(long, conflicts_with = "config")]
    pub demo: bool,
    #[command(flatten)]
    pub preset: PresetArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Only run the probe with this name (repeatable).
    #[arg(long = "probe", short = 'p')]
    pub probes: Vec<String>,
    /// No progress line and no verdicts; only the table (or JSON).
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write the families once to every `push:` receiver, reported as a row per receiver.
    #[arg(long)]
    pub push: bool,
}

/// `egress-probe validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Probe config (YAML).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// `egress-probe responder`. Listener flags take a port (on --bind) or ip:port, repeat for
/// several, and `none` turns the endpoint off; given, they replace the config file's list.
#[derive(Debug, Args)]
pub struct ResponderArgs {
    /// Responder config (YAML); flags override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// IP the port-only listeners bind to (default 0.0.0.0).
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
    /// Address advertised for relayed candidates (default: --bind, or the default route's).
    #[arg(long)]
    pub relay_ip: Option<std::net::IpAddr>,
    /// UDP port range for relayed addresses, e.g. 49152-65535.
    #[arg(long)]
    pub relay_ports: Option<String>,
    /// TURN realm.
    #[arg(long)]
    pub realm: Option<String>,
    /// Long-term TURN user USER:PASSWORD (PASSWORD may be env:NAME or file:/path); repeatable.
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// REST (ephemeral) credentials secret, e.g. env:TURN_SECRET (coturn `use-auth-secret`).
    #[arg(long)]
    pub rest_secret: Option<String>,
    /// STUN/TURN over UDP listeners (default 3478).
    #[arg(long)]
    pub turn_udp: Vec<String>,
    /// STUN/TURN over TCP listeners (default 3478).
    #[arg(long)]
    pub turn_tcp: Vec<String>,
    /// TURN over TLS listeners (default 5349; give 443 explicitly to test the TLS-on-443 path).
    #[arg(long)]
    pub turn_tls: Vec<String>,
    /// HTTPS + WSS echo listeners (default 443 and 8443; use 8443 alone without root).
    #[arg(long)]
    pub web: Vec<String>,
    /// UDP echo peer listeners (default 3479).
    #[arg(long)]
    pub udp_echo: Vec<String>,
    /// DNS answerer listeners (UDP; off unless given), answering --dns-name.
    #[arg(long)]
    pub dns: Vec<String>,
    /// The name the DNS answerer knows (default relay.egress-probe.test).
    #[arg(long)]
    pub dns_name: Option<String>,
    /// RFC 5780 NAT behaviour server on PRIMARY[,ALTERNATE] IP (off unless given; with one IP
    /// it answers without OTHER-ADDRESS, so probes cannot classify the NAT).
    #[arg(long, value_name = "PRIMARY[,ALTERNATE]")]
    pub nat_stun: Option<String>,
    /// Primary and alternate port of --nat-stun or of the config file's nat_stun (default
    /// 3480,3481).
    #[arg(long, value_name = "PORT,PORT")]
    pub nat_stun_ports: Option<String>,
    /// At most this many open WebSockets per client IP; more are answered 429 with
    /// Retry-After: 5 (default: no cap).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub websocket_cap: Option<u32>,
    /// OAuth2 client ID:SECRET for /oauth/token (SECRET may be env:NAME or file:/path);
    /// repeatable. With one, /api/channels requires a bearer token.
    #[arg(long = "oauth2-client")]
    pub oauth2_clients: Vec<String>,
    /// Plain-HTTP address of the responder's own /metrics (default 127.0.0.1:9470), or `none`.
    #[arg(long)]
    pub metrics: Option<String>,
    /// PEM certificate chain for the TLS listeners (with --tls-key); default: a generated CA.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep the generated CA in this directory across restarts (stable ca_file and pin).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Name (DNS or IP) for the generated certificate; repeatable.
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
}

/// `egress-probe diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Report from before the change (`check --output json`).
    pub before: PathBuf,
    /// Report from after the change.
    pub after: PathBuf,
    /// A timing change counts only if it is at least this many milliseconds...
    #[arg(long, default_value_t = 20.0, value_parser = non_negative)]
    pub threshold_ms: f64,
    /// ...and at least this ratio of the before time (0.5 = +50%).
    #[arg(long, default_value_t = 0.5, value_parser = non_negative)]
    pub threshold_ratio: f64,
    /// List timing changes but never exit 1 because of them.
    #[arg(long)]
    pub ignore_timing: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Parses a finite number >= 0 (thresholds).
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

/// Whether ANSI colour may go to a stream: only to a terminal, and never with `NO_COLOR` set
/// to a non-empty value (<https://no-color.org>). Logs (stderr) and the `check` table (stdout)
/// both ask this, so piped output is always plain text.
pub fn colour_on(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_run_and_check_name_both_config_and_demo() {
        for sub in ["run", "check"] {
            let e = Cli::try_parse_from(["egress-probe", sub]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{sub}");
            let text = e.render().to_string();
            assert!(text.contains("--config") && text.contains("--demo"), "{sub}: {text}");
            assert!(Cli::try_parse_from(["egress-probe", sub, "--demo"]).is_ok());
            assert!(Cli::try_parse_from(["egress-probe", sub, "--demo", "--config", "x"]).is_err());
        }
        assert!(Cli::try_parse_from(["egress-probe", "check", "--preset", "generic-webrtc"]).is_ok());
    }
}
