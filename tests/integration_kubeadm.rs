//! The kubeadm Corefile, unchanged except for an `endpoint` line to the fake API server, run
//! inside a network namespace whose `/etc/resolv.conf` names Knot (Debian) in a second
//! namespace behind a veth pair: cluster names, the reverse fallthrough to forward, external
//! names, the cache in front of forward, `loop` without a false alarm, `/health`, `/ready` and
//! metrics, over UDP and TCP from a client inside the namespace. Needs root, iproute2, knot.

mod netenv;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netenv::*;
use sextant_fakeapi::{endpoint, endpoint_slice, namespace, service, FakeApi};
use sextant_testkit::*;

/// kubeadm's Corefile (cmd/kubeadm/app/phases/addons/dns/manifests.go) plus `endpoint`.
fn kubeadm_corefile(api_url: &str) -> String {
    format!(
        ".:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       endpoint {api_url}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success cluster.local
       disable denial cluster.local
    }}
    loop
    reload
    loadbalance
}}
"
    )
}

/// The fake API server with a small cluster, started inside namespace `ns`.
fn cluster_api(ns: &str) -> (tokio::runtime::Runtime, FakeApi) {
    in_ns(ns, || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = rt.block_on(FakeApi::start()).unwrap();
        for n in ["default", "kube-system", "shop"] {
            api.apply(namespace(n)).unwrap();
        }
        api.apply(
            service("default", "kubernetes")
                .cluster_ip("10.96.0.1")
                .port("https", 443, "TCP"),
        )
        .unwrap();
        api.apply(
            service("kube-system", "kube-dns")
                .cluster_ip("10.96.0.10")
                .port("dns", 53, "UDP")
                .port("dns-tcp", 53, "TCP"),
        )
        .unwrap();
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
                .endpoint(endpoint("10.244.0.11").hostname("db-1"))
                .port("pg", 5432, "TCP"),
        )
        .unwrap();
        api.apply(service("shop", "ext").external_name("www.example.test"))
            .unwrap();
        (rt, api)
    })
}

pub fn wait_ready(ready: SocketAddr) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok((200, body)) = http_get(ready, "/ready", T) {
            assert_eq!(body, "OK");
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "/ready never 200"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks a cluster answer: NOERROR, authoritative, exactly these records (TTL included).
fn cluster(a: SocketAddr, name: &str, t: RecordType, answers: &[&str]) -> Reply {
    let r = both(a, name, t);
    assert_eq!(r.rcode_name(), "NOERROR", "{name} {t}");
    assert_eq!(r.flags(), "qr,aa,rd", "{name} {t}");
    let want: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
    assert_eq!(norm(r.answers()), norm(want), "{name} {t}");
    r
}

#[test]
fn kubeadm_corefile_in_a_namespace() {
    let p = pair("ka");
    let _etc = EtcNetns::create(&p.dns, &format!("nameserver {UPSTREAM_IP}\n"));
    let knot = knot_in(&p.up);
    let (_rt, api) = cluster_api(p.dns.name());
    let mut s = sextant_in(&p.dns, &kubeadm_corefile(&api.url()), &[]);
    let a: SocketAddr = "127.0.0.1:53".parse().unwrap();
    wait_dns_in(&mut s, &p.dns, a);
    let ns = p.dns.name().to_string();

    let out = in_ns(&ns, move || {
        let ready = wait_ready("127.0.0.1:8181".parse().unwrap());
        let (code, body) = http_get("127.0.0.1:8080".parse().unwrap(), "/health", T).unwrap();
        assert_eq!((code, body.as_str()), (200, "OK"));

        // Cluster names: ClusterIP, SRV with glue, headless, endpoint name, PTR.
        cluster(
            a,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            &["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"],
        );
        let r = cluster(
            a,
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
            &["_https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 0 100 443 kubernetes.default.svc.cluster.local."],
        );
        assert_eq!(
            norm(r.additional()),
            vec!["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]
        );
        cluster(
            a,
            "db.shop.svc.cluster.local.",
            RecordType::A,
            &[
                "db.shop.svc.cluster.local. 30 IN A 10.244.0.10",
                "db.shop.svc.cluster.local. 30 IN A 10.244.0.11",
            ],
        );
        let r = cluster(
            a,
            "_pg._tcp.db.shop.svc.cluster.local.",
            RecordType::SRV,
            &[
                "_pg._tcp.db.shop.svc.cluster.local. 30 IN SRV 0 50 5432 db-0.db.shop.svc.cluster.local.",
                "_pg._tcp.db.shop.svc.cluster.local. 30 IN SRV 0 50 5432 db-1.db.shop.svc.cluster.local.",
            ],
        );
        assert_eq!(r.additional().len(), 2);
        cluster(
            a,
            "db-1.db.shop.svc.cluster.local.",
            RecordType::A,
            &["db-1.db.shop.svc.cluster.local. 30 IN A 10.244.0.11"],
        );
        cluster(
            a,
            "1.0.96.10.in-addr.arpa.",
            RecordType::PTR,
            &["1.0.96.10.in-addr.arpa. 30 IN PTR kubernetes.default.svc.cluster.local."],
        );
        cluster(
            a,
            "11.0.244.10.in-addr.arpa.",
            RecordType::PTR,
            &["11.0.244.10.in-addr.arpa. 30 IN PTR db-1.db.shop.svc.cluster.local."],
        );
        cluster(
            a,
            "10-1-2-3.shop.pod.cluster.local.",
            RecordType::A,
            &["10-1-2-3.shop.pod.cluster.local. 30 IN A 10.1.2.3"],
        );
        // Negative cluster answers are not cached (disable denial cluster.local): SOA MINIMUM
        // 30 and the SOA TTL stay as the plugin wrote them on every query.
        for _ in 0..2 {
            let r = both(a, "nope.shop.svc.cluster.local.", RecordType::A);
            assert_eq!(
                (r.rcode_name().as_str(), r.flags().as_str()),
                ("NXDOMAIN", "qr,aa,rd")
            );
            assert!(r.answers().is_empty());
            let auth = r.authority();
            assert_eq!(auth.len(), 1, "{auth:?}");
            assert!(
                auth[0].starts_with(
                    "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "
                ),
                "{auth:?}"
            );
            assert!(auth[0].ends_with(" 7200 1800 86400 30"), "{auth:?}");
        }

        // Reverse names outside the cluster fall through to forward, answered by Knot.
        let r = both(a, "10.2.0.192.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr,aa,rd")
        );
        assert_eq!(
            no_ttl(r.answers()),
            vec!["10.2.0.192.in-addr.arpa. IN PTR www.example.test."]
        );
        assert!(ttl(&r) <= 30 && ttl(&r) >= 25, "{:?}", r.answers());

        // ExternalName: CNAME from the plugin, target resolved through the whole server.
        let r = both(a, "ext.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(
            r.answers()[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ext.shop.svc.cluster.local.",
                "30",
                "IN",
                "CNAME",
                "www.example.test."
            ]
        );
        assert_eq!(
            no_ttl(r.answers()[1..].to_vec()),
            vec!["www.example.test. IN A 192.0.2.10"]
        );

        // External names: answered by Knot through forward, then from the cache with the TTL
        // counting down and no new upstream query.
        let m = |t: &str| {
            metric(
                t,
                "coredns_proxy_request_duration_seconds_count",
                &["to=\"169.254.53.2:53\""],
            )
        };
        let before = m(&http_get("127.0.0.1:9153".parse().unwrap(), "/metrics", T)
            .unwrap()
            .1);
        let r1 = udp(a, &Query::new("api.example.test.", RecordType::A), T).unwrap();
        assert_eq!(
            (r1.rcode_name().as_str(), r1.flags().as_str()),
            ("NOERROR", "qr,aa,rd")
        );
        assert_eq!(
            no_ttl(r1.answers()),
            vec!["api.example.test. IN A 192.0.2.20"]
        );
        assert_eq!(ttl(&r1), 30, "capped by cache 30");
        let t1 = Instant::now();
        let mid = m(&http_get("127.0.0.1:9153".parse().unwrap(), "/metrics", T)
            .unwrap()
            .1);
        assert_eq!(mid - before, 1.0, "one upstream query");
        std::thread::sleep(Duration::from_millis(2200));
        let r2 = tcp(a, &Query::new("api.example.test.", RecordType::A), T).unwrap();
        let r3 = udp(a, &Query::new("API.example.TEST.", RecordType::A), T).unwrap();
        let waited = t1.elapsed().as_secs() as u32;
        for r in [&r2, &r3] {
            assert_eq!(
                (r.rcode_name().as_str(), r.flags().as_str()),
                ("NOERROR", "qr,aa,rd")
            );
            assert!(
                ttl(r) <= 30 - 2 && ttl(r) >= 30 - waited - 1,
                "{:?}",
                r.answers()
            );
        }
        // The owner is the cached one: CoreDNS's cache (and `loadbalance`, which decodes
        // the cached reply) keep the spelling of the reply that was stored; DNS names compare
        // without case (RFC 4343).
        assert!(
            r3.answers()[0]
                .to_ascii_lowercase()
                .starts_with("api.example.test. "),
            "{:?}",
            r3.answers()
        );
        assert_eq!(r3.question().unwrap(), "API.example.TEST. IN A");
        let metrics = http_get("127.0.0.1:9153".parse().unwrap(), "/metrics", T)
            .unwrap()
            .1;
        assert_eq!(
            m(&metrics) - before,
            1.0,
            "cache hits do not reach the upstream"
        );

        // Cluster names are not cached: same TTL again.
        let r = udp(
            a,
            &Query::new("web.shop.svc.cluster.local.", RecordType::A),
            T,
        )
        .unwrap();
        assert_eq!(
            r.answers(),
            vec!["web.shop.svc.cluster.local. 30 IN A 10.96.0.20"]
        );

        // NXDOMAIN from the upstream, with its SOA (denial cached for other zones).
        let r = both(a, "missing.example.test.", RecordType::A);
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NXDOMAIN", "qr,aa,rd")
        );
        assert_eq!(
            no_ttl(r.authority()),
            vec![". IN SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 60"]
        );
        (ready, metrics)
    });
    let (ready, metrics) = out;
    eprintln!("ready after {ready:?}");

    // Metrics for everything above.
    for (name, labels) in [
        (
            "coredns_dns_requests_total",
            &[
                "server=\"dns://:53\"",
                "zone=\".\"",
                "proto=\"udp\"",
                "type=\"A\"",
            ][..],
        ),
        (
            "coredns_dns_requests_total",
            &["server=\"dns://:53\"", "proto=\"tcp\"", "type=\"SRV\""][..],
        ),
        ("coredns_dns_responses_total", &["rcode=\"NXDOMAIN\""][..]),
        ("coredns_cache_hits_total", &["type=\"success\""][..]),
        ("coredns_cache_requests_total", &[][..]),
        ("coredns_plugin_enabled", &["name=\"kubernetes\""][..]),
        ("coredns_plugin_enabled", &["name=\"loop\""][..]),
        ("coredns_kubernetes_rest_client_requests_total", &[][..]),
    ] {
        assert!(
            metric(&metrics, name, labels) >= 1.0,
            "{name} {labels:?}:\n{metrics}"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            "coredns_forward_max_concurrent_rejects_total",
            &[]
        ),
        0.0
    );

    // `loop` sent its probe through forward to Knot (NXDOMAIN there) and found no loop.
    assert!(
        metric(
            &metrics,
            "coredns_proxy_request_duration_seconds_count",
            &["rcode=\"NXDOMAIN\""]
        ) >= 1.0,
        "{metrics}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.exited().is_none(), "exited:\n{}", s.output());
    assert_eq!(s.count_lines("[FATAL]"), 0, "{}", s.output());
    assert_eq!(s.count_lines("[ERROR]"), 0, "{}", s.output());
    assert!(
        s.count_lines("plugin/reload: Running configuration SHA512") == 1,
        "{}",
        s.output()
    );

    // SIGTERM: lameduck keeps serving, then exit 0.
    s.signal(sextant_testkit::libc::SIGTERM).unwrap();
    let ns = p.dns.name().to_string();
    let served = in_ns(&ns, move || {
        std::thread::sleep(Duration::from_millis(500));
        udp(
            a,
            &Query::new("kubernetes.default.svc.cluster.local.", RecordType::A),
            T,
        )
        .map(|r| r.rcode_name())
        .unwrap_or_default()
    });
    assert_eq!(served, "NOERROR", "served during lameduck");
    let st = s
        .wait_exit(Duration::from_secs(15))
        .expect("exit after lameduck");
    assert!(st.success(), "{st}");
    drop(knot);
}
