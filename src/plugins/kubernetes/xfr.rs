//! The kubernetes zone as an AXFR record list, in CoreDNS `xfr.go` order: SOA, NS, NS glue
//! (TTL 0), then services sorted by name (ClusterIP: A/AAAA, SRV per port, `_name._proto` SRV
//! per named port; headless: per-endpoint A/AAAA and SRV; ExternalName: CNAME), then the SOA.
//! A `multicluster` zone lists ServiceImports instead (`transferMultiClusterServices`).
//! Pure: no I/O.

use std::collections::HashSet;

use sextant_kube::ServiceKind;
use sextant_wire::{Name, RData, Record, Srv};

use super::lookup::{addr_record, name_in, proto_label, View};

fn srv(owner: Name, ttl: u32, weight: u16, port: i32, target: Name) -> Record {
    Record::new(
        owner,
        ttl,
        RData::Srv(Srv {
            priority: 0,
            weight,
            // CoreDNS converts the -1 "no port" sentinel with uint16(), giving 65535.
            port: port as u16,
            target,
        }),
    )
}

/// AXFR records for `zone` (lower-case), or None when `zone` is not ours.
pub(super) fn records(view: &View<'_>, zone: &Name, serial: u32) -> Option<Vec<Record>> {
    view.match_zone(zone)?;
    let soa = view.soa(zone);
    let cur = match &soa.data {
        RData::Soa(s) => s.serial,
        _ => 0,
    };
    if serial != 0 && serial == cur {
        return Some(vec![soa]);
    }
    let ttl = view.cfg.ttl;
    let mut out = vec![soa.clone()];
    let ns = view.ns_addrs(zone);
    let mut seen: HashSet<Name> = HashSet::new();
    for (n, _) in &ns {
        if seen.insert(n.clone()) {
            out.push(Record::new(zone.clone(), ttl, RData::Ns(n.clone())));
        }
    }
    for (n, ip) in &ns {
        out.push(addr_record(n.clone(), 0, *ip));
    }
    if view.is_multicluster(zone) {
        multicluster(view, zone, &mut out);
        out.push(soa);
        return Some(out);
    }
    let mut services: Vec<_> = view.snap.services().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    for svc in services {
        if !view.namespace_exposed(&svc.namespace) {
            continue;
        }
        let Some(base) = name_in(&[&svc.name, &svc.namespace, "svc"], zone) else {
            continue;
        };
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => {
                if ips.is_empty() {
                    continue;
                }
                for ip in ips {
                    out.push(addr_record(base.clone(), ttl, *ip));
                }
                for p in &svc.ports {
                    out.push(srv(base.clone(), ttl, 100, p.port, base.clone()));
                    if p.name.is_empty() {
                        continue;
                    }
                    let owner = base
                        .prepend(proto_label(p.protocol).as_bytes())
                        .and_then(|n| n.prepend(format!("_{}", p.name.to_lowercase()).as_bytes()));
                    if let Ok(owner) = owner {
                        out.push(srv(owner, ttl, 100, p.port, base.clone()));
                    }
                }
            }
            ServiceKind::Headless => {
                if view.cfg.noendpoints {
                    continue;
                }
                let eps: Vec<_> = view.snap.endpoints(&svc.namespace, &svc.name).collect();
                endpoint_records(view, &base, &eps, &mut out);
            }
            ServiceKind::ExternalName(t) => {
                if t.parse::<std::net::IpAddr>().is_ok() {
                    continue;
                }
                if let Ok(target) = Name::parse(t) {
                    out.push(Record::new(base, ttl, RData::Cname(target)));
                }
            }
        }
    }
    out.push(soa);
    Some(out)
}

/// The ServiceImports of a multicluster zone, sorted by name: ClusterSetIPs with their SRV
/// records like a ClusterIP service; without ClusterSetIPs the endpoints of the import's
/// slices like a headless service. As in CoreDNS, the per-endpoint names here leave the
/// cluster id out (`<hostname>.<svc>.<ns>.svc.<zone>`).
fn multicluster(view: &View<'_>, zone: &Name, out: &mut Vec<Record>) {
    let ttl = view.cfg.ttl;
    let mut imports: Vec<_> = view.snap.service_imports().collect();
    imports.sort_by(|a, b| a.name.cmp(&b.name));
    for imp in imports {
        if !view.namespace_exposed(&imp.namespace) {
            continue;
        }
        let Some(base) = name_in(&[&imp.name, &imp.namespace, "svc"], zone) else {
            continue;
        };
        if !imp.ips.is_empty() {
            for ip in &imp.ips {
                out.push(addr_record(base.clone(), ttl, *ip));
            }
            for p in &imp.ports {
                out.push(srv(base.clone(), ttl, 100, p.port, base.clone()));
                if p.name.is_empty() {
                    continue;
                }
                let owner = base
                    .prepend(proto_label(p.protocol).as_bytes())
                    .and_then(|n| n.prepend(format!("_{}", p.name.to_lowercase()).as_bytes()));
                if let Ok(owner) = owner {
                    out.push(srv(owner, ttl, 100, p.port, base.clone()));
                }
            }
            continue;
        }
        let eps: Vec<_> = view.snap.mc_endpoints(&imp.namespace, &imp.name).collect();
        endpoint_records(view, &base, &eps, out);
    }
}

/// Per endpoint: A/AAAA at the service name and at `<hostname>.<service>`, and an SRV per
/// named port of its slice.
fn endpoint_records(
    view: &View<'_>,
    base: &Name,
    eps: &[sextant_kube::EndpointRef<'_>],
    out: &mut Vec<Record>,
) {
    let ttl = view.cfg.ttl;
    for ep in eps {
        // CoreDNS weighs per endpoint subset: count the addresses sharing this
        // endpoint's slice ports.
        let n = eps
            .iter()
            .filter(|e| std::ptr::eq(e.ports, ep.ports))
            .count()
            .max(1);
        let weight = ((100.0 / n as f64).floor() as u16).max(1);
        out.push(addr_record(base.clone(), ttl, ep.ip));
        let host = super::lookup::endpoint_hostname(ep, view.cfg.endpoint_pod_names);
        let Ok(target) = base.prepend(host.as_bytes()) else {
            continue;
        };
        out.push(addr_record(target.clone(), ttl, ep.ip));
        for p in ep.ports {
            if p.name.is_empty() {
                continue;
            }
            let owner = base
                .prepend(proto_label(p.protocol).as_bytes())
                .and_then(|n| n.prepend(format!("_{}", p.name.to_lowercase()).as_bytes()));
            if let Ok(owner) = owner {
                out.push(srv(owner, ttl, weight, p.port, target.clone()));
            }
        }
    }
}
