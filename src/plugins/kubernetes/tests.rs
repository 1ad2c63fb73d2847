//! Unit tests of the kubernetes answer logic over in-memory data (a static index), covering the
//! record forms, the NXDOMAIN/NODATA/SERVFAIL table, options and the Corefile parser.

use std::net::SocketAddr;

use sextant_corefile::parse_str;
use sextant_fakeapi::{endpoint, endpoint_slice, namespace, pod, service};
use sextant_kube::{Index, PodsMode};
use sextant_wire::{Message, Name, RType, Rcode};

use super::lookup::{dashed, parse_request};
use super::setup::{parse, Config, DataSource};
use super::Kubernetes;
use crate::pkg::testing::directive;
use crate::plugin::{Handler, Next, Proto, Request};

fn objects() -> Vec<serde_json::Value> {
    vec![
        namespace("testns").build(),
        namespace("kube-system").build(),
        namespace("empty").build(),
        service("testns", "svc1")
            .cluster_ip("10.0.0.1")
            .port("http", 80, "TCP")
            .build(),
        endpoint_slice("testns", "svc1-a", "svc1")
            .endpoint(endpoint("172.0.0.2").hostname("ep1a"))
            .endpoint(endpoint("172.0.0.3"))
            .port("http", 80, "TCP")
            .build(),
        service("testns", "dual")
            .cluster_ip("10.0.0.5")
            .cluster_ip("fd00::5")
            .port("http", 80, "TCP")
            .build(),
        service("testns", "noports").cluster_ip("10.0.0.6").build(),
        service("testns", "unnamed")
            .cluster_ip("10.0.0.7")
            .port("", 8080, "TCP")
            .port("dns", 53, "UDP")
            .build(),
        service("testns", "hdls1")
            .headless()
            .port("http", 80, "TCP")
            .build(),
        endpoint_slice("testns", "hdls1-a", "hdls1")
            .endpoint(endpoint("172.0.0.10").hostname("pet-0"))
            .endpoint(endpoint("172.0.0.11").hostname("pet-1"))
            .endpoint(endpoint("172.0.0.12").ready(Some(false)))
            .endpoint(endpoint("5678:abcd::1"))
            .port("http", 80, "TCP")
            .port("https", 443, "TCP")
            .build(),
        service("testns", "hdls-unready")
            .headless()
            .port("http", 80, "TCP")
            .build(),
        endpoint_slice("testns", "hdls-unready-a", "hdls-unready")
            .endpoint(endpoint("172.0.0.20").ready(Some(false)))
            .port("http", 80, "TCP")
            .build(),
        service("testns", "hdls-noports").headless().build(),
        endpoint_slice("testns", "hdls-noports-a", "hdls-noports")
            .endpoint(endpoint("172.0.0.30"))
            .build(),
        service("testns", "ext")
            .external_name("ext.interwebs.test")
            .build(),
        service("testns", "ext-in")
            .external_name("svc1.testns.svc.cluster.local")
            .build(),
        service("testns", "ext-ip").external_name("1.2.3.4").build(),
        service("testns", "empty-svc")
            .cluster_ip("10.0.0.9")
            .port("http", 80, "TCP")
            .build(),
        service("testns", "3digit")
            .cluster_ip("10.0.0.33")
            .port("http", 80, "TCP")
            .build(),
        service("kube-system", "kube-dns")
            .cluster_ip("10.0.0.10")
            .port("dns", 53, "UDP")
            .build(),
        endpoint_slice("kube-system", "kube-dns-a", "kube-dns")
            .endpoint(endpoint("192.0.2.53").pod("coredns-abc"))
            .port("dns", 53, "UDP")
            .build(),
        pod("testns", "pod1").ip("10.244.0.9").build(),
    ]
}

fn cfg_from(body: &str) -> Config {
    let text = format!("cluster.local 0.10.in-addr.arpa ip6.arpa {{\n kubernetes cluster.local 10.0.0.0/16 172.0.0.0/8 ip6.arpa {{\n{body}\n }}\n}}\n");
    parse(&directive(&text), &[]).expect("config")
}

fn handler(body: &str, local: Vec<std::net::IpAddr>) -> Kubernetes {
    let idx = Index::new_static();
    idx.apply_objects(objects()).expect("objects");
    Kubernetes::with_index(cfg_from(body), idx, local)
}

async fn ask(k: &Kubernetes, name: &str, qtype: RType) -> Message {
    // Asked twice: the second answer comes from the reply memo and must be the same.
    let first = ask_once(k, name, qtype).await;
    let again = ask_once(k, name, qtype).await;
    assert_eq!(
        first.to_wire(),
        again.to_wire(),
        "memoised reply differs for {name} {qtype:?}"
    );
    first
}

async fn ask_once(k: &Kubernetes, name: &str, qtype: RType) -> Message {
    let q = Message::query(1, Name::parse(name).unwrap(), qtype);
    let mut req = Request::new(q, SocketAddr::from(([127, 0, 0, 1], 5353)), Proto::Udp);
    let mut out = k.serve(&mut req, Next::new(&[])).await;
    match out.take_message() {
        Some(m) => m,
        None => {
            let mut m = req.reply();
            m.set_rcode(out.rcode);
            m
        }
    }
}

fn lines(rs: &[sextant_wire::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| {
            r.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Asserts rcode, AA, answer and additional; negative answers must carry the SOA.
async fn check(
    k: &Kubernetes,
    name: &str,
    qtype: RType,
    rcode: Rcode,
    ans: &[&str],
    extra: &[&str],
) {
    let m = ask(k, name, qtype).await;
    assert_eq!(m.rcode(), rcode, "{name} {qtype}: {m:?}");
    assert!(m.header.aa, "{name} {qtype}: AA");
    let mut got = lines(&m.answers);
    got.sort();
    let mut want: Vec<String> = ans.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{name} {qtype} answer");
    let mut got = lines(&m.additional);
    got.sort();
    let mut want: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{name} {qtype} additional");
    if ans.is_empty() {
        assert_eq!(m.authority.len(), 1, "{name} {qtype}: SOA in authority");
        assert_eq!(m.authority[0].rtype, RType::SOA);
    }
}

/// The reply bytes and uncompressed length a handler writes for one question with these RD/CD
/// bits (a reply the plugin built as a message is encoded as the memo would keep it).
async fn wire_of(
    k: &Kubernetes,
    name: &str,
    qtype: RType,
    rd: bool,
    cd: bool,
) -> (Vec<u8>, Option<usize>) {
    let mut q = Message::query(7, Name::parse(name).unwrap(), qtype);
    q.header.rd = rd;
    q.header.cd = cd;
    let mut req = Request::new(q, SocketAddr::from(([127, 0, 0, 1], 5353)), Proto::Udp);
    let out = k.serve(&mut req, Next::new(&[])).await;
    match out.reply {
        Some(sextant_wire::Reply::Encoded(e)) => (e.bytes, e.uncompressed),
        Some(sextant_wire::Reply::Parsed(m)) => (m.to_wire(), Some(m.uncompressed_len())),
        None => (Vec::new(), None),
    }
}

/// The reply `serve_now` gives for one question (as [`wire_of`]), None when it declines.
fn now_of(
    k: &Kubernetes,
    name: &str,
    qtype: RType,
    rd: bool,
    cd: bool,
) -> Option<(Vec<u8>, Option<usize>)> {
    let mut q = Message::query(7, Name::parse(name).unwrap(), qtype);
    q.header.rd = rd;
    q.header.cd = cd;
    let mut req = Request::new(q, SocketAddr::from(([127, 0, 0, 1], 5353)), Proto::Udp);
    match k.serve_now(&mut req, Next::new(&[]))?.reply {
        Some(sextant_wire::Reply::Encoded(e)) => Some((e.bytes, e.uncompressed)),
        other => panic!("serve_now wrote {other:?}"),
    }
}

/// The fast path (`fast.rs`) writes the same bytes as the general path, for every A/AAAA name
/// of the fixture (services, endpoints by hostname and dashed address, in other spellings,
/// names it leaves to the general path) under the options that touch these answers; and it
/// does answer the plain names itself.
#[tokio::test]
async fn fast_path_matches_the_general_path() {
    let mut names: Vec<String> = Vec::new();
    for svc in [
        "svc1.testns",
        "dual.testns",
        "noports.testns",
        "unnamed.testns",
        "hdls1.testns",
        "hdls-unready.testns",
        "hdls-noports.testns",
        "ext.testns",
        "ext-in.testns",
        "ext-ip.testns",
        "empty-svc.testns",
        "3digit.testns",
        "kube-dns.kube-system",
        "nope.testns",
        "svc1.nons",
        "svc1.empty",
    ] {
        names.push(format!("{svc}.svc.cluster.local."));
        for ep in [
            "ep1a",
            "172-0-0-3",
            "172-0-0-2",
            "pet-0",
            "pet-1",
            "172-0-0-12",
            "5678-abcd--1",
            "172-0-0-30",
            "192-0-2-53",
            "coredns-abc",
            "x",
            "172-00-0-3",
            "0172-0-0-3",
            "172-0-0-3-1",
            "172-0-0",
            "172-0-0-256",
        ] {
            names.push(format!("{ep}.{svc}.svc.cluster.local."));
        }
    }
    names.extend(
        [
            "SVC1.TestNS.Svc.Cluster.LOCAL.",
            "Pet-0.HDLS1.testns.SVC.cluster.local.",
            "a.b.svc1.testns.svc.cluster.local.",
            "testns.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            "10-244-0-9.testns.pod.cluster.local.",
            "svc1.testns.pod.cluster.local.",
            "ns.dns.cluster.local.",
            "svc1.testns.svc.0.10.in-addr.arpa.",
            "www.site-1.com.svc.cluster.local.",
            "www.site-1.com.testns.svc.cluster.local.",
            "www.site-1.com.nons.svc.cluster.local.",
            "_http._tcp.svc1.testns.svc.cluster.local.",
            "_http._tcp.nope.testns.svc.cluster.local.",
            "a.b.ext.testns.svc.cluster.local.",
            "www.example.com.cluster.local.",
            "svc1.testns.other.svc.cluster.local.",
            "x.dns.cluster.local.",
            "x.DNS.cluster.local.",
            "x.hostmaster.cluster.local.",
            "Foo.Cluster.Local.",
            "a.b.c.d.e.f.g.h.i.j.cluster.local.",
            "1.2.3.4.in-addr.arpa.",
            "svc1.testns.svc.example.org.",
        ]
        .map(String::from),
    );
    let bodies = [
        "",
        "endpoint_pod_names",
        "ttl 3600",
        "namespaces kube-system",
        "noendpoints",
        "ignore empty_service",
        "pods insecure",
        "fallthrough",
    ];
    let (mut fast_answered, mut now_answered, mut memo_answered) = (0, 0, 0);
    for body in bodies {
        let fast = handler(body, vec![]);
        let mut slow = handler(body, vec![]);
        slow.fast = false;
        for name in &names {
            for qtype in [RType::A, RType::AAAA] {
                for (rd, cd) in [(true, false), (false, true)] {
                    // The first answer without a future (the chain's `serve_now`) is the
                    // general path's, when it gives one: it does for what the fast path
                    // answers, never for the rest.
                    let now = now_of(&fast, name, qtype, rd, cd);
                    // Each handler asked twice (the second from its memo).
                    let f = wire_of(&fast, name, qtype, rd, cd).await;
                    let s = wire_of(&slow, name, qtype, rd, cd).await;
                    assert_eq!(f, s, "{body:?}: {name} {qtype:?} rd={rd} cd={cd}");
                    if let Some(now) = &now {
                        assert_eq!(now, &s, "serve_now {body:?}: {name} {qtype:?}");
                        now_answered += 1;
                    }
                    assert_eq!(wire_of(&fast, name, qtype, rd, cd).await, s);
                    assert_eq!(wire_of(&slow, name, qtype, rd, cd).await, s);
                    // Remembered now (the general path's replies too, unless they hold data
                    // from outside the index): `serve_now` sends them.
                    if let Some(now) = now_of(&slow, name, qtype, rd, cd) {
                        assert_eq!(now, s, "serve_now (memo) {body:?}: {name} {qtype:?}");
                        memo_answered += 1;
                    }
                    let mut q = Message::query(7, Name::parse(name).unwrap(), qtype);
                    q.header.rd = rd;
                    q.header.cd = cd;
                    let fast_answers =
                        super::fast::answer(&fast.cfg, &fast.snapshot().0, true, &q).is_some();
                    if fast_answers {
                        fast_answered += 1;
                    }
                    assert_eq!(now.is_some(), fast_answers, "{body:?}: {name} {qtype:?}");
                }
            }
        }
    }
    assert!(
        fast_answered > 100,
        "the fast path answered {fast_answered} questions"
    );
    assert_eq!(now_answered, fast_answered);
    assert!(
        memo_answered > now_answered,
        "serve_now sent {memo_answered} remembered replies"
    );
}

const NOERROR: Rcode = Rcode::NOERROR;
const NX: Rcode = Rcode::NXDOMAIN;

#[tokio::test]
async fn record_forms() {
    let k = handler("", vec![]);
    let z = "cluster.local.";
    check(
        &k,
        "svc1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
        &[],
    )
    .await;
    check(
        &k,
        "dual.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["dual.testns.svc.cluster.local. 5 IN A 10.0.0.5"],
        &[],
    )
    .await;
    check(
        &k,
        "dual.testns.svc.cluster.local.",
        RType::AAAA,
        NOERROR,
        &["dual.testns.svc.cluster.local. 5 IN AAAA fd00::5"],
        &[],
    )
    .await;
    check(
        &k,
        "3digit.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["3digit.testns.svc.cluster.local. 5 IN A 10.0.0.33"],
        &[],
    )
    .await;
    // SRV with named port, and dual-stack weight 50 with both glue records.
    check(&k, "_http._tcp.svc1.testns.svc.cluster.local.", RType::SRV, NOERROR,
        &["_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."],
        &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]).await;
    check(&k, "_http._tcp.dual.testns.svc.cluster.local.", RType::SRV, NOERROR,
        &["_http._tcp.dual.testns.svc.cluster.local. 5 IN SRV 0 50 80 dual.testns.svc.cluster.local."],
        &["dual.testns.svc.cluster.local. 5 IN A 10.0.0.5", "dual.testns.svc.cluster.local. 5 IN AAAA fd00::5"]).await;
    // Bare-name SRV lists every port, unnamed ones included.
    check(&k, "unnamed.testns.svc.cluster.local.", RType::SRV, NOERROR,
        &["unnamed.testns.svc.cluster.local. 5 IN SRV 0 50 8080 unnamed.testns.svc.cluster.local.",
          "unnamed.testns.svc.cluster.local. 5 IN SRV 0 50 53 unnamed.testns.svc.cluster.local."],
        &["unnamed.testns.svc.cluster.local. 5 IN A 10.0.0.7"]).await;
    // Underscore-less port/proto labels work too.
    check(&k, "dns.udp.unnamed.testns.svc.cluster.local.", RType::SRV, NOERROR,
        &["dns.udp.unnamed.testns.svc.cluster.local. 5 IN SRV 0 100 53 unnamed.testns.svc.cluster.local."],
        &["unnamed.testns.svc.cluster.local. 5 IN A 10.0.0.7"]).await;
    // Headless: ready endpoints only, per family.
    check(
        &k,
        "hdls1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &[
            "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.10",
            "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11",
        ],
        &[],
    )
    .await;
    check(
        &k,
        "hdls1.testns.svc.cluster.local.",
        RType::AAAA,
        NOERROR,
        &["hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1"],
        &[],
    )
    .await;
    check(
        &k,
        "pet-0.hdls1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["pet-0.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.10"],
        &[],
    )
    .await;
    check(
        &k,
        "5678-abcd--1.hdls1.testns.svc.cluster.local.",
        RType::AAAA,
        NOERROR,
        &["5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1"],
        &[],
    )
    .await;
    // Endpoint names also exist for ClusterIP services (hostname, else dashed IP).
    check(
        &k,
        "ep1a.svc1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["ep1a.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.2"],
        &[],
    )
    .await;
    check(
        &k,
        "172-0-0-3.svc1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["172-0-0-3.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.3"],
        &[],
    )
    .await;
    // Headless SRV: one per (endpoint x port), N counted before de-duplication = 3 endpoints.
    check(&k, "_https._tcp.hdls1.testns.svc.cluster.local.", RType::SRV, NOERROR,
        &["_https._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 33 443 pet-0.hdls1.testns.svc.cluster.local.",
          "_https._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 33 443 pet-1.hdls1.testns.svc.cluster.local.",
          "_https._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 33 443 5678-abcd--1.hdls1.testns.svc.cluster.local."],
        &["pet-0.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.10", "pet-1.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11",
          "5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1"]).await;
    // PTR for ClusterIP and endpoint IPs (targets in the primary zone).
    check(
        &k,
        "1.0.0.10.in-addr.arpa.",
        RType::PTR,
        NOERROR,
        &["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."],
        &[],
    )
    .await;
    check(
        &k,
        "10.0.0.172.in-addr.arpa.",
        RType::PTR,
        NOERROR,
        &["10.0.0.172.in-addr.arpa. 5 IN PTR pet-0.hdls1.testns.svc.cluster.local."],
        &[],
    )
    .await;
    check(
        &k,
        "3.0.0.172.in-addr.arpa.",
        RType::PTR,
        NOERROR,
        &["3.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-3.svc1.testns.svc.cluster.local."],
        &[],
    )
    .await;
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.8.7.6.5.ip6.arpa.";
    check(
        &k,
        v6,
        RType::PTR,
        NOERROR,
        &[&format!(
            "{v6} 5 IN PTR 5678-abcd--1.hdls1.testns.svc.cluster.local."
        )],
        &[],
    )
    .await;
    // ExternalName: CNAME, in-zone target chased internally.
    check(
        &k,
        "ext-in.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &[
            "ext-in.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
            "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
        ],
        &[],
    )
    .await;
    check(
        &k,
        "ext.testns.svc.cluster.local.",
        RType::CNAME,
        NOERROR,
        &["ext.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."],
        &[],
    )
    .await;
    // dns-version, apex SOA and NS (no local IPs known -> no NS).
    check(
        &k,
        "dns-version.cluster.local.",
        RType::TXT,
        NOERROR,
        &["dns-version.cluster.local. 28800 IN TXT \"1.1.0\""],
        &[],
    )
    .await;
    let m = ask(&k, z, RType::SOA).await;
    assert_eq!(
        lines(&m.answers)[0]
            .split(' ')
            .take(6)
            .collect::<Vec<_>>()
            .join(" "),
        "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local."
    );
    assert!(lines(&m.answers)[0].ends_with(" 7200 1800 86400 5"));
}

#[tokio::test]
async fn negative_table() {
    let k = handler("", vec![]);
    let nodata: &[(&str, RType)] = &[
        ("svc1.testns.svc.cluster.local.", RType::AAAA),
        ("svc1.testns.svc.cluster.local.", RType::TXT),
        ("svc1.testns.svc.cluster.local.", RType::MX),
        ("svc1.testns.svc.cluster.local.", RType::HINFO),
        ("svc1.testns.svc.cluster.local.", RType::PTR),
        ("svc1.testns.svc.cluster.local.", RType::NS),
        ("svc1.testns.svc.cluster.local.", RType::CNAME),
        ("nothere.testns.svc.cluster.local.", RType::SOA),
        ("svc.cluster.local.", RType::A),
        ("pod.cluster.local.", RType::A),
        ("testns.svc.cluster.local.", RType::A),
        ("empty.svc.cluster.local.", RType::A),
        ("cluster.local.", RType::A),
        ("cluster.local.", RType::SRV),
        ("hdls-noports.testns.svc.cluster.local.", RType::SRV),
        ("noports.testns.svc.cluster.local.", RType::SRV),
        ("ext.testns.svc.cluster.local.", RType::SRV),
        ("0.10.in-addr.arpa.", RType::PTR),
    ];
    for (n, t) in nodata {
        check(&k, n, *t, NOERROR, &[], &[]).await;
    }
    let nx: &[(&str, RType)] = &[
        ("nothere.testns.svc.cluster.local.", RType::A),
        ("svc1.nsnoexist.svc.cluster.local.", RType::A),
        ("hdls-unready.testns.svc.cluster.local.", RType::A),
        ("nope.hdls1.testns.svc.cluster.local.", RType::A),
        ("x.ext.testns.svc.cluster.local.", RType::A),
        ("ext-ip.testns.svc.cluster.local.", RType::A),
        ("foo.cluster.local.", RType::A),
        ("dns-version.cluster.local.", RType::A),
        ("a.b.c.d.e.testns.svc.cluster.local.", RType::A),
        ("svc1.testns.svc.0.10.in-addr.arpa.", RType::A),
        ("100.0.0.10.cluster.local.", RType::PTR),
        ("99.99.0.10.in-addr.arpa.", RType::PTR),
        ("_nope._tcp.svc1.testns.svc.cluster.local.", RType::SRV),
        ("_http._udp.svc1.testns.svc.cluster.local.", RType::SRV),
        ("_tcp.svc1.testns.svc.cluster.local.", RType::SRV),
        ("_http._tcp.ext.testns.svc.cluster.local.", RType::SRV),
        ("1-2-3-4.testns.pod.cluster.local.", RType::A),
        ("testns.pod.cluster.local.", RType::A),
        ("*.testns.svc.cluster.local.", RType::A),
        ("svc.cluster.local.", RType::TXT),
        ("foo.svc.cluster.local.", RType::NS),
    ];
    for (n, t) in nx {
        check(&k, n, *t, NX, &[], &[]).await;
    }
}

#[tokio::test]
async fn case_is_kept_and_ignored() {
    let k = handler("", vec![]);
    check(&k, "_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL.", RType::SRV, NOERROR,
        &["_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL."],
        &["svc1.testns.svc.cLuStEr.LoCaL. 5 IN A 10.0.0.1"]).await;
    let m = ask(&k, "NoPe.testns.svc.Cluster.Local.", RType::A).await;
    assert_eq!(m.rcode(), NX);
    assert_eq!(m.authority[0].name.to_string(), "Cluster.Local.");
    assert!(m.authority[0]
        .name
        .eq_case_sensitive(&Name::parse("Cluster.Local.").unwrap()));
}

#[tokio::test]
async fn options_change_answers() {
    // ttl, also the SOA TTL (min(ttl, 300)) and MINIMUM.
    let k = handler("ttl 3600", vec![]);
    check(
        &k,
        "svc1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["svc1.testns.svc.cluster.local. 3600 IN A 10.0.0.1"],
        &[],
    )
    .await;
    let m = ask(&k, "nothere.testns.svc.cluster.local.", RType::A).await;
    assert_eq!(m.authority[0].ttl, 300);
    assert!(lines(&m.authority)[0].ends_with(" 3600"));
    // namespaces
    let k = handler("namespaces kube-system", vec![]);
    check(&k, "svc1.testns.svc.cluster.local.", RType::A, NX, &[], &[]).await;
    check(&k, "1.0.0.10.in-addr.arpa.", RType::PTR, NX, &[], &[]).await;
    check(
        &k,
        "kube-dns.kube-system.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10"],
        &[],
    )
    .await;
    // noendpoints
    let k = handler("noendpoints", vec![]);
    check(
        &k,
        "hdls1.testns.svc.cluster.local.",
        RType::A,
        NX,
        &[],
        &[],
    )
    .await;
    check(
        &k,
        "ep1a.svc1.testns.svc.cluster.local.",
        RType::A,
        NX,
        &[],
        &[],
    )
    .await;
    check(&k, "10.0.0.172.in-addr.arpa.", RType::PTR, NX, &[], &[]).await;
    check(
        &k,
        "svc1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
        &[],
    )
    .await;
    // ignore empty_service
    let k = handler("ignore empty_service", vec![]);
    check(
        &k,
        "empty-svc.testns.svc.cluster.local.",
        RType::A,
        NX,
        &[],
        &[],
    )
    .await;
    check(
        &k,
        "svc1.testns.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
        &[],
    )
    .await;
    check(
        &k,
        "ext-in.testns.svc.cluster.local.",
        RType::CNAME,
        NOERROR,
        &["ext-in.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local."],
        &[],
    )
    .await;
    // endpoint_pod_names
    let k = handler("endpoint_pod_names", vec![]);
    check(
        &k,
        "coredns-abc.kube-dns.kube-system.svc.cluster.local.",
        RType::A,
        NOERROR,
        &["coredns-abc.kube-dns.kube-system.svc.cluster.local. 5 IN A 192.0.2.53"],
        &[],
    )
    .await;
    // pods modes
    let k = handler("pods insecure", vec![]);
    check(
        &k,
        "1-2-3-4.testns.pod.cluster.local.",
        RType::A,
        NOERROR,
        &["1-2-3-4.testns.pod.cluster.local. 5 IN A 1.2.3.4"],
        &[],
    )
    .await;
    check(
        &k,
        "2001-db8--1.testns.pod.cluster.local.",
        RType::AAAA,
        NOERROR,
        &["2001-db8--1.testns.pod.cluster.local. 5 IN AAAA 2001:db8::1"],
        &[],
    )
    .await;
    check(
        &k,
        "1-2-3-4.testns.pod.cluster.local.",
        RType::AAAA,
        NOERROR,
        &[],
        &[],
    )
    .await;
    check(&k, "testns.pod.cluster.local.", RType::A, NOERROR, &[], &[]).await;
    check(
        &k,
        "bogus.testns.pod.cluster.local.",
        RType::A,
        NX,
        &[],
        &[],
    )
    .await;
    check(
        &k,
        "1-2-3-4.nsnoexist.pod.cluster.local.",
        RType::A,
        NX,
        &[],
        &[],
    )
    .await;
    let k = handler("pods verified", vec![]);
    check(
        &k,
        "10-244-0-9.testns.pod.cluster.local.",
        RType::A,
        NOERROR,
        &["10-244-0-9.testns.pod.cluster.local. 5 IN A 10.244.0.9"],
        &[],
    )
    .await;
    check(
        &k,
        "10-244-0-8.testns.pod.cluster.local.",
        RType::A,
        NX,
        &[],
        &[],
    )
    .await;
    check(
        &k,
        "10-244-0-9.kube-system.pod.cluster.local.",
        RType::A,
        NX,
        &[],
        &[],
    )
    .await;
}

#[tokio::test]
async fn fallthrough_only_for_name_errors() {
    let k = handler("fallthrough in-addr.arpa", vec![]);
    // The chain is empty, so falling through gives the end-of-chain SERVFAIL.
    assert_eq!(
        ask(&k, "99.99.0.10.in-addr.arpa.", RType::PTR)
            .await
            .rcode(),
        Rcode::SERVFAIL
    );
    assert_eq!(
        ask(&k, "nothere.testns.svc.cluster.local.", RType::A)
            .await
            .rcode(),
        NX
    );
    let k = handler("fallthrough", vec![]);
    assert_eq!(
        ask(&k, "nothere.testns.svc.cluster.local.", RType::A)
            .await
            .rcode(),
        Rcode::SERVFAIL
    );
    // NODATA is never passed on.
    check(
        &k,
        "svc1.testns.svc.cluster.local.",
        RType::AAAA,
        NOERROR,
        &[],
        &[],
    )
    .await;
}

#[tokio::test]
async fn not_synced_gives_servfail_with_soa() {
    let mut k = handler("", vec![]);
    k.index = std::sync::Arc::new(arc_swap::ArcSwapOption::empty());
    let m = ask(&k, "svc1.testns.svc.cluster.local.", RType::A).await;
    assert_eq!(m.rcode(), Rcode::SERVFAIL);
    assert!(m.header.aa);
    assert_eq!(m.authority.len(), 1);
    // NODATA-class answers stay NODATA.
    check(&k, "svc.cluster.local.", RType::A, NOERROR, &[], &[]).await;
}

#[tokio::test]
async fn ns_and_own_addresses() {
    // This server's address is an endpoint of kube-dns: NS points at the service name.
    let k = handler("", vec!["192.0.2.53".parse().unwrap()]);
    check(
        &k,
        "cluster.local.",
        RType::NS,
        NOERROR,
        &["cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."],
        &["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10"],
    )
    .await;
    check(
        &k,
        "ns.dns.cluster.local.",
        RType::A,
        NOERROR,
        &["ns.dns.cluster.local. 5 IN A 10.0.0.10"],
        &[],
    )
    .await;
    // Not an endpoint: ns.dns.<zone> with the local addresses.
    let k = handler("", vec!["192.0.2.99".parse().unwrap()]);
    check(
        &k,
        "cluster.local.",
        RType::NS,
        NOERROR,
        &["cluster.local. 5 IN NS ns.dns.cluster.local."],
        &["ns.dns.cluster.local. 5 IN A 192.0.2.99"],
    )
    .await;
}

#[tokio::test]
async fn axfr_is_refused_directly_and_listed_for_transfer() {
    let k = handler("", vec![]);
    assert_eq!(
        ask(&k, "cluster.local.", RType::AXFR).await.rcode(),
        Rcode::REFUSED
    );
    assert_eq!(
        ask(&k, "cluster.local.", RType::IXFR).await.rcode(),
        Rcode::REFUSED
    );
    use crate::plugin::Transferer;
    let recs = k
        .transfer(&Name::parse("cluster.local.").unwrap(), 0)
        .unwrap();
    let l = lines(&recs);
    assert!(l[0].starts_with("cluster.local. 5 IN SOA"));
    assert!(l.last().unwrap().starts_with("cluster.local. 5 IN SOA"));
    let pos = |s: &str| {
        l.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} not in {l:#?}"))
    };
    // Sorted by service name: 3digit < dual < ... < svc1.
    assert!(
        pos("3digit.testns.svc.cluster.local. 5 IN A 10.0.0.33")
            < pos("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")
    );
    pos("svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.");
    pos("_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.");
    pos("pet-0.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.10");
    pos("_https._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 33 443 pet-0.hdls1.testns.svc.cluster.local.");
    pos("ext.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.");
    assert!(!l.iter().any(|x| x.starts_with("ext-ip.")));
    // IXFR with the current serial: just the SOA.
    let serial = match &recs[0].data {
        sextant_wire::RData::Soa(s) => s.serial,
        _ => unreachable!(),
    };
    assert_eq!(
        k.transfer(&Name::parse("cluster.local.").unwrap(), serial)
            .unwrap()
            .len(),
        1
    );
    assert!(k
        .transfer(&Name::parse("example.org.").unwrap(), 0)
        .is_none());
}

#[test]
fn name_helpers() {
    assert_eq!(dashed("172.0.0.2".parse().unwrap()), "172-0-0-2");
    assert_eq!(dashed("5678:abcd::1".parse().unwrap()), "5678-abcd--1");
    assert_eq!(
        dashed("2001:db8:3333:4444:5555:6666::".parse().unwrap()),
        "2001-db8-3333-4444-5555-6666--0"
    );
    assert_eq!(
        Name::parse("4.3.2.1.in-addr.arpa.")
            .unwrap()
            .reverse_address(),
        Some("1.2.3.4".parse().unwrap())
    );
    assert_eq!(
        Name::parse("3.2.1.in-addr.arpa.")
            .unwrap()
            .reverse_address(),
        None
    );
    let z = Name::parse("cluster.local.").unwrap();
    let r = parse_request(
        &Name::parse("_http._tcp.svc1.testns.svc.cluster.local.").unwrap(),
        &z,
        false,
        false,
    )
    .unwrap();
    assert_eq!(
        (
            r.port.as_str(),
            r.protocol.as_str(),
            r.service.as_str(),
            r.namespace.as_str()
        ),
        ("http", "tcp", "svc1", "testns")
    );
    let r = parse_request(
        &Name::parse("eu-west.1a.pin._zone.db.ns.svc.cluster.local.").unwrap(),
        &z,
        false,
        true,
    )
    .unwrap();
    assert_eq!(r.zone, "eu-west.1a");
    assert!(parse_request(
        &Name::parse("eu.pin._zone.db.ns.svc.cluster.local.").unwrap(),
        &z,
        false,
        false
    )
    .is_err());
    // Multicluster zones: two labels left of the service are <endpoint>.<cluster>, unless
    // either starts with "_"; zonal names are not defined there.
    let mc = |n: &str| parse_request(&Name::parse(n).unwrap(), &z, true, true);
    let r = mc("DB-0.East.db.ns.svc.cluster.local.").unwrap();
    assert_eq!(
        (r.endpoint.as_str(), r.cluster.as_str(), r.port.as_str()),
        ("db-0", "east", "")
    );
    let r = mc("_pg._tcp.db.ns.svc.cluster.local.").unwrap();
    assert_eq!(
        (r.port.as_str(), r.protocol.as_str(), r.cluster.as_str()),
        ("pg", "tcp", "")
    );
    let r = mc("pg._tcp.db.ns.svc.cluster.local.").unwrap();
    assert_eq!((r.port.as_str(), r.protocol.as_str()), ("pg", "tcp"));
    let r = mc("_pg.tcp.db.ns.svc.cluster.local.").unwrap();
    assert_eq!((r.port.as_str(), r.protocol.as_str()), ("pg", "tcp"));
    assert!(mc("eu.pin._zone.db.ns.svc.cluster.local.").is_err());
    assert!(mc("a.b.c.db.ns.svc.cluster.local.").is_err());
}

fn parse_err(body: &str) -> String {
    let text = format!("cluster.local {{\n kubernetes {{\n{body}\n }}\n}}\n");
    parse(&directive(&text), &["cluster.local.".to_string()])
        .expect_err("must fail")
        .to_string()
}

#[test]
fn setup_options() {
    let c = cfg_from("endpoint http://127.0.0.1:8080\n tls a b c\n namespaces a b\n labels app=x,env in (a, b)\n pods verified\n endpoint_pod_names\n ttl 0\n fallthrough in-addr.arpa\n ignore empty_service\n zonal\n startup_timeout 1m30s\n apiserver_qps 2.5\n apiserver_burst 7\n apiserver_max_inflight 3\n snapshot /tmp/x.json");
    assert_eq!(c.zones.len(), 4, "{:?}", c.zones);
    assert_eq!(c.primary_zone().to_string(), "cluster.local.");
    assert!(
        matches!(&c.source, DataSource::Api(sextant_kube::ClientConfig::Endpoint { url, tls: Some(_) }) if url == "http://127.0.0.1:8080")
    );
    assert_eq!(c.namespaces.len(), 2);
    assert_eq!(c.labels.as_deref(), Some("app=x,env in (a, b)"));
    assert_eq!(c.pods, PodsMode::Verified);
    assert!(c.endpoint_pod_names && c.ignore_empty_service && c.zonal);
    assert_eq!(c.ttl, 0);
    assert_eq!(c.startup_timeout, std::time::Duration::from_secs(90));
    assert_eq!(
        (c.limits.qps, c.limits.burst, c.limits.max_inflight),
        (2.5, 7, 3)
    );
    assert!(c.fall.through(&Name::parse("1.in-addr.arpa.").unwrap()));
    assert!(!c.fall.through(&Name::parse("x.cluster.local.").unwrap()));
    let c = cfg_from("kubeconfig /k ctx\n endpoint http://x");
    assert!(
        matches!(&c.source, DataSource::Api(sextant_kube::ClientConfig::Kubeconfig { context: Some(x), .. }) if x == "ctx")
    );
    let c = cfg_from("");
    assert_eq!(
        c.source,
        DataSource::Api(sextant_kube::ClientConfig::InCluster)
    );
    assert!(c.multicluster.is_empty());
    // As in CoreDNS, a bare `multicluster` names no zone (not the block's).
    assert!(cfg_from("multicluster").multicluster.is_empty());
    let c = cfg_from("multicluster Cluster.Local. ip6.arpa");
    assert_eq!(
        c.multicluster,
        vec![
            Name::parse("cluster.local.").unwrap(),
            Name::parse("ip6.arpa.").unwrap()
        ]
    );
    assert!(super::watch_options(&c).multicluster);
    assert!(!super::watch_options(&cfg_from("")).multicluster);
    assert_eq!((c.ttl, c.startup_timeout.as_secs()), (5, 5));
}

#[test]
fn setup_errors() {
    assert_eq!(
        parse_err("ttl 3601"),
        "Corefile:3:5: ttl: ttl must be in range [0, 3600]: 3601"
    );
    assert_eq!(
        parse_err("ttl -1"),
        "Corefile:3:5: ttl: ttl must be in range [0, 3600]: -1"
    );
    assert_eq!(
        parse_err("ttl"),
        "Corefile:3:1: ttl: wrong argument count: expected at least 1, got 0"
    );
    assert_eq!(
        parse_err("upstream"),
        "Corefile:3:1: upstream: unknown property 'upstream'"
    );
    assert_eq!(
        parse_err("resyncperiod 30s"),
        "Corefile:3:1: resyncperiod: unknown property 'resyncperiod'"
    );
    assert_eq!(
        parse_err("transfer to *"),
        "Corefile:3:1: transfer: unknown property 'transfer'"
    );
    assert_eq!(parse_err("pods bogus"), "Corefile:3:6: pods: wrong value for pods: bogus,  must be one of: disabled, verified, insecure");
    assert_eq!(
        parse_err("namespaces a\nnamespace_labels x=y"),
        "Corefile:2:2: kubernetes: namespaces and namespace_labels cannot both be set"
    );
    assert_eq!(
        parse_err("zonal\nnoendpoints"),
        "Corefile:2:2: kubernetes: zonal requires the endpoint cache; remove noendpoints"
    );
    assert_eq!(
        parse_err("ignore foo"),
        "Corefile:3:8: ignore: unable to parse ignore value: 'foo'"
    );
    assert_eq!(
        parse_err("tls a b"),
        "Corefile:3:1: tls: wrong argument count: expected 3, got 2"
    );
    assert_eq!(
        parse_err("kubeconfig a b c"),
        "Corefile:3:16: kubeconfig: wrong argument count: expected 1 to 2, got 3"
    );
    assert_eq!(parse_err("startup_timeout 5"), "Corefile:3:17: startup_timeout: failed to parse startup_timeout: 5, time: invalid duration \"5\"");
    assert_eq!(
        parse_err("apiserver_qps -1"),
        "Corefile:3:15: apiserver_qps: apiserver_qps must be >= 0"
    );
    assert_eq!(
        parse_err("apiserver_burst x"),
        "Corefile:3:17: apiserver_burst: invalid apiserver_burst \"x\""
    );
    assert_eq!(
        parse_err("apiserver_max_inflight -2"),
        "Corefile:3:24: apiserver_max_inflight: apiserver_max_inflight must be >= 0"
    );
    assert_eq!(
        parse_err("noendpoints x"),
        "Corefile:3:13: noendpoints: wrong argument count: expected 0, got 1"
    );
    assert_eq!(
        parse_err("multicluster clusterset.local"),
        "Corefile:3:14: multicluster: is not authoritative for the multicluster zone clusterset.local. (authoritative zones: [cluster.local.])"
    );
    assert!(parse_err("labels a in (b").contains("unable to parse label selector value"));
    assert_eq!(
        parse_err("manifests /nonexistent/x.yaml"),
        "Corefile:3:11: manifests: manifests: /nonexistent/x.yaml: no such file"
    );
    // At least one forward zone.
    let cf = parse_str(
        "Corefile",
        "in-addr.arpa {\n kubernetes 10.0.0.0/8\n}\n",
        std::path::Path::new("."),
    )
    .unwrap();
    assert_eq!(
        parse(&cf.blocks[0].directives[0], &["in-addr.arpa.".into()])
            .unwrap_err()
            .to_string(),
        "Corefile:2:2: kubernetes: non-reverse zone name must be used"
    );
}
