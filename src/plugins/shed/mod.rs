//! The `shed` plugin: UDP replies written through a bounded stack per listener socket (one
//! writer, newest first, oldest evicted), and queries dropped before the rest of the chain while
//! their socket's stack is full.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};

use crate::metrics::metrics;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Proto, Request, SetupCtx};
use crate::server::wstack::DropHook;

metrics! {
    /// Dropped queries (`query`) and replies (`response`) per listener.
    DROPPED: CounterVec(
        "coredns_shed_dropped_total",
        "Counter of queries and responses dropped, per server, by reason.",
        ["server", "reason"]
    );
}

fn response_dropped(server: &str) {
    DROPPED.with_label_values(&[server, "response"]).inc();
}

struct Shed;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    if let Some(extra) = d.args.first() {
        return Err(d.arg_err(extra));
    }
    if d.block.is_some() {
        return Err(d.err("shed takes no options"));
    }
    // Only UDP sockets have a write stack: on another transport shed would protect nothing.
    if let Some(k) = &ctx.block.non_dns_key {
        let scheme = k.split("://").next().unwrap_or_default();
        return Err(d.err(format!(
            "only plain DNS server blocks are supported; {k:?} uses transport {scheme:?}"
        )));
    }
    ctx.set_udp_write_stack(DropHook(response_dropped));
    ctx.add_handler(Arc::new(Shed));
    Ok(())
}

impl Handler for Shed {
    fn name(&self) -> &'static str {
        "shed"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        // TCP is never shed; a UDP query arriving while its socket's stack is full would only
        // produce a reply bound for eviction: dropped silently, the client retries elsewhere.
        if req.proto == Proto::Udp && req.backlogged {
            DROPPED.with_label_values(&[&req.server, "query"]).inc();
            return Box::pin(async { Outcome::silent("shed") });
        }
        next.run(req)
    }
}
