//! The `k8s_external` plugin: an extra zone where services' external addresses (`externalIPs`,
//! LoadBalancer ingress IPs and hostnames) and, with `headless`, headless services' endpoints
//! answer from outside the cluster; SOA/NS at the apex, `ns1.<apex>` addresses, PTR for
//! external addresses, and AXFR through `transfer`. The data comes from the block's
//! `kubernetes` plugin through [`Externaler`], found by a link at setup.

mod xfr;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, RData, RType, Rcode, Record, Soa, Srv};

use crate::pkg::fallthrough::Fall;
use crate::pkg::{num, zones};
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx, Transferer};
use crate::plugins::kubernetes::lookup::addr_record;

const NAME: &str = "k8s_external";

/// Where an external name points (CoreDNS `msg.Service.Host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExtHost {
    Ip(IpAddr),
    /// A LoadBalancer hostname (answered with a CNAME), or `<svc>.<ns>` for a PTR.
    Name(String),
}

/// One external record source (CoreDNS `msg.Service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtService {
    pub(crate) host: ExtHost,
    pub(crate) port: i32,
    /// The name it lives at (`<svc>.<ns>.<zone>`, `<ep>.<svc>.<ns>.<zone>`, or for AXFR
    /// `_<port>._<proto>.<svc>.<ns>.<zone>`).
    pub(crate) domain: Name,
    /// AXFR only: the SRV target is the domain without its first two labels.
    pub(crate) target_strip: bool,
}

/// A headless service's records for AXFR (CoreDNS's `headlessServices` map entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XfrGroup {
    /// `<svc>.<ns>.<zone>` and every endpoint (address, port) of it.
    Endpoints(Name, Vec<ExtService>),
    /// `_<port>._<proto>.<svc>.<ns>.<zone>` and the endpoints (by name) serving that port.
    PortProtocol(Name, Vec<ExtService>),
}

/// What `k8s_external` needs from the plugin holding the cluster data (CoreDNS
/// `external.Externaler`, implemented by `kubernetes`).
pub(crate) trait Externaler: Send + Sync {
    /// The services for `qname` below `zone`, and the rcode when there are none.
    fn external(
        &self,
        qname: &Name,
        zone: &Name,
        qtype: RType,
        headless: bool,
    ) -> (Vec<ExtService>, Rcode);
    /// This server's addresses for the apex NS glue and `ns1.<apex>.<zone>`.
    fn external_address(&self, headless: bool) -> Vec<IpAddr>;
    /// Every external service of the cluster below `zone` (AXFR).
    fn external_services(&self, zone: &Name, headless: bool) -> (Vec<ExtService>, Vec<XfrGroup>);
    /// The zone serial (CoreDNS `ExternalSerial`).
    fn external_serial(&self) -> u32;
    /// The kubernetes plugin's TTL (SRV and CNAME records carry it).
    fn ttl(&self) -> u32;
}

/// One block's `k8s_external`.
pub(crate) struct K8sExternal {
    zones: Vec<Name>,
    apex: String,
    ttl: u32,
    headless: bool,
    fall: Fall,
    source: OnceLock<Arc<dyn Externaler>>,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let e = Arc::new(parse(lines, &ctx.block.zones)?);
    let e2 = e.clone();
    ctx.link(lines[0], move |chain| {
        let found = chain
            .iter()
            .find_map(|h| h.externaler())
            .ok_or("kubernetes plugin not loaded")?;
        let _ = e2.source.set(found);
        Ok(())
    });
    ctx.add_handler(e);
    Ok(())
}

fn parse(lines: &[&Directive], block_zones: &[String]) -> Result<K8sExternal, Error> {
    let mut e = K8sExternal {
        zones: Vec::new(),
        apex: "dns".into(),
        ttl: 5,
        headless: false,
        fall: Fall::default(),
        source: OnceLock::new(),
    };
    // Like CoreDNS, every line is parsed into one instance: the last line's zones win.
    for d in lines {
        e.zones = zones::from_args(d, &d.args, block_zones)?;
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "ttl" => {
                    sub.arg_count(1, usize::MAX)?;
                    let t = &sub.args[0];
                    let n = num::atoi(sub, t)?;
                    if !(0..=3600).contains(&n) {
                        return Err(sub.err_at(t, format!("ttl must be in range [0, 3600]: {n}")));
                    }
                    e.ttl = n as u32;
                }
                "apex" => {
                    sub.arg_count(1, usize::MAX)?;
                    e.apex = sub.args[0].text.clone();
                }
                "headless" => e.headless = true,
                "fallthrough" => e.fall = Fall::parse(sub)?,
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
    }
    Ok(e)
}

/// `a.b.<name>` as a name (the name keeps its spelling).
fn join(labels: &[&str], name: &Name) -> Option<Name> {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()).chain(name.labels())).ok()
}

impl K8sExternal {
    fn source(&self) -> Option<&Arc<dyn Externaler>> {
        self.source.get()
    }

    /// The longest zone containing `qname` (CoreDNS `plugin.Zones.Matches`).
    fn matches(&self, qname: &Name) -> Option<&Name> {
        zones::matches(&self.zones, qname)
    }

    fn soa(&self, zone: &Name, serial: u32) -> Record {
        let mname = join(&["ns1", &self.apex], zone).unwrap_or_else(|| zone.clone());
        let rname = join(&["hostmaster", &self.apex], zone).unwrap_or_else(|| zone.clone());
        Record::new(
            zone.clone(),
            self.ttl,
            RData::Soa(Soa {
                mname,
                rname,
                serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: self.ttl,
            }),
        )
    }

    fn ns_name(&self, zone: &Name) -> Name {
        join(&["ns1", &self.apex], zone).unwrap_or_else(|| zone.clone())
    }

    fn reply(req: &Request) -> Message {
        let mut m = req.reply();
        m.header.aa = true;
        m
    }

    /// Queries for the zone apex: SOA, NS (with `ns1.<apex>` glue), else NODATA.
    fn serve_apex(&self, req: &Request, src: &dyn Externaler, zone: &Name) -> Message {
        let mut m = Self::reply(req);
        let serial = src.external_serial();
        match req.qtype() {
            RType::SOA => m.answers.push(self.soa(zone, serial)),
            RType::NS => {
                m.answers.push(Record::new(
                    zone.clone(),
                    self.ttl,
                    RData::Ns(self.ns_name(zone)),
                ));
                let glue = join(&["ns1", &self.apex], &req.qname()).unwrap_or_else(|| zone.clone());
                for ip in src.external_address(self.headless) {
                    m.additional.push(addr_record(glue.clone(), self.ttl, ip));
                }
            }
            _ => m.authority.push(self.soa(zone, serial)),
        }
        m
    }

    /// Names below `<apex>.<zone>`: only `ns1.<apex>.<zone>` exists (with this server's
    /// addresses).
    fn serve_sub_apex(&self, req: &Request, src: &dyn Externaler, zone: &Name) -> Message {
        let mut m = Self::reply(req);
        let qname = req.qname();
        let serial = src.external_serial();
        let below = qname.label_count() - zone.label_count();
        match below {
            1 => m.authority.push(self.soa(zone, serial)),
            2 => {
                let first = qname.labels().next().unwrap_or_default();
                if !first.eq_ignore_ascii_case(b"ns1") {
                    m.set_rcode(Rcode::NXDOMAIN);
                    m.authority.push(self.soa(zone, serial));
                    return m;
                }
                let want_v6 = match req.qtype() {
                    RType::A => Some(false),
                    RType::AAAA => Some(true),
                    _ => None,
                };
                if let Some(v6) = want_v6 {
                    for ip in src.external_address(self.headless) {
                        if ip.is_ipv6() == v6 {
                            m.answers.push(addr_record(qname.clone(), self.ttl, ip));
                        }
                    }
                }
                if m.answers.is_empty() {
                    m.authority.push(self.soa(zone, serial));
                }
            }
            _ => {
                m.set_rcode(Rcode::NXDOMAIN);
                m.authority.push(self.soa(zone, serial));
            }
        }
        m
    }

    /// A or AAAA records: addresses with this plugin's TTL (duplicates dropped), and for a
    /// hostname a CNAME (the kubernetes TTL) plus the target's addresses through the server.
    async fn addresses(
        &self,
        req: &Request,
        src: &dyn Externaler,
        svcs: &[ExtService],
        v6: bool,
    ) -> (Vec<Record>, bool) {
        let qname = req.qname();
        let want = if v6 { RType::AAAA } else { RType::A };
        let mut seen: HashSet<IpAddr> = HashSet::new();
        let (mut out, mut tc) = (Vec::new(), false);
        for s in svcs {
            match &s.host {
                ExtHost::Ip(ip) if ip.is_ipv6() == v6 => {
                    if seen.insert(*ip) {
                        out.push(addr_record(qname.clone(), self.ttl, *ip));
                    }
                }
                ExtHost::Ip(_) => {}
                ExtHost::Name(host) => {
                    let Ok(target) = Name::parse(&fqdn(host)) else {
                        continue;
                    };
                    out.push(Record::new(
                        qname.clone(),
                        src.ttl(),
                        RData::Cname(target.clone()),
                    ));
                    let mut o = req.resolve(target, want).await;
                    if let Some(r) = o.message_mut() {
                        tc |= r.header.tc;
                        out.append(&mut r.answers);
                    }
                }
            }
        }
        (out, tc)
    }

    /// SRV records (CoreDNS `srv` of k8s_external): weights shared by priority 0, targets
    /// `<svc>.<ns>.<zone>` (or the endpoint's name) with their addresses for the additional
    /// section, hostnames as targets whose addresses are to be resolved through the server.
    fn srv_records(
        &self,
        owner: &Name,
        k8s_ttl: u32,
        svcs: &[ExtService],
    ) -> (Vec<Record>, Vec<Extra>) {
        let total = 100 * svcs.len().max(1);
        let mut weight = ((100.0 / total as f64) * 100.0).floor() as u16;
        if weight == 0 {
            weight = 1;
        }
        let mut dup: HashSet<(Name, u16, Option<String>)> = HashSet::new();
        let (mut ans, mut extra) = (Vec::new(), Vec::new());
        for s in svcs {
            if s.port == -1 {
                continue;
            }
            let port = s.port as u16;
            match &s.host {
                ExtHost::Name(host) => {
                    let Ok(mut target) = Name::parse(&fqdn(host)) else {
                        continue;
                    };
                    if s.target_strip {
                        target = strip2(&target);
                    }
                    if dup.insert((target.clone(), port, None)) {
                        ans.push(srv_record(
                            owner.clone(),
                            k8s_ttl,
                            weight,
                            port,
                            target.clone(),
                        ));
                    }
                    if dup.insert((target.clone(), 0, Some(host.to_ascii_lowercase()))) {
                        extra.push(Extra::Resolve(target));
                    }
                }
                ExtHost::Ip(ip) => {
                    let target = if s.target_strip {
                        strip2(&s.domain)
                    } else {
                        s.domain.clone()
                    };
                    if dup.insert((target.clone(), port, None)) {
                        ans.push(srv_record(
                            owner.clone(),
                            k8s_ttl,
                            weight,
                            port,
                            target.clone(),
                        ));
                    }
                    if dup.insert((target.clone(), 0, Some(ip.to_string()))) {
                        extra.push(Extra::Record(addr_record(target, self.ttl, *ip)));
                    }
                }
            }
        }
        (ans, extra)
    }

    /// [`Self::srv_records`] with hostnames' addresses resolved through the server.
    async fn srv(
        &self,
        req: &Request,
        src: &dyn Externaler,
        svcs: &[ExtService],
    ) -> (Vec<Record>, Vec<Record>) {
        let (ans, extra) = self.srv_records(&req.qname(), src.ttl(), svcs);
        let mut out = Vec::new();
        for x in extra {
            match x {
                Extra::Record(r) => out.push(r),
                Extra::Resolve(target) => {
                    for t in [RType::A, RType::AAAA] {
                        let mut o = req.resolve(target.clone(), t).await;
                        if let Some(r) = o.message_mut() {
                            out.append(&mut r.answers);
                        }
                    }
                }
            }
        }
        (ans, out)
    }

    fn ptr(&self, qname: &Name, svcs: &[ExtService]) -> Vec<Record> {
        let Some(first) = self.zones.first() else {
            return Vec::new();
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for s in svcs {
            let ExtHost::Name(h) = &s.host else { continue };
            if !seen.insert(h.clone()) {
                continue;
            }
            let target = format!(
                "{}.{}",
                h.trim_end_matches('.'),
                first.to_lowercase_string()
            )
            .replace("..", ".");
            if let Ok(t) = Name::parse(&target) {
                out.push(Record::new(qname.clone(), self.ttl, RData::Ptr(t)));
            }
        }
        out
    }

    async fn answer(&self, req: &mut Request, next: Next<'_>) -> Outcome {
        let qname = req.qname().to_lowercase();
        let Some(zone) = self.matches(&qname).cloned() else {
            return next.run(req).await;
        };
        let Some(src) = self.source().cloned() else {
            return Outcome::error(NAME, Rcode::SERVFAIL, "kubernetes plugin not loaded");
        };
        for z in &self.zones {
            if qname == *z {
                return Outcome::reply(NAME, self.serve_apex(req, &*src, &zone));
            }
            if join(&[&self.apex], z).is_some_and(|a| qname.is_subdomain_of(&a)) {
                return Outcome::reply(NAME, self.serve_sub_apex(req, &*src, &zone));
            }
        }
        let qtype = req.qtype();
        let (svcs, rcode) = src.external(&qname, &zone, qtype, self.headless);
        let serial = src.external_serial();
        let mut m = Self::reply(req);
        if svcs.is_empty() {
            if self.fall.through(&qname) && rcode == Rcode::NXDOMAIN {
                return next.run(req).await;
            }
            m.set_rcode(rcode);
            m.authority.push(self.soa(&zone, serial));
            return Outcome::reply(NAME, m);
        }
        match qtype {
            RType::A | RType::AAAA => {
                let (ans, tc) = self
                    .addresses(req, &*src, &svcs, qtype == RType::AAAA)
                    .await;
                m.answers = ans;
                m.header.tc = tc;
            }
            RType::SRV => {
                let (ans, extra) = self.srv(req, &*src, &svcs).await;
                m.answers = ans;
                m.additional = extra;
            }
            RType::PTR => m.answers = self.ptr(&req.qname(), &svcs),
            _ => {}
        }
        if m.answers.is_empty() {
            m.authority.push(self.soa(&zone, serial));
        }
        Outcome::reply(NAME, m)
    }
}

/// An additional-section entry of an SRV answer.
enum Extra {
    Record(Record),
    /// A hostname target whose A and AAAA records come from the whole server.
    Resolve(Name),
}

/// `name` without its first two labels (CoreDNS `targetStrip(name, 2)`; the name itself when
/// it has no more than two).
fn strip2(name: &Name) -> Name {
    if name.label_count() <= 2 {
        return name.clone();
    }
    Name::from_labels(name.labels().skip(2)).unwrap_or_else(|_| name.clone())
}

fn fqdn(s: &str) -> String {
    if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

fn srv_record(owner: Name, ttl: u32, weight: u16, port: u16, target: Name) -> Record {
    Record::new(
        owner,
        ttl,
        RData::Srv(Srv {
            priority: 0,
            weight,
            port,
            target,
        }),
    )
}

impl Handler for K8sExternal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.answer(req, next))
    }

    fn transferer(&self) -> Option<&dyn Transferer> {
        Some(self)
    }
}

impl Transferer for K8sExternal {
    fn transfer(&self, zone: &Name, serial: u32) -> Option<Vec<Record>> {
        xfr::records(self, zone, serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<K8sExternal, Error> {
        let cf = sextant_corefile::parse_str(
            "Corefile",
            &format!("example.com {{\n{text}\n}}\n"),
            std::path::Path::new("."),
        )
        .unwrap();
        let lines: Vec<&Directive> = cf.blocks[0].directives.iter().collect();
        parse(&lines, &["example.com.".to_string()])
    }

    #[test]
    fn setup_as_coredns() {
        let e = parse_str("k8s_external").unwrap();
        assert_eq!(e.zones, vec![Name::parse("example.com.").unwrap()]);
        assert_eq!((e.ttl, e.apex.as_str(), e.headless), (5, "dns", false));
        assert!(e.fall.is_off());
        let e = parse_str(
            "k8s_external foo.com bar.com {\n apex sub\n ttl 60\n headless\n fallthrough\n}",
        )
        .unwrap();
        assert_eq!(e.zones.len(), 2);
        assert_eq!((e.ttl, e.apex.as_str(), e.headless), (60, "sub", true));
        assert_eq!(e.fall.zones(), [Name::root()]);
        let e = parse_str("k8s_external {\n fallthrough a.com b.com\n}").unwrap();
        assert_eq!(e.fall.zones().len(), 2);
        let e = parse_str("k8s_external {\n ttl 0\n}").unwrap();
        assert_eq!(e.ttl, 0);
    }

    #[test]
    fn bad_options_name_their_position() {
        for (text, want, line, col) in [
            ("k8s_external {\n ttl\n}", "wrong argument count", 3, 2),
            (
                "k8s_external {\n ttl x\n}",
                "strconv.Atoi: parsing \"x\": invalid syntax",
                3,
                6,
            ),
            (
                "k8s_external {\n ttl 3601\n}",
                "ttl must be in range [0, 3600]: 3601",
                3,
                6,
            ),
            (
                "k8s_external {\n ttl -1\n}",
                "ttl must be in range [0, 3600]: -1",
                3,
                6,
            ),
            ("k8s_external {\n apex\n}", "wrong argument count", 3, 2),
            ("k8s_external {\n nope\n}", "unknown property 'nope'", 3, 2),
        ] {
            let e = parse_str(text)
                .err()
                .unwrap_or_else(|| panic!("{text} parsed"));
            assert!(e.msg.contains(want), "{text}: {}", e.msg);
            assert_eq!((e.pos.line, e.pos.col), (line, col), "{text}: {e}");
        }
    }
}
