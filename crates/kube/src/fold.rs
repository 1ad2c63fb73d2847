//! Folding Kubernetes objects into the compact index: conversion from API types to the
//! DNS-visible model, in-place upserts/deletes on persistent maps, re-list bookkeeping (upsert
//! in place, delete the unseen at the end) and change notices. No I/O, no async.

use std::collections::{HashMap as StdMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::decode::{ImportIn, Meta, Obj, PodIn, ServiceIn, SliceIn};
use crate::model::{
    text_at, Change, Endpoint, Labels, Namespace, Pod, Port, Proto, Service, ServiceImport,
    ServiceKind, Slice, NO_ATOM, NO_TEXT,
};
use crate::snapshot::{Named, SliceList, Snapshot};

/// The watched resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Res {
    /// v1 Service
    Service,
    /// discovery.k8s.io/v1 EndpointSlice
    EndpointSlice,
    /// v1 Pod
    Pod,
    /// v1 Namespace
    Namespace,
    /// multicluster.x-k8s.io/v1alpha1 ServiceImport (`multicluster` only)
    ServiceImport,
    /// discovery.k8s.io/v1 EndpointSlices labelled `multicluster.kubernetes.io/service-name`
    /// (`multicluster` only): a second watch with its own label selector, as CoreDNS runs.
    McSlice,
}

impl Res {
    pub(crate) const ALL: [Res; 6] = [
        Res::Service,
        Res::EndpointSlice,
        Res::Pod,
        Res::Namespace,
        Res::ServiceImport,
        Res::McSlice,
    ];

    /// Resource name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Res::Service => "services",
            Res::EndpointSlice => "endpointslices",
            Res::Pod => "pods",
            Res::Namespace => "namespaces",
            Res::ServiceImport => "serviceimports",
            Res::McSlice => "multicluster endpointslices",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Res::Service => 1,
            Res::EndpointSlice => 2,
            Res::Pod => 4,
            Res::Namespace => 8,
            Res::ServiceImport => 16,
            Res::McSlice => 32,
        }
    }
}

/// (namespace, name) of an object; namespace "" for cluster-scoped ones.
type Key = (Arc<str>, Arc<str>);

/// Slices by namespace, then by service (the cluster's and the multicluster ones alike).
type SlicesByService = imbl::OrdMap<Arc<str>, imbl::OrdMap<Arc<str>, SliceList>>;

/// Files slice `new` under namespace `ns` and service `svc`, making both levels as needed.
fn add_slice(map: &mut SlicesByService, ns: &Arc<str>, svc: &Arc<str>, new: Arc<Slice>) {
    if !map.contains_key(ns) {
        map.insert(ns.clone(), imbl::OrdMap::new());
    }
    let Some(by_svc) = map.get_mut(ns) else {
        return;
    };
    match by_svc.get_mut(svc) {
        Some(m) => m.insert(new),
        None => {
            let mut m = SliceList::default();
            m.insert(new);
            by_svc.insert(svc.clone(), m);
        }
    }
}

/// The stored slices by (namespace, slice name), for deletes by name and the end of a
/// re-list. A set of the slices themselves, found by the names they hold: one pointer a slot
/// (a map of name pairs to service names took 48).
#[derive(Default)]
struct SliceSet(HashSet<ByName>);

/// A slice hashed and compared by (namespace, name).
struct ByName(Arc<Slice>);

/// What a slice is looked up by in a [`SliceSet`]: its (namespace, name).
trait NsName {
    fn ns_name(&self) -> (&str, &str);
}

impl NsName for ByName {
    fn ns_name(&self) -> (&str, &str) {
        (&self.0.namespace, &self.0.name)
    }
}

impl NsName for (&str, &str) {
    fn ns_name(&self) -> (&str, &str) {
        *self
    }
}

impl std::hash::Hash for dyn NsName + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.ns_name().hash(h);
    }
}

impl PartialEq for dyn NsName + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.ns_name() == other.ns_name()
    }
}

impl Eq for dyn NsName + '_ {}

impl std::hash::Hash for ByName {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self as &dyn NsName).hash(h);
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.ns_name() == other.ns_name()
    }
}

impl Eq for ByName {}

impl<'a> std::borrow::Borrow<dyn NsName + 'a> for ByName {
    fn borrow(&self) -> &(dyn NsName + 'a) {
        self
    }
}

impl SliceSet {
    fn get(&self, ns: &str, name: &str) -> Option<&Arc<Slice>> {
        self.0.get(&(ns, name) as &dyn NsName).map(|b| &b.0)
    }

    /// Adds `s`, replacing the slice of the same namespace and name.
    fn put(&mut self, s: Arc<Slice>) {
        self.0.replace(ByName(s));
    }

    fn take(&mut self, ns: &str, name: &str) -> Option<Arc<Slice>> {
        self.0.take(&(ns, name) as &dyn NsName).map(|b| b.0)
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Slice>> {
        self.0.iter().map(|b| &b.0)
    }
}

/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label of an MCS EndpointSlice naming its ServiceImport.
pub const MC_SERVICE_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
/// Label of an MCS EndpointSlice naming the cluster its endpoints live in.
pub const MC_SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";
/// Annotation used for the DNS programming latency metric.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Above this many listed items a change notice becomes `all`.
const MAX_CHANGE_ITEMS: usize = 4096;

/// String interner; entries only the interner still holds are dropped by `gc`.
#[derive(Default)]
struct Interner {
    strs: HashSet<Arc<str>>,
    labels: HashSet<Labels>,
    added: usize,
}

impl Interner {
    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strs.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strs.insert(a.clone());
        self.added += 1;
        a
    }

    fn labels(&mut self, l: Vec<(Arc<str>, Arc<str>)>) -> Labels {
        if let Some(a) = self.labels.get(l.as_slice()) {
            return a.clone();
        }
        let a: Labels = Arc::from(l);
        self.labels.insert(a.clone());
        self.added += 1;
        a
    }

    fn maybe_gc(&mut self) {
        if self.added > 1024 && self.added > self.strs.len() / 2 {
            self.gc();
        }
    }

    fn gc(&mut self) {
        self.labels.retain(|l| Arc::strong_count(l) > 1);
        self.strs.retain(|s| Arc::strong_count(s) > 1);
        self.strs.shrink_to_fit();
        self.labels.shrink_to_fit();
        self.added = 0;
    }
}

fn now_unix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

fn parse_ips<'a>(it: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = it
        .into_iter()
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    out.dedup();
    out.shrink_to_fit();
    out
}

fn sentinel_port(i: &mut Interner) -> Port {
    Port {
        name: i.str(""),
        port: -1,
        protocol: Proto::Tcp,
    }
}

/// Programming-latency observations (service kind, seconds) collected while folding.
pub(crate) type Observations = Vec<(&'static str, f64)>;

/// The single writer of the index. Owns the master snapshot; callers publish clones of it.
pub(crate) struct Writer {
    pub snap: Snapshot,
    strs: Interner,
    /// Seen keys per resource while a (re-)list is in progress.
    relist: StdMap<Res, HashSet<Key>>,
    /// The stored slices by (namespace, slice name); each names its service.
    slice_loc: SliceSet,
    /// The same for MCS slices (each names its ServiceImport).
    mc_slice_loc: SliceSet,
    pub change: Change,
    pub dirty: bool,
    zonal: bool,
    synced: u8,
    pub observations: Observations,
}

impl Writer {
    pub(crate) fn new(zonal: bool) -> Self {
        Writer {
            snap: Snapshot::default(),
            strs: Interner::default(),
            relist: StdMap::new(),
            slice_loc: SliceSet::default(),
            mc_slice_loc: SliceSet::default(),
            change: Change::default(),
            dirty: false,
            zonal,
            synced: 0,
            observations: Vec::new(),
        }
    }

    /// Whether every resource in `needed` has completed its first list.
    pub(crate) fn synced(&self, needed: &[Res]) -> bool {
        needed.iter().all(|r| self.synced & r.bit() != 0)
    }

    pub(crate) fn in_relist(&self, r: Res) -> bool {
        self.relist.contains_key(&r)
    }

    fn touch(&mut self) {
        self.dirty = true;
        self.snap.serial = now_unix();
    }

    /// A multicluster change: moves the multicluster zones' serial only (CoreDNS keeps a
    /// separate modification time for them).
    fn touch_mc(&mut self) {
        self.dirty = true;
        self.snap.mc_serial = now_unix();
    }

    fn note_service(&mut self, ns: &Arc<str>, name: &Arc<str>) {
        if self.change.all {
            return;
        }
        if self.change.services.len() >= MAX_CHANGE_ITEMS {
            self.change_all();
            return;
        }
        self.change.services.push((ns.clone(), name.clone()));
    }

    fn note_ips(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        if self.change.all {
            return;
        }
        self.change.ips.extend(ips);
        if self.change.ips.len() >= MAX_CHANGE_ITEMS {
            self.change_all();
        }
    }

    fn change_all(&mut self) {
        self.change = Change {
            all: true,
            pods: true,
            ..Change::default()
        };
    }

    /// Takes the accumulated change notice.
    pub(crate) fn take_change(&mut self) -> Change {
        std::mem::take(&mut self.change)
    }

    fn mark_seen(&mut self, r: Res, ns: &Arc<str>, name: &Arc<str>) {
        if let Some(seen) = self.relist.get_mut(&r) {
            seen.insert((ns.clone(), name.clone()));
        }
    }

    /// A (re-)list of `r` starts: objects are upserted in place and the unseen are deleted at
    /// `end_relist`, so no second copy of the data is built.
    pub(crate) fn begin_relist(&mut self, r: Res) {
        self.relist.insert(r, HashSet::new());
    }

    /// The (re-)list of `r` finished: delete everything it did not mention.
    pub(crate) fn end_relist(&mut self, r: Res) {
        let Some(seen) = self.relist.remove(&r) else {
            return;
        };
        let mut stale: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        match r {
            Res::Service => {
                for (ns, m) in self.snap.services.iter() {
                    stale.extend(
                        m.keys()
                            .filter(|n| !seen.contains(&(ns.clone(), (*n).clone())))
                            .map(|n| (ns.clone(), n.clone())),
                    );
                }
            }
            Res::EndpointSlice => stale.extend(
                self.slice_loc
                    .iter()
                    .map(|s| (s.namespace.clone(), s.name.clone()))
                    .filter(|k| !seen.contains(k)),
            ),
            Res::Pod => {
                for (ns, m) in self.snap.pods.iter() {
                    stale.extend(
                        m.keys()
                            .filter(|n| !seen.contains(&(ns.clone(), (*n).clone())))
                            .map(|n| (ns.clone(), n.clone())),
                    );
                }
            }
            Res::Namespace => stale.extend(
                self.snap
                    .namespaces
                    .keys()
                    .filter(|n| !seen.contains(&(Arc::from(""), (*n).clone())))
                    .map(|n| (Arc::from(""), n.clone())),
            ),
            Res::ServiceImport => {
                for (ns, m) in self.snap.imports.iter() {
                    stale.extend(
                        m.keys()
                            .filter(|n| !seen.contains(&(ns.clone(), (*n).clone())))
                            .map(|n| (ns.clone(), n.clone())),
                    );
                }
            }
            Res::McSlice => stale.extend(
                self.mc_slice_loc
                    .iter()
                    .map(|s| (s.namespace.clone(), s.name.clone()))
                    .filter(|k| !seen.contains(k)),
            ),
        }
        drop(seen);
        for (ns, name) in stale {
            self.delete(r, &ns, &name);
        }
        self.synced |= r.bit();
        self.strs.gc();
    }

    /// Deletes one object by key (namespace "" for Namespaces).
    pub(crate) fn delete(&mut self, r: Res, ns: &str, name: &str) {
        match r {
            Res::Service => self.remove_service(ns, name),
            Res::EndpointSlice => self.remove_slice(ns, name),
            Res::Pod => self.remove_pod(ns, name),
            Res::ServiceImport => self.remove_import(ns, name),
            Res::McSlice => self.remove_mc_slice(ns, name),
            Res::Namespace => {
                if let Some(old) = self.snap.namespaces.remove(name) {
                    self.snap.namespaces_by_name.update(name, "", |_| None);
                    self.snap.counts.namespaces -= 1;
                    if !self.change.all {
                        self.change.namespaces.push(old.name);
                    }
                    self.touch();
                }
            }
        }
    }

    // ---------------- namespaces ----------------

    pub(crate) fn upsert_namespace(&mut self, name: &str) {
        let name = self.strs.str(name);
        let empty = self.strs.str("");
        self.mark_seen(Res::Namespace, &empty, &name);
        if self.snap.namespaces.contains_key(&name) {
            return;
        }
        self.snap
            .namespaces
            .insert(name.clone(), Namespace { name: name.clone() });
        self.snap
            .namespaces_by_name
            .update(&name, "", |_| Some(Namespace { name: name.clone() }));
        self.snap.counts.namespaces += 1;
        if !self.change.all {
            self.change.namespaces.push(name);
        }
        self.touch();
    }

    // ---------------- services ----------------

    fn convert_service(&mut self, ns: Arc<str>, name: Arc<str>, s: &ServiceIn<'_>) -> Service {
        let spec = s.spec.as_ref();
        let ty = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
        let kind = if ty == "ExternalName" {
            let target = spec.and_then(|s| s.external_name.as_deref()).unwrap_or("");
            ServiceKind::ExternalName(self.strs.str(target))
        } else {
            let cip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
            if cip == "None" {
                ServiceKind::Headless
            } else {
                let ips = match spec.and_then(|s| s.cluster_ips.as_ref()) {
                    Some(list) if !list.is_empty() => parse_ips(list.iter().map(|s| &**s)),
                    _ => parse_ips([cip]),
                };
                ServiceKind::ClusterIp(ips.into())
            }
        };
        let mut ports: Vec<Port> = spec
            .and_then(|s| s.ports.as_ref())
            .map(|ps| {
                ps.iter()
                    .map(|p| Port {
                        name: self.strs.str(p.name.as_deref().unwrap_or("")),
                        port: p.port.unwrap_or(0),
                        protocol: Proto::parse(p.protocol.as_deref()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if ports.is_empty() {
            ports.push(sentinel_port(&mut self.strs));
        }
        let mut ext: Vec<&str> = spec
            .and_then(|s| s.external_ips.as_ref())
            .map(|v| v.iter().map(|s| &**s).collect())
            .unwrap_or_default();
        let mut hosts: Vec<Arc<str>> = Vec::new();
        if let Some(ing) = s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
        {
            // An ingress entry is its IP if it has one, else its hostname (CoreDNS ToService).
            for i in ing {
                match (
                    i.ip.as_deref().filter(|ip| !ip.is_empty()),
                    i.hostname.as_deref(),
                ) {
                    (Some(ip), _) => ext.push(ip),
                    (None, Some(h)) if !h.is_empty() => hosts.push(self.strs.str(h)),
                    _ => {}
                }
            }
        }
        Service {
            namespace: ns,
            name,
            kind,
            ports: ports.into_boxed_slice(),
            external_ips: parse_ips(ext).into_boxed_slice(),
            external_hosts: hosts.into(),
        }
    }

    pub(crate) fn upsert_service(&mut self, s: &ServiceIn<'_>) {
        let Some((ns, name)) = self.key_of(&s.metadata) else {
            return;
        };
        self.mark_seen(Res::Service, &ns, &name);
        let new = self.convert_service(ns.clone(), name.clone(), s);
        let old = self
            .snap
            .services
            .get(&ns)
            .and_then(|m| m.get(&name))
            .cloned();
        if old.as_deref() == Some(&new) {
            return;
        }
        if let Some(old) = &old {
            // CoreDNS moves the external zone's serial only when an update changes the
            // external addresses of a service.
            if old.external_ips != new.external_ips || old.external_hosts != new.external_hosts {
                self.snap.ext_serial = now_unix();
            }
            self.unindex_service(old);
        } else {
            self.snap.counts.services += 1;
        }
        let new = Arc::new(new);
        for ip in new.cluster_ips() {
            self.snap.services_by_ip.insert(*ip, new.clone());
        }
        for ip in &new.external_ips {
            self.snap.services_by_ext_ip.insert(*ip, new.clone());
        }
        self.note_ips(new.cluster_ips().iter().copied());
        self.snap.by_name.update(&ns, &name, |cur| {
            Some(Named {
                service: Some(new.clone()),
                slices: cur.map(|c| c.slices.clone()).unwrap_or_default(),
            })
        });
        match self.snap.services.get_mut(&ns) {
            Some(m) => {
                m.insert(name.clone(), new);
            }
            None => {
                self.snap
                    .services
                    .insert(ns.clone(), imbl::OrdMap::unit(name.clone(), new));
            }
        }
        self.note_service(&ns, &name);
        self.touch();
    }

    fn unindex_service(&mut self, old: &Service) {
        for ip in old.cluster_ips() {
            self.snap
                .services_by_ip
                .remove(*ip, |s| s.name == old.name && s.namespace == old.namespace);
        }
        for ip in &old.external_ips {
            self.snap
                .services_by_ext_ip
                .remove(*ip, |s| s.name == old.name && s.namespace == old.namespace);
        }
        self.note_ips(old.cluster_ips().iter().copied());
    }

    fn remove_service(&mut self, ns: &str, name: &str) {
        let Some(m) = self.snap.services.get_mut(ns) else {
            return;
        };
        let Some(old) = m.remove(name) else {
            return;
        };
        if m.is_empty() {
            self.snap.services.remove(ns);
        }
        self.snap.by_name.update(ns, name, |cur| {
            cur.filter(|c| !c.slices.is_empty()).map(|c| Named {
                service: None,
                slices: c.slices.clone(),
            })
        });
        self.snap.counts.services -= 1;
        self.unindex_service(&old);
        self.note_service(&old.namespace, &old.name);
        self.touch();
    }

    // ---------------- endpoint slices ----------------

    fn convert_slice(
        &mut self,
        ns: Arc<str>,
        name: Arc<str>,
        service: Arc<str>,
        s: &SliceIn<'_>,
    ) -> Slice {
        let mut ports: Vec<Port> = s
            .ports
            .as_ref()
            .map(|ps| {
                ps.iter()
                    .map(|p| Port {
                        name: self.strs.str(p.name.as_deref().unwrap_or("")),
                        port: p.port.unwrap_or(-1),
                        protocol: Proto::parse(p.protocol.as_deref()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if ports.is_empty() {
            ports.push(sentinel_port(&mut self.strs));
        }
        let mut eps: Vec<Endpoint> = Vec::new();
        let mut v6: Vec<std::net::Ipv6Addr> = Vec::new();
        let mut text = String::new();
        let mut atoms: Vec<Arc<str>> = Vec::new();
        for e in s.endpoints.iter().flatten() {
            // Ready true or unset (null) counts as ready.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            let hostname = e.hostname.as_deref().filter(|h| !h.is_empty());
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                .and_then(|r| r.name.as_deref())
                .filter(|n| !n.is_empty() && n.len() < 64);
            let node = e.node_name.as_deref().filter(|n| !n.is_empty());
            let zone = if self.zonal {
                e.zone
                    .as_deref()
                    .filter(|z| !z.is_empty())
                    .map(str::to_ascii_lowercase)
            } else {
                None
            };
            let ips = parse_ips(e.addresses.iter().flatten().map(|s| &**s));
            if ips.is_empty() {
                continue;
            }
            let Ok(start) = u32::try_from(text.len()) else {
                continue;
            };
            let host_len = push_text(&mut text, hostname);
            let pod_len = push_text(&mut text, pod);
            let node_i = node.map_or(NO_ATOM, |n| atom(&mut atoms, &mut self.strs, n));
            let zone_i = zone
                .as_deref()
                .map_or(NO_ATOM, |z| atom(&mut atoms, &mut self.strs, z));
            for ip in ips {
                let dup = eps.iter().any(|x| {
                    let xip = match (x.v6, usize::try_from(x.addr)) {
                        (true, Ok(i)) => v6.get(i).map(|a| IpAddr::V6(*a)),
                        (true, Err(_)) => None,
                        (false, _) => Some(IpAddr::V4(x.addr.into())),
                    };
                    xip == Some(ip)
                        && text_at(&text, x.text, x.host_len) == text_at(&text, start, host_len)
                });
                if dup {
                    continue;
                }
                let (addr, is_v6) = match ip {
                    IpAddr::V4(a) => (u32::from(a), false),
                    IpAddr::V6(a) => {
                        let Ok(i) = u32::try_from(v6.len()) else {
                            continue;
                        };
                        v6.push(a);
                        (i, true)
                    }
                };
                eps.push(Endpoint {
                    addr,
                    v6: is_v6,
                    text: start,
                    host_len,
                    pod_len,
                    node_name: node_i,
                    zone: zone_i,
                });
            }
        }
        Slice {
            namespace: ns,
            name,
            service,
            ports: ports.into_boxed_slice(),
            endpoints: eps.into_boxed_slice(),
            v6: v6.into_boxed_slice(),
            text: text.into_boxed_str(),
            atoms: atoms.into_boxed_slice(),
        }
    }

    pub(crate) fn upsert_slice(&mut self, s: &SliceIn<'_>) {
        let Some((ns, name)) = self.key_of_unique(Res::EndpointSlice, &s.metadata) else {
            return;
        };
        self.mark_seen(Res::EndpointSlice, &ns, &name);
        let svc = s
            .metadata
            .label(SERVICE_NAME_LABEL)
            .filter(|v| !v.is_empty());
        let Some(svc) = svc else {
            // Not tied to a service: nothing DNS-visible.
            self.remove_slice(&ns, &name);
            return;
        };
        let svc = self.strs.str(svc);
        let new = self.convert_slice(ns.clone(), name.clone(), svc.clone(), s);
        match self.slice_loc.get(&ns, &name) {
            Some(old) if **old == new => return,
            Some(_) => self.remove_slice(&ns, &name),
            None => {}
        }
        if !self.in_relist(Res::EndpointSlice) {
            self.observe_programming(s, &ns, &svc);
        }
        let new = Arc::new(new);
        for e in new.endpoints.iter() {
            self.snap.endpoints_by_ip.insert(new.ip(e), new.clone());
        }
        self.snap.counts.endpoints += new.endpoints.len();
        self.note_ips(new.endpoints.iter().map(|e| new.ip(e)));
        self.slice_loc.put(new.clone());
        add_slice(&mut self.snap.slices, &ns, &svc, new);
        self.file_slices(&ns, &svc);
        self.note_service(&ns, &svc);
        self.touch();
    }

    /// Files the slices of service `svc` in `ns` (as `snap.slices` now holds them) in
    /// `snap.by_name`, beside the service of that name.
    fn file_slices(&mut self, ns: &str, svc: &str) {
        let slices = self
            .snap
            .slices
            .get(ns)
            .and_then(|m| m.get(svc))
            .cloned()
            .unwrap_or_default();
        self.snap.by_name.update(ns, svc, |cur| {
            let service = cur.and_then(|c| c.service.clone());
            (service.is_some() || !slices.is_empty()).then_some(Named { service, slices })
        });
    }

    fn observe_programming(&mut self, s: &SliceIn<'_>, ns: &str, svc: &str) {
        let Some(t) = s.metadata.trigger() else {
            return;
        };
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(t) else {
            return;
        };
        let kind = match self.snap.services.get(ns).and_then(|m| m.get(svc)) {
            Some(s) if s.is_headless() => "headless_with_selector",
            Some(s) if !s.cluster_ips().is_empty() => "cluster_ip",
            _ => return,
        };
        let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        self.observations.push((kind, secs));
    }

    fn remove_slice(&mut self, ns: &str, name: &str) {
        let Some(svc) = self.slice_loc.take(ns, name).map(|s| s.service.clone()) else {
            return;
        };
        let Some(by_svc) = self.snap.slices.get_mut(ns) else {
            return;
        };
        let Some(m) = by_svc.get_mut(&svc) else {
            return;
        };
        let Some(old) = m.remove(name) else {
            return;
        };
        if m.is_empty() {
            by_svc.remove(&svc);
            if by_svc.is_empty() {
                self.snap.slices.remove(ns);
            }
        }
        self.file_slices(ns, &svc);
        for e in old.endpoints.iter() {
            self.snap.endpoints_by_ip.remove(old.ip(e), |s| {
                s.name == old.name && s.namespace == old.namespace
            });
        }
        self.snap.counts.endpoints -= old.endpoints.len();
        self.note_ips(old.endpoints.iter().map(|e| old.ip(e)));
        self.note_service(&old.namespace, &old.service);
        self.touch();
    }

    // ---------------- multicluster (MCS API) ----------------

    pub(crate) fn upsert_import(&mut self, s: &ImportIn<'_>) {
        let Some((ns, name)) = self.key_of(&s.metadata) else {
            return;
        };
        self.mark_seen(Res::ServiceImport, &ns, &name);
        let spec = s.spec.as_ref();
        let headless = spec.and_then(|s| s.type_.as_deref()) == Some("Headless");
        let ips = parse_ips(
            spec.and_then(|s| s.ips.as_ref())
                .into_iter()
                .flatten()
                .map(|s| &**s),
        );
        let mut ports: Vec<Port> = spec
            .and_then(|s| s.ports.as_ref())
            .map(|ps| {
                ps.iter()
                    .map(|p| Port {
                        name: self.strs.str(p.name.as_deref().unwrap_or("")),
                        port: p.port.unwrap_or(0),
                        protocol: Proto::parse(p.protocol.as_deref()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ports.shrink_to_fit();
        let new = ServiceImport {
            namespace: ns.clone(),
            name: name.clone(),
            headless,
            ips,
            ports,
        };
        let old = self.snap.imports.get(&ns).and_then(|m| m.get(&name));
        if old.is_some_and(|o| **o == new) {
            return;
        }
        if old.is_none() {
            self.snap.counts.service_imports += 1;
        }
        let new = Arc::new(new);
        match self.snap.imports.get_mut(&ns) {
            Some(m) => {
                m.insert(name.clone(), new);
            }
            None => {
                self.snap
                    .imports
                    .insert(ns.clone(), imbl::OrdMap::unit(name.clone(), new));
            }
        }
        self.note_service(&ns, &name);
        self.touch_mc();
    }

    fn remove_import(&mut self, ns: &str, name: &str) {
        let Some(m) = self.snap.imports.get_mut(ns) else {
            return;
        };
        let Some(old) = m.remove(name) else {
            return;
        };
        if m.is_empty() {
            self.snap.imports.remove(ns);
        }
        self.snap.counts.service_imports -= 1;
        self.note_service(&old.namespace, &old.name);
        self.touch_mc();
    }

    /// An EndpointSlice of the MCS API (label `multicluster.kubernetes.io/service-name`); a
    /// slice without that label is not one (and is dropped if it was).
    pub(crate) fn upsert_mc_slice(&mut self, s: &SliceIn<'_>) {
        let Some((ns, name)) = self.key_of_unique(Res::McSlice, &s.metadata) else {
            return;
        };
        let Some(svc) = s.metadata.label(MC_SERVICE_NAME_LABEL) else {
            self.remove_mc_slice(&ns, &name);
            return;
        };
        self.mark_seen(Res::McSlice, &ns, &name);
        let cluster = s.metadata.label(MC_SOURCE_CLUSTER_LABEL).unwrap_or("");
        let svc = self.strs.str(svc);
        let mut new = self.convert_slice(ns.clone(), name.clone(), svc.clone(), s);
        let mut atoms = new.atoms.to_vec();
        atoms.push(self.strs.str(cluster));
        new.atoms = atoms.into_boxed_slice();
        if self
            .mc_slice_loc
            .get(&ns, &name)
            .is_some_and(|old| **old == new)
        {
            return;
        }
        self.remove_mc_slice(&ns, &name);
        let new = Arc::new(new);
        self.snap.counts.mc_endpoints += new.endpoints.len();
        self.mc_slice_loc.put(new.clone());
        add_slice(&mut self.snap.mc_slices, &ns, &svc, new);
        self.note_service(&ns, &svc);
        self.touch_mc();
    }

    fn remove_mc_slice(&mut self, ns: &str, name: &str) {
        let Some(svc) = self.mc_slice_loc.take(ns, name).map(|s| s.service.clone()) else {
            return;
        };
        let Some(by_svc) = self.snap.mc_slices.get_mut(ns) else {
            return;
        };
        let Some(m) = by_svc.get_mut(&svc) else {
            return;
        };
        let Some(old) = m.remove(name) else {
            return;
        };
        if m.is_empty() {
            by_svc.remove(&svc);
            if by_svc.is_empty() {
                self.snap.mc_slices.remove(ns);
            }
        }
        self.snap.counts.mc_endpoints -= old.endpoints.len();
        self.note_service(&old.namespace, &old.service);
        self.touch_mc();
    }

    // ---------------- pods ----------------

    pub(crate) fn upsert_pod(&mut self, p: &PodIn<'_>) {
        let Some((ns, name)) = self.key_of_unique(Res::Pod, &p.metadata) else {
            return;
        };
        if p.metadata.deletion_timestamp.is_some() {
            // Terminating pods are dropped (and count as not seen in a re-list).
            self.remove_pod(&ns, &name);
            return;
        }
        self.mark_seen(Res::Pod, &ns, &name);
        let status = p.status.as_ref();
        let ips = match status.and_then(|s| s.pod_ips.as_ref()) {
            Some(list) if !list.is_empty() => {
                parse_ips(list.iter().map(|i| i.ip.as_deref().unwrap_or("")))
            }
            _ => parse_ips(status.and_then(|s| s.pod_ip.as_deref())),
        };
        let mut labels: Vec<(Arc<str>, Arc<str>)> = p
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (self.strs.str(k), self.strs.str(v)))
            .collect();
        labels.sort();
        let new = Pod {
            namespace: ns.clone(),
            name: name.clone(),
            ips: ips.into(),
            labels: self.strs.labels(labels),
        };
        let old = self.snap.pods.get(&ns).and_then(|m| m.get(&name)).cloned();
        if old.as_deref() == Some(&new) {
            return;
        }
        if old.is_some() {
            self.remove_pod(&ns, &name);
        }
        let new = Arc::new(new);
        for ip in &new.ips {
            self.snap.pods_by_ip.insert(*ip, new.clone());
        }
        match self.snap.pods.get_mut(&ns) {
            Some(m) => {
                m.insert(name.clone(), new);
            }
            None => {
                self.snap
                    .pods
                    .insert(ns.clone(), imbl::OrdMap::unit(name.clone(), new));
            }
        }
        self.snap.counts.pods += 1;
        self.change.pods = true;
        self.touch();
    }

    fn remove_pod(&mut self, ns: &str, name: &str) {
        let Some(m) = self.snap.pods.get_mut(ns) else {
            return;
        };
        let Some(old) = m.remove(name) else {
            return;
        };
        if m.is_empty() {
            self.snap.pods.remove(ns);
        }
        for ip in &old.ips {
            self.snap
                .pods_by_ip
                .remove(*ip, |p| p.name == old.name && p.namespace == old.namespace);
        }
        self.snap.counts.pods -= 1;
        self.change.pods = true;
        self.touch();
    }

    /// Like `key_of` for objects whose names nothing else refers to (pods, EndpointSlices): the
    /// name is not interned, which would only add an interner entry per object.
    /// The key already stored for the object is reused, so a re-list allocates nothing for it.
    fn key_of_unique(&mut self, r: Res, m: &Meta<'_>) -> Option<(Arc<str>, Arc<str>)> {
        let name = m.name.as_deref().filter(|n| !n.is_empty())?;
        let ns = m.namespace.as_deref().unwrap_or("");
        self.strs.maybe_gc();
        let ns = self.strs.str(ns);
        let existing = match r {
            Res::Pod => self
                .snap
                .pods
                .get(&ns)
                .and_then(|m| m.get_key_value(name))
                .map(|(k, _)| k.clone()),
            Res::McSlice => self.mc_slice_loc.get(&ns, name).map(|s| s.name.clone()),
            _ => self.slice_loc.get(&ns, name).map(|s| s.name.clone()),
        };
        let name = existing.unwrap_or_else(|| Arc::from(name));
        Some((ns, name))
    }

    fn key_of(&mut self, m: &Meta<'_>) -> Option<(Arc<str>, Arc<str>)> {
        let name = m.name.as_deref().filter(|n| !n.is_empty())?;
        let ns = m.namespace.as_deref().unwrap_or("");
        self.strs.maybe_gc();
        Some((self.strs.str(ns), self.strs.str(name)))
    }

    /// Folds one decoded object. Returns the namespace a namespaced object lives in.
    pub(crate) fn upsert_obj<'a>(&mut self, o: &'a Obj<'_>) -> Option<&'a str> {
        let meta = match o {
            Obj::Service(s) => {
                self.upsert_service(s);
                &s.metadata
            }
            Obj::Slice(s) => {
                // A slice carrying both service-name labels is in both watches in CoreDNS.
                self.upsert_slice(s);
                self.upsert_mc_slice(s);
                &s.metadata
            }
            Obj::Import(i) => {
                self.upsert_import(i);
                &i.metadata
            }
            Obj::Pod(p) => {
                self.upsert_pod(p);
                &p.metadata
            }
            Obj::Namespace(n) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    self.upsert_namespace(name);
                }
                return None;
            }
        };
        meta.namespace.as_deref()
    }
}

/// Appends `s` to a slice's text and returns its length; `NO_TEXT` (nothing stored) for none
/// or for a name of 255 bytes or more (hostnames and pod names are DNS labels, at most 63).
fn push_text(text: &mut String, s: Option<&str>) -> u8 {
    match s.map(|s| (s, u8::try_from(s.len()))) {
        Some((s, Ok(len))) if len != NO_TEXT => {
            text.push_str(s);
            len
        }
        _ => NO_TEXT,
    }
}

/// Index of `s` in the slice's atom table (interned, added if new); `NO_ATOM` when full.
fn atom(atoms: &mut Vec<Arc<str>>, strs: &mut Interner, s: &str) -> u16 {
    if let Some(i) = atoms.iter().position(|a| &**a == s) {
        return u16::try_from(i).unwrap_or(NO_ATOM);
    }
    let Ok(i) = u16::try_from(atoms.len()) else {
        return NO_ATOM;
    };
    if i == NO_ATOM {
        return NO_ATOM;
    }
    atoms.push(strs.str(s));
    i
}
