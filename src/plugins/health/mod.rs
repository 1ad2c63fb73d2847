//! The `health` plugin: `/health` on an HTTP address answers 200 `OK` while the process lives
//! (also during lameduck), and sets the lameduck delay used on shutdown. Self-probes every second
//! for `coredns_health_request_*`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_corefile::{Directive, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pkg::clock::Clock;
use crate::pkg::{addr, duration};
use crate::plugin::SetupCtx;
use crate::server::http::{HttpHandler, HttpResponse};

pub(crate) const DEFAULT_ADDR: &str = ":8080";
/// How often `/health` probes itself, and how long one probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);

struct Health;

impl HttpHandler for Health {
    fn get(&self, _path: &str) -> HttpResponse {
        HttpResponse::text(200, "OK")
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    let (addr, sa) = addr::http_arg(d, DEFAULT_ADDR)?;
    let mut lameduck = None;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "lameduck" => {
                sub.arg_count(1, 1)?;
                lameduck = Some(duration::arg(sub, &sub.args[0])?);
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    if !ctx.has_http(&addr, "/health") {
        ctx.add_http(&addr, "/health", Arc::new(Health));
        // Self-probe once a second for coredns_health_request_*, while the generation runs.
        let clock = ctx.clock();
        ctx.task(move |t| async move { self_probe(sa, clock, t.cancelled()).await });
    }
    if let Some(l) = lameduck {
        ctx.settings().lameduck = Some(l);
    }
    Ok(())
}

/// Probes `/health` on `listen` (loopback for an unspecified address) once a second of
/// `clock` until `stop` resolves, recording `coredns_health_request_duration_seconds` and
/// `coredns_health_request_failures_total`.
async fn self_probe(listen: SocketAddr, clock: Clock, stop: impl Future<Output = ()>) {
    let target = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = clock.sleep(PROBE_EVERY) => {}
        }
        let start = Instant::now();
        let ok = tokio::time::timeout(PROBE_EVERY, probe(target))
            .await
            .is_ok_and(|r| r);
        crate::metrics::HEALTH_DURATION.observe(start.elapsed().as_secs_f64());
        if !ok {
            crate::metrics::HEALTH_FAILURES.inc();
        }
    }
}

async fn probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::clock::ManualClock;
    use crate::pkg::testing::eventually;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The self-probe runs once per second of its clock: each second the clock moves brings
    /// exactly one `GET /health`, and none comes while the clock stands still.
    #[tokio::test]
    async fn self_probe_runs_once_per_clock_second() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let probes = Arc::new(AtomicUsize::new(0));
        let n = probes.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 256];
                let got = s.read(&mut req).await.unwrap_or(0);
                assert!(req[..got].starts_with(b"GET /health HTTP/1.1\r\n"));
                n.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nOK").await;
            }
        });
        let m = ManualClock::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(self_probe(addr, m.clock(), stop.clone().cancelled_owned()));
        m.sleepers(1).await;
        m.advance(PROBE_EVERY - Duration::from_millis(1));
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            probes.load(Ordering::SeqCst),
            0,
            "probed before the first second"
        );
        m.advance(Duration::from_millis(1));
        for want in 1..=3 {
            eventually(&format!("probe {want}"), || {
                probes.load(Ordering::SeqCst) >= want
            })
            .await;
            // The probe is done once the loop sleeps on the clock again.
            m.sleepers(1).await;
            if want < 3 {
                m.advance(PROBE_EVERY);
            }
        }
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        assert_eq!(probes.load(Ordering::SeqCst), 3);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the probe stops when cancelled")
            .unwrap();
    }
}
