//! End-to-end tests of the `template` plugin: the real binary, queried over UDP and TCP on
//! 127.0.0.1, whole replies checked (rcode, flags, sections, TTLs, EDNS options), metrics read
//! from /metrics, bad templates refused at start and on reload.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start(cf: &str, port: u16) -> Sextant {
    let mut s = Sextant::start(bin(), cf);
    s.wait_dns(addr(port), Duration::from_secs(10))
        .expect("server answers");
    s
}

fn both(port: u16, q: &Query) -> [Reply; 2] {
    [
        udp(addr(port), q, T).unwrap(),
        tcp(addr(port), q, T).unwrap(),
    ]
}

fn metric(m: SocketAddr, line_start: &str) -> Option<String> {
    let (_, body) = http_get(m, "/metrics", T).unwrap();
    body.lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l.to_string())
}

fn corefile(port: u16, mport: u16) -> String {
    format!(
        r#"example:{port} in-addr.arpa:{port} {{
    prometheus 127.0.0.1:{mport}
    template IN A example {{
        match (^|[.])ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
        match "^ip0a(?P<b>[a-f0-9]{{2}})(?P<c>[a-f0-9]{{2}})(?P<d>[a-f0-9]{{2}})[.]example[.]$"
        answer "{{{{ .Name }}}} 60 IN A {{{{ or .Group.a \"10\" }}}}.{{{{ if eq (len .Group.b) 2 }}}}{{{{ parseInt .Group.b 16 8 }}}}.{{{{ parseInt .Group.c 16 8 }}}}.{{{{ parseInt .Group.d 16 8 }}}}{{{{ else }}}}{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}{{{{ end }}}}"
        authority "example. 60 IN NS ns0.example."
        additional "ns0.example. 60 IN A 203.0.113.8"
        fallthrough
    }}
    template IN PTR in-addr.arpa {{
        match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$
        answer "{{{{ .Name }}}} 60 IN PTR ip-{{{{ .Group.a }}}}-{{{{ .Group.b }}}}-{{{{ .Group.c }}}}-{{{{ .Group.d }}}}.example."
    }}
    template ANY ANY invalid.example {{
        rcode NXDOMAIN
        authority "invalid.example. 60 {{{{ .Class }}}} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
        ederror 21 "Blocked according to RFC2606"
    }}
    template IN TXT example {{
        match "^(?P<word>[a-z]+)[.]txt[.]example[.]$"
        answer "{{{{ .Name }}}} 30 IN TXT \"{{{{ .Type }}}} {{{{ .Class }}}} {{{{ .Zone }}}} {{{{ index .Match 1 }}}} {{{{ .Group.word }}}} {{{{ .Remote }}}} {{{{ .Question.Qtype }}}}\""
        fallthrough
    }}
    template IN MX example {{
        match ^badrr[.]
        answer "{{{{ .Name }}}} 60 IN MX ten {{{{ .Name }}}}"
        fallthrough
    }}
    template IN MX example {{
        match ^badtmpl[.]
        answer "{{{{ index .Match 7 }}}}"
        fallthrough
    }}
    template IN MX example {{
        match ^mx[.]
        answer "{{{{ .Name }}}} 60 IN MX 10 {{{{ .Name }}}}"
    }}
    template IN SRV example {{
        rcode SERVFAIL
    }}
}}
"#
    )
}

#[test]
fn regex_groups_parse_int_sections_and_ptr() {
    let (port, mport) = (free_port(), free_port());
    let _s = start(&corefile(port, mport), port);
    for r in both(
        port,
        &Query::new("IP-10-1-2-3.example.", RecordType::A).id(9),
    ) {
        assert_eq!(r.id(), 9);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.question().unwrap(), "IP-10-1-2-3.example. IN A");
        assert_eq!(r.answers(), vec!["ip-10-1-2-3.example. 60 IN A 10.1.2.3"]);
        assert_eq!(r.authority(), vec!["example. 60 IN NS ns0.example."]);
        assert_eq!(r.additional(), vec!["ns0.example. 60 IN A 203.0.113.8"]);
    }
    // Second regex, hexadecimal groups through parseInt; `or` gives the missing `a`.
    let r = udp(
        addr(port),
        &Query::new("ip0a7b0cff.example.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(
        r.answers(),
        vec!["ip0a7b0cff.example. 60 IN A 10.123.12.255"]
    );
    // A wildcard-like prefix matches too.
    let r = udp(
        addr(port),
        &Query::new("x.ip-1-2-3-4.example.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.answers(), vec!["x.ip-1-2-3-4.example. 60 IN A 1.2.3.4"]);
    for r in both(port, &Query::new("4.3.2.1.in-addr.arpa.", RecordType::PTR)) {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(
            r.answers(),
            vec!["4.3.2.1.in-addr.arpa. 60 IN PTR ip-1-2-3-4.example."]
        );
        assert!(r.authority().is_empty() && r.additional().is_empty());
    }
    // PTR template without fallthrough: a name no regex matches is SERVFAIL.
    let r = udp(
        addr(port),
        &Query::new("x.in-addr.arpa.", RecordType::PTR),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert!(r.answers().is_empty());
    // Another type in the zone: no template matches the type; falls to the end of the chain.
    let r = udp(
        addr(port),
        &Query::new("4.3.2.1.in-addr.arpa.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn rcode_authority_ederror_and_data_fields() {
    let (port, mport) = (free_port(), free_port());
    let _s = start(&corefile(port, mport), port);
    for q in [
        Query::new("a.invalid.example.", RecordType::AAAA).edns(1232),
        Query::new("invalid.example.", RecordType::MX).edns(1232),
    ] {
        let r = udp(addr(port), &q, T).unwrap();
        assert_eq!(r.rcode_name(), "NXDOMAIN");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert!(r.answers().is_empty());
        assert_eq!(
            r.authority(),
            vec!["invalid.example. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"]
        );
        let e = r.edns().unwrap();
        let mut want = 21u16.to_be_bytes().to_vec();
        want.extend_from_slice(b"Blocked according to RFC2606");
        assert_eq!(e.options, vec![(15, want)]);
        assert!(e.do_bit, "CoreDNS sets DO on the OPT it adds for ederror");
    }
    let r = udp(
        addr(port),
        &Query::new("Hello.TXT.example.", RecordType::TXT),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(
        r.answers(),
        vec!["hello.txt.example. 30 IN TXT TXT IN example. hello hello 127.0.0.1 16"]
    );
    let r = udp(addr(port), &Query::new("mx.example.", RecordType::MX), T).unwrap();
    assert_eq!(r.answers(), vec!["mx.example. 60 IN MX 10 mx.example."]);
    // SERVFAIL as the template's rcode: no records.
    let r = udp(addr(port), &Query::new("x.example.", RecordType::SRV), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert_eq!(r.flags(), "qr,rd");
}

#[test]
fn failures_are_servfail_and_counted() {
    let (port, mport) = (free_port(), free_port());
    let _s = start(&corefile(port, mport), port);
    let m = addr(mport);
    let r = udp(addr(port), &Query::new("badrr.example.", RecordType::MX), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    let r = udp(
        addr(port),
        &Query::new("badtmpl.example.", RecordType::MX),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    let server = format!("dns://:{port}");
    assert_eq!(
        metric(m, &format!("coredns_template_rr_failures_total{{class=\"IN\",section=\"answer\",server=\"{server}\",template=\"{{{{.Name}}}} 60 IN MX ten {{{{.Name}}}}\",type=\"MX\",view=\"\",zone=\"example.\"}}")).as_deref(),
        Some(format!("coredns_template_rr_failures_total{{class=\"IN\",section=\"answer\",server=\"{server}\",template=\"{{{{.Name}}}} 60 IN MX ten {{{{.Name}}}}\",type=\"MX\",view=\"\",zone=\"example.\"}} 1").as_str())
    );
    assert!(metric(m, &format!("coredns_template_template_failures_total{{class=\"IN\",section=\"answer\",server=\"{server}\",template=\"{{{{index .Match 7}}}}\",type=\"MX\",view=\"\",zone=\"example.\"}} 1")).is_some());
    // Every template that matched counted, failures included.
    assert!(metric(m, &format!("coredns_template_matches_total{{class=\"IN\",server=\"{server}\",type=\"MX\",view=\"\",zone=\"example.\"}} 2")).is_some());
}

#[test]
fn cname_targets_are_resolved_through_the_server() {
    let up = Upstream::records(&[
        "google.com. 300 IN A 192.0.2.10",
        "google.com. 300 IN AAAA 2001:db8::10",
    ])
    .unwrap();
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n    template IN ANY foogle.com {{\n        match \"^foogle\\.com\\.$\"\n        answer \"foogle.com 60 IN CNAME google.com\"\n        upstream\n    }}\n    forward . {}\n}}\n",
        up.addr()
    );
    let _s = start(&cf, port);
    for (t, target) in [
        (RecordType::A, "google.com. 300 IN A 192.0.2.10"),
        (RecordType::AAAA, "google.com. 300 IN AAAA 2001:db8::10"),
    ] {
        let r = udp(addr(port), &Query::new("foogle.com.", t), T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(
            r.answers(),
            vec!["foogle.com. 60 IN CNAME google.com.", target]
        );
    }
    // (`upstream` is accepted and has no effect: targets are always resolved, as in CoreDNS.)
    // Other types: the CNAME alone.
    let r = udp(addr(port), &Query::new("foogle.com.", RecordType::MX), T).unwrap();
    assert_eq!(r.answers(), vec!["foogle.com. 60 IN CNAME google.com."]);
    // Names the template does not cover go on to forward.
    let r = udp(addr(port), &Query::new("google.com.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["google.com. 300 IN A 192.0.2.10"]);
}

#[test]
fn aks_default_templates_and_metadata() {
    let up = Upstream::records(&[
        "a.b.c.d.internal.cloudapp.net. 30 IN A 192.0.2.1",
        "vm.internal.cloudapp.net. 30 IN A 192.0.2.2",
    ])
    .unwrap();
    let port = free_port();
    let cf = format!(
        r#".:{port} {{
    metadata
    template ANY ANY internal.cloudapp.net {{
        match "^(?:[^.]+\.){{4,}}internal\.cloudapp\.net\.$"
        rcode NXDOMAIN
        fallthrough
    }}
    template IN TXT meta.example {{
        answer "{{{{ .Name }}}} 5 IN TXT \"{{{{ .Meta \"kubernetes/kind\" }}}}|{{{{ .Meta \"none/x\" }}}}\""
    }}
    forward . {}
}}
"#,
        up.addr()
    );
    let _s = start(&cf, port);
    let r = udp(
        addr(port),
        &Query::new("a.b.c.d.internal.cloudapp.net.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert!(r.answers().is_empty() && r.authority().is_empty());
    let r = udp(
        addr(port),
        &Query::new("vm.internal.cloudapp.net.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(
        r.answers(),
        vec!["vm.internal.cloudapp.net. 30 IN A 192.0.2.2"]
    );
    assert_eq!(up.queries_for("a.b.c.d.internal.cloudapp.net."), 0);
    let r = udp(addr(port), &Query::new("meta.example.", RecordType::TXT), T).unwrap();
    assert_eq!(r.answers(), vec!["meta.example. 5 IN TXT |"]);
}

#[test]
fn bad_templates_name_file_line_column_and_reload_keeps_the_old_config() {
    for (body, want) in [
        (
            "    template IN A {\n        answer \"{{ .Name | upper }}\"\n    }\n",
            ":3:16: answer: could not compile template: {{ .Name | upper }}, template: answer:1: function \"upper\" not defined",
        ),
        (
            "    template IN A {\n        match \"a(b\"\n    }\n",
            ":3:15: match: could not parse regex: a(b,",
        ),
        (
            "    template IN A {\n        answer \"{{ define \\\"x\\\" }}{{ end }}\"\n    }\n",
            ":3:16: answer: could not compile template",
        ),
        ("    template XX A\n", ":2:14: template: invalid query class XX"),
    ] {
        let cf = format!(".:53 {{\n{body}}}\n");
        let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
        assert_ne!(code, 0, "{cf}");
        let all = format!("{out}{err}");
        assert!(all.contains(want), "{cf}\nwant {want}\ngot {all}");
    }

    let port = free_port();
    let good = format!(".:{port} {{\n    template IN A example {{\n        answer \"{{{{ .Name }}}} 5 IN A 192.0.2.1\"\n    }}\n}}\n");
    let s = start(&good, port);
    let bad = good.replace("192.0.2.1\"", "192.0.2.2\"\n        match \"(\"");
    s.rewrite_corefile(&bad).unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("could not parse regex", Duration::from_secs(10))
        .unwrap();
    let r = udp(addr(port), &Query::new("a.example.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["a.example. 5 IN A 192.0.2.1"]);
    let _ = s.count_lines("[ERROR]");
}

#[test]
fn class_any_answers_ch_and_fallthrough_zones_limit_falling_through() {
    let port = free_port();
    let cf = format!(
        r#".:{port} {{
    template ANY ANY invalid {{
        rcode NXDOMAIN
        authority "invalid. 60 {{{{ .Class }}}} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
    }}
    template IN A example.org example.net {{
        match ^only[.]
        answer "{{{{ .Name }}}} 60 IN A 192.0.2.7"
        fallthrough example.net
    }}
    whoami
}}
"#
    );
    let _s = start(&cf, port);
    // A CH question is refused before any plugin, as CoreDNS does without chaos in the block.
    let r = udp(
        addr(port),
        &Query::new("a.invalid.", RecordType::TXT).class(3),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    let r = udp(addr(port), &Query::new("a.invalid.", RecordType::TXT), T).unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(
        r.authority(),
        vec!["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"]
    );
    let r = udp(
        addr(port),
        &Query::new("only.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.answers(), vec!["only.example.org. 60 IN A 192.0.2.7"]);
    // No regex match: example.net falls through to whoami, example.org does not.
    let r = udp(addr(port), &Query::new("x.example.net.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.additional().len(), 2, "whoami answered");
    let r = udp(addr(port), &Query::new("x.example.org.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    // Another type than the template's: the next plugin.
    let r = udp(
        addr(port),
        &Query::new("x.example.org.", RecordType::AAAA),
        T,
    )
    .unwrap();
    assert_eq!(r.additional().len(), 2, "whoami answered");
}
