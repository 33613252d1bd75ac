//! The one result shape every probe returns.
//!
//! A probe is a sequence of timed phases (`resolve`, `connect`, `tls`, ...). It either gets
//! through all of them (`success`) or stops in one, with a stable `reason` word that says *why*
//! (`connect/timeout` = silently dropped, `connect/refused` = rejected). Protocol code fills an
//! [`Outcome`] through a [`Run`], which owns the deadline and the stopwatch, so no probe can
//! forget to time a phase or outlive its timeout.
//!
//! Layer: the bottom. Imports nothing from the crate; everything else speaks its words
//! (`Phase`, `Reason`, `Transport`), so a reason label means the same in a probe, a metric, a
//! verdict and a `diff`.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub mod details;

pub use details::Details;

/// A step of a probe. The failing phase of a failed probe is always the last one recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The OAuth2 token request made before the probe's own request (its own dial, TLS and
    /// POST, reported as one phase so a token server's failure never reads as the target's).
    Auth,
    Resolve,
    Connect,
    Proxy,
    Tls,
    Request,
    Body,
    Upgrade,
    Ping,
    /// A WebSocket kept open for `hold:`; a cut reads `hold/closed` or `hold/reset`.
    Hold,
    Stun,
    Allocate,
    Permission,
    Relay,
    Gather,
    Connectivity,
    /// `kind: path`: the TTL-stepped trace towards the target.
    Trace,
    /// `kind: udp_ports`: datagrams to each sampled port and their echoes.
    Udp,
    /// `media:`: an RTP-sized packet stream (through the relay or to a UDP echo) judged
    /// against call-quality thresholds (`media/loss`, `media/jitter`, `media/rtt`, `media/mos`).
    Media,
    Close,
    /// Not the network: the program itself failed the run (a panic in the probe task, a probe
    /// that overran its deadline, a run cancelled by the scheduler stopping). A bug to report,
    /// never a finding about the path.
    Internal,
}

impl Phase {
    /// The label value used in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Auth => "auth",
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Proxy => "proxy",
            Phase::Tls => "tls",
            Phase::Request => "request",
            Phase::Body => "body",
            Phase::Upgrade => "upgrade",
            Phase::Ping => "ping",
            Phase::Hold => "hold",
            Phase::Stun => "stun",
            Phase::Allocate => "allocate",
            Phase::Permission => "permission",
            Phase::Relay => "relay",
            Phase::Gather => "gather",
            Phase::Connectivity => "connectivity",
            Phase::Trace => "trace",
            Phase::Udp => "udp",
            Phase::Media => "media",
            Phase::Close => "close",
            Phase::Internal => "internal",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport word as it appears in relay details, ICE URLs and metric labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reads a free-form transport word (`udp`, `TCP`, `tls`); `None` for anything else.
    pub fn parse(word: &str) -> Option<Transport> {
        match word.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    /// The label value: `udp`, `tcp`, `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a probe goes, typed: the host, the port (none for a DNS question) and the transport
/// the client speaks to it. Built from the configured spec (`ProbeSpec::endpoint`), so reports
/// and verdicts never re-parse the display `target` string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub transport: Transport,
}

/// Why a phase failed: a small, stable word usable as a metric label. The human story goes
/// into [`Failure::message`], never into the reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No answer before the deadline: packets silently dropped (a firewall DROP rule).
    Timeout,
    /// Actively rejected: TCP RST or ICMP port unreachable (a REJECT rule or a closed port).
    Refused,
    /// No route / ICMP host or network unreachable.
    Unreachable,
    /// The peer (or a middlebox) reset an established connection.
    Reset,
    /// The probe host's own firewall refused to send (EPERM from the kernel).
    BlockedLocally,
    /// The connection was closed before the protocol finished; for `udp/closed`
    /// (`kind: udp_ports`), a sampled port gave no echo even after a retry.
    Closed,
    /// DNS: the name does not exist.
    Nxdomain,
    /// DNS: the resolver failed (SERVFAIL).
    Servfail,
    /// DNS: the resolver refused the query (REFUSED).
    DnsRefused,
    /// DNS: the name exists but has no record of the asked type.
    NoAnswer,
    /// DNS: the UDP answer was truncated (TC) and TCP/53, needed for the full answer, was
    /// refused or reset.
    TruncatedTcpRefused,
    /// TLS: the chain does not lead to a trusted root (often an intercepting proxy).
    UntrustedIssuer,
    /// TLS: a certificate in the chain is expired (or not yet valid).
    Expired,
    /// TLS: the certificate does not cover the server name.
    NameMismatch,
    /// TLS: the chain is trusted but no certificate matches the configured pin (interception).
    PinMismatch,
    /// TLS: the handshake failed for another reason (protocol alert, bad record).
    Handshake,
    /// TLS: no common ALPN protocol.
    Alpn,
    /// TLS: negotiated version below the configured minimum.
    Version,
    /// HTTP/WebSocket/proxy: an unexpected status code, e.g. `status_408`, `status_429`.
    Status(u16),
    /// WebSocket: the server answered but did not switch protocols (Upgrade stripped).
    NotUpgraded,
    /// Authentication rejected (HTTP 407 at the proxy, STUN/TURN 401 after credentials).
    Auth,
    /// STUN/TURN 403.
    Forbidden,
    /// TURN 437 allocation mismatch.
    Mismatch,
    /// TURN 438 stale nonce, twice in a row.
    StaleNonce,
    /// TURN 441 wrong credentials.
    WrongCredentials,
    /// TURN 486 allocation quota reached.
    Quota,
    /// TURN 508 insufficient capacity.
    Capacity,
    /// STUN/TURN error code without a more specific word.
    StunError(u16),
    /// The peer spoke, but not the expected protocol.
    BadResponse,
    /// An `expect` rule (body regex, DNS answer, echoed text) did not match.
    ExpectFailed,
    /// ICE: no server-reflexive candidate appeared.
    NoSrflx,
    /// ICE: no relay candidate appeared.
    NoRelay,
    /// ICE: no host candidate appeared.
    NoHost,
    /// Media stream: more packets lost than `max_loss` allows.
    Loss,
    /// Media stream: RFC 3550 interarrival jitter above `max_jitter`.
    Jitter,
    /// Media stream: average round-trip time above `max_rtt`.
    Rtt,
    /// Media stream: the E-model MOS estimate below `min_mos`.
    Mos,
    /// The configured server uses a transport the implementation cannot probe.
    UnsupportedTransport,
    /// The probe's own configuration could not be used at run time (e.g. unreadable CA file).
    Config,
    /// Any other local I/O error.
    Io,
    /// `internal`: the probe task panicked (a bug in egress-probe).
    Panic,
    /// `internal`: the probe did not end by its deadline and was cancelled (a bug: every
    /// probe bounds its own awaits).
    Overrun,
    /// `internal`: the run was cancelled because the scheduler or process was stopping.
    Cancelled,
    /// `internal/busy`: the probe host was too busy to pace a media stream (many slots
    /// skipped or sent late), so its jitter and round trip measure this host, not the network.
    Busy,
}

impl Reason {
    /// The label value: `timeout`, `status_429`, ...
    pub fn label(&self) -> String {
        match self {
            Reason::Status(code) => format!("status_{code}"),
            Reason::StunError(code) => format!("error_{code}"),
            other => other.static_label().to_string(),
        }
    }

    fn static_label(&self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Unreachable => "unreachable",
            Reason::Reset => "reset",
            Reason::BlockedLocally => "blocked_locally",
            Reason::Closed => "closed",
            Reason::Nxdomain => "nxdomain",
            Reason::Servfail => "servfail",
            Reason::DnsRefused => "dns_refused",
            Reason::NoAnswer => "no_answer",
            Reason::TruncatedTcpRefused => "truncated_tcp_refused",
            Reason::UntrustedIssuer => "untrusted_issuer",
            Reason::Expired => "expired",
            Reason::NameMismatch => "name_mismatch",
            Reason::PinMismatch => "pin_mismatch",
            Reason::Handshake => "handshake",
            Reason::Alpn => "alpn",
            Reason::Version => "version",
            Reason::NotUpgraded => "not_upgraded",
            Reason::Auth => "auth",
            Reason::Forbidden => "forbidden",
            Reason::Mismatch => "mismatch",
            Reason::StaleNonce => "stale_nonce",
            Reason::WrongCredentials => "wrong_credentials",
            Reason::Quota => "quota",
            Reason::Capacity => "capacity",
            Reason::BadResponse => "bad_response",
            Reason::ExpectFailed => "expect_failed",
            Reason::NoSrflx => "no_srflx",
            Reason::NoRelay => "no_relay",
            Reason::NoHost => "no_host",
            Reason::Loss => "loss",
            Reason::Jitter => "jitter",
            Reason::Rtt => "rtt",
            Reason::Mos => "mos",
            Reason::UnsupportedTransport => "unsupported_transport",
            Reason::Config => "config",
            Reason::Io => "io",
            Reason::Panic => "panic",
            Reason::Overrun => "overrun",
            Reason::Busy => "busy",
            Reason::Cancelled => "cancelled",
            Reason::Status(_) | Reason::StunError(_) => unreachable_label(),
        }
    }

    /// Parses a label back (for `diff` on JSON reports).
    pub fn from_label(s: &str) -> Option<Reason> {
        if let Some(code) = s.strip_prefix("status_") {
            return code.parse().ok().map(Reason::Status);
        }
        if let Some(code) = s.strip_prefix("error_") {
            return code.parse().ok().map(Reason::StunError);
        }
        const ALL: &[Reason] = &[
            Reason::Timeout,
            Reason::Refused,
            Reason::Unreachable,
            Reason::Reset,
            Reason::BlockedLocally,
            Reason::Closed,
            Reason::Nxdomain,
            Reason::Servfail,
            Reason::DnsRefused,
            Reason::NoAnswer,
            Reason::TruncatedTcpRefused,
            Reason::UntrustedIssuer,
            Reason::Expired,
            Reason::NameMismatch,
            Reason::PinMismatch,
            Reason::Handshake,
            Reason::Alpn,
            Reason::Version,
            Reason::NotUpgraded,
            Reason::Auth,
            Reason::Forbidden,
            Reason::Mismatch,
            Reason::StaleNonce,
            Reason::WrongCredentials,
            Reason::Quota,
            Reason::Capacity,
            Reason::BadResponse,
            Reason::ExpectFailed,
            Reason::NoSrflx,
            Reason::NoRelay,
            Reason::NoHost,
            Reason::Loss,
            Reason::Jitter,
            Reason::Rtt,
            Reason::Mos,
            Reason::UnsupportedTransport,
            Reason::Config,
            Reason::Io,
            Reason::Panic,
            Reason::Overrun,
            Reason::Cancelled,
            Reason::Busy,
        ];
        ALL.iter().find(|r| r.static_label() == s).cloned()
    }

    /// Maps a STUN/TURN error code to its reason word (RFC 5389/5766/8656).
    pub fn from_stun_code(code: u16) -> Reason {
        match code {
            401 => Reason::Auth,
            403 => Reason::Forbidden,
            437 => Reason::Mismatch,
            438 => Reason::StaleNonce,
            441 => Reason::WrongCredentials,
            486 => Reason::Quota,
            508 => Reason::Capacity,
            other => Reason::StunError(other),
        }
    }
}

fn unreachable_label() -> &'static str {
    // Status and StunError are formatted in `label`; this keeps `static_label` total.
    "status"
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reason::from_label(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown reason {s:?}")))
    }
}

/// A failure without its phase: what protocol helpers return. [`Run::phase`] adds the phase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Fault {
    pub reason: Reason,
    /// For humans and logs; never a metric label, never a secret.
    pub message: String,
}

impl Fault {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Fault {
            reason,
            message: message.into(),
        }
    }

    /// Attaches the phase in which this fault happened.
    pub fn at(self, phase: Phase) -> Failure {
        Failure {
            phase,
            reason: self.reason,
            message: self.message,
        }
    }
}

/// Where and why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{phase}/{reason}: {message}")]
pub struct Failure {
    pub phase: Phase,
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(phase: Phase, reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            phase,
            reason,
            message: message.into(),
        }
    }

    /// `phase/reason`, the short form shown in tables and verdicts.
    pub fn code(&self) -> String {
        format!("{}/{}", self.phase, self.reason.label())
    }
}

/// One timed phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub phase: Phase,
    #[serde(rename = "duration_ms", alias = "duration", with = "duration_ms")]
    pub duration: Duration,
}

/// The result of one probe run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub success: bool,
    /// Phases in the order they ran; a failed probe's failing phase is the last entry.
    pub phases: Vec<PhaseTiming>,
    /// `Some` iff `!success`.
    pub failure: Option<Failure>,
    /// Wall time of the whole run.
    #[serde(rename = "total_ms", alias = "total", with = "duration_ms")]
    pub total: Duration,
    /// Protocol facts (TLS version, relay RTT, candidates...).
    pub detail: Details,
}

impl Outcome {
    /// Time spent in `phase` (summed if the phase ran several times).
    pub fn phase_time(&self, phase: Phase) -> Option<Duration> {
        let mut found = None;
        for p in self.phases.iter().filter(|p| p.phase == phase) {
            *found.get_or_insert(Duration::ZERO) += p.duration;
        }
        found
    }

    /// An outcome that failed before any phase ran (e.g. a bad target override).
    pub fn failed_before_start(failure: Failure) -> Outcome {
        Outcome {
            success: false,
            phases: Vec::new(),
            failure: Some(failure),
            total: Duration::ZERO,
            detail: Details::default(),
        }
    }
}

/// The stopwatch and deadline of one probe run. Protocol code runs each step through
/// [`Run::phase`], which times exactly the awaited operation and turns the deadline into a
/// `timeout` fault of that phase.
#[derive(Debug)]
pub struct Run {
    started: Instant,
    deadline: Instant,
    phases: Vec<PhaseTiming>,
    /// Protocol facts gathered so far; kept on failure too.
    pub detail: Details,
}

impl Run {
    /// Starts the stopwatch; nothing awaited through this run outlives `deadline`.
    pub fn new(deadline: Instant) -> Run {
        Run {
            started: Instant::now(),
            deadline,
            phases: Vec::new(),
            detail: Details::default(),
        }
    }

    /// The run's deadline, for awaits that are not a phase of their own.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline (zero when passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Runs `fut` as `phase`: timed, bounded by the deadline, the fault tagged with the phase.
    pub async fn phase<T, F>(&mut self, phase: Phase, fut: F) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, Fault>>,
    {
        let start = Instant::now();
        let result = tokio::time::timeout_at(self.deadline, fut).await;
        let elapsed = start.elapsed();
        self.phases.push(PhaseTiming { phase, duration: elapsed });
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(fault)) => Err(fault.at(phase)),
            Err(_) => Err(Failure::new(
                phase,
                Reason::Timeout,
                format!("no answer within the probe timeout ({} ms spent in {phase})", elapsed.as_millis()),
            )),
        }
    }

    /// Records a phase measured elsewhere (e.g. inside a library callback).
    pub fn record(&mut self, phase: Phase, duration: Duration) {
        self.phases.push(PhaseTiming { phase, duration });
    }

    /// Ends the run. `Err` makes a failed outcome whose last phase is the failing one.
    pub fn finish(mut self, result: Result<(), Failure>) -> Outcome {
        let total = self.started.elapsed();
        match result {
            Ok(()) => Outcome {
                success: true,
                phases: self.phases,
                failure: None,
                total,
                detail: self.detail,
            },
            Err(failure) => {
                if self.phases.last().map(|p| p.phase) != Some(failure.phase) {
                    self.phases.push(PhaseTiming {
                        phase: failure.phase,
                        duration: Duration::ZERO,
                    });
                }
                Outcome {
                    success: false,
                    phases: self.phases,
                    failure: Some(failure),
                    total,
                    detail: self.detail,
                }
            }
        }
    }
}

/// A duration as milliseconds rounded to the microsecond, the one unit of every duration in
/// JSON (reports, `/status`) and logs: `10.162`, never `10.162000000000001`, and a
/// sub-millisecond run reads `0.042`, not `0`.
pub fn ms(d: Duration) -> f64 {
    // An integer count of µs divided once: the nearest f64 to the decimal, printed shortest.
    d.as_micros() as f64 / 1000.0
}

/// Durations as fractional milliseconds in JSON (keys end in `_ms`; see [`ms`]).
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(super::ms(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || ms < 0.0 {
            return Err(serde::de::Error::custom("duration must be a non-negative number of ms"));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_labels_round_trip() {
        for r in [
            Reason::Timeout,
            Reason::Status(429),
            Reason::StunError(420),
            Reason::PinMismatch,
            Reason::NoRelay,
            Reason::Panic,
            Reason::Overrun,
            Reason::Cancelled,
            Reason::Loss,
            Reason::Jitter,
            Reason::Rtt,
            Reason::Mos,
            Reason::Busy,
        ] {
            assert_eq!(Reason::from_label(&r.label()), Some(r.clone()));
        }
        assert_eq!(Reason::Status(408).label(), "status_408");
        assert_eq!(Reason::from_stun_code(486), Reason::Quota);
    }

    #[test]
    fn json_durations_are_milliseconds_rounded_to_the_microsecond_under_ms_keys() {
        let mut o = Outcome {
            success: true,
            phases: vec![PhaseTiming {
                phase: Phase::Connect,
                duration: Duration::from_nanos(10_162_345),
            }],
            total: Duration::from_nanos(42_499),
            ..Default::default()
        };
        o.detail.retry_after = Some(Duration::from_secs(5));
        o.detail.relay = Some(details::RelayDetails {
            allocate: Some(Duration::from_nanos(1_000_600)),
            rtt: Some(details::RttStats::from_samples(1, vec![Duration::from_micros(10_162)])),
            ..Default::default()
        });
        let json = serde_json::to_string(&o).unwrap();
        for key in [
            r#""duration_ms":10.162}"#,
            r#""total_ms":0.042,"#,
            r#""retry_after_ms":5000.0"#,
            r#""allocate_ms":1.0}"#,
            r#""samples_ms":[10.162]"#,
            r#""min_ms":10.162,"#,
            r#""jitter_ms":0.0,"#,
        ] {
            assert!(json.contains(key), "{key} missing in {json}");
        }
        for old in [r#""duration":"#, r#""total":"#, r#""min":"#, r#""allocate":"#] {
            assert!(!json.contains(old), "{old} in {json}");
        }
        // Schema 1 spelled the same fields without the unit: still read (for `diff`).
        let v1 = json.replace("_ms\"", "\"");
        let back: Outcome = serde_json::from_str(&v1).unwrap();
        assert_eq!(back.phases[0].duration, Duration::from_micros(10_162));
        assert_eq!(back.total, Duration::from_micros(42));
        assert_eq!(back.detail.retry_after, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_programs_own_failures_read_internal_slash_panic_overrun_cancelled() {
        let codes: Vec<String> = [Reason::Panic, Reason::Overrun, Reason::Cancelled]
            .into_iter()
            .map(|r| Failure::new(Phase::Internal, r, "x").code())
            .collect();
        assert_eq!(codes, ["internal/panic", "internal/overrun", "internal/cancelled"]);
        assert_eq!(serde_json::to_string(&Phase::Internal).unwrap(), "\"internal\"");
    }

    #[tokio::test]
    async fn phase_times_out_at_deadline() {
        let mut run = Run::new(Instant::now() + Duration::from_millis(50));
        let err = run
            .phase(Phase::Connect, async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<(), Fault>(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "connect/timeout");
        let out = run.finish(Err(err));
        assert!(!out.success);
        assert_eq!(out.phases.last().map(|p| p.phase), Some(Phase::Connect));
        assert!(out.total < Duration::from_millis(500));
    }
}
