//! The bounded queue between gathering and sending: whole [`Snapshot`]s, oldest first.
//!
//! * **Bounded twice**: at most `max_samples` samples (the oldest dropped first, counted) and
//!   nothing older than `max_age` (dropped, counted), so an outage of any length costs bounded
//!   memory and the receiver is never sent samples it would reject as too old.
//! * **In order, exactly once when all goes well**: a batch is the oldest snapshots; they leave
//!   the queue only when the receiver accepted them (or refused them for good), identified by
//!   sequence number, so snapshots dropped meanwhile for room cannot shift what gets removed.
//! * Snapshots are whole gathers (one timestamp each); a batch takes whole snapshots up to a
//!   sample budget, at least one.

use std::collections::VecDeque;
use std::time::Duration;

use super::wire::Snapshot;
use crate::config::QueueLimits;

/// Queued snapshots with their sequence numbers.
pub struct Queue {
    limits: QueueLimits,
    items: VecDeque<(u64, Snapshot)>,
    samples: usize,
    next_seq: u64,
}

/// What [`Queue::batch`] picked: the snapshots' sequence range and sample count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    pub first: u64,
    pub last: u64,
    pub samples: usize,
}

impl Queue {
    pub fn new(limits: QueueLimits) -> Queue {
        Queue {
            limits,
            items: VecDeque::new(),
            samples: 0,
            next_seq: 0,
        }
    }

    /// Samples waiting.
    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds a gather; returns how many samples were dropped to stay within `max_samples`
    /// (oldest first; a single gather larger than the bound keeps only its first samples).
    pub fn push(&mut self, mut snap: Snapshot) -> usize {
        let mut dropped = 0;
        let max = self.limits.max_samples;
        if snap.samples.len() > max {
            dropped += snap.samples.len() - max;
            snap.samples.truncate(max);
        }
        while self.samples + snap.samples.len() > max {
            match self.items.pop_front() {
                Some((_, old)) => {
                    self.samples -= old.samples.len();
                    dropped += old.samples.len();
                }
                None => break,
            }
        }
        if !snap.samples.is_empty() {
            self.samples += snap.samples.len();
            self.items.push_back((self.next_seq, snap));
            self.next_seq += 1;
        }
        dropped
    }

    /// Drops snapshots older than `max_age` at `now_ms`; returns the samples dropped.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let max_age = i64::try_from(self.limits.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut dropped = 0;
        while let Some((_, front)) = self.items.front() {
            if now_ms.saturating_sub(front.timestamp_ms) <= max_age {
                break;
            }
            dropped += front.samples.len();
            self.samples -= front.samples.len();
            self.items.pop_front();
        }
        dropped
    }

    /// The oldest whole snapshots holding at most `budget` samples (at least one snapshot).
    pub fn batch(&self, budget: usize) -> Option<Batch> {
        let (first, _) = self.items.front()?;
        let mut b = Batch {
            first: *first,
            last: *first,
            samples: 0,
        };
        for (seq, snap) in &self.items {
            if b.samples > 0 && b.samples + snap.samples.len() > budget {
                break;
            }
            b.last = *seq;
            b.samples += snap.samples.len();
        }
        Some(b)
    }

    /// The snapshots of `batch` still queued, oldest first.
    pub fn snapshots(&self, batch: Batch) -> impl Iterator<Item = &Snapshot> {
        self.items
            .iter()
            .filter(move |(seq, _)| (batch.first..=batch.last).contains(seq))
            .map(|(_, s)| s)
    }

    /// Removes what is left of `batch` (delivered or refused); returns the samples removed.
    pub fn remove(&mut self, batch: Batch) -> usize {
        let mut removed = 0;
        while let Some((seq, front)) = self.items.front() {
            if *seq > batch.last {
                break;
            }
            removed += front.samples.len();
            self.samples -= front.samples.len();
            self.items.pop_front();
        }
        removed
    }

    /// Empties the queue; returns the samples it held.
    pub fn clear(&mut self) -> usize {
        let n = self.samples;
        self.items.clear();
        self.samples = 0;
        n
    }
}

/// Exponential backoff with jitter for retries: `base · 2^(n-1)` capped at `cap`, spread by
/// ± `jitter` (`u` uniform in 0..1), and never less than a receiver's `Retry-After`. The cap
/// is Prometheus' own remote_write `max_backoff` (5 s): one small request every few seconds
/// costs a receiver that is down nothing, and the backlog drains soon after it is back.
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, u: f64) -> Duration {
    const BASE: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(5);
    const JITTER: f64 = 0.2;
    let exp = BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(CAP);
    let spread = exp.mul_f64(1.0 - JITTER + 2.0 * JITTER * u.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) => spread.max(ra.min(MAX_RETRY_AFTER)),
        None => spread,
    }
}

/// Longest `Retry-After` honoured, so a bogus header cannot stall delivery for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::wire::{Label, Series, SeriesData};

    fn snap(ts: i64, n: usize) -> Snapshot {
        let s: Series = Series::new(SeriesData::new(vec![Label {
            name: "__name__".into(),
            value: "x".into(),
        }]));
        Snapshot {
            timestamp_ms: ts,
            samples: (0..n).map(|i| (s.clone(), i as f64)).collect(),
        }
    }

    fn limits(max_samples: usize, max_age_ms: u64) -> QueueLimits {
        QueueLimits {
            max_samples,
            max_age: Duration::from_millis(max_age_ms),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let mut q = Queue::new(limits(10, 1_000_000));
        assert_eq!(q.push(snap(1, 4)), 0);
        assert_eq!(q.push(snap(2, 4)), 0);
        assert_eq!(q.push(snap(3, 4)), 4, "the oldest gather makes room");
        assert_eq!(q.samples(), 8);
        assert_eq!(
            q.snapshots(q.batch(100).unwrap()).map(|s| s.timestamp_ms).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(
            q.push(snap(4, 25)),
            8 + 15,
            "a gather larger than the bound keeps its first samples"
        );
        assert_eq!(q.samples(), 10);
    }

    #[test]
    fn old_snapshots_expire_and_batches_take_whole_snapshots_in_order() {
        let mut q = Queue::new(limits(100, 1000));
        for ts in [0, 500, 1000, 1500] {
            q.push(snap(ts, 3));
        }
        assert_eq!(q.expire(1400), 3, "older than 1 s at 1.4 s");
        let b = q.batch(7).unwrap();
        assert_eq!(b.samples, 6);
        assert_eq!(q.snapshots(b).map(|s| s.timestamp_ms).collect::<Vec<_>>(), vec![500, 1000]);
        assert_eq!(q.batch(1).unwrap().samples, 3, "at least one snapshot, whatever the budget");
        // A snapshot dropped for room while the batch was in flight is not removed twice.
        q.push(snap(2000, 3));
        assert_eq!(q.remove(b), 6);
        assert_eq!(
            q.snapshots(q.batch(100).unwrap()).map(|s| s.timestamp_ms).collect::<Vec<_>>(),
            vec![1500, 2000]
        );
    }

    #[test]
    fn retries_back_off_exponentially_within_the_cap_and_honour_retry_after() {
        assert_eq!(retry_delay(1, None, 0.5), Duration::from_millis(500));
        assert_eq!(retry_delay(3, None, 0.5), Duration::from_secs(2));
        assert_eq!(retry_delay(30, None, 0.5), Duration::from_secs(5));
        assert!(retry_delay(1, None, 0.0) >= Duration::from_millis(400));
        assert!(retry_delay(1, None, 1.0) <= Duration::from_millis(600));
        assert_eq!(retry_delay(1, Some(Duration::from_secs(5)), 1.0), Duration::from_secs(5));
        assert_eq!(retry_delay(1, Some(Duration::from_secs(86_400)), 0.5), MAX_RETRY_AFTER);
    }
}
