//! The kube client and index against the fake API server on loopback: sync, event folding,
//! paging, selectors, dropped watches, 410, outages, error backoff and the periodic re-list.

use std::net::IpAddr;
use std::time::Duration;

use sextant_fakeapi::{endpoint, endpoint_slice, namespace, pod, service, FakeApi, Kind, Stall};
use sextant_kube::{
    start, ClientConfig, Index, PodsMode, RateLimits, ServiceKind, Snapshot, WatchOptions,
};

const T: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn opts() -> WatchOptions {
    WatchOptions {
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        ..WatchOptions::default()
    }
}

async fn connect(api: &FakeApi, o: WatchOptions) -> Index {
    let cfg = ClientConfig::Endpoint {
        url: api.url(),
        tls: None,
    };
    let idx = start(cfg, RateLimits::default(), o).await.unwrap();
    assert!(idx.wait_synced(T).await, "index did not sync");
    idx
}

/// Waits (driven by change notices, bounded by `T`) until `pred` holds on the snapshot.
async fn until(idx: &Index, pred: impl Fn(&Snapshot) -> bool) -> bool {
    let mut rx = idx.subscribe();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if pred(&idx.snapshot()) {
            return true;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return pred(&idx.snapshot())
            }
            Ok(_) => {}
        }
    }
}

fn base(api: &FakeApi) {
    api.apply(namespace("default")).unwrap();
    api.apply(namespace("ns")).unwrap();
    api.apply(
        service("default", "kubernetes")
            .cluster_ip("10.0.0.1")
            .port("https", 443, "TCP"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_and_events_are_folded() {
    let api = FakeApi::start().await.unwrap();
    base(&api);
    api.apply(
        service("ns", "dual")
            .cluster_ip("10.0.0.10")
            .cluster_ip("fd00::10")
            .ip_family("IPv4")
            .ip_family("IPv6")
            .port("dns", 53, "UDP")
            .port("", 8080, "TCP"),
    )
    .unwrap();
    api.apply(service("ns", "head").headless().port("http", 80, "TCP"))
        .unwrap();
    api.apply(service("ns", "ext").external_name("www.example.com"))
        .unwrap();
    api.apply(
        endpoint_slice("ns", "head-1", "head")
            .endpoint(
                endpoint("10.1.0.1")
                    .hostname("pet-0")
                    .pod("head-0")
                    .node("n1"),
            )
            .endpoint(endpoint("10.1.0.2").ready(None).pod(&"x".repeat(70)))
            .endpoint(endpoint("10.1.0.3").ready(Some(false)))
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.apply(pod("ns", "head-0").ip("10.1.0.1").label("app", "head"))
        .unwrap();
    api.apply(pod("ns", "gone").ip("10.1.0.9").phase("Succeeded"))
        .unwrap();
    api.apply(pod("ns", "dying").ip("10.1.0.8").terminating())
        .unwrap();

    let idx = connect(
        &api,
        WatchOptions {
            pods: PodsMode::Verified,
            ..opts()
        },
    )
    .await;
    let s = idx.snapshot();
    assert!(s.namespace("ns").is_some());
    assert!(s.namespace("nope").is_none());
    let dual = s.service("ns", "dual").unwrap();
    assert_eq!(
        dual.kind,
        ServiceKind::ClusterIp(vec![ip("10.0.0.10"), ip("fd00::10")].into())
    );
    assert_eq!(dual.ports.len(), 2);
    assert_eq!(&*dual.ports[1].name, "");
    assert_eq!(
        s.services_by_ip(ip("fd00::10"))
            .next()
            .unwrap()
            .name
            .as_ref(),
        "dual"
    );
    assert!(s.service("ns", "head").unwrap().is_headless());
    assert_eq!(
        s.service("ns", "ext").unwrap().kind,
        ServiceKind::ExternalName("www.example.com".into())
    );
    assert_eq!(
        s.service("default", "kubernetes").unwrap().ports[0].port,
        443
    );
    // A service without ports carries the -1 sentinel.
    assert!(s.service("ns", "ext").unwrap().ports[0].is_sentinel());
    // Ready and null-ready endpoints are kept; not-ready dropped; long pod names dropped.
    let eps: Vec<_> = s.endpoints("ns", "head").collect();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].hostname, Some("pet-0"));
    assert_eq!(eps[0].pod_name, Some("head-0"));
    assert_eq!(eps[0].node_name, Some("n1"));
    assert_eq!(eps[0].ports[0].port, 80);
    assert_eq!(eps[1].pod_name, None);
    let hit = s.endpoints_by_ip(ip("10.1.0.2")).next().unwrap();
    assert_eq!((hit.namespace, hit.service), ("ns", "head"));
    assert!(s.endpoints_by_ip(ip("10.1.0.3")).next().is_none());
    // Pods: phase filtered server-side, terminating dropped.
    assert_eq!(s.pod_by_ip(ip("10.1.0.1")).unwrap().name.as_ref(), "head-0");
    assert!(s.pod_by_ip(ip("10.1.0.9")).is_none());
    assert!(s.pod_by_ip(ip("10.1.0.8")).is_none());
    let c = s.counts();
    assert_eq!(
        (c.services, c.endpoints, c.pods, c.namespaces),
        (4, 2, 1, 2)
    );
    drop(s);

    // A pod that completes leaves the field selection: DELETED for the watcher.
    api.apply(pod("ns", "head-0").ip("10.1.0.1").phase("Succeeded"))
        .unwrap();
    assert!(until(&idx, |s| s.pod_by_ip(ip("10.1.0.1")).is_none()).await);

    // MODIFIED: new cluster IP; the old one stops resolving.
    let mut changes = idx.subscribe();
    api.apply(service("ns", "dual").cluster_ip("10.0.0.11"))
        .unwrap();
    assert!(until(&idx, |s| s.services_by_ip(ip("10.0.0.11")).next().is_some()).await);
    assert!(idx
        .snapshot()
        .services_by_ip(ip("10.0.0.10"))
        .next()
        .is_none());
    let ch = tokio::time::timeout(T, changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        ch.all
            || ch
                .services
                .iter()
                .any(|(n, s)| &**n == "ns" && &**s == "dual")
    );
    // DELETED.
    api.delete(Kind::Service, "ns", "dual");
    api.delete(Kind::EndpointSlice, "ns", "head-1");
    api.delete(Kind::Namespace, "", "default");
    assert!(
        until(&idx, |s| s.service("ns", "dual").is_none()
            && s.endpoints("ns", "head").next().is_none()
            && s.namespace("default").is_none())
        .await
    );
    assert!(idx
        .snapshot()
        .endpoints_by_ip(ip("10.1.0.1"))
        .next()
        .is_none());
    idx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_and_label_selectors() {
    let api = FakeApi::start().await.unwrap();
    api.apply(namespace("a").label("team", "dns")).unwrap();
    api.apply(namespace("b")).unwrap();
    for i in 0..9 {
        let lbl = if i % 3 == 0 { "yes" } else { "no" };
        api.apply(
            service("a", &format!("s{i}"))
                .cluster_ip(&format!("10.2.0.{i}"))
                .label("expose", lbl),
        )
        .unwrap();
    }
    let idx = connect(
        &api,
        WatchOptions {
            page_size: 2,
            labels: Some("expose in (yes)".into()),
            namespace_labels: Some("team=dns".into()),
            ..opts()
        },
    )
    .await;
    let s = idx.snapshot();
    let names: Vec<_> = s.services().map(|s| s.name.to_string()).collect();
    assert_eq!(names, vec!["s0", "s3", "s6"]);
    assert!(s.namespace("a").is_some());
    assert!(s.namespace("b").is_none());
    // 3 matching services at page size 2 need 2 pages.
    assert!(api.requests("list", "services") >= 2);
    // A label change moves a service in and out of the selection.
    api.apply(
        service("a", "s1")
            .cluster_ip("10.2.0.1")
            .label("expose", "yes"),
    )
    .unwrap();
    assert!(until(&idx, |s| s.service("a", "s1").is_some()).await);
    api.apply(
        service("a", "s0")
            .cluster_ip("10.2.0.0")
            .label("expose", "no"),
    )
    .unwrap();
    assert!(until(&idx, |s| s.service("a", "s0").is_none()).await);
    idx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watch_loses_no_event() {
    let api = FakeApi::start().await.unwrap();
    base(&api);
    let idx = connect(&api, opts()).await;
    for i in 0..5 {
        api.drop_watches();
        api.apply(service("ns", &format!("w{i}")).cluster_ip(&format!("10.3.0.{i}")))
            .unwrap();
    }
    assert!(
        until(&idx, |s| (0..5)
            .all(|i| s.service("ns", &format!("w{i}")).is_some()))
        .await
    );
    idx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rv_relists_and_outage_keeps_data() {
    let api = FakeApi::start().await.unwrap();
    base(&api);
    api.apply(service("ns", "old").cluster_ip("10.4.0.1"))
        .unwrap();
    let idx = connect(&api, opts()).await;
    let lists_before = api.requests("list", "services");

    // Down: data stays. Changes made meanwhile, history compacted -> 410 -> re-list.
    api.go_down();
    api.delete(Kind::Service, "ns", "old");
    api.apply(service("ns", "new").cluster_ip("10.4.0.2"))
        .unwrap();
    api.compact();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        idx.snapshot().service("ns", "old").is_some(),
        "outage emptied the index"
    );
    assert!(idx.synced());
    api.come_up().await.unwrap();
    assert!(
        until(&idx, |s| s.service("ns", "old").is_none()
            && s.service("ns", "new").is_some())
        .await
    );
    assert!(
        api.requests("list", "services") > lists_before,
        "no re-list after 410"
    );
    assert!(idx.snapshot().service("default", "kubernetes").is_some());
    idx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_back_off_without_hot_loop() {
    let api = FakeApi::start().await.unwrap();
    base(&api);
    let idx = connect(
        &api,
        WatchOptions {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(2),
            ..WatchOptions::default()
        },
    )
    .await;
    for code in [403u16, 429, 500] {
        api.fail_all(code);
        api.reset_counters();
        api.drop_watches();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let n = api.total_requests();
        // 3 resources, retries at ~0, 1, 3 s: at most ~3 each in 2.5 s (+ slack), never a hot loop.
        assert!(n <= 15, "{code}: {n} requests in 2.5 s");
        assert!(n >= 3, "{code}: watchers did not retry ({n})");
        assert!(idx.snapshot().service("default", "kubernetes").is_some());
    }
    api.clear_failures();
    api.apply(service("ns", "after").cluster_ip("10.5.0.1"))
        .unwrap();
    assert!(until(&idx, |s| s.service("ns", "after").is_some()).await);
    idx.stop();
    // After stop, watches close.
    for _ in 0..200 {
        if api.open_watches() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.open_watches(), 0, "leaked watches after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_relist_detects_skipped_events() {
    let api = FakeApi::start().await.unwrap();
    base(&api);
    api.apply(service("ns", "stale").cluster_ip("10.6.0.1"))
        .unwrap();
    let idx = connect(
        &api,
        WatchOptions {
            resync: Duration::from_secs(1),
            ..opts()
        },
    )
    .await;
    api.skip_events(true);
    api.apply(service("ns", "hidden").cluster_ip("10.6.0.2"))
        .unwrap();
    api.delete(Kind::Service, "ns", "stale");
    api.skip_events(false);
    assert!(
        until(&idx, |s| s.service("ns", "hidden").is_some()
            && s.service("ns", "stale").is_none())
        .await
    );
    idx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_synced_while_api_stalls() {
    let api = FakeApi::start().await.unwrap();
    base(&api);
    api.stall(Stall::Forever);
    let cfg = ClientConfig::Endpoint {
        url: api.url(),
        tls: None,
    };
    let idx = start(cfg, RateLimits::default(), opts()).await.unwrap();
    assert!(!idx.wait_synced(Duration::from_millis(500)).await);
    assert!(idx.snapshot().service("default", "kubernetes").is_none());
    api.stall(Stall::None);
    api.go_down(); // close the stalled connections so the client retries
    api.come_up().await.unwrap();
    assert!(idx.wait_synced(T).await);
    idx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qps_limit_is_honoured() {
    let api = FakeApi::start().await.unwrap();
    for i in 0..10 {
        api.apply(service("ns", &format!("q{i}"))).unwrap();
    }
    let cfg = ClientConfig::Endpoint {
        url: api.url(),
        tls: None,
    };
    let limits = RateLimits {
        qps: 5.0,
        burst: 1,
        max_inflight: 2,
    };
    let t0 = std::time::Instant::now();
    // page size 1: 10 service pages + namespaces + slices lists ~ 12+ requests at 5/s.
    let idx = start(
        cfg,
        limits,
        WatchOptions {
            page_size: 1,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert!(idx.wait_synced(T).await);
    assert!(
        t0.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        t0.elapsed()
    );
    idx.stop();
}
