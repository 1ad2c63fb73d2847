//! End-to-end tests of the `local` plugin: localhost names and the local reverse zones answered
//! in place by the real binary, whole replies checked, the counter read from /metrics.

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

/// (name, type, rcode, answer, authority)
type Case<'a> = (&'a str, RecordType, &'a str, Vec<String>, Vec<String>);

const SOA: &str = "604800 IN SOA localhost. root.localhost. 1 0 0 0 604800";

#[test]
fn localhost_names_and_reverse_zones() {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(".:{port} {{\n    prometheus 127.0.0.1:{mport}\n    local\n    whoami\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let ask = |n: &str, t| udp(addr(port), &Query::new(n, t), T).unwrap();
    let cases: Vec<Case<'_>> = vec![
        (
            "localhost.",
            RecordType::A,
            "NOERROR",
            vec!["localhost. 604800 IN A 127.0.0.1".into()],
            vec![],
        ),
        (
            "LocalHost.",
            RecordType::AAAA,
            "NOERROR",
            vec!["LocalHost. 604800 IN AAAA ::1".into()],
            vec![],
        ),
        (
            "localhost.",
            RecordType::MX,
            "NOERROR",
            vec![],
            vec![format!("localhost. {SOA}")],
        ),
        (
            "localhost.",
            RecordType::SOA,
            "NOERROR",
            vec![format!("localhost. {SOA}")],
            vec![],
        ),
        (
            "localhost.",
            RecordType::NS,
            "NOERROR",
            vec!["localhost. 604800 IN NS localhost.".into()],
            vec![],
        ),
        (
            "a.localhost.",
            RecordType::A,
            "NOERROR",
            vec!["a.localhost. 604800 IN A 127.0.0.1".into()],
            vec![],
        ),
        (
            "a.localhost.",
            RecordType::TXT,
            "NOERROR",
            vec![],
            vec![format!("a.localhost. {SOA}")],
        ),
        (
            "localhost.example.com.",
            RecordType::AAAA,
            "NOERROR",
            vec!["localhost.example.com. 604800 IN AAAA ::1".into()],
            vec![],
        ),
        (
            "127.in-addr.arpa.",
            RecordType::NS,
            "NOERROR",
            vec!["127.in-addr.arpa. 604800 IN NS localhost.".into()],
            vec![],
        ),
        (
            "0.in-addr.arpa.",
            RecordType::A,
            "NOERROR",
            vec![],
            vec![format!("0.in-addr.arpa. {SOA}")],
        ),
        (
            "1.0.0.127.in-addr.arpa.",
            RecordType::PTR,
            "NOERROR",
            vec!["1.0.0.127.in-addr.arpa. 604800 IN PTR localhost.".into()],
            vec![],
        ),
        (
            "1.0.0.127.in-addr.arpa.",
            RecordType::A,
            "NOERROR",
            vec![],
            vec![format!("127.in-addr.arpa. {SOA}")],
        ),
        (
            "2.0.0.127.in-addr.arpa.",
            RecordType::PTR,
            "NXDOMAIN",
            vec![],
            vec![format!("127.in-addr.arpa. {SOA}")],
        ),
        (
            "x.255.in-addr.arpa.",
            RecordType::PTR,
            "NXDOMAIN",
            vec![],
            vec![format!("255.in-addr.arpa. {SOA}")],
        ),
    ];
    for (name, t, rcode, ans, auth) in cases {
        let r = ask(name, t);
        assert_eq!(r.rcode_name(), rcode, "{name} {t}");
        assert_eq!(
            r.flags(),
            "qr,rd",
            "{name} {t}: not authoritative, like CoreDNS"
        );
        assert_eq!(r.answers(), ans, "{name} {t}");
        assert_eq!(r.authority(), auth, "{name} {t}");
        assert!(r.additional().is_empty());
    }
    // Everything else goes on (whoami answers).
    let r = ask("example.com.", RecordType::A);
    assert_eq!(r.flags(), "qr,aa,rd");
    let (_, body) = http_get(addr(mport), "/metrics", T).unwrap();
    assert!(
        body.lines()
            .any(|l| l == "coredns_local_localhost_requests_total 3"),
        "{body}"
    );
}

#[test]
fn localhost_prefix_off_and_bad_options() {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n    local {{\n        localhost_prefix off\n    }}\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let r = udp(
        addr(port),
        &Query::new("localhost.example.com.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.flags(), "qr,aa,rd", "whoami answered");
    let r = udp(addr(port), &Query::new("a.localhost.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["a.localhost. 604800 IN A 127.0.0.1"]);
    for (body, want) in [
        ("local x", ":2:11: local: wrong argument count"),
        (
            "local {\n        localhost_prefix maybe\n    }",
            ":3:26: localhost_prefix: localhost_prefix expects 'on' or 'off', got \"maybe\"",
        ),
        (
            "local {\n        other\n    }",
            ":3:9: other: unknown property 'other'",
        ),
    ] {
        let (code, out, err) =
            Sextant::check(bin(), &format!(".:53 {{\n    {body}\n}}\n")).unwrap();
        assert_ne!(code, 0);
        assert!(format!("{out}{err}").contains(want), "{body}: {out}{err}");
    }
}
