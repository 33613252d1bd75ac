//! `egress-probe responder`: runs the endpoints probes need, outside the firewall, until
//! SIGTERM/SIGINT. Prints where each endpoint listens and how probes trust its TLS (CA file
//! and SPKI pin) on stdout, so the operator can paste them into a probe config.

use anyhow::Context;

use crate::cli::ResponderArgs;
use crate::config::Secret;
use crate::responder::config::{Listen, NatStunConfig, PortRange, DEMO_DNS_NAME};
use crate::responder::dns::DnsZone;
use crate::responder::{Responder, ResponderConfig, ResponderError};
use crate::shutdown::Signals;

/// Runs the subcommand; returns the exit code.
pub async fn main(args: ResponderArgs) -> anyhow::Result<u8> {
    let cfg = build_config(&args)?;
    // Handlers first: a SIGTERM during start-up must still end in a graceful shutdown.
    // SIGHUP keeps its default action: the responder has nothing to reload.
    let mut signals = Signals::install(false).context("installing the SIGTERM/SIGINT handlers")?;
    let responder = match Responder::start(&cfg).await {
        Ok(r) => r,
        Err(e) => return Err(anyhow::anyhow!(with_hint(e))),
    };
    print!("{}", summary(&responder));
    signals.stopped().await;
    tracing::info!("shutting down: closing WebSockets and TURN allocations");
    responder.shutdown().await;
    Ok(super::EXIT_OK)
}

/// Config file (or defaults) with flags applied on top.
pub fn build_config(args: &ResponderArgs) -> anyhow::Result<ResponderConfig> {
    let mut cfg = match &args.config {
        Some(p) => ResponderConfig::load(p)?,
        None => ResponderConfig::default(),
    };
    if let Some(b) = args.bind {
        cfg.bind = b;
    }
    if let Some(r) = args.relay_ip {
        cfg.relay_ip = Some(r);
    }
    if let Some(r) = &args.relay_ports {
        cfg.relay_ports = Some(PortRange::parse(r).map_err(|e| anyhow::anyhow!("--relay-ports: {e}"))?);
    }
    if let Some(r) = &args.realm {
        cfg.realm = r.clone();
    }
    for u in &args.users {
        let (user, pass) = u.split_once(':').context("--user must be USER:PASSWORD")?;
        let pass = Secret::resolve(pass).map_err(anyhow::Error::msg)?;
        cfg.users.insert(user.to_string(), pass);
    }
    if let Some(s) = &args.rest_secret {
        cfg.rest_secret = Some(Secret::resolve(s).map_err(anyhow::Error::msg)?);
    }
    for (flag, values, target) in [
        ("--turn-udp", &args.turn_udp, &mut cfg.turn.udp),
        ("--turn-tcp", &args.turn_tcp, &mut cfg.turn.tcp),
        ("--turn-tls", &args.turn_tls, &mut cfg.turn.tls),
        ("--web", &args.web, &mut cfg.web),
        ("--udp-echo", &args.udp_echo, &mut cfg.udp_echo),
    ] {
        if !values.is_empty() {
            *target = listeners(values).context(flag)?;
        }
    }
    if !args.dns.is_empty() || args.dns_name.is_some() {
        let zone = cfg.dns.get_or_insert_with(|| DnsZone {
            listen: vec![],
            name: DEMO_DNS_NAME.into(),
            addresses: vec![],
        });
        if !args.dns.is_empty() {
            zone.listen = listeners(&args.dns).context("--dns")?;
        }
        if let Some(n) = &args.dns_name {
            zone.name = n.clone();
        }
        if zone.listen.is_empty() {
            cfg.dns = None;
        }
    }
    // Flags override the file: --nat-stun its addresses, --nat-stun-ports its ports (each
    // keeps the file's other half).
    match (&args.nat_stun, &args.nat_stun_ports, &cfg.nat_stun) {
        (Some(ips), ports, file) => {
            let ports = ports.as_deref();
            let keep = file.as_ref().filter(|_| ports.is_none()).map(|n| n.ports.to_vec());
            cfg.nat_stun = Some(nat_stun(ips, ports, keep)?);
        }
        (None, Some(ports), Some(file)) => {
            let ips = match file.alternate {
                Some(a) => format!("{},{a}", file.primary),
                None => file.primary.to_string(),
            };
            cfg.nat_stun = Some(nat_stun(&ips, Some(ports), None)?);
        }
        (None, Some(_), None) => anyhow::bail!(
            "--nat-stun-ports needs the RFC 5780 server on: give --nat-stun PRIMARY[,ALTERNATE] or nat_stun: in the config file"
        ),
        (None, None, _) => {}
    }
    for c in &args.oauth2_clients {
        let (id, secret) = c.split_once(':').context("--oauth2-client must be ID:SECRET")?;
        let secret = Secret::resolve(secret).map_err(anyhow::Error::msg)?;
        cfg.oauth2_clients.insert(id.to_string(), secret);
    }
    if let Some(c) = args.websocket_cap {
        cfg.websocket_cap = Some(c);
    }
    if let Some(m) = &args.metrics {
        cfg.metrics = match m.as_str() {
            "none" => None,
            a => Some(a.parse().with_context(|| format!("--metrics {a:?}: expected ip:port or none"))?),
        };
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        cfg.tls.cert = Some(c.clone());
        cfg.tls.key = Some(k.clone());
    }
    if let Some(d) = &args.tls_dir {
        cfg.tls.dir = Some(d.clone());
    }
    if !args.tls_names.is_empty() {
        cfg.tls.names = args.tls_names.clone();
    }
    Ok(cfg)
}

/// `--nat-stun PRIMARY[,ALTERNATE]` with `--nat-stun-ports P1,P2`, checked as the config is.
fn nat_stun(ips: &str, ports: Option<&str>, file_ports: Option<Vec<u16>>) -> anyhow::Result<NatStunConfig> {
    let ips: Vec<std::net::IpAddr> = ips
        .split(',')
        .map(|s| s.trim().parse().with_context(|| format!("--nat-stun {s:?}: not an IP address")))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(ips.len() <= 2, "--nat-stun takes one or two addresses (PRIMARY[,ALTERNATE])");
    let ports = match ports {
        Some(p) => Some(
            p.split(',')
                .map(|s| s.trim().parse().with_context(|| format!("--nat-stun-ports {s:?}: not a port")))
                .collect::<anyhow::Result<Vec<u16>>>()?,
        ),
        None => file_ports,
    };
    NatStunConfig::new(ips[0], ips.get(1).copied(), ports)
        .map_err(|e| anyhow::anyhow!("--nat-stun: {}", e.trim_start_matches("nat_stun: ")))
}

fn listeners(values: &[String]) -> anyhow::Result<Vec<Listen>> {
    if values.iter().any(|v| v == "none") {
        return Ok(vec![]);
    }
    values.iter().map(|v| Listen::parse(v).map_err(anyhow::Error::msg)).collect()
}

/// Adds the usual way out to "permission denied" on a privileged port.
fn with_hint(e: ResponderError) -> String {
    match &e {
        ResponderError::Bind { addr, source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 => {
            format!(
                "{e}\nhint: ports below 1024 need root or CAP_NET_BIND_SERVICE; without them use the alternates, \
                 e.g. --web 8443 --turn-tls 5349 (see docs/responder.md)"
            )
        }
        _ => e.to_string(),
    }
}

/// The lines printed at start: endpoints, trust anchors, relay address.
pub fn summary(r: &Responder) -> String {
    let mut out = String::from("egress-probe responder listening:\n");
    let mut line = |what: &str, addrs: &[std::net::SocketAddr]| {
        for a in addrs {
            out.push_str(&format!("  {what:<22} {a}\n"));
        }
    };
    line("STUN/TURN udp", &r.addrs.turn_udp);
    line("STUN/TURN tcp", &r.addrs.turn_tcp);
    line("TURN tls", &r.addrs.turn_tls);
    line("HTTPS + WSS echo", &r.addrs.web);
    line("UDP echo peer", &r.addrs.udp_echo);
    line("DNS (udp)", &r.addrs.dns);
    line("RFC 5780 STUN udp", &r.addrs.nat_stun);
    if let Some(m) = r.addrs.metrics {
        line("metrics (http)", &[m]);
    }
    if let Some((ip, range)) = r.addrs.udp_echo_ports {
        out.push_str(&format!("  {:<22} {ip} ports {}-{}\n", "UDP echo ports", range.min, range.max));
    }
    if r.addrs.nat_stun.len() == 2 {
        out.push_str("  RFC 5780 STUN          one IP only: no OTHER-ADDRESS, NAT mapping/filtering tests unavailable\n");
    }
    out.push_str(&format!("  relayed address        {}\n", r.relay_ip));
    if let Some(ca) = &r.tls.ca_file {
        out.push_str(&format!("  TLS ca_file            {}\n", ca.display()));
    }
    out.push_str(&format!("  TLS pin_sha256         {}\n", r.tls.pin_sha256));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(argv: &[&str]) -> ResponderArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Responder(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_override_the_file_and_none_turns_endpoints_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        std::fs::write(&file, "bind: 127.0.0.1\nweb: [443, 8443]\nusers: { a: b }\nturn: { tls: [5349] }\n").unwrap();
        let f = file.to_str().unwrap();
        let a = args(&[
            "egress-probe",
            "responder",
            "--config",
            f,
            "--web",
            "8443",
            "--turn-tls",
            "none",
            "--user",
            "c:d",
            "--dns",
            "8053",
            "--metrics",
            "none",
        ]);
        let cfg = build_config(&a).unwrap();
        assert_eq!(cfg.web, vec![Listen::Port(8443)]);
        assert!(cfg.turn.tls.is_empty());
        assert_eq!(
            cfg.turn.udp,
            vec![Listen::Port(3478)],
            "untouched lists keep the file's (default) value"
        );
        assert_eq!(cfg.users.len(), 2);
        assert_eq!(cfg.dns.as_ref().unwrap().name, DEMO_DNS_NAME);
        assert_eq!(cfg.metrics, None);
        assert!(build_config(&args(&["egress-probe", "responder", "--user", "nocolon"])).is_err());
        let nat = build_config(&args(&[
            "egress-probe",
            "responder",
            "--nat-stun",
            "192.0.2.1,192.0.2.2",
            "--nat-stun-ports",
            "3490,3491",
        ]))
        .unwrap();
        let n = nat.nat_stun.unwrap();
        assert_eq!((n.alternate, n.ports), (Some("192.0.2.2".parse().unwrap()), [3490, 3491]));
        let same = build_config(&args(&["egress-probe", "responder", "--nat-stun", "192.0.2.1,192.0.2.1"])).unwrap_err();
        assert!(format!("{same:#}").starts_with("--nat-stun: alternate"), "{same:#}");
        assert!(build_config(&args(&["egress-probe", "responder", "--web", "nope"])).is_err());
    }
}
