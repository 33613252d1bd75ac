//! The call-quality stream (`media:`) against real things: the responder's own UDP echo
//! (`kind: media`), a real coturn (`media:` on a turn probe, between two allocations and to the
//! echo through one), and a userspace impairment relay on loopback (no netem here) that drops
//! every 20th datagram and delays each by a fixed amount. Streams are 2 s (100 packets of 20 ms)
//! so loss is exact: 5 of 100.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::coturn::{Coturn, CoturnOptions};
use common::impair::Impair;
use egress_probe::config::{
    AddressMode, Credentials, HostPort, IceUrl, MediaProbeSpec, MediaSpec, MediaThresholds, ProbeSpec, Secret, TlsOptions, TurnSpec,
};
use egress_probe::outcome::details::MediaDetails;
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};
use egress_probe::report::ProbeResult;
use egress_probe::responder::{Responder, ResponderConfig};

/// Delay the impairment relay adds to every datagram.
const DELAY: Duration = Duration::from_millis(20);

fn stream(secs: u64) -> MediaSpec {
    MediaSpec {
        duration: Duration::from_secs(secs),
        ..MediaSpec::default()
    }
}

async fn echo() -> (Responder, SocketAddr) {
    let r = Responder::start(&ResponderConfig::loopback_ephemeral())
        .await
        .expect("responder starts");
    let addr = r.addrs.udp_echo[0];
    (r, addr)
}

/// Runs `spec` as the scheduler would: timeout plus the stream's duration.
async fn run(spec: ProbeSpec) -> Outcome {
    let ctx = ProbeContext::with_timeout(Duration::from_secs(5) + spec.hold(), None);
    probe::run(&spec, &ctx).await
}

fn udp_media(target: SocketAddr, media: MediaSpec) -> ProbeSpec {
    ProbeSpec::Media(MediaProbeSpec {
        target: HostPort::parse(&target.to_string(), None).expect("target"),
        media,
    })
}

fn turn_media(url: &str, tls: TlsOptions, media: MediaSpec) -> ProbeSpec {
    turn_media_on(url, tls, media, false)
}

fn turn_media_on(url: &str, tls: TlsOptions, media: MediaSpec, channel: bool) -> ProbeSpec {
    ProbeSpec::Turn(TurnSpec {
        server: IceUrl::parse(url).expect("url"),
        credentials: Credentials::LongTerm {
            username: Secret::literal("test"),
            password: Secret::literal("secret"),
        },
        count: 3,
        size: 100,
        channel,
        addresses: AddressMode::First,
        tls,
        media: Some(media),
        concurrent: 1,
    })
}

fn media_of(out: &Outcome) -> &MediaDetails {
    out.detail.media.as_ref().unwrap_or_else(|| panic!("no media details: {out:#?}"))
}

fn code(out: &Outcome) -> String {
    out.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "success".into())
}

fn ms(d: Option<Duration>) -> f64 {
    d.expect("packets came back, so the figure is there").as_secs_f64() * 1000.0
}

fn show(what: &str, m: &MediaDetails) {
    println!(
        "{what}: sent {} received {} loss {:.3} burst {} reordered {} rtt min/avg/p95/max {:.3}/{:.3}/{:.3}/{:.3} ms jitter {:.3} ms (max {:.3}) R {} MOS {} skipped {}",
        m.sent,
        m.received,
        m.loss,
        m.longest_loss_burst,
        m.reordered,
        ms(m.rtt_min),
        ms(m.rtt_avg),
        ms(m.rtt_p95),
        ms(m.rtt_max),
        ms(m.jitter),
        ms(m.jitter_max),
        m.r_factor,
        m.mos,
        m.skipped_ticks
    );
}

/// What `check` says about probe "call" of `spec` that ended in `out`.
fn verdict(spec: &ProbeSpec, out: &Outcome) -> String {
    let result = ProbeResult {
        name: "call".into(),
        kind: spec.kind().into(),
        target: spec.target(),
        endpoint: spec.endpoint(),
        outcome: out.clone(),
    };
    egress_probe::report::verdict::verdicts(&[result]).join("\n")
}

/// Every 20th of the packets sent dropped: 5 %, within one point when a busy machine skipped
/// a few pacing slots (fewer packets sent, the same drop rule).
fn assert_five_percent(m: &MediaDetails) {
    assert_eq!(m.sent + m.skipped_ticks, m.planned, "{m:?}");
    assert!((m.loss - 0.05).abs() <= 0.01, "loss {} not 5 % ± 1", m.loss);
    assert_eq!(m.longest_loss_burst, 1, "every 20th: bursts of one");
}

/// The injected delay shows in the round trip within 1 ms: the fastest impaired round trip is
/// the fastest clean one plus the delay. The minimum, because it is what a shared, busy test
/// machine does not disturb (a scheduling hiccup only ever adds time); the average is reported
/// and can only be higher.
fn assert_delay_seen(clean: &MediaDetails, impaired: &MediaDetails) {
    let added = ms(impaired.rtt_min) - ms(clean.rtt_min);
    assert!(
        (added - ms(Some(DELAY))).abs() < 1.0,
        "fastest round trip grew by {added:.3} ms, injected {} ms",
        ms(Some(DELAY))
    );
    assert!(impaired.rtt_avg >= impaired.rtt_min && impaired.rtt_avg >= Some(DELAY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stream_to_the_responders_udp_echo_loses_nothing_and_rates_a_high_mos() {
    let (_r, echo) = echo().await;
    let out = run(udp_media(echo, stream(2))).await;
    assert!(out.success, "{}: {out:#?}", code(&out));
    let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, [Phase::Resolve, Phase::Media]);
    let m = media_of(&out);
    show("clean udp echo", m);
    assert_eq!(m.path, "udp_echo");
    assert_eq!(m.planned, 100);
    assert_eq!(m.sent + m.skipped_ticks, m.planned, "{m:?}");
    assert!(m.sent >= 80, "{m:?}");
    assert_eq!((m.received, m.loss, m.duplicates), (m.sent, 0.0, 0));
    assert!(m.mos >= 4.3, "{m:?}");
    assert!(m.rtt_min <= m.rtt_avg && m.rtt_avg <= m.rtt_max && m.rtt_p95 <= m.rtt_max, "{m:?}");
    let media_time = out.phase_time(Phase::Media).expect("media phase");
    assert!(
        media_time >= Duration::from_millis(1950) && media_time < Duration::from_millis(3000),
        "a 2 s stream took {media_time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_twentieth_packet_dropped_and_a_fixed_delay_read_five_percent_loss_the_delay_and_media_loss() {
    let (_r, echo) = echo().await;
    let clean = run(udp_media(echo, stream(2))).await;
    assert!(clean.success, "{}", code(&clean));
    let impair = Impair::start(echo, 20, DELAY);
    let out = run(udp_media(impair.addr, stream(2))).await;
    let (c, m) = (media_of(&clean), media_of(&out));
    show("clean", c);
    show("impaired", m);
    assert_five_percent(m);
    assert_delay_seen(c, m);
    assert!(m.mos < c.mos, "impaired MOS {} not below clean {}", m.mos, c.mos);
    // 5 % is above the default max_loss of 1 %.
    assert_eq!(code(&out), "media/loss");
    let msg = &out.failure.as_ref().expect("failure").message;
    assert!(msg.contains("above max_loss 1.0%"), "{msg}");
    assert_eq!(impair.dropped.load(std::sync::atomic::Ordering::Relaxed), m.sent / 20);
    // `check` says it in words: the path works, the quality does not.
    let said = verdict(&udp_media(impair.addr, stream(2)), &out);
    assert!(
        said.contains(&format!(
            "Media over UDP to {} on 127.0.0.1 gets through but not at call quality (media/loss: loss {:.1}%",
            impair.addr.port(),
            m.loss * 100.0
        )),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_above_max_rtt_is_media_rtt_and_a_low_mos_is_media_mos() {
    // The same thresholds pass on the clean echo and fail behind the delay: the delay, not
    // the thresholds, makes the failure.
    let (_r, echo) = echo().await;
    let impair = Impair::start(echo, 0, DELAY);
    let mut media = stream(1);
    media.thresholds.max_rtt = Duration::from_millis(10);
    let clean = run(udp_media(echo, media.clone())).await;
    assert!(clean.success, "{}: {clean:#?}", code(&clean));
    let out = run(udp_media(impair.addr, media.clone())).await;
    assert_eq!(code(&out), "media/rtt", "{out:#?}");
    assert_eq!(media_of(&out).loss, 0.0);
    // 600 ms added on the way out (answers come straight back): the one-way estimate is half
    // the round trip, ≈ 300 ms, plus 20 ms of packetisation, past the E-model's 177 ms knee
    // (R ≈ 70, MOS ≈ 3.6), while loopback rates 4.4.
    let slow = Impair::start(echo, 0, Duration::from_millis(600));
    media.thresholds = MediaThresholds {
        max_rtt: Duration::from_secs(2),
        min_mos: Some(4.3),
        ..MediaThresholds::default()
    };
    let clean = run(udp_media(echo, media.clone())).await;
    assert!(clean.success, "{}: {clean:#?}", code(&clean));
    let out = run(udp_media(slow.addr, media)).await;
    assert_eq!(code(&out), "media/mos", "{out:#?}");
    let m = media_of(&out);
    assert!(m.mos < 4.3 && m.mos < media_of(&clean).mos, "{m:?}");
    assert!(m.one_way_delay >= Some(Duration::from_millis(300)), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_before_the_streams_end_is_media_timeout_not_a_short_clean_call() {
    let (_r, echo) = echo().await;
    // 1 s of timeout for a 2 s stream: /probe's scrape-timeout-capped deadline does this.
    let ctx = ProbeContext::with_timeout(Duration::from_secs(1), None);
    let out = probe::run(&udp_media(echo, stream(2)), &ctx).await;
    assert_eq!(code(&out), "media/timeout", "{out:#?}");
    let msg = &out.failure.as_ref().expect("failure").message;
    assert!(
        msg.starts_with("the deadline left ") && msg.contains(" of 2.0 s for the stream: "),
        "{msg}"
    );
    let m = media_of(&out);
    assert!(m.truncated && m.sent < m.planned, "{m:?}");
    assert_eq!(m.loss, 0.0, "packets in flight at the cut are not lost: {m:?}");
    // No time left at all: nothing sent, still a timeout (never a perfect MOS from nothing).
    let ctx = ProbeContext::with_timeout(Duration::ZERO, None);
    let out = probe::run(&udp_media(echo, stream(1)), &ctx).await;
    assert_eq!(code(&out), "media/timeout", "{out:#?}");
    assert_eq!(media_of(&out).sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_stream_cut_by_the_deadline_is_media_timeout_and_both_allocations_are_released() {
    let turn = Coturn::start(CoturnOptions::default());
    let url = format!("turn:127.0.0.1:{}", turn.port);
    let ctx = ProbeContext::with_timeout(Duration::from_millis(2500), None);
    let out = probe::run(&turn_media(&url, TlsOptions::default(), stream(3)), &ctx).await;
    assert_eq!(code(&out), "media/timeout", "{out:#?}");
    assert!(media_of(&out).truncated);
    assert!(out.detail.relay.as_ref().is_some_and(|r| r.deallocated), "{out:#?}");
    assert_eq!(turn.allocation_counts(), (2, 2), "every allocation released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_which_nothing_comes_back_is_media_loss_and_the_verdict_says_so() {
    let (_r, echo) = echo().await;
    let blackhole = Impair::start(echo, 1, Duration::ZERO); // drops every datagram
    let spec = udp_media(blackhole.addr, stream(1));
    let out = run(spec.clone()).await;
    assert_eq!(code(&out), "media/loss", "{out:#?}");
    assert_eq!(media_of(&out).received, 0);
    let said = verdict(&spec, &out);
    assert!(
        said.contains(&format!(
            "Media over UDP to {} on 127.0.0.1 does not come back: none of {} packets returned (media/loss)",
            blackhole.addr.port(),
            media_of(&out).sent
        )),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_a_port_where_nothing_listens_is_media_refused() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let out = run(udp_media(addr, stream(1))).await;
    assert_eq!(code(&out), "media/refused", "{out:#?}");
    assert_eq!(media_of(&out).received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stream_through_coturn_between_two_allocations_rates_high_and_releases_both_over_udp_channels_and_tls() {
    let turn = Coturn::start(CoturnOptions::default());
    for (url, tls, channel) in [
        (format!("turn:127.0.0.1:{}", turn.port), TlsOptions::default(), false),
        (format!("turn:127.0.0.1:{}", turn.port), TlsOptions::default(), true),
        (
            format!("turns:127.0.0.1:{}?transport=tcp", turn.tls_port),
            TlsOptions {
                ca_file: Some(turn.ca_file.clone()),
                ..Default::default()
            },
            false,
        ),
    ] {
        let out = run(turn_media_on(&url, tls, stream(2), channel)).await;
        assert!(out.success, "{url}: {}: {out:#?}", code(&out));
        let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
        assert_eq!(
            &phases[phases.len() - 3..],
            [Phase::Relay, Phase::Media, Phase::Close],
            "{phases:?}"
        );
        let m = media_of(&out);
        show(&url, m);
        assert_eq!(m.path, "turn_pair");
        assert_eq!(m.sent + m.skipped_ticks, m.planned, "{url}: {m:?}");
        assert!(m.sent >= 80 && m.loss <= 0.01, "{url}: {m:?}");
        assert!(m.mos >= 4.3, "{url}: {m:?}");
        assert!(out.detail.relay.as_ref().is_some_and(|r| r.deallocated), "{url}");
    }
    assert_eq!(turn.allocation_counts(), (6, 6), "every allocation released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_coturn_to_the_echo_an_impairment_relay_reads_five_percent_loss_and_the_delay() {
    let turn = Coturn::start(CoturnOptions::default());
    let (_r, echo) = echo().await;
    let url = format!("turn:127.0.0.1:{}", turn.port);
    let via = |peer: SocketAddr| MediaSpec {
        peer: Some(peer),
        ..stream(2)
    };
    let clean = run(turn_media(&url, TlsOptions::default(), via(echo))).await;
    assert!(clean.success, "{}: {clean:#?}", code(&clean));
    let impair = Impair::start(echo, 20, DELAY);
    let out = run(turn_media(&url, TlsOptions::default(), via(impair.addr))).await;
    let (c, m) = (media_of(&clean), media_of(&out));
    show("coturn → echo", c);
    show("coturn → impairment → echo", m);
    assert_eq!(m.path, "turn_peer");
    assert_five_percent(m);
    assert_delay_seen(c, m);
    assert!(m.mos < c.mos);
    assert_eq!(code(&out), "media/loss");
    assert_eq!(turn.allocation_counts(), (4, 4), "every allocation released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_a_media_probe_from_its_config_and_prints_the_call_quality_line() {
    let (_r, echo) = echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("media.yaml");
    std::fs::write(
        &cfg,
        format!("probes:\n  - name: call\n    kind: media\n    target: \"{echo}\"\n    timeout: 2s\n    media: {{duration: 1s, packet_ms: 10, payload: 80}}\n"),
    )
    .expect("write config");
    // Bounded by timeout(1); the responder runs in this process, so the check runs apart.
    let out = tokio::process::Command::new("timeout")
        .arg("30")
        .arg(common::bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .await
        .expect("timeout(1) and egress-probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // 100 slots of 10 ms; a busy test machine may skip one or two (never counted as loss).
    assert!(stdout.contains("call: media (udp_echo, "), "{stdout}");
    assert!(stdout.contains(" packets of 10 ms): loss 0.0% (longest burst 0)"), "{stdout}");
    assert!(stdout.contains("all paths work"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_responders_own_turn_server_to_its_echo_and_every_allocation_released() {
    let mut cfg = ResponderConfig::loopback_ephemeral();
    cfg.users = std::collections::BTreeMap::from([("test".to_string(), Secret::literal("secret"))]);
    let r = Responder::start(&cfg).await.expect("responder starts");
    let url = format!("turn:{}", r.addrs.turn_udp[0]);
    for peer in [None, Some(r.addrs.udp_echo[0])] {
        let media = MediaSpec { peer, ..stream(1) };
        let out = run(turn_media(&url, TlsOptions::default(), media)).await;
        assert!(out.success, "{peer:?}: {}: {out:#?}", code(&out));
        let m = media_of(&out);
        show(&m.path.clone(), m);
        assert_eq!(m.path, if peer.is_some() { "turn_peer" } else { "turn_pair" });
        assert!(m.loss <= 0.01 && m.mos >= 4.3, "{m:?}");
    }
    assert_eq!(r.active_allocations().await, 0, "allocations back to 0 on the responder");
}
