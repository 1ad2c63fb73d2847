//! End-to-end tests of the `rewrite` plugin with `hosts` behind it: the real binary over UDP and
//! TCP on 127.0.0.1; the client always sees its own question.

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

fn start(rules: &str) -> (Sextant, u16) {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n{rules}\n  hosts {{\n    10.0.0.1 www.b.org\n    10.0.0.2 web.default.svc.cluster.local\n    10.0.0.3 ttl.b.org\n  }}\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    (s, port)
}

#[test]
fn exact_name_rewrite_answers_under_the_original_name() {
    let (_s, port) = start("  rewrite name www.a.org www.b.org");
    for r in both(port, &Query::new("www.a.org.", RecordType::A).id(99)) {
        assert_eq!(r.id(), 99);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.question().unwrap(), "www.a.org. IN A");
        assert_eq!(r.answers(), vec!["www.a.org. 3600 IN A 10.0.0.1"]);
        assert!(r.authority().is_empty());
    }
    // Not matching: untouched.
    for r in both(port, &Query::new("www.b.org.", RecordType::A)) {
        assert_eq!(r.answers(), vec!["www.b.org. 3600 IN A 10.0.0.1"]);
    }
}

#[test]
fn regex_with_groups_and_answer_name() {
    let (_s, port) = start(
        "  rewrite stop {\n    name regex (.*)\\.svc\\.local {1}.default.svc.cluster.local\n    answer name (.*)\\.default\\.svc\\.cluster\\.local {1}.svc.local\n  }",
    );
    for r in both(port, &Query::new("web.svc.local.", RecordType::A)) {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.question().unwrap(), "web.svc.local. IN A");
        assert_eq!(r.answers(), vec!["web.svc.local. 3600 IN A 10.0.0.2"]);
    }
}

#[test]
fn continue_chains_rules_then_type_ttl_and_rcode() {
    let (_s, port) = start(
        "  rewrite continue name suffix .a.org .b.org answer auto\n  rewrite continue type MX A\n  rewrite continue ttl exact ttl.b.org 100-200\n  rewrite rcode nope.b.org SERVFAIL NXDOMAIN",
    );
    // suffix (auto answer) + type: MX for ttl.a.org → A ttl.b.org, TTL clamped to 200.
    for r in both(port, &Query::new("ttl.a.org.", RecordType::MX)) {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.question().unwrap(), "ttl.a.org. IN MX");
        assert_eq!(r.answers(), vec!["ttl.a.org. 200 IN A 10.0.0.3"]);
    }
    // hosts returns SERVFAIL without a reply for an unknown name; the rcode rule turns it into
    // NXDOMAIN.
    for r in both(port, &Query::new("nope.a.org.", RecordType::A)) {
        assert_eq!(r.rcode_name(), "NXDOMAIN");
        assert_eq!(r.question().unwrap(), "nope.a.org. IN A");
        assert!(r.answers().is_empty());
    }
    // Without the rcode rule's name: SERVFAIL stays.
    let r = udp(addr(port), &Query::new("other.a.org.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn rewrite_config_errors_show_position() {
    let (code, out, err) =
        Sextant::check(bin(), ".:1053 {\n  rewrite name regex ( x\n}\n").unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains(":2:11: rewrite: invalid regex matching pattern: ("),
        "{all}"
    );
}
