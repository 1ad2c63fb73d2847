//! End-to-end tests of the `cache` plugin: the real binary, queries over UDP and TCP on
//! loopback. The backend is `whoami` (its answers name the asking client's port, which shows
//! whether an answer came from the cache) until `forward` is on main.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn start(body: &str) -> (Sextant, SocketAddr, SocketAddr) {
    let ports = free_ports(2);
    let text = format!(
        ".:{} {{\n    prometheus 127.0.0.1:{}\n{body}\n    whoami\n}}\n",
        ports[0], ports[1]
    );
    let mut s = Sextant::start(bin(), &text);
    let addr: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    s.wait_dns(addr, Duration::from_secs(5)).unwrap();
    let maddr: SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    (s, addr, maddr)
}

/// The TTL of every record in the answer and additional sections.
fn ttls(r: &Reply) -> Vec<u32> {
    let m = r.message();
    m.answers
        .iter()
        .chain(&m.additionals)
        .map(|rr| rr.ttl)
        .collect()
}

fn metric(maddr: SocketAddr, prefix: &str) -> f64 {
    let (status, body) = http_get(maddr, "/metrics", T).unwrap();
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn hits_come_from_the_cache_over_udp_and_tcp_with_ttls_counting_down() {
    let (_s, addr, maddr) = start("    cache 10");
    // wait_dns's probe went through the cache too.
    let req0 = metric(maddr, "coredns_cache_requests_total{");
    let miss0 = metric(maddr, "coredns_cache_misses_total{");
    let q = Query::new("WhoAmI.Example.ORG.", RecordType::A).edns(1232);
    let first = udp(addr, &q.clone().id(1), T).unwrap();
    assert_eq!(first.rcode_name(), "NOERROR");
    assert_eq!(first.flags(), "qr,aa,rd");
    // whoami's TTL 0 is raised to MINTTL 5, on the miss already.
    assert_eq!(ttls(&first), vec![5, 5]);
    assert_eq!(first.additional().len(), 2);

    // A hit over TCP: the same records (the UDP client's port, `_udp`), the TCP client's ID.
    let hit = tcp(addr, &q.clone().id(2), T).unwrap();
    assert_eq!(hit.id(), 2);
    assert_eq!(hit.rcode_name(), "NOERROR");
    assert_eq!(hit.flags(), "qr,aa,rd");
    assert_eq!(hit.question().unwrap(), first.question().unwrap());
    let strip = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| w.parse::<u32>().ok() != Some(5))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let a1 = first.additional();
    let a2 = hit.additional();
    assert!(a2.iter().any(|l| l.contains("_udp.")), "{a2:?}");
    assert_eq!(a1.len(), a2.len());
    let e = hit.edns().expect("OPT on a hit to an EDNS query");
    assert_eq!((e.udp_size, e.version, e.do_bit), (1232, 0, false));
    assert_eq!(e.opt_count, 1);

    // Counting down: after a little more than a second the TTL is lower.
    std::thread::sleep(Duration::from_millis(1100));
    let later = udp(addr, &q.clone().id(3), T).unwrap();
    assert!(ttls(&later).iter().all(|&t| t < 5), "{:?}", ttls(&later));
    assert_eq!(strip(later.additional()).len(), strip(a1).len());

    // A query without EDNS gets a hit without OPT.
    let plain = udp(addr, &Query::new("whoami.example.org.", RecordType::A), T).unwrap();
    assert!(plain.edns().is_none());
    assert!(plain.additional().iter().any(|l| l.contains("_udp.")));

    assert_eq!(metric(maddr, "coredns_cache_requests_total{") - req0, 4.0);
    assert_eq!(metric(maddr, "coredns_cache_misses_total{") - miss0, 1.0);
    assert_eq!(
        metric(maddr, "coredns_cache_hits_total{server=\"dns://:"),
        3.0
    );
    let (_, body) = http_get(maddr, "/metrics", T).unwrap();
    assert!(
        body.contains("coredns_cache_entries{server=\"dns://:"),
        "{body}"
    );
    // The probe's name and ours.
    assert!(
        body.contains("type=\"success\",view=\"\",zones=\".\"} 2"),
        "{body}"
    );
    assert!(
        body.contains(
            "coredns_dns_responses_total{plugin=\"cache\",rcode=\"NOERROR\",server=\"dns://:"
        ),
        "{body}"
    );
}

#[test]
fn the_question_keeps_the_clients_spelling_on_a_hit() {
    let (_s, addr, _) = start("    cache");
    udp(
        addr,
        &Query::new("mixed.example.org.", RecordType::A).edns(1232),
        T,
    )
    .unwrap();
    let r = udp(
        addr,
        &Query::new("MiXeD.ExAmPlE.OrG.", RecordType::A).edns(1232),
        T,
    )
    .unwrap();
    assert!(
        r.question().unwrap().starts_with("MiXeD.ExAmPlE.OrG."),
        "{:?}",
        r.question()
    );
    assert!(r.additional().iter().any(|l| l.contains("_udp.")));
}

#[test]
fn do_and_cd_are_part_of_the_key() {
    let (_s, addr, maddr) = start("    cache");
    let miss0 = metric(maddr, "coredns_cache_misses_total{");
    let base = Query::new("key.example.org.", RecordType::A).edns(1232);
    udp(addr, &base, T).unwrap();
    let r = tcp(addr, &base.clone().do_bit(), T).unwrap();
    assert!(
        r.additional().iter().any(|l| l.contains("_tcp.")),
        "DO: a miss"
    );
    assert!(r.edns().unwrap().do_bit);
    let r = tcp(addr, &base.clone().cd(), T).unwrap();
    assert!(
        r.additional().iter().any(|l| l.contains("_tcp.")),
        "CD: a miss"
    );
    let r = udp(addr, &base.clone().cd(), T).unwrap();
    assert_eq!(r.flags(), "qr,aa,rd,cd");
    assert!(
        r.additional().iter().any(|l| l.contains("_tcp.")),
        "CD: now a hit"
    );
    let r = tcp(
        addr,
        &Query::new("key.example.org.", RecordType::AAAA).edns(1232),
        T,
    )
    .unwrap();
    assert!(
        r.additional().iter().any(|l| l.contains("_tcp.")),
        "type: a miss"
    );
    assert_eq!(metric(maddr, "coredns_cache_misses_total{") - miss0, 4.0);
}

#[test]
fn entries_expire_and_zones_limit_the_cache() {
    let (_s, addr, _) = start("    cache example.org {\n        success 1024 3600 1\n    }");
    let q = Query::new("exp.example.org.", RecordType::A).edns(1232);
    let r = udp(addr, &q, T).unwrap();
    assert_eq!(ttls(&r), vec![1, 1], "MINTTL 1");
    let r = tcp(addr, &q, T).unwrap();
    assert!(r.additional().iter().any(|l| l.contains("_udp.")), "a hit");
    std::thread::sleep(Duration::from_millis(1100));
    let r = tcp(addr, &q, T).unwrap();
    assert!(
        r.additional().iter().any(|l| l.contains("_tcp.")),
        "expired: a miss"
    );
    // Outside the cache's zones nothing is cached.
    let q = Query::new("out.example.net.", RecordType::A).edns(1232);
    udp(addr, &q, T).unwrap();
    let r = tcp(addr, &q, T).unwrap();
    assert!(r.additional().iter().any(|l| l.contains("_tcp.")));
}

#[test]
fn check_reports_config_errors_with_position() {
    let (code, stdout, stderr) = Sextant::check(
        bin(),
        ".:1053 {\n    cache {\n        servfail 10m\n    }\n    whoami\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains(":3:18: servfail: caching SERVFAIL responses over 5 minutes is not permitted"),
        "{all}"
    );
}

/// Starts sextant with `cache_body` in front of `forward . <upstream>`.
fn start_forward(cache_body: &str, up: &Upstream) -> (Sextant, SocketAddr) {
    let port = free_port();
    let text = format!(
        ".:{port} {{\n{cache_body}\n    forward . {}\n}}\n",
        up.addr()
    );
    let mut s = Sextant::start(bin(), &text);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.wait_dns(addr, Duration::from_secs(5)).unwrap();
    (s, addr)
}

#[test]
fn forwarded_answers_are_cached_clamped_and_counted_down() {
    let up = Upstream::start(|req: &UpstreamRequest| match req.name().as_str() {
        "a.example.org." => req
            .reply()
            .answer("a.example.org. 300 IN A 192.0.2.1")
            .answer("a.example.org. 20 IN A 192.0.2.2")
            .action(),
        "nx.example.org." => req
            .reply()
            .rcode(ResponseCode::NXDomain)
            .authority(
                "example.org. 3600 IN SOA ns.example.org. h.example.org. 1 7200 1800 86400 60",
            )
            .action(),
        "nosoa.example.org." => req.reply().rcode(ResponseCode::NXDomain).action(),
        "refused.example.org." => req.reply().rcode(ResponseCode::Refused).action(),
        "sf.example.org." => req.reply().rcode(ResponseCode::ServFail).action(),
        _ => req
            .reply()
            .answer(&format!("{} 60 IN A 192.0.2.9", req.name()))
            .action(),
    })
    .unwrap();
    let (_s, addr) = start_forward("    cache", &up);
    let q = |n: &str| Query::new(n, RecordType::A).edns(1232);

    let r = udp(addr, &q("a.example.org."), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.answers().len(), 2);
    assert_eq!(ttls(&r), vec![20, 20], "every RR gets the lowest TTL");
    let r = tcp(addr, &q("a.example.org."), T).unwrap();
    assert!(
        r.flags().contains("aa"),
        "hits are authoritative: {}",
        r.flags()
    );
    assert!(ttls(&r).iter().all(|t| (19..=20).contains(t)));
    assert_eq!(up.queries_for("a.example.org."), 1);

    let r = udp(addr, &q("nx.example.org."), T).unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(ttls(&r), Vec::<u32>::new());
    let auth_ttl = r.message().authorities[0].ttl;
    assert_eq!(auth_ttl, 60, "min(SOA TTL, SOA MINIMUM)");
    let r = udp(addr, &q("nx.example.org."), T).unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(up.queries_for("nx.example.org."), 1);

    for name in ["nosoa.example.org.", "refused.example.org."] {
        udp(addr, &q(name), T).unwrap();
        udp(addr, &q(name), T).unwrap();
        assert_eq!(up.queries_for(name), 2, "{name} is not cached");
    }
    let r = udp(addr, &q("sf.example.org."), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    udp(addr, &q("sf.example.org."), T).unwrap();
    assert_eq!(
        up.queries_for("sf.example.org."),
        1,
        "SERVFAIL cached for 5 s"
    );
}

/// `budget`: the caches of two server blocks share one memory budget. Thousands of distinct
/// names through both blocks leave fewer entries in the two caches together than the budget can
/// hold, each block keeps some, and the evictions are counted.
#[test]
fn caches_of_several_blocks_share_one_budget() {
    let ports = free_ports(2);
    let (a, m) = (ports[0], ports[1]);
    let text = format!(
        "a.example:{a} {{\n    prometheus 127.0.0.1:{m}\n    cache {{\n        success 9984 30\n        budget 64Ki\n    }}\n    whoami\n}}\n.:{a} {{\n    prometheus 127.0.0.1:{m}\n    cache 30 {{\n        budget 64Ki\n    }}\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &text);
    let addr: SocketAddr = format!("127.0.0.1:{a}").parse().unwrap();
    s.wait_dns(addr, Duration::from_secs(5)).unwrap();
    let maddr: SocketAddr = format!("127.0.0.1:{m}").parse().unwrap();
    for i in 0..1500 {
        for zone in ["a.example.", "b.example."] {
            let r = udp(addr, &Query::new(&format!("n{i}.{zone}"), RecordType::A), T).unwrap();
            assert_eq!(r.rcode_name(), "NOERROR");
        }
    }
    let (_, body) = http_get(maddr, "/metrics", T).unwrap();
    let sum = |name: &str, zones: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(&format!("zones=\"{zones}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (ea, eb) = (
        sum("coredns_cache_entries{", "a.example."),
        sum("coredns_cache_entries{", "."),
    );
    eprintln!("entries: a.example. {ea}, . {eb}");
    // An entry costs more than 200 bytes, so 64 KiB hold fewer than 330 of the 3000 stored.
    assert!(ea + eb < 330.0, "{ea} + {eb}");
    assert!(
        ea > 30.0 && eb > 30.0,
        "both blocks keep a share: {ea} {eb}"
    );
    let ev = sum("coredns_cache_evictions_total{", "a.example.")
        + sum("coredns_cache_evictions_total{", ".");
    assert!(ev > 2000.0, "{ev} evictions counted");
    // A second block asking for another size is refused, at its line.
    let bad = ".:1053 {\n    cache {\n        budget 1Mi\n    }\n    whoami\n}\nb.example:1053 {\n    cache {\n        budget 2Mi\n    }\n    whoami\n}\n";
    let (code, out, _) = Sextant::check(bin(), bad).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Corefile:9:9")
            && out.contains("budget 2097152 differs from the budget 1048576"),
        "{out}"
    );
}
