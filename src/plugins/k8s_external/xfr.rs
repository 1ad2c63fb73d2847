//! The `k8s_external` zone as an AXFR record list, in CoreDNS `transfer.go` order: SOA, NS,
//! the NS addresses, then per service (sorted by namespace and name here; CoreDNS's order is
//! its informer's) A, AAAA and SRV records, headless services' endpoint records, then the SOA.
//! CoreDNS sends the SRV records of a headless service's endpoints twice; so does this.

use std::collections::HashSet;

use sextant_wire::{Name, RData, Record};

use super::{ExtHost, ExtService, K8sExternal, XfrGroup};
use crate::plugins::kubernetes::lookup::addr_record;

/// What CoreDNS's `a` then `aaaa` give for `svcs` at `owner` in a transfer: addresses, and a
/// CNAME for a hostname in each pass (its target is not resolved during a transfer).
fn addrs(e: &K8sExternal, owner: &Name, k8s_ttl: u32, svcs: &[ExtService], out: &mut Vec<Record>) {
    for v6 in [false, true] {
        let mut seen = HashSet::new();
        for s in svcs {
            match &s.host {
                ExtHost::Ip(ip) => {
                    if ip.is_ipv6() == v6 && seen.insert(*ip) {
                        out.push(addr_record(owner.clone(), e.ttl, *ip));
                    }
                }
                ExtHost::Name(h) => {
                    if let Ok(t) = Name::parse(&super::fqdn(h)) {
                        out.push(Record::new(owner.clone(), k8s_ttl, RData::Cname(t)));
                    }
                }
            }
        }
    }
}

pub(super) fn records(e: &K8sExternal, zone: &Name, serial: u32) -> Option<Vec<Record>> {
    let z = e.matches(zone)?;
    if z != zone {
        return None;
    }
    let src = e.source()?.clone();
    let soa = e.soa(zone, src.external_serial());
    let cur = match &soa.data {
        RData::Soa(s) => s.serial,
        _ => 0,
    };
    if serial != 0 && serial >= cur {
        return Some(vec![soa]);
    }
    let mut out = vec![soa.clone()];
    let ns = e.ns_name(zone);
    out.push(Record::new(zone.clone(), e.ttl, RData::Ns(ns.clone())));
    for ip in src.external_address(e.headless) {
        out.push(addr_record(ns.clone(), e.ttl, ip));
    }
    let (svcs, groups) = src.external_services(zone, e.headless);
    let mut srv_seen: HashSet<Name> = HashSet::new();
    let k8s_ttl = src.ttl();
    for s in &svcs {
        let one = std::slice::from_ref(s);
        if !s.target_strip {
            addrs(e, &s.domain, k8s_ttl, one, &mut out);
        }
        let (recs, _) = e.srv_records(&s.domain, k8s_ttl, one);
        for r in recs {
            if srv_seen.insert(r.name.clone()) {
                out.push(r);
            }
        }
    }
    for g in &groups {
        match g {
            XfrGroup::Endpoints(name, list) => {
                addrs(e, name, k8s_ttl, list, &mut out);
                let (recs, _) = e.srv_records(name, k8s_ttl, list);
                out.extend(recs.iter().cloned());
                out.extend(recs);
                for s in list {
                    let one = std::slice::from_ref(s);
                    addrs(e, &s.domain, k8s_ttl, one, &mut out);
                    let (recs, _) = e.srv_records(&s.domain, k8s_ttl, one);
                    out.extend(recs.iter().cloned());
                    out.extend(recs);
                }
            }
            XfrGroup::PortProtocol(name, list) => {
                let (recs, _) = e.srv_records(name, k8s_ttl, list);
                out.extend(recs);
            }
        }
    }
    out.push(soa);
    Some(out)
}
