//! CNAME chains and loops: a scripted upstream answering a 20-link chain and a 2-name loop
//! (relayed as-is, cached, truncated for small UDP clients), and ExternalName services inside the
//! cluster zone that chain and loop (a -> b -> a, a -> a) or loop across two server blocks via
//! re-entry: answers come in bounded time, never a hang or a crash.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A long distinct label per link, so that name compression cannot keep the chain small.
fn link(i: usize) -> String {
    format!("link-{i:02}-of-a-long-cname-chain.chain.example.")
}

fn chain() -> Vec<String> {
    let mut v: Vec<String> = (0..20)
        .map(|i| {
            let owner = if i == 0 {
                "chain.example.".to_string()
            } else {
                link(i)
            };
            format!("{owner} 60 IN CNAME {}", link(i + 1))
        })
        .collect();
    v.push(format!("{} 60 IN A 192.0.2.20", link(20)));
    v
}

const LOOP: [&str; 2] = [
    "loop.example. 60 IN CNAME loop2.example.",
    "loop2.example. 60 IN CNAME loop.example.",
];

fn fields(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn upstream_chain_of_20_and_loop_are_relayed_and_cached() {
    let up = Upstream::start(|req: &UpstreamRequest| match req.name().as_str() {
        "chain.example." => {
            let c = chain();
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            req.reply().answers(&refs).action()
        }
        "loop.example." => req.reply().answers(&LOOP).action(),
        _ => req.reply().rcode(ResponseCode::NXDomain).action(),
    })
    .unwrap();
    let port = free_port();
    let cf = format!(".:{port} {{\n  cache 30\n  forward . {}\n}}\n", up.addr());
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let a = addr(port);

    // Whole chain, in order, over UDP with EDNS and over TCP; the first from the upstream, the
    // rest from the cache (TTL capped to 30).
    let t0 = Instant::now();
    let q = Query::new("chain.example.", RecordType::A).edns(4096);
    let r1 = udp(a, &q, T).unwrap();
    let r2 = tcp(a, &Query::new("chain.example.", RecordType::A), T).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    for r in [&r1, &r2] {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert!(!r.truncated());
        let want: Vec<String> = chain()
            .into_iter()
            .map(|s| s.replacen(" 60 ", " 30 ", 1))
            .collect();
        let got: Vec<String> = fields(r.answers())
            .into_iter()
            .map(|s| {
                let mut f: Vec<&str> = s.split(' ').collect();
                assert!(f[1].parse::<u32>().unwrap() <= 30, "{s}");
                f[1] = "30";
                f.join(" ")
            })
            .collect();
        assert_eq!(got, want);
    }
    assert_eq!(up.queries_for("chain.example."), 1, "second from the cache");
    // A plain 512-byte UDP client gets TC=1 (the chain is over 1000 bytes), retries over TCP.
    let r = udp(a, &Query::new("chain.example.", RecordType::A), T).unwrap();
    assert!(r.truncated(), "{} bytes", r.len());
    assert!(r.len() <= 512);
    assert_eq!(r.rcode_name(), "NOERROR");

    // A CNAME loop from the upstream is relayed as it came, each time from the upstream: a chain
    // that never reaches the asked type and has no SOA is not cached (cache README).
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = udp(a, &Query::new("loop.example.", RecordType::A), T).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(r.rcode_name(), "NOERROR");
        let got: Vec<String> = fields(r.answers())
            .into_iter()
            .map(|s| s.replace(" 30 ", " TTL ").replace(" 29 ", " TTL "))
            .collect();
        assert_eq!(
            got,
            [
                "loop.example. TTL IN CNAME loop2.example.",
                "loop2.example. TTL IN CNAME loop.example."
            ]
        );
    }
    assert_eq!(up.queries_for("loop.example."), 3);
    assert!(s.exited().is_none());
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: shop}
spec: {type: ExternalName, externalName: b.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: shop}
spec: {type: ExternalName, externalName: a.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: self, namespace: shop}
spec: {type: ExternalName, externalName: self.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: c, namespace: shop}
spec: {type: ExternalName, externalName: d.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: d, namespace: shop}
spec: {type: ExternalName, externalName: web.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: x, namespace: shop}
spec: {type: ExternalName, externalName: x.shop.svc.other.test}
"#;

/// Zone `other.test` maps `x.shop.svc.other.test` back into cluster.local.
const OTHER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: x, namespace: shop}
spec: {type: ExternalName, externalName: x.shop.svc.cluster.local}
"#;

#[test]
fn externalname_chains_and_loops_in_the_cluster_zone() {
    let up =
        Upstream::start(|req: &UpstreamRequest| req.reply().rcode(ResponseCode::NXDomain).action())
            .unwrap();
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  kubernetes cluster.local {{\n    manifests cluster.yaml\n  }}\n  forward . {}\n}}\nother.test:{port} {{\n  kubernetes other.test {{\n    manifests other.yaml\n  }}\n}}\n",
        up.addr()
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("cluster.yaml", MANIFEST)
        .file("other.yaml", OTHER)
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    up.reset_counters();
    let a = addr(port);
    let timed = |name: &str, t: RecordType, tcp_too: bool| -> Reply {
        let t0 = Instant::now();
        let r = udp(a, &Query::new(name, t), T).unwrap();
        if tcp_too {
            let c = tcp(a, &Query::new(name, t), T).unwrap();
            assert_eq!(r.rcode_name(), c.rcode_name(), "{name}");
            assert_eq!(fields(r.answers()), fields(c.answers()), "{name}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            t0.elapsed()
        );
        r
    };

    // A chain that ends: CNAMEs in order, then the address, all from the plugin.
    let r = timed("c.shop.svc.cluster.local.", RecordType::A, true);
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa,rd")
    );
    assert_eq!(
        fields(r.answers()),
        [
            "c.shop.svc.cluster.local. 5 IN CNAME d.shop.svc.cluster.local.",
            "d.shop.svc.cluster.local. 5 IN CNAME web.shop.svc.cluster.local.",
            "web.shop.svc.cluster.local. 5 IN A 10.96.0.20"
        ]
    );

    // a -> b -> a and self -> self: CoreDNS's A() drops duplicate CNAMEs and direct loops and
    // keeps a CNAME only when the chain behind it yields records, so nothing is left: NODATA
    // with the zone SOA.
    for name in [
        "a.shop.svc.cluster.local.",
        "b.shop.svc.cluster.local.",
        "self.shop.svc.cluster.local.",
    ] {
        for t in [RecordType::A, RecordType::AAAA] {
            let r = timed(name, t, true);
            assert_eq!(
                (r.rcode_name().as_str(), r.flags().as_str()),
                ("NOERROR", "qr,aa,rd"),
                "{name} {t}"
            );
            assert!(r.answers().is_empty(), "{name} {t}: {:?}", r.answers());
            let auth = r.authority();
            assert_eq!(auth.len(), 1, "{auth:?}");
            assert!(
                auth[0].starts_with("cluster.local. 5 IN SOA ns.dns.cluster.local. "),
                "{auth:?}"
            );
        }
    }
    // The CNAME itself is still there when asked for.
    let r = timed("a.shop.svc.cluster.local.", RecordType::CNAME, true);
    assert_eq!(
        fields(r.answers()),
        ["a.shop.svc.cluster.local. 5 IN CNAME b.shop.svc.cluster.local."]
    );
    // Nothing of this went to the upstream.
    assert_eq!(
        up.queries(),
        0,
        "{:?}",
        up.requests().iter().map(|r| r.name()).collect::<Vec<_>>()
    );

    // x -> x.shop.svc.other.test (re-entry into the other block) -> x.shop.svc.cluster.local
    // (re-entry again) -> ...: cut off after a bounded number of re-entries.
    let r = timed("x.shop.svc.cluster.local.", RecordType::A, true);
    // The CNAMEs alternate, at most 20 of them (re-entry depth is capped), no address.
    assert_eq!(r.rcode_name(), "NOERROR", "{:?}", r.message());
    let ans = fields(r.answers());
    assert!((2..=20).contains(&ans.len()), "{ans:?}");
    for (i, rr) in ans.iter().enumerate() {
        let want = if i % 2 == 0 {
            "x.shop.svc.cluster.local. 5 IN CNAME x.shop.svc.other.test."
        } else {
            "x.shop.svc.other.test. 5 IN CNAME x.shop.svc.cluster.local."
        };
        assert_eq!(rr, want, "{ans:?}");
    }
    // Still healthy afterwards.
    let r = timed("web.shop.svc.cluster.local.", RecordType::A, true);
    assert_eq!(
        fields(r.answers()),
        ["web.shop.svc.cluster.local. 5 IN A 10.96.0.20"]
    );
    assert!(s.exited().is_none(), "{}", s.output());
    assert_eq!(s.count_lines("panic"), 0, "{}", s.output());
}
