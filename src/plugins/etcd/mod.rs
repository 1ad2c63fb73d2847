//! The `etcd` plugin: SkyDNS service discovery from etcd v3 (CoreDNS `plugin/etcd`), answered
//! from a local copy of its zones' keys that watches keep current (see [`client`]); setup, the
//! handler, and CoreDNS's backend lookup (`plugin/backend_lookup.go`) over SkyDNS services.

pub(crate) mod client;
pub(crate) mod metrics;
pub(crate) mod proto;
pub(crate) mod service;
pub(crate) mod store;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sextant_corefile::{Directive, Error, Token};
use sextant_wire::{Message, Name, RData, RType, Rcode, Record, Reply, Soa, Srv};

use crate::pkg::clock::Clock;
use crate::pkg::fallthrough::Fall;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use crate::server::lifecycle::CarryKey;

use client::{Client, Endpoint};
use service::{HostType, Service};
use store::{GetError, Store};

/// TTL of a service without one (CoreDNS `defaultTTL`).
const DEFAULT_TTL: u32 = 300;
/// Priority of a service without one.
const DEFAULT_PRIORITY: i64 = 10;
const DEFAULT_LEASE_MIN_TTL: u32 = 30;
const DEFAULT_LEASE_MAX_TTL: u32 = 86400;
/// The SOA minimum TTL (CoreDNS `Etcd.MinTTL`).
const MIN_TTL: u32 = 30;
/// CNAMEs followed inside the zone (CoreDNS `maxCnameChainLength`).
const MAX_CNAME_CHAIN: usize = 10;
/// How long a new configuration waits for the first read of etcd before serving.
const WARMUP: Duration = Duration::from_secs(5);

/// Everything the Corefile says about one `etcd` line.
#[derive(Debug)]
pub(crate) struct Config {
    pub zones: Vec<Name>,
    pub fall: Fall,
    pub path: String,
    pub endpoints: Vec<Endpoint>,
    pub credentials: Option<(String, String)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The `tls` arguments, part of the identity of the local copy across reloads.
    pub tls_args: Option<Vec<String>>,
    pub min_lease_ttl: u32,
    pub max_lease_ttl: u32,
}

/// CoreDNS's `parseTTL`: seconds, or a Go duration; whole seconds, at most 2^32-1.
fn parse_ttl(d: &Directive, t: &Token, what: &str) -> Result<u32, Error> {
    let s = t.text.trim();
    if s.is_empty() {
        return Ok(0);
    }
    let with_unit = if s.parse::<u64>().is_ok() {
        format!("{s}s")
    } else {
        s.to_string()
    };
    let secs = match crate::pkg::duration::parse(&with_unit) {
        Ok(dur) => dur.as_secs(),
        Err(crate::pkg::duration::DurationError::Negative(_)) => {
            return Err(d.err_at(t, format!("invalid {what} value: TTL must be non-negative")))
        }
        Err(_) => {
            return Err(d.err_at(
                t,
                format!("invalid {what} value: invalid TTL format, use format like '30', '30s', '5m', '1h', or '2h30m'"),
            ))
        }
    };
    u32::try_from(secs).map_err(|_| {
        d.err_at(
            t,
            format!("invalid {what} value: TTL too large, maximum is 4294967295 seconds"),
        )
    })
}

/// Parses an `etcd` directive.
pub(crate) fn parse(d: &Directive, block_zones: &[String]) -> Result<Config, Error> {
    let mut c = Config {
        zones: zones::from_args(d, &d.args, block_zones)?,
        fall: Fall::default(),
        path: "skydns".to_string(),
        endpoints: Vec::new(),
        credentials: None,
        tls: None,
        tls_args: None,
        min_lease_ttl: DEFAULT_LEASE_MIN_TTL,
        max_lease_ttl: DEFAULT_LEASE_MAX_TTL,
    };
    let mut endpoint_args: Option<&Directive> = None;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            // Both ignored by CoreDNS 1.14.7 (kept so old Corefiles load).
            "stubzones" | "debug" | "upstream" => {}
            "fallthrough" => c.fall = Fall::parse(sub)?,
            "path" => {
                sub.arg_count(1, 1)?;
                c.path = sub.args[0].text.clone();
            }
            "endpoint" => {
                sub.arg_count(1, usize::MAX)?;
                endpoint_args = Some(sub);
            }
            "tls" => {
                c.tls = Some(crate::pkg::tls::client_config(sub, &sub.args)?);
                c.tls_args = Some(sub.args.iter().map(|t| t.text.clone()).collect());
            }
            "credentials" => {
                sub.arg_count(1, usize::MAX)?;
                if sub.args.len() != 2 {
                    return Err(sub.err("credentials requires 2 arguments, username and password"));
                }
                c.credentials = Some((sub.args[0].text.clone(), sub.args[1].text.clone()));
            }
            "min-lease-ttl" => {
                sub.arg_count(1, 1)?;
                c.min_lease_ttl = parse_ttl(sub, &sub.args[0], "min-lease-ttl")?;
            }
            "max-lease-ttl" => {
                sub.arg_count(1, 1)?;
                c.max_lease_ttl = parse_ttl(sub, &sub.args[0], "max-lease-ttl")?;
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    // Only a user name and a password together turn authentication on, as in CoreDNS.
    if c.credentials
        .as_ref()
        .is_some_and(|(u, p)| u.is_empty() || p.is_empty())
    {
        c.credentials = None;
    }
    c.endpoints = match endpoint_args {
        Some(sub) => sub
            .args
            .iter()
            .map(|t| {
                Endpoint::parse(&t.text)
                    .map_err(|e| sub.err_at(t, format!("invalid endpoint '{}': {e}", t.text)))
            })
            .collect::<Result<_, _>>()?,
        None => vec![Endpoint::parse(client::DEFAULT_ENDPOINT).map_err(|e| d.err(e))?],
    };
    // An https:// endpoint without a `tls` line verifies the server with the system roots.
    if c.tls.is_none() && c.endpoints.iter().any(Endpoint::is_https) {
        c.tls = Some(crate::pkg::tls::client_config(d, &[])?);
    }
    Ok(c)
}

/// The identity of a local copy: a reload with the same etcd, path, zones and credentials
/// keeps it (and its data, should etcd be down then). Blocks with other zones have copies of
/// their own (each holds its zones' keys only).
#[derive(PartialEq)]
struct CopyKey {
    endpoints: Vec<String>,
    path: String,
    zones: Vec<Name>,
    credentials: Option<(String, String)>,
    tls: Option<Vec<String>>,
}

impl CarryKey for CopyKey {
    type Value = Store;
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    let c = parse(d, &ctx.block.zones)?;
    let key = CopyKey {
        endpoints: c.endpoints.iter().map(|e| e.to_string()).collect(),
        path: c.path.clone(),
        zones: c.zones.clone(),
        credentials: c.credentials.clone(),
        tls: c.tls_args.clone(),
    };
    let carry = ctx.carry();
    let store = match carry.get(&key) {
        Some(s) => s,
        None => {
            let zones: Vec<String> = c.zones.iter().map(|z| z.to_string()).collect();
            let s = Arc::new(Store::new(
                key.endpoints.join(","),
                c.path.clone(),
                zones.join(","),
            ));
            carry.put(key, &s);
            s
        }
    };
    let clock = ctx.clock();
    let client = Arc::new(Client::new(
        c.endpoints.clone(),
        c.tls.clone(),
        c.credentials.clone(),
        &c.path,
        &c.zones,
    ));
    let (s, cl, ck) = (store.clone(), client.clone(), clock.clone());
    ctx.task(move |t| async move {
        let spawner = t.spawner();
        tokio::select! {
            _ = t.cancelled() => {}
            _ = cl.run(&s, &ck, &spawner) => {}
        }
    });
    let s = store.clone();
    ctx.warmup(move |_t| async move {
        if !s.synced() {
            s.first_attempt(WARMUP).await;
        }
    });
    ctx.add_handler(Arc::new(Etcd {
        zones: c.zones,
        fall: c.fall,
        prefix: c.path,
        store,
        min_lease_ttl: c.min_lease_ttl,
        max_lease_ttl: c.max_lease_ttl,
        clock,
    }));
    Ok(())
}

/// Why a lookup has no records.
#[derive(Debug)]
enum LookupError {
    /// CoreDNS `errKeyNotFound`: NXDOMAIN (or fallthrough).
    NotFound,
    /// Anything else: SERVFAIL, logged.
    Other(String),
}

type LResult<T> = Result<T, LookupError>;

/// The handler.
pub(crate) struct Etcd {
    zones: Vec<Name>,
    fall: Fall,
    prefix: String,
    store: Arc<Store>,
    min_lease_ttl: u32,
    max_lease_ttl: u32,
    clock: Clock,
}

/// What a query's lookup produced.
#[derive(Default)]
struct Answer {
    records: Vec<Record>,
    extra: Vec<Record>,
    tc: bool,
}

fn addr_record(name: Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(a) => Record::new(name, ttl, RData::A(a)),
        IpAddr::V6(a) => Record::new(name, ttl, RData::Aaaa(a)),
    }
}

fn host_ip(h: &HostType) -> Option<IpAddr> {
    match h {
        HostType::A(a) => Some(IpAddr::V4(*a)),
        HostType::Aaaa(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// `label.zone`, e.g. `ns.dns.<zone>`.
fn under(zone: &Name, labels: &[&[u8]]) -> Option<Name> {
    let mut n = zone.clone();
    for l in labels.iter().rev() {
        n = n.prepend(l).ok()?;
    }
    Some(n)
}

/// CoreDNS `isDuplicate`: true when (name, port) or (name, addr) was seen; records it.
fn is_duplicate(
    seen: &mut HashSet<(String, u16, String)>,
    name: &Name,
    addr: &str,
    port: u16,
) -> bool {
    let k = if addr.is_empty() {
        (name.to_string(), port, String::new())
    } else {
        (name.to_string(), 0, addr.to_string())
    };
    !seen.insert(k)
}

impl Etcd {
    /// The SOA CoreDNS's etcd plugin makes for `zone`.
    fn soa(&self, zone: &Name) -> Record {
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        Record::new(
            zone.clone(),
            MIN_TTL.min(300),
            RData::Soa(Soa {
                mname: under(zone, &[b"ns", b"dns"]).unwrap_or_else(|| zone.clone()),
                rname: under(zone, &[b"hostmaster"]).unwrap_or_else(|| zone.clone()),
                serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: MIN_TTL,
            }),
        )
    }

    /// CoreDNS `Etcd.TTL`: the smaller of the lease's remaining time (clamped) and the
    /// service's TTL, whichever is set; 300 when neither is.
    fn ttl(&self, lease: i64, serv: &Service) -> u32 {
        let mut etcd_ttl = 0u32;
        if lease != 0 {
            if let Some(left) = self.store.lease_remaining(lease, self.clock.now()) {
                let min = if self.min_lease_ttl == 0 {
                    DEFAULT_LEASE_MIN_TTL
                } else {
                    self.min_lease_ttl
                };
                let max = if self.max_lease_ttl == 0 {
                    DEFAULT_LEASE_MAX_TTL
                } else {
                    self.max_lease_ttl
                };
                etcd_ttl = if left < min as i64 {
                    min
                } else if left > max as i64 {
                    max
                } else {
                    left as u32
                };
            }
        }
        match (etcd_ttl, serv.ttl) {
            (0, 0) => DEFAULT_TTL,
            (0, t) => t,
            (e, 0) => e,
            (e, t) => e.min(t),
        }
    }

    /// CoreDNS `Etcd.Records` + `msg.Group` (`Services`): the services for `name` (lower
    /// case), wildcards matched, filtered for `qtype`.
    fn services(&self, name: &Name, exact: bool, qtype: RType) -> LResult<Vec<Service>> {
        let (path, star) = service::path_with_wildcard(name, &self.prefix);
        let kvs = self.store.get(&path, !exact).map_err(|e| match e {
            GetError::NotFound => LookupError::NotFound,
            GetError::Unavailable(why) => LookupError::Other(format!("etcd: {why}")),
        })?;
        let full = service::path(name, &self.prefix);
        let segments: Vec<&str> = full.split('/').collect();
        let mut out = Vec::new();
        'nodes: for (key, kv) in kvs {
            if star {
                let parts: Vec<&str> = key.split('/').collect();
                for (i, n) in segments.iter().enumerate() {
                    if i >= parts.len() {
                        continue 'nodes;
                    }
                    if *n == "*" || *n == "any" {
                        continue;
                    }
                    if parts[i] != *n {
                        continue 'nodes;
                    }
                }
            }
            let mut serv = kv
                .value
                .clone()
                .map_err(|e| LookupError::Other(format!("{key}: {e}")))?;
            serv.ttl = self.ttl(kv.lease, &serv);
            serv.key = key;
            if serv.priority == 0 {
                serv.priority = DEFAULT_PRIORITY;
            }
            if (qtype == RType::TXT && !serv.text.is_empty()) || !serv.host.is_empty() {
                out.push(serv);
            }
        }
        Ok(service::group(out))
    }

    /// CoreDNS `checkForApex`: at the zone apex the services of `apex.dns.<zone>`, if any.
    fn check_for_apex(&self, zone: &Name, name: &Name, qtype: RType) -> LResult<Vec<Service>> {
        if name != zone {
            return self.services(name, false, qtype);
        }
        if let Some(apex) = under(zone, &[b"apex", b"dns"]) {
            if let Ok(s) = self.services(&apex, false, qtype) {
                return Ok(s);
            }
        }
        self.services(name, false, qtype)
    }

    /// Resolves `name` through the whole server (CoreDNS `upstream.Lookup`); None when there
    /// is no server to ask.
    async fn upstream(&self, req: &Request, name: Name, qtype: RType) -> Option<Message> {
        if req.resolver.is_none() || req.depth >= 10 {
            return None;
        }
        let o = req.resolve(name, qtype).await;
        let rcode = o.final_rcode();
        Some(match o.reply.and_then(Reply::into_message) {
            Some(m) => m,
            None => {
                // The server would have written an error reply: no records.
                let mut m = req.reply();
                m.set_rcode(rcode);
                m
            }
        })
    }

    /// CoreDNS `plugin.A`/`plugin.AAAA`/`plugin.TXT`: records of `qtype` for `owner`,
    /// following CNAMEs inside the zone here and outside it through the whole server.
    fn chase<'a>(
        &'a self,
        req: &'a Request,
        zone: &'a Name,
        owner: Name,
        qtype: RType,
        prev: Vec<Record>,
    ) -> BoxFuture<'a, LResult<(Vec<Record>, bool)>> {
        Box::pin(async move {
            let lname = owner.to_lowercase();
            let services = if qtype == RType::TXT {
                self.services(&lname, false, qtype)?
            } else {
                self.check_for_apex(zone, &lname, qtype)?
            };
            let mut out = Vec::new();
            let mut tc = false;
            let mut dup: HashSet<String> = HashSet::new();
            for serv in services {
                let ht = serv.host_type();
                match ht {
                    HostType::Name => {
                        let Ok(target) = Name::parse(&serv.host) else {
                            continue;
                        };
                        if target.is_subdomain_of(&lname) {
                            continue; // x CNAME x (or below x) is a loop
                        }
                        let cname =
                            Record::new(owner.clone(), serv.ttl, RData::Cname(target.clone()));
                        if prev.len() > MAX_CNAME_CHAIN {
                            continue;
                        }
                        if prev.iter().any(
                            |r| matches!(&r.data, RData::Cname(t) if t.eq_case_sensitive(&target)),
                        ) {
                            continue;
                        }
                        if target.is_subdomain_of(zone) {
                            let mut p2 = prev.clone();
                            p2.push(cname.clone());
                            if let Ok((next, t)) = self.chase(req, zone, target, qtype, p2).await {
                                tc |= t;
                                if !next.is_empty() {
                                    out.push(cname);
                                    out.extend(next);
                                }
                            }
                            continue;
                        }
                        let Some(m) = self.upstream(req, target, qtype).await else {
                            continue;
                        };
                        if qtype != RType::TXT {
                            tc |= m.header.tc;
                        }
                        out.push(cname);
                        out.extend(m.answers);
                    }
                    HostType::Txt if qtype == RType::TXT && dup.insert(serv.text.clone()) => {
                        out.push(Record::new(
                            owner.clone(),
                            serv.ttl,
                            RData::Txt(service::split255(&serv.text)),
                        ));
                    }
                    HostType::A(a) if qtype == RType::A && dup.insert(serv.host.clone()) => {
                        out.push(Record::new(owner.clone(), serv.ttl, RData::A(a)));
                    }
                    HostType::Aaaa(a) if qtype == RType::AAAA && dup.insert(serv.host.clone()) => {
                        out.push(Record::new(owner.clone(), serv.ttl, RData::Aaaa(a)));
                    }
                    _ => {}
                }
            }
            Ok((out, tc))
        })
    }

    /// Addresses of a name outside the zone for the additional section (A, then AAAA
    /// without CNAMEs).
    async fn external_addresses(&self, req: &Request, target: &Name, extra: &mut Vec<Record>) {
        if let Some(m) = self.upstream(req, target.clone(), RType::A).await {
            extra.extend(m.answers);
        }
        if let Some(m) = self.upstream(req, target.clone(), RType::AAAA).await {
            extra.extend(m.answers.into_iter().filter(|r| r.rtype != RType::CNAME));
        }
    }

    /// CoreDNS `plugin.SRV`.
    async fn srv(&self, req: &Request, zone: &Name, owner: &Name) -> LResult<Answer> {
        let services = self.services(&owner.to_lowercase(), false, RType::SRV)?;
        let mut weights: HashMap<i64, i64> = HashMap::new();
        for s in &services {
            let w = if s.weight != 0 { s.weight } else { 100 };
            *weights.entry(s.priority).or_insert(0) += w;
        }
        let mut a = Answer::default();
        let mut dup = HashSet::new();
        let mut looked: HashSet<Name> = HashSet::new();
        for serv in services {
            if serv.port == -1 {
                continue;
            }
            let mut w1 = 100.0 / weights.get(&serv.priority).copied().unwrap_or(1) as f64;
            if serv.weight == 0 {
                w1 *= 100.0;
            } else {
                w1 *= serv.weight as f64;
            }
            // Go's float-to-uint16 conversion on amd64 goes through int64 and truncates (a
            // negative share wraps; an infinite or NaN one becomes 0).
            let wide = if w1.is_finite() {
                w1.floor() as i64
            } else {
                i64::MIN
            };
            let weight = match wide as u16 {
                0 => 1,
                w => w,
            };
            let ht = serv.host_type();
            match ht {
                HostType::Name => {
                    let Ok(t) = Name::parse(&serv.host) else {
                        continue;
                    };
                    let target = service::target_strip(&t, serv.target_strip);
                    a.records.push(Record::new(
                        owner.clone(),
                        serv.ttl,
                        RData::Srv(Srv {
                            priority: serv.priority as u16,
                            weight,
                            port: serv.port as u16,
                            target: target.clone(),
                        }),
                    ));
                    if !looked.insert(target.clone()) {
                        continue;
                    }
                    if !target.is_subdomain_of(zone) {
                        self.external_addresses(req, &target, &mut a.extra).await;
                        continue;
                    }
                    if let Ok((addrs, _)) =
                        self.chase(req, zone, target, RType::A, Vec::new()).await
                    {
                        a.extra.extend(addrs);
                    }
                }
                HostType::A(_) | HostType::Aaaa(_) => {
                    let Ok(d) = Name::parse(&service::domain(&serv.key)) else {
                        continue;
                    };
                    let target = service::target_strip(&d, serv.target_strip);
                    let port = serv.port as u16;
                    if !is_duplicate(&mut dup, &target, "", port) {
                        a.records.push(Record::new(
                            owner.clone(),
                            serv.ttl,
                            RData::Srv(Srv {
                                priority: serv.priority as u16,
                                weight,
                                port,
                                target: target.clone(),
                            }),
                        ));
                    }
                    if !is_duplicate(&mut dup, &target, &serv.host, 0) {
                        if let Some(ip) = host_ip(&ht) {
                            a.extra.push(addr_record(target, serv.ttl, ip));
                        }
                    }
                }
                HostType::Txt => {}
            }
        }
        Ok(a)
    }

    /// CoreDNS `plugin.MX`.
    async fn mx(&self, req: &Request, zone: &Name, owner: &Name) -> LResult<Answer> {
        let services = self.services(&owner.to_lowercase(), false, RType::MX)?;
        let mut a = Answer::default();
        let mut dup = HashSet::new();
        let mut looked: HashSet<Name> = HashSet::new();
        for serv in services.into_iter().filter(|s| s.mail) {
            let ht = serv.host_type();
            let preference = serv.priority as u16;
            match ht {
                HostType::Name => {
                    let Ok(t) = Name::parse(&serv.host) else {
                        continue;
                    };
                    let exchange = service::target_strip(&t, serv.target_strip);
                    a.records.push(Record::new(
                        owner.clone(),
                        serv.ttl,
                        RData::Mx {
                            preference,
                            exchange: exchange.clone(),
                        },
                    ));
                    if !looked.insert(exchange.clone()) {
                        continue;
                    }
                    if !exchange.is_subdomain_of(zone) {
                        self.external_addresses(req, &exchange, &mut a.extra).await;
                        continue;
                    }
                    if let Ok((addrs, _)) =
                        self.chase(req, zone, exchange, RType::A, Vec::new()).await
                    {
                        a.extra.extend(addrs);
                    }
                }
                HostType::A(_) | HostType::Aaaa(_) => {
                    let Ok(host) = Name::parse(&service::domain(&serv.key)) else {
                        continue;
                    };
                    let exchange = service::target_strip(&host, serv.target_strip);
                    if !is_duplicate(&mut dup, &exchange, "", preference) {
                        a.records.push(Record::new(
                            owner.clone(),
                            serv.ttl,
                            RData::Mx {
                                preference,
                                exchange,
                            },
                        ));
                    }
                    if !is_duplicate(&mut dup, &host, &serv.host, 0) {
                        if let Some(ip) = host_ip(&ht) {
                            a.extra.push(addr_record(host, serv.ttl, ip));
                        }
                    }
                }
                HostType::Txt => {}
            }
        }
        Ok(a)
    }

    /// CoreDNS `plugin.NS` (at the apex): the services of `ns.dns.<zone>`, which must be
    /// addresses.
    fn ns(&self, zone: &Name, owner: &Name) -> LResult<Answer> {
        let Some(at) = under(zone, &[b"ns", b"dns"]) else {
            return Err(LookupError::NotFound);
        };
        let services = self.services(&at, false, RType::NS)?;
        let mut a = Answer::default();
        let mut seen = HashSet::new();
        for serv in services {
            let ht = serv.host_type();
            match ht {
                HostType::Name => {
                    return Err(LookupError::Other(format!(
                        "NS record must be an IP address: {}",
                        serv.host
                    )))
                }
                HostType::A(_) | HostType::Aaaa(_) => {
                    let Ok(d) = Name::parse(&service::domain(&serv.key)) else {
                        continue;
                    };
                    let ns = service::target_strip(&d, serv.target_strip);
                    if let Some(ip) = host_ip(&ht) {
                        a.extra.push(addr_record(ns.clone(), serv.ttl, ip));
                    }
                    if !seen.insert(ns.clone()) {
                        continue;
                    }
                    a.records
                        .push(Record::new(owner.clone(), serv.ttl, RData::Ns(ns)));
                }
                HostType::Txt => {}
            }
        }
        Ok(a)
    }

    async fn answer(
        &self,
        req: &Request,
        zone: &Name,
        owner: &Name,
        qtype: RType,
    ) -> LResult<Answer> {
        let lname = owner.to_lowercase();
        match qtype {
            RType::A | RType::AAAA | RType::TXT => {
                let (records, tc) = self
                    .chase(req, zone, owner.clone(), qtype, Vec::new())
                    .await?;
                Ok(Answer {
                    records,
                    extra: Vec::new(),
                    tc,
                })
            }
            RType::CNAME => {
                let s = self.services(&lname, true, qtype)?;
                let mut a = Answer::default();
                if let Some(serv) = s.first() {
                    if !serv.host_is_ip() {
                        if let Ok(t) = Name::parse(&serv.host) {
                            a.records
                                .push(Record::new(owner.clone(), serv.ttl, RData::Cname(t)));
                        }
                    }
                }
                Ok(a)
            }
            RType::PTR => {
                let s = self.services(&lname, true, qtype)?;
                let mut a = Answer::default();
                let mut dup = HashSet::new();
                for serv in s {
                    if !serv.host_is_ip() && dup.insert(serv.host.clone()) {
                        if let Ok(t) = Name::parse(&serv.host) {
                            a.records
                                .push(Record::new(owner.clone(), serv.ttl, RData::Ptr(t)));
                        }
                    }
                }
                Ok(a)
            }
            RType::MX => self.mx(req, zone, owner).await,
            RType::SRV => self.srv(req, zone, owner).await,
            RType::SOA => Ok(Answer {
                records: vec![self.soa(zone)],
                ..Answer::default()
            }),
            RType::NS if lname == *zone => self.ns(zone, owner),
            _ => {
                // A lookup only to tell NODATA from NXDOMAIN.
                self.check_for_apex(zone, &lname, RType::A)?;
                Ok(Answer::default())
            }
        }
    }

    /// CoreDNS `plugin.BackendError`: `rcode` with the zone's SOA.
    fn backend_error(
        &self,
        req: &Request,
        zone: &Name,
        rcode: Rcode,
        err: Option<String>,
    ) -> Outcome {
        let mut m = req.reply();
        m.set_rcode(rcode);
        m.header.aa = true;
        m.authority.push(self.soa(zone));
        let mut o = Outcome::reply("etcd", m);
        o.error = err;
        o
    }
}

impl Handler for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let owner = req.qname();
        let lname = owner.to_lowercase();
        let Some(zone) = zones::matches(&self.zones, &lname).cloned() else {
            return next.run(req);
        };
        let qtype = req.qtype();
        Box::pin(async move {
            match self.answer(req, &zone, &owner, qtype).await {
                Err(LookupError::NotFound) => {
                    if self.fall.through(&lname) {
                        return next.run(req).await;
                    }
                    self.backend_error(req, &zone, Rcode::NXDOMAIN, None)
                }
                Err(LookupError::Other(e)) => {
                    self.backend_error(req, &zone, Rcode::SERVFAIL, Some(e))
                }
                Ok(a) if a.records.is_empty() => {
                    self.backend_error(req, &zone, Rcode::NOERROR, None)
                }
                Ok(a) => {
                    let mut m = req.reply();
                    m.header.aa = true;
                    m.header.tc = a.tc;
                    m.answers = a.records;
                    m.additional = a.extra;
                    Outcome::reply("etcd", m)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
