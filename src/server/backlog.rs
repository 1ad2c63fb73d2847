//! How long UDP queries may wait in a listener socket's receive queue: a query that waited
//! longer than [`STALE`] is dropped unanswered (its client has retried or given up, and
//! answering it would only make the queries behind it late too), and the socket's receive
//! buffer follows the server's pace ([`Backlog`]): it shrinks while a standing queue makes
//! queries wait longer than [`TARGET`], so that under sustained overload the kernel drops the
//! excess on arrival (which costs the server nothing) instead of queueing seconds of work, and
//! grows back to its full size (for bursts) once queries are read as they come.
//!
//! A standing queue is told from a burst as CoDel (RFC 8289) does: by the *shortest* wait seen
//! over an interval. A burst, or a server that gets the CPU in slices, makes some waits long but
//! the queue empties now and then within the interval; only when even the shortest wait of a
//! whole [`INTERVAL`] is over the target does the server not keep up. Shrinking on one long wait
//! dropped queries at the kernel at 1x of capacity that would have been answered in time.
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
/// The interval over which the shortest wait is taken; shrinks are at least this far apart
/// (the queue drains at the server's pace after each).
pub(crate) const INTERVAL: Duration = Duration::from_millis(300);
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
    /// The interval being watched: when it started and the shortest wait seen in it.
    window: Option<(Instant, Duration)>,
}

impl Backlog {
    pub(crate) fn new() -> Backlog {
        Backlog {
            size: FULL,
            changed: None,
            window: None,
        }
    }

    /// The buffer size asked for now.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The oldest query of a batch read at `now` had waited `waited`: the new receive-buffer
    /// size when it should change. Shrinks when even the shortest wait over an [`INTERVAL`] was
    /// over TARGET (a standing queue), or at once after a wait over [`STALE`]: in proportion
    /// (to what would have made that wait TARGET, at least by half, not under MIN). Grows by
    /// doubling, up to FULL, while queries wait under TARGET / 10.
    pub(crate) fn observe(&mut self, waited: Duration, now: Instant) -> Option<usize> {
        let since = self.changed.map(|t| now.saturating_duration_since(t));
        let standing = match self.window {
            Some((start, shortest)) => {
                let shortest = shortest.min(waited);
                if now.saturating_duration_since(start) >= INTERVAL {
                    self.window = Some((now, waited));
                    Some(shortest)
                } else {
                    self.window = Some((start, shortest));
                    None
                }
            }
            None => {
                self.window = Some((now, waited));
                None
            }
        };
        let over = standing
            .filter(|w| *w > TARGET)
            .or((waited > STALE).then_some(waited));
        let next = if let Some(w) = over.filter(|_| self.size > MIN) {
            if since.is_some_and(|s| s < INTERVAL) {
                return None;
            }
            let scaled = (self.size as f64 * TARGET.as_secs_f64() / w.as_secs_f64()) as usize;
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
        // A new interval starts with the new size.
        self.window = Some((now, waited));
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
    fn a_standing_queue_shrinks_the_buffer_in_proportion_once_an_interval_down_to_the_floor() {
        let mut b = Backlog::new();
        let t = Instant::now();
        // Every batch waited 400 ms: nothing changes before a whole interval has been seen.
        let mut at = t;
        while at < t + INTERVAL {
            assert_eq!(b.observe(MS * 400, at), None);
            at += MS * 10;
        }
        // Then what would have made the shortest wait 200 ms: half.
        assert_eq!(b.observe(MS * 400, at), Some(FULL / 2));
        // Not again before the queue had an interval to drain.
        assert_eq!(b.observe(MS * 400, at + MS * 10), None);
        let mut sizes = vec![];
        for _ in 0..200 {
            at += MS * 10;
            sizes.extend(b.observe(MS * 400, at));
        }
        assert_eq!(sizes, [FULL / 4, FULL / 8, MIN], "never under MIN");
        assert_eq!(b.size(), MIN);
    }

    #[test]
    fn bursts_whose_queue_empties_within_the_interval_keep_the_buffer() {
        let mut b = Backlog::new();
        let t = Instant::now();
        // A server that gets the CPU in slices, or bursts: long waits, but every interval also
        // has batches read soon after they came.
        for i in 0..500 {
            let waited = if i % 20 == 19 { MS * 50 } else { MS * 900 };
            assert_eq!(b.observe(waited, t + MS * 10 * i), None, "batch {i}");
        }
        assert_eq!(b.size(), FULL);
    }

    #[test]
    fn a_wait_over_a_second_shrinks_it_at_once() {
        let mut b = Backlog::new();
        let t = Instant::now();
        // Waited 2 s: what would have made it 200 ms is a tenth.
        assert_eq!(b.observe(MS * 2000, t), Some(FULL / 10));
        // Not again before the queue had time to drain.
        assert_eq!(b.observe(MS * 2000, t + MS * 299), None);
        // 1.2 s: at least halved, not under the floor.
        assert_eq!(b.observe(MS * 1200, t + MS * 300), Some(MIN));
        assert_eq!(b.observe(MS * 5000, t + MS * 600), None, "never under MIN");
        assert_eq!(b.size(), MIN);
    }

    #[test]
    fn waits_between_a_tenth_of_the_target_and_the_target_hold_the_size() {
        let mut b = Backlog::new();
        let t = Instant::now();
        b.observe(MS * 1500, t).unwrap();
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
