//! The compact, DNS-visible data model published by the index: services, ServiceImports of
//! the MCS API, ports, endpoints, pods, namespaces and change notices. Plain data: no I/O, no Kubernetes API types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Proto {
    /// TCP (also the default when the object leaves it unset).
    #[default]
    Tcp,
    /// UDP
    Udp,
    /// SCTP
    Sctp,
}

impl Proto {
    /// Parses `TCP` / `UDP` / `SCTP` case-insensitively; anything else (or unset) is TCP.
    pub fn parse(s: Option<&str>) -> Proto {
        match s {
            Some(p) if p.eq_ignore_ascii_case("udp") => Proto::Udp,
            Some(p) if p.eq_ignore_ascii_case("sctp") => Proto::Sctp,
            _ => Proto::Tcp,
        }
    }

    /// Upper-case name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// Lower-case name as used in SRV labels (`_tcp`).
    pub fn as_lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// The addresses of an object, in order, as the slice they deref to. Most objects have one
/// address: it is stored inline (no allocation of its own, 24 bytes in all); two or more (dual
/// stack) live in a boxed slice.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Ips(IpsRepr);

#[derive(Clone, Default, PartialEq, Eq, Hash)]
enum IpsRepr {
    #[default]
    None,
    One(IpAddr),
    Many(Box<[IpAddr]>),
}

impl Ips {
    /// No address.
    pub const fn new() -> Ips {
        Ips(IpsRepr::None)
    }
}

impl From<Vec<IpAddr>> for Ips {
    fn from(v: Vec<IpAddr>) -> Ips {
        Ips(match v.as_slice() {
            [] => IpsRepr::None,
            [one] => IpsRepr::One(*one),
            _ => IpsRepr::Many(v.into_boxed_slice()),
        })
    }
}

impl FromIterator<IpAddr> for Ips {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(it: I) -> Ips {
        Ips::from(it.into_iter().collect::<Vec<_>>())
    }
}

impl std::ops::Deref for Ips {
    type Target = [IpAddr];

    fn deref(&self) -> &[IpAddr] {
        match &self.0 {
            IpsRepr::None => &[],
            IpsRepr::One(ip) => std::slice::from_ref(ip),
            IpsRepr::Many(ips) => ips,
        }
    }
}

impl<'a> IntoIterator for &'a Ips {
    type Item = &'a IpAddr;
    type IntoIter = std::slice::Iter<'a, IpAddr>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for Ips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq<Vec<IpAddr>> for Ips {
    fn eq(&self, other: &Vec<IpAddr>) -> bool {
        **self == **other
    }
}

/// A service or endpoint port. An object without ports is stored with a single sentinel port
/// `{name: "", port: -1}` (as CoreDNS does) which must produce no SRV record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Port {
    /// Port name, "" if unnamed.
    pub name: Arc<str>,
    /// Port number, -1 sentinel if none.
    pub port: i32,
    /// Protocol.
    pub protocol: Proto,
}

impl Port {
    /// Whether this is the "no ports" sentinel.
    pub fn is_sentinel(&self) -> bool {
        self.port == -1
    }
}

/// What kind of DNS answer a service gives for its own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// ClusterIP service: `spec.clusterIPs` (or `[spec.clusterIP]`), all families, in order.
    /// May be empty for a service whose IP is not allocated yet.
    ClusterIp(Ips),
    /// `clusterIP: None`: answers come from ready endpoints.
    Headless,
    /// `type: ExternalName`: the target, as written in the object (may be an IP literal, which
    /// CoreDNS ignores).
    ExternalName(Arc<str>),
}

/// A Service, stripped to what DNS needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace (interned).
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// Kind and addresses.
    pub kind: ServiceKind,
    /// Ports (sentinel `-1` entry if the service declares none).
    pub ports: Box<[Port]>,
    /// `spec.externalIPs` plus LoadBalancer ingress IPs.
    pub external_ips: Box<[IpAddr]>,
    /// LoadBalancer ingress hostnames (ingress entries without an IP), in order.
    pub external_hosts: Box<[Arc<str>]>,
}

impl Service {
    /// True for headless services.
    pub fn is_headless(&self) -> bool {
        matches!(self.kind, ServiceKind::Headless)
    }

    /// ClusterIPs (empty for headless and ExternalName).
    pub fn cluster_ips(&self) -> &[IpAddr] {
        match &self.kind {
            ServiceKind::ClusterIp(ips) => ips,
            _ => &[],
        }
    }
}

/// A ServiceImport of the Multi-Cluster Services API (`multicluster.x-k8s.io/v1alpha1`),
/// stripped to what DNS needs (CoreDNS `object.ServiceImport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceImport {
    /// Namespace (interned).
    pub namespace: Arc<str>,
    /// Name (interned).
    pub name: Arc<str>,
    /// `spec.type: Headless` (answers come from the imported EndpointSlices); otherwise
    /// `ClusterSetIP`.
    pub headless: bool,
    /// `spec.ips`, the ClusterSetIPs, in order.
    pub ips: Vec<IpAddr>,
    /// `spec.ports`, as listed (no sentinel entry: an import without ports has none).
    pub ports: Vec<Port>,
}

/// Length marking "no such name" in [`Endpoint`].
pub(crate) const NO_TEXT: u8 = u8::MAX;

/// The `len` bytes of `text` from `start`; `NO_TEXT` means none.
pub(crate) fn text_at(text: &str, start: u32, len: u8) -> Option<&str> {
    if len == NO_TEXT {
        return None;
    }
    let start = start as usize;
    text.get(start..start + usize::from(len))
}

/// Index into a slice's `atoms`; `u16::MAX` means none.
pub(crate) const NO_ATOM: u16 = u16::MAX;

/// One ready endpoint address as stored (one entry per address of an EndpointSlice endpoint).
/// Kept small (16 bytes): an IPv4 address is stored in place, an IPv6 one in the slice's `v6`
/// (read both with [`Slice::ip`]); names that are unique per endpoint (hostname, then pod
/// name) live in the slice's `text` (both are DNS labels, so a byte holds their length;
/// longer ones are not stored), names shared across the cluster (node, zone) are interned
/// `atoms` of the slice referenced by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The IPv4 address, or (`v6`) the index of the IPv6 address in the slice's `v6`.
    pub addr: u32,
    pub v6: bool,
    /// Start of the hostname in the slice's `text`; the pod name follows it.
    pub text: u32,
    /// Length of the hostname, `NO_TEXT` if none.
    pub host_len: u8,
    /// Length of the pod name, `NO_TEXT` if none.
    pub pod_len: u8,
    pub node_name: u16,
    pub zone: u16,
}

/// One EndpointSlice as stored: only its ready endpoints and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slice {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// Value of the `kubernetes.io/service-name` label.
    pub service: Arc<str>,
    pub ports: Box<[Port]>,
    pub endpoints: Box<[Endpoint]>,
    /// The IPv6 addresses of the endpoints (a slice has one address family: one of `v6` and
    /// the endpoints' own IPv4 fields is unused).
    pub v6: Box<[Ipv6Addr]>,
    /// Hostnames and pod names of the endpoints, concatenated.
    pub text: Box<str>,
    /// Distinct node and zone names of the endpoints (interned, shared between slices). An
    /// MCS slice (held apart from the others) has one more, last: the value of its
    /// `multicluster.kubernetes.io/source-cluster` label, so no slice grows by a field.
    pub atoms: Box<[Arc<str>]>,
}

impl Slice {
    /// The address of one of this slice's endpoints.
    pub(crate) fn ip(&self, e: &Endpoint) -> IpAddr {
        if e.v6 {
            let a = usize::try_from(e.addr).ok().and_then(|i| self.v6.get(i));
            IpAddr::V6(a.copied().unwrap_or(Ipv6Addr::UNSPECIFIED))
        } else {
            IpAddr::V4(Ipv4Addr::from(e.addr))
        }
    }

    pub(crate) fn atom(&self, i: u16) -> Option<&str> {
        self.atoms.get(usize::from(i)).map(|a| &**a)
    }

    /// The source cluster of an MCS slice (its last atom); meaningless for other slices.
    pub(crate) fn mc_cluster(&self) -> &str {
        self.atoms.last().map_or("", |a| &**a)
    }

    pub(crate) fn hostname(&self, e: &Endpoint) -> Option<&str> {
        text_at(&self.text, e.text, e.host_len)
    }

    pub(crate) fn pod_name(&self, e: &Endpoint) -> Option<&str> {
        let skip = if e.host_len == NO_TEXT { 0 } else { e.host_len };
        text_at(
            &self.text,
            e.text.saturating_add(u32::from(skip)),
            e.pod_len,
        )
    }
}

/// A ready endpoint address of a service, borrowed from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointRef<'a> {
    /// The address.
    pub ip: IpAddr,
    /// `hostname` field of the endpoint.
    pub hostname: Option<&'a str>,
    /// `targetRef.name` when it is a Pod and shorter than 64 characters.
    pub pod_name: Option<&'a str>,
    /// `nodeName`.
    pub node_name: Option<&'a str>,
    /// `zone` (stored only with the `zonal` option).
    pub zone: Option<&'a str>,
    /// Ports of the EndpointSlice this address came from (sentinel `-1` entry if none).
    pub ports: &'a [Port],
    /// The `multicluster.kubernetes.io/source-cluster` label of an MCS slice ("" when the
    /// label is missing); `None` for the slices of local services.
    pub cluster: Option<&'a str>,
}

impl Endpoint {
    pub(crate) fn as_ref<'a>(&self, slice: &'a Slice) -> EndpointRef<'a> {
        EndpointRef {
            ip: slice.ip(self),
            hostname: slice.hostname(self),
            pod_name: slice.pod_name(self),
            node_name: slice.atom(self.node_name),
            zone: slice.atom(self.zone),
            ports: &slice.ports,
            cluster: None,
        }
    }
}

/// An endpoint found by IP, with the service it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointHit<'a> {
    /// Namespace of the EndpointSlice.
    pub namespace: &'a str,
    /// Service name (from the slice's `kubernetes.io/service-name` label).
    pub service: &'a str,
    /// The endpoint.
    pub endpoint: EndpointRef<'a>,
}

/// A label set: (key, value) pairs sorted by key, shared between objects with equal sets.
pub type Labels = Arc<[(Arc<str>, Arc<str>)]>;

/// A Pod (indexed only with `pods verified`; pods being deleted are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// `status.podIPs` (or `[status.podIP]`).
    pub ips: Ips,
    /// Labels, sorted by key; label sets are shared between pods that have the same ones.
    pub labels: Labels,
}

/// A Namespace that exists (and matched `namespace_labels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Name.
    pub name: Arc<str>,
}

/// Object counts, for the `sextant_kubernetes_indexed_objects` gauge and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Services.
    pub services: usize,
    /// Ready endpoint addresses (over all EndpointSlices).
    pub endpoints: usize,
    /// Pods.
    pub pods: usize,
    /// Namespaces.
    pub namespaces: usize,
    /// ServiceImports (only with the `multicluster` option or in manifests).
    pub service_imports: usize,
    /// Ready endpoint addresses of MCS EndpointSlices.
    pub mc_endpoints: usize,
}

/// What changed in one published update: enough for a DNS cache to drop affected names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Services (namespace, name) whose records may have changed (service or its endpoints).
    pub services: Vec<(Arc<str>, Arc<str>)>,
    /// Namespaces that appeared or disappeared.
    pub namespaces: Vec<Arc<str>>,
    /// Addresses whose reverse (PTR) answers may have changed.
    pub ips: Vec<IpAddr>,
    /// Pods changed (pod names / autopath answers may differ).
    pub pods: bool,
    /// Too much changed to list (e.g. a full re-list): drop everything.
    pub all: bool,
}

impl Change {
    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.namespaces.is_empty()
            && self.ips.is_empty()
            && !self.pods
            && !self.all
    }
}

/// Where the index's data currently comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Live list/watch of the API server.
    Api,
    /// A persisted snapshot file (API not reached yet).
    Snapshot,
    /// Static manifest files / `apply_objects`.
    Manifests,
}
