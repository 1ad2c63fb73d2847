//! The `sign` plugin's options, the signed file it writes and its schedule on the clock.

use std::path::Path;
use std::time::Duration;

use sextant_corefile::parse_str;
use sextant_zone::dnssec::{covered_type, verify_rrsig};

use super::*;
use crate::pkg::clock::ManualClock;

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/zone/src/dnssec/testdata/"
);

fn conf(text: &str) -> Result<Vec<ZoneSigner>, Error> {
    let cf = parse_str("Corefile", text, Path::new(".")).expect("corefile");
    let ds: Vec<&Directive> = cf.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.text == "sign")
        .collect();
    parse(
        &ds,
        &["example.org.".to_string(), "example.net.".to_string()],
    )
}

#[test]
fn options() {
    let s = conf(&format!(
        "example.org example.net {{\n sign db.example.org {{\n  key file {KEYS}Kexample.org.+013+57158\n  directory /tmp/signed\n }}\n}}\n"
    ))
    .unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].origin.to_string(), "example.org.");
    assert_eq!(s[1].signed_name(), "db.example.net.signed");
    assert_eq!(s[1].directory, Path::new("/tmp/signed"));
    assert_eq!(s[0].keys[0].tag, 57158);
    assert!((0..=18 * 3600).contains(&s[0].jitter_inception));
    assert!((0..=5 * 86400).contains(&s[0].jitter_expiration));
    let s = conf("example.org {\n sign db miek.org\n}\n").unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0].signed_path(),
        Path::new("/var/lib/coredns/db.miek.org.signed")
    );
    // A KSK with a ZSK: accepted (a split the file signs with).
    let s = conf(&format!(
        "example.org {{\n sign db example.org {{\n  key file {KEYS}Kexample.org.+013+57158 {KEYS}Kexample.org.+015+04321\n }}\n}}\n"
    ))
    .unwrap();
    assert_eq!(s[0].keys.len(), 2);
}

#[test]
fn errors_name_position() {
    let e = conf("example.org {\n sign\n}\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Corefile:2:2: sign: Wrong argument count"),
        "{e}"
    );
    let e = conf("example.org {\n sign db {\n  key directory /etc/keys\n }\n}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:3:7: key: directory: not implemented"
    );
    let e = conf("example.org {\n sign db {\n  directory a b\n }\n}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:3:3: directory: can only be one argument after \"directory\""
    );
    let e = conf("example.org {\n sign db {\n  nsec3\n }\n}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:3:3: nsec3: unknown property 'nsec3'"
    );
    let e = conf(&format!(
        "example.org {{\n sign db {{\n  key file {KEYS}Kexample.org.+015+04321.key\n }}\n}}\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Corefile:3:12: key: DNSKEY in \"{KEYS}Kexample.org.+015+04321.key\" is not a CSK/KSK"
        )
    );
}

const ZONE: &str = "$TTL 3600
@ SOA ns1 hostmaster 5 7200 3600 1209600 300
@ NS ns1
ns1 A 192.0.2.53
www A 192.0.2.1
; keys and signatures in the source are dropped: the keys given replace them
@ DNSKEY 257 3 13 tvdMVHOUKnWNvrWJq4X5dRxy68sO0oJdFWhfRVrQwL8ZPCLJd5oSjX8G BZDyFaK4ku8pozXzYPGuTJ9C/yKoOA==
";

#[test]
fn signs_into_the_directory_and_follows_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db.example.org"), ZONE).unwrap();
    let text = format!(
        "example.org {{\n sign {}/db.example.org {{\n  key file {KEYS}Kexample.org.+013+57158\n  directory {}\n }}\n}}\n",
        dir.path().display(),
        dir.path().display()
    );
    let s = conf(&text).unwrap().remove(0);
    let manual = ManualClock::new();
    let clock = manual.clock();
    let why = why_resign(&s, &clock).unwrap();
    assert_eq!(
        why,
        format!(
            "open {}/db.example.org.signed: no such file or directory",
            dir.path().display()
        )
    );
    sign_and_log(&s, &why, &clock);
    let signed = std::fs::read_to_string(s.signed_path()).unwrap();
    assert_eq!(why_resign(&s, &clock), None);
    // The file: SOA first with the signing time as serial, one DNSKEY (the given key's), all
    // signatures good.
    let mut recs = Vec::new();
    sextant_zone::parse_zone(&signed, &Name::root(), "signed", None, &mut |r| {
        recs.push(r);
        Ok(())
    })
    .unwrap();
    assert_eq!(recs[0].rtype, RType::SOA);
    match &recs[0].data {
        sextant_wire::RData::Soa(soa) => assert_eq!(soa.serial as u64, clock.unix()),
        _ => panic!(),
    }
    let keys: Vec<&Record> = recs.iter().filter(|r| r.rtype == RType::DNSKEY).collect();
    assert_eq!(keys.len(), 1);
    let k = &s.keys[0];
    let mut checked = 0;
    for sig in recs.iter().filter(|r| r.rtype == RType::RRSIG) {
        let t = covered_type(sig).unwrap();
        let set: Vec<Record> = recs
            .iter()
            .filter(|r| r.rtype == t && r.name == sig.name)
            .cloned()
            .collect();
        assert!(verify_rrsig(&k.rdata, sig, &set));
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
    // Six days and a bit later the file is due again, with CoreDNS's wording.
    manual.advance(Duration::from_secs(6 * 86400 + 18 * 3600 + 3 * 3600 + 60));
    let why = why_resign(&s, &clock).unwrap();
    assert!(why.starts_with("inception \""), "{why}");
    assert!(
        why.contains("\" was more than: 144h0m0s ago from "),
        "{why}"
    );
    // A source that no longer parses: the old signed file stays.
    std::fs::write(dir.path().join("db.example.org"), "@ SOA broken\n").unwrap();
    sign_and_log(&s, &why, &clock);
    assert_eq!(std::fs::read_to_string(s.signed_path()).unwrap(), signed);
}

#[test]
fn go_formats() {
    assert_eq!(go_time(1564766865, 270), "2019-08-02T17:27:45.270Z");
    assert_eq!(go_secs(-90), "-1m30s");
}
