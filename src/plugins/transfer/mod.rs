//! The `transfer` plugin: answers AXFR (and IXFR, as a full AXFR unless the client's serial is
//! current) over TCP to allowed clients, from the first later plugin in the chain that is
//! authoritative for the zone (CoreDNS `transfer.Transferer`). Refuses UDP and other clients.

use std::net::IpAddr;
use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Name, RData, RType, Rcode};

use crate::log::PluginLog;
use crate::pkg::{addr, zones};
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Proto, Request, SetupCtx};

const LOG: PluginLog = PluginLog("transfer");

/// Who may transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    Any,
    Ip(IpAddr),
}

/// One `transfer` line.
#[derive(Debug, Clone)]
pub(crate) struct Xfr {
    pub zones: Vec<Name>,
    pub to: Vec<Peer>,
}

impl Xfr {
    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.to.iter().any(|p| match p {
            Peer::Any => true,
            Peer::Ip(a) => *a == ip,
        })
    }
}

pub(crate) struct Transfer {
    xfrs: Vec<Xfr>,
}

/// `ADDR`, `ADDR:PORT`, `[V6]:PORT` or `*`.
fn parse_peer(s: &str) -> Option<Peer> {
    if s == "*" {
        return Some(Peer::Any);
    }
    addr::host_port(s, 53).map(|sa| Peer::Ip(sa.ip()))
}

pub(crate) fn parse(lines: &[&Directive], block_zones: &[String]) -> Result<Vec<Xfr>, Error> {
    let mut out = Vec::new();
    for d in lines {
        let zones = zones::from_args(d, &d.args, block_zones)?;
        let mut to = Vec::new();
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "to" => {
                    sub.arg_count(1, usize::MAX)?;
                    for a in &sub.args {
                        let p = parse_peer(&a.text).ok_or_else(|| {
                            sub.err_at(a, format!("not a valid IP address or '*': {}", a.text))
                        })?;
                        to.push(p);
                    }
                }
                other => return Err(sub.err(format!("unknown property {other:?}"))),
            }
        }
        if to.is_empty() {
            return Err(d.err("'to' is required"));
        }
        out.push(Xfr { zones, to });
    }
    Ok(out)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let xfrs = parse(lines, &ctx.block.zones)?;
    ctx.add_handler(Arc::new(Transfer { xfrs }));
    Ok(())
}

impl Transfer {
    /// The `transfer` line with the longest zone containing `name`.
    fn longest_match(&self, name: &Name) -> Option<&Xfr> {
        let mut best: Option<(&Xfr, usize)> = None;
        for x in &self.xfrs {
            let Some(n) = zones::matches(&x.zones, name).map(Name::label_count) else {
                continue;
            };
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((x, n));
            }
        }
        best.map(|(x, _)| x)
    }
}

impl Handler for Transfer {
    fn name(&self) -> &'static str {
        "transfer"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let qtype = req.qtype();
            if qtype != RType::AXFR && qtype != RType::IXFR {
                return next.run(req).await;
            }
            if req.proto != Proto::Tcp {
                return Outcome::rcode("transfer", Rcode::REFUSED);
            }
            let name = req.qname().to_lowercase();
            let Some(x) = self.longest_match(&name) else {
                return next.run(req).await;
            };
            if !x.allowed(req.client.ip()) {
                let mut m = req.reply();
                m.set_rcode(Rcode::REFUSED);
                return Outcome::reply("transfer", m);
            }
            let mut serial = 0;
            if qtype == RType::IXFR {
                match req.msg.authority.as_slice() {
                    [r] => match &r.data {
                        RData::Soa(s) => serial = s.serial,
                        _ => return Outcome::rcode("transfer", Rcode::SERVFAIL),
                    },
                    _ => return Outcome::rcode("transfer", Rcode::SERVFAIL),
                }
            }
            let records = next
                .handlers()
                .iter()
                .filter_map(|h| h.transferer())
                .find_map(|t| t.transfer(&name, serial));
            let Some(records) = records else {
                return next.run(req).await;
            };
            let mut m = req.reply();
            m.header.aa = true;
            if records.len() == 1 {
                if let RData::Soa(s) = &records[0].data {
                    LOG.info(&format!(
                        "Outgoing noop, incremental transfer for up to date zone {:?} to {} for {} SOA serial",
                        req.qname().to_string(),
                        req.client.ip(),
                        s.serial
                    ));
                }
            } else {
                let serial = match records.first().map(|r| &r.data) {
                    Some(RData::Soa(s)) => s.serial,
                    _ => 0,
                };
                LOG.info(&format!(
                    "Outgoing transfer of {} records of zone {:?} to {} for {} SOA serial",
                    records.len(),
                    req.qname().to_string(),
                    req.client.ip(),
                    serial
                ));
            }
            m.answers = records;
            Outcome::reply("transfer", m)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_corefile::parse_str;

    fn lines(text: &str) -> Result<Vec<Xfr>, Error> {
        let cf = parse_str("Corefile", text, std::path::Path::new(".")).expect("corefile");
        let ds: Vec<&Directive> = cf.blocks[0]
            .directives
            .iter()
            .filter(|d| d.name.text == "transfer")
            .collect();
        parse(&ds, &["cluster.local.".to_string()])
    }

    #[test]
    fn parses_zones_and_peers() {
        let x =
            lines("cluster.local {\n transfer {\n  to * 10.0.0.1 [::1]:53 10.0.0.2:5300\n }\n}\n")
                .unwrap();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].zones, vec![Name::parse("cluster.local.").unwrap()]);
        assert_eq!(x[0].to.len(), 4);
        assert_eq!(x[0].to[0], Peer::Any);
        assert!(x[0].allowed("10.0.0.1".parse().unwrap()));
        let x =
            lines("cluster.local {\n transfer example.org 10.0.0.0/8 {\n  to 10.0.0.1\n }\n}\n")
                .unwrap();
        assert_eq!(x[0].zones.len(), 2);
        assert!(x[0].allowed("10.0.0.1".parse().unwrap()));
        assert!(!x[0].allowed("10.0.0.3".parse().unwrap()));
    }

    #[test]
    fn errors_name_position() {
        let e = lines("cluster.local {\n transfer\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "Corefile:2:2: transfer: 'to' is required");
        let e = lines("cluster.local {\n transfer {\n  to nope\n }\n}\n").unwrap_err();
        assert!(e.to_string().starts_with("Corefile:3:6:"), "{e}");
        let e = lines("cluster.local {\n transfer {\n  from 1.2.3.4\n }\n}\n").unwrap_err();
        assert!(e.to_string().contains("unknown property \"from\""), "{e}");
        assert!(e.to_string().starts_with("Corefile:3:3:"), "{e}");
        let e = lines("cluster.local {\n transfer {\n  to\n }\n}\n").unwrap_err();
        assert!(e.to_string().starts_with("Corefile:3:3:"), "{e}");
    }
}
