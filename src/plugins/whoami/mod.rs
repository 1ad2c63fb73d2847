//! The `whoami` plugin: answers every query with the client's address and port.

use std::net::IpAddr;
use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{RData, Record, Srv};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

pub(crate) struct Whoami;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    for d in lines {
        d.arg_count(0, 0)?;
    }
    ctx.add_handler(Arc::new(Whoami));
    Ok(())
}

impl Handler for Whoami {
    fn name(&self) -> &'static str {
        "whoami"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let mut m = req.reply();
        m.header.aa = true;
        let qname = req.qname();
        let class = req.qclass();
        let ip = match req.client.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let addr = match ip {
            IpAddr::V4(a) => RData::A(a),
            IpAddr::V6(a) => RData::Aaaa(a),
        };
        m.additional
            .push(Record::new(qname.clone(), 0, addr).with_class(class));
        let label = format!("_{}", req.proto.as_str());
        if let Ok(srv_name) = qname.prepend(label.as_bytes()) {
            m.additional.push(
                Record::new(
                    srv_name,
                    0,
                    RData::Srv(Srv {
                        priority: 0,
                        weight: 0,
                        port: req.client.port(),
                        target: sextant_wire::Name::root(),
                    }),
                )
                .with_class(class),
            );
        }
        Box::pin(async move { Outcome::reply("whoami", m) })
    }
}
