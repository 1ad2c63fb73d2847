//! End-to-end tests of the `dns64` plugin: AAAA queries over IPv6 and IPv4 loopback to the real
//! binary with a scripted upstream; synthesised answers, TTLs and the counter checked.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v6(port: u16) -> SocketAddr {
    format!("[::1]:{port}").parse().unwrap()
}

fn upstream() -> Upstream {
    Upstream::records(&[
        "v4only.example. 300 IN A 192.0.2.33",
        "v4only.example. 300 IN A 198.51.100.7",
        "both.example. 300 IN A 192.0.2.1",
        "both.example. 300 IN AAAA 2001:db8::1",
        "alias.example. 300 IN CNAME v4only.example.",
        "alias.example. 300 IN A 192.0.2.33",
    ])
    .unwrap()
}

fn start(opts: &str, up: &Upstream, port: u16, mport: u16) -> Option<Sextant> {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback");
        return None;
    }
    let cf = format!(
        ".:{port} {{\n    prometheus 127.0.0.1:{mport}\n    dns64 {opts}\n    forward . {}\n}}\n",
        up.addr()
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(v4(port), Duration::from_secs(10)).unwrap();
    Some(s)
}

#[test]
fn ipv6_clients_get_synthesised_aaaa() {
    let up = upstream();
    let (port, mport) = (free_port(), free_port());
    let Some(_s) = start("", &up, port, mport) else {
        return;
    };
    let r = udp(
        v6(port),
        &Query::new("v4only.example.", RecordType::AAAA),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,rd"); // a fresh reply, like CoreDNS: no RA
                                    // No SOA in the upstream's NODATA reply: TTLs are capped at 600, here 300 stays.
    assert_eq!(
        r.answers(),
        vec![
            "v4only.example. 300 IN AAAA 64:ff9b::c000:221",
            "v4only.example. 300 IN AAAA 64:ff9b::c633:6407",
        ]
    );
    // Real AAAA records are kept as they are.
    let r = udp(v6(port), &Query::new("both.example.", RecordType::AAAA), T).unwrap();
    assert_eq!(r.answers(), vec!["both.example. 300 IN AAAA 2001:db8::1"]);
    // CNAMEs are carried over, the A behind them translated.
    let r = udp(v6(port), &Query::new("alias.example.", RecordType::AAAA), T).unwrap();
    assert_eq!(
        r.answers(),
        vec![
            "alias.example. 300 IN CNAME v4only.example.",
            "alias.example. 300 IN AAAA 64:ff9b::c000:221",
        ]
    );
    // NXDOMAIN is passed on.
    let r = udp(v6(port), &Query::new("nope.example.", RecordType::AAAA), T).unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    // IPv4 clients are not translated; A queries neither.
    let r = udp(
        v4(port),
        &Query::new("v4only.example.", RecordType::AAAA),
        T,
    )
    .unwrap();
    assert!(r.answers().is_empty());
    let r = udp(v6(port), &Query::new("v4only.example.", RecordType::A), T).unwrap();
    assert_eq!(r.answers().len(), 2);
    let (_, body) = http_get(v4(mport), "/metrics", T).unwrap();
    let want = format!("coredns_dns64_requests_translated_total{{server=\"dns://:{port}\"}} 2");
    assert!(body.lines().any(|l| l == want), "{want} in\n{body}");
}

#[test]
fn prefix_translate_all_and_allow_ipv4() {
    let up = upstream();
    let (port, mport) = (free_port(), free_port());
    let Some(_s) = start(
        "2001:db8:122:344::/64 {\n        translate_all\n        allow_ipv4\n    }",
        &up,
        port,
        mport,
    ) else {
        return;
    };
    let r = udp(v4(port), &Query::new("both.example.", RecordType::AAAA), T).unwrap();
    assert_eq!(
        r.answers(),
        vec!["both.example. 300 IN AAAA 2001:db8:122:344:c0:2:100:0"]
    );
    let r = udp(
        v4(port),
        &Query::new("v4only.example.", RecordType::AAAA),
        T,
    )
    .unwrap();
    assert_eq!(
        r.answers()[0],
        "v4only.example. 300 IN AAAA 2001:db8:122:344:c0:2:2100:0"
    );
}

#[test]
fn bad_prefixes_name_file_line_column() {
    for (line, want) in [
        (
            "dns64 64:ff9b::/100",
            ":2:11: dns64: invalid prefix length \"64:ff9b::/100\"",
        ),
        ("dns64 10.0.0.0/8", ":2:11: dns64:"),
        (
            "dns64 {\n        prefix\n    }",
            ":3:9: prefix: wrong argument count",
        ),
        (
            "dns64 {\n        translate\n    }",
            ":3:9: translate: unknown property 'translate'",
        ),
    ] {
        let cf = format!(".:53 {{\n    {line}\n}}\n");
        let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
        assert_ne!(code, 0);
        assert!(format!("{out}{err}").contains(want), "{line}: {out}{err}");
    }
}
