//! sextant-fakeapi: a fake Kubernetes API server for tests. It speaks the real list/watch
//! protocol (JSON over HTTP/1.1, chunked watch streams) on 127.0.0.1 for Services, Namespaces,
//! Pods, discovery.k8s.io/v1 EndpointSlices and multicluster.x-k8s.io/v1alpha1 ServiceImports, with live-changeable fault knobs and request
//! counters. Mutations go through the Rust API, never HTTP. It binds loopback only and must not
//! be used outside tests and benchmarks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sextant_fakeapi::Error> {
//! use sextant_fakeapi::{service, FakeApi};
//! let api = FakeApi::start().await?;
//! api.apply(service("default", "kubernetes").cluster_ip("10.0.0.1").port("https", 443, "TCP"))?;
//! println!("API at {}", api.url());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod builders;
mod http;
pub mod selector;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use builders::{
    endpoint, endpoint_slice, mc_endpoint_slice, namespace, pod, service, service_import,
    EndpointSliceBuilder, EndpointSpec, NamespaceBuilder, PodBuilder, PortSpec, ServiceBuilder,
    ServiceImportBuilder,
};
pub use store::{Kind, StoreError};

use store::Store;

/// Errors from the fake API server's Rust API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or re-binding the listener failed.
    #[error("fake API server socket: {0}")]
    Io(#[from] std::io::Error),
    /// An applied object was rejected.
    #[error("fake API server rejected object: {0}")]
    Store(#[from] StoreError),
}

/// How requests are delayed by the stall fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stall {
    /// Answer at once.
    #[default]
    None,
    /// Answer after this delay.
    Delay(Duration),
    /// Accept the connection and the request but never answer.
    Forever,
}

/// Start-up options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events retained for watch replay; older resourceVersions get 410 Gone.
    pub max_history: usize,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_history: 1_000_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    /// (HTTP status, remaining count; None = every request).
    fail: Option<(u16, Option<u32>)>,
    stall: Stall,
    slow_list: Duration,
}

struct Inner {
    store: Mutex<Store>,
    /// Latest resourceVersion; watch streams wake on change.
    rv_tx: watch::Sender<u64>,
    /// Bumped to end every open watch.
    drop_gen: watch::Sender<u64>,
    /// Bumped to close every open connection (go down).
    conn_gen: watch::Sender<u64>,
    faults: Mutex<Faults>,
    counters: Mutex<HashMap<(String, String), u64>>,
    open_watches: AtomicUsize,
    bookmark_interval: Mutex<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn count(&self, verb: &str, resource: &str) {
        *lock(&self.counters)
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }
}

/// A running fake API server. Dropping it stops the listener and closes every connection.
pub struct FakeApi {
    inner: Arc<Inner>,
    addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi").field("addr", &self.addr).finish()
    }
}

impl FakeApi {
    /// Starts on 127.0.0.1 with an ephemeral port and default options, on the current runtime.
    pub async fn start() -> Result<FakeApi, Error> {
        Self::start_with(Options::default()).await
    }

    /// Starts with explicit options.
    pub async fn start_with(opts: Options) -> Result<FakeApi, Error> {
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::new(opts.max_history)),
            rv_tx: watch::channel(0).0,
            drop_gen: watch::channel(0).0,
            conn_gen: watch::channel(0).0,
            faults: Mutex::new(Faults::default()),
            counters: Mutex::new(HashMap::new()),
            open_watches: AtomicUsize::new(0),
            bookmark_interval: Mutex::new(opts.bookmark_interval),
        });
        let listener = http::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(http::accept_loop(inner.clone(), listener));
        Ok(FakeApi {
            inner,
            addr,
            accept: Mutex::new(Some(task)),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn notify(&self, store: &Store) {
        self.inner.rv_tx.send_replace(store.rv());
    }

    /// Creates or replaces an object (`kind` decides the resource); assigns resourceVersion and
    /// uid and emits ADDED or MODIFIED. Returns the stored object.
    pub fn apply(&self, obj: impl Into<Value>) -> Result<Value, Error> {
        let mut st = lock(&self.inner.store);
        let stored = st.apply(obj.into())?;
        self.notify(&st);
        Ok((*stored).clone())
    }

    /// Applies many objects under one lock (bulk fixtures).
    pub fn apply_many(&self, objs: impl IntoIterator<Item = Value>) -> Result<(), Error> {
        let mut st = lock(&self.inner.store);
        let res = objs.into_iter().try_for_each(|o| st.apply(o).map(|_| ()));
        self.notify(&st);
        res.map_err(Error::from)
    }

    /// Deletes an object (namespace "" for Namespaces); emits DELETED. Returns whether it existed.
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> bool {
        let mut st = lock(&self.inner.store);
        let found = st.delete(kind, ns, name);
        self.notify(&st);
        found
    }

    /// Reads one stored object.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        lock(&self.inner.store)
            .get(kind, ns, name)
            .map(|v| (*v).clone())
    }

    /// Number of stored objects of a kind.
    pub fn object_count(&self, kind: Kind) -> usize {
        lock(&self.inner.store).count(kind)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner.store).rv()
    }

    // ---- fault knobs ----

    /// Ends every open watch stream now (clean end of the chunked body).
    pub fn drop_watches(&self) {
        self.inner.drop_gen.send_modify(|g| *g += 1);
    }

    /// Fails the next `n` requests with `status` (a Status JSON body; 429 adds Retry-After: 1).
    pub fn fail_next(&self, status: u16, n: u32) {
        lock(&self.inner.faults).fail = Some((status, Some(n)));
    }

    /// Fails every request with `status` until [`FakeApi::clear_failures`].
    pub fn fail_all(&self, status: u16) {
        lock(&self.inner.faults).fail = Some((status, None));
    }

    /// Stops injecting failures.
    pub fn clear_failures(&self) {
        lock(&self.inner.faults).fail = None;
    }

    /// Delays (or never sends) answers to requests that arrive from now on.
    pub fn stall(&self, stall: Stall) {
        lock(&self.inner.faults).stall = stall;
    }

    /// Delays every LIST page by `delay`.
    pub fn slow_list(&self, delay: Duration) {
        lock(&self.inner.faults).slow_list = delay;
    }

    /// Changes the BOOKMARK interval for watches started from now on.
    pub fn set_bookmark_interval(&self, every: Duration) {
        *lock(&self.inner.bookmark_interval) = every;
    }

    /// Forgets the event history: a watch from any older resourceVersion gets 410 Expired.
    pub fn compact(&self) {
        lock(&self.inner.store).compact();
    }

    /// While on, mutations change objects and the resourceVersion but emit no watch event.
    pub fn skip_events(&self, on: bool) {
        lock(&self.inner.store).skip_events = on;
    }

    /// Closes the listener and every open connection; connects are refused until
    /// [`FakeApi::come_up`].
    pub fn go_down(&self) {
        if let Some(t) = lock(&self.accept).take() {
            t.abort();
        }
        self.inner.conn_gen.send_modify(|g| *g += 1);
    }

    /// Listens again on the same address.
    pub async fn come_up(&self) -> Result<(), Error> {
        if lock(&self.accept).is_some() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..50 {
            match http::bind(self.addr) {
                Ok(l) => {
                    let task = tokio::spawn(http::accept_loop(self.inner.clone(), l));
                    *lock(&self.accept) = Some(task);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Io(
            last.unwrap_or_else(|| std::io::Error::other("bind failed")),
        ))
    }

    // ---- counters ----

    /// Requests seen for (verb, resource); verbs are `list`, `watch`, `get`; discovery requests
    /// count as (`get`, `discovery`).
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        lock(&self.inner.counters)
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All requests seen.
    pub fn total_requests(&self) -> u64 {
        lock(&self.inner.counters).values().sum()
    }

    /// Resets the request counters.
    pub fn reset_counters(&self) {
        lock(&self.inner.counters).clear();
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.go_down();
        self.drop_watches();
    }
}
