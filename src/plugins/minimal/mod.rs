//! The `minimal` plugin: positive answers go out without their authority and additional
//! sections (denials, errors and referrals are left whole).

use std::sync::Arc;

use sextant_corefile::{Directive, Error};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use crate::plugins::cache::classify::{typify, MsgType};

pub(crate) struct Minimal;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 0)?;
    if let Some(sub) = d.sub().first() {
        return Err(sub.err(format!("unexpected token '{}'", sub.name.text)));
    }
    ctx.add_handler(Arc::new(Minimal));
    Ok(())
}

impl Handler for Minimal {
    fn name(&self) -> &'static str {
        "minimal"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut out = next.run(req).await;
            if let Some(m) = out.message_mut() {
                if typify(m) == MsgType::NoError {
                    m.authority.clear();
                    m.additional.clear();
                }
            }
            out
        })
    }
}
