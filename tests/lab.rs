//! The test lab itself works: coturn starts on its own ports and answers coturn's own client.
mod common;

use std::process::Command;

#[test]
fn coturn_starts_and_answers_its_own_stun_client() {
    let turn = common::coturn::Coturn::start(Default::default());
    // Bounded: against a dead port turnutils_stunclient retries forever.
    let out = Command::new("timeout")
        .args(["10", "turnutils_stunclient", "-p", &turn.port.to_string(), "127.0.0.1"])
        .output()
        .expect("timeout(1) and turnutils_stunclient (scripts/test installs coturn)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stun client failed or timed out: {text}");
    // What coturn sent back: the reflexive address, i.e. the client's own socket as seen by
    // the server (an address and a port the command line never named).
    let mapped = common::stunclient_reflexive(&text).unwrap_or_else(|| panic!("no reflexive address in: {text}"));
    assert_eq!(mapped.ip().to_string(), "127.0.0.1", "{text}");
    assert_ne!(
        mapped.port(),
        turn.port,
        "the mapped port is the client's, not the server's: {text}"
    );
}
