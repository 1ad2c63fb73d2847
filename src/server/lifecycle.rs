//! Background work owned by a configuration generation, and the runtime state that outlives
//! generations. Plugins *declare* tasks during setup ([`Lifecycle::task`]); the runtime starts
//! them only once the generation is committed (every block set up, every listener bound) under
//! one cancellation token the generation owns, and retiring the generation cancels and joins
//! them. A generation that never commits (a failed reload, a failed bind, `-check`) started
//! nothing, by construction: the declared closures are simply dropped.
//!
//! What must survive a reload (the `kubernetes` index and its watches) is handed from one
//! generation to the next through [`Carry`], under a typed key; it lives as long as some
//! generation holds it. No process globals: the runtime passes [`RuntimeState`] and [`Carry`]
//! to setup.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use prometheus::{register_int_gauge, IntGauge};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use crate::plugin::BoxFuture;

/// Tasks running, summed over every generation still alive (the current one and any being
/// retired). Back at its value after a reload once the old generation is joined.
pub(crate) static TASKS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_generation_tasks",
        "Background tasks running, over every configuration generation alive."
    )
    .expect("metric registers once")
});

/// Generations whose tasks were started and are not yet joined (1 while serving, 2 during a
/// swap).
pub(crate) static GENERATIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_generations_running",
        "Configuration generations with started, not yet joined, background tasks."
    )
    .expect("metric registers once")
});

/// How long retiring a generation waits for its cancelled tasks to finish.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// State of the running process that generations read but do not own.
#[derive(Default)]
pub(crate) struct RuntimeState {
    shutting_down: AtomicBool,
}

impl RuntimeState {
    /// From now on `ready` answers 503 `Shutting down`.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// A key under which a value is handed from one generation to the next. Two keys that compare
/// equal name the same value; the value type is fixed by the key type.
pub(crate) trait CarryKey: PartialEq + Send + Sync + 'static {
    type Value: Send + Sync + 'static;
}

type Slot = (Box<dyn Any + Send + Sync>, Weak<dyn Any + Send + Sync>);

/// Values that survive reloads, held weakly: a value lives while some generation (its
/// handlers or tasks) keeps an `Arc` of it, and is dropped with the last one.
#[derive(Default)]
pub(crate) struct Carry {
    map: Mutex<HashMap<TypeId, Vec<Slot>>>,
}

impl Carry {
    /// The live value under `key`, if a generation still holds one.
    pub(crate) fn get<K: CarryKey>(&self, key: &K) -> Option<Arc<K::Value>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let slots = map.get_mut(&TypeId::of::<K>())?;
        slots.retain(|(_, w)| w.strong_count() > 0);
        slots
            .iter()
            .find(|(k, _)| k.downcast_ref::<K>() == Some(key))
            .and_then(|(_, w)| w.upgrade())
            .and_then(|v| v.downcast::<K::Value>().ok())
    }

    /// Offers `value` under `key` to later generations (replacing a dead entry).
    pub(crate) fn put<K: CarryKey>(&self, key: K, value: &Arc<K::Value>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let slots = map.entry(TypeId::of::<K>()).or_default();
        slots.retain(|(k, w)| w.strong_count() > 0 && k.downcast_ref::<K>() != Some(&key));
        let any: Arc<dyn Any + Send + Sync> = value.clone();
        slots.push((Box::new(key), Arc::downgrade(&any)));
    }
}

/// What a task gets when its generation starts it.
pub(crate) struct TaskCtx {
    cancel: CancellationToken,
    addrs: Arc<Vec<SocketAddr>>,
    spawner: Spawner,
}

impl TaskCtx {
    /// Resolves when the generation is retired; the task is dropped then anyway.
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The bound listener addresses of the declaring block (unspecified addresses shown as
    /// loopback), in Corefile key order.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Starts more work under the same generation.
    pub(crate) fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }
}

/// Starts work under a generation's cancellation, also at query time (a cache prefetch). Work
/// spawned before the generation started, or after it was retired, does not run.
#[derive(Clone)]
pub(crate) struct Spawner {
    tracker: TaskTracker,
    cancel: CancellationToken,
    started: Arc<AtomicBool>,
}

impl Spawner {
    /// The generation's cancellation token.
    pub(crate) fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// A spawner that runs work at once and is never cancelled (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Spawner {
        Spawner {
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            started: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Runs `fut` on the current runtime until it ends or the generation is retired; false
    /// (and `fut` dropped) when the generation is not running or there is no runtime.
    pub(crate) fn spawn<F>(&self, fut: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if !self.started.load(Ordering::Acquire) || self.cancel.is_cancelled() {
            return false;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let cancel = self.cancel.clone();
        TASKS.inc();
        self.tracker.spawn_on(
            async move {
                let _count = Counted;
                // The task first: at cancellation it gets one poll to see `cancelled()` and
                // clean up synchronously before it is dropped.
                tokio::select! {
                    biased;
                    _ = fut => {}
                    _ = cancel.cancelled() => {}
                }
            },
            &handle,
        );
        true
    }
}

/// hyper's and tonic's connection tasks (HTTP/2 connections, tonic's channel workers) run as
/// the generation's work: plugins hand the spawner to them as their executor.
impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(async move {
            fut.await;
        });
    }
}

/// Decrements [`TASKS`] when a task ends, however it ends.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        TASKS.dec();
    }
}

type TaskFn = Box<dyn FnOnce(TaskCtx) -> BoxFuture<'static, ()> + Send>;

struct Declared {
    block: usize,
    run: TaskFn,
}

/// A generation's background work: declared during setup, started on commit, joined on
/// retirement.
pub(crate) struct Lifecycle {
    tasks: Vec<Declared>,
    warmups: Vec<Declared>,
    spawner: Spawner,
    running: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            tasks: Vec::new(),
            warmups: Vec::new(),
            spawner: Spawner {
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
                started: Arc::new(AtomicBool::new(false)),
            },
            running: false,
        }
    }
}

impl Lifecycle {
    /// Declares a task of block `block`, started when the generation is committed.
    pub(crate) fn task<F, Fut>(&mut self, block: usize, f: F)
    where
        F: FnOnce(TaskCtx) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Declared {
            block,
            run: Box::new(move |t| Box::pin(f(t))),
        });
    }

    /// Declares work awaited after the tasks start and before the generation serves (the
    /// `kubernetes` plugin waiting for its first sync). It must end on its own (a timeout).
    pub(crate) fn warmup<F, Fut>(&mut self, block: usize, f: F)
    where
        F: FnOnce(TaskCtx) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.warmups.push(Declared {
            block,
            run: Box::new(move |t| Box::pin(f(t))),
        });
    }

    /// The spawner for query-time work of this generation.
    pub(crate) fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Starts every declared task and runs the warmups to their end. `addrs` gives each
    /// block's bound listener addresses.
    pub(crate) async fn start(&mut self, addrs: &HashMap<usize, Vec<SocketAddr>>) {
        if self.running {
            return;
        }
        self.running = true;
        GENERATIONS.inc();
        self.spawner.started.store(true, Ordering::Release);
        let mut shared: HashMap<usize, Arc<Vec<SocketAddr>>> = HashMap::new();
        let mut ctx_for = |block: usize, spawner: &Spawner| TaskCtx {
            cancel: spawner.cancel.clone(),
            addrs: shared
                .entry(block)
                .or_insert_with(|| Arc::new(addrs.get(&block).cloned().unwrap_or_default()))
                .clone(),
            spawner: spawner.clone(),
        };
        for d in std::mem::take(&mut self.tasks) {
            let ctx = ctx_for(d.block, &self.spawner);
            self.spawner.spawn((d.run)(ctx));
        }
        let warmups: Vec<_> = std::mem::take(&mut self.warmups)
            .into_iter()
            .map(|d| {
                let ctx = ctx_for(d.block, &self.spawner);
                (d.run)(ctx)
            })
            .collect();
        // In declaration order, like CoreDNS's startup functions: a later one may use what an
        // earlier one made (two blocks sharing one Kubernetes index).
        let cancel = self.spawner.cancel.clone();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = async { for w in warmups { w.await } } => {}
        }
    }

    /// Cancels every task of the generation and waits (at most [`JOIN_TIMEOUT`]) for them to
    /// end.
    pub(crate) async fn retire(mut self) {
        self.cancel_now();
        self.spawner.tracker.close();
        let _ = tokio::time::timeout(JOIN_TIMEOUT, self.spawner.tracker.wait()).await;
    }

    fn cancel_now(&mut self) {
        self.spawner.cancel.cancel();
        if std::mem::take(&mut self.running) {
            GENERATIONS.dec();
        }
    }
}

impl Drop for Lifecycle {
    /// A generation dropped without [`Lifecycle::retire`] still stops its tasks (they end at
    /// their next await point).
    fn drop(&mut self) {
        self.cancel_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(PartialEq)]
    struct Key(u32);
    impl CarryKey for Key {
        type Value = String;
    }

    #[test]
    fn carried_values_live_while_held() {
        let c = Carry::default();
        assert!(c.get(&Key(1)).is_none());
        let v = Arc::new("index".to_string());
        c.put(Key(1), &v);
        assert_eq!(c.get(&Key(1)).as_deref().map(String::as_str), Some("index"));
        assert!(c.get(&Key(2)).is_none());
        drop(v);
        assert!(c.get(&Key(1)).is_none(), "dropped with its last holder");
    }

    #[tokio::test]
    async fn tasks_start_on_commit_and_stop_on_retire() {
        let before = TASKS.get();
        let mut l = Lifecycle::default();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        l.task(0, move |t: TaskCtx| async move {
            r.store(true, Ordering::SeqCst);
            t.cancelled().await;
        });
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst), "declared, not started");
        assert!(!l.spawner().spawn(async {}), "nothing runs before start");
        l.start(&HashMap::new()).await;
        tokio::task::yield_now().await;
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(TASKS.get(), before + 1);
        l.retire().await;
        assert_eq!(TASKS.get(), before);
    }

    #[tokio::test]
    async fn a_dropped_uncommitted_generation_ran_nothing() {
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let mut l = Lifecycle::default();
        l.task(0, move |_t: TaskCtx| async move {
            r.store(true, Ordering::SeqCst)
        });
        drop(l);
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn warmups_end_before_start_returns_and_see_block_addresses() {
        let mut l = Lifecycle::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        l.warmup(3, move |t: TaskCtx| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            s.lock().unwrap().extend_from_slice(t.addrs());
        });
        let mut addrs = HashMap::new();
        addrs.insert(3, vec![SocketAddr::from(([127, 0, 0, 1], 53))]);
        l.start(&addrs).await;
        assert_eq!(seen.lock().unwrap().len(), 1);
        l.retire().await;
    }
}
