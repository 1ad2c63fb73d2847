//! Memory/scale check (not a test): 10k services, 100k endpoints (10k EndpointSlices), 30k pods
//! in the fake API server on loopback; prints time-to-sync, RSS after sync above a baseline,
//! peak RSS during a forced re-list (410 after a history compaction), and bytes per object.
//! Run: `cargo run --release -p sextant-kube --example scale`.
//! The fake API server runs in a child process (this program with `--serve-api`), so the heap
//! and RSS figures are the client's and the index's alone. `SCALE_INPROCESS=1` keeps it in
//! this process (the earlier way of measuring, which counts the server's list buffers too);
//! `SCALE_PAGE_SIZE=N` sets the LIST page size (default: `WatchOptions`'s, 100).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use sextant_fakeapi::{endpoint, endpoint_slice, namespace, pod, service, FakeApi};
use sextant_kube::{start, ClientConfig, PodsMode, RateLimits, WatchOptions};

mod memcount;
use memcount::{status_kib, Counting, LIVE, PEAK};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1048576.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The cluster of the measurement.
const SERVICES: usize = 10_000;
const PER_SLICE: usize = 10;
const PODS: usize = 30_000;
const NSS: usize = 100;

fn fixture() -> Vec<Value> {
    let (services, per_slice, pods, nss) = (SERVICES, PER_SLICE, PODS, NSS);
    let mut objs: Vec<Value> = Vec::new();
    for n in 0..nss {
        objs.push(namespace(&format!("ns-{n}")).build());
    }
    for i in 0..services {
        let ns = format!("ns-{}", i % nss);
        let name = format!("svc-{i}");
        let (a, b) = (i / 256, i % 256);
        let mut svc = service(&ns, &name)
            .port("http", 80, "TCP")
            .port("metrics", 9090, "TCP");
        svc = if i % 5 == 0 {
            svc.headless()
        } else {
            svc.cluster_ip(&format!("10.96.{a}.{b}"))
        };
        objs.push(svc.build());
        let mut sl = endpoint_slice(&ns, &format!("{name}-abcde"), &name)
            .port("http", 8080, "TCP")
            .port("metrics", 9090, "TCP")
            .annotation(
                "endpoints.kubernetes.io/last-change-trigger-time",
                "2024-01-01T00:00:00Z",
            );
        for e in 0..per_slice {
            let k = i * per_slice + e;
            sl = sl.endpoint(
                endpoint(&format!(
                    "10.{}.{}.{}",
                    128 + k / 65536,
                    (k / 256) % 256,
                    k % 256
                ))
                .pod(&format!("{name}-7d9c8b6f5-{e:05}"))
                .node(&format!("node-{}", k % 500))
                .zone(&format!("zone-{}", k % 3)),
            );
        }
        objs.push(sl.build());
    }
    for p in 0..pods {
        let ns = format!("ns-{}", p % nss);
        objs.push(
            pod(&ns, &format!("pod-{p}-7d9c8b6f5-xk2p9"))
                .ip(&format!(
                    "10.{}.{}.{}",
                    200 + p / 65536,
                    (p / 256) % 256,
                    p % 256
                ))
                .label("app", &format!("app-{}", p % 1000))
                .label("pod-template-hash", "7d9c8b6f5")
                .build(),
        );
    }
    objs
}

/// The fake API, here or in a child process.
enum Api {
    Local(FakeApi),
    Child {
        child: std::process::Child,
        input: std::process::ChildStdin,
        output: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
        url: String,
    },
}

impl Api {
    fn url(&self) -> String {
        match self {
            Api::Local(a) => a.url(),
            Api::Child { url, .. } => url.clone(),
        }
    }

    fn cmd(&mut self, c: &str) -> u64 {
        use std::io::Write;
        match self {
            Api::Local(_) => 0,
            Api::Child { input, output, .. } => {
                writeln!(input, "{c}").expect("child stdin");
                input.flush().expect("child stdin");
                let line = output.next().expect("child line").expect("child line");
                line.trim().parse().unwrap_or(0)
            }
        }
    }

    fn list_requests(&mut self) -> u64 {
        match self {
            Api::Local(a) => a.requests("list", "endpointslices"),
            _ => self.cmd("lists"),
        }
    }

    /// Watchers come back with an rv older than the compacted history: 410, then a re-list.
    async fn force_relist(&mut self) {
        match self {
            Api::Local(api) => {
                api.go_down();
                api.apply(namespace("relist-trigger")).expect("apply");
                api.compact();
                api.come_up().await.expect("up");
            }
            _ => {
                self.cmd("relist");
            }
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Api::Child { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `--serve-api`: loads the fixture, prints the URL, then serves commands from stdin.
async fn serve_api() {
    use std::io::{BufRead, Write};
    let api = FakeApi::start().await.expect("fake api");
    api.apply_many(fixture()).expect("apply");
    api.compact();
    println!("{}", api.url());
    let _ = std::io::stdout().flush();
    let mut lines = std::io::BufReader::new(std::io::stdin()).lines();
    while let Some(Ok(l)) = tokio::task::block_in_place(|| lines.next()) {
        match l.trim() {
            "lists" => println!("{}", api.requests("list", "endpointslices")),
            "relist" => {
                api.go_down();
                api.apply(namespace("relist-trigger")).expect("apply");
                api.compact();
                api.come_up().await.expect("up");
                println!("0");
            }
            _ => println!("0"),
        }
        let _ = std::io::stdout().flush();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--serve-api") {
        serve_api().await;
        return;
    }
    let (services, per_slice, pods, nss) = (SERVICES, PER_SLICE, PODS, NSS);
    let _ = nss;
    let inprocess = std::env::var_os("SCALE_INPROCESS").is_some();
    let mut api = if inprocess {
        let api = FakeApi::start().await.expect("fake api");
        api.apply_many(fixture()).expect("apply");
        api.compact();
        Api::Local(api)
    } else {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg("--serve-api")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn fake api");
        let input = child.stdin.take().expect("stdin");
        let mut output = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = output.next().expect("url").expect("url");
        Api::Child {
            child,
            input,
            output,
            url,
        }
    };
    let page_size: u32 = std::env::var("SCALE_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WatchOptions::default().page_size);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = status_kib("VmRSS:");
    let live_base = LIVE.load(Ordering::Relaxed);
    println!(
        "fixture: {services} services, {} endpoints, {pods} pods, {NSS} namespaces; fake API {}; page size {}",
        services * per_slice,
        if inprocess { "in this process" } else { "in a child process" },
        if page_size == 0 { 500 } else { page_size }
    );
    println!("baseline RSS (fake API loaded): {:.1} MiB", mib(base));

    let t0 = Instant::now();
    let cfg = ClientConfig::Endpoint {
        url: api.url(),
        tls: None,
    };
    let opts = WatchOptions {
        pods: PodsMode::Verified,
        zonal: true,
        page_size,
        ..WatchOptions::default()
    };
    let idx = start(cfg, RateLimits::default(), opts)
        .await
        .expect("start");
    assert!(idx.wait_synced(Duration::from_secs(300)).await, "no sync");
    let sync = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status_kib("VmRSS:");
    let c = idx.snapshot().counts();
    let objects = c.services + c.endpoints + c.pods;
    let live_after = LIVE.load(Ordering::Relaxed);
    println!(
        "live heap: {:.1} MiB baseline, {:.1} MiB after sync: index+client = {:.0} bytes/object",
        live_base as f64 / 1048576.0,
        live_mib(),
        live_after.saturating_sub(live_base) as f64 / objects as f64
    );
    println!("time to sync: {:.2} s", sync.as_secs_f64());
    println!("counts: {c:?}");
    println!(
        "RSS after sync: {:.1} MiB (+{:.1} MiB over baseline) = {:.0} bytes/object over {objects} objects",
        mib(after),
        mib(after.saturating_sub(base)),
        (after.saturating_sub(base) * 1024) as f64 / objects as f64
    );

    // Forced re-list: forget history, drop watches -> every watcher gets 410 and lists again.
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // reset VmHWM
    let lists0 = api.list_requests();
    let steady = status_kib("VmRSS:");
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let t1 = Instant::now();
    api.force_relist().await;
    let pages_needed =
        (SERVICES as u64).div_ceil(u64::from(if page_size == 0 { 500 } else { page_size }));
    let mut peak = steady;
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        peak = peak.max(status_kib("VmRSS:"));
        let pages = api.list_requests() - lists0;
        if pages >= pages_needed && idx.snapshot().counts().namespaces == c.namespaces + 1 {
            // all 10k slices re-listed (500 per page) and the index is whole again
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(status_kib("VmHWM:"));
    println!(
        "re-list: {:.2} s; RSS steady {:.1} MiB, peak during re-list {:.1} MiB ({:.2}x steady; index part {:.2}x)",
        t1.elapsed().as_secs_f64(),
        mib(steady),
        mib(peak),
        peak as f64 / steady as f64,
        (peak.saturating_sub(base)) as f64 / (steady.saturating_sub(base)).max(1) as f64
    );
    println!(
        "live heap: steady {:.1} MiB, peak during re-list {:.1} MiB (index+client part {:.2}x)",
        live_after as f64 / 1048576.0,
        PEAK.load(Ordering::Relaxed) as f64 / 1048576.0,
        PEAK.load(Ordering::Relaxed).saturating_sub(live_base) as f64
            / live_after.saturating_sub(live_base).max(1) as f64
    );
    println!(
        "after re-list RSS {:.1} MiB, counts {:?}",
        mib(status_kib("VmRSS:")),
        idx.snapshot().counts()
    );
    idx.stop();
}
