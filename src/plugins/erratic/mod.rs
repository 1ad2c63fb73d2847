//! The `erratic` plugin: a misbehaving authority for tests — answers A and AAAA with fixed
//! addresses, a small zone for AXFR, and drops, delays or truncates one query in N.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Name, RData, RType, Rcode, Record, Soa};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Readiness, Request, SetupCtx};
use crate::plugins::autopath::SearchPath;

#[derive(Debug, Default, PartialEq, Eq)]
struct Config {
    drop: u64,
    delay: u64,
    truncate: u64,
    duration: Duration,
    large: bool,
}

pub(crate) struct Erratic {
    cfg: Config,
    /// Queries seen.
    q: AtomicU64,
}

/// An amount: a non-negative 32-bit integer (CoreDNS's `strconv.ParseInt(s, 10, 32)`).
fn amount(d: &Directive, i: usize) -> Result<Option<u64>, Error> {
    let Some(t) = d.args.get(i) else {
        return Ok(None);
    };
    match t.text.parse::<i32>() {
        Ok(n) if n >= 0 => Ok(Some(n as u64)),
        Ok(_) => Err(d.err_at(t, format!("illegal amount value given {:?}", t.text))),
        Err(_) => Err(d.err_at(t, format!("invalid amount {:?}", t.text))),
    }
}

fn parse(lines: &[&Directive]) -> Result<Config, Error> {
    let mut c = Config {
        drop: 2,
        ..Config::default()
    };
    let mut drop_seen = false;
    for d in lines {
        d.arg_count(0, 0)?;
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "drop" => {
                    sub.arg_count(0, 1)?;
                    if let Some(n) = amount(sub, 0)? {
                        c.drop = n;
                        drop_seen = true;
                    }
                }
                "delay" => {
                    sub.arg_count(0, 2)?;
                    c.delay = 2;
                    c.duration = Duration::from_millis(100);
                    if let Some(n) = amount(sub, 0)? {
                        c.delay = n;
                    }
                    if let Some(t) = sub.args.get(1) {
                        c.duration = crate::pkg::duration::arg(sub, t)?;
                    }
                }
                "truncate" => {
                    sub.arg_count(0, 1)?;
                    c.truncate = 2;
                    if let Some(n) = amount(sub, 0)? {
                        c.truncate = n;
                    }
                }
                "large" => c.large = true,
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
    }
    // Delay or truncate without an explicit drop: the default drop is off.
    if (c.delay > 0 || c.truncate > 0) && !drop_seen {
        c.drop = 0;
    }
    Ok(c)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let cfg = parse(lines)?;
    let e = Arc::new(Erratic {
        cfg,
        q: AtomicU64::new(0),
    });
    ctx.add_readiness("erratic", e.clone());
    ctx.add_handler(e);
    Ok(())
}

impl Readiness for Erratic {
    /// Like CoreDNS: ready after the third query and before the fifth (for testing `ready`).
    fn ready(&self) -> bool {
        (3..5).contains(&self.q.load(Ordering::Relaxed))
    }
}

/// The zone handed out for AXFR: SOA, two NS and their AAAA, SOA again unless truncated.
fn zone(origin: &Name, truncated: bool) -> Vec<Record> {
    let n = |s: &str| Name::parse(s).expect("constant name");
    let under = |l: &str| {
        origin
            .prepend(l.as_bytes())
            .unwrap_or_else(|_| origin.clone())
    };
    let soa = Record::new(
        origin.clone(),
        0,
        RData::Soa(Soa {
            mname: n("sns.dns.icann.org."),
            rname: n("noc.dns.icann.org."),
            serial: 2018050825,
            refresh: 7200,
            retry: 3600,
            expire: 1209600,
            minimum: 3600,
        }),
    );
    let mut rrs = vec![
        soa.clone(),
        Record::new(origin.clone(), 0, RData::Ns(under("b"))),
        Record::new(origin.clone(), 0, RData::Ns(under("a"))),
        Record::new(
            under("a"),
            0,
            RData::Aaaa("2001:bd8::53".parse().expect("address")),
        ),
        Record::new(
            under("b"),
            0,
            RData::Aaaa("2001:500::54".parse().expect("address")),
        ),
    ];
    if !truncated {
        rrs.push(soa);
    }
    rrs
}

impl Handler for Erratic {
    fn name(&self) -> &'static str {
        "erratic"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let c = &self.cfg;
        let nr = self.q.fetch_add(1, Ordering::Relaxed);
        let drop = c.drop > 0 && nr % c.drop == 0;
        let delay = c.delay > 0 && nr % c.delay == 0;
        // CoreDNS tests `nr & truncate == 0` (a bitwise and, not a remainder): kept as is.
        let trunc = c.truncate > 0 && nr & c.truncate == 0;
        let mut m = req.reply();
        m.header.aa = true;
        m.header.tc = trunc;
        let qname = req.qname();
        let qtype = req.qtype();
        let mut servfail = false;
        match qtype {
            RType::A => {
                let rr = Record::new(qname, 0, RData::A(Ipv4Addr::new(192, 0, 2, 53)));
                let n = if c.large { 30 } else { 1 };
                m.answers.extend(std::iter::repeat_n(rr, n));
            }
            RType::AAAA => m.answers.push(Record::new(
                qname,
                0,
                RData::Aaaa(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53)),
            )),
            RType::AXFR => {
                m.header.tc = false;
                m.answers = zone(&qname, trunc);
            }
            _ => servfail = true,
        }
        let wait = delay.then_some(c.duration);
        Box::pin(async move {
            if drop {
                return Outcome::silent("erratic");
            }
            if let Some(d) = wait {
                tokio::time::sleep(d).await;
            }
            if servfail {
                return Outcome::rcode("erratic", Rcode::SERVFAIL);
            }
            Outcome::reply("erratic", m)
        })
    }

    fn search_path(&self) -> Option<Arc<dyn SearchPath>> {
        Some(Arc::new(ErraticPath))
    }
}

/// `autopath @erratic`: CoreDNS's fixed search path of this plugin.
struct ErraticPath;

impl SearchPath for ErraticPath {
    fn search_path(&self, _client: std::net::IpAddr, _qname: &Name) -> Option<Vec<Name>> {
        ["a.example.org.", "b.example.org.", "."]
            .iter()
            .map(|s| Name::parse(s).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Config, Error> {
        let cf = sextant_corefile::parse_str("Corefile", text, std::path::Path::new(".")).unwrap();
        let d: Vec<&Directive> = cf.blocks[0].directives.iter().collect();
        parse(&d)
    }

    #[test]
    fn defaults_and_options() {
        assert_eq!(cfg(". {\n erratic\n}\n").unwrap().drop, 2);
        let c = cfg(". {\n erratic {\n  delay 3 50ms\n }\n}\n").unwrap();
        assert_eq!(
            (c.drop, c.delay, c.duration),
            (0, 3, Duration::from_millis(50))
        );
        let c = cfg(". {\n erratic {\n  drop 3\n  truncate\n }\n}\n").unwrap();
        assert_eq!((c.drop, c.truncate), (3, 2));
        let e = cfg(". {\n erratic {\n  drop -1\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:8: drop: illegal amount value given \"-1\""
        );
        assert!(cfg(". {\n erratic {\n  drop 1 2\n }\n}\n").is_err());
        assert!(cfg(". {\n erratic {\n  delay 1 xs\n }\n}\n").is_err());
        assert!(cfg(". {\n erratic {\n  jitter\n }\n}\n").is_err());
    }
}
