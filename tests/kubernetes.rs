//! End-to-end tests of the `kubernetes` and `transfer` plugins: the real binary serving from
//! manifests and from the fake API server, queried over UDP and TCP on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_fakeapi::{endpoint, endpoint_slice, namespace, service, FakeApi, Kind};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn norm(v: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = v
        .into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

/// Queries over UDP and TCP and checks both give the same whole answer.
fn q(a: SocketAddr, name: &str, t: RecordType) -> Reply {
    let u = udp(a, &Query::new(name, t), T).expect("udp");
    let c = tcp(a, &Query::new(name, t), T).expect("tcp");
    assert_eq!(u.rcode_name(), c.rcode_name(), "{name} {t}");
    assert_eq!(norm(u.answers()), norm(c.answers()), "{name} {t}");
    assert_eq!(norm(u.authority()), norm(c.authority()), "{name} {t}");
    assert_eq!(norm(u.additional()), norm(c.additional()), "{name} {t}");
    u
}

fn expect(a: SocketAddr, name: &str, t: RecordType, rcode: &str, answers: &[&str]) -> Reply {
    let r = q(a, name, t);
    assert_eq!(r.rcode_name(), rcode, "{name} {t}: {:?}", r.message());
    assert_eq!(r.flags(), "qr,aa,rd", "{name} {t}");
    let want: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
    assert_eq!(norm(r.answers()), norm(want), "{name} {t}");
    if answers.is_empty() {
        let auth = r.authority();
        assert_eq!(auth.len(), 1, "{name} {t}: SOA expected");
        assert!(auth[0].contains("IN SOA ns.dns."), "{auth:?}");
    }
    r
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIPs: [10.96.0.20, "fd00::20"], clusterIP: 10.96.0.20, ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: None, ports: [{name: pg, port: 5432, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
- {addresses: [10.244.0.10], hostname: db-0, conditions: {ready: true}}
- {addresses: [10.244.0.11], hostname: db-1, conditions: {ready: true}}
- {addresses: [10.244.0.12], hostname: db-2, conditions: {ready: false}}
ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: away, namespace: shop}
spec: {type: ExternalName, externalName: target.ns.svc.other.test}
---
apiVersion: v1
kind: Service
metadata: {name: target, namespace: ns}
spec: {clusterIP: 10.200.0.1, ports: [{name: http, port: 80, protocol: TCP}]}
"#;

fn manifest_server(port: u16, extra: &str) -> Sextant {
    let core = format!(
        "cluster.local:{port} in-addr.arpa:{port} other.test:{port} {{\n  kubernetes cluster.local in-addr.arpa {{\n    manifests cluster.yaml\n    ttl 30\n{extra}\n  }}\n}}\n"
    );
    // other.test is served by a second kubernetes block, reached only through re-entry.
    let core = core.replace(&format!(" other.test:{port} {{"), " {")
        + &format!(
        "other.test:{port} {{\n  kubernetes other.test {{\n    manifests cluster.yaml\n  }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &core)
        .file("cluster.yaml", MANIFEST)
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).expect("up");
    s
}

#[test]
fn manifests_record_forms_udp_and_tcp() {
    let port = free_port();
    let _s = manifest_server(port, "");
    let a = addr(port);
    expect(
        a,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"],
    );
    expect(
        a,
        "web.shop.svc.cluster.local.",
        RecordType::AAAA,
        "NOERROR",
        &["web.shop.svc.cluster.local. 30 IN AAAA fd00::20"],
    );
    let r = expect(
        a,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
        "NOERROR",
        &["_http._tcp.web.shop.svc.cluster.local. 30 IN SRV 0 50 80 web.shop.svc.cluster.local."],
    );
    assert_eq!(
        norm(r.additional()),
        norm(vec![
            "web.shop.svc.cluster.local. 30 IN A 10.96.0.20".into(),
            "web.shop.svc.cluster.local. 30 IN AAAA fd00::20".into()
        ])
    );
    expect(
        a,
        "db.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &[
            "db.shop.svc.cluster.local. 30 IN A 10.244.0.10",
            "db.shop.svc.cluster.local. 30 IN A 10.244.0.11",
        ],
    );
    expect(
        a,
        "db-1.db.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["db-1.db.shop.svc.cluster.local. 30 IN A 10.244.0.11"],
    );
    expect(
        a,
        "db-2.db.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
    );
    expect(
        a,
        "1.0.96.10.in-addr.arpa.",
        RecordType::PTR,
        "NOERROR",
        &["1.0.96.10.in-addr.arpa. 30 IN PTR kubernetes.default.svc.cluster.local."],
    );
    expect(
        a,
        "10.0.244.10.in-addr.arpa.",
        RecordType::PTR,
        "NOERROR",
        &["10.0.244.10.in-addr.arpa. 30 IN PTR db-0.db.shop.svc.cluster.local."],
    );
    let r = expect(
        a,
        "nope.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
    );
    assert!(
        r.authority()[0].starts_with(
            "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local."
        ),
        "{:?}",
        r.authority()
    );
    assert!(
        r.authority()[0].ends_with(" 7200 1800 86400 30"),
        "{:?}",
        r.authority()
    );
    expect(a, "shop.svc.cluster.local.", RecordType::A, "NOERROR", &[]);
    expect(
        a,
        "kubernetes.default.svc.cluster.local.",
        RecordType::AAAA,
        "NOERROR",
        &[],
    );
    expect(
        a,
        "dns-version.cluster.local.",
        RecordType::TXT,
        "NOERROR",
        &["dns-version.cluster.local. 28800 IN TXT 1.1.0"],
    );
    // ExternalName outside the zone: resolved by re-entering the server (the other.test block).
    expect(
        a,
        "away.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &[
            "away.shop.svc.cluster.local. 30 IN CNAME target.ns.svc.other.test.",
            "target.ns.svc.other.test. 5 IN A 10.200.0.1",
        ],
    );
    // AXFR straight to kubernetes (no transfer plugin): REFUSED.
    let r = tcp(a, &Query::new("cluster.local.", RecordType::AXFR), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
}

#[test]
fn conformance_probes() {
    let port = free_port();
    let _s = manifest_server(port, "pods insecure");
    let a = addr(port);
    // A search-path-like sequence for "kubernetes.default" from a pod in namespace shop.
    for (name, rcode) in [
        ("kubernetes.default.shop.svc.cluster.local.", "NXDOMAIN"),
        ("kubernetes.default.svc.cluster.local.", "NOERROR"),
    ] {
        assert_eq!(q(a, name, RecordType::A).rcode_name(), rcode, "{name}");
    }
    expect(a, "_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV, "NOERROR", &[
        "_pg._tcp.db.shop.svc.cluster.local. 30 IN SRV 0 50 5432 db-0.db.shop.svc.cluster.local.",
        "_pg._tcp.db.shop.svc.cluster.local. 30 IN SRV 0 50 5432 db-1.db.shop.svc.cluster.local.",
    ]);
    expect(
        a,
        "10-244-1-5.shop.pod.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["10-244-1-5.shop.pod.cluster.local. 30 IN A 10.244.1.5"],
    );
    // Case: owner as asked, object names lower-case, zone part as asked.
    let r = q(a, "_HTTP._TCP.Web.Shop.SVC.Cluster.Local.", RecordType::SRV);
    assert_eq!(
        norm(r.answers()),
        vec![
            "_HTTP._TCP.Web.Shop.SVC.Cluster.Local. 30 IN SRV 0 50 80 web.shop.svc.Cluster.Local."
                .to_string()
        ]
    );
}

#[test]
fn transfer_axfr_over_tcp_only_to_allowed() {
    let port = free_port();
    let core = format!(
        "cluster.local:{port} {{\n  transfer {{\n    to 127.0.0.1\n  }}\n  kubernetes {{\n    manifests cluster.yaml\n  }}\n}}\nexample.local:{port} {{\n  transfer {{\n    to 192.0.2.1\n  }}\n  kubernetes {{\n    manifests cluster.yaml\n  }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &core)
        .file("cluster.yaml", MANIFEST)
        .start();
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let r = tcp(a, &Query::new("cluster.local.", RecordType::AXFR), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.has_flag("aa"));
    let ans = r.answers();
    let l: Vec<String> = ans
        .iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        l[0].starts_with("cluster.local. 5 IN SOA ns.dns.cluster.local."),
        "{l:#?}"
    );
    assert_eq!(l.first(), l.last());
    let pos = |s: &str| {
        l.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} missing: {l:#?}"))
    };
    // Sorted by service name: away < db < kubernetes < target < web.
    assert!(
        pos("away.shop.svc.cluster.local. 5 IN CNAME target.ns.svc.other.test.")
            < pos("db-0.db.shop.svc.cluster.local. 5 IN A 10.244.0.10")
    );
    assert!(pos("_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.shop.svc.cluster.local.") < pos("kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"));
    pos("_https._tcp.kubernetes.default.svc.cluster.local. 5 IN SRV 0 100 443 kubernetes.default.svc.cluster.local.");
    pos("web.shop.svc.cluster.local. 5 IN AAAA fd00::20");
    // UDP: refused. Not listed: refused.
    let r = udp(a, &Query::new("cluster.local.", RecordType::AXFR), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    let r = tcp(a, &Query::new("example.local.", RecordType::AXFR), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    assert!(s
        .wait_for_line("plugin/transfer: Outgoing transfer of", T)
        .is_ok());
}

fn wait_rcode(a: SocketAddr, name: &str, t: RecordType, rcode: &str, within: Duration) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        let r = udp(a, &Query::new(name, t), T).expect("reply");
        if r.rcode_name() == rcode || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_answers(a: SocketAddr, name: &str, t: RecordType, want: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    let want: Vec<String> = norm(want.iter().map(|s| s.to_string()).collect());
    loop {
        let r = udp(a, &Query::new(name, t), T).expect("reply");
        let got = norm(r.answers());
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {t}: got {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn api_with_basics(rt: &tokio::runtime::Runtime) -> FakeApi {
    let api = rt.block_on(FakeApi::start()).expect("fake api");
    for ns in ["default", "shop"] {
        api.apply(namespace(ns)).unwrap();
    }
    api.apply(
        service("default", "kubernetes")
            .cluster_ip("10.96.0.1")
            .port("https", 443, "TCP"),
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
    api
}

#[test]
fn fake_api_changes_faults_and_readiness() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with_basics(&rt);
    let (port, ready) = (free_port(), free_port());
    let core = format!(
        ".:{port} {{\n  ready 127.0.0.1:{ready}\n  kubernetes cluster.local in-addr.arpa {{\n    endpoint {}\n  }}\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    expect(
        a,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"],
    );
    let (code, _) = http_get(SocketAddr::from(([127, 0, 0, 1], ready)), "/ready", T).unwrap();
    assert_eq!(code, 200);

    // A new service shows up; ExternalName changed to another name, then to a ClusterIP.
    api.apply(service("shop", "ext").external_name("a.example.test"))
        .unwrap();
    wait_answers(
        a,
        "ext.shop.svc.cluster.local.",
        RecordType::CNAME,
        &["ext.shop.svc.cluster.local. 5 IN CNAME a.example.test."],
        Duration::from_secs(5),
    );
    api.apply(service("shop", "ext").external_name("b.example.test"))
        .unwrap();
    wait_answers(
        a,
        "ext.shop.svc.cluster.local.",
        RecordType::CNAME,
        &["ext.shop.svc.cluster.local. 5 IN CNAME b.example.test."],
        Duration::from_secs(5),
    );
    api.apply(
        service("shop", "ext")
            .cluster_ip("10.96.5.5")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    wait_answers(
        a,
        "ext.shop.svc.cluster.local.",
        RecordType::A,
        &["ext.shop.svc.cluster.local. 5 IN A 10.96.5.5"],
        Duration::from_secs(5),
    );
    // A name starting with a digit.
    api.apply(
        service("shop", "1st")
            .cluster_ip("10.96.1.1")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    wait_answers(
        a,
        "1st.shop.svc.cluster.local.",
        RecordType::A,
        &["1st.shop.svc.cluster.local. 5 IN A 10.96.1.1"],
        Duration::from_secs(5),
    );

    // Watch dropped while an object changes: the change still arrives.
    api.drop_watches();
    api.apply(
        endpoint_slice("shop", "db-a", "db")
            .endpoint(endpoint("10.244.0.10").hostname("db-0"))
            .endpoint(endpoint("10.244.0.11").hostname("db-1"))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    wait_answers(
        a,
        "db.shop.svc.cluster.local.",
        RecordType::A,
        &[
            "db.shop.svc.cluster.local. 5 IN A 10.244.0.10",
            "db.shop.svc.cluster.local. 5 IN A 10.244.0.11",
        ],
        Duration::from_secs(10),
    );

    // API down after sync: last-known data keeps being served, no SERVFAIL.
    api.go_down();
    for _ in 0..10 {
        expect(
            a,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            "NOERROR",
            &["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"],
        );
        expect(
            a,
            "gone.shop.svc.cluster.local.",
            RecordType::A,
            "NXDOMAIN",
            &[],
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A service deleted during the outage disappears once the API is back.
    api.delete(Kind::Service, "shop", "1st");
    rt.block_on(api.come_up()).unwrap();
    let r = wait_rcode(
        a,
        "1st.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        Duration::from_secs(40),
    );
    assert_eq!(r.rcode_name(), "NXDOMAIN");
}

#[test]
fn api_unreachable_at_start_servfail_then_answers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with_basics(&rt);
    api.go_down();
    let (port, ready) = (free_port(), free_port());
    let core = format!(
        ".:{port} {{\n  ready 127.0.0.1:{ready}\n  kubernetes cluster.local {{\n    endpoint {}\n    startup_timeout 1s\n  }}\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = addr(port);
    let t0 = Instant::now();
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    s.wait_for_line(
        "[WARNING] plugin/kubernetes: starting server with unsynced Kubernetes API",
        T,
    )
    .unwrap();
    assert!(
        s.count_lines(
            "[INFO] plugin/kubernetes: waiting for Kubernetes API before starting server"
        ) >= 1
    );
    let r = q(a, "kubernetes.default.svc.cluster.local.", RecordType::A);
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert_eq!(r.authority().len(), 1);
    // NODATA-class answers are not errors.
    assert_eq!(
        q(a, "svc.cluster.local.", RecordType::A).rcode_name(),
        "NOERROR"
    );
    let (code, body) = http_get(SocketAddr::from(([127, 0, 0, 1], ready)), "/ready", T).unwrap();
    assert_eq!((code, body.trim()), (503, "kubernetes"));
    rt.block_on(api.come_up()).unwrap();
    let r = wait_rcode(
        a,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        Duration::from_secs(40),
    );
    assert_eq!(
        norm(r.answers()),
        vec!["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1".to_string()]
    );
    let (code, _) = http_get(SocketAddr::from(([127, 0, 0, 1], ready)), "/ready", T).unwrap();
    assert_eq!(code, 200);
}

#[test]
fn kubeadm_like_corefile_with_available_plugins() {
    // The kubeadm Corefile minus plugins not on main yet (forward, cache, loop, loadbalance).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with_basics(&rt);
    let (port, health, ready, metrics) = (free_port(), free_port(), free_port(), free_port());
    let core = format!(
        ".:{port} {{\n    errors\n    health 127.0.0.1:{health} {{\n       lameduck 1s\n    }}\n    ready 127.0.0.1:{ready}\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n       endpoint {}\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus 127.0.0.1:{metrics}\n    reload\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    expect(
        a,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"],
    );
    // Reverse miss falls through to the end of the chain (forward would answer here).
    let r = udp(a, &Query::new("9.9.9.9.in-addr.arpa.", RecordType::PTR), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    let (_, text) = http_get(SocketAddr::from(([127, 0, 0, 1], metrics)), "/metrics", T).unwrap();
    assert!(
        text.contains("coredns_kubernetes_rest_client_requests_total"),
        "client metrics exported"
    );
}

#[test]
fn external_name_out_of_zone_goes_through_forward() {
    let up = Upstream::records(&["www.example.org. 300 IN A 192.0.2.53"]).expect("upstream");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with_basics(&rt);
    api.apply(service("shop", "site").external_name("www.example.org"))
        .unwrap();
    let port = free_port();
    // The kubeadm Corefile's kubernetes and forward lines (cache, loop, loadbalance are not on
    // main yet).
    let core = format!(
        ".:{port} {{\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n       endpoint {}\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    forward . {}\n}}\n",
        api.url(),
        up.addr()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    expect(
        a,
        "site.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &[
            "site.shop.svc.cluster.local. 30 IN CNAME www.example.org.",
            "www.example.org. 300 IN A 192.0.2.53",
        ],
    );
    // Names outside the cluster zone go to forward.
    let r = udp(a, &Query::new("www.example.org.", RecordType::A), T).unwrap();
    assert_eq!(
        norm(r.answers()),
        vec!["www.example.org. 300 IN A 192.0.2.53".to_string()]
    );
}
