//! Unit tests of `rewrite` parsing (every rule form and error, with positions) and of rules
//! applied to messages.

use std::path::Path;

use sextant_corefile::Directive;
use sextant_wire::{Class, Message, Name, RData, RType, Rcode, Record};

use super::edns0::{subnet_data, Action, Data, Edns0Rule, Env, Revert, Variable};
use super::rules::{Kind, Mode, ResponseRule};
use super::{parse, rewrite_reply};
use crate::plugin::Proto;
use sextant_wire::{Edns, EdnsOption};

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
    ];
    for (line, want) in cases {
        assert_eq!(err(line), want, "{line}");
    }
}

fn edns0(line: &str) -> Edns0Rule {
    match one(line).kind {
        Kind::Edns0(e) => e,
        k => panic!("{line}: {k:?}"),
    }
}

#[test]
fn edns0_rules_parse() {
    assert_eq!(
        edns0("rewrite edns0 local set 0xffee 0x61626364"),
        Edns0Rule::Local {
            action: Action::Set,
            code: 0xffee,
            data: Data::Bytes(b"abcd".to_vec()),
            revert: false
        }
    );
    assert_eq!(
        edns0("rewrite edns0 LOCAL Append 65518 abcd revert"),
        Edns0Rule::Local {
            action: Action::Append,
            code: 65518,
            data: Data::Bytes(b"abcd".to_vec()),
            revert: true
        }
    );
    // Go's base-0 integers: octal with a leading zero, separators after a prefix.
    assert!(matches!(
        edns0("rewrite edns0 local replace 0o17 x"),
        Edns0Rule::Local { code: 15, .. }
    ));
    assert!(matches!(
        edns0("rewrite edns0 local replace 017 x"),
        Edns0Rule::Local { code: 15, .. }
    ));
    assert!(matches!(
        edns0("rewrite edns0 local replace 0xff_ee x"),
        Edns0Rule::Local { code: 0xffee, .. }
    ));
    for (v, want) in [
        ("{qname}", Variable::Qname),
        ("{qtype}", Variable::Qtype),
        ("{client_ip}", Variable::ClientIp),
        ("{client_port}", Variable::ClientPort),
        ("{protocol}", Variable::Protocol),
        ("{server_ip}", Variable::ServerIp),
        ("{server_port}", Variable::ServerPort),
        (
            "{kubernetes/pod}",
            Variable::Metadata("kubernetes/pod".into()),
        ),
    ] {
        assert_eq!(
            edns0(&format!("rewrite edns0 local set 0xffee {v}")),
            Edns0Rule::Local {
                action: Action::Set,
                code: 0xffee,
                data: Data::Var(want),
                revert: false
            }
        );
    }
    assert_eq!(
        edns0("rewrite edns0 local unset 0xffee"),
        Edns0Rule::Local {
            action: Action::Unset,
            code: 0xffee,
            data: Data::Bytes(Vec::new()),
            revert: false
        }
    );
    assert_eq!(
        edns0("rewrite continue edns0 nsid set revert"),
        Edns0Rule::Nsid {
            action: Action::Set,
            revert: true
        }
    );
    assert_eq!(
        edns0("rewrite edns0 nsid unset"),
        Edns0Rule::Nsid {
            action: Action::Unset,
            revert: false
        }
    );
    assert_eq!(
        edns0("rewrite edns0 subnet replace 24 56"),
        Edns0Rule::Subnet {
            action: Action::Replace,
            v4: 24,
            v6: 56,
            revert: false
        }
    );
    assert_eq!(
        edns0("rewrite edns0 subnet unset"),
        Edns0Rule::Subnet {
            action: Action::Unset,
            v4: 0,
            v6: 0,
            revert: false
        }
    );
    // Block form.
    let r = rules(".:53 {\n rewrite continue {\n  edns0 local set 0xffee abcd\n }\n}\n")
        .unwrap()
        .remove(0);
    assert_eq!(r.mode, Mode::Continue);
    assert!(matches!(r.kind, Kind::Edns0(Edns0Rule::Local { .. })));
}

#[test]
fn edns0_and_cname_errors_have_positions() {
    let cases = [
        (
            "rewrite edns0 local",
            "Corefile:2:10: rewrite: too few arguments for an EDNS0 rule",
        ),
        (
            "rewrite edns0 local bogus 1 2",
            "Corefile:2:10: rewrite: invalid action: \"bogus\"",
        ),
        (
            "rewrite edns0 local set 0xffee",
            "Corefile:2:10: rewrite: EDNS0 local rules require three or four args",
        ),
        (
            "rewrite edns0 local set 0xffee abcd revert x",
            "Corefile:2:10: rewrite: EDNS0 local rules require three or four args",
        ),
        (
            "rewrite edns0 local set 0xffee revert",
            "Corefile:2:10: rewrite: EDNS0 local rules require three or four args",
        ),
        (
            "rewrite edns0 local set zz abcd",
            "Corefile:2:10: rewrite: strconv.ParseUint: parsing \"zz\": invalid syntax",
        ),
        (
            "rewrite edns0 local set 70000 abcd",
            "Corefile:2:10: rewrite: strconv.ParseUint: parsing \"70000\": value out of range",
        ),
        (
            "rewrite edns0 local set 1__0 abcd",
            "Corefile:2:10: rewrite: strconv.ParseUint: parsing \"1__0\": invalid syntax",
        ),
        (
            "rewrite edns0 local set 0xffee 0xabc",
            "Corefile:2:10: rewrite: encoding/hex: odd length hex string",
        ),
        (
            "rewrite edns0 local set 0xffee 0xag",
            "Corefile:2:10: rewrite: encoding/hex: invalid byte: U+0067 'g'",
        ),
        (
            "rewrite edns0 local set 0xffee {bogus}",
            "Corefile:2:10: rewrite: unsupported variable name \"{bogus}\"",
        ),
        (
            "rewrite edns0 local set 0xffee {/x}",
            "Corefile:2:10: rewrite: unsupported variable name \"{/x}\"",
        ),
        (
            "rewrite edns0 local unset",
            "Corefile:2:10: rewrite: local unset action requires exactly two arguments",
        ),
        (
            "rewrite edns0 local unset 1 2",
            "Corefile:2:10: rewrite: local unset action requires exactly two arguments",
        ),
        (
            "rewrite edns0 nsid set x",
            "Corefile:2:10: rewrite: EDNS0 NSID rules can accept no more than one arg",
        ),
        (
            "rewrite edns0 nsid unset x",
            "Corefile:2:10: rewrite: nsid unset action requires exactly one argument",
        ),
        (
            "rewrite edns0 subnet set 24",
            "Corefile:2:10: rewrite: EDNS0 subnet rules require three or four args",
        ),
        (
            "rewrite edns0 subnet set 33 56",
            "Corefile:2:10: rewrite: invalid IPv4 bit mask length 33",
        ),
        (
            "rewrite edns0 subnet set 24 129",
            "Corefile:2:10: rewrite: invalid IPv6 bit mask length 129",
        ),
        (
            "rewrite edns0 subnet set x 56",
            "Corefile:2:10: rewrite: strconv.ParseUint: parsing \"x\": invalid syntax",
        ),
        (
            "rewrite edns0 subnet unset 1",
            "Corefile:2:10: rewrite: subnet unset action requires exactly one argument",
        ),
        (
            "rewrite edns0 cookie set 1",
            "Corefile:2:10: rewrite: invalid rule type \"cookie\"",
        ),
        (
            "rewrite edns0 cookie unset",
            "Corefile:2:10: rewrite: invalid rule type \"cookie\"",
        ),
        (
            "rewrite cname a",
            "Corefile:2:10: rewrite: too few (1) arguments for a cname rule",
        ),
        (
            "rewrite cname a b c d",
            "Corefile:2:10: rewrite: too few (4) arguments for a cname rule",
        ),
        (
            "rewrite cname fuzzy a b",
            "Corefile:2:10: rewrite: unknown cname rewrite type: fuzzy",
        ),
        (
            "rewrite stop cname regex ( b",
            "Corefile:2:10: rewrite: invalid cname rewrite regex pattern: unclosed group",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(err(line), want, "{line}");
    }
}

fn env(client: &str, proto: Proto) -> Env {
    Env {
        client: client.parse().unwrap(),
        local: "127.0.0.1:1053".parse().unwrap(),
        proto,
    }
}

fn opts(m: &Message) -> Vec<(u16, Vec<u8>)> {
    m.edns
        .as_ref()
        .map(|e| e.options.iter().map(|o| (o.code, o.data.clone())).collect())
        .unwrap_or_default()
}

fn with_opts(o: &[(u16, &[u8])]) -> Message {
    let mut m = q("a.example.", RType::AAAA);
    let mut e = Edns::new(1232);
    e.options = o
        .iter()
        .map(|(c, d)| EdnsOption {
            code: *c,
            data: d.to_vec(),
        })
        .collect();
    m.edns = Some(e);
    m
}

#[test]
fn edns0_local_actions() {
    let e = env("192.0.2.7:5353", Proto::Udp);
    // No OPT: one is created (4096, DO clear) and the option appended.
    let mut m = q("a.example.", RType::A);
    let r = edns0("rewrite edns0 local set 0xffee abcd");
    assert_eq!(r.rewrite(&mut m, &e), Some(vec![]));
    let opt = m.edns.as_ref().unwrap();
    assert_eq!((opt.udp_size, opt.dnssec_ok), (4096, false));
    assert_eq!(opts(&m), vec![(0xffee, b"abcd".to_vec())]);
    // set replaces the first local option with the code; with revert the old one comes back.
    let mut m = with_opts(&[(0xffee, b"old"), (0xffee, b"two")]);
    let r = edns0("rewrite edns0 local set 0xffee new revert");
    let rv = r.rewrite(&mut m, &e).unwrap();
    assert_eq!(
        opts(&m),
        vec![(0xffee, b"new".to_vec()), (0xffee, b"two".to_vec())]
    );
    assert_eq!(
        rv,
        vec![Revert::Restore(EdnsOption {
            code: 0xffee,
            data: b"old".to_vec()
        })]
    );
    // replace without a match does nothing; append always adds (CoreDNS's fixed-data rule).
    let mut m = with_opts(&[(100, b"x")]);
    assert_eq!(
        edns0("rewrite edns0 local replace 0xffee abcd").rewrite(&mut m, &e),
        None
    );
    let rv = edns0("rewrite edns0 local append 100 y revert")
        .rewrite(&mut m, &e)
        .unwrap();
    assert_eq!(opts(&m), vec![(100, b"x".to_vec()), (100, b"y".to_vec())]);
    assert_eq!(rv, vec![Revert::Remove(100)]);
    // A code miekg/dns decodes into a typed option (8, ECS) is not a local option: set appends.
    let mut m = with_opts(&[(8, b"\x00\x01\x00\x00")]);
    edns0("rewrite edns0 local set 8 zz").rewrite(&mut m, &e);
    assert_eq!(opts(&m).len(), 2);
    // unset removes every option with the code.
    let mut m = with_opts(&[(0xffee, b"a"), (3, b""), (0xffee, b"b")]);
    assert_eq!(
        edns0("rewrite edns0 local unset 0xffee").rewrite(&mut m, &e),
        Some(vec![])
    );
    assert_eq!(opts(&m), vec![(3, vec![])]);
}

#[test]
fn edns0_variables() {
    let e4 = env("192.0.2.7:5353", Proto::Udp);
    let e6 = Env {
        client: "[2001:db8::7]:5353".parse().unwrap(),
        local: "[2001:db8::1]:53".parse().unwrap(),
        proto: Proto::Tcp,
    };
    let cases: [(&str, &Env, Vec<u8>); 9] = [
        ("{qname}", &e4, b"a.example.".to_vec()),
        ("{qtype}", &e4, vec![0, 28]),
        ("{client_ip}", &e4, vec![192, 0, 2, 7]),
        ("{client_port}", &e4, vec![0x14, 0xe9]),
        ("{protocol}", &e4, b"udp".to_vec()),
        ("{server_ip}", &e4, vec![127, 0, 0, 1]),
        ("{server_port}", &e4, vec![0x04, 0x1d]),
        ("{protocol}", &e6, b"tcp".to_vec()),
        (
            "{client_ip}",
            &e6,
            vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        ),
    ];
    for (var, env, want) in cases {
        let mut m = with_opts(&[]);
        let r = edns0(&format!("rewrite edns0 local set 0xffee {var}"));
        assert_eq!(r.rewrite(&mut m, env), Some(vec![]), "{var}");
        assert_eq!(opts(&m), vec![(0xffee, want)], "{var}");
    }
    // A metadata label never has a value here: ignored, and no OPT is created.
    let mut m = q("a.example.", RType::A);
    assert_eq!(
        edns0("rewrite edns0 local set 0xffee {a/b}").rewrite(&mut m, &e4),
        None
    );
    assert!(m.edns.is_none());
    // A variable rule with append leaves an existing option alone.
    let mut m = with_opts(&[(0xffee, b"x")]);
    assert_eq!(
        edns0("rewrite edns0 local append 0xffee {qname}").rewrite(&mut m, &e4),
        None
    );
    assert_eq!(opts(&m), vec![(0xffee, b"x".to_vec())]);
}

#[test]
fn edns0_nsid_and_subnet() {
    let e = env("192.0.2.77:5353", Proto::Udp);
    let mut m = with_opts(&[(3, b"abc")]);
    let rv = edns0("rewrite edns0 nsid replace revert")
        .rewrite(&mut m, &e)
        .unwrap();
    assert_eq!(opts(&m), vec![(3, vec![])]);
    assert_eq!(
        rv,
        vec![Revert::Restore(EdnsOption {
            code: 3,
            data: b"abc".to_vec()
        })]
    );
    let mut m = with_opts(&[]);
    assert_eq!(
        edns0("rewrite edns0 nsid replace").rewrite(&mut m, &e),
        None
    );
    edns0("rewrite edns0 nsid append").rewrite(&mut m, &e);
    assert_eq!(opts(&m), vec![(3, vec![])]);
    edns0("rewrite edns0 nsid unset").rewrite(&mut m, &e);
    assert_eq!(opts(&m), vec![]);

    assert_eq!(
        subnet_data("192.0.2.77".parse().unwrap(), 24, 56),
        vec![0, 1, 24, 0, 192, 0, 2]
    );
    assert_eq!(
        subnet_data("192.0.2.77".parse().unwrap(), 20, 56),
        vec![0, 1, 20, 0, 192, 0, 0]
    );
    assert_eq!(
        subnet_data("192.0.2.77".parse().unwrap(), 0, 56),
        vec![0, 1, 0, 0]
    );
    assert_eq!(
        subnet_data("2001:db8:aaaa:bbbb::1".parse().unwrap(), 24, 56),
        vec![0, 2, 56, 0, 0x20, 0x01, 0x0d, 0xb8, 0xaa, 0xaa, 0xbb]
    );
    assert_eq!(
        subnet_data("::ffff:10.1.2.3".parse().unwrap(), 32, 56),
        vec![0, 1, 32, 0, 10, 1, 2, 3]
    );
    let mut m = with_opts(&[]);
    let rv = edns0("rewrite edns0 subnet set 24 56 revert")
        .rewrite(&mut m, &e)
        .unwrap();
    assert_eq!(opts(&m), vec![(8, vec![0, 1, 24, 0, 192, 0, 2])]);
    assert_eq!(rv, vec![Revert::Remove(8)]);
    // append leaves an existing ECS alone (ignored), replace rewrites it.
    assert_eq!(
        edns0("rewrite edns0 subnet append 16 56").rewrite(&mut m, &e),
        None
    );
    edns0("rewrite edns0 subnet replace 16 56").rewrite(&mut m, &e);
    assert_eq!(opts(&m), vec![(8, vec![0, 1, 16, 0, 192, 0])]);
}

#[test]
fn edns0_reverts_apply_to_the_reply_opt() {
    // Two records plus the OPT: a Remove applies once per record, so up to three options go.
    let mut reply = with_opts(&[(100, b"a"), (100, b"b"), (100, b"c"), (100, b"d"), (7, b"")]);
    reply.header.qr = true;
    for i in 0..2 {
        reply.answers.push(Record::new(
            Name::parse("a.example.").unwrap(),
            30,
            RData::A(std::net::Ipv4Addr::new(192, 0, 2, i)),
        ));
    }
    rewrite_reply(&mut reply, &[ResponseRule::Edns(Revert::Remove(100))]);
    assert_eq!(opts(&reply), vec![(100, b"d".to_vec()), (7, vec![])]);
    rewrite_reply(
        &mut reply,
        &[ResponseRule::Edns(Revert::Restore(EdnsOption {
            code: 100,
            data: b"orig".to_vec(),
        }))],
    );
    assert_eq!(opts(&reply), vec![(100, b"orig".to_vec()), (7, vec![])]);
}

#[test]
fn cname_rules_parse_and_match() {
    let c = |line: &str| match one(line).kind {
        Kind::Cname(c) => c,
        k => panic!("{k:?}"),
    };
    let r = c("rewrite cname Old.Example.NET new.example.net");
    assert_eq!(
        (r.from.as_str(), r.to.as_str()),
        ("old.example.net.", "new.example.net.")
    );
    assert_eq!(
        r.new_target("old.example.net."),
        Some("new.example.net.".into())
    );
    assert_eq!(r.new_target("x.old.example.net."), None);
    let r = c("rewrite cname prefix foo. bar.");
    assert_eq!(r.new_target("foo.example."), Some("bar.example.".into()));
    assert_eq!(r.new_target("x.foo.example."), None);
    let r = c("rewrite cname suffix .cdn.example.net. .other.cdn.com.");
    assert_eq!(
        r.new_target("a.cdn.example.net."),
        Some("a.other.cdn.com.".into())
    );
    let r = c("rewrite cname substring cdn edge");
    assert_eq!(
        r.new_target("a.cdn.cdn.org."),
        Some("a.edge.edge.org.".into())
    );
    let r = c("rewrite cname regex (.*)\\.CDN\\.example\\.net\\. {1}.other.cdn.com.");
    assert_eq!(
        r.new_target("my-app.com.cdn.example.net."),
        Some("my-app.com.other.cdn.com.".into())
    );
    assert_eq!(r.new_target("my-app.com.cdn.example.org."), None);
    // The default mode is stop, like every rule; a cname rule always "matches".
    let rule = one("rewrite cname a b");
    assert_eq!(rule.mode, Mode::Stop);
    assert!(rule.rewrite(&mut q("x.", RType::A)).unwrap().is_some());
}
