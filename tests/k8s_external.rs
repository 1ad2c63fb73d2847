//! End-to-end tests of the `k8s_external` plugin: the real binary against the fake Kubernetes
//! API server, queried over UDP and TCP on 127.0.0.1: external IPs, LoadBalancer ingress IPs
//! and hostnames (CNAME, target resolved through the server), headless services, SRV, PTR,
//! the apex SOA/NS and `ns1.<apex>`, `apex`, `ttl`, `fallthrough` and AXFR through `transfer`.
//! With `COREDNS_BIN` set, every answer is also compared with the real CoreDNS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_fakeapi::{endpoint, endpoint_slice, namespace, service, FakeApi};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(5);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn norm(v: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = v
        .into_iter()
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .collect();
    v.sort();
    v
}

/// (rcode, flags, answers, authority, additional), sections sorted, over UDP and TCP alike.
type Whole = (String, String, Vec<String>, Vec<String>, Vec<String>);

fn whole(a: SocketAddr, name: &str, t: RecordType) -> Whole {
    let q = Query::new(name, t);
    let u = udp(a, &q, T).unwrap_or_else(|e| panic!("{name} {t}: {e}"));
    let c = tcp(a, &q, T).unwrap();
    let w = |r: &Reply| {
        (
            r.rcode_name(),
            r.flags(),
            norm(r.answers()),
            norm(r.authority()),
            norm(r.additional()),
        )
    };
    assert_eq!(w(&u), w(&c), "{name} {t}: UDP and TCP differ");
    w(&u)
}

/// The cluster: namespaces, services with external addresses, a headless service.
fn cluster(rt: &tokio::runtime::Runtime) -> FakeApi {
    let api = rt.block_on(FakeApi::start()).expect("fake api");
    for ns in ["default", "shop"] {
        api.apply(namespace(ns)).unwrap();
    }
    api.apply(
        service("shop", "web")
            .cluster_ip("10.96.0.5")
            .external_ip("192.0.2.10")
            .external_ip("2001:db8::10")
            .port("http", 80, "TCP")
            .port("dns", 53, "UDP"),
    )
    .unwrap();
    api.apply(
        service("shop", "lb")
            .cluster_ip("10.96.0.6")
            .lb_ingress_ip("198.51.100.7")
            .port("https", 443, "TCP"),
    )
    .unwrap();
    api.apply(
        service("shop", "aws")
            .cluster_ip("10.96.0.7")
            .lb_ingress_hostname("lb.aws.test")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.apply(
        service("shop", "noext")
            .cluster_ip("10.96.0.8")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.apply(service("shop", "hl").headless().port("http", 8080, "TCP"))
        .unwrap();
    api.apply(
        endpoint_slice("shop", "hl-1", "hl")
            .endpoint(endpoint("10.1.0.1").hostname("pod-a"))
            .endpoint(endpoint("10.1.0.2"))
            .port("http", 8080, "TCP"),
    )
    .unwrap();
    api
}

fn corefile(port: u16, api: &FakeApi, ext: &str) -> String {
    format!(
        ".:{port} {{\n  hosts {{\n    203.0.113.9 lb.aws.test\n    fallthrough\n  }}\n  kubernetes cluster.local {{\n    endpoint {}\n  }}\n  {ext}\n  transfer example.org {{\n    to *\n  }}\n}}\n",
        api.url()
    )
}

const EXT: &str = "k8s_external example.org 2.0.192.in-addr.arpa {\n    headless\n    ttl 30\n  }";

fn start(binary: &Path, cf: &str, port: u16) -> Sextant {
    let mut s = Sextant::builder(binary, cf).start();
    s.wait_dns(addr(port), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", s.output()));
    // Wait for the cluster data (the first sync) to be visible.
    let deadline = Instant::now() + Duration::from_secs(15);
    while udp(
        addr(port),
        &Query::new("web.shop.example.org.", RecordType::A),
        T,
    )
    .map(|r| r.answers().is_empty())
    .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "no data\n{}", s.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

fn strs(v: &[&str]) -> Vec<String> {
    norm(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn external_addresses_and_headless_services_answer() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let port = free_port();
    let _s = start(bin(), &corefile(port, &api, EXT), port);
    let a = addr(port);
    let soa = "example.org. 30 IN SOA ns1.dns.example.org. hostmaster.dns.example.org. 0 7200 1800 86400 30";

    let (rcode, flags, ans, auth, extra) = whole(a, "web.shop.example.org.", RecordType::A);
    assert_eq!((rcode.as_str(), flags.as_str()), ("NOERROR", "qr,aa,rd"));
    assert_eq!(ans, strs(&["web.shop.example.org. 30 IN A 192.0.2.10"]));
    assert!(auth.is_empty() && extra.is_empty());
    let (_, _, ans, _, _) = whole(a, "Web.Shop.Example.ORG.", RecordType::AAAA);
    assert_eq!(
        ans,
        strs(&["web.shop.example.org. 30 IN AAAA 2001:db8::10"])
    );
    // SRV: one per (address, port) weight-wise, deduplicated by (target, port); the TTL of the
    // kubernetes plugin (5), addresses with k8s_external's TTL.
    let (_, _, ans, _, extra) = whole(a, "web.shop.example.org.", RecordType::SRV);
    assert_eq!(
        ans,
        strs(&[
            "web.shop.example.org. 5 IN SRV 0 25 80 web.shop.example.org.",
            "web.shop.example.org. 5 IN SRV 0 25 53 web.shop.example.org.",
        ])
    );
    assert_eq!(
        extra,
        strs(&[
            "web.shop.example.org. 30 IN A 192.0.2.10",
            "web.shop.example.org. 30 IN AAAA 2001:db8::10",
        ])
    );
    let (_, _, ans, _, _) = whole(a, "_http._tcp.web.shop.example.org.", RecordType::SRV);
    assert_eq!(
        ans,
        strs(&["_http._tcp.web.shop.example.org. 5 IN SRV 0 50 80 web.shop.example.org."])
    );
    // LoadBalancer ingress IP and hostname (CNAME, then the target through the server).
    let (_, _, ans, _, _) = whole(a, "lb.shop.example.org.", RecordType::A);
    assert_eq!(ans, strs(&["lb.shop.example.org. 30 IN A 198.51.100.7"]));
    let (_, _, ans, _, _) = whole(a, "aws.shop.example.org.", RecordType::A);
    assert_eq!(
        ans,
        strs(&[
            "aws.shop.example.org. 5 IN CNAME lb.aws.test.",
            "lb.aws.test. 3600 IN A 203.0.113.9"
        ])
    );
    // Headless: every endpoint, and one endpoint by name.
    let (_, _, ans, _, _) = whole(a, "hl.shop.example.org.", RecordType::A);
    assert_eq!(
        ans,
        strs(&[
            "hl.shop.example.org. 30 IN A 10.1.0.1",
            "hl.shop.example.org. 30 IN A 10.1.0.2"
        ])
    );
    let (_, _, ans, _, _) = whole(a, "pod-a.hl.shop.example.org.", RecordType::A);
    assert_eq!(ans, strs(&["pod-a.hl.shop.example.org. 30 IN A 10.1.0.1"]));
    // PTR for an external address, in a reverse zone of the plugin.
    let (_, _, ans, _, _) = whole(a, "10.2.0.192.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        ans,
        strs(&["10.2.0.192.in-addr.arpa. 30 IN PTR web.shop.example.org."])
    );
    // Errors: no external address, NODATA for a namespace and for other types.
    for (name, t, rcode) in [
        ("noext.shop.example.org.", RecordType::A, "NXDOMAIN"),
        ("nosuch.example.org.", RecordType::A, "NXDOMAIN"),
        ("a.b.c.web.shop.example.org.", RecordType::A, "NXDOMAIN"),
        ("shop.example.org.", RecordType::A, "NOERROR"),
        ("web.shop.example.org.", RecordType::TXT, "NOERROR"),
        ("hl.shop.example.org.", RecordType::AAAA, "NOERROR"),
        ("11.2.0.192.in-addr.arpa.", RecordType::PTR, "NXDOMAIN"),
    ] {
        let (rc, flags, ans, auth, _) = whole(a, name, t);
        assert_eq!(
            (rc.as_str(), flags.as_str()),
            (rcode, "qr,aa,rd"),
            "{name} {t}"
        );
        assert!(ans.is_empty(), "{name} {t}: {ans:?}");
        if name.ends_with("example.org.") {
            assert_eq!(auth, strs(&[soa]), "{name} {t}");
        }
    }
    // The apex: SOA, NS with this server's address as ns1.dns glue, else NODATA.
    let (_, _, ans, _, _) = whole(a, "example.org.", RecordType::SOA);
    assert_eq!(ans, strs(&[soa]));
    let (_, _, ans, _, extra) = whole(a, "example.org.", RecordType::NS);
    assert_eq!(ans, strs(&["example.org. 30 IN NS ns1.dns.example.org."]));
    assert!(
        !extra.is_empty()
            && extra
                .iter()
                .all(|r| r.starts_with("ns1.dns.example.org. 30 in a")),
        "{extra:?}"
    );
    let (rc, _, ans, auth, _) = whole(a, "example.org.", RecordType::A);
    assert_eq!((rc.as_str(), ans.len()), ("NOERROR", 0));
    assert_eq!(auth, strs(&[soa]));
    let (_, _, ans, _, _) = whole(a, "ns1.dns.example.org.", RecordType::A);
    assert!(
        !ans.is_empty()
            && ans
                .iter()
                .all(|r| r.starts_with("ns1.dns.example.org. 30 in a"))
    );
    let (rc, _, _, auth, _) = whole(a, "dns.example.org.", RecordType::A);
    assert_eq!((rc.as_str(), auth), ("NOERROR", strs(&[soa])));
    let (rc, _, _, _, _) = whole(a, "ns2.dns.example.org.", RecordType::A);
    assert_eq!(rc, "NXDOMAIN");
    let (rc, _, _, _, _) = whole(a, "x.ns1.dns.example.org.", RecordType::A);
    assert_eq!(rc, "NXDOMAIN");
    // Outside the plugin's zones: the rest of the chain (kubernetes answers its zone).
    let (rc, _, ans, _, _) = whole(a, "web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        (rc.as_str(), ans),
        (
            "NOERROR",
            strs(&["web.shop.svc.cluster.local. 5 IN A 10.96.0.5"])
        )
    );
}

#[test]
fn apex_ttl_and_fallthrough_options() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let up = Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.99", req.name()))
            .action()
    })
    .unwrap();
    let port = free_port();
    let ext = format!(
        "k8s_external example.org {{\n    apex ext\n    ttl 0\n    fallthrough\n  }}\n  forward . {}",
        up.addr()
    );
    let _s = start(bin(), &corefile(port, &api, &ext), port);
    let a = addr(port);
    let (_, _, ans, _, _) = whole(a, "web.shop.example.org.", RecordType::A);
    assert_eq!(ans, strs(&["web.shop.example.org. 0 IN A 192.0.2.10"]));
    let (_, _, ans, _, _) = whole(a, "example.org.", RecordType::SOA);
    assert_eq!(
        ans,
        strs(&["example.org. 0 IN SOA ns1.ext.example.org. hostmaster.ext.example.org. 0 7200 1800 86400 0"])
    );
    let (_, _, ans, _, _) = whole(a, "ns1.ext.example.org.", RecordType::A);
    assert!(!ans.is_empty());
    // NXDOMAIN names fall through to forward; NODATA does not.
    let (rc, _, ans, _, _) = whole(a, "nosuch.example.org.", RecordType::A);
    assert_eq!(
        (rc.as_str(), ans),
        ("NOERROR", strs(&["nosuch.example.org. 60 IN A 192.0.2.99"]))
    );
    let (rc, _, ans, _, _) = whole(a, "shop.example.org.", RecordType::A);
    assert_eq!((rc.as_str(), ans.len()), ("NOERROR", 0));
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.name() == "shop.example.org.")
            .count(),
        0
    );
}

/// Every message of an AXFR over one TCP connection, records as text (until the closing SOA).
fn axfr(a: SocketAddr, zone: &str) -> Vec<String> {
    let mut c = TcpConn::connect(a, T).unwrap();
    c.send_query(&Query::new(zone, RecordType::AXFR)).unwrap();
    let mut out = Vec::new();
    loop {
        let r = c.recv_reply(T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        out.extend(r.answers());
        if out.len() > 1 && out.iter().filter(|s| s.contains(" SOA ")).count() >= 2 {
            return out
                .into_iter()
                .map(|s| {
                    s.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase()
                })
                .collect();
        }
    }
}

#[test]
fn zone_transfer_and_serial() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let port = free_port();
    let _s = start(bin(), &corefile(port, &api, EXT), port);
    let a = addr(port);
    let recs = axfr(a, "example.org.");
    let soa = "example.org. 30 in soa ns1.dns.example.org. hostmaster.dns.example.org. 0 7200 1800 86400 30";
    assert_eq!(recs.first().map(String::as_str), Some(soa));
    assert_eq!(recs.last().map(String::as_str), Some(soa));
    assert_eq!(recs[1], "example.org. 30 in ns ns1.dns.example.org.");
    for want in [
        "web.shop.example.org. 30 in a 192.0.2.10",
        "web.shop.example.org. 30 in aaaa 2001:db8::10",
        "web.shop.example.org. 5 in srv 0 100 80 web.shop.example.org.",
        "_http._tcp.web.shop.example.org. 5 in srv 0 100 80 web.shop.example.org.",
        "_dns._udp.web.shop.example.org. 5 in srv 0 100 53 web.shop.example.org.",
        "lb.shop.example.org. 30 in a 198.51.100.7",
        "hl.shop.example.org. 30 in a 10.1.0.1",
        "pod-a.hl.shop.example.org. 30 in a 10.1.0.1",
        "pod-a.hl.shop.example.org. 5 in srv 0 100 8080 pod-a.hl.shop.example.org.",
        "_http._tcp.hl.shop.example.org. 5 in srv 0 50 8080 pod-a.hl.shop.example.org.",
    ] {
        assert!(
            recs.iter().any(|r| r == want),
            "{want} missing from {recs:#?}"
        );
    }
    // Only `web` has a second SRV owner... and the web SRV appears once.
    assert_eq!(
        recs.iter()
            .filter(|r| r.starts_with("web.shop.example.org. 5 in srv"))
            .count(),
        1
    );
    // An update that changes external addresses moves the serial (CoreDNS ExternalSerial).
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    api.apply(
        service("shop", "lb")
            .cluster_ip("10.96.0.6")
            .lb_ingress_ip("198.51.100.8")
            .port("https", 443, "TCP"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // UDP only: the update may land between a UDP and a TCP query of `whole`.
        let r = udp(a, &Query::new("example.org.", RecordType::SOA), T).unwrap();
        let ans = norm(r.answers());
        let serial: u64 = ans[0].split_whitespace().nth(6).unwrap().parse().unwrap();
        if serial >= before {
            break;
        }
        assert!(Instant::now() < deadline, "serial stayed {serial}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_kubernetes_the_configuration_fails() {
    let (code, out, err) =
        Sextant::check(bin(), ".:1053 {\n  k8s_external example.org\n}\n").unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":2:3: k8s_external: kubernetes plugin not loaded"),
        "{out}{err}"
    );
    let (code, out, err) = Sextant::check(
        bin(),
        ".:1053 {\n  k8s_external example.org {\n    ttl 4000\n  }\n  kubernetes\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":3:9: ttl: ttl must be in range [0, 3600]: 4000"),
        "{out}{err}"
    );
}

/// The same cluster and Corefile on the real CoreDNS: every reply must be the same.
#[test]
fn answers_match_coredns() {
    let Some(coredns) = coredns_bin() else {
        eprintln!("skipping answers_match_coredns: COREDNS_BIN is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    // The second form: apex, ttl 0, fallthrough to an upstream.
    let up = Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.99", req.name()))
            .action()
    })
    .unwrap();
    let other = format!(
        "k8s_external example.org {{\n    apex ext\n    ttl 0\n    fallthrough\n  }}\n  forward . {}",
        up.addr()
    );
    let (p1, p2) = (free_port(), free_port());
    let _ours = start(bin(), &corefile(p1, &api, &other), p1);
    let _theirs = start(&coredns, &corefile(p2, &api, &other), p2);
    for (name, t) in [
        ("web.shop.example.org.", RecordType::A),
        ("example.org.", RecordType::SOA),
        ("ns1.ext.example.org.", RecordType::TXT),
        ("ext.example.org.", RecordType::A),
        ("nosuch.example.org.", RecordType::A),
        ("shop.example.org.", RecordType::A),
        ("noext.shop.example.org.", RecordType::A),
    ] {
        assert_eq!(
            whole(addr(p1), name, t),
            whole(addr(p2), name, t),
            "{name} {t}"
        );
    }
    let (p1, p2) = (free_port(), free_port());
    let _ours = start(bin(), &corefile(p1, &api, EXT), p1);
    let _theirs = start(&coredns, &corefile(p2, &api, EXT), p2);
    let questions: &[(&str, RecordType)] = &[
        ("web.shop.example.org.", RecordType::A),
        ("web.shop.example.org.", RecordType::AAAA),
        ("web.shop.example.org.", RecordType::SRV),
        ("web.shop.example.org.", RecordType::TXT),
        ("_http._tcp.web.shop.example.org.", RecordType::SRV),
        ("_dns._udp.web.shop.example.org.", RecordType::SRV),
        ("_http._udp.web.shop.example.org.", RecordType::SRV),
        ("lb.shop.example.org.", RecordType::A),
        ("aws.shop.example.org.", RecordType::A),
        ("aws.shop.example.org.", RecordType::SRV),
        ("hl.shop.example.org.", RecordType::A),
        ("hl.shop.example.org.", RecordType::SRV),
        ("pod-a.hl.shop.example.org.", RecordType::A),
        ("10-1-0-2.hl.shop.example.org.", RecordType::A),
        ("_http._tcp.hl.shop.example.org.", RecordType::SRV),
        ("noext.shop.example.org.", RecordType::A),
        ("shop.example.org.", RecordType::A),
        ("nosuch.example.org.", RecordType::A),
        ("a.b.c.web.shop.example.org.", RecordType::A),
        ("example.org.", RecordType::SOA),
        ("example.org.", RecordType::A),
        ("dns.example.org.", RecordType::A),
        ("ns2.dns.example.org.", RecordType::A),
        ("10.2.0.192.in-addr.arpa.", RecordType::PTR),
        ("11.2.0.192.in-addr.arpa.", RecordType::PTR),
        ("2.0.192.in-addr.arpa.", RecordType::SOA),
    ];
    for (name, t) in questions {
        let ours = whole(addr(p1), name, *t);
        let theirs = whole(addr(p2), name, *t);
        assert_eq!(ours, theirs, "{name} {t}");
    }
    // NS glue and ns1 addresses are this server's own (interface) addresses on both.
    let (rc1, _, ans1, _, _) = whole(addr(p1), "example.org.", RecordType::NS);
    let (rc2, _, ans2, _, _) = whole(addr(p2), "example.org.", RecordType::NS);
    assert_eq!((rc1, ans1), (rc2, ans2));
    let mut ours = axfr(addr(p1), "example.org.");
    let mut theirs = axfr(addr(p2), "example.org.");
    // CoreDNS's order follows its informer's map; compare the records as multisets, without
    // the NS glue (interface addresses, listed in the host's order).
    for v in [&mut ours, &mut theirs] {
        v.retain(|r| !r.starts_with("ns1.dns.example.org."));
        v.sort();
    }
    assert_eq!(ours, theirs);
}
