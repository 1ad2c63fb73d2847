//! The `bufsize` plugin: caps the EDNS buffer size of queries as later plugins see it (what
//! `forward` asks upstream for, what the reply is truncated to).

use std::sync::Arc;

use sextant_corefile::{Directive, Error};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

pub(crate) struct Bufsize {
    size: u16,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 1)?;
    let size = match d.args.first() {
        None => 1232,
        Some(t) => match t.text.parse::<i64>() {
            Ok(n) if (512..=4096).contains(&n) => n as u16,
            _ => {
                return Err(d.err_at(
                    t,
                    format!(
                        "invalid buffer size '{}': must be a number within 512 - 4096",
                        t.text
                    ),
                ))
            }
        },
    };
    if let Some(sub) = d.sub().first() {
        return Err(sub.err(format!("unexpected token '{}'", sub.name.text)));
    }
    ctx.add_handler(Arc::new(Bufsize { size }));
    Ok(())
}

impl Handler for Bufsize {
    fn name(&self) -> &'static str {
        "bufsize"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        if let Some(e) = req.msg.edns.as_mut() {
            if e.udp_size > self.size {
                e.udp_size = self.size;
            }
        }
        next.run(req)
    }
}
