//! Sextant's coherent cache: `cache 30` in front of `kubernetes` drops cached answers for the
//! names a watch event changed, so a changed, deleted or new Service is answered right within
//! the watch delay instead of after the cache TTL.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_fakeapi::{endpoint, endpoint_slice, namespace, service, FakeApi, Kind};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// Polls until the answer section equals `want` (sorted), or fails after `within`.
fn wait_for(
    a: SocketAddr,
    name: &str,
    t: RecordType,
    rcode: &str,
    want: &[&str],
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    loop {
        let r = udp(a, &Query::new(name, t), T).unwrap();
        if r.rcode_name() == rcode && r.answers_sorted() == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{name} {t}: still {} {:?} after {within:?}",
            r.rcode_name(),
            r.answers()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn cache_in_front_of_kubernetes_follows_the_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(FakeApi::start()).unwrap();
    for ns in ["default", "shop"] {
        api.apply(namespace(ns)).unwrap();
    }
    api.apply(
        service("shop", "web")
            .cluster_ip("10.96.0.20")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.apply(service("shop", "db").headless().port("pg", 5432, "TCP"))
        .unwrap();
    api.apply(
        endpoint_slice("shop", "db-a", "db")
            .endpoint(endpoint("10.244.0.10").hostname("db-0"))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        ".:{port} {{\n    prometheus 127.0.0.1:{mport}\n    cache 30\n    kubernetes cluster.local in-addr.arpa {{\n        endpoint {}\n        ttl 30\n    }}\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &cf);
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let web = "web.shop.svc.cluster.local.";
    wait_for(
        a,
        web,
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 30 IN A 10.96.0.20"],
        T,
    );
    // Cached now: a second query is a hit with the TTL counting down from 30 (the kubernetes ttl).
    let r = udp(a, &Query::new(web, RecordType::A), T).unwrap();
    assert_eq!(r.answers().len(), 1);
    // Negative answers get cached too.
    let api_new = "api.shop.svc.cluster.local.";
    assert_eq!(
        udp(a, &Query::new(api_new, RecordType::A), T)
            .unwrap()
            .rcode_name(),
        "NXDOMAIN"
    );

    // Changed ClusterIP: the new address is served long before the 30 s cache TTL.
    api.apply(
        service("shop", "web")
            .cluster_ip("10.96.0.21")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    let d1 = wait_for(
        a,
        web,
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 30 IN A 10.96.0.21"],
        Duration::from_secs(2),
    );
    // A new Service behind a cached NXDOMAIN appears at once.
    api.apply(
        service("shop", "api")
            .cluster_ip("10.96.0.30")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    let d2 = wait_for(
        a,
        api_new,
        RecordType::A,
        "NOERROR",
        &["api.shop.svc.cluster.local. 30 IN A 10.96.0.30"],
        Duration::from_secs(2),
    );
    // A new endpoint of a headless service, and its SRV, are there at once.
    let db = "db.shop.svc.cluster.local.";
    wait_for(
        a,
        db,
        RecordType::A,
        "NOERROR",
        &["db.shop.svc.cluster.local. 30 IN A 10.244.0.10"],
        T,
    );
    api.apply(
        endpoint_slice("shop", "db-a", "db")
            .endpoint(endpoint("10.244.0.10").hostname("db-0"))
            .endpoint(endpoint("10.244.0.11").hostname("db-1"))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    let d3 = wait_for(
        a,
        db,
        RecordType::A,
        "NOERROR",
        &[
            "db.shop.svc.cluster.local. 30 IN A 10.244.0.10",
            "db.shop.svc.cluster.local. 30 IN A 10.244.0.11",
        ],
        Duration::from_secs(2),
    );
    // A deleted Service is never served from the cache again.
    assert!(api.delete(Kind::Service, "shop", "web"));
    let d4 = wait_for(
        a,
        web,
        RecordType::A,
        "NXDOMAIN",
        &[],
        Duration::from_secs(2),
    );
    // The reverse name of a changed address follows too.
    let ptr = "30.0.96.10.in-addr.arpa.";
    wait_for(
        a,
        ptr,
        RecordType::PTR,
        "NOERROR",
        &["30.0.96.10.in-addr.arpa. 30 IN PTR api.shop.svc.cluster.local."],
        T,
    );
    assert!(api.delete(Kind::Service, "shop", "api"));
    let d5 = wait_for(
        a,
        ptr,
        RecordType::PTR,
        "NXDOMAIN",
        &[],
        Duration::from_secs(2),
    );
    eprintln!("watch event to new answer: {d1:?} {d2:?} {d3:?} {d4:?} {d5:?}");
    // And the cache really was serving: hits were counted.
    let (_, body) = http_get(SocketAddr::from(([127, 0, 0, 1], mport)), "/metrics", T).unwrap();
    assert!(body.contains("coredns_cache_hits_total{"), "{body}");
}
