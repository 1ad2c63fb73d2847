//! Self-tests of the fault proxy in front of the scripted upstream.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.1", req.name()))
            .action()
    })
    .unwrap()
}

fn q(name: &str) -> Query {
    Query::new(name, RecordType::A)
}

#[test]
fn transparent_relay_udp_and_tcp() {
    let up = upstream();
    let p = FaultProxy::start(up.addr(), Faults::none()).unwrap();
    let r = udp(p.addr(), &q("a.example.").id(3), T).unwrap();
    assert_eq!((r.id(), r.answers().len()), (3, 1));
    let mut c = TcpConn::connect(p.addr(), T).unwrap();
    for i in 0..10u16 {
        c.send(&q("b.example.").id(i).to_bytes()).unwrap();
    }
    for i in 0..10u16 {
        assert_eq!(c.recv_reply(T).unwrap().id(), i);
    }
    let s = p.stats();
    assert_eq!(
        (
            s.udp_queries,
            s.udp_replies,
            s.tcp_connections,
            s.tcp_replies
        ),
        (1, 1, 1, 10)
    );
    assert_eq!(up.queries_udp(), 1);
    assert_eq!(up.queries_tcp(), 10);
}

#[test]
fn delay_applies_to_udp_and_tcp() {
    let up = upstream();
    let p = FaultProxy::start(up.addr(), Faults::none().delay(Duration::from_millis(300))).unwrap();
    let start = Instant::now();
    udp(p.addr(), &q("d."), T).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    let start = Instant::now();
    tcp(p.addr(), &q("d."), T).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    p.set_faults(Faults::none());
    let start = Instant::now();
    udp(p.addr(), &q("d."), T).unwrap();
    assert!(start.elapsed() < Duration::from_millis(300));
}

#[test]
fn loss_is_seeded_and_counted() {
    let up = upstream();
    let p = FaultProxy::start(up.addr(), Faults::none().loss(1.0)).unwrap();
    assert!(udp_raw(p.addr(), &q("l."), Duration::from_millis(150))
        .unwrap()
        .is_none());
    assert_eq!(p.stats().dropped, 1);
    assert_eq!(up.queries(), 0);

    let run = |seed: u64| -> Vec<bool> {
        p.set_faults(Faults::none().loss(0.5).seed(seed));
        (0..16)
            .map(|i| {
                udp_raw(p.addr(), &q("l.").id(i), Duration::from_millis(150))
                    .unwrap()
                    .is_some()
            })
            .collect()
    };
    let a = run(42);
    let b = run(42);
    assert_eq!(a, b, "same seed, same losses");
    let answered = a.iter().filter(|x| **x).count();
    assert!(answered > 0 && answered < 16, "answered {answered}/16");
}

#[test]
fn duplicate_reorder_and_truncate() {
    let up = upstream();
    let p = FaultProxy::start(up.addr(), Faults::none().duplicate(1.0)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 1500];
    sock.send_to(&q("dup.").id(9).to_bytes(), p.addr()).unwrap();
    for _ in 0..2 {
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(Reply::parse(buf[..n].to_vec()).unwrap().id(), 9);
    }
    assert_eq!(p.stats().duplicated, 1);

    p.set_faults(Faults::none().reorder(1.0));
    sock.send_to(&q("r1.").id(1).to_bytes(), p.addr()).unwrap();
    // Make sure the first reply is held before the second query goes out.
    up.wait_queries(2, T).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    sock.send_to(&q("r2.").id(2).to_bytes(), p.addr()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        ids.push(Reply::parse(buf[..n].to_vec()).unwrap().id());
    }
    assert_eq!(ids, vec![2, 1]);
    // A lone held reply is still released.
    sock.send_to(&q("r3.").id(3).to_bytes(), p.addr()).unwrap();
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(Reply::parse(buf[..n].to_vec()).unwrap().id(), 3);

    p.set_faults(Faults::none().truncate(true));
    let r = udp(p.addr(), &q("t.example."), T).unwrap();
    assert!(r.truncated());
    assert!(r.answers().is_empty());
    assert_eq!(r.question().unwrap(), "t.example. IN A");
}

#[test]
fn tcp_reset_and_drip() {
    let up = upstream();
    let p = FaultProxy::start(up.addr(), Faults::none().tcp_reset(true)).unwrap();
    let mut c = TcpConn::connect(p.addr(), T).unwrap();
    c.send_query(&q("x.")).unwrap();
    match c.recv(T) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        other => panic!("expected RST, got {other:?}"),
    }
    assert_eq!(p.stats().tcp_resets, 1);
    // UDP unaffected by TCP faults.
    assert_eq!(udp(p.addr(), &q("x."), T).unwrap().answers().len(), 1);

    p.set_faults(Faults::none().tcp_drip(Duration::from_millis(3)));
    let start = Instant::now();
    let r = tcp(p.addr(), &q("drip."), T).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(3) * r.len() as u32);
}
