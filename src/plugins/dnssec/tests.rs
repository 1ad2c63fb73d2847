//! The `dnssec` plugin's options and its signing of replies: positive answers, black lies for
//! NXDOMAIN and NODATA, delegations, DNSKEY at the apex, the signature cache (hits, refresh
//! after 6 days on the clock, capacity) and the memo of signed wire replies.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use sextant_corefile::parse_str;
use sextant_wire::{Message, Name, RData, RType, Rcode, Record, Soa};
use sextant_zone::dnssec::{bitmap_types, covered_type, record_text, verify_rrsig, RrsigHead};

use super::*;
use crate::pkg::clock::ManualClock;

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/zone/src/dnssec/testdata/"
);

fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn conf(text: &str) -> Result<Config, Error> {
    let cf = parse_str("Corefile", text, Path::new(".")).expect("corefile");
    let d = cf.blocks[0]
        .directives
        .iter()
        .find(|d| d.name.text == "dnssec")
        .unwrap();
    parse(d, &["example.org.".to_string()], Path::new("."))
}

#[test]
fn options() {
    let c = conf(&format!(
        "example.org {{\n dnssec {{\n  key file {KEYS}Kexample.org.+013+57158 {KEYS}Kexample.org.+015+04321.key\n  key file {KEYS}Kexample.org.+008+03534.private\n  cache_capacity 500\n }}\n}}\n"
    ))
    .unwrap();
    assert_eq!(c.zones, [n("example.org.")]);
    assert_eq!(
        c.keys.iter().map(|k| k.tag).collect::<Vec<_>>(),
        [57158, 4321, 3534]
    );
    assert_eq!(c.capacity, 500);
    let c = conf(&format!(
        "example.org {{\n dnssec sub.example.org {{\n  key file {KEYS}Kexample.org.+013+57158\n }}\n}}\n"
    ))
    .unwrap();
    assert_eq!(c.zones, [n("sub.example.org.")]);
    assert_eq!(c.capacity, DEFAULT_CAPACITY);
}

#[test]
fn errors_name_position() {
    let e = conf("example.org {\n dnssec {\n  key file /nonexistent/Kx\n }\n}\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Corefile:3:12: key: open /nonexistent/Kx.key:"),
        "{e}"
    );
    let e = conf(&format!(
        "example.org {{\n dnssec example.net {{\n  key file {KEYS}Kexample.org.+013+57158\n }}\n}}\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:2:2: dnssec: key example.org. (keyid: 57158) can not sign any of the zones"
    );
    let e = conf("example.org {\n dnssec {\n  cache_capacity lots\n }\n}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:3:18: cache_capacity: strconv.Atoi: parsing \"lots\": invalid syntax"
    );
    let e = conf("example.org {\n dnssec {\n  key aws_secretsmanager K\n }\n}\n").unwrap_err();
    assert!(e
        .to_string()
        .starts_with("Corefile:3:7: key: key aws_secretsmanager is not supported"));
    let e = conf("example.org {\n dnssec {\n  key\n }\n}\n").unwrap_err();
    assert!(e
        .to_string()
        .starts_with("Corefile:3:3: key: Wrong argument count"));
    let e = conf("example.org {\n dnssec {\n  bogus\n }\n}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:3:3: bogus: unknown property 'bogus'"
    );
    // A malformed key file: the key file's line and the directive's position.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("Kexample.org.+013+57158");
    let stem = base.display().to_string();
    std::fs::copy(
        format!("{KEYS}Kexample.org.+013+57158.key"),
        format!("{stem}.key"),
    )
    .unwrap();
    std::fs::write(
        format!("{stem}.private"),
        "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: %%%\n",
    )
    .unwrap();
    let e = conf(&format!(
        "example.org {{\n dnssec {{\n  key file {stem}\n }}\n}}\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Corefile:3:12: key: {stem}.private:3:13: PrivateKey: not valid base64")
    );
}

fn signer(keys: &[&str], manual: &ManualClock) -> Signer {
    let keys = keys
        .iter()
        .map(|k| {
            Arc::new(crate::pkg::keyfile::read_key(&format!("{KEYS}{k}"), Path::new(".")).unwrap())
        })
        .collect();
    Signer::new(vec![n("example.org.")], keys, 100, manual.clock())
}

/// Series of their own per test (tests run in parallel and compare counts).
fn meter_of(test: &str) -> Meter {
    Meter::new(&format!("dns://:53-{test}"))
}

fn meter() -> Meter {
    meter_of("dnssec-misc")
}

fn soa() -> Record {
    Record::new(
        n("example.org."),
        300,
        RData::Soa(Soa {
            mname: n("ns.example.org."),
            rname: n("h.example.org."),
            serial: 1,
            refresh: 2,
            retry: 3,
            expire: 4,
            minimum: 60,
        }),
    )
}

fn reply(name: &str, t: RType) -> Message {
    let mut m = Message::reply_to(&Message::query(1, n(name), t));
    m.header.aa = true;
    m
}

/// Checks every RRSIG of `m` against the RRset it covers (same section, same owner).
fn all_verify(m: &Message, dnskey: &[u8]) -> usize {
    let mut count = 0;
    for section in [&m.answers, &m.authority, &m.additional] {
        for s in section.iter().filter(|r| r.rtype == RType::RRSIG) {
            let t = covered_type(s).unwrap();
            let set: Vec<Record> = section
                .iter()
                .filter(|r| r.rtype == t && r.name == s.name)
                .cloned()
                .collect();
            assert!(verify_rrsig(dnskey, s, &set), "{}", record_text(s));
            count += 1;
        }
    }
    count
}

fn head(r: &Record) -> RrsigHead {
    let RData::Unknown(d) = &r.data else { panic!() };
    RrsigHead::parse(d).unwrap().0
}

#[test]
fn positive_answers_are_signed_per_rrset_with_cache_hits() {
    let manual = ManualClock::new();
    let s = signer(&["Kexample.org.+013+57158"], &manual);
    let m0 = meter_of("positive");
    let (h0, mi0) = (m0.hits.get(), m0.misses.get());
    let mut m = reply("www.example.org.", RType::A);
    for i in 1..=2 {
        m.answers.push(Record::new(
            n("www.example.org."),
            120,
            RData::A(Ipv4Addr::new(192, 0, 2, i)),
        ));
    }
    m.authority.push(Record::new(
        n("example.org."),
        120,
        RData::Ns(n("ns.example.org.")),
    ));
    m.additional.push(Record::new(
        n("ns.example.org."),
        120,
        RData::A(Ipv4Addr::new(192, 0, 2, 53)),
    ));
    m.additional.push(Record::new(
        n("other.example.net."),
        120,
        RData::A(Ipv4Addr::new(192, 0, 2, 9)),
    ));
    let mut signed = m.clone();
    s.sign_message(&mut signed, &n("example.org."), &m0);
    assert_eq!(signed.answers.len(), 3);
    assert_eq!(signed.authority.len(), 2);
    assert_eq!(
        signed.additional.len(),
        3,
        "the name outside the zone is not signed"
    );
    let sig = &signed.answers[2];
    assert_eq!(sig.ttl, 120);
    let h = head(sig);
    let now = manual.clock().unix() as u32;
    assert_eq!((h.orig_ttl, h.labels, h.key_tag), (3600, 3, 57158));
    assert_eq!(h.signer, n("example.org."));
    assert_eq!(h.inception, now - 3 * 3600);
    assert_eq!(h.expiration, now + 8 * 86400);
    let key =
        crate::pkg::keyfile::read_key(&format!("{KEYS}Kexample.org.+013+57158"), Path::new("."))
            .unwrap();
    assert_eq!(all_verify(&signed, &key.rdata), 3);
    assert_eq!((m0.hits.get() - h0, m0.misses.get() - mi0), (0.0, 3.0));
    assert_eq!(s.cached(), 3);
    // Again with other TTLs: the cached signatures, their TTL the RRset's.
    let mut m2 = m.clone();
    for r in &mut m2.answers {
        r.ttl = 7;
    }
    s.sign_message(&mut m2, &n("example.org."), &m0);
    assert_eq!(m2.answers[2].ttl, 7);
    assert_eq!(head(&m2.answers[2]), h, "the same signature");
    assert_eq!((m0.hits.get() - h0, m0.misses.get() - mi0), (3.0, 3.0));
    // Six days on, the signature has 2 days left: made again.
    manual.advance(Duration::from_secs(6 * 86400 + 1));
    let mut m3 = m.clone();
    s.sign_message(&mut m3, &n("example.org."), &m0);
    assert_ne!(head(&m3.answers[2]), h);
    assert_eq!(m0.misses.get() - mi0, 6.0);
    // The sweep drops what is past 75%.
    manual.advance(Duration::from_secs(7 * 86400));
    s.sweep();
    assert_eq!(s.cached(), 0);
}

#[test]
fn nxdomain_becomes_nodata_with_a_black_lie() {
    let manual = ManualClock::new();
    let s = signer(&["Kexample.org.+015+04321"], &manual);
    let key =
        crate::pkg::keyfile::read_key(&format!("{KEYS}Kexample.org.+015+04321"), Path::new("."))
            .unwrap();
    let mut m = reply("Nope.example.org.", RType::A);
    m.set_rcode(Rcode::NXDOMAIN);
    m.authority.push(soa());
    s.sign_message(&mut m, &n("example.org."), &meter());
    assert_eq!(m.rcode(), Rcode::NOERROR);
    let text: Vec<String> = m.authority.iter().map(record_text).collect();
    assert_eq!(text.len(), 4, "{text:?}");
    assert!(text[1].starts_with("example.org.\t300\tIN\tRRSIG\tSOA 15 2 3600 "));
    assert!(text[2].starts_with("Nope.example.org.\t300\tIN\tRRSIG\tNSEC 15 3 3600 "));
    assert_eq!(
        text[3],
        "Nope.example.org.\t300\tIN\tNSEC\t\\000.Nope.example.org. HINFO TXT AAAA LOC SRV CERT SSHFP RRSIG NSEC TLSA HIP OPENPGPKEY SPF"
    );
    assert_eq!(all_verify(&m, &key.rdata), 2);
    // NODATA at the apex: the apex bitmap without the type asked.
    let mut m = reply("example.org.", RType::TXT);
    m.authority.push(soa());
    s.sign_message(&mut m, &n("example.org."), &meter());
    let RData::Unknown(d) = &m.authority[3].data else {
        panic!()
    };
    let (next, end) = sextant_zone::wire::name_at(d, 0).unwrap();
    assert_eq!(next.to_string(), "\\000.example.org.");
    let types = bitmap_types(&d[end..]).unwrap();
    assert!(!types.contains(&16) && types.contains(&48) && types.contains(&6));
    // A question for NSEC: the NSEC and its signature move to the answer.
    let mut m = reply("x.example.org.", RType::NSEC);
    m.set_rcode(Rcode::NXDOMAIN);
    m.authority.push(soa());
    s.sign_message(&mut m, &n("example.org."), &meter());
    assert!(m.authority.is_empty());
    assert_eq!(
        m.answers.iter().map(|r| r.rtype).collect::<Vec<_>>(),
        [RType::RRSIG, RType::NSEC]
    );
    // A negative answer with more than the SOA is left alone.
    let mut m = reply("y.example.org.", RType::A);
    m.set_rcode(Rcode::NXDOMAIN);
    m.authority.push(soa());
    m.authority.push(soa());
    s.sign_message(&mut m, &n("example.org."), &meter());
    assert_eq!((m.rcode(), m.authority.len()), (Rcode::NXDOMAIN, 2));
}

#[test]
fn delegations_get_signed_ds_or_an_nsec() {
    let manual = ManualClock::new();
    let s = signer(&["Kexample.org.+013+57158"], &manual);
    let mut m = reply("host.sub.example.org.", RType::A);
    m.header.aa = false;
    m.authority.push(Record::new(
        n("sub.example.org."),
        600,
        RData::Ns(n("ns.sub.example.org.")),
    ));
    s.sign_message(&mut m, &n("example.org."), &meter());
    assert_eq!(
        m.authority.iter().map(|r| r.rtype).collect::<Vec<_>>(),
        [RType::NS, RType::RRSIG, RType::NSEC]
    );
    let RData::Unknown(d) = &m.authority[2].data else {
        panic!()
    };
    let (next, _) = sextant_zone::wire::name_at(d, 0).unwrap();
    assert_eq!(next.to_string(), "host\\000.sub.example.org.");
    let mut m = reply("host.sub.example.org.", RType::A);
    m.authority.push(Record::new(
        n("sub.example.org."),
        600,
        RData::Ns(n("ns.sub.example.org.")),
    ));
    m.authority.push(Record::unknown(
        n("sub.example.org."),
        RType::DS,
        sextant_wire::Class::IN,
        600,
        vec![1, 2, 13, 2, 0xab],
    ));
    s.sign_message(&mut m, &n("example.org."), &meter());
    assert_eq!(covered_type(&m.authority[2]), Some(RType::DS));
    assert_eq!(m.authority.len(), 3);
}

#[test]
fn dnskey_at_the_apex_with_split_keys() {
    let manual = ManualClock::new();
    let s = signer(
        &["Kexample.org.+013+57158", "Kexample.org.+015+04321"],
        &manual,
    );
    let m = s.dnskey_reply(
        reply("example.org.", RType::DNSKEY),
        &n("example.org."),
        false,
        &meter(),
    );
    assert!(m.header.aa);
    assert_eq!(m.answers.len(), 2);
    let m = s.dnskey_reply(
        reply("example.org.", RType::DNSKEY),
        &n("example.org."),
        true,
        &meter(),
    );
    assert_eq!(m.answers.len(), 3, "signed by the KSK only");
    assert_eq!(head(&m.answers[2]).key_tag, 57158);
    assert_eq!(m.answers[2].ttl, 3600);
    let ksk =
        crate::pkg::keyfile::read_key(&format!("{KEYS}Kexample.org.+013+57158"), Path::new("."))
            .unwrap();
    assert_eq!(all_verify(&m, &ksk.rdata), 1);
    // Everything else by the ZSK.
    let mut a = reply("www.example.org.", RType::A);
    a.answers.push(Record::new(
        n("www.example.org."),
        60,
        RData::A(Ipv4Addr::new(192, 0, 2, 1)),
    ));
    s.sign_message(&mut a, &n("example.org."), &meter());
    assert_eq!(head(&a.answers[1]).key_tag, 4321);
}

#[test]
fn wire_replies_are_remembered_signed() {
    let manual = ManualClock::new();
    let s = signer(&["Kexample.org.+013+57158"], &manual);
    let m0 = meter_of("memo");
    let mut m = reply("www.example.org.", RType::A);
    m.answers.push(Record::new(
        n("www.example.org."),
        60,
        RData::A(Ipv4Addr::new(192, 0, 2, 1)),
    ));
    let w = m.to_wire();
    // Signs a copy in place, as the handler does with the reply's bytes.
    let sign = |b: &[u8]| {
        let mut v = b.to_vec();
        assert!(s.sign_wire(&mut v, &n("example.org."), &m0));
        v
    };
    let first = sign(&w);
    let (h, mi) = (m0.hits.get(), m0.misses.get());
    let mut w2 = w.clone();
    w2[0..2].copy_from_slice(&[0xbe, 0xef]);
    let second = sign(&w2);
    assert_eq!(&second[2..], &first[2..]);
    assert_eq!(&second[..2], &[0xbe, 0xef]);
    assert_eq!((m0.hits.get() - h, m0.misses.get() - mi), (1.0, 0.0));
    let back = Message::parse(&second).unwrap();
    assert_eq!(back.answers.len(), 2);
    let key =
        crate::pkg::keyfile::read_key(&format!("{KEYS}Kexample.org.+013+57158"), Path::new("."))
            .unwrap();
    assert_eq!(all_verify(&back, &key.rdata), 1);
    // Other data: signed anew.
    let mut m2 = m.clone();
    m2.answers[0].data = RData::A(Ipv4Addr::new(192, 0, 2, 2));
    let third = sign(&m2.to_wire());
    assert_ne!(&third[2..], &first[2..]);
    // Bytes that do not decode are left alone.
    let mut junk = vec![0u8; 11];
    assert!(!s.sign_wire(&mut junk, &n("example.org."), &m0));
    assert_eq!(junk, vec![0u8; 11]);
    // Six days later the remembered reply is signed again.
    manual.advance(Duration::from_secs(6 * 86400 + 1));
    let fourth = sign(&w);
    assert_ne!(&fourth[2..], &first[2..]);
}
