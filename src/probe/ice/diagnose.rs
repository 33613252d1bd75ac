//! Why a TURN server gave the agent no relay candidate.
//!
//! webrtc-ice 0.17.2 only *logs* a failed allocation (`Failed to allocate on turn.Client ...`)
//! through the `log` crate and exposes no error to the caller, so the probe cannot read the
//! server's answer from the agent. Instead, for each TURN/UDP server that produced no relay
//! candidate, it asks once more with the same credentials through the same `turn` client the
//! agent uses, and reports the server's error (e.g. `401: Unauthorized`). An allocation that
//! succeeds on this second try is released at once (Refresh lifetime 0).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use webrtc_util::Conn;

use super::servers::TurnServer;

/// What the server said to a fresh Allocate, as a line for `detail.ice.server_errors`
/// (never containing the credentials).
pub(crate) async fn allocate_error(server: &TurnServer, deadline: Instant) -> String {
    match tokio::time::timeout_at(deadline, ask(server)).await {
        Ok(Ok(())) => format!(
            "{}: a second Allocate outside the agent succeeded (released at once): the agent's allocation failed for another reason",
            server.url
        ),
        Ok(Err(e)) => format!("{}: {e}", server.url),
        Err(_) => format!("{}: no answer to Allocate within the probe timeout", server.url),
    }
}

async fn ask(server: &TurnServer) -> Result<(), String> {
    let v6 = server.url.host.parse::<IpAddr>().map(|ip| ip.is_ipv6()).unwrap_or(false);
    let bind: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| format!("local UDP socket: {e}"))?;
    let conn: Arc<dyn Conn + Send + Sync> = Arc::new(socket);
    let cfg = turn::client::ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: server.url.host_port().to_string(),
        username: server.username.clone(),
        password: server.password.clone(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    };
    let client = turn::client::Client::new(cfg).await.map_err(|e| e.to_string())?;
    let result = async {
        client.listen().await.map_err(|e| e.to_string())?;
        let relay = client.allocate().await.map_err(|e| describe(&e.to_string()))?;
        let _ = relay.close().await;
        Ok(())
    }
    .await;
    let _ = client.close().await;
    result
}

/// `Allocate error response (error 401: Unauthorized)` → `Allocate error 401: Unauthorized
/// (wrong TURN username or password?)`.
fn describe(raw: &str) -> String {
    let code = raw
        .split_once("(error ")
        .and_then(|(_, rest)| rest.get(..3))
        .and_then(|c| c.parse::<u16>().ok());
    let hint = match code {
        Some(401) => " (wrong TURN username or password, or expired REST credentials?)",
        Some(403) => " (the server forbids this client or peer address)",
        Some(437) => " (allocation mismatch: a stale allocation from this address?)",
        Some(441) => " (wrong credentials)",
        Some(486) => " (allocation quota reached: this user's own quota, or the server's total quota for all users)",
        Some(508) => " (server out of relay capacity)",
        _ => "",
    };
    format!("{raw}{hint}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn describe_adds_a_hint_for_known_codes() {
        let d = super::describe("Allocate error response (error 401: Unauthorized)");
        assert!(d.starts_with("Allocate error response (error 401: Unauthorized)"));
        assert!(d.contains("wrong TURN username"));
        assert_eq!(super::describe("timeout"), "timeout");
    }
}
