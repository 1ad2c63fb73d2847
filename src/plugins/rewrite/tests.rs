//! Unit tests of `rewrite` parsing (every rule form and error, with positions) and of rules
//! applied to messages.

use std::path::Path;

use sextant_corefile::Directive;
use sextant_wire::{Class, Message, Name, RData, RType, Rcode, Record};

use super::rules::{Kind, Mode, ResponseRule};
use super::{parse, rewrite_reply};

fn rules(text: &str) -> Result<Vec<super::rules::Rule>, String> {
    let cf = sextant_corefile::parse_str("Corefile", text, Path::new(".")).unwrap();
    let ds: Vec<&Directive> = cf.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.text == "rewrite")
        .collect();
    let ds: Vec<Directive> = ds.into_iter().cloned().collect();
    let refs: Vec<&Directive> = ds.iter().collect();
    parse(&refs).map_err(|e| e.to_string())
}

fn one(line: &str) -> super::rules::Rule {
    rules(&format!(".:53 {{\n {line}\n}}\n")).unwrap().remove(0)
}

fn err(line: &str) -> String {
    rules(&format!(".:53 {{\n {line}\n}}\n")).unwrap_err()
}

fn q(name: &str, t: RType) -> Message {
    Message::query(1, Name::parse(name).unwrap(), t)
}

#[test]
fn name_rules_rewrite_the_question() {
    let cases = [
        (
            "rewrite name a.example.org b.example.net",
            "A.Example.ORG.",
            "b.example.net.",
        ),
        (
            "rewrite name exact a.example.org b.example.net",
            "a.example.org.",
            "b.example.net.",
        ),
        (
            "rewrite name prefix foo bar",
            "foo.example.org.",
            "bar.example.org.",
        ),
        (
            "rewrite name suffix .example.org .example.net",
            "x.example.org.",
            "x.example.net.",
        ),
        ("rewrite name substring mid x", "a.mid.b.", "a.x.b."),
        (
            "rewrite name regex (.*)\\.svc\\.local {1}.default.svc.cluster.local",
            "web.svc.local.",
            "web.default.svc.cluster.local.",
        ),
    ];
    for (line, from, to) in cases {
        let r = one(line);
        let mut m = q(from, RType::A);
        let resp = r.rewrite(&mut m).unwrap();
        assert!(resp.is_some(), "{line}");
        assert_eq!(m.questions[0].name.to_string(), to, "{line}");
    }
    // No match leaves the question alone.
    let mut m = q("other.org.", RType::A);
    assert!(one("rewrite name a.org b.org")
        .rewrite(&mut m)
        .unwrap()
        .is_none());
    assert_eq!(m.questions[0].name.to_string(), "other.org.");
}

#[test]
fn modes_and_block_form() {
    assert_eq!(one("rewrite name a.org b.org").mode, Mode::Stop);
    assert_eq!(one("rewrite stop name a.org b.org").mode, Mode::Stop);
    assert_eq!(
        one("rewrite continue name a.org b.org").mode,
        Mode::Continue
    );
    let r = rules(
        ".:53 {\n rewrite stop {\n  name regex (.*)\\.a\\.org {1}.b.org\n  answer name (.*)\\.b\\.org {1}.a.org\n }\n}\n",
    )
    .unwrap();
    match &r[0].kind {
        Kind::Name { answers, auto, .. } => {
            assert_eq!(answers.len(), 1);
            assert!(!auto);
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn answer_rules_rewrite_the_reply() {
    let r = one("rewrite name regex (.*)\\.a\\.org {1}.b.org answer name (.*)\\.b\\.org {1}.a.org answer value (.*)\\.b\\.org {1}.a.org");
    let mut m = q("www.a.org.", RType::A);
    let resp = r.rewrite(&mut m).unwrap().unwrap();
    assert_eq!(m.questions[0].name.to_string(), "www.b.org.");
    let mut reply = Message::reply_to(&m);
    reply.answers.push(Record::new(
        Name::parse("www.b.org.").unwrap(),
        30,
        RData::Cname(Name::parse("srv.b.org.").unwrap()),
    ));
    rewrite_reply(&mut reply, &resp);
    assert_eq!(
        reply.answers[0].to_string(),
        Record::new(
            Name::parse("www.a.org.").unwrap(),
            30,
            RData::Cname(Name::parse("srv.a.org.").unwrap())
        )
        .to_string()
    );
    // exact rules rewrite the answer back automatically, below-names included.
    let r = one("rewrite name a.org b.org");
    let mut m = q("a.org.", RType::A);
    let resp = r.rewrite(&mut m).unwrap().unwrap();
    let mut reply = Message::reply_to(&m);
    reply.answers.push(Record::new(
        Name::parse("b.org.").unwrap(),
        5,
        RData::Cname(Name::parse("x.b.org.").unwrap()),
    ));
    rewrite_reply(&mut reply, &resp);
    assert_eq!(reply.answers[0].name.to_string(), "a.org.");
    assert_eq!(
        reply.answers[0].data,
        RData::Cname(Name::parse("x.a.org.").unwrap())
    );
}

#[test]
fn type_class_ttl_rcode_rules() {
    let mut m = q("a.org.", RType::ANY);
    assert!(one("rewrite type ANY HINFO")
        .rewrite(&mut m)
        .unwrap()
        .is_some());
    assert_eq!(m.questions[0].qtype, RType::HINFO);
    let mut m = q("a.org.", RType::A);
    m.questions[0].qclass = Class::CH;
    assert!(one("rewrite class CH IN")
        .rewrite(&mut m)
        .unwrap()
        .is_some());
    assert_eq!(m.questions[0].qclass, Class::IN);

    let r = one("rewrite ttl regex .*\\.org 10-20");
    let resp = r.rewrite(&mut q("a.org.", RType::A)).unwrap().unwrap();
    let mut reply = Message::default();
    reply.answers.push(Record::new(
        Name::parse("a.org.").unwrap(),
        5,
        RData::A([1, 2, 3, 4].into()),
    ));
    reply.answers.push(Record::new(
        Name::parse("a.org.").unwrap(),
        50,
        RData::A([1, 2, 3, 5].into()),
    ));
    reply.answers.push(Record::new(
        Name::parse("a.org.").unwrap(),
        15,
        RData::A([1, 2, 3, 6].into()),
    ));
    rewrite_reply(&mut reply, &resp);
    let ttls: Vec<u32> = reply.answers.iter().map(|r| r.ttl).collect();
    assert_eq!(ttls, vec![10, 20, 15]);
    assert!(matches!(
        one("rewrite ttl a.org 30").kind,
        Kind::Respond(_, ResponseRule::Ttl(30, 30))
    ));
    assert!(matches!(
        one("rewrite ttl a.org -30").kind,
        Kind::Respond(_, ResponseRule::Ttl(0, 30))
    ));
    assert!(matches!(
        one("rewrite ttl a.org 30-").kind,
        Kind::Respond(_, ResponseRule::Ttl(30, 2147483647))
    ));

    let r = one("rewrite rcode a.org NXDOMAIN NOERROR");
    let resp = r.rewrite(&mut q("a.org.", RType::A)).unwrap().unwrap();
    let mut reply = Message::default();
    reply.set_rcode(Rcode::NXDOMAIN);
    rewrite_reply(&mut reply, &resp);
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert!(matches!(
        one("rewrite rcode suffix org 2 0").kind,
        Kind::Respond(_, ResponseRule::Rcode(Rcode::SERVFAIL, Rcode::NOERROR))
    ));
}

#[test]
fn errors_have_positions() {
    let cases = [
        ("rewrite", "Corefile:2:2: rewrite: no rule type specified for rewrite"),
        ("rewrite continue", "Corefile:2:10: rewrite: continue rule must begin with a rule type"),
        ("rewrite stop", "Corefile:2:10: rewrite: stop rule must begin with a rule type"),
        ("rewrite answer name a b", "Corefile:2:10: rewrite: response rewrites must begin with a name rule"),
        ("rewrite name a", "Corefile:2:10: rewrite: too few arguments for a name rule"),
        ("rewrite bogus a b", "Corefile:2:10: rewrite: invalid rule type \"bogus\""),
        ("rewrite type A", "Corefile:2:10: rewrite: type rules must have exactly two arguments"),
        ("rewrite type A XYZ", "Corefile:2:10: rewrite: invalid type \"XYZ\""),
        ("rewrite class IN XX", "Corefile:2:10: rewrite: invalid class \"XX\""),
        ("rewrite class IN", "Corefile:2:10: rewrite: class rules must have exactly two arguments"),
        (
            "rewrite name fuzzy a b",
            "Corefile:2:10: rewrite: name rule supports only exact, prefix, suffix, substring, and regex name matching, received: fuzzy",
        ),
        ("rewrite name regex ( b", "Corefile:2:10: rewrite: invalid regex matching pattern: ("),
        (
            "rewrite name regex (a) {1}{2}",
            "Corefile:2:10: rewrite: the rewrite regex pattern ({1}{2}) uses more subexpressions than its corresponding matching regex pattern ((a))",
        ),
        ("rewrite name regex a b answer", "Corefile:2:10: rewrite: invalid arguments for regex rule"),
        (
            "rewrite name regex a b foo bar",
            "Corefile:2:10: rewrite: exceeded the number of arguments for a non-answer rule argument for regex rule",
        ),
        ("rewrite name regex a b answer bogus", "Corefile:2:10: rewrite: invalid type \"bogus\" for answer rule for regex rule"),
        (
            "rewrite name regex a b answer name x",
            "Corefile:2:10: rewrite: name answer rule for regex rule: 2 arguments required",
        ),
        (
            "rewrite name regex a b answer auto answer name x y",
            "Corefile:2:10: rewrite: auto name answer rule cannot be combined with explicit name anwer rules",
        ),
        ("rewrite ttl a", "Corefile:2:10: rewrite: too few (1) arguments for a ttl rule"),
        ("rewrite ttl a x", "Corefile:2:10: rewrite: invalid TTL 'x' for a ttl rule"),
        ("rewrite ttl a 20-10", "Corefile:2:10: rewrite: invalid TTL '20-10' for a ttl rule"),
        ("rewrite ttl a b c d", "Corefile:2:10: rewrite: many few arguments for a ttl rule"),
        (
            "rewrite ttl fuzzy a 1",
            "Corefile:2:10: rewrite: ttl rule supports only exact, prefix, suffix, substring, and regex name matching",
        ),
        ("rewrite ttl regex ( 1", "Corefile:2:10: rewrite: invalid regex pattern in a ttl rule: ("),
        ("rewrite rcode a b", "Corefile:2:10: rewrite: too few (2) arguments for a rcode rule"),
        ("rewrite rcode a FOO NOERROR", "Corefile:2:10: rewrite: invalid matching RCODE 'FOO' for a rcode rule"),
        ("rewrite rcode a NOERROR 24", "Corefile:2:10: rewrite: invalid replacement RCODE '24' for a rcode rule"),
        ("rewrite rcode a b c d e", "Corefile:2:10: rewrite: many few arguments for a rcode rule"),
        ("rewrite edns0 local set 0xffee abc", "Corefile:2:10: rewrite: edns0 rules are not supported by Sextant yet"),
    ];
    for (line, want) in cases {
        assert_eq!(err(line), want, "{line}");
    }
}
