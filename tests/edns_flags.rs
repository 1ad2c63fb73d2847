//! End-to-end tests of the plugins that adjust queries and replies on their way: `header`,
//! `minimal`, `nsid` and `bufsize`, with the real binary, a scripted upstream and whole replies.

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

fn start(cf: &str, port: u16) -> Sextant {
    let mut s = Sextant::start(bin(), cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    s
}

fn upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| {
        let name = req.name();
        let b = req.reply().aa(true);
        let b = match name.as_str() {
            "www.example.org." => b
                .answer("www.example.org. 60 IN A 192.0.2.1")
                .authority("example.org. 60 IN NS ns.example.org.")
                .additional("ns.example.org. 60 IN A 192.0.2.53"),
            "big.example.org." => {
                let mut b = b;
                for i in 0..60 {
                    b = b.answer(&format!("big.example.org. 60 IN A 10.0.0.{i}"));
                }
                b
            }
            _ => b
                .rcode(ResponseCode::NXDomain)
                .authority("example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 60"),
        };
        b.action()
    })
    .unwrap()
}

#[test]
fn header_sets_and_clears_query_and_response_flags() {
    let up = upstream();
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n    header {{\n        query clear rd\n        response set ra\n        response clear aa\n    }}\n    forward . {}\n}}\n",
        up.addr()
    );
    let _s = start(&cf, port);
    let r = udp(
        addr(port),
        &Query::new("www.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    // rd cleared on the way in (the upstream saw no RD and its reply has none), ra set, aa cleared.
    assert_eq!(r.flags(), "qr,ra");
    assert_eq!(r.answers(), vec!["www.example.org. 60 IN A 192.0.2.1"]);
    assert!(up
        .requests()
        .iter()
        .all(|q| !q.message.metadata.recursion_desired));
    // An error reply the server writes follows the query as the chain left it (no rd).
    let cf2 = format!(".:{port} {{\n    header {{\n        query clear rd\n    }}\n}}\n");
    drop(_s);
    let port2 = free_port();
    let _s2 = start(
        &cf2.replace(&format!(":{port}"), &format!(":{port2}")),
        port2,
    );
    let r = udp(addr(port2), &Query::new("x.example.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert_eq!(r.flags(), "qr");
}

#[test]
fn header_query_set_and_several_flags_per_rule() {
    let up = upstream();
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n    header {{\n        query set rd\n        response set aa rd\n        response clear ra\n    }}\n    forward . {}\n}}\n",
        up.addr()
    );
    let _s = start(&cf, port);
    let r = udp(
        addr(port),
        &Query::new("www.example.org.", RecordType::A).rd(false),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.answers(), vec!["www.example.org. 60 IN A 192.0.2.1"]);
    // The query was sent without RD; the upstream saw it set.
    let seen = up.requests();
    let www = seen
        .iter()
        .find(|q| q.name() == "www.example.org.")
        .unwrap();
    assert!(www.message.metadata.recursion_desired);
    for (rules, want) in [
        (
            "query set cd",
            ":3:19: query: setting up rule: unknown/unsupported flag=cd",
        ),
        (
            "response flip aa",
            ":3:18: response: setting up rule: unknown flag action=flip",
        ),
    ] {
        let (code, out, err) = Sextant::check(
            bin(),
            &format!(".:53 {{\n    header {{\n        {rules}\n    }}\n}}\n"),
        )
        .unwrap();
        assert_ne!(code, 0);
        assert!(format!("{out}{err}").contains(want), "{rules}: {out}{err}");
    }
}

#[test]
fn minimal_strips_positive_replies_only() {
    let up = upstream();
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n    forward . {}\n    minimal\n}}\n",
        up.addr()
    );
    let _s = start(&cf, port);
    for r in [
        udp(
            addr(port),
            &Query::new("www.example.org.", RecordType::A),
            T,
        )
        .unwrap(),
        tcp(
            addr(port),
            &Query::new("www.example.org.", RecordType::A),
            T,
        )
        .unwrap(),
    ] {
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.answers(), vec!["www.example.org. 60 IN A 192.0.2.1"]);
        assert!(r.authority().is_empty() && r.additional().is_empty());
    }
    let r = udp(
        addr(port),
        &Query::new("nope.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(
        r.authority(),
        vec!["example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 60"]
    );
}

#[test]
fn nsid_answers_queries_that_ask() {
    let port = free_port();
    let cf = format!("example.org:{port} {{\n    whoami\n    nsid Use The Force\n}}\n");
    let _s = start(&cf, port);
    let q = Query::new("whoami.example.org.", RecordType::A)
        .edns(1232)
        .edns_option(3, b"");
    for r in [
        udp(addr(port), &q, T).unwrap(),
        tcp(addr(port), &q, T).unwrap(),
    ] {
        assert_eq!(r.flags(), "qr,aa,rd");
        let e = r.edns().unwrap();
        assert_eq!(e.options, vec![(3, b"Use The Force".to_vec())]);
        assert!(e.do_bit, "CoreDNS sets DO on an OPT nsid adds");
        assert_eq!(r.additional().len(), 2);
    }
    let r = udp(
        addr(port),
        &Query::new("whoami.example.org.", RecordType::A).edns(1232),
        T,
    )
    .unwrap();
    let e = r.edns().unwrap();
    assert!(e.options.is_empty() && !e.do_bit);
    let r = udp(
        addr(port),
        &Query::new("whoami.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert!(r.edns().is_none());
    // Without DATA the host name is used.
    let port2 = free_port();
    let _s2 = start(
        &format!("example.org:{port2} {{\n    whoami\n    nsid\n}}\n"),
        port2,
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let r = udp(addr(port2), &q, T).unwrap();
    assert_eq!(
        r.edns().unwrap().options,
        vec![(3, host.trim().as_bytes().to_vec())]
    );
    let (code, out, err) = Sextant::check(bin(), ".:53 {\n    nsid a\n    nsid b\n}\n").unwrap();
    assert_ne!(code, 0);
    assert!(format!("{out}{err}")
        .contains(":3:5: nsid: this plugin can only be used once per Server Block"));
}

#[test]
fn bufsize_caps_the_size_upstream_and_for_truncation() {
    let up = upstream();
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n    bufsize 600\n    forward . {}\n}}\n",
        up.addr()
    );
    let _s = start(&cf, port);
    let r = udp(
        addr(port),
        &Query::new("www.example.org.", RecordType::A).edns(4096),
        T,
    )
    .unwrap();
    assert_eq!(r.answers(), vec!["www.example.org. 60 IN A 192.0.2.1"]);
    // The reply's OPT record carries the size as bufsize left it, like CoreDNS's SizeAndDo
    // reading the request it passed down (checked against CoreDNS 1.14.7).
    assert_eq!(r.edns().unwrap().udp_size, 600);
    let seen = up.requests();
    let www = seen
        .iter()
        .find(|q| q.name() == "www.example.org.")
        .unwrap();
    assert_eq!(www.message.edns.as_ref().unwrap().max_payload(), 600);
    // 60 A records (about 1 KB) do not fit 600 bytes: truncated although the client offered 4096.
    let r = udp(
        addr(port),
        &Query::new("big.example.org.", RecordType::A).edns(4096),
        T,
    )
    .unwrap();
    assert!(r.truncated());
    assert!(r.len() <= 600, "{} bytes", r.len());
    // Smaller offers are left alone.
    up.reset_counters();
    let _ = udp(
        addr(port),
        &Query::new("www.example.org.", RecordType::A).edns(512),
        T,
    )
    .unwrap();
    let seen = up.requests();
    assert_eq!(
        seen.last()
            .unwrap()
            .message
            .edns
            .as_ref()
            .unwrap()
            .max_payload(),
        512
    );
    // Without an argument the size is 1232.
    let port2 = free_port();
    let _s2 = start(
        &format!(
            ".:{port2} {{\n    bufsize\n    forward . {}\n}}\n",
            up.addr()
        ),
        port2,
    );
    up.reset_counters();
    let r = udp(
        addr(port2),
        &Query::new("www.example.org.", RecordType::A).edns(4096),
        T,
    )
    .unwrap();
    assert_eq!(r.edns().unwrap().udp_size, 1232);
    let seen = up.requests();
    assert_eq!(
        seen.last()
            .unwrap()
            .message
            .edns
            .as_ref()
            .unwrap()
            .max_payload(),
        1232
    );
    for (arg, want) in [
        ("511", ":2:13: bufsize: invalid buffer size '511'"),
        ("x", ":2:13: bufsize: invalid"),
        ("1 2", ":2:15: bufsize: wrong argument count"),
    ] {
        let (code, out, err) =
            Sextant::check(bin(), &format!(".:53 {{\n    bufsize {arg}\n}}\n")).unwrap();
        assert_ne!(code, 0);
        assert!(format!("{out}{err}").contains(want), "{arg}: {out}{err}");
    }
}
