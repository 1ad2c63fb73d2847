//! The `cancel` plugin: gives the rest of the chain a deadline; a query still unanswered when
//! it passes gets SERVFAIL (CoreDNS cancels the request's context).

use std::sync::Arc;
use std::time::Duration;

use sextant_corefile::{Directive, Error};
use sextant_wire::Rcode;

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

pub(crate) struct Cancel {
    timeout: Duration,
}

/// CoreDNS's default: 5001 ms, just past forward's 5 s overall deadline.
const DEFAULT: Duration = Duration::from_millis(5001);

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut timeout = DEFAULT;
    // Every line is checked; the last one wins, as in CoreDNS.
    for d in lines {
        timeout = parse(d)?;
    }
    ctx.add_handler(Arc::new(Cancel { timeout }));
    Ok(())
}

fn parse(d: &Directive) -> Result<Duration, Error> {
    d.arg_count(0, 1)?;
    let timeout = match d.args.first() {
        None => DEFAULT,
        Some(t) => {
            let dur = match crate::pkg::duration::parse(&t.text) {
                Ok(dur) => dur,
                Err(crate::pkg::duration::DurationError::Negative(_)) => {
                    return Err(d.err_at(t, format!("invalid negative duration: {:?}", t.text)))
                }
                Err(_) => return Err(d.err_at(t, format!("invalid duration: {:?}", t.text))),
            };
            if dur.is_zero() {
                return Err(d.err_at(t, format!("invalid negative duration: {:?}", t.text)));
            }
            dur
        }
    };
    if let Some(sub) = d.sub().first() {
        return Err(sub.err(format!("unexpected token '{}'", sub.name.text)));
    }
    Ok(timeout)
}

impl Handler for Cancel {
    fn name(&self) -> &'static str {
        "cancel"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, next.run(req)).await {
                Ok(out) => out,
                Err(_) => Outcome::error("", Rcode::SERVFAIL, "context deadline exceeded"),
            }
        })
    }
}
