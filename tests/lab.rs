//! The test lab itself works: coturn starts on its own ports and answers coturn's own client.
mod common;

use std::process::Command;

#[test]
fn coturn_starts_and_answers_its_own_stun_client() {
    let turn = common::coturn::Coturn::start(Default::default());
    let out = Command::new("turnutils_stunclient")
        .args(["-p", &turn.port.to_string(), "127.0.0.1"])
        .output()
        .expect("turnutils_stunclient");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("127.0.0.1"), "stun client output: {text}");
}
