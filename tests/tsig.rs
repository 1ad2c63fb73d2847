//! The `tsig` plugin end to end, checked with kdig (knot-dnsutils), which verifies every TSIG it
//! receives (`kdig -y`): signed answers over UDP and TCP, a signed AXFR and IXFR of a zone large
//! enough for several messages (each message signed), `require` refusing unsigned requests, and
//! BADKEY/BADSIG answers to a wrong key or secret.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sextant_testkit::*;

const SECRET: &str = "NoTCJU+DMqFWywaPyxSijrDEA/eC3nK0xi3AMEZuPVk=";
/// A valid base64 secret that is not the server's.
const WRONG: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs kdig; stdout and stderr together (kdig prints its TSIG verification warnings on
/// stderr).
fn kdig(args: &[&str]) -> String {
    let out = Command::new("kdig")
        .args(args)
        .output()
        .expect("kdig is missing: apt-get install knot-dnsutils (./test.sh installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn zone() -> String {
    let mut z = String::from(
        "$ORIGIN example.org.\n$TTL 300\n@ SOA ns h 7 3600 600 86400 30\n@ NS ns\nns A 10.0.0.1\nwww A 10.0.0.2\n",
    );
    // About 170 kB: an AXFR needs several TCP messages.
    for i in 0..3000 {
        z.push_str(&format!(
            "h{i} TXT \"host number {i} with some padding text\"\n"
        ));
    }
    z
}

fn start(require: &str) -> (Sextant, u16) {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    tsig {{\n        secret key.example. {SECRET}\n        require {require}\n    }}\n    file db.example\n    transfer {{\n        to *\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example", zone())
        .start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    (s, port)
}

/// The TSIG lines of kdig's output: `key.example. 0 ANY TSIG hmac-sha256. TIME 300 32 MAC ID ERR 0`.
fn tsig_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.contains("\tTSIG\t")).collect()
}

/// The fields of a TSIG line after the type: algorithm, time, fudge, MAC length, MAC, ...
fn tsig_fields(line: &str) -> Vec<&str> {
    let f: Vec<&str> = line
        .split("\tTSIG\t")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert!(f.len() >= 7, "{line}");
    f
}

/// kdig's lines with their whitespace collapsed.
fn words(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn signed_queries_over_udp_and_tcp_get_signed_answers() {
    let (_s, port) = start("AXFR IXFR");
    let p = port.to_string();
    let key = format!("hmac-sha256:key.example.:{SECRET}");
    for transport in ["+notcp", "+tcp"] {
        let out = kdig(&[
            "@127.0.0.1",
            "-p",
            &p,
            "-y",
            &key,
            "www.example.org",
            "A",
            transport,
        ]);
        assert!(
            !out.contains(";; WARNING") && !out.contains(";; ERROR"),
            "{out}"
        );
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            out.contains("Flags: qr aa rd; QUERY: 1; ANSWER: 1; AUTHORITY: 1; ADDITIONAL: 1"),
            "{out}"
        );
        assert!(
            words(&out).contains(&"www.example.org. 300 IN A 10.0.0.2".to_string()),
            "{out}"
        );
        let t = tsig_lines(&out);
        assert_eq!(t.len(), 1, "{out}");
        assert!(
            t[0].starts_with("key.example.") && t[0].contains("hmac-sha256. "),
            "{out}"
        );
        assert!(t[0].ends_with(" NOERROR 0"), "{out}");
        // NXDOMAIN is signed too.
        let out = kdig(&[
            "@127.0.0.1",
            "-p",
            &p,
            "-y",
            &key,
            "nx.example.org",
            "A",
            transport,
        ]);
        assert!(!out.contains(";; WARNING"), "{out}");
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert_eq!(tsig_lines(&out).len(), 1, "{out}");
    }
    // Not required for A: an unsigned query is answered, unsigned.
    let r = udp(
        local(port),
        &Query::new("www.example.org.", RecordType::A),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 10.0.0.2"]);
}

#[test]
fn signed_transfers_sign_every_message_and_unsigned_ones_are_refused() {
    let (_s, port) = start("AXFR IXFR");
    let p = port.to_string();
    let key = format!("hmac-sha256:key.example.:{SECRET}");
    let out = kdig(&[
        "@127.0.0.1",
        "-p",
        &p,
        "-y",
        &key,
        "example.org",
        "AXFR",
        "+stats",
    ]);
    assert!(
        !out.contains(";; WARNING") && !out.contains(";; ERROR"),
        "{out}"
    );
    assert!(out.contains("(4 messages, 3005 records)"), "{out}");
    let t = tsig_lines(&out);
    assert_eq!(t.len(), 4, "one TSIG per message: {out}");
    let macs: std::collections::HashSet<&str> = t.iter().map(|l| tsig_fields(l)[4]).collect();
    assert_eq!(macs.len(), 4, "each message has its own MAC: {out}");
    // IXFR from an older serial: the whole zone, signed the same way.
    let out = kdig(&[
        "@127.0.0.1",
        "-p",
        &p,
        "-y",
        &key,
        "example.org",
        "IXFR=6",
        "+stats",
    ]);
    assert!(
        !out.contains(";; WARNING") && !out.contains(";; ERROR"),
        "{out}"
    );
    assert!(out.contains("3005 records"), "{out}");
    assert_eq!(tsig_lines(&out).len(), 4, "{out}");
    // Unsigned: REFUSED by `require`, no records.
    let out = kdig(&["@127.0.0.1", "-p", &p, "example.org", "AXFR"]);
    assert!(out.contains("REFUSED"), "{out}");
    assert!(!out.contains("\tSOA\t"), "{out}");
}

#[test]
fn wrong_key_or_secret_gets_badkey_or_badsig_and_require_all_refuses_unsigned() {
    let (_s, port) = start("all");
    let p = port.to_string();
    let other = format!("hmac-sha256:other.:{SECRET}");
    let out = kdig(&["@127.0.0.1", "-p", &p, "-y", &other, "www.example.org", "A"]);
    assert!(out.contains("status: BADKEY"), "{out}");
    assert!(!out.contains("10.0.0.2"), "{out}");
    let t = tsig_lines(&out);
    assert_eq!(t.len(), 1, "{out}");
    assert!(
        t[0].starts_with("other.") && t[0].contains(" 0 300 0 ") && t[0].ends_with(" BADKEY 0"),
        "an unsigned TSIG with the error: {out}"
    );
    let wrong = format!("hmac-sha256:key.example.:{WRONG}");
    let out = kdig(&[
        "@127.0.0.1",
        "-p",
        &p,
        "-y",
        &wrong,
        "www.example.org",
        "A",
        "+tcp",
    ]);
    assert!(out.contains("status: BADSIG"), "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    assert!(
        tsig_lines(&out).iter().any(|l| l.ends_with(" BADSIG 0")),
        "{out}"
    );
    // `require all`: any unsigned query is refused.
    let r = udp(
        local(port),
        &Query::new("www.example.org.", RecordType::A),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    assert!(r.answers().is_empty());
    let out = kdig(&[
        "@127.0.0.1",
        "-p",
        &p,
        "-y",
        &format!("hmac-sha256:key.example.:{SECRET}"),
        "www.example.org",
        "A",
    ]);
    assert!(
        out.contains("status: NOERROR") && !out.contains(";; WARNING"),
        "{out}"
    );
}

#[test]
fn secrets_file_keys_sign_and_a_bad_file_names_its_line() {
    let port = free_port();
    let keys = format!(
        "key \"xfr.example.\" {{\n    algorithm hmac-sha512;\n    secret \"{SECRET}\";\n}};\n"
    );
    let cf = format!(
        "example.org:{port} {{\n    tsig {{\n        secrets keys.conf\n        require AXFR\n    }}\n    file db.example\n    transfer {{\n        to *\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example", zone())
        .file("keys.conf", &keys)
        .start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let p = port.to_string();
    let key = format!("hmac-sha512:xfr.example.:{SECRET}");
    let out = kdig(&[
        "@127.0.0.1",
        "-p",
        &p,
        "-y",
        &key,
        "www.example.org",
        "A",
        "+tcp",
    ]);
    assert!(
        out.contains("status: NOERROR") && !out.contains(";; WARNING"),
        "{out}"
    );
    let t = tsig_lines(&out);
    assert_eq!(t.len(), 1, "{out}");
    assert_eq!(tsig_fields(t[0])[0], "hmac-sha512.", "{out}");
    drop(s);
    // A secret that is not base64: -check names the Corefile position, the directive and the
    // secrets file's line.
    let bad = "key \"xfr.example.\" {\n    secret \"not*base64\";\n};\n";
    let (code, out, err) = Sextant::run_to_end(
        Sextant::builder(bin(), &cf)
            .file("db.example", zone())
            .file("keys.conf", bad)
            .arg("-check"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(all.contains("Corefile:3:17: secrets: keys.conf:2: secret of key \"xfr.example.\" is not valid base64"), "{all}");
}

/// What one server answers to `www.example.org A` signed by kdig with `key.example.` under
/// each algorithm: (status, MAC length and TSIG error of the reply's TSIG, kdig's warnings).
fn by_algorithm(binary: &Path) -> Vec<(String, String, String, bool)> {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    tsig {{\n        secret key.example. {SECRET}\n        require all\n    }}\n    whoami\n}}\n"
    );
    let mut s = Sextant::builder(binary, &cf).start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let p = port.to_string();
    let mut out = Vec::new();
    for alg in [
        "hmac-md5",
        "hmac-sha1",
        "hmac-sha224",
        "hmac-sha256",
        "hmac-sha384",
        "hmac-sha512",
    ] {
        let key = format!("{alg}:key.example.:{SECRET}");
        let text = kdig(&["@127.0.0.1", "-p", &p, "-y", &key, "www.example.org", "A"]);
        let status = text
            .lines()
            .find_map(|l| l.split("status: ").nth(1))
            .and_then(|s| s.split(';').next())
            .unwrap_or("none")
            .to_string();
        let t = tsig_lines(&text);
        assert_eq!(t.len(), 1, "{alg}: {text}");
        let f = tsig_fields(t[0]);
        out.push((
            format!("{alg} {status}"),
            f[3].to_string(),
            f[f.len() - 2].to_string(),
            text.contains(";; WARNING"),
        ));
    }
    out
}

/// hmac-sha224 is computed (a signed NOERROR kdig verifies, 28-byte MAC); hmac-md5, which
/// miekg/dns 1.1.72 no longer computes, gets BADSIG with an unsigned TSIG, as from CoreDNS
/// 1.14.7; the other algorithms sign as before. With `COREDNS_BIN` the same from CoreDNS.
#[test]
fn every_algorithm_coredns_knows_signs_and_md5_is_badsig() {
    let ours = by_algorithm(bin());
    let want: Vec<(String, String, String, bool)> = [
        ("hmac-md5 BADSIG", "0", "BADSIG", true),
        ("hmac-sha1 NOERROR", "20", "NOERROR", false),
        ("hmac-sha224 NOERROR", "28", "NOERROR", false),
        ("hmac-sha256 NOERROR", "32", "NOERROR", false),
        ("hmac-sha384 NOERROR", "48", "NOERROR", false),
        ("hmac-sha512 NOERROR", "64", "NOERROR", false),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d))
    .collect();
    assert_eq!(ours, want);
    let Some(cd) = coredns_bin() else {
        eprintln!("COREDNS_BIN not set: TSIG algorithms not compared with CoreDNS");
        return;
    };
    assert_eq!(by_algorithm(&cd), ours, "differs from CoreDNS");
}
