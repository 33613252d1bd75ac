//! Releases that outlive a probe run. An ICE agent still gathering at the deadline cannot be
//! cancelled (webrtc-ice), so it is closed in the background once gathering ends; its TURN
//! allocation is released then. The daemon lets such tasks finish on their own; a one-shot
//! command (`check`) waits for them, bounded, before the process exits — otherwise exiting
//! would leave the allocation on the TURN server until its lifetime runs out.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

static PENDING: AtomicUsize = AtomicUsize::new(0);
static SETTLED: Notify = Notify::const_new();

/// Runs `release` in the background and counts it until it ends.
pub fn spawn<F>(release: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    PENDING.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        release.await;
        if PENDING.fetch_sub(1, Ordering::SeqCst) == 1 {
            SETTLED.notify_waiters();
        }
    });
}

/// Background releases still running.
pub fn pending() -> usize {
    PENDING.load(Ordering::SeqCst)
}

/// Waits until no background release is running, at most `bound`; returns how many are left.
pub async fn wait(bound: Duration) -> usize {
    let end = tokio::time::Instant::now() + bound;
    loop {
        let settled = SETTLED.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        let left = pending();
        if left == 0 {
            return 0;
        }
        if tokio::time::timeout_at(end, settled).await.is_err() {
            return pending();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_when_background_releases_end_or_at_the_bound() {
        spawn(async { tokio::time::sleep(Duration::from_millis(50)).await });
        assert!(pending() >= 1);
        assert_eq!(wait(Duration::from_secs(5)).await, 0);
        spawn(async { tokio::time::sleep(Duration::from_secs(30)).await });
        let t = std::time::Instant::now();
        assert!(wait(Duration::from_millis(100)).await >= 1);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
