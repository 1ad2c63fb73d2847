//! End-to-end tests of the `rewrite` plugin's `edns0` and `cname` rules: the real binary over UDP
//! and TCP on 127.0.0.1, `forward` to testkit's scripted upstream (which records the options it
//! received) or `hosts` behind it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;
use sextant_wire as w;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start(body: &str) -> (Sextant, u16) {
    let port = free_port();
    let cf = format!(".:{port} {{\n{body}\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    (s, port)
}

fn ask(port: u16, q: &Query, tcp_: bool) -> Reply {
    if tcp_ {
        tcp(addr(port), q, T).unwrap()
    } else {
        udp(addr(port), q, T).unwrap()
    }
}

/// The OPT record of a raw message as Sextant's wire crate reads it.
fn opt_of(bytes: &[u8]) -> Option<w::Edns> {
    w::Message::parse(bytes).unwrap().edns
}

/// The OPT of the latest request the upstream got for `name` (wait_dns probes come first).
fn sent_opt(up: &Upstream, name: &str, n: u64) -> Option<w::Edns> {
    up.wait_queries(n, T).unwrap();
    let reqs = up.requests();
    let last = reqs
        .iter()
        .rev()
        .find(|r| r.name() == name)
        .expect("request");
    opt_of(&last.bytes)
}

fn opts(e: &w::Edns) -> Vec<(u16, Vec<u8>)> {
    e.options.iter().map(|o| (o.code, o.data.clone())).collect()
}

/// An upstream answering A 192.0.2.1 for every name, echoing every EDNS option it got.
fn echoing_upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| {
        let q = w::Message::parse(&req.bytes).unwrap();
        let mut r = w::Message::reply_to(&q);
        r.header.ra = true;
        r.answers.push(w::Record::new(
            q.questions[0].name.clone(),
            60,
            w::RData::A(Ipv4Addr::new(192, 0, 2, 1)),
        ));
        if let Some(qe) = &q.edns {
            let mut e = w::Edns::new(1232);
            e.options = qe.options.clone();
            r.edns = Some(e);
        }
        Action::Raw(r.to_wire())
    })
    .unwrap()
}

#[test]
fn edns0_rules_change_what_forward_sends_upstream() {
    let up = echoing_upstream();
    let (_s, port) = start(&format!(
        "  rewrite continue edns0 local set 0xffee abcd\n  rewrite continue edns0 local set 0xffed {{client_ip}}\n  rewrite continue edns0 local append 0xffec {{protocol}}\n  rewrite continue edns0 subnet set 24 56\n  rewrite continue edns0 local unset 100\n  rewrite edns0 nsid append\n  forward . {}",
        up.addr()
    ));
    for (i, over_tcp) in [false, true].into_iter().enumerate() {
        let q = Query::new("www.example.org.", RecordType::A)
            .id(7)
            .edns(1232)
            .edns_option(100, b"gone")
            .edns_option(0xffee, b"client");
        let r = ask(port, &q, over_tcp);
        assert_eq!(r.id(), 7);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,rd,ra");
        assert_eq!(r.question().unwrap(), "www.example.org. IN A");
        assert_eq!(r.answers(), vec!["www.example.org. 60 IN A 192.0.2.1"]);
        assert!(r.authority().is_empty() && r.additional().is_empty());
        let proto: &[u8] = if over_tcp { b"tcp" } else { b"udp" };
        let want: Vec<(u16, Vec<u8>)> = vec![
            (0xffee, b"abcd".to_vec()),
            (0xffed, vec![127, 0, 0, 1]),
            (0xffec, proto.to_vec()),
            (8, vec![0, 1, 24, 0, 127, 0, 0]),
            (3, vec![]),
        ];
        // What the upstream received.
        let sent = sent_opt(&up, "www.example.org.", i as u64 + 2).expect("OPT sent upstream");
        assert_eq!(sent.udp_size, 1232);
        assert_eq!(opts(&sent), want, "tcp={over_tcp}");
        // The upstream's OPT (it echoed the options) reaches the client as is.
        let e = r.edns().unwrap();
        assert_eq!(e.options, want, "tcp={over_tcp}");
        assert_eq!(e.udp_size, 1232);
    }
}

#[test]
fn edns0_rule_gives_a_client_without_edns_an_opt_upstream() {
    let up = echoing_upstream();
    let (_s, port) = start(&format!(
        "  rewrite edns0 local set 0xffee 0x61626364\n  forward . {}",
        up.addr()
    ));
    for (i, over_tcp) in [false, true].into_iter().enumerate() {
        let r = ask(
            port,
            &Query::new("noedns.example.", RecordType::A),
            over_tcp,
        );
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.answers(), vec!["noedns.example. 60 IN A 192.0.2.1"]);
        // The client did not ask for EDNS: no OPT back (CoreDNS would add one, see README).
        assert!(r.edns().is_none());
        let sent =
            sent_opt(&up, "noedns.example.", i as u64 + 2).expect("OPT created for upstream");
        assert_eq!(sent.udp_size, 4096);
        assert!(!sent.dnssec_ok);
        assert_eq!(opts(&sent), vec![(0xffee, b"abcd".to_vec())]);
    }
}

#[test]
fn edns0_revert_removes_or_restores_the_option_in_the_reply() {
    let up = echoing_upstream();
    // Added with revert: the upstream sees it, the client does not.
    let (s, port) = start(&format!(
        "  rewrite edns0 local set 0xffee abcd revert\n  forward . {}",
        up.addr()
    ));
    for over_tcp in [false, true] {
        let q = Query::new("revert.example.", RecordType::A).edns(1232);
        let r = ask(port, &q, over_tcp);
        assert_eq!(r.answers(), vec!["revert.example. 60 IN A 192.0.2.1"]);
        assert_eq!(r.edns().unwrap().options, vec![]);
    }
    let sent = sent_opt(&up, "revert.example.", 3).unwrap();
    assert_eq!(opts(&sent), vec![(0xffee, b"abcd".to_vec())]);
    drop(s);
    // Only the second rule reverts: the reply carries the first rule's value (README example).
    up.reset_counters();
    let (_s, port) = start(&format!(
        "  rewrite continue {{\n    edns0 local set 0xffee abcd\n  }}\n  rewrite edns0 local replace 0xffee bcde revert\n  forward . {}",
        up.addr()
    ));
    for over_tcp in [false, true] {
        let q = Query::new("revert2.example.", RecordType::A).edns(1232);
        let r = ask(port, &q, over_tcp);
        assert_eq!(r.answers(), vec!["revert2.example. 60 IN A 192.0.2.1"]);
        assert_eq!(r.edns().unwrap().options, vec![(0xffee, b"abcd".to_vec())]);
    }
    let sent = sent_opt(&up, "revert2.example.", 3).unwrap();
    assert_eq!(opts(&sent), vec![(0xffee, b"bcde".to_vec())]);
}

#[test]
fn edns0_options_are_echoed_on_plugin_replies_unless_reverted() {
    let (_s, port) = start(
        "  rewrite continue edns0 local set 0xffee abcd\n  rewrite continue edns0 nsid set\n  rewrite continue edns0 subnet set 24 56\n  rewrite edns0 local set 0xfff0 gone revert\n  hosts {\n    10.0.0.1 www.b.org\n  }",
    );
    for over_tcp in [false, true] {
        let q = Query::new("www.b.org.", RecordType::A)
            .id(3)
            .edns(1232)
            .do_bit();
        let r = ask(port, &q, over_tcp);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.answers(), vec!["www.b.org. 3600 IN A 10.0.0.1"]);
        let e = r.edns().unwrap();
        assert!(e.do_bit);
        assert_eq!(e.opt_count, 1);
        // ECS is not an option CoreDNS echoes; the reverted one is gone.
        assert_eq!(e.options, vec![(0xffee, b"abcd".to_vec()), (3, vec![])]);
        // Without EDNS from the client nothing is echoed.
        let r = ask(port, &Query::new("www.b.org.", RecordType::A), over_tcp);
        assert_eq!(r.answers(), vec!["www.b.org. 3600 IN A 10.0.0.1"]);
        assert!(r.edns().is_none());
    }
}

fn cdn_upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| match req.name().as_str() {
        "my-app.com." => req
            .reply()
            .ra(true)
            .answers(&[
                "my-app.com. 200 IN CNAME my-app.example.",
                "my-app.example. 200 IN CNAME my-app.com.cdn.example.net.",
                "my-app.com.cdn.example.net. 300 IN A 20.2.0.1",
                "my-app.com.cdn.example.net. 300 IN A 20.2.0.2",
            ])
            .action(),
        "my-app.com.other.cdn.com." => req
            .reply()
            .ra(true)
            .answer("my-app.com.other.cdn.com. 100 IN A 30.3.1.2")
            .action(),
        "gone.com." => req
            .reply()
            .ra(true)
            .answers(&[
                "gone.com. 200 IN CNAME gone.com.cdn.example.net.",
                "gone.com.cdn.example.net. 300 IN A 20.2.0.9",
            ])
            .action(),
        _ => req.reply().ra(true).rcode(ResponseCode::NXDomain).action(),
    })
    .unwrap()
}

#[test]
fn cname_rule_rewrites_the_target_and_resolves_it() {
    let up = cdn_upstream();
    let (_s, port) = start(&format!(
        "  rewrite cname regex (.*)\\.cdn\\.example\\.net\\. {{1}}.other.cdn.com.\n  forward . {}",
        up.addr()
    ));
    for over_tcp in [false, true] {
        let r = ask(
            port,
            &Query::new("my-app.com.", RecordType::A).id(11).edns(1232),
            over_tcp,
        );
        assert_eq!(r.id(), 11);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,rd,ra");
        assert_eq!(r.question().unwrap(), "my-app.com. IN A");
        assert_eq!(
            r.answers(),
            vec![
                "my-app.com. 200 IN CNAME my-app.example.",
                "my-app.example. 200 IN CNAME my-app.com.other.cdn.com.",
                "my-app.com.other.cdn.com. 100 IN A 30.3.1.2",
            ]
        );
        assert!(r.authority().is_empty() && r.additional().is_empty());
        // The new target's lookup fails (NXDOMAIN): the chain up to it stays, the rcode too.
        let r = ask(port, &Query::new("gone.com.", RecordType::A), over_tcp);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(
            r.answers(),
            vec!["gone.com. 200 IN CNAME gone.com.other.cdn.com."]
        );
    }
    assert_eq!(up.queries_for("my-app.com.other.cdn.com."), 2);
    assert_eq!(up.queries_for("gone.com.other.cdn.com."), 2);
    // A name without a matching CNAME is untouched.
    let r = ask(port, &Query::new("other.com.", RecordType::A), false);
    assert_eq!(r.rcode_name(), "NXDOMAIN");
}

#[test]
fn cname_exact_rule_with_hosts_and_a_second_block() {
    // The new target lives in another server block: the lookup goes through the whole server.
    let up = cdn_upstream();
    let port = free_port();
    let cf = format!(
        "example.net:{port} {{\n  hosts {{\n    10.9.9.9 edge.example.net\n  }}\n}}\n.:{port} {{\n  rewrite cname exact My-App.Example. edge.example.net\n  forward . {}\n}}\n",
        up.addr()
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    for over_tcp in [false, true] {
        let r = ask(port, &Query::new("my-app.com.", RecordType::A), over_tcp);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(
            r.answers(),
            vec![
                "my-app.com. 200 IN CNAME edge.example.net.",
                "edge.example.net. 3600 IN A 10.9.9.9",
            ]
        );
    }
}
