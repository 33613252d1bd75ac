//! A compact TURN client (RFC 5766/8656) on a [`StunConn`]: Allocate with the long-term
//! credential mechanism, CreatePermission, ChannelBind, Send/Data and ChannelData, Refresh(0).
//!
//! Why our own and not the webrtc-rs `turn` client: that one is UDP-only, hides the 401 round
//! and the error codes, and does not wait for the deallocation to be confirmed. A probe must
//! time the Allocate (401 round included), tell `auth` from `quota` from `timeout`, run over
//! TCP and TLS 443, and prove it left nothing behind.
//!
//! Every authenticated request carries USERNAME, REALM, NONCE, MESSAGE-INTEGRITY and
//! FINGERPRINT. A 438 (stale nonce) is retried once with the server's new nonce; a second 438
//! is `stale_nonce`. Error codes become reasons through [`Reason::from_stun_code`].

use std::net::SocketAddr;

use stun_rs::attributes::stun::{ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress};
use stun_rs::attributes::turn::{ChannelNumber, Data, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress};
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION, DATA, REFRESH, SEND};
use stun_rs::{Algorithm, AlgorithmId, HMACKey, MessageClass, MessageMethod, StunAttribute, StunMessage, StunMessageBuilder};
use tokio::time::Instant;

use crate::net::stun_conn::{integrity_ok, method_name, Answer, Frame, StunConn};
use crate::outcome::{Fault, Reason};

/// What a successful Allocate returned.
#[derive(Clone, Copy, Debug)]
pub struct Allocation {
    pub relayed: SocketAddr,
    pub mapped: Option<SocketAddr>,
    pub lifetime: u32,
}

/// Payload received from a peer through the relay.
#[derive(Debug)]
pub struct Relayed {
    /// The peer (Data indication) — `None` for ChannelData, identified by `channel`.
    pub peer: Option<SocketAddr>,
    pub channel: Option<u16>,
    pub data: Vec<u8>,
}

/// One TURN client session on one connection.
pub struct TurnClient {
    conn: StunConn,
    username: String,
    password: String,
    realm: Option<Realm>,
    nonce: Option<Nonce>,
    key: Option<HMACKey>,
    /// Set once an authenticated Allocate went out: the server may hold an allocation for our
    /// 5-tuple even if its answer never came back, so cleanup must try a Refresh(0).
    allocate_sent: bool,
    allocation: Option<Allocation>,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("TurnClient")
            .field("conn", &self.conn)
            .field("allocation", &self.allocation)
            .finish()
    }
}

impl TurnClient {
    /// A client with credentials already resolved (REST credentials minted by the caller).
    pub fn new(conn: StunConn, username: String, password: String) -> TurnClient {
        TurnClient {
            conn,
            username,
            password,
            realm: None,
            nonce: None,
            key: None,
            allocate_sent: false,
            allocation: None,
        }
    }

    /// The connection (transport label, local address).
    pub fn conn(&self) -> &StunConn {
        &self.conn
    }

    /// The allocation, once granted.
    pub fn allocation(&self) -> Option<Allocation> {
        self.allocation
    }

    /// Whether cleanup has something to release.
    pub fn needs_deallocate(&self) -> bool {
        self.allocate_sent && self.key.is_some()
    }

    /// Allocate a UDP relay: an unauthenticated request, the 401 challenge (realm, nonce), the
    /// authenticated request. Time the whole call to get the allocate time a softphone sees.
    pub async fn allocate(&mut self, until: Instant) -> Result<Allocation, Fault> {
        let first = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
            .with_attribute(RequestedTrasport::new(stun_rs::protocols::UDP))
            .with_attribute(Fingerprint::default())
            .build();
        let ans = self.conn.transaction(&first, until).await?;
        let msg = if ans.msg.class() == MessageClass::SuccessResponse {
            ans.msg // a server without authentication
        } else {
            let code = error_code(&ans.msg)?;
            if code != 401 {
                return Err(stun_error(ALLOCATE, &ans.msg, code, false));
            }
            self.learn_challenge(&ans.msg)?;
            self.allocate_sent = true;
            let attrs = vec![StunAttribute::from(RequestedTrasport::new(stun_rs::protocols::UDP))];
            self.request(ALLOCATE, attrs, until).await?
        };
        let relayed = msg
            .get::<XorRelayedAddress>()
            .and_then(|a| a.as_xor_relayed_address().ok())
            .map(|a| *a.socket_address())
            .ok_or_else(|| Fault::new(Reason::BadResponse, "Allocate success without XOR-RELAYED-ADDRESS"))?;
        let mapped = msg
            .get::<XorMappedAddress>()
            .and_then(|a| a.as_xor_mapped_address().ok())
            .map(|a| *a.socket_address());
        let lifetime = msg
            .get::<LifeTime>()
            .and_then(|a| a.as_life_time().ok())
            .map(|l| l.as_u32())
            .unwrap_or(0);
        let a = Allocation { relayed, mapped, lifetime };
        self.allocation = Some(a);
        Ok(a)
    }

    /// Lets `peer`'s IP send to our relayed address (RFC 8656 §9).
    pub async fn create_permission(&mut self, peer: SocketAddr, until: Instant) -> Result<(), Fault> {
        self.request(CREATE_PERMMISSION, vec![XorPeerAddress::from(peer).into()], until)
            .await
            .map(|_| ())
    }

    /// Binds `channel` to `peer` for ChannelData (RFC 8656 §11).
    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr, until: Instant) -> Result<(), Fault> {
        let attrs = vec![ChannelNumber::new(channel).into(), XorPeerAddress::from(peer).into()];
        self.request(CHANNEL_BIND, attrs, until).await?;
        self.conn.bind_channel(channel);
        Ok(())
    }

    /// Sends `data` to `peer` through the relay: ChannelData on `channel`, else a Send indication.
    pub async fn send_to_peer(&mut self, peer: SocketAddr, channel: Option<u16>, data: &[u8]) -> Result<(), Fault> {
        match channel {
            Some(c) => self.conn.send_channel_data(c, data).await,
            None => {
                let msg = StunMessageBuilder::new(SEND, MessageClass::Indication)
                    .with_attribute(XorPeerAddress::from(peer))
                    .with_attribute(Data::new(data))
                    .build();
                self.conn.send_message(&msg).await
            }
        }
    }

    /// Waits for the next relayed payload (Data indication or ChannelData); other messages are
    /// skipped. Cancel-safe. Bound it by the caller's deadline.
    pub async fn recv_from_peer(&mut self) -> Result<Relayed, Fault> {
        loop {
            match self.conn.recv().await? {
                Frame::ChannelData { channel, data } => {
                    return Ok(Relayed {
                        peer: None,
                        channel: Some(channel),
                        data,
                    })
                }
                Frame::Stun(m, _) if m.method() == DATA && m.class() == MessageClass::Indication => {
                    let peer = m
                        .get::<XorPeerAddress>()
                        .and_then(|a| a.as_xor_peer_address().ok())
                        .map(|a| *a.socket_address());
                    let Some(data) = m.get::<Data>().and_then(|d| d.as_data().ok()) else {
                        continue;
                    };
                    return Ok(Relayed {
                        peer,
                        channel: None,
                        data: data.as_bytes().to_vec(),
                    });
                }
                Frame::Stun(..) => continue,
            }
        }
    }

    /// Releases the allocation (Refresh with LIFETIME 0) and waits for the server to confirm.
    /// A 437 (no such allocation) also means nothing is held any more.
    pub async fn deallocate(&mut self, until: Instant) -> Result<(), Fault> {
        match self.request(REFRESH, vec![LifeTime::new(0).into()], until).await {
            Ok(_) => {}
            Err(f) if f.reason == Reason::Mismatch => {}
            Err(f) => return Err(f),
        }
        self.allocate_sent = false;
        self.allocation = None;
        Ok(())
    }

    /// Closes the transport (TLS close_notify / TCP FIN). Bound it by the caller's deadline.
    pub async fn shutdown(&mut self) {
        self.conn.shutdown().await;
    }

    /// An authenticated request; retries once on 438 with the server's fresh nonce.
    async fn request(&mut self, method: MessageMethod, attrs: Vec<StunAttribute>, until: Instant) -> Result<StunMessage, Fault> {
        let mut stale_retried = false;
        loop {
            let msg = self.signed(method, &attrs)?;
            let Answer { msg: resp, raw, .. } = self.conn.transaction(&msg, until).await?;
            if resp.class() == MessageClass::SuccessResponse {
                if let Some(key) = &self.key {
                    if resp.get::<MessageIntegrity>().is_some() && !integrity_ok(&raw, key) {
                        return Err(Fault::new(
                            Reason::BadResponse,
                            format!(
                                "{} success response fails MESSAGE-INTEGRITY: the server does not know our credentials (an impostor?)",
                                method_name(method)
                            ),
                        ));
                    }
                }
                return Ok(resp);
            }
            let code = error_code(&resp)?;
            if code == 438 && !stale_retried {
                stale_retried = true;
                self.learn_challenge(&resp)?;
                continue;
            }
            return Err(stun_error(method, &resp, code, true));
        }
    }

    fn signed(&self, method: MessageMethod, attrs: &[StunAttribute]) -> Result<StunMessage, Fault> {
        let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, &self.key) else {
            return Err(Fault::new(Reason::BadResponse, "no authentication challenge received yet"));
        };
        let username = UserName::new(&self.username).map_err(|e| Fault::new(Reason::Config, format!("TURN username unusable: {e}")))?;
        let mut b = StunMessageBuilder::new(method, MessageClass::Request);
        for a in attrs {
            b = b.with_attribute(a.clone());
        }
        Ok(b.with_attribute(username)
            .with_attribute(realm.clone())
            .with_attribute(nonce.clone())
            .with_attribute(MessageIntegrity::new(key.clone()))
            .with_attribute(Fingerprint::default())
            .build())
    }

    /// Takes REALM and NONCE from a 401/438 and derives the long-term key MD5(user:realm:pass).
    fn learn_challenge(&mut self, resp: &StunMessage) -> Result<(), Fault> {
        if let Some(r) = resp.get::<Realm>().and_then(|r| r.as_realm().ok()) {
            self.realm = Some(r.clone());
        }
        let nonce = resp
            .get::<Nonce>()
            .and_then(|n| n.as_nonce().ok())
            .ok_or_else(|| Fault::new(Reason::BadResponse, "authentication challenge without NONCE"))?;
        self.nonce = Some(nonce.clone());
        let realm = self
            .realm
            .as_ref()
            .ok_or_else(|| Fault::new(Reason::BadResponse, "authentication challenge without REALM"))?;
        let key = HMACKey::new_long_term(&self.username, realm.as_str(), &self.password, Algorithm::from(AlgorithmId::MD5))
            .map_err(|e| Fault::new(Reason::Config, format!("TURN credentials unusable: {e}")))?;
        self.key = Some(key);
        Ok(())
    }
}

fn error_code(msg: &StunMessage) -> Result<u16, Fault> {
    msg.get::<ErrorCode>()
        .and_then(|e| e.as_error_code().ok())
        .map(|e| e.error_code().error_code())
        .ok_or_else(|| Fault::new(Reason::BadResponse, "error response without ERROR-CODE"))
}

fn stun_error(method: MessageMethod, msg: &StunMessage, code: u16, authenticated: bool) -> Fault {
    let phrase = msg
        .get::<ErrorCode>()
        .and_then(|e| e.as_error_code().ok())
        .map(|e| e.error_code().reason().to_string())
        .unwrap_or_default();
    let hint = match code {
        401 if authenticated => " (credentials rejected: wrong username/password, or expired REST credentials)",
        403 => " (forbidden by server policy)",
        437 => " (allocation mismatch: the server holds another allocation for this 5-tuple)",
        438 => " (stale nonce twice in a row)",
        441 => " (wrong credentials for this allocation)",
        486 => " (allocation quota reached: this user's own quota, or the server's total quota for all users)",
        508 => " (server out of relay capacity)",
        _ => "",
    };
    Fault::new(Reason::from_stun_code(code), answered(method_name(method), code, &phrase, hint))
}

/// `Allocate answered 401 Unauthorized (hint)`: single spaces also when the server sent no
/// reason phrase.
fn answered(method: &str, code: u16, phrase: &str, hint: &str) -> String {
    let phrase = phrase.trim();
    let head = if phrase.is_empty() {
        format!("{method} answered {code}")
    } else {
        format!("{method} answered {code} {phrase}")
    };
    format!("{head}{hint}")
}

#[cfg(test)]
mod tests {
    use super::answered;

    #[test]
    fn an_error_without_a_reason_phrase_reads_with_single_spaces() {
        let hint = " (credentials rejected: wrong username/password, or expired REST credentials)";
        assert_eq!(
            answered("Allocate", 401, "", hint),
            "Allocate answered 401 (credentials rejected: wrong username/password, or expired REST credentials)"
        );
        assert_eq!(
            answered("Allocate", 486, "Allocation Quota Reached", ""),
            "Allocate answered 486 Allocation Quota Reached"
        );
    }
}
