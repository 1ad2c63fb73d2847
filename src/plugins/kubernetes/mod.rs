//! The `kubernetes` plugin: serves the cluster DNS zone (Kubernetes DNS spec 1.1.0 with CoreDNS's
//! extensions) from the `sextant-kube` index. Owns setup wiring (index start/stop, startup wait,
//! readiness), the query handler (NXDOMAIN/NODATA/SERVFAIL rules, CNAME chasing through the
//! server) and the AXFR record list for the `transfer` plugin. Answer logic is in `lookup`.

mod external;
mod fast;
pub(crate) mod lookup;
mod memo;
pub(crate) mod setup;
mod xfr;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use sextant_corefile::{Directive, Error};
use sextant_kube::{Index, Snapshot, WatchOptions};
use sextant_wire::{Message, Name, RData, RType, Rcode, Record, Reply};

use crate::log::PluginLog;
use crate::pkg::zones;
use crate::plugin::{
    BoxFuture, Handler, Metadata, MetadataProvider, Next, Outcome, Readiness, Request, SetupCtx,
    Transferer,
};
use crate::server::invalidate::{Invalidation, InvalidationBus};
use crate::server::lifecycle::{CarryKey, TaskCtx};

use lookup::{addr_record, Host, KResult, NameError, View};
use setup::{Config, DataSource};

const LOG: PluginLog = PluginLog("kubernetes");

/// The running plugin: configuration plus the index (set once the data source started).
pub(crate) struct Kubernetes {
    cfg: Arc<Config>,
    index: Slot,
    empty: Arc<Snapshot>,
    local_ips: Arc<ArcSwap<Vec<IpAddr>>>,
    /// This instance's key in the per-thread reply memo.
    memo_id: u64,
    /// What `autopath @kubernetes` asks.
    search: Arc<AutoPathSearch>,
    /// What `k8s_external` asks.
    external: Arc<external::External>,
    /// Service and endpoint addresses are answered by the `fast` path first (the tests turn it
    /// off to compare its bytes with the general path's).
    fast: bool,
}

struct Ready(Slot);

impl Readiness for Ready {
    fn ready(&self) -> bool {
        self.0.load().as_ref().is_some_and(|i| i.synced())
    }
}

/// `autopath @kubernetes` (CoreDNS `plugin/kubernetes/autopath.go`): with `pods verified`, the
/// search path of the client pod found by source address: `<podns>.svc.<zone>`, `svc.<zone>`,
/// `<zone>` for the zone the question falls in, then the `search` list of this server's own
/// resolv.conf, then the root (the bare name).
struct AutoPathSearch {
    cfg: Arc<Config>,
    index: Slot,
    resolv: Vec<Name>,
}

impl crate::plugins::autopath::SearchPath for AutoPathSearch {
    fn search_path(&self, client: IpAddr, qname: &Name) -> Option<Vec<Name>> {
        if self.cfg.pods != sextant_kube::PodsMode::Verified {
            return None;
        }
        let zone = zones::matches(&self.cfg.zones, qname)?;
        let idx = self.index.load_full()?;
        let snap = idx.snapshot();
        let pod = snap.pod_by_ip(client)?;
        let svc = zone.prepend(b"svc").ok()?;
        let mut out = Vec::with_capacity(4 + self.resolv.len());
        out.push(svc.prepend(pod.namespace.as_bytes()).ok()?);
        out.push(svc);
        out.push(zone.clone());
        out.extend(self.resolv.iter().cloned());
        out.push(Name::root());
        Some(out)
    }
}

/// The `search` list of a resolv.conf as lower-case names (unparseable entries skipped).
fn resolv_search(path: &std::path::Path) -> Vec<Name> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    crate::plugins::autopath::parse_resolv(&text)
        .iter()
        .filter_map(|s| Name::parse(s).ok())
        .map(|n| n.to_lowercase())
        .collect()
}

/// Non-loopback addresses of this host's interfaces (CoreDNS `boundIPs` without `bind`).
fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !ip.is_loopback() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

fn watch_options(cfg: &Config) -> WatchOptions {
    WatchOptions {
        namespace_labels: cfg.namespace_labels.clone(),
        labels: cfg.labels.clone(),
        pods: cfg.pods,
        endpoints: !cfg.noendpoints,
        zonal: cfg.zonal,
        multicluster: !cfg.multicluster.is_empty(),
        resync: cfg.relist_period,
        snapshot: cfg.snapshot.clone(),
        ..WatchOptions::default()
    }
}

/// Waits for the first sync up to the startup timeout, logging like CoreDNS.
async fn wait_for_sync(idx: Index, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            LOG.warning("starting server with unsynced Kubernetes API");
            return;
        }
        if idx.wait_synced(left.min(Duration::from_millis(500))).await {
            return;
        }
        if tokio::time::Instant::now() < deadline {
            LOG.info("waiting for Kubernetes API before starting server");
        }
    }
}

/// An index in use: stopped (its watches end) when the last generation holding it is dropped.
pub(crate) struct Running(Index);

impl std::ops::Deref for Running {
    type Target = Index;
    fn deref(&self) -> &Index {
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The index slot a generation's handler, readiness check and search path read.
type Slot = Arc<ArcSwapOption<Running>>;

/// What identifies an API-backed index across reloads: a reload whose data source is unchanged
/// (same client settings and watch options) keeps the running, synced index instead of starting
/// new watches, so a reload during an API outage never loses the cluster's data.
#[derive(PartialEq)]
struct IndexKey {
    client: sextant_kube::ClientConfig,
    limits: sextant_kube::RateLimits,
    opts: WatchOptions,
    snapshot: Option<std::path::PathBuf>,
}

impl CarryKey for IndexKey {
    type Value = Running;
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    let cfg = Arc::new(setup::parse(d, &ctx.block.zones)?);
    let slot: Slot = Arc::new(ArcSwapOption::empty());
    // Caches in this block drop what the index changes (Sextant's coherent cache).
    let bus = ctx.invalidation();
    match &cfg.source {
        DataSource::Manifests(paths) => {
            // Loaded now, so a broken file fails the configuration; followed once it runs.
            let idx = Index::new_static();
            idx.load_manifest_files(paths)
                .map_err(|e| d.err(e.to_string()))?;
            slot.store(Some(Arc::new(Running(idx.clone()))));
            let (paths, snapshot, cfg2) = (paths.clone(), cfg.snapshot.clone(), cfg.clone());
            ctx.task(move |t| async move {
                idx.follow_manifests(paths);
                if let Some(p) = snapshot {
                    idx.persist_to(p, Duration::from_secs(5));
                }
                invalidation_bridge(idx, cfg2, bus, t).await;
            });
        }
        DataSource::Api(client) => {
            if let sextant_kube::ClientConfig::Kubeconfig { path, .. } = client {
                if !path.exists() {
                    return Err(d.err(format!(
                        "stat {}: no such file or directory",
                        path.display()
                    )));
                }
            }
            let key = IndexKey {
                client: client.clone(),
                limits: cfg.limits,
                opts: watch_options(&cfg),
                snapshot: cfg.snapshot.clone(),
            };
            // The same data source in the previous generation: take its index over now.
            if let Some(running) = ctx.carry().get(&key) {
                slot.store(Some(running));
            }
            let (slot2, carry, cfg2) = (slot.clone(), ctx.carry(), cfg.clone());
            let timeout = cfg.startup_timeout;
            ctx.warmup(move |t| async move {
                // Another block of this generation may have started it already.
                if slot2.load().is_none() {
                    if let Some(running) = carry.get(&key) {
                        slot2.store(Some(running));
                    }
                }
                let idx = match slot2.load_full() {
                    Some(r) => Index::clone(&r),
                    None => {
                        let snapshot = key.snapshot.clone();
                        match sextant_kube::start(key.client.clone(), key.limits, key.opts.clone())
                            .await
                        {
                            Ok(idx) => {
                                // A snapshot file, if any, was loaded by `start` before its
                                // watchers.
                                if let Some(p) = snapshot {
                                    idx.persist_to(p, Duration::from_secs(5));
                                }
                                let running = Arc::new(Running(idx.clone()));
                                carry.put(key, &running);
                                slot2.store(Some(running));
                                idx
                            }
                            Err(e) => {
                                LOG.error(&e.to_string());
                                return;
                            }
                        }
                    }
                };
                let spawner = t.spawner();
                spawner.spawn(invalidation_bridge(idx.clone(), cfg2, bus, t));
                wait_for_sync(idx, timeout).await;
            });
        }
    }
    // `ns.dns.<zone>` answers with the block's bound addresses once they are known.
    let local_ips = Arc::new(ArcSwap::from_pointee(interface_ips()));
    let li = local_ips.clone();
    ctx.task(move |t| async move {
        let bound: Vec<IpAddr> = t
            .addrs()
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect();
        if !bound.is_empty() {
            li.store(Arc::new(bound));
        }
    });
    ctx.add_readiness("kubernetes", Arc::new(Ready(slot.clone())));
    let search = Arc::new(AutoPathSearch {
        cfg: cfg.clone(),
        index: slot.clone(),
        resolv: resolv_search(std::path::Path::new("/etc/resolv.conf")),
    });
    let empty = Arc::new(Snapshot::default());
    let external = Arc::new(external::External {
        cfg: cfg.clone(),
        index: slot.clone(),
        local_ips: local_ips.clone(),
        empty: empty.clone(),
    });
    ctx.add_handler(Arc::new(Kubernetes {
        cfg,
        index: slot,
        empty,
        local_ips,
        memo_id: memo::new_id(),
        search,
        external,
        fast: true,
    }));
    Ok(())
}

/// Forwards the index's change notices to the block's cache invalidation bus while the
/// generation runs.
async fn invalidation_bridge(idx: Index, cfg: Arc<Config>, bus: Arc<InvalidationBus>, t: TaskCtx) {
    let mut rx = idx.subscribe();
    loop {
        let change = tokio::select! {
            _ = t.cancelled() => return,
            c = rx.recv() => c,
        };
        match change {
            Ok(c) => bus.publish(&invalidation_for(&c, &cfg.zones)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                bus.publish(&Invalidation {
                    all: true,
                    ..Invalidation::default()
                })
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The cached names an index change makes stale, in every zone of the plugin.
pub(crate) fn invalidation_for(c: &sextant_kube::Change, zones: &[Name]) -> Invalidation {
    let mut inv = Invalidation {
        all: c.all,
        ..Invalidation::default()
    };
    if c.all {
        return inv;
    }
    let forward: Vec<&Name> = zones.iter().filter(|z| !z.is_reverse()).collect();
    let under = |labels: &[&str], z: &Name| -> Option<Name> {
        let mut n = z.clone();
        for l in labels.iter().rev() {
            n = n.prepend(l.as_bytes()).ok()?;
        }
        Some(n)
    };
    for z in &forward {
        for (ns, svc) in &c.services {
            inv.subtrees.extend(under(&[svc, ns, "svc"], z));
            inv.negative_subtrees.extend(under(&[ns, "svc"], z));
        }
        for ns in &c.namespaces {
            inv.subtrees.extend(under(&[ns, "svc"], z));
            inv.subtrees.extend(under(&[ns, "pod"], z));
        }
        if c.pods {
            inv.subtrees.extend(under(&["pod"], z));
        }
    }
    inv.names
        .extend(c.ips.iter().map(|ip| Name::reverse_of(*ip)));
    inv
}

/// A fully built reply of the plugin.
struct Answer {
    answer: Vec<Record>,
    extra: Vec<Record>,
    tc: bool,
    /// Part of it came from outside the index (an ExternalName target resolved through the
    /// server): not a function of the snapshot alone, so never memoised.
    external: bool,
}

impl Answer {
    fn of(answer: Vec<Record>) -> Answer {
        Answer {
            answer,
            extra: Vec::new(),
            tc: false,
            external: false,
        }
    }
}

impl Kubernetes {
    /// Builds a handler over a fixed index (tests, benchmarks).
    #[cfg(test)]
    pub(crate) fn with_index(cfg: Config, index: Index, local_ips: Vec<IpAddr>) -> Kubernetes {
        let cfg = Arc::new(cfg);
        let index: Slot = Arc::new(ArcSwapOption::from_pointee(Running(index)));
        let local_ips = Arc::new(ArcSwap::from_pointee(local_ips));
        let empty = Arc::new(Snapshot::default());
        Kubernetes {
            search: Arc::new(AutoPathSearch {
                cfg: cfg.clone(),
                index: index.clone(),
                resolv: Vec::new(),
            }),
            external: Arc::new(external::External {
                cfg: cfg.clone(),
                index: index.clone(),
                local_ips: local_ips.clone(),
                empty: empty.clone(),
            }),
            cfg,
            index,
            empty,
            local_ips,
            memo_id: memo::new_id(),
            fast: true,
        }
    }

    fn snapshot(&self) -> (Arc<Snapshot>, bool) {
        match self.index.load_full() {
            Some(i) => (Arc::clone(&i.snapshot()), i.synced()),
            None => (self.empty.clone(), false),
        }
    }

    /// CoreDNS `plugin.A` / `plugin.AAAA`: addresses, following ExternalName CNAMEs inside the
    /// zone here and outside it through the whole server.
    fn addresses<'a>(
        &'a self,
        req: &'a Request,
        view: &'a View<'a>,
        zone: &'a Name,
        qname: Name,
        qtype: RType,
        prev: Vec<Record>,
    ) -> BoxFuture<'a, KResult<(Vec<Record>, bool, bool)>> {
        Box::pin(async move {
            let v6 = qtype == RType::AAAA;
            let items = view.services(&qname, zone, Some(v6), false)?;
            let mut out = Vec::new();
            let mut tc = false;
            // True once an answer came from outside the index (through the server).
            let mut external = false;
            // Addresses already answered: a linear scan for a handful, a set for big headless
            // services.
            let many = items.len() > 16;
            let mut seen_few: Vec<IpAddr> = Vec::new();
            let mut seen_many: HashSet<IpAddr> = HashSet::new();
            let mut fresh = |ip: IpAddr| {
                if many {
                    seen_many.insert(ip)
                } else if seen_few.contains(&ip) {
                    false
                } else {
                    seen_few.push(ip);
                    true
                }
            };
            for it in items {
                match it.host {
                    Host::Name(target) => {
                        if target.is_subdomain_of(&qname) || prev.len() > 7 {
                            continue;
                        }
                        if prev
                            .iter()
                            .any(|r| matches!(&r.data, RData::Cname(t) if *t == target))
                        {
                            continue;
                        }
                        let cname =
                            Record::new(qname.clone(), it.ttl, RData::Cname(target.clone()));
                        if target.is_subdomain_of(zone) {
                            let mut p2 = prev.clone();
                            p2.push(cname.clone());
                            if let Ok((next, t, e)) = self
                                .addresses(req, view, zone, target.clone(), qtype, p2)
                                .await
                            {
                                if !next.is_empty() {
                                    out.push(cname);
                                    out.extend(next);
                                }
                                tc |= t;
                                external |= e;
                            }
                            continue;
                        }
                        if req.resolver.is_none() || req.depth >= 10 {
                            continue;
                        }
                        external = true;
                        let o = req.resolve(target.clone(), qtype).await;
                        out.push(cname);
                        if let Some(m) = o.reply.and_then(Reply::into_message) {
                            tc |= m.header.tc;
                            out.extend(m.answers);
                        }
                    }
                    Host::Ip(ip) => {
                        if ip.is_ipv6() == v6 && fresh(ip) {
                            out.push(addr_record(qname.clone(), it.ttl, ip));
                        }
                    }
                }
            }
            Ok((out, tc, external))
        })
    }

    async fn answer(
        &self,
        req: &Request,
        view: &View<'_>,
        zone: &Name,
        qname: &Name,
        qtype: RType,
    ) -> Option<KResult<Answer>> {
        let at_apex = qname.label_count() == zone.label_count();
        Some(match qtype {
            RType::A | RType::AAAA => self
                .addresses(req, view, zone, qname.clone(), qtype, Vec::new())
                .await
                .map(|(a, tc, external)| Answer {
                    answer: a,
                    extra: Vec::new(),
                    tc,
                    external,
                }),
            RType::TXT => view.txt(qname, zone).map(Answer::of),
            RType::CNAME => view.services(qname, zone, None, false).map(|items| {
                let rec = items.first().and_then(|i| match &i.host {
                    Host::Name(t) => {
                        Some(Record::new(qname.clone(), i.ttl, RData::Cname(t.clone())))
                    }
                    _ => None,
                });
                Answer::of(rec.into_iter().collect())
            }),
            RType::PTR => view.ptr(qname, zone).map(Answer::of),
            RType::MX => view
                .services(qname, zone, None, false)
                .map(|_| Answer::of(Vec::new())),
            RType::SRV => view.srv(qname, zone).map(|(a, e)| Answer {
                answer: a,
                extra: e,
                tc: false,
                external: false,
            }),
            RType::SOA => Ok(Answer::of(if at_apex {
                vec![view.soa(zone)]
            } else {
                Vec::new()
            })),
            RType::AXFR | RType::IXFR => return None,
            RType::NS if at_apex => {
                let (a, e) = view.ns(qname, zone);
                Ok(Answer {
                    answer: a,
                    extra: e,
                    tc: false,
                    external: false,
                })
            }
            // A "fake A lookup" tells NODATA from NXDOMAIN for every other type.
            _ => view
                .services(qname, zone, Some(false), false)
                .map(|_| Answer::of(Vec::new())),
        })
    }

    fn negative(&self, req: &Request, view: &View<'_>, zone: &Name, rcode: Rcode) -> Message {
        let mut m = req.reply();
        m.header.aa = true;
        m.set_rcode(rcode);
        m.authority.push(view.soa(zone));
        m
    }
}

/// The memo key of a request, if its reply may be memoised: a first-level query (re-entered
/// lookups want a message, not bytes) with one question.
fn memo_key(req: &Request) -> Option<memo::Key<'_>> {
    if req.depth > 0 {
        return None;
    }
    let q = req.msg.question()?;
    memo::Key::new(
        q.name.wire(),
        q.qtype.0,
        q.qclass.0,
        req.msg.header.rd,
        req.msg.header.cd,
    )
}

impl Kubernetes {
    /// The reply to `req` when it needs neither the general path nor waiting: remembered, or
    /// else (first time asked) the addresses of a service or endpoint, or the name error of a
    /// search-path name, straight into bytes (and remembered). None: the general path answers.
    /// The index, snapshot and addresses are read through guards here: no reference count
    /// moves.
    fn remembered(&self, req: &Request) -> Option<Outcome> {
        let k = memo_key(req)?;
        let running = self.index.load();
        let (guard, synced) = match running.as_ref() {
            Some(i) => (Some(i.snapshot()), i.synced()),
            None => (None, false),
        };
        let snap = guard.as_deref().unwrap_or(&self.empty);
        let local = self.local_ips.load();
        let fast = || {
            self.fast
                .then(|| fast::answer(&self.cfg, snap, synced, &req.msg))
                .flatten()
        };
        let (bytes, ulen) = memo::get_or_fill(self.memo_id, snap, &local, synced, &k, fast)?;
        Some(Outcome::wire_sized("kubernetes", bytes, Some(ulen)))
    }
}

impl Handler for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if let Some(out) = self.remembered(req) {
                return out;
            }
            let key = memo_key(req);
            let (snap, synced) = self.snapshot();
            let local = self.local_ips.load_full();
            let qname = req.qname();
            let qtype = req.qtype();
            let view = View {
                cfg: &self.cfg,
                snap: &snap,
                local_ips: &local,
            };
            let Some(zone) = view.match_zone(&qname) else {
                return next.run(req).await;
            };
            let res = {
                let r: &Request = req;
                self.answer(r, &view, &zone, &qname, qtype).await
            };
            let Some(res) = res else {
                return Outcome::rcode("kubernetes", Rcode::REFUSED);
            };
            // `external`: part of the reply came from outside the index.
            let (m, external) = match res {
                Err(NameError) => {
                    if self.cfg.fall.through(&qname) {
                        return next.run(req).await;
                    }
                    let rcode = if synced {
                        Rcode::NXDOMAIN
                    } else {
                        Rcode::SERVFAIL
                    };
                    (self.negative(req, &view, &zone, rcode), false)
                }
                Ok(a) if a.answer.is_empty() => {
                    (self.negative(req, &view, &zone, Rcode::NOERROR), a.external)
                }
                Ok(a) => {
                    let mut m = req.reply();
                    m.header.aa = true;
                    m.header.tc = a.tc;
                    m.answers = a.answer;
                    m.additional = a.extra;
                    (m, a.external)
                }
            };
            match key {
                // Built from the snapshot alone: remember it as bytes for the next identical
                // question.
                Some(k) if !external => {
                    let bytes = m.to_wire();
                    let ulen = m.uncompressed_len();
                    memo::put(self.memo_id, &snap, &local, synced, &k, &bytes, ulen);
                    Outcome::wire_sized("kubernetes", bytes, Some(ulen))
                }
                _ => Outcome::reply("kubernetes", m),
            }
        })
    }

    /// The remembered or fast-path reply, which needs no waiting (and the general path's
    /// first step in `serve`, so both give the same).
    fn serve_now(&self, req: &mut Request, _next: Next<'_>) -> Option<Outcome> {
        self.remembered(req)
    }

    fn now(&self) -> crate::plugin::Now {
        crate::plugin::Now::Answers
    }

    fn transferer(&self) -> Option<&dyn Transferer> {
        Some(self)
    }

    fn search_path(&self) -> Option<Arc<dyn crate::plugins::autopath::SearchPath>> {
        Some(self.search.clone())
    }

    fn externaler(&self) -> Option<Arc<dyn crate::plugins::k8s_external::Externaler>> {
        Some(self.external.clone())
    }

    fn metadata_provider(&self) -> Option<&dyn MetadataProvider> {
        Some(self)
    }
}

/// CoreDNS's `kubernetes` metadata: the client pod (found by source address when pods are
/// watched) and the parts of a question in the plugin's zones.
impl MetadataProvider for Kubernetes {
    fn metadata(&self, req: &Request, md: &mut Metadata) {
        let (snap, _) = self.snapshot();
        let ip = match req.client.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if let Some(pod) = snap.pod_by_ip(ip) {
            md.set("kubernetes/client-namespace", pod.namespace.to_string());
            md.set("kubernetes/client-pod-name", pod.name.to_string());
            for (k, v) in pod.labels.iter() {
                md.set(&format!("kubernetes/client-label/{k}"), v.to_string());
            }
        }
        let qname = req.qname();
        let Some(zone) = self
            .cfg
            .zones
            .iter()
            .filter(|z| qname.is_subdomain_of(z))
            .max_by_key(|z| z.label_count())
        else {
            return;
        };
        // CoreDNS decides "multicluster" here from the request's zone, which its metadata
        // collector leaves empty: names are always parsed as in a plain zone, and
        // `kubernetes/cluster` is never set.
        let r = match lookup::parse_request(&qname, zone, false, self.cfg.zonal) {
            Ok(r) => r,
            Err(NameError) => {
                md.set("kubernetes/parse-error", "invalid query name".to_string());
                return;
            }
        };
        md.set("kubernetes/port-name", r.port);
        md.set("kubernetes/protocol", r.protocol);
        md.set("kubernetes/endpoint", r.endpoint);
        if self.cfg.zonal {
            md.set("kubernetes/zone", r.zone);
        }
        md.set("kubernetes/service", r.service);
        md.set("kubernetes/namespace", r.namespace);
        md.set("kubernetes/kind", r.pod_or_svc);
    }
}

impl Transferer for Kubernetes {
    fn transfer(&self, zone: &Name, serial: u32) -> Option<Vec<Record>> {
        let (snap, _) = self.snapshot();
        let local = self.local_ips.load_full();
        let view = View {
            cfg: &self.cfg,
            snap: &snap,
            local_ips: &local,
        };
        xfr::records(&view, &zone.to_lowercase(), serial)
    }
}

#[cfg(test)]
mod tests;
