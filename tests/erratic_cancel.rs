//! End-to-end tests of `erratic` (answers, drops, delays, truncation, AXFR, readiness) and
//! `cancel` (a deadline on the chain), over real sockets.

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

/// The erratic block plus a `.` block with whoami (the harness's readiness probe lands there,
/// so erratic's query count is the test's own).
fn start(erratic: &str, extra: &str, port: u16) -> Sextant {
    let cf = format!(
        "example.org:{port} {{\n    {extra}\n    erratic {erratic}\n}}\n.:{port} {{\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    s
}

fn ask(port: u16, t: RecordType) -> Option<Reply> {
    udp_raw(
        addr(port),
        &Query::new("a.example.org.", t),
        Duration::from_millis(400),
    )
    .unwrap()
    .map(|b| Reply::parse(b).unwrap())
}

#[test]
fn answers_and_drops_one_in_n() {
    let port = free_port();
    let _s = start("{\n        drop 3\n    }", "", port);
    let got: Vec<bool> = (0..6).map(|_| ask(port, RecordType::A).is_some()).collect();
    assert_eq!(got, vec![false, true, true, false, true, true]);
}

#[test]
fn fixed_records_servfail_and_axfr() {
    let port = free_port();
    let _s = start("{\n        drop 0\n    }", "", port);
    let r = ask(port, RecordType::A).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.answers(), vec!["a.example.org. 0 IN A 192.0.2.53"]);
    let r = ask(port, RecordType::AAAA).unwrap();
    assert_eq!(r.answers(), vec!["a.example.org. 0 IN AAAA 2001:db8::53"]);
    let r = ask(port, RecordType::TXT).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    let r = tcp(addr(port), &Query::new("example.org.", RecordType::AXFR), T).unwrap();
    assert_eq!(r.flags(), "qr,aa,rd");
    let soa = "example.org. 0 IN SOA sns.dns.icann.org. noc.dns.icann.org. 2018050825 7200 3600 1209600 3600";
    assert_eq!(
        r.answers(),
        vec![
            soa,
            "example.org. 0 IN NS b.example.org.",
            "example.org. 0 IN NS a.example.org.",
            "a.example.org. 0 IN AAAA 2001:bd8::53",
            "b.example.org. 0 IN AAAA 2001:500::54",
            soa,
        ]
    );
}

#[test]
fn large_answers_thirty_a_records() {
    let port = free_port();
    let _s = start("{\n        drop 0\n        large\n    }", "", port);
    // Thirty copies of the A record (CoreDNS's undocumented `large`); compressed they fit 512
    // bytes without EDNS, so no TC (CoreDNS 1.14.7 sends the same 30 records in 511 bytes).
    let r = ask(port, RecordType::A).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.answers(), vec!["a.example.org. 0 IN A 192.0.2.53"; 30]);
    assert!(r.len() <= 512, "{} bytes", r.len());
    // Only A is enlarged.
    let r = ask(port, RecordType::AAAA).unwrap();
    assert_eq!(r.answers(), vec!["a.example.org. 0 IN AAAA 2001:db8::53"]);
}

#[test]
fn truncate_uses_a_bitwise_and_and_delay_waits() {
    let port = free_port();
    let _s = start(
        "{\n        truncate 2\n        delay 3 300ms\n    }",
        "",
        port,
    );
    let mut tc = Vec::new();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let t0 = Instant::now();
        let r = ask(port, RecordType::A).expect("no drops without drop");
        slow.push(t0.elapsed() >= Duration::from_millis(250));
        tc.push(r.truncated());
    }
    // Query n is truncated when n & 2 == 0 (CoreDNS's test), delayed when n % 3 == 0.
    assert_eq!(tc, vec![true, true, false, false, true, true]);
    assert_eq!(slow, vec![true, false, false, true, false, false]);
}

#[test]
fn ready_between_the_third_and_fifth_query() {
    let (port, rport) = (free_port(), free_port());
    let _s = start(
        "{\n        drop 0\n    }",
        &format!("ready 127.0.0.1:{rport}"),
        port,
    );
    let ready = || http_get(addr(rport), "/ready", T).unwrap().0;
    assert_eq!(ready(), 503);
    for _ in 0..3 {
        ask(port, RecordType::A).unwrap();
    }
    assert_eq!(ready(), 200);
    for _ in 0..2 {
        ask(port, RecordType::A).unwrap();
    }
    // Not ready any more, but `ready` (monitor until-ready, its default) stays ready once it was.
    assert_eq!(ready(), 200);
}

#[test]
fn cancel_answers_servfail_at_the_deadline() {
    let up = Upstream::start(|_req: &UpstreamRequest| Action::Drop).unwrap();
    let port = free_port();
    let cf = format!(".:{port} {{\n    cancel 300ms\n    forward . {}\n}}\nexample.org:{port} {{\n    cancel 1s\n    whoami\n}}\n", up.addr());
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).ok();
    let t0 = Instant::now();
    let r = udp(
        addr(port),
        &Query::new("slow.example.net.", RecordType::A),
        T,
    )
    .unwrap();
    let took = t0.elapsed();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // Answered in time: untouched.
    let r = udp(addr(port), &Query::new("a.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.flags(), "qr,aa,rd");
    for (arg, want) in [
        ("0s", ":2:12: cancel: invalid negative duration: \"0s\""),
        ("soon", ":2:12: cancel: invalid duration: \"soon\""),
        ("1s 2s", ":2:15: cancel: wrong argument count"),
    ] {
        let (code, out, err) =
            Sextant::check(bin(), &format!(".:53 {{\n    cancel {arg}\n}}\n")).unwrap();
        assert_ne!(code, 0);
        assert!(format!("{out}{err}").contains(want), "{arg}: {out}{err}");
    }
}
