//! End-to-end tests of the `dnstap` plugin: the real binary answering real UDP/TCP queries on
//! loopback while Debian's `fstrm_capture` (fstrm-bin) collects the Frame Streams over unix and
//! TCP sockets into a file, decoded by Debian's `dnstap-ldns` and by the `dnstap-pb`/`fstrm`
//! Python packages; collectors missing at start, appearing later and killed mid-run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sextant_testkit::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn need(tool: &str, install: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{tool} is missing: {install}");
}

/// `fstrm_capture` writing what it receives to a file.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// Listens on the unix socket `path`.
    fn unix(path: &Path, file: &Path) -> Capture {
        Capture::start(&["-u", path.to_str().unwrap()], file)
    }

    /// Listens on 127.0.0.1:`port`.
    fn tcp(port: u16, file: &Path) -> Capture {
        Capture::start(&["-a", "127.0.0.1", "-p", &port.to_string()], file)
    }

    fn start(listen: &[&str], file: &Path) -> Capture {
        need("fstrm_capture", "apt-get install fstrm-bin (see ./test.sh)");
        let child = Command::new("fstrm_capture")
            .args(["-t", "protobuf:dnstap.Dnstap"])
            .args(listen)
            .arg("-w")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let c = Capture {
            child: Some(child),
            file: file.to_path_buf(),
        };
        // Listening once its socket exists / its port takes connections.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let up = match listen {
                ["-u", p] => Path::new(p).exists(),
                [_, _, _, port] => TcpStream::connect(format!("127.0.0.1:{port}")).is_ok_and(|s| {
                    drop(s);
                    true
                }),
                _ => false,
            };
            if up {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    /// Stops the capture cleanly (SIGINT: the file is flushed and closed) and decodes it.
    fn finish(mut self) -> Vec<Tap> {
        let mut child = self.child.take().unwrap();
        unsafe_signal(child.id(), libc::SIGINT);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        decode(&self.file)
    }

    /// Kills the capture without letting it close anything (a crashed collector).
    fn crash(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_signal(pid: u32, sig: i32) {
    send_signal(pid, sig).unwrap();
}

/// One decoded dnstap frame.
#[derive(Debug, Default)]
struct Tap {
    kind: String,
    identity: String,
    version: String,
    family: String,
    protocol: String,
    query_address: String,
    query_port: Option<u16>,
    response_address: String,
    response_port: Option<u16>,
    query_message: Option<Vec<u8>>,
    response_message: Option<Vec<u8>>,
    query_time: f64,
    response_time: Option<f64>,
    /// The envelope's `extra` field.
    extra: Option<String>,
}

/// Decodes a capture file with the `fstrm` and `dnstap-pb` Python packages.
const DECODER: &str = r#"
import sys, ipaddress, fstrm, dnstap_pb
codec = fstrm.FstrmCodec()
codec.append(open(sys.argv[1], 'rb').read())
while codec.process():
    ctrl, ct, payload = codec.decode()
    if ctrl != fstrm.FSTRM_DATA_FRAME:
        continue
    d = dnstap_pb.Dnstap()
    d.ParseFromString(payload)
    m = d.message
    f = lambda b: str(ipaddress.ip_address(b)) if b else ''
    row = [dnstap_pb.Message.Type.Name(m.type), d.identity.decode(), d.version.decode(),
        dnstap_pb.SocketFamily.Name(m.socket_family) if m.HasField('socket_family') else '',
        dnstap_pb.SocketProtocol.Name(m.socket_protocol) if m.HasField('socket_protocol') else '',
        f(m.query_address), str(m.query_port) if m.HasField('query_port') else '',
        f(m.response_address), str(m.response_port) if m.HasField('response_port') else '',
        m.query_message.hex() if m.HasField('query_message') else '-',
        m.response_message.hex() if m.HasField('response_message') else '-',
        '%d.%09d' % (m.query_time_sec, m.query_time_nsec),
        '%d.%09d' % (m.response_time_sec, m.response_time_nsec) if m.HasField('response_time_sec') else '-',
        d.extra.decode() if d.HasField('extra') else '-']
    print('\t'.join(row))
"#;

fn hex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return None;
    }
    Some(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect(),
    )
}

fn decode(file: &Path) -> Vec<Tap> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(DECODER)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "decoding {} failed (pip install -r requirements-test.txt): {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Tap {
                kind: f[0].into(),
                identity: f[1].into(),
                version: f[2].into(),
                family: f[3].into(),
                protocol: f[4].into(),
                query_address: f[5].into(),
                query_port: f[6].parse().ok(),
                response_address: f[7].into(),
                response_port: f[8].parse().ok(),
                query_message: hex(f[9]),
                response_message: hex(f[10]),
                query_time: f[11].parse().unwrap(),
                response_time: f[12].parse().ok(),
                extra: Some(f[13]).filter(|e| *e != "-").map(String::from),
            }
        })
        .collect()
}

/// The same file through Debian's `dnstap-ldns`, in its quiet one-line format.
fn ldns_lines(file: &Path) -> Vec<String> {
    need("dnstap-ldns", "apt-get install dnstap-ldns (see ./test.sh)");
    let out = Command::new("dnstap-ldns")
        .arg("-q")
        .arg("-r")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "dnstap-ldns failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// An upstream answering every A query with 192.0.2.7.
fn upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .aa(true)
            .answer(&format!("{} 300 IN A 192.0.2.7", req.name()))
            .action()
    })
    .unwrap()
}

/// An upstream answering every A query with 192.0.2.7 and noting each query's source address.
fn recording_upstream() -> (Upstream, Arc<Mutex<Vec<SocketAddr>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let up = Upstream::start(move |req: &UpstreamRequest| {
        s2.lock().unwrap().push(req.src);
        req.reply()
            .aa(true)
            .answer(&format!("{} 300 IN A 192.0.2.7", req.name()))
            .action()
    })
    .unwrap();
    (up, seen)
}

/// Sends `q` over UDP from a socket of our own; returns (client port, query bytes, reply bytes).
fn ask_udp(server: SocketAddr, q: &Query) -> (u16, Vec<u8>, Vec<u8>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let wire = q.to_bytes();
    s.send_to(&wire, server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    buf.truncate(n);
    (s.local_addr().unwrap().port(), wire, buf)
}

/// Sends `q` over TCP; returns (client port, query bytes, reply bytes).
fn ask_tcp(server: SocketAddr, q: &Query) -> (u16, Vec<u8>, Vec<u8>) {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let wire = q.to_bytes();
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    (s.local_addr().unwrap().port(), wire, buf)
}

/// A server with `lines` and `forward` to `up` in its `.` block; the harness's start-up probes
/// go to an `invalid.` block without dnstap, so they never reach a collector.
fn start(dir: &Path, lines: &str, up: &Upstream) -> (Sextant, SocketAddr) {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n {lines}\n forward . {}\n}}\ninvalid.:{port} {{\n whoami\n}}\n",
        up.addr()
    );
    let mut s = Sextant::builder(bin(), &cf).cwd(dir).start();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    (s, addr)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn unix_collector_gets_client_and_forwarder_messages_with_wire_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tap.sock");
    let file = dir.path().join("tap.fstrm");
    let cap = Capture::unix(&sock, &file);
    let (up, seen) = recording_upstream();
    // `extra` with placeholders: CoreDNS's replacer without a reply (`{rcode}` is `-`) and
    // metadata (`forward/upstream`).
    let (s, addr) = start(
        dir.path(),
        &format!(
            "metadata\n dnstap unix://{} full {{\n  identity test-node-1\n  version Test-9.9\n  \
             extra \"{{type}} {{name}} {{proto}} {{remote}} {{port}} {{/forward/upstream}} {{rcode}} {{nope}}\"\n }}",
            sock.display()
        ),
        &up,
    );
    let t0 = now();
    let (uport, uq, ur) = ask_udp(addr, &Query::new("udp.example.", RecordType::A).id(4321));
    let (tport, tq, tr) = ask_tcp(addr, &Query::new("tcp.example.", RecordType::A).id(4322));
    let t1 = now();
    // The reply really is the upstream's answer.
    let r = Reply::parse(ur.clone()).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(
        r.answers(),
        vec!["udp.example. 300 IN A 192.0.2.7".to_string()]
    );
    std::thread::sleep(Duration::from_millis(500));
    let taps = cap.finish();
    drop(s);
    let kinds: Vec<&str> = taps.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CLIENT_QUERY",
            "FORWARDER_QUERY",
            "FORWARDER_RESPONSE",
            "CLIENT_RESPONSE",
            "CLIENT_QUERY",
            "FORWARDER_QUERY",
            "FORWARDER_RESPONSE",
            "CLIENT_RESPONSE"
        ],
        "{taps:#?}"
    );
    for t in &taps {
        assert_eq!(t.identity, "test-node-1");
        assert_eq!(t.version, "Test-9.9");
        assert_eq!(t.family, "INET");
        assert!(
            t.query_time >= t0 - 1.0 && t.query_time <= t1 + 1.0,
            "{t:?}"
        );
    }
    for (i, (proto, port, q, r)) in [("UDP", uport, &uq, &ur), ("TCP", tport, &tq, &tr)]
        .into_iter()
        .enumerate()
    {
        let (cq, fq, fr, cr) = (
            &taps[4 * i],
            &taps[4 * i + 1],
            &taps[4 * i + 2],
            &taps[4 * i + 3],
        );
        // Client side: the client's address and port, the bytes it sent and got.
        for t in [cq, cr] {
            assert_eq!(t.protocol, proto);
            assert_eq!(t.query_address, "127.0.0.1");
            assert_eq!(t.query_port, Some(port));
            assert_eq!(t.response_address, "");
            assert_eq!(t.response_port, None);
        }
        assert_eq!(cq.query_message.as_ref(), Some(q));
        assert_eq!(cq.response_message, None);
        assert_eq!(cr.response_message.as_ref(), Some(r));
        assert_eq!(cr.query_message, None);
        assert!(cr.response_time.unwrap() >= cr.query_time);
        assert_eq!(cr.query_time, cq.query_time);
        // Forwarder side: the upstream's address and port, the query it got, its answer.
        for t in [fq, fr] {
            assert_eq!(t.protocol, proto);
            assert_eq!(t.response_address, "127.0.0.1");
            assert_eq!(t.response_port, Some(up.addr().port()));
        }
        let sent = Reply::parse(fq.query_message.clone().unwrap()).unwrap();
        let name = if i == 0 {
            "udp.example."
        } else {
            "tcp.example."
        };
        let question = sent.question().unwrap();
        assert!(question.starts_with(name), "{question}");
        let got = Reply::parse(fr.response_message.clone().unwrap()).unwrap();
        assert_eq!(got.answers(), vec![format!("{name} 300 IN A 192.0.2.7")]);
        assert_eq!(fr.query_time, fq.query_time);
        assert!(fr.response_time.unwrap() >= fr.query_time);
        // Forwarder side, query address: the local side of forward's socket, as the upstream
        // saw it (CoreDNS's proxy.Connect localAddr).
        let src = seen.lock().unwrap()[i];
        for t in [fq, fr] {
            assert_eq!(t.query_address, src.ip().to_string());
            assert_eq!(t.query_port, Some(src.port()), "{t:?}");
        }
        // `extra`, filled in per message from the client's request (checked against CoreDNS
        // 1.14.7 by hand: the same strings, `{nope}` kept as written).
        let nope = "{nope}";
        let lower = proto.to_lowercase();
        let base = format!("A {name} {lower} 127.0.0.1 {port}");
        assert_eq!(
            cq.extra.as_deref(),
            Some(format!("{base} - - {nope}").as_str())
        );
        // forward/upstream is set before the exchange, as CoreDNS's forward does.
        let upstream = up.addr();
        for t in [fq, fr, cr] {
            assert_eq!(
                t.extra.as_deref(),
                Some(format!("{base} {upstream} - {nope}").as_str())
            );
        }
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
    // Debian's reader agrees on the stream: message types and the questions in it.
    let lines = ldns_lines(&file);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let marks: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        marks,
        ["CQ", "FQ", "FR", "CR", "CQ", "FQ", "FR", "CR"],
        "{lines:#?}"
    );
    // `DATE TIME CQ 127.0.0.1 UDP 29b "udp.example." IN A`
    assert!(lines[0].contains(" CQ 127.0.0.1 UDP "), "{}", lines[0]);
    assert!(lines[0].contains("\"udp.example.\" IN A"), "{}", lines[0]);
    assert!(lines[2].contains(" FR 127.0.0.1 UDP "), "{}", lines[2]);
    assert!(lines[7].contains(" CR 127.0.0.1 TCP "), "{}", lines[7]);
    assert!(lines[7].contains("\"tcp.example.\" IN A"), "{}", lines[7]);
}

#[test]
fn two_lines_tcp_without_wire_and_unix_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("full.sock");
    let tcp_port = free_port();
    let cap_unix = Capture::unix(&sock, &dir.path().join("full.fstrm"));
    let cap_tcp = Capture::tcp(tcp_port, &dir.path().join("tcp.fstrm"));
    let up = upstream();
    let (s, addr) = start(
        dir.path(),
        &format!(
            "dnstap tcp://127.0.0.1:{tcp_port}\n dnstap {} full",
            sock.display()
        ),
        &up,
    );
    let (port, _, reply) = ask_udp(addr, &Query::new("two.example.", RecordType::A));
    std::thread::sleep(Duration::from_millis(500));
    let plain = cap_tcp.finish();
    let full = cap_unix.finish();
    drop(s);
    for taps in [&plain, &full] {
        let kinds: Vec<&str> = taps.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "CLIENT_QUERY",
                "FORWARDER_QUERY",
                "FORWARDER_RESPONSE",
                "CLIENT_RESPONSE"
            ]
        );
        // Defaults: the host name and the server's version.
        assert_eq!(taps[0].identity, hostname());
        assert!(taps[0].version.starts_with("Sextant-"), "{:?}", taps[0]);
        assert_eq!(taps[0].query_port, Some(port));
    }
    assert!(plain
        .iter()
        .all(|t| t.query_message.is_none() && t.response_message.is_none()));
    assert_eq!(full[3].response_message.as_ref(), Some(&reply));
}

/// A query spelled byte by byte: ID, flags, the name, type A class IN, then `rest` (counted
/// in ARCOUNT as `additional` records).
fn crafted(id: u16, flags: u16, name: &str, additional: u16, rest: &[u8]) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
    b.extend_from_slice(&additional.to_be_bytes());
    for l in name.split('.').filter(|l| !l.is_empty()) {
        b.push(l.len() as u8);
        b.extend_from_slice(l.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b.extend_from_slice(rest);
    b
}

/// An OPT record: size, the TTL field (extended rcode, version, DO and Z bits), options.
fn opt(size: u16, ttl: u32, options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut rdata = Vec::new();
    for (code, data) in options {
        rdata.extend_from_slice(&code.to_be_bytes());
        rdata.extend_from_slice(&(data.len() as u16).to_be_bytes());
        rdata.extend_from_slice(data);
    }
    let mut b = vec![0, 0, 41];
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&ttl.to_be_bytes());
    b.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    b.extend_from_slice(&rdata);
    b
}

/// `full` logs the query as the plugins before dnstap left it, packed the way CoreDNS packs it
/// (each case checked against CoreDNS 1.14.7 with the same packets): the bytes as received when
/// nothing changed it (a mixed-case name, the OPT record's Z bits, a cookie and an unknown
/// option), the EDNS size `bufsize` lowered, an additional record's compressed owner name
/// written out. The response message is always the reply as the client got it.
#[test]
fn full_query_messages_are_the_query_as_dnstap_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tap.sock");
    let file = dir.path().join("q.fstrm");
    let cap = Capture::unix(&sock, &file);
    let up = upstream();
    let (s, addr) = start(
        dir.path(),
        &format!("bufsize 1232\n dnstap unix://{} full", sock.display()),
        &up,
    );
    let kept = crafted(
        0x0101,
        0x0100,
        "MiXeD.Example.ORG",
        1,
        &opt(
            1232,
            0x0000_8123,
            &[(10, &[1, 2, 3, 4, 5, 6, 7, 8]), (65001, b"xyz")],
        ),
    );
    let lowered = crafted(0x0102, 0x0100, "big.example.org", 1, &opt(4096, 0, &[]));
    let mut want_lowered = lowered.clone();
    let at = want_lowered.len() - 11 + 3;
    want_lowered[at..at + 2].copy_from_slice(&1232u16.to_be_bytes());
    // An A record in the additional section whose owner points at the question's name.
    let record = [0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
    let mut compressed_ar = vec![0xc0, 0x0c];
    compressed_ar.extend_from_slice(&record);
    let compressed = crafted(0x0103, 0x0100, "ptr.example.org", 1, &compressed_ar);
    let mut written_out = crafted(0x0103, 0x0100, "ptr.example.org", 1, &[]);
    written_out.extend_from_slice(b"\x03ptr\x07example\x03org\x00");
    written_out.extend_from_slice(&record);
    let sock_c = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock_c
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut replies = Vec::new();
    for q in [&kept, &lowered, &compressed] {
        sock_c.send_to(q, addr).unwrap();
        let mut buf = vec![0u8; 65535];
        let (n, _) = sock_c.recv_from(&mut buf).unwrap();
        buf.truncate(n);
        assert_eq!(&buf[..2], &q[..2]);
        replies.push(buf);
    }
    std::thread::sleep(Duration::from_millis(500));
    let taps = cap.finish();
    drop(s);
    let client: Vec<&Tap> = taps
        .iter()
        .filter(|t| t.kind.starts_with("CLIENT_"))
        .collect();
    let kinds: Vec<&str> = client.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["CLIENT_QUERY", "CLIENT_RESPONSE"].repeat(3),
        "{taps:#?}"
    );
    for (i, want) in [&kept, &want_lowered, &written_out].into_iter().enumerate() {
        let (cq, cr) = (client[2 * i], client[2 * i + 1]);
        assert_eq!(cq.query_message.as_ref(), Some(want), "query {i}");
        assert_eq!(cr.response_message.as_ref(), Some(&replies[i]), "reply {i}");
        assert_eq!(cr.query_time, cq.query_time);
    }
}

#[test]
fn a_collector_appearing_later_is_dialled_and_queries_never_wait() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("late.sock");
    let up = upstream();
    let (s, addr) = start(dir.path(), &format!("dnstap {} full", sock.display()), &up);
    s.wait_for_line("No connection to dnstap endpoint", Duration::from_secs(5))
        .unwrap();
    // No collector: queries are answered at once, their messages dropped.
    for i in 0..20 {
        let t = Instant::now();
        let (_, _, r) = ask_udp(
            addr,
            &Query::new(&format!("early{i}.example."), RecordType::A),
        );
        assert_eq!(Reply::parse(r).unwrap().answers().len(), 1);
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    let cap = Capture::unix(&sock, &dir.path().join("late.fstrm"));
    // The drops are reported and the endpoint redialled every 10 s.
    s.wait_for_line("Dropped dnstap messages: ", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (port, _, _) = ask_udp(addr, &Query::new("late.example.", RecordType::A));
    std::thread::sleep(Duration::from_millis(500));
    let taps = cap.finish();
    let kinds: Vec<&str> = taps.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CLIENT_QUERY",
            "FORWARDER_QUERY",
            "FORWARDER_RESPONSE",
            "CLIENT_RESPONSE"
        ],
        "{taps:#?}"
    );
    assert_eq!(taps[0].query_port, Some(port));
    let dropped: u64 = s
        .lines()
        .iter()
        .filter_map(|l| {
            l.split("Dropped dnstap messages: ")
                .nth(1)?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(dropped, 80, "4 messages for each of the 20 early queries");
}

#[test]
fn a_collector_killed_mid_run_costs_no_answers_and_is_redialled() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("crash.sock");
    let cap = Capture::unix(&sock, &dir.path().join("first.fstrm"));
    let up = upstream();
    let (s, addr) = start(dir.path(), &format!("dnstap {}", sock.display()), &up);
    ask_udp(addr, &Query::new("before.example.", RecordType::A));
    std::thread::sleep(Duration::from_millis(300));
    cap.crash();
    let _ = std::fs::remove_file(&sock);
    // Every query is still answered promptly while the writer finds the collector gone.
    let t0 = Instant::now();
    for i in 0..200 {
        let t = Instant::now();
        let (_, _, r) = ask_udp(addr, &Query::new(&format!("q{i}.example."), RecordType::A));
        assert_eq!(Reply::parse(r).unwrap().answers().len(), 1);
        assert!(t.elapsed() < Duration::from_millis(500), "query {i}");
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
    // A new collector on the same path is dialled at the next check.
    let cap = Capture::unix(&sock, &dir.path().join("second.fstrm"));
    s.wait_for_line("Dropped dnstap messages: ", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ask_udp(addr, &Query::new("after.example.", RecordType::A));
    std::thread::sleep(Duration::from_millis(500));
    let taps = cap.finish();
    assert_eq!(taps.len(), 4, "{taps:#?}");
    assert_eq!(taps[0].kind, "CLIENT_QUERY");
    assert!(taps.iter().all(|t| t.query_message.is_none()));
}

#[test]
fn a_failed_upstream_is_tapped_per_attempt_and_the_servers_own_error_reply_is_not() {
    // As CoreDNS 1.14.7 does: one FORWARDER_QUERY per attempt (two for one upstream), no
    // FORWARDER_RESPONSE without a reply, and no CLIENT_RESPONSE for the SERVFAIL the server
    // writes when no plugin wrote a reply.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fail.sock");
    let cap = Capture::unix(&sock, &dir.path().join("fail.fstrm"));
    let port = free_port();
    let closed = free_port();
    let cf = format!(
        ".:{port} {{\n dnstap {} full\n forward . 127.0.0.1:{closed}\n}}\ninvalid.:{port} {{\n whoami\n}}\n",
        sock.display()
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    let (_, _, r) = ask_udp(addr, &Query::new("down.example.", RecordType::A));
    assert_eq!(Reply::parse(r).unwrap().rcode_name(), "SERVFAIL");
    std::thread::sleep(Duration::from_millis(500));
    let taps = cap.finish();
    let kinds: Vec<&str> = taps.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["CLIENT_QUERY", "FORWARDER_QUERY", "FORWARDER_QUERY"],
        "{taps:#?}"
    );
    assert_eq!(taps[1].response_port, Some(closed));
}

/// A TLS dnstap collector (Python's `ssl`): answers READY with ACCEPT, reads START, then
/// appends every data frame to OUT; writes its port to PORTFILE.
const TLS_COLLECTOR: &str = r#"
import sys, ssl, socket, struct
cert, key, port_file, out = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(('127.0.0.1', 0))
ls.listen(4)
open(port_file, 'w').write(str(ls.getsockname()[1]))
f = open(out, 'wb')
CT = b'protobuf:dnstap.Dnstap'
def rd(s, n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b
while True:
    c, _ = ls.accept()
    try:
        s = ctx.wrap_socket(c, server_side=True)
        assert rd(s, 4) == b'\0\0\0\0'
        ready = rd(s, struct.unpack('!I', rd(s, 4))[0])
        assert struct.unpack('!I', ready[:4])[0] == 4 and CT in ready
        s.sendall(struct.pack('!IIIII', 0, 12 + len(CT), 1, 1, len(CT)) + CT)
        assert rd(s, 4) == b'\0\0\0\0'
        start = rd(s, struct.unpack('!I', rd(s, 4))[0])
        assert struct.unpack('!I', start[:4])[0] == 2
        while True:
            n = struct.unpack('!I', rd(s, 4))[0]
            if n == 0:
                break
            f.write(struct.pack('!I', n) + rd(s, n))
            f.flush()
    except Exception as e:
        print('collector:', repr(e), flush=True)
"#;

#[test]
fn tls_collector_with_skipverify_and_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), pair.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    let out = dir.path().join("tls.fstrm");
    let port_file = dir.path().join("port");
    let mut collector = Command::new("python3")
        .arg("-c")
        .arg(TLS_COLLECTOR)
        .arg(dir.path().join("cert.pem"))
        .arg(dir.path().join("key.pem"))
        .arg(&port_file)
        .arg(&out)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            if let Ok(p) = p.trim().parse::<u16>() {
                break p;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "collector did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let up = upstream();
    // Without skipverify the self-signed certificate is refused: no connection, answers go on.
    let (s, addr) = start(
        dir.path(),
        &format!("dnstap tls://127.0.0.1:{port} full"),
        &up,
    );
    s.wait_for_line("No connection to dnstap endpoint", Duration::from_secs(5))
        .unwrap();
    let (_, _, r) = ask_udp(addr, &Query::new("refused.example.", RecordType::A));
    assert_eq!(Reply::parse(r).unwrap().answers().len(), 1);
    drop(s);
    let (s, addr) = start(
        dir.path(),
        &format!("dnstap tls://127.0.0.1:{port} full {{\n  skipverify\n }}"),
        &up,
    );
    let (cport, q, r) = ask_tcp(addr, &Query::new("tls.example.", RecordType::A));
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    let _ = collector.kill();
    let _ = collector.wait();
    let taps = decode(&out);
    let kinds: Vec<&str> = taps.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CLIENT_QUERY",
            "FORWARDER_QUERY",
            "FORWARDER_RESPONSE",
            "CLIENT_RESPONSE"
        ],
        "{taps:#?}"
    );
    assert_eq!(taps[0].query_port, Some(cport));
    assert_eq!(taps[0].protocol, "TCP");
    assert_eq!(taps[0].query_message.as_ref(), Some(&q));
    assert_eq!(taps[3].response_message.as_ref(), Some(&r));
}

/// A dnstap sink that connects to a `dnstap listen` socket (unix path or `host:port`): answers
/// READY with ACCEPT, reads START, appends every data frame to OUT until STOP or EOF.
const SINK: &str = r#"
import sys, socket, struct
target, out = sys.argv[1:3]
if target.startswith('/'):
    s = socket.socket(socket.AF_UNIX)
    s.connect(target)
else:
    h, p = target.rsplit(':', 1)
    s = socket.create_connection((h, int(p)))
f = open(out, 'wb')
CT = b'protobuf:dnstap.Dnstap'
def rd(n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit(0)
        b += c
    return b
assert rd(4) == b'\0\0\0\0'
ready = rd(struct.unpack('!I', rd(4))[0])
assert struct.unpack('!I', ready[:4])[0] == 4 and CT in ready
s.sendall(struct.pack('!IIIII', 0, 12 + len(CT), 1, 1, len(CT)) + CT)
assert rd(4) == b'\0\0\0\0'
start = rd(struct.unpack('!I', rd(4))[0])
assert struct.unpack('!I', start[:4])[0] == 2
print('started', flush=True)
while True:
    n = struct.unpack('!I', rd(4))[0]
    if n == 0:
        break
    f.write(struct.pack('!I', n) + rd(n))
    f.flush()
"#;

/// Runs [`SINK`] against `target` until it has done the handshake.
fn sink(target: &str, out: &Path) -> Child {
    let mut c = Command::new("python3")
        .arg("-c")
        .arg(SINK)
        .arg(target)
        .arg(out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "started", "sink handshake");
    c
}

#[test]
fn listen_sockets_feed_every_connected_sink() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("listen.sock");
    let tcp_port = free_port();
    let up = upstream();
    let (s, addr) = start(
        dir.path(),
        &format!(
            "dnstap listen unix://{} full\n dnstap listen tcp://127.0.0.1:{tcp_port}",
            sock.display()
        ),
        &up,
    );
    // No sink yet: queries are answered, their messages discarded.
    ask_udp(addr, &Query::new("nobody.example.", RecordType::A));
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut a = sink(sock.to_str().unwrap(), &dir.path().join("a.fstrm"));
    let mut b = sink(sock.to_str().unwrap(), &dir.path().join("b.fstrm"));
    let mut c = sink(
        &format!("127.0.0.1:{tcp_port}"),
        &dir.path().join("c.fstrm"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (port, _, reply) = ask_udp(addr, &Query::new("heard.example.", RecordType::A));
    std::thread::sleep(Duration::from_millis(500));
    // Stopping the server ends the streams: the sinks exit on their own.
    drop(s);
    for ch in [&mut a, &mut b, &mut c] {
        let t0 = Instant::now();
        while ch.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = ch.kill();
        let _ = ch.wait();
    }
    for (f, full) in [("a.fstrm", true), ("b.fstrm", true), ("c.fstrm", false)] {
        let taps = decode(&dir.path().join(f));
        let kinds: Vec<&str> = taps.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "CLIENT_QUERY",
                "FORWARDER_QUERY",
                "FORWARDER_RESPONSE",
                "CLIENT_RESPONSE"
            ],
            "{f}: {taps:#?}"
        );
        assert_eq!(taps[0].query_port, Some(port));
        assert_eq!(taps[3].response_message.is_some(), full);
        if full {
            assert_eq!(taps[3].response_message.as_ref(), Some(&reply));
        }
    }
}
