//! The `any` plugin: a minimal answer to ANY queries (RFC 8482).

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{RData, RType, Record};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

pub(crate) struct Any;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    for d in lines {
        d.arg_count(0, 0)?;
    }
    ctx.add_handler(Arc::new(Any));
    Ok(())
}

impl Handler for Any {
    fn name(&self) -> &'static str {
        "any"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        if req.qtype() != RType::ANY {
            return next.run(req);
        }
        let mut m = req.reply();
        m.answers.push(Record::new(
            req.qname(),
            8482,
            RData::Hinfo {
                cpu: b"ANY obsoleted".to_vec(),
                os: b"See RFC 8482".to_vec(),
            },
        ));
        Box::pin(async move { Outcome::reply("any", m) })
    }
}
