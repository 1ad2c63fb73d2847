//! A reload that leaves the `kubernetes` data source unchanged keeps the running, synced index:
//! no second set of watches, and a reload during an API outage keeps answering from the data it
//! has (CoreDNS would start new informers and serve SERVFAIL until they sync).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_fakeapi::{namespace, service, FakeApi};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn corefile(port: u16, api: &str, extra: &str) -> String {
    format!(
        ".:{port} {{\n{extra}    kubernetes cluster.local {{\n        endpoint {api}\n        startup_timeout 1s\n    }}\n}}\n"
    )
}

#[test]
fn reload_keeps_the_synced_index_even_while_the_api_is_down() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(FakeApi::start()).unwrap();
    api.apply(namespace("shop")).unwrap();
    api.apply(
        service("shop", "web")
            .cluster_ip("10.96.0.20")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    let port = free_port();
    let mut s = Sextant::start(bin(), &corefile(port, &api.url(), ""));
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let web = Query::new("web.shop.svc.cluster.local.", RecordType::A);
    let t0 = Instant::now();
    while udp(a, &web, T).unwrap().rcode_name() != "NOERROR" {
        assert!(t0.elapsed() < Duration::from_secs(10), "never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A watch opens right after its list: the last one may still be on its way.
    let t0 = Instant::now();
    while api.open_watches() < 3 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let watches = api.open_watches();
    assert!(watches >= 3, "watches: {watches}");

    // Reload with the API up: the same watches carry on, no second set is opened.
    s.rewrite_corefile(&corefile(port, &api.url(), "    any\n"))
        .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_nth_line("Reloading complete", 1, Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.open_watches(), watches, "watches after reload");
    assert_eq!(
        udp(
            a,
            &Query::new("x.shop.svc.cluster.local.", RecordType::ANY),
            T
        )
        .unwrap()
        .answers()
        .len(),
        1,
        "the new configuration (any) is active"
    );

    // API down, then a reload: cluster names keep their answers (no SERVFAIL, no NXDOMAIN).
    api.go_down();
    s.rewrite_corefile(&corefile(port, &api.url(), "    errors\n"))
        .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_nth_line("Reloading complete", 2, Duration::from_secs(10))
        .unwrap();
    for _ in 0..20 {
        let r = udp(a, &web, T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(
            r.answers(),
            vec!["web.shop.svc.cluster.local. 5 IN A 10.96.0.20"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The API comes back: changes made meanwhile arrive.
    rt.block_on(api.come_up()).unwrap();
    api.apply(
        service("shop", "api")
            .cluster_ip("10.96.0.30")
            .port("http", 80, "TCP"),
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let r = udp(
            a,
            &Query::new("api.shop.svc.cluster.local.", RecordType::A),
            T,
        )
        .unwrap();
        if r.rcode_name() == "NOERROR" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "no convergence");
        std::thread::sleep(Duration::from_millis(50));
    }
}
