//! Protocol facts a probe reports besides pass/fail: TLS version and expiry, relay RTT and
//! loss, mapped address, ICE candidates. One optional section per protocol so `metrics.rs`,
//! `report.rs` and the JSON output read typed fields instead of parsing strings.
//!
//! Addresses here (mapped address, relayed address) are for humans and JSON only; `metrics.rs`
//! must never turn them into labels, except the *server* address of `addresses: all`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_ms, Failure};

/// Everything a probe learned, per protocol. Sections stay `None` when not reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// The address actually connected to (first that answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    /// Addresses the target name resolved to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebsocketDetails>,
    /// `kind: session`: how far the steps got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionDetails>,
    /// With `concurrent: N`: how many of the N connections were established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<ConcurrentDetails>,
    /// The OAuth2 token request (`auth:`), never the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun: Option<StunDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice: Option<IceDetails>,
    /// `kind: path`: the hops towards the target and where the trace ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathDetails>,
    /// `kind: udp_ports`: which ports of the set echoed, as ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_ports: Option<UdpPortsDetails>,
    /// `media:`: the call-quality stream (loss, jitter, RTT, MOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaDetails>,
    /// Who refused or reported unreachable on a failed connect: an ICMP offender from the
    /// socket's error queue, or the target itself (a TCP RST carries the target's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_origin: Option<RejectOrigin>,
    /// With `addresses: all`: one result per resolved server address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_address: Vec<AddressResult>,
    /// A server's `Retry-After` (429/503), kept for the scheduler's backoff.
    #[serde(
        rename = "retry_after_ms",
        alias = "retry_after",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms"
    )]
    pub retry_after: Option<Duration>,
    /// Free-form remarks for humans (never labels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// DNS answer facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsDetails {
    pub record: String,
    /// Rendered answers, e.g. `127.0.0.1`, `0 0 3478 relay.example.test.`.
    pub answers: Vec<String>,
    /// The resolver used (`system` or `ip:port`).
    pub resolver: String,
    /// Response code of the final answer (`noerror`, `nxdomain`, `servfail`, `refused`...).
    #[serde(default)]
    pub rcode: String,
    /// Transport that produced the answer: `udp`, or `tcp` (after a truncated UDP answer, or
    /// as the fallback when UDP got no answer at all: UDP/53 likely blocked).
    #[serde(default)]
    pub transport: String,
    /// The UDP answer had the TC (truncated) bit set, so the full answer needs TCP/53.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What the TLS handshake negotiated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsDetails {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    pub alpn: Option<String>,
    pub server_name: String,
    /// Subject of the leaf certificate.
    pub subject: String,
    /// Issuer of the leaf certificate (tells an intercepting proxy's CA by name).
    pub issuer: String,
    /// Earliest `notAfter` in the presented chain, as a Unix timestamp.
    pub earliest_expiry_unix: Option<i64>,
    pub chain_len: usize,
    /// Whether a configured pin matched (`None` when no pin was configured).
    pub pin_matched: Option<bool>,
    /// The leaf's issuer (or the leaf itself) is a certificate from the probe's own
    /// `ca_file`: a trust failure is then a configuration problem, not an intercepting proxy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub issuer_configured: bool,
    pub cipher_suite: String,
}

/// HTTP response facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpDetails {
    pub status: u16,
    pub redirects: u32,
    pub body_bytes: u64,
    pub final_url: String,
}

/// WebSocket facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WebsocketDetails {
    pub status: Option<u16>,
    pub subprotocol: Option<String>,
    pub ping_rtt: Option<RttStats>,
    /// True when the server answered our close frame with its own (a clean close).
    pub clean_close: bool,
    /// With `hold:`: how long the socket lived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldDetails>,
}

/// OAuth2 client-credentials facts: whether the token came from this probe's cache and how
/// long the token server said it lives. The token and the secret never appear here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthDetails {
    /// The token endpoint, without userinfo or query.
    pub token_url: String,
    /// True when this run reused the probe's cached token (no token request).
    pub cached: bool,
    /// Status of the token request (absent when cached or when it got no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `expires_in` of the token in use, in seconds (absent when the server gave none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}

/// A session's progress. The failing step's number is also at the start of the failure
/// message (`step 2 (websocket): ...`); phases and reasons stay the fixed label words.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDetails {
    pub steps: u32,
    /// Steps that finished successfully.
    pub completed: u32,
    /// 1-based number of the step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<u32>,
    /// Names of the variables extracted so far (never their values: they may hold tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extracted: Vec<String>,
}

/// `concurrent: N`: connections asked for and established at once. The run's failure (if
/// any) is the first refusal, e.g. `upgrade/status_429` from a per-client cap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConcurrentDetails {
    pub requested: u32,
    pub established: u32,
    /// Websocket with `hold`: every established connection's hold, in connection order (N
    /// lifetimes of one run: the evidence an idle-timeout verdict needs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<HoldDetails>,
}

/// How long a held WebSocket lived and how the hold ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldDetails {
    /// The configured hold.
    #[serde(rename = "planned_ms", with = "duration_ms")]
    pub planned: Duration,
    /// How long the socket stayed open once the hold began.
    #[serde(rename = "lifetime_ms", with = "duration_ms")]
    pub lifetime: Duration,
    /// Keepalive pings sent (and answered) during the hold.
    pub pings: u32,
    /// False when the peer or a middlebox cut the socket before the hold ended.
    pub survived: bool,
}

/// Round-trip statistics of a series of request/response pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RttStats {
    pub sent: u32,
    pub received: u32,
    /// Each answered sample, in order.
    #[serde(rename = "samples_ms", alias = "samples", with = "vec_duration_ms")]
    pub samples: Vec<Duration>,
    #[serde(rename = "min_ms", alias = "min", with = "duration_ms")]
    pub min: Duration,
    #[serde(rename = "avg_ms", alias = "avg", with = "duration_ms")]
    pub avg: Duration,
    #[serde(rename = "max_ms", alias = "max", with = "duration_ms")]
    pub max: Duration,
    /// Mean absolute difference of consecutive samples (RFC 3550 style, unsmoothed).
    #[serde(rename = "jitter_ms", alias = "jitter", with = "duration_ms")]
    pub jitter: Duration,
    /// `1 - received/sent`.
    pub loss: f64,
}

impl RttStats {
    /// Summarises `samples` answered out of `sent` attempts.
    pub fn from_samples(sent: u32, samples: Vec<Duration>) -> RttStats {
        let received = samples.len() as u32;
        let loss = if sent == 0 {
            0.0
        } else {
            1.0 - f64::from(received.min(sent)) / f64::from(sent)
        };
        if samples.is_empty() {
            return RttStats {
                sent,
                received,
                loss,
                ..Default::default()
            };
        }
        let min = samples.iter().copied().min().unwrap_or_default();
        let max = samples.iter().copied().max().unwrap_or_default();
        let avg = samples.iter().sum::<Duration>() / received;
        let jitter = if samples.len() < 2 {
            Duration::ZERO
        } else {
            let diffs: Duration = samples.windows(2).map(|w| w[0].abs_diff(w[1])).sum();
            diffs / (samples.len() as u32 - 1)
        };
        RttStats {
            sent,
            received,
            samples,
            min,
            avg,
            max,
            jitter,
            loss,
        }
    }
}

/// STUN binding facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StunDetails {
    pub transport: String,
    /// Our local address (compare with `mapped`: equal means no NAT on the path).
    #[serde(default)]
    pub local: Option<SocketAddr>,
    /// XOR-MAPPED-ADDRESS as seen by the server (never a label).
    pub mapped: Option<SocketAddr>,
    pub rtt: Option<RttStats>,
    /// RFC 5780 OTHER-ADDRESS, when the server advertises one.
    pub other_address: Option<SocketAddr>,
    /// RFC 5780 §4.3 mapping behaviour when `nat_mapping` ran: [`NAT_BEHAVIORS`], or
    /// `endpoint_dependent` when only a `second_server` (no OTHER-ADDRESS) was there to compare.
    pub nat_mapping: Option<String>,
    /// The mapped address seen by the second server of `nat_mapping` (RFC 5780: the alternate
    /// IP on the primary port).
    #[serde(default)]
    pub second_mapped: Option<SocketAddr>,
    /// RFC 5780 test III of the mapping: the mapped address seen on the alternate IP *and* port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_mapped: Option<SocketAddr>,
    /// RFC 5780 §4.4 filtering behaviour when `nat_filtering` ran: one of [`NAT_BEHAVIORS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_filtering: Option<String>,
    /// RFC 5780 §4.6 binding lifetime when `binding_lifetime` ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_lifetime: Option<BindingLifetime>,
}

/// RFC 5780 behaviours (mapping and filtering), from the most to the least permissive.
pub const NAT_BEHAVIORS: [&str; 3] = ["endpoint_independent", "address_dependent", "address_and_port_dependent"];

/// What the binding lifetime search found: the mapping survived `alive` of idleness and was
/// gone after `expired` (`None`: it survived the whole search, up to `max`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BindingLifetime {
    #[serde(rename = "alive_ms", with = "super::duration_ms")]
    pub alive: Duration,
    #[serde(rename = "expired_ms", default, with = "opt_duration_ms")]
    pub expired: Option<Duration>,
    /// Idle mappings checked (each a socket of its own).
    pub checks: u32,
}

impl BindingLifetime {
    /// The estimate: the middle of the bracket, or `alive` when nothing expired.
    pub fn estimate(&self) -> Duration {
        match self.expired {
            Some(e) => (self.alive + e) / 2,
            None => self.alive,
        }
    }
}

/// TURN allocation and relay facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayDetails {
    /// `udp`, `tcp`, `tls`.
    pub transport: String,
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    pub rtt: Option<RttStats>,
    pub channel: bool,
    /// Both allocations were released with Refresh(lifetime 0) and the server confirmed.
    pub deallocated: bool,
    /// Allocate time (including the 401 challenge round).
    #[serde(rename = "allocate_ms", alias = "allocate", default, with = "opt_duration_ms")]
    pub allocate: Option<Duration>,
}

/// What a `media:` stream measured (see `probe::media`). Every figure is of the round trip:
/// the packets come back to the sender, so no clock needs to be shared with the far side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaDetails {
    /// How the stream ran: `udp_echo` (straight to a UDP echo), `turn_pair` (through the
    /// relay to a second allocation on the same server, echoed back), `turn_peer` (through
    /// the relay to a UDP echo peer, echoed back).
    pub path: String,
    /// Packet spacing and RTP payload bytes as configured.
    #[serde(rename = "packet_ms", with = "duration_ms")]
    pub packet: Duration,
    pub payload: usize,
    /// Packets the duration called for, and those actually sent (fewer when the pacing clock
    /// skipped ticks because the probe host was too busy: `skipped_ticks`).
    pub planned: u32,
    pub sent: u32,
    pub skipped_ticks: u32,
    /// Distinct packets that came back before the stream's drain time ran out.
    pub received: u32,
    /// Copies of a packet already received (not counted in `received`).
    pub duplicates: u32,
    /// `1 - received/sent`.
    pub loss: f64,
    /// Packets that arrived after a packet with a higher sequence number.
    pub reordered: u32,
    /// Longest run of consecutive sequence numbers lost.
    pub longest_loss_burst: u32,
    /// Round-trip and jitter figures exist only when at least one packet came back: with
    /// `received: 0` they are absent (a zero would read as a perfect network).
    #[serde(rename = "rtt_min_ms", default, skip_serializing_if = "Option::is_none", with = "opt_duration_ms")]
    pub rtt_min: Option<Duration>,
    #[serde(rename = "rtt_avg_ms", default, skip_serializing_if = "Option::is_none", with = "opt_duration_ms")]
    pub rtt_avg: Option<Duration>,
    /// 95th percentile (nearest rank) of the round-trip times.
    #[serde(rename = "rtt_p95_ms", default, skip_serializing_if = "Option::is_none", with = "opt_duration_ms")]
    pub rtt_p95: Option<Duration>,
    #[serde(rename = "rtt_max_ms", default, skip_serializing_if = "Option::is_none", with = "opt_duration_ms")]
    pub rtt_max: Option<Duration>,
    /// RFC 3550 §6.4.1 interarrival jitter at the end of the stream (the value an RTCP
    /// receiver report would carry), and the highest value it reached.
    #[serde(rename = "jitter_ms", default, skip_serializing_if = "Option::is_none", with = "opt_duration_ms")]
    pub jitter: Option<Duration>,
    #[serde(
        rename = "jitter_max_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms"
    )]
    pub jitter_max: Option<Duration>,
    /// ITU-T G.107 (simplified) transmission rating for G.711 and its MOS estimate, from
    /// `one_way_loss` and `one_way_delay` (the same per-leg figures the thresholds judge).
    /// With nothing back: R 0 and MOS 1.0, the scale's floor (100 % loss), so an alert on a
    /// low MOS still fires.
    pub r_factor: f64,
    pub mos: f64,
    /// How long the stream ran (first send to the end of the drain wait).
    #[serde(rename = "duration_ms", with = "duration_ms")]
    pub duration: Duration,
    /// One-way crossings of the client's path (client ↔ relay, or client ↔ echo) in one round
    /// trip: 2 for `udp_echo` and `turn_peer`, 4 for `turn_pair` (A → relay → B's client →
    /// relay → A, both clients behind the same egress).
    #[serde(default)]
    pub crossings: u32,
    /// Loss of one crossing, `1 − (1 − loss)^(1/crossings)`: what one direction of the
    /// softphone's leg loses if every crossing loses alike. Judged against `max_loss`.
    #[serde(default)]
    pub one_way_loss: f64,
    /// Round trip of one client leg, `rtt_avg · 2 / crossings`. Judged against `max_rtt`.
    #[serde(
        rename = "leg_rtt_avg_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms"
    )]
    pub leg_rtt_avg: Option<Duration>,
    /// The E-model's mouth-to-ear delay: `rtt_avg / crossings` + 2 · jitter + one packet.
    #[serde(
        rename = "one_way_delay_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms"
    )]
    pub one_way_delay: Option<Duration>,
    /// The run's deadline ended sending before `duration` (set-up took the rest of the time):
    /// the stream fails `media/timeout`, its figures cover only what was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Packets sent in the last drain window before the deadline cut the stream, not back
    /// yet: still in flight, counted neither as received nor as lost.
    #[serde(default)]
    pub in_flight: u32,
    /// Sends more than one packet time after their slot (the probe host was busy), and the
    /// latest one.
    #[serde(default)]
    pub late_sends: u32,
    #[serde(rename = "send_late_max_ms", with = "duration_ms", default)]
    pub send_late_max: Duration,
}

/// ICE gathering facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IceDetails {
    /// Candidates gathered per type (`host`, `srflx`, `prflx`, `relay`).
    pub candidates: BTreeMap<String, u32>,
    /// Time from gathering start to the first candidate of each type.
    #[serde(rename = "first_arrival_ms", alias = "first_arrival", with = "map_duration_ms")]
    pub first_arrival: BTreeMap<String, Duration>,
    /// Server URL that produced each relay candidate.
    pub relay_servers: Vec<String>,
    /// Servers the ICE agent cannot use (e.g. `turns:`/TCP in webrtc-ice), with why.
    pub unsupported: Vec<String>,
    /// Whether gathering completed before the deadline.
    pub complete: bool,
    /// Server errors seen while gathering (e.g. a TURN 401), for humans.
    pub server_errors: Vec<String>,
    /// With `connectivity: true`: time to Connected and the selected pair's types.
    #[serde(rename = "connected_after_ms", alias = "connected_after", default, with = "opt_duration_ms")]
    pub connected_after: Option<Duration>,
    pub selected_pair: Option<String>,
    /// With `connectivity: true`: the selected pair by candidate types and protocols (never
    /// addresses) and its round-trip time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<IcePair>,
    /// With `connectivity: true`: the round-trip time through the relay of each relay
    /// protocol that connected (`udp`, `tcp`, `tls`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rtt_via: BTreeMap<String, RttStats>,
    /// Every agent was closed (sockets released, TURN allocations refreshed to lifetime 0)
    /// and every TURN/TCP and TURN/TLS allocation's Refresh(0) was confirmed, before the
    /// deadline (plus a short grace); false when the release continued in the background.
    #[serde(default)]
    pub released: bool,
    /// Relay candidates per relay protocol (`udp`, `tcp`, `tls`, as Chromium's
    /// `relayProtocol`): one entry per protocol a TURN server is configured for, 0 when none
    /// arrived.
    #[serde(default)]
    pub relay_protocols: BTreeMap<String, u32>,
    /// Time from gathering start to the first relay candidate of each relay protocol.
    #[serde(rename = "first_relay_ms", default, with = "map_duration_ms")]
    pub first_relay: BTreeMap<String, Duration>,
    /// Every relay candidate with its protocol and server, in arrival order.
    #[serde(default)]
    pub relays: Vec<IceRelay>,
    /// With `connectivity: true`: time from the first check to success through a relay of
    /// each relay protocol that was checked.
    #[serde(rename = "connected_via_ms", default, with = "map_duration_ms")]
    pub connected_via: BTreeMap<String, Duration>,
}

/// A candidate pair that carried the connectivity check, without its addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IcePair {
    /// `host`, `srflx`, `prflx`, `relay`.
    pub local_type: String,
    /// The candidate's own transport (`udp`; a relayed address is always UDP).
    pub local_protocol: String,
    pub remote_type: String,
    pub remote_protocol: String,
    /// How the client reaches the TURN server the pair goes through (`udp`, `tcp`, `tls`),
    /// when one end is a relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_protocol: Option<String>,
    /// Round trips over the pair after it connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<RttStats>,
    /// How `rtt` was measured: `data_echo` (datagrams over the agents' connection, echoed by
    /// the remote agent) or `stun_binding` (Binding transactions relayed between two TURN
    /// allocations, answered by the remote side).
    pub rtt_method: String,
}

/// One relay candidate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IceRelay {
    /// How the client reaches the TURN server: `udp`, `tcp` or `tls` (Chromium's
    /// `relayProtocol`). The relayed address itself is always UDP.
    pub protocol: String,
    /// The relayed transport address (`ip:port`).
    pub address: String,
    /// The TURN server URI that gave it (or a description when it cannot be told).
    pub server: String,
    /// Time from gathering start to this candidate.
    #[serde(rename = "at_ms", with = "duration_ms")]
    pub at: Duration,
}

/// `kind: udp_ports`: this run's sample and what is known of the whole set so far. Ports are
/// always given as ranges (`"20000-20049"`, a single port as `"3478"`), never one label each.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpPortsDetails {
    /// The configured set, e.g. `16384-65535`.
    pub set: String,
    /// Ports in the set.
    pub set_size: u32,
    /// The address the datagrams went to.
    pub target: Option<IpAddr>,
    /// Ports probed in this run.
    pub sampled: u32,
    /// Of those, how many echoed / are closed (silent after a full retry in this run *and* an
    /// earlier one).
    pub sampled_open: u32,
    pub sampled_closed: u32,
    /// Silent after a full retry for the first time: re-tested first in the next run before
    /// being called closed (one lost datagram and its lost retry are not a firewall).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sampled_silent_once: u32,
    /// No result: the deadline cut the retry's wait (neither open nor closed; tried again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sampled_unknown: u32,
    /// This run's closed ports, as ranges of consecutive ports (at most the sample).
    pub sampled_closed_ranges: Vec<String>,
    /// Ports of the set whose echo came back, the last time each was tried (all runs so far).
    pub open: Vec<String>,
    /// Ports of the set closed: silent after a full retry in two separate runs (the latest
    /// two results of each).
    pub closed: Vec<String>,
    /// Ranges left out of `open`/`closed` (each list is bounded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_ranges: u32,
    pub open_ports: u32,
    pub closed_ports: u32,
    /// Ports of the set silent in one run so far, waiting for their re-test.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub silent_once: u32,
    /// Ports of the set with a settled result (open or closed) since the probe was loaded, and
    /// that share.
    pub covered: u32,
    pub coverage: f64,
    /// Echo round trips of this run's answered first transmissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<RttStats>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Who answered a connection attempt with a reject or an unreachable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectOrigin {
    /// The address the reject came from (ICMP offender, or the target for a RST).
    pub address: IpAddr,
    /// True when it is the target's own address (a RST or the target's port unreachable).
    pub is_target: bool,
    /// What came back: `rst`, `port_unreachable`, `admin_prohibited`, `unreachable`, ...
    pub answer: String,
    /// How many hops out the answer came from, when a trace knows it (`kind: path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<u32>,
}

impl RejectOrigin {
    /// "refused by 10.0.0.1 (not the server, port_unreachable)"; for a RST, which always carries
    /// the server's address, "refused with a RST from the server's own address 10.0.0.2 (...)".
    pub fn phrase(&self, verb: &str) -> String {
        if self.is_target && self.answer == "rst" {
            format!(
                "{verb} with a RST from the server's own address {} (nothing listens there, or a firewall resets in its name)",
                self.address
            )
        } else if self.is_target {
            format!("{verb} by the server itself ({}, {})", self.address, self.answer)
        } else {
            match self.hop {
                Some(h) => format!("{verb} by {} (not the server, {h} hops out, {})", self.address, self.answer),
                None => format!("{verb} by {} (not the server, {})", self.address, self.answer),
            }
        }
    }
}

/// `kind: path`: a TTL-stepped trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PathDetails {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub port: u16,
    /// The address traced towards.
    pub target: Option<IpAddr>,
    /// How the trace ran: `unprivileged` (UDP/TCP sockets with IP_RECVERR, no raw sockets).
    pub mode: String,
    /// One entry per TTL sent, in order.
    pub hops: Vec<PathHop>,
    /// `reached`, `rejected`, `unreachable` or `silence`.
    pub end: String,
    /// Hops to the target, or to the last hop that answered (0: none did).
    pub end_hop: u32,
    /// The last TTL whose hop answered (time exceeded or the final answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_answered: Option<u32>,
    /// Who ended the trace with a reject (end `rejected`/`unreachable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<RejectOrigin>,
}

/// One TTL of a trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PathHop {
    pub ttl: u32,
    /// Who answered (`None`: silence).
    pub address: Option<IpAddr>,
    #[serde(rename = "rtt_ms", default, with = "opt_duration_ms")]
    pub rtt: Option<Duration>,
    /// `time_exceeded`, `reached`, `rst`, `port_unreachable`, `admin_prohibited`,
    /// `unreachable`, `silence`.
    pub answer: String,
    /// Probes sent at this TTL.
    pub sent: u32,
}

/// The result for one resolved server address under `addresses: all`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddressResult {
    pub address: SocketAddr,
    pub success: bool,
    pub failure: Option<Failure>,
    #[serde(rename = "total_ms", alias = "total", with = "duration_ms")]
    pub total: Duration,
    /// What this address's TLS handshake showed (tls-based probes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsDetails>,
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::super::ms(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let ms = Option::<f64>::deserialize(d)?;
        Ok(ms
            .filter(|m| m.is_finite() && *m >= 0.0)
            .map(|m| Duration::from_secs_f64(m / 1000.0)))
    }
}

mod vec_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| super::super::ms(*d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<f64>::deserialize(d)?;
        Ok(v.into_iter()
            .filter(|m| m.is_finite() && *m >= 0.0)
            .map(|m| Duration::from_secs_f64(m / 1000.0))
            .collect())
    }
}

mod map_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, d)| (k, super::super::ms(*d))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
        let m = BTreeMap::<String, f64>::deserialize(d)?;
        Ok(m.into_iter()
            .filter(|(_, v)| v.is_finite() && *v >= 0.0)
            .map(|(k, v)| (k, Duration::from_secs_f64(v / 1000.0)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_details_serialise_durations_as_ms_keys_and_read_back() {
        let m = MediaDetails {
            path: "turn_pair".into(),
            packet: Duration::from_millis(20),
            rtt_p95: Some(Duration::from_micros(20_476)),
            jitter: Some(Duration::from_micros(123)),
            mos: 3.89,
            ..Default::default()
        };
        let d = Details {
            media: Some(m.clone()),
            ..Default::default()
        };
        let json = serde_json::to_string(&d).unwrap();
        for key in [
            r#""packet_ms":20.0"#,
            r#""rtt_p95_ms":20.476"#,
            r#""jitter_ms":0.123"#,
            r#""mos":3.89"#,
        ] {
            assert!(json.contains(key), "{key} missing in {json}");
        }
        let back: Details = serde_json::from_str(&json).unwrap();
        assert_eq!(back.media, Some(m));
        // Reports written before `media` existed read as having none.
        let old: Details = serde_json::from_str("{}").unwrap();
        assert_eq!(old.media, None);
    }

    #[test]
    fn rtt_stats_summarise_loss_and_jitter() {
        let ms = Duration::from_millis;
        let s = RttStats::from_samples(4, vec![ms(10), ms(20), ms(10)]);
        assert_eq!(s.received, 3);
        assert!((s.loss - 0.25).abs() < 1e-9);
        assert_eq!(s.min, ms(10));
        assert_eq!(s.max, ms(20));
        assert_eq!(s.jitter, ms(10));
        let empty = RttStats::from_samples(3, vec![]);
        assert!((empty.loss - 1.0).abs() < 1e-9);
    }
}
