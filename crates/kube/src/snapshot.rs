//! The immutable snapshot of DNS-visible cluster data that queries read. Built from persistent
//! (structurally shared) maps so that a new snapshot costs O(changed object), not O(cluster).
//! Read-only queries: no I/O, no locks, no allocation on lookups.

use std::net::IpAddr;
use std::sync::Arc;

use imbl::OrdMap;

use crate::byname::{HashIndex, Keyed};
use crate::model::{
    Counts, EndpointHit, EndpointRef, Namespace, Pod, Service, ServiceImport, Slice,
};

/// The bucket of an address: the address with its last byte zeroed, and that byte.
fn bucket(ip: IpAddr) -> (IpAddr, u8) {
    match ip {
        IpAddr::V4(a) => {
            let mut o = a.octets();
            let low = o[3];
            o[3] = 0;
            (IpAddr::from(o), low)
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            let low = o[15];
            o[15] = 0;
            (IpAddr::from(o), low)
        }
    }
}

/// Address -> objects (several per address allowed, kept in insertion order). Addresses are
/// grouped by all but their last byte: one map entry per group holds the last bytes, sorted,
/// and beside them the objects, 9 bytes per address instead of a map entry of its own (or of
/// 16 for a list of (byte, object) pairs, padded). Persistent: cloning is O(1) and an update
/// copies one group.
pub(crate) struct IpIndex<T> {
    map: OrdMap<IpAddr, Arc<Group<T>>>,
}

/// The objects of one address group: `low[i]` is the last byte of the address of `objs[i]`,
/// sorted by it.
struct Group<T> {
    low: Vec<u8>,
    objs: Vec<Arc<T>>,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            low: Vec::new(),
            objs: Vec::new(),
        }
    }
}

impl<T> Group<T> {
    /// The positions of the objects whose address ends in `low`.
    fn range(&self, low: u8) -> std::ops::Range<usize> {
        let start = self.low.partition_point(|b| *b < low);
        let end = start + self.low[start..].iter().take_while(|b| **b == low).count();
        start..end
    }
}

impl<T> Clone for IpIndex<T> {
    fn clone(&self) -> Self {
        IpIndex {
            map: self.map.clone(),
        }
    }
}

impl<T> Default for IpIndex<T> {
    fn default() -> Self {
        IpIndex { map: OrdMap::new() }
    }
}

impl<T> IpIndex<T> {
    /// Objects at `ip`, in insertion order.
    pub(crate) fn get(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<T>> {
        let (key, low) = bucket(ip);
        let objs: &[Arc<T>] = self.map.get(&key).map_or(&[], |g| &g.objs[g.range(low)]);
        objs.iter()
    }

    /// Adds `v` at `ip` (after those already there) unless this very object is there already.
    pub(crate) fn insert(&mut self, ip: IpAddr, v: Arc<T>) {
        let (key, low) = bucket(ip);
        let slot = self.map.entry(key).or_default();
        if Arc::get_mut(slot).is_none() {
            // Shared with a published snapshot: copy with room for exactly one more, so
            // updates after the first load do not leave doubled capacity behind.
            let n = slot.low.len() + 1;
            let mut g = Group {
                low: Vec::with_capacity(n),
                objs: Vec::with_capacity(n),
            };
            g.low.extend_from_slice(&slot.low);
            g.objs.extend(slot.objs.iter().cloned());
            *slot = Arc::new(g);
        }
        let Some(g) = Arc::get_mut(slot) else {
            return;
        };
        let r = g.range(low);
        if g.objs[r.clone()].iter().any(|x| Arc::ptr_eq(x, &v)) {
            return;
        }
        g.low.insert(r.end, low);
        g.objs.insert(r.end, v);
    }

    /// Removes the objects at `ip` that match `pred`.
    pub(crate) fn remove(&mut self, ip: IpAddr, pred: impl Fn(&T) -> bool) {
        let (key, low) = bucket(ip);
        let Some(cur) = self.map.get(&key) else {
            return;
        };
        let r = cur.range(low);
        let gone = |i: usize| r.contains(&i) && pred(&cur.objs[i]);
        if !r.clone().any(gone) {
            return;
        }
        let keep: Vec<usize> = (0..cur.low.len()).filter(|i| !gone(*i)).collect();
        if keep.is_empty() {
            self.map.remove(&key);
            return;
        }
        let g = Group {
            low: keep.iter().map(|i| cur.low[*i]).collect(),
            objs: keep.iter().map(|i| cur.objs[*i].clone()).collect(),
        };
        self.map.insert(key, Arc::new(g));
    }
}

/// Slices of one service, sorted by slice name (most services have one or two).
#[derive(Clone, Default)]
pub(crate) struct SliceList(Arc<[Arc<Slice>]>);

impl SliceList {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|s| (*s.name).cmp(name))
    }

    /// Adds or replaces (by name) a slice.
    pub(crate) fn insert(&mut self, s: Arc<Slice>) {
        let mut v = self.0.to_vec();
        match self.find(&s.name) {
            Ok(i) => v[i] = s,
            Err(i) => v.insert(i, s),
        }
        self.0 = v.into();
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Arc<Slice>> {
        let i = self.find(name).ok()?;
        let mut v = self.0.to_vec();
        let old = v.remove(i);
        self.0 = v.into();
        Some(old)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<Slice>> {
        self.0.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the query path finds under a (namespace, name): the service of that name (if any) and
/// the EndpointSlices that name it (if any), both in one lookup.
#[derive(Clone, Default)]
pub(crate) struct Named {
    pub(crate) service: Option<Arc<Service>>,
    pub(crate) slices: SliceList,
}

impl Keyed for Named {
    fn is(&self, ns: &str, name: &str) -> bool {
        match (&self.service, self.slices.values().next()) {
            (Some(s), _) => *s.name == *name && *s.namespace == *ns,
            (None, Some(sl)) => *sl.service == *name && *sl.namespace == *ns,
            (None, None) => false,
        }
    }
}

impl Keyed for Namespace {
    fn is(&self, ns: &str, _: &str) -> bool {
        *self.name == *ns
    }
}

/// A service and the endpoints of its name, found with one lookup ([`Snapshot::lookup`]).
pub struct ServiceEntry<'a> {
    snap: &'a Snapshot,
    named: &'a Named,
}

impl<'a> ServiceEntry<'a> {
    /// The service, if one of that name exists (EndpointSlices may name a service that does
    /// not).
    pub fn service(&self) -> Option<&'a Service> {
        self.named.service.as_deref()
    }

    /// Its ready endpoints, as [`Snapshot::endpoints`] gives them.
    pub fn endpoints(&self) -> impl Iterator<Item = EndpointRef<'a>> + 'a {
        self.snap.endpoints_of(Some(&self.named.slices))
    }
}

/// One consistent view of the index. Cloning is O(1).
#[derive(Clone, Default)]
pub struct Snapshot {
    pub(crate) serial: u32,
    /// Unix time of the last update that changed a service's external addresses (0: none
    /// since the start), the SOA serial of `k8s_external` zones.
    pub(crate) ext_serial: u32,
    pub(crate) namespaces: OrdMap<Arc<str>, Namespace>,
    /// The same namespaces by hash (key (name, "")), for queries.
    pub(crate) namespaces_by_name: HashIndex<Namespace>,
    /// namespace -> name -> service.
    pub(crate) services: OrdMap<Arc<str>, OrdMap<Arc<str>, Arc<Service>>>,
    pub(crate) services_by_ip: IpIndex<Service>,
    /// Services by external address (`spec.externalIPs`, LoadBalancer ingress IPs).
    pub(crate) services_by_ext_ip: IpIndex<Service>,
    /// namespace -> service name -> slice name -> slice.
    pub(crate) slices: OrdMap<Arc<str>, OrdMap<Arc<str>, SliceList>>,
    /// (namespace, name) -> the service and the slices of that name (the same objects as in
    /// `services` and `slices`), by hash: what queries look up.
    pub(crate) by_name: HashIndex<Named>,
    pub(crate) endpoints_by_ip: IpIndex<Slice>,
    /// namespace -> name -> pod.
    pub(crate) pods: OrdMap<Arc<str>, OrdMap<Arc<str>, Arc<Pod>>>,
    pub(crate) pods_by_ip: IpIndex<Pod>,
    /// Unix time of the last change to ServiceImports or MCS slices (0: none since the
    /// start), the SOA serial of `multicluster` zones.
    pub(crate) mc_serial: u32,
    /// namespace -> name -> ServiceImport (MCS API).
    pub(crate) imports: OrdMap<Arc<str>, OrdMap<Arc<str>, Arc<ServiceImport>>>,
    /// namespace -> ServiceImport name -> MCS slices (label
    /// `multicluster.kubernetes.io/service-name`). Not in `endpoints_by_ip`: CoreDNS answers
    /// no PTR from them.
    pub(crate) mc_slices: OrdMap<Arc<str>, OrdMap<Arc<str>, SliceList>>,
    pub(crate) counts: Counts,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("serial", &self.serial)
            .field("counts", &self.counts)
            .finish()
    }
}

impl Snapshot {
    /// Unix time (seconds) of the last DNS-visible change; the SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Unix time of the last update that changed some service's external addresses, 0 if
    /// none did since the start (CoreDNS's `ExternalSerial`).
    pub fn ext_serial(&self) -> u32 {
        self.ext_serial
    }

    /// Services with `ip` among their external addresses.
    pub fn services_by_external_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Service> {
        self.services_by_ext_ip.get(ip).map(|s| &**s)
    }

    /// The namespace, if it exists (and matched `namespace_labels`).
    pub fn namespace(&self, ns: &str) -> Option<&Namespace> {
        self.namespaces_by_name.get(ns, "")
    }

    /// All namespaces, sorted by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// A service by namespace and name. Kubernetes names are lower-case: callers lower-case the
    /// query labels first.
    pub fn service(&self, ns: &str, name: &str) -> Option<&Service> {
        self.by_name.get(ns, name)?.service.as_deref()
    }

    /// The service named `name` in `ns` and the endpoints of that name, with one lookup
    /// (None when neither exists). Names are lower-case, as for [`Snapshot::service`].
    pub fn lookup(&self, ns: &str, name: &str) -> Option<ServiceEntry<'_>> {
        Some(ServiceEntry {
            snap: self,
            named: self.by_name.get(ns, name)?,
        })
    }

    /// Every service, sorted by (namespace, name) (for AXFR).
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services
            .values()
            .flat_map(|m| m.values().map(|s| &**s))
    }

    /// Services of one namespace, sorted by name.
    pub fn services_in(&self, ns: &str) -> impl Iterator<Item = &Service> {
        self.services
            .get(ns)
            .into_iter()
            .flat_map(|m| m.values().map(|s| &**s))
    }

    /// True when an earlier (by slice name) slice of the same service already holds this
    /// address with the same hostname: used to de-duplicate across slices.
    fn dup_in_earlier(&self, slice: &Slice, ip: IpAddr, hostname: Option<&str>) -> bool {
        self.endpoints_by_ip.get(ip).any(|t| {
            t.name < slice.name
                && t.service == slice.service
                && t.namespace == slice.namespace
                && t.endpoints
                    .iter()
                    .any(|e| t.ip(e) == ip && t.hostname(e) == hostname)
        })
    }

    /// Ready endpoints of a service, merged over all its EndpointSlices (label
    /// `kubernetes.io/service-name`), de-duplicated by IP+hostname, each with the ports of its
    /// slice. Order: by slice name, then as listed in the slice.
    pub fn endpoints<'a>(
        &'a self,
        ns: &str,
        service: &str,
    ) -> impl Iterator<Item = EndpointRef<'a>> + 'a {
        self.endpoints_of(self.by_name.get(ns, service).map(|n| &n.slices))
    }

    /// The ready endpoints of these slices (of one service), as `endpoints` gives them.
    fn endpoints_of<'a>(
        &'a self,
        slices: Option<&'a SliceList>,
    ) -> impl Iterator<Item = EndpointRef<'a>> + 'a {
        let multi = slices.is_some_and(|s| s.len() > 1);
        slices
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(move |sl| {
                sl.endpoints
                    .iter()
                    .filter(move |e| !multi || !self.dup_in_earlier(sl, sl.ip(e), sl.hostname(e)))
                    .map(move |e| e.as_ref(sl))
            })
    }

    /// True when the service has at least one ready endpoint.
    pub fn has_endpoints(&self, ns: &str, service: &str) -> bool {
        self.endpoints(ns, service).next().is_some()
    }

    /// Services whose ClusterIPs (any family) include `ip`.
    pub fn services_by_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Service> {
        self.services_by_ip.get(ip).map(|s| &**s)
    }

    /// Ready endpoints with this address, with their service (de-duplicated like `endpoints`).
    pub fn endpoints_by_ip(&self, ip: IpAddr) -> impl Iterator<Item = EndpointHit<'_>> {
        self.endpoints_by_ip.get(ip).flat_map(move |sl| {
            sl.endpoints
                .iter()
                .filter(move |e| sl.ip(e) == ip)
                .filter(move |e| !self.dup_in_earlier(sl, ip, sl.hostname(e)))
                .map(move |e| EndpointHit {
                    namespace: &sl.namespace,
                    service: &sl.service,
                    endpoint: e.as_ref(sl),
                })
        })
    }

    /// A pod with this IP (the first, if several share it, e.g. hostNetwork pods). Only filled
    /// with `pods verified`.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods_by_ip.get(ip).next().map(|p| &**p)
    }

    /// Every pod with this IP.
    pub fn pods_by_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Pod> {
        self.pods_by_ip.get(ip).map(|p| &**p)
    }

    /// A pod by namespace and name.
    pub fn pod(&self, ns: &str, name: &str) -> Option<&Pod> {
        self.pods.get(ns)?.get(name).map(|p| &**p)
    }

    /// Object counts.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Unix time of the last change to ServiceImports or their EndpointSlices, 0 if none
    /// since the start (CoreDNS's `Modified(ModifiedMultiCluster)`).
    pub fn mc_serial(&self) -> u32 {
        self.mc_serial
    }

    /// A ServiceImport by namespace and name.
    pub fn service_import(&self, ns: &str, name: &str) -> Option<&ServiceImport> {
        self.imports.get(ns)?.get(name).map(|s| &**s)
    }

    /// Every ServiceImport, sorted by (namespace, name).
    pub fn service_imports(&self) -> impl Iterator<Item = &ServiceImport> {
        self.imports.values().flat_map(|m| m.values().map(|s| &**s))
    }

    /// Ready endpoints of a ServiceImport over all its MCS EndpointSlices (every cluster),
    /// each with the ports and the source cluster of its slice. Order: by slice name, then as
    /// listed. Not de-duplicated: each slice is one cluster's view, as in CoreDNS.
    pub fn mc_endpoints<'a>(
        &'a self,
        ns: &str,
        service: &str,
    ) -> impl Iterator<Item = EndpointRef<'a>> + 'a {
        self.mc_slices
            .get(ns)
            .and_then(|m| m.get(service))
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|sl| {
                sl.endpoints.iter().map(move |e| EndpointRef {
                    cluster: Some(sl.mc_cluster()),
                    ..e.as_ref(sl)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn at(ix: &IpIndex<&'static str>, a: &str) -> Vec<&'static str> {
        ix.get(ip(a)).map(|v| **v).collect()
    }

    #[test]
    fn ip_index_groups_keep_order_and_share_structure() {
        let mut ix: IpIndex<&'static str> = IpIndex::default();
        let a = Arc::new("a");
        ix.insert(ip("10.0.0.7"), a.clone());
        ix.insert(ip("10.0.0.7"), Arc::new("b"));
        ix.insert(ip("10.0.0.7"), a.clone()); // the same object again: once
        ix.insert(ip("10.0.0.6"), Arc::new("c"));
        ix.insert(ip("10.0.0.255"), Arc::new("d"));
        ix.insert(ip("10.0.1.0"), Arc::new("e"));
        ix.insert(ip("::ffff:10.0.0.7"), Arc::new("f"));
        ix.insert(ip("fd00::7"), Arc::new("g"));
        assert_eq!(at(&ix, "10.0.0.7"), ["a", "b"]);
        assert_eq!(at(&ix, "10.0.0.6"), ["c"]);
        assert_eq!(at(&ix, "10.0.0.255"), ["d"]);
        assert_eq!(at(&ix, "10.0.1.0"), ["e"]);
        assert_eq!(at(&ix, "::ffff:10.0.0.7"), ["f"]);
        assert_eq!(at(&ix, "fd00::7"), ["g"]);
        assert!(at(&ix, "10.0.0.8").is_empty());
        assert!(at(&ix, "fd00::107").is_empty());

        let published = ix.clone();
        ix.remove(ip("10.0.0.7"), |v| *v == "a");
        ix.remove(ip("10.0.0.6"), |v| *v == "c");
        ix.insert(ip("10.0.0.7"), Arc::new("h"));
        assert_eq!(at(&ix, "10.0.0.7"), ["b", "h"]);
        assert!(at(&ix, "10.0.0.6").is_empty());
        // The earlier snapshot still sees what it saw.
        assert_eq!(at(&published, "10.0.0.7"), ["a", "b"]);
        assert_eq!(at(&published, "10.0.0.6"), ["c"]);
        // Emptied groups disappear.
        for (a, v) in [("10.0.0.7", "b"), ("10.0.0.7", "h"), ("10.0.0.255", "d")] {
            ix.remove(ip(a), |x| *x == v);
        }
        assert!(!ix.map.contains_key(&ip("10.0.0.0")));
        assert_eq!(ix.map.len(), 3);
    }

    #[test]
    fn stored_endpoint_is_small() {
        // An IPv4 address in place (IPv6 ones in the slice's `v6`).
        assert!(std::mem::size_of::<crate::model::Endpoint>() <= 16);
        // Eight fat pointers; MCS slices add no field.
        assert!(std::mem::size_of::<crate::model::Slice>() <= 128);
        // One address inline, in the space of a Vec.
        assert!(std::mem::size_of::<crate::model::Ips>() <= 24);
        // With its Arc counts, a 128-byte malloc chunk.
        assert!(std::mem::size_of::<crate::model::Service>() <= 104);
        // A ServiceImport: two names, a flag, its ClusterSetIPs and ports (88 bytes + heap).
        assert!(std::mem::size_of::<crate::model::ServiceImport>() <= 88);
    }
}
