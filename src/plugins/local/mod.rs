//! The `local` plugin: answers for `localhost.`, names under `.localhost.` (and, unless
//! `localhost_prefix off`, names starting with `localhost.`) and the reverse zones
//! `0.`, `127.` and `255.in-addr.arpa.`, so they never leave the server.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, LazyLock};

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, RData, RType, Rcode, Record, Soa};

use crate::log::PluginLog;
use crate::metrics::metrics;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

const LOG: PluginLog = PluginLog("local");
const TTL: u32 = 604800;

metrics! {
    LOCALHOST: Counter("coredns_local_localhost_requests_total", "Counter of special localhost subdomain requests.");
}

pub(crate) struct Local {
    prefix: bool,
    localhost: Name,
    zones: [Name; 4],
    ptr: Name,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut prefix = true;
    for d in lines {
        d.arg_count(0, 0)?;
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "localhost_prefix" => {
                    sub.arg_count(1, 1)?;
                    prefix = match sub.args[0].text.as_str() {
                        "on" => true,
                        "off" => false,
                        other => {
                            return Err(sub.err_at(
                                &sub.args[0],
                                format!("localhost_prefix expects 'on' or 'off', got {other:?}"),
                            ))
                        }
                    };
                }
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
    }
    LazyLock::force(&LOCALHOST);
    let n = |s: &str| Name::parse(s).expect("constant name");
    ctx.add_handler(Arc::new(Local {
        prefix,
        localhost: n("localhost."),
        zones: [
            n("localhost."),
            n("0.in-addr.arpa."),
            n("127.in-addr.arpa."),
            n("255.in-addr.arpa."),
        ],
        ptr: n("1.0.0.127.in-addr.arpa."),
    }));
    Ok(())
}

fn soa(origin: Name) -> Record {
    let n = |s: &str| Name::parse(s).expect("constant name");
    Record::new(
        origin,
        TTL,
        RData::Soa(Soa {
            mname: n("localhost."),
            rname: n("root.localhost."),
            serial: 1,
            refresh: 0,
            retry: 0,
            expire: 0,
            minimum: TTL,
        }),
    )
}

fn loopback(m: &mut Message, qname: &Name, qtype: RType) -> bool {
    let data = match qtype {
        RType::A => RData::A(Ipv4Addr::LOCALHOST),
        RType::AAAA => RData::Aaaa(Ipv6Addr::LOCALHOST),
        _ => return false,
    };
    m.answers.push(Record::new(qname.clone(), TTL, data));
    true
}

impl Local {
    fn answer(&self, req: &Request) -> Option<Message> {
        let qname = req.qname();
        let qtype = req.qtype();
        let labels = qname.label_count();
        let sub_of_localhost = labels > 1 && qname.is_subdomain_of(&self.localhost);
        let legacy = labels > 1
            && self.prefix
            && qname
                .labels()
                .next()
                .is_some_and(|l| l.eq_ignore_ascii_case(b"localhost"));
        let mut m = req.reply();
        if sub_of_localhost || legacy {
            LOG.debug(&format!(
                "Intercepting localhost query for {:?} {}, from {}",
                qname.to_lowercase_string(),
                qtype,
                req.client.ip()
            ));
            LOCALHOST.inc();
            if !loopback(&mut m, &qname, qtype) {
                m.authority.push(soa(qname));
            }
            return Some(m);
        }
        // The longest of the zones the name is in (the name keeps the client's spelling).
        let zone = self.zones.iter().find(|z| qname.is_subdomain_of(z))?;
        let zone_owner = qname_suffix(&qname, zone.label_count());
        if self.zones.contains(&qname) {
            if qname == self.localhost && loopback(&mut m, &qname, qtype) {
            } else {
                match qtype {
                    RType::SOA => m.answers.push(soa(qname.clone())),
                    RType::NS => m.answers.push(Record::new(
                        qname.clone(),
                        TTL,
                        RData::Ns(self.localhost.clone()),
                    )),
                    _ => m.authority.push(soa(qname.clone())),
                }
            }
        } else if qname == self.ptr {
            if qtype == RType::PTR {
                m.answers.push(Record::new(
                    qname.clone(),
                    TTL,
                    RData::Ptr(self.localhost.clone()),
                ));
            } else {
                m.authority.push(soa(zone_owner.clone()));
            }
        }
        if m.answers.is_empty() && m.authority.is_empty() {
            m.authority.push(soa(zone_owner));
            m.set_rcode(Rcode::NXDOMAIN);
        }
        Some(m)
    }
}

/// The last `n` labels of `name`, keeping its spelling.
fn qname_suffix(name: &Name, n: usize) -> Name {
    let mut s = name.clone();
    while s.label_count() > n {
        s = s.parent();
    }
    s
}

impl Handler for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        match self.answer(req) {
            Some(m) => Box::pin(async move { Outcome::reply("local", m) }),
            None => next.run(req),
        }
    }
}
