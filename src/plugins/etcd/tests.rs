//! Unit tests of the etcd plugin: option parsing, and CoreDNS's backend lookup over a local
//! copy filled by hand (the end-to-end tests with a real etcd are in tests/etcd.rs).

use std::collections::BTreeMap;

use sextant_wire::Message;

use super::*;
use crate::pkg::testing::directive;
use crate::plugin::Proto;

fn parse_str(text: &str) -> Result<Config, Error> {
    let d = directive(text);
    parse(&d, &["skydns.local.".to_string()])
}

#[test]
fn options() {
    let c = parse_str(
        "skydns.local {\n etcd skydns.local 10.0.0.0/24 {\n  stubzones\n  path /other\n  endpoint http://127.0.0.1:2379 https://[::1]:4001\n  credentials root secret\n  fallthrough example.org\n  min-lease-ttl 1m\n  max-lease-ttl 90\n  upstream 8.8.8.8\n  debug\n }\n}\n",
    )
    .unwrap();
    assert_eq!(
        c.zones.iter().map(|z| z.to_string()).collect::<Vec<_>>(),
        ["skydns.local.", "0.0.10.in-addr.arpa."]
    );
    assert_eq!(c.path, "/other");
    assert_eq!(c.endpoints.len(), 2);
    assert!(c.tls.is_some(), "https endpoint: system roots");
    assert_eq!(c.credentials, Some(("root".into(), "secret".into())));
    assert!(c.fall.through(&Name::parse("a.example.org.").unwrap()));
    assert_eq!((c.min_lease_ttl, c.max_lease_ttl), (60, 90));

    let c = parse_str("skydns.local {\n etcd\n}\n").unwrap();
    assert_eq!(c.zones[0].to_string(), "skydns.local.");
    assert_eq!(c.path, "skydns");
    assert_eq!(c.endpoints[0].to_string(), "http://localhost:2379");
    assert!(c.tls.is_none() && c.credentials.is_none() && c.fall.is_off());
    assert_eq!((c.min_lease_ttl, c.max_lease_ttl), (30, 86400));
}

#[test]
fn bad_options_name_file_line_column() {
    let e = |body: &str| {
        parse_str(&format!("skydns.local {{\n etcd {{\n  {body}\n }}\n}}\n"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        e("credentials root"),
        "Corefile:3:3: credentials: credentials requires 2 arguments, username and password"
    );
    assert_eq!(
        e("bogus 1"),
        "Corefile:3:3: bogus: unknown property 'bogus'"
    );
    assert_eq!(
        e("min-lease-ttl 5x"),
        "Corefile:3:17: min-lease-ttl: invalid min-lease-ttl value: invalid TTL format, use format like '30', '30s', '5m', '1h', or '2h30m'"
    );
    assert_eq!(
        e("max-lease-ttl -5s"),
        "Corefile:3:17: max-lease-ttl: invalid max-lease-ttl value: TTL must be non-negative"
    );
    assert_eq!(
        e("endpoint unix:///run/etcd"),
        "Corefile:3:12: endpoint: invalid endpoint 'unix:///run/etcd': only http:// and https:// endpoints are supported"
    );
    assert!(e("path").starts_with("Corefile:3:3: path: wrong argument count"));
    assert!(e("endpoint").starts_with("Corefile:3:3: endpoint: wrong argument count"));
    assert!(e("tls /nonexistent/cert.pem /nonexistent/key.pem")
        .starts_with("Corefile:3:7: tls: cannot read certificate"));
}

/// A handler over a copy holding `keys` (JSON values), with `fallthrough` if asked.
fn etcd(keys: &[(&str, &str)], fall: bool) -> Etcd {
    let store = Arc::new(Store::new("e".into(), "skydns".into(), "z".into()));
    let kvs: BTreeMap<String, store::Kv> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), store::Kv::new(v.as_bytes(), 0)))
        .collect();
    store.replace(kvs, 1);
    Etcd {
        zones: vec![Name::parse("skydns.local.").unwrap()],
        fall: if fall {
            Fall::parse(&crate::pkg::testing::line("fallthrough")).unwrap()
        } else {
            Fall::default()
        },
        prefix: "skydns".into(),
        store,
        min_lease_ttl: 30,
        max_lease_ttl: 86400,
        clock: Clock::system(),
    }
}

/// A handler that answers REFUSED, to see fallthrough.
struct Refuse;
impl Handler for Refuse {
    fn name(&self) -> &'static str {
        "refuse"
    }
    fn serve<'a>(&'a self, req: &'a mut Request, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let mut m = req.reply();
        m.set_rcode(Rcode::REFUSED);
        Box::pin(async move { Outcome::reply("refuse", m) })
    }
}

/// rcode, answers, authority types, additional of a query.
async fn ask(e: &Etcd, name: &str, qtype: RType) -> (Rcode, Vec<String>, Vec<RType>, Vec<String>) {
    let chain: Vec<Arc<dyn Handler>> = vec![Arc::new(Refuse)];
    let msg = Message::query(1, Name::parse(name).unwrap(), qtype);
    let mut req = Request::new(msg, "127.0.0.1:5353".parse().unwrap(), Proto::Udp);
    let mut out = e.serve(&mut req, Next::new(&chain)).await;
    let m = out.take_message().expect("a reply");
    if out.writer == "etcd" {
        assert!(m.header.aa);
    }
    (
        m.rcode(),
        m.answers
            .iter()
            .map(|r| r.to_string().replace('\t', " "))
            .collect(),
        m.authority.iter().map(|r| r.rtype).collect(),
        m.additional
            .iter()
            .map(|r| r.to_string().replace('\t', " "))
            .collect(),
    )
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn addresses_subtrees_and_wildcards() {
    let e = etcd(
        &[
            ("/skydns/local/skydns/x1", r#"{"host":"1.1.1.1","ttl":60}"#),
            ("/skydns/local/skydns/x2", r#"{"host":"1.1.1.2"}"#),
            (
                "/skydns/local/skydns/x3",
                r#"{"host":"2003::8:1","ttl":60}"#,
            ),
            (
                "/skydns/local/skydns/svc/a",
                r#"{"host":"10.0.0.1","ttl":10}"#,
            ),
            (
                "/skydns/local/skydns/svc/b",
                r#"{"host":"10.0.0.2","ttl":10}"#,
            ),
            (
                "/skydns/local/skydns/svc/c/d",
                r#"{"host":"10.0.0.3","ttl":10}"#,
            ),
            ("/skydns/local/skydns/t", r#"{"text":"hello","ttl":10}"#),
        ],
        false,
    );
    let (rc, ans, _, _) = ask(&e, "svc.skydns.local.", RType::A).await;
    assert_eq!(rc, Rcode::NOERROR);
    assert_eq!(
        ans,
        strs(&[
            "svc.skydns.local. 10 IN A 10.0.0.1",
            "svc.skydns.local. 10 IN A 10.0.0.2",
            "svc.skydns.local. 10 IN A 10.0.0.3"
        ])
    );
    // The apex without apex.dns: every record of the zone.
    let (_, ans, _, _) = ask(&e, "skydns.local.", RType::AAAA).await;
    assert_eq!(ans, strs(&["skydns.local. 60 IN AAAA 2003::8:1"]));
    let (_, ans, _, _) = ask(&e, "x2.skydns.local.", RType::A).await;
    assert_eq!(ans, strs(&["x2.skydns.local. 300 IN A 1.1.1.2"]));
    // Wildcards match one level each and everything below.
    let (_, ans, _, _) = ask(&e, "a.*.skydns.local.", RType::A).await;
    assert_eq!(ans, strs(&["a.*.skydns.local. 10 IN A 10.0.0.1"]));
    let (_, ans, _, _) = ask(&e, "*.svc.skydns.local.", RType::A).await;
    assert_eq!(ans.len(), 3);
    // NODATA and NXDOMAIN carry the SOA.
    let (rc, ans, auth, _) = ask(&e, "t.skydns.local.", RType::A).await;
    assert_eq!((rc, ans.len(), auth), (Rcode::NOERROR, 0, vec![RType::SOA]));
    let (rc, _, auth, _) = ask(&e, "nope.skydns.local.", RType::A).await;
    assert_eq!((rc, auth), (Rcode::NXDOMAIN, vec![RType::SOA]));
    let (rc, ans, _, _) = ask(&e, "t.skydns.local.", RType::TXT).await;
    assert_eq!(rc, Rcode::NOERROR);
    assert_eq!(ans, strs(&["t.skydns.local. 10 IN TXT \"hello\""]));
    let (rc, ans, auth, _) = ask(&e, "x1.skydns.local.", RType::HINFO).await;
    assert_eq!((rc, ans.len(), auth), (Rcode::NOERROR, 0, vec![RType::SOA]));
    // SOA for any name answers the zone's SOA.
    let (rc, ans, _, _) = ask(&e, "x1.skydns.local.", RType::SOA).await;
    assert_eq!(rc, Rcode::NOERROR);
    assert!(
        ans[0]
            .starts_with("skydns.local. 30 IN SOA ns.dns.skydns.local. hostmaster.skydns.local. "),
        "{ans:?}"
    );
    assert!(ans[0].ends_with(" 7200 1800 86400 30"), "{ans:?}");
}

#[tokio::test]
async fn cnames_inside_the_zone_and_loops() {
    let e = etcd(
        &[
            (
                "/skydns/local/skydns/a",
                r#"{"host":"b.skydns.local","ttl":20}"#,
            ),
            ("/skydns/local/skydns/b", r#"{"host":"10.1.1.1","ttl":30}"#),
            (
                "/skydns/local/skydns/loop",
                r#"{"host":"loop.skydns.local"}"#,
            ),
            ("/skydns/local/skydns/l1", r#"{"host":"l2.skydns.local"}"#),
            ("/skydns/local/skydns/l2", r#"{"host":"l1.skydns.local"}"#),
        ],
        false,
    );
    let (_, ans, _, _) = ask(&e, "a.skydns.local.", RType::A).await;
    assert_eq!(
        ans,
        strs(&[
            "a.skydns.local. 20 IN CNAME b.skydns.local.",
            "b.skydns.local. 30 IN A 10.1.1.1"
        ])
    );
    let (_, ans, _, _) = ask(&e, "a.skydns.local.", RType::CNAME).await;
    assert_eq!(ans, strs(&["a.skydns.local. 20 IN CNAME b.skydns.local."]));
    let (rc, ans, _, _) = ask(&e, "loop.skydns.local.", RType::A).await;
    assert_eq!((rc, ans.len()), (Rcode::NOERROR, 0));
    let (rc, ans, _, _) = ask(&e, "l1.skydns.local.", RType::A).await;
    assert_eq!((rc, ans.len()), (Rcode::NOERROR, 0));
}

#[tokio::test]
async fn srv_weights_mx_ns_ptr_and_groups() {
    let e = etcd(
        &[
            (
                "/skydns/local/skydns/s/a",
                r#"{"host":"10.0.0.1","port":80,"priority":10,"weight":25}"#,
            ),
            (
                "/skydns/local/skydns/s/b",
                r#"{"host":"10.0.0.2","port":80,"priority":10,"weight":75}"#,
            ),
            (
                "/skydns/local/skydns/s/c",
                r#"{"host":"ext.example.","port":81,"priority":20}"#,
            ),
            (
                "/skydns/local/skydns/m/a",
                r#"{"host":"10.0.0.9","mail":true,"priority":5,"targetstrip":1}"#,
            ),
            ("/skydns/local/skydns/dns/ns/ns1", r#"{"host":"10.0.0.53"}"#),
            (
                "/skydns/local/skydns/g/a",
                r#"{"host":"10.0.0.1","group":"g1"}"#,
            ),
            (
                "/skydns/local/skydns/g/a/b",
                r#"{"host":"10.0.0.2","group":"g2"}"#,
            ),
            (
                "/skydns/local/skydns/g/a/c",
                r#"{"host":"10.0.0.3","group":"g1"}"#,
            ),
            ("/skydns/local/skydns/bad", r#"{"host":1}"#),
        ],
        false,
    );
    let (_, ans, _, extra) = ask(&e, "s.skydns.local.", RType::SRV).await;
    assert_eq!(
        ans,
        strs(&[
            "s.skydns.local. 300 IN SRV 10 25 80 a.s.skydns.local.",
            "s.skydns.local. 300 IN SRV 10 75 80 b.s.skydns.local.",
            "s.skydns.local. 300 IN SRV 20 100 81 ext.example."
        ])
    );
    assert_eq!(
        extra,
        strs(&[
            "a.s.skydns.local. 300 IN A 10.0.0.1",
            "b.s.skydns.local. 300 IN A 10.0.0.2"
        ])
    );
    let (_, ans, _, extra) = ask(&e, "m.skydns.local.", RType::MX).await;
    assert_eq!(ans, strs(&["m.skydns.local. 300 IN MX 5 m.skydns.local."]));
    assert_eq!(extra, strs(&["a.m.skydns.local. 300 IN A 10.0.0.9"]));
    let (_, ans, _, extra) = ask(&e, "skydns.local.", RType::NS).await;
    assert_eq!(
        ans,
        strs(&["skydns.local. 300 IN NS ns1.ns.dns.skydns.local."])
    );
    assert_eq!(
        extra,
        strs(&["ns1.ns.dns.skydns.local. 300 IN A 10.0.0.53"])
    );
    let (_, ans, _, _) = ask(&e, "g.skydns.local.", RType::A).await;
    assert_eq!(
        ans,
        strs(&[
            "g.skydns.local. 300 IN A 10.0.0.1",
            "g.skydns.local. 300 IN A 10.0.0.3"
        ])
    );
    // A value that does not decode: SERVFAIL with the SOA (and the error logged).
    let (rc, _, auth, _) = ask(&e, "bad.skydns.local.", RType::A).await;
    assert_eq!((rc, auth), (Rcode::SERVFAIL, vec![RType::SOA]));
}

#[tokio::test]
async fn fallthrough_and_no_data_yet() {
    let e = etcd(&[], true);
    let (rc, _, _, _) = ask(&e, "nope.skydns.local.", RType::A).await;
    assert_eq!(rc, Rcode::REFUSED, "fell through to the next plugin");
    let e = etcd(&[], false);
    let fresh = Etcd {
        store: Arc::new(Store::new("e".into(), "p".into(), "z".into())),
        ..e
    };
    let (rc, _, auth, _) = ask(&fresh, "x.skydns.local.", RType::A).await;
    assert_eq!((rc, auth), (Rcode::SERVFAIL, vec![RType::SOA]));
    let (rc, _, _, _) = ask(&fresh, "other.org.", RType::A).await;
    assert_eq!(rc, Rcode::REFUSED, "not our zone: next plugin");
}

#[tokio::test]
async fn srv_weight_overflow_wraps_like_go() {
    let e = etcd(
        &[
            (
                "/skydns/local/skydns/w/a",
                r#"{"host":"10.0.0.1","port":1,"weight":100}"#,
            ),
            (
                "/skydns/local/skydns/w/b",
                r#"{"host":"10.0.0.2","port":2,"weight":-5}"#,
            ),
            (
                "/skydns/local/skydns/z/a",
                r#"{"host":"10.0.0.3","port":3,"weight":100}"#,
            ),
            (
                "/skydns/local/skydns/z/b",
                r#"{"host":"10.0.0.4","port":4,"weight":-100}"#,
            ),
        ],
        false,
    );
    let (_, ans, _, _) = ask(&e, "w.skydns.local.", RType::SRV).await;
    assert_eq!(
        ans,
        strs(&[
            "w.skydns.local. 300 IN SRV 10 105 1 a.w.skydns.local.",
            "w.skydns.local. 300 IN SRV 10 65530 2 b.w.skydns.local."
        ])
    );
    // A total weight of 0: the share is infinite, Go's conversion gives 0, so 1.
    let (_, ans, _, _) = ask(&e, "z.skydns.local.", RType::SRV).await;
    assert_eq!(
        ans,
        strs(&[
            "z.skydns.local. 300 IN SRV 10 1 3 a.z.skydns.local.",
            "z.skydns.local. 300 IN SRV 10 1 4 b.z.skydns.local."
        ])
    );
}
