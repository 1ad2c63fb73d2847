//! End-to-end tests of the `autopath` plugin (resolv.conf form) with `hosts` behind it: the real
//! binary over UDP and TCP on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn both(port: u16, q: &Query) -> [Reply; 2] {
    [
        udp(addr(port), q, T).unwrap(),
        tcp(addr(port), q, T).unwrap(),
    ]
}

#[test]
fn search_path_walk_with_cname_and_metric() {
    let port = free_port();
    let mport = free_port();
    let cf = format!(
        ".:{port} {{\n  autopath resolv.conf\n  prometheus 127.0.0.1:{mport}\n  hosts {{\n    ttl 30\n    10.0.0.1 web.svc.cluster.local\n    10.0.0.9 example.org\n    10.0.0.5 direct.ns.svc.cluster.local\n  }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file(
            "resolv.conf",
            "nameserver 127.0.0.1\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        )
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();

    // Found under the second search element: CNAME from the asked name, then the answer.
    for r in both(
        port,
        &Query::new("web.ns.svc.cluster.local.", RecordType::A).id(7),
    ) {
        assert_eq!(r.id(), 7);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.question().unwrap(), "web.ns.svc.cluster.local. IN A");
        assert_eq!(
            r.answers(),
            vec![
                "web.ns.svc.cluster.local. 30 IN CNAME web.svc.cluster.local.",
                "web.svc.cluster.local. 30 IN A 10.0.0.1"
            ]
        );
    }
    // The bare name is the last try.
    for r in both(
        port,
        &Query::new("example.org.ns.svc.cluster.local.", RecordType::A),
    ) {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(
            r.answers(),
            vec![
                "example.org.ns.svc.cluster.local. 30 IN CNAME example.org.",
                "example.org. 30 IN A 10.0.0.9"
            ]
        );
    }
    // Found on the first try: no CNAME (same owner).
    for r in both(
        port,
        &Query::new("direct.ns.svc.cluster.local.", RecordType::A),
    ) {
        assert_eq!(
            r.answers(),
            vec!["direct.ns.svc.cluster.local. 30 IN A 10.0.0.5"]
        );
    }
    // Nothing anywhere: the first try's result (hosts: SERVFAIL).
    let r = udp(
        addr(port),
        &Query::new("none.ns.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    // Not below the first search element: untouched.
    let r = udp(
        addr(port),
        &Query::new("web.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.answers(), vec!["web.svc.cluster.local. 30 IN A 10.0.0.1"]);
    // Exactly the first search element: CoreDNS's TrimZone fails, SERVFAIL.
    let r = tcp(
        addr(port),
        &Query::new("ns.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");

    // Every query answered through the search path counts (first element included): 3 x 2.
    let (_, body) = http_get(addr(mport), "/metrics", T).unwrap();
    let want = format!("coredns_autopath_success_total{{server=\"dns://:{port}\"}} 6");
    assert!(body.contains(&want), "{want} in\n{body}");
    let _ = s.kill();
}

#[test]
fn zones_limit_autopath() {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  autopath example.net resolv.conf\n  hosts {{\n    10.0.0.1 web.svc.cluster.local\n  }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file(
            "resolv.conf",
            "search ns.svc.cluster.local svc.cluster.local\n",
        )
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let r = udp(
        addr(port),
        &Query::new("web.ns.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn missing_resolv_conf_is_a_config_error() {
    let (code, out, err) = Sextant::check(
        bin(),
        ".:1053 {\n  autopath /nonexistent/resolv.conf\n  whoami\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains(":2:12: autopath: failed to parse \"/nonexistent/resolv.conf\""),
        "{all}"
    );
}
