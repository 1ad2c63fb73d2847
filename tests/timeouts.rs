//! The `timeouts` plugin end to end over TCP and DNS over TLS: idle connections closed on time
//! (and not before), a message left half sent closed by the read timeout, a client that stops
//! reading closed by the write timeout, `maxtcpqueries` answering exactly that many queries on a
//! connection, bad options at file:line:column, DNS over HTTPS connections (HTTP/2 idle,
//! HTTP/1.1 half request head) closed by idle and read, DoH clients that read nothing (HTTP/1.1
//! and HTTP/2) closed by write, and (with `COREDNS_BIN`) the same query cap and the same DoH
//! closing times as CoreDNS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start(timeouts: &str) -> (Sextant, u16) {
    let port = free_port();
    let cf = format!(".:{port} {{\n    bind 127.0.0.1\n{timeouts}    whoami\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    (s, port)
}

fn check_whoami(r: &Reply, id: u16, cport: u16) {
    assert_eq!(r.id(), id);
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.question().unwrap(), "to.example. IN A");
    assert!(r.answers().is_empty());
    assert_eq!(
        r.additional(),
        vec![
            "to.example. 0 IN A 127.0.0.1".to_string(),
            format!("_tcp.to.example. 0 IN SRV 0 0 {cport} .")
        ]
    );
}

fn framed(id: u16) -> Vec<u8> {
    let q = Query::new("to.example.", RecordType::A).id(id).to_bytes();
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    out
}

/// Time until the server closes `c` (EOF or reset), reading and discarding what it sends; None
/// if it is still open after `limit`.
fn closed_within(c: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 65536];
    while t0.elapsed() < limit {
        c.set_read_timeout(Some((limit - t0.elapsed()).max(Duration::from_millis(1))))
            .unwrap();
        match c.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

#[test]
fn idle_connections_close_after_the_idle_timeout_and_not_before() {
    let (_s, port) = start("    timeouts {\n        idle 2s\n    }\n");
    let (_d, dport) = start("");
    // A connection that asked one question, then nothing.
    let mut c = TcpConn::connect(addr(port), T).unwrap();
    let cport = c.local_addr().unwrap().port();
    c.send_query(&Query::new("to.example.", RecordType::A).id(7))
        .unwrap();
    check_whoami(&c.recv_reply(T).unwrap(), 7, cport);
    let mut c = c.stream().try_clone().unwrap();
    // A connection that never asked anything, to each server.
    let mut silent = TcpStream::connect(addr(port)).unwrap();
    let mut default = TcpStream::connect(addr(dport)).unwrap();
    let took = closed_within(&mut c, Duration::from_secs(5)).expect("idle connection left open");
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(3000),
        "closed after {took:?}"
    );
    let took = closed_within(&mut silent, Duration::from_secs(3)).expect("silent one left open");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    // Without the plugin the idle timeout is 10 s: still open.
    assert!(
        closed_within(&mut default, Duration::from_millis(500)).is_none(),
        "closed before the default idle timeout"
    );
}

#[test]
fn a_half_sent_message_is_closed_by_the_read_timeout() {
    let (_s, port) = start("    timeouts {\n        read 1s\n        idle 30s\n    }\n");
    let mut c = TcpStream::connect(addr(port)).unwrap();
    // Length 40, then 3 bytes of it.
    c.write_all(&[0, 40, 1, 2, 3]).unwrap();
    let took = closed_within(&mut c, Duration::from_secs(4)).expect("left open");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2000),
        "closed after {took:?}"
    );
    // A whole message sent slowly within the read timeout is answered.
    let mut c = TcpStream::connect(addr(port)).unwrap();
    let cport = c.local_addr().unwrap().port();
    let f = framed(9);
    c.write_all(&f[..4]).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    c.write_all(&f[4..]).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut len = [0u8; 2];
    c.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut body).unwrap();
    check_whoami(&Reply::parse(body).unwrap(), 9, cport);
}

/// Pipelines queries without reading until the server stops reading them (its answers fill the
/// buffers), or `max` were sent.
fn flood_without_reading(c: &mut TcpStream, max: usize) -> usize {
    c.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let batch: Vec<u8> = (0..256).flat_map(|i| framed(i as u16)).collect();
    let mut sent = 0;
    while sent < max {
        if c.write_all(&batch).is_err() {
            break;
        }
        sent += 256;
    }
    sent
}

fn small_rcvbuf_conn(port: u16) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr(port).into()).unwrap();
    s.into()
}

/// True while the server's side of the connection from client port `cport` to `port` exists
/// (read from /proc/net/tcp, without touching the client socket).
fn server_side_open(port: u16, cport: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let remote = format!("0100007F:{cport:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f[1] == local && f[2] == remote && f[3] == "01"
        })
}

/// Floods a connection to `port` without reading, then waits (reading nothing) until the
/// server closes its side; the time that took after the flood, or None within `limit`.
fn stall(port: u16, limit: Duration) -> Option<Duration> {
    let mut c = small_rcvbuf_conn(port);
    let cport = c.local_addr().unwrap().port();
    let sent = flood_without_reading(&mut c, 400_000);
    assert!(sent < 400_000, "the server never stopped reading");
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if !server_side_open(port, cport) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    None
}

#[test]
fn a_client_that_stops_reading_is_closed_by_the_write_timeout() {
    let (_s, port) =
        start("    timeouts {\n        write 1s\n        idle 60s\n        read 60s\n    }\n");
    let took = stall(port, Duration::from_secs(20)).expect("still open after the write timeout");
    eprintln!("write 1s: server side closed {took:?} after the client stopped sending");
    // With a long write timeout the same stall keeps the connection open well past that.
    let (_l, lport) =
        start("    timeouts {\n        write 30s\n        idle 60s\n        read 60s\n    }\n");
    assert_eq!(
        stall(lport, took + Duration::from_secs(3)),
        None,
        "closed although the write timeout is 30 s (the 1 s one closed after {took:?})"
    );
}

#[test]
fn maxtcpqueries_answers_that_many_then_closes() {
    let (_s, port) = start("    timeouts {\n        maxtcpqueries 3\n    }\n");
    let mut c = TcpStream::connect(addr(port)).unwrap();
    let cport = c.local_addr().unwrap().port();
    let all: Vec<u8> = (0..5).flat_map(framed).collect();
    c.write_all(&all).unwrap();
    let mut data = Vec::new();
    c.set_read_timeout(Some(T)).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < T {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => data.extend_from_slice(&buf[..k]),
        }
    }
    assert!(t0.elapsed() < T, "not closed");
    let mut ids = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        let l = u16::from_be_bytes([data[i], data[i + 1]]) as usize;
        let r = Reply::parse(data[i + 2..i + 2 + l].to_vec()).unwrap();
        check_whoami(&r, r.id(), cport);
        ids.push(r.id());
        i += 2 + l;
    }
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2], "exactly the first three");
    // A new connection gets its own three.
    let mut c = TcpConn::connect(addr(port), T).unwrap();
    c.send_query(&Query::new("to.example.", RecordType::A).id(42))
        .unwrap();
    assert_eq!(c.recv_reply(T).unwrap().id(), 42);

    // -1: unlimited.
    let (_u, uport) = start("    timeouts {\n        maxtcpqueries -1\n    }\n");
    let mut c = TcpConn::connect(addr(uport), T).unwrap();
    for id in 0..20 {
        c.send_query(&Query::new("to.example.", RecordType::A).id(id))
            .unwrap();
    }
    for _ in 0..20 {
        assert_eq!(c.recv_reply(T).unwrap().rcode_name(), "NOERROR");
    }
}

#[test]
fn dns_over_tls_connections_follow_the_timeouts() {
    let port = free_port();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = c.cert.der().clone();
    let cf = format!(
        "tls://.:{port} {{\n    bind 127.0.0.1\n    tls cert.pem key.pem\n    timeouts {{\n        idle 2s\n        maxtcpqueries 2\n    }}\n    whoami\n}}\n"
    );
    let s = Sextant::builder(bin(), &cf)
        .file("cert.pem", c.cert.pem())
        .file("key.pem", c.signing_key.serialize_pem())
        .start();
    s.wait_for_line(&format!("tls://.:{port}"), Duration::from_secs(10))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connect = || {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(cfg.clone()), name).unwrap();
        let sock = TcpStream::connect(addr(port)).unwrap();
        let cport = sock.local_addr().unwrap().port();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (rustls::StreamOwned::new(conn, sock), cport)
    };
    let read_msg = |tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        let mut len = [0u8; 2];
        tls.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        tls.read_exact(&mut body).ok()?;
        Some(Reply::parse(body).unwrap())
    };
    // Idle: one query, then closed about 2 s later.
    let (mut tls, cport) = connect();
    tls.write_all(&framed(1)).unwrap();
    check_whoami(&read_msg(&mut tls).unwrap(), 1, cport);
    let t0 = Instant::now();
    assert!(
        read_msg(&mut tls).is_none(),
        "a message after the idle time"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(3500),
        "closed after {took:?}"
    );
    // maxtcpqueries 2 over TLS: three sent, two answered, then closed.
    let (mut tls, cport) = connect();
    let all: Vec<u8> = (10..13).flat_map(framed).collect();
    tls.write_all(&all).unwrap();
    let mut ids = vec![];
    while let Some(r) = read_msg(&mut tls) {
        check_whoami(&r, r.id(), cport);
        ids.push(r.id());
    }
    ids.sort();
    assert_eq!(ids, vec![10, 11]);
}

#[test]
fn bad_options_are_reported_at_their_position() {
    for (body, want) in [
        ("timeouts", "Corefile:2:5: timeouts: timeouts block with no timeouts specified"),
        (
            "timeouts {\n        read 500ms\n    }",
            "Corefile:3:14: timeouts: timeout provided '500ms' needs to be between 1 second and 24 hours",
        ),
        ("timeouts {\n        write x\n    }", "Corefile:3:15: timeouts: failed to parse duration 'x'"),
        ("timeouts {\n        foo 5s\n    }", "Corefile:3:9: timeouts: unknown option: 'foo'"),
        (
            "timeouts {\n        maxtcpqueries -2\n    }",
            "Corefile:3:23: timeouts: maxtcpqueries provided '-2' needs to be -1 (unlimited) or a positive integer",
        ),
        (
            "timeouts {\n        idle 1s\n    }\n    timeouts {\n        idle 2s\n    }",
            "Corefile:5:5",
        ),
    ] {
        let cf = format!(".:{} {{\n    {body}\n    whoami\n}}\n", free_port());
        let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
        assert_ne!(code, 0, "{body}: accepted");
        let text = format!("{out}{err}");
        assert!(text.contains(want), "{body}: {text}");
    }
}

/// With `COREDNS_BIN` set: CoreDNS answers as many of five pipelined queries under
/// `maxtcpqueries 3` as Sextant.
#[test]
fn same_query_cap_as_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!(
            "same_query_cap_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run"
        );
        return;
    };
    let count = |port: u16| {
        let mut c = TcpStream::connect(addr(port)).unwrap();
        let all: Vec<u8> = (0..5).flat_map(framed).collect();
        c.write_all(&all).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(k) = c.read(&mut buf) {
            if k == 0 {
                break;
            }
            data.extend_from_slice(&buf[..k]);
        }
        let (mut n, mut i) = (0, 0);
        while i + 2 <= data.len() {
            i += 2 + u16::from_be_bytes([data[i], data[i + 1]]) as usize;
            n += 1;
        }
        n
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Corefile"),
        format!(".:{port} {{\n    bind 127.0.0.1\n    timeouts {{\n        maxtcpqueries 3\n    }}\n    whoami\n}}\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(coredns)
        .current_dir(dir.path())
        .args(["-conf", "Corefile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(addr(port)).is_err() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let theirs = count(port);
    let _ = child.kill();
    let _ = child.wait();
    let (_s, sport) = start("    timeouts {\n        maxtcpqueries 3\n    }\n");
    assert_eq!(count(sport), theirs);
    assert_eq!(theirs, 3);
}

/// A DoH listener with `timeouts` and a self-signed certificate: (process, port, certificate).
fn start_doh(timeouts: &str) -> (Sextant, u16, rustls::pki_types::CertificateDer<'static>) {
    let port = free_port();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cf = format!(
        "https://.:{port} {{\n    bind 127.0.0.1\n    tls cert.pem key.pem\n{timeouts}    whoami\n}}\n"
    );
    let s = Sextant::builder(bin(), &cf)
        .file("cert.pem", c.cert.pem())
        .file("key.pem", c.signing_key.serialize_pem())
        .start();
    s.wait_for_line(&format!("https://.:{port}"), Duration::from_secs(10))
        .unwrap();
    (s, port, c.cert.der().clone())
}

/// A TLS connection to `port` offering `alpn`, with what it sends written; then the time until
/// the server closes it (None if still open after `limit`).
fn tls_closed_within(
    port: u16,
    der: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
    send: &[u8],
    limit: Duration,
) -> Option<Duration> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect(addr(port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(send).unwrap();
    tls.flush().unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(alpn), "ALPN agreed");
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < limit {
        let left = (limit - t0.elapsed()).max(Duration::from_millis(1));
        tls.sock.set_read_timeout(Some(left)).unwrap();
        match tls.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: an HTTP/2 connection that then
/// asks nothing.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// An HTTP/1.1 request head that never ends.
const H1_HALF: &[u8] =
    b"GET /dns-query?dns=AAABAAABAAAAAAAAAnRvB2V4YW1wbGUAAAEAAQ HTTP/1.1\r\nHost: x\r\n";

#[test]
fn doh_connections_follow_the_timeouts() {
    // idle 2s: an HTTP/2 connection that asks nothing is closed (GOAWAY, then EOF) after 2-3 s;
    // read 1s: an HTTP/1.1 request head left unfinished is closed after about 1 s.
    let (_s, port, der) = start_doh("    timeouts {\n        read 1s\n        idle 2s\n    }\n");
    let took = tls_closed_within(port, &der, b"h2", H2_PREFACE, Duration::from_secs(6))
        .expect("an idle HTTP/2 connection still open after 6 s with idle 2s");
    eprintln!("idle 2s: HTTP/2 connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(3600),
        "idle HTTP/2 connection closed after {took:?}"
    );
    let took = tls_closed_within(port, &der, b"http/1.1", H1_HALF, Duration::from_secs(6))
        .expect("a half request head still open after 6 s with read 1s");
    eprintln!("read 1s: half HTTP/1.1 head closed after {took:?}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(2000),
        "half request head closed after {took:?}"
    );
    // Defaults (CoreDNS's idle 10 s, read 3 s): both still open at the times above.
    let (_d, dport, dder) = start_doh("");
    assert_eq!(
        tls_closed_within(dport, &dder, b"h2", H2_PREFACE, Duration::from_secs(4)),
        None,
        "default idle closed an HTTP/2 connection within 4 s"
    );
    let took = tls_closed_within(dport, &dder, b"http/1.1", H1_HALF, Duration::from_secs(6))
        .expect("a half request head still open after 6 s by default");
    assert!(
        took >= Duration::from_millis(2700),
        "default read timeout closed a half head after {took:?}"
    );
}

#[test]
fn doh_idle_close_as_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!(
            "doh_idle_close_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run"
        );
        return;
    };
    let port = free_port();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.path().join("Corefile"),
        format!("https://.:{port} {{\n    bind 127.0.0.1\n    tls cert.pem key.pem\n    timeouts {{\n        read 1s\n        idle 2s\n    }}\n    whoami\n}}\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(coredns)
        .current_dir(dir.path())
        .args(["-conf", "Corefile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(addr(port)).is_err() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let der = c.cert.der().clone();
    let h2 = tls_closed_within(port, &der, b"h2", H2_PREFACE, Duration::from_secs(6));
    let h1 = tls_closed_within(port, &der, b"http/1.1", H1_HALF, Duration::from_secs(6));
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("CoreDNS: idle HTTP/2 closed after {h2:?}, half HTTP/1.1 head after {h1:?}");
    let h2 = h2.expect("CoreDNS kept an idle HTTP/2 connection");
    let h1 = h1.expect("CoreDNS kept a half head");
    assert!(h2 >= Duration::from_millis(1700) && h2 < Duration::from_millis(3600));
    assert!(h1 >= Duration::from_millis(700) && h1 < Duration::from_millis(2000));
}

/// A plain-HTTP DoH listener (no `tls`: as behind a TLS-terminating proxy) whose
/// `big.example.` TXT answer is ~50 KB (one record of 200 strings: cheap to make), so
/// [`REQUESTS`] unread answers (6 MB) fill the buffers (the kernel grows a send buffer up to
/// 4 MB; on loopback it stopped near 2.8 MB).
fn start_big(scheme: &str, timeouts: &str) -> (Sextant, u16) {
    let port = free_port();
    let (cf, zone) = big_files(scheme, port, timeouts);
    let s = Sextant::builder(bin(), &cf)
        .file("db.example", zone)
        .start();
    s.wait_for_line(&format!("{scheme}://.:{port}"), Duration::from_secs(10))
        .unwrap();
    (s, port)
}

/// `timeouts` that leave only the write timeout short, and its long counterpart.
const WRITE_1S: &str =
    "    timeouts {\n        write 1s\n        idle 60s\n        read 60s\n    }\n";
const WRITE_30S: &str =
    "    timeouts {\n        write 30s\n        idle 60s\n        read 60s\n    }\n";

/// The Corefile and zone file (`db.example`) of [`start_big`].
fn big_files(scheme: &str, port: u16, timeouts: &str) -> (String, String) {
    let strings: String = (0..200)
        .map(|i| format!("    \"{}\"\n", format!("{i:03}").repeat(83)))
        .collect();
    let zone = format!(
        "$ORIGIN example.\n@ 3600 IN SOA ns.example. admin.example. 1 7200 3600 1209600 3600\n@ 3600 IN NS ns.example.\nbig 60 IN TXT (\n{strings})\n"
    );
    let cf = format!(
        "{scheme}://.:{port} {{\n    bind 127.0.0.1\n{timeouts}    file db.example example.\n}}\n"
    );
    (cf, zone)
}

/// `/dns-query?dns=...` for `big.example. TXT` (ID 0, as RFC 8484 asks).
fn big_path() -> String {
    use base64::Engine as _;
    let q = Query::new("big.example.", RecordType::TXT).id(0).to_bytes();
    format!(
        "/dns-query?dns={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(q)
    )
}

/// Requests per stalled connection.
const REQUESTS: u32 = 120;

/// [`REQUESTS`] pipelined HTTP/1.1 GET requests.
fn h1_requests() -> Vec<u8> {
    let one = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", big_path());
    one.repeat(REQUESTS as usize).into_bytes()
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The HTTP/2 preface (prior knowledge) with windows so large that flow control never holds
/// the server back.
fn h2_preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 2^31-1; the connection window raised to the same.
    out.extend(h2_frame(0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    out.extend(h2_frame(0x8, 0, 0, &(0x7fff_ffffu32 - 65535).to_be_bytes()));
    out
}

/// An HTTP/2 connection with [`REQUESTS`] DoH GET streams (under the 250 concurrent streams
/// allowed).
fn h2_requests() -> Vec<u8> {
    let mut out = h2_preface();
    let path = big_path();
    // HPACK: :method GET (2), :scheme http (6), :path and :authority as literals with an
    // indexed name (4 and 1), not indexed.
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 1, b'x']);
    for i in 0..REQUESTS {
        // END_STREAM | END_HEADERS
        out.extend(h2_frame(0x1, 0x5, 2 * i + 1, &block));
    }
    out
}

/// An HTTP/2 connection with [`REQUESTS`] gRPC `DnsService/Query` calls for `big.example. TXT`.
fn grpc_requests() -> Vec<u8> {
    let mut out = h2_preface();
    let path = b"/coredns.dns.DnsService/Query";
    // HPACK: :method POST (3), :scheme http (6), :path and :authority literals, content-type
    // (31) application/grpc, te: trailers.
    let mut block = vec![0x83, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 1, b'x', 0x0f, 0x10, 16]);
    block.extend_from_slice(b"application/grpc");
    block.extend_from_slice(&[0x00, 2, b't', b'e', 8]);
    block.extend_from_slice(b"trailers");
    // One gRPC message: not compressed, length, then DnsPacket { msg = 1: bytes }.
    let q = Query::new("big.example.", RecordType::TXT).id(0).to_bytes();
    let mut pb = vec![0x0a, q.len() as u8];
    pb.extend_from_slice(&q);
    let mut body = vec![0];
    body.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    body.extend_from_slice(&pb);
    for i in 0..REQUESTS {
        out.extend(h2_frame(0x1, 0x4, 2 * i + 1, &block));
        out.extend(h2_frame(0x0, 0x1, 2 * i + 1, &body));
    }
    out
}

/// The server side of the connection from client port `cport` to `port`: (established, bytes
/// in its send queue), from /proc/net/tcp; None once it is gone.
fn server_side(port: u16, cport: u16) -> Option<(bool, u64)> {
    let local = format!("0100007F:{port:04X}");
    let remote = format!("0100007F:{cport:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1] == local && f[2] == remote).then(|| {
                let tx = f[4].split(':').next().unwrap();
                (f[3] == "01", u64::from_str_radix(tx, 16).unwrap())
            })
        })
}

/// Sends `requests` on a connection to `port` with a small receive buffer and reads nothing;
/// the time from the server's last write (its send queue stops growing: its writes block)
/// until it closes its side, or None if it is still open `limit` after that.
fn stall_http(port: u16, requests: &[u8], limit: Duration) -> Option<Duration> {
    let mut c = small_rcvbuf_conn(port);
    let cport = c.local_addr().unwrap().port();
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    c.write_all(requests).unwrap();
    let (mut queued, mut since) = (0, Instant::now());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        match server_side(port, cport) {
            Some((true, tx)) => {
                if tx != queued {
                    (queued, since) = (tx, Instant::now());
                } else if since.elapsed() > limit {
                    return None;
                }
            }
            _ => return Some(since.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the server kept writing for 30 s");
}

#[test]
fn doh_and_grpc_clients_that_stop_reading_are_closed_by_the_write_timeout() {
    // HTTP/1.1 pipelined and HTTP/2 DoH requests, and gRPC calls, whose answers are never
    // read: closed about 1 s after the server's writes block with `write 1s`, and still open
    // 3 s after with `write 30s`. One at a time: a busy machine delays the sampling of the
    // send queue, which the bounds are measured from.
    let (_s, port) = start_big("https", WRITE_1S);
    let (_l, lport) = start_big("https", WRITE_30S);
    let (_g, gport) = start_big("grpc", WRITE_1S);
    let (_gl, glport) = start_big("grpc", WRITE_30S);
    stalls("HTTP/1.1", port, lport, h1_requests());
    stalls("HTTP/2", port, lport, h2_requests());
    stalls("gRPC", gport, glport, grpc_requests());
}

/// Stalls a connection to `port` (`write 1s`) and one to `lport` (`write 30s`) with `req`
/// at once: the first closes about 1 s after its writes block, the second is open 3 s after.
fn stalls(name: &str, port: u16, lport: u16, req: Vec<u8>) {
    let r = req.clone();
    let long = std::thread::spawn(move || stall_http(lport, &r, Duration::from_secs(3)));
    let short = stall_http(port, &req, Duration::from_secs(4));
    let long = long.join().unwrap();
    eprintln!("{name}: write 1s: closed {short:?} after writes blocked; write 30s: {long:?}");
    let took = short.unwrap_or_else(|| panic!("{name}: still open 4 s after writes block"));
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
        "{name}: closed {took:?} after its writes blocked"
    );
    assert_eq!(
        long, None,
        "{name}: closed although the write timeout is 30 s"
    );
}

#[test]
fn doh_write_timeout_as_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!(
            "doh_write_timeout_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run"
        );
        return;
    };
    // Plain-HTTP DoH (CoreDNS speaks HTTP/2 only over TLS): pipelined HTTP/1.1 requests whose
    // answers are never read are closed about `write` after the writes block, as in Sextant.
    let port = free_port();
    let (cf, zone) = big_files("https", port, WRITE_1S);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Corefile"), cf).unwrap();
    std::fs::write(dir.path().join("db.example"), zone).unwrap();
    let mut child = std::process::Command::new(coredns)
        .current_dir(dir.path())
        .args(["-conf", "Corefile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(addr(port)).is_err() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = stall_http(port, &h1_requests(), Duration::from_secs(4));
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("CoreDNS write 1s: HTTP/1.1 closed {took:?} after writes blocked");
    let took = took.expect("CoreDNS kept a client that reads nothing");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(2000),
        "{took:?}"
    );
}
