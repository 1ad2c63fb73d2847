//! The immutable snapshot of DNS-visible cluster data that queries read. Built from persistent
//! (structurally shared) maps so that a new snapshot costs O(changed object), not O(cluster).
//! Read-only queries: no I/O, no locks, no allocation on lookups.

use std::net::IpAddr;
use std::sync::Arc;

use imbl::OrdMap;
use smallvec::SmallVec;

use crate::model::{Counts, EndpointHit, EndpointRef, Namespace, Pod, Service, Slice};

pub(crate) type Few<T> = SmallVec<[T; 1]>;
/// Slices of one service, by slice name.
pub(crate) type SliceMap = OrdMap<Arc<str>, Arc<Slice>>;

/// One consistent view of the index. Cloning is O(1).
#[derive(Clone, Default)]
pub struct Snapshot {
    pub(crate) serial: u32,
    pub(crate) namespaces: OrdMap<Arc<str>, Namespace>,
    /// namespace -> name -> service.
    pub(crate) services: OrdMap<Arc<str>, OrdMap<Arc<str>, Arc<Service>>>,
    pub(crate) services_by_ip: OrdMap<IpAddr, Few<Arc<Service>>>,
    /// namespace -> service name -> slice name -> slice.
    pub(crate) slices: OrdMap<Arc<str>, OrdMap<Arc<str>, SliceMap>>,
    pub(crate) endpoints_by_ip: OrdMap<IpAddr, Few<Arc<Slice>>>,
    /// namespace -> name -> pod.
    pub(crate) pods: OrdMap<Arc<str>, OrdMap<Arc<str>, Arc<Pod>>>,
    pub(crate) pods_by_ip: OrdMap<IpAddr, Few<Arc<Pod>>>,
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

    /// The namespace, if it exists (and matched `namespace_labels`).
    pub fn namespace(&self, ns: &str) -> Option<&Namespace> {
        self.namespaces.get(ns)
    }

    /// All namespaces, sorted by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// A service by namespace and name. Kubernetes names are lower-case: callers lower-case the
    /// query labels first.
    pub fn service(&self, ns: &str, name: &str) -> Option<&Service> {
        self.services.get(ns)?.get(name).map(|s| &**s)
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
        self.endpoints_by_ip.get(&ip).is_some_and(|list| {
            list.iter().any(|t| {
                t.name < slice.name
                    && t.service == slice.service
                    && t.namespace == slice.namespace
                    && t.endpoints
                        .iter()
                        .any(|e| e.ip == ip && t.hostname(e) == hostname)
            })
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
        let slices = self.slices.get(ns).and_then(|m| m.get(service));
        let multi = slices.is_some_and(|s| s.len() > 1);
        slices
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(move |sl| {
                sl.endpoints
                    .iter()
                    .filter(move |e| !multi || !self.dup_in_earlier(sl, e.ip, sl.hostname(e)))
                    .map(move |e| e.as_ref(sl))
            })
    }

    /// True when the service has at least one ready endpoint.
    pub fn has_endpoints(&self, ns: &str, service: &str) -> bool {
        self.endpoints(ns, service).next().is_some()
    }

    /// Services whose ClusterIPs (any family) include `ip`.
    pub fn services_by_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Service> {
        self.services_by_ip
            .get(&ip)
            .into_iter()
            .flat_map(|l| l.iter().map(|s| &**s))
    }

    /// Ready endpoints with this address, with their service (de-duplicated like `endpoints`).
    pub fn endpoints_by_ip(&self, ip: IpAddr) -> impl Iterator<Item = EndpointHit<'_>> {
        self.endpoints_by_ip
            .get(&ip)
            .into_iter()
            .flat_map(|l| l.iter())
            .flat_map(move |sl| {
                sl.endpoints
                    .iter()
                    .filter(move |e| e.ip == ip)
                    .filter(move |e| !self.dup_in_earlier(sl, e.ip, sl.hostname(e)))
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
        self.pods_by_ip
            .get(&ip)
            .and_then(|l| l.first())
            .map(|p| &**p)
    }

    /// Every pod with this IP.
    pub fn pods_by_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Pod> {
        self.pods_by_ip
            .get(&ip)
            .into_iter()
            .flat_map(|l| l.iter().map(|p| &**p))
    }

    /// A pod by namespace and name.
    pub fn pod(&self, ns: &str, name: &str) -> Option<&Pod> {
        self.pods.get(ns)?.get(name).map(|p| &**p)
    }

    /// Object counts.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}
