//! At most N probe runs in flight per target host, across the scheduler and `/probe`.
//!
//! The global `concurrency` limit bounds the daemon; this bounds what one tenant endpoint sees
//! from it. Whatever the config says (ten probes on the same relay, a Prometheus scraping
//! `/probe` for it every second), the daemon never opens a burst of connections to one host:
//! runs beyond N wait for a slot, within their own deadline. Hosts are compared lower-case,
//! without a trailing dot; a run that touches several hosts (ICE) takes a slot on each, in
//! sorted order so two such runs can never hold each other's slots.
//!
//! Entries are weak: a host nobody probes any more takes no memory beyond its name until the
//! next sweep (each `acquire` drops dead entries once the map grows past [`SWEEP_AT`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The default runs in flight per host.
pub const DEFAULT_PER_HOST: usize = 2;

/// Map size past which dead entries are swept.
const SWEEP_AT: usize = 256;

/// Per-host slots, shared by everything that launches probe runs.
#[derive(Debug)]
pub struct HostLimiter {
    per_host: usize,
    hosts: Mutex<HashMap<String, Weak<Semaphore>>>,
}

/// Slots held for one run; released on drop.
#[derive(Debug)]
pub struct HostSlots {
    _permits: Vec<OwnedSemaphorePermit>,
}

impl Default for HostLimiter {
    fn default() -> Self {
        HostLimiter::new(DEFAULT_PER_HOST)
    }
}

impl HostLimiter {
    /// `per_host` runs at once per host (at least 1).
    pub fn new(per_host: usize) -> HostLimiter {
        HostLimiter {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The configured limit.
    pub fn per_host(&self) -> usize {
        self.per_host
    }

    fn semaphore(&self, host: &str) -> Arc<Semaphore> {
        let Ok(mut map) = self.hosts.lock() else {
            // A poisoned map only loses the limit, never the run.
            return Arc::new(Semaphore::new(self.per_host));
        };
        if map.len() > SWEEP_AT {
            map.retain(|_, w| w.strong_count() > 0);
        }
        if let Some(s) = map.get(host).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(Semaphore::new(self.per_host));
        map.insert(host.to_string(), Arc::downgrade(&s));
        s
    }

    /// Waits for a slot on every host in `hosts` for as long as it takes (the scheduler: its
    /// run counts as in flight meanwhile, so the probe's ticks are skipped and counted).
    pub async fn wait(&self, hosts: &[String]) -> HostSlots {
        let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 86400);
        match self.acquire(hosts, far).await {
            Some(s) => s,
            None => HostSlots { _permits: Vec::new() },
        }
    }

    /// Waits for a slot on every host in `hosts` until `deadline`; `None` if one stayed busy.
    pub async fn acquire(&self, hosts: &[String], deadline: Instant) -> Option<HostSlots> {
        let mut keys: Vec<String> = hosts.iter().map(|h| normalize(h)).filter(|h| !h.is_empty()).collect();
        keys.sort();
        keys.dedup();
        let mut permits = Vec::with_capacity(keys.len());
        for k in keys {
            let sem = self.semaphore(&k);
            match tokio::time::timeout_at(deadline, sem.acquire_owned()).await {
                Ok(Ok(p)) => permits.push(p),
                _ => return None,
            }
        }
        Some(HostSlots { _permits: permits })
    }
}

fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_third_run_on_one_host_waits_and_other_hosts_do_not() {
        let l = HostLimiter::new(2);
        let soon = || Instant::now() + Duration::from_millis(50);
        let a = l.acquire(&["Relay.example.".into()], soon()).await.expect("1st");
        let _b = l.acquire(&["relay.example".into()], soon()).await.expect("2nd");
        assert!(l.acquire(&["relay.example".into()], soon()).await.is_none(), "3rd must wait");
        assert!(l.acquire(&["other.example".into()], soon()).await.is_some());
        drop(a);
        assert!(
            l.acquire(&["relay.example".into()], soon()).await.is_some(),
            "a freed slot is reused"
        );
    }

    #[tokio::test]
    async fn runs_on_several_hosts_take_a_slot_on_each() {
        let l = HostLimiter::new(1);
        let soon = || Instant::now() + Duration::from_millis(50);
        let _ice = l.acquire(&["b.example".into(), "a.example".into()], soon()).await.expect("both");
        assert!(l.acquire(&["a.example".into()], soon()).await.is_none());
        assert!(l.acquire(&["b.example".into()], soon()).await.is_none());
    }
}
