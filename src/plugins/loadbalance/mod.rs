//! The `loadbalance` plugin: reorders address records in replies — random shuffle
//! (`round_robin`), a weighted-random first address (`weighted` with a weight file), and
//! addresses in preferred subnets first (`prefer`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, RData, RType, Rcode, Record};
use sha2::{Digest, Sha256};

use crate::log::PluginLog;
use crate::pkg::cidr::{self, IpNet};
use crate::pkg::duration;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

const LOG: PluginLog = PluginLog("loadbalance");

/// Parsed weight file: owner name → (address, weight 1..=255).
pub(crate) type Weights = HashMap<Name, Vec<(IpAddr, u8)>>;

/// Why a weight file is refused (CoreDNS's texts; `file` is the file's name).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WeightsError {
    #[error("wrong domain name:\"{name}\" in weight file {file}. (Maybe a missing weight value?)")]
    AddressAsName { name: String, file: String },
    #[error("wrong domain name:\"{name}\" in weight file {file}")]
    Name { name: String, file: String },
    #[error("wrong IP address:\"{addr}\" in weight file {file}")]
    Address { addr: String, file: String },
    #[error("wrong weight value:\"{weight}\" in weight file {file}")]
    Weight { weight: String, file: String },
    #[error("missing domain name in weight file {file}")]
    NoName { file: String },
    #[error("could not parse weight line:\"{line}\" in weight file {file}")]
    Line { line: String, file: String },
}

/// Parses a weight file: a domain line, then `IP WEIGHT` lines for it; `#` lines are comments.
pub(crate) fn parse_weights(text: &str, file: &str) -> Result<Weights, WeightsError> {
    let name_of_file = || file.to_string();
    let mut out: Weights = HashMap::new();
    let mut cur: Option<Name> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.len() {
            1 => {
                if f[0].parse::<IpAddr>().is_ok() {
                    return Err(WeightsError::AddressAsName {
                        name: f[0].to_string(),
                        file: name_of_file(),
                    });
                }
                let name = Name::parse(f[0]).map_err(|_| WeightsError::Name {
                    name: f[0].to_string(),
                    file: name_of_file(),
                })?;
                out.entry(name.clone()).or_default();
                cur = Some(name);
            }
            2 => {
                let ip: IpAddr = f[0].parse().map_err(|_| WeightsError::Address {
                    addr: f[0].to_string(),
                    file: name_of_file(),
                })?;
                let w: u8 = match f[1].parse() {
                    Ok(w) if w > 0 => w,
                    _ => {
                        return Err(WeightsError::Weight {
                            weight: f[1].to_string(),
                            file: name_of_file(),
                        })
                    }
                };
                let Some(name) = &cur else {
                    return Err(WeightsError::NoName {
                        file: name_of_file(),
                    });
                };
                out.entry(name.clone()).or_default().push((ip, w));
            }
            _ => {
                return Err(WeightsError::Line {
                    line: line.to_string(),
                    file: name_of_file(),
                })
            }
        }
    }
    Ok(out)
}

/// The weighted policy's state: the file, its last hash and weights.
pub(crate) struct Weighted {
    file: PathBuf,
    reload: Duration,
    state: RwLock<([u8; 32], Arc<Weights>)>,
}

impl Weighted {
    /// Re-reads the file if its content changed. Open failures are `Err(None)`.
    fn update(&self) -> Result<(), Option<WeightsError>> {
        let bytes = std::fs::read(&self.file).map_err(|_| None)?;
        let sum: [u8; 32] = Sha256::digest(&bytes).into();
        if let Ok(s) = self.state.read() {
            if s.0 == sum {
                return Ok(());
            }
        }
        let name = self.file.display().to_string();
        let w = parse_weights(&String::from_utf8_lossy(&bytes), &name).map_err(Some)?;
        if let Ok(mut s) = self.state.write() {
            *s = (sum, Arc::new(w));
        }
        LOG.info(&format!("Successfully reloaded weight file {name}"));
        Ok(())
    }

    fn weights(&self) -> Arc<Weights> {
        self.state.read().map(|s| s.1.clone()).unwrap_or_default()
    }

    /// Moves one address, picked at random in proportion to its weight (default 1), to the top.
    fn reorder(&self, input: Vec<Record>) -> Vec<Record> {
        let (cname, rest, mut address, mx) = split(input);
        if address.is_empty() {
            return join([cname, rest, address, mx]);
        }
        let weights = self.weights();
        let mut wa: Vec<(usize, u32)> = address
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let ip = record_ip(r);
                let w = weights
                    .get(&r.name)
                    .and_then(|list| list.iter().find(|(a, _)| Some(*a) == ip))
                    .map(|(_, w)| *w as u32)
                    .unwrap_or(1);
                (i, w)
            })
            .collect();
        wa.sort_by_key(|w| std::cmp::Reverse(w.1));
        let sum: u32 = wa.iter().map(|w| w.1).sum();
        let v = rand::random_range(0..sum.max(1));
        let mut acc = 0;
        for (i, w) in wa {
            acc += w;
            if v < acc {
                address.swap(0, i);
                break;
            }
        }
        join([cname, rest, address, mx])
    }
}

#[derive(Clone)]
pub(crate) enum Policy {
    RoundRobin,
    Weighted(Arc<Weighted>),
}

pub(crate) struct LoadBalance {
    policy: Policy,
    prefer: Vec<IpNet>,
}

/// Parses the `loadbalance` lines of a block.
pub(crate) fn parse(lines: &[&Directive]) -> Result<(Policy, Vec<IpNet>), Error> {
    let mut policy = Policy::RoundRobin;
    let mut prefer = Vec::new();
    for d in lines {
        let mut block_done = false;
        if let Some(a0) = d.args.first() {
            match a0.text.as_str() {
                "round_robin" => {
                    if let Some(extra) = d.args.get(1) {
                        return Err(d.err_at(extra, "unknown property for round_robin"));
                    }
                    policy = Policy::RoundRobin;
                }
                "weighted" => {
                    if d.args.len() < 2 {
                        return Err(d.err_at(a0, "missing weight file argument"));
                    }
                    if d.args.len() > 2 {
                        return Err(d.err_at(&d.args[2], "unexpected argument(s)"));
                    }
                    let mut reload = Duration::from_secs(30);
                    for sub in d.sub() {
                        match sub.name.text.as_str() {
                            "reload" => {
                                if sub.args.is_empty() {
                                    return Err(sub.err("reload duration value is missing"));
                                }
                                if sub.args.len() > 1 {
                                    return Err(sub.err_at(&sub.args[1], "unexpected argument"));
                                }
                                let t = &sub.args[0];
                                reload = duration::parse(&t.text).map_err(|_| {
                                    sub.err_at(t, format!("invalid reload duration '{}'", t.text))
                                })?;
                            }
                            other => return Err(sub.err(format!("unknown property '{other}'"))),
                        }
                    }
                    block_done = true;
                    prefer.clear();
                    policy = Policy::Weighted(Arc::new(Weighted {
                        file: PathBuf::from(&d.args[1].text),
                        reload,
                        state: RwLock::new(([0; 32], Arc::new(HashMap::new()))),
                    }));
                }
                other => return Err(d.err_at(a0, format!("unknown policy: {other}"))),
            }
        }
        if block_done {
            continue;
        }
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "prefer" => {
                    for t in &sub.args {
                        prefer.push(cidr::arg(sub, t)?);
                    }
                }
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
    }
    Ok((policy, prefer))
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let (policy, prefer) = parse(lines)?;
    if let Policy::Weighted(w) = &policy {
        let d = lines[lines.len() - 1];
        match w.update() {
            Ok(()) => {}
            Err(None) if !w.reload.is_zero() => LOG.warning(&format!(
                "Failed to open weight file:{}. Will try again in {}",
                "weight file open error",
                duration::format(w.reload)
            )),
            Err(None) => return Err(d.err("weight file open error")),
            Err(Some(e)) => return Err(d.err(e.to_string())),
        }
        if !w.reload.is_zero() {
            let w = w.clone();
            ctx.periodic(w.reload, move || {
                if let Err(e) = w.update() {
                    LOG.error(
                        &e.map_or_else(|| "weight file open error".into(), |e| e.to_string()),
                    );
                }
            });
        }
    }
    ctx.add_handler(Arc::new(LoadBalance { policy, prefer }));
    Ok(())
}

fn record_ip(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(*a)),
        RData::Aaaa(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

type Split = (Vec<Record>, Vec<Record>, Vec<Record>, Vec<Record>);

/// (CNAME, other, A/AAAA, MX), each in its original order.
fn split(input: Vec<Record>) -> Split {
    let (mut cname, mut rest, mut address, mut mx) = (vec![], vec![], vec![], vec![]);
    for r in input {
        match r.rtype {
            RType::CNAME => cname.push(r),
            RType::A | RType::AAAA => address.push(r),
            RType::MX => mx.push(r),
            _ => rest.push(r),
        }
    }
    (cname, rest, address, mx)
}

fn join<const N: usize>(parts: [Vec<Record>; N]) -> Vec<Record> {
    parts.into_iter().flatten().collect()
}

/// CoreDNS's shuffle: two records swap with probability 1/2; longer lists get a random-index
/// swap pass.
fn shuffle(v: &mut [Record]) {
    let l = v.len();
    match l {
        0 | 1 => {}
        2 => {
            if rand::random::<u16>() % 2 == 0 {
                v.swap(0, 1);
            }
        }
        _ => {
            for j in 0..l {
                let p = j + (rand::random::<u16>() as usize) % (l - j);
                v.swap(j, p);
            }
        }
    }
}

/// `round_robin` on one section: an all-A or all-AAAA section is shuffled as is; otherwise CNAMEs
/// first, then other records, then shuffled addresses, then shuffled MX.
pub(crate) fn round_robin(input: Vec<Record>) -> Vec<Record> {
    if input.len() <= 1 {
        return input;
    }
    let t = input[0].rtype;
    if (t == RType::A || t == RType::AAAA) && input.iter().all(|r| r.rtype == t) {
        let mut v = input;
        shuffle(&mut v);
        return v;
    }
    let (cname, rest, mut address, mut mx) = split(input);
    shuffle(&mut address);
    shuffle(&mut mx);
    join([cname, rest, address, mx])
}

/// `prefer`: CNAMEs, then addresses in the listed subnets (in list order), the other addresses,
/// MX, then the rest.
pub(crate) fn prefer(input: Vec<Record>, nets: &[IpNet]) -> Vec<Record> {
    let (cname, rest, address, mx) = split(input);
    let mut taken = vec![false; address.len()];
    let mut sorted = Vec::with_capacity(address.len());
    for n in nets {
        for (i, r) in address.iter().enumerate() {
            if !taken[i] && record_ip(r).is_some_and(|ip| n.contains(&ip)) {
                taken[i] = true;
                sorted.push(r.clone());
            }
        }
    }
    for (i, r) in address.into_iter().enumerate() {
        if !taken[i] {
            sorted.push(r);
        }
    }
    join([cname, sorted, mx, rest])
}

impl LoadBalance {
    fn apply(&self, m: &mut Message) {
        if m.rcode() != Rcode::NOERROR {
            return;
        }
        let qtype = m.question().map(|q| q.qtype).unwrap_or_default();
        if qtype == RType::AXFR || qtype == RType::IXFR {
            return;
        }
        match &self.policy {
            Policy::RoundRobin => {
                m.answers = round_robin(std::mem::take(&mut m.answers));
                m.authority = round_robin(std::mem::take(&mut m.authority));
                m.additional = round_robin(std::mem::take(&mut m.additional));
            }
            Policy::Weighted(w) => {
                if matches!(qtype, RType::A | RType::AAAA | RType::SRV) {
                    m.answers = w.reorder(std::mem::take(&mut m.answers));
                    m.additional = w.reorder(std::mem::take(&mut m.additional));
                }
            }
        }
        if !self.prefer.is_empty() {
            m.answers = prefer(std::mem::take(&mut m.answers), &self.prefer);
            m.additional = prefer(std::mem::take(&mut m.additional), &self.prefer);
        }
    }
}

impl Handler for LoadBalance {
    fn name(&self) -> &'static str {
        "loadbalance"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut out = next.run(req).await;
            if let Some(m) = out.message_mut() {
                self.apply(m);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Path;

    fn directives(text: &str) -> Vec<Directive> {
        let cf = sextant_corefile::parse_str("Corefile", text, Path::new(".")).unwrap();
        cf.blocks[0].directives.clone()
    }

    fn parse_str(text: &str) -> Result<(Policy, Vec<IpNet>), Error> {
        let ds = directives(text);
        let refs: Vec<&Directive> = ds.iter().filter(|d| d.name.text == "loadbalance").collect();
        parse(&refs)
    }

    fn err(text: &str) -> String {
        match parse_str(text) {
            Ok(_) => panic!("no error for {text}"),
            Err(e) => e.to_string(),
        }
    }

    fn a(name: &str, ip: &str) -> Record {
        let n = Name::parse(name).unwrap();
        match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v) => Record::new(n, 60, RData::A(v)),
            IpAddr::V6(v) => Record::new(n, 60, RData::Aaaa(v)),
        }
    }

    fn cname(name: &str, t: &str) -> Record {
        Record::new(
            Name::parse(name).unwrap(),
            60,
            RData::Cname(Name::parse(t).unwrap()),
        )
    }

    #[test]
    fn options() {
        assert!(matches!(
            parse_str(".:53 {\n loadbalance\n}\n").unwrap().0,
            Policy::RoundRobin
        ));
        let (p, prefer) = parse_str(
            ".:53 {\n loadbalance round_robin {\n  prefer 10.0.0.0/8 2001:db8::/32\n }\n}\n",
        )
        .unwrap();
        assert!(matches!(p, Policy::RoundRobin));
        assert_eq!(prefer.len(), 2);
        assert!(prefer[0].contains(&"10.2.3.4".parse().unwrap()));
        assert!(!prefer[0].contains(&"11.2.3.4".parse().unwrap()));
        assert!(prefer[1].contains(&"2001:db8::5".parse().unwrap()));
        let (p, _) =
            parse_str(".:53 {\n loadbalance weighted w.txt {\n  reload 10s\n }\n}\n").unwrap();
        match p {
            Policy::Weighted(w) => {
                assert_eq!(w.reload, Duration::from_secs(10));
                assert_eq!(w.file, PathBuf::from("w.txt"));
            }
            _ => panic!("weighted"),
        }
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(
            err(".:53 {\n loadbalance round_robin x\n}\n"),
            "Corefile:2:26: loadbalance: unknown property for round_robin"
        );
        assert_eq!(
            err(".:53 {\n loadbalance weighted\n}\n"),
            "Corefile:2:14: loadbalance: missing weight file argument"
        );
        assert_eq!(
            err(".:53 {\n loadbalance weighted f x\n}\n"),
            "Corefile:2:25: loadbalance: unexpected argument(s)"
        );
        assert_eq!(
            err(".:53 {\n loadbalance weighted f {\n  reload\n }\n}\n"),
            "Corefile:3:3: reload: reload duration value is missing"
        );
        assert_eq!(
            err(".:53 {\n loadbalance weighted f {\n  reload 1s 2s\n }\n}\n"),
            "Corefile:3:13: reload: unexpected argument"
        );
        assert_eq!(
            err(".:53 {\n loadbalance weighted f {\n  reload xs\n }\n}\n"),
            "Corefile:3:10: reload: invalid reload duration 'xs'"
        );
        assert_eq!(
            err(".:53 {\n loadbalance weighted f {\n  prefer 10.0.0.0/8\n }\n}\n"),
            "Corefile:3:3: prefer: unknown property 'prefer'"
        );
        assert_eq!(
            err(".:53 {\n loadbalance random\n}\n"),
            "Corefile:2:14: loadbalance: unknown policy: random"
        );
        assert_eq!(
            err(".:53 {\n loadbalance {\n  prefer 10.0.0.0/33\n }\n}\n"),
            "Corefile:3:10: prefer: invalid CIDR \"10.0.0.0/33\": invalid CIDR address: 10.0.0.0/33"
        );
        assert_eq!(
            err(".:53 {\n loadbalance {\n  reload 1s\n }\n}\n"),
            "Corefile:3:3: reload: unknown property 'reload'"
        );
    }

    #[test]
    fn weight_file() {
        let w = parse_weights(
            "# c\nwww.example.org\n10.0.0.1 100\n10.0.0.2 1\n\nother.org.\n::1 255\n",
            "f",
        )
        .unwrap();
        assert_eq!(w[&Name::parse("www.example.org.").unwrap()].len(), 2);
        assert_eq!(w[&Name::parse("other.org.").unwrap()][0].1, 255);
        assert_eq!(
            parse_weights("10.0.0.1\n", "f").unwrap_err().to_string(),
            "wrong domain name:\"10.0.0.1\" in weight file f. (Maybe a missing weight value?)"
        );
        assert_eq!(
            parse_weights("a.org\nx 1\n", "f").unwrap_err().to_string(),
            "wrong IP address:\"x\" in weight file f"
        );
        assert_eq!(
            parse_weights("a.org\n10.0.0.1 0\n", "f")
                .unwrap_err()
                .to_string(),
            "wrong weight value:\"0\" in weight file f"
        );
        assert_eq!(
            parse_weights("a.org\n10.0.0.1 256\n", "f")
                .unwrap_err()
                .to_string(),
            "wrong weight value:\"256\" in weight file f"
        );
        assert_eq!(
            parse_weights("10.0.0.1 1\n", "f").unwrap_err().to_string(),
            "missing domain name in weight file f"
        );
        assert_eq!(
            parse_weights("a b c\n", "f").unwrap_err().to_string(),
            "could not parse weight line:\"a b c\" in weight file f"
        );
    }

    #[test]
    fn round_robin_keeps_cname_first_and_permutes() {
        let input = vec![
            a("x.", "10.0.0.1"),
            cname("a.", "x."),
            a("x.", "10.0.0.2"),
            a("x.", "10.0.0.3"),
        ];
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let out = round_robin(input.clone());
            assert_eq!(out.len(), 4);
            assert_eq!(out[0].rtype, RType::CNAME);
            seen.insert(format!(
                "{:?}",
                out.iter().map(record_ip).collect::<Vec<_>>()
            ));
        }
        assert!(seen.len() >= 4, "orders seen: {seen:?}");
    }

    #[test]
    fn prefer_orders_by_subnet_list() {
        let nets = vec![
            IpNet::parse("10.2.0.0/16").unwrap(),
            IpNet::parse("10.1.0.0/16").unwrap(),
        ];
        let out = prefer(
            vec![
                a("x.", "10.3.0.1"),
                a("x.", "10.1.0.1"),
                cname("a.", "x."),
                a("x.", "10.2.0.1"),
            ],
            &nets,
        );
        let ips: Vec<String> = out
            .iter()
            .filter_map(record_ip)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(out[0].rtype, RType::CNAME);
        assert_eq!(ips, vec!["10.2.0.1", "10.1.0.1", "10.3.0.1"]);
    }

    #[test]
    fn weighted_top_follows_weights() {
        let w = Weighted {
            file: PathBuf::from("x"),
            reload: Duration::ZERO,
            state: RwLock::new((
                [0; 32],
                Arc::new(parse_weights("x.\n10.0.0.1 255\n10.0.0.2 1\n", "x").unwrap()),
            )),
        };
        let mut first = 0;
        for _ in 0..1000 {
            let out = w.reorder(vec![a("x.", "10.0.0.2"), a("x.", "10.0.0.1")]);
            if record_ip(&out[0]) == Some("10.0.0.1".parse().unwrap()) {
                first += 1;
            }
        }
        // Expected 255/256 of 1000.
        assert!(first > 950, "{first}");
    }
}
