//! Self-tests of the DNS client against the scripted upstream: every Action, both
//! transports, pipelining, counters, stop/restart, closed ports.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn a_query(name: &str) -> Query {
    Query::new(name, RecordType::A)
}

fn answer_a(req: &UpstreamRequest) -> Action {
    req.reply()
        .answer(&format!("{} 60 IN A 192.0.2.1", req.name()))
        .action()
}

#[test]
fn reply_over_udp_and_tcp_with_counters() {
    let up = Upstream::start(answer_a).unwrap();
    let r = udp(up.addr(), &a_query("One.Example.").id(42), T).unwrap();
    assert_eq!(r.id(), 42);
    assert_eq!(r.flags(), "qr,rd");
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.answers(), vec!["one.example. 60 IN A 192.0.2.1"]);
    assert!(r.edns().is_none(), "no OPT in reply to a query without OPT");

    let r = tcp(up.addr(), &a_query("two.example.").edns(4096).do_bit(), T).unwrap();
    assert_eq!(r.answers(), vec!["two.example. 60 IN A 192.0.2.1"]);
    let e = r.edns().unwrap();
    assert!(e.do_bit);
    assert_eq!(e.udp_size, 1232);

    assert_eq!(up.queries(), 2);
    assert_eq!(up.queries_udp(), 1);
    assert_eq!(up.queries_tcp(), 1);
    assert_eq!(up.queries_for("ONE.example"), 1);
    assert_eq!(up.queries_for("two.example."), 1);
    assert_eq!(up.queries_for("three.example."), 0);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].proto, Proto::Udp);
    assert_eq!(reqs[0].id(), 42);
    assert_eq!(reqs[1].proto, Proto::Tcp);
    assert_eq!(up.stats().tcp_connections, 1);
    up.reset_counters();
    assert_eq!(up.queries(), 0);
}

#[test]
fn records_responder_answers_nodata_nxdomain() {
    let up = Upstream::records(&[
        "example.org. 300 IN SOA ns.example.org. h.example.org. 1 7200 1800 86400 60",
        "www.example.org. 300 IN A 192.0.2.80",
        "www.example.org. 300 IN A 192.0.2.81",
        "alias.example.org. 300 IN CNAME www.example.org.",
    ])
    .unwrap();
    let r = udp(up.addr(), &a_query("WWW.example.org."), T).unwrap();
    assert_eq!(r.flags(), "qr,aa,rd");
    // Owners carry the question's spelling, as real servers answer.
    assert_eq!(
        r.answers_sorted(),
        vec![
            "WWW.example.org. 300 IN A 192.0.2.80",
            "WWW.example.org. 300 IN A 192.0.2.81"
        ]
    );
    let r = udp(
        up.addr(),
        &Query::new("www.example.org.", RecordType::AAAA),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.answers().is_empty());
    assert_eq!(r.authority().len(), 1);
    let r = udp(up.addr(), &a_query("nope.example.org."), T).unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert!(r.authority()[0].contains("SOA"));
    let r = udp(up.addr(), &a_query("alias.example.org."), T).unwrap();
    assert_eq!(
        r.answers(),
        vec!["alias.example.org. 300 IN CNAME www.example.org."]
    );
}

#[test]
fn drop_gives_no_reply() {
    let up = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let got = udp_raw(up.addr(), &a_query("x."), Duration::from_millis(300)).unwrap();
    assert!(got.is_none());
    let err = udp(up.addr(), &a_query("x."), Duration::from_millis(200)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(up.queries(), 2);
}

#[test]
fn delay_does_not_block_other_queries() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        if req.name().starts_with("slow") {
            Action::Delay(Duration::from_millis(400), Box::new(answer_a(req)))
        } else {
            answer_a(req)
        }
    })
    .unwrap();
    // Pipelined on one TCP connection: the fast answer overtakes the slow one.
    let mut c = TcpConn::connect(up.addr(), T).unwrap();
    let start = Instant::now();
    c.send(&a_query("slow.example.").id(1).to_bytes()).unwrap();
    c.send(&a_query("fast.example.").id(2).to_bytes()).unwrap();
    let first = c.recv_reply(T).unwrap();
    assert_eq!(first.id(), 2);
    assert!(start.elapsed() < Duration::from_millis(300));
    let second = c.recv_reply(T).unwrap();
    assert_eq!(second.id(), 1);
    assert!(start.elapsed() >= Duration::from_millis(400));
    // And over UDP.
    let start = Instant::now();
    let r = udp(up.addr(), &a_query("slow2.example."), T).unwrap();
    assert_eq!(r.answers().len(), 1);
    assert!(start.elapsed() >= Duration::from_millis(400));
}

#[test]
fn raw_garbage_is_sent_verbatim() {
    let up =
        Upstream::start(|_: &UpstreamRequest| Action::Raw(vec![0xde, 0xad, 0xbe, 0xef])).unwrap();
    let got = udp_raw(up.addr(), &a_query("x."), T).unwrap();
    assert_eq!(got, Some(vec![0xde, 0xad, 0xbe, 0xef]));
    let err = udp(up.addr(), &a_query("x."), T).unwrap_err();
    assert!(matches!(err, Error::Decode { len: 4, .. }), "{err}");
    let got = tcp_raw(up.addr(), &a_query("x."), T).unwrap();
    assert_eq!(got, Some(vec![0xde, 0xad, 0xbe, 0xef]));
}

#[test]
fn multiple_sends_wrong_id_then_right() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        Action::Multiple(vec![
            req.reply()
                .id(req.id().wrapping_add(1))
                .answer("x. 1 IN A 192.0.2.66")
                .action(),
            Action::Raw(vec![1, 2, 3]),
            answer_a(req),
        ])
    })
    .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    sock.send_to(&a_query("x.").id(100).to_bytes(), up.addr())
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut got = Vec::new();
    for _ in 0..3 {
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        got.push(buf[..n].to_vec());
    }
    assert_eq!(Reply::parse(got[0].clone()).unwrap().id(), 101);
    assert_eq!(got[1], vec![1, 2, 3]);
    let good = Reply::parse(got[2].clone()).unwrap();
    assert_eq!(good.id(), 100);
    assert_eq!(good.answers(), vec!["x. 60 IN A 192.0.2.1"]);
}

#[test]
fn tcp_reset_close_and_partial_write() {
    let up = Upstream::start(|req: &UpstreamRequest| match req.name().as_str() {
        "reset." => Action::TcpReset,
        "close." => Action::TcpCloseBeforeAnswer,
        "partial." => {
            let full = answer_a(req);
            let Action::Reply(m) = full else {
                unreachable!()
            };
            let b = m.to_vec().unwrap();
            let mut half = (b.len() as u16).to_be_bytes().to_vec();
            half.extend_from_slice(&b[..b.len() / 2]);
            Action::Multiple(vec![Action::TcpWrite(half), Action::TcpReset])
        }
        _ => answer_a(req),
    })
    .unwrap();
    let mut c = TcpConn::connect(up.addr(), T).unwrap();
    c.send_query(&a_query("reset.")).unwrap();
    match c.recv(T) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        other => panic!("expected RST, got {other:?}"),
    }
    let mut c = TcpConn::connect(up.addr(), T).unwrap();
    c.send_query(&a_query("close.")).unwrap();
    assert!(matches!(c.recv(T), Err(Error::Closed)));
    let mut c = TcpConn::connect(up.addr(), T).unwrap();
    c.send_query(&a_query("partial.")).unwrap();
    assert!(c.recv(T).is_err());
    // UDP ignores TCP-only actions.
    assert!(
        udp_raw(up.addr(), &a_query("reset."), Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    assert_eq!(tcp_raw(up.addr(), &a_query("close."), T).unwrap(), None);
}

#[test]
fn tcp_drip_and_bad_length() {
    let up = Upstream::start(|req: &UpstreamRequest| match req.name().as_str() {
        "drip." => {
            let Action::Reply(m) = answer_a(req) else {
                unreachable!()
            };
            Action::TcpDrip(Duration::from_millis(5), m)
        }
        _ => Action::TcpBadLength,
    })
    .unwrap();
    let mut c = TcpConn::connect(up.addr(), T).unwrap();
    let start = Instant::now();
    c.send_query(&a_query("drip.")).unwrap();
    let r = c.recv_reply(T).unwrap();
    assert_eq!(r.answers(), vec!["drip. 60 IN A 192.0.2.1"]);
    let min = Duration::from_millis(5) * (r.len() as u32 + 1);
    assert!(start.elapsed() >= min, "{:?} < {min:?}", start.elapsed());

    let mut c = TcpConn::connect(up.addr(), T).unwrap();
    c.send_query(&a_query("bad.")).unwrap();
    let err = c.recv(Duration::from_millis(300)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        !c.is_closed(Duration::from_millis(50)),
        "bad length keeps the connection open"
    );
}

#[test]
fn pipelining_fifty_queries_on_one_connection() {
    let up = Upstream::start(answer_a).unwrap();
    let mut c = TcpConn::connect(up.addr(), T).unwrap();
    for i in 0..50u16 {
        c.send(&a_query(&format!("q{i}.example.")).id(i).to_bytes())
            .unwrap();
    }
    let mut ids: Vec<u16> = (0..50).map(|_| c.recv_reply(T).unwrap().id()).collect();
    ids.sort();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    assert_eq!(up.queries_tcp(), 50);
    assert_eq!(up.stats().tcp_connections, 1);
    // Split length prefix over two writes is reassembled.
    let b = a_query("split.").id(999).to_bytes();
    let mut framed = (b.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&b);
    c.send_raw(&framed[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.send_raw(&framed[1..]).unwrap();
    assert_eq!(c.recv_reply(T).unwrap().id(), 999);
    c.shutdown_write().unwrap();
    assert!(c.is_closed(T));
}

#[test]
fn set_handler_stop_restart_and_closed_port() {
    let up = Upstream::start(answer_a).unwrap();
    let q = a_query("live.");
    assert_eq!(udp(up.addr(), &q, T).unwrap().rcode_name(), "NOERROR");
    up.set_handler(|req: &UpstreamRequest| req.reply().rcode(ResponseCode::Refused).action());
    assert_eq!(udp(up.addr(), &q, T).unwrap().rcode_name(), "REFUSED");

    let mut held = TcpConn::connect(up.addr(), T).unwrap();
    up.stop();
    assert!(!up.is_running());
    assert!(held.is_closed(T), "stop closes open TCP connections");
    let err = udp(up.addr(), &q, T).unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == ErrorKind::ConnectionRefused),
        "{err}"
    );
    assert!(TcpConn::connect(up.addr(), T).is_err());
    up.restart().unwrap();
    assert_eq!(udp(up.addr(), &q, T).unwrap().rcode_name(), "REFUSED");
    assert_eq!(tcp(up.addr(), &q, T).unwrap().rcode_name(), "REFUSED");

    let dead = closed_port();
    let start = Instant::now();
    let err = udp(dead, &q, T).unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == ErrorKind::ConnectionRefused),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn handler_panic_is_counted_and_dropped() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        if req.name() == "boom." {
            panic!("handler bug");
        }
        answer_a(req)
    })
    .unwrap();
    assert!(
        udp_raw(up.addr(), &a_query("boom."), Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        udp(up.addr(), &a_query("ok."), T).unwrap().answers().len(),
        1
    );
    assert_eq!(up.stats().handler_panics, 1);
    // Garbage queries are counted as malformed and never reach the handler.
    assert!(
        udp_raw(up.addr(), &[1u8, 2, 3][..], Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    up.wait_queries(2, T).unwrap();
    assert_eq!(up.stats().malformed, 1);
    assert!(up.wait_queries(10, Duration::from_millis(100)).is_err());
}

#[test]
fn truncated_reply_and_extended_rcode() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        if req.qtype() == RecordType::TXT {
            req.reply().tc(true).action()
        } else {
            req.reply().rcode(ResponseCode::BADVERS).edns(1232).action()
        }
    })
    .unwrap();
    let r = udp(up.addr(), &Query::new("t.", RecordType::TXT), T).unwrap();
    assert!(r.truncated());
    assert_eq!(r.flags(), "qr,tc,rd");
    let r = udp(up.addr(), &a_query("v.").edns(1232).edns_version(1), T).unwrap();
    assert_eq!(r.rcode_name(), "BADVERS");
    assert_eq!(r.edns().unwrap().version, 0);
}
