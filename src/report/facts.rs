//! `check`'s short result lines under the table: one line per probe for the results that do
//! not fit a PASS/FAIL cell (NAT behaviour, UDP port ranges, the ICE pair, concurrent
//! allocations), then the run's notes. Terse on purpose: the figures a network team reads
//! first; the full detail stays in the JSON report and /status.
//!
//! Beside `render_media` (call quality), never instead of it; pure functions of the results,
//! so they are tested without running a probe.

use std::time::Duration;

use crate::outcome::details::{IceDetails, StunDetails, UdpPortsDetails};

use super::ProbeResult;

/// Longest list of port ranges shown on one line; the rest are counted.
const MAX_RANGES: usize = 4;

/// One line per probe with a NAT, port-range, ICE-pair or concurrent result, then one line per
/// note (`NAME: note: …`). Empty when there is none.
pub fn render_facts(results: &[ProbeResult]) -> String {
    let mut out = String::new();
    for r in results {
        let d = &r.outcome.detail;
        let fact = d
            .stun
            .as_ref()
            .and_then(nat)
            .or_else(|| d.udp_ports.as_ref().map(ports))
            .or_else(|| d.ice.as_ref().and_then(ice))
            .or_else(|| {
                d.concurrent
                    .as_ref()
                    .filter(|c| c.requested > 1)
                    .map(|c| format!("concurrent: established {} of {}", c.established, c.requested))
            });
        if let Some(fact) = fact {
            out.push_str(&format!("{}: {fact}\n", r.name));
        }
        for note in &d.notes {
            out.push_str(&format!("{}: note: {note}\n", r.name));
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn words(behaviour: &str) -> String {
    behaviour.replace('_', "-")
}

/// `NAT mapping endpoint-independent, filtering address-dependent, binding lifetime 25–30 s`.
fn nat(s: &StunDetails) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(m) = &s.nat_mapping {
        parts.push(format!("mapping {}", words(m)));
    }
    if let Some(f) = &s.nat_filtering {
        parts.push(format!("filtering {}", words(f)));
    }
    if let Some(l) = &s.binding_lifetime {
        let secs = |d: Duration| format!("{:.0}", d.as_secs_f64());
        parts.push(match l.expired {
            Some(e) => format!("binding lifetime {}–{} s", secs(l.alive), secs(e)),
            None => format!("binding lifetime over {} s (none expired)", secs(l.alive)),
        });
    }
    (!parts.is_empty()).then(|| format!("NAT {}", parts.join(", ")))
}

fn ranges(list: &[String], more: usize) -> String {
    let shown = list.iter().take(MAX_RANGES).cloned().collect::<Vec<_>>().join(",");
    let left = list.len().saturating_sub(MAX_RANGES) + more;
    if left > 0 {
        format!("{shown} and {left} more")
    } else {
        shown
    }
}

/// `UDP ports 16384-65535: open 16384-20000 (3617), closed 20001-20010 (10), coverage 5.4%`.
fn ports(u: &UdpPortsDetails) -> String {
    let more = u.more_ranges as usize;
    let mut parts = vec![format!("open {} ({})", ranges(&u.open, more), u.open_ports)];
    if u.open.is_empty() {
        parts[0] = "open none".into();
    }
    if u.closed_ports > 0 {
        parts.push(format!("closed {} ({})", ranges(&u.closed, 0), u.closed_ports));
    }
    if u.silent_once > 0 {
        parts.push(format!("{} silent once (re-tested next run)", u.silent_once));
    }
    parts.push(format!("coverage {:.1}%", u.coverage * 100.0));
    format!("UDP ports {}: {}", u.set, parts.join(", "))
}

/// `ICE pair relay/udp ↔ host/udp (relay over tls), RTT avg 12.3 ms`.
fn ice(i: &IceDetails) -> Option<String> {
    let Some(p) = &i.selected else {
        return i.selected_pair.as_ref().map(|s| format!("ICE pair {s}"));
    };
    let via = p.relay_protocol.as_ref().map(|r| format!(" (relay over {r})")).unwrap_or_default();
    let rtt = match &p.rtt {
        Some(r) if r.received > 0 => format!(", RTT avg {:.1} ms (max {:.1})", ms(r.avg), ms(r.max)),
        Some(_) => ", no RTT sample came back".into(),
        None => String::new(),
    };
    Some(format!(
        "ICE pair {}/{} ↔ {}/{}{via}{rtt}",
        p.local_type, p.local_protocol, p.remote_type, p.remote_protocol
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::details::{BindingLifetime, ConcurrentDetails, IcePair, RttStats};

    fn result(name: &str) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            kind: "stun".into(),
            target: "t".into(),
            endpoint: Default::default(),
            outcome: Default::default(),
        }
    }

    #[test]
    fn each_new_result_gets_one_short_line_and_notes_follow() {
        let mut nat = result("nat");
        nat.outcome.detail.stun = Some(StunDetails {
            nat_mapping: Some("endpoint_independent".into()),
            nat_filtering: Some("address_dependent".into()),
            binding_lifetime: Some(BindingLifetime {
                alive: Duration::from_secs(25),
                expired: Some(Duration::from_secs(30)),
                checks: 4,
            }),
            ..Default::default()
        });
        let mut plain = result("plain");
        plain.outcome.detail.stun = Some(StunDetails::default());
        plain.outcome.detail.notes = vec!["nat_mapping: the server sent no OTHER-ADDRESS".into()];
        let mut udp = result("udp");
        udp.outcome.detail.udp_ports = Some(UdpPortsDetails {
            set: "20000-20099".into(),
            open: vec!["20000-20009".into(), "20020-20099".into()],
            closed: vec!["20010-20019".into()],
            open_ports: 90,
            closed_ports: 10,
            silent_once: 2,
            coverage: 1.0,
            ..Default::default()
        });
        let mut ice_r = result("ice");
        ice_r.outcome.detail.ice = Some(IceDetails {
            selected: Some(IcePair {
                local_type: "relay".into(),
                local_protocol: "udp".into(),
                remote_type: "host".into(),
                remote_protocol: "udp".into(),
                relay_protocol: Some("tls".into()),
                rtt: Some(RttStats::from_samples(
                    2,
                    vec![Duration::from_millis(12), Duration::from_millis(14)],
                )),
                rtt_method: "data_echo".into(),
            }),
            ..Default::default()
        });
        let mut many = result("many");
        many.outcome.detail.concurrent = Some(ConcurrentDetails {
            requested: 8,
            established: 6,
            holds: vec![],
        });
        assert_eq!(
            render_facts(&[nat, plain, udp, ice_r, many]),
            "nat: NAT mapping endpoint-independent, filtering address-dependent, binding lifetime 25–30 s\n\
             plain: note: nat_mapping: the server sent no OTHER-ADDRESS\n\
             udp: UDP ports 20000-20099: open 20000-20009,20020-20099 (90), closed 20010-20019 (10), 2 silent once (re-tested next run), coverage 100.0%\n\
             ice: ICE pair relay/udp ↔ host/udp (relay over tls), RTT avg 13.0 ms (max 14.0)\n\
             many: concurrent: established 6 of 8\n"
        );
        assert_eq!(render_facts(&[result("none")]), "", "nothing new, no line");
    }

    #[test]
    fn long_range_lists_are_cut_and_counted() {
        let list: Vec<String> = (0..6).map(|i| format!("{}", 20000 + 2 * i)).collect();
        assert_eq!(ranges(&list, 3), "20000,20002,20004,20006 and 5 more");
    }
}
