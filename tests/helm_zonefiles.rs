//! The coredns/helm chart's `zoneFiles`: that chart writes each zone file into its ConfigMap
//! beside the Corefile (mounted at /etc/coredns) and users add a server block with
//! `file /etc/coredns/FILE DOMAIN`. The Corefile the chart renders for its default `servers`
//! plus such a block, with the zone of the chart's own `zoneFiles` example, must pass
//! `sextant -check` and serve the zone (SOA, NS, A, the wildcard, NXDOMAIN outside it) while
//! the cluster block keeps answering from the (fake) API server. The example's records have no
//! TTL and there is no `$TTL`: CoreDNS 1.14.7 (miekg/dns) serves them with TTL 0, so does Sextant.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sextant_fakeapi::{namespace, service, FakeApi};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// The zone of the chart's `zoneFiles` example (values.yaml), as its ConfigMap holds it.
const EXAMPLE_DB: &str =
    "example.com.   IN SOA sns.dns.icann.com. noc.dns.icann.com. 2015082541 7200 3600 1209600 3600
example.com.   IN NS  b.iana-servers.net.
example.com.   IN NS  a.iana-servers.net.
example.com.   IN A   192.168.99.102
*.example.com. IN A   192.168.99.102
";

/// The Corefile the chart renders (its configmap.yaml template) for its default `servers`
/// value plus a server block for the zone file: `zones: [{zone: example.com}]`, `port: 53`,
/// `plugins: [{name: file, parameters: /etc/coredns/example.db}]`. DIR stands for
/// /etc/coredns, PORT for 53, API for the API server the test starts.
const CHART_COREFILE: &str = ".:PORT {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus 0.0.0.0:9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}

example.com:PORT {
    file DIR/example.db
}
";

#[test]
fn coredns_helm_zone_files_check_and_serve() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(FakeApi::start()).expect("fake api");
    api.apply(namespace("default")).unwrap();
    api.apply(
        service("default", "kubernetes")
            .cluster_ip("10.96.0.1")
            .port("https", 443, "TCP"),
    )
    .unwrap();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.db"), EXAMPLE_DB).unwrap();
    let d = dir.path().display().to_string();
    let check = CHART_COREFILE
        .replace("DIR", &d)
        .replace("PORT", &port.to_string());
    // -check of the Corefile as the chart renders it (the API server is not needed to check).
    let (code, out, err) = Sextant::run_to_end(
        Sextant::builder(bin(), &check).arg("-check"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(code, 0, "{out}{err}\n{check}");
    assert!(out.starts_with("Corefile OK"), "{out}");
    // Serving: the same Corefile with the test's API server, and health/ready/metrics on free
    // ports (the chart's 8080/8181/9153 may be taken on this machine).
    let serve = check
        .replace(
            "ttl 30\n",
            &format!("ttl 30\n        endpoint {}\n", api.url()),
        )
        .replace(
            "    health {\n",
            &format!("    health 127.0.0.1:{} {{\n", free_port()),
        )
        .replace(
            "    ready\n",
            &format!("    ready 127.0.0.1:{}\n", free_port()),
        )
        .replace("0.0.0.0:9153", &format!("127.0.0.1:{}", free_port()));
    let mut s = Sextant::builder(bin(), &serve).start();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();

    let r = udp(addr, &Query::new("example.com.", RecordType::SOA), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(
        r.answers(),
        ["example.com. 0 IN SOA sns.dns.icann.com. noc.dns.icann.com. 2015082541 7200 3600 1209600 3600"]
    );
    let r = udp(addr, &Query::new("example.com.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), ["example.com. 0 IN A 192.168.99.102"]);
    assert_eq!(
        r.authority(),
        [
            "example.com. 0 IN NS b.iana-servers.net.",
            "example.com. 0 IN NS a.iana-servers.net."
        ]
    );
    // The wildcard.
    let r = udp(addr, &Query::new("anything.example.com.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.answers(), ["anything.example.com. 0 IN A 192.168.99.102"]);
    // NODATA under the wildcard: SOA in the authority section.
    let r = udp(
        addr,
        &Query::new("anything.example.com.", RecordType::AAAA),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.answers().is_empty());
    assert_eq!(r.authority().len(), 1, "{:?}", r.authority());
    assert!(r.authority()[0].contains(" IN SOA "), "{:?}", r.authority());
    // The cluster block still answers from the API server.
    let r = udp(
        addr,
        &Query::new("kubernetes.default.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(
        r.answers(),
        ["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]
    );
}
