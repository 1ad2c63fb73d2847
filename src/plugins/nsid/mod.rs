//! The `nsid` plugin: adds the server's identifier (RFC 5001 NSID option) to the reply of a
//! query that asks for it.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Edns, EdnsOption};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

/// EDNS option code of NSID.
pub(crate) const NSID: u16 = 3;

pub(crate) struct Nsid {
    data: Vec<u8>,
}

/// The host name, as Go's `os.Hostname` (the kernel's node name); `localhost` if unknown.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    if let Some(sub) = d.sub().first() {
        return Err(sub.err(format!("unexpected token '{}'", sub.name.text)));
    }
    let data = if d.args.is_empty() {
        hostname()
    } else {
        d.args
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    ctx.add_handler(Arc::new(Nsid {
        data: data.into_bytes(),
    }));
    Ok(())
}

impl Handler for Nsid {
    fn name(&self) -> &'static str {
        "nsid"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let asked = req
            .msg
            .edns
            .as_ref()
            .is_some_and(|e| e.options.iter().any(|o| o.code == NSID));
        if !asked {
            return next.run(req);
        }
        Box::pin(async move {
            let mut out = next.run(req).await;
            let size = req.msg.edns.as_ref().map(|e| e.udp_size).unwrap_or(512);
            if let Some(m) = out.message_mut() {
                // CoreDNS's SetEdns0(size, true): an OPT added here has DO set.
                let e = m.edns.get_or_insert_with(|| {
                    let mut e = Edns::new(size);
                    e.dnssec_ok = true;
                    e
                });
                match e.options.iter_mut().find(|o| o.code == NSID) {
                    Some(o) => o.data = self.data.clone(),
                    None => e.options.push(EdnsOption {
                        code: NSID,
                        data: self.data.clone(),
                    }),
                }
            }
            out
        })
    }
}
