//! The NodeLocal DNSCache Corefile template (k8s node-local-dns), rendered with `sed`, run by
//! Sextant inside a network namespace in front of Sextant-as-cluster-DNS (its
//! `__PILLAR__CLUSTER__DNS__`, reached with force_tcp) and Knot (Debian) behind a veth pair (its
//! `__PILLAR__UPSTREAM__SERVERS__`): cluster names, reverse names, external names, cached names,
//! then a variant with `autopath` over a resolv.conf and a variant with a `hosts` block. Needs
//! root, iproute2, sed and knot.

mod netenv;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netenv::*;
use sextant_fakeapi::{namespace, service, FakeApi};
use sextant_testkit::*;

const LOCAL_DNS: &str = "169.254.20.10";
/// Stands in for the kube-dns ClusterIP (node-local listens on it too).
const DNS_SERVER: &str = "169.254.20.11";
/// Stands in for kube-dns-upstream: Sextant-as-cluster-DNS binds it.
const CLUSTER_DNS: &str = "169.254.20.12";

/// `cluster/addons/dns/nodelocaldns/nodelocaldns.yaml`'s Corefile, placeholders and all.
const TEMPLATE: &str = "__PILLAR__DNS__DOMAIN__:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    health __PILLAR__LOCAL__DNS__:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
    }
";

/// Renders the template the way the install docs say: `sed -e s/.../.../g`.
fn render(template: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nodelocaldns.corefile");
    std::fs::write(&p, template).unwrap();
    let out = std::process::Command::new("sed")
        .args([
            "-e",
            "s/__PILLAR__DNS__DOMAIN__/cluster.local/g",
            "-e",
            &format!("s/__PILLAR__LOCAL__DNS__/{LOCAL_DNS}/g"),
            "-e",
            &format!("s/__PILLAR__DNS__SERVER__/{DNS_SERVER}/g"),
            "-e",
            &format!("s/__PILLAR__CLUSTER__DNS__/{CLUSTER_DNS}/g"),
            "-e",
            &format!("s/__PILLAR__UPSTREAM__SERVERS__/{UPSTREAM_IP}/g"),
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("__PILLAR__"), "{text}");
    text
}

/// The cluster DNS: kubeadm's Corefile bound to its own address in the shared namespace.
fn cluster_dns_corefile(api_url: &str) -> String {
    format!(
        ".:53 {{
    bind {CLUSTER_DNS}
    errors
    health {CLUSTER_DNS}:8080
    ready {CLUSTER_DNS}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       endpoint {api_url}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus {CLUSTER_DNS}:9153
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

fn cluster_api(ns: &str) -> (tokio::runtime::Runtime, FakeApi) {
    in_ns(ns, || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = rt.block_on(FakeApi::start()).unwrap();
        for n in ["default", "shop"] {
            api.apply(namespace(n)).unwrap();
        }
        api.apply(
            service("default", "kubernetes")
                .cluster_ip("10.96.0.1")
                .port("https", 443, "TCP"),
        )
        .unwrap();
        api.apply(
            service("shop", "web")
                .cluster_ip("10.96.0.20")
                .port("http", 80, "TCP"),
        )
        .unwrap();
        (rt, api)
    })
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

fn metrics(ip: &str, port: u16) -> String {
    http_get(sa(ip, port), "/metrics", T).unwrap().1
}

/// What every variant must answer, through both node-local addresses.
fn common_checks() {
    for ip in [LOCAL_DNS, DNS_SERVER] {
        let a = sa(ip, 53);
        // Cluster names through the cluster.local block (force_tcp to the cluster DNS).
        let r = both(a, "kubernetes.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr,aa,rd")
        );
        assert_eq!(
            no_ttl(r.answers()),
            ["kubernetes.default.svc.cluster.local. IN A 10.96.0.1"]
        );
        assert!((25..=30).contains(&ttl(&r)), "{:?}", r.answers());
        let r = both(a, "nope.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(r.rcode_name(), "NXDOMAIN");
        assert_eq!(r.authority().len(), 1);
        // Reverse: cluster PTR via the in-addr.arpa block; other PTR falls through to Knot.
        let r = both(a, "20.0.96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            no_ttl(r.answers()),
            ["20.0.96.10.in-addr.arpa. IN PTR web.shop.svc.cluster.local."]
        );
        let r = both(a, "10.2.0.192.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            no_ttl(r.answers()),
            ["10.2.0.192.in-addr.arpa. IN PTR www.example.test."]
        );
        // External names straight to Knot from the .:53 block.
        let r = both(a, "www.example.test.", RecordType::AAAA);
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr,aa,rd")
        );
        assert_eq!(
            no_ttl(r.answers()),
            ["www.example.test. IN AAAA 2001:db8::10"]
        );
        let r = both(a, "_sip._udp.example.test.", RecordType::SRV);
        assert_eq!(
            no_ttl(r.answers()),
            ["_sip._udp.example.test. IN SRV 0 5 5060 www.example.test."]
        );
    }
    // Cached: the TTL counts down and the upstream sees one query.
    let to_knot = |m: &str| {
        metric(
            m,
            "coredns_proxy_request_duration_seconds_count",
            &[&format!("to=\"{UPSTREAM_IP}:53\"")],
        )
    };
    let before = to_knot(&metrics(LOCAL_DNS, 9253));
    let a = sa(LOCAL_DNS, 53);
    let r1 = udp(a, &Query::new("api.example.test.", RecordType::A), T).unwrap();
    let t1 = Instant::now();
    assert_eq!(ttl(&r1), 30);
    std::thread::sleep(Duration::from_millis(2200));
    let r2 = tcp(
        sa(DNS_SERVER, 53),
        &Query::new("api.example.test.", RecordType::A),
        T,
    )
    .unwrap();
    let waited = t1.elapsed().as_secs() as u32;
    assert!(
        ttl(&r2) <= 28 && ttl(&r2) >= 29 - waited,
        "{:?}",
        r2.answers()
    );
    assert_eq!(no_ttl(r2.answers()), ["api.example.test. IN A 192.0.2.20"]);
    let m = metrics(LOCAL_DNS, 9253);
    assert_eq!(to_knot(&m) - before, 1.0, "second answer from the cache");
    assert!(
        metric(&m, "coredns_cache_hits_total", &["type=\"success\""]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "coredns_dns_requests_total",
            &[&format!("server=\"dns://{LOCAL_DNS}:53\"")]
        ) >= 1.0,
        "{m}"
    );
    // Node-local reached the cluster DNS over TCP only.
    let c = metrics(CLUSTER_DNS, 9153);
    assert!(
        metric(
            &c,
            "coredns_dns_requests_total",
            &["proto=\"tcp\"", "type=\"A\""]
        ) >= 1.0,
        "{c}"
    );
    assert_eq!(
        metric(
            &c,
            "coredns_dns_requests_total",
            &["proto=\"udp\"", "type=\"A\""]
        ),
        0.0,
        "{c}"
    );
    let (code, body) = http_get(sa(LOCAL_DNS, 8080), "/health", T).unwrap();
    assert_eq!((code, body.as_str()), (200, "OK"));
}

#[test]
fn nodelocal_corefile_in_front_of_sextant_and_knot() {
    let p = pair("nl");
    for ip in [LOCAL_DNS, DNS_SERVER, CLUSTER_DNS] {
        p.dns
            .exec_ok(IP, &["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .unwrap();
    }
    let _etc = EtcNetns::create(&p.dns, &format!("nameserver {UPSTREAM_IP}\n"));
    let _knot = knot_in(&p.up);
    let (_rt, api) = cluster_api(p.dns.name());
    let ns = p.dns.name().to_string();

    let mut cluster = sextant_in(&p.dns, &cluster_dns_corefile(&api.url()), &[]);
    wait_dns_in(&mut cluster, &p.dns, sa(CLUSTER_DNS, 53));
    in_ns(&ns, || {
        let start = Instant::now();
        while http_get(sa(CLUSTER_DNS, 8181), "/ready", T)
            .map(|r| r.0)
            .ok()
            != Some(200)
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "cluster DNS never ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let search = "search shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
    let base = render(TEMPLATE);
    let with_autopath = render(&TEMPLATE.replacen(
        "    errors\n    cache {",
        "    errors\n    autopath /SEARCH\n    cache {",
        1,
    ));
    let with_hosts = render(&TEMPLATE.replace(
        "    forward . __PILLAR__UPSTREAM__SERVERS__\n",
        "    hosts {\n        192.0.2.99 printer.corp.test\n        2001:db8::99 printer.corp.test\n        fallthrough\n    }\n    forward . __PILLAR__UPSTREAM__SERVERS__\n",
    ));
    assert_ne!(base, with_hosts);

    for (variant, corefile) in [
        ("base", base),
        ("autopath", with_autopath),
        ("hosts", with_hosts),
    ] {
        // autopath needs the file's absolute path: the child's dir is only known once started,
        // so the resolv.conf lives in a directory of our own.
        let sdir = tempfile::tempdir().unwrap();
        let spath = sdir.path().join("resolv.conf");
        std::fs::write(&spath, search).unwrap();
        let corefile = corefile.replace("/SEARCH", &spath.display().to_string());
        let mut node = sextant_in(&p.dns, &corefile, &[]);
        wait_dns_in(&mut node, &p.dns, sa(LOCAL_DNS, 53));
        in_ns(&ns, common_checks);
        match variant {
            "autopath" => in_ns(&ns, || {
                let a = sa(LOCAL_DNS, 53);
                // <name>.<first search element>: the rest of the search path is tried on the
                // server, answer with a CNAME from the asked name.
                let r = both(
                    a,
                    "kubernetes.default.shop.svc.cluster.local.",
                    RecordType::A,
                );
                assert_eq!(r.rcode_name(), "NOERROR");
                assert_eq!(
                    no_ttl(r.answers()),
                    [
                        "kubernetes.default.shop.svc.cluster.local. IN CNAME kubernetes.default.svc.cluster.local.",
                        "kubernetes.default.svc.cluster.local. IN A 10.96.0.1",
                    ]
                );
                let r = both(a, "web.shop.svc.cluster.local.", RecordType::A);
                assert_eq!(
                    no_ttl(r.answers()),
                    ["web.shop.svc.cluster.local. IN A 10.96.0.20"]
                );
                // Down to the bare name, answered by Knot through the cluster DNS.
                let r = both(a, "www.example.test.shop.svc.cluster.local.", RecordType::A);
                assert_eq!(r.rcode_name(), "NOERROR");
                assert_eq!(
                    no_ttl(r.answers()),
                    [
                        "www.example.test. IN A 192.0.2.10",
                        "www.example.test.shop.svc.cluster.local. IN CNAME www.example.test.",
                    ]
                );
                let r = both(a, "nothing.anywhere.shop.svc.cluster.local.", RecordType::A);
                assert_eq!(r.rcode_name(), "NXDOMAIN");
                let m = metrics(LOCAL_DNS, 9253);
                assert!(
                    metric(&m, "coredns_autopath_success_total", &[]) >= 2.0,
                    "{m}"
                );
            }),
            "hosts" => in_ns(&ns, || {
                let a = sa(LOCAL_DNS, 53);
                let r = both(a, "printer.corp.test.", RecordType::A);
                assert_eq!(
                    (r.rcode_name().as_str(), r.flags().as_str()),
                    ("NOERROR", "qr,aa,rd")
                );
                assert_eq!(no_ttl(r.answers()), ["printer.corp.test. IN A 192.0.2.99"]);
                assert!(ttl(&r) <= 30, "cache 30 caps the hosts TTL 3600");
                let r = both(a, "printer.corp.test.", RecordType::AAAA);
                assert_eq!(
                    no_ttl(r.answers()),
                    ["printer.corp.test. IN AAAA 2001:db8::99"]
                );
                let r = both(a, "99.2.0.192.in-addr.arpa.", RecordType::PTR);
                assert_eq!(
                    r.rcode_name(),
                    "NXDOMAIN",
                    "the reverse block forwards to the cluster DNS"
                );
                let r = both(a, "www.example.test.", RecordType::A);
                assert_eq!(no_ttl(r.answers()), ["www.example.test. IN A 192.0.2.10"]);
            }),
            _ => {}
        }
        assert!(node.exited().is_none(), "{variant}: {}", node.output());
        assert_eq!(
            node.count_lines("[FATAL]"),
            0,
            "{variant}: {}",
            node.output()
        );
        assert_eq!(
            node.count_lines("[ERROR]"),
            0,
            "{variant}: {}",
            node.output()
        );
        node.signal(sextant_testkit::libc::SIGTERM).unwrap();
        let st = node
            .wait_exit(Duration::from_secs(10))
            .expect("node-local exits");
        assert!(st.success(), "{variant}: {st}");
    }
    assert!(cluster.exited().is_none(), "{}", cluster.output());
    assert_eq!(cluster.count_lines("[FATAL]"), 0, "{}", cluster.output());
}
