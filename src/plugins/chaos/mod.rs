//! The `chaos` plugin: `version.bind`, `version.server`, `authors.bind`, `hostname.bind` and
//! `id.server` TXT answers in class CH.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Class, RData, RType, Record};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

/// Version string answered by default.
pub(crate) const DEFAULT_VERSION: &str = concat!("Sextant-", env!("CARGO_PKG_VERSION"));

pub(crate) struct Chaos {
    version: String,
    authors: Vec<String>,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    let mut args = d.args.iter();
    let version = args
        .next()
        .map(|t| t.text.clone())
        .unwrap_or_else(|| DEFAULT_VERSION.to_string());
    let mut authors: Vec<String> = args.map(|t| t.text.clone()).collect();
    if authors.is_empty() {
        authors.push("Sextant developers".to_string());
    }
    authors.sort();
    ctx.allow_chaos();
    ctx.add_handler(Arc::new(Chaos { version, authors }));
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".to_string())
}

impl Handler for Chaos {
    fn name(&self) -> &'static str {
        "chaos"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        if req.qclass() != Class::CH || req.qtype() != RType::TXT {
            return next.run(req);
        }
        let qname = req.qname();
        let texts: Vec<String> = match qname.to_lowercase_string().as_str() {
            "authors.bind." => self.authors.clone(),
            "version.bind." | "version.server." => vec![self.version.clone()],
            "hostname.bind." | "id.server." => vec![hostname()],
            _ => return next.run(req),
        };
        let mut m = req.reply();
        for t in texts {
            m.answers.push(
                Record::new(qname.clone(), 0, RData::Txt(vec![t.into_bytes()]))
                    .with_class(Class::CH),
            );
        }
        Box::pin(async move { Outcome::reply("chaos", m) })
    }
}
