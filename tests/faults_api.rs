//! Kubernetes API faults (faults.md §5.3) with the real binary and the fake API server:
//! unreachable at start, slow paged initial list, down after sync, 429/500/403. Each prints the
//! convergence time after the fault ends.

mod faults_common;

use std::time::{Duration, Instant};

use faults_common::*;
use sextant_fakeapi::{namespace, service, FakeApi, Kind};
use sextant_testkit::*;

fn api(rt: &tokio::runtime::Runtime, services: usize) -> FakeApi {
    let api = rt.block_on(FakeApi::start()).unwrap();
    api.apply(namespace("default")).unwrap();
    api.apply(namespace("bulk")).unwrap();
    api.apply(
        service("default", "kubernetes")
            .cluster_ip("10.96.0.1")
            .port("https", 443, "TCP"),
    )
    .unwrap();
    api.apply_many((0..services).map(|i| {
        service("bulk", &format!("s{i}"))
            .cluster_ip(&format!("10.97.{}.{}", i / 250, i % 250 + 1))
            .port("http", 80, "TCP")
            .into()
    }))
    .unwrap();
    api
}

fn corefile(port: u16, ready: u16, health: u16, api: &FakeApi) -> String {
    format!(
        ".:{port} {{\n    ready 127.0.0.1:{ready}\n    health 127.0.0.1:{health}\n    hosts {{\n        192.0.2.1 a.example.org\n    }}\n}}\ncluster.local:{port} {{\n    kubernetes cluster.local {{\n        endpoint {}\n        startup_timeout 1s\n    }}\n}}\n",
        api.url()
    )
}

const K: &str = "kubernetes.default.svc.cluster.local.";

fn rcode(port: u16, name: &str) -> String {
    udp(lo(port), &Query::new(name, RecordType::A), T)
        .unwrap()
        .rcode_name()
}

/// While unsynced: hosts answers, every cluster name is SERVFAIL (never NXDOMAIN), /ready 503
/// naming kubernetes, /health 200.
fn assert_unsynced(port: u16, ready: u16, health: u16) {
    let r = udp(lo(port), &Query::new("a.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["a.example.org. 3600 IN A 192.0.2.1"]);
    // A name the index holds already (a first page may have landed) may be answered; nothing
    // is ever NXDOMAIN before the first full sync.
    for n in [K, "s1.bulk.svc.cluster.local."] {
        let rc = rcode(port, n);
        assert!(rc == "SERVFAIL" || rc == "NOERROR", "{n}: {rc}");
    }
    assert_eq!(rcode(port, "nope.bulk.svc.cluster.local."), "SERVFAIL");
    let (code, body) = http_get(lo(ready), "/ready", T).unwrap();
    assert_eq!((code, body.trim()), (503, "kubernetes"));
    assert_eq!(http_status(health, "/health"), 200);
}

fn until_ready_and_answering(port: u16, ready: u16, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    poll(within, || {
        (http_status(ready, "/ready") == 200 && rcode(port, K) == "NOERROR").then(|| t0.elapsed())
    })
}

#[test]
fn api_unreachable_at_start() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api(&rt, 10);
    api.go_down();
    let (port, ready, health) = (free_port(), free_port(), free_port());
    let t0 = Instant::now();
    let mut s = Sextant::start(bin(), &corefile(port, ready, health, &api));
    s.wait_dns(lo(port), Duration::from_secs(10)).unwrap();
    let up = t0.elapsed();
    eprintln!("listeners up {up:?} after start with the API unreachable");
    assert!(up < Duration::from_secs(5), "{up:?}");
    // Down long enough for the retry delay to grow.
    for _ in 0..4 {
        assert_unsynced(port, ready, health);
        std::thread::sleep(Duration::from_secs(1));
    }
    rt.block_on(api.come_up()).unwrap();
    let took = until_ready_and_answering(port, ready, Duration::from_secs(40)).expect("ready");
    eprintln!("API unreachable at start: ready and answering {took:?} after the API came up");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(rcode(port, "nope.bulk.svc.cluster.local."), "NXDOMAIN");
}

#[test]
fn slow_paged_initial_list() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // 1 200 services: three pages of 500 for the services list, each page 1 s late.
    let api = api(&rt, 1200);
    api.slow_list(Duration::from_secs(1));
    let (port, ready, health) = (free_port(), free_port(), free_port());
    let t0 = Instant::now();
    let mut s = Sextant::start(bin(), &corefile(port, ready, health, &api));
    s.wait_dns(lo(port), Duration::from_secs(10)).unwrap();
    assert_unsynced(port, ready, health);
    let synced = until_ready_and_answering(port, ready, Duration::from_secs(30)).expect("ready");
    let pages = api.requests("list", "services");
    eprintln!(
        "slow paged list: ready {:?} after start, {pages} service list pages",
        t0.elapsed()
    );
    assert!(pages >= 3, "{pages}");
    let r = udp(
        lo(port),
        &Query::new("s1199.bulk.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(
        r.answers(),
        vec!["s1199.bulk.svc.cluster.local. 5 IN A 10.97.4.200"]
    );
    assert!(synced < Duration::from_secs(20));
}

#[test]
fn api_down_after_sync_then_converges() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api(&rt, 10);
    let (port, ready, health) = (free_port(), free_port(), free_port());
    let mut s = Sextant::start(bin(), &corefile(port, ready, health, &api));
    s.wait_dns(lo(port), Duration::from_secs(10)).unwrap();
    until_ready_and_answering(port, ready, Duration::from_secs(10)).expect("synced");
    let check = address_check(vec![
        (K.into(), "10.96.0.1".into()),
        ("s2.bulk.svc.cluster.local.".into(), "10.97.0.3".into()),
    ]);
    let names = vec![
        (K.to_string(), RecordType::A),
        ("s2.bulk.svc.cluster.local.".to_string(), RecordType::A),
    ];
    let load = Load::start(lo(port), 400, 100, names, check);
    api.go_down();
    // Changes the server cannot see while the API is down.
    api.delete(Kind::Service, "bulk", "s1");
    api.apply(
        service("bulk", "new")
            .cluster_ip("10.97.9.9")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(http_status(health, "/health"), 200);
    assert_eq!(
        rcode(port, "s1.bulk.svc.cluster.local."),
        "NOERROR",
        "last-known data kept"
    );
    rt.block_on(api.come_up()).unwrap();
    let t0 = Instant::now();
    let took = poll(Duration::from_secs(40), || {
        (rcode(port, "s1.bulk.svc.cluster.local.") == "NXDOMAIN"
            && rcode(port, "new.bulk.svc.cluster.local.") == "NOERROR")
            .then(|| t0.elapsed())
    })
    .expect("converged");
    eprintln!("API down 5 s after sync: converged {took:?} after it came back");
    let stats = load.stop();
    assert_eq!(stats.failed(), 0, "{}", stats.report());
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(http_status(ready, "/ready"), 200);
}

#[test]
fn api_errors_429_500_403_back_off_and_keep_serving() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api(&rt, 10);
    let (port, ready, health) = (free_port(), free_port(), free_port());
    let mut s = Sextant::start(bin(), &corefile(port, ready, health, &api));
    s.wait_dns(lo(port), Duration::from_secs(10)).unwrap();
    until_ready_and_answering(port, ready, Duration::from_secs(10)).expect("synced");
    let check = address_check(vec![(K.into(), "10.96.0.1".into())]);
    let load = Load::start(
        lo(port),
        400,
        100,
        vec![(K.to_string(), RecordType::A)],
        check,
    );
    for (status, line) in [
        (429, "throttled by the API server (429)"),
        (500, "API server error (500)"),
        (403, "forbidden (403): check RBAC"),
    ] {
        api.fail_all(status);
        api.drop_watches();
        api.reset_counters();
        let window = Duration::from_secs(6);
        std::thread::sleep(window);
        let per_res: Vec<(String, u64)> = ["services", "namespaces", "endpointslices"]
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    api.requests("list", r) + api.requests("watch", r),
                )
            })
            .collect();
        eprintln!("{status}: requests per resource in {window:?}: {per_res:?}");
        for (r, n) in &per_res {
            assert!(*n >= 1, "{status} {r}: retried at all");
            assert!(
                *n <= 7,
                "{status} {r}: {n} requests in {window:?}: hot loop"
            );
        }
        s.wait_for_line(line, T).unwrap();
        // A change made during the failure shows up once the API answers again.
        let name = format!("after{status}");
        api.apply(
            service("bulk", &name)
                .cluster_ip("10.97.8.8")
                .port("http", 80, "TCP"),
        )
        .unwrap();
        api.clear_failures();
        let t0 = Instant::now();
        let took = until_answer(
            lo(port),
            &format!("{name}.bulk.svc.cluster.local."),
            RecordType::A,
            "NOERROR",
            "10.97.8.8",
            Duration::from_secs(40),
        )
        .expect("converged");
        eprintln!(
            "{status} for {window:?}: converged {took:?} after the API recovered ({:?} total)",
            t0.elapsed()
        );
        assert!(took < Duration::from_secs(35), "{took:?}");
    }
    let stats = load.stop();
    assert_eq!(stats.failed(), 0, "{}", stats.report());
    assert_eq!(http_status(health, "/health"), 200);
}
