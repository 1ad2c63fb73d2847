//! End-to-end tests of the `kubernetes` plugin's `multicluster ZONES` option (the Multi-Cluster
//! Services API): ServiceImports and their EndpointSlices served by the fake API server, answered
//! under `clusterset.local` over UDP and TCP (ClusterSetIP and headless imports, SRV, NXDOMAIN
//! and NODATA, AXFR through `transfer`), changes through the API reflected within the watch
//! delay, no MCS watch without the option, and bad options failing at start with
//! file:line:column. The real binary, all on 127.0.0.1.
//! With `COREDNS_BIN` set, every answer (and the AXFR) is also compared with the real CoreDNS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_fakeapi::{
    endpoint, mc_endpoint_slice, namespace, service, service_import, FakeApi, Kind,
};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(5);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Records with their whitespace collapsed and the SOA serial (a modification time) masked.
fn norm(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| {
            let mut f: Vec<&str> = s.split_whitespace().collect();
            if f.get(3) == Some(&"SOA") && f.len() >= 7 {
                f[6] = "SERIAL";
            }
            f.join(" ")
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// (rcode, flags, answers, authority, additional), the answer and additional sections sorted
/// (their order is not defined), over UDP and TCP alike.
type Whole = (String, String, Vec<String>, Vec<String>, Vec<String>);

fn whole(a: SocketAddr, name: &str, t: RecordType) -> Whole {
    let q = Query::new(name, t);
    let u = udp(a, &q, T).unwrap_or_else(|e| panic!("{name} {t}: {e}"));
    let c = tcp(a, &q, T).unwrap_or_else(|e| panic!("{name} {t}: {e}"));
    let w = |r: &Reply| {
        (
            r.rcode_name(),
            r.flags(),
            sorted(norm(r.answers())),
            norm(r.authority()),
            sorted(norm(r.additional())),
        )
    };
    assert_eq!(w(&u), w(&c), "{name} {t}: UDP and TCP differ");
    assert_eq!(u.question().unwrap(), format!("{name} IN {t}"));
    w(&u)
}

const SOA: &str =
    "clusterset.local. 5 IN SOA ns.dns.clusterset.local. hostmaster.clusterset.local. SERIAL 7200 1800 86400 5";

/// Checks a whole reply: rcode, flags, answers, the SOA alone in authority when there is no
/// answer, additional records.
fn expect(a: SocketAddr, name: &str, t: RecordType, rcode: &str, answers: &[&str], extra: &[&str]) {
    let (rc, flags, ans, auth, add) = whole(a, name, t);
    assert_eq!(rc, rcode, "{name} {t}: {ans:?} {auth:?}");
    assert_eq!(flags, "qr,aa,rd", "{name} {t}");
    let want = |v: &[&str]| sorted(v.iter().map(|s| s.to_string()).collect());
    assert_eq!(ans, want(answers), "{name} {t}");
    if answers.is_empty() {
        assert_eq!(auth, vec![SOA.to_string()], "{name} {t}");
    } else {
        assert!(auth.is_empty(), "{name} {t}: {auth:?}");
    }
    assert_eq!(add, want(extra), "{name} {t}");
}

/// Polls over UDP until the rcode and the (sorted) answers are the wanted ones, or fails
/// after `within`.
fn wait_for(
    a: SocketAddr,
    name: &str,
    t: RecordType,
    rcode: &str,
    want: &[&str],
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    let deadline = t0 + within;
    let want = sorted(want.iter().map(|s| s.to_string()).collect());
    loop {
        let r = udp(a, &Query::new(name, t), T).expect("reply");
        let got = sorted(norm(r.answers()));
        if r.rcode_name() == rcode && got == want {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{name} {t}: got {} {got:?}, want {rcode} {want:?}",
            r.rcode_name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two imported services seen from cluster "east" and "west": `web` with ClusterSetIPs (and
/// one slice, for endpoint names), `db` headless; a local service `web` with another address
/// in cluster.local.
fn cluster(rt: &tokio::runtime::Runtime) -> FakeApi {
    let api = rt.block_on(FakeApi::start()).expect("fake api");
    for ns in ["default", "shop"] {
        api.apply(namespace(ns)).unwrap();
    }
    api.apply(
        service("shop", "web")
            .cluster_ip("10.96.0.5")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.apply(
        service_import("shop", "web")
            .ip("10.200.0.5")
            .port("http", 80, "TCP")
            .port("dns", 53, "UDP"),
    )
    .unwrap();
    api.apply(
        mc_endpoint_slice("shop", "web-east", "web", "east")
            .endpoint(endpoint("10.1.1.1").hostname("web-0"))
            .port("http", 8080, "TCP"),
    )
    .unwrap();
    api.apply(
        service_import("shop", "db")
            .headless()
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    api.apply(
        mc_endpoint_slice("shop", "db-east", "db", "east")
            .endpoint(endpoint("10.1.0.1").hostname("db-0"))
            .endpoint(endpoint("10.1.0.2"))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    api.apply(
        mc_endpoint_slice("shop", "db-west", "db", "west")
            .endpoint(endpoint("10.2.0.1").hostname("db-0"))
            .endpoint(endpoint("10.2.0.9").ready(Some(false)))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    api
}

fn corefile(port: u16, api: &FakeApi) -> String {
    format!(
        ".:{port} {{\n  kubernetes cluster.local clusterset.local in-addr.arpa {{\n    endpoint {}\n    multicluster clusterset.local\n  }}\n  transfer clusterset.local {{\n    to *\n  }}\n}}\n",
        api.url()
    )
}

fn start(binary: &Path, cf: &str, port: u16) -> Sextant {
    let mut s = Sextant::builder(binary, cf).start();
    s.wait_dns(addr(port), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", s.output()));
    // The first sync is visible.
    let deadline = Instant::now() + Duration::from_secs(15);
    while udp(
        addr(port),
        &Query::new("db.shop.svc.clusterset.local.", RecordType::A),
        T,
    )
    .map(|r| r.answers().is_empty())
    .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "no data\n{}", s.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn axfr(a: SocketAddr, zone: &str) -> Vec<String> {
    let mut c = TcpConn::connect(a, T).unwrap();
    c.send_query(&Query::new(zone, RecordType::AXFR)).unwrap();
    let mut out = Vec::new();
    loop {
        let r = c.recv_reply(T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        out.extend(norm(r.answers()));
        if out.len() > 1 && out.iter().filter(|s| s.contains(" SOA ")).count() >= 2 {
            return out;
        }
    }
}

/// An AXFR with its records between the two SOAs sorted (the first and last stay put).
fn xfr_set(mut v: Vec<String>) -> Vec<String> {
    let n = v.len();
    if n > 2 {
        v[1..n - 1].sort();
    }
    v
}

/// The questions both servers are asked.
const QUESTIONS: &[(&str, RecordType)] = &[
    ("web.shop.svc.clusterset.local.", RecordType::A),
    ("web.shop.svc.clusterset.local.", RecordType::AAAA),
    ("web.shop.svc.clusterset.local.", RecordType::SRV),
    ("web.shop.svc.clusterset.local.", RecordType::TXT),
    ("web.shop.svc.clusterset.local.", RecordType::PTR),
    ("_http._tcp.web.shop.svc.clusterset.local.", RecordType::SRV),
    ("_dns._udp.web.shop.svc.clusterset.local.", RecordType::SRV),
    ("_http._udp.web.shop.svc.clusterset.local.", RecordType::SRV),
    ("web-0.east.web.shop.svc.clusterset.local.", RecordType::A),
    ("web-0.west.web.shop.svc.clusterset.local.", RecordType::A),
    ("db.shop.svc.clusterset.local.", RecordType::A),
    ("db.shop.svc.clusterset.local.", RecordType::SRV),
    ("_pg._tcp.db.shop.svc.clusterset.local.", RecordType::SRV),
    ("db-0.east.db.shop.svc.clusterset.local.", RecordType::A),
    ("db-0.west.db.shop.svc.clusterset.local.", RecordType::A),
    ("10-1-0-2.east.db.shop.svc.clusterset.local.", RecordType::A),
    ("10-2-0-9.west.db.shop.svc.clusterset.local.", RecordType::A),
    ("db-0.db.shop.svc.clusterset.local.", RecordType::A),
    ("db-0.north.db.shop.svc.clusterset.local.", RecordType::A),
    ("db-0.east.db.shop.svc.clusterset.local.", RecordType::AAAA),
    ("nosuch.shop.svc.clusterset.local.", RecordType::A),
    ("shop.svc.clusterset.local.", RecordType::A),
    ("svc.clusterset.local.", RecordType::A),
    ("nosuch.svc.clusterset.local.", RecordType::A),
    ("x.y.db-0.east.db.shop.svc.clusterset.local.", RecordType::A),
    ("clusterset.local.", RecordType::SOA),
    ("clusterset.local.", RecordType::A),
    ("web.shop.svc.cluster.local.", RecordType::A),
    ("db.shop.svc.cluster.local.", RecordType::A),
    ("5.0.200.10.in-addr.arpa.", RecordType::PTR),
    // Not "1.0.1.10.in-addr.arpa." (an MCS endpoint address): CoreDNS's EndpointSlice watch
    // also indexes MCS slices, under an empty service name, and the PTR it builds
    // ("db-0..shop.svc.cluster.local.") cannot be packed: it sends no reply at all. Sextant
    // answers NXDOMAIN (checked in `clusterset_answers`).
    ("5.0.96.10.in-addr.arpa.", RecordType::PTR),
];

#[test]
fn clusterset_answers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let port = free_port();
    let _s = start(bin(), &corefile(port, &api), port);
    let a = addr(port);
    use RecordType::*;
    // ClusterSetIP import: its ClusterSetIPs, never the local service's ClusterIP.
    expect(
        a,
        "web.shop.svc.clusterset.local.",
        A,
        "NOERROR",
        &["web.shop.svc.clusterset.local. 5 IN A 10.200.0.5"],
        &[],
    );
    expect(
        a,
        "web.shop.svc.clusterset.local.",
        AAAA,
        "NOERROR",
        &[],
        &[],
    );
    expect(
        a,
        "web.shop.svc.clusterset.local.",
        TXT,
        "NOERROR",
        &[],
        &[],
    );
    expect(
        a,
        "web.shop.svc.clusterset.local.",
        SRV,
        "NOERROR",
        &[
            "web.shop.svc.clusterset.local. 5 IN SRV 0 50 80 web.shop.svc.clusterset.local.",
            "web.shop.svc.clusterset.local. 5 IN SRV 0 50 53 web.shop.svc.clusterset.local.",
        ],
        &["web.shop.svc.clusterset.local. 5 IN A 10.200.0.5"],
    );
    expect(a, "_dns._udp.web.shop.svc.clusterset.local.", SRV, "NOERROR",
        &["_dns._udp.web.shop.svc.clusterset.local. 5 IN SRV 0 100 53 web.shop.svc.clusterset.local."],
        &["web.shop.svc.clusterset.local. 5 IN A 10.200.0.5"]);
    expect(
        a,
        "_http._udp.web.shop.svc.clusterset.local.",
        SRV,
        "NXDOMAIN",
        &[],
        &[],
    );
    // An endpoint of a ClusterSetIP import, by hostname and cluster id.
    expect(
        a,
        "web-0.east.web.shop.svc.clusterset.local.",
        A,
        "NOERROR",
        &["web-0.east.web.shop.svc.clusterset.local. 5 IN A 10.1.1.1"],
        &[],
    );
    expect(
        a,
        "web-0.west.web.shop.svc.clusterset.local.",
        A,
        "NXDOMAIN",
        &[],
        &[],
    );
    // Headless import: every ready endpoint of every cluster.
    expect(
        a,
        "db.shop.svc.clusterset.local.",
        A,
        "NOERROR",
        &[
            "db.shop.svc.clusterset.local. 5 IN A 10.1.0.1",
            "db.shop.svc.clusterset.local. 5 IN A 10.1.0.2",
            "db.shop.svc.clusterset.local. 5 IN A 10.2.0.1",
        ],
        &[],
    );
    expect(a, "_pg._tcp.db.shop.svc.clusterset.local.", SRV, "NOERROR",
        &[
            "_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 33 5432 db-0.east.db.shop.svc.clusterset.local.",
            "_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 33 5432 10-1-0-2.east.db.shop.svc.clusterset.local.",
            "_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 33 5432 db-0.west.db.shop.svc.clusterset.local.",
        ],
        &[
            "db-0.east.db.shop.svc.clusterset.local. 5 IN A 10.1.0.1",
            "10-1-0-2.east.db.shop.svc.clusterset.local. 5 IN A 10.1.0.2",
            "db-0.west.db.shop.svc.clusterset.local. 5 IN A 10.2.0.1",
        ]);
    // <hostname>.<clusterid>.<svc>.<ns>.svc.<zone>
    expect(
        a,
        "db-0.east.db.shop.svc.clusterset.local.",
        A,
        "NOERROR",
        &["db-0.east.db.shop.svc.clusterset.local. 5 IN A 10.1.0.1"],
        &[],
    );
    expect(
        a,
        "db-0.west.db.shop.svc.clusterset.local.",
        A,
        "NOERROR",
        &["db-0.west.db.shop.svc.clusterset.local. 5 IN A 10.2.0.1"],
        &[],
    );
    expect(
        a,
        "10-1-0-2.east.db.shop.svc.clusterset.local.",
        A,
        "NOERROR",
        &["10-1-0-2.east.db.shop.svc.clusterset.local. 5 IN A 10.1.0.2"],
        &[],
    );
    expect(
        a,
        "db-0.east.db.shop.svc.clusterset.local.",
        AAAA,
        "NOERROR",
        &[],
        &[],
    );
    // Not ready, unknown cluster, no cluster label: NXDOMAIN.
    expect(
        a,
        "10-2-0-9.west.db.shop.svc.clusterset.local.",
        A,
        "NXDOMAIN",
        &[],
        &[],
    );
    expect(
        a,
        "db-0.north.db.shop.svc.clusterset.local.",
        A,
        "NXDOMAIN",
        &[],
        &[],
    );
    expect(
        a,
        "db-0.db.shop.svc.clusterset.local.",
        A,
        "NXDOMAIN",
        &[],
        &[],
    );
    expect(
        a,
        "nosuch.shop.svc.clusterset.local.",
        A,
        "NXDOMAIN",
        &[],
        &[],
    );
    expect(
        a,
        "x.y.db-0.east.db.shop.svc.clusterset.local.",
        A,
        "NXDOMAIN",
        &[],
        &[],
    );
    // Namespace and apex names: NODATA.
    expect(a, "shop.svc.clusterset.local.", A, "NOERROR", &[], &[]);
    expect(a, "nosuch.svc.clusterset.local.", A, "NXDOMAIN", &[], &[]);
    expect(a, "clusterset.local.", A, "NOERROR", &[], &[]);
    // The local zone is untouched: the local service, and no import there.
    let (rc, _, ans, _, _) = whole(a, "web.shop.svc.cluster.local.", A);
    assert_eq!(
        (rc.as_str(), ans),
        (
            "NOERROR",
            vec!["web.shop.svc.cluster.local. 5 IN A 10.96.0.5".to_string()]
        )
    );
    let (rc, _, ans, _, _) = whole(a, "db.shop.svc.cluster.local.", A);
    assert_eq!((rc.as_str(), ans.len()), ("NXDOMAIN", 0));
    // AXFR through transfer: the imports by name, like services (the NS glue, this host's own
    // addresses, left out). As in CoreDNS, headless endpoints are named without the cluster.
    let xfr: Vec<String> = axfr(a, "clusterset.local.")
        .into_iter()
        .filter(|r| !r.starts_with("ns.dns.clusterset.local. 0 IN"))
        .collect();
    let want = [
        crate::SOA,
        "clusterset.local. 5 IN NS ns.dns.clusterset.local.",
        "db.shop.svc.clusterset.local. 5 IN A 10.1.0.1",
        "db-0.db.shop.svc.clusterset.local. 5 IN A 10.1.0.1",
        "_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 50 5432 db-0.db.shop.svc.clusterset.local.",
        "db.shop.svc.clusterset.local. 5 IN A 10.1.0.2",
        "10-1-0-2.db.shop.svc.clusterset.local. 5 IN A 10.1.0.2",
        "_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 50 5432 10-1-0-2.db.shop.svc.clusterset.local.",
        "db.shop.svc.clusterset.local. 5 IN A 10.2.0.1",
        "db-0.db.shop.svc.clusterset.local. 5 IN A 10.2.0.1",
        "_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 100 5432 db-0.db.shop.svc.clusterset.local.",
        "web.shop.svc.clusterset.local. 5 IN A 10.200.0.5",
        "web.shop.svc.clusterset.local. 5 IN SRV 0 100 80 web.shop.svc.clusterset.local.",
        "_http._tcp.web.shop.svc.clusterset.local. 5 IN SRV 0 100 80 web.shop.svc.clusterset.local.",
        "web.shop.svc.clusterset.local. 5 IN SRV 0 100 53 web.shop.svc.clusterset.local.",
        "_dns._udp.web.shop.svc.clusterset.local. 5 IN SRV 0 100 53 web.shop.svc.clusterset.local.",
        crate::SOA,
    ];
    assert_eq!(xfr, want);
    // No PTR from imports (ClusterSetIPs, MCS endpoints): the local cluster's only.
    for ptr in ["5.0.200.10.in-addr.arpa.", "1.0.1.10.in-addr.arpa."] {
        let (rc, _, ans, _, _) = whole(a, ptr, PTR);
        assert_eq!((rc.as_str(), ans.len()), ("NXDOMAIN", 0), "{ptr}");
    }
    let (rc, _, ans, _, _) = whole(a, "5.0.96.10.in-addr.arpa.", PTR);
    assert_eq!(
        (rc.as_str(), ans),
        (
            "NOERROR",
            vec!["5.0.96.10.in-addr.arpa. 5 IN PTR web.shop.svc.cluster.local.".to_string()]
        )
    );
}

/// The SOA serial (unmasked) of `zone`.
fn serial(a: SocketAddr, zone: &str) -> u32 {
    let r = udp(a, &Query::new(zone, RecordType::SOA), T).unwrap();
    let soa = r.answers().first().cloned().unwrap_or_default();
    soa.split_whitespace()
        .nth(6)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{soa}"))
}

/// As in CoreDNS, a multicluster zone's SOA serial is the time of the last change to imports
/// or their slices, and the cluster zone's serial ignores those.
#[test]
fn multicluster_zone_has_its_own_serial() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let port = free_port();
    let _s = start(bin(), &corefile(port, &api), port);
    let a = addr(port);
    let (local, mc) = (serial(a, "cluster.local."), serial(a, "clusterset.local."));
    assert!(local > 0 && mc > 0, "{local} {mc}");
    // A second passes; a local service changes: only cluster.local's serial moves.
    std::thread::sleep(Duration::from_millis(1100));
    api.apply(
        service("shop", "web")
            .cluster_ip("10.96.0.6")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    wait_for(
        a,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 5 IN A 10.96.0.6"],
        T,
    );
    let local2 = serial(a, "cluster.local.");
    assert!(local2 > local, "{local} {local2}");
    assert_eq!(serial(a, "clusterset.local."), mc);
    // An import changes: only clusterset.local's serial moves.
    std::thread::sleep(Duration::from_millis(1100));
    api.apply(
        service_import("shop", "web")
            .ip("10.200.0.6")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    wait_for(
        a,
        "web.shop.svc.clusterset.local.",
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.clusterset.local. 5 IN A 10.200.0.6"],
        T,
    );
    assert!(serial(a, "clusterset.local.") > mc);
    assert_eq!(serial(a, "cluster.local."), local2);
}

/// The same cluster and Corefile on the real CoreDNS: every reply and the AXFR must be the
/// same.
#[test]
fn answers_match_coredns() {
    let Some(coredns) = coredns_bin() else {
        eprintln!("skipping answers_match_coredns: COREDNS_BIN is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let (p1, p2) = (free_port(), free_port());
    let _ours = start(bin(), &corefile(p1, &api), p1);
    let _theirs = start(&coredns, &corefile(p2, &api), p2);
    let mut diffs = Vec::new();
    for (name, t) in QUESTIONS {
        let (ours, theirs) = (whole(addr(p1), name, *t), whole(addr(p2), name, *t));
        if ours != theirs {
            diffs.push(format!(
                "{name} {t}:\n  sextant {ours:?}\n  coredns {theirs:?}"
            ));
        }
    }
    // CoreDNS lists an import's slices in its informer index's (map) order, which varies from
    // run to run: the records are compared as sets, the SOA framing as is.
    let (ours, theirs) = (
        xfr_set(axfr(addr(p1), "clusterset.local.")),
        xfr_set(axfr(addr(p2), "clusterset.local.")),
    );
    // Not a vacuous match: the real CoreDNS served the imports (its AXFR leaves the cluster
    // id out of endpoint names; so does Sextant's).
    assert!(
        theirs.contains(&"db-0.db.shop.svc.clusterset.local. 5 IN A 10.2.0.1".to_string()),
        "{theirs:#?}"
    );
    if ours != theirs {
        diffs.push(format!("AXFR:\n  sextant {ours:#?}\n  coredns {theirs:#?}"));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Adding and deleting ServiceImports, changing an import's ClusterSetIP and an MCS slice's
/// endpoints through the API: the answers follow within the watch delay, through a `cache 30`
/// in front (the coherent cache drops what changed under the multicluster zone too).
#[test]
fn changes_through_the_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  cache 30\n  kubernetes cluster.local clusterset.local {{\n    endpoint {}\n    multicluster clusterset.local\n    ttl 30\n  }}\n}}\n",
        api.url()
    );
    let _s = start(bin(), &cf, port);
    let a = addr(port);
    let within = Duration::from_secs(2);
    let mut delays = Vec::new();
    use RecordType::*;
    let cache = "cache.shop.svc.clusterset.local.";
    // Cached NXDOMAIN, then the import appears.
    wait_for(a, cache, A, "NXDOMAIN", &[], T);
    api.apply(
        service_import("shop", "cache")
            .ip("10.200.0.9")
            .port("redis", 6379, "TCP"),
    )
    .unwrap();
    delays.push(wait_for(
        a,
        cache,
        A,
        "NOERROR",
        &["cache.shop.svc.clusterset.local. 30 IN A 10.200.0.9"],
        within,
    ));
    // A new ClusterSetIP.
    api.apply(
        service_import("shop", "cache")
            .ip("10.200.0.10")
            .port("redis", 6379, "TCP"),
    )
    .unwrap();
    delays.push(wait_for(
        a,
        cache,
        A,
        "NOERROR",
        &["cache.shop.svc.clusterset.local. 30 IN A 10.200.0.10"],
        within,
    ));
    // An endpoint added to cluster west's slice of the headless import.
    let db = "db.shop.svc.clusterset.local.";
    wait_for(
        a,
        db,
        A,
        "NOERROR",
        &[
            "db.shop.svc.clusterset.local. 30 IN A 10.1.0.1",
            "db.shop.svc.clusterset.local. 30 IN A 10.1.0.2",
            "db.shop.svc.clusterset.local. 30 IN A 10.2.0.1",
        ],
        T,
    );
    let db1 = "db-1.west.db.shop.svc.clusterset.local.";
    wait_for(a, db1, A, "NXDOMAIN", &[], T);
    api.apply(
        mc_endpoint_slice("shop", "db-west", "db", "west")
            .endpoint(endpoint("10.2.0.1").hostname("db-0"))
            .endpoint(endpoint("10.2.0.2").hostname("db-1"))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    delays.push(wait_for(
        a,
        db1,
        A,
        "NOERROR",
        &["db-1.west.db.shop.svc.clusterset.local. 30 IN A 10.2.0.2"],
        within,
    ));
    // Cluster east's slice goes away.
    assert!(api.delete(Kind::EndpointSlice, "shop", "db-east"));
    delays.push(wait_for(
        a,
        db,
        A,
        "NOERROR",
        &[
            "db.shop.svc.clusterset.local. 30 IN A 10.2.0.1",
            "db.shop.svc.clusterset.local. 30 IN A 10.2.0.2",
        ],
        within,
    ));
    // The import is deleted: NXDOMAIN, while the local service of that name still answers.
    let web = "web.shop.svc.clusterset.local.";
    wait_for(
        a,
        web,
        A,
        "NOERROR",
        &["web.shop.svc.clusterset.local. 30 IN A 10.200.0.5"],
        T,
    );
    assert!(api.delete(Kind::ServiceImport, "shop", "web"));
    delays.push(wait_for(a, web, A, "NXDOMAIN", &[], within));
    wait_for(
        a,
        "web.shop.svc.cluster.local.",
        A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 30 IN A 10.96.0.5"],
        T,
    );
    // Watch delay per change (import added, ClusterSetIP changed, endpoint added, slice
    // deleted, import deleted), through the cache.
    eprintln!("multicluster change -> answer delays: {delays:?}");
}

/// The MCS API is watched only with the option: without it, no ServiceImport request and one
/// EndpointSlice watch; with it, one ServiceImport watch and a second EndpointSlice watch.
#[test]
fn mcs_watched_only_with_the_option() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  kubernetes cluster.local clusterset.local {{\n    endpoint {}\n  }}\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(15)).unwrap();
    wait_for(
        addr(port),
        "web.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 5 IN A 10.96.0.5"],
        T,
    );
    // Without the option the imports are not answered: clusterset.local is a plain zone.
    expect(
        addr(port),
        "db.shop.svc.clusterset.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
        &[],
    );
    assert_eq!(api.requests("list", "serviceimports"), 0);
    assert_eq!(api.requests("watch", "serviceimports"), 0);
    assert_eq!(api.requests("list", "endpointslices"), 1);
    drop(s);

    api.reset_counters();
    let port = free_port();
    let mport = free_port();
    let cf = corefile(port, &api).replace(
        "  transfer",
        &format!("  prometheus 127.0.0.1:{mport}\n  transfer"),
    );
    let _s = start(bin(), &cf, port);
    let deadline = Instant::now() + T;
    while api.requests("watch", "serviceimports") < 1 || api.requests("watch", "endpointslices") < 2
    {
        assert!(Instant::now() < deadline, "watches not opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(api.requests("list", "serviceimports"), 1);
    assert_eq!(api.requests("list", "endpointslices"), 2);
    // The index counts them: 2 imports, 4 ready MCS endpoint addresses.
    let (code, body) = http_get(addr(mport), "/metrics", T).unwrap();
    assert_eq!(code, 200);
    for line in [
        "sextant_kubernetes_indexed_objects{kind=\"serviceimports\"} 2",
        "sextant_kubernetes_indexed_objects{kind=\"multicluster_endpoints\"} 4",
    ] {
        assert!(body.contains(line), "{line}\n{body}");
    }
}

/// A bad `multicluster` option fails at start with file:line:column; a bare one names no zone.
#[test]
fn bad_option_is_a_config_error() {
    let (code, out, err) = Sextant::check(
        bin(),
        ".:1053 {\n  kubernetes cluster.local example.org {\n    multicluster clusterset.local\n  }\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":3:18: multicluster: is not authoritative for the multicluster zone clusterset.local. (authoritative zones: [cluster.local. example.org.])"),
        "{out}{err}"
    );
    // A sub-zone of a plugin zone is not one of them either.
    let (code, out, err) = Sextant::check(
        bin(),
        ".:1053 {\n  kubernetes cluster.local {\n    multicluster cluster.local set.cluster.local\n  }\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":3:32: multicluster: is not authoritative for the multicluster zone set.cluster.local."),
        "{out}{err}"
    );
    let (code, out, err) = Sextant::check(
        bin(),
        ".:1053 {\n  kubernetes cluster.local {\n    multicluster\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
}

/// The other options in a multicluster zone, against the real CoreDNS: `ttl`,
/// `ignore empty_service`, `endpoint_pod_names`, `namespaces`, `pods insecure`, `fallthrough`
/// to an upstream;
/// imports without endpoints, without ports, with an IPv6 ClusterSetIP and an unnamed port.
#[test]
fn options_match_coredns() {
    let Some(coredns) = coredns_bin() else {
        eprintln!("skipping options_match_coredns: COREDNS_BIN is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    api.apply(namespace("other")).unwrap();
    api.apply(
        service_import("other", "web")
            .ip("10.200.1.5")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.apply(
        service_import("shop", "empty")
            .ip("10.200.0.7")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.apply(service_import("shop", "noports").ip("10.200.0.8"))
        .unwrap();
    api.apply(
        service_import("shop", "v6")
            .ip("fd00:200::5")
            .port("", 80, "TCP"),
    )
    .unwrap();
    api.apply(
        mc_endpoint_slice("shop", "v6-east", "v6", "east")
            .endpoint(endpoint("10.1.2.1").pod("v6-pod-0"))
            .port("", 80, "TCP"),
    )
    .unwrap();
    // A ClusterSetIP import whose IP is not allocated yet, with a slice.
    api.apply(service_import("shop", "noips").port("http", 80, "TCP"))
        .unwrap();
    api.apply(
        mc_endpoint_slice("shop", "noips-east", "noips", "east")
            .endpoint(endpoint("10.1.4.1").hostname("x-0"))
            .port("http", 80, "TCP"),
    )
    .unwrap();
    // A slice without the source-cluster label: its addresses answer the service name, and
    // `<hostname>.<svc>...` (no cluster label) names them.
    api.apply(
        service_import("shop", "nolabel")
            .headless()
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    api.apply(
        sextant_fakeapi::endpoint_slice("shop", "nolabel-x", "nolabel")
            .label("multicluster.kubernetes.io/service-name", "nolabel")
            .endpoint(endpoint("10.1.3.1").hostname("n-0"))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    let up = Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.99", req.name()))
            .action()
    })
    .unwrap();
    let cf = |port: u16| {
        format!(
            ".:{port} {{\n  kubernetes cluster.local clusterset.local {{\n    endpoint {}\n    multicluster clusterset.local\n    ttl 30\n    ignore empty_service\n    endpoint_pod_names\n    namespaces shop\n    pods insecure\n    fallthrough clusterset.local\n  }}\n  transfer clusterset.local {{\n    to *\n  }}\n  forward . {}\n}}\n",
            api.url(),
            up.addr()
        )
    };
    let (p1, p2) = (free_port(), free_port());
    let _ours = start(bin(), &cf(p1), p1);
    let _theirs = start(&coredns, &cf(p2), p2);
    let mut questions: Vec<(&str, RecordType)> = QUESTIONS.to_vec();
    questions.extend([
        ("web.other.svc.clusterset.local.", RecordType::A),
        ("empty.shop.svc.clusterset.local.", RecordType::A),
        ("noports.shop.svc.clusterset.local.", RecordType::A),
        ("v6.shop.svc.clusterset.local.", RecordType::AAAA),
        ("v6.shop.svc.clusterset.local.", RecordType::A),
        ("v6.shop.svc.clusterset.local.", RecordType::SRV),
        ("v6-pod-0.east.v6.shop.svc.clusterset.local.", RecordType::A),
        ("10-1-2-1.east.v6.shop.svc.clusterset.local.", RecordType::A),
        ("10-1-0-1.shop.pod.clusterset.local.", RecordType::A),
        ("10-1-0-1.other.pod.clusterset.local.", RecordType::A),
        ("dns-version.clusterset.local.", RecordType::TXT),
        ("nolabel.shop.svc.clusterset.local.", RecordType::A),
        ("noips.shop.svc.clusterset.local.", RecordType::A),
        ("noips.shop.svc.clusterset.local.", RecordType::SRV),
        ("x-0.east.noips.shop.svc.clusterset.local.", RecordType::A),
        ("n-0.nolabel.shop.svc.clusterset.local.", RecordType::A),
    ]);
    let mut diffs = Vec::new();
    for (name, t) in questions {
        let (ours, theirs) = (whole(addr(p1), name, t), whole(addr(p2), name, t));
        if ours != theirs {
            diffs.push(format!(
                "{name} {t}:\n  sextant {ours:?}\n  coredns {theirs:?}"
            ));
        }
    }
    // CoreDNS lists an import's slices in its informer index's (map) order, which varies from
    // run to run: the records are compared as sets, the SOA framing as is.
    let (ours, theirs) = (
        xfr_set(axfr(addr(p1), "clusterset.local.")),
        xfr_set(axfr(addr(p2), "clusterset.local.")),
    );
    if ours != theirs {
        diffs.push(format!("AXFR:\n  sextant {ours:#?}\n  coredns {theirs:#?}"));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A reload that turns the option on starts the MCS watches and answers the imports; a reload
/// with a zone the plugin is not authoritative for is refused and the running one goes on.
#[test]
fn reload_turns_multicluster_on() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let port = free_port();
    let plain = format!(
        ".:{port} {{\n  kubernetes cluster.local clusterset.local {{\n    endpoint {}\n  }}\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &plain);
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(15)).unwrap();
    let db = "db.shop.svc.clusterset.local.";
    let all = [
        "db.shop.svc.clusterset.local. 5 IN A 10.1.0.1",
        "db.shop.svc.clusterset.local. 5 IN A 10.1.0.2",
        "db.shop.svc.clusterset.local. 5 IN A 10.2.0.1",
    ];
    // Without the option clusterset.local is a plain cluster zone: the local service.
    let web = "web.shop.svc.clusterset.local.";
    wait_for(
        a,
        web,
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.clusterset.local. 5 IN A 10.96.0.5"],
        T,
    );
    wait_for(a, db, RecordType::A, "NXDOMAIN", &[], T);
    s.rewrite_corefile(&corefile(port, &api)).unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_nth_line("Reloading complete", 1, Duration::from_secs(10))
        .unwrap();
    wait_for(a, db, RecordType::A, "NOERROR", &all, T);
    wait_for(
        a,
        web,
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.clusterset.local. 5 IN A 10.200.0.5"],
        T,
    );
    assert_eq!(api.requests("list", "serviceimports"), 1);

    s.rewrite_corefile(&format!(
        ".:{port} {{\n  kubernetes cluster.local clusterset.local {{\n    endpoint {}\n    multicluster example.org\n  }}\n}}\n",
        api.url()
    ))
    .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line(
        "is not authoritative for the multicluster zone example.org.",
        Duration::from_secs(10),
    )
    .unwrap();
    wait_for(a, db, RecordType::A, "NOERROR", &all, T);
}
