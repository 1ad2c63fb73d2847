//! The `trace` plugin: samples one query in `every`, records a `servedns` span for it and, for
//! Zipkin, one span per plugin after `trace` (nested as the plugins call each other, as
//! CoreDNS's `plugin.NextOrFailure` does) plus the plugins' own spans (`forward`'s `connect`);
//! finished traces go to a bounded queue that a generation task sends to Zipkin (v2 JSON) or
//! the Datadog agent (msgpack, `/v0.4/traces`). Without `trace` nothing is recorded.

mod b3;
mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sextant_corefile::{Directive, Error, Token};

use crate::pkg::{duration, num};
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx, Span, Trace};

pub(crate) use b3::scope as http_scope;
pub(crate) use report::Reporter;

const DEFAULT_SERVICE: &str = "coredns";
const ZIPKIN_DEFAULT: &str = "localhost:9411";
const DATADOG_DEFAULT: &str = "localhost:8126";
/// zipkin-go's reporter defaults.
const ZIPKIN_BACKLOG: usize = 1000;
const ZIPKIN_BATCH: usize = 100;
const ZIPKIN_INTERVAL: Duration = Duration::from_secs(1);
/// dd-trace-go flushes every 2 s.
const DATADOG_INTERVAL: Duration = Duration::from_secs(2);
const DATADOG_BACKLOG: usize = 10_000;
const DATADOG_BATCH: usize = 1000;

/// Where traces go.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Endpoint {
    /// A Zipkin collector's v2 spans URL (`http://host:port/api/v2/spans`).
    Zipkin(String),
    /// A Datadog agent's `host:port`.
    Datadog(String),
}

/// A block's `trace` configuration.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    pub(crate) endpoint: Endpoint,
    pub(crate) every: u64,
    pub(crate) service: String,
    pub(crate) client_server: bool,
    pub(crate) analytics_rate: f64,
    pub(crate) backlog: usize,
    pub(crate) batch: usize,
    pub(crate) interval: Duration,
}

/// Tag names: Zipkin's, and Datadog's (`@` for `/`, as CoreDNS sets them).
pub(crate) struct Tags {
    name: &'static str,
    qtype: &'static str,
    rcode: &'static str,
    proto: &'static str,
    remote: &'static str,
}

const ZIPKIN_TAGS: Tags = Tags {
    name: "coredns.io/name",
    qtype: "coredns.io/type",
    rcode: "coredns.io/rcode",
    proto: "coredns.io/proto",
    remote: "coredns.io/remote",
};

const DATADOG_TAGS: Tags = Tags {
    name: "coredns.io@name",
    qtype: "coredns.io@type",
    rcode: "coredns.io@rcode",
    proto: "coredns.io@proto",
    remote: "coredns.io@remote",
};

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let cfg = parse(lines)?;
    // An https collector is verified against the system's roots (SSL_CERT_FILE honoured).
    let tls = match report::check_endpoint(&cfg.endpoint) {
        Ok(true) => Some(crate::pkg::tls::client_config(lines[lines.len() - 1], &[])?),
        _ => None,
    };
    let local = ctx
        .bound()
        .first()
        .map(|ip| std::net::SocketAddr::new(*ip, ctx.block.port));
    let reporter = Arc::new(Reporter::new(&cfg, local, tls));
    let r = reporter.clone();
    let clock = ctx.clock();
    ctx.task(move |t| async move { r.run(t, clock).await });
    let wrapped: Arc<OnceLock<Vec<Arc<dyn Handler>>>> = Arc::default();
    if matches!(cfg.endpoint, Endpoint::Zipkin(_)) {
        // Once the block's chain is complete: every plugin after `trace`, each in a span.
        let slot = wrapped.clone();
        ctx.link(lines[0], move |chain| {
            let at = chain.iter().position(|h| h.name() == "trace").unwrap_or(0);
            let rest = chain
                .iter()
                .skip(at + 1)
                .map(|h| Arc::new(Spanned { inner: h.clone() }) as Arc<dyn Handler>)
                .collect();
            let _ = slot.set(rest);
            Ok(())
        });
    }
    ctx.add_handler(Arc::new(TraceHandler {
        count: AtomicU64::new(0),
        datadog: matches!(cfg.endpoint, Endpoint::Datadog(_)),
        every: cfg.every,
        shared: cfg.client_server,
        reporter,
        wrapped,
    }));
    Ok(())
}

/// Every `trace` line of a block, in order, into one configuration (CoreDNS reads them into one
/// tracer: the last endpoint wins, options add up).
pub(crate) fn parse(lines: &[&Directive]) -> Result<Config, Error> {
    let mut cfg = Config {
        endpoint: Endpoint::Zipkin(zipkin_url(ZIPKIN_DEFAULT)),
        every: 1,
        service: DEFAULT_SERVICE.to_string(),
        client_server: false,
        analytics_rate: 0.0,
        backlog: 0,
        batch: 0,
        interval: Duration::ZERO,
    };
    for d in lines {
        d.arg_count(0, 2)?;
        let (kind, ep) = match d.args.as_slice() {
            [] => ("zipkin".to_string(), None),
            [ep] => ("zipkin".to_string(), Some(ep)),
            [kind, ep] => (kind.text.to_ascii_lowercase(), Some(ep)),
            _ => unreachable!("at most two arguments"),
        };
        let ep = ep.map(|t| t.text.as_str());
        cfg.endpoint = match kind.as_str() {
            "zipkin" => Endpoint::Zipkin(zipkin_url(ep.unwrap_or(ZIPKIN_DEFAULT))),
            "datadog" => Endpoint::Datadog(ep.unwrap_or(DATADOG_DEFAULT).to_string()),
            other => return Err(d.err(format!("tracing endpoint type '{other}' is not supported"))),
        };
        report::check_endpoint(&cfg.endpoint).map_err(|e| d.err(e))?;
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "every" => cfg.every = num::count(sub, one(sub)?)?,
                "service" => cfg.service = one(sub)?.text.clone(),
                "client_server" => {
                    sub.arg_count(0, 1)?;
                    cfg.client_server = match sub.args.first().map(|t| t.text.as_str()) {
                        None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
                        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
                        Some(v) => {
                            return Err(sub.err_at(
                                &sub.args[0],
                                format!("strconv.ParseBool: parsing {v:?}: invalid syntax"),
                            ))
                        }
                    };
                }
                "datadog_analytics_rate" => {
                    sub.arg_count(0, 1)?;
                    cfg.analytics_rate = 0.0;
                    if let Some(t) = sub.args.first() {
                        let r: f64 = t.text.parse().map_err(|_| {
                            sub.err_at(
                                t,
                                format!("strconv.ParseFloat: parsing {:?}: invalid syntax", t.text),
                            )
                        })?;
                        if !(0.0..=1.0).contains(&r) {
                            return Err(sub.err_at(
                                t,
                                format!(
                                    "datadog analytics rate must be between 0 and 1, '{r:.6}' is not supported"
                                ),
                            ));
                        }
                        cfg.analytics_rate = r;
                    }
                }
                "zipkin_max_backlog_size" => cfg.backlog = positive(sub, one(sub)?)?,
                "zipkin_max_batch_size" => cfg.batch = positive(sub, one(sub)?)?,
                "zipkin_max_batch_interval" => {
                    cfg.interval = duration::arg(sub, one(sub)?)?;
                }
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
    }
    // Zero keeps the reporter's default, as in CoreDNS.
    let datadog = matches!(cfg.endpoint, Endpoint::Datadog(_));
    if cfg.backlog == 0 {
        cfg.backlog = if datadog {
            DATADOG_BACKLOG
        } else {
            ZIPKIN_BACKLOG
        };
    }
    if cfg.batch == 0 {
        cfg.batch = if datadog { DATADOG_BATCH } else { ZIPKIN_BATCH };
    }
    if cfg.interval.is_zero() {
        cfg.interval = if datadog {
            DATADOG_INTERVAL
        } else {
            ZIPKIN_INTERVAL
        };
    }
    Ok(cfg)
}

/// The one argument of option `sub`.
fn one(sub: &Directive) -> Result<&Token, Error> {
    sub.arg_count(1, 1)?;
    Ok(&sub.args[0])
}

/// A size option: Go's `Atoi`, and not negative (0 keeps the default).
fn positive(d: &Directive, t: &Token) -> Result<usize, Error> {
    let n = num::atoi(d, t)?;
    usize::try_from(n).map_err(|_| d.err_at(t, format!("'{n}' must not be negative")))
}

/// CoreDNS's rule: an endpoint without `http` in it is `http://ENDPOINT/api/v2/spans`.
fn zipkin_url(ep: &str) -> String {
    if ep.contains("http") {
        ep.to_string()
    } else {
        format!("http://{ep}/api/v2/spans")
    }
}

pub(crate) struct TraceHandler {
    count: AtomicU64,
    datadog: bool,
    every: u64,
    /// `client_server`: a DoH client's span and the `servedns` span are one shared span.
    shared: bool,
    reporter: Arc<Reporter>,
    /// The plugins after `trace`, each wrapped in a span (Zipkin only; set when linked).
    wrapped: Arc<OnceLock<Vec<Arc<dyn Handler>>>>,
}

impl Handler for TraceHandler {
    fn name(&self) -> &'static str {
        "trace"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let sampled =
            self.every > 0 && (self.count.fetch_add(1, Ordering::Relaxed) + 1) % self.every == 0;
        // A request already traced (it re-entered the server) stays in its trace.
        if !sampled || req.trace.is_some() {
            return next.run(req);
        }
        Box::pin(self.traced(req, next))
    }
}

impl TraceHandler {
    async fn traced<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> Outcome {
        let start_us = crate::plugin::now_us();
        let start = Instant::now();
        // A DoH client's B3 context (Zipkin only, as in CoreDNS): the span joins its trace, as
        // a child of the client's span, or as that span's server side with `client_server`.
        let parent = if self.datadog { None } else { b3::current() };
        let (trace_id, high, root_id, root_parent, shared) = match parent {
            Some(p) if p.joins() => {
                let high = (p.trace_high != 0).then_some(p.trace_high);
                if self.shared && p.span != 0 {
                    (p.trace, high, p.span, p.parent.unwrap_or(0), true)
                } else {
                    (p.trace, high, report::span_id(), p.span, false)
                }
            }
            _ => {
                let id = report::span_id();
                (id, self.reporter.trace_id_high(start_us), id, 0, false)
            }
        };
        req.set_meta("trace/traceid", || match high {
            Some(h) => format!("{h:016x}{trace_id:016x}"),
            None => format!("{trace_id:016x}"),
        });
        let debug = parent.is_some_and(|p| p.debug);
        if !debug && parent.and_then(|p| p.sampled) == Some(false) {
            // The client decided not to sample: nothing is recorded (zipkin-go's unsampled span).
            return next.run(req).await;
        }
        req.trace = Some(Box::new(Trace::new(root_id)));
        let rest = next.handlers();
        let out = match self.wrapped.get() {
            Some(w) if !self.datadog && w.len() == rest.len() => Next::new(w).run(req).await,
            _ => next.run(req).await,
        };
        let spans = req.trace.take().map(|t| t.spans).unwrap_or_default();
        let tags = if self.datadog {
            &DATADOG_TAGS
        } else {
            &ZIPKIN_TAGS
        };
        let root = Span {
            name: "servedns",
            id: root_id,
            parent: root_parent,
            start_us,
            duration: start.elapsed(),
            tags: vec![
                (tags.name, req.qname().to_string().to_ascii_lowercase()),
                (tags.qtype, req.qtype().to_string()),
                (tags.proto, req.proto.as_str().to_string()),
                (tags.remote, req.client.ip().to_string()),
                (tags.rcode, out.final_rcode().to_string()),
            ],
            error: out.error.clone(),
            server: true,
            shared,
        };
        self.reporter.submit(trace_id, high, debug, spans, root);
        out
    }
}

/// A plugin of a traced chain: its work is a span, a child of the span open when it was
/// called (the previous plugin's). Untraced requests go straight through.
struct Spanned {
    inner: Arc<dyn Handler>,
}

impl Handler for Spanned {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let Some(t) = req.trace.as_mut() else {
            return self.inner.serve(req, next);
        };
        let span = t.open(self.inner.name());
        Box::pin(async move {
            let out = self.inner.serve(req, next).await;
            if let Some(t) = req.trace.as_mut() {
                t.close(span, Vec::new());
            }
            out
        })
    }
}

#[cfg(test)]
mod tests;
