//! A one-thread timer: runs boxed jobs at given instants, in deadline order. Used to delay
//! replies without a thread per delayed packet. Dropping it discards pending jobs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    jobs: HashMap<u64, Job>,
    seq: u64,
    stop: bool,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
}

/// Runs jobs at their deadlines on one background thread.
pub(crate) struct Scheduler {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

/// A cheap handle to schedule jobs on a [`Scheduler`].
#[derive(Clone)]
pub(crate) struct SchedHandle {
    inner: Arc<Inner>,
}

impl Scheduler {
    pub(crate) fn new(name: &str) -> std::io::Result<Scheduler> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let i2 = inner.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(&i2))?;
        Ok(Scheduler {
            inner,
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> SchedHandle {
        SchedHandle {
            inner: self.inner.clone(),
        }
    }
}

impl SchedHandle {
    /// Run `job` after `delay` (jobs with equal deadlines run in submission order).
    pub(crate) fn after(&self, delay: Duration, job: impl FnOnce() + Send + 'static) {
        let at = Instant::now() + delay;
        if let Ok(mut st) = self.inner.state.lock() {
            if st.stop {
                return;
            }
            st.seq += 1;
            let id = st.seq;
            st.heap.push(Reverse((at, id)));
            st.jobs.insert(id, Box::new(job));
            self.inner.cv.notify_one();
        }
    }
}

fn run(inner: &Inner) {
    let Ok(mut st) = inner.state.lock() else {
        return;
    };
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        match st.heap.peek().copied() {
            Some(Reverse((at, id))) if at <= now => {
                st.heap.pop();
                let job = st.jobs.remove(&id);
                drop(st);
                if let Some(job) = job {
                    // A panicking job must not kill the timer thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
                st = match inner.state.lock() {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
            next => {
                let wait = next
                    .map(|Reverse((at, _))| at.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(1));
                st = match inner.cv.wait_timeout(st, wait) {
                    Ok((s, _)) => s,
                    Err(_) => return,
                };
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.stop = true;
            st.jobs.clear();
            st.heap.clear();
        }
        self.inner.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_jobs_in_deadline_order() {
        let s = Scheduler::new("t").unwrap();
        let (tx, rx) = mpsc::channel();
        for (i, ms) in [(1, 60u64), (2, 10), (3, 30)] {
            let tx = tx.clone();
            s.handle().after(Duration::from_millis(ms), move || {
                let _ = tx.send(i);
            });
        }
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(2)).unwrap())
            .collect();
        assert_eq!(got, vec![2, 3, 1]);
    }

    #[test]
    fn drop_discards_pending() {
        let s = Scheduler::new("t").unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        s.handle().after(Duration::from_secs(30), move || {
            let _ = tx.send(());
        });
        drop(s);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }
}
