//! A userspace impairment relay for UDP (the kernel here has no netem): datagrams from the
//! client side are forwarded to one upstream address, every `drop_every`-th one dropped and
//! each delayed by a fixed amount; answers from upstream go back to the client at once.
//!
//! Timing: the delaying thread sleeps until 1 ms before a datagram is due and spins the rest
//! (a 1 ms-granular timer would add up to a millisecond of its own). Order is kept (a fixed
//! delay never reorders). Stopped and joined on drop; every loop checks the stop flag at least
//! every 20 ms, so a failing test never leaves a thread behind.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running relay: send to [`Impair::addr`] instead of the upstream.
pub struct Impair {
    pub addr: SocketAddr,
    /// Datagrams dropped and forwarded (client → upstream) so far.
    pub dropped: Arc<AtomicU32>,
    pub forwarded: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

type Queue = Arc<(Mutex<VecDeque<(Instant, Vec<u8>)>>, Condvar)>;

impl Impair {
    /// Relays 127.0.0.1:<ephemeral> → `upstream`, dropping every `drop_every`-th datagram
    /// (0: none) and delaying each by `delay`.
    pub fn start(upstream: SocketAddr, drop_every: u32, delay: Duration) -> Impair {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind impairment front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind impairment back");
        back.connect(upstream).expect("connect upstream");
        let tick = Some(Duration::from_millis(20));
        front.set_read_timeout(tick).expect("timeout");
        back.set_read_timeout(tick).expect("timeout");
        let addr = front.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU32::new(0));
        let forwarded = Arc::new(AtomicU32::new(0));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let queue: Queue = Arc::new((Mutex::new(VecDeque::new()), Condvar::new()));
        let mut threads = Vec::new();

        // Client → queue (with the drop rule).
        {
            let (front, stop, client, queue, dropped) = (
                front.try_clone().expect("clone"),
                stop.clone(),
                client.clone(),
                queue.clone(),
                dropped.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut n: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = front.recv_from(&mut buf) else { continue };
                    *client.lock().unwrap() = Some(from);
                    n += 1;
                    if drop_every > 0 && n.is_multiple_of(drop_every) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let (q, cv) = &*queue;
                    q.lock().unwrap().push_back((Instant::now() + delay, buf[..len].to_vec()));
                    cv.notify_one();
                }
            }));
        }
        // Queue → upstream, each datagram at its due time.
        {
            let (back, stop, queue, forwarded) = (back.try_clone().expect("clone"), stop.clone(), queue.clone(), forwarded.clone());
            threads.push(std::thread::spawn(move || {
                let (q, cv) = &*queue;
                while !stop.load(Ordering::Relaxed) {
                    let next = {
                        let mut g = q.lock().unwrap();
                        if g.is_empty() {
                            g = cv.wait_timeout(g, Duration::from_millis(20)).unwrap().0;
                        }
                        g.pop_front()
                    };
                    let Some((due, data)) = next else { continue };
                    let coarse = due.checked_sub(Duration::from_millis(1)).unwrap_or(due);
                    let now = Instant::now();
                    if coarse > now {
                        std::thread::sleep(coarse - now);
                    }
                    while Instant::now() < due {
                        std::hint::spin_loop();
                    }
                    if back.send(&data).is_ok() {
                        forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // Upstream → client, at once.
        {
            let (stop, client) = (stop.clone(), client.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(len) = back.recv(&mut buf) else { continue };
                    if let Some(to) = *client.lock().unwrap() {
                        let _ = front.send_to(&buf[..len], to);
                    }
                }
            }));
        }
        Impair {
            addr,
            dropped,
            forwarded,
            stop,
            threads,
        }
    }
}

impl Drop for Impair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
