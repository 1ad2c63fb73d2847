//! Plugins that run before `cache` (loadbalance, rewrite, autopath) still act on answers the
//! cache serves from wire bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

#[test]
fn loadbalance_shuffles_cached_answers_and_rewrite_restores_names() {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        "example.org:{port} {{\n    prometheus 127.0.0.1:{mport}\n    loadbalance\n    rewrite name alias.example.org a.example.org\n    cache 30\n    hosts {{\n        10.0.0.1 a.example.org\n        10.0.0.2 a.example.org\n        10.0.0.3 a.example.org\n        10.0.0.4 a.example.org\n    }}\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    let mut firsts = std::collections::BTreeSet::new();
    for i in 0..40u16 {
        let r = udp(addr, &Query::new("a.example.org.", RecordType::A).id(i), T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.id(), i);
        let a = r.answers();
        assert_eq!(a.len(), 4, "{a:?}");
        firsts.insert(a[0].clone());
    }
    assert!(
        firsts.len() >= 2,
        "cached answers are still shuffled: {firsts:?}"
    );
    // The rewritten name is answered from the same cache entry, under the client's name.
    let r = udp(addr, &Query::new("alias.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.question().unwrap(), "alias.example.org. IN A");
    assert_eq!(r.answers().len(), 4);
    assert!(
        r.answers()
            .iter()
            .all(|l| l.starts_with("alias.example.org. ")),
        "{:?}",
        r.answers()
    );
    let (_, body) = http_get(SocketAddr::from(([127, 0, 0, 1], mport)), "/metrics", T).unwrap();
    let hits: f64 = body
        .lines()
        .filter(|l| l.starts_with("coredns_cache_hits_total{") && l.contains("type=\"success\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(hits >= 39.0, "answers came from the cache: {hits}\n{body}");
}
