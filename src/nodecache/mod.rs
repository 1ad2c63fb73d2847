//! `sextant node-cache`: the k8s-dns-node-cache image's job in-process — create the listen
//! interface, install and keep the rules (iptables or nftables) once the server is up, render the
//! Corefile from its template and the kube-dns ConfigMap (and re-render on change), serve the
//! setup-error metric, run the normal server, and tear the networking down on exit. Several
//! instances may run on one node at once (a rolling update with `maxSurge`): they share their
//! listening sockets and the interface and rules, and only the last one out tears down (see
//! `peers`). Also hosts `sextant migrate`.

pub(crate) mod config;
pub(crate) mod fallback;
pub(crate) mod flags;
pub(crate) mod iptables;
pub(crate) mod metrics;
pub(crate) mod migrate;
pub(crate) mod netif;
pub(crate) mod nftables;
pub(crate) mod peers;
pub(crate) mod rules;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::log;
use crate::server::runtime::Source;
use config::KubeDnsConfig;
use flags::Params;
use rules::{Backend, Event, Spec};

/// How often the kube-dns ConfigMap folder and the template folder are re-read.
pub(crate) const CONFIG_SYNC_PERIOD: Duration = Duration::from_secs(10);
/// Where the kube-dns ConfigMap is used from when `-kubednscm` is not given and it exists.
pub(crate) const DEFAULT_KUBEDNS_CM_PATH: &str = "/etc/kube-dns";
/// How long a stopping instance waits for a starting one to serve before leaving anyway.
const HANDOVER_WAIT: Duration = Duration::from_secs(20);
/// How long to wait for the lock guarding the interface and rules.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The version logged at start.
pub(crate) fn version() -> String {
    format!("sextant-{}", env!("CARGO_PKG_VERSION"))
}

/// Entry point of `sextant node-cache ARGS`; returns the exit code.
pub(crate) fn main(args: &[String]) -> i32 {
    log::info(&format!("Starting node-cache image: {}", version()));
    let params = match flags::parse(args) {
        Ok(p) => p,
        Err(e @ flags::FlagsError::Help) => {
            eprint!("{e}");
            return 2;
        }
        Err(e) => {
            log::raw(&format!("[FATAL] Error parsing flags - {e}, Exiting"));
            return 1;
        }
    };
    let rt = match crate::cli::runtime() {
        Ok(r) => r,
        Err(e) => {
            log::raw(&format!("[FATAL] cannot start runtime: {e}"));
            return 1;
        }
    };
    rt.block_on(run(params))
}

/// Where the networking is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    /// Set up and kept.
    Active,
    /// Shutting down alone: the rules steering traffic to the sockets are gone (queries go to
    /// the cluster DNS) while the sockets drain; nothing is set up any more.
    Draining,
    /// Torn down, or left to another instance.
    Done,
}

/// The running node-cache state shared by the background loops and teardown.
struct App {
    p: Params,
    spec: Spec,
    /// The rules tool (None with `-setupiptables=false`).
    backend: Option<Box<dyn Backend>>,
    cluster_dns: Option<IpAddr>,
    kubedns_dir: Option<PathBuf>,
    /// Serialises networking changes within the process.
    net: Mutex<Net>,
    /// The last kube-dns config read successfully.
    kubedns: Mutex<KubeDnsConfig>,
    /// This instance's control socket (None if it could not be claimed: then it acts alone and
    /// never tears down, since it cannot tell whether others run).
    me: Option<peers::Instance>,
    /// The fallback DNAT targets last looked up.
    targets: Mutex<Vec<IpAddr>>,
}

impl App {
    fn new(p: Params) -> App {
        let env = config::service_env(&p.upstream_svc_name);
        let val = std::env::var(&env).unwrap_or_default();
        let cluster_dns = val.trim().parse::<IpAddr>().ok();
        if cluster_dns.is_none() {
            log::warning(&format!(
                "Unable to lookup IP address of Upstream service {}, env ${env} `{val}`",
                p.upstream_svc_name
            ));
        }
        let kubedns_dir = p.kubedns_cm_path.clone().or_else(|| {
            let d = PathBuf::from(DEFAULT_KUBEDNS_CM_PATH);
            d.exists().then_some(d)
        });
        let backend = p.setup_iptables.then(|| {
            let mode = match p.rules {
                rules::Mode::Auto => {
                    let (m, why) = rules::detect();
                    log::info(&format!("Rules mode {m:?} detected: {why}"));
                    m
                }
                m => m,
            };
            let b = rules::backend(mode, &p.interface_name);
            log::info(&format!("Programming the rules with {}", b.describe()));
            b
        });
        let me = match peers::Instance::claim(&p.interface_name) {
            Ok(i) => Some(i),
            Err(e) => {
                log::warning(&format!(
                    "Cannot coordinate with other node-cache instances ({e}); this one will not tear down"
                ));
                None
            }
        };
        App {
            spec: Spec {
                ips: p.local_ips.clone(),
                port: p.local_port,
                health_port: p.health_port,
            },
            backend,
            cluster_dns,
            kubedns_dir,
            net: Mutex::new(Net::Active),
            kubedns: Mutex::new(KubeDnsConfig::default()),
            me,
            targets: Mutex::new(Vec::new()),
            p,
        }
    }

    /// Other live instances that are not stopping (they need the interface and rules).
    fn live_peers(&self) -> Vec<peers::Peer> {
        let mine = self.me.as_ref().map_or(usize::MAX, |m| m.slot);
        peers::peers(&self.p.interface_name, mine)
            .into_iter()
            .filter(|p| p.state != peers::State::Stopping)
            .collect()
    }

    fn set_state(&self, s: peers::State) {
        if let Some(m) = &self.me {
            m.set_state(s);
        }
    }

    /// Renders and writes the Corefile; true if it was written. Errors count as `configmap`.
    fn update_corefile(&self, cfg: &KubeDnsConfig, signal: bool) -> bool {
        if let Err(e) = cfg.validate_for_node_cache() {
            log::error(&format!("Invalid config: {e}"));
            metrics::error("configmap");
            return false;
        }
        let base = match std::fs::read_to_string(&self.p.base_corefile) {
            Ok(b) => b,
            Err(e) => {
                log::error(&format!(
                    "Failed to read node-cache coreFile {} - {e}",
                    self.p.base_corefile.display()
                ));
                metrics::error("configmap");
                return false;
            }
        };
        let r = config::render(
            &base,
            cfg,
            &config::RenderParams {
                local_ips: &self.p.local_ip_str,
                port: self.p.local_port,
                cluster_dns: self.cluster_dns,
            },
        );
        if r.no_tcp_block {
            log::warning(
                "Did not find TCP upstream block to replace, assuming upstreams already use UDP.",
            );
        }
        if let Err(e) = write_file(&self.p.corefile, &r.text) {
            log::error(&format!(
                "Failed to write config file {} - err {e}",
                self.p.corefile.display()
            ));
            metrics::error("configmap");
            return false;
        }
        log::info(&format!(
            "Updated Corefile with {} custom stubdomains and upstream servers {}",
            cfg.stub_domains.len(),
            r.upstream_servers
        ));
        log::info(&format!("Using config file:\n{}", r.text));
        if signal && self.p.reload_with_signal {
            let pid = std::process::id();
            log::info(&format!("Sending reload signal to PID {pid}"));
            if let Err(e) =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGUSR1)
            {
                log::error(&format!("Failed to trigger CoreDNS reload: {e}"));
            }
        }
        true
    }

    /// Reads the kube-dns folder; on success remembers and returns the config and its version.
    fn read_kubedns(&self) -> Option<(KubeDnsConfig, String)> {
        let dir = self.kubedns_dir.as_ref()?;
        let parsed = config::read_dir(dir)
            .and_then(|(data, v)| KubeDnsConfig::from_data(&data).map(|c| (c, v)));
        match parsed {
            Ok((c, v)) => {
                if let Ok(mut k) = self.kubedns.lock() {
                    *k = c.clone();
                }
                Some((c, v))
            }
            Err(e) => {
                log::error(&format!(
                    "Failed to sync kube-dns config directory {}, err: {e}",
                    dir.display()
                ));
                None
            }
        }
    }

    fn current_kubedns(&self) -> KubeDnsConfig {
        self.kubedns.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// Looks the fallback targets up again (`-fallbackendpoints` at the cluster DNS); keeps the
    /// last answer when the lookup fails or finds nothing.
    fn refresh_targets(&self) -> Vec<IpAddr> {
        let old = self.targets.lock().map(|t| t.clone()).unwrap_or_default();
        let (Some(name), Some(server)) = (&self.p.fallback_endpoints, self.cluster_dns) else {
            return old;
        };
        let v4 = self.spec.ips.iter().any(|ip| ip.is_ipv4());
        let v6 = self.spec.ips.iter().any(|ip| ip.is_ipv6());
        match fallback::lookup(SocketAddr::new(server, 53), name, v4, v6) {
            Ok(t) if !t.is_empty() => {
                if t != old {
                    log::info(&format!(
                        "Fallback for the local IPs while no node cache listens: {}",
                        t.iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    if let Ok(mut g) = self.targets.lock() {
                        *g = t.clone();
                    }
                }
                t
            }
            Ok(_) => {
                log::warning(&format!("Fallback endpoints {name}: no addresses"));
                old
            }
            Err(e) => {
                log::warning(&format!("Fallback endpoints {name}: {e}"));
                old
            }
        }
    }

    /// One networking pass: the rules (if asked) and the interface (like `setupNetworking`).
    fn setup_networking(&self, with_rules: bool) {
        let targets = if with_rules && self.backend.is_some() {
            self.refresh_targets()
        } else {
            Vec::new()
        };
        let _lock = peers::lock(&self.p.interface_name, LOCK_WAIT);
        let Ok(state) = self.net.lock() else {
            return;
        };
        if *state != Net::Active {
            return;
        }
        if with_rules {
            if let Some(b) = &self.backend {
                report(b.ensure(&self.spec, &targets), false);
            }
        }
        if self.p.setup_interface {
            let name = &self.p.interface_name;
            match netif::ensure_device(name, &self.p.local_ips) {
                Ok(netif::Ensured::Existed) => {}
                Ok(netif::Ensured::CreatedDummy) => log::info(&format!("Added interface - {name}")),
                Ok(netif::Ensured::CreatedBridge(why)) => {
                    log::warning(&format!(
                        "Kernel refused link type dummy ({why}); created {name} as an empty bridge holding the listen addresses instead"
                    ));
                    log::info(&format!("Added interface - {name}"));
                }
                Err(e) if e.existed => {
                    log::error(&format!("Error checking dummy device {name} - {}", e.error));
                    metrics::error("interface_check");
                }
                Err(e) => {
                    log::error(&format!(
                        "Failed to add non-existent interface {name}: {}",
                        e.error
                    ));
                    metrics::error("interface_add");
                }
            }
        }
    }

    /// On graceful shutdown, before the listeners stop. With another instance serving (it
    /// shares this one's sockets), nothing changes: it goes on reading them. Alone, the rules
    /// steering queries to the sockets go first, so new queries reach the cluster DNS (kube-proxy
    /// or the fallback DNAT) while the sockets drain what is queued.
    fn before_close(&self) {
        self.set_state(peers::State::Stopping);
        let deadline = Instant::now() + HANDOVER_WAIT;
        loop {
            let others = self.live_peers();
            if let Some(p) = others.iter().find(|p| p.state == peers::State::Serving) {
                log::info(&format!(
                    "Node-cache instance pid {} serves the same sockets: handing over",
                    p.pid
                ));
                return;
            }
            if others.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                log::warning(&format!(
                    "Node-cache instance pid {} is still starting after {}; leaving the interface and rules to it",
                    others[0].pid,
                    crate::pkg::duration::format(HANDOVER_WAIT)
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // (Also with -skipteardown: the UDP steering rule only applies while a socket listens,
        // and the next instance puts it back.)
        if self.me.is_none() {
            return;
        }
        let Some(_lock) = peers::lock(&self.p.interface_name, LOCK_WAIT) else {
            log::warning("Could not take the node-cache lock; leaving the rules in place");
            return;
        };
        if !self.live_peers().is_empty() {
            return;
        }
        let Ok(mut state) = self.net.lock() else {
            return;
        };
        *state = Net::Draining;
        if let Some(b) = &self.backend {
            log::info("Sending new queries to the cluster DNS while the sockets drain");
            report(b.remove_local(&self.spec), true);
        }
        drop(state);
        // Packets past the rules a moment ago still arrive; the drain reads them.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Removes every rule (looping until gone) and the interface — unless another instance
    /// still uses them; no setup happens afterwards.
    fn teardown(&self) {
        if self.p.skip_teardown {
            return;
        }
        if self.me.is_none() {
            log::warning("Not tearing down: other node-cache instances cannot be seen");
            return;
        }
        let Some(_lock) = peers::lock(&self.p.interface_name, LOCK_WAIT) else {
            log::warning("Could not take the node-cache lock; not tearing down");
            return;
        };
        let Ok(mut state) = self.net.lock() else {
            return;
        };
        let others = self.live_peers();
        if let Some(p) = others.first() {
            *state = Net::Done;
            log::info(&format!(
                "Leaving the interface and rules to node-cache instance pid {}",
                p.pid
            ));
            return;
        }
        *state = Net::Done;
        log::info("Tearing down");
        // The interface first: while the rules remain, queries to the local IPs are still NATed
        // to the cluster DNS; only the last step takes the node-local IP away.
        if self.p.setup_interface {
            if let Err(e) = netif::remove_device(&self.p.interface_name) {
                log::error(&format!(
                    "Failed to remove interface {} - {e}",
                    self.p.interface_name
                ));
            }
        }
        if let Some(b) = &self.backend {
            report(b.remove_all(&self.spec), true);
        }
    }
}

/// Logs a pass over the rules and counts its errors.
fn report(events: Vec<Event>, removing: bool) {
    for e in events {
        match e {
            Event::Present(r) => log::debug(&format!("rule {r} for nodelocaldns already exists")),
            Event::Added(r) => log::info(&format!("Added back nodelocaldns rule - {r}")),
            Event::Deleted(r) => log::debug(&format!("Deleted nodelocaldns rule - {r}")),
            Event::Failed(r, err) if removing => {
                log::error(&format!("Failed deleting rule {r}, error - {err}"));
                metrics::error(err.metric_label());
            }
            Event::Failed(r, err) => {
                log::error(&format!("Error checking/adding rule {r}, error - {err}"));
                metrics::error(err.metric_label());
            }
        }
    }
}

/// Writes `text` to `path` unless it already holds it: through a temporary file and a rename
/// when the folder allows it (so `reload` never reads half a file), else in place.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Corefile".into())
    ));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(path, text)
}

async fn blocking<F: FnOnce() + Send + 'static>(f: F) {
    if let Err(e) = tokio::task::spawn_blocking(f).await {
        log::error(&format!("node-cache background task failed: {e}"));
    }
}

/// Re-reads the kube-dns folder and the template folder every period and re-renders on change.
async fn config_sync(app: Arc<App>, mut versions: (String, String), stop: CancellationToken) {
    let base_dir = app
        .p
        .base_corefile
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CONFIG_SYNC_PERIOD) => {}
        }
        let a = app.clone();
        let dir = base_dir.clone();
        let old = versions.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut now = old.clone();
            if let Some((_, v)) = a.read_kubedns() {
                now.0 = v;
            }
            match config::read_dir(&dir) {
                Ok((_, v)) => now.1 = v,
                Err(e) => log::error(&format!(
                    "Failed to sync node-local-dns config directory {}, err: {e}",
                    dir.display()
                )),
            }
            if now != old {
                a.update_corefile(&a.current_kubedns(), true);
            }
            now
        })
        .await;
        if let Ok(v) = res {
            versions = v;
        }
    }
}

/// Waits for the pidfile (if any), then sets up networking with iptables, then every interval.
async fn periodic(app: Arc<App>, stop: CancellationToken) {
    if let Some(pidfile) = app.p.pidfile.clone() {
        let mut n = 0u64;
        while !pidfile.is_file() {
            if n % 10 == 0 {
                log::info(&format!(
                    "waiting for coredns pidfile '{}'",
                    pidfile.display()
                ));
            }
            n += 1;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let a = app.clone();
        blocking(move || a.setup_networking(true)).await;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                log::warning("Exiting iptables/interface check loop");
                return;
            }
            _ = tokio::time::sleep(app.p.interval) => {}
        }
        let a = app.clone();
        blocking(move || a.setup_networking(true)).await;
    }
}

/// What the server tells node-cache: when it serves, and when it is about to close its
/// listeners on a graceful shutdown.
struct Embedded(Arc<App>);

impl crate::server::runtime::Embedder for Embedded {
    fn serving(&self) {
        if self.0.net.lock().is_ok_and(|n| *n == Net::Active) {
            self.0.set_state(peers::State::Serving);
        }
    }

    fn before_close(&self) -> crate::plugin::BoxFuture<'static, ()> {
        let a = self.0.clone();
        Box::pin(async move { blocking(move || a.before_close()).await })
    }
}

async fn run(p: Params) -> i32 {
    crate::metrics::init();
    metrics::init();
    // Install the SIGUSR1 handler before anything can send it (the default action kills).
    let usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1());
    drop(usr1);
    if p.conf_given {
        log::info(&format!("Using Corefile {}", p.corefile.display()));
    }
    if let Some(pf) = &p.pidfile {
        log::info(&format!("Using Pidfile {}", pf.display()));
    }
    let app = Arc::new(App::new(p));
    // Before anything binds: share the listening sockets of an instance already running.
    if let Some(me) = &app.me {
        let (iface, slot) = (app.p.interface_name.clone(), me.slot);
        blocking(move || peers::inherit_from_peers(&iface, slot)).await;
    }
    let _metrics_server = match metrics::serve(&app.p.metrics_listen_address).await {
        Ok(s) => Some(s),
        Err(e) => {
            log::error(&format!("Failed to start metrics handler: {e}"));
            None
        }
    };
    // Corefile from the template and the kube-dns ConfigMap.
    let a = app.clone();
    let versions = tokio::task::spawn_blocking(move || {
        let mut kube_version = String::new();
        let cfg = match a.read_kubedns() {
            Some((c, v)) => {
                kube_version = v;
                c
            }
            None => {
                if a.kubedns_dir.is_none() {
                    log::info("Skipping kube-dns configmap sync as no directory was specified");
                }
                KubeDnsConfig::default()
            }
        };
        a.update_corefile(&cfg, false);
        let base_dir =
            a.p.base_corefile
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
        let base_version = config::read_dir(&base_dir)
            .map(|(_, v)| v)
            .unwrap_or_default();
        // The interface now; the rules only once the server is up.
        a.setup_networking(false);
        (kube_version, base_version)
    })
    .await
    .unwrap_or_default();
    let stop = CancellationToken::new();
    tokio::spawn(config_sync(app.clone(), versions, stop.clone()));
    tokio::spawn(periodic(app.clone(), stop.clone()));
    let flags = crate::cli::Flags {
        conf: Some(app.p.corefile.clone()),
        dns_port: Some(app.p.local_port),
        pidfile: app.p.pidfile.clone(),
        quiet: app.p.quiet,
        embedder: Some(crate::cli::EmbedderHandle(Arc::new(Embedded(app.clone())))),
        ..Default::default()
    };
    let code = crate::cli::run(
        flags,
        Source::File(app.p.corefile.clone()),
        app.p.local_port,
    )
    .await;
    stop.cancel();
    let a = app.clone();
    blocking(move || a.teardown()).await;
    code
}
