use super::*;

fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn zone(text: &str) -> Zone {
    Zone::parse(text, &n("example.org."), "db", None).unwrap()
}

fn strs(v: &[Record]) -> Vec<String> {
    v.iter().map(|r| r.to_string()).collect()
}

const Z: &str = "$TTL 300
@ SOA ns1 hostmaster 1 7200 1800 86400 30
@ NS ns1
@ NS ns2.other.
ns1 A 192.0.2.53
www A 192.0.2.1
www AAAA 2001:db8::1
alias CNAME www
chain CNAME alias
out CNAME www.other.
mail MX 10 mx
mx A 192.0.2.25
sub NS ns.sub
sub NS ns.elsewhere.
ns.sub A 192.0.2.54
*.wild TXT \"wild\"
a.b.c TXT \"deep\"
_SIP._TCP SRV 0 0 5060 www
dn DNAME other.
";

#[test]
fn positive_answers_and_authority() {
    let z = zone(Z);
    let l = z.lookup(&n("www.example.org."), RType::A, false, 0);
    assert_eq!(l.result, Res::Success);
    assert_eq!(strs(&l.answer), ["www.example.org.\t300\tIN\tA\t192.0.2.1"]);
    assert_eq!(
        strs(&l.ns),
        [
            "example.org.\t300\tIN\tNS\tns1.example.org.",
            "example.org.\t300\tIN\tNS\tns2.other."
        ]
    );
    let l = z.lookup(&n("example.org."), RType::NS, false, 0);
    assert_eq!(strs(&l.extra), ["ns1.example.org.\t300\tIN\tA\t192.0.2.53"]);
    let l = z.lookup(&n("example.org."), RType::SOA, false, 0);
    assert_eq!(l.answer.len(), 1);
    let l = z.lookup(&n("mail.example.org."), RType::MX, false, 0);
    assert_eq!(strs(&l.extra), ["mx.example.org.\t300\tIN\tA\t192.0.2.25"]);
    let l = z.lookup(&n("_sip._tcp.example.org."), RType::SRV, false, 0);
    assert_eq!(l.answer[0].name.to_string(), "_SIP._TCP.example.org.");
    assert_eq!(
        strs(&l.extra),
        [
            "www.example.org.\t300\tIN\tA\t192.0.2.1",
            "www.example.org.\t300\tIN\tAAAA\t2001:db8::1"
        ]
    );
}

#[test]
fn negative_answers() {
    let z = zone(Z);
    let l = z.lookup(&n("www.example.org."), RType::TXT, false, 0);
    assert_eq!((l.result, l.answer.len()), (Res::NoData, 0));
    assert_eq!(l.ns[0].rtype, RType::SOA);
    let l = z.lookup(&n("nope.example.org."), RType::A, false, 0);
    assert_eq!(l.result, Res::NameError);
    assert_eq!(l.ns[0].rtype, RType::SOA);
    // Empty non-terminal: NOERROR (Success without answers) and the SOA.
    let l = z.lookup(&n("b.c.example.org."), RType::A, false, 0);
    assert_eq!(l.result, Res::Success);
    assert!(l.answer.is_empty());
    assert_eq!(l.ns[0].rtype, RType::SOA);
}

#[test]
fn cnames_delegations_wildcards_dname() {
    let z = zone(Z);
    let l = z.lookup(&n("chain.example.org."), RType::A, false, 0);
    assert_eq!(
        strs(&l.answer),
        [
            "chain.example.org.\t300\tIN\tCNAME\talias.example.org.",
            "alias.example.org.\t300\tIN\tCNAME\twww.example.org.",
            "www.example.org.\t300\tIN\tA\t192.0.2.1",
        ]
    );
    assert!(l.external.is_none());
    let l = z.lookup(&n("out.example.org."), RType::A, false, 0);
    let x = l.external.clone().unwrap();
    assert_eq!(x.target, n("www.other."));
    let done = z.finish_external(
        l,
        vec![Record::new(
            n("www.other."),
            5,
            RData::A("198.51.100.1".parse().unwrap()),
        )],
        Res::Success,
        false,
    );
    assert_eq!(done.answer.len(), 2);
    assert_eq!(done.ns[0].rtype, RType::NS);
    let l = z.lookup(&n("x.sub.example.org."), RType::A, false, 0);
    assert_eq!(l.result, Res::Delegation);
    assert_eq!(
        strs(&l.ns),
        [
            "sub.example.org.\t300\tIN\tNS\tns.sub.example.org.",
            "sub.example.org.\t300\tIN\tNS\tns.elsewhere."
        ]
    );
    assert_eq!(
        strs(&l.extra),
        ["ns.sub.example.org.\t300\tIN\tA\t192.0.2.54"]
    );
    // DS at the cut is the parent's: NODATA here.
    assert_eq!(
        z.lookup(&n("sub.example.org."), RType::DS, false, 0).result,
        Res::NoData
    );
    let l = z.lookup(&n("x.wild.example.org."), RType::TXT, false, 0);
    assert_eq!(
        strs(&l.answer),
        ["x.wild.example.org.\t300\tIN\tTXT\t\"wild\""]
    );
    assert_eq!(
        z.lookup(&n("x.wild.example.org."), RType::A, false, 0)
            .result,
        Res::NoData
    );
    let l = z.lookup(&n("a.dn.example.org."), RType::A, false, 0);
    assert_eq!(
        strs(&l.answer),
        ["a.dn.example.org.\t300\tIN\tCNAME\ta.other."]
    );
    let x = l.external.clone().unwrap();
    assert_eq!(x.target, n("a.other."));
    assert_eq!(strs(&x.prefix), ["dn.example.org.\t300\tIN\tDNAME\tother."]);
    let done = z.finish_external(l, Vec::new(), Res::NameError, false);
    assert_eq!(done.answer.len(), 2);
    assert_eq!(done.answer[0].rtype, RType::DNAME);
    assert_eq!(done.ns[0].rtype, RType::SOA);
    assert_eq!(
        z.lookup(&n("www.example.org."), RType::A, false, 9).result,
        Res::ServerFailure
    );
}

#[test]
fn fast_reply_matches_lookup() {
    let z = zone(Z);
    let q = n("www.example.org.");
    let w = z
        .fast_reply(7, true, false, q.wire(), RType::A, Class::IN)
        .unwrap();
    let m = sextant_wire::Message::parse(&w).unwrap();
    let l = z.lookup(&q, RType::A, false, 0);
    assert_eq!(m.answers, l.answer);
    assert_eq!(m.authority, l.ns);
    assert!(m.header.aa && m.header.rd && m.header.qr);
    // Another spelling: the owner stays lower-case, written out.
    let q2 = n("WWW.example.ORG.");
    let m = sextant_wire::Message::parse(
        &z.fast_reply(7, false, false, q2.wire(), RType::AAAA, Class::IN)
            .unwrap(),
    )
    .unwrap();
    assert!(m.answers[0].name.eq_case_sensitive(&q));
    assert!(m.authority[0].name.eq_case_sensitive(&n("example.org.")));
    for (name, t) in [
        ("alias.example.org.", RType::A),
        ("x.sub.example.org.", RType::A),
        ("ns.sub.example.org.", RType::A),
        ("mail.example.org.", RType::MX),
        ("www.example.org.", RType::TXT),
        ("nope.example.org.", RType::A),
    ] {
        assert!(
            z.fast_reply(1, false, false, n(name).wire(), t, Class::IN)
                .is_none(),
            "{name}"
        );
    }
}

#[test]
fn transfer_order_and_serials() {
    let z = zone(Z);
    let t = z.transfer_records();
    assert_eq!(t.first().unwrap().rtype, RType::SOA);
    assert_eq!(t.last().unwrap().rtype, RType::SOA);
    assert_eq!(t.len(), z.record_count() + 1);
    assert_eq!(t[1].rtype, RType::NS);
    assert!(
        serial_less(1, 2) && serial_less(u32::MAX, 0) && !serial_less(2, 1) && !serial_less(5, 5)
    );
}

#[test]
fn canonical_order() {
    let mut v = [
        n("z.example."),
        n("a.example."),
        n("example."),
        n("*.z.example."),
        n("\\200.z.example."),
        n("yljkjljk.a.example."),
        n("Z.a.example."),
        n("zABC.a.EXAMPLE."),
    ];
    v.sort_by(|a, b| canonical_cmp(a.wire(), b.wire()));
    let s: Vec<String> = v.iter().map(|x| x.to_lowercase_string()).collect();
    assert_eq!(
        s,
        [
            "example.",
            "a.example.",
            "yljkjljk.a.example.",
            "z.a.example.",
            "zabc.a.example.",
            "z.example.",
            "*.z.example.",
            "\\200.z.example."
        ]
    );
}
