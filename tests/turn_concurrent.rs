//! `concurrent: N` on turn probes against a real coturn with `user-quota` / `total-quota`: a
//! quota shows up as the number of allocations granted at once and the first refusal's
//! `allocate/quota`, the count reaches `egress_probe_concurrent_established`, and every
//! allocation the probe made is released (coturn's log shows each one deleted by
//! Refresh(lifetime 0), and the full quota is available again right after).
mod common;

use std::time::Duration;

use common::coturn::{Coturn, CoturnOptions};
use egress_probe::config::{parse_str, Config, ProbeSpec};
use egress_probe::metrics::Metrics;
use egress_probe::outcome::{Outcome, Phase, Reason};
use egress_probe::probe::{self, ProbeContext};

fn quota(lines: &[&str]) -> Coturn {
    Coturn::start(CoturnOptions {
        extra: lines.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    })
}

/// A config with one turn probe `t` (YAML as a user writes it).
fn config(server: &str, concurrent: u32, extra: &str) -> Config {
    let yaml = format!(
        "probes:\n  - name: t\n    kind: turn\n    server: \"{server}\"\n    credentials: {{username: test, password: secret}}\n    concurrent: {concurrent}\n{extra}"
    );
    parse_str(&yaml, "turn_concurrent.yaml").expect("config")
}

async fn run(config: &Config) -> Outcome {
    let ctx = ProbeContext::with_timeout(Duration::from_secs(5), None);
    probe::run(&config.probes[0].spec, &ctx).await
}

/// Waits (bounded) until coturn's log shows `want` sessions of user `test` deleted; the count.
async fn sessions_deleted_within(turn: &Coturn, want: usize, limit: Duration) -> usize {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let n = turn
            .log_text()
            .lines()
            .filter(|l| l.contains(": delete: realm=") && l.contains("username=<test>"))
            .count();
        if n >= want || tokio::time::Instant::now() > end {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn established(out: &Outcome) -> (u32, u32) {
    let c = out
        .detail
        .concurrent
        .as_ref()
        .unwrap_or_else(|| panic!("concurrent details: {out:#?}"));
    (c.requested, c.established)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_at_once_against_a_user_quota_of_five_grant_five_and_the_first_refusal_is_allocate_quota() {
    let turn = quota(&["user-quota=5"]);
    let cfg = config(&format!("turn:127.0.0.1:{}", turn.port), 8, "");
    let out = run(&cfg).await;
    assert_eq!(established(&out), (8, 5), "{out:#?}");
    let f = out.failure.as_ref().expect("three refusals fail the run");
    assert_eq!((f.phase, f.reason.clone()), (Phase::Allocate, Reason::Quota), "{f:?}");
    assert_eq!(f.code(), "allocate/quota");
    assert!(f.message.contains(" of 8: ") && f.message.contains("486"), "{}", f.message);
    assert!(f.message.contains("5 of 8 established"), "{}", f.message);
    let relay = out.detail.relay.as_ref().expect("relay detail");
    assert!(relay.deallocated, "every granted allocation released and confirmed: {out:#?}");
    assert!(relay.relayed.is_some() || f.message.starts_with("allocation 1 "), "{relay:?}");
    // The verdict says it as a cap, with the number.
    let results = [egress_probe::report::ProbeResult::of("t", &cfg.probes[0].spec, out.clone())];
    let verdicts = egress_probe::report::verdict::assess(&results);
    assert_eq!(
        verdicts.first().map(|v| (v.rule, v.text.clone())),
        Some((
            "connection_cap",
            format!(
                "TURN on {} allows only 5 of 8 allocations at once (allocate/quota): an allocation quota of 5 (486: these credentials' own quota, or the server's total quota for all users); more parallel calls with these credentials are refused",
                turn.port
            )
        )),
        "{verdicts:#?}"
    );
    // coturn: five created, five deleted by our Refresh(0).
    assert_eq!(turn.allocation_counts(), (5, 5));

    // The count is exported as the same gauge websocket's concurrent uses.
    let metrics = Metrics::new(&cfg).expect("metrics");
    metrics.observe(&cfg.probes[0], &out);
    let text = metrics.render().expect("render");
    assert!(
        text.lines().any(|l| l == "egress_probe_concurrent_established{probe=\"t\"} 5"),
        "{text}"
    );

    // Nothing was left behind: the whole quota is free again, five at once all pass.
    // coturn deletes a released allocation's session (and frees its quota) at its next
    // one-second timer tick, so wait for its log to show all five deleted: 0 held.
    let deleted = sessions_deleted_within(&turn, 5, Duration::from_secs(4)).await;
    assert_eq!(deleted, 5, "coturn still holds allocations:\n{}", turn.log_text());
    let out = run(&config(&format!("turn:127.0.0.1:{}", turn.port), 5, "")).await;
    assert!(out.success, "{:?}", out.failure);
    assert_eq!(established(&out), (5, 5));
    assert!(out.detail.relay.as_ref().is_some_and(|r| r.deallocated));
    let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases.first(), Some(&Phase::Resolve), "{phases:?}");
    assert_eq!(&phases[phases.len() - 2..], &[Phase::Allocate, Phase::Close], "{phases:?}");
    assert_eq!(turn.allocation_counts(), (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_each_allocation_has_its_own_connection_and_a_total_quota_caps_them() {
    let turn = quota(&["total-quota=3"]);
    let cfg = config(&format!("turn:127.0.0.1:{}?transport=tcp", turn.port), 6, "");
    let out = run(&cfg).await;
    assert_eq!(established(&out), (6, 3), "{out:#?}");
    let f = out.failure.as_ref().expect("refusals fail the run");
    assert_eq!(f.phase, Phase::Allocate, "{f:?}");
    assert!(
        matches!(f.reason, Reason::Quota | Reason::Capacity),
        "a total quota is refused as quota (486) or capacity (508): {f:?}"
    );
    println!("total-quota refusal: {} {}", f.code(), f.message);
    assert!(f.message.contains("3 of 6 established"), "{}", f.message);
    assert!(out.detail.relay.as_ref().is_some_and(|r| r.deallocated && r.transport == "tcp"));
    assert_eq!(turn.allocation_counts(), (3, 3));
    assert_eq!(sessions_deleted_within(&turn, 3, Duration::from_secs(4)).await, 3);
    // Released: three at once pass again.
    let out = run(&config(&format!("turn:127.0.0.1:{}?transport=tcp", turn.port), 3, "")).await;
    assert!(out.success, "{:?}", out.failure);
    assert_eq!(turn.allocation_counts(), (6, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_four_at_once_are_granted_and_all_released() {
    let turn = quota(&[]);
    let cfg = config(
        &format!("turns:127.0.0.1:{}?transport=tcp", turn.tls_port),
        4,
        &format!("    ca_file: {}\n", turn.ca_file.display()),
    );
    let out = run(&cfg).await;
    assert!(out.success, "{:?}", out.failure);
    assert_eq!(established(&out), (4, 4));
    let relay = out.detail.relay.as_ref().expect("relay detail");
    assert!(
        relay.deallocated && relay.transport == "tls" && relay.allocate.is_some(),
        "{relay:?}"
    );
    let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
    assert!(phases.contains(&Phase::Tls), "{phases:?}");
    assert_eq!(turn.allocation_counts(), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_for_all_eight_is_allocate_auth_with_none_established() {
    let turn = quota(&[]);
    let yaml = format!(
        "probes:\n  - {{name: t, kind: turn, server: \"turn:127.0.0.1:{}\", credentials: {{username: test, password: not-the-pw-7Q}}, concurrent: 8}}\n",
        turn.port
    );
    let cfg = parse_str(&yaml, "x").expect("config");
    let out = run(&cfg).await;
    assert_eq!(established(&out), (8, 0));
    let f = out.failure.as_ref().expect("failure");
    assert_eq!(f.code(), "allocate/auth", "{f:?}");
    assert!(f.message.starts_with("allocation 1 of 8: "), "{}", f.message);
    assert!(
        !f.message.contains("not-the-pw-7Q"),
        "the password never reaches a message: {}",
        f.message
    );
    assert_eq!(turn.allocation_counts().0, 0);
}

#[test]
fn concurrent_on_turn_is_1_to_64_and_refuses_relay_keys_and_addresses_all_with_their_position() {
    let probe = |extra: &str| {
        format!("probes:\n  - name: t\n    kind: turn\n    server: turn:relay.example.test\n    credentials: {{username: u, password: p}}\n{extra}")
    };
    let c = parse_str(&probe("    concurrent: 64\n"), "x").unwrap();
    let ProbeSpec::Turn(t) = &c.probes[0].spec else { panic!() };
    assert_eq!(t.concurrent, 64);
    let ProbeSpec::Turn(t) = &parse_str(&probe(""), "x").unwrap().probes[0].spec else {
        panic!()
    };
    assert_eq!(t.concurrent, 1);
    // count with the default concurrent is still fine.
    assert!(parse_str(&probe("    count: 3\n    concurrent: 1\n"), "x").is_ok());
    for (extra, line, words) in [
        ("    concurrent: 0\n", 6, "concurrent"),
        ("    concurrent: 65\n", 6, "concurrent"),
        ("    concurrent: 4\n    channel: true\n", 7, "channel shapes the relay round trip"),
        ("    count: 3\n    concurrent: 4\n", 6, "count shapes the relay round trip"),
        (
            "    concurrent: 4\n    addresses: all\n",
            6,
            "cannot be combined with addresses: all",
        ),
    ] {
        let e = parse_str(&probe(extra), "x").unwrap_err().to_string();
        assert!(e.contains(words), "{extra}: {e}");
        assert!(e.contains(&format!(":{line}:")), "{extra}: line {line} expected in {e}");
    }
}
