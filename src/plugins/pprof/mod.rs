//! The `pprof` plugin: `/debug/pprof/` on an HTTP address (default `localhost:6053`): an index,
//! CPU profiles in pprof's gzipped protobuf format (`go tool pprof` reads them), the command
//! line, and the allocator's (jemalloc's) heap figures as text. Profiles Sextant cannot take answer
//! 501 saying why.

use std::sync::Arc;
use std::time::Duration;

use http::header;
use sextant_corefile::{Directive, Error};

use crate::pkg::addr;
use crate::pkg::clock::Clock;
use crate::plugin::SetupCtx;
use crate::server::http::{HttpHandler, HttpRequest, HttpResponse};

pub(crate) const DEFAULT_ADDR: &str = "localhost:6053";
const PATH: &str = "/debug/pprof";
/// CPU samples per second (Go's `runtime/pprof` rate).
const HZ: i32 = 100;
/// Profile length when `seconds` is missing, not a number or not positive (Go's default).
const DEFAULT_SECONDS: u64 = 30;

/// The profiles the index lists: (name, what it is).
const PROFILES: &[(&str, &str)] = &[
    (
        "profile",
        "CPU profile, gzipped pprof protobuf. ?seconds=N sets its length (default 30).",
    ),
    (
        "heap",
        "The allocator's (jemalloc's) figures as text with ?debug=1 (no per-call-site samples).",
    ),
    ("allocs", "The same figures as heap."),
    (
        "cmdline",
        "The command line, arguments separated by NUL bytes.",
    ),
];

/// Profiles Go's `net/http/pprof` serves that Sextant has no data for, and why.
const NOT_HERE: &[(&str, &str)] = &[
    ("goroutine", "Sextant has no goroutines; its tasks run on tokio's runtime, which keeps no stacks of waiting tasks."),
    ("threadcreate", "thread creation is not recorded."),
    ("block", "no blocking events are recorded: queries wait in async tasks, not blocked threads (the `block` option is accepted and has no effect)."),
    ("mutex", "lock contention is not recorded."),
    ("trace", "there is no execution tracer."),
    ("symbol", "CPU profiles carry their function names, so no symbol lookup is needed."),
];

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let addr = parse(lines[0])?;
    let pages = Arc::new(Pages { clock: ctx.clock() });
    ctx.add_http(&addr, PATH, pages.clone());
    ctx.add_http(&addr, &format!("{PATH}/"), pages);
    Ok(())
}

/// The address of a `pprof` line; `block`'s rate is checked and has no effect.
fn parse(d: &Directive) -> Result<String, Error> {
    let (addr, _) = addr::http_arg(d, DEFAULT_ADDR)?;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "block" => {
                sub.arg_count(0, 1)?;
                if let Some(t) = sub.args.first() {
                    t.text.parse::<i64>().map_err(|_| {
                        sub.err(format!(
                            "property 'block' invalid integer value '{}'",
                            t.text
                        ))
                    })?;
                }
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    Ok(addr)
}

struct Pages {
    clock: Clock,
}

impl HttpHandler for Pages {
    fn get(&self, path: &str) -> HttpResponse {
        let name = match path.strip_prefix(PATH) {
            None | Some("") => {
                return HttpResponse::text(302, "")
                    .with_header(header::LOCATION, format!("{PATH}/"))
            }
            Some(rest) => rest.trim_start_matches('/'),
        };
        match name {
            "" => index(),
            "cmdline" => {
                let args: Vec<String> = std::env::args().collect();
                HttpResponse::text(200, args.join("\0"))
            }
            n => match NOT_HERE.iter().find(|(p, _)| *p == n) {
                Some((_, why)) => {
                    HttpResponse::text(501, format!("{n}: not available in Sextant: {why}\n"))
                }
                None => HttpResponse::text(404, "Unknown profile\n"),
            },
        }
    }

    fn serve(self: Arc<Self>, req: HttpRequest) -> crate::plugin::BoxFuture<'static, HttpResponse> {
        let name = req
            .path
            .strip_prefix(PATH)
            .unwrap_or("")
            .trim_start_matches('/');
        match name {
            "profile" => {
                let seconds = req
                    .param("seconds")
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|s| *s > 0)
                    .unwrap_or(DEFAULT_SECONDS);
                Box::pin(async move { self.cpu(Duration::from_secs(seconds)).await })
            }
            "heap" | "allocs" => {
                let debug = req.param("debug").is_some_and(|d| d != "0");
                let page = heap(debug);
                Box::pin(std::future::ready(page))
            }
            _ => {
                let page = self.get(&req.path);
                Box::pin(std::future::ready(page))
            }
        }
    }
}

impl Pages {
    /// Samples the whole process at [`HZ`] for `length`; the profiler stops when this future
    /// is dropped (the client went away, the listener stopped).
    async fn cpu(&self, length: Duration) -> HttpResponse {
        let guard = match pprof::ProfilerGuardBuilder::default()
            .frequency(HZ)
            // Unwinding from inside these libraries can deadlock in the signal handler.
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
        {
            Ok(g) => g,
            Err(e) => {
                return HttpResponse::text(500, format!("Could not enable CPU profiling: {e}\n"))
            }
        };
        self.clock.sleep(length).await;
        match encode(&guard) {
            Ok(body) => HttpResponse {
                status: 200,
                content_type: "application/octet-stream",
                body,
                headers: Vec::new(),
            }
            .with_header(
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"profile\"".to_string(),
            ),
            Err(e) => HttpResponse::text(500, format!("Could not build the CPU profile: {e}\n")),
        }
    }
}

/// The samples of `guard` as pprof's protobuf `Profile`, gzipped.
fn encode(guard: &pprof::ProfilerGuard<'_>) -> Result<Vec<u8>, String> {
    use pprof::protos::Message as _;
    use std::io::Write as _;
    let report = guard.report().build().map_err(|e| e.to_string())?;
    let profile = report.pprof().map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    profile.encode(&mut raw).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

fn index() -> HttpResponse {
    let mut body = String::from(
        "<html>\n<head><title>/debug/pprof/</title></head>\n<body>\n<h1>/debug/pprof/</h1>\n\
         <p>Profiles of this Sextant process:</p>\n<table>\n",
    );
    for (name, what) in PROFILES {
        let link = if *name == "heap" || *name == "allocs" {
            format!("{name}?debug=1")
        } else {
            (*name).to_string()
        };
        body.push_str(&format!(
            "<tr><td><a href=\"{link}\">{name}</a></td><td>{what}</td></tr>\n"
        ));
    }
    body.push_str("</table>\n<p>Not available in Sextant:</p>\n<ul>\n");
    for (name, why) in NOT_HERE {
        body.push_str(&format!("<li>{name}: {why}</li>\n"));
    }
    body.push_str("</ul>\n</body>\n</html>\n");
    HttpResponse {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: body.into_bytes(),
        headers: Vec::new(),
    }
}

/// The heap page: the allocator's totals as text with `debug`; without it (what `go tool
/// pprof` asks for) 501, since the allocator keeps no call sites to build samples from.
fn heap(debug: bool) -> HttpResponse {
    if !debug {
        return HttpResponse::text(
            501,
            "heap: no heap profile: Sextant's allocator (jemalloc) records no call sites \
             (sampling them would cost every query). Its totals are at /debug/pprof/heap?debug=1\n",
        );
    }
    match allocator_figures() {
        Some(text) => HttpResponse::text(200, text),
        None => HttpResponse::text(501, "heap: this allocator gives no figures\n"),
    }
}

/// The allocator's totals as text: jemalloc's statistics (`stats.*`) and the resident set
/// size; None where the allocator gives none.
fn allocator_figures() -> Option<String> {
    let figures = crate::alloc::figures()?;
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "-".to_string());
    let mut text = String::from(
        "# heap figures of the allocator (jemalloc's stats.*, in bytes)\n\
         # in_use_bytes: allocated and not freed (stats.allocated)\n",
    );
    if let Some((_, v)) = figures.iter().find(|(name, _)| *name == "allocated") {
        text.push_str(&format!("in_use_bytes {v}\n"));
    }
    for (name, v) in &figures {
        text.push_str(&format!("{name}_bytes {v}\n"));
    }
    text.push_str(&format!(
        "# resident set size of the process\nvm_rss {rss}\n"
    ));
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::line;

    #[test]
    fn options() {
        let ok = |s: &str| parse(&line(s)).unwrap();
        assert_eq!(ok("pprof"), "localhost:6053");
        assert_eq!(ok("pprof 127.0.0.1:6060"), "127.0.0.1:6060");
        assert_eq!(ok("pprof :6060 {\n block\n }"), ":6060");
        assert_eq!(ok("pprof :6060 {\n block 20\n }"), ":6060");
        let err = |s: &str| parse(&line(s)).unwrap_err().to_string();
        assert_eq!(
            err("pprof a b"),
            "Corefile:2:10: pprof: wrong argument count: expected 0 to 1, got 2"
        );
        assert!(
            err("pprof :x").contains("invalid port"),
            "{}",
            err("pprof :x")
        );
        assert_eq!(
            err("pprof {\n block x\n }"),
            "Corefile:3:2: block: property 'block' invalid integer value 'x'"
        );
        assert!(err("pprof {\n block 1 2\n }").contains("wrong argument count"));
        assert!(err("pprof {\n nope\n }").contains("unknown property 'nope'"));
    }

    #[test]
    fn pages() {
        let p = Pages {
            clock: Clock::system(),
        };
        let r = p.get("/debug/pprof");
        assert_eq!(r.status, 302);
        assert_eq!(r.headers[0].1, "/debug/pprof/");
        assert_eq!(p.get("/debug/pprof/").status, 200);
        assert_eq!(p.get("/debug/pprof/goroutine").status, 501);
        assert_eq!(p.get("/debug/pprof/nope").status, 404);
        assert_eq!(heap(false).status, 501);
        let h = heap(true);
        assert_eq!(h.status, 200);
        let text = String::from_utf8(h.body).unwrap();
        let in_use: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("in_use_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(in_use > 0, "{text}");
    }
}
