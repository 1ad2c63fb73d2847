//! End-to-end tests of the `hosts` plugin: the real binary with a hosts file and inline lines,
//! queried over real UDP and TCP on 127.0.0.1.

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

fn start(corefile: &str, hosts: &str, port: u16) -> Sextant {
    let mut s = Sextant::builder(bin(), corefile)
        .file("hosts", hosts)
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10))
        .expect("server answers");
    s
}

fn both(port: u16, q: &Query) -> [Reply; 2] {
    [
        udp(addr(port), q, T).unwrap(),
        tcp(addr(port), q, T).unwrap(),
    ]
}

const HOSTS: &str = "# test hosts\n\
    10.0.0.1 host.example.org alias.example.org\n\
    10.0.0.2 host.example.org\n\
    2001:db8::1 host.example.org v6only.example.org\n\
    10.9.9.9 outside.example.com\n\
    10.0.0.5 *.wild.example.org\n\
    garbage line here\n\
    300.1.1.1 bad.example.org\n";

#[test]
fn a_aaaa_ptr_answers_over_udp_and_tcp() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} 0.0.10.in-addr.arpa:{port} {{\n  hosts hosts example.org {{\n    10.0.0.3 inline.example.org\n  }}\n}}\n"
    );
    let _s = start(&cf, HOSTS, port);
    for r in both(port, &Query::new("Host.Example.ORG.", RecordType::A).id(77)) {
        assert_eq!(r.id(), 77);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.question().unwrap(), "Host.Example.ORG. IN A");
        // Owner is the lower-cased qname (CoreDNS's request.Name()); name compression may point
        // it at the question's spelling, so compare without case.
        let lower: Vec<String> = r.answers().iter().map(|a| a.to_lowercase()).collect();
        assert_eq!(
            lower,
            vec![
                "host.example.org. 3600 in a 10.0.0.1",
                "host.example.org. 3600 in a 10.0.0.2"
            ]
        );
        assert!(r.authority().is_empty());
        assert!(r.additional().is_empty());
    }
    for r in both(port, &Query::new("host.example.org.", RecordType::AAAA)) {
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(
            r.answers(),
            vec!["host.example.org. 3600 IN AAAA 2001:db8::1"]
        );
    }
    for r in both(port, &Query::new("inline.example.org.", RecordType::A)) {
        assert_eq!(r.answers(), vec!["inline.example.org. 3600 IN A 10.0.0.3"]);
    }
    // Automatic PTR: every name of the address, file first then inline.
    for r in both(port, &Query::new("1.0.0.10.in-addr.arpa.", RecordType::PTR)) {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(
            r.answers(),
            vec![
                "1.0.0.10.in-addr.arpa. 3600 IN PTR host.example.org.",
                "1.0.0.10.in-addr.arpa. 3600 IN PTR alias.example.org."
            ]
        );
    }
    for r in both(port, &Query::new("3.0.0.10.in-addr.arpa.", RecordType::PTR)) {
        assert_eq!(
            r.answers(),
            vec!["3.0.0.10.in-addr.arpa. 3600 IN PTR inline.example.org."]
        );
    }
    // Name outside the origins was skipped when parsing.
    let r = udp(
        addr(port),
        &Query::new("outside.example.com.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    // An unknown name without fallthrough: SERVFAIL (CoreDNS has no SOA for NXDOMAIN).
    for r in both(port, &Query::new("nope.example.org.", RecordType::A)) {
        assert_eq!(r.rcode_name(), "SERVFAIL");
        assert_eq!(r.flags(), "qr,rd");
        assert!(r.answers().is_empty());
    }
    // Unknown PTR is passed on; the end of the chain is SERVFAIL.
    let r = udp(
        addr(port),
        &Query::new("9.0.0.10.in-addr.arpa.", RecordType::PTR),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn nodata_for_existing_name_and_other_types() {
    let port = free_port();
    let cf = format!(".:{port} {{\n  hosts hosts\n}}\n");
    let _s = start(&cf, HOSTS, port);
    for (name, t) in [
        ("host.example.org.", RecordType::MX),
        ("host.example.org.", RecordType::TXT),
        ("v6only.example.org.", RecordType::A),
        ("alias.example.org.", RecordType::AAAA),
    ] {
        for r in both(port, &Query::new(name, t)) {
            assert_eq!(r.rcode_name(), "NOERROR", "{name} {t}");
            assert_eq!(r.flags(), "qr,aa,rd");
            assert!(r.answers().is_empty());
            assert!(r.authority().is_empty());
        }
    }
    // An invalid address line was skipped.
    let r = udp(
        addr(port),
        &Query::new("bad.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn wildcard_matches_exactly_one_label_and_has_no_ptr() {
    let port = free_port();
    let cf = format!(".:{port} {{\n  hosts hosts\n}}\n");
    let _s = start(&cf, HOSTS, port);
    for r in both(port, &Query::new("foo.wild.example.org.", RecordType::A)) {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(
            r.answers(),
            vec!["foo.wild.example.org. 3600 IN A 10.0.0.5"]
        );
    }
    for name in ["a.b.wild.example.org.", "wild.example.org."] {
        let r = udp(addr(port), &Query::new(name, RecordType::A), T).unwrap();
        assert_eq!(r.rcode_name(), "SERVFAIL", "{name}");
    }
    let r = udp(
        addr(port),
        &Query::new("5.0.0.10.in-addr.arpa.", RecordType::PTR),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn options_ttl_no_reverse_fallthrough() {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  hosts hosts {{\n    ttl 60\n    no_reverse\n    fallthrough example.org\n    fallthrough_unsupported\n  }}\n  whoami\n}}\n"
    );
    let _s = start(&cf, HOSTS, port);
    for r in both(port, &Query::new("host.example.org.", RecordType::A)) {
        assert_eq!(
            r.answers(),
            vec![
                "host.example.org. 60 IN A 10.0.0.1",
                "host.example.org. 60 IN A 10.0.0.2"
            ]
        );
    }
    // Not in the file, inside the fallthrough zone: whoami answers (empty answer, additional).
    for r in both(port, &Query::new("other.example.org.", RecordType::A)) {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert!(r.answers().is_empty());
        assert_eq!(r.additional()[0], "other.example.org. 0 IN A 127.0.0.1");
    }
    // Unsupported type with fallthrough_unsupported: passed on even for an existing name.
    let r = udp(
        addr(port),
        &Query::new("host.example.org.", RecordType::MX),
        T,
    )
    .unwrap();
    assert_eq!(r.additional().len(), 2, "whoami answered");
    // no_reverse: PTR goes to whoami.
    let r = udp(
        addr(port),
        &Query::new("1.0.0.10.in-addr.arpa.", RecordType::PTR),
        T,
    )
    .unwrap();
    assert!(r.answers().is_empty());
    assert_eq!(r.additional().len(), 2);
    // Outside the fallthrough zone: SERVFAIL.
    let r = udp(addr(port), &Query::new("x.example.net.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn reload_by_mtime_and_metrics() {
    let port = free_port();
    let mport = free_port();
    let cf = format!(
        ".:{port} {{\n  hosts hosts {{\n    reload 200ms\n    10.1.1.1 inline.example.org\n  }}\n  prometheus 127.0.0.1:{mport}\n}}\n"
    );
    let s = start(&cf, "10.0.0.1 a.example.org\n", port);
    let r = udp(addr(port), &Query::new("a.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["a.example.org. 3600 IN A 10.0.0.1"]);
    let (code, body) = http_get(addr(mport), "/metrics", T).unwrap();
    assert_eq!(code, 200);
    // 1 file name + 1 reverse, 1 inline name + 1 reverse.
    assert!(
        body.contains("coredns_hosts_entries{hostsfile=\"hosts\"} 4"),
        "{body}"
    );
    assert!(
        body.contains("coredns_hosts_reload_timestamp_seconds "),
        "{body}"
    );

    s.write_file("hosts", "10.0.0.2 a.example.org\n10.0.0.3 b.example.org\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let r = udp(addr(port), &Query::new("b.example.org.", RecordType::A), T).unwrap();
        got = r.answers();
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(got, vec!["b.example.org. 3600 IN A 10.0.0.3"]);
    let r = tcp(addr(port), &Query::new("a.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["a.example.org. 3600 IN A 10.0.0.2"]);
    let (_, body) = http_get(addr(mport), "/metrics", T).unwrap();
    assert!(
        body.contains("coredns_hosts_entries{hostsfile=\"hosts\"} 6"),
        "{body}"
    );
}

#[test]
fn reload_zero_keeps_first_read_and_missing_file_warns() {
    let port = free_port();
    let cf = format!(".:{port} {{\n  hosts hosts {{\n    reload 0\n  }}\n}}\n");
    let s = start(&cf, "10.0.0.1 a.example.org\n", port);
    s.write_file("hosts", "10.0.0.2 a.example.org\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = udp(addr(port), &Query::new("a.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["a.example.org. 3600 IN A 10.0.0.1"]);

    let port = free_port();
    let cf =
        format!(".:{port} {{\n  hosts missing-file {{\n    10.0.0.7 i.example.org\n  }}\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    s.wait_for_line(
        "[WARNING] plugin/hosts: File does not exist: missing-file",
        T,
    )
    .unwrap();
    let r = udp(addr(port), &Query::new("i.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["i.example.org. 3600 IN A 10.0.0.7"]);
}

#[test]
fn check_reports_config_errors_with_position() {
    let cf = ".:1053 {\n  hosts {\n    ttl 0\n  }\n}\n";
    let (code, out, err) = Sextant::check(bin(), cf).unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(all.contains(":3:9: ttl: ttl provided is invalid"), "{all}");
    let cf = ".:1053 {\n  hosts\n  hosts\n}\n";
    let (code, out, err) = Sextant::check(bin(), cf).unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains("this plugin can only be used once per Server Block"),
        "{all}"
    );
}

/// Wildcards (CoreDNS 1.14.5) against the real CoreDNS when `COREDNS_BIN` is set: a file
/// wildcard and inline entries (an exact name of the other family still lets the wildcard answer
/// its family), the apex, two labels down, case, the literal `*` name, other types and PTR.
#[test]
fn wildcards_answer_like_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!(
            "wildcards_answer_like_coredns: COREDNS_BIN not set, comparison with CoreDNS not run"
        );
        return;
    };
    let hosts = "10.0.0.10 *.apps.example.org\n2001:db8::10 *.apps.example.org\n";
    let corefile = |port: u16| {
        format!(
            ".:{port} {{\n  hosts hosts example.org {{\n    192.168.1.10 *.example.org\n    192.168.1.11 www.example.org\n    ::1 v6.example.org\n    fallthrough example.org\n  }}\n  whoami\n}}\n"
        )
    };
    let (p1, p2) = (free_port(), free_port());
    let _ours = start(&corefile(p1), hosts, p1);
    let mut theirs = Sextant::builder(Path::new(&coredns), &corefile(p2))
        .file("hosts", hosts)
        .start();
    theirs
        .wait_dns(addr(p2), Duration::from_secs(10))
        .expect("CoreDNS answers");
    for (name, t) in [
        ("a.example.org.", RecordType::A),
        ("www.example.org.", RecordType::A),
        ("v6.example.org.", RecordType::A),
        ("v6.example.org.", RecordType::AAAA),
        ("a.example.org.", RecordType::AAAA),
        ("b.a.example.org.", RecordType::A),
        ("example.org.", RecordType::A),
        ("APPS.Example.org.", RecordType::A),
        ("x.apps.example.org.", RecordType::A),
        ("x.apps.example.org.", RecordType::AAAA),
        ("x.y.apps.example.org.", RecordType::A),
        ("*.example.org.", RecordType::A),
        ("a.example.org.", RecordType::MX),
        ("10.0.0.10.in-addr.arpa.", RecordType::PTR),
        ("11.1.168.192.in-addr.arpa.", RecordType::PTR),
    ] {
        let q = Query::new(name, t);
        let (a, b) = (udp(addr(p1), &q, T).unwrap(), udp(addr(p2), &q, T).unwrap());
        // The additional section of a fallthrough is whoami's (the client's port differs).
        let w = |r: &Reply| (r.rcode_name(), r.flags(), r.answers(), r.authority());
        assert_eq!(w(&a), w(&b), "{name} {t}: Sextant vs CoreDNS");
    }
}
