//! How long UDP queries may wait in a listener socket's receive queue: a query that waited
//! longer than [`STALE`] is dropped unanswered (its client has retried or given up, and
//! answering it would only make the queries behind it late too), and the socket's receive
//! buffer follows the server's pace ([`Backlog`]): it shrinks while queries wait longer than
//! [`TARGET`], so that under sustained overload the kernel drops the excess on arrival (which
//! costs the server nothing) instead of queueing seconds of work, and grows back to its full
//! size (for bursts) once queries are read as they come.
//!
//! Without this, a server held below its offered load (a CPU limit, a slow node) reads its
//! 4 MB queue in FIFO order: every answer is seconds late, and goodput (answers a client still
//! waits for) collapses to a fraction of capacity.

use std::time::{Duration, Instant};

crate::metrics::metrics! {
    STALE_DROPPED: Counter(
        "sextant_udp_stale_dropped_total",
        "UDP queries dropped unanswered because they waited in the socket's receive queue longer than a second."
    );
}

/// A query older than this when read is dropped.
pub(crate) const STALE: Duration = Duration::from_secs(1);
/// The longest wait in the receive queue the buffer size aims at.
pub(crate) const TARGET: Duration = Duration::from_millis(200);
/// Receive buffer of a UDP listener socket at rest (the kernel doubles it; capped by
/// net.core.rmem_max unless forced).
pub(crate) const FULL: usize = 4 << 20;
/// The smallest receive buffer the socket shrinks to (the kernel doubles it: about 600 small
/// queries, enough for the bursts of a server that gets the CPU in slices).
pub(crate) const MIN: usize = 256 << 10;
/// Shrinks are at least this far apart (the queue drains at the server's pace after each).
const SHRINK_EVERY: Duration = Duration::from_millis(200);
/// Growth steps are at least this far apart, and only while queries wait under TARGET / 10.
const GROW_EVERY: Duration = Duration::from_secs(1);

/// Counts one query dropped as stale.
pub(crate) fn stale_dropped() {
    STALE_DROPPED.inc();
}

/// The receive-buffer size of one socket, adjusted from how long the oldest query of each batch
/// waited.
pub(crate) struct Backlog {
    size: usize,
    changed: Option<Instant>,
}

impl Backlog {
    pub(crate) fn new() -> Backlog {
        Backlog {
            size: FULL,
            changed: None,
        }
    }

    /// The buffer size asked for now.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The oldest query of a batch read at `now` had waited `waited`: the new receive-buffer
    /// size when it should change. Shrinks in proportion (to what would have made the wait
    /// TARGET, at least by half, not under MIN); grows by doubling, up to FULL.
    pub(crate) fn observe(&mut self, waited: Duration, now: Instant) -> Option<usize> {
        let since = self.changed.map(|t| now.saturating_duration_since(t));
        let next = if waited > TARGET && self.size > MIN {
            if since.is_some_and(|s| s < SHRINK_EVERY) {
                return None;
            }
            let scaled = (self.size as f64 * TARGET.as_secs_f64() / waited.as_secs_f64()) as usize;
            scaled.min(self.size / 2).max(MIN)
        } else if waited < TARGET / 10 && self.size < FULL {
            if since.is_some_and(|s| s < GROW_EVERY) {
                return None;
            }
            (self.size * 2).min(FULL)
        } else {
            return None;
        };
        self.size = next;
        self.changed = Some(now);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_queue_read_as_it_comes_keeps_the_full_buffer() {
        let mut b = Backlog::new();
        let t = Instant::now();
        for i in 0..100 {
            assert_eq!(b.observe(MS * (i % 90), t + MS * i * 10), None);
        }
        assert_eq!(b.size(), FULL);
    }

    #[test]
    fn long_waits_shrink_the_buffer_in_proportion_at_most_every_200ms_down_to_the_floor() {
        let mut b = Backlog::new();
        let t = Instant::now();
        // Waited 2 s: what would have made it 200 ms is a tenth.
        assert_eq!(b.observe(MS * 2000, t), Some(FULL / 10));
        // Not again before the queue had time to drain.
        assert_eq!(b.observe(MS * 2000, t + MS * 199), None);
        // 300 ms: at least halved, not under the floor.
        assert_eq!(b.observe(MS * 300, t + MS * 200), Some(MIN));
        assert_eq!(b.observe(MS * 5000, t + MS * 400), None, "never under MIN");
        assert_eq!(b.size(), MIN);
    }

    #[test]
    fn waits_between_a_tenth_of_the_target_and_the_target_hold_the_size() {
        let mut b = Backlog::new();
        let t = Instant::now();
        b.observe(MS * 400, t).unwrap();
        let held = b.size();
        for i in 1..50 {
            assert_eq!(b.observe(MS * (20 + i * 3), t + MS * 1000 * i), None);
        }
        assert_eq!(b.size(), held);
    }

    #[test]
    fn short_waits_grow_it_back_doubling_once_a_second() {
        let mut b = Backlog::new();
        let t = Instant::now();
        assert_eq!(b.observe(MS * 100_000, t), Some(MIN));
        assert_eq!(b.observe(MS, t + MS * 999), None);
        let mut size = MIN;
        let mut at = t;
        while size < FULL {
            at += MS * 1000;
            size *= 2;
            assert_eq!(b.observe(Duration::ZERO, at), Some(size));
        }
        assert_eq!(b.observe(Duration::ZERO, at + MS * 5000), None);
        assert_eq!(b.size(), FULL);
    }
}
