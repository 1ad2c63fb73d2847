//! `sextant node-cache`: the k8s-dns-node-cache image's job in-process — create the listen
//! interface, install and keep the iptables rules once the server is up, render the Corefile from
//! its template and the kube-dns ConfigMap (and re-render on change), serve the setup-error metric,
//! run the normal server, and tear the networking down on exit. Also hosts `sextant migrate`.

pub(crate) mod config;
pub(crate) mod flags;
pub(crate) mod iptables;
pub(crate) mod metrics;
pub(crate) mod migrate;
pub(crate) mod netif;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::log;
use crate::server::runtime::Source;
use config::KubeDnsConfig;
use flags::Params;
use iptables::{Iptables, Rule};

/// How often the kube-dns ConfigMap folder and the template folder are re-read.
pub(crate) const CONFIG_SYNC_PERIOD: Duration = Duration::from_secs(10);
/// Where the kube-dns ConfigMap is used from when `-kubednscm` is not given and it exists.
pub(crate) const DEFAULT_KUBEDNS_CM_PATH: &str = "/etc/kube-dns";

/// The version logged at start.
pub(crate) fn version() -> String {
    format!("sextant-{}", env!("CARGO_PKG_VERSION"))
}

/// Entry point of `sextant node-cache ARGS`; returns the exit code.
pub(crate) fn main(args: &[String]) -> i32 {
    log::info(&format!("Starting node-cache image: {}", version()));
    let params = match flags::parse(args) {
        Ok(p) => p,
        Err(e) if e.starts_with("Usage") => {
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

/// The running node-cache state shared by the background loops and teardown.
struct App {
    p: Params,
    rules: Vec<Rule>,
    ipt: Iptables,
    cluster_dns: Option<IpAddr>,
    kubedns_dir: Option<PathBuf>,
    /// Serialises networking changes; `true` once torn down (no more setup after that).
    net: Mutex<bool>,
    /// The last kube-dns config read successfully.
    kubedns: Mutex<KubeDnsConfig>,
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
        App {
            rules: iptables::rules(&p.local_ip_str, p.local_port, p.health_port),
            ipt: Iptables::new(p.is_ipv6()),
            cluster_dns,
            kubedns_dir,
            net: Mutex::new(false),
            kubedns: Mutex::new(KubeDnsConfig::default()),
            p,
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

    /// One networking pass: iptables rules (if asked) and the interface (like `setupNetworking`).
    fn setup_networking(&self, with_iptables: bool) {
        let Ok(torn_down) = self.net.lock() else {
            return;
        };
        if *torn_down {
            return;
        }
        if with_iptables && self.p.setup_iptables {
            for r in &self.rules {
                match self.ipt.ensure_prepended(r) {
                    Ok(true) => log::debug(&format!(
                        "iptables rule {r} for nodelocaldns already exists"
                    )),
                    Ok(false) => log::info(&format!("Added back nodelocaldns rule - {r}")),
                    Err(e) => {
                        log::error(&format!(
                            "Error checking/adding iptables rule {r}, error - {e}"
                        ));
                        metrics::error(e.metric_label());
                    }
                }
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

    /// Removes every rule (looping until gone) and the interface; no setup happens afterwards.
    fn teardown(&self) {
        let Ok(mut torn_down) = self.net.lock() else {
            return;
        };
        *torn_down = true;
        log::info("Tearing down");
        if self.p.setup_iptables {
            for r in &self.rules {
                if let Err(e) = self.ipt.delete_all(r) {
                    log::error(&format!("Failed deleting iptables rule {r}, error - {e}"));
                    metrics::error(e.metric_label());
                }
            }
        }
        if self.p.setup_interface {
            if let Err(e) = netif::remove_device(&self.p.interface_name) {
                log::error(&format!(
                    "Failed to remove interface {} - {e}",
                    self.p.interface_name
                ));
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
        // The interface now; iptables only once the server is up.
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
        ..Default::default()
    };
    let code = crate::cli::run(
        flags,
        Source::File(app.p.corefile.clone()),
        app.p.local_port,
    )
    .await;
    stop.cancel();
    if !app.p.skip_teardown {
        let a = app.clone();
        blocking(move || a.teardown()).await;
    }
    code
}
