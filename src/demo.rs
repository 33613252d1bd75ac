//! The embedded default (`check --demo`, `run --demo`): the responder on loopback with
//! ephemeral ports and a fresh private CA, and a config that exercises every probe kind
//! against it, so the main command works on a fresh machine with no network.
//!
//! The config is rendered as YAML by [`render_yaml`] and loaded by the normal loader, so the
//! demo goes through exactly the validation and defaults a user's file does, and
//! `probes/demo.yaml` (the same probes for a responder started by hand on the default and
//! non-root alternate ports, see its header) is this function's output for those ports — a
//! test keeps the two identical. Credentials are random per start.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::responder::config::DEMO_DNS_NAME;
use crate::responder::{Responder, ResponderConfig};

/// A running demo: the config to probe, and the responder (with its temporary CA file) kept
/// alive until this is dropped.
pub struct Demo {
    pub config: Config,
    /// The responder being probed (its `/metrics` shows what the probes left open).
    pub responder: Responder,
}

/// Where the demo probes point, and with what credentials.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub turn_udp: SocketAddr,
    pub turn_tcp: SocketAddr,
    pub turn_tls: SocketAddr,
    /// HTTPS + WSS.
    pub web: SocketAddr,
    pub dns: SocketAddr,
    /// The UDP echo (`kind: udp_ports` probes its one port).
    pub udp_echo: SocketAddr,
    pub ca_file: PathBuf,
    pub user: String,
    pub password: String,
    pub rest_secret: String,
}

/// Starts the built-in responder on loopback (ephemeral ports) and builds the demo config.
pub async fn start() -> anyhow::Result<Demo> {
    let password = random_token();
    let rest_secret = random_token();
    let mut cfg = ResponderConfig::loopback_ephemeral();
    cfg.users.insert("demo".into(), crate::config::Secret::literal(password.clone()));
    cfg.rest_secret = Some(crate::config::Secret::literal(rest_secret.clone()));
    let responder = Responder::start(&cfg).await.context("starting the demo responder")?;
    let a = &responder.addrs;
    let first = |v: &[SocketAddr], what: &str| v.first().copied().with_context(|| format!("demo responder has no {what} listener"));
    let endpoints = Endpoints {
        turn_udp: first(&a.turn_udp, "STUN/TURN udp")?,
        turn_tcp: first(&a.turn_tcp, "STUN/TURN tcp")?,
        turn_tls: first(&a.turn_tls, "TURN tls")?,
        web: first(&a.web, "HTTPS")?,
        dns: first(&a.dns, "DNS")?,
        udp_echo: first(&a.udp_echo, "UDP echo")?,
        ca_file: responder.tls.ca_file.clone().context("demo responder has no CA file")?,
        user: "demo".into(),
        password,
        rest_secret,
    };
    let config = crate::config::parse_str(&render_yaml(&endpoints, ""), "<demo>").map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    Ok(Demo { config, responder })
}

/// The demo probe set for `e`, as YAML (`header` is prepended verbatim).
pub fn render_yaml(e: &Endpoints, header: &str) -> String {
    let ca = e.ca_file.display();
    let (user, pass, secret) = (&e.user, &e.password, &e.rest_secret);
    let (udp, tcp, tls, web, dns) = (e.turn_udp, e.turn_tcp, e.turn_tls, e.web, e.dns);
    format!(
        r#"{header}defaults: {{ interval: 30s, timeout: 5s }}
# The demo shows every family, the opt-in per-phase and RTT histograms included.
metrics: {{ histograms: per_phase }}
probes:
  - name: demo-dns
    kind: dns
    query: {DEMO_DNS_NAME}
    resolver: {dns}
    expect: {{ contains: ["{dns_ip}"] }}
  - name: demo-tcp
    kind: tcp
    target: {web}
  - name: demo-tls
    kind: tls
    target: {web}
    ca_file: {ca}
    alpn: [http/1.1]
  - name: demo-https
    kind: http
    url: https://{web}/
    ca_file: {ca}
    expect_status: [200]
    expect_body: egress-probe responder
  - name: demo-wss
    kind: websocket
    url: wss://{web}/echo
    ca_file: {ca}
    ping: 3
    send: hello from egress-probe
    expect: ^hello from egress-probe$
  - name: demo-stun-udp
    kind: stun
    server: stun:{udp}?transport=udp
  - name: demo-stun-tcp
    kind: stun
    server: stun:{tcp}?transport=tcp
  - name: demo-turn-udp
    kind: turn
    server: turn:{udp}?transport=udp
    credentials: {{ username: {user}, password: {pass} }}
  - name: demo-turn-tcp
    kind: turn
    server: turn:{tcp}?transport=tcp
    credentials: {{ rest_secret: {secret}, rest_user: demo }}
    channel: true
  - name: demo-turn-tls
    kind: turn
    server: turns:{tls}?transport=tcp
    credentials: {{ username: {user}, password: {pass} }}
    ca_file: {ca}
  - name: demo-ice
    kind: ice
    servers:
      - stun:{udp}
      - url: turn:{udp}?transport=udp
        credentials: {{ username: {user}, password: {pass} }}
      - url: turns:{tls}?transport=tcp
        credentials: {{ username: {user}, password: {pass} }}
    ca_file: {ca}
    expect: [srflx, relay]
  - name: demo-udp-ports
    kind: udp_ports
    host: {echo_ip}
    ports: "{echo_port}"
    sample: 1
    port_timeout: 200ms
"#,
        echo_ip = e.udp_echo.ip(),
        echo_port = e.udp_echo.port(),
        dns_ip = udp.ip(),
    )
}

/// 128 random bits as hex: demo credentials nobody can guess, new at every start.
fn random_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `probes/demo.yaml` is `render_yaml` for a responder started by hand (its header says
    /// how); this keeps the file and the embedded demo from drifting apart.
    #[test]
    fn probes_demo_yaml_is_the_rendered_demo_for_the_default_ports() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/probes/demo.yaml");
        let expected = render_yaml(&static_endpoints(), STATIC_HEADER);
        if std::env::var_os("EGRESS_REGENERATE_DEMO_YAML").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let file = std::fs::read_to_string(path).unwrap();
        assert!(
            file == expected,
            "probes/demo.yaml differs from demo::render_yaml; regenerate it: EGRESS_REGENERATE_DEMO_YAML=1 cargo test --lib demo"
        );
    }

    fn static_endpoints() -> Endpoints {
        let lo = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Endpoints {
            turn_udp: lo(3478),
            turn_tcp: lo(3478),
            turn_tls: lo(5349),
            web: lo(8443),
            dns: lo(8053),
            udp_echo: lo(3479),
            ca_file: PathBuf::from("/tmp/egress-probe-demo/ca.pem"),
            user: "demo".into(),
            password: "demo-password".into(),
            rest_secret: "demo-rest-secret".into(),
        }
    }

    const STATIC_HEADER: &str = "\
# yaml-language-server: $schema=../docs/config.schema.json
#
# The demo probe set (what `check --demo` runs) for a responder started by hand on loopback
# with the default STUN/TURN ports and the non-root alternates (no root needed):
#
#   egress-probe responder --bind 127.0.0.1 --web 8443 --dns 8053 \\
#       --user demo:demo-password --rest-secret demo-rest-secret --tls-dir /tmp/egress-probe-demo
#   egress-probe check --config probes/demo.yaml
#
# The responder writes the CA to /tmp/egress-probe-demo/ca.pem, which must exist before this
# file validates. Generated by demo::render_yaml (a unit test keeps them identical).
";
}
