//! The answer logic of the `kubernetes` plugin over one index snapshot: query-name parsing
//! (CoreDNS `parse.go`), service/endpoint/pod lookups (`kubernetes.go`), reverse lookups
//! (`reverse.go`), the MCS answers of `multicluster` zones (`findMultiClusterServices`),
//! `ns.dns` addresses (`ns.go`) and the record builders of `backend_lookup.go`
//! except CNAME chasing, which needs the server and lives in the handler. Pure: no I/O.

use std::collections::HashSet;
use std::net::IpAddr;

use sextant_kube::{EndpointRef, PodsMode, Proto, ServiceKind, Snapshot};
use sextant_wire::{Name, RData, Record, Soa, Srv};

use crate::pkg::zones;

use super::setup::Config;

/// CoreDNS's `errNoItems` / `errNsNotExposed` / `errInvalidRequest`: a name error (NXDOMAIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameError;

pub(crate) type KResult<T> = Result<T, NameError>;

/// What a found item points at (CoreDNS `msg.Service.Host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Ip(IpAddr),
    /// An ExternalName target (a name, never an IP literal).
    Name(Name),
}

/// One found item (CoreDNS `msg.Service`): where it points, its port, and the name it lives at
/// (`msg.Domain(Key)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub host: Host,
    pub port: i32,
    pub ttl: u32,
    pub domain: Name,
}

/// The parsed query name (CoreDNS `recordRequest`); "" means not given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RecordRequest {
    pub port: String,
    pub protocol: String,
    pub endpoint: String,
    /// The cluster id of `<hostname>.<clusterid>.<svc>.<ns>.svc.<zone>` (multicluster zones).
    pub cluster: String,
    pub service: String,
    pub namespace: String,
    pub pod_or_svc: String,
    pub zone: String,
    pub zone_prefer: bool,
}

fn strip_underscore(s: &str) -> &str {
    s.strip_prefix('_').unwrap_or(s)
}

/// A label as text, lower-cased (bytes that are not UTF-8 become U+FFFD, as before).
fn seg(l: &[u8]) -> String {
    match std::str::from_utf8(l) {
        Ok(s) => s.to_ascii_lowercase(),
        Err(_) => String::from_utf8_lossy(l).to_ascii_lowercase(),
    }
}

/// Splits `qname` (lower-cased) below `zone` into its parts, like CoreDNS `parseRequest`. Only
/// the labels a field takes are turned into strings. In a `multicluster` zone two labels left
/// of the service are `<endpoint>.<cluster>` unless either starts with `_` (then `_port._proto`).
pub(crate) fn parse_request(
    qname: &Name,
    zone: &Name,
    multicluster: bool,
    zonal: bool,
) -> KResult<RecordRequest> {
    let mut r = RecordRequest::default();
    let Some(segs) = qname.prefix_labels(zone) else {
        return Ok(r);
    };
    let is = |l: &[u8], w: &str| l.eq_ignore_ascii_case(w.as_bytes());
    if segs.is_empty() || (segs.len() == 1 && (is(segs[0], "svc") || is(segs[0], "pod"))) {
        return Ok(r);
    }
    let mut last = segs.len() as isize - 1;
    r.pod_or_svc = seg(segs[last as usize]);
    if r.pod_or_svc != "pod" && r.pod_or_svc != "svc" {
        return Err(NameError);
    }
    last -= 1;
    if last < 0 {
        return Ok(r);
    }
    r.namespace = seg(segs[last as usize]);
    last -= 1;
    if last < 0 {
        return Ok(r);
    }
    r.service = seg(segs[last as usize]);
    last -= 1;
    if last < 0 {
        return Ok(r);
    }
    let l = last as usize;
    match l {
        0 => r.endpoint = seg(segs[0]),
        1 => {
            if !multicluster || segs[1].starts_with(b"_") || segs[0].starts_with(b"_") {
                r.protocol = strip_underscore(&seg(segs[1])).to_string();
                r.port = strip_underscore(&seg(segs[0])).to_string();
            } else {
                r.cluster = seg(segs[1]);
                r.endpoint = seg(segs[0]);
            }
        }
        _ => {
            if !zonal || multicluster || !is(segs[l], "_zone") || r.pod_or_svc != "svc" {
                return Err(NameError);
            }
            if is(segs[l - 1], "prefer") {
                r.zone_prefer = true;
            } else if !is(segs[l - 1], "pin") {
                return Err(NameError);
            }
            r.zone = segs[..l - 1]
                .iter()
                .map(|l| seg(l))
                .collect::<Vec<_>>()
                .join(".");
        }
    }
    Ok(r)
}

/// `labels...` followed by `zone` (zone keeps its case).
pub(crate) fn name_in(labels: &[&str], zone: &Name) -> Option<Name> {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()).chain(zone.labels())).ok()
}

/// An endpoint's DNS label: hostname, else pod name (with `endpoint_pod_names`), else the
/// dashed IP (`::` compressed; a trailing `-` gets a `0`).
pub(crate) fn endpoint_hostname(ep: &EndpointRef<'_>, pod_names: bool) -> String {
    if let Some(h) = ep.hostname.filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    if pod_names {
        if let Some(p) = ep.pod_name.filter(|p| !p.is_empty()) {
            return p.to_string();
        }
    }
    dashed(ep.ip)
}

/// `10.0.0.1` -> `10-0-0-1`; `2001:db8::` -> `2001-db8--0`.
pub(crate) fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string().replace('.', "-"),
        IpAddr::V6(a) => {
            let s = a.to_string().replace(':', "-");
            if s.ends_with('-') {
                s + "0"
            } else {
                s
            }
        }
    }
}

fn match_port_proto(want_port: &str, port: &sextant_kube::Port, want_proto: &str) -> bool {
    let proto_ok = want_proto.is_empty()
        || (!port.is_sentinel() && want_proto.eq_ignore_ascii_case(port.protocol.as_str()));
    let port_ok = want_port.is_empty() || want_port.eq_ignore_ascii_case(&port.name);
    port_ok && proto_ok
}

/// One query's view: configuration, snapshot, and this server's own addresses.
pub(crate) struct View<'a> {
    pub cfg: &'a Config,
    pub snap: &'a Snapshot,
    /// Non-loopback addresses this server listens on (CoreDNS `localIPs`).
    pub local_ips: &'a [IpAddr],
}

impl View<'_> {
    /// The longest plugin zone containing `qname`, spelled as in `qname`.
    pub(crate) fn match_zone(&self, qname: &Name) -> Option<Name> {
        let z = zones::matches(&self.cfg.zones, qname)?;
        let skip = qname.label_count() - z.label_count();
        Name::from_labels(qname.labels().skip(skip)).ok()
    }

    /// True when `zone` (a plugin zone) is in one of the `multicluster` zones (CoreDNS
    /// `isMultiClusterZone`).
    pub(crate) fn is_multicluster(&self, zone: &Name) -> bool {
        !self.cfg.multicluster.is_empty() && zones::matches(&self.cfg.multicluster, zone).is_some()
    }

    pub(crate) fn namespace_exposed(&self, ns: &str) -> bool {
        self.snap.namespace(ns).is_some()
            && (self.cfg.namespaces.is_empty() || self.cfg.namespaces.contains(ns))
    }

    fn endpoints<'s>(&'s self, ns: &str, svc: &str) -> Vec<EndpointRef<'s>> {
        if self.cfg.noendpoints {
            return Vec::new();
        }
        self.snap.endpoints(ns, svc).collect()
    }

    fn hostname(&self, ep: &EndpointRef<'_>) -> String {
        endpoint_hostname(ep, self.cfg.endpoint_pod_names)
    }

    /// The zone SOA (CoreDNS `plugin.SOA`), owner `zone` as given.
    pub(crate) fn soa(&self, zone: &Name) -> Record {
        let ttl = self.cfg.ttl;
        let mk = |l: &str| zone.prepend(l.as_bytes()).unwrap_or_else(|_| zone.clone());
        let mname = zone
            .prepend(b"dns")
            .and_then(|n| n.prepend(b"ns"))
            .unwrap_or_else(|_| zone.clone());
        Record::new(
            zone.clone(),
            ttl.min(300),
            RData::Soa(Soa {
                mname,
                rname: mk("hostmaster"),
                serial: if self.is_multicluster(zone) {
                    self.snap.mc_serial()
                } else {
                    self.snap.serial()
                },
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: ttl,
            }),
        )
    }

    /// CoreDNS `Records`: services or pods for a forward name.
    pub(crate) fn records(&self, qname: &Name, zone: &Name) -> KResult<Vec<Item>> {
        let multicluster = self.is_multicluster(zone);
        let r = parse_request(qname, zone, multicluster, self.cfg.zonal)?;
        if r.pod_or_svc.is_empty() {
            return Ok(Vec::new());
        }
        if qname.is_reverse() {
            return Err(NameError);
        }
        if !self.namespace_exposed(&r.namespace) {
            return Err(NameError);
        }
        if r.pod_or_svc == "pod" {
            return self.find_pods(&r, zone);
        }
        if multicluster {
            return self.find_mc_services(&r, zone);
        }
        self.find_services(&r, zone)
    }

    /// CoreDNS `findMultiClusterServices`: a ServiceImport's ClusterSetIPs, or for a headless
    /// import (or an endpoint name) the endpoints of its MCS slices, named
    /// `<hostname>.<clusterid>.<svc>.<ns>.svc.<zone>`.
    fn find_mc_services(&self, r: &RecordRequest, zone: &Name) -> KResult<Vec<Item>> {
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = self.cfg.ttl;
        let Some(imp) = self.snap.service_import(&r.namespace, &r.service) else {
            return Err(NameError);
        };
        if self.cfg.ignore_empty_service
            && !imp.headless
            && self
                .snap
                .mc_endpoints(&imp.namespace, &imp.name)
                .next()
                .is_none()
        {
            return Err(NameError);
        }
        let mut err = true;
        let mut out = Vec::new();
        if imp.headless || !r.endpoint.is_empty() {
            for ep in self.snap.mc_endpoints(&imp.namespace, &imp.name) {
                let host = self.hostname(&ep);
                let cluster = ep.cluster.unwrap_or("");
                if !r.endpoint.is_empty()
                    && (!r.cluster.eq_ignore_ascii_case(cluster)
                        || !r.endpoint.eq_ignore_ascii_case(&host))
                {
                    continue;
                }
                for p in ep.ports {
                    if !match_port_proto(&r.port, p, &r.protocol) {
                        continue;
                    }
                    // A slice without a source-cluster label has no cluster label to name
                    // (CoreDNS builds a name with an empty label there, which its SRV replies
                    // cannot encode); its addresses still answer the service name.
                    let labels: &[&str] = if cluster.is_empty() {
                        &[&host, &imp.name, &imp.namespace, "svc"]
                    } else {
                        &[&host, cluster, &imp.name, &imp.namespace, "svc"]
                    };
                    let Some(domain) = name_in(labels, zone) else {
                        continue;
                    };
                    err = false;
                    out.push(Item {
                        host: Host::Ip(ep.ip),
                        port: p.port,
                        ttl,
                        domain,
                    });
                }
            }
        } else {
            let domain = name_in(&[&imp.name, &imp.namespace, "svc"], zone).ok_or(NameError)?;
            for p in &imp.ports {
                if !match_port_proto(&r.port, p, &r.protocol) {
                    continue;
                }
                err = false;
                for ip in &imp.ips {
                    out.push(Item {
                        host: Host::Ip(*ip),
                        port: p.port,
                        ttl,
                        domain: domain.clone(),
                    });
                }
            }
        }
        if err {
            Err(NameError)
        } else {
            Ok(out)
        }
    }

    fn find_pods(&self, r: &RecordRequest, zone: &Name) -> KResult<Vec<Item>> {
        if self.cfg.pods == PodsMode::Disabled {
            return Err(NameError);
        }
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let podname = r.service.as_str();
        let text = if podname.matches('-').count() == 3 && !podname.contains("--") {
            podname.replace('-', ".")
        } else {
            podname.replace('-', ":")
        };
        let ip: Option<IpAddr> = text.parse().ok();
        let domain = name_in(&[podname, &r.namespace, "pod"], zone).ok_or(NameError)?;
        let item = |ip| Item {
            host: Host::Ip(ip),
            port: 0,
            ttl: self.cfg.ttl,
            domain: domain.clone(),
        };
        match self.cfg.pods {
            PodsMode::Insecure => ip.map(|ip| vec![item(ip)]).ok_or(NameError),
            _ => {
                let Some(ip) = ip else {
                    return Err(NameError);
                };
                let found: Vec<Item> = self
                    .snap
                    .pods_by_ip(ip)
                    .filter(|p| p.namespace.eq_ignore_ascii_case(&r.namespace))
                    .map(|_| item(ip))
                    .collect();
                if found.is_empty() {
                    Err(NameError)
                } else {
                    Ok(found)
                }
            }
        }
    }

    fn find_services(&self, r: &RecordRequest, zone: &Name) -> KResult<Vec<Item>> {
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = self.cfg.ttl;
        let Some(svc) = self.snap.service(&r.namespace, &r.service) else {
            return Err(NameError);
        };
        let mut err = true;
        let mut out = Vec::new();
        let svc_domain = name_in(&[&svc.name, &svc.namespace, "svc"], zone).ok_or(NameError)?;
        let is_external = matches!(svc.kind, ServiceKind::ExternalName(_));
        if self.cfg.ignore_empty_service
            && !is_external
            && !svc.is_headless()
            && self.endpoints(&svc.namespace, &svc.name).is_empty()
        {
            return Err(NameError);
        }
        if !r.zone.is_empty() && !svc.is_headless() {
            return Err(NameError);
        }
        if let ServiceKind::ExternalName(target) = &svc.kind {
            if !r.endpoint.is_empty() || !r.port.is_empty() || !r.protocol.is_empty() {
                return Err(NameError);
            }
            if target.parse::<IpAddr>().is_ok() {
                return Err(NameError);
            }
            let Ok(t) = Name::parse(target) else {
                return Err(NameError);
            };
            return Ok(vec![Item {
                host: Host::Name(t),
                port: 0,
                ttl,
                domain: svc_domain,
            }]);
        }
        if svc.is_headless() || !r.endpoint.is_empty() {
            if !r.zone.is_empty() {
                err = false;
            }
            let eps = self.endpoints(&svc.namespace, &svc.name);
            let add_for_zone = |topo: &str, out: &mut Vec<Item>, err: &mut bool| {
                let mut added = 0;
                for ep in &eps {
                    if !topo.is_empty()
                        && ep.zone.map(|z| z.to_ascii_lowercase()).as_deref() != Some(topo)
                    {
                        continue;
                    }
                    let host = self.hostname(ep);
                    if !r.endpoint.is_empty() && !r.endpoint.eq_ignore_ascii_case(&host) {
                        continue;
                    }
                    for p in ep.ports {
                        if !match_port_proto(&r.port, p, &r.protocol) {
                            continue;
                        }
                        let Some(domain) =
                            name_in(&[&host, &svc.name, &svc.namespace, "svc"], zone)
                        else {
                            continue;
                        };
                        *err = false;
                        added += 1;
                        out.push(Item {
                            host: Host::Ip(ep.ip),
                            port: p.port,
                            ttl,
                            domain,
                        });
                    }
                }
                added
            };
            if add_for_zone(&r.zone, &mut out, &mut err) == 0 && r.zone_prefer {
                add_for_zone("", &mut out, &mut err);
            }
        } else {
            for p in &svc.ports {
                if !match_port_proto(&r.port, p, &r.protocol) {
                    continue;
                }
                err = false;
                for ip in svc.cluster_ips() {
                    out.push(Item {
                        host: Host::Ip(*ip),
                        port: p.port,
                        ttl,
                        domain: svc_domain.clone(),
                    });
                }
            }
        }
        if err {
            Err(NameError)
        } else {
            Ok(out)
        }
    }

    /// CoreDNS `nsAddrs(false, false, zone)`: (name, address) of this server as seen in the
    /// cluster, else `ns.dns.<zone>` with the local addresses.
    pub(crate) fn ns_addrs(&self, zone: &Name) -> Vec<(Name, IpAddr)> {
        let mut out = Vec::new();
        let mut found = false;
        for ip in self.local_ips {
            let mut seen_svc: HashSet<(String, String)> = HashSet::new();
            for hit in self.snap.endpoints_by_ip(*ip) {
                found = true;
                if !seen_svc.insert((hit.namespace.to_string(), hit.service.to_string())) {
                    continue;
                }
                let Some(svc) = self.snap.service(hit.namespace, hit.service) else {
                    continue;
                };
                let Some(base) = name_in(&[&svc.name, &svc.namespace, "svc"], zone) else {
                    continue;
                };
                if svc.is_headless() {
                    for ep in self.endpoints(&svc.namespace, &svc.name) {
                        if let Ok(n) = base.prepend(self.hostname(&ep).as_bytes()) {
                            out.push((n, ep.ip));
                        }
                    }
                } else {
                    for c in svc.cluster_ips() {
                        out.push((base.clone(), *c));
                    }
                }
            }
        }
        if !found {
            if let Some(n) = name_in(&["ns", "dns"], zone) {
                for ip in self.local_ips {
                    out.push((n.clone(), *ip));
                }
            }
        }
        out
    }

    /// True for `ns.dns.<zone>`.
    fn is_default_ns(qname: &Name, zone: &Name) -> bool {
        qname.label_count() == zone.label_count() + 2
            && qname.is_subdomain_of(zone)
            && name_in(&["ns", "dns"], zone).is_some_and(|n| &n == qname)
    }

    /// CoreDNS `Services` for qtype A/AAAA/SRV/MX/CNAME/PTR-forward (not TXT/NS).
    pub(crate) fn services(
        &self,
        qname: &Name,
        zone: &Name,
        want_v6: Option<bool>,
        srv: bool,
    ) -> KResult<Vec<Item>> {
        if Self::is_default_ns(qname, zone) {
            let Some(v6) = want_v6 else {
                return Ok(Vec::new());
            };
            return Ok(self
                .ns_addrs(zone)
                .into_iter()
                .filter(|(_, ip)| ip.is_ipv6() == v6)
                .map(|(_, ip)| Item {
                    host: Host::Ip(ip),
                    port: 0,
                    ttl: self.cfg.ttl,
                    domain: qname.clone(),
                })
                .collect());
        }
        let s = self.records(qname, zone)?;
        if srv {
            return Ok(s
                .into_iter()
                .filter(|i| !matches!(i.host, Host::Name(_)))
                .collect());
        }
        Ok(s)
    }

    /// CoreDNS `Services` for TXT: `dns-version`, else NODATA when the name holds anything.
    pub(crate) fn txt(&self, qname: &Name, zone: &Name) -> KResult<Vec<Record>> {
        let labels = qname.prefix_labels(zone).unwrap_or_default();
        if labels.len() == 1 && labels[0].eq_ignore_ascii_case(b"dns-version") {
            return Ok(vec![Record::new(
                qname.clone(),
                28800,
                RData::Txt(vec![b"1.1.0".to_vec()]),
            )]);
        }
        let found = self.records(qname, zone);
        if found.as_ref().is_ok_and(|v| !v.is_empty()) {
            return Ok(Vec::new());
        }
        if found.is_ok() && self.cfg.zonal {
            if let Ok(r) = parse_request(qname, zone, self.is_multicluster(zone), true) {
                if !r.zone.is_empty() {
                    return Ok(Vec::new());
                }
            }
        }
        Err(NameError)
    }

    /// CoreDNS `plugin.SRV` (kubernetes items never need the CNAME branch).
    pub(crate) fn srv(&self, qname: &Name, zone: &Name) -> KResult<(Vec<Record>, Vec<Record>)> {
        let items = self.services(qname, zone, None, true)?;
        let total = items.len().max(1) as f64;
        let mut weight = (100.0 / total).floor() as u16;
        if weight == 0 {
            weight = 1;
        }
        let mut seen_srv: HashSet<(Name, i32)> = HashSet::new();
        let mut seen_addr: HashSet<(Name, IpAddr)> = HashSet::new();
        let (mut ans, mut extra) = (Vec::new(), Vec::new());
        for it in items {
            if it.port == -1 {
                continue;
            }
            let Host::Ip(ip) = it.host else { continue };
            if seen_srv.insert((it.domain.clone(), it.port)) {
                ans.push(Record::new(
                    qname.clone(),
                    it.ttl,
                    RData::Srv(Srv {
                        priority: 0,
                        weight,
                        port: it.port as u16,
                        target: it.domain.clone(),
                    }),
                ));
            }
            if seen_addr.insert((it.domain.clone(), ip)) {
                extra.push(addr_record(it.domain.clone(), it.ttl, ip));
            }
        }
        Ok((ans, extra))
    }

    /// CoreDNS `Reverse` + `plugin.PTR`.
    pub(crate) fn ptr(&self, qname: &Name, zone: &Name) -> KResult<Vec<Record>> {
        let Some(ip) = qname.reverse_address() else {
            self.records(qname, zone)?;
            return Ok(Vec::new());
        };
        let primary = self.cfg.primary_zone();
        let ttl = self.cfg.ttl;
        let filtered = |ns: &str| !self.cfg.namespaces.is_empty() && !self.namespace_exposed(ns);
        let mut targets: Vec<Name> = Vec::new();
        if let Some(svc) = self
            .snap
            .services_by_ip(ip)
            .find(|s| !filtered(&s.namespace))
        {
            if let Some(n) = name_in(&[&svc.name, &svc.namespace, "svc"], primary) {
                targets.push(n);
            }
        } else if !self.cfg.noendpoints {
            for hit in self.snap.endpoints_by_ip(ip) {
                if filtered(hit.namespace) {
                    continue;
                }
                let host = self.hostname(&hit.endpoint);
                if let Some(n) = name_in(&[&host, hit.service, hit.namespace, "svc"], primary) {
                    if !targets.contains(&n) {
                        targets.push(n);
                    }
                }
            }
        }
        if targets.is_empty() {
            return Err(NameError);
        }
        Ok(targets
            .into_iter()
            .map(|t| Record::new(qname.clone(), ttl, RData::Ptr(t)))
            .collect())
    }

    /// CoreDNS `plugin.NS` at the apex: NS records and their glue.
    pub(crate) fn ns(&self, qname: &Name, zone: &Name) -> (Vec<Record>, Vec<Record>) {
        let (mut ans, mut extra) = (Vec::new(), Vec::new());
        let mut seen: HashSet<Name> = HashSet::new();
        for (n, ip) in self.ns_addrs(zone) {
            extra.push(addr_record(n.clone(), self.cfg.ttl, ip));
            if seen.insert(n.clone()) {
                ans.push(Record::new(qname.clone(), self.cfg.ttl, RData::Ns(n)));
            }
        }
        (ans, extra)
    }
}

/// An A or AAAA record for `ip`.
pub(crate) fn addr_record(name: Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(a) => Record::new(name, ttl, RData::A(a)),
        IpAddr::V6(a) => Record::new(name, ttl, RData::Aaaa(a)),
    }
}

/// Lower-case protocol label of a port (`_tcp`).
pub(crate) fn proto_label(p: Proto) -> String {
    format!("_{}", p.as_lower())
}
