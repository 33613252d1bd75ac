//! 401, not 400, for wrong TURN credentials.
//!
//! The webrtc-rs `turn` server answers a request whose credentials are wrong (unknown user,
//! MESSAGE-INTEGRITY that does not verify, an expired REST username) with *400 Bad Request*.
//! RFC 8489 §9.2.4 says 401, coturn sends 401, and clients read only 401 as "your credentials
//! were refused": our TURN probe reports `allocate/auth`, coturn's `turnutils_uclient` prints
//! `error 401`. With 400 a wrong password against our responder read as `allocate/error_400`.
//!
//! The crate's reply cannot be changed, so the two `Conn` wrappers that carry its messages (UDP
//! in `turn.rs`, TCP/TLS in `stream_conn.rs`) ask this module: on the way in, [`AuthFix::inspect`]
//! verifies a credentialed request with the same key the crate will use and remembers the
//! transaction when it fails; on the way out, [`AuthFix::rewrite`] turns the crate's bare 400
//! for exactly that transaction into 401. Other 400s (a malformed request with good
//! credentials) stay 400. The memory is a bounded ring of transaction IDs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::{Message, CLASS_REQUEST};
use stun::textattrs::TextAttribute;
use turn::auth::AuthHandler;

use super::turn::ResponderAuth;

/// Refused transactions remembered at once (one per request in flight is plenty).
const REMEMBERED: usize = 64;
/// STUN attribute types of the reply's attributes.
const ERROR_CODE: u16 = 0x0009;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const FINGERPRINT: u16 = 0x8028;

/// See the module docs.
pub struct AuthFix {
    auth: Arc<ResponderAuth>,
    refused: Mutex<VecDeque<[u8; 12]>>,
}

impl AuthFix {
    pub fn new(auth: Arc<ResponderAuth>) -> AuthFix {
        AuthFix {
            auth,
            refused: Mutex::new(VecDeque::with_capacity(REMEMBERED)),
        }
    }

    /// A received message: if it is a request carrying credentials that do not verify,
    /// remember its transaction.
    pub fn inspect(&self, msg: &[u8], from: SocketAddr) {
        if msg.len() < 20 || msg[0] >> 6 != 0 {
            return; // ChannelData or too short: never credentialed.
        }
        let mut m = Message::new();
        if m.unmarshal_binary(msg).is_err() || m.typ.class != CLASS_REQUEST || !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return;
        }
        let (Ok(user), Ok(realm)) = (
            TextAttribute::get_from_as(&m, ATTR_USERNAME),
            TextAttribute::get_from_as(&m, ATTR_REALM),
        ) else {
            return; // the crate answers a missing USERNAME/REALM itself (a malformed request)
        };
        let verified = match self.auth.auth_handle(&user.text, &realm.text, from) {
            Ok(key) => MessageIntegrity(key).check(&mut m.clone()).is_ok(),
            Err(_) => false,
        };
        if !verified {
            if let Ok(mut r) = self.refused.lock() {
                if r.len() == REMEMBERED {
                    r.pop_front();
                }
                r.push_back(m.transaction_id.0);
            }
        }
    }

    /// A message about to be sent: the crate's bare 400 to a remembered transaction becomes
    /// 401 (the ERROR-CODE number changes in place; the reply has no integrity or
    /// fingerprint attribute to invalidate).
    pub fn rewrite(&self, out: &[u8]) -> Option<Vec<u8>> {
        // An error response: class bits (0x0110 of the type) both set.
        if out.len() < 20 || out[0] >> 6 != 0 || u16::from_be_bytes([out[0], out[1]]) & 0x0110 != 0x0110 {
            return None;
        }
        let tid: [u8; 12] = out[8..20].try_into().ok()?;
        let mut at = 20;
        let mut code_at = None;
        while at + 4 <= out.len() {
            let typ = u16::from_be_bytes([out[at], out[at + 1]]);
            let len = usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
            if matches!(typ, MESSAGE_INTEGRITY | FINGERPRINT) {
                return None;
            }
            if typ == ERROR_CODE && len >= 4 && at + 8 <= out.len() {
                code_at = Some(at + 4);
            }
            at += 4 + len.div_ceil(4) * 4;
        }
        let c = code_at?;
        if out[c + 2] & 0x07 != 4 || out[c + 3] != 0 {
            return None; // not 400
        }
        let mut refused = self.refused.lock().ok()?;
        let i = refused.iter().position(|t| *t == tid)?;
        refused.remove(i);
        let mut fixed = out.to_vec();
        fixed[c + 3] = 1;
        Some(fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use stun::agent::TransactionId;
    use stun::error_code::{ErrorCodeAttribute, CODE_BAD_REQUEST};
    use stun::message::{MessageType, Setter, CLASS_ERROR_RESPONSE};
    use turn::proto::lifetime::Lifetime;

    const ALLOCATE: stun::message::Method = stun::message::METHOD_ALLOCATE;

    fn fix() -> AuthFix {
        AuthFix::new(Arc::new(ResponderAuth::new(
            BTreeMap::from([("test".to_string(), "secret".to_string())]),
            None,
        )))
    }

    fn request(user: &str, password: &str) -> Message {
        let mut m = Message::new();
        let attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(MessageType::new(ALLOCATE, CLASS_REQUEST)),
            Box::new(TransactionId::new()),
            Box::new(Lifetime(std::time::Duration::from_secs(600))),
            Box::new(TextAttribute::new(ATTR_USERNAME, user.into())),
            Box::new(TextAttribute::new(ATTR_REALM, "egress-probe".into())),
            Box::new(MessageIntegrity::new_long_term_integrity(
                user.into(),
                "egress-probe".into(),
                password.into(),
            )),
        ];
        m.build(&attrs).unwrap();
        m
    }

    fn bad_request(to: &Message) -> Vec<u8> {
        let mut m = Message::new();
        let attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(to.transaction_id),
            Box::new(MessageType::new(ALLOCATE, CLASS_ERROR_RESPONSE)),
            Box::new(ErrorCodeAttribute {
                code: CODE_BAD_REQUEST,
                reason: vec![],
            }),
        ];
        m.build(&attrs).unwrap();
        m.raw
    }

    fn code(raw: &[u8]) -> u16 {
        let mut m = Message::new();
        m.unmarshal_binary(raw).unwrap();
        let mut e = ErrorCodeAttribute::default();
        stun::message::Getter::get_from(&mut e, &m).unwrap();
        e.code.0
    }

    #[test]
    fn a_wrong_password_turns_the_crates_400_into_401_and_nothing_else() {
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let f = fix();
        let wrong = request("test", "wrong");
        f.inspect(&wrong.raw, from);
        let fixed = f.rewrite(&bad_request(&wrong)).expect("rewritten");
        assert_eq!(code(&fixed), 401);
        assert_eq!(f.rewrite(&bad_request(&wrong)), None, "once per refused transaction");

        let unknown = request("nobody", "secret");
        f.inspect(&unknown.raw, from);
        assert_eq!(code(&f.rewrite(&bad_request(&unknown)).unwrap()), 401);

        // Good credentials: a 400 stays a 400 (a malformed request is a bad request).
        let good = request("test", "secret");
        f.inspect(&good.raw, from);
        assert_eq!(f.rewrite(&bad_request(&good)), None);
    }
}
