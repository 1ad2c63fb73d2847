//! The running process: applies configuration generations (bind what is new, swap routing
//! tables, close what is gone, keep unchanged sockets), reloads on change or SIGUSR1, and shuts
//! down gracefully on SIGTERM/SIGINT with lameduck.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha512};
use tokio::sync::Mutex;

use crate::log;
use crate::server::config::{build, Generation, ListenKey};
use crate::server::http::{resolve_addr, HttpServer};
use crate::server::lifecycle::{Carry, Lifecycle, RuntimeState};
use crate::server::listen::Listener;
use crate::setup::ProcessSettings;

/// Where the configuration comes from.
#[derive(Clone)]
pub(crate) enum Source {
    File(PathBuf),
    /// Built-in text (no reload possible).
    Inline(String),
}

impl Source {
    /// Reads and parses the Corefile with its imports.
    pub(crate) fn load(&self) -> Result<sextant_corefile::Corefile, Vec<sextant_corefile::Error>> {
        match self {
            Source::File(p) => sextant_corefile::parse_file(p).map_err(|e| vec![e]),
            Source::Inline(t) => {
                sextant_corefile::parse_str("Corefile", t, std::path::Path::new("."))
                    .map_err(|e| vec![e])
            }
        }
    }
}

/// SHA512 over the Corefile and every imported file, hex.
pub(crate) fn config_hash(cf: &sextant_corefile::Corefile, src: &Source) -> String {
    let mut h = Sha512::new();
    match src {
        Source::Inline(t) => h.update(t.as_bytes()),
        Source::File(_) => {
            for f in &cf.files {
                if let Ok(b) = std::fs::read(f) {
                    h.update(&b);
                }
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a mode embedding the server (`node-cache`) is told about its life.
pub(crate) trait Embedder: Send + Sync {
    /// A configuration has been applied: its listeners are read.
    fn serving(&self);
    /// Graceful shutdown, after lameduck and before the listeners stop: node-cache moves the
    /// traffic elsewhere here, so that closing the sockets loses nothing.
    fn before_close(&self) -> crate::plugin::BoxFuture<'static, ()>;
}

/// Why a configuration could not be loaded or applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The Corefile (or a file it names) is wrong: every problem, in file order.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<sextant_corefile::Error>),
    /// An HTTP address (`health`, `ready`, `prometheus`) is not usable.
    #[error("{0}")]
    HttpAddr(String),
    /// An HTTP listener could not bind.
    #[error("listen tcp {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A DNS listener could not bind or start.
    #[error("listen {label}: {source}")]
    DnsBind {
        label: String,
        source: std::io::Error,
    },
}

impl ServeError {
    /// One line per problem (a Corefile error per line).
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            ServeError::Config(errs) => errs.iter().map(|e| e.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

struct Live {
    listeners: BTreeMap<ListenKey, Listener>,
    http: BTreeMap<SocketAddr, HttpServer>,
    /// The serving generation's background work.
    lifecycle: Option<Lifecycle>,
    settings: ProcessSettings,
    hash: String,
}

/// The process's servers.
pub(crate) struct Runtime {
    live: Mutex<Live>,
    pub(crate) source: Source,
    pub(crate) default_port: u16,
    /// Values handed from one generation to the next.
    carry: Arc<Carry>,
    state: Arc<RuntimeState>,
    embedder: std::sync::Mutex<Option<Arc<dyn Embedder>>>,
}

impl Runtime {
    pub(crate) fn new(source: Source, default_port: u16) -> Arc<Runtime> {
        Arc::new(Runtime {
            live: Mutex::new(Live {
                listeners: BTreeMap::new(),
                http: BTreeMap::new(),
                lifecycle: None,
                settings: ProcessSettings::default(),
                hash: String::new(),
            }),
            source,
            default_port,
            carry: Arc::new(Carry::default()),
            state: Arc::new(RuntimeState::default()),
            embedder: std::sync::Mutex::new(None),
        })
    }

    /// Reports this runtime's life to `e` (see [`Embedder`]).
    pub(crate) fn set_embedder(&self, e: Arc<dyn Embedder>) {
        if let Ok(mut g) = self.embedder.lock() {
            *g = Some(e);
        }
    }

    fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.embedder.lock().ok().and_then(|g| g.clone())
    }

    /// Builds a generation from the source. Nothing is started or bound.
    pub(crate) fn build(&self) -> Result<(Generation, String), ServeError> {
        let cf = self.source.load().map_err(ServeError::Config)?;
        let hash = config_hash(&cf, &self.source);
        Ok((self.build_parsed(&cf)?, hash))
    }

    /// Builds a generation from a parsed Corefile (its warnings logged). Nothing is started or
    /// bound.
    fn build_parsed(&self, cf: &sextant_corefile::Corefile) -> Result<Generation, ServeError> {
        for w in &cf.warnings {
            log::warning(&w.to_string());
        }
        build(
            cf,
            self.default_port,
            self.carry.clone(),
            self.state.clone(),
        )
        .map_err(ServeError::Config)
    }

    /// Commits a generation: binds what is new (without reading it yet), starts the
    /// generation's tasks and waits for its warmups, then swaps routing tables, starts the new
    /// listeners, retires what is gone and joins the previous generation's tasks. On a bind
    /// error nothing changes and nothing of the new generation ever ran.
    pub(crate) async fn apply(
        &self,
        mut gen: Generation,
        hash: String,
    ) -> Result<Vec<String>, ServeError> {
        let mut live = self.live.lock().await;
        // 1. Bind new HTTP servers, then DNS sockets; fail atomically.
        let mut wanted_http = BTreeMap::new();
        for (addr, routes) in std::mem::take(&mut gen.builder.http) {
            let sa = resolve_addr(&addr).map_err(ServeError::HttpAddr)?;
            wanted_http
                .entry(sa)
                .or_insert_with(Vec::new)
                .extend(routes);
        }
        let mut new_http = BTreeMap::new();
        for (sa, routes) in &wanted_http {
            if !live.http.contains_key(sa) {
                match HttpServer::bind(*sa, routes.clone()).await {
                    Ok(h) => {
                        new_http.insert(*sa, h);
                    }
                    Err(source) => {
                        new_http
                            .values()
                            .for_each(|h: &HttpServer| h.cancel.cancel());
                        return Err(ServeError::HttpBind { addr: *sa, source });
                    }
                }
            }
        }
        let mut bound = BTreeMap::new();
        for k in gen.sites.keys() {
            let opts = gen.opts.get(k).cloned().unwrap_or_default();
            // New, or bound with other options (then rebound beside the old one, which stops
            // once the new one reads).
            if live.listeners.get(k).is_none_or(|l| l.opts != opts) {
                match Listener::bind(*k, &opts) {
                    Ok(b) => {
                        bound.insert(*k, b);
                    }
                    Err(source) => {
                        new_http
                            .values()
                            .for_each(|h: &HttpServer| h.cancel.cancel());
                        return Err(ServeError::DnsBind {
                            label: k.label(),
                            source,
                        });
                    }
                }
            }
        }
        // 2. Committed: start the generation's tasks, with each block's real addresses.
        let mut addrs: HashMap<usize, Vec<SocketAddr>> = HashMap::new();
        for (bi, keys) in &gen.block_keys {
            for k in keys {
                let local = match (bound.get(k), live.listeners.get(k)) {
                    (Some(b), _) => b.local().to_vec(),
                    (None, Some(l)) => l.local.clone(),
                    (None, None) => Vec::new(),
                };
                addrs
                    .entry(*bi)
                    .or_default()
                    .extend(local.into_iter().map(reachable));
            }
        }
        let mut lifecycle = std::mem::take(&mut gen.builder.lifecycle);
        lifecycle.start(&addrs).await;
        // 3. Swap, and start reading the new sockets.
        for (k, site) in &gen.sites {
            if let Some(l) = live.listeners.get(k) {
                l.site.store(site.clone());
                l.update(gen.tls.get(k), gen.transport.get(k), gen.quic_proxy.get(k));
            }
        }
        for (sa, routes) in &wanted_http {
            if let Some(h) = live.http.get(sa) {
                h.routes.store(Arc::new(routes.clone()));
            }
        }
        for (k, b) in bound {
            let Some(site) = gen.sites.get(&k) else {
                continue;
            };
            match b.start(
                site.clone(),
                gen.tls.get(&k).cloned(),
                gen.transport.get(&k).copied(),
                gen.quic_proxy.get(&k).cloned(),
            ) {
                Ok(l) => {
                    if let Some(old) = live.listeners.insert(k, l) {
                        old.stop();
                    }
                }
                // Threads could not be made: this address stays closed, the rest serves.
                Err(e) => log::error(&format!("listen {}: {e}", k.label())),
            }
        }
        live.http.extend(new_http);
        // 4. Retire what is gone, then the previous generation's work.
        let gone: Vec<ListenKey> = live
            .listeners
            .keys()
            .filter(|k| !gen.sites.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(l) = live.listeners.remove(&k) {
                l.stop();
            }
        }
        let gone_http: Vec<SocketAddr> = live
            .http
            .keys()
            .filter(|a| !wanted_http.contains_key(a))
            .copied()
            .collect();
        for a in gone_http {
            if let Some(h) = live.http.remove(&a) {
                h.cancel.cancel();
            }
        }
        let previous = live.lifecycle.replace(lifecycle);
        live.settings = gen.builder.settings;
        live.hash = hash;
        log::set_debug(gen.builder.settings.debug);
        crate::metrics::PLUGIN_ENABLED.reset();
        for (server, zone, view, names) in &gen.enabled {
            for n in names {
                crate::metrics::PLUGIN_ENABLED
                    .with_label_values(&[server.as_str(), zone, view, n])
                    .set(1.0);
            }
        }
        drop(live);
        // Sockets handed over by another instance that this configuration does not serve: open
        // and unread they would swallow what the kernel hashes to them.
        let unclaimed = crate::server::listen::handover::release_unclaimed();
        if !unclaimed.is_empty() {
            log::info(&format!(
                "Closed {} inherited socket(s) this configuration does not serve: {}",
                unclaimed.len(),
                unclaimed.join(", ")
            ));
        }
        if let Some(e) = self.embedder() {
            e.serving();
        }
        if let Some(p) = previous {
            p.retire().await;
        }
        Ok(std::mem::take(&mut gen.banner))
    }

    pub(crate) async fn reload_settings(&self) -> Option<(Duration, Duration)> {
        self.live.lock().await.settings.reload
    }

    pub(crate) async fn current_hash(&self) -> String {
        self.live.lock().await.hash.clone()
    }

    /// Re-reads the Corefile; applies it if it changed (or if `force`). Like CoreDNS's `reload`,
    /// an unchanged Corefile is only parsed and hashed: building a generation sets up every
    /// plugin (the `kubernetes` plugin loads its manifests, hundreds of millions of
    /// instructions for a large cluster), which on the runtime's thread held up the forwarded
    /// queries' replies at every periodic check.
    pub(crate) async fn reload(&self, force: bool) -> Result<bool, ServeError> {
        let cf = self.source.load().map_err(ServeError::Config)?;
        let hash = config_hash(&cf, &self.source);
        if !force && hash == self.current_hash().await {
            return Ok(false);
        }
        let gen = self.build_parsed(&cf)?;
        log::info("Reloading");
        self.apply(gen, hash.clone()).await?;
        crate::metrics::RELOAD_VERSION.reset();
        crate::metrics::RELOAD_VERSION
            .with_label_values(&["sha512", &hash])
            .set(1.0);
        log::PluginLog("reload").info(&format!("Running configuration SHA512 = {hash}"));
        log::info("Reloading complete");
        Ok(true)
    }

    /// Graceful stop: not ready, then `why` logged, lameduck (still serving), the embedder's
    /// `before_close`, close listeners (UDP ones drain their queue), wait for answers in flight
    /// (at most 5 s), retire the generation.
    pub(crate) async fn shutdown(&self, why: &str) {
        self.state.begin_shutdown();
        log::info(why);
        let lameduck = self.live.lock().await.settings.lameduck;
        if let Some(d) = lameduck {
            log::PluginLog("health").info(&format!(
                "Going into lameduck mode for {}",
                crate::pkg::duration::format(d)
            ));
            tokio::time::sleep(d).await;
        }
        if let Some(e) = self.embedder() {
            e.before_close().await;
        }
        let mut live = self.live.lock().await;
        for l in live.listeners.values() {
            l.stop();
        }
        // Stopped UDP listeners first drain what is queued to them; then answers in flight.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline
            && live
                .listeners
                .values()
                .any(|l| !l.drained() || l.inflight.load(Ordering::Acquire) > 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for h in live.http.values() {
            h.cancel.cancel();
        }
        let current = live.lifecycle.take();
        drop(live);
        if let Some(l) = current {
            l.retire().await;
        }
    }
}

/// A bound address a block's own tasks can reach: every-address listeners on loopback.
fn reachable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), a.port())
        }
        _ => a,
    }
}
