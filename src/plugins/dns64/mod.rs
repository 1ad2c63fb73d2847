//! The `dns64` plugin (RFC 6147): an AAAA query (from an IPv6 client, or any with
//! `allow_ipv4`) whose answer has no AAAA records gets AAAA records synthesised from the
//! name's A records under a NAT64 prefix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use sextant_corefile::{Directive, Error, Token};
use sextant_wire::{Class, Message, RData, RType, Rcode, Record};

use crate::metrics::metrics;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use crate::plugins::cache::classify::{typify, MsgType};
use sextant_wire::IpNet;

metrics! {
    TRANSLATED: CounterVec("coredns_dns64_requests_translated_total", "Counter of DNS requests translated by dns64.", ["server"]);
}

#[derive(Debug, PartialEq, Eq)]
struct Config {
    /// The prefix's bytes (only the first `len / 8` count) and its length in bits.
    prefix: [u8; 16],
    len: u8,
    translate_all: bool,
    allow_ipv4: bool,
}

pub(crate) struct Dns64 {
    cfg: Config,
}

/// A NAT64 prefix: IPv6, length 32, 40, 48, 56, 64 or 96 (RFC 6052).
fn parse_prefix(d: &Directive, t: &Token) -> Result<([u8; 16], u8), Error> {
    let c = IpNet::parse(&t.text).map_err(|e| d.err_at(t, e.to_string()))?;
    let (ip, bits) = (c.addr(), c.prefix());
    let IpAddr::V6(v6) = ip else {
        return Err(d.err_at(t, format!("invalid netmask 32 IPv6 address: {:?}", t.text)));
    };
    if bits % 8 != 0 || !(32..=96).contains(&bits) {
        return Err(d.err_at(t, format!("invalid prefix length {:?}", t.text)));
    }
    Ok((v6.octets(), bits))
}

fn parse(lines: &[&Directive]) -> Result<Config, Error> {
    let mut c = Config {
        prefix: Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0).octets(),
        len: 96,
        translate_all: false,
        allow_ipv4: false,
    };
    for d in lines {
        d.arg_count(0, 1)?;
        if let Some(t) = d.args.first() {
            (c.prefix, c.len) = parse_prefix(d, t)?;
        }
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "prefix" => {
                    sub.arg_count(1, 1)?;
                    (c.prefix, c.len) = parse_prefix(sub, &sub.args[0])?;
                }
                "translate_all" => {
                    sub.arg_count(0, 0)?;
                    c.translate_all = true;
                }
                "allow_ipv4" => {
                    sub.arg_count(0, 0)?;
                    c.allow_ipv4 = true;
                }
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
    }
    Ok(c)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let cfg = parse(lines)?;
    ctx.add_handler(Arc::new(Dns64 { cfg }));
    Ok(())
}

/// RFC 6052 section 2.2: the IPv4 address embedded after the prefix, skipping bits 64..72.
fn to6(prefix: &[u8; 16], len: u8, v4: Ipv4Addr) -> Ipv6Addr {
    let a = v4.octets();
    let mut out = [0u8; 16];
    let n = len as usize / 8;
    out[..n].copy_from_slice(&prefix[..n]);
    let mut i = n;
    for b in a {
        if i == 8 {
            i += 1;
        }
        out[i] = b;
        i += 1;
    }
    Ipv6Addr::from(out)
}

impl Dns64 {
    fn intercept(&self, req: &Request) -> bool {
        let v4 = match req.client.ip() {
            IpAddr::V4(_) => true,
            IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
        };
        (self.cfg.allow_ipv4 || !v4) && req.qtype() == RType::AAAA && req.qclass() == Class::IN
    }

    fn should_translate(&self, m: &Message) -> bool {
        if typify(m) == MsgType::NameError {
            return false;
        }
        self.cfg.translate_all || !m.answers.iter().any(|r| r.rtype == RType::AAAA)
    }

    /// The reply built from the A lookup `a`: its answers with A turned into AAAA (TTL capped
    /// by the original reply's SOA TTL, 600 without one), its authority and additional.
    fn synthesize(&self, req: &Request, orig: &Message, a: Message) -> Message {
        let soa_ttl = orig
            .authority
            .iter()
            .rev()
            .find(|r| r.rtype == RType::SOA)
            .map_or(600, |r| r.ttl);
        let mut m = req.reply();
        m.header.tc = a.header.tc;
        m.authority = a.authority;
        m.additional = a.additional;
        // CoreDNS copies the lookup's additional section whole, its OPT record included.
        m.edns = a.edns;
        m.answers = a
            .answers
            .into_iter()
            .map(|rr| match rr.data {
                RData::A(v4) => Record {
                    name: rr.name,
                    rtype: RType::AAAA,
                    class: rr.class,
                    ttl: rr.ttl.min(soa_ttl),
                    data: RData::Aaaa(to6(&self.cfg.prefix, self.cfg.len, v4)),
                },
                _ => rr,
            })
            .collect();
        m
    }
}

impl Handler for Dns64 {
    fn name(&self) -> &'static str {
        "dns64"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        if !self.intercept(req) {
            return next.run(req);
        }
        Box::pin(async move {
            let mut out = next.run(req).await;
            let Some(orig) = out.message_mut() else {
                return out;
            };
            if !self.should_translate(orig) {
                return out;
            }
            let orig = orig.clone();
            let name = req.qname().to_lowercase();
            let mut up = req.resolve(name, RType::A).await;
            let Some(a) = up.message_mut().map(std::mem::take) else {
                let why = up.error.unwrap_or_else(|| "no response".to_string());
                return Outcome::error("dns64", Rcode::SERVFAIL, why);
            };
            let m = self.synthesize(req, &orig, a);
            TRANSLATED.with_label_values(&[&req.server]).inc();
            Outcome::reply("dns64", m)
        })
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
    fn embeds_per_rfc_6052() {
        let v4 = Ipv4Addr::new(192, 0, 2, 33);
        let p = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets();
        // RFC 6052 section 2.4's table.
        for (prefix, len, want) in [
            ("2001:db8::", 32, "2001:db8:c000:221::"),
            ("2001:db8:100::", 40, "2001:db8:1c0:2:21::"),
            ("2001:db8:122::", 48, "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::", 56, "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::", 64, "2001:db8:122:344:c0:2:2100:0"),
            ("2001:db8:122:344::", 96, "2001:db8:122:344::c000:221"),
        ] {
            assert_eq!(to6(&p(prefix), len, v4), want.parse::<Ipv6Addr>().unwrap());
        }
    }

    #[test]
    fn options_and_errors() {
        let c = cfg(". {\n dns64 64:1337::/96\n}\n").unwrap();
        assert_eq!((c.len, c.translate_all), (96, false));
        let c =
            cfg(". {\n dns64 {\n  prefix 2001:db8::/32\n  translate_all\n  allow_ipv4\n }\n}\n")
                .unwrap();
        assert_eq!((c.len, c.translate_all, c.allow_ipv4), (32, true, true));
        let e = cfg(". {\n dns64 64:ff9b::/100\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:2:8: dns64: invalid prefix length \"64:ff9b::/100\""
        );
        assert!(cfg(". {\n dns64 10.0.0.0/8\n}\n").is_err());
        assert!(cfg(". {\n dns64 nonsense\n}\n").is_err());
        assert!(cfg(". {\n dns64 {\n  prefix\n }\n}\n").is_err());
        assert!(cfg(". {\n dns64 {\n  translate_some\n }\n}\n").is_err());
    }
}
