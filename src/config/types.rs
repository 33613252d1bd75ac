//! The typed configuration every other module consumes. Loading and validation
//! (`config::load`) turn YAML into these; probes only ever see validated values.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::outcome::{Endpoint, Transport};

use super::values::{rest_password, CaBundle, HostPort, IceUrl, Secret, StatusRange};

/// The whole file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Where `/metrics` and `/probe` are served. Default `0.0.0.0:9469`.
    pub listen: Option<SocketAddr>,
    pub defaults: Defaults,
    /// Default proxy for every TCP-based probe; probes may override.
    pub proxy: Option<ProxySetting>,
    pub probes: Vec<ProbeConfig>,
    /// `push:` — remote_write receivers the daemon sends its families to.
    pub push: Vec<super::push::RemoteWriteConfig>,
    /// `web:`: what `/probe` may be pointed at (see `config::web`).
    pub web: super::web::WebSettings,
    /// `metrics:`: which optional families are exported (see docs/metrics.md).
    pub metrics: MetricsSettings,
}

/// `metrics:` at the top level: how much detail `/metrics` and `/probe` carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    pub histograms: Histograms,
}

/// `metrics: {histograms: ...}`: which latency histograms exist. The default keeps the series
/// budget (one latency distribution per probe); `per_phase` adds the per-phase histogram and
/// the RTT histograms (STUN, relay, WebSocket ping, first ICE candidate).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Histograms {
    /// `egress_probe_duration_seconds` only.
    #[default]
    PerProbe,
    /// Also `egress_probe_phase_duration_seconds` and the RTT histograms.
    PerPhase,
}

/// Values a probe inherits unless it sets its own.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub interval: Duration,
    pub timeout: Duration,
    /// Fraction of the interval (0.0..=0.5) by which each probe's grid is offset at random.
    pub jitter: f64,
    /// How many probe runs may be in flight at once across all probes.
    pub concurrency: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            jitter: 0.1,
            concurrency: 16,
        }
    }
}

/// One configured probe: common settings plus what its kind needs.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Unique; used as the `probe` label.
    pub name: String,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    /// Extra labels, exported on `egress_probe_info`.
    pub labels: BTreeMap<String, String>,
    /// Overrides the top-level proxy; `ProxySetting::None` disables it for this probe.
    pub proxy: Option<ProxySetting>,
    pub spec: ProbeSpec,
}

impl ProbeConfig {
    /// Interval after applying defaults.
    pub fn interval(&self, d: &Defaults) -> Duration {
        self.interval.unwrap_or(d.interval)
    }
    /// Timeout after applying defaults.
    pub fn timeout(&self, d: &Defaults) -> Duration {
        self.timeout.unwrap_or(d.timeout)
    }
    /// How long one run may take: the timeout, plus the `hold` of a websocket probe (the
    /// socket is kept open that long on top of the work the timeout bounds) or the budget of a
    /// stun probe's `binding_lifetime` search.
    pub fn run_time(&self, d: &Defaults) -> Duration {
        self.timeout(d) + self.spec.hold()
    }
}

/// Kind-specific settings. The variant name is the YAML `kind`.
#[derive(Clone, Debug)]
pub enum ProbeSpec {
    Dns(DnsSpec),
    Tcp(TcpSpec),
    Tls(TlsSpec),
    Http(HttpSpec),
    Websocket(WebsocketSpec),
    Stun(StunSpec),
    Turn(TurnSpec),
    Ice(IceSpec),
    Session(SessionSpec),
    Path(PathSpec),
    UdpPorts(UdpPortsSpec),
    Media(MediaProbeSpec),
}

impl ProbeSpec {
    /// Where this probe goes, typed (host, port, transport), for reports and verdicts. An ice
    /// probe's endpoint is its first server's.
    pub fn endpoint(&self) -> Endpoint {
        let host_port = |hp: &HostPort, transport| Endpoint {
            host: hp.host.clone(),
            port: Some(hp.port),
            transport,
        };
        match self {
            ProbeSpec::Dns(s) => Endpoint {
                host: s.query.trim_end_matches('.').to_string(),
                port: None,
                transport: Transport::Udp,
            },
            ProbeSpec::Tcp(s) => host_port(&s.target, Transport::Tcp),
            ProbeSpec::Tls(s) => host_port(&s.target, Transport::Tls),
            ProbeSpec::Http(s) => endpoint_of_url(&s.url),
            ProbeSpec::Websocket(s) => endpoint_of_url(&s.url),
            ProbeSpec::Stun(s) => s.server.endpoint(),
            ProbeSpec::Turn(s) => s.server.endpoint(),
            ProbeSpec::Ice(s) => s.servers.first().map(|s| s.url.endpoint()).unwrap_or_default(),
            // The first step written with a literal URL (a `${var}` URL is only known at run time).
            ProbeSpec::Session(s) => s
                .steps
                .iter()
                .filter(|st| !st.url.contains("${"))
                .find_map(|st| url::Url::parse(&st.url).ok())
                .map(|u| endpoint_of_url(&u))
                .unwrap_or_default(),
            ProbeSpec::Path(s) => host_port(
                &s.target,
                match s.protocol {
                    PathProtocol::Udp => Transport::Udp,
                    PathProtocol::Tcp => Transport::Tcp,
                },
            ),
            ProbeSpec::UdpPorts(s) => Endpoint {
                host: s.host.clone(),
                port: Some(s.ports.first()),
                transport: Transport::Udp,
            },
            ProbeSpec::Media(s) => host_port(&s.target, Transport::Udp),
        }
    }

    /// The `kind` word (metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeSpec::Dns(_) => "dns",
            ProbeSpec::Tcp(_) => "tcp",
            ProbeSpec::Tls(_) => "tls",
            ProbeSpec::Http(_) => "http",
            ProbeSpec::Websocket(_) => "websocket",
            ProbeSpec::Stun(_) => "stun",
            ProbeSpec::Turn(_) => "turn",
            ProbeSpec::Ice(_) => "ice",
            ProbeSpec::Session(_) => "session",
            ProbeSpec::Path(_) => "path",
            ProbeSpec::UdpPorts(_) => "udp_ports",
            ProbeSpec::Media(_) => "media",
        }
    }

    /// How long the probe keeps a connection open on purpose, on top of the work its timeout
    /// bounds: a websocket's `hold:`, or the `duration` of a `media:` stream (turn, media);
    /// zero for most kinds.
    pub fn hold(&self) -> Duration {
        match self {
            ProbeSpec::Turn(s) => s.media.as_ref().map_or(Duration::ZERO, |m| m.duration),
            ProbeSpec::Media(s) => s.media.duration,
            ProbeSpec::Websocket(s) => s.hold.map_or(Duration::ZERO, |h| h.duration),
            ProbeSpec::Session(s) => s
                .steps
                .iter()
                .map(|st| match &st.action {
                    StepAction::Websocket(w) => w.hold.map_or(Duration::ZERO, |h| h.duration),
                    StepAction::Http(_) => Duration::ZERO,
                })
                .sum(),
            ProbeSpec::Stun(s) => s.binding_lifetime.map_or(Duration::ZERO, |l| l.budget()),
            _ => Duration::ZERO,
        }
    }

    /// What the probe points at, for the `target` label and tables (no credentials).
    pub fn target(&self) -> String {
        match self {
            ProbeSpec::Dns(s) => format!("{} {}", s.query, s.record),
            ProbeSpec::Tcp(s) => s.target.to_string(),
            ProbeSpec::Tls(s) => s.target.to_string(),
            ProbeSpec::Http(s) => redact_url(&s.url),
            ProbeSpec::Websocket(s) => redact_url(&s.url),
            ProbeSpec::Stun(s) => s.server.to_string(),
            ProbeSpec::Turn(s) => s.server.to_string(),
            ProbeSpec::Ice(s) => s.servers.iter().map(|s| s.url.to_string()).collect::<Vec<_>>().join(","),
            ProbeSpec::Session(s) => s.steps.first().map(|st| st.display_url()).unwrap_or_default(),
            ProbeSpec::Path(s) => format!("{}:{}", s.protocol.as_str(), s.target),
            ProbeSpec::UdpPorts(s) => format!("udp:{}:{}", s.host, s.ports),
            ProbeSpec::Media(s) => format!("udp:{}", s.target),
        }
    }
}

/// Host, port and transport of an `http(s)://` or `ws(s)://` URL (`https`/`wss` speak TLS).
pub fn endpoint_of_url(url: &url::Url) -> Endpoint {
    Endpoint {
        host: url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string(),
        port: url.port_or_known_default(),
        transport: if matches!(url.scheme(), "https" | "wss") {
            Transport::Tls
        } else {
            Transport::Tcp
        },
    }
}

/// A URL for display: without userinfo, query or fragment (they may carry tokens).
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Whether to probe the first address that answers or every resolved address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressMode {
    #[default]
    First,
    All,
}

/// DNS record types the `dns` probe asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordKind {
    #[default]
    A,
    Aaaa,
    Cname,
    Srv,
    Txt,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Cname => "CNAME",
            RecordKind::Srv => "SRV",
            RecordKind::Txt => "TXT",
        })
    }
}

/// `kind: dns`.
#[derive(Clone, Debug)]
pub struct DnsSpec {
    pub query: String,
    pub record: RecordKind,
    /// `ip:port` of a resolver (UDP with TCP fallback); `None` = the system's.
    pub resolver: Option<SocketAddr>,
    pub expect: DnsExpect,
}

/// What a DNS answer must contain for success.
#[derive(Clone, Debug, Default)]
pub struct DnsExpect {
    /// Every string here must appear among the rendered answers.
    pub contains: Vec<String>,
    /// Expected response code (`noerror`, `nxdomain`, ...). Default: noerror with an answer.
    pub rcode: Option<String>,
}

/// TLS settings shared by every probe that speaks TLS (tls, https, wss, stuns, turns).
///
/// `pin_sha256` stays a list of strings as written (each checked by [`Pin::parse`] at load):
/// tests and the demo build these options in code with string pins, and the TLS client parses
/// them into [`Pin`]s once per client.
///
/// [`Pin`]: super::values::Pin
/// [`Pin::parse`]: super::values::Pin::parse
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// SNI and the name verified; default: the target host.
    pub server_name: Option<String>,
    /// ALPN protocols to offer; default none.
    pub alpn: Vec<String>,
    /// Trust only this PEM bundle instead of webpki + system roots.
    pub ca_file: Option<PathBuf>,
    /// The certificates of `ca_file`, read once when the config was loaded (the TLS client
    /// uses these and never reads the file while probing). Options built in code may set only
    /// `ca_file`; the client then reads it itself, with the same limits.
    pub ca: Option<CaBundle>,
    /// SHA-256 pins (hex or base64) of a certificate's SPKI or whole DER, any in the chain.
    pub pin_sha256: Vec<String>,
    pub min_version: Option<TlsVersion>,
}

/// Lowest TLS version accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `kind: tcp`.
#[derive(Clone, Debug)]
pub struct TcpSpec {
    pub target: HostPort,
    pub addresses: AddressMode,
}

/// Which packets a `path` trace sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathProtocol {
    /// TCP SYNs (a connect per attempt), as a softphone's TLS/WebSocket connection.
    #[default]
    Tcp,
    /// UDP datagrams (a STUN Binding request), as a softphone's STUN/TURN/media.
    Udp,
}

impl PathProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PathProtocol::Tcp => "tcp",
            PathProtocol::Udp => "udp",
        }
    }
}

/// `kind: path`: a TTL-stepped trace towards `target` (see `probe::path`).
#[derive(Clone, Debug)]
pub struct PathSpec {
    pub target: HostPort,
    pub protocol: PathProtocol,
    /// Highest TTL tried (default 16).
    pub max_hops: u32,
    /// Attempts per TTL while it stays silent (default 2).
    pub probes_per_hop: u32,
    /// How long one attempt waits for an answer (default 1 s).
    pub hop_timeout: Duration,
}

/// `kind: udp_ports`: which UDP ports of a set answer the responder's echo (see
/// `probe::udp_ports`; the set and the sweep state in `config::ports`).
#[derive(Clone, Debug)]
pub struct UdpPortsSpec {
    /// Host name or IP address of the echo responder.
    pub host: String,
    pub ports: super::ports::PortSet,
    /// Ports probed per run (default 64, at most [`super::ports::MAX_SAMPLE`]).
    pub sample: u32,
    /// How long one port's echo is awaited before its one retry (default 500 ms).
    pub port_timeout: Duration,
    /// This probe's cursor and per-port results, built once per probe at load.
    pub sweep: super::ports::PortSweep,
}

/// `kind: tls`.
#[derive(Clone, Debug)]
pub struct TlsSpec {
    pub target: HostPort,
    pub addresses: AddressMode,
    pub tls: TlsOptions,
}

/// HTTP methods the `http` probe sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
}

/// A header value: literal or a secret reference (for Authorization).
pub type HeaderValue = Secret;

/// `kind: http`.
#[derive(Clone, Debug)]
pub struct HttpSpec {
    pub url: url::Url,
    pub method: HttpMethod,
    pub headers: BTreeMap<String, HeaderValue>,
    pub body: Option<String>,
    /// Default `[200-399]`.
    pub expect_status: Vec<StatusRange>,
    pub expect_body: Option<regex::Regex>,
    /// Maximum redirects followed; 0 = do not follow.
    pub follow_redirects: u32,
    pub tls: TlsOptions,
    /// `auth: {oauth2: ...}`: a bearer token obtained first (phase `auth`).
    pub auth: Option<OAuth2Spec>,
}

/// `kind: websocket`.
#[derive(Clone, Debug)]
pub struct WebsocketSpec {
    pub url: url::Url,
    pub headers: BTreeMap<String, HeaderValue>,
    /// Pings sent after the upgrade (RTT measured); default 3.
    pub ping: u32,
    /// Optional text message sent after the pings...
    pub send: Option<String>,
    /// ...and the regex its answer must match.
    pub expect: Option<regex::Regex>,
    pub tls: TlsOptions,
    /// `auth: {oauth2: ...}`: a bearer token obtained first (phase `auth`), sent on the upgrade.
    pub auth: Option<OAuth2Spec>,
    /// `hold:` keeps the WebSocket open after the exchange (phase `hold`).
    pub hold: Option<HoldSpec>,
    /// WebSockets opened at once (1–64, default 1): a connection cap shows up as a number.
    pub concurrent: u32,
}

/// Most steps a `kind: session` probe may have.
pub const MAX_SESSION_STEPS: usize = 8;

/// `kind: session`: ordered http and websocket steps under one deadline, sharing one OAuth2
/// token and the TLS options; later steps use values earlier ones extracted (`${var}`).
#[derive(Clone, Debug)]
pub struct SessionSpec {
    pub steps: Vec<SessionStep>,
    pub auth: Option<OAuth2Spec>,
    pub tls: TlsOptions,
}

/// One step of a session.
#[derive(Clone, Debug)]
pub struct SessionStep {
    /// The request; when [`SessionStep::url`] names variables its `url` is a placeholder,
    /// replaced at run time (and `tls`/`auth` come from the session).
    pub action: StepAction,
    /// The URL as written; `${var}` is replaced at run time.
    pub url: String,
    /// Variable name → JSON pointer (RFC 6901) into this step's response body (http steps).
    pub extract: BTreeMap<String, String>,
}

impl SessionStep {
    /// The URL for tables and labels: without userinfo, query or fragment when it parses.
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(u) if !self.url.contains("${") => redact_url(&u),
            _ => self.url.split(['?', '#']).next().unwrap_or_default().to_string(),
        }
    }
}

/// What a session step does.
#[derive(Clone, Debug)]
pub enum StepAction {
    Http(HttpSpec),
    Websocket(WebsocketSpec),
}

/// `hold: DURATION` with `ping_interval` / `idle` on a websocket probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldSpec {
    /// How long to keep the socket open.
    pub duration: Duration,
    /// A ping every this often while holding; `None` (with `idle: true`) = no traffic at all.
    pub ping_interval: Option<Duration>,
}

/// OAuth 2.0 client credentials grant (RFC 6749 §4.4): where and as whom to ask for a token.
#[derive(Clone, Debug)]
pub struct OAuth2Spec {
    pub token_url: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    /// Further form parameters of the token request (e.g. `resource`).
    pub extra_params: BTreeMap<String, String>,
    /// This probe's token, reused until shortly before it expires. Built once per probe at
    /// load, so two probes never share one (clones of one probe's spec do).
    pub cache: TokenCache,
}

/// One probe's cached access token. `Debug` shows only whether a token is held.
#[derive(Clone, Default)]
pub struct TokenCache(std::sync::Arc<std::sync::Mutex<Option<CachedToken>>>);

/// A token and when to stop using it (before its `expires_in` ran out).
#[derive(Clone, Debug)]
pub struct CachedToken {
    pub token: Secret,
    pub use_until: tokio::time::Instant,
}

impl TokenCache {
    /// The cached token if it may still be used at `now`.
    pub fn get(&self, now: tokio::time::Instant) -> Option<Secret> {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|c| now < c.use_until).map(|c| c.token.clone())
    }

    /// Keeps `token` until `use_until`; `None` forgets any cached token.
    pub fn put(&self, token: Option<CachedToken>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = token;
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.0.lock().map(|g| g.is_some()).unwrap_or(false);
        write!(f, "TokenCache({})", if held { "held" } else { "empty" })
    }
}

/// `kind: stun`.
#[derive(Clone, Debug)]
pub struct StunSpec {
    pub server: IceUrl,
    /// Binding requests sent, paced; default 3.
    pub count: u32,
    /// Compare mapped addresses from two server addresses (RFC 5780).
    pub nat_mapping: bool,
    /// Fallback for `nat_mapping` when the server advertises no OTHER-ADDRESS (a server that
    /// does is always used instead); must not be the server itself.
    pub second_server: Option<IceUrl>,
    /// RFC 5780 §4.4 filtering test (CHANGE-REQUEST; needs a server with OTHER-ADDRESS).
    pub nat_filtering: bool,
    /// RFC 5780 §4.6 binding lifetime search (`binding_lifetime: {max: 60s}`).
    pub binding_lifetime: Option<LifetimeSearch>,
    pub tls: TlsOptions,
}

/// `binding_lifetime: {max: DURATION}`: how long an idle UDP mapping survives, searched up to
/// `max` (bounded: see [`LifetimeSearch::budget`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimeSearch {
    pub max: Duration,
}

impl LifetimeSearch {
    /// Shortest and longest `max` accepted.
    pub const MIN_MAX: Duration = Duration::from_secs(2);
    pub const MAX_MAX: Duration = Duration::from_secs(600);
    /// Time the search may take on top of the probe's timeout: a geometric round (at most
    /// `max`), one refining round inside the bracket it found (at most `max`), and the
    /// listening after each round's last check. Added to the run's deadline like a `hold`.
    pub fn budget(&self) -> Duration {
        self.max * 2 + Duration::from_secs(4)
    }
}

/// Long-term or REST (ephemeral HMAC) TURN credentials.
#[derive(Clone, Debug)]
pub enum Credentials {
    LongTerm {
        username: Secret,
        password: Secret,
    },
    /// Username `expiry:user`, password base64(HMAC-SHA1(secret, username)).
    Rest {
        secret: Secret,
        user: String,
        ttl: Duration,
    },
}

/// `kind: turn`.
#[derive(Clone, Debug)]
pub struct TurnSpec {
    pub server: IceUrl,
    pub credentials: Credentials,
    /// Relay round trips; default 5.
    pub count: u32,
    /// Payload size in bytes; default 100.
    pub size: usize,
    /// Use ChannelBind + ChannelData instead of Send/Data indications.
    pub channel: bool,
    pub addresses: AddressMode,
    pub tls: TlsOptions,
    /// `media:`: after the relay round trips, a paced call-quality stream (phase `media`).
    pub media: Option<MediaSpec>,
    /// `concurrent: N` (1–64, default 1): N allocations at once instead of the relay round
    /// trip (see `probe::turn::concurrent`).
    pub concurrent: u32,
}

/// `media: {duration, packet_ms, payload, ...}`: an RTP-sized packet stream judged against
/// call-quality thresholds (see `probe::media`).
#[derive(Clone, Debug, PartialEq)]
pub struct MediaSpec {
    /// How long packets are sent (1 s to [`MAX_MEDIA_DURATION`]; default 10 s).
    pub duration: Duration,
    /// Spacing of packets (`packet_ms`, 10–120 ms; default 20 ms as G.711 softphones send).
    pub packet: Duration,
    /// RTP payload bytes per packet (16–1200; default 160 = 20 ms of G.711); the 12-byte RTP
    /// header comes on top.
    pub payload: usize,
    pub thresholds: MediaThresholds,
    /// turn only: stream to this UDP echo (e.g. the responder's) through one allocation instead
    /// of to a second allocation on the same server.
    pub peer: Option<SocketAddr>,
}

/// Longest `media.duration` accepted.
pub const MAX_MEDIA_DURATION: Duration = Duration::from_secs(60);

impl Default for MediaSpec {
    fn default() -> Self {
        MediaSpec {
            duration: Duration::from_secs(10),
            packet: Duration::from_millis(20),
            payload: 160,
            thresholds: MediaThresholds::default(),
            peer: None,
        }
    }
}

/// Pass/fail limits of a media stream; the defaults are Microsoft Teams' client network
/// targets (round trip < 100 ms, loss < 1 %, jitter < 30 ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaThresholds {
    /// Highest average round-trip time of one client leg (`media/rtt` above it; see
    /// `probe::media` for the per-leg estimate).
    pub max_rtt: Duration,
    /// Highest one-way loss fraction, 0.0..=1.0 (`media/loss` above it).
    pub max_loss: f64,
    /// Highest RFC 3550 jitter (`media/jitter` above it).
    pub max_jitter: Duration,
    /// Lowest acceptable MOS estimate (`media/mos` below it); none by default.
    pub min_mos: Option<f64>,
}

impl Default for MediaThresholds {
    fn default() -> Self {
        MediaThresholds {
            max_rtt: Duration::from_millis(100),
            max_loss: 0.01,
            max_jitter: Duration::from_millis(30),
            min_mos: None,
        }
    }
}

/// `kind: media`: the stream straight over UDP to a UDP echo (the responder's `udp_echo`).
#[derive(Clone, Debug)]
pub struct MediaProbeSpec {
    pub target: HostPort,
    pub media: MediaSpec,
}

/// `iceTransportPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IcePolicy {
    #[default]
    All,
    Relay,
}

/// Candidate network types for the ICE agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkType {
    Udp4,
    Udp6,
    Tcp4,
    Tcp6,
}

/// ICE candidate types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    Host,
    Srflx,
    Prflx,
    Relay,
}

impl CandidateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::Srflx => "srflx",
            CandidateKind::Prflx => "prflx",
            CandidateKind::Relay => "relay",
        }
    }
}

/// One STUN/TURN server for ICE.
#[derive(Clone, Debug)]
pub struct IceServer {
    pub url: IceUrl,
    pub credentials: Option<Credentials>,
}

/// `kind: ice`.
#[derive(Clone, Debug, Default)]
pub struct IceSpec {
    pub servers: Vec<IceServer>,
    pub policy: IcePolicy,
    /// Default `[udp4]`.
    pub network_types: Vec<NetworkType>,
    /// Candidate types that must appear for success.
    pub expect: Vec<CandidateKind>,
    /// Run a full connectivity check through the relay with a second local agent.
    pub connectivity: bool,
    /// TLS for `turns:` servers (CA, pin, server name), as for a `turn` probe.
    pub tls: TlsOptions,
}

/// Where TCP-based probes go through an HTTP CONNECT proxy.
#[derive(Clone, Debug)]
pub enum ProxySetting {
    /// Explicitly no proxy (overrides a top-level one).
    None,
    /// `HTTPS_PROXY`/`https_proxy` and `NO_PROXY` from the environment, read at start.
    Env,
    /// `http://[user:pass@]host:port`.
    Url(ProxyUrl),
}

/// A parsed proxy address with optional basic-auth credentials.
#[derive(Clone, Debug)]
pub struct ProxyUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
}

impl ProxySetting {
    /// Parses `none`, `env` or `http://[user:pass@]host:port`.
    pub fn parse(s: &str) -> Result<ProxySetting, String> {
        match s {
            "none" => return Ok(ProxySetting::None),
            "env" => return Ok(ProxySetting::Env),
            _ => {}
        }
        let u = url::Url::parse(s).map_err(|e| format!("proxy must be `none`, `env` or http://host:port ({e})"))?;
        if u.scheme() != "http" {
            return Err(format!("proxy scheme must be http (HTTP CONNECT), got {:?}", u.scheme()));
        }
        let host = u
            .host_str()
            .ok_or("proxy URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u.port_or_known_default().unwrap_or(3128);
        let username = (!u.username().is_empty()).then(|| Secret::literal(percent_decode(u.username())));
        let password = u.password().map(|p| Secret::literal(percent_decode(p)));
        Ok(ProxySetting::Url(ProxyUrl {
            host,
            port,
            username,
            password,
        }))
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Credentials {
    /// The username and password to put on the wire now. REST credentials are minted per
    /// call (TURN REST API draft / coturn `use-auth-secret`): username `expiry:user`,
    /// password base64(HMAC-SHA1(secret, username)), expiry = `now + ttl`.
    pub fn resolve(&self, now: std::time::SystemTime) -> (String, String) {
        match self {
            Credentials::LongTerm { username, password } => (username.expose().to_string(), password.expose().to_string()),
            Credentials::Rest { secret, user, ttl } => {
                let expiry = now
                    .checked_add(*ttl)
                    .unwrap_or(now)
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let username = format!("{expiry}:{user}");
                let password = rest_password(secret.expose(), &username);
                (username, password)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::outcome::Transport;

    #[test]
    fn every_kind_says_where_it_goes_typed() {
        let yaml = r#"
probes:
  - { name: d, kind: dns, query: relay.example.test. }
  - { name: t, kind: tcp, target: "10.0.0.1:8443" }
  - { name: s, kind: tls, target: "relay.example.test:5349" }
  - { name: h, kind: http, url: "https://api.example.test/health?token=x" }
  - { name: w, kind: websocket, url: "ws://[2001:db8::1]:8080/ws" }
  - { name: u, kind: stun, server: "stun:stun.example.test" }
  - { name: r, kind: turn, server: "turns:relay.example.test:443?transport=tcp", credentials: { username: u, password: p } }
  - { name: i, kind: ice, servers: [{ url: "turn:relay.example.test:3478?transport=tcp", credentials: { username: u, password: p } }] }
  - { name: p, kind: path, target: "relay.example.test:3478", protocol: udp }
"#;
        let cfg = crate::config::parse_str(yaml, "t").expect("valid");
        let got: Vec<(String, Option<u16>, Transport)> = cfg
            .probes
            .iter()
            .map(|p| {
                let e = p.spec.endpoint();
                (e.host, e.port, e.transport)
            })
            .collect();
        let want = [
            ("relay.example.test", None, Transport::Udp),
            ("10.0.0.1", Some(8443), Transport::Tcp),
            ("relay.example.test", Some(5349), Transport::Tls),
            ("api.example.test", Some(443), Transport::Tls),
            ("2001:db8::1", Some(8080), Transport::Tcp),
            ("stun.example.test", Some(3478), Transport::Udp),
            ("relay.example.test", Some(443), Transport::Tls),
            ("relay.example.test", Some(3478), Transport::Tcp),
            ("relay.example.test", Some(3478), Transport::Udp),
        ]
        .map(|(h, p, t)| (h.to_string(), p, t));
        assert_eq!(got, want);
    }
}
