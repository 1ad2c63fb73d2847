//! The `acl` plugin: allows, blocks (REFUSED), filters (empty NOERROR) or drops queries by
//! client address and query type, per zone; rules are tried in order and the first match acts.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use prometheus::Counter;
use sextant_corefile::{Directive, Error};
use sextant_wire::{Edns, EdnsOption, Name, RType, Rcode};

use crate::metrics::metrics;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use sextant_wire::IpNet;

metrics! {
    BLOCKED: CounterVec("coredns_acl_blocked_requests_total", "Counter of DNS requests being blocked.", ["server", "zone", "view"]);
    FILTERED: CounterVec("coredns_acl_filtered_requests_total", "Counter of DNS requests being filtered.", ["server", "zone", "view"]);
    ALLOWED: CounterVec("coredns_acl_allowed_requests_total", "Counter of DNS requests being allowed.", ["server", "view"]);
    DROPPED: CounterVec("coredns_acl_dropped_requests_total", "Counter of DNS requests being dropped.", ["server", "zone", "view"]);
}

/// EDNS option code of Extended DNS Errors (RFC 8914).
pub(crate) const EDE: u16 = 15;
const EDE_BLOCKED: u16 = 15;
const EDE_FILTERED: u16 = 17;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Block,
    Filter,
    Drop,
}

/// A client address as the policies compare it: IPv4 (IPv4-mapped IPv6 included) or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    V4(u32),
    V6(u128),
}

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(a) => Client::V4(a.into()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.into()),
                None => Client::V6(a.into()),
            },
        }
    }
}

/// Client networks of one policy as parsed: (network, mask) pairs per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Nets {
    all: bool,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Nets {
    fn add(&mut self, c: &IpNet) {
        match c.addr() {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - c.prefix() as u32).unwrap_or(0);
                self.v4.push((u32::from(a) & mask, mask));
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - c.prefix() as u32).unwrap_or(0);
                self.v6.push((u128::from(a) & mask, mask));
            }
        }
    }
}

/// Query types: a bitmap of codes below 256 and a list of the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Types {
    low: [u64; 4],
    high: Vec<u16>,
}

impl Types {
    fn add(&mut self, t: RType) {
        if t.0 < 256 {
            self.low[(t.0 >> 6) as usize] |= 1 << (t.0 & 63);
        } else if !self.high.contains(&t.0) {
            self.high.push(t.0);
        }
    }

    #[inline]
    fn has(&self, t: RType) -> bool {
        if t.0 < 256 {
            self.low[(t.0 >> 6) as usize] >> (t.0 & 63) & 1 == 1
        } else {
            self.high.contains(&t.0)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Policy {
    action: Action,
    /// `None`: every type.
    types: Option<Types>,
    nets: Nets,
}

/// One network of a policy on the query path: the policy's index in its rule, the network and
/// its mask (both 0 for `net *` or a policy without `net`).
#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    net: T,
    mask: T,
    policy: u32,
}

/// An `acl` line, compiled for the query path: every (policy, network) pair of a family in one
/// flat list in policy order, so a query compares machine words in one loop and reads a policy's
/// types only when one of its networks holds the client. The first entry that matches both is
/// the first policy that does, as CoreDNS tries them.
#[derive(Debug)]
struct Rule {
    zones: Vec<Name>,
    /// A zone is the root: every name is in the rule (no name comparison per query).
    every_name: bool,
    /// (action, types) by policy index.
    policies: Vec<(Action, Option<Types>)>,
    v4: Vec<Entry<u32>>,
    v6: Vec<Entry<u128>>,
}

impl Rule {
    fn new(zones: Vec<Name>, parsed: Vec<Policy>) -> Rule {
        let mut r = Rule {
            every_name: zones.iter().any(|z| z.is_root()),
            zones,
            policies: Vec::with_capacity(parsed.len()),
            v4: Vec::new(),
            v6: Vec::new(),
        };
        for (i, p) in parsed.into_iter().enumerate() {
            let policy = i as u32;
            if p.nets.all {
                r.v4.push(Entry {
                    net: 0,
                    mask: 0,
                    policy,
                });
                r.v6.push(Entry {
                    net: 0,
                    mask: 0,
                    policy,
                });
            } else {
                r.v4.extend(
                    p.nets
                        .v4
                        .iter()
                        .map(|&(net, mask)| Entry { net, mask, policy }),
                );
                r.v6.extend(
                    p.nets
                        .v6
                        .iter()
                        .map(|&(net, mask)| Entry { net, mask, policy }),
                );
            }
            r.policies.push((p.action, p.types));
        }
        r
    }

    /// True when `name` is in one of the rule's zones.
    #[inline]
    fn covers(&self, name: &Name) -> bool {
        self.every_name || self.zones.iter().any(|z| name.is_subdomain_of(z))
    }

    /// The longest of the rule's zones `name` is in (the metrics' `zone` label).
    fn zone_of(&self, name: &Name) -> Option<&Name> {
        self.zones
            .iter()
            .filter(|z| name.is_subdomain_of(z))
            .max_by_key(|z| z.wire_len())
    }

    /// The action of the first policy whose networks hold `ip` and whose types hold `t`.
    #[inline]
    fn action(&self, ip: Client, t: RType) -> Option<Action> {
        let types_hold = |policy: u32| {
            let (action, types) = &self.policies[policy as usize];
            types.as_ref().is_none_or(|ts| ts.has(t)).then_some(*action)
        };
        match ip {
            Client::V4(a) => self
                .v4
                .iter()
                .filter(|e| a & e.mask == e.net)
                .find_map(|e| types_hold(e.policy)),
            Client::V6(a) => self
                .v6
                .iter()
                .filter(|e| a & e.mask == e.net)
                .find_map(|e| types_hold(e.policy)),
        }
    }
}

pub(crate) struct Acl {
    rules: Vec<Rule>,
    /// `coredns_acl_allowed_requests_total` for the first server label seen (a block is nearly
    /// always served on one address): one pointer comparison and an atomic add per query.
    allowed: OnceLock<(Arc<str>, Counter)>,
    /// The `view` label: the name of the block's view (`view NAME`), empty without one, as
    /// CoreDNS labels the counters with the view of the server block that handles the query.
    view: Arc<str>,
}

impl Acl {
    fn new(rules: Vec<Rule>, view: Option<&str>) -> Acl {
        Acl {
            rules,
            allowed: OnceLock::new(),
            view: view.unwrap_or("").into(),
        }
    }

    fn count_allowed(&self, server: &Arc<str>) {
        let (s, c) = self.allowed.get_or_init(|| {
            (
                server.clone(),
                ALLOWED.with_label_values(&[server, &self.view]),
            )
        });
        if Arc::ptr_eq(s, server) {
            c.inc();
        } else {
            count_allowed_elsewhere(server, &self.view);
        }
    }
}

fn is_section(t: &str) -> bool {
    t.eq_ignore_ascii_case("type") || t.eq_ignore_ascii_case("net")
}

fn parse_policy(p: &Directive) -> Result<Policy, Error> {
    let action = match p.name.text.to_ascii_lowercase().as_str() {
        "allow" => Action::Allow,
        "block" => Action::Block,
        "filter" => Action::Filter,
        "drop" => Action::Drop,
        _ => {
            return Err(p.err(format!(
                "unexpected token {:?}; expect 'allow', 'block', 'filter' or 'drop'",
                p.name.text
            )))
        }
    };
    let mut types = Types::default();
    let mut all_types = false;
    let mut nets = Nets::default();
    let (mut has_type, mut has_net) = (false, false);
    let mut rest = &p.args[..];
    while let Some((section, after)) = rest.split_first() {
        if !is_section(&section.text) {
            return Err(p.err_at(
                section,
                format!("unexpected token {:?}; expect 'type | net'", section.text),
            ));
        }
        let n = after
            .iter()
            .position(|t| is_section(&t.text))
            .unwrap_or(after.len());
        let (tokens, next) = after.split_at(n);
        rest = next;
        let name = section.text.to_ascii_lowercase();
        if tokens.is_empty() {
            return Err(p.err_at(section, format!("no token specified in {name:?} section")));
        }
        if name == "type" {
            has_type = true;
            for t in tokens {
                if t.text == "*" {
                    all_types = true;
                    break;
                }
                // miekg/dns's StringToType: upper-case mnemonics only.
                match RType::from_name(&t.text).filter(|_| t.text == t.text.to_ascii_uppercase()) {
                    Some(rt) => types.add(rt),
                    None => {
                        return Err(p.err_at(
                            t,
                            format!("unexpected token {:?}; expect legal QTYPE", t.text),
                        ))
                    }
                }
            }
        } else {
            has_net = true;
            for t in tokens {
                if t.text == "*" {
                    nets.all = true;
                    break;
                }
                let text = normalize(&t.text);
                let c = IpNet::parse(&text)
                    .map_err(|_| p.err_at(t, format!("illegal CIDR notation {text:?}")))?;
                nets.add(&c);
            }
        }
    }
    let types = (has_type && !all_types).then_some(types);
    if !has_net {
        nets.all = true;
    }
    Ok(Policy {
        action,
        types,
        nets,
    })
}

/// A bare address is a host network (`/32` or `/128`), like CoreDNS's `normalize`.
fn normalize(raw: &str) -> String {
    if raw.contains('/') {
        raw.to_string()
    } else if raw.contains(':') {
        format!("{raw}/128")
    } else {
        format!("{raw}/32")
    }
}

fn parse(lines: &[&Directive], block_zones: &[String]) -> Result<Vec<Rule>, Error> {
    let mut rules = Vec::new();
    for d in lines {
        let zones = crate::pkg::zones::from_args(d, &d.args, block_zones)?;
        let policies = d.sub().iter().map(parse_policy).collect::<Result<_, _>>()?;
        rules.push(Rule::new(zones, policies));
    }
    Ok(rules)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let rules = parse(lines, &ctx.block.zones)?;
    ctx.add_handler(Arc::new(Acl::new(rules, ctx.block.view.as_deref())));
    Ok(())
}

thread_local! {
    /// `coredns_acl_allowed_requests_total` handles by server and view label for blocks served
    /// on more than one address (the label lookup hashes and locks; a cached handle is one
    /// atomic add).
    static ALLOWED_BY_SERVER: RefCell<Vec<AllowedHandle>> = const { RefCell::new(Vec::new()) };
}

/// (server label, view label, counter handle).
type AllowedHandle = (Arc<str>, Arc<str>, Counter);

fn count_allowed_elsewhere(server: &Arc<str>, view: &Arc<str>) {
    ALLOWED_BY_SERVER.with(|c| {
        let Ok(mut v) = c.try_borrow_mut() else {
            ALLOWED.with_label_values(&[server, view]).inc();
            return;
        };
        if let Some((.., h)) = v
            .iter()
            .find(|(s, w, _)| Arc::ptr_eq(s, server) && Arc::ptr_eq(w, view))
        {
            h.inc();
            return;
        }
        if v.len() >= 16 {
            v.clear(); // old generations' server labels age out
        }
        let h = ALLOWED.with_label_values(&[server, view]);
        h.inc();
        v.push((server.clone(), view.clone(), h));
    });
}

impl Acl {
    /// The action for this request and the zone of the rule that chose it (None: allowed).
    fn decide(&self, req: &Request) -> Option<(Action, &Name)> {
        let q = req.msg.question()?;
        let ip = Client::of(req.client.ip());
        for rule in &self.rules {
            if !rule.covers(&q.name) {
                continue;
            }
            match rule.action(ip, q.qtype) {
                None => continue,
                Some(Action::Allow) => return None,
                Some(a) => return Some((a, rule.zone_of(&q.name)?)),
            }
        }
        None
    }
}

impl Handler for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let Some((action, zone)) = self.decide(req) else {
            self.count_allowed(&req.server);
            return next.run(req);
        };
        let labels = [&*req.server, &zone.to_lowercase_string(), &*self.view];
        let (rcode, ede, counter) = match action {
            Action::Drop => {
                DROPPED.with_label_values(&labels).inc();
                return Box::pin(async { Outcome::silent("acl") });
            }
            Action::Block => (Rcode::REFUSED, EDE_BLOCKED, &BLOCKED),
            Action::Filter => (Rcode::NOERROR, EDE_FILTERED, &FILTERED),
            Action::Allow => unreachable!("allow returns above"),
        };
        counter.with_label_values(&labels).inc();
        let mut m = req.reply();
        m.set_rcode(rcode);
        let mut e = Edns::new(4096);
        e.dnssec_ok = true;
        e.options.push(EdnsOption {
            code: EDE,
            data: ede.to_be_bytes().to_vec(),
        });
        m.edns = Some(e);
        Box::pin(async move { Outcome::reply("acl", m) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::Message;

    fn rules(text: &str) -> Result<Vec<Rule>, Error> {
        crate::pkg::testing::with_block(text, |d| parse(d, &["example.org.".to_string()]))
    }

    fn decide(acl: &Acl, client: &str, name: &str, t: RType) -> Option<Action> {
        let q = Message::query(1, Name::parse(name).unwrap(), t);
        let req = Request::new(
            q,
            std::net::SocketAddr::new(client.parse().unwrap(), 5353),
            crate::plugin::Proto::Udp,
        );
        acl.decide(&req).map(|(a, _)| a)
    }

    #[test]
    fn first_matching_policy_acts() {
        let acl = Acl::new(
            rules(
                "example.org {\n acl {\n  allow net 192.168.1.0/24\n  block type A AAAA net 192.168.0.0/16 2001:db8::/32\n  filter type MX\n  drop net 10.0.0.1\n }\n}\n",
            )
            .unwrap(),
            None,
        );
        let a = RType::A;
        assert_eq!(decide(&acl, "192.168.1.9", "a.example.org.", a), None);
        assert_eq!(
            decide(&acl, "192.168.2.9", "a.example.org.", a),
            Some(Action::Block)
        );
        assert_eq!(
            decide(&acl, "::ffff:192.168.2.9", "a.example.org.", a),
            Some(Action::Block)
        );
        assert_eq!(
            decide(&acl, "2001:db8::5", "a.example.org.", RType::AAAA),
            Some(Action::Block)
        );
        assert_eq!(
            decide(&acl, "192.168.2.9", "a.example.org.", RType::TXT),
            None
        );
        assert_eq!(
            decide(&acl, "1.2.3.4", "a.example.org.", RType::MX),
            Some(Action::Filter)
        );
        assert_eq!(
            decide(&acl, "10.0.0.1", "a.example.org.", RType::TXT),
            Some(Action::Drop)
        );
        assert_eq!(decide(&acl, "10.0.0.2", "a.example.org.", RType::TXT), None);
        // Outside the zones: no rule applies.
        assert_eq!(decide(&acl, "10.0.0.1", "a.example.com.", RType::TXT), None);
    }

    #[test]
    fn flattened_networks_keep_policy_order() {
        let acl = crate::pkg::testing::with_block(
            ". {\n acl {\n  block type A net 10.0.0.0/8 192.168.0.0/16\n  filter net 192.168.0.0/16 fd00::/8\n  allow type TXT\n  drop net *\n }\n}\n",
            |d| Acl::new(parse(d, &[".".to_string()]).unwrap(), None),
        );
        assert!(acl.rules[0].every_name);
        let (a, txt) = (RType::A, RType::TXT);
        assert_eq!(decide(&acl, "192.168.1.1", "x.", a), Some(Action::Block));
        assert_eq!(
            decide(&acl, "192.168.1.1", "x.", RType::MX),
            Some(Action::Filter)
        );
        assert_eq!(decide(&acl, "fd00::1", "x.", a), Some(Action::Filter));
        assert_eq!(decide(&acl, "10.1.1.1", "x.", txt), None);
        assert_eq!(
            decide(&acl, "10.1.1.1", "x.", RType::MX),
            Some(Action::Drop)
        );
        assert_eq!(
            decide(&acl, "2001:db8::1", "x.", RType::MX),
            Some(Action::Drop)
        );
        let q = Message::query(1, Name::parse("x.").unwrap(), a);
        let req = Request::new(q, "10.1.1.1:53".parse().unwrap(), crate::plugin::Proto::Udp);
        assert_eq!(acl.decide(&req).unwrap().1, &Name::root());
    }

    #[test]
    fn errors_name_the_token() {
        let e = rules("example.org {\n acl {\n  deny net 1.2.3.4\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:3: deny: unexpected token \"deny\"; expect 'allow', 'block', 'filter' or 'drop'"
        );
        let e = rules("example.org {\n acl {\n  block net 1.2.3.400\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:13: block: illegal CIDR notation \"1.2.3.400/32\""
        );
        let e = rules("example.org {\n acl {\n  block type XX\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:14: block: unexpected token \"XX\"; expect legal QTYPE"
        );
        let e = rules("example.org {\n acl {\n  block type\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:9: block: no token specified in \"type\" section"
        );
        let e = rules("example.org {\n acl {\n  block 1.2.3.4\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:9: block: unexpected token \"1.2.3.4\"; expect 'type | net'"
        );
    }
}
