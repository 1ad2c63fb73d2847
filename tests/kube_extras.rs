//! End-to-end tests of the `kubernetes` plugin's completions: `autopath @kubernetes` from the
//! client pod's namespace, the `snapshot` file serving last-known data after a restart during an
//! API outage, and recovery from compaction gaps (410 Gone) and skipped watch events through the
//! re-list. The real binary against the fake API server, all on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_fakeapi::{namespace, pod, service, FakeApi, Kind};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn norm(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The same query over UDP and TCP; both replies must agree, the UDP one is returned.
fn q(a: SocketAddr, name: &str, t: RecordType) -> Reply {
    let u = udp(a, &Query::new(name, t), T).expect("udp");
    let c = tcp(a, &Query::new(name, t), T).expect("tcp");
    assert_eq!(u.rcode_name(), c.rcode_name(), "{name} {t}");
    assert_eq!(norm(u.answers()), norm(c.answers()), "{name} {t}");
    assert_eq!(norm(u.authority()), norm(c.authority()), "{name} {t}");
    u
}

/// Checks a whole reply: rcode, flags, question, answers in order, SOA authority when empty.
fn expect(a: SocketAddr, name: &str, t: RecordType, rcode: &str, answers: &[&str]) {
    let r = q(a, name, t);
    assert_eq!(r.rcode_name(), rcode, "{name} {t}: {:?}", r.message());
    assert_eq!(r.flags(), "qr,aa,rd", "{name} {t}");
    assert_eq!(r.question().unwrap(), format!("{name} IN {t}"));
    let want: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
    assert_eq!(norm(r.answers()), want, "{name} {t}");
    if answers.is_empty() {
        let auth = r.authority();
        assert_eq!(auth.len(), 1, "{name} {t}: SOA expected: {auth:?}");
        assert!(auth[0].contains("IN SOA ns.dns.cluster.local."), "{auth:?}");
    } else {
        assert!(r.authority().is_empty());
    }
}

/// Polls over UDP until the rcode and answers are the wanted ones, or fails after `within`.
fn wait_for(
    a: SocketAddr,
    name: &str,
    t: RecordType,
    rcode: &str,
    want: &[&str],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    loop {
        let r = udp(a, &Query::new(name, t), T).expect("reply");
        if r.rcode_name() == rcode && norm(r.answers()) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {t}: got {} {:?}, want {rcode} {want:?}",
            r.rcode_name(),
            r.answers()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(port: u16) -> String {
    let (code, body) = http_get(addr(port), "/metrics", T).expect("metrics");
    assert_eq!(code, 200);
    body
}

fn api_with(rt: &tokio::runtime::Runtime) -> FakeApi {
    let api = rt.block_on(FakeApi::start()).expect("fake api");
    for ns in ["default", "shop"] {
        api.apply(namespace(ns)).unwrap();
    }
    for (name, ip) in [("web", "10.96.3.3"), ("old", "10.96.4.4")] {
        api.apply(service("shop", name).cluster_ip(ip).port("http", 80, "TCP"))
            .unwrap();
    }
    api
}

#[test]
fn autopath_from_the_client_pods_namespace() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with(&rt);
    // The test client's own address is this pod's address.
    api.apply(pod("shop", "client-0").ip("127.0.0.1")).unwrap();
    // The upstream knows example.test only; NXDOMAIN for everything else.
    let up = Upstream::start(|req: &UpstreamRequest| {
        if req.name() == "example.test." {
            req.reply()
                .answer("example.test. 60 IN A 192.0.2.7")
                .action()
        } else {
            req.reply().rcode(ResponseCode::NXDomain).action()
        }
    })
    .unwrap();
    let (port, mport) = (free_port(), free_port());
    let core = format!(
        ".:{port} {{\n  autopath @kubernetes\n  prometheus 127.0.0.1:{mport}\n  kubernetes cluster.local {{\n    endpoint {}\n    pods verified\n  }}\n  forward . {}\n}}\n",
        api.url(),
        up.addr()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();

    // What a pod with ndots:5 sends first for "web.shop.svc.cluster.local": the first search
    // element appended. Found as the bare name, after the pod's own search path.
    let name = "web.shop.svc.cluster.local.shop.svc.cluster.local.";
    expect(
        a,
        name,
        RecordType::A,
        "NOERROR",
        &[
            "web.shop.svc.cluster.local.shop.svc.cluster.local. 5 IN CNAME web.shop.svc.cluster.local.",
            "web.shop.svc.cluster.local. 5 IN A 10.96.3.3",
        ],
    );
    // "web" from a pod in shop: found on the first try, no CNAME.
    expect(
        a,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 5 IN A 10.96.3.3"],
    );
    // An outside name: the bare name is answered through forward (not authoritative).
    for r in [
        udp(
            a,
            &Query::new("example.test.shop.svc.cluster.local.", RecordType::A),
            T,
        )
        .unwrap(),
        tcp(
            a,
            &Query::new("example.test.shop.svc.cluster.local.", RecordType::A),
            T,
        )
        .unwrap(),
    ] {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,rd"); // as the scripted upstream sent it
        assert_eq!(
            r.question().unwrap(),
            "example.test.shop.svc.cluster.local. IN A"
        );
        assert_eq!(
            norm(r.answers()),
            vec![
                "example.test.shop.svc.cluster.local. 60 IN CNAME example.test.",
                "example.test. 60 IN A 192.0.2.7",
            ]
        );
        assert!(r.authority().is_empty());
    }
    assert!(up.queries_for("example.test.") >= 2);
    // Nothing anywhere: the first try's NXDOMAIN as it was.
    expect(
        a,
        "nope.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
    );
    // Names below the first search element only: another namespace's search path is not used.
    expect(
        a,
        "web.other.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
    );
    // 2 successful walks over UDP and TCP (the first-try hit counts too, as in CoreDNS).
    let want = format!("coredns_autopath_success_total{{server=\"dns://:{port}\"}} 6");
    let body = metrics(mport);
    assert!(body.contains(&want), "{want} in\n{body}");

    // Once the client pod is gone, the client is not a pod: no autopath, plain NXDOMAIN.
    api.delete(Kind::Pod, "shop", "client-0");
    wait_for(
        a,
        name,
        RecordType::A,
        "NXDOMAIN",
        &[],
        Duration::from_secs(10),
    );
    expect(a, name, RecordType::A, "NXDOMAIN", &[]);
}

#[test]
fn autopath_needs_pods_verified() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with(&rt);
    api.apply(pod("shop", "client-0").ip("127.0.0.1")).unwrap();
    let port = free_port();
    let core = format!(
        ".:{port} {{\n  autopath @kubernetes\n  kubernetes cluster.local {{\n    endpoint {}\n    pods insecure\n  }}\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    expect(
        a,
        "web.shop.svc.cluster.local.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
    );
}

#[test]
fn snapshot_answers_after_restart_during_api_outage_then_converges() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with(&rt);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap.json");
    // startup_timeout 30s: a server that waited for an unreachable API would not answer soon.
    let core = |port: u16, ready: u16, m: u16| {
        format!(
            ".:{port} {{\n  ready 127.0.0.1:{ready}\n  prometheus 127.0.0.1:{m}\n  kubernetes cluster.local {{\n    endpoint {}\n    snapshot {}\n    startup_timeout 30s\n  }}\n}}\n",
            api.url(),
            snap.display()
        )
    };
    let (port, ready, m) = (free_port(), free_port(), free_port());
    let mut first = Sextant::start(bin(), &core(port, ready, m));
    let a = addr(port);
    first.wait_dns(a, Duration::from_secs(10)).unwrap();
    expect(
        a,
        "old.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["old.shop.svc.cluster.local. 5 IN A 10.96.4.4"],
    );
    assert!(metrics(m).contains("sextant_kubernetes_data_source{source=\"api\"} 1"));
    // Persisted once synced.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&snap).is_ok_and(|t| t.contains("\"old\"")) {
        assert!(Instant::now() < deadline, "snapshot not written");
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill();
    api.go_down();

    let (port, ready, m) = (free_port(), free_port(), free_port());
    let mut second = Sextant::start(bin(), &core(port, ready, m));
    let a = addr(port);
    let t0 = Instant::now();
    second.wait_dns(a, Duration::from_secs(15)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(15));
    second
        .wait_for_line("serving last-known data from snapshot", T)
        .unwrap();
    for (svc, ip) in [("web", "10.96.3.3"), ("old", "10.96.4.4")] {
        let name = format!("{svc}.shop.svc.cluster.local.");
        let rr = format!("{name} 5 IN A {ip}");
        expect(a, &name, RecordType::A, "NOERROR", &[rr.as_str()]);
    }
    // Names the snapshot lacks are NXDOMAIN (not SERVFAIL): the snapshot counts as synced.
    expect(
        a,
        "gone.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
    );
    let (code, body) = http_get(addr(ready), "/ready", T).unwrap();
    assert_eq!((code, body.trim()), (200, "OK"));
    let body = metrics(m);
    assert!(body.contains("sextant_kubernetes_data_source{source=\"snapshot\"} 1"));
    assert!(body.contains("sextant_kubernetes_data_source{source=\"api\"} 0"));

    // The API comes back without "old" (deleted during the outage): the API's truth wins.
    api.delete(Kind::Service, "shop", "old");
    rt.block_on(api.come_up()).unwrap();
    wait_for(
        a,
        "old.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
        Duration::from_secs(45),
    );
    expect(
        a,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 5 IN A 10.96.3.3"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics(m).contains("sextant_kubernetes_data_source{source=\"api\"} 1") {
        assert!(Instant::now() < deadline, "source never became api");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metrics(m).contains("sextant_kubernetes_data_source{source=\"snapshot\"} 0"));
}

fn server(api: &FakeApi, relist: &str) -> (Sextant, SocketAddr) {
    let port = free_port();
    let core = format!(
        ".:{port} {{\n  kubernetes cluster.local {{\n    endpoint {}\n    relist_period {relist}\n  }}\n}}\n",
        api.url()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = addr(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    expect(
        a,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["web.shop.svc.cluster.local. 5 IN A 10.96.3.3"],
    );
    (s, a)
}

#[test]
fn compaction_gap_410_relists_and_shows_changes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with(&rt);
    // No periodic re-list: only the 410-triggered one can bring the changes in.
    let (_s, a) = server(&api, "0");
    let lists = api.requests("list", "services");

    // Watches dropped, changes made, history compacted: re-watching from the old
    // resourceVersion gets 410 Gone and the watchers list again.
    api.go_down();
    api.apply(
        service("shop", "new1")
            .cluster_ip("10.96.7.7")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.delete(Kind::Service, "shop", "old");
    api.compact();
    rt.block_on(api.come_up()).unwrap();
    wait_for(
        a,
        "new1.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["new1.shop.svc.cluster.local. 5 IN A 10.96.7.7"],
        Duration::from_secs(45),
    );
    wait_for(
        a,
        "old.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
        Duration::from_secs(10),
    );
    assert!(api.requests("list", "services") > lists);

    // The same with a clean watch end instead of an outage.
    api.drop_watches();
    api.compact();
    api.apply(
        service("shop", "new2")
            .cluster_ip("10.96.7.8")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    wait_for(
        a,
        "new2.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["new2.shop.svc.cluster.local. 5 IN A 10.96.7.8"],
        Duration::from_secs(45),
    );
    expect(
        a,
        "new1.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["new1.shop.svc.cluster.local. 5 IN A 10.96.7.7"],
    );
}

#[test]
fn skipped_events_repaired_by_periodic_relist() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_with(&rt);
    let (_s, a) = server(&api, "2s");
    // The API server changes objects without telling the watchers.
    api.skip_events(true);
    api.delete(Kind::Service, "shop", "web");
    api.apply(
        service("shop", "quiet")
            .cluster_ip("10.96.9.9")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    api.skip_events(false);
    wait_for(
        a,
        "quiet.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["quiet.shop.svc.cluster.local. 5 IN A 10.96.9.9"],
        Duration::from_secs(30),
    );
    wait_for(
        a,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        "NXDOMAIN",
        &[],
        Duration::from_secs(10),
    );
    expect(
        a,
        "old.shop.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        &["old.shop.svc.cluster.local. 5 IN A 10.96.4.4"],
    );
}
