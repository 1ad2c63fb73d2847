//! Abuse against the real binary on 127.0.0.1 (faults.md §5.6), bounded in count and time:
//! TCP slowloris against the connection cap and read timeout, idle connections and the fd count,
//! a pipelined flood on one connection (back-pressure, VmRSS), UDP amplification factors, and
//! parallel A+AAAA from one socket.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

/// The tests here measure latency and memory: they run one at a time so one test's load does not
/// show up in another's figures.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(body: &str) -> (Sextant, SocketAddr) {
    let port = free_port();
    let mut s = Sextant::start(
        Path::new(env!("CARGO_BIN_EXE_sextant")),
        &format!(".:{port} {{\n{body}\n}}\n"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    (s, addr)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn ok_udp(addr: SocketAddr, name: &str) -> Duration {
    let started = Instant::now();
    let r = udp(addr, &Query::new(name, RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    started.elapsed()
}

/// Waits until `f` holds, polling every 50 ms, up to `limit`; returns the time it took.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if f() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn tcp_slowloris_is_bounded_and_timed_out() {
    let _serial = serial();
    let (mut s, addr) = start("    whoami");
    let pid = s.pid();
    let base_fds = fd_count(pid);
    let base_rss = rss_kib(pid);
    // More connections than the server's cap (1024), each sending one byte of a length prefix.
    const N: usize = 1500;
    let started = Instant::now();
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let mut c = TcpStream::connect_timeout(&addr, T).unwrap();
        c.write_all(&[0]).unwrap();
        conns.push(c);
    }
    let opened = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let peak_fds = fd_count(pid);
    assert!(
        peak_fds <= base_fds + 1024 + 8,
        "{peak_fds} fds: the connection cap does not hold"
    );
    // UDP is served at once while the TCP slots are taken.
    let udp_lat = ok_udp(addr, "udp.during.slowloris.");
    assert!(udp_lat < Duration::from_millis(200), "{udp_lat:?}");
    // A new TCP client is served once the read timeout (3 s) frees slots.
    let t0 = Instant::now();
    let r = tcp(
        addr,
        &Query::new("tcp.during.slowloris.", RecordType::A),
        Duration::from_secs(8),
    )
    .unwrap();
    let tcp_lat = t0.elapsed();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(tcp_lat < Duration::from_millis(4500), "{tcp_lat:?}");
    let peak_rss = rss_kib(pid);
    // Every slowloris connection is closed by the server: the accepted ones after 3 s, those
    // waiting in the backlog 3 s after being accepted.
    let mut closed = 0;
    let deadline = started + Duration::from_secs(12);
    for c in &mut conns {
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut b = [0u8; 16];
        if matches!(std::io::Read::read(c, &mut b), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    let all_closed = started.elapsed();
    assert_eq!(closed, N, "slowloris connections left open");
    drop(conns);
    let back = wait_until(Duration::from_secs(3), || fd_count(pid) <= base_fds);
    eprintln!(
        "slowloris: {N} conns opened in {opened:?}; server fds {base_fds} -> {peak_fds}; RSS \
         {base_rss} -> {peak_rss} KiB; UDP during attack {udp_lat:?}; new TCP client served \
         after {tcp_lat:?}; all closed by server within {all_closed:?}; fds back after {back:?}"
    );
    assert!(back.is_some(), "fds {} vs {base_fds}", fd_count(pid));
    assert!(
        peak_rss < base_rss + 64 * 1024,
        "RSS {base_rss} -> {peak_rss} KiB"
    );
    assert!(s.exited().is_none());
}

#[test]
fn idle_connections_closed_after_idle_timeout() {
    let _serial = serial();
    let (mut s, addr) = start("    whoami");
    let pid = s.pid();
    let base_fds = fd_count(pid);
    const N: usize = 1000;
    let started = Instant::now();
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = TcpConn::connect(addr, T).unwrap();
        // A tenth of them ask one question first: the idle timer runs between queries too.
        if i % 10 == 0 {
            c.send_query(&Query::new("idle.example.", RecordType::A))
                .unwrap();
            c.recv_reply(T).unwrap();
        }
        conns.push(c);
    }
    let opened = started.elapsed();
    let peak =
        wait_until(Duration::from_secs(2), || fd_count(pid) >= base_fds + N).map(|_| fd_count(pid));
    assert!(peak.is_some(), "server holds {} fds", fd_count(pid));
    // Still open well before the 10 s idle timeout.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        fd_count(pid) >= base_fds + N,
        "closed before the idle timeout"
    );
    // Closed after it, by the server.
    let back =
        wait_until(Duration::from_secs(9), || fd_count(pid) <= base_fds).map(|_| started.elapsed());
    eprintln!(
        "idle: {N} conns opened in {opened:?}; server fds {base_fds} -> {peak:?}; back to \
         baseline {back:?} after the first connect"
    );
    let back = back.expect("fd count never returned to baseline");
    assert!(back >= Duration::from_secs(9), "{back:?}");
    assert!(back < Duration::from_secs(14), "{back:?}");
    let mut closed = 0;
    for c in &mut conns {
        if c.is_closed(Duration::from_millis(200)) {
            closed += 1;
        }
    }
    assert_eq!(closed, N);
    assert!(s.exited().is_none());
}

#[test]
fn pipelined_flood_on_one_connection_is_back_pressured() {
    let _serial = serial();
    let (mut s, addr) = start("    whoami");
    let pid = s.pid();
    // Warm up so the runtime's steady allocations are in the baseline.
    for _ in 0..200 {
        ok_udp(addr, "warm.example.");
    }
    let base_rss = rss_kib(pid);
    const N: u32 = 100_000;
    let conn = TcpStream::connect_timeout(&addr, T).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut wr = conn.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w2 = written.clone();
    let writer = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(64 * 64);
        for i in 0..N {
            let q = Query::new("flood.example.", RecordType::A)
                .id(i as u16)
                .to_bytes();
            batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
            batch.extend_from_slice(&q);
            if i % 64 == 63 || i == N - 1 {
                wr.write_all(&batch).unwrap();
                batch.clear();
                w2.store(i as u64 + 1, Ordering::Relaxed);
            }
        }
    });
    // Do not read for 1.5 s: the server must stop reading instead of buffering answers.
    let mut peak = base_rss;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let written_while_paused = written.load(Ordering::Relaxed);
    // Now read everything, sampling memory as we go.
    let mut rd = std::io::BufReader::with_capacity(1 << 16, conn);
    rd.get_ref().set_read_timeout(Some(T)).unwrap();
    let mut seen = vec![0u32; 65536];
    let mut len = [0u8; 2];
    let mut body = vec![0u8; 65535];
    for i in 0..N {
        std::io::Read::read_exact(&mut rd, &mut len).unwrap();
        let n = u16::from_be_bytes(len) as usize;
        std::io::Read::read_exact(&mut rd, &mut body[..n]).unwrap();
        assert_eq!(body[3] & 0x0f, 0, "rcode");
        seen[u16::from_be_bytes([body[0], body[1]]) as usize] += 1;
        if i % 5000 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    writer.join().unwrap();
    let took = t0.elapsed();
    // Ids wrap at 65 536: every id was answered once or twice, as often as it was sent.
    for (id, c) in seen.iter().enumerate() {
        let expect = if (id as u32) < N - 65536 { 2 } else { 1 };
        assert_eq!(*c, expect, "id {id}");
    }
    eprintln!(
        "flood: {N} pipelined queries on one connection; written while the client did not \
         read: {written_while_paused}; all answered in {took:?}; RSS {base_rss} -> peak {peak} KiB"
    );
    // How many of the queries the kernel's socket buffers absorbed while the client did not
    // read depends on loopback buffer autotuning (all 100 000 on an idle machine), so it is
    // reported, not asserted; the server's own memory is the criterion.
    assert!(peak < base_rss + 32 * 1024, "RSS {base_rss} -> {peak} KiB");
    assert!(s.exited().is_none());
}

/// Bytes of one UDP exchange from a fresh socket.
fn exchange(addr: SocketAddr, q: &[u8]) -> Vec<u8> {
    udp_raw(addr, q, T).unwrap().expect("a reply")
}

#[test]
fn udp_amplification_is_bounded() {
    let _serial = serial();
    let authors: Vec<String> = (0..150)
        .map(|i| format!("author-{i:03}-long-name"))
        .collect();
    let (mut s, addr) = start(&format!(
        "    any\n    chaos Sextant-1 {}\n    whoami",
        authors.join(" ")
    ));
    let mut report = Vec::new();
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "ANY no EDNS",
            Query::new("example.org.", RecordType::ANY).to_bytes(),
            512,
        ),
        (
            "ANY EDNS 4096",
            Query::new("example.org.", RecordType::ANY)
                .edns(4096)
                .to_bytes(),
            1232,
        ),
        (
            "4 KiB TXT no EDNS",
            Query::new("authors.bind.", RecordType::TXT)
                .class(3)
                .to_bytes(),
            512,
        ),
        (
            "4 KiB TXT EDNS 4096",
            Query::new("authors.bind.", RecordType::TXT)
                .class(3)
                .edns(4096)
                .to_bytes(),
            1232,
        ),
        (
            "4 KiB TXT EDNS 65535 DO",
            Query::new("authors.bind.", RecordType::TXT)
                .class(3)
                .edns(65535)
                .do_bit()
                .to_bytes(),
            1232,
        ),
        (
            "A no EDNS",
            Query::new("example.org.", RecordType::A).to_bytes(),
            512,
        ),
    ];
    let mut worst = 0f64;
    for (what, q, cap) in &cases {
        let r = exchange(addr, q);
        let factor = r.len() as f64 / q.len() as f64;
        report.push(format!(
            "{what}: {} -> {} bytes = {factor:.1}x",
            q.len(),
            r.len()
        ));
        assert!(r.len() <= *cap, "{what}: {} bytes", r.len());
        // A zone's own large RRset over UDP is bounded by the size caps only: truncation keeps
        // the records that fit, as CoreDNS's does (issue 12, docs/replies.md), so 4 KiB of TXT
        // gives ~500 bytes without EDNS and ~1230 with it. What Sextant makes up itself stays
        // within 10x.
        if !what.contains("TXT") {
            worst = worst.max(factor);
        }
        if what.starts_with("ANY") {
            let rep = Reply::parse(r).unwrap();
            assert_eq!(rep.answers().len(), 1, "RFC 8482 minimal ANY answer");
            assert!(factor <= 10.0, "{what}: {factor:.1}x");
        }
    }
    eprintln!(
        "amplification:\n  {}\n  worst {worst:.1}x",
        report.join("\n  ")
    );
    assert!(
        worst <= 10.0,
        "worst amplification {worst:.1}x (without TXT)"
    );
    assert!(s.exited().is_none());
}

#[test]
fn parallel_a_and_aaaa_from_one_socket() {
    let _serial = serial();
    let (mut s, addr) = start("    whoami");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut lat = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..300u16 {
        let a = Query::new("pair.example.", RecordType::A)
            .id(2 * i)
            .to_bytes();
        let aaaa = Query::new("pair.example.", RecordType::AAAA)
            .id(2 * i + 1)
            .to_bytes();
        let t0 = Instant::now();
        sock.send(&a).unwrap();
        sock.send(&aaaa).unwrap();
        let mut got = HashSet::new();
        while got.len() < 2 {
            let n = sock.recv(&mut buf).expect("both answered");
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert!(id == 2 * i || id == 2 * i + 1, "stray id {id}");
            assert_eq!(buf[3] & 0x0f, 0);
            assert!(n > 12);
            got.insert(id);
            lat.push(t0.elapsed());
        }
    }
    lat.sort();
    let p50 = lat[lat.len() / 2];
    let p99 = lat[lat.len() * 99 / 100];
    let max = lat[lat.len() - 1];
    eprintln!("A+AAAA pairs: 300 pairs, latency p50 {p50:?} p99 {p99:?} max {max:?}");
    // faults.md asks for < 5 ms each; on an idle machine p99 is ~0.2 ms. The bound here leaves
    // room for a busy 2-core CI machine while still catching serialization that would push a
    // glibc resolver into its 5 s retry.
    assert!(p99 < Duration::from_millis(25), "p99 {p99:?}");
    assert!(max < Duration::from_millis(1000), "max {max:?}");
    assert!(s.exited().is_none());
}
