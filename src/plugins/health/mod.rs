//! The `health` plugin: `/health` on an HTTP address answers 200 `OK` while the process lives
//! (also during lameduck), and sets the lameduck delay used on shutdown. Self-probes every second
//! for `coredns_health_request_*`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_corefile::{Directive, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::plugin::SetupCtx;
use crate::plugins::util::parse_duration;
use crate::server::http::{resolve_addr, HttpHandler, HttpResponse};

pub(crate) const DEFAULT_ADDR: &str = ":8080";

struct Health;

impl HttpHandler for Health {
    fn get(&self, _path: &str) -> HttpResponse {
        HttpResponse::text(200, "OK")
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 1)?;
    let addr = d
        .args
        .first()
        .map(|t| t.text.clone())
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let sa = resolve_addr(&addr).map_err(|e| d.err(e))?;
    let mut lameduck = None;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "lameduck" => {
                sub.arg_count(1, 1)?;
                lameduck = Some(parse_duration(sub, &sub.args[0])?);
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    if !ctx.has_http(&addr, "/health") {
        ctx.add_http(&addr, "/health", Arc::new(Health));
        // Self-probe once a second for coredns_health_request_*, while the generation runs.
        ctx.task(move |t| async move {
            let target = if sa.ip().is_unspecified() {
                std::net::SocketAddr::from(([127, 0, 0, 1], sa.port()))
            } else {
                sa
            };
            loop {
                tokio::select! {
                    _ = t.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let start = Instant::now();
                let ok = tokio::time::timeout(Duration::from_secs(1), probe(target))
                    .await
                    .is_ok_and(|r| r);
                crate::metrics::HEALTH_DURATION.observe(start.elapsed().as_secs_f64());
                if !ok {
                    crate::metrics::HEALTH_FAILURES.inc();
                }
            }
        });
    }
    if let Some(l) = lameduck {
        ctx.settings().lameduck = Some(l);
    }
    Ok(())
}

async fn probe(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}
