//! The running process: applies configuration generations (bind what is new, swap routing
//! tables, close what is gone, keep unchanged sockets), reloads on change or SIGUSR1, and shuts
//! down gracefully on SIGTERM/SIGINT with lameduck.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha512};
use tokio::sync::Mutex;

use crate::log;
use crate::plugin::ShutdownHook;
use crate::server::config::{build, Generation, ListenKey};
use crate::server::http::{resolve_addr, HttpServer};
use crate::server::listen::Listener;

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Set once a generation has been applied: the listeners are open and read.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Work run on graceful shutdown after lameduck and before the listeners stop (node-cache moves
/// its traffic elsewhere there, so closing loses nothing).
pub(crate) type PreClose =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;
static PRE_CLOSE: std::sync::Mutex<Option<PreClose>> = std::sync::Mutex::new(None);

/// Installs the process's [`PreClose`] step.
pub(crate) fn set_pre_close(f: PreClose) {
    if let Ok(mut p) = PRE_CLOSE.lock() {
        *p = Some(f);
    }
}

/// True once the first configuration is being served.
pub(crate) fn serving() -> bool {
    SERVING.load(Ordering::Relaxed)
}

/// Marks the start of shutdown: from now on `ready` answers 503 `Shutting down`.
pub(crate) fn mark_shutting_down() {
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
}

/// True once shutdown began (`ready` answers 503 `Shutting down`).
pub(crate) fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::Relaxed)
}

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

struct Live {
    listeners: BTreeMap<ListenKey, Listener>,
    http: BTreeMap<SocketAddr, HttpServer>,
    hooks: Vec<ShutdownHook>,
    lameduck: Option<Duration>,
    reload: Option<(Duration, Duration)>,
    hash: String,
}

/// The process's servers.
pub(crate) struct Runtime {
    live: Mutex<Live>,
    pub source: Source,
    pub default_port: u16,
}

impl Runtime {
    pub(crate) fn new(source: Source, default_port: u16) -> Arc<Runtime> {
        Arc::new(Runtime {
            live: Mutex::new(Live {
                listeners: BTreeMap::new(),
                http: BTreeMap::new(),
                hooks: Vec::new(),
                lameduck: None,
                reload: None,
                hash: String::new(),
            }),
            source,
            default_port,
        })
    }

    /// Builds a generation from the source. Errors are joined one per line.
    pub(crate) fn build(&self) -> Result<(Generation, String), String> {
        let cf = self.source.load().map_err(join)?;
        for w in &cf.warnings {
            log::warning(&w.to_string());
        }
        let hash = config_hash(&cf, &self.source);
        let gen = build(&cf, self.default_port).map_err(join)?;
        Ok((gen, hash))
    }

    /// Binds what is new, swaps routing tables, retires what is gone. On error nothing changes:
    /// the new generation's shutdown hooks run, so what it started (watches) stops again.
    pub(crate) async fn apply(
        &self,
        mut gen: Generation,
        hash: String,
    ) -> Result<Vec<String>, String> {
        for w in gen.builder.waits.drain(..) {
            w.await;
        }
        let res = self.apply_started(&mut gen, hash).await;
        if res.is_err() {
            for hook in std::mem::take(&mut gen.builder.hooks) {
                hook();
            }
        } else {
            SERVING.store(true, Ordering::Relaxed);
        }
        // Sockets handed over by another instance that this configuration does not serve.
        let unclaimed = crate::server::listen::handover::release_unclaimed();
        if !unclaimed.is_empty() {
            log::info(&format!(
                "Closed {} inherited socket(s) this configuration does not serve: {}",
                unclaimed.len(),
                unclaimed.join(", ")
            ));
        }
        res
    }

    async fn apply_started(
        &self,
        gen: &mut Generation,
        hash: String,
    ) -> Result<Vec<String>, String> {
        let mut live = self.live.lock().await;
        // 1. Bind new HTTP servers, then DNS listeners (so health, ready and metrics answer as
        //    soon as DNS does); fail atomically.
        let mut wanted_http = BTreeMap::new();
        for (addr, routes) in std::mem::take(&mut gen.builder.http) {
            let sa = match resolve_addr(&addr) {
                Ok(a) => a,
                Err(e) => return Err(e),
            };
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
                    Err(e) => {
                        new_http
                            .values()
                            .for_each(|h: &HttpServer| h.cancel.cancel());
                        return Err(format!("listen tcp {sa}: {e}"));
                    }
                }
            }
        }
        let mut new_listeners = BTreeMap::new();
        for (k, site) in &gen.sites {
            if !live.listeners.contains_key(k) {
                match Listener::bind(*k, site.clone(), gen.tls.get(k).cloned()) {
                    Ok(l) => {
                        new_listeners.insert(*k, l);
                    }
                    Err(e) => {
                        for l in new_listeners.values() {
                            Listener::stop(l);
                        }
                        new_http
                            .values()
                            .for_each(|h: &HttpServer| h.cancel.cancel());
                        return Err(format!("listen {}: {e}", k.label()));
                    }
                }
            }
        }
        // 2. Swap.
        for (k, site) in &gen.sites {
            if let Some(l) = live.listeners.get(k) {
                l.site.store(site.clone());
                if let (Some(slot), Some(cfg)) = (&l.tls, gen.tls.get(k)) {
                    slot.store(cfg.clone());
                }
            }
        }
        for (sa, routes) in &wanted_http {
            if let Some(h) = live.http.get(sa) {
                h.routes.store(Arc::new(routes.clone()));
            }
        }
        live.listeners.extend(new_listeners);
        live.http.extend(new_http);
        // 3. Retire what is gone.
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
        for hook in std::mem::take(&mut live.hooks) {
            hook();
        }
        live.hooks = std::mem::take(&mut gen.builder.hooks);
        live.lameduck = gen.builder.lameduck;
        live.reload = gen.builder.reload;
        live.hash = hash;
        log::set_debug(gen.builder.debug);
        crate::metrics::PLUGIN_ENABLED.reset();
        for (server, zone, names) in &gen.enabled {
            for n in names {
                crate::metrics::PLUGIN_ENABLED
                    .with_label_values(&[server, zone, "", n])
                    .set(1.0);
            }
        }
        // 4. Started hooks get the real bound addresses of their block.
        let mut bound: BTreeMap<ListenKey, Vec<SocketAddr>> = BTreeMap::new();
        for (k, l) in &live.listeners {
            bound.insert(*k, l.local.clone());
        }
        drop(live);
        for (bi, hook) in std::mem::take(&mut gen.builder.started) {
            let addrs: Vec<SocketAddr> = gen
                .block_addrs
                .get(&bi)
                .map(|v| {
                    v.iter()
                        .map(|a| {
                            if a.ip().is_loopback() {
                                // Unbound listeners: reach them on loopback.
                                SocketAddr::new(a.ip(), a.port())
                            } else {
                                *a
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            hook(addrs);
        }
        Ok(std::mem::take(&mut gen.banner))
    }

    pub(crate) async fn reload_settings(&self) -> Option<(Duration, Duration)> {
        self.live.lock().await.reload
    }

    pub(crate) async fn current_hash(&self) -> String {
        self.live.lock().await.hash.clone()
    }

    /// Re-reads the Corefile; applies it if it changed (or if `force`).
    pub(crate) async fn reload(&self, force: bool) -> Result<bool, String> {
        let (gen, hash) = match self.build() {
            Ok(x) => x,
            Err(e) => return Err(e),
        };
        if !force && hash == self.current_hash().await {
            return Ok(false);
        }
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

    /// Graceful stop: not ready, lameduck (still serving), close listeners, wait for answers in
    /// flight (at most 5 s), run shutdown hooks.
    pub(crate) async fn shutdown(&self) {
        SHUTTING_DOWN.store(true, Ordering::Relaxed);
        let lameduck = self.live.lock().await.lameduck;
        if let Some(d) = lameduck {
            log::PluginLog("health").info(&format!(
                "Going into lameduck mode for {}",
                humantime::format_duration(d)
            ));
            tokio::time::sleep(d).await;
        }
        let pre_close = PRE_CLOSE.lock().ok().and_then(|mut p| p.take());
        if let Some(f) = pre_close {
            f().await;
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
        for hook in std::mem::take(&mut live.hooks) {
            hook();
        }
    }
}

fn join(errs: Vec<sextant_corefile::Error>) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
