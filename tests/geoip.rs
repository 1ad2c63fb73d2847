//! End-to-end tests of the `geoip` plugin over real sockets, with City, Country and ASN
//! databases written by the `mmdb-writer` package (tests/geoip_dbs.py): the `geoip/*` labels
//! of queries from loopback addresses and with EDNS Client Subnet options, as `template`
//! answers them (`.Meta`) and `log` prints them (`{/label}`); `view` blocks chosen by
//! country; nothing per query without `metadata`; bad databases and options refused at start
//! and on reload. With `COREDNS_BIN` the same Corefiles run on CoreDNS and must agree.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The databases of tests/geoip_dbs.py, in a directory that lives as long as the value.
struct Dbs(tempfile::TempDir);

impl Dbs {
    fn write() -> Dbs {
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
        Dbs(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

/// ECS option data (RFC 7871) for `addr/prefix`, the address cut to the prefix's bytes.
fn ecs(addr: &str, prefix: u8) -> Vec<u8> {
    let ip: std::net::IpAddr = addr.parse().unwrap();
    let (family, bytes): (u16, Vec<u8>) = match ip {
        std::net::IpAddr::V4(a) => (1, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (2, a.octets().to_vec()),
    };
    let n = usize::from(prefix).div_ceil(8);
    let mut d = family.to_be_bytes().to_vec();
    d.extend_from_slice(&[prefix, 0]);
    d.extend_from_slice(&bytes[..n]);
    d
}

/// One query of a test: where it comes from and the ECS option it carries.
struct Case {
    src: &'static str,
    ecs: Option<(&'static str, u8)>,
}

const fn from(src: &'static str) -> Case {
    Case { src, ecs: None }
}

const fn subnet(addr: &'static str, prefix: u8) -> Case {
    Case {
        src: "127.0.0.1:0",
        ecs: Some((addr, prefix)),
    }
}

fn query(name: &str, qtype: RecordType, c: &Case) -> Query {
    let q = Query::new(name, qtype).edns(1232);
    match c.ecs {
        Some((a, p)) => q.edns_option(8, &ecs(a, p)),
        None => q,
    }
}

/// Every label, as `log` prints it.
const LABELS: &str = "{/geoip/city/name}|{/geoip/country/code}|{/geoip/country/name}|\
{/geoip/country/is_in_european_union}|{/geoip/continent/code}|{/geoip/continent/name}|\
{/geoip/latitude}|{/geoip/longitude}|{/geoip/timezone}|{/geoip/postalcode}|\
{/geoip/subdivisions/code}|{/geoip/asn/number}|{/geoip/asn/org}";

/// A block that logs every label and answers TXT with some of them through `.Meta`.
fn labels_corefile(port: u16, db: &str, metadata: bool) -> String {
    let md = if metadata { "metadata" } else { "" };
    format!(
        r#".:{port} {{
    geoip {db} {{
        edns-subnet
    }}
    {md}
    log . "META {{name}} {LABELS}"
    template IN TXT {{
        answer "{{{{ .Name }}}} 5 IN TXT \"{{{{ .Meta `geoip/city/name` }}}}|{{{{ .Meta `geoip/country/code` }}}}|{{{{ .Meta `geoip/asn/number` }}}}\""
    }}
}}
"#
    )
}

fn start_with(binary: &Path, corefile: &str, port: u16, dbs: &Dbs) -> Sextant {
    let mut b = Sextant::builder(binary, corefile);
    for f in ["city.mmdb", "country.mmdb", "asn.mmdb"] {
        b = b.file(f, dbs.bytes(f));
    }
    let mut s = b.start();
    s.wait_dns(v4(port), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("server answers: {e}\n{}", s.output()));
    s
}

/// The queries of the label tests: loopback clients, then ECS options of every kind.
const CASES: &[Case] = &[
    from("127.0.0.1:0"),
    from("127.0.0.2:0"),
    subnet("81.2.69.142", 32),
    subnet("198.51.100.7", 24),
    // In the databases' IPv4 data but without an IPv4-mapped alias: not found.
    subnet("203.0.113.5", 24),
    subnet("2001:db8::1", 48),
    subnet("10.1.1.1", 8),
    subnet("::1", 128),
    // dig's +subnet=0: family 0, prefix 0.
    Case {
        src: "127.0.0.1:0",
        ecs: Some(("0.0.0.0", 0)),
    },
];

/// (TXT answer, log line) of every case, against the server on `port` whose output is `s`.
fn observe(s: &Sextant, port: u16) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let name = format!("q{i}.example.");
        let mut q = query(&name, RecordType::TXT, c);
        if c.ecs == Some(("0.0.0.0", 0)) {
            q = Query::new(&name, RecordType::TXT)
                .edns(1232)
                .edns_option(8, &[0, 0, 0, 0]);
        }
        let r = udp_from(c.src.parse().unwrap(), v4(port), &q, T)
            .unwrap_or_else(|e| panic!("{name} from {}: {e}", c.src));
        assert_eq!(r.rcode_name(), "NOERROR", "{name}");
        assert_eq!(r.flags(), "qr,aa,rd", "{name}");
        assert!(r.authority().is_empty() && r.additional().is_empty());
        let answers = r.answers();
        assert_eq!(answers.len(), 1, "{name}: {answers:?}");
        let line = s
            .wait_for_line(&format!("META {name} "), T)
            .unwrap_or_else(|e| panic!("log line of {name}: {e}\n{}", s.output()));
        let line = line
            .split_once(&format!("META {name} "))
            .unwrap()
            .1
            .to_string();
        out.push((answers[0].clone(), line));
    }
    out
}

fn expect(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .enumerate()
        .map(|(i, (txt, log))| (format!("q{i}.example. 5 IN TXT {txt}"), log.to_string()))
        .collect()
}

#[test]
fn city_database_labels_reach_template_and_log() {
    let dbs = Dbs::write();
    let port = free_port();
    let s = start_with(bin(), &labels_corefile(port, "city.mmdb", true), port, &dbs);
    let empty = "|||false||||||||-|-";
    assert_eq!(
        observe(&s, port),
        expect(&[
            (
                "Exampleshire|NL|",
                "Exampleshire|NL|Netherlands|true|EU|Europe|52.3676|4.9041|Europe/Amsterdam|1012|NH|-|-"
            ),
            (
                "Springfield|US|",
                "Springfield|US|United States|false|NA|North America|39.7817|-89.6501|America/Chicago||IL,|-|-"
            ),
            (
                "Cambridge|GB|",
                "Cambridge|GB|United Kingdom|true|EU|Europe|52.2242|0.1315|Europe/London|CB4|ENG,CAM|-|-"
            ),
            (
                "Springfield|US|",
                "Springfield|US|United States|false|NA|North America|39.7817|-89.6501|America/Chicago||IL,|-|-"
            ),
            ("||", empty),
            (
                "Sixton|DE|",
                "Sixton|DE|Germany|true|EU|Europe|50.1109|8.6821|Europe/Berlin|||-|-"
            ),
            ("||", empty),
            ("||", empty),
            ("||", empty),
        ])
    );
}

#[test]
fn asn_database_labels() {
    let dbs = Dbs::write();
    let port = free_port();
    let s = start_with(bin(), &labels_corefile(port, "asn.mmdb", true), port, &dbs);
    let none = "-|-|-|-|-|-|-|-|-|-|-";
    assert_eq!(
        observe(&s, port),
        expect(&[
            ("||64500", &format!("{none}|64500|Loopback Networks")),
            ("||64502", &format!("{none}|64502|Second Loopback")),
            ("||12345", &format!("{none}|12345|Test ASN Organization")),
            // Not in the database: the labels are set, to zero and empty.
            ("||0", &format!("{none}|0|")),
            ("||0", &format!("{none}|0|")),
            // A record without an organization.
            ("||64501", &format!("{none}|64501|")),
            ("||0", &format!("{none}|0|Not routed")),
            ("||0", &format!("{none}|0|")),
            ("||0", &format!("{none}|0|")),
        ])
    );
}

#[test]
fn ipv4_only_country_database_cannot_look_up_subnets() {
    let dbs = Dbs::write();
    let port = free_port();
    let s = start_with(
        bin(),
        &labels_corefile(port, "country.mmdb", true),
        port,
        &dbs,
    );
    // An ECS address is looked up as an IPv6 (IPv4-mapped) address, which an IPv4-only
    // database refuses: no label at all, as in CoreDNS.
    let unset = ("||", "-|-|-|-|-|-|-|-|-|-|-|-|-");
    assert_eq!(
        observe(&s, port),
        expect(&[
            ("|NL|", "|NL|Netherlands|true|EU|Europe||||||-|-"),
            ("|NL|", "|NL|Netherlands|true|EU|Europe||||||-|-"),
            unset,
            unset,
            unset,
            unset,
            unset,
            unset,
            unset,
        ])
    );
}

#[test]
fn without_metadata_nothing_is_looked_up() {
    let dbs = Dbs::write();
    let port = free_port();
    let s = start_with(
        bin(),
        &labels_corefile(port, "city.mmdb", false),
        port,
        &dbs,
    );
    let r = udp(v4(port), &Query::new("a.example.", RecordType::TXT), T).unwrap();
    assert_eq!(r.answers(), vec!["a.example. 5 IN TXT ||"]);
    let line = s.wait_for_line("META a.example. ", T).unwrap();
    assert!(
        line.ends_with("META a.example. -|-|-|-|-|-|-|-|-|-|-|-|-"),
        "{line}"
    );
}

/// The same Corefiles and queries on the real CoreDNS: every answer and log line agrees.
#[test]
fn labels_match_coredns() {
    let Some(coredns) = coredns_bin() else {
        eprintln!("skipping labels_match_coredns: COREDNS_BIN is not set");
        return;
    };
    let dbs = Dbs::write();
    for db in ["city.mmdb", "asn.mmdb", "country.mmdb"] {
        for md in [true, false] {
            let (p1, p2) = (free_port(), free_port());
            let ours = start_with(bin(), &labels_corefile(p1, db, md), p1, &dbs);
            let theirs = start_with(&coredns, &labels_corefile(p2, db, md), p2, &dbs);
            assert_eq!(
                observe(&ours, p1),
                observe(&theirs, p2),
                "{db}, metadata {md}"
            );
        }
    }
}

const ZONE: &str = "$TTL 60
@ IN SOA ns.example.com. hostmaster.example.com. 1 7200 3600 1209600 60
@ IN NS ns.example.com.
";

/// Three blocks for example.com: Dutch clients, American clients, everyone else; each
/// answers www with its own address and logs its view's name.
fn views_corefile(port: u16) -> String {
    let block = |view: &str, expr: &str, zone: &str| {
        format!(
            r#"example.com:{port} {{
    view {view} {{
        expr {expr}
    }}
    geoip city.mmdb {{
        edns-subnet
    }}
    metadata
    log . "VIEW {{name}} {{/view/name}} {{/geoip/country/code}}"
    file {zone} example.com
}}
"#
        )
    };
    block("nl", "metadata('geoip/country/code') == 'NL'", "nl.db")
        + &block(
            "us",
            "metadata('geoip/country/code') == 'US' && metadata('geoip/subdivisions/code') startsWith 'IL'",
            "us.db",
        )
        + &format!("example.com:{port} {{\n    file other.db example.com\n}}\n")
}

fn start_views(binary: &Path, port: u16, dbs: &Dbs) -> Sextant {
    let mut s = Sextant::builder(binary, &views_corefile(port))
        .file("city.mmdb", dbs.bytes("city.mmdb"))
        .file("nl.db", format!("{ZONE}www IN A 192.0.2.31\n"))
        .file("us.db", format!("{ZONE}www IN A 192.0.2.1\n"))
        .file("other.db", format!("{ZONE}www IN A 192.0.2.99\n"))
        .start();
    s.wait_dns(v4(port), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("server answers: {e}\n{}", s.output()));
    s
}

const VIEW_CASES: &[Case] = &[
    from("127.0.0.1:0"),
    from("127.0.0.2:0"),
    subnet("81.2.69.142", 32),
    subnet("198.51.100.7", 24),
    subnet("127.0.0.9", 32),
    subnet("2001:db8::1", 48),
];

fn view_answers(port: u16) -> Vec<Vec<String>> {
    VIEW_CASES
        .iter()
        .map(|c| {
            let r = udp_from(
                c.src.parse().unwrap(),
                v4(port),
                &query("www.example.com.", RecordType::A, c),
                T,
            )
            .unwrap();
            assert_eq!(r.rcode_name(), "NOERROR");
            assert_eq!(r.flags(), "qr,aa,rd");
            assert_eq!(r.authority(), vec!["example.com. 60 IN NS ns.example.com."]);
            r.answers()
        })
        .collect()
}

#[test]
fn view_blocks_chosen_by_country() {
    let dbs = Dbs::write();
    let port = free_port();
    let s = start_views(bin(), port, &dbs);
    let a = |ip: &str| vec![format!("www.example.com. 60 IN A {ip}")];
    assert_eq!(
        view_answers(port),
        vec![
            a("192.0.2.31"),
            a("192.0.2.1"),
            a("192.0.2.99"),
            a("192.0.2.1"),
            a("192.0.2.31"),
            a("192.0.2.99"),
        ]
    );
    // The chosen block's log line, with its view's name and the metadata it was chosen by.
    s.wait_for_nth_line("VIEW ", 4, T).unwrap();
    let views: Vec<String> = s
        .lines()
        .into_iter()
        .filter_map(|l| l.split_once("VIEW ").map(|(_, v)| v.to_string()))
        .collect();
    assert_eq!(
        views,
        vec![
            "www.example.com. nl NL",
            "www.example.com. us US",
            "www.example.com. us US",
            "www.example.com. nl NL",
        ]
    );
}

#[test]
fn view_answers_match_coredns() {
    let Some(coredns) = coredns_bin() else {
        eprintln!("skipping view_answers_match_coredns: COREDNS_BIN is not set");
        return;
    };
    let dbs = Dbs::write();
    let (p1, p2) = (free_port(), free_port());
    let _ours = start_views(bin(), p1, &dbs);
    let _theirs = start_views(&coredns, p2, &dbs);
    assert_eq!(view_answers(p1), view_answers(p2));
}

/// A configuration error: exit status and the line naming the position.
fn check(corefile: &str, dbs: &Dbs) -> String {
    let mut b = Sextant::builder(bin(), corefile).arg("-check");
    for f in ["city.mmdb", "corrupt.mmdb", "unknown.mmdb", "domain.mmdb"] {
        b = b.file(f, dbs.bytes(f));
    }
    b = b.file("dir.mmdb/x", "");
    let (code, out, err) = Sextant::run_to_end(b, Duration::from_secs(20)).unwrap();
    assert_ne!(code, 0, "{corefile} passed -check");
    format!("{out}{err}")
}

#[test]
fn bad_databases_and_options_fail_at_start() {
    let dbs = Dbs::write();
    let cases: &[(&str, &str)] = &[
        (
            "geoip nope.mmdb",
            "Corefile:2:11: geoip: failed to open database file: open nope.mmdb: no such file or directory",
        ),
        (
            "geoip dir.mmdb",
            "Corefile:2:11: geoip: failed to open database file: open dir.mmdb: is a directory",
        ),
        (
            "geoip corrupt.mmdb",
            "Corefile:2:11: geoip: failed to open database file: error opening database: invalid database",
        ),
        (
            "geoip unknown.mmdb",
            "Corefile:2:11: geoip: failed to open database file: geoip2: reader does not support the \"UnknownDbType\" database type",
        ),
        (
            "geoip domain.mmdb",
            "Corefile:2:11: geoip: database does not provide any supported schema (city, asn)",
        ),
        (
            "geoip",
            "Corefile:2:5: geoip: Wrong argument count or unexpected line ending after 'geoip'",
        ),
        (
            "geoip city.mmdb extra",
            "Corefile:2:21: geoip: Wrong argument count or unexpected line ending after 'extra'",
        ),
        (
            "geoip city.mmdb {\n        edns-subnet\n        ecs\n    }",
            "Corefile:4:9: geoip: unknown property \"ecs\"",
        ),
        (
            "geoip city.mmdb\n    geoip city.mmdb",
            "Corefile:3:11: geoip: configuring multiple databases is not supported",
        ),
    ];
    for (lines, want) in cases {
        let cf = format!(".:{} {{\n    {lines}\n    metadata\n}}\n", free_port());
        let out = check(&cf, &dbs);
        assert!(out.contains(want), "{cf}\nwant {want}\ngot {out}");
    }
}

#[test]
fn reload_with_a_bad_database_keeps_the_running_one() {
    let dbs = Dbs::write();
    let port = free_port();
    let cf = labels_corefile(port, "city.mmdb", true);
    let s = start_with(bin(), &cf, port, &dbs);
    let city = || {
        udp(
            v4(port),
            &query("r.example.", RecordType::TXT, &subnet("81.2.69.142", 32)),
            T,
        )
        .unwrap()
        .answers()
    };
    let cambridge = vec!["r.example. 5 IN TXT Cambridge|GB|".to_string()];
    assert_eq!(city(), cambridge);
    // The database file is replaced by a broken one: the reload (SIGUSR1 reloads even when
    // the Corefile is unchanged) fails at the geoip line and the running configuration keeps
    // its database.
    s.write_file("city.mmdb", &dbs.bytes("city.mmdb")[..100])
        .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    let line = s.wait_for_line("reload failed", T).unwrap();
    assert!(
        line.contains("Corefile:2:11: geoip: failed to open database file"),
        "{line}"
    );
    assert_eq!(city(), cambridge);
    // A good database in its place is read by the next reload.
    s.write_file("city.mmdb", dbs.bytes("asn.mmdb")).unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let asn = vec!["r.example. 5 IN TXT ||12345".to_string()];
    while city() != asn {
        assert!(
            Instant::now() < deadline,
            "reload did not apply\n{}",
            s.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
