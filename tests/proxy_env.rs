//! `proxy: env`: `HTTPS_PROXY` picks the proxy and `NO_PROXY` exempts hosts. Its own test
//! binary with one test, because it sets process environment variables.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::signalling::{http_server, Tinyproxy};
use egress_probe::config::{HttpMethod, HttpSpec, ProbeSpec, ProxySetting, StatusRange, TlsOptions};
use egress_probe::outcome::Phase;
use egress_probe::probe::{self, effective_proxy, ProbeContext};

#[test]
fn https_proxy_from_env_and_no_proxy_bypass() {
    let tp = Tinyproxy::start(None, &[]);
    // Set before any thread or runtime exists (setenv is not thread-safe).
    std::env::set_var("HTTPS_PROXY", format!("127.0.0.1:{}", tp.port));
    std::env::set_var("NO_PROXY", "localhost,.internal.test");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = http_server(true).await;
        let proxy = effective_proxy(Some(&ProxySetting::Env), None);
        assert_eq!(proxy.as_ref().map(|p| p.port), Some(tp.port));
        let spec = |host: &str| {
            ProbeSpec::Http(HttpSpec {
                auth: None,
                url: url::Url::parse(&format!("https://{host}:{}/ok", server.port)).unwrap(),
                method: HttpMethod::Get,
                headers: BTreeMap::new(),
                body: None,
                expect_status: vec![StatusRange { low: 200, high: 200 }],
                expect_body: None,
                follow_redirects: 0,
                tls: TlsOptions {
                    ca_file: Some(server.ca_file()),
                    ..Default::default()
                },
            })
        };
        let ctx = || ProbeContext::with_timeout(Duration::from_secs(5), proxy.clone());

        // 127.0.0.1 is not exempt: through the proxy.
        let out = probe::run(&spec("127.0.0.1"), &ctx()).await;
        assert!(out.success, "{out:?}");
        assert_eq!(out.phases[0].phase, Phase::Proxy);

        // localhost is in NO_PROXY: direct.
        let out = probe::run(&spec("localhost"), &ctx()).await;
        assert!(out.success, "{out:?}");
        assert_eq!(out.phases[0].phase, Phase::Resolve);
        assert!(out.detail.peer.is_some());
    });
    let log = tp.log();
    assert!(log.contains("CONNECT"), "{log}");
    assert!(!log.contains("localhost"), "localhost went through the proxy: {log}");
}
