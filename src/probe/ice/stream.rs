//! Relay candidates over TURN/TCP and TURN/TLS, gathered by the probe's own TURN client beside
//! the webrtc-ice agent, and the connectivity check through such a relay.
//!
//! Why not the agent: webrtc-ice 0.17.2 allocates relays only with `turn:` over UDP (its TURN
//! client needs a datagram `Conn` and hard-codes UDP). A browser also gathers over TURN/TCP and
//! TURN/TLS, and in strict egress (UDP dropped, TLS 443 open) that is the only relay it gets.
//! Patching the crate's gathering would mean a second TURN client framing RFC 6062 streams
//! inside a vendored copy of webrtc-ice *and* turn; the project already has a TURN client that
//! allocates over TCP and TLS (through an HTTP CONNECT proxy too), times its phases and tells
//! `auth` from `timeout` (`probe::turn::TurnClient` over `net::stun_conn`). So each
//! `turn:...?transport=tcp` and `turns:` server gets one Allocate from that client, started
//! at the same instant as the agent's gathering, and a granted allocation is a relay candidate
//! with `relayProtocol` `tcp` or `tls` (the relayed address itself is UDP, as in a browser).
//!
//! Connectivity through such a relay cannot be an agent-to-agent check (the agent has no socket
//! for it), so it is the same exchange an ICE check makes, run by hand: a second allocation on
//! the same server over the same transport (the "remote"), permissions both ways, then a STUN
//! Binding request from our relay to the remote's relayed address, answered by the remote with
//! a Binding success response carrying the address it saw (our relayed address), retransmitted
//! on RFC 5389 timers until the deadline. A verified answer proves the path client → TURN over
//! TCP/TLS → relayed UDP → relay → back, which is what media takes. The pair's RTT comes from
//! the same exchange: a few more Binding transactions, each sent once and timed from its
//! send to its verified answer (the first one counts only if it was not retransmitted), as an
//! ICE agent's consent checks on the selected pair would be; it is reported as the pair
//! `relay -> relay` with the relay protocol and `rtt_method: stun_binding`.
//!
//! Every client the run opened is kept in a slot owned by the caller, also when its future was
//! cut by the deadline, so [`release`] can send Refresh(lifetime 0) on every path.

use std::net::SocketAddr;
use std::time::Duration;

use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, StunMessageBuilder};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{ProxyUrl, TlsOptions};
use crate::net::stun_conn::{self, OpenOptions};
use crate::outcome::details::RttStats;
use crate::outcome::{Failure, Fault, Reason, Run};
use crate::probe::turn::{Allocation, TurnClient};

use super::servers::TurnServer;

/// First retransmission of a relayed Binding request (then doubled, bounded by the deadline).
const CHECK_RTO: Duration = Duration::from_millis(100);
/// How long after the deadline the release may still run inline (under `probe::run`'s grace).
const RELEASE_GRACE: Duration = Duration::from_millis(100);
/// Bound on a release that continues in the background.
const RELEASE_BOUND: Duration = Duration::from_secs(5);

/// One TURN/TCP or TURN/TLS server's gathering.
pub(crate) struct Attempt {
    pub server: TurnServer,
    /// `tcp` or `tls`.
    pub protocol: &'static str,
    /// The client, as soon as its connection is open (kept for release whatever happens).
    pub client: Option<TurnClient>,
    /// The server's address (`None` through a proxy), for the remote's second allocation.
    pub peer: Option<SocketAddr>,
    /// The relay candidate and when it arrived (since gathering start), or why not.
    pub result: Option<Result<(Allocation, Duration), Failure>>,
}

impl Attempt {
    pub fn new(server: TurnServer) -> Attempt {
        let protocol = server.url.transport_label();
        Attempt {
            server,
            protocol,
            client: None,
            peer: None,
            result: None,
        }
    }

    /// The granted allocation and its arrival time.
    pub fn relay(&self) -> Option<(Allocation, Duration)> {
        match &self.result {
            Some(Ok(r)) => Some(*r),
            _ => None,
        }
    }
}

/// How stream connections are opened.
#[derive(Clone, Copy)]
pub(crate) struct Dial<'a> {
    pub tls: &'a TlsOptions,
    pub proxy: Option<&'a ProxyUrl>,
}

/// Allocates on every server of `attempts` concurrently (through `proxies[i]` if any), until
/// each answered or `deadline`. `started` is the gathering's start (the agent's), so arrival
/// times compare.
/// Each granted relay is announced on `granted`.
pub(crate) async fn gather(
    attempts: &mut [Attempt],
    proxies: &[Option<&ProxyUrl>],
    tls: &TlsOptions,
    started: Instant,
    deadline: Instant,
    granted: mpsc::UnboundedSender<()>,
) {
    let all = attempts.iter_mut().zip(proxies).map(|(a, proxy)| {
        let granted = granted.clone();
        async move {
            allocate(a, Dial { tls, proxy: *proxy }, started, deadline).await;
            if a.relay().is_some() {
                let _ = granted.send(());
            }
        }
    });
    // Each allocation is bounded by `deadline` itself; this outer bound only guards the join.
    let _ = tokio::time::timeout_at(deadline + RELEASE_GRACE, futures::future::join_all(all)).await;
}

async fn allocate(a: &mut Attempt, dial: Dial<'_>, started: Instant, deadline: Instant) {
    let mut scratch = Run::new(deadline);
    let opts = OpenOptions {
        tls: dial.tls,
        proxy: dial.proxy,
        fixed: None,
        unconnected_udp: false,
    };
    let (conn, peer) = match stun_conn::open(&mut scratch, &a.server.url, opts).await {
        Ok(c) => c,
        Err(f) => {
            a.result = Some(Err(f));
            return;
        }
    };
    a.peer = peer;
    let client = a
        .client
        .insert(TurnClient::new(conn, a.server.username.clone(), a.server.password.clone()));
    a.result = Some(match client.allocate(deadline).await {
        Ok(alloc) => Ok((alloc, started.elapsed())),
        Err(f) => Err(f.at(crate::outcome::Phase::Allocate)),
    });
}

/// The remote side of one connectivity check (its client kept for release).
#[derive(Default)]
pub(crate) struct Remote {
    pub client: Option<TurnClient>,
}

/// Checks connectivity through `a`'s relay: a second allocation on the same server and
/// transport, permissions both ways, relayed STUN Binding transactions. Returns the time from
/// the first Binding request to its verified answer and the RTT of the transactions after it.
pub(crate) async fn check(a: &mut Attempt, remote: &mut Remote, dial: Dial<'_>, deadline: Instant) -> Result<Checked, Fault> {
    let Some((ours, _)) = a.relay() else {
        return Err(Fault::new(Reason::NoRelay, "no relay to check"));
    };
    let Some(client) = a.client.as_mut() else {
        return Err(Fault::new(Reason::NoRelay, "no relay to check"));
    };
    // The remote: same server address (or the same proxy), same transport.
    let mut scratch = Run::new(deadline);
    let opts = OpenOptions {
        tls: dial.tls,
        proxy: if a.peer.is_some() { None } else { dial.proxy },
        fixed: a.peer,
        unconnected_udp: false,
    };
    let side = |f: Failure| Fault::new(f.reason, format!("second allocation (remote side) {}: {}", f.phase, f.message));
    let (conn, _) = stun_conn::open(&mut scratch, &a.server.url, opts).await.map_err(side)?;
    let (user, pass) = (a.server.username.clone(), a.server.password.clone());
    let rc = remote.client.insert(TurnClient::new(conn, user, pass));
    let theirs = rc
        .allocate(deadline)
        .await
        .map_err(|f| Fault::new(f.reason, format!("second allocation (remote side): {}", f.message)))?;
    client.create_permission(theirs.relayed, deadline).await?;
    rc.create_permission(ours.relayed, deadline).await?;
    binding_through(client, ours.relayed, rc, theirs.relayed, deadline).await
}

/// Binding transactions timed after the first (which proved the path) for the pair's RTT.
pub(crate) const RTT_SAMPLES: u32 = 5;
/// Gap between the RTT transactions.
const RTT_PACING: Duration = Duration::from_millis(20);
/// How long one RTT transaction waits (never past the budget); unanswered counts as lost.
const RTT_WAIT: Duration = Duration::from_millis(250);
/// How long before the deadline the RTT transactions stop.
pub(crate) const RTT_MARGIN: Duration = Duration::from_millis(20);

/// What the relayed check established: when the first answer came, and the pair's RTT.
pub(crate) struct Checked {
    /// From the first Binding request to its verified answer (retransmissions included).
    pub after: Duration,
    /// Round trips of the transactions answered on their only transmission: the first one
    /// if it was not retransmitted (Karn), then [`RTT_SAMPLES`]` - 1` more, [`RTT_PACING`]
    /// apart, each sent once, within `connect::RTT_BUDGET` after the first answer.
    pub rtt: RttStats,
}

/// The RTT sampling so far, kept outside the requester so that once the first transaction
/// proved the path, nothing that happens later (an error on either side, the deadline) can
/// turn it into a failure: the check returns what was measured.
#[derive(Default)]
struct Progress {
    after: Option<Duration>,
    sent: u32,
    samples: Vec<Duration>,
}

impl Progress {
    fn checked(&self) -> Option<Checked> {
        self.after.map(|after| Checked {
            after,
            rtt: RttStats::from_samples(self.sent, self.samples.clone()),
        })
    }
}

/// STUN Binding transactions from `a` (relayed address `ours`) to `b`'s relayed address
/// `theirs`, through both relays; `b` answers like an ICE agent does. The first is
/// retransmitted on RFC 5389 timers until the deadline; once it is answered, a few more are
/// timed for the RTT (the same exchange an ICE agent's consent checks make on the selected
/// pair), for at most `connect::RTT_BUDGET`.
async fn binding_through(
    a: &mut TurnClient,
    ours: SocketAddr,
    b: &mut TurnClient,
    theirs: SocketAddr,
    deadline: Instant,
) -> Result<Checked, Fault> {
    let started = Instant::now();
    let progress = std::sync::Mutex::new(Progress::default());
    let lock = || progress.lock().unwrap_or_else(|e| e.into_inner());
    let requester = async {
        let first = transaction(a, ours, theirs, deadline, true).await?;
        {
            let mut p = lock();
            p.after = Some(first.after);
            if first.transmissions == 1 {
                p.sent += 1;
                p.samples.push(first.rtt);
            }
        }
        // The timing ends short of the deadline and within the budget: connectivity is
        // proven, and must not turn into a timeout or an error because of a sample.
        let rtt_until = deadline
            .checked_sub(RTT_MARGIN)
            .unwrap_or(deadline)
            .min(Instant::now() + super::connect::RTT_BUDGET);
        for _ in 1..RTT_SAMPLES {
            if Instant::now() + RTT_PACING >= rtt_until {
                break;
            }
            tokio::time::sleep(RTT_PACING).await;
            lock().sent += 1;
            match transaction(a, ours, theirs, (Instant::now() + RTT_WAIT).min(rtt_until), false).await {
                Ok(t) => lock().samples.push(t.rtt),
                Err(f) if f.reason == Reason::Timeout => {}
                // Any other error ends the sampling with what was measured.
                Err(_) => break,
            }
        }
        Ok::<(), Fault>(())
    };
    let bounded = tokio::time::timeout_at(deadline, async {
        tokio::select! {
            r = requester => r,
            r = answer_bindings(b) => match r {
                Err(f) => Err(f),
                Ok(never) => match never {},
            },
        }
    });
    let result = bounded.await;
    // After a proven path, whatever ended the exchange, the check passed.
    if let Some(done) = lock().checked() {
        return Ok(done);
    }
    match result {
        Ok(Ok(())) => Err(Fault::new(Reason::Io, "the relayed check ended without an answer")),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Fault::new(
            Reason::Timeout,
            format!(
                "no answer through the relay within the probe timeout ({} ms of checks)",
                started.elapsed().as_millis()
            ),
        )),
    }
}

/// One answered Binding transaction through the relays.
struct Transaction {
    /// From the first transmission to the answer.
    after: Duration,
    /// From the last transmission to the answer.
    rtt: Duration,
    transmissions: u32,
}

/// One Binding transaction from our relay to `theirs`, answered before `until`; with
/// `retransmit`, resent on RFC 5389 timers (from [`CHECK_RTO`], doubling).
async fn transaction(
    a: &mut TurnClient,
    ours: SocketAddr,
    theirs: SocketAddr,
    until: Instant,
    retransmit: bool,
) -> Result<Transaction, Fault> {
    let request = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_attribute(Fingerprint::default())
        .build();
    let tid = *request.transaction_id();
    let bytes = stun_conn::encode(&request)?;
    let started = Instant::now();
    let mut sent = 0u32;
    let mut rto = CHECK_RTO;
    loop {
        a.send_to_peer(theirs, None, &bytes).await?;
        let sent_at = Instant::now();
        sent += 1;
        let wait = if retransmit { (sent_at + rto).min(until) } else { until };
        rto *= 2;
        loop {
            match tokio::time::timeout_at(wait, a.recv_from_peer()).await {
                Err(_) => break,
                Ok(Err(f)) => return Err(f),
                Ok(Ok(r)) => {
                    let Some(msg) = decode(&r.data) else { continue };
                    if *msg.transaction_id() != tid || msg.class() != MessageClass::SuccessResponse {
                        continue;
                    }
                    let mapped = msg
                        .get::<XorMappedAddress>()
                        .and_then(|m| m.as_xor_mapped_address().ok())
                        .map(|m| *m.socket_address());
                    if mapped != Some(ours) {
                        return Err(Fault::new(
                            Reason::BadResponse,
                            format!("the remote saw the check from {mapped:?}, not from our relayed address {ours}"),
                        ));
                    }
                    return Ok(Transaction {
                        after: started.elapsed(),
                        rtt: sent_at.elapsed(),
                        transmissions: sent,
                    });
                }
            }
        }
        if !retransmit || Instant::now() >= until {
            return Err(Fault::new(
                Reason::Timeout,
                format!(
                    "no answer through the relay to {sent} Binding request(s) in {} ms",
                    started.elapsed().as_millis()
                ),
            ));
        }
    }
}

/// The remote side: answers every Binding request it receives through its relay as an ICE
/// agent does (success, XOR-MAPPED-ADDRESS = where it came from). Ends only on an error.
async fn answer_bindings(b: &mut TurnClient) -> Result<std::convert::Infallible, Fault> {
    loop {
        let r = b.recv_from_peer().await?;
        let (Some(msg), Some(from)) = (decode(&r.data), r.peer) else {
            continue;
        };
        if msg.method() != BINDING || msg.class() != MessageClass::Request {
            continue;
        }
        let answer = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(*msg.transaction_id())
            .with_attribute(XorMappedAddress::from(from))
            .with_attribute(Fingerprint::default())
            .build();
        b.send_to_peer(from, None, &stun_conn::encode(&answer)?).await?;
    }
}

fn decode(data: &[u8]) -> Option<stun_rs::StunMessage> {
    MessageDecoderBuilder::default().build().decode(data).ok().map(|(m, _)| m)
}

/// Releases every allocation the clients hold (Refresh lifetime 0, answer awaited; a 437 also
/// counts) and closes their connections. Runs inline until `deadline` plus a short grace and
/// continues in the background past that (bounded). Returns whether everything was confirmed
/// inline (true when there was nothing to release).
pub(crate) async fn release(clients: Vec<TurnClient>, deadline: Instant) -> bool {
    if clients.is_empty() {
        return true;
    }
    let done = spawn_release(clients);
    let bound = deadline.max(Instant::now()) + RELEASE_GRACE;
    matches!(tokio::time::timeout_at(bound, done).await, Ok(Ok(true)))
}

/// Starts the release of `clients` in the background (counted by `probe::cleanup`, so a
/// one-shot `check` waits for it); the receiver says whether every Refresh(0) was confirmed.
/// Also used when a run is dropped mid-way (daemon shutdown): see `Streams`' `Drop`.
pub(crate) fn spawn_release(clients: Vec<TurnClient>) -> tokio::sync::oneshot::Receiver<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    crate::probe::cleanup::spawn(async move {
        let until = Instant::now() + RELEASE_BOUND;
        let mut clients = clients;
        let released = futures::future::join_all(clients.iter_mut().map(|c| async move {
            let ok = !c.needs_deallocate() || c.deallocate(until).await.is_ok();
            let _ = tokio::time::timeout_at(until, c.shutdown()).await;
            ok
        }))
        .await;
        let _ = tx.send(released.into_iter().all(|ok| ok));
    });
    rx
}
