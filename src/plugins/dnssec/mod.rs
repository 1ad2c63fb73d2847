//! The `dnssec` plugin (CoreDNS `plugin/dnssec`): signs replies for its zones on the fly when
//! the client sets DO — every RRset in the zones, the SOA of negative answers with an NSEC
//! "black lie" turning NXDOMAIN into NODATA, DS or an NSEC at delegations — answers DNSKEY at a
//! zone apex itself, and keeps signatures in a bounded cache (`cache_capacity`) refreshed when
//! 75% of their 8-day validity has passed. Replies a later plugin sent as wire bytes are also
//! remembered signed, so a warm answer costs a hash and a copy.

mod sign;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::{Counter, Gauge};
use sextant_corefile::{Directive, Error};
use sextant_wire::{Name, RType, Reply};
use sextant_zone::dnssec::SigningKey;

use crate::metrics::metrics;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

pub(crate) use sign::Signer;

metrics! {
    CACHE_ENTRIES: GaugeVec("coredns_dnssec_cache_entries", "The number of elements in the dnssec cache.", ["server", "type"]);
    CACHE_HITS: CounterVec("coredns_dnssec_cache_hits_total", "The count of cache hits.", ["server"]);
    CACHE_MISSES: CounterVec("coredns_dnssec_cache_misses_total", "The count of cache misses.", ["server"]);
}

/// Default `cache_capacity` (CoreDNS: 10000).
pub(crate) const DEFAULT_CAPACITY: i64 = 10000;

/// The `dnssec` line of a block, parsed.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) zones: Vec<Name>,
    pub(crate) keys: Vec<Arc<SigningKey>>,
    pub(crate) capacity: i64,
}

pub(crate) fn parse(d: &Directive, block: &[String], base: &Path) -> Result<Config, Error> {
    let zones = zones::from_args(d, &d.args, block)?;
    let mut keys: Vec<Arc<SigningKey>> = Vec::new();
    let mut capacity = DEFAULT_CAPACITY;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "key" => {
                let Some(kind) = sub.args.first() else {
                    return Err(sub.arg_err(&sub.name));
                };
                match kind.text.as_str() {
                    "file" => {
                        if sub.args.len() < 2 {
                            return Err(sub.err(
                                "Wrong argument count or unexpected line ending after 'file'",
                            ));
                        }
                        for a in &sub.args[1..] {
                            let k = crate::pkg::keyfile::read_key(&a.text, base)
                                .map_err(|e| sub.err_at(a, e))?;
                            keys.push(Arc::new(k));
                        }
                    }
                    "aws_secretsmanager" => {
                        return Err(sub.err_at(
                            kind,
                            "key aws_secretsmanager is not supported by Sextant: use key file",
                        ))
                    }
                    // CoreDNS ignores any other word here (and reads no key).
                    _ => {}
                }
            }
            "cache_capacity" => {
                let Some(t) = sub.args.first() else {
                    return Err(sub.arg_err(&sub.name));
                };
                capacity = crate::pkg::num::atoi(sub, t)?;
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    for k in &keys {
        let owner = k.dnskey.name.to_lowercase();
        if !zones.iter().any(|z| z.is_subdomain_of(&owner)) {
            return Err(d.err(format!(
                "key {owner} (keyid: {}) can not sign any of the zones",
                k.tag
            )));
        }
    }
    Ok(Config {
        zones,
        keys,
        capacity,
    })
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let c = parse(lines[0], &ctx.block.zones, Path::new("."))?;
    let signer = Arc::new(Signer::new(c.zones, c.keys, c.capacity, ctx.clock()));
    let s = signer.clone();
    // CoreDNS sweeps its cache every 8 hours for signatures past 75% of their validity.
    ctx.periodic(Duration::from_secs(8 * 3600), move || s.sweep());
    ctx.add_handler(Arc::new(Dnssec {
        signer,
        meters: RwLock::default(),
    }));
    Ok(())
}

/// The metric series of one server label.
#[derive(Clone)]
pub(crate) struct Meter {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) entries: Gauge,
}

impl Meter {
    fn new(server: &str) -> Meter {
        Meter {
            hits: CACHE_HITS.with_label_values(&[server]),
            misses: CACHE_MISSES.with_label_values(&[server]),
            entries: CACHE_ENTRIES.with_label_values(&[server, "signature"]),
        }
    }
}

/// The handler.
pub(crate) struct Dnssec {
    signer: Arc<Signer>,
    meters: RwLock<Vec<(Arc<str>, Meter)>>,
}

impl Dnssec {
    fn meter(&self, server: &Arc<str>) -> Meter {
        if let Ok(m) = self.meters.read() {
            if let Some((_, x)) = m
                .iter()
                .find(|(s, _)| Arc::ptr_eq(s, server) || **s == **server)
            {
                return x.clone();
            }
        }
        let x = Meter::new(server);
        if let Ok(mut m) = self.meters.write() {
            if m.len() < 16 {
                m.push((server.clone(), x.clone()));
            }
        }
        x
    }
}

impl Handler for Dnssec {
    fn name(&self) -> &'static str {
        "dnssec"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        // Borrowed: zone matching and name equality ignore case, so neither the name nor the
        // zone is copied on the query path.
        let zones = &self.signer.zones;
        let Some(zone) = req
            .msg
            .question()
            .and_then(|q| zones::matches(zones, &q.name))
        else {
            return next.run(req);
        };
        let do_bit = req.do_bit();
        if req.qtype() == RType::DNSKEY {
            if let Some(z) = req
                .msg
                .question()
                .and_then(|q| zones.iter().find(|z| **z == q.name))
            {
                let meter = self.meter(&req.server);
                let m = self.signer.dnskey_reply(req.reply(), z, do_bit, &meter);
                return Box::pin(async move { Outcome::reply("dnssec", m) });
            }
        }
        if !do_bit {
            return next.run(req);
        }
        let meter = self.meter(&req.server);
        Box::pin(async move {
            let mut out = next.run(req).await;
            if out.ext.is_some() {
                // Transfers, silent outcomes, signed TSIG replies: left as they are.
                if out
                    .ext
                    .as_ref()
                    .is_some_and(|e| e.silent || !e.more.is_empty())
                {
                    return out;
                }
            }
            if let Some(Reply::Encoded(w)) = &mut out.reply {
                if self.signer.sign_wire(&mut w.bytes, zone, &meter) {
                    w.uncompressed = None;
                    out.rcode = out.reply.as_ref().map_or(out.rcode, Reply::rcode);
                    out.error = None;
                    return out;
                }
            }
            let Some(m) = out.message_mut() else {
                return out;
            };
            let zone = m
                .question()
                .and_then(|q| zones::matches(zones, &q.name))
                .unwrap_or(zone)
                .clone();
            self.signer.sign_message(m, &zone, &meter);
            out.rcode = m.rcode();
            out
        })
    }
}

#[cfg(test)]
mod tests;
