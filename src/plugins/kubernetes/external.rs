//! What the `kubernetes` plugin tells `k8s_external` (CoreDNS `plugin/kubernetes/external.go`):
//! services by external address, external names below a zone, the addresses of this server
//! for the apex NS, the services of a zone for AXFR, and the external zone's serial.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sextant_kube::{Proto, Snapshot};
use sextant_wire::{Name, RType, Rcode};

use super::lookup::{endpoint_hostname, name_in, View};
use super::setup::Config;
use super::Slot;
use crate::plugins::k8s_external::{ExtHost, ExtService, Externaler, XfrGroup};

/// The kubernetes plugin's side of `k8s_external`.
pub(super) struct External {
    pub(super) cfg: Arc<Config>,
    pub(super) index: Slot,
    pub(super) local_ips: Arc<ArcSwap<Vec<IpAddr>>>,
    pub(super) empty: Arc<Snapshot>,
}

fn strip_underscore(s: &str) -> &str {
    s.strip_prefix('_').unwrap_or(s)
}

/// CoreDNS `matchPortAndProtocol`: an empty wanted value matches anything.
fn port_proto_match(want_port: &str, name: &str, want_proto: &str, proto: Proto) -> bool {
    (want_port.is_empty() || want_port.eq_ignore_ascii_case(name))
        && (want_proto.is_empty() || want_proto.eq_ignore_ascii_case(proto.as_str()))
}

impl External {
    fn snapshot(&self) -> Arc<Snapshot> {
        match self.index.load_full() {
            Some(i) => Arc::clone(&i.snapshot()),
            None => self.empty.clone(),
        }
    }

    fn with_view<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let snap = self.snapshot();
        let ips = self.local_ips.load();
        let view = View {
            cfg: &self.cfg,
            snap: &snap,
            local_ips: &ips,
        };
        f(&view)
    }
}

/// Every external address of a service (CoreDNS's `ExternalIPs`: `spec.externalIPs`, then
/// LoadBalancer ingress IPs, then ingress hostnames).
fn externals(svc: &sextant_kube::Service) -> impl Iterator<Item = ExtHost> + '_ {
    svc.external_ips.iter().map(|ip| ExtHost::Ip(*ip)).chain(
        svc.external_hosts
            .iter()
            .map(|h| ExtHost::Name(h.to_string())),
    )
}

impl Externaler for External {
    fn external(
        &self,
        qname: &Name,
        zone: &Name,
        qtype: RType,
        headless: bool,
    ) -> (Vec<ExtService>, Rcode) {
        self.with_view(|v| {
            if qtype == RType::PTR {
                if let Some(ip) = qname.reverse_address() {
                    let found: Vec<ExtService> = v
                        .snap
                        .services_by_external_ip(ip)
                        .filter(|s| {
                            v.cfg.namespaces.is_empty() || v.namespace_exposed(&s.namespace)
                        })
                        .map(|s| ExtService {
                            host: ExtHost::Name(format!("{}.{}", s.name, s.namespace)),
                            port: 0,
                            domain: qname.clone(),
                            target_strip: false,
                        })
                        .collect();
                    if found.is_empty() {
                        return (Vec::new(), Rcode::NXDOMAIN);
                    }
                    return (found, Rcode::NOERROR);
                }
            }
            let segs: Vec<String> = qname
                .prefix_labels(zone)
                .unwrap_or_default()
                .iter()
                .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
                .collect();
            let Some(mut last) = segs.len().checked_sub(1) else {
                return (Vec::new(), Rcode::SERVFAIL);
            };
            let namespace = segs[last].as_str();
            if !v.namespace_exposed(namespace) {
                return (Vec::new(), Rcode::NXDOMAIN);
            }
            let Some(l) = last.checked_sub(1) else {
                return (Vec::new(), Rcode::NOERROR);
            };
            last = l;
            let service = segs[last].as_str();
            let (mut port, mut protocol, mut endpoint) = ("", "", "");
            match last {
                0 => {}
                1 => endpoint = strip_underscore(&segs[0]),
                2 => {
                    protocol = strip_underscore(&segs[1]);
                    port = strip_underscore(&segs[0]);
                }
                _ => return (Vec::new(), Rcode::NXDOMAIN),
            }
            let mut rcode = Rcode::NXDOMAIN;
            let mut out = Vec::new();
            let Some(svc) = v.snap.service(namespace, service) else {
                return (Vec::new(), rcode);
            };
            let has_ext = !svc.external_ips.is_empty() || !svc.external_hosts.is_empty();
            if headless && !has_ext && (svc.is_headless() || !endpoint.is_empty()) {
                if !v.cfg.noendpoints {
                    for ep in v.snap.endpoints(&svc.namespace, &svc.name) {
                        let host = endpoint_hostname(&ep, v.cfg.endpoint_pod_names);
                        if !endpoint.is_empty() && !endpoint.eq_ignore_ascii_case(&host) {
                            continue;
                        }
                        for p in ep.ports {
                            if !port_proto_match(port, &p.name, protocol, p.protocol) {
                                continue;
                            }
                            rcode = Rcode::NOERROR;
                            let Some(domain) = name_in(&[&host, &svc.name, &svc.namespace], zone)
                            else {
                                continue;
                            };
                            out.push(ExtService {
                                host: ExtHost::Ip(ep.ip),
                                port: p.port,
                                domain,
                                target_strip: false,
                            });
                        }
                    }
                }
            } else {
                for host in externals(svc) {
                    for p in &svc.ports {
                        if !port_proto_match(port, &p.name, protocol, p.protocol) {
                            continue;
                        }
                        rcode = Rcode::NOERROR;
                        let Some(domain) = name_in(&[&svc.name, &svc.namespace], zone) else {
                            continue;
                        };
                        out.push(ExtService {
                            host: host.clone(),
                            port: p.port,
                            domain,
                            target_strip: false,
                        });
                    }
                }
            }
            (out, rcode)
        })
    }

    fn external_address(&self, headless: bool) -> Vec<IpAddr> {
        self.with_view(|v| {
            let mut out = Vec::new();
            let mut found = false;
            for ip in v.local_ips {
                let mut seen: HashSet<(&str, &str)> = HashSet::new();
                for hit in v.snap.endpoints_by_ip(*ip) {
                    found = true;
                    if !seen.insert((hit.namespace, hit.service)) {
                        continue;
                    }
                    let Some(svc) = v.snap.service(hit.namespace, hit.service) else {
                        continue;
                    };
                    if headless && svc.is_headless() {
                        out.extend(v.snap.endpoints(&svc.namespace, &svc.name).map(|e| e.ip));
                    } else {
                        out.extend(svc.external_ips.iter().copied());
                    }
                }
            }
            if !found {
                out.extend(v.local_ips.iter().copied());
            }
            out
        })
    }

    fn external_services(&self, zone: &Name, headless: bool) -> (Vec<ExtService>, Vec<XfrGroup>) {
        self.with_view(|v| {
            let mut plain = Vec::new();
            let mut groups = Vec::new();
            let mut services: Vec<_> = v.snap.services().collect();
            services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            for svc in services {
                let has_ext = !svc.external_ips.is_empty() || !svc.external_hosts.is_empty();
                let Some(base) = name_in(&[&svc.name, &svc.namespace], zone) else {
                    continue;
                };
                if headless && !has_ext && svc.is_headless() {
                    let mut by_ep = Vec::new();
                    let mut by_port: Vec<(Name, Vec<ExtService>)> = Vec::new();
                    for ep in v.snap.endpoints(&svc.namespace, &svc.name) {
                        let host = endpoint_hostname(&ep, v.cfg.endpoint_pod_names);
                        let Ok(ep_name) = base.prepend(host.as_bytes()) else {
                            continue;
                        };
                        for p in ep.ports {
                            by_ep.push(ExtService {
                                host: ExtHost::Ip(ep.ip),
                                port: p.port,
                                domain: ep_name.clone(),
                                target_strip: false,
                            });
                            if p.name.is_empty() {
                                continue;
                            }
                            let pname = format!("_{}", p.name.to_ascii_lowercase());
                            let proto = format!("_{}", p.protocol.as_lower());
                            let Some(owner) = name_in(&[&pname, &proto], &base) else {
                                continue;
                            };
                            let s = ExtService {
                                host: ExtHost::Name(ep_name.to_lowercase_string()),
                                port: p.port,
                                domain: owner.clone(),
                                target_strip: false,
                            };
                            match by_port.iter_mut().find(|(o, _)| *o == owner) {
                                Some((_, list)) => list.push(s),
                                None => by_port.push((owner, vec![s])),
                            }
                        }
                    }
                    if !by_ep.is_empty() {
                        groups.push(XfrGroup::Endpoints(base.clone(), by_ep));
                    }
                    for (owner, list) in by_port {
                        groups.push(XfrGroup::PortProtocol(owner, list));
                    }
                    continue;
                }
                for host in externals(svc) {
                    for p in &svc.ports {
                        plain.push((
                            ExtService {
                                host: host.clone(),
                                port: p.port,
                                domain: base.clone(),
                                target_strip: false,
                            },
                            false,
                        ));
                        let pname = format!("_{}", p.name.to_ascii_lowercase());
                        let proto = format!("_{}", p.protocol.as_lower());
                        if let Some(owner) = name_in(&[&pname, &proto], &base) {
                            plain.push((
                                ExtService {
                                    host: host.clone(),
                                    port: p.port,
                                    domain: owner,
                                    target_strip: false,
                                },
                                true,
                            ));
                        }
                    }
                }
            }
            let plain = plain
                .into_iter()
                .map(|(s, port_proto)| ExtService {
                    target_strip: port_proto,
                    ..s
                })
                .collect();
            (plain, groups)
        })
    }

    fn external_serial(&self) -> u32 {
        self.snapshot().ext_serial()
    }

    fn ttl(&self) -> u32 {
        self.cfg.ttl
    }
}
