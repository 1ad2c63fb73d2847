//! Every Corefile example in every plugin README (``` ~~~ corefile ``` blocks) passes `-check` and
//! starts a server that answers, so the docs cannot rot. Ports in the examples are moved to free
//! ones so the examples can run side by side.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sextant_testkit::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// Extracts the bodies of ```` ~~~ corefile ```` (or ```` ```corefile ````) fenced blocks.
fn corefile_examples(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in readme.lines() {
        let t = line.trim();
        match &mut cur {
            None => {
                if t == "~~~ corefile"
                    || t == "~~~corefile"
                    || t == "```corefile"
                    || t == "``` corefile"
                {
                    cur = Some(String::new());
                }
            }
            Some(body) => {
                if t == "~~~" || t == "```" {
                    out.push(std::mem::take(body));
                    cur = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

fn readmes() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plugins");
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path().join("README.md");
        if p.exists() {
            v.push(p);
        }
    }
    v.sort();
    v
}

/// Replaces well-known ports (DNS 53/1053, health 8080, ready 8181, metrics 9153/9253 and the
/// 1xxxx variants used in examples) with free ones; returns the new text and the DNS port.
/// Every `forward` upstream given as an address off loopback (`8.8.8.8`, `10.0.0.10:1234`,
/// `[2003::1]:53`, `tls://9.9.9.9`) becomes `ns`, the test's loopback nameserver on port 53 (its
/// transport kept: a TLS or HTTPS upstream then fails on loopback), so no example sends a query
/// off the machine.
fn relocate(text: &str, ns: &str) -> (String, u16) {
    let dns = free_port();
    let upstream = regex::Regex::new(
        r"^((?:[a-z0-9]+://)?)(?:\[[0-9A-Fa-f:.]+\]|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?::\d+)?$",
    )
    .unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"forward") && words.len() > 2 {
            let indent = &line[..line.len() - line.trim_start().len()];
            let mut new = vec!["forward".to_string(), words[1].to_string()];
            for w in &words[2..] {
                match upstream.captures(w) {
                    Some(c) => {
                        let addr = &w[c[1].len()..];
                        if addr.starts_with("127.") || addr.starts_with("[::1]") {
                            new.push(w.to_string());
                        } else {
                            new.push(format!("{}{ns}", &c[1]));
                        }
                    }
                    None => new.push(w.to_string()),
                }
            }
            out.push_str(&format!("{indent}{}\n", new.join(" ")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    for p in [
        "18080", "18181", "19153", "19253", "8080", "8181", "9153", "9253",
    ] {
        let re = regex::Regex::new(&format!(r":{p}\b")).unwrap();
        if re.is_match(&out) {
            out = re
                .replace_all(&out, format!(":{}", free_port()).as_str())
                .to_string();
        }
    }
    // DoT, DoQ, DoH, DoH3 and gRPC ports of the examples; a transport without a port (443 or
    // 853 by default) gets a free one too.
    for p in [
        "8853", "8443", "8053", "5553", "443", // transports
        "6053", "6060", // pprof
        "9411", "8126", // trace collectors (nothing listens; spans are dropped)
    ] {
        let re = regex::Regex::new(&format!(r":{p}\b")).unwrap();
        if re.is_match(&out) {
            out = re
                .replace_all(&out, format!(":{}", free_port()).as_str())
                .to_string();
        }
    }
    out = regex::Regex::new(r"(?m)^((?:tls|https|https3|quic|grpc)://[^\s:{]*)(\s)")
        .unwrap()
        .replace_all(&out, |c: &regex::Captures<'_>| {
            format!("{}:{}{}", &c[1], free_port(), &c[2])
        })
        .to_string();
    // Trace collectors named by host name are looked up on loopback only.
    out = out.replace("tracinghost", "localhost");
    // `/etc/resolv.conf` becomes a file of the test's own, whose nameserver answers on loopback.
    out = out.replace("/etc/resolv.conf", "resolv.conf");
    // The geoip examples' database is one the test writes (see [`geoip_city_db`]).
    out = out.replace("/opt/geoip2/db/", "");
    // Addresses of primaries and secondaries in examples (transfer from/to) become loopback, so
    // the examples send nothing off the machine.
    out = regex::Regex::new(r"\b10\.\d{1,3}\.\d{1,3}\.\d{1,3}([^/\d]|$)")
        .unwrap()
        .replace_all(&out, "127.0.0.1$1")
        .to_string();
    for p in ["1053", "53"] {
        let re = regex::Regex::new(&format!(r":{p}\b")).unwrap();
        out = re.replace_all(&out, format!(":{dns}").as_str()).to_string();
    }
    (out, dns)
}

/// Answers every query to `ip`:53 (UDP and TCP) with an address, from threads that live as long
/// as the test. A TCP client that does not speak DNS (a gRPC upstream's HTTP/2 preface announces
/// a 20 kB message) is disconnected at once, so it fails fast.
fn answer_everything(ip: &str) {
    fn reply(packet: &[u8]) -> Option<Vec<u8>> {
        let q = Message::from_vec(packet).ok()?;
        let name = q.queries.first()?.name().to_string();
        reply_to(&q)
            .answer(&format!("{name} 60 IN A 192.0.2.53"))
            .build()
            .to_vec()
            .ok()
    }
    let udp = std::net::UdpSocket::bind(format!("{ip}:53"))
        .expect("bind port 53 on loopback (tests run as root)");
    let tcp = std::net::TcpListener::bind(format!("{ip}:53"))
        .expect("bind port 53 on loopback (tests run as root)");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            if let Some(r) = reply(&buf[..n]) {
                let _ = udp.send_to(&r, from);
            }
        }
    });
    std::thread::spawn(move || {
        for c in tcp.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut len = [0u8; 2];
                while c.read_exact(&mut len).is_ok() {
                    let n = u16::from_be_bytes(len) as usize;
                    let mut msg = vec![0u8; n];
                    if n > 4096 || c.read_exact(&mut msg).is_err() {
                        return;
                    }
                    let Some(r) = reply(&msg) else { return };
                    let mut out = (r.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&r);
                    if c.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The zone file the *file* README shows, for examples that name `db.example.org`.
const EXAMPLE_ZONE: &str = "$TTL 3600
@\t3600 IN\tSOA sns.dns.icann.org. noc.dns.icann.org. 2017042745 7200 3600 1209600 3600
\t3600 IN NS a.iana-servers.net.
\t3600 IN NS b.iana-servers.net.

www     IN A     127.0.0.1
        IN AAAA  ::1
";

/// The City database the *geoip* examples name (`GeoLite2-City.mmdb`), written by
/// tests/geoip_dbs.py with the `mmdb-writer` package.
fn geoip_city_db() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/geoip_dbs.py"))
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "writing the geoip databases failed (python3 -m pip install -r requirements-test.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join("city.mmdb")).unwrap()
}

/// The DNSSEC key the *dnssec* and *sign* examples name (crates/zone's test data).
const KEY: &str = "Kexample.org.+013+57158";

/// The names CoreDNS's dnssec README gives its keys.
const KEY2: &str = "Kexample.org.+013+45330";
const CLUSTER_KEY: &str = "Kcluster.local+013+45129";

fn data_file(name: &str, ext: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.{ext}"));
    std::fs::read_to_string(p).unwrap()
}

fn key_file(ext: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/zone/src/dnssec/testdata")
        .join(format!("{KEY}.{ext}"));
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn every_readme_corefile_example_checks_and_serves() {
    let files = readmes();
    assert!(files.len() >= 10, "plugin READMEs found: {files:?}");
    let mut count = 0;
    let key = regex::Regex::new(r"(?m)^(tls|https|https3|quic|grpc)://[^:\s]*:(\d+)").unwrap();
    // The nameserver of the examples' resolv.conf: port 53 (resolv.conf has no ports) of an
    // unused loopback address, answering every name with an address.
    let ns = format!(
        "127.{}.53.{}",
        10 + std::process::id() % 200,
        1 + std::process::id() % 250
    );
    answer_everything(&ns);
    let city_db = geoip_city_db();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, ex) in corefile_examples(&text).into_iter().enumerate() {
            count += 1;
            let started = std::time::Instant::now();
            let (cf, port) = relocate(&ex, &ns);
            // Examples that name certificate files get a fresh self-signed pair.
            let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let builder = || {
                Sextant::builder(bin(), &cf)
                    .file("cert.pem", pair.cert.pem())
                    .file("key.pem", pair.signing_key.serialize_pem())
                    .file("ca.pem", pair.cert.pem())
                    .file("resolv.conf", format!("nameserver {ns}\n"))
                    .file("db.example.org", EXAMPLE_ZONE)
                    .file("example.org.signed", EXAMPLE_ZONE)
                    .file("example.com.db", EXAMPLE_ZONE)
                    .file("example.com.exampleshire-db", EXAMPLE_ZONE)
                    .file("GeoLite2-City.mmdb", &city_db)
                    .file(&format!("{KEY}.key"), key_file("key"))
                    .file(&format!("{KEY}.private"), key_file("private"))
                    // The key names of CoreDNS's dnssec README: the same example.org key, and
                    // a cluster.local one (tests/data).
                    .file(&format!("{KEY2}.key"), key_file("key"))
                    .file(&format!("{KEY2}.private"), key_file("private"))
                    .file(&format!("{CLUSTER_KEY}.key"), data_file(CLUSTER_KEY, "key"))
                    .file(
                        &format!("{CLUSTER_KEY}.private"),
                        data_file(CLUSTER_KEY, "private"),
                    )
                    .arg("-dns.port")
                    .arg(port.to_string())
            };
            let (code, out, err) =
                Sextant::run_to_end(builder().arg("-check"), Duration::from_secs(30)).unwrap();
            assert_eq!(
                code,
                0,
                "{} example {i} fails -check:\n{cf}\n{out}{err}",
                f.display()
            );
            let mut s = builder().start();
            if let Some(c) = key.captures(&cf) {
                // Another transport: its banner, then a query with that transport's client.
                s.wait_for_line(&format!("{}://", &c[1]), Duration::from_secs(10))
                    .unwrap();
                let kind = match &c[1] {
                    "grpc" if cf.contains("tls cert.pem") => "grpc-tls",
                    k => k,
                };
                let ca = s.dir().join("cert.pem");
                let out = std::process::Command::new("python3")
                    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transport_client.py"))
                    .args([kind, "127.0.0.1", &c[2], "example.org", "A", "--ca"])
                    .arg(&ca)
                    .output()
                    .expect("python3 runs");
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && text.contains("\"rcode\": \"NOERROR\""),
                    "{} example {i} does not serve over {kind}:\n{cf}\n{text}{}\n{}\n(its Python packages: python3 -m pip install -r requirements-test.txt)",
                    f.display(),
                    String::from_utf8_lossy(&out.stderr),
                    s.output()
                );
                continue;
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Err(e) = s.wait_dns(addr, Duration::from_secs(10)) {
                panic!(
                    "{} example {i} does not serve: {e}\n{cf}\n{}",
                    f.display(),
                    s.output()
                );
            }
            eprintln!(
                "{} example {i}: {} ms",
                f.display(),
                started.elapsed().as_millis()
            );
        }
    }
    assert!(count >= 10, "examples found: {count}");
}

/// The README's "run it" command: `sextant -conf examples/Corefile` from the repository root
/// serves the example cluster on 127.0.0.1:1053.
#[test]
fn readme_run_command_serves_the_example_cluster() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- -conf examples/Corefile"));
    assert!(readme.contains("dig @127.0.0.1 -p 1053 kubernetes.default.svc.cluster.local"));
    let cf = std::fs::read_to_string(root.join("examples/Corefile")).unwrap();
    let mut s = Sextant::builder(bin(), &cf)
        .conf_flag(false)
        .cwd(root)
        .arg("-conf")
        .arg(root.join("examples/Corefile").as_os_str())
        .start();
    let addr = SocketAddr::from(([127, 0, 0, 1], 1053));
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    let r = udp(
        addr,
        &Query::new("kubernetes.default.svc.cluster.local.", RecordType::A),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.answers().len(), 1, "{:?}", r.answers());
    assert!(r.answers()[0].starts_with("kubernetes.default.svc.cluster.local. 5 IN A "));
}
