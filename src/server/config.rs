//! Builds a configuration generation from a parsed Corefile: checks directives against the
//! compiled-in plugin list, runs each plugin's setup in execution order, and lays the blocks out
//! on listener addresses. Collects every error instead of stopping at the first. No sockets.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sextant_corefile::{Corefile, Directive, Error as ConfigError, Pos, Scheme};
use sextant_wire::Name;

use crate::plugin::{BlockInfo, Handler, Readiness, SetupCtx, ShutdownHook, ERR_ONCE};
use crate::server::http::HttpHandler;
use crate::server::invalidate::InvalidationBus;
use crate::server::site::{Block, Site};

/// Where a listener binds: a specific address or every address, and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ListenKey {
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// DNS over TLS (`tls://` keys) instead of plain UDP and TCP.
    pub tls: bool,
}

impl ListenKey {
    /// The `server` metric label: `dns://:53`, `dns://127.0.0.1:53`, `tls://:853`.
    pub(crate) fn label(&self) -> String {
        let scheme = if self.tls { "tls" } else { "dns" };
        match self.ip {
            None => format!("{scheme}://:{}", self.port),
            Some(IpAddr::V4(a)) => format!("{scheme}://{a}:{}", self.port),
            Some(IpAddr::V6(a)) => format!("{scheme}://[{a}]:{}", self.port),
        }
    }
}

/// Readiness checks of a generation, shared with the `ready` handler (filled during setup).
pub(crate) type ReadinessList = Arc<std::sync::RwLock<Vec<(String, Arc<dyn Readiness>)>>>;

/// A future run before the listeners open (e.g. kubernetes waiting for its first sync).
pub(crate) type StartupWait = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A callback run once the listeners are open, with the addresses of its block.
pub(crate) type StartedHook = Box<dyn FnOnce(Vec<SocketAddr>) + Send>;

/// Process-wide parts of a generation that plugins register during setup.
#[derive(Default)]
pub(crate) struct GenerationBuilder {
    pub(crate) http: BTreeMap<String, crate::server::http::Routes>,
    pub(crate) readiness: ReadinessList,
    pub(crate) hooks: Vec<ShutdownHook>,
    pub(crate) waits: Vec<StartupWait>,
    pub(crate) started: Vec<(usize, StartedHook)>,
    pub(crate) binds: HashMap<usize, Vec<IpAddr>>,
    pub(crate) chaos: HashMap<usize, bool>,
    pub(crate) metrics: HashMap<usize, bool>,
    pub(crate) invalidation: HashMap<usize, Arc<InvalidationBus>>,
    pub(crate) tls: HashMap<usize, Arc<rustls::ServerConfig>>,
    pub lameduck: Option<Duration>,
    pub reload: Option<(Duration, Duration)>,
    pub debug: bool,
    /// One value per type shared by the plugins of this generation (see [`Self::shared`]).
    pub(crate) shared: HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>,
}

impl GenerationBuilder {
    /// Serves `path` on the HTTP address `addr` (`:8080`, `localhost:9153`, `[::1]:8181`). Several
    /// blocks may register the same address and path; the first handler wins.
    pub(crate) fn add_http(&mut self, addr: &str, path: &str, h: Arc<dyn HttpHandler>) {
        let routes = self.http.entry(addr.to_string()).or_default();
        if !routes.iter().any(|(p, _)| p == path) {
            routes.push((path.to_string(), h));
        }
    }

    /// True if something already serves `path` on `addr`.
    pub(crate) fn has_http(&self, addr: &str, path: &str) -> bool {
        self.http
            .get(addr)
            .is_some_and(|r| r.iter().any(|(p, _)| p == path))
    }

    /// A readiness check the `ready` plugin reports under `name`.
    pub(crate) fn add_readiness(&mut self, name: &str, r: Arc<dyn Readiness>) {
        if let Ok(mut l) = self.readiness.write() {
            l.push((name.to_string(), r));
        }
    }

    /// The generation's readiness checks (the `ready` plugin keeps this).
    pub(crate) fn readiness_list(&self) -> ReadinessList {
        self.readiness.clone()
    }

    /// Runs when this generation is retired (reload or exit).
    pub(crate) fn on_shutdown(&mut self, hook: ShutdownHook) {
        self.hooks.push(hook);
    }

    /// Awaited before the listeners open.
    pub(crate) fn startup_wait(&mut self, w: StartupWait) {
        self.waits.push(w);
    }

    /// Runs after the listeners of block `block` are open.
    pub(crate) fn on_started(&mut self, block: usize, hook: StartedHook) {
        self.started.push((block, hook));
    }

    /// Restricts block `block` to these addresses (the `bind` plugin).
    pub(crate) fn bind(&mut self, block: usize, ips: Vec<IpAddr>) {
        self.binds.entry(block).or_default().extend(ips);
    }

    /// Lets CH-class queries into block `block` (the `chaos` plugin).
    pub(crate) fn allow_chaos(&mut self, block: usize) {
        self.chaos.insert(block, true);
    }

    /// The cache invalidation bus of block `block` (created on first use; see
    /// [`crate::server::invalidate`] for the contract between publishers and caches).
    pub(crate) fn invalidation(&mut self, block: usize) -> Arc<InvalidationBus> {
        self.invalidation.entry(block).or_default().clone()
    }

    /// Serves block `block`'s `tls://` keys with this TLS configuration (the `tls` plugin).
    pub(crate) fn set_tls(&mut self, block: usize, cfg: Arc<rustls::ServerConfig>) {
        self.tls.insert(block, cfg);
    }

    /// The generation's one value of type `T`, created on first use: state that the plugins of
    /// several server blocks share (the `cache` plugin's memory budget). A reload builds new ones.
    pub(crate) fn shared<T: std::any::Any + Send + Sync + Default>(&mut self) -> Arc<T> {
        let v = self
            .shared
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        // The entry for T's TypeId always holds a T.
        v.downcast::<T>().unwrap_or_else(|_| Arc::new(T::default()))
    }

    /// Marks block `block` as exporting metrics (the `prometheus` plugin).
    pub(crate) fn enable_metrics(&mut self, block: usize) {
        self.metrics.insert(block, true);
    }
}

/// A fully set-up configuration, ready to be bound and swapped in.
pub(crate) struct Generation {
    pub sites: BTreeMap<ListenKey, Arc<Site>>,
    /// TLS configuration of each `tls://` listener.
    pub tls: BTreeMap<ListenKey, Arc<rustls::ServerConfig>>,
    pub builder: GenerationBuilder,
    /// (server label, zone, plugin names) for `coredns_plugin_enabled`.
    pub enabled: Vec<(String, String, Vec<&'static str>)>,
    /// Banner lines (`.:53`, `cluster.local.:53 on 127.0.0.1`).
    pub banner: Vec<String>,
    /// Listener addresses per block index.
    pub block_addrs: HashMap<usize, Vec<SocketAddr>>,
}

fn err(pos: &Pos, directive: Option<&str>, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        pos: pos.clone(),
        directive: directive.map(str::to_string),
        msg: msg.into(),
    }
}

/// Builds a generation. Every problem found is returned, in file order.
pub(crate) fn build(cf: &Corefile, default_port: u16) -> Result<Generation, Vec<ConfigError>> {
    let order = crate::plugins::ORDER;
    let mut errors = Vec::new();
    let mut gen = GenerationBuilder::default();
    // (block index, zone addrs, chain, plugin names)
    let mut blocks = Vec::new();
    for (bi, sb) in cf.blocks.iter().enumerate() {
        let mut addrs = Vec::new();
        for k in &sb.keys {
            match sextant_corefile::parse_key(k, default_port) {
                Ok(z) => {
                    for za in z {
                        if za.scheme != Scheme::Dns && za.scheme != Scheme::Tls {
                            errors.push(err(
                                &k.pos,
                                None,
                                format!(
                                    "scheme {}:// is not supported by this build (only dns:// and tls://)",
                                    za.scheme
                                ),
                            ));
                            continue;
                        }
                        addrs.push(za);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let mut by_name: HashMap<&str, Vec<&Directive>> = HashMap::new();
        for d in &sb.directives {
            let name = d.name.text.as_str();
            match order.iter().find(|p| p.name == name) {
                None => errors.push(err(
                    &d.name.pos,
                    Some(name),
                    format!("Unknown directive '{name}'"),
                )),
                Some(def) => {
                    let lines = by_name.entry(def.name).or_default();
                    if def.once && !lines.is_empty() {
                        errors.push(err(&d.name.pos, Some(name), ERR_ONCE));
                    } else {
                        lines.push(d);
                    }
                }
            }
        }
        let info = BlockInfo {
            zones: addrs.iter().map(|a| a.zone.clone()).collect(),
            port: addrs.first().map(|a| a.port).unwrap_or(default_port),
            index: bi,
        };
        let mut chain: Vec<Arc<dyn Handler>> = Vec::new();
        let mut names = Vec::new();
        for def in order {
            let Some(lines) = by_name.get(def.name) else {
                continue;
            };
            let mut ctx = SetupCtx {
                block: &info,
                handlers: Vec::new(),
                gen: &mut gen,
            };
            match (def.setup)(&mut ctx, lines) {
                Ok(()) => {
                    if !ctx.handlers.is_empty() {
                        names.push(def.name);
                    }
                    chain.extend(ctx.handlers);
                }
                Err(e) => errors.push(e),
            }
        }
        blocks.push((
            bi,
            addrs,
            chain,
            names,
            sb.keys.first().map(|k| k.pos.clone()),
        ));
    }

    // Lay blocks out on listeners.
    let mut site_zones: BTreeMap<ListenKey, Vec<(Name, Arc<Block>)>> = BTreeMap::new();
    let mut enabled = Vec::new();
    let mut banner = Vec::new();
    let mut block_addrs: HashMap<usize, Vec<SocketAddr>> = HashMap::new();
    let mut tls_cfgs: BTreeMap<ListenKey, Arc<rustls::ServerConfig>> = BTreeMap::new();
    for (bi, addrs, chain, names, pos) in blocks {
        let pos = pos.unwrap_or_else(|| Pos::file_only("Corefile"));
        let block = Arc::new(Block {
            chain,
            chaos: gen.chaos.get(&bi).copied().unwrap_or(false),
        });
        let ips: Vec<Option<IpAddr>> = match gen.binds.get(&bi) {
            Some(ips) if !ips.is_empty() => ips.iter().copied().map(Some).collect(),
            _ => vec![None],
        };
        for za in &addrs {
            let Ok(zone) = Name::parse(&za.zone) else {
                errors.push(err(&pos, None, format!("invalid zone {}", za.zone)));
                continue;
            };
            let tls = za.scheme == Scheme::Tls;
            if tls && !gen.tls.contains_key(&bi) {
                errors.push(err(
                    &pos,
                    None,
                    format!(
                        "tls://{}:{} needs the tls plugin in its block (tls CERT KEY [CA])",
                        za.zone, za.port
                    ),
                ));
                continue;
            }
            for ip in &ips {
                let key = ListenKey {
                    ip: *ip,
                    port: za.port,
                    tls,
                };
                if let Some(cfg) = gen.tls.get(&bi).filter(|_| tls) {
                    tls_cfgs.entry(key).or_insert_with(|| cfg.clone());
                }
                let list = site_zones.entry(key).or_default();
                if list.iter().any(|(z, _)| *z == zone) {
                    errors.push(err(
                        &pos,
                        None,
                        format!(
                            "cannot serve dns://{}:{} - it is already defined",
                            za.zone, za.port
                        ),
                    ));
                    continue;
                }
                list.push((zone.clone(), block.clone()));
                let sock = SocketAddr::new(ip.unwrap_or(IpAddr::from([127, 0, 0, 1])), za.port);
                block_addrs.entry(bi).or_default().push(sock);
                enabled.push((key.label(), za.zone.clone(), names.clone()));
                let scheme = if tls { "tls://" } else { "" };
                banner.push(match ip {
                    None => format!("{scheme}{}:{}", za.zone, za.port),
                    Some(ip) => format!("{scheme}{}:{} on {}", za.zone, za.port, ip),
                });
            }
        }
    }
    // A bound and an unbound listener on one port claiming the same zone overlap.
    for (k, zones) in &site_zones {
        if k.ip.is_some() {
            let wild = ListenKey {
                ip: None,
                port: k.port,
                tls: k.tls,
            };
            if let Some(wz) = site_zones.get(&wild) {
                for (z, _) in zones {
                    if wz.iter().any(|(w, _)| w == z) {
                        errors.push(err(
                            &Pos::file_only(&cf.files.first().map(|f| f.display().to_string()).unwrap_or_else(|| "Corefile".into())),
                            None,
                            format!("zone overlap listener capacity: {z} on port {} is served both bound to {} and on every address", k.port, k.ip.map(|i| i.to_string()).unwrap_or_default()),
                        ));
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let sites = site_zones
        .into_iter()
        .map(|(k, zones)| (k, Arc::new(Site::new(&k.label(), zones))))
        .collect();
    banner.sort();
    banner.dedup();
    Ok(Generation {
        sites,
        tls: tls_cfgs,
        builder: gen,
        enabled,
        banner,
        block_addrs,
    })
}
