//! Known vectors (RFC 8080 §6.1 Ed25519 signatures and DS, RFC 6605 §6.1/§6.2 ECDSA DS and
//! signatures), keys written by BIND's `dnssec-keygen` (testdata/), canonical form, NSEC chains
//! of a signed zone and the resign schedule.

use super::*;
use crate::codec::{base64_decode, hex_decode};
use sextant_wire::{Class, Name, RData, RType, Record};

fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn rec(text: &str) -> Record {
    let mut out = Vec::new();
    crate::parse_zone(text, &Name::root(), "t", None, &mut |r| {
        out.push(r);
        Ok(())
    })
    .unwrap();
    out.remove(0)
}

fn rrsig_sig(r: &Record) -> Vec<u8> {
    let RData::Unknown(d) = &r.data else { panic!() };
    let (_, end) = RrsigHead::parse(d).unwrap();
    d[end..].to_vec()
}

const RFC8080_1_KEY: &str =
    "example.com. 3600 IN DNSKEY 257 3 15 ( l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4= )\n";
const RFC8080_1_PRIV: &str =
    "Private-key-format: v1.2\nAlgorithm: 15 (ED25519)\nPrivateKey: ODIyNjAzODQ2MjgwODAxMjI2NDUxOTAyMDQxNDIyNjI=\n";

#[test]
fn rfc8080_ed25519_signature_and_ds() {
    let k = SigningKey::from_files(RFC8080_1_KEY, "k.key", RFC8080_1_PRIV, "k.private").unwrap();
    assert_eq!(k.tag, 3613);
    assert_eq!(k.algorithm, 15);
    assert!(k.is_ksk() && !k.is_zsk());
    let ds = ds_rdata(&n("example.com."), &k.rdata, 2).unwrap();
    let mut want = vec![0x0e, 0x1d, 15, 2];
    want.extend(
        hex_decode("3aa5ab37efce57f737fc1627013fee07bdf241bd10f3b1964ab55c78e79a304b").unwrap(),
    );
    assert_eq!(ds, want);
    let mx = rec("example.com. 3600 IN MX 10 mail.example.com.\n");
    let p = SigParams {
        signer: &n("example.com."),
        ttl: 3600,
        orig_ttl: 3600,
        inception: 1438207200,
        expiration: 1440021600,
    };
    let sig = sign_rrset(&k, std::slice::from_ref(&mx), &p).unwrap();
    assert_eq!(
        rrsig_sig(&sig),
        base64_decode("oL9krJun7xfBOIWcGHi7mag5/hdZrKWw15jPGrHpjQeRAvTdszaPD+QLs3fx8A4M3e23mRZ9VrbpMngwcrqNAg==").unwrap()
    );
    assert_eq!(
        rdata_text(&sig),
        "MX 15 2 3600 20150819220000 20150729220000 3613 example.com. oL9krJun7xfBOIWcGHi7mag5/hdZrKWw15jPGrHpjQeRAvTdszaPD+QLs3fx8A4M3e23mRZ9VrbpMngwcrqNAg=="
    );
    assert!(verify_rrsig(&k.rdata, &sig, std::slice::from_ref(&mx)));
    // Owner case and a name's case in the data do not change the signature (canonical form).
    let shouty = rec("EXAMPLE.com. 3600 IN MX 10 MAIL.example.COM.\n");
    assert!(verify_rrsig(&k.rdata, &sig, &[shouty]));
    // Another record does.
    let other = rec("example.com. 3600 IN MX 20 mail.example.com.\n");
    assert!(!verify_rrsig(&k.rdata, &sig, &[other]));
}

#[test]
fn rfc8080_second_example() {
    let k = SigningKey::from_files(
        "example.com. 3600 IN DNSKEY 257 3 15 ( zPnZ/QwEe7S8C5SPz2OfS5RR40ATk2/rYnE9xHIEijs= )",
        "k.key",
        "Private-key-format: v1.2\nAlgorithm: 15 (ED25519)\nPrivateKey: DSSF3o0s0f+ElWzj9E/Osxw8hLpk55chkmx0LYN5WiY=\n",
        "k.private",
    )
    .unwrap();
    assert_eq!(k.tag, 35217);
    let mx = rec("example.com. 3600 IN MX 10 mail.example.com.\n");
    let p = SigParams {
        signer: &n("example.com."),
        ttl: 3600,
        orig_ttl: 3600,
        inception: 1438207200,
        expiration: 1440021600,
    };
    let sig = sign_rrset(&k, &[mx], &p).unwrap();
    assert_eq!(
        rrsig_sig(&sig),
        base64_decode("zXQ0bkYgQTEFyfLyi9QoiY6D8ZdYo4wyUhVioYZXFdT410QPRITQSqJSnzQoSm5poJ7gD7AQR0O7KuI5k2pcBg==").unwrap()
    );
}

const RFC6605_P256_KEY: &str = "example.net. 3600 IN DNSKEY 257 3 13 ( GojIhhXUN/u4v54ZQqGSnyhWJwaubCvTmeexv7bR6edbkrSqQpF64cYbcB7wNcP+e+MAnLr+Wi9xMWyQLc8NAA== )";
const RFC6605_P256_PRIV: &str = "Private-key-format: v1.2\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: GU6SnQ/Ou+xC5RumuIUIuJZteXT2z0O/ok1s38Et6mQ=\n";

/// P-256 with the private scalar 1, whose public key is the curve's generator: a `.private` file
/// written without leading zero bytes (BIND does so for one key in 256) still loads and signs.
#[test]
fn ecdsa_private_key_without_leading_zeros_is_padded() {
    let key = "example.net. 3600 IN DNSKEY 256 3 13 axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpZP40Li/hp/m47n60p8D54WK84zV2sxXs7LtkBoN79R9Q==";
    for scalar in ["AQ==", "AAAB"] {
        let private = format!(
            "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: {scalar}\n"
        );
        let k = SigningKey::from_files(key, "k.key", &private, "k.private").unwrap();
        let sig = k.sign_bytes(b"data").unwrap();
        assert!(verify_bytes(&k.rdata, b"data", &sig));
        assert!(!verify_bytes(&k.rdata, b"other", &sig));
    }
    // A scalar that does not match the public key is still refused.
    let private = "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: Ag==\n";
    assert!(SigningKey::from_files(key, "k.key", private, "k.private").is_err());
}

#[test]
fn rfc6605_ecdsa_published_signatures_verify_and_ours_too() {
    let k =
        SigningKey::from_files(RFC6605_P256_KEY, "k.key", RFC6605_P256_PRIV, "k.private").unwrap();
    assert_eq!(k.tag, 55648);
    let mut want = vec![0xd9, 0x60, 13, 2];
    want.extend(
        hex_decode("b4c8c1fe2e7477127b27115656ad6256f424625bf5c1e2770ce6d6e37df61d17").unwrap(),
    );
    assert_eq!(ds_rdata(&n("example.net."), &k.rdata, 2).unwrap(), want);
    let a = rec("www.example.net. 3600 IN A 192.0.2.1\n");
    let published = rec("www.example.net. 3600 IN RRSIG A 13 3 3600 20100909100439 20100812100439 55648 example.net. qx6wLYqmh+l9oCKTN6qIc+bw6ya+KJ8oMz0YP107epXAyGmt+3SNruPFKG7tZoLBLlUzGGus7ZwmwWep666VCw==\n");
    assert!(verify_rrsig(&k.rdata, &published, std::slice::from_ref(&a)));
    let p = SigParams {
        signer: &n("example.net."),
        ttl: 3600,
        orig_ttl: 3600,
        inception: 1281607479,
        expiration: 1284026679,
    };
    let ours = sign_rrset(&k, std::slice::from_ref(&a), &p).unwrap();
    // ECDSA signatures are randomised: the head matches the published one, the signature checks.
    let RData::Unknown(pd) = &published.data else {
        panic!()
    };
    let RData::Unknown(od) = &ours.data else {
        panic!()
    };
    assert_eq!(
        RrsigHead::parse(pd).unwrap().0,
        RrsigHead::parse(od).unwrap().0
    );
    assert!(verify_rrsig(&k.rdata, &ours, std::slice::from_ref(&a)));

    let k384 = SigningKey::from_files(
        "example.net. 3600 IN DNSKEY 257 3 14 ( xKYaNhWdGOfJ+nPrL8/arkwf2EY3MDJ+SErKivBVSum1 w/egsXvSADtNJhyem5RCOpgQ6K8X1DRSEkrbYQ+OB+v8 /uX45NBwY8rp65F6Glur8I/mlVNgF6W/qTI37m40 )",
        "k.key",
        "Private-key-format: v1.2\nAlgorithm: 14 (ECDSAP384SHA384)\nPrivateKey: WURgWHCcYIYUPWgeLmiPY2DJJk02vgrmTfitxgqcL4vwW7BOrbawVmVe0d9V94SR\n",
        "k.private",
    )
    .unwrap();
    assert_eq!(k384.tag, 10771);
    let mut want = vec![0x2a, 0x13, 14, 4];
    want.extend(hex_decode("72d7b62976ce06438e9c0bf319013cf801f09ecc84b8d7e9495f27e305c6a9b0563a9b5f4d288405c3008a946df983d6").unwrap());
    assert_eq!(ds_rdata(&n("example.net."), &k384.rdata, 4).unwrap(), want);
    let s = sign_rrset(&k384, std::slice::from_ref(&a), &p).unwrap();
    assert!(verify_rrsig(&k384.rdata, &s, &[a]));
}

fn testkey(base: &str) -> SigningKey {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/dnssec/testdata/");
    let pubf = format!("{dir}{base}.key");
    let privf = format!("{dir}{base}.private");
    SigningKey::from_files(
        &std::fs::read_to_string(&pubf).unwrap(),
        &pubf,
        &std::fs::read_to_string(&privf).unwrap(),
        &privf,
    )
    .unwrap()
}

#[test]
fn bind_key_files_of_each_algorithm_sign_and_verify() {
    let rrset = vec![
        rec("host.example.org. 300 IN TXT \"b\"\n"),
        rec("host.example.org. 300 IN TXT \"a\"\n"),
        rec("host.example.org. 300 IN TXT \"a\"\n"),
    ];
    for (base, tag, alg, ksk) in [
        ("Kexample.org.+013+57158", 57158, 13, true),
        ("Kexample.org.+015+04321", 4321, 15, false),
        ("Kexample.org.+008+03534", 3534, 8, false),
    ] {
        let k = testkey(base);
        assert_eq!((k.tag, k.algorithm, k.is_ksk()), (tag, alg, ksk), "{base}");
        assert_eq!(k.dnskey.ttl, 3600, "no TTL in the file: miekg's default");
        let p = SigParams {
            signer: &n("example.org."),
            ttl: 300,
            orig_ttl: 300,
            inception: 1_700_000_000,
            expiration: 1_700_600_000,
        };
        let sig = sign_rrset(&k, &rrset, &p).unwrap();
        assert_eq!(sig.ttl, 300);
        assert!(verify_rrsig(&k.rdata, &sig, &rrset), "{base}");
        // Order and duplicates of the RRset do not matter.
        assert!(verify_rrsig(&k.rdata, &sig, &rrset[..2]), "{base}");
        assert!(verify_rrsig(
            &k.rdata,
            &sig,
            &[rrset[1].clone(), rrset[0].clone()]
        ));
        assert!(!verify_rrsig(&k.rdata, &sig, &rrset[..1]), "{base}");
    }
}

fn key_err(public: &str, private: &str) -> String {
    SigningKey::from_files(public, "K.key", private, "K.private")
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_key_files_name_file_and_line() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/dnssec/testdata/");
    let pubt = std::fs::read_to_string(format!("{dir}Kexample.org.+013+57158.key")).unwrap();
    let privt = std::fs::read_to_string(format!("{dir}Kexample.org.+013+57158.private")).unwrap();
    let e = key_err(
        &pubt,
        &privt.replace("PrivateKey: L9Bk", "PrivateKey: !!!!"),
    );
    assert_eq!(e, "K.private:3:13: PrivateKey: not valid base64");
    let e = key_err(&pubt, &privt.replace("Algorithm: 13", "Algorithm: 15"));
    assert!(
        e.starts_with("K.private:2:12: Algorithm \"15 (ECDSAP256SHA256)\" does not match"),
        "{e}"
    );
    let e = key_err(
        &pubt,
        &privt.replace("PrivateKey: L9Bk", "PrivateKey: AAAA"),
    );
    assert!(
        e.starts_with("K.private:3:13: PrivateKey: does not match the public key of K.key"),
        "{e}"
    );
    let e = key_err(&pubt, "Private-key-format: v1.3\nAlgorithm: 13\n");
    assert_eq!(e, "K.private:0:0: no PrivateKey: field");
    let e = key_err(&pubt, "Private-key-format v1.3\n");
    assert_eq!(
        e,
        "K.private:1:1: expected \"Field: value\", got \"Private-key-format v1.3\""
    );
    let e = key_err(&pubt.replace("DNSKEY 257 3 13", "DNSKEY 257 3 13x"), &privt);
    assert!(e.starts_with("K.key:5:"), "{e}");
    let e = key_err("example.org. IN A 192.0.2.1\n", &privt);
    assert_eq!(e, "K.key:1:1: the record is a A, not a DNSKEY");
    let e = key_err("; nothing\n", &privt);
    assert_eq!(e, "K.key:0:0: no DNSKEY record found");
    let small = testkey_text("Kexample.org.+008+12825");
    let e = key_err(&small.0, &small.1);
    assert!(e.contains("2048 to 4096 bits"), "{e}");
    let e = key_err(
        "example.org. IN DNSKEY 257 3 5 AwEAAcDSkCoB",
        "Private-key-format: v1.3\nAlgorithm: 5 (RSASHA1)\n",
    );
    assert_eq!(
        e,
        "K.private:2:12: algorithm 5 (RSASHA1) is not supported: use 8, 10, 13, 14 or 15"
    );
}

fn testkey_text(base: &str) -> (String, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/dnssec/testdata/");
    (
        std::fs::read_to_string(format!("{dir}{base}.key")).unwrap(),
        std::fs::read_to_string(format!("{dir}{base}.private")).unwrap(),
    )
}

#[test]
fn canonical_rdata_lowers_the_listed_types_only() {
    let d = |t: &str| {
        let r = rec(t);
        canonical_rdata(r.rtype, &crate::wire::rdata_to_wire(&r.data))
    };
    assert_eq!(d("a. 1 IN NS NS.Example.ORG."), n("ns.example.org.").wire());
    assert_eq!(
        d("a. 1 IN SRV 1 2 3 Target.Example."),
        [&[0, 1, 0, 2, 0, 3][..], n("target.example.").wire()].concat()
    );
    let naptr = d("a. 1 IN NAPTR 100 10 \"S\" \"SIP+D2U\" \"\" _Sip._UDP.Example.");
    assert!(naptr.ends_with(n("_sip._udp.example.").wire()));
    // NSEC's next name keeps its case (RFC 6840 §5.1).
    let nsec = d("a. 1 IN NSEC Next.Example. A");
    assert!(nsec.starts_with(b"\x04Next\x07Example\x00"));
    assert_eq!(rrsig_labels(&n("*.w.example.")), 2);
    assert_eq!(rrsig_labels(&n("a.w.example.")), 3);
}

#[test]
fn wildcard_signature_verifies_for_an_expanded_name() {
    let k = testkey("Kexample.org.+015+04321");
    let wild = rec("*.w.example.org. 60 IN TXT \"x\"\n");
    let p = SigParams {
        signer: &n("example.org."),
        ttl: 60,
        orig_ttl: 60,
        inception: 1,
        expiration: 2,
    };
    let sig = sign_rrset(&k, std::slice::from_ref(&wild), &p).unwrap();
    let mut expanded = wild.clone();
    expanded.name = n("a.b.w.example.org.");
    assert!(verify_rrsig(&k.rdata, &sig, &[expanded]));
}

const ZONE: &str = "$ORIGIN example.org.
$TTL 3600
@ SOA ns1 hostmaster 1 7200 3600 1209600 300
@ NS ns1
ns1 A 192.0.2.53
www A 192.0.2.1
*.wild TXT \"w\"
sub NS ns.sub
sub DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.sub A 192.0.2.99
insecure NS ns.elsewhere.net.
";

fn zone_records() -> Vec<Record> {
    let mut v = Vec::new();
    crate::parse_zone(ZONE, &n("example.org."), "db", None, &mut |r| {
        v.push(r);
        Ok(())
    })
    .unwrap();
    v
}

#[test]
fn zone_signing_chain_and_signatures() {
    let keys = [testkey("Kexample.org.+013+57158")];
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let p = ZoneSigning {
        keys: &refs,
        inception: 1_700_000_000,
        expiration: 1_702_000_000,
        serial: 1_700_010_800,
    };
    let out = sign_zone(zone_records(), &n("example.org."), &p).unwrap();
    let text: Vec<String> = out.iter().map(record_text).collect();
    assert!(text[0].starts_with(
        "example.org.\t3600\tIN\tSOA\tns1.example.org. hostmaster.example.org. 1700010800 "
    ));
    assert!(text[1].starts_with("example.org.\t3600\tIN\tRRSIG\tSOA 13 2 3600 "));
    let nsecs: Vec<&String> = text.iter().filter(|t| t.contains("\tNSEC\t")).collect();
    assert_eq!(
        nsecs,
        [
            "example.org.\t300\tIN\tNSEC\tinsecure.example.org. NS SOA RRSIG NSEC DNSKEY CDS CDNSKEY",
            "insecure.example.org.\t300\tIN\tNSEC\tns1.example.org. NS RRSIG NSEC",
            "ns1.example.org.\t300\tIN\tNSEC\tsub.example.org. A RRSIG NSEC",
            "sub.example.org.\t300\tIN\tNSEC\t*.wild.example.org. NS DS RRSIG NSEC",
            "*.wild.example.org.\t300\tIN\tNSEC\twww.example.org. TXT RRSIG NSEC",
            "www.example.org.\t300\tIN\tNSEC\texample.org. A RRSIG NSEC",
        ]
    );
    // Every signature checks; exactly the authoritative RRsets are signed.
    let mut signed: Vec<(String, RType)> = Vec::new();
    for s in out.iter().filter(|r| r.rtype == RType::RRSIG) {
        let t = covered_type(s).unwrap();
        let set: Vec<Record> = out
            .iter()
            .filter(|r| r.rtype == t && r.name == s.name)
            .cloned()
            .collect();
        assert!(verify_rrsig(&keys[0].rdata, s, &set), "{}", record_text(s));
        signed.push((s.name.to_string(), t));
    }
    for (name, t) in [
        ("sub.example.org.", RType::NS),
        ("ns.sub.example.org.", RType::A),
        ("insecure.example.org.", RType::NS),
    ] {
        assert!(
            !signed.contains(&(name.to_string(), t)),
            "{name} {t} signed"
        );
    }
    for (name, t) in [
        ("sub.example.org.", RType::DS),
        ("example.org.", RType::NS),
        ("example.org.", RType::DNSKEY),
        ("example.org.", RType(59)),
        ("*.wild.example.org.", RType::TXT),
    ] {
        assert!(
            signed.contains(&(name.to_string(), t)),
            "{name} {t} not signed"
        );
    }
    // CDS with SHA-1 and SHA-256, CDNSKEY, DNSKEY at the SOA's TTL.
    assert_eq!(text.iter().filter(|t| t.contains("\tCDS\t")).count(), 2);
    assert!(text
        .iter()
        .any(|t| t.starts_with("example.org.\t3600\tIN\tDNSKEY\t257 3 13 ")));
    // The output parses back (it is a zone file).
    let joined = text.join("\n") + "\n";
    let mut back = 0;
    crate::parse_zone(&joined, &Name::root(), "signed", None, &mut |_| {
        back += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(back, out.len());
}

#[test]
fn split_keys_sign_dnskey_with_the_ksk_only() {
    let keys = [
        testkey("Kexample.org.+013+57158"),
        testkey("Kexample.org.+015+04321"),
    ];
    let refs: Vec<&SigningKey> = keys.iter().collect();
    assert!(split_keys(&refs));
    let p = ZoneSigning {
        keys: &refs,
        inception: 1,
        expiration: 2,
        serial: 3,
    };
    let out = sign_zone(zone_records(), &n("example.org."), &p).unwrap();
    for s in out.iter().filter(|r| r.rtype == RType::RRSIG) {
        let RData::Unknown(d) = &s.data else { panic!() };
        let (h, _) = RrsigHead::parse(d).unwrap();
        if h.type_covered == RType::DNSKEY {
            assert_eq!(h.key_tag, 57158);
        } else {
            assert_eq!(h.key_tag, 4321, "{}", record_text(s));
        }
    }
    // CDS/CDNSKEY only for the KSK.
    assert_eq!(out.iter().filter(|r| r.rtype == RType(60)).count(), 1);
    assert_eq!(out.iter().filter(|r| r.rtype == RType::DNSKEY).count(), 2);
}

#[test]
fn resign_schedule() {
    let keys = [testkey("Kexample.org.+015+04321")];
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let day = 86400i64;
    let now = 1_700_000_000i64;
    let text = |incep: i64, expir: i64| {
        let p = ZoneSigning {
            keys: &refs,
            inception: incep as u32,
            expiration: expir as u32,
            serial: 1,
        };
        sign_zone(zone_records(), &n("example.org."), &p)
            .unwrap()
            .iter()
            .map(record_text)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let check = |t: &str| resign_reason(t, "db.signed", now, 6 * day, 7 * day);
    assert_eq!(check(&text(now - 3600, now + 30 * day)), None);
    assert_eq!(
        check(&text(now - 7 * day, now + 30 * day)),
        Some(Resign::Old {
            inception: (now - 7 * day) as u32
        })
    );
    assert_eq!(
        check(&text(now + 60, now + 30 * day)),
        Some(Resign::Future {
            inception: (now + 60) as u32
        })
    );
    assert_eq!(
        check(&text(now - 3600, now + 6 * day)),
        Some(Resign::Expiring {
            expiration: (now + 6 * day) as u32
        })
    );
    let unsigned = "example.org. 1 IN SOA a. b. 1 2 3 4 5\n".repeat(101);
    assert_eq!(check(&unsigned), Some(Resign::NoSoaSig));
    assert!(matches!(
        check("example.org. IN SOA"),
        Some(Resign::Parse(_))
    ));
    // A big zone whose SOA signatures are good is not signed again (CoreDNS would).
    let mut big = text(now - 3600, now + 30 * day);
    for i in 0..200 {
        big.push_str(&format!("\nh{i}.example.org. 60 IN A 192.0.2.1"));
    }
    assert_eq!(check(&big), None);
    assert_eq!(sig_time_string(1440021600), "20150819220000");
    let _ = Class::IN;
}
