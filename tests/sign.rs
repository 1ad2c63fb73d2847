//! The `sign` plugin end to end: Sextant signs a zone file into `db.example.org.signed`, which
//! `ldns-verify-zone` (ldnsutils) and `kzonecheck -d on` (knot) accept, `file` serves it and
//! `delv` validates what it serves; a KSK + ZSK pair splits the signing; a signed file whose
//! signatures are about to expire is signed again at start-up, a fresh one is left alone.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sextant_testkit::*;

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
mail MX 10 www
sub NS ns.sub
ns.sub A 10.0.0.9
";

fn testdata_key(base: &str) -> (String, String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/zone/src/dnssec/testdata");
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{base}.{ext}"))).unwrap();
    (base.to_string(), read("key"), read("private"))
}

fn run(cmd: &str, args: &[&str], dir: &Path, install: &str) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}; install it: {install} (./test.sh does)"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn corefile(port: u16, keys: &[&str]) -> String {
    format!(
        "example.org:{port} {{\n    file db.example.org.signed {{\n        reload 1s\n    }}\n    sign db.example.org {{\n        key file {}\n        directory .\n    }}\n}}\n",
        keys.join(" ")
    )
}

fn start(port: u16, keys: &[(String, String, String)], extra: &[(&str, String)]) -> Sextant {
    let names: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let mut b = Sextant::builder(bin(), &corefile(port, &names)).file("db.example.org", ZONE);
    for (base, key, private) in keys {
        b = b
            .file(&format!("{base}.key"), key)
            .file(&format!("{base}.private"), private);
    }
    for (name, text) in extra {
        b = b.file(name, text);
    }
    b.start()
}

/// The RRSIG lines of a signed zone file: (covered type, key tag).
fn rrsigs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"RRSIG")).then(|| (f[4].to_string(), f[10].to_string()))
        })
        .collect()
}

fn wait_signed(s: &Sextant) -> String {
    s.wait_for_line(
        "Successfully signed zone \"example.org.\"",
        Duration::from_secs(10),
    )
    .unwrap();
    std::fs::read_to_string(s.dir().join("db.example.org.signed")).unwrap()
}

#[test]
fn signed_zone_verifies_and_is_served_validated() {
    let port = free_port();
    let key = testdata_key("Kexample.org.+013+57158");
    let mut s = start(port, std::slice::from_ref(&key), &[]);
    let signed = wait_signed(&s);
    let dir = s.dir().to_path_buf();
    let (ok, out) = run(
        "ldns-verify-zone",
        &["-k", "Kexample.org.+013+57158.key", "db.example.org.signed"],
        &dir,
        "apt-get install ldnsutils",
    );
    assert!(
        ok && out.contains("Zone is verified and complete"),
        "{out}\n{signed}"
    );
    let (ok, out) = run(
        "kzonecheck",
        &["-o", "example.org", "-d", "on", "db.example.org.signed"],
        &dir,
        "apt-get install knot",
    );
    assert!(ok, "{out}\n{signed}");
    // The apex NSEC lists what CoreDNS's lists; the delegation is not signed except its NSEC.
    assert!(
        signed.contains(
            "example.org.\t30\tIN\tNSEC\tmail.example.org. NS SOA RRSIG NSEC DNSKEY CDS CDNSKEY"
        ),
        "{signed}"
    );
    assert!(
        !signed
            .lines()
            .any(|l| l.starts_with("sub.example.org.") && l.contains("RRSIG\tNS ")),
        "{signed}"
    );
    // `file` picks the signed zone up; delv validates positive, NODATA and NXDOMAIN answers.
    s.wait_for_line(
        "Successfully reloaded zone \"example.org.\"",
        Duration::from_secs(10),
    )
    .unwrap();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let dnskey = signed
        .lines()
        .find(|l| l.contains("\tDNSKEY\t"))
        .expect("a DNSKEY in the signed zone");
    let f: Vec<&str> = dnskey.split_whitespace().collect();
    std::fs::write(
        dir.join("anchor.conf"),
        format!(
            "trust-anchors {{\n  example.org. static-key {} {} {} \"{}\";\n}};\n",
            f[4],
            f[5],
            f[6],
            f[7..].concat()
        ),
    )
    .unwrap();
    let p = port.to_string();
    for (name, qtype, want) in [
        ("www.example.org", "A", "; fully validated"),
        (
            "www.example.org",
            "TXT",
            "; negative response, fully validated",
        ),
        (
            "nothere.example.org",
            "A",
            "; negative response, fully validated",
        ),
    ] {
        let (_, out) = run(
            "delv",
            &[
                "@127.0.0.1",
                "-p",
                &p,
                "-a",
                "anchor.conf",
                "+root=example.org",
                name,
                qtype,
            ],
            &dir,
            "apt-get install bind9-dnsutils",
        );
        assert!(out.contains(want), "{name} {qtype}: {out}");
    }
}

#[test]
fn ksk_signs_the_dnskey_rrset_and_zsk_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |ksk: bool| -> (String, String, String) {
        let mut args = vec!["-a", "ECDSAP256SHA256", "-n", "ZONE"];
        if ksk {
            args.extend(["-f", "KSK"]);
        }
        args.push("example.org");
        let (ok, out) = run(
            "dnssec-keygen",
            &args,
            dir.path(),
            "apt-get install bind9-utils",
        );
        assert!(ok, "{out}");
        let base = out.lines().last().unwrap_or("").trim().to_string();
        let read =
            |ext: &str| std::fs::read_to_string(dir.path().join(format!("{base}.{ext}"))).unwrap();
        (base.clone(), read("key"), read("private"))
    };
    let (ksk, zsk) = (gen(true), gen(false));
    let tag = |base: &str| {
        base.rsplit('+')
            .next()
            .unwrap()
            .trim_start_matches('0')
            .to_string()
    };
    let (ksk_tag, zsk_tag) = (tag(&ksk.0), tag(&zsk.0));
    let port = free_port();
    let s = start(port, &[ksk.clone(), zsk.clone()], &[]);
    let signed = wait_signed(&s);
    let (ok, out) = run(
        "ldns-verify-zone",
        &["-k", &format!("{}.key", ksk.0), "db.example.org.signed"],
        s.dir(),
        "apt-get install ldnsutils",
    );
    assert!(
        ok && out.contains("Zone is verified and complete"),
        "{out}\n{signed}"
    );
    let sigs = rrsigs(&signed);
    assert!(!sigs.is_empty());
    for (t, k) in &sigs {
        let want = if t == "DNSKEY" { &ksk_tag } else { &zsk_tag };
        assert_eq!(k, want, "RRSIG over {t} by key {k}\n{signed}");
    }
    assert!(sigs.iter().any(|(t, _)| t == "DNSKEY"));
}

#[test]
fn resigns_a_file_about_to_expire_and_keeps_a_fresh_one() {
    let key = testdata_key("Kexample.org.+013+57158");
    // First run: sign, then stop.
    let port = free_port();
    let s = start(port, std::slice::from_ref(&key), &[]);
    let fresh = wait_signed(&s);
    drop(s);
    // A fresh signed file is kept: no new signing at the next start.
    let port = free_port();
    let s = start(
        port,
        std::slice::from_ref(&key),
        &[("db.example.org.signed", fresh.clone())],
    );
    s.wait_for_line(
        "Skipping signing zone \"example.org.\" in \"./db.example.org.signed\": signatures are valid",
        Duration::from_secs(10),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !s.output().contains("plugin/sign: Signing"),
        "{}",
        s.output()
    );
    assert_eq!(
        std::fs::read_to_string(s.dir().join("db.example.org.signed")).unwrap(),
        fresh
    );
    drop(s);
    // The SOA signature expiring in 3 days: signed again, with a new serial.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3 * 86400;
    let expiring: String = fresh
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() == 5 && f[3] == "RRSIG" && f[4].starts_with("SOA ") {
                let mut d: Vec<String> = f[4].split(' ').map(str::to_string).collect();
                d[4] = go_stamp(soon);
                format!("{}\t{}\t{}\t{}\t{}\n", f[0], f[1], f[2], f[3], d.join(" "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(expiring, fresh, "the SOA RRSIG line was found");
    let port = free_port();
    let s = start(
        port,
        std::slice::from_ref(&key),
        &[("db.example.org.signed", expiring)],
    );
    let again = wait_signed(&s);
    assert!(
        s.output()
            .contains("plugin/sign: Signing \"example.org.\" because expiration"),
        "{}",
        s.output()
    );
    assert_ne!(again, fresh);
    let (ok, out) = run(
        "ldns-verify-zone",
        &["-k", "Kexample.org.+013+57158.key", "db.example.org.signed"],
        s.dir(),
        "apt-get install ldnsutils",
    );
    assert!(ok, "{out}");
}

/// `YYYYMMDDhhmmss` of a Unix time (UTC).
fn go_stamp(t: u64) -> String {
    let days = (t / 86400) as i64;
    let rem = t % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
