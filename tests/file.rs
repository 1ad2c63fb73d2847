//! The `file` plugin end to end: answers over UDP and TCP checked whole, a zone signed by
//! `ldns-signzone` served with DNSSEC records under DO, reload on a new serial, a broken file on
//! reload keeping the old zone (logged with file:line), `-check` naming both the Corefile and
//! the zone file position, fallthrough, and (with `COREDNS_BIN`) the same answers as CoreDNS.

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
$TTL 3600
@ SOA ns1 hostmaster 2024010101 7200 3600 1209600 300
@ NS ns1
@ NS ns2.example.net.
@ MX 10 mail
ns1 A 192.0.2.53
www A 192.0.2.1
www AAAA 2001:db8::1
mail A 192.0.2.25
alias CNAME www
outside CNAME target.example.net.
*.wild 60 TXT \"wildcard\"
sub NS ns.sub
ns.sub A 192.0.2.99
a.b.c TXT \"deep\"
_sip._tcp SRV 10 60 5060 www
";

fn q(name: &str, t: RecordType) -> Query {
    Query::new(name, t).rd(false)
}

#[test]
fn answers_whole_over_udp_and_tcp() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    file db.example.org\n}}\nexample.net:{port} {{\n    hosts {{\n        198.51.100.7 target.example.net\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org", ZONE)
        .start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    for over_tcp in [false, true] {
        let ask = |query: &Query| {
            if over_tcp {
                tcp(a, query, T).unwrap()
            } else {
                udp(a, query, T).unwrap()
            }
        };
        let r = ask(&q("www.example.org.", RecordType::A));
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr,aa")
        );
        assert_eq!(r.answers(), ["www.example.org. 3600 IN A 192.0.2.1"]);
        assert_eq!(
            r.authority(),
            [
                "example.org. 3600 IN NS ns1.example.org.",
                "example.org. 3600 IN NS ns2.example.net."
            ]
        );
        assert!(r.additional().is_empty());
        // Another spelling of the question: owners stay as stored.
        let r = ask(&q("WWW.Example.ORG.", RecordType::AAAA));
        assert_eq!(r.answers(), ["www.example.org. 3600 IN AAAA 2001:db8::1"]);
        let r = ask(&q("example.org.", RecordType::MX));
        assert_eq!(
            r.answers(),
            ["example.org. 3600 IN MX 10 mail.example.org."]
        );
        assert_eq!(r.additional(), ["mail.example.org. 3600 IN A 192.0.2.25"]);
        let r = ask(&q("_sip._tcp.example.org.", RecordType::SRV));
        assert_eq!(
            r.additional(),
            [
                "www.example.org. 3600 IN A 192.0.2.1",
                "www.example.org. 3600 IN AAAA 2001:db8::1"
            ]
        );
        let r = ask(&q("alias.example.org.", RecordType::A));
        assert_eq!(
            r.answers(),
            [
                "alias.example.org. 3600 IN CNAME www.example.org.",
                "www.example.org. 3600 IN A 192.0.2.1"
            ]
        );
        // A CNAME target outside the zone is resolved through the server (the hosts block).
        let r = ask(&q("outside.example.org.", RecordType::A));
        assert_eq!(
            r.answers(),
            [
                "outside.example.org. 3600 IN CNAME target.example.net.",
                "target.example.net. 3600 IN A 198.51.100.7"
            ]
        );
        let r = ask(&q("x.y.wild.example.org.", RecordType::TXT));
        assert_eq!(r.answers(), ["x.y.wild.example.org. 60 IN TXT wildcard"]);
        // Delegation: not authoritative, NS in authority, glue.
        let r = ask(&q("host.sub.example.org.", RecordType::A));
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr")
        );
        assert!(r.answers().is_empty());
        assert_eq!(
            r.authority(),
            ["sub.example.org. 3600 IN NS ns.sub.example.org."]
        );
        assert_eq!(r.additional(), ["ns.sub.example.org. 3600 IN A 192.0.2.99"]);
        let soa = "example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300";
        let r = ask(&q("nope.example.org.", RecordType::A));
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NXDOMAIN", "qr,aa")
        );
        assert_eq!(r.authority(), [soa]);
        let r = ask(&q("www.example.org.", RecordType::TXT));
        assert_eq!((r.rcode_name().as_str(), r.answers().len()), ("NOERROR", 0));
        assert_eq!(r.authority(), [soa]);
        // Empty non-terminal: NODATA.
        let r = ask(&q("b.c.example.org.", RecordType::A));
        assert_eq!(
            (r.rcode_name().as_str(), r.authority().len()),
            ("NOERROR", 1)
        );
        // No transfer plugin: transfers refused.
        let r = ask(&q("example.org.", RecordType::AXFR));
        assert_eq!(r.rcode_name(), "REFUSED");
    }
}

#[test]
fn signed_zone_answers_with_dnssec_records_under_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("db.example.org"), ZONE).unwrap();
    let key = Command::new("ldns-keygen")
        .current_dir(d)
        .args(["-a", "ECDSAP256SHA256", "-k", "example.org"])
        .output()
        .expect("ldns-keygen (ldnsutils) is installed");
    assert!(key.status.success(), "{key:?}");
    let ksk = String::from_utf8_lossy(&key.stdout).trim().to_string();
    let out = Command::new("ldns-signzone")
        .current_dir(d)
        .args(["-o", "example.org.", "db.example.org", &ksk])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let signed = std::fs::read_to_string(d.join("db.example.org.signed")).unwrap();
    let port = free_port();
    let cf = format!("example.org:{port} {{\n    file db.example.org.signed\n}}\n");
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org.signed", &signed)
        .start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let types = |v: Vec<String>| {
        v.iter()
            .map(|l| l.split(' ').nth(3).unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let r = udp(
        a,
        &q("www.example.org.", RecordType::A).edns(1232).do_bit(),
        T,
    )
    .unwrap();
    assert_eq!(types(r.answers()), ["A", "RRSIG"]);
    assert_eq!(types(r.authority()), ["NS", "NS", "RRSIG"]);
    assert!(r.edns().unwrap().do_bit);
    // Without DO: no DNSSEC records.
    let r = udp(a, &q("www.example.org.", RecordType::A).edns(1232), T).unwrap();
    assert_eq!(types(r.answers()), ["A"]);
    assert_eq!(types(r.authority()), ["NS", "NS"]);
    let r = udp(
        a,
        &q("example.org.", RecordType::DNSKEY).edns(1232).do_bit(),
        T,
    )
    .unwrap();
    assert_eq!(types(r.answers()), ["DNSKEY", "RRSIG"]);
    // NXDOMAIN: SOA, its signature, the NSEC covering the name and the wildcard NSEC.
    let r = tcp(
        a,
        &q("nope.example.org.", RecordType::A).edns(1232).do_bit(),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    let t = types(r.authority());
    assert_eq!(&t[..2], ["SOA", "RRSIG"]);
    assert!(
        t.iter().filter(|x| *x == "NSEC").count() >= 1 && t.len() >= 4,
        "{:?}",
        r.authority()
    );
    // NODATA: SOA and the name's own NSEC, signed.
    let r = udp(
        a,
        &q("www.example.org.", RecordType::TXT).edns(1232).do_bit(),
        T,
    )
    .unwrap();
    assert_eq!(types(r.authority()), ["SOA", "RRSIG", "NSEC", "RRSIG"]);
    assert!(
        r.authority()[2].starts_with("www.example.org. "),
        "{:?}",
        r.authority()
    );
}

#[test]
fn reload_on_new_serial_and_broken_file_keeps_the_old_zone() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    file db.example.org {{\n        reload 1s\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org", ZONE)
        .start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let changed = ZONE
        .replace("2024010101", "2024010102")
        .replace("www A 192.0.2.1", "www A 192.0.2.2");
    s.write_file("db.example.org", &changed).unwrap();
    s.wait_for_line("Successfully reloaded zone \"example.org.\" in \"db.example.org\" with 2024010102 SOA serial", Duration::from_secs(10)).unwrap();
    assert_eq!(
        udp(a, &q("www.example.org.", RecordType::A), T)
            .unwrap()
            .answers(),
        ["www.example.org. 3600 IN A 192.0.2.2"]
    );
    // A broken file with a new serial: the old zone stays, the error names file:line:column.
    let broken = changed
        .replace("2024010102", "2024010103")
        .replace("mail A 192.0.2.25", "mail A 192.0.2");
    s.write_file("db.example.org", &broken).unwrap();
    let line = s
        .wait_for_line("Parsing zone \"example.org.\"", Duration::from_secs(10))
        .unwrap();
    assert!(
        line.contains("[ERROR] plugin/file:")
            && line.contains("db.example.org:10:8: bad A A: \"192.0.2\""),
        "{line}"
    );
    assert_eq!(
        udp(a, &q("www.example.org.", RecordType::A), T)
            .unwrap()
            .answers(),
        ["www.example.org. 3600 IN A 192.0.2.2"]
    );
    // The same serial: nothing is read.
    let n = s.count_lines("Successfully reloaded");
    s.write_file("db.example.org", &changed).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(s.count_lines("Successfully reloaded"), n);
}

#[test]
fn check_names_corefile_and_zone_file_positions() {
    let cf = "example.org {\n    file db.example.org\n}\n";
    let b = Sextant::builder(bin(), cf)
        .file(
            "db.example.org",
            "$TTL 60\n@ SOA ns h 1 2 3 4 5\nwww A 1.2.3\n",
        )
        .arg("-check");
    let (code, out, err) = Sextant::run_to_end(b, Duration::from_secs(20)).unwrap();
    assert_ne!(code, 0);
    let text = format!("{out}{err}");
    assert!(text.contains(":2:5: file: failed to parse file \"db.example.org\" for origin example.org. with error db.example.org:3:7: bad A A: \"1.2.3\""), "{text}");
    // A missing file with reload 0 is an error; with reload it is retried.
    let (code, out, err) = Sextant::check(
        bin(),
        "example.org {\n    file nope.db {\n        reload 0\n    }\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("file: open nope.db"),
        "{out}{err}"
    );
    let (code, out, err) = Sextant::check(bin(), "example.org {\n    file nope.db\n}\n").unwrap();
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn fallthrough_passes_missing_names_on() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    file db.example.org {{\n        fallthrough\n    }}\n    whoami\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org", ZONE)
        .start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    // A name of the zone is answered by file; a missing one falls through to whoami.
    let r = udp(a, &q("www.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), ["www.example.org. 3600 IN A 192.0.2.1"]);
    let r = udp(a, &q("nope.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.authority().is_empty());
    assert_eq!(
        r.additional().len(),
        2,
        "whoami's answer: {:?}",
        r.additional()
    );
    // NODATA of an existing name does not fall through (an answer-less Success is only an ENT).
    let r = udp(a, &q("www.example.org.", RecordType::TXT), T).unwrap();
    assert_eq!(r.authority().len(), 1);
}

/// With `COREDNS_BIN` set, CoreDNS and Sextant serve the same zone and must give the same
/// answers (rcode, flags, every section in order, TTLs).
#[test]
fn same_answers_as_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!("same_answers_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run");
        return;
    };
    let (p1, p2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db.example.org"), ZONE).unwrap();
    std::fs::write(
        dir.path().join("Corefile"),
        format!("example.org:{p1} {{\n    file db.example.org\n}}\n"),
    )
    .unwrap();
    let mut child = Command::new(coredns)
        .current_dir(dir.path())
        .arg("-conf")
        .arg("Corefile")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut s = Sextant::builder(
        bin(),
        &format!("example.org:{p2} {{\n    file db.example.org\n}}\n"),
    )
    .file("db.example.org", ZONE)
    .start();
    s.wait_dns(local(p2), Duration::from_secs(10)).unwrap();
    wait_dns(local(p1), Duration::from_secs(10)).unwrap();
    for (name, t) in [
        ("www.example.org.", RecordType::A),
        ("example.org.", RecordType::SOA),
        ("example.org.", RecordType::NS),
        ("example.org.", RecordType::MX),
        ("alias.example.org.", RecordType::A),
        ("x.wild.example.org.", RecordType::TXT),
        ("host.sub.example.org.", RecordType::A),
        ("sub.example.org.", RecordType::DS),
        ("nope.example.org.", RecordType::A),
        ("b.c.example.org.", RecordType::A),
        ("_sip._tcp.example.org.", RecordType::SRV),
        ("www.example.org.", RecordType::ANY),
    ] {
        let a = udp(local(p1), &q(name, t).edns(1232), T).unwrap();
        let b = udp(local(p2), &q(name, t).edns(1232), T).unwrap();
        let view = |r: &Reply| {
            (
                r.rcode_name(),
                r.flags(),
                r.answers(),
                r.authority(),
                r.additional(),
            )
        };
        assert_eq!(view(&a), view(&b), "{name} {t:?}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
