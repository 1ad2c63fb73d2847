//! Unit tests of the `geoip` plugin's parsing, ECS decoding and number formatting. Lookups in
//! real databases are tested end to end (tests/geoip.rs, databases written by `mmdb-writer`).

use super::*;

fn lines_of(text: &str) -> Vec<Directive> {
    let cf = sextant_corefile::parse_str(
        "Corefile",
        &format!(". {{\n{text}\n}}\n"),
        std::path::Path::new("."),
    )
    .unwrap();
    cf.blocks[0].directives.clone()
}

fn parse_str(text: &str) -> Result<(String, bool), Error> {
    let ds = lines_of(text);
    let refs: Vec<&Directive> = ds.iter().collect();
    parse(&refs).map(|(t, e)| (t.text.clone(), e))
}

fn err(text: &str) -> (u32, u32, String) {
    let e = parse_str(text).unwrap_err();
    assert_eq!(e.directive.as_deref(), Some("geoip"), "{e:?}");
    (e.pos.line, e.pos.col, e.msg)
}

#[test]
fn setup_as_coredns() {
    assert_eq!(
        parse_str("geoip /db/GeoLite2-City.mmdb").unwrap(),
        ("/db/GeoLite2-City.mmdb".into(), false)
    );
    assert_eq!(
        parse_str("geoip city.mmdb {\n edns-subnet\n}").unwrap(),
        ("city.mmdb".into(), true)
    );
    // Repeating the option is harmless.
    assert_eq!(
        parse_str("geoip city.mmdb {\n edns-subnet\n edns-subnet\n}").unwrap(),
        ("city.mmdb".into(), true)
    );
    let arg = "Wrong argument count or unexpected line ending after";
    assert_eq!(err("geoip"), (2, 1, format!("{arg} 'geoip'")));
    assert_eq!(err("geoip a b"), (2, 9, format!("{arg} 'b'")));
    assert_eq!(err("geoip a b c"), (2, 11, format!("{arg} 'c'")));
    assert_eq!(
        err("geoip a {\n bogus\n}"),
        (3, 2, "unknown property \"bogus\"".into())
    );
    assert_eq!(
        err("geoip a {\n edns-subnet foo\n}"),
        (3, 14, "unknown property \"foo\"".into())
    );
    assert_eq!(
        err("geoip a\ngeoip b"),
        (
            3,
            7,
            "configuring multiple databases is not supported".into()
        )
    );
}

#[test]
fn unreadable_databases_are_refused_with_coredns_words() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.mmdb");
    let m = missing.to_str().unwrap();
    assert_eq!(
        open(m, false).err().unwrap(),
        format!("failed to open database file: open {m}: no such file or directory")
    );
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database at all").unwrap();
    let e = open(junk.to_str().unwrap(), false).err().unwrap();
    assert!(
        e.starts_with("failed to open database file: error opening database: "),
        "{e}"
    );
    let e = open(dir.path().to_str().unwrap(), false).err().unwrap();
    assert!(e.ends_with(": is a directory"), "{e}");
}

#[test]
fn database_types_as_geoip2_golang() {
    assert_eq!(schemas("GeoLite2-City"), Some((true, false)));
    assert_eq!(schemas("GeoLite2-Country"), Some((true, false)));
    assert_eq!(schemas("DBIP-City-Lite"), Some((true, false)));
    assert_eq!(schemas("GeoIP2-Enterprise"), Some((true, false)));
    assert_eq!(schemas("GeoLite2-ASN"), Some((false, true)));
    assert_eq!(schemas("GeoIP2-ISP"), Some((false, true)));
    assert_eq!(schemas("GeoIP2-Domain"), Some((false, false)));
    assert_eq!(schemas("UnknownDbType"), None);
    assert_eq!(schemas("geolite2-city"), None);
}

#[test]
fn ecs_addresses_as_miekg_decodes_them() {
    let v4 = |a: [u8; 4]| Some(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()));
    // Family 1, /24: the address is mapped into IPv6 and zero-filled.
    assert_eq!(ecs_address(&[0, 1, 24, 0, 81, 2, 69]), v4([81, 2, 69, 0]));
    assert_eq!(
        ecs_address(&[0, 1, 32, 0, 81, 2, 69, 142]),
        v4([81, 2, 69, 142])
    );
    // Family 0 (dig +subnet=0): 0.0.0.0, mapped.
    assert_eq!(ecs_address(&[0, 0, 0, 0]), v4([0, 0, 0, 0]));
    assert_eq!(ecs_address(&[0, 0, 8, 0]), None);
    // Family 2.
    let mut v6 = vec![0, 2, 48, 0];
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    assert_eq!(
        ecs_address(&v6),
        Some(IpAddr::V6("2001:db8:1::".parse().unwrap()))
    );
    // Refused by miekg/dns: bad family, prefix too long, too short.
    assert_eq!(ecs_address(&[0, 3, 0, 0]), None);
    assert_eq!(ecs_address(&[0, 1, 33, 0, 1, 2, 3, 4]), None);
    assert_eq!(ecs_address(&[0, 2, 129, 0]), None);
    assert_eq!(ecs_address(&[0, 1, 0]), None);
}

#[test]
fn floats_as_go_formats_them() {
    assert_eq!(go_float(52.2242), "52.2242");
    assert_eq!(go_float(-89.6501), "-89.6501");
    assert_eq!(go_float(0.0), "0");
    assert_eq!(go_float(1e21), "1000000000000000000000");
    assert_eq!(go_float(1e-7), "0.0000001");
    assert_eq!(go_float(f64::INFINITY), "+Inf");
    assert_eq!(go_float(f64::NEG_INFINITY), "-Inf");
    assert_eq!(go_float(f64::NAN), "NaN");
}

/// The databases of tests/geoip_dbs.py (written with `mmdb-writer`).
fn dbs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/geoip_dbs.py"))
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "writing the geoip databases failed (python3 -m pip install -r requirements-test.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn labels(g: &GeoIp, client: &str, ecs: Option<&[u8]>) -> Metadata {
    let mut q = sextant_wire::Message::query(
        1,
        sextant_wire::Name::parse("a.example.").unwrap(),
        sextant_wire::RType::A,
    );
    if let Some(data) = ecs {
        let mut e = sextant_wire::Edns::new(1232);
        e.options.push(sextant_wire::EdnsOption {
            code: ECS,
            data: data.to_vec(),
        });
        q.edns = Some(e);
    }
    let req = Request::new(q, client.parse().unwrap(), crate::plugin::Proto::Udp);
    let mut md = Metadata::default();
    g.metadata(&req, &mut md);
    md
}

#[test]
fn lookups_by_client_and_subnet() {
    let dir = dbs();
    let city = open(dir.path().join("city.mmdb").to_str().unwrap(), true).unwrap();
    let md = labels(&city, "127.0.0.1:5", None);
    assert_eq!(md.get("geoip/city/name"), Some("Exampleshire"));
    assert_eq!(md.get("geoip/asn/number"), None);
    // An IPv4-mapped client address is the IPv4 address.
    let md = labels(&city, "[::ffff:127.0.0.2]:5", None);
    assert_eq!(md.get("geoip/city/name"), Some("Springfield"));
    assert_eq!(md.get("geoip/subdivisions/code"), Some("IL,"));
    let md = labels(&city, "127.0.0.1:5", Some(&[0, 1, 32, 0, 81, 2, 69, 142]));
    assert_eq!(md.get("geoip/postalcode"), Some("CB4"));
    assert_eq!(md.get("geoip/latitude"), Some("52.2242"));
    // Without `edns-subnet` the option is ignored.
    let plain = open(dir.path().join("city.mmdb").to_str().unwrap(), false).unwrap();
    let md = labels(&plain, "127.0.0.1:5", Some(&[0, 1, 32, 0, 81, 2, 69, 142]));
    assert_eq!(md.get("geoip/city/name"), Some("Exampleshire"));
    // An option miekg/dns would refuse: the client's address.
    let md = labels(&city, "127.0.0.1:5", Some(&[0, 7, 0, 0]));
    assert_eq!(md.get("geoip/city/name"), Some("Exampleshire"));
    // IPv4-only database: an IPv6 client cannot be looked up, so no label is set.
    let country = open(dir.path().join("country.mmdb").to_str().unwrap(), false).unwrap();
    assert_eq!(labels(&country, "[::1]:5", None), Metadata::default());
    assert_eq!(
        labels(&country, "127.0.0.1:5", None).get("geoip/country/code"),
        Some("NL")
    );
}

/// A broken database file never panics: every truncation and many single-byte changes of a
/// real one are refused at setup or, when they still open, looked up without a panic.
#[test]
fn damaged_databases_never_panic() {
    let dir = dbs();
    for name in ["city.mmdb", "asn.mmdb", "country.mmdb"] {
        let good = std::fs::read(dir.path().join(name)).unwrap();
        let ask = |g: &GeoIp| {
            for c in [
                "127.0.0.1:5",
                "127.0.0.2:5",
                "[2001:db8::1]:5",
                "[::1]:5",
                "10.0.0.1:5",
            ] {
                let _ = labels(g, c, None);
            }
            let _ = labels(g, "127.0.0.1:5", Some(&[0, 1, 32, 0, 81, 2, 69, 142]));
        };
        for n in 0..good.len() {
            if let Ok(g) = from_bytes(good[..n].to_vec(), name, true) {
                ask(&g);
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bad = good.clone();
            let at = (seed % bad.len() as u64) as usize;
            bad[at] ^= (seed >> 32) as u8 | 1;
            if let Ok(g) = from_bytes(bad, name, true) {
                ask(&g);
            }
        }
    }
}
