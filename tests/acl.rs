//! End-to-end tests of the `acl` plugin: queries from several loopback source addresses
//! (127.0.0.0/8 and ::1) to the real binary; whole replies (rcode, flags, EDE option) and the
//! four counters checked.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// Sends `q` from `src` (a loopback address) and returns the reply, or None if none came.
fn from(src: &str, port: u16, q: &Query, wait: Duration) -> Option<Reply> {
    let src: IpAddr = src.parse().unwrap();
    let dst = SocketAddr::new(
        if src.is_ipv4() {
            "127.0.0.1".parse().unwrap()
        } else {
            "::1".parse().unwrap()
        },
        port,
    );
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(&q.to_bytes(), dst).unwrap();
    let mut buf = vec![0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(Reply::parse(buf[..n].to_vec()).unwrap()),
        Err(_) => None,
    }
}

fn metrics(m: SocketAddr) -> Vec<String> {
    let (_, body) = http_get(m, "/metrics", T).unwrap();
    body.lines()
        .filter(|l| l.starts_with("coredns_acl_"))
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn allow_block_filter_drop_by_type_network_and_zone() {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        r#"example.org:{port} {{
    prometheus 127.0.0.1:{mport}
    acl a.example.org {{
        allow net 127.0.1.0/24
        block net 127.0.0.0/16
    }}
    acl {{
        filter type MX TXT net 127.0.0.2
        drop net 127.0.0.3 ::1
        block type AAAA
        allow
        block
    }}
    whoami
}}
"#
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
    .unwrap();
    let q = |n: &str, t| Query::new(n, t).edns(1232);

    // a.example.org: the first rule decides; 127.0.1.x allowed, the rest of 127.0/16 blocked.
    let r = from("127.0.1.7", port, &q("a.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.additional()[0], "a.example.org. 0 IN A 127.0.1.7");
    let r = from("127.0.0.9", port, &q("x.a.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    assert_eq!(r.flags(), "qr,rd");
    assert!(r.answers().is_empty() && r.authority().is_empty() && r.additional().is_empty());
    let e = r.edns().unwrap();
    assert_eq!(e.options, vec![(15, 15u16.to_be_bytes().to_vec())]);
    assert!(e.do_bit);
    // Outside a.example.org the second rule: filter MX/TXT from 127.0.0.2.
    let r = from("127.0.0.2", port, &q("b.example.org.", RecordType::TXT), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,rd");
    assert!(r.answers().is_empty() && r.additional().is_empty());
    assert_eq!(
        r.edns().unwrap().options,
        vec![(15, 17u16.to_be_bytes().to_vec())]
    );
    let r = from("127.0.0.2", port, &q("b.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.flags(), "qr,aa,rd");
    // Drop: nothing comes back, over IPv4 and IPv6.
    assert!(from(
        "127.0.0.3",
        port,
        &q("b.example.org.", RecordType::A),
        Duration::from_millis(500)
    )
    .is_none());
    // Block AAAA from anyone else; without EDNS in the query CoreDNS still adds its OPT.
    let r = from("127.0.0.4", port, &q("b.example.org.", RecordType::AAAA), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    let r = from("127.0.0.4", port, &q("b.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");

    let m = metrics(SocketAddr::from(([127, 0, 0, 1], mport)));
    let server = format!("dns://:{port}");
    for want in [
        format!("coredns_acl_allowed_requests_total{{server=\"{server}\",view=\"\"}} 3"),
        format!("coredns_acl_blocked_requests_total{{server=\"{server}\",view=\"\",zone=\"a.example.org.\"}} 1"),
        format!("coredns_acl_blocked_requests_total{{server=\"{server}\",view=\"\",zone=\"example.org.\"}} 1"),
        format!("coredns_acl_filtered_requests_total{{server=\"{server}\",view=\"\",zone=\"example.org.\"}} 1"),
        format!("coredns_acl_dropped_requests_total{{server=\"{server}\",view=\"\",zone=\"example.org.\"}} 1"),
    ] {
        assert!(m.contains(&want), "missing {want} in {m:#?}");
    }
}

#[test]
fn ipv6_sources_and_single_addresses() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback");
        return;
    }
    let port = free_port();
    let cf = format!(".:{port} {{\n    acl {{\n        block net ::1\n        allow net *\n    }}\n    whoami\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
    .unwrap();
    let q = Query::new("example.org.", RecordType::A);
    assert_eq!(from("::1", port, &q, T).unwrap().rcode_name(), "REFUSED");
    assert_eq!(
        from("127.0.0.1", port, &q, T).unwrap().rcode_name(),
        "NOERROR"
    );
}

#[test]
fn bad_rules_name_file_line_column() {
    for (rule, want) in [
        (
            "deny net 1.2.3.4",
            ":3:9: deny: unexpected token \"deny\"; expect 'allow', 'block', 'filter' or 'drop'",
        ),
        (
            "block net 10.0.0.0/33",
            ":3:19: block: illegal CIDR notation \"10.0.0.0/33\"",
        ),
        (
            "block type BOGUS",
            ":3:20: block: unexpected token \"BOGUS\"; expect legal QTYPE",
        ),
        (
            "block net",
            ":3:15: block: no token specified in \"net\" section",
        ),
    ] {
        let cf = format!(".:53 {{\n    acl {{\n        {rule}\n    }}\n}}\n");
        let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
        assert_ne!(code, 0);
        assert!(format!("{out}{err}").contains(want), "{rule}: {out}{err}");
    }
}

/// Runs two blocks of the same zone, one with a view, each with its own `acl`, on `binary`;
/// sends queries from several sources and returns the acl counters scraped from /metrics.
fn view_counters(binary: &Path) -> (u16, Vec<String>) {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        r#"example.org:{port} {{
    view inner {{
        expr incidr(client_ip(), '127.0.1.0/24')
    }}
    prometheus 127.0.0.1:{mport}
    acl {{
        block net 127.0.1.5
        allow
    }}
    whoami
}}
example.org:{port} {{
    prometheus 127.0.0.1:{mport}
    acl {{
        filter type TXT
        drop net 127.0.0.3
    }}
    whoami
}}
"#
    );
    let mut s = Sextant::start(binary, &cf);
    s.wait_dns(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
    .unwrap();
    let q = |t| Query::new("a.example.org.", t).edns(1232);
    let rcode = |src: &str, t| from(src, port, &q(t), T).map(|r| r.rcode_name());
    // The view's block: 127.0.1.5 blocked, 127.0.1.6 allowed (twice).
    assert_eq!(
        rcode("127.0.1.5", RecordType::A).as_deref(),
        Some("REFUSED")
    );
    assert_eq!(
        rcode("127.0.1.6", RecordType::A).as_deref(),
        Some("NOERROR")
    );
    assert_eq!(
        rcode("127.0.1.6", RecordType::TXT).as_deref(),
        Some("NOERROR")
    );
    // The block without a view: TXT filtered, 127.0.0.3 dropped, the rest allowed.
    let r = from("127.0.0.2", port, &q(RecordType::TXT), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.edns().unwrap().options),
        ("NOERROR", vec![(15, 17u16.to_be_bytes().to_vec())])
    );
    assert_eq!(
        rcode("127.0.0.2", RecordType::A).as_deref(),
        Some("NOERROR")
    );
    assert!(from(
        "127.0.0.3",
        port,
        &q(RecordType::A),
        Duration::from_millis(500)
    )
    .is_none());
    let mut m = metrics(SocketAddr::from(([127, 0, 0, 1], mport)));
    m.sort();
    (port, m)
}

/// The counters carry the `view` label of the block that handled the query (CoreDNS's
/// `metrics.WithView`): the view's name in the view's block, empty in the other.
#[test]
fn counters_carry_the_blocks_view_name() {
    let (port, m) = view_counters(bin());
    let server = format!("dns://:{port}");
    let want = [
        format!("coredns_acl_allowed_requests_total{{server=\"{server}\",view=\"\"}} 1"),
        format!("coredns_acl_allowed_requests_total{{server=\"{server}\",view=\"inner\"}} 2"),
        format!("coredns_acl_blocked_requests_total{{server=\"{server}\",view=\"inner\",zone=\"example.org.\"}} 1"),
        format!("coredns_acl_dropped_requests_total{{server=\"{server}\",view=\"\",zone=\"example.org.\"}} 1"),
        format!("coredns_acl_filtered_requests_total{{server=\"{server}\",view=\"\",zone=\"example.org.\"}} 1"),
    ];
    let counters: Vec<&String> = m.iter().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(counters, want.iter().collect::<Vec<_>>(), "{m:#?}");

    let Some(cd) = coredns_bin() else {
        eprintln!("COREDNS_BIN not set: the view labels are not compared with CoreDNS");
        return;
    };
    let (cport, cm) = view_counters(&cd);
    let theirs: Vec<String> = cm
        .iter()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.replace(&format!("dns://:{cport}"), &server))
        .collect();
    assert_eq!(
        counters,
        theirs.iter().collect::<Vec<_>>(),
        "differs from CoreDNS"
    );
}
