//! The `dnssec` plugin end to end: `delv` (bind9-dnsutils) validates Sextant's online-signed
//! answers against a trust anchor made from the zone's key: a positive answer, NODATA, and a
//! name that does not exist (NXDOMAIN turned into a NODATA "black lie" with an NSEC, as CoreDNS
//! does), for a CSK of each algorithm family Sextant signs with (ECDSA P-256, Ed25519) and for
//! a KSK + ZSK pair made by `dnssec-keygen`. Plain queries stay unsigned; the signature cache
//! shows in the metrics.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const ZONE: &str = "$ORIGIN example.org.
$TTL 300
@ SOA ns hostmaster 7 3600 600 86400 30
@ NS ns
ns A 10.0.0.1
www A 10.0.0.2
www TXT \"hello\"
alias CNAME www
";

/// Key files under crates/zone's test data: (base name, .key, .private).
fn testdata_key(base: &str) -> (String, String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/zone/src/dnssec/testdata");
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{base}.{ext}"))).unwrap();
    (base.to_string(), read("key"), read("private"))
}

/// A `trust-anchors` clause for delv from a `.key` file's DNSKEY line.
fn anchor(key_file: &str) -> String {
    let line = key_file
        .lines()
        .find(|l| l.contains("DNSKEY") && !l.starts_with(';'))
        .expect("a DNSKEY line");
    let f: Vec<&str> = line.split_whitespace().collect();
    let at = f.iter().position(|w| *w == "DNSKEY").unwrap();
    format!(
        "trust-anchors {{\n  {} static-key {} {} {} \"{}\";\n}};\n",
        f[0],
        f[at + 1],
        f[at + 2],
        f[at + 3],
        f[at + 4..].concat()
    )
}

fn delv(port: u16, anchor_file: &Path, name: &str, qtype: &str) -> String {
    let out = Command::new("delv")
        .args(["@127.0.0.1", "-p", &port.to_string(), "-a"])
        .arg(anchor_file)
        .args(["+root=example.org", name, qtype])
        .output()
        .expect("delv is missing: apt-get install bind9-dnsutils (./test.sh installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts Sextant signing the zone with `keys` (base name, .key, .private) and checks every
/// kind of answer with delv against the trust anchor `anchor_key` (a .key file's text).
fn validate_with(keys: &[(String, String, String)], anchor_key: &str) {
    let port = free_port();
    let names: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let cf = format!(
        "example.org:{port} {{\n    file db.example.org\n    dnssec {{\n        key file {}\n    }}\n}}\n",
        names.join(" ")
    );
    let mut b = Sextant::builder(bin(), &cf)
        .file("db.example.org", ZONE)
        .file("anchor.conf", anchor(anchor_key));
    for (base, key, private) in keys {
        b = b
            .file(&format!("{base}.key"), key)
            .file(&format!("{base}.private"), private);
    }
    let mut s = b.start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let a = s.dir().join("anchor.conf");

    let out = delv(port, &a, "www.example.org", "A");
    assert!(out.contains("; fully validated"), "{keys:?}\n{out}");
    assert!(
        out.contains("www.example.org.\t300\tIN\tA\t10.0.0.2"),
        "{out}"
    );
    assert!(out.contains("IN\tRRSIG\tA "), "{out}");

    let out = delv(port, &a, "alias.example.org", "A");
    assert!(out.contains("; fully validated"), "{out}");
    assert!(
        out.contains("alias.example.org.\t300\tIN\tCNAME\twww.example.org."),
        "{out}"
    );
    assert!(
        out.contains("www.example.org.\t300\tIN\tA\t10.0.0.2"),
        "{out}"
    );

    // NODATA: proved by a signed NSEC at the name.
    let out = delv(port, &a, "www.example.org", "AAAA");
    assert!(
        out.contains("; negative response, fully validated"),
        "{out}"
    );
    assert!(out.contains("NXRRSET"), "{out}");
    assert!(out.contains("www.example.org. NSEC "), "{out}");

    // A name that does not exist: the black lie, a validated NODATA.
    let out = delv(port, &a, "nothere.example.org", "A");
    assert!(
        out.contains("; negative response, fully validated"),
        "{out}"
    );
    assert!(
        out.contains("nothere.example.org. NSEC \\000.nothere.example.org."),
        "{out}"
    );

    // Over the wire: with DO the black lie is NOERROR with SOA, NSEC and their RRSIGs; without
    // DO the same name is a plain NXDOMAIN with no signatures.
    let q = Query::new("nothere.example.org.", RecordType::A)
        .edns(1232)
        .do_bit();
    let r = udp(local(port), &q, T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.answers().is_empty());
    let types: Vec<String> = r
        .authority()
        .iter()
        .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
        .collect();
    // The order CoreDNS 1.14.7 sends them in.
    assert_eq!(
        types,
        ["SOA", "RRSIG", "RRSIG", "NSEC"],
        "{:?}",
        r.authority()
    );
    let r = udp(
        local(port),
        &Query::new("nothere.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(r.authority().len(), 1, "{:?}", r.authority());
    let r = udp(
        local(port),
        &Query::new("www.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 10.0.0.2"]);
}

#[test]
fn delv_validates_answers_signed_with_an_ecdsa_csk() {
    let k = testdata_key("Kexample.org.+013+57158");
    let anchor_key = k.1.clone();
    validate_with(&[k], &anchor_key);
}

#[test]
fn delv_validates_answers_signed_with_an_ed25519_key() {
    let k = testdata_key("Kexample.org.+015+04321");
    let anchor_key = k.1.clone();
    validate_with(&[k], &anchor_key);
}

#[test]
fn delv_validates_answers_signed_with_a_ksk_and_zsk_from_dnssec_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |ksk: bool| -> (String, String, String) {
        let mut c = Command::new("dnssec-keygen");
        c.current_dir(dir.path())
            .args(["-a", "ECDSAP256SHA256", "-n", "ZONE"]);
        if ksk {
            c.args(["-f", "KSK"]);
        }
        let out = c.arg("example.org").output().expect(
            "dnssec-keygen is missing: apt-get install bind9-utils (./test.sh installs it)",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let read =
            |ext: &str| std::fs::read_to_string(dir.path().join(format!("{base}.{ext}"))).unwrap();
        (base.clone(), read("key"), read("private"))
    };
    let ksk = gen(true);
    let zsk = gen(false);
    let anchor_key = ksk.1.clone();
    validate_with(&[ksk, zsk], &anchor_key);
}

#[test]
fn dnskey_at_the_apex_and_signature_cache_metrics() {
    let port = free_port();
    let metrics_port = free_port();
    let (base, key, private) = testdata_key("Kexample.org.+013+57158");
    let cf = format!(
        "example.org:{port} {{\n    file db.example.org\n    dnssec {{\n        key file {base}\n        cache_capacity 100\n    }}\n    prometheus 127.0.0.1:{metrics_port}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org", ZONE)
        .file(&format!("{base}.key"), key)
        .file(&format!("{base}.private"), private)
        .start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let q = Query::new("example.org.", RecordType::DNSKEY)
        .edns(1232)
        .do_bit();
    let r = udp(local(port), &q, T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.has_flag("aa"), "{}", r.flags());
    let types: Vec<String> = r
        .answers()
        .iter()
        .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
        .collect();
    assert_eq!(types, ["DNSKEY", "RRSIG"], "{:?}", r.answers());
    // Flags 257, protocol 3, algorithm 13 (the test client shows DNSKEY data as base64).
    assert!(
        r.answers()[0].starts_with("example.org. 3600 IN DNSKEY AQEDD"),
        "{:?}",
        r.answers()
    );
    let q = Query::new("www.example.org.", RecordType::TXT)
        .edns(1232)
        .do_bit();
    let first = udp(local(port), &q, T).unwrap();
    let second = udp(local(port), &q, T).unwrap();
    assert_eq!(first.answers().len(), 2, "{:?}", first.answers());
    assert_eq!(
        first.answers(),
        second.answers(),
        "a cached signature is the same signature"
    );
    let text = http_get(
        SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        "/metrics",
        T,
    )
    .unwrap()
    .1;
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert!(value("coredns_dnssec_cache_hits_total{") >= 1.0, "{text}");
    assert!(value("coredns_dnssec_cache_misses_total{") >= 1.0, "{text}");
    assert!(value("coredns_dnssec_cache_entries{") >= 1.0, "{text}");
}

#[test]
fn delv_rejects_answers_against_another_trust_anchor() {
    // The check above can fail: signed with the Ed25519 key, anchored on the ECDSA one.
    let port = free_port();
    let (base, key, private) = testdata_key("Kexample.org.+015+04321");
    let other = testdata_key("Kexample.org.+013+57158").1;
    let cf = format!(
        "example.org:{port} {{\n    file db.example.org\n    dnssec {{\n        key file {base}\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org", ZONE)
        .file(&format!("{base}.key"), key)
        .file(&format!("{base}.private"), private)
        .file("anchor.conf", anchor(&other))
        .start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let out = delv(port, &s.dir().join("anchor.conf"), "www.example.org", "A");
    assert!(!out.contains("fully validated"), "{out}");
    assert!(out.contains("resolution failed"), "{out}");
}

#[test]
fn cached_answers_are_signed_and_validate_when_warm() {
    // `cache` runs after `dnssec` in the chain (as in CoreDNS): its hits are signed too.
    let port = free_port();
    let (base, key, private) = testdata_key("Kexample.org.+013+57158");
    let cf = format!(
        "example.org:{port} {{\n    dnssec {{\n        key file {base}\n    }}\n    cache\n    file db.example.org\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org", ZONE)
        .file(&format!("{base}.key"), &key)
        .file(&format!("{base}.private"), private)
        .file("anchor.conf", anchor(&key))
        .start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let a = s.dir().join("anchor.conf");
    for round in 0..2 {
        let out = delv(port, &a, "www.example.org", "A");
        assert!(out.contains("; fully validated"), "round {round}: {out}");
        let out = delv(port, &a, "nothere.example.org", "A");
        assert!(
            out.contains("; negative response, fully validated"),
            "round {round}: {out}"
        );
    }
    // Without DO the cached answer carries no signature.
    let r = udp(
        local(port),
        &Query::new("www.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 10.0.0.2"]);
    assert!(
        r.authority().iter().all(|l| !l.contains(" RRSIG ")),
        "{:?}",
        r.authority()
    );
}
