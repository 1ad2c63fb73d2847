//! End-to-end tests of the `pprof` plugin: the real binary serving `/debug/pprof/` beside DNS on
//! loopback; a CPU profile taken while the server answers queries is read by `go tool pprof`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sextant_testkit::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// The `go` command: on PATH or in Go's usual install directory.
fn go() -> PathBuf {
    for p in std::env::var("PATH").unwrap_or_default().split(':') {
        let g = Path::new(p).join("go");
        if g.is_file() {
            return g;
        }
    }
    let g = PathBuf::from("/usr/local/go/bin/go");
    assert!(
        g.is_file(),
        "go is missing (go tool pprof reads the profile): apt-get install golang-go, or install Go from https://go.dev/dl/ into /usr/local/go"
    );
    g
}

/// One HTTP/1.1 request (`Connection: close`): status, head and body bytes.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, timeout).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[at + 4..].to_vec())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    request(addr, "GET", path, Duration::from_secs(10))
}

fn whoami_answers(dns: SocketAddr) {
    let r = udp(
        dns,
        &Query::new("example.org.", RecordType::A),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.answers().len(), 0);
    assert_eq!(r.additional().len(), 2, "{:?}", r.additional());
    assert!(r.additional()[0].starts_with("example.org. 0 IN A 127.0.0.1"));
}

#[test]
fn pages_status_codes_and_heap_figures() {
    let (dns, http, http2) = (free_port(), free_port(), free_port());
    // Two blocks with pprof: the same address is served once, another address separately.
    let cf = format!(
        ".:{dns} {{\n    pprof 127.0.0.1:{http}\n    whoami\n}}\nexample.org:{dns} {{\n    pprof 127.0.0.1:{http} {{\n        block 5\n    }}\n    whoami\n}}\nexample.net:{dns} {{\n    pprof 127.0.0.1:{http2}\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    let dns = SocketAddr::from(([127, 0, 0, 1], dns));
    s.wait_dns(dns, Duration::from_secs(10)).unwrap();
    whoami_answers(dns);
    for port in [http, http2] {
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        let (st, head, _) = get(a, "/debug/pprof");
        assert_eq!(st, 302, "{head}");
        assert!(head.contains("location: /debug/pprof/"), "{head}");
        let (st, head, body) = get(a, "/debug/pprof/");
        assert_eq!(st, 200, "{head}");
        assert!(head.contains("content-type: text/html"), "{head}");
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains("<a href=\"profile\">profile</a>"), "{body}");
        let (st, _, body) = get(a, "/debug/pprof/cmdline");
        assert_eq!(st, 200);
        assert!(body.split(|b| *b == 0).any(|a| a == b"-conf"), "{body:?}");
        let (st, _, body) = get(a, "/debug/pprof/heap");
        assert_eq!(st, 501);
        assert!(String::from_utf8_lossy(&body).contains("?debug=1"));
        let (st, _, body) = get(a, "/debug/pprof/heap?debug=1");
        assert_eq!(st, 200);
        let text = String::from_utf8(body).unwrap();
        let in_use: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("in_use_bytes "))
            .unwrap_or_else(|| panic!("{text}"))
            .parse()
            .unwrap();
        assert!(in_use > 100_000, "{text}");
        // jemalloc's own figures: what is resident covers what is allocated.
        let figure = |k: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("{k}: {text}"))
                .trim()
                .parse()
                .unwrap()
        };
        assert_eq!(figure("allocated_bytes "), in_use, "{text}");
        assert!(figure("resident_bytes ") >= in_use, "{text}");
        assert!(figure("mapped_bytes ") >= figure("active_bytes "), "{text}");
        for p in [
            "goroutine",
            "block",
            "mutex",
            "threadcreate",
            "trace",
            "symbol",
        ] {
            let (st, _, body) = get(a, &format!("/debug/pprof/{p}"));
            assert_eq!(st, 501, "{p}: {}", String::from_utf8_lossy(&body));
        }
        assert_eq!(get(a, "/debug/pprof/nope").0, 404);
        assert_eq!(get(a, "/debug").0, 404);
        let (st, head, body) = request(a, "HEAD", "/debug/pprof/", Duration::from_secs(5));
        assert_eq!(st, 200, "{head}");
        assert!(body.is_empty());
        let (st, head, _) = request(a, "POST", "/debug/pprof/", Duration::from_secs(5));
        assert_eq!(st, 405, "{head}");
    }
    drop(s);
}

#[test]
fn cpu_profile_is_read_by_go_tool_pprof() {
    let go = go();
    let (dns, http) = (free_port(), free_port());
    let cf = format!(".:{dns} {{\n    pprof 127.0.0.1:{http}\n    whoami\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    let dns = SocketAddr::from(([127, 0, 0, 1], dns));
    let http = SocketAddr::from(([127, 0, 0, 1], http));
    s.wait_dns(dns, Duration::from_secs(10)).unwrap();
    // Load for the profile to see: queries for 2.5 s from four threads (bounded by time and
    // count, loopback only). One client waiting for each answer kept the server so idle that
    // a 2 s profile at 100 Hz sometimes caught no sample of it at all.
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_millis(2500);
                let q = Query::new("example.org.", RecordType::A);
                let mut n = 0;
                while Instant::now() < end && n < 200_000 {
                    let _ = udp(dns, &q, Duration::from_secs(1));
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let second = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // A second profile while one runs: the profiler is in use.
        get(http, "/debug/pprof/profile?seconds=1")
    });
    let (st, head, body) = get(http, "/debug/pprof/profile?seconds=2");
    let sent: usize = loaders.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(sent > 100, "load sent {sent} queries");
    assert_eq!(st, 200, "{head}\n{}", String::from_utf8_lossy(&body));
    assert!(
        head.contains("content-type: application/octet-stream"),
        "{head}"
    );
    assert!(
        head.contains("content-disposition: attachment; filename=\"profile\""),
        "{head}"
    );
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
    let (st2, _, body2) = second.join().unwrap();
    assert_eq!(st2, 500, "{}", String::from_utf8_lossy(&body2));
    assert!(String::from_utf8_lossy(&body2).contains("Could not enable CPU profiling"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.pb.gz");
    std::fs::write(&file, &body).unwrap();
    let out = std::process::Command::new(&go)
        .args(["tool", "pprof", "-top", "-nodecount=400"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go tool pprof failed:\n{text}\n{err}");
    assert!(text.contains("Type: cpu"), "{text}\n{err}");
    assert!(text.contains("flat%"), "{text}\n{err}");
    eprintln!("{text}");
    // The samples name Sextant's own functions (its query path served the load).
    assert!(text.contains("sextant::"), "{text}\n{err}");
    // Still serving after profiling.
    whoami_answers(dns);
    drop(s);
}
