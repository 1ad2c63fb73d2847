//! Server mechanics on the QUIC transports, over the wire with a quinn client: `timeouts idle`
//! on DNS over QUIC and DNS over HTTP/3 (a silent connection ends after the idle time, not
//! before; without `timeouts`, CoreDNS's 10 s), `timeouts read` on a DoQ stream left unfinished
//! (the connection is closed with DOQ_PROTOCOL_ERROR), and `proxyproto` in front of `quic://`:
//! a relay that prepends a PROXY v2 header to every datagram, as a UDP load balancer does, makes
//! `whoami` and `acl` see the header's client (and `whoami` over DNS over HTTP/3 behind it);
//! sources outside `allow` under `default ignore`, `use`, `reject` and `skip`; without a relay
//! the connection's own address stands; a reload turns it on in place; and (with `COREDNS_BIN`)
//! the same answers as CoreDNS through the relay and the same idle and read closings.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_testkit::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sextant with one block per `(scheme, port, body)`, a self-signed certificate for
/// `localhost`; waits for every listener.
fn start(blocks: &[(&str, u16, &str)]) -> (Sextant, rustls::pki_types::CertificateDer<'static>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cf: String = blocks
        .iter()
        .map(|(scheme, port, body)| {
            format!(
                "{scheme}://.:{port} {{\n    bind 127.0.0.1\n    tls cert.pem key.pem\n{body}}}\n"
            )
        })
        .collect();
    let s = Sextant::builder(bin(), &cf)
        .file("cert.pem", c.cert.pem())
        .file("key.pem", c.signing_key.serialize_pem())
        .start();
    for (scheme, port, _) in blocks {
        s.wait_for_line(&format!("{scheme}://.:{port}"), Duration::from_secs(10))
            .unwrap();
    }
    (s, c.cert.der().clone())
}

/// A quinn client endpoint trusting `der`, offering `alpn`, with no idle timeout of its own
/// (the server's applies).
fn client(der: &rustls::pki_types::CertificateDer<'static>, alpn: &[u8]) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(None);
    cfg.transport_config(Arc::new(t));
    let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    ep.set_default_client_config(cfg);
    ep
}

/// Connects to `to` within 2 s; None when no handshake completes.
async fn connect(ep: &quinn::Endpoint, to: SocketAddr) -> Option<quinn::Connection> {
    let connecting = ep.connect(to, "localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(2), connecting)
        .await
        .ok()?
        .ok()
}

/// One DoQ query for `to.example. A` (ID 0) on a new stream: the reply in dig-like text
/// (rcode, then the additional section, as `whoami` answers in it).
async fn doq_ask(conn: &quinn::Connection) -> String {
    let q = Query::new("to.example.", RecordType::A).id(0).to_bytes();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    send.write_all(&out).await.unwrap();
    send.finish().unwrap();
    let body = tokio::time::timeout(Duration::from_secs(3), recv.read_to_end(65537))
        .await
        .expect("no DoQ reply within 3 s")
        .unwrap();
    let r = Reply::parse(body[2..].to_vec()).unwrap();
    assert_eq!(r.id(), 0);
    assert_eq!(r.question().unwrap(), "to.example. IN A");
    format!("{} {}", r.rcode_name(), r.additional().join(" | "))
}

/// One DoH3 GET for `to.example. A` (ID 0): the reply as [`doq_ask`] gives it.
async fn doh3_ask(conn: quinn::Connection) -> String {
    use base64::Engine as _;
    use bytes::Buf as _;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let q = Query::new("to.example.", RecordType::A).id(0).to_bytes();
    let uri = format!(
        "https://localhost/dns-query?dns={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(q)
    );
    let req = http::Request::get(uri).body(()).unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        while chunk.has_remaining() {
            let c = chunk.chunk();
            body.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    let r = Reply::parse(body).unwrap();
    format!("{} {}", r.rcode_name(), r.additional().join(" | "))
}

/// A UDP load balancer speaking PROXY v2: datagrams to its address go to `server` with a v2
/// header naming `client` (UDP over IPv4) in front; the server's datagrams go back to whoever
/// last sent. Returns the address to send to.
async fn relay(server: SocketAddr, client: SocketAddr) -> SocketAddr {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(server).await.unwrap();
    let at = front.local_addr().unwrap();
    let SocketAddr::V4(c) = client else {
        panic!("IPv4 client expected")
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c".to_vec();
    header.extend_from_slice(&c.ip().octets());
    header.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
    header.extend_from_slice(&c.port().to_be_bytes());
    header.extend_from_slice(&server.port().to_be_bytes());
    tokio::spawn(async move {
        let mut peer = None;
        let mut a = [0u8; 65536];
        let mut b = [0u8; 65536];
        loop {
            tokio::select! {
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { return };
                    peer = Some(from);
                    let mut d = header.clone();
                    d.extend_from_slice(&a[..n]);
                    let _ = back.send(&d).await;
                }
                r = back.recv(&mut b) => {
                    let Ok(n) = r else { return };
                    if let Some(p) = peer {
                        let _ = front.send_to(&b[..n], p).await;
                    }
                }
            }
        }
    });
    at
}

/// How a silent connection to `to` ends: (time, was it QUIC's idle timeout), or None when it is
/// still open after `limit`.
async fn silent_end(
    ep: &quinn::Endpoint,
    to: SocketAddr,
    limit: Duration,
) -> Option<(Duration, bool)> {
    let conn = connect(ep, to).await.expect("no handshake");
    let t0 = Instant::now();
    let e = tokio::time::timeout(limit, conn.closed()).await.ok()?;
    Some((t0.elapsed(), matches!(e, quinn::ConnectionError::TimedOut)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_idle_and_read_timeouts() {
    let (doq, doq_read, doq_default, h3, h3_default) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let (_s, der) = start(&[
        (
            "quic",
            doq,
            "    timeouts {\n        idle 1s\n    }\n    whoami\n",
        ),
        (
            "quic",
            doq_read,
            "    timeouts {\n        read 1s\n        idle 30s\n    }\n    whoami\n",
        ),
        ("quic", doq_default, "    whoami\n"),
        (
            "https3",
            h3,
            "    timeouts {\n        idle 1s\n    }\n    whoami\n",
        ),
        ("https3", h3_default, "    whoami\n"),
    ]);
    let doq_ep = client(&der, b"doq");
    let h3_ep = client(&der, b"h3");
    // A connection that asked one question, then nothing: ended by the idle timeout after
    // about 1 s; a fresh one that asks nothing the same; the default 10 s keeps both at 2.5 s.
    let conn = connect(&doq_ep, local(doq)).await.unwrap();
    assert_eq!(
        doq_ask(&conn).await,
        "NOERROR to.example. 0 IN A 127.0.0.1 | _udp.to.example. 0 IN SRV 0 0 ".to_string()
            + &doq_ep.local_addr().unwrap().port().to_string()
            + " ."
    );
    let t0 = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(4), conn.closed())
        .await
        .expect("DoQ connection still open 4 s after its last query with idle 1s");
    let took = t0.elapsed();
    eprintln!("DoQ idle 1s: closed {took:?} after the last answer ({e})");
    assert!(matches!(e, quinn::ConnectionError::TimedOut), "{e}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let runs = [
        ("DoQ idle 1s", &doq_ep, doq, Some(())),
        ("DoH3 idle 1s", &h3_ep, h3, Some(())),
        ("DoQ default", &doq_ep, doq_default, None),
        ("DoH3 default", &h3_ep, h3_default, None),
    ];
    let ends = futures_join(runs.iter().map(|(_, ep, port, _)| {
        let (ep, to) = ((*ep).clone(), local(*port));
        async move { silent_end(&ep, to, Duration::from_millis(2500)).await }
    }))
    .await;
    for ((name, _, _, closes), end) in runs.iter().zip(ends) {
        eprintln!("{name}: silent connection {end:?}");
        match closes {
            Some(()) => {
                let (took, idle) = end.unwrap_or_else(|| panic!("{name}: still open at 2.5 s"));
                assert!(idle, "{name}: closed, but not by the idle timeout");
                assert!(
                    took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
                    "{name}: {took:?}"
                );
            }
            None => assert_eq!(end, None, "{name}: closed before the default 10 s"),
        }
    }
    // read 1s: a DoQ stream that announces 40 bytes and sends 3 closes the connection with
    // DOQ_PROTOCOL_ERROR after about 1 s; by default (3 s) it is still open at 1.8 s.
    for (port, closes) in [(doq_read, true), (doq_default, false)] {
        let conn = connect(&doq_ep, local(port)).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
        let t0 = Instant::now();
        let limit = if closes { 4000 } else { 1800 };
        let end = tokio::time::timeout(Duration::from_millis(limit), conn.closed()).await;
        eprintln!(
            "DoQ stream left unfinished (read 1s: {closes}): {end:?} after {:?}",
            t0.elapsed()
        );
        if closes {
            let e = end.expect("an unfinished DoQ stream kept its connection 4 s with read 1s");
            let took = t0.elapsed();
            match e {
                quinn::ConnectionError::ApplicationClosed(c) => {
                    assert_eq!(
                        c.error_code,
                        quinn::VarInt::from_u32(2),
                        "DOQ_PROTOCOL_ERROR"
                    )
                }
                other => panic!("closed by {other}"),
            }
            assert!(
                took >= Duration::from_millis(800) && took < Duration::from_millis(2000),
                "{took:?}"
            );
        } else {
            assert!(
                end.is_err(),
                "closed before the default read timeout: {end:?}"
            );
        }
    }
}

/// Runs futures concurrently, results in order.
async fn futures_join<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = Vec::new();
    for f in fs {
        set.push(tokio::spawn(f));
    }
    let mut out = Vec::new();
    for h in set {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxyproto_in_front_of_quic() {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let acl = "    acl {\n        block net 10.2.3.0/24\n    }\n";
    let outside = |default: &str| {
        format!("    proxyproto {{\n        allow 10.0.0.0/8\n{default}    }}\n    whoami\n")
    };
    let (_s, der) = start(&[
        (
            "quic",
            ports[0],
            &format!("    proxyproto\n{acl}    whoami\n"),
        ),
        ("quic", ports[1], &outside("")),
        ("quic", ports[2], &outside("        default use\n")),
        ("quic", ports[3], &outside("        default reject\n")),
        ("quic", ports[4], &outside("        default skip\n")),
        ("https3", ports[5], "    proxyproto\n    whoami\n"),
    ]);
    let ep = client(&der, b"doq");
    let me = ep.local_addr().unwrap().port();
    let via = |c: &str| c.parse::<SocketAddr>().unwrap();
    let whoami = |ip: &str, port: u16| {
        format!("NOERROR to.example. 0 IN A {ip} | _udp.to.example. 0 IN SRV 0 0 {port} .")
    };
    // Headers from any source: whoami and acl see the header's client.
    let r = relay(local(ports[0]), via("10.9.9.9:5555")).await;
    let conn = connect(&ep, r)
        .await
        .expect("no handshake through the relay");
    assert_eq!(doq_ask(&conn).await, whoami("10.9.9.9", 5555));
    assert_eq!(doq_ask(&conn).await, whoami("10.9.9.9", 5555));
    let r = relay(local(ports[0]), via("10.2.3.4:5556")).await;
    let conn = connect(&ep, r)
        .await
        .expect("no handshake through the relay");
    assert_eq!(doq_ask(&conn).await, "REFUSED ");
    // Straight to the server, without a header: its own address.
    let conn = connect(&ep, local(ports[0])).await.unwrap();
    assert_eq!(doq_ask(&conn).await, whoami("127.0.0.1", me));
    // The relay (127.0.0.1) outside `allow 10.0.0.0/8`.
    // default ignore: the header is read and dropped, the relay's address stands.
    let r = relay(local(ports[1]), via("10.9.9.9:5555")).await;
    let conn = connect(&ep, r).await.expect("ignore: no handshake");
    let relay_port = {
        // The relay's server-side port is what whoami reports: ask and read it.
        let got = doq_ask(&conn).await;
        assert!(
            got.starts_with(
                "NOERROR to.example. 0 IN A 127.0.0.1 | _udp.to.example. 0 IN SRV 0 0 "
            ),
            "{got}"
        );
        got
    };
    assert!(!relay_port.contains("5555"), "{relay_port}");
    // default use: taken anyway.
    let r = relay(local(ports[2]), via("10.9.9.9:5555")).await;
    let conn = connect(&ep, r).await.expect("use: no handshake");
    assert_eq!(doq_ask(&conn).await, whoami("10.9.9.9", 5555));
    // DNS over HTTP/3 behind the same kind of relay: the header's client.
    let h3_ep = client(&der, b"h3");
    let r = relay(local(ports[5]), via("10.9.9.9:5555")).await;
    let conn = connect(&h3_ep, r)
        .await
        .expect("DoH3: no handshake through the relay");
    let got = doh3_ask(conn).await;
    assert!(
        got.starts_with("NOERROR to.example. 0 IN A 10.9.9.9 | ") && got.ends_with(" 5555 ."),
        "{got}"
    );
    // default reject: a datagram with a header is dropped (no handshake); plain QUIC is served.
    // default skip: the header stays in the datagram, which is not QUIC then (no handshake).
    for port in [ports[3], ports[4]] {
        let r = relay(local(port), via("10.9.9.9:5555")).await;
        assert!(
            connect(&ep, r).await.is_none(),
            "handshake through a refused relay"
        );
        let conn = connect(&ep, local(port)).await.unwrap();
        assert_eq!(doq_ask(&conn).await, whoami("127.0.0.1", me));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxyproto_in_front_of_quic_as_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!(
            "proxyproto_in_front_of_quic_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run"
        );
        return;
    };
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    let body = "    proxyproto\n    acl {\n        block net 10.2.3.0/24\n    }\n    whoami\n";
    let answers = |port: u16, der: rustls::pki_types::CertificateDer<'static>| async move {
        let ep = client(&der, b"doq");
        let mut out = Vec::new();
        for c in ["10.9.9.9:5555", "10.2.3.4:5556"] {
            let r = relay(local(port), c.parse().unwrap()).await;
            let conn = connect(&ep, r)
                .await
                .expect("no handshake through the relay");
            // CoreDNS's whoami gives an IPv4 client of a PROXY header as an IPv4-mapped AAAA
            // (see the proxyproto README): the same address.
            out.push(doq_ask(&conn).await.replace("IN AAAA ::ffff:", "IN A "));
        }
        out
    };
    let port = free_port();
    std::fs::write(
        dir.path().join("Corefile"),
        format!("quic://.:{port} {{\n    bind 127.0.0.1\n    tls cert.pem key.pem\n{body}}}\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(coredns)
        .current_dir(dir.path())
        .args(["-conf", "Corefile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let theirs = answers(port, c.cert.der().clone()).await;
    let _ = child.kill();
    let _ = child.wait();
    let sport = free_port();
    let (_s, der) = start(&[("quic", sport, body)]);
    let ours = answers(sport, der).await;
    eprintln!("CoreDNS {theirs:?}\nSextant {ours:?}");
    assert_eq!(ours, theirs);
    assert_eq!(
        ours,
        [
            "NOERROR to.example. 0 IN A 10.9.9.9 | _udp.to.example. 0 IN SRV 0 0 5555 .",
            "REFUSED "
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_proxyproto_on_for_a_quic_listener_in_place() {
    // The QUIC socket is not rebound (it cannot be, beside itself): the new settings apply to
    // the next datagrams, and a connection made before the reload keeps working.
    let port = free_port();
    let (s, der) = start(&[("quic", port, "    whoami\n")]);
    let ep = client(&der, b"doq");
    let me = ep.local_addr().unwrap().port();
    let before = connect(&ep, local(port)).await.unwrap();
    let r = relay(local(port), "10.9.9.9:5555".parse().unwrap()).await;
    assert!(
        connect(&ep, r).await.is_none(),
        "a header taken without proxyproto"
    );
    let cf = std::fs::read_to_string(s.corefile_path()).unwrap();
    std::fs::write(
        s.corefile_path(),
        cf.replace("    whoami\n", "    proxyproto\n    whoami\n"),
    )
    .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("Reloading complete", Duration::from_secs(10))
        .unwrap();
    let conn = connect(&ep, r)
        .await
        .expect("no handshake through the relay after the reload");
    assert_eq!(
        doq_ask(&conn).await,
        "NOERROR to.example. 0 IN A 10.9.9.9 | _udp.to.example. 0 IN SRV 0 0 5555 ."
    );
    assert_eq!(
        doq_ask(&before).await,
        format!("NOERROR to.example. 0 IN A 127.0.0.1 | _udp.to.example. 0 IN SRV 0 0 {me} .")
    );
}

/// DoQ `idle 1s` and `read 1s` on `port`s served by someone: (a silent connection's end and
/// whether it was the idle timeout, an unfinished stream's close code and time).
async fn doq_timeouts(
    der: &rustls::pki_types::CertificateDer<'static>,
    idle_port: u16,
    read_port: u16,
) -> (Option<(Duration, bool)>, Option<(u64, Duration)>) {
    let ep = client(der, b"doq");
    let idle = silent_end(&ep, local(idle_port), Duration::from_secs(4)).await;
    let conn = connect(&ep, local(read_port)).await.expect("no handshake");
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    let t0 = Instant::now();
    let read = match tokio::time::timeout(Duration::from_secs(4), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            Some((c.error_code.into_inner(), t0.elapsed()))
        }
        _ => None,
    };
    (idle, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_timeouts_as_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!("quic_timeouts_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run");
        return;
    };
    let idle = "    timeouts {\n        idle 1s\n    }\n    whoami\n";
    let read = "    timeouts {\n        read 1s\n        idle 30s\n    }\n    whoami\n";
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    let (ip, rp) = (free_port(), free_port());
    let block = |port: u16, body: &str| {
        format!("quic://.:{port} {{\n    bind 127.0.0.1\n    tls cert.pem key.pem\n{body}}}\n")
    };
    std::fs::write(
        dir.path().join("Corefile"),
        block(ip, idle) + &block(rp, read),
    )
    .unwrap();
    let mut child = std::process::Command::new(coredns)
        .current_dir(dir.path())
        .args(["-conf", "Corefile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let theirs = doq_timeouts(c.cert.der(), ip, rp).await;
    let _ = child.kill();
    let _ = child.wait();
    let (sip, srp) = (free_port(), free_port());
    let (_s, der) = start(&[("quic", sip, idle), ("quic", srp, read)]);
    let ours = doq_timeouts(&der, sip, srp).await;
    eprintln!("CoreDNS {theirs:?}\nSextant {ours:?}");
    for (who, (idle, read)) in [("CoreDNS", theirs), ("Sextant", ours)] {
        let (took, by_idle) = idle.unwrap_or_else(|| panic!("{who}: silent DoQ connection kept"));
        assert!(by_idle, "{who}: not closed by the idle timeout");
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
            "{who}: idle {took:?}"
        );
        let (code, took) = read.unwrap_or_else(|| panic!("{who}: unfinished stream kept"));
        assert_eq!(code, 2, "{who}: DOQ_PROTOCOL_ERROR");
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(2000),
            "{who}: read {took:?}"
        );
    }
}
