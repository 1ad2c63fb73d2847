//! The `shed` plugin end to end: with a socket that keeps up, every query is answered whole and
//! nothing is counted; with replies throttled (a network namespace whose link from the server
//! is rate limited by `tc`), a bounded flood fills the socket's write stack, queries are
//! dropped before the chain and counted as `coredns_shed_dropped_total{reason="query"}`, and
//! the server answers again once the link is free. Bad options at file:line:column.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// The sum of a metric's samples whose label text contains `labels`.
fn metric(mport: u16, name: &str, labels: &str) -> f64 {
    let (_, body) = http_get(SocketAddr::from(([127, 0, 0, 1], mport)), "/metrics", T).unwrap();
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim() == name)
                .unwrap_or(false)
        })
        .count()
}

fn check_whoami(r: &Reply, id: u16, ip: &str, proto: &str, cport: u16) {
    assert_eq!(r.id(), id);
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.question().unwrap(), "shed.example. IN A");
    assert!(r.answers().is_empty());
    assert_eq!(
        r.additional(),
        vec![
            format!("shed.example. 0 IN A {ip}"),
            format!("_{proto}.shed.example. 0 IN SRV 0 0 {cport} .")
        ]
    );
}

fn udp_whoami(server: SocketAddr, id: u16) -> (Reply, u16) {
    let c = UdpSocket::bind(SocketAddr::new(server.ip(), 0)).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let q = Query::new("shed.example.", RecordType::A).id(id);
    c.send_to(&q.to_bytes(), server).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    (
        Reply::parse(buf[..n].to_vec()).unwrap(),
        c.local_addr().unwrap().port(),
    )
}

#[test]
fn a_socket_that_keeps_up_answers_everything_and_drops_nothing() {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        ".:{port} {{\n    bind 127.0.0.1\n    multisocket 2\n    shed\n    prometheus 127.0.0.1:{mport}\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(server, Duration::from_secs(10)).unwrap();
    assert_eq!(
        threads_named(s.pid(), "sextant-shed"),
        2,
        "one writer per UDP socket"
    );
    for id in 0..64 {
        let (r, cport) = udp_whoami(server, id);
        check_whoami(&r, id, "127.0.0.1", "udp", cport);
    }
    let mut c = TcpConn::connect(server, T).unwrap();
    let cport = c.local_addr().unwrap().port();
    c.send_query(&Query::new("shed.example.", RecordType::A).id(99))
        .unwrap();
    check_whoami(&c.recv_reply(T).unwrap(), 99, "127.0.0.1", "tcp", cport);
    assert_eq!(metric(mport, "coredns_shed_dropped_total", ""), 0.0);
    assert!(metric(mport, "coredns_dns_requests_total", "proto=\"udp\"") >= 64.0);
}

#[test]
fn a_throttled_socket_sheds_a_bounded_flood_and_recovers() {
    let ns = NetNs::create("shed").unwrap();
    let veth = ns.add_veth("169.254.213.1/30", "169.254.213.2/30").unwrap();
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        ".:{port} {{\n    bind 169.254.213.1\n    multisocket 1\n    shed\n    prometheus 127.0.0.1:{mport}\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    let server: SocketAddr = format!("169.254.213.1:{port}").parse().unwrap();
    s.wait_dns(server, Duration::from_secs(10)).unwrap();
    // Replies towards the namespace leave at 256 kbit/s through a deep queue: the server's
    // socket buffer fills and its writer falls behind.
    let tc = |args: &[&str]| {
        let out = std::process::Command::new("tc")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tc(&[
        "qdisc",
        "add",
        "dev",
        &veth.host_if,
        "root",
        "tbf",
        "rate",
        "256kbit",
        "burst",
        "4kb",
        "limit",
        "16mb",
    ]);
    // 30000 queries from 8 sockets in the namespace, as fast as they go, never read.
    const SENT: usize = 30_000;
    let flood = format!(
        "import socket,struct\n\
         q=lambda i: struct.pack('>HHHHHH',i&0xffff,0x0100,1,0,0,0)+b'\\x04shed\\x07example\\x00'+struct.pack('>HH',1,1)\n\
         ss=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range(8)]\n\
         for i in range({SENT}): ss[i%8].sendto(q(i),('169.254.213.1',{port}))\n"
    );
    ns.exec_ok("python3", &["-c", &flood]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let queries = metric(mport, "coredns_shed_dropped_total", "reason=\"query\"");
    let responses = metric(mport, "coredns_shed_dropped_total", "reason=\"response\"");
    let served = metric(mport, "coredns_dns_requests_total", "proto=\"udp\"");
    eprintln!(
        "shed: {SENT} queries sent; shed before the chain {queries}, replies dropped {responses}, \
         requests counted by prometheus {served}"
    );
    assert!(queries > 0.0, "no query was shed");
    assert!(
        metric(
            mport,
            "coredns_shed_dropped_total",
            &format!("server=\"dns://169.254.213.1:{port}\"")
        ) > 0.0,
        "drops not labelled with the listener"
    );
    // Shed queries are not counted as handled requests.
    assert!(
        served + queries <= SENT as f64 + 10.0,
        "{served} + {queries}"
    );
    assert!(served < SENT as f64);
    // The link freed (its queue dropped), the server answers again, in full.
    tc(&["qdisc", "del", "dev", &veth.host_if, "root"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (r, cport) = udp_whoami(server, 4242);
    check_whoami(&r, 4242, "169.254.213.1", "udp", cport);
    assert!(s.exited().is_none());
}

#[test]
fn bad_options_are_reported_at_their_position() {
    for (body, want) in [
        (
            "shed 1",
            "Corefile:2:10: shed: Wrong argument count or unexpected line ending after '1'",
        ),
        (
            "shed {\n        x\n    }",
            "Corefile:2:5: shed: shed takes no options",
        ),
        ("shed\n    shed", "Corefile:3:5"),
    ] {
        let cf = format!(".:{} {{\n    {body}\n    whoami\n}}\n", free_port());
        let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
        assert_ne!(code, 0, "{body}: accepted");
        let text = format!("{out}{err}");
        assert!(text.contains(want), "{body}: {text}");
    }
    // DNS over TLS has no UDP socket to protect: refused, as CoreDNS does.
    let p = free_port();
    let cf = format!("tls://.:{p} {{\n    tls cert.pem key.pem\n    shed\n    whoami\n}}\n");
    let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
    assert_ne!(code, 0);
    let text = format!("{out}{err}");
    assert!(
        text.contains(&format!(
            "Corefile:3:5: shed: only plain DNS server blocks are supported; \"tls://.:{p}\" uses transport \"tls\""
        )),
        "{text}"
    );
}

/// Answers that wait (forwarded) go through the write stack too, and arrive whole.
#[test]
fn forwarded_answers_go_through_the_stack() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.50", req.name()))
            .action()
    })
    .unwrap();
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        ".:{port} {{\n    bind 127.0.0.1\n    shed\n    prometheus 127.0.0.1:{mport}\n    forward . {}\n}}\n",
        up.addr()
    );
    let mut s = Sextant::start(bin(), &cf);
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(server, Duration::from_secs(10)).unwrap();
    for id in 0..32u16 {
        let name = format!("f{id}.example.");
        let r = udp(server, &Query::new(&name, RecordType::A).id(id), T).unwrap();
        assert_eq!(r.id(), id);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,rd", "the upstream's flags");
        assert_eq!(r.question().unwrap(), format!("{name} IN A"));
        assert_eq!(r.answers(), vec![format!("{name} 60 IN A 192.0.2.50")]);
        assert!(r.authority().is_empty());
    }
    assert_eq!(metric(mport, "coredns_shed_dropped_total", ""), 0.0);
}
