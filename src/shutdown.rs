//! The one "stop now" signal of the process, and the one place that turns Unix signals into it.
//!
//! [`Shutdown`] is shared by everything that must stop together: the daemon's scheduler and
//! HTTP server (`commands::run`) and the responder's accept loops (`responder`). It is one
//! `watch` value behind an `Arc`, so any clone can fire it, any clone can wait for it, and a
//! waiter that subscribes after it fired still sees it. Owners that must stop their loops when
//! they are dropped hold a [`StopOnDrop`].
//!
//! [`Signals`] installs the handlers for SIGTERM and SIGINT (stop) and, when asked, SIGHUP
//! (reload) before anything starts, so a signal during start-up is not lost. `run` asks for
//! SIGHUP; the responder has nothing to reload and leaves SIGHUP at its default.
//!
//! Imports nothing from the crate: it sits beside `outcome` at the bottom of the stack.

use std::sync::Arc;

use tokio::sync::watch;

/// A one-way "stop now" signal shared by loops, servers and signal handlers.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        Shutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Fires the signal (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// A guard that fires this signal when dropped.
    pub fn stop_on_drop(&self) -> StopOnDrop {
        StopOnDrop(self.clone())
    }
}

/// Fires its [`Shutdown`] when dropped: the loops an owner started end with the owner, also
/// when it is dropped half-way through starting them.
#[derive(Debug)]
pub struct StopOnDrop(Shutdown);

impl StopOnDrop {
    /// The guarded signal.
    pub fn signal(&self) -> &Shutdown {
        &self.0
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

/// What a received signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop gracefully.
    Stop,
    /// SIGHUP: load the configuration again.
    Reload,
}

/// The process's signal handlers, installed once before anything starts.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Handles SIGTERM and SIGINT, and SIGHUP when `reload` (otherwise SIGHUP keeps its default
    /// action). Must be called inside the tokio runtime.
    pub fn install(reload: bool) -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: if reload { Some(signal(SignalKind::hangup())?) } else { None },
            })
        }
        #[cfg(not(unix))]
        {
            let _ = reload;
            Ok(Signals {})
        }
    }

    /// The next signal received.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let hup = async {
                match self.hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = self.term.recv() => Signal::Stop,
                _ = self.int.recv() => Signal::Stop,
                _ = hup => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }

    /// Resolves at the first stop signal; reload signals in between are ignored.
    pub async fn stopped(&mut self) {
        while self.recv().await != Signal::Stop {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_late_waiter_sees_a_signal_that_already_fired() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        s.clone().trigger();
        assert!(s.is_triggered());
        tokio::time::timeout(Duration::from_secs(1), s.wait())
            .await
            .expect("wait() after trigger() resolves at once");
    }

    #[tokio::test]
    async fn dropping_the_guard_stops_every_waiter() {
        let s = Shutdown::new();
        let guard = s.stop_on_drop();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        assert!(!guard.signal().is_triggered());
        drop(guard);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("waiter woke up")
                .expect("waiter task");
        }
        assert!(s.is_triggered());
    }
}
