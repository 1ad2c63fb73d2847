//! The `prometheus` plugin: serves `/metrics` on an HTTP address (shared by blocks naming the same
//! address) and records the server-level request metrics for its block.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};

use crate::pkg::addr;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use crate::server::http::{HttpHandler, HttpResponse};

pub(crate) const DEFAULT_ADDR: &str = "localhost:9153";

struct MetricsPage;

impl HttpHandler for MetricsPage {
    fn get(&self, _path: &str) -> HttpResponse {
        HttpResponse {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: crate::metrics::gather_text(),
            headers: Vec::new(),
        }
    }
}

pub(crate) struct Prometheus;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    let (addr, _) = addr::http_arg(d, DEFAULT_ADDR)?;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            // Go runtime metrics have no Rust equivalent; accepted for compatibility.
            "runtime_metrics" => sub.arg_count(0, 0)?,
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    crate::metrics::init();
    ctx.add_http(&addr, "/metrics", Arc::new(MetricsPage));
    ctx.add_handler(Arc::new(Prometheus));
    Ok(())
}

impl Handler for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let out = next.run(req).await;
            let size = out.reply_size();
            crate::metrics::report(req, out.final_rcode(), out.writer, size);
            out
        })
    }
}
