//! End-to-end tests of the `forward` plugin: the real binary, real UDP/TCP sockets on loopback,
//! scripted upstreams (testkit), a DNS-over-TLS upstream made here with rustls and rcgen, a
//! resolv.conf upstream and a Knot reference server. Faults follow faults.md §5.2.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_testkit::hickory_proto::op::ResponseCode;
use sextant_testkit::*;

const T: Duration = Duration::from_secs(8);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// A running server: `forward_lines` in the `.` block (with `errors`), `prometheus` on a free
/// port, and a `invalid.` block answered by `whoami` so start-up probes never reach upstreams.
struct Srv {
    s: Sextant,
    dns: SocketAddr,
    metrics: SocketAddr,
}

fn start_with(builder: impl FnOnce(SextantBuilder) -> SextantBuilder, lines: &str) -> Srv {
    let port = free_port();
    let metrics = free_addr();
    let cf = format!(
        ".:{port} {{\n errors\n prometheus {metrics}\n {lines}\n}}\ninvalid.:{port} {{\n whoami\n}}\n"
    );
    let mut s = builder(Sextant::builder(bin(), &cf)).start();
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.wait_dns(dns, Duration::from_secs(10)).unwrap();
    Srv { s, dns, metrics }
}

fn start(lines: &str) -> Srv {
    start_with(|b| b, lines)
}

impl Srv {
    fn metrics(&self) -> String {
        http_get(self.metrics, "/metrics", Duration::from_secs(5))
            .unwrap()
            .1
    }

    /// Sum of a metric's samples whose line contains every one of `parts`.
    fn metric(&self, name: &str, parts: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn a(name: &str) -> Query {
    Query::new(name, RecordType::A)
}

/// An upstream answering every A query with `ip` (TTL 300, AA).
fn answering(ip: &'static str) -> Upstream {
    Upstream::start(move |req: &UpstreamRequest| {
        req.reply()
            .aa(true)
            .answer(&format!("{} 300 IN A {ip}", req.name()))
            .action()
    })
    .unwrap()
}

fn non_hc_queries(up: &Upstream) -> usize {
    up.requests()
        .iter()
        .filter(|r| !(r.name() == "." && r.qtype() == RecordType::NS))
        .count()
}

#[test]
fn relays_over_udp_and_tcp_with_client_id_case_and_edns() {
    let up = Upstream::records(&[
        "example.org. 300 IN SOA ns.example.org. h.example.org. 1 2 3 4 60",
        "www.example.org. 300 IN A 192.0.2.80",
        "www.example.org. 300 IN A 192.0.2.81",
    ])
    .unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    let q = a("WwW.ExAmPlE.org.").id(4242).edns(4096).do_bit();
    let r = udp(srv.dns, &q, T).unwrap();
    assert_eq!(r.id(), 4242);
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.question().unwrap(), "WwW.ExAmPlE.org. IN A");
    assert_eq!(
        r.answers_sorted(),
        vec![
            // The upstream compresses the owner into the question: the client's spelling.
            "WwW.ExAmPlE.org. 300 IN A 192.0.2.80",
            "WwW.ExAmPlE.org. 300 IN A 192.0.2.81"
        ]
    );
    assert!(r.authority().is_empty() && r.additional().is_empty());
    let e = r.edns().unwrap();
    assert!(e.do_bit);
    // The upstream saw the client's EDNS as is, over UDP, with a fresh ID.
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].proto, Proto::Udp);
    let qe = seen[0].message.edns.as_ref().unwrap();
    assert_eq!(qe.max_payload(), 4096);
    assert!(qe.flags().dnssec_ok);
    // NXDOMAIN with SOA over TCP, TCP upstream.
    let r = tcp(srv.dns, &a("nope.example.org.").id(7), T).unwrap();
    assert_eq!(r.id(), 7);
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(
        r.authority(),
        vec!["example.org. 300 IN SOA ns.example.org. h.example.org. 1 2 3 4 60"]
    );
    assert!(r.edns().is_none());
    assert_eq!(up.queries_tcp(), 1);
    // Upstream IDs are not the client's: 20 queries with ID 1 reach the upstream with
    // (almost surely) many distinct IDs.
    up.reset_counters();
    for i in 0..20 {
        udp(srv.dns, &a(&format!("n{i}.example.org.")).id(1), T).unwrap();
    }
    let ids: std::collections::HashSet<u16> = up.requests().iter().map(|r| r.id()).collect();
    assert!(ids.len() >= 18, "upstream IDs not random: {ids:?}");
    // One after another, they all go out on one cached socket (CoreDNS keeps UDP sockets
    // for `expire` too).
    let ports: std::collections::HashSet<u16> =
        up.requests().iter().map(|r| r.src.port()).collect();
    assert_eq!(ports.len(), 1, "UDP socket not reused: {ports:?}");
    let to = format!("to=\"{}\"", up.addr());
    let count = |rc: &str| {
        srv.metric(
            "coredns_proxy_request_duration_seconds_count",
            &[&to, &format!("rcode=\"{rc}\""), "proxy_name=\"forward\""],
        )
    };
    assert_eq!(count("NOERROR"), 1.0);
    assert_eq!(count("NXDOMAIN"), 21.0);
}

#[test]
fn blackhole_gives_servfail_within_deadline_and_logs_timeout() {
    let up = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    let t0 = Instant::now();
    let r = udp(srv.dns, &a("blackhole.example."), T).unwrap();
    let took = t0.elapsed();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    // Two attempts of 2 s each (max_connect_attempts defaults to 2 per upstream).
    assert!(took >= Duration::from_millis(3900), "{took:?}");
    assert!(took <= Duration::from_millis(5500), "{took:?}");
    let line = srv
        .s
        .wait_for_line(
            "[ERROR] plugin/errors: 2 blackhole.example. A: read udp 127.0.0.1:",
            T,
        )
        .unwrap();
    assert!(
        line.ends_with(&format!("->{}: i/o timeout", up.addr())),
        "{line}"
    );
}

#[test]
fn closed_port_fails_over_fast() {
    let dead = closed_port();
    let up = answering("192.0.2.1");
    let srv = start(&format!(
        "forward . {dead} {} {{\n policy sequential\n }}",
        up.addr()
    ));
    udp(srv.dns, &a("warm.example."), T).unwrap();
    let t0 = Instant::now();
    let r = udp(srv.dns, &a("fast.example."), T).unwrap();
    let took = t0.elapsed();
    assert_eq!(r.answers(), vec!["fast.example. 300 IN A 192.0.2.1"]);
    assert!(took < Duration::from_millis(50), "failover took {took:?}");
}

#[test]
fn one_of_three_dead_keeps_success_high_and_gets_only_health_checks() {
    let dead = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let (b, c) = (answering("192.0.2.2"), answering("192.0.2.3"));
    let srv = start(&format!(
        "forward . {} {} {} {{\n read_timeout 300ms\n health_check 100ms\n }}",
        dead.addr(),
        b.addr(),
        c.addr()
    ));
    // Until the dead one is marked down (3 failed probes of 1 s, one per 100 ms) queries that
    // pick it first wait read_timeout and then succeed elsewhere.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        let r = udp(
            srv.dns,
            &a(&format!("warm{}.example.", t0.elapsed().as_micros())),
            T,
        )
        .unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
    }
    dead.reset_counters();
    let ok = Arc::new(AtomicUsize::new(0));
    let slow = Arc::new(AtomicUsize::new(0));
    let dns = srv.dns;
    let threads: Vec<_> = (0..20)
        .map(|t| {
            let (ok, slow) = (ok.clone(), slow.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let t0 = Instant::now();
                    if let Ok(r) = udp(dns, &a(&format!("q{t}-{i}.example.")), T) {
                        if r.rcode_name() == "NOERROR" && r.answers().len() == 1 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if t0.elapsed() > Duration::from_millis(250) {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok >= 999, "only {ok} of 1000 succeeded");
    // p99 under read_timeout: at most 1 % of queries waited for the dead one.
    assert!(
        slow.load(Ordering::Relaxed) <= 10,
        "slow: {}",
        slow.load(Ordering::Relaxed)
    );
    // Once down, the dead upstream only sees health checks, and those go on every interval
    // (give them a few intervals: the burst above can finish in well under 300 ms).
    std::thread::sleep(Duration::from_millis(500));
    let reached = non_hc_queries(&dead);
    assert_eq!(reached, 0, "dead upstream got {reached} queries");
    let hc = dead.requests().len() - reached;
    assert!(hc >= 3, "health checks: {hc}");
}

#[test]
fn all_down_failfast_then_recovery_within_one_interval() {
    let a1 = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let a2 = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let srv = start(&format!(
        "forward . {} {} {{\n read_timeout 200ms\n health_check 100ms\n max_fails 1\n failfast_all_unhealthy_upstreams\n }}",
        a1.addr(),
        a2.addr()
    ));
    let r = udp(srv.dns, &a("down.example."), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    // Both get marked down (2 failed probes each) within a second; then SERVFAIL is immediate.
    let t0 = Instant::now();
    let mut fast = false;
    while t0.elapsed() < Duration::from_secs(3) {
        let q0 = Instant::now();
        let r = udp(srv.dns, &a("down.example."), T).unwrap();
        assert_eq!(r.rcode_name(), "SERVFAIL");
        if q0.elapsed() < Duration::from_millis(50) {
            fast = true;
            break;
        }
    }
    assert!(fast, "never failed fast");
    srv.s.wait_for_line("no healthy proxies", T).unwrap();
    assert!(srv.metric("coredns_forward_healthcheck_broken_total", &[]) >= 1.0);
    // Recovery: the first success comes within one interval (plus a probe) of the fix.
    for u in [&a1, &a2] {
        u.set_handler(|req: &UpstreamRequest| {
            req.reply()
                .answer(&format!("{} 60 IN A 192.0.2.9", req.name()))
                .action()
        });
    }
    let fixed = Instant::now();
    loop {
        let r = udp(srv.dns, &a("up.example."), T).unwrap();
        if r.rcode_name() == "NOERROR" {
            break;
        }
        assert!(fixed.elapsed() < Duration::from_secs(2), "no recovery");
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = fixed.elapsed();
    assert!(took < Duration::from_millis(250), "recovery took {took:?}");
    let hcf = srv.metric(
        "coredns_proxy_healthcheck_failures_total",
        &[&format!("to=\"{}\"", a1.addr()), "proxy_name=\"forward\""],
    );
    assert!(hcf >= 2.0, "{hcf}");
}

#[test]
fn all_down_without_failfast_tries_a_random_upstream_with_bounded_attempts() {
    let a1 = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let srv = start(&format!(
        "forward . {} {{\n read_timeout 200ms\n health_check 100ms\n max_fails 1\n max_connect_attempts 3\n }}",
        a1.addr()
    ));
    // Healthy (not yet probed): max_connect_attempts bounds the tries, 3 × 200 ms.
    let t0 = Instant::now();
    assert_eq!(
        udp(srv.dns, &a("x.example."), T).unwrap().rcode_name(),
        "SERVFAIL"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(580) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    assert_eq!(a1.queries_for("x.example."), 3);
    // Down (2 failed 1 s probes): every upstream is down, one random upstream gets one try.
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    let r = udp(srv.dns, &a("y.example."), T).unwrap();
    let took = t0.elapsed();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(a1.queries_for("y.example."), 1);
    assert!(srv.metric("coredns_forward_healthcheck_broken_total", &[]) >= 1.0);
}

#[test]
fn slow_upstream_1_9s_delivered_2_1s_fails_over_without_duplicates() {
    let slow19 = Upstream::start(|req: &UpstreamRequest| {
        Action::Delay(
            Duration::from_millis(1900),
            Box::new(
                req.reply()
                    .answer(&format!("{} 60 IN A 192.0.2.19", req.name()))
                    .action(),
            ),
        )
    })
    .unwrap();
    let slow21 = Upstream::start(|req: &UpstreamRequest| {
        Action::Delay(
            Duration::from_millis(2100),
            Box::new(
                req.reply()
                    .answer(&format!("{} 60 IN A 192.0.2.21", req.name()))
                    .action(),
            ),
        )
    })
    .unwrap();
    let good = answering("192.0.2.1");
    let srv = start(&format!(
        "forward slow19.example. {}\n forward . {} {} {{\n policy sequential\n }}",
        slow19.addr(),
        slow21.addr(),
        good.addr()
    ));
    let t0 = Instant::now();
    let r = udp(srv.dns, &a("slow19.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["slow19.example. 60 IN A 192.0.2.19"]);
    assert!(t0.elapsed() >= Duration::from_millis(1900));
    // 2.1 s: the read timeout (2 s) fires first and the next upstream answers.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(srv.dns).unwrap();
    let q = a("slow21.example.").id(99);
    let t0 = Instant::now();
    sock.send(&q.to_bytes()).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).unwrap();
    let took = t0.elapsed();
    let r = Reply::parse(buf[..n].to_vec()).unwrap();
    assert_eq!(r.answers(), vec!["slow21.example. 300 IN A 192.0.2.1"]);
    assert!(
        took >= Duration::from_millis(1950) && took < Duration::from_millis(2600),
        "{took:?}"
    );
    // No second answer when the slow upstream's late reply arrives.
    sock.set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    assert!(
        sock.recv(&mut buf).is_err(),
        "duplicate answer to the client"
    );
}

#[test]
fn servfail_and_refused_are_relayed_and_upstream_stays_healthy() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        let rc = if req.name().starts_with("sf") {
            ResponseCode::ServFail
        } else {
            ResponseCode::Refused
        };
        req.reply().ra(true).rcode(rc).action()
    })
    .unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    let r = udp(srv.dns, &a("sf.example."), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert_eq!(r.flags(), "qr,rd,ra");
    let r = tcp(srv.dns, &a("refused.example."), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    assert_eq!(r.flags(), "qr,rd,ra");
    std::thread::sleep(Duration::from_millis(300));
    // Error replies are answers: no health check was started.
    assert_eq!(up.queries(), 2);
}

#[test]
fn max_concurrent_refuses_excess_immediately() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        Action::Delay(
            Duration::from_millis(800),
            Box::new(
                req.reply()
                    .answer(&format!("{} 60 IN A 192.0.2.7", req.name()))
                    .action(),
            ),
        )
    })
    .unwrap();
    let srv = start(&format!(
        "forward . {} {{\n max_concurrent 5\n }}",
        up.addr()
    ));
    let dns = srv.dns;
    let threads: Vec<_> = (0..5)
        .map(|i| std::thread::spawn(move || udp(dns, &a(&format!("c{i}.example.")), T).unwrap()))
        .collect();
    up.wait_queries(5, T).unwrap();
    let mut refused = 0;
    for i in 0..5 {
        let t0 = Instant::now();
        let r = udp(dns, &a(&format!("x{i}.example.")), T).unwrap();
        assert_eq!(r.rcode_name(), "REFUSED");
        assert!(t0.elapsed() < Duration::from_millis(100));
        refused += 1;
    }
    for t in threads {
        assert_eq!(t.join().unwrap().rcode_name(), "NOERROR");
    }
    assert_eq!(refused, 5);
    assert_eq!(
        srv.metric("coredns_forward_max_concurrent_rejects_total", &[]),
        5.0
    );
    srv.s
        .wait_for_line("5 x0.example. A: concurrent queries exceeded maximum 5", T)
        .unwrap();
    // The whoami block is unaffected; later queries are served again.
    assert_eq!(
        udp(dns, &a("after.example."), T).unwrap().rcode_name(),
        "NOERROR"
    );
}

fn tc_upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| match req.proto {
        Proto::Udp if req.name().starts_with("broken") => {
            // TC with an answer count and no answer behind it.
            let mut b = req.reply().tc(true).no_edns().build().to_vec().unwrap();
            b[7] = 2;
            Action::Raw(b)
        }
        Proto::Udp => req.reply().tc(true).action(),
        Proto::Tcp => req
            .reply()
            .answer(&format!("{} 60 IN A 192.0.2.53", req.name()))
            .action(),
    })
    .unwrap()
}

#[test]
fn truncated_answers_relayed_to_udp_and_retried_for_tcp() {
    let up = tc_upstream();
    let srv = start(&format!("forward . {}", up.addr()));
    let r = udp(srv.dns, &a("tc.example."), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.truncated());
    assert!(r.answers().is_empty());
    let r = udp(srv.dns, &a("broken.example."), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR", "never FORMERR");
    assert!(r.truncated());
    assert_eq!(up.queries_tcp(), 0);
    // TCP client: TCP upstream, full answer.
    let r = tcp(srv.dns, &a("tc.example."), T).unwrap();
    assert!(!r.truncated());
    assert_eq!(r.answers(), vec!["tc.example. 60 IN A 192.0.2.53"]);
    // prefer_udp: a TCP client's query goes over UDP, and the TC answer is retried over TCP.
    let up2 = tc_upstream();
    let srv2 = start(&format!("forward . {} {{\n prefer_udp\n }}", up2.addr()));
    let r = tcp(srv2.dns, &a("tc.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["tc.example. 60 IN A 192.0.2.53"]);
    assert_eq!((up2.queries_udp(), up2.queries_tcp()), (1, 1));
    // force_tcp: UDP client, TCP upstream, the answer re-truncated only if it does not fit.
    let up3 = tc_upstream();
    let srv3 = start(&format!("forward . {} {{\n force_tcp\n }}", up3.addr()));
    let r = udp(srv3.dns, &a("tc.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["tc.example. 60 IN A 192.0.2.53"]);
    assert_eq!((up3.queries_udp(), up3.queries_tcp()), (0, 1));
}

#[test]
fn large_udp_answer_is_retruncated_for_the_client() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        let mut b = req.reply().edns(4096);
        for i in 0..100 {
            b = b.answer(&format!(
                "{} 60 IN A 10.0.{}.{}",
                req.name(),
                i / 250,
                i % 250
            ));
        }
        b.action()
    })
    .unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    // The upstream answers 1.6 KB to a client without EDNS: relayed truncated to 512 bytes.
    let r = udp(srv.dns, &a("big.example."), T).unwrap();
    assert!(r.truncated());
    assert!(r.len() <= 512, "{}", r.len());
    let r = tcp(srv.dns, &a("big.example."), T).unwrap();
    assert!(!r.truncated());
    assert_eq!(r.answers().len(), 100);
}

fn bogus_then_right(req: &UpstreamRequest) -> Action {
    let right = req
        .reply()
        .answer(&format!("{} 60 IN A 192.0.2.44", req.name_as_asked()));
    let wrong_id = req
        .reply()
        .id(req.id().wrapping_add(1))
        .answer(&format!("{} 60 IN A 6.6.6.6", req.name()));
    let mut wrong_name = req.reply().answer("evil.example. 60 IN A 6.6.6.6");
    wrong_name.message_mut().queries[0].set_name("evil.example.".parse().unwrap());
    let mut wrong_type = req.reply();
    wrong_type.message_mut().queries[0].set_query_type(RecordType::AAAA);
    let mut wrong_class = req.reply();
    wrong_class.message_mut().queries[0]
        .set_query_class(sextant_testkit::hickory_proto::rr::DNSClass::CH);
    let mut garbage = vec![0u8; 40];
    garbage[..2].copy_from_slice(&req.id().to_be_bytes());
    garbage[2] = 0x80;
    garbage[5] = 9;
    Action::Multiple(vec![
        wrong_id.action(),
        wrong_name.action(),
        wrong_type.action(),
        wrong_class.action(),
        Action::Raw(garbage),
        Action::Delay(Duration::from_millis(50), Box::new(right.action())),
    ])
}

#[test]
fn bogus_replies_never_end_the_wait_for_the_right_one() {
    let up = Upstream::start(bogus_then_right).unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    let to = format!("to=\"{}\"", up.addr());
    for (i, over_tcp) in [(0, false), (1, true)] {
        let q = a(&format!("TuDoor{i}.example.")).id(77);
        let r = if over_tcp {
            tcp(srv.dns, &q, T)
        } else {
            udp(srv.dns, &q, T)
        }
        .unwrap();
        assert_eq!(r.id(), 77);
        assert_eq!(r.question().unwrap(), format!("TuDoor{i}.example. IN A"));
        assert_eq!(
            r.answers(),
            vec![format!("TuDoor{i}.example. 60 IN A 192.0.2.44")]
        );
    }
    assert_eq!(
        srv.metric("sextant_forward_bogus_replies_total", &[&to]),
        10.0
    );
}

#[test]
fn duplicate_answers_give_one_reply() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        let r = req
            .reply()
            .answer(&format!("{} 60 IN A 192.0.2.5", req.name()));
        Action::Multiple(vec![r.clone().action(), r.clone().action(), r.action()])
    })
    .unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(srv.dns).unwrap();
    sock.send(&a("dup.example.").to_bytes()).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(Reply::parse(buf[..n].to_vec()).unwrap().answers().len(), 1);
    sock.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    assert!(sock.recv(&mut buf).is_err());
}

/// UDP sockets are cached per upstream like TCP connections, and a late reply for an earlier
/// query on a reused socket never answers a later one: each query gets a reply with the previous
/// query's ID and the same question (a different address) just before the right one, and a
/// duplicate of its own reply, changed, 100 ms later, when the socket is idle in the cache.
#[test]
fn reused_udp_sockets_never_take_a_late_reply_for_a_later_query() {
    let previous_id = Arc::new(std::sync::Mutex::new(None::<u16>));
    let asked = Arc::new(AtomicUsize::new(0));
    let (prev, n) = (previous_id.clone(), asked.clone());
    let up = Upstream::start(move |req: &UpstreamRequest| {
        if req.name() != "late.example." {
            return req.reply().action();
        }
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let late = |id: u16| {
            req.reply()
                .id(id)
                .answer("late.example. 60 IN A 6.6.6.6")
                .action()
        };
        let mut prev = prev.lock().unwrap();
        let mut acts: Vec<Action> = prev.iter().map(|&id| late(id)).collect();
        acts.push(
            req.reply()
                .answer(&format!("late.example. 60 IN A 192.0.2.{i}"))
                .action(),
        );
        acts.push(Action::Delay(
            Duration::from_millis(100),
            Box::new(late(req.id())),
        ));
        *prev = Some(req.id());
        Action::Multiple(acts)
    })
    .unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    for i in 1..=4 {
        let r = udp(srv.dns, &a("late.example.").id(9), T).unwrap();
        assert_eq!(r.id(), 9);
        assert_eq!(
            r.answers(),
            vec![format!("late.example. 60 IN A 192.0.2.{i}")],
            "query {i}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let seen: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.name() == "late.example.")
        .collect();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter().all(|r| r.src == seen[0].src),
        "not one reused socket: {:?}",
        seen.iter().map(|r| r.src).collect::<Vec<_>>()
    );
    assert!(
        seen.windows(2).all(|w| w[0].id() != w[1].id()),
        "an ID repeated on the socket"
    );
    let to = format!("to=\"{}\"", up.addr());
    let cache = |m: &str| srv.metric(m, &["proto=\"udp\"", &to]);
    assert_eq!(cache("coredns_proxy_conn_cache_misses_total"), 1.0);
    assert_eq!(cache("coredns_proxy_conn_cache_hits_total"), 3.0);
    // The three replies ahead of the right one, and the delayed duplicates found on reuse
    // (the last one is still waiting in the socket).
    let bogus = srv.metric("sextant_forward_bogus_replies_total", &[&to]);
    assert!((3.0..=6.0).contains(&bogus), "bogus replies {bogus}");
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn tcp_faults_fail_over_within_deadline_without_fd_leaks() {
    let faulty = Upstream::start(|req: &UpstreamRequest| match req.name().as_str() {
        "reset.example." => Action::TcpReset,
        "close.example." => Action::TcpCloseBeforeAnswer,
        "drip.example." => Action::TcpDrip(
            Duration::from_millis(100),
            req.reply().answer("drip.example. 60 IN A 6.6.6.6").build(),
        ),
        "badlen.example." => Action::TcpBadLength,
        _ => req
            .reply()
            .answer(&format!("{} 60 IN A 192.0.2.100", req.name()))
            .action(),
    })
    .unwrap();
    let good = answering("192.0.2.200");
    let srv = start(&format!(
        "forward . {} {} {{\n force_tcp\n policy sequential\n read_timeout 500ms\n max_fails 0\n }}",
        faulty.addr(),
        good.addr()
    ));
    // A cached connection to each upstream first.
    assert_eq!(
        udp(srv.dns, &a("ok.example."), T).unwrap().answers(),
        vec!["ok.example. 60 IN A 192.0.2.100"]
    );
    let before = fd_count(srv.s.pid());
    for _ in 0..3 {
        for name in ["reset", "close", "drip", "badlen"] {
            let t0 = Instant::now();
            let r = udp(srv.dns, &a(&format!("{name}.example.")), T).unwrap();
            assert_eq!(
                r.answers(),
                vec![format!("{name}.example. 300 IN A 192.0.2.200")],
                "{name}"
            );
            assert!(
                t0.elapsed() < Duration::from_millis(1500),
                "{name}: {:?}",
                t0.elapsed()
            );
        }
    }
    // The faulty upstream still answers good queries on a fresh connection.
    assert_eq!(
        udp(srv.dns, &a("ok2.example."), T).unwrap().answers(),
        vec!["ok2.example. 60 IN A 192.0.2.100"]
    );
    let after = fd_count(srv.s.pid());
    assert!(after <= before + 2, "fds before {before}, after {after}");
    // Connections were reused for the good upstream.
    assert!(
        srv.metric(
            "coredns_proxy_conn_cache_hits_total",
            &["proto=\"tcp\"", &format!("to=\"{}\"", good.addr())]
        ) >= 10.0
    );
}

#[test]
fn identical_queries_in_flight_are_coalesced() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        Action::Delay(
            Duration::from_millis(400),
            Box::new(
                req.reply()
                    .answer(&format!("{} 60 IN A 192.0.2.66", req.name()))
                    .action(),
            ),
        )
    })
    .unwrap();
    let srv = start(&format!("forward . {}", up.addr()));
    let dns = srv.dns;
    let threads: Vec<_> = (0..20u16)
        .map(|i| {
            std::thread::spawn(move || {
                let name = if i % 2 == 0 {
                    "same.example."
                } else {
                    "SAME.Example."
                };
                let r = udp(dns, &a(name).id(1000 + i), T).unwrap();
                assert_eq!(r.id(), 1000 + i);
                assert_eq!(r.question().unwrap(), format!("{name} IN A"));
                assert_eq!(r.answers().len(), 1);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(up.queries_for("same.example."), 1);
    // A different type is a different question.
    udp(dns, &Query::new("same.example.", RecordType::AAAA), T).unwrap();
    assert_eq!(up.queries_for("same.example."), 2);
}

#[test]
fn except_and_several_forward_lines_in_order() {
    let first = answering("192.0.2.1");
    let second = answering("192.0.2.2");
    let srv = start(&format!(
        "forward example.org {} {{\n except private.example.org\n }}\n forward . {}",
        first.addr(),
        second.addr()
    ));
    let ans = |n: &str| udp(srv.dns, &a(n), T).unwrap().answers();
    assert_eq!(
        ans("www.example.org."),
        vec!["www.example.org. 300 IN A 192.0.2.1"]
    );
    assert_eq!(ans("example.org."), vec!["example.org. 300 IN A 192.0.2.1"]);
    assert_eq!(
        ans("a.private.example.org."),
        vec!["a.private.example.org. 300 IN A 192.0.2.2"]
    );
    assert_eq!(ans("example.com."), vec!["example.com. 300 IN A 192.0.2.2"]);
}

#[test]
fn policies_sequential_round_robin_random() {
    let ups: Vec<Upstream> = (0..3).map(|_| answering("192.0.2.1")).collect();
    let addrs = ups
        .iter()
        .map(|u| u.addr().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let count = |srv: &Srv, ups: &[Upstream]| {
        for u in ups {
            u.reset_counters();
        }
        for i in 0..30 {
            udp(srv.dns, &a(&format!("p{i}.example.")), T).unwrap();
        }
        ups.iter().map(|u| u.queries()).collect::<Vec<_>>()
    };
    let seq = start(&format!("forward . {addrs} {{\n policy sequential\n }}"));
    assert_eq!(count(&seq, &ups), vec![30, 0, 0]);
    let rr = start(&format!("forward . {addrs} {{\n policy round_robin\n }}"));
    assert_eq!(count(&rr, &ups), vec![10, 10, 10]);
    let rnd = start(&format!("forward . {addrs}"));
    let c = count(&rnd, &ups);
    assert_eq!(c.iter().sum::<u64>(), 30);
    assert!(c.iter().all(|&n| n >= 1), "random never picked one: {c:?}");
}

#[test]
fn failover_and_next() {
    let bad = Upstream::start(|req: &UpstreamRequest| {
        if req.name().starts_with("nx") {
            req.reply().rcode(ResponseCode::NXDomain).action()
        } else {
            req.reply().rcode(ResponseCode::ServFail).action()
        }
    })
    .unwrap();
    let good = answering("192.0.2.8");
    // failover: SERVFAIL from the first upstream → the next upstream of the same line.
    let srv = start(&format!(
        "forward . {} {} {{\n policy sequential\n failover SERVFAIL\n }}",
        bad.addr(),
        good.addr()
    ));
    let r = udp(srv.dns, &a("sf.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["sf.example. 300 IN A 192.0.2.8"]);
    // Without failover the SERVFAIL is relayed.
    let plain = start(&format!(
        "forward . {} {{\n policy sequential\n }}\n",
        bad.addr()
    ));
    assert_eq!(
        udp(plain.dns, &a("sf.example."), T).unwrap().rcode_name(),
        "SERVFAIL"
    );
    // next NXDOMAIN: the next forward line answers.
    let srv2 = start(&format!(
        "forward . {} {{\n next NXDOMAIN\n }}\n forward . {}",
        bad.addr(),
        good.addr()
    ));
    let r = udp(srv2.dns, &a("nx.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["nx.example. 300 IN A 192.0.2.8"]);
    // Other rcodes are relayed.
    assert_eq!(
        udp(srv2.dns, &a("sf.example."), T).unwrap().rcode_name(),
        "SERVFAIL"
    );
}

#[test]
fn health_check_marks_down_and_readmits() {
    let flaky = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let good = answering("192.0.2.2");
    let srv = start(&format!(
        "forward . {} {} {{\n policy sequential\n read_timeout 200ms\n health_check 100ms no_rec domain example.net\n }}",
        flaky.addr(),
        good.addr()
    ));
    let r = udp(srv.dns, &a("h1.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["h1.example. 300 IN A 192.0.2.2"]);
    // max_fails 2: down after the third failed probe (CoreDNS: fails > max_fails); each probe
    // waits 1 s, one is sent every 100 ms, so that is about 1.2 s after the first failure.
    let t0 = Instant::now();
    let mut fast_at = None;
    while t0.elapsed() < Duration::from_secs(3) {
        let q0 = Instant::now();
        let r = udp(srv.dns, &a("h2.example."), T).unwrap();
        assert_eq!(r.answers(), vec!["h2.example. 300 IN A 192.0.2.2"]);
        if q0.elapsed() < Duration::from_millis(50) {
            fast_at = Some(t0.elapsed());
            break;
        }
    }
    let fast_at = fast_at.expect("flaky upstream never marked down");
    assert!(
        fast_at >= Duration::from_millis(700),
        "marked down too early: {fast_at:?}"
    );
    let probes: Vec<_> = flaky
        .requests()
        .into_iter()
        .filter(|r| r.name() == "example.net." && r.qtype() == RecordType::NS)
        .collect();
    assert!(probes.len() >= 3, "{}", probes.len());
    assert!(probes.iter().all(|p| !p.message.metadata.recursion_desired));
    // Recovery: back in use within one interval.
    flaky.set_handler(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.1", req.name()))
            .action()
    });
    let fixed = Instant::now();
    loop {
        let r = udp(srv.dns, &a("h3.example."), T).unwrap();
        if r.answers() == vec!["h3.example. 60 IN A 192.0.2.1"] {
            break;
        }
        assert!(
            fixed.elapsed() < Duration::from_secs(2),
            "never re-admitted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        fixed.elapsed() < Duration::from_millis(250),
        "{:?}",
        fixed.elapsed()
    );
}

/// A DNS-over-TLS server on loopback with a fresh self-signed certificate for `dns.test` and
/// 127.0.0.1. Returns its address and the certificate in PEM.
fn dot_server() -> (SocketAddr, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::{Read, Write};
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["dns.test".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let cfg = Arc::new(cfg);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, &mut s);
                for _ in 0..100 {
                    let mut len = [0u8; 2];
                    if tls.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
                    if tls.read_exact(&mut body).is_err() {
                        return;
                    }
                    let Ok(q) = Message::from_vec(&body) else {
                        return;
                    };
                    let name = q.queries[0].name().to_ascii();
                    let r = reply_to(&q)
                        .answer(&format!("{name} 60 IN A 192.0.2.253"))
                        .build()
                        .to_vec()
                        .unwrap();
                    let mut out = (r.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&r);
                    if tls.write_all(&out).is_err() {
                        return;
                    }
                    let _ = tls.flush();
                }
            });
        }
    });
    (addr, pem)
}

#[test]
fn dns_over_tls_upstream_with_servername_and_ca() {
    let (addr, pem) = dot_server();
    let srv = start_with(
        |b| b.file("ca.pem", &pem),
        &format!("forward . tls://{addr} {{\n tls ca.pem\n tls_servername dns.test\n }}"),
    );
    let r = udp(srv.dns, &a("dot.example.").id(5), T).unwrap();
    assert_eq!(r.id(), 5);
    assert_eq!(r.answers(), vec!["dot.example. 60 IN A 192.0.2.253"]);
    let r = udp(srv.dns, &a("dot2.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["dot2.example. 60 IN A 192.0.2.253"]);
    let to = format!("to=\"{addr}\"");
    assert_eq!(
        srv.metric(
            "coredns_proxy_conn_cache_misses_total",
            &["proto=\"tcp-tls\"", &to]
        ),
        1.0
    );
    assert_eq!(
        srv.metric(
            "coredns_proxy_conn_cache_hits_total",
            &["proto=\"tcp-tls\"", &to]
        ),
        1.0
    );
    // A certificate that does not match the server name is refused: SERVFAIL.
    let bad = start_with(
        |b| b.file("ca.pem", &pem),
        &format!("forward . tls://{addr} {{\n tls ca.pem\n tls_servername other.test\n }}"),
    );
    assert_eq!(
        udp(bad.dns, &a("dot.example."), T).unwrap().rcode_name(),
        "SERVFAIL"
    );
    bad.s.wait_for_line("tls handshake with", T).unwrap();
}

#[test]
fn resolv_conf_nameservers_are_upstreams() {
    // resolv.conf has no ports: serve on port 53 of an unused loopback address.
    let ip = format!(
        "127.{}.{}.{}",
        10 + std::process::id() % 200,
        53,
        1 + std::process::id() % 250
    );
    let sock =
        UdpSocket::bind(format!("{ip}:53")).expect("bind port 53 on loopback (tests run as root)");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut n_answered = 0;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let name = q.queries[0].name().to_ascii();
            let r = reply_to(&q)
                .answer(&format!("{name} 60 IN A 192.0.2.153"))
                .build();
            sock.send_to(&r.to_vec().unwrap(), from).unwrap();
            n_answered += 1;
            if name == "last.example." {
                break;
            }
        }
        n_answered
    });
    let srv = start_with(
        |b| {
            b.file(
                "resolv.conf",
                format!("search example.com\nnameserver {ip}\noptions ndots:5\n"),
            )
        },
        "forward . resolv.conf",
    );
    let r = udp(srv.dns, &a("rc.example."), T).unwrap();
    assert_eq!(r.answers(), vec!["rc.example. 60 IN A 192.0.2.153"]);
    udp(srv.dns, &a("last.example."), T).unwrap();
    assert_eq!(responder.join().unwrap(), 2);
}

#[test]
fn answers_match_knot_reference_server() {
    let knot = Knot::start(
        "example.test.",
        "$TTL 300\n@ SOA ns hostmaster 1 7200 1800 86400 30\n@ NS ns\nns A 192.0.2.53\nwww A 192.0.2.80\nwww AAAA 2001:db8::80\nalias CNAME www\n@ MX 10 mail\nmail A 192.0.2.25\ntxt TXT \"hello world\"\n",
    )
    .unwrap();
    let srv = start(&format!("forward . {}", knot.addr()));
    let cases = [
        ("www.example.test.", RecordType::A),
        ("www.example.test.", RecordType::AAAA),
        ("alias.example.test.", RecordType::A),
        ("example.test.", RecordType::MX),
        ("txt.example.test.", RecordType::TXT),
        ("nope.example.test.", RecordType::A),
        ("www.example.test.", RecordType::MX),
        ("example.test.", RecordType::SOA),
    ];
    for (name, t) in cases {
        for over_tcp in [false, true] {
            let q = Query::new(name, t).rd(false).edns(1232);
            let (direct, via) = if over_tcp {
                (
                    tcp(knot.addr(), &q, T).unwrap(),
                    tcp(srv.dns, &q, T).unwrap(),
                )
            } else {
                (
                    udp(knot.addr(), &q, T).unwrap(),
                    udp(srv.dns, &q, T).unwrap(),
                )
            };
            assert_eq!(via.id(), q.get_id());
            assert_eq!(via.rcode_name(), direct.rcode_name(), "{name} {t}");
            assert_eq!(via.flags(), direct.flags(), "{name} {t}");
            assert_eq!(via.answers(), direct.answers(), "{name} {t}");
            assert_eq!(via.authority(), direct.authority(), "{name} {t}");
            assert_eq!(via.additional(), direct.additional(), "{name} {t}");
        }
    }
}

#[test]
fn check_reports_config_errors_with_position() {
    let (code, out, err) = Sextant::check(
        bin(),
        ".:1053 {\n    forward . 127.0.0.1 {\n        policy fastest\n    }\n}\n",
    )
    .unwrap();
    let all = format!("{out}{err}");
    assert_ne!(code, 0);
    assert!(all.contains("Corefile:3:16"), "{all}");
    assert!(all.contains("unknown policy 'fastest'"), "{all}");
}

/// Host-name upstreams (CoreDNS 1.14.4): resolved at start through `resolver`, keeping the TO's
/// scheme, port and per-upstream TLS server name (`tls://NAME%SNI:PORT`); a name the resolver
/// does not know fails the start naming the TO.
#[test]
fn host_name_upstreams_resolve_through_resolver() {
    let (dot, pem) = dot_server();
    let plain = answering("192.0.2.77");
    let resolver = Upstream::start(|req: &UpstreamRequest| {
        let known = ["plain.test.", "dot.test."].contains(&req.name().as_str());
        match req.qtype() {
            RecordType::A if known => req
                .reply()
                .answer(&format!("{} 30 IN A 127.0.0.1", req.name()))
                .action(),
            _ => req.reply().action(),
        }
    })
    .unwrap();
    let r = resolver.addr();
    let srv = start_with(
        |b| b.file("ca.pem", &pem),
        &format!(
            "forward example.org plain.test:{} {{\n resolver {r}\n }}\n forward . tls://dot.test%dns.test:{} {{\n resolver 127.0.0.1:1 {r}\n tls ca.pem\n }}",
            plain.addr().port(),
            dot.port()
        ),
    );
    let got = udp(srv.dns, &a("www.example.org."), T).unwrap();
    assert_eq!(got.rcode_name(), "NOERROR");
    assert_eq!(got.answers(), vec!["www.example.org. 300 IN A 192.0.2.77"]);
    let got = udp(srv.dns, &a("over.tls.example."), T).unwrap();
    assert_eq!(got.answers(), vec!["over.tls.example. 60 IN A 192.0.2.253"]);
    // The resolver was asked A and AAAA for each name, with RD.
    let asked: Vec<(String, RecordType, bool)> = resolver
        .requests()
        .iter()
        .map(|q| (q.name(), q.qtype(), q.message.recursion_desired))
        .collect();
    for name in ["plain.test.", "dot.test."] {
        for t in [RecordType::A, RecordType::AAAA] {
            assert!(
                asked.contains(&(name.to_string(), t, true)),
                "{name} {t} in {asked:?}"
            );
        }
    }
    // The metric label is the resolved address.
    assert!(
        srv.metric(
            "coredns_proxy_request_duration_seconds_count",
            &[&format!("to=\"127.0.0.1:{}\"", plain.addr().port())]
        ) >= 1.0
    );
    let (code, out, err) = Sextant::check(
        bin(),
        &format!(".:1053 {{\n    forward . nothere.test {{\n        resolver {r}\n    }}\n}}\n"),
    )
    .unwrap();
    let all = format!("{out}{err}");
    assert_ne!(code, 0);
    assert!(
        all.contains("Corefile:2:15")
            && all.contains("failed to resolve \"nothere.test\": no addresses found"),
        "{all}"
    );

    // The same Corefile on CoreDNS: the same questions to the resolver, the same answers.
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!("host_name_upstreams_resolve_through_resolver: COREDNS_BIN not set, comparison with CoreDNS not run");
        return;
    };
    let resolver_before = resolver.requests().len();
    let port = free_port();
    let corefile = format!(
        ".:{port} {{\n forward example.org plain.test:{} {{\n  resolver {r}\n }}\n forward . tls://dot.test%dns.test:{} {{\n  resolver 127.0.0.1:1 {r}\n  tls ca.pem\n }}\n}}\n",
        plain.addr().port(),
        dot.port()
    );
    let mut cd = Sextant::builder(Path::new(&coredns), &corefile)
        .file("ca.pem", &pem)
        .start();
    let cda: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    cd.wait_dns(cda, Duration::from_secs(10)).unwrap();
    for name in ["www.example.org.", "over.tls.example."] {
        let (x, y) = (
            udp(srv.dns, &a(name), T).unwrap(),
            udp(cda, &a(name), T).unwrap(),
        );
        assert_eq!(
            (x.rcode_name(), x.flags(), x.answers()),
            (y.rcode_name(), y.flags(), y.answers()),
            "{name}"
        );
    }
    let mut theirs: Vec<(String, RecordType, bool)> = resolver.requests()[resolver_before..]
        .iter()
        .map(|q| (q.name(), q.qtype(), q.message.recursion_desired))
        .collect();
    let mut ours = asked.clone();
    theirs.sort_by_key(|x| format!("{x:?}"));
    ours.sort_by_key(|x| format!("{x:?}"));
    assert_eq!(ours, theirs, "resolver questions: Sextant vs CoreDNS");
}

/// `max_age`: a connection in steady use is replaced once older than `max_age` (idle `expire`
/// alone would keep it), seen as new dials in the connection-cache metrics.
#[test]
fn max_age_redials_busy_connections() {
    let up = answering("192.0.2.88");
    let srv = start(&format!(
        "forward . {} {{\n force_tcp\n expire 1s\n max_age 1s\n }}",
        up.addr()
    ));
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(2600) {
        let r = udp(srv.dns, &a(&format!("q{n}.example.")), T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let to = format!("to=\"{}\"", up.addr());
    let misses = srv.metric(
        "coredns_proxy_conn_cache_misses_total",
        &["proto=\"tcp\"", &to],
    );
    let hits = srv.metric(
        "coredns_proxy_conn_cache_hits_total",
        &["proto=\"tcp\"", &to],
    );
    assert!(
        (2.0..=4.0).contains(&misses),
        "misses {misses}, hits {hits}, {n} queries"
    );
    assert!(
        hits >= n as f64 - 4.0,
        "misses {misses}, hits {hits}, {n} queries"
    );
}

/// What a DoH server saw of one request: method, path and query, content type, accept, HTTP
/// version, DNS ID on the wire.
#[derive(Clone, Debug, PartialEq)]
struct DohSeen {
    method: String,
    uri: String,
    content_type: String,
    accept: String,
    version: String,
    id: u16,
}

/// RFC 4648 base64url without padding, decoded.
fn unbase64url(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// A DNS-over-HTTPS server on loopback (hyper over rustls, certificate for `dns.test` and
/// 127.0.0.1), HTTP/2 when `h2`, else HTTP/1.1 only. Answers `NAME 60 IN A 192.0.2.44` to
/// `/dns-query` POST and GET. Returns its address, the certificate, what it saw and how many
/// connections it accepted.
fn doh_server(
    h2: bool,
) -> (
    SocketAddr,
    String,
    Arc<std::sync::Mutex<Vec<DohSeen>>>,
    Arc<AtomicUsize>,
) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["dns.test".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let conns = Arc::new(AtomicUsize::new(0));
    let (seen2, conns2) = (seen.clone(), conns.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            for _ in 0..200 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                conns2.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), seen2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let header = |n: &str| {
                                    req.headers()
                                        .get(n)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string()
                                };
                                let (method, uri) =
                                    (req.method().to_string(), req.uri().to_string());
                                let (content_type, accept) =
                                    (header("content-type"), header("accept"));
                                let version = format!("{:?}", req.version());
                                let wire = match req.uri().query() {
                                    Some(q) if method == "GET" => q
                                        .strip_prefix("dns=")
                                        .and_then(unbase64url)
                                        .unwrap_or_default(),
                                    _ => {
                                        req.into_body().collect().await.unwrap().to_bytes().to_vec()
                                    }
                                };
                                let q = Message::from_vec(&wire).unwrap();
                                seen.lock().unwrap().push(DohSeen {
                                    method,
                                    uri,
                                    content_type,
                                    accept,
                                    version,
                                    id: q.metadata.id,
                                });
                                let name = q.queries[0].name().to_ascii();
                                let r = reply_to(&q)
                                    .answer(&format!("{name} 60 IN A 192.0.2.44"))
                                    .build()
                                    .to_vec()
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/dns-message")
                                        .body(Full::new(Bytes::from(r)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, svc)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
    });
    (addr, pem, seen, conns)
}

/// `https://` upstreams (CoreDNS 1.14.5): POST over HTTP/2 by default on one shared connection,
/// GET with `doh_method GET`, HTTP/1.1 when the server offers nothing else; ID 0 on the wire and
/// the client's ID in the reply. With `COREDNS_BIN`, CoreDNS sends the same requests and gets the
/// same answers.
#[test]
fn dns_over_https_upstreams_post_and_get() {
    let (addr, pem, seen, conns) = doh_server(true);
    let srv = start_with(
        |b| b.file("ca.pem", &pem),
        &format!("forward . https://{addr} {{\n tls ca.pem\n }}"),
    );
    let mut answers = Vec::new();
    for i in 0..4 {
        let r = udp(srv.dns, &a(&format!("h2-{i}.example.")).id(40 + i), T).unwrap();
        assert_eq!(r.id(), 40 + i);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,rd");
        assert_eq!(
            r.answers(),
            vec![format!("h2-{i}.example. 60 IN A 192.0.2.44")]
        );
        answers.push((r.rcode_name(), r.flags(), r.answers()));
    }
    let got = seen.lock().unwrap().clone();
    let queries: Vec<&DohSeen> = got
        .iter()
        .filter(|s| s.uri.ends_with("/dns-query"))
        .collect();
    assert!(queries.len() >= 4, "{got:?}");
    for s in &queries {
        assert_eq!(s.method, "POST");
        assert_eq!(s.uri, format!("https://{addr}/dns-query"));
        assert_eq!(s.content_type, "application/dns-message");
        assert_eq!(s.accept, "application/dns-message");
        assert_eq!(s.version, "HTTP/2.0");
        assert_eq!(s.id, 0);
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection for every query"
    );
    assert!(
        srv.metric(
            "coredns_proxy_request_duration_seconds_count",
            &[&format!("to=\"{addr}\""), "rcode=\"NOERROR\""]
        ) >= 4.0
    );

    // GET, HTTP/1.1 only, the certificate checked for tls_servername.
    let (addr1, pem1, seen1, conns1) = doh_server(false);
    let srv1 = start_with(
        |b| b.file("ca.pem", &pem1),
        &format!("forward . https://{addr1} {{\n tls ca.pem\n tls_servername dns.test\n doh_method GET\n }}"),
    );
    let r = udp(srv1.dns, &a("get.example.").id(7), T).unwrap();
    assert_eq!(r.id(), 7);
    assert_eq!(r.answers(), vec!["get.example. 60 IN A 192.0.2.44"]);
    let s = seen1.lock().unwrap().clone();
    let s = s
        .iter()
        .find(|s| s.uri.contains("?dns="))
        .expect("a GET query");
    assert_eq!(s.method, "GET");
    assert!(s.uri.starts_with("/dns-query?dns="), "{}", s.uri);
    let b64 = &s.uri["/dns-query?dns=".len()..];
    assert!(!b64.contains('='), "no padding after dns=: {b64}");
    assert_eq!(s.version, "HTTP/1.1");
    assert_eq!(s.id, 0);
    // Queries one after the other reuse the idle HTTP/1.1 connection.
    for i in 0..3 {
        let r = udp(srv1.dns, &a(&format!("get{i}.example.")), T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
    }
    assert_eq!(
        conns1.load(Ordering::SeqCst),
        1,
        "one HTTP/1.1 connection, reused"
    );

    // A certificate that does not match: SERVFAIL.
    let bad = start_with(
        |b| b.file("ca.pem", &pem),
        &format!("forward . https://{addr} {{\n tls ca.pem\n tls_servername other.test\n }}"),
    );
    assert_eq!(
        udp(bad.dns, &a("bad.example."), T).unwrap().rcode_name(),
        "SERVFAIL"
    );

    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!("dns_over_https_upstreams_post_and_get: COREDNS_BIN not set, comparison with CoreDNS not run");
        return;
    };
    let before = seen.lock().unwrap().len();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pem).unwrap();
    std::fs::write(
        dir.path().join("Corefile"),
        format!(".:{port} {{\n forward . https://{addr} {{\n  tls ca.pem\n }}\n}}\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(coredns)
        .current_dir(dir.path())
        .args(["-conf", "Corefile"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cd: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_dns(cd, Duration::from_secs(10)).unwrap();
    for (i, want) in answers.iter().enumerate() {
        let r = udp(cd, &a(&format!("h2-{i}.example.")).id(40 + i as u16), T).unwrap();
        assert_eq!(&(r.rcode_name(), r.flags(), r.answers()), want);
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = seen.lock().unwrap().clone();
    let theirs: Vec<&DohSeen> = all[before..]
        .iter()
        .filter(|s| s.uri.ends_with("/dns-query"))
        .collect();
    assert!(theirs.len() >= 4, "CoreDNS's requests: {theirs:?}");
    for s in theirs {
        let ours = &queries[0];
        assert_eq!(
            (
                &s.method,
                &s.uri,
                &s.content_type,
                &s.accept,
                &s.version,
                s.id
            ),
            (
                &ours.method,
                &ours.uri,
                &ours.content_type,
                &ours.accept,
                &ours.version,
                ours.id
            ),
            "CoreDNS's request differs"
        );
    }
}

/// A host-name upstream that no longer resolves at a reload fails that reload (naming the TO);
/// the running configuration keeps serving through the addresses it resolved at start.
#[test]
fn reload_with_an_unresolvable_host_name_keeps_the_running_configuration() {
    let up = answering("192.0.2.66");
    let known = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let k = known.clone();
    let resolver = Upstream::start(move |req: &UpstreamRequest| {
        if req.qtype() == RecordType::A && k.load(Ordering::SeqCst) {
            req.reply()
                .answer(&format!("{} 30 IN A 127.0.0.1", req.name()))
                .action()
        } else {
            req.reply().action()
        }
    })
    .unwrap();
    let port = free_port();
    let corefile = |ttl: u32| {
        format!(
            ".:{port} {{\n reload 2s 1s\n cache {ttl}\n forward . up.test:{} {{\n  resolver {}\n }}\n}}\n",
            up.addr().port(),
            resolver.addr()
        )
    };
    let mut s = Sextant::start(bin(), &corefile(30));
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.wait_dns(dns, Duration::from_secs(10)).unwrap();
    assert_eq!(
        udp(dns, &a("r1.example."), T).unwrap().answers(),
        vec!["r1.example. 30 IN A 192.0.2.66"]
    );
    known.store(false, Ordering::SeqCst);
    s.rewrite_corefile(&corefile(31)).unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    let line = s.wait_for_line("reload failed", T).unwrap();
    assert!(
        line.contains("failed to resolve \"up.test\""),
        "{line}\n{}",
        s.output()
    );
    assert_eq!(
        udp(dns, &a("r2.example."), T).unwrap().answers(),
        vec!["r2.example. 30 IN A 192.0.2.66"]
    );
}

/// `next_on_nodata`: a NOERROR reply without answers from the first forward hands the query to
/// the next `forward`; a reply with answers (or NXDOMAIN) is sent as is. `source_address`: the
/// upstream sees the queries (and health checks) come from that address. With `COREDNS_BIN`
/// the answers are compared with CoreDNS 1.14.7's.
#[test]
fn next_on_nodata_and_source_address() {
    let first = Upstream::start(|req: &UpstreamRequest| match req.name().as_str() {
        "has.test." => req
            .reply()
            .answer(&format!("{} 300 IN A 192.0.2.1", req.name()))
            .action(),
        "gone.test." => req.reply().rcode(ResponseCode::NXDomain).action(),
        _ => req.reply().action(),
    })
    .unwrap();
    let second = answering("192.0.2.2");
    let lines = format!(
        "forward . {} {{\n  next_on_nodata\n  source_address 127.0.0.7\n }}\n forward . {}",
        first.addr(),
        second.addr()
    );
    let ask = |dns: SocketAddr| -> Vec<(String, Vec<String>)> {
        ["has.test.", "nodata.test.", "gone.test."]
            .iter()
            .map(|n| {
                let r = udp(dns, &a(n), Duration::from_secs(5)).unwrap();
                (r.rcode_name(), r.answers())
            })
            .collect()
    };
    let srv = start(&lines);
    let ours = ask(srv.dns);
    assert_eq!(
        ours,
        vec![
            (
                "NOERROR".to_string(),
                vec!["has.test. 300 IN A 192.0.2.1".to_string()]
            ),
            (
                "NOERROR".to_string(),
                vec!["nodata.test. 300 IN A 192.0.2.2".to_string()]
            ),
            ("NXDOMAIN".to_string(), vec![]),
        ]
    );
    // Only NODATA went on to the second forward; every query left from 127.0.0.7.
    let names: Vec<String> = second.requests().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["nodata.test."]);
    let srcs: Vec<String> = first
        .requests()
        .iter()
        .map(|r| r.src.ip().to_string())
        .collect();
    assert!(
        !srcs.is_empty() && srcs.iter().all(|s| s == "127.0.0.7"),
        "{srcs:?}"
    );
    drop(srv);
    let Some(cd) = coredns_bin() else {
        eprintln!("COREDNS_BIN not set: next_on_nodata not compared with CoreDNS");
        return;
    };
    let port = free_port();
    let mut s = Sextant::builder(
        &cd,
        &format!(".:{port} {{\n {lines}\n}}\ninvalid.:{port} {{\n whoami\n}}\n"),
    )
    .start();
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.wait_dns(dns, Duration::from_secs(10)).unwrap();
    assert_eq!(ask(dns), ours, "differs from CoreDNS");
}

/// `max_idle_conns`: a burst of 8 concurrent queries forced over TCP to an upstream that takes
/// 1 s opens 8 connections; afterwards at most `max_idle_conns` of them stay cached, so a
/// second burst dials the rest again. Without the option every connection is kept and the second
/// burst dials none.
#[test]
fn max_idle_conns_bounds_the_cached_connections() {
    for (opt, second_burst_dials) in [("max_idle_conns 1", 7), ("", 0)] {
        let up = Upstream::start(|req: &UpstreamRequest| {
            Action::Delay(
                Duration::from_secs(1),
                Box::new(
                    req.reply()
                        .answer(&format!("{} 300 IN A 192.0.2.1", req.name()))
                        .action(),
                ),
            )
        })
        .unwrap();
        let srv = start(&format!(
            "forward . {} {{\n force_tcp\n {opt}\n }}",
            up.addr()
        ));
        let burst = |round: u32| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let dns = srv.dns;
                    std::thread::spawn(move || {
                        udp(dns, &a(&format!("r{round}q{i}.example.org.")), T).unwrap()
                    })
                })
                .collect();
            for h in hs {
                assert_eq!(h.join().unwrap().rcode_name(), "NOERROR", "{opt}");
            }
        };
        burst(1);
        let first = up.stats().tcp_connections;
        assert_eq!(first, 8, "{opt}: one connection per query in flight");
        std::thread::sleep(Duration::from_millis(200));
        burst(2);
        assert_eq!(
            up.stats().tcp_connections - first,
            second_burst_dials,
            "{opt}: connections dialled by the second burst"
        );
    }
}
