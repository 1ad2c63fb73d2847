//! DNS over HTTPS (HTTP/1.1, HTTP/2, HTTP/3), QUIC and gRPC end to end with real clients: kdig
//! (`+https`, `+tls`, `+quic`), curl `--http2`, dnspython's DoH/DoH3/DoQ clients (httpx, h2,
//! aioquic) and grpcio, through tests/transport_client.py; the `grpc` upstream plugin against
//! Sextant's own `grpc://` server. Every answer is checked whole. Bad input (malformed HTTP,
//! oversized bodies, QUIC garbage, bad gRPC messages) gets the protocol's error and the server
//! keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sextant_testkit::*;

const T: Duration = Duration::from_secs(10);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn cert() -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

const HOSTS: &str = "hosts {\n        192.0.2.10 www.example.org\n        2001:db8::10 www.example.org\n        ttl 300\n    }";

fn start(corefile: &str) -> Sextant {
    let (c, k) = cert();
    let s = Sextant::builder(bin(), corefile)
        .file("cert.pem", c)
        .file("key.pem", k)
        .start();
    s.wait_for_line("CoreDNS-", T).unwrap();
    s
}

fn ca(s: &Sextant) -> PathBuf {
    s.dir().join("cert.pem")
}

/// Runs tests/transport_client.py; its JSON output.
fn client(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transport_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "transport_client.py {args:?} failed:\n{stdout}{stderr}\n(its Python packages: python3 -m pip install -r requirements-test.txt, or run ./test.sh)"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn one(v: &Value) -> &Value {
    &v["results"][0]
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The answer of `www.example.org. A` from the hosts plugin, as dnspython prints it.
fn assert_www_a(r: &Value) {
    assert_eq!(r["rcode"], "NOERROR", "{r}");
    assert_eq!(strs(&r["flags"]), ["qr", "aa", "rd"], "{r}");
    assert_eq!(strs(&r["question"]), ["www.example.org. IN A"], "{r}");
    assert_eq!(
        strs(&r["answer"]),
        ["www.example.org. 300 IN A 192.0.2.10"],
        "{r}"
    );
    assert!(r["authority"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["additional"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["edns"], 0, "{r}");
    assert_eq!(r["payload"], 1232, "{r}");
}

/// kdig's view of an answer: (status, flags, answer lines).
fn kdig(args: &[&str]) -> (String, String, Vec<String>) {
    let out = Command::new("kdig")
        .args(args)
        .output()
        .expect("kdig runs (apt-get install knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kdig {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = text
        .lines()
        .find_map(|l| {
            l.contains("->>HEADER<<-")
                .then(|| l.split("status: ").nth(1))
                .flatten()
        })
        .map(|s| s.split(';').next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no status in {text}"));
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix(";; Flags: "))
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|| panic!("no flags in {text}"));
    let mut answers = Vec::new();
    let mut in_answer = false;
    for l in text.lines() {
        if l.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if l.trim().is_empty() || l.starts_with(";;") {
                break;
            }
            answers.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    (status, flags, answers)
}

/// curl's view of a request: (status, HTTP version, headers lower-cased, body).
fn curl(args: &[&str]) -> (u16, String, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code} %{http_version}", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (apt-get install curl)");
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = w.split_whitespace();
    let code = it.next().unwrap_or("0").parse().unwrap_or(0);
    let version = it.next().unwrap_or("").to_string();
    (
        code,
        version,
        std::fs::read_to_string(&head)
            .unwrap_or_default()
            .to_lowercase(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

/// 40 DoH GETs (A and AAAA in turn) as concurrent streams of one HTTP/2 connection (curl
/// `--parallel`, which multiplexes): each stream gets its own query's answer.
fn doh_streams_share_one_connection(base: &[&str], url: &str, dir: &Path) {
    let mut args: Vec<String> = ["-s", "-Z", "--parallel-max", "40"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(base.iter().map(|a| a.to_string()));
    args.extend(["-w".to_string(), "%{num_connects}\\n".to_string()]);
    for i in 0..40 {
        let t = if i % 2 == 0 {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        let q = Query::new("www.example.org.", t).id(0).to_bytes();
        args.push("-o".into());
        args.push(dir.join(format!("par{i}.bin")).display().to_string());
        args.push(format!("{url}?dns={}", b64url(&q)));
    }
    let out = Command::new("curl")
        .args(&args)
        .output()
        .expect("curl runs (apt-get install curl)");
    assert!(out.status.success(), "{out:?}");
    // One new connection for all 40 (the others reuse it).
    let connects: u32 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap_or(0))
        .sum();
    assert_eq!(connects, 1, "{}", String::from_utf8_lossy(&out.stdout));
    for i in 0..40 {
        let body = std::fs::read(dir.join(format!("par{i}.bin"))).unwrap();
        let r = Reply::parse(body).unwrap();
        let want = if i % 2 == 0 {
            "www.example.org. 300 IN A 192.0.2.10"
        } else {
            "www.example.org. 300 IN AAAA 2001:db8::10"
        };
        assert_eq!(r.answers(), [want], "stream {i}");
    }
}

fn b64url(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The sum of the samples of `name` whose labels include every one of `labels` (comma-separated
/// `k="v"` pairs, in any order).
fn metric(port: u16, name: &str, labels: &str) -> f64 {
    let (code, body) = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/metrics", T).unwrap();
    assert_eq!(code, 200);
    let want: Vec<&str> = labels
        .split("\",")
        .map(|l| l.trim_end_matches('"'))
        .collect();
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn doh_over_http2_and_http1_with_kdig_curl_and_dnspython() {
    let (p, m, dot) = (free_port(), free_port(), free_port());
    let s = start(&format!(
        "https://example.org:{p} {{\n    tls cert.pem key.pem\n    {HOSTS}\n    prometheus 127.0.0.1:{m}\n}}\ntls://example.org:{dot} {{\n    tls cert.pem key.pem\n    {HOSTS}\n}}\n"
    ));
    s.wait_for_line(&format!("https://example.org.:{p}"), T)
        .unwrap();
    let ca = ca(&s);
    let ca = ca.to_str().unwrap();
    let port = p.to_string();

    // dnspython over HTTP/2 (GET and POST) and HTTP/1.1.
    for extra in [
        &["https"][..],
        &["https", "--post"],
        &["https1"],
        &["https1", "--post"],
    ] {
        let mut args = vec![
            extra[0],
            "127.0.0.1",
            &port,
            "www.example.org",
            "A",
            "--ca",
            ca,
        ];
        args.extend_from_slice(&extra[1..]);
        assert_www_a(one(&client(&args)));
    }

    // kdig over HTTPS (POST and GET) and over TLS, same answer.
    let at = "@127.0.0.1".to_string();
    for mode in ["+https", "+https-get"] {
        let (status, flags, answers) = kdig(&[
            &at,
            "-p",
            &port,
            mode,
            &format!("+tls-ca={ca}"),
            "+tls-hostname=localhost",
            "www.example.org",
            "A",
        ]);
        assert_eq!((status.as_str(), flags.as_str()), ("NOERROR", "qr aa rd"));
        assert_eq!(answers, ["www.example.org. 300 IN A 192.0.2.10"]);
    }
    let (status, flags, answers) = kdig(&[
        &at,
        "-p",
        &dot.to_string(),
        "+tls",
        &format!("+tls-ca={ca}"),
        "+tls-hostname=localhost",
        "www.example.org",
        "AAAA",
    ]);
    assert_eq!((status.as_str(), flags.as_str()), ("NOERROR", "qr aa rd"));
    assert_eq!(answers, ["www.example.org. 300 IN AAAA 2001:db8::10"]);

    // curl --http2: GET and POST, headers included.
    let q = Query::new("www.example.org.", RecordType::A)
        .id(0)
        .to_bytes();
    let url = format!("https://localhost:{p}/dns-query");
    let resolve = format!("localhost:{p}:127.0.0.1");
    let base = ["--http2", "--cacert", ca, "--resolve", &resolve];
    let get = format!("{url}?dns={}", b64url(&q));
    let (code, version, head, body) = curl(&[&base[..], &[get.as_str()]].concat());
    assert_eq!((code, version.as_str()), (200, "2"), "{head}");
    assert!(
        head.contains("content-type: application/dns-message"),
        "{head}"
    );
    assert!(head.contains("cache-control: max-age=300"), "{head}");
    // The headers hyper's server adds (DoH over HTTP/2 is served on its h2 layer directly).
    assert!(head.contains("content-length: "), "{head}");
    assert!(head.contains("date: ") && head.contains(" gmt"), "{head}");
    let r = Reply::parse(body).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa,rd")
    );
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 192.0.2.10"]);
    doh_streams_share_one_connection(&base, &url, s.dir());
    let qfile = s.dir().join("q.bin");
    std::fs::write(&qfile, &q).unwrap();
    let data = format!("@{}", qfile.display());
    let post = [
        "-H",
        "content-type: application/dns-message",
        "--data-binary",
        &data,
        &url,
    ];
    let (code, _, head, body) = curl(&[&base[..], &post[..]].concat());
    assert_eq!(code, 200, "{head}");
    let r = Reply::parse(body).unwrap();
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 192.0.2.10"]);
    // A POST body larger than one HTTP/2 DATA frame (16 KiB): the query with 20,000 bytes of
    // EDNS padding (RFC 7830) arrives in several frames and is answered whole.
    let mut padded = q.clone();
    padded[11] = 1; // ARCOUNT 1: the OPT record below
    padded.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
    padded.extend_from_slice(&(4u16 + 20_000).to_be_bytes());
    padded.extend_from_slice(&12u16.to_be_bytes());
    padded.extend_from_slice(&20_000u16.to_be_bytes());
    padded.resize(padded.len() + 20_000, 0);
    let pfile = s.dir().join("padded.bin");
    std::fs::write(&pfile, &padded).unwrap();
    let pdata = format!("@{}", pfile.display());
    let post = [
        "-H",
        "content-type: application/dns-message",
        "--data-binary",
        &pdata,
        &url,
    ];
    let (code, _, head, body) = curl(&[&base[..], &post[..]].concat());
    assert_eq!(code, 200, "{head}");
    let r = Reply::parse(body).unwrap();
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 192.0.2.10"]);

    // Refusals: other path 404, bad requests 400, oversized body 400.
    let other = format!("https://localhost:{p}/other");
    assert_eq!(curl(&[&base[..], &[other.as_str()]].concat()).0, 404);
    let nodns = format!("{url}?ct=1");
    let (code, _, head, body) = curl(&[&base[..], &[nodns.as_str()]].concat());
    assert_eq!(code, 400);
    assert!(head.contains("text/plain"), "{head}");
    assert_eq!(body, b"invalid request\n");
    let badb64 = format!("{url}?dns=***");
    assert_eq!(curl(&[&base[..], &[badb64.as_str()]].concat()).0, 400);
    let put = ["-X", "PUT", "--data-binary", &data, &url];
    assert_eq!(curl(&[&base[..], &put[..]].concat()).0, 400);
    let big = s.dir().join("big.bin");
    std::fs::write(&big, vec![0u8; 70_000]).unwrap();
    let bigdata = format!("@{}", big.display());
    let post_big = ["--data-binary", &bigdata, &url];
    assert_eq!(curl(&[&base[..], &post_big[..]].concat()).0, 400);

    // Metrics with CoreDNS's names and the listener's label.
    let label = format!("server=\"https://:{p}\"");
    assert!(
        metric(
            m,
            "coredns_dns_https_responses_total",
            &format!("{label},status=\"200\"")
        ) >= 49.0
    );
    assert_eq!(
        metric(
            m,
            "coredns_dns_https_responses_total",
            &format!("{label},status=\"404\"")
        ),
        1.0
    );
    assert_eq!(
        metric(
            m,
            "coredns_dns_https_responses_total",
            &format!("{label},status=\"400\"")
        ),
        4.0
    );
    assert!(
        metric(
            m,
            "coredns_dns_requests_total",
            &format!("{label},zone=\"example.org.\",view=\"\",proto=\"tcp\"")
        ) >= 8.0
    );
}

#[test]
fn doh_plugins_see_the_http_client_address() {
    let p = free_port();
    let s = start(&format!(
        "https://.:{p} {{\n    tls cert.pem key.pem\n    whoami\n}}\n"
    ));
    let ca = ca(&s);
    let r = client(&[
        "https",
        "127.0.0.1",
        &p.to_string(),
        "example.org",
        "A",
        "--ca",
        ca.to_str().unwrap(),
    ]);
    let r = one(&r);
    assert_eq!(r["rcode"], "NOERROR");
    let add = strs(&r["additional"]);
    assert_eq!(add.len(), 2, "{r}");
    assert!(
        add[0].starts_with("example.org. 0 IN A 127.0.0.1"),
        "{add:?}"
    );
    // The SRV's port is the client's ephemeral TCP port, not the server's.
    let srv_port: u16 = add[1].split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!(
        add[1].starts_with("_tcp.example.org. 0 IN SRV 0 0 "),
        "{add:?}"
    );
    assert_ne!(srv_port, p);
}

#[test]
fn doh_without_tls_and_malformed_http() {
    let p = free_port();
    let mut s = start(&format!("https://.:{p} {{\n    {HOSTS}\n}}\n"));
    let addr = SocketAddr::from(([127, 0, 0, 1], p));
    let raw = |req: &[u8]| -> String {
        let mut c = TcpStream::connect_timeout(&addr, T).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        c.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    // Plain HTTP/1.1 (behind a proxy that ends TLS): a real query answers.
    let q = Query::new("www.example.org.", RecordType::A)
        .id(0)
        .to_bytes();
    let resp = raw(format!(
        "GET /dns-query?dns={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b64url(&q)
    )
    .as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.to_lowercase().contains("cache-control: max-age=300"),
        "{resp}"
    );
    // Garbage, a bad request line, a huge header: HTTP errors, never a hang or a crash.
    assert!(
        raw(b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"),
        "garbage"
    );
    assert!(raw(b"GET\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge = format!(
        "GET /dns-query HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let r = raw(huge.as_bytes());
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 431"), "{r}");
    assert!(
        raw(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .starts_with("HTTP/1.1 404")
    );
    // A body announced longer than it is: the read times out with 400, the connection closes.
    let r = raw(b"POST /dns-query HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Prior-knowledge HTTP/2 in clear text works too.
    let (code, version, _, body) = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{p}/dns-query?dns={}", b64url(&q)),
    ]);
    assert_eq!((code, version.as_str()), (200, "2"));
    assert_eq!(
        Reply::parse(body).unwrap().answers(),
        ["www.example.org. 300 IN A 192.0.2.10"]
    );
    assert!(s.exited().is_none(), "{}", s.output());
}

/// `/health`, `/ready` and `/metrics` are served by the same hyper stack as DoH: keep-alive
/// (curl reuses one connection for three requests), HEAD (headers, no body), 404 for other
/// paths, 405 with `Allow` for other methods, HTTP/2 with prior knowledge, a bounded request
/// head (431) and a request head that never ends closed after the 5 s read timeout.
#[test]
fn health_ready_and_metrics_on_the_http_stack() {
    let (dns, hp, rp, mp) = (free_port(), free_port(), free_port(), free_port());
    let mut s = start(&format!(
        "https://.:{dns} {{\n    tls cert.pem key.pem\n    health 127.0.0.1:{hp}\n    ready 127.0.0.1:{rp}\n    prometheus 127.0.0.1:{mp}\n    {HOSTS}\n}}\n"
    ));
    let url = |p: u16, path: &str| format!("http://127.0.0.1:{p}{path}");
    // Keep-alive: one connection serves three requests in a row.
    let out = Command::new("curl")
        .args(["-sv", "--max-time", "10"])
        .args([url(hp, "/health"), url(hp, "/health"), url(hp, "/health")])
        .output()
        .expect("curl runs (apt-get install curl)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OKOKOK");
    assert_eq!(err.matches("Connected to").count(), 1, "{err}");
    assert_eq!(
        err.matches("Re-using existing connection").count(),
        2,
        "{err}"
    );
    // GET and HEAD of each page; other paths and methods.
    for (port, path, ctype) in [
        (hp, "/health", "text/plain; charset=utf-8"),
        (rp, "/ready", "text/plain; charset=utf-8"),
        (mp, "/metrics", "text/plain; version=0.0.4; charset=utf-8"),
    ] {
        let (code, _, head, body) = curl(&[&url(port, path)]);
        assert_eq!(code, 200, "{path}");
        assert!(
            head.contains(&format!("content-type: {ctype}\r\n")),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}\r\n", body.len())),
            "{head}"
        );
        if path == "/metrics" {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("# TYPE coredns_build_info gauge"), "{text}");
        } else {
            assert_eq!(body, b"OK", "{path}");
        }
        // HEAD, then GET on the same connection: the HEAD answer has the page's length and no
        // body (the GET's answer follows its head directly).
        let mut c =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), T).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        c.write_all(
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw).to_lowercase();
        let (first, rest) = raw.split_once("\r\n\r\n").unwrap();
        assert!(first.starts_with("http/1.1 200 ok\r\n"), "{raw}");
        assert!(first.contains(&format!("content-type: {ctype}")), "{raw}");
        assert!(first.contains("content-length: "), "{raw}");
        assert!(
            rest.starts_with("http/1.1 200 ok\r\n"),
            "HEAD {path} sent a body: {raw}"
        );
        let (code, _, head, body) = curl(&["-X", "POST", &url(port, path)]);
        assert_eq!(code, 405, "POST {path}");
        assert!(head.contains("allow: get, head\r\n"), "{head}");
        assert_eq!(body, b"405 method not allowed\n");
        let (code, _, _, body) = curl(&[&url(port, "/nothing")]);
        assert_eq!((code, body.as_slice()), (404, &b"404 page not found\n"[..]));
        let (code, version, _, _) = curl(&["--http2-prior-knowledge", &url(port, path)]);
        assert_eq!((code, version.as_str()), (200, "2"), "h2c {path}");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], hp));
    // A request head over 16 KiB: 431.
    let mut c = TcpStream::connect_timeout(&addr, T).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = c.write_all(big.as_bytes());
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    // A head that never ends: closed after the read timeout, not held open.
    let mut c = TcpStream::connect_timeout(&addr, T).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // Still serving.
    assert_eq!(http_get(addr, "/health", T).unwrap(), (200, "OK".into()));
    assert!(s.exited().is_none(), "{}", s.output());
}

#[test]
fn doq_and_doh3_with_dnspython() {
    let (q, h3, m) = (free_port(), free_port(), free_port());
    let mut s = start(&format!(
        "quic://example.org:{q} {{\n    tls cert.pem key.pem\n    {HOSTS}\n    prometheus 127.0.0.1:{m}\n}}\nhttps3://example.org:{h3} {{\n    tls cert.pem key.pem\n    {HOSTS}\n}}\n"
    ));
    s.wait_for_line(&format!("quic://example.org.:{q}"), T)
        .unwrap();
    s.wait_for_line(&format!("https3://example.org.:{h3}"), T)
        .unwrap();
    let ca = ca(&s);
    let ca = ca.to_str().unwrap();
    let (qp, hp) = (q.to_string(), h3.to_string());

    // DoQ: several queries, each on its own stream of one connection per call.
    let r = client(&[
        "quic",
        "127.0.0.1",
        &qp,
        "www.example.org",
        "A",
        "--ca",
        ca,
        "--count",
        "3",
    ]);
    for i in 0..3 {
        let a = &r["results"][i];
        assert_www_a(a);
        assert_eq!(a["id"], 0);
    }
    // (Debian 12's kdig is built without QUIC: `+quic` falls back to TCP, so it is not used.)

    // DoH3, GET and POST.
    assert_www_a(one(&client(&[
        "https3",
        "127.0.0.1",
        &hp,
        "www.example.org",
        "A",
        "--ca",
        ca,
    ])));
    assert_www_a(one(&client(&[
        "https3",
        "127.0.0.1",
        &hp,
        "www.example.org",
        "A",
        "--ca",
        ca,
        "--post",
    ])));

    // A DoQ query with an EDNS TCP keepalive option is a protocol error (RFC 9250 5.5.2): no
    // answer, the connection closes. (dnspython always sends ID 0, the other such error.)
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transport_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "quic",
            "127.0.0.1",
            &qp,
            "www.example.org",
            "A",
            "--ca",
            ca,
            "--keepalive",
            "--timeout",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let label = format!("server=\"quic://:{q}\"");
    assert_eq!(
        metric(
            m,
            "coredns_dns_quic_responses_total",
            &format!("{label},status=\"0x2\"")
        ),
        1.0
    );
    assert!(
        metric(
            m,
            "coredns_dns_quic_responses_total",
            &format!("{label},status=\"0x0\"")
        ) >= 3.0
    );
    assert!(
        metric(
            m,
            "coredns_dns_requests_total",
            &format!("{label},zone=\"example.org.\",view=\"\",proto=\"udp\"")
        ) >= 3.0
    );

    // QUIC garbage: random datagrams, an Initial-looking one, a truncated one. Still serving.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng::seeded(7);
    for i in 0..200usize {
        let mut pkt: Vec<u8> = (0..(i * 7 % 1300 + 1))
            .map(|_| rng.next_u64() as u8)
            .collect();
        if i % 3 == 0 {
            pkt[0] = 0xc0 | (pkt[0] & 0x0f);
            if pkt.len() > 5 {
                pkt[1..5].copy_from_slice(&[0, 0, 0, 1]);
            }
        }
        u.send_to(&pkt, ("127.0.0.1", q)).unwrap();
        u.send_to(&pkt, ("127.0.0.1", h3)).unwrap();
    }
    assert_www_a(one(&client(&[
        "quic",
        "127.0.0.1",
        &qp,
        "www.example.org",
        "A",
        "--ca",
        ca,
    ])));
    assert_www_a(one(&client(&[
        "https3",
        "127.0.0.1",
        &hp,
        "www.example.org",
        "A",
        "--ca",
        ca,
    ])));
    assert!(s.exited().is_none(), "{}", s.output());
}

#[test]
fn grpc_server_with_grpcio_and_the_grpc_plugin() {
    let (g, gt, front, m) = (free_port(), free_port(), free_port(), free_port());
    let dead = free_port();
    let mut s = start(&format!(
        "grpc://example.org:{g} {{\n    {HOSTS}\n}}\ngrpc://example.org:{gt} {{\n    tls cert.pem key.pem\n    {HOSTS}\n}}\n.:{front} {{\n    prometheus 127.0.0.1:{m}\n    grpc example.org 127.0.0.1:{dead} 127.0.0.1:{gt} {{\n        tls cert.pem\n        tls_servername localhost\n        policy sequential\n    }}\n}}\n"
    ));
    let ca = ca(&s);
    let ca = ca.to_str().unwrap();

    // grpcio in clear text (h2c) and over TLS.
    assert_www_a(one(&client(&[
        "grpc",
        "127.0.0.1",
        &g.to_string(),
        "www.example.org",
        "A",
    ])));
    assert_www_a(one(&client(&[
        "grpc-tls",
        "127.0.0.1",
        &gt.to_string(),
        "www.example.org",
        "A",
        "--ca",
        ca,
    ])));

    // Bad messages: garbage, a reply, an empty packet: UNKNOWN; the server goes on.
    for raw in ["00", "ffffffffffffffffffffffff", ""] {
        let r = client(&[
            "grpc",
            "127.0.0.1",
            &g.to_string(),
            "x",
            "A",
            "--raw-hex",
            raw,
        ]);
        assert_eq!(one(&r)["grpc_error"], "UNKNOWN", "{raw}: {r}");
    }
    let mut reply = Query::new("www.example.org.", RecordType::A).to_bytes();
    reply[2] |= 0x80;
    let hex: String = reply.iter().map(|b| format!("{b:02x}")).collect();
    let r = client(&[
        "grpc",
        "127.0.0.1",
        &g.to_string(),
        "x",
        "A",
        "--raw-hex",
        &hex,
    ]);
    assert_eq!(one(&r)["grpc_error"], "UNKNOWN");
    assert_www_a(one(&client(&[
        "grpc",
        "127.0.0.1",
        &g.to_string(),
        "www.example.org",
        "A",
    ])));

    // The grpc plugin: the first upstream is down (sequential), the second answers over TLS.
    let addr = SocketAddr::from(([127, 0, 0, 1], front));
    for qt in [RecordType::A, RecordType::AAAA] {
        let r = udp(addr, &Query::new("www.example.org.", qt).edns(1232), T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        let want = if qt == RecordType::A {
            "www.example.org. 300 IN A 192.0.2.10"
        } else {
            "www.example.org. 300 IN AAAA 2001:db8::10"
        };
        assert_eq!(r.answers(), [want]);
        assert!(r.authority().is_empty() && r.additional().is_empty());
    }
    // A name the backend's hosts plugin does not have: its SERVFAIL (hosts without fallthrough,
    // as in CoreDNS), relayed over TCP too.
    let r = tcp(addr, &Query::new("nope.example.org.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("SERVFAIL", "qr,rd")
    );
    // Outside FROM: not relayed (no other plugin: SERVFAIL... from the end of the chain).
    let r = udp(addr, &Query::new("www.example.com.", RecordType::A), T).unwrap();
    assert_ne!(r.rcode_name(), "NOERROR");
    let to = format!("to=\"127.0.0.1:{gt}\"");
    assert!(metric(m, "coredns_grpc_requests_total", &to) >= 3.0);
    assert!(
        metric(
            m,
            "coredns_grpc_responses_total",
            &format!("rcode=\"NOERROR\",{to}")
        ) >= 2.0
    );
    assert!(s.exited().is_none(), "{}", s.output());
}

#[test]
fn transports_check_their_configuration() {
    for (cf, want) in [
        ("quic://.:8853 {\n    whoami\n}\n", "needs the tls plugin"),
        ("https3://.:8853 {\n    whoami\n}\n", "needs the tls plugin"),
        ("https://.:8443 {\n    https {\n        max_connections -1\n    }\n}\n", "Corefile:3:25: max_connections: max_connections must be a non-negative integer: -1"),
        ("quic://.:8853 {\n    tls cert.pem key.pem\n    quic {\n        max_streams 0\n    }\n}\n", "max_streams must be a positive integer: 0"),
        ("grpc://.:8053 {\n    grpc_server {\n        max_streams x\n    }\n}\n", "invalid max_streams value 'x'"),
        ("grpc://.:8053 {\n    grpc_server {\n        bogus 1\n    }\n}\n", "unknown property 'bogus'"),
        ("https://.:8443 {\n    https extra\n}\n", "https: wrong argument count"),
    ] {
        let (c, k) = cert();
        let (code, out, err) = Sextant::run_to_end(
            Sextant::builder(bin(), cf).file("cert.pem", c).file("key.pem", k).arg("-check"),
            T,
        )
        .unwrap();
        assert_ne!(code, 0, "{cf}");
        assert!(format!("{out}{err}").contains(want), "{cf}\n{out}{err}");
    }
}
