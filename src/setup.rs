//! The setup contract: what a plugin's setup function sees ([`SetupCtx`]) and what it may
//! register — handlers, HTTP routes, readiness checks, block settings, links to other plugins
//! of its block, and background tasks *declared* for the generation to start once committed.
//! Setup does no I/O that outlives it and starts nothing; see `ARCHITECTURE.md`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sextant_corefile::{Directive, Error as ConfigError};

use crate::pkg::clock::Clock;
use crate::plugin::{Handler, Readiness, ViewFilter};
use crate::server::http::HttpHandler;
use crate::server::invalidate::InvalidationBus;
use crate::server::lifecycle::{Carry, Lifecycle, RuntimeState, Spawner, TaskCtx};

/// What a plugin's setup sees of its server block.
pub(crate) struct BlockInfo {
    /// Zones of the block's keys, normalised (lower-case FQDN).
    pub(crate) zones: Vec<String>,
    /// Port of the block's first key.
    pub(crate) port: u16,
    /// Index of the block in the Corefile.
    pub(crate) index: usize,
    /// The first key that is not plain DNS (`tls://...`), as written, if any.
    pub(crate) non_dns_key: Option<String>,
    /// Name of the block's view (`view NAME`), for metric labels; None without one.
    pub(crate) view: Option<String>,
}

/// Readiness checks of a generation, shared with the `ready` handler (filled during setup).
pub(crate) type ReadinessList = Arc<std::sync::RwLock<Vec<(String, Arc<dyn Readiness>)>>>;

/// A check run once a block's chain is complete: resolves what a plugin needs from another
/// plugin of the block (`autopath @kubernetes`). An error fails the configuration.
type Link = Box<dyn FnOnce(&[Arc<dyn Handler>]) -> Result<(), String> + Send>;

/// Process-wide settings a generation carries (first block to set one wins, like CoreDNS).
#[derive(Default, Clone, Copy)]
pub(crate) struct ProcessSettings {
    /// `health`'s lameduck delay.
    pub(crate) lameduck: Option<Duration>,
    /// `reload`'s (interval, jitter).
    pub(crate) reload: Option<(Duration, Duration)>,
    /// The `debug` plugin is in some block.
    pub(crate) debug: bool,
}

/// What the plugins of a whole Corefile registered, gathered while it is set up.
pub(crate) struct GenerationBuilder {
    pub(crate) http: BTreeMap<String, crate::server::http::Routes>,
    pub(crate) readiness: ReadinessList,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) binds: HashMap<usize, Vec<IpAddr>>,
    pub(crate) chaos: HashMap<usize, bool>,
    pub(crate) invalidation: HashMap<usize, Arc<InvalidationBus>>,
    pub(crate) tls: HashMap<usize, Arc<rustls::ServerConfig>>,
    /// Sockets per listener address asked by a block (`multisocket`).
    pub(crate) sockets: HashMap<usize, usize>,
    /// TCP and TLS connection timeouts and query cap asked by a block (`timeouts`).
    pub(crate) timeouts: HashMap<usize, crate::server::config::TimeoutSettings>,
    /// Blocks whose UDP listeners write through a bounded stack (`shed`).
    pub(crate) shed: HashMap<usize, crate::server::wstack::DropHook>,
    /// PROXY protocol settings of a block and where its `proxyproto` is (`proxyproto`).
    pub(crate) proxy: HashMap<usize, Arc<crate::server::proxy::ProxySettings>>,
    pub(crate) transport: HashMap<usize, crate::server::config::BlockTransport>,
    /// Each block's view (name, filter), by block index.
    pub(crate) views: HashMap<usize, (Arc<str>, Arc<dyn ViewFilter>)>,
    pub(crate) settings: ProcessSettings,
    /// Each block's `root` directory, by block index.
    pub(crate) roots: HashMap<usize, std::path::PathBuf>,
    carry: Arc<Carry>,
    state: Arc<RuntimeState>,
    /// One value per type shared by the plugins of this generation (see [`SetupCtx::shared`]).
    shared: HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>,
    /// The time every plugin of the generation reads and waits on (manual in tests).
    pub(crate) clock: Clock,
}

impl GenerationBuilder {
    /// A builder handing values over through `carry` and reading `state`.
    pub(crate) fn new(carry: Arc<Carry>, state: Arc<RuntimeState>) -> GenerationBuilder {
        GenerationBuilder {
            http: BTreeMap::new(),
            readiness: ReadinessList::default(),
            lifecycle: Lifecycle::default(),
            binds: HashMap::new(),
            chaos: HashMap::new(),
            invalidation: HashMap::new(),
            tls: HashMap::new(),
            sockets: HashMap::new(),
            timeouts: HashMap::new(),
            shed: HashMap::new(),
            proxy: HashMap::new(),
            transport: HashMap::new(),
            views: HashMap::new(),
            settings: ProcessSettings::default(),
            roots: HashMap::new(),
            carry,
            state,
            shared: HashMap::new(),
            clock: Clock::system(),
        }
    }
}

/// Parses one plugin's lines in one server block and registers what it needs.
pub(crate) struct SetupCtx<'a> {
    pub(crate) block: &'a BlockInfo,
    pub(crate) handlers: Vec<Arc<dyn Handler>>,
    pub(crate) links: &'a mut Vec<(ConfigError, Link)>,
    pub(crate) gen: &'a mut GenerationBuilder,
}

impl SetupCtx<'_> {
    /// Adds a handler to this block's chain at this plugin's position.
    pub(crate) fn add_handler(&mut self, h: Arc<dyn Handler>) {
        self.handlers.push(h);
    }

    /// Declares a background task, started once the generation is committed and stopped
    /// when it is retired (the future is dropped at cancellation; `t.cancelled()` tells it
    /// before). Nothing runs for a configuration that fails, or under `-check`.
    pub(crate) fn task<F, Fut>(&mut self, f: F)
    where
        F: FnOnce(TaskCtx) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.gen.lifecycle.task(self.block.index, f);
    }

    /// Declares a task that calls `f` every `period` on the generation's clock (first call one
    /// period after the start; a call that overruns delays the next), on the blocking thread
    /// pool, since `f` may read files.
    pub(crate) fn periodic<F>(&mut self, period: Duration, f: F)
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.periodic_from(false, period, f);
    }

    /// [`SetupCtx::periodic`] with the first call right at the start (a signer that checks its
    /// zones when the generation starts, then every `period`).
    pub(crate) fn periodic_now<F>(&mut self, period: Duration, f: F)
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.periodic_from(true, period, f);
    }

    fn periodic_from<F>(&mut self, now: bool, period: Duration, f: F)
    where
        F: Fn() + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let clock = self.clock();
        self.task(move |t: TaskCtx| async move {
            let mut first = now;
            loop {
                if !std::mem::take(&mut first) {
                    tokio::select! {
                        _ = t.cancelled() => return,
                        _ = clock.sleep(period) => {}
                    }
                }
                let f = f.clone();
                let _ = tokio::task::spawn_blocking(move || f()).await;
            }
        });
    }

    /// The generation's clock: read time and wait on it through this wherever time decides
    /// behaviour (see [`crate::pkg::clock`]).
    pub(crate) fn clock(&self) -> Clock {
        self.gen.clock.clone()
    }

    /// Declares work the generation awaits after starting its tasks and before it serves
    /// (e.g. the first sync of the Kubernetes API, bounded by its own timeout).
    pub(crate) fn warmup<F, Fut>(&mut self, f: F)
    where
        F: FnOnce(TaskCtx) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.gen.lifecycle.warmup(self.block.index, f);
    }

    /// Starts work at query time under the generation (e.g. a cache prefetch).
    pub(crate) fn spawner(&self) -> Spawner {
        self.gen.lifecycle.spawner()
    }

    /// Runs `f` with the block's complete chain once every plugin of the block is set up, to
    /// find another plugin's capability (as `transfer` finds a transferer). An `Err(msg)` fails
    /// the configuration with `msg` at directive `d`.
    pub(crate) fn link<F>(&mut self, d: &Directive, f: F)
    where
        F: FnOnce(&[Arc<dyn Handler>]) -> Result<(), String> + Send + 'static,
    {
        self.links.push((d.err(String::new()), Box::new(f)));
    }

    /// Serves `path` on the HTTP address `addr` (`:8080`, `localhost:9153`, `[::1]:8181`).
    /// Several blocks may register the same address and path; the first handler wins.
    pub(crate) fn add_http(&mut self, addr: &str, path: &str, h: Arc<dyn HttpHandler>) {
        let routes = self.gen.http.entry(addr.to_string()).or_default();
        if !routes.iter().any(|(p, _)| p == path) {
            routes.push((path.to_string(), h));
        }
    }

    /// True if something already serves `path` on `addr`.
    pub(crate) fn has_http(&self, addr: &str, path: &str) -> bool {
        self.gen
            .http
            .get(addr)
            .is_some_and(|r| r.iter().any(|(p, _)| p == path))
    }

    /// A readiness check the `ready` plugin reports under `name`.
    pub(crate) fn add_readiness(&mut self, name: &str, r: Arc<dyn Readiness>) {
        if let Ok(mut l) = self.gen.readiness.write() {
            l.push((name.to_string(), r));
        }
    }

    /// The generation's readiness checks (the `ready` plugin keeps this).
    pub(crate) fn readiness_list(&self) -> ReadinessList {
        self.gen.readiness.clone()
    }

    /// Restricts this block to these addresses (the `bind` plugin).
    pub(crate) fn bind(&mut self, ips: Vec<IpAddr>) {
        self.gen
            .binds
            .entry(self.block.index)
            .or_default()
            .extend(ips);
    }

    /// The addresses `bind` restricted this block to (empty without `bind`).
    pub(crate) fn bound(&self) -> &[IpAddr] {
        self.gen
            .binds
            .get(&self.block.index)
            .map_or(&[], |v| v.as_slice())
    }

    /// True when `bind` restricted this block to some addresses.
    pub(crate) fn is_bound(&self) -> bool {
        self.gen
            .binds
            .get(&self.block.index)
            .is_some_and(|v| !v.is_empty())
    }

    /// Lets CH-class queries into this block (`chaos`, `forward`).
    pub(crate) fn allow_chaos(&mut self) {
        self.gen.chaos.insert(self.block.index, true);
    }

    /// This block's cache invalidation bus (created on first use; see
    /// [`crate::server::invalidate`] for the contract between publishers and caches).
    pub(crate) fn invalidation(&mut self) -> Arc<InvalidationBus> {
        self.gen
            .invalidation
            .entry(self.block.index)
            .or_default()
            .clone()
    }

    /// Serves this block's `tls://` keys with this TLS configuration (the `tls` plugin).
    pub(crate) fn set_tls(&mut self, cfg: Arc<rustls::ServerConfig>) {
        self.gen.tls.insert(self.block.index, cfg);
    }

    /// Serves this block's addresses with `n` SO_REUSEPORT sockets each, UDP and TCP (the
    /// `multisocket` plugin; the first block binding an address decides).
    pub(crate) fn set_sockets(&mut self, n: usize) {
        self.gen.sockets.insert(self.block.index, n);
    }

    /// Sets the read, write and idle timeouts and the query cap of this block's TCP and TLS
    /// connections (the `timeouts` plugin).
    pub(crate) fn set_timeouts(&mut self, t: crate::server::config::TimeoutSettings) {
        self.gen.timeouts.insert(self.block.index, t);
    }

    /// Makes every UDP socket of this block's listeners write its replies through a bounded
    /// stack with one writer (the `shed` plugin); `dropped` counts the replies it drops.
    /// Requests then tell whether their socket's stack is full (`Request::backlogged`).
    pub(crate) fn set_udp_write_stack(&mut self, dropped: crate::server::wstack::DropHook) {
        self.gen.shed.insert(self.block.index, dropped);
    }

    /// Reads PROXY protocol headers on this block's listeners (the `proxyproto` plugin; the
    /// last block of an address with it decides).
    pub(crate) fn set_proxy(&mut self, settings: crate::server::proxy::ProxySettings) {
        self.gen.proxy.insert(self.block.index, Arc::new(settings));
    }

    /// This block's transport limits (`https`, `https3`, `quic`, `grpc_server`).
    pub(crate) fn transport(&mut self) -> &mut crate::server::config::BlockTransport {
        self.gen.transport.entry(self.block.index).or_default()
    }

    /// Sets this block's root directory (the `root` plugin).
    pub(crate) fn set_root(&mut self, dir: std::path::PathBuf) {
        self.gen.roots.insert(self.block.index, dir);
    }

    /// A file name of a Corefile argument, under the block's `root` when it is relative (like
    /// CoreDNS's `file`, `tls` and `dnssec`).
    pub(crate) fn file_path(&self, name: &str) -> std::path::PathBuf {
        under_root(
            self.gen.roots.get(&self.block.index).map(|p| p.as_path()),
            name,
        )
    }

    /// Routes queries to this block only when `filter` is true for them (the `view` plugin);
    /// `name` is the block's `view` metric label.
    pub(crate) fn set_view(&mut self, name: Arc<str>, filter: Arc<dyn ViewFilter>) {
        self.gen.views.insert(self.block.index, (name, filter));
    }

    /// Process-wide settings (lameduck, reload, debug).
    pub(crate) fn settings(&mut self) -> &mut ProcessSettings {
        &mut self.gen.settings
    }

    /// The generation's one value of type `T`, created on first use: state the plugins of
    /// several server blocks share (the `cache` plugin's memory budget). Each generation (each
    /// reload) has its own.
    pub(crate) fn shared<T: std::any::Any + Send + Sync + Default>(&mut self) -> Arc<T> {
        let v = self
            .gen
            .shared
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        // The entry under T's TypeId always holds a T.
        v.downcast::<T>().unwrap_or_else(|_| Arc::new(T::default()))
    }

    /// Values handed over from the previous generation (see [`Carry`]).
    pub(crate) fn carry(&self) -> Arc<Carry> {
        self.gen.carry.clone()
    }

    /// The running process's state (shutting down or not).
    pub(crate) fn runtime_state(&self) -> Arc<RuntimeState> {
        self.gen.state.clone()
    }
}

/// A plugin's setup function: all of the plugin's directive lines in one block at once.
pub(crate) type SetupFn = fn(&mut SetupCtx<'_>, &[&Directive]) -> Result<(), ConfigError>;

/// One compiled-in plugin.
pub(crate) struct PluginDef {
    pub(crate) name: &'static str,
    /// Only one line of this directive per server block (CoreDNS `plugin.ErrOnce`).
    pub(crate) once: bool,
    pub(crate) setup: SetupFn,
}

/// The error CoreDNS gives for a second line of a once-only plugin.
pub(crate) const ERR_ONCE: &str = "this plugin can only be used once per Server Block";

/// `name` joined to `root` when it is relative and there is a root.
pub(crate) fn under_root(root: Option<&std::path::Path>, name: &str) -> std::path::PathBuf {
    match root {
        Some(r) if std::path::Path::new(name).is_relative() => r.join(name),
        _ => std::path::PathBuf::from(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn periodic_work_runs_on_the_generation_clock_once_committed() {
        let manual = ManualClock::new();
        let mut gen = GenerationBuilder::new(Arc::default(), Arc::default());
        gen.clock = manual.clock();
        let block = BlockInfo {
            zones: vec![".".into()],
            port: 53,
            index: 0,
            non_dns_key: None,
            view: None,
        };
        let mut links = Vec::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut ctx = SetupCtx {
            block: &block,
            handlers: Vec::new(),
            links: &mut links,
            gen: &mut gen,
        };
        let c = calls.clone();
        ctx.periodic(Duration::from_secs(30), move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        // Declared only: advancing the clock before the commit runs nothing.
        manual.advance(Duration::from_secs(60));
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        gen.lifecycle.start(&HashMap::new()).await;
        manual.sleepers(1).await;
        for n in 1..=3 {
            manual.advance(Duration::from_secs(30));
            let t0 = std::time::Instant::now();
            while calls.load(Ordering::SeqCst) < n && t0.elapsed() < Duration::from_secs(5) {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(calls.load(Ordering::SeqCst), n, "one call per period");
            manual.sleepers(1).await;
        }
        std::mem::take(&mut gen.lifecycle).retire().await;
    }
}
