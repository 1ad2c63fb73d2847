//! The one clock: reading the time and waiting for it wherever time decides behaviour, so tests
//! move time instead of sleeping.
//!
//! The rule:
//! - Time that decides what a plugin does — TTLs, staleness and prefetch windows, expiry of idle
//!   upstream connections, intervals of background work (forward health checks, health
//!   self-probes, reload polling), a timeout after which a fallback is served (`serve_stale
//!   verify`) — is read with [`Clock::now`] and waited for with [`Clock::sleep`] /
//!   [`Clock::timeout`] on a `Clock` the component is built with (`Clock::system()` in
//!   production).
//! - Unit and in-process tests build the component with a [`ManualClock`] and
//!   [`advance`](ManualClock::advance) it: every sleeper whose deadline has passed wakes at
//!   once; nothing moves on its own. A test waits on real time only for real work to happen (a
//!   socket answering, a spawned task running), never to let time pass.
//! - Tokio's paused time (`tokio::time::pause`, `start_paused`) is not used: it moves tokio's
//!   timers but not the `Instant`s that stores and pools compare against, and while the runtime
//!   waits on a real socket it jumps to the next timer, so I/O timeouts fire early in tests
//!   that talk to real UDP/TCP peers.
//! - Bounds on one I/O exchange (read, dial, handshake timeouts, forward's per-query deadline)
//!   stay on tokio's timer: they race the kernel, not the program's notion of time. Durations
//!   measured for metrics use `Instant` directly.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

/// A cheap, clonable handle on the time: the system's monotonic clock, or in tests a manual one.
#[derive(Clone, Default)]
pub(crate) struct Clock {
    /// None: the system clock.
    #[cfg(test)]
    manual: Option<std::sync::Arc<Manual>>,
}

/// A wait given up by [`Clock::timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl Clock {
    /// The system's monotonic clock.
    pub(crate) fn system() -> Clock {
        Clock::default()
    }

    /// The current time.
    pub(crate) fn now(&self) -> Instant {
        #[cfg(test)]
        if let Some(m) = &self.manual {
            return m.now();
        }
        Instant::now()
    }

    /// The wall-clock time (DNSSEC signature validity, TSIG time): the system's, or in tests the
    /// manual clock's start time moved by as much as the clock was advanced.
    pub(crate) fn wall(&self) -> SystemTime {
        #[cfg(test)]
        if let Some(m) = &self.manual {
            return m.wall_base + *m.offset.borrow();
        }
        SystemTime::now()
    }

    /// [`Clock::wall`] in whole seconds since 1970.
    pub(crate) fn unix(&self) -> u64 {
        self.wall()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// How long ago `earlier` was (zero if it is in the future).
    pub(crate) fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    /// Waits until `deadline`.
    pub(crate) async fn sleep_until(&self, deadline: Instant) {
        #[cfg(test)]
        if let Some(m) = &self.manual {
            let mut rx = m.offset.subscribe();
            // The sender lives in `m`, which `self` keeps alive: this cannot fail.
            let _ = rx.wait_for(|o| m.base + *o >= deadline).await;
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }

    /// Waits for `d`.
    pub(crate) async fn sleep(&self, d: Duration) {
        let deadline = self.now() + d;
        self.sleep_until(deadline).await;
    }

    /// Runs `fut` for at most `d`.
    pub(crate) async fn timeout<F: Future>(
        &self,
        d: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        tokio::select! {
            biased;
            out = fut => Ok(out),
            () = self.sleep(d) => Err(Elapsed),
        }
    }
}

/// The state of a manual clock: a fixed start and how far it has been advanced.
#[cfg(test)]
struct Manual {
    base: Instant,
    wall_base: SystemTime,
    offset: tokio::sync::watch::Sender<Duration>,
}

#[cfg(test)]
impl Manual {
    fn now(&self) -> Instant {
        self.base + *self.offset.borrow()
    }
}

/// A clock that moves only when told to, for tests: hand [`ManualClock::clock`] to the code
/// under test and [`ManualClock::advance`] it.
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct ManualClock(std::sync::Arc<Manual>);

#[cfg(test)]
impl ManualClock {
    pub(crate) fn new() -> ManualClock {
        ManualClock(std::sync::Arc::new(Manual {
            base: Instant::now(),
            wall_base: SystemTime::now(),
            offset: tokio::sync::watch::channel(Duration::ZERO).0,
        }))
    }

    /// A handle on this clock for the code under test.
    pub(crate) fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.0.clone()),
        }
    }

    /// Moves the clock forward by `d`, waking every sleeper whose deadline has come.
    pub(crate) fn advance(&self, d: Duration) {
        self.0.offset.send_modify(|o| *o += d);
    }

    /// The clock's current time.
    pub(crate) fn now(&self) -> Instant {
        self.0.now()
    }

    /// Waits (bounded by real time, for the code under test to get there) until `n` tasks
    /// sleep on this clock, so that an `advance` that follows is seen by all of them.
    pub(crate) async fn sleepers(&self, n: usize) {
        let what = format!("{n} tasks to sleep on the clock");
        super::testing::eventually(&what, || self.0.offset.receiver_count() >= n).await;
    }
}

#[cfg(test)]
impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn manual_time_moves_only_when_advanced() {
        let m = ManualClock::new();
        let c = m.clock();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        m.advance(Duration::from_secs(90));
        assert_eq!(c.now(), t0 + Duration::from_secs(90));
        assert_eq!(c.clone().now(), m.now());
        assert_eq!(c.since(t0), Duration::from_secs(90));
        assert_eq!(c.since(t0 + Duration::from_secs(100)), Duration::ZERO);
        let w0 = c.unix();
        m.advance(Duration::from_secs(86400));
        assert_eq!(c.unix(), w0 + 86400, "the wall clock moves with it");
    }

    #[test]
    fn system_time_moves() {
        let c = Clock::system();
        let t0 = c.now();
        assert!(c.now() >= t0);
        assert!(c.since(t0) < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn sleepers_wake_when_their_deadline_is_passed() {
        let m = ManualClock::new();
        let c = m.clock();
        let woke = Arc::new(AtomicBool::new(false));
        let w = woke.clone();
        let task = tokio::spawn(async move {
            c.sleep(Duration::from_secs(10)).await;
            w.store(true, Ordering::SeqCst);
        });
        m.sleepers(1).await;
        m.advance(Duration::from_secs(9));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!woke.load(Ordering::SeqCst), "woke a second early");
        m.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the sleeper wakes once the clock passes its deadline")
            .unwrap();
        assert!(woke.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn timeout_gives_up_only_when_the_clock_says_so() {
        let m = ManualClock::new();
        let c = m.clock();
        assert_eq!(c.timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
        let c2 = c.clone();
        let waiting = tokio::spawn(async move {
            c2.timeout(Duration::from_secs(30), std::future::pending::<()>())
                .await
        });
        m.sleepers(1).await;
        m.advance(Duration::from_secs(29));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        m.advance(Duration::from_secs(1));
        let r = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r, Err(Elapsed));
    }

    #[tokio::test]
    async fn system_sleep_and_timeout_use_real_time() {
        let c = Clock::system();
        let t0 = Instant::now();
        c.sleep(Duration::from_millis(10)).await;
        assert!(t0.elapsed() >= Duration::from_millis(10));
        let r = c
            .timeout(Duration::from_millis(10), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Elapsed));
    }
}
