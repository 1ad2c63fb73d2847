//! End-to-end tests of the `view` plugin: several server blocks for the same zone and port,
//! chosen per query by their view expressions, queried over real UDP/TCP from different
//! loopback client addresses (127.0.0.1, 127.0.0.2, ::1). With `COREDNS_BIN` set, the same
//! Corefiles are also run on the real CoreDNS and the answers compared.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(5);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v6(port: u16) -> SocketAddr {
    format!("[::1]:{port}").parse().unwrap()
}

fn start_with(binary: &Path, corefile: &str, port: u16) -> Sextant {
    let mut s = Sextant::builder(binary, corefile).start();
    s.wait_dns(v4(port), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("server answers: {e}\n{}", s.output()));
    s
}

fn start(corefile: &str, port: u16) -> Sextant {
    start_with(bin(), corefile, port)
}

/// (rcode, answers) of `name`/`qtype` asked from `src`.
fn ask(src: &str, server: SocketAddr, name: &str, qtype: RecordType) -> (String, Vec<String>) {
    let r = udp_from(src.parse().unwrap(), server, &Query::new(name, qtype), T)
        .unwrap_or_else(|e| panic!("{name} {qtype} from {src}: {e}"));
    (r.rcode_name(), r.answers_sorted())
}

fn a(src: &str, port: u16, name: &str) -> Vec<String> {
    ask(src, v4(port), name, RecordType::A).1
}

/// The README's split-DNS example (without the stray brace of CoreDNS's README).
fn split_dns(port: u16) -> String {
    format!(
        ".:{port} {{\n  view example1 {{\n    expr incidr(client_ip(), '127.0.0.0/24')\n  }}\n  hosts {{\n    1.1.1.1 test\n  }}\n}}\n\n\
         .:{port} {{\n  view example2 {{\n    expr incidr(client_ip(), '192.168.0.0/16')\n  }}\n  hosts {{\n    2.2.2.2 test\n  }}\n}}\n\n\
         .:{port} {{\n  view v6_example1 {{\n    expr incidr(client_ip(), '2001:0DB8::/32')\n  }}\n  hosts {{\n    2001:0DB8::1 test\n  }}\n}}\n\n\
         .:{port} {{\n  hosts {{\n    3.3.3.3 test\n  }}\n}}\n"
    )
}

#[test]
fn client_address_selects_the_block() {
    let port = free_port();
    let _s = start(&split_dns(port), port);
    assert_eq!(
        a("127.0.0.1:0", port, "test."),
        vec!["test. 3600 IN A 1.1.1.1"]
    );
    // 127.0.1.2 is outside 127.0.0.0/24: the catch-all block answers.
    assert_eq!(
        a("127.0.1.2:0", port, "test."),
        vec!["test. 3600 IN A 3.3.3.3"]
    );
    let (rcode, ans) = ask("[::1]:0", v6(port), "test.", RecordType::A);
    assert_eq!(
        (rcode.as_str(), ans),
        ("NOERROR", vec!["test. 3600 IN A 3.3.3.3".to_string()])
    );
    // The first block's hosts has no AAAA for test.: NOERROR, no answer (not the catch-all's).
    let r = udp(v4(port), &Query::new("test.", RecordType::AAAA), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.answers().is_empty());
    assert!(r.has_flag("aa"));
    // Over TCP the same view applies.
    let r = tcp(v4(port), &Query::new("test.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), vec!["test. 3600 IN A 1.1.1.1"]);
}

#[test]
fn query_type_and_name_select_the_upstream() {
    let answering = |ip: &'static str| {
        Upstream::start(move |req: &UpstreamRequest| {
            let rr = format!("{} 60 IN TXT \"{ip}\"", req.name());
            let mut b = req.reply();
            if req.qtype() == RecordType::A {
                b = b.answer(&format!("{} 60 IN A {ip}", req.name()));
            } else {
                b = b.answer(&rr);
            }
            b.action()
        })
        .unwrap()
    };
    let six = answering("10.0.0.6");
    let two = answering("10.0.0.2");
    let one = answering("10.0.0.1");
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  view bytype {{\n    expr type() in ['A', 'AAAA']\n  }}\n  forward . {}\n}}\n\
         .:{port} {{\n  view byname {{\n    expr name() matches '^abc\\\\..*\\\\.example\\\\.com\\\\.$'\n  }}\n  forward . {}\n}}\n\
         .:{port} {{\n  forward . {}\n}}\n",
        six.addr(),
        two.addr(),
        one.addr()
    );
    let _s = start(&cf, port);
    assert_eq!(
        a("127.0.0.1:0", port, "x.example.org."),
        vec!["x.example.org. 60 IN A 10.0.0.6"]
    );
    let (_, txt) = ask(
        "127.0.0.1:0",
        v4(port),
        "abc.d.e.example.com.",
        RecordType::TXT,
    );
    assert_eq!(txt, vec!["abc.d.e.example.com. 60 IN TXT 10.0.0.2"]);
    let (_, txt) = ask("127.0.0.1:0", v4(port), "abc.example.com.", RecordType::TXT);
    assert_eq!(
        txt,
        vec!["abc.example.com. 60 IN TXT 10.0.0.1"],
        "needs a label between"
    );
    let (_, txt) = ask(
        "127.0.0.1:0",
        v4(port),
        "ABC.X.Example.COM.",
        RecordType::TXT,
    );
    assert_eq!(txt.len(), 1);
    assert!(
        txt[0].ends_with("10.0.0.2"),
        "name() is lower-cased: {txt:?}"
    );
}

#[test]
fn every_expression_must_hold_and_functions_see_the_request() {
    let port = free_port();
    // Each block answers probe.test. with its own address; the first whose expressions all
    // hold wins.
    let block = |view: &str, exprs: &[&str], ip: &str| {
        let e: String = exprs.iter().map(|x| format!("    expr {x}\n")).collect();
        format!(
            ".:{port} {{\n  view {view} {{\n{e}  }}\n  hosts {{\n    {ip} probe.test\n  }}\n}}\n"
        )
    };
    let srv = format!("server_port() == '{port}' && port() != '' && size() > 20");
    let cf = [
        block(
            "both",
            &["proto() == 'tcp'", "client_ip() == '127.0.0.2'"],
            "10.1.0.1",
        ),
        block("tcp", &["proto() == 'tcp'"], "10.1.0.2"),
        block("do", &["do() && bufsize() == 4096"], "10.1.0.3"),
        block(
            "id",
            &["id() == 4242 && opcode() == 0 && class() == 'IN'"],
            "10.1.0.4",
        ),
        block("srv", &[&srv, "metadata('view/name') == ''"], "10.1.0.5"),
        format!(".:{port} {{\n  hosts {{\n    10.1.0.9 probe.test\n  }}\n}}\n"),
    ]
    .concat();
    let _s = start(&cf, port);
    let q = Query::new("probe.test.", RecordType::A);
    let only = |r: Reply| r.answers().first().cloned().unwrap_or_default();
    // TCP from 127.0.0.1: the first block needs 127.0.0.2 as well, so the second answers.
    assert!(only(tcp(v4(port), &q, T).unwrap()).ends_with("10.1.0.2"));
    assert!(only(udp(v4(port), &q.clone().edns(4096).do_bit(), T).unwrap()).ends_with("10.1.0.3"));
    // bufsize() is the advertised size: 1232 is not 4096.
    assert!(only(udp(v4(port), &q.clone().edns(1232).do_bit(), T).unwrap()).ends_with("10.1.0.5"));
    assert!(only(udp(v4(port), &q.clone().id(4242), T).unwrap()).ends_with("10.1.0.4"));
    assert!(only(udp(v4(port), &q, T).unwrap()).ends_with("10.1.0.5"));
    let r = udp_from("127.0.0.2:0".parse().unwrap(), v4(port), &q, T).unwrap();
    assert!(
        only(r).ends_with("10.1.0.5"),
        "udp from 127.0.0.2 is not tcp"
    );
}

#[test]
fn a_zone_whose_views_all_fail_falls_back_to_the_parent_zone() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n  view nobody {{\n    expr client_ip() == '192.0.2.1'\n  }}\n  hosts {{\n    10.0.0.1 www.example.org\n  }}\n}}\n\
         .:{port} {{\n  hosts {{\n    10.0.0.2 www.example.org\n  }}\n}}\n"
    );
    let _s = start(&cf, port);
    assert_eq!(
        a("127.0.0.1:0", port, "www.example.org."),
        vec!["www.example.org. 3600 IN A 10.0.0.2"]
    );
    // Only views and no catch-all: REFUSED, like a zone nobody serves.
    let port2 = free_port();
    let cf = format!(
        "example.org:{port2} {{\n  view nobody {{\n    expr client_ip() == '192.0.2.1'\n  }}\n  hosts {{\n    10.0.0.1 www.example.org\n  }}\n}}\n"
    );
    let _s2 = start_with(bin(), &cf, port2);
    let (rcode, _) = ask("127.0.0.1:0", v4(port2), "www.example.org.", RecordType::A);
    assert_eq!(rcode, "REFUSED");
}

#[test]
fn a_catch_all_before_a_view_shadows_it() {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  hosts {{\n    3.3.3.3 test\n  }}\n}}\n\
         .:{port} {{\n  view local {{\n    expr incidr(client_ip(), '127.0.0.0/8')\n  }}\n  hosts {{\n    1.1.1.1 test\n  }}\n}}\n"
    );
    let _s = start(&cf, port);
    assert_eq!(
        a("127.0.0.1:0", port, "test."),
        vec!["test. 3600 IN A 3.3.3.3"]
    );
}

#[test]
fn metrics_carry_the_view_label() {
    let port = free_port();
    let m = free_addr();
    let cf = format!(
        ".:{port} {{\n  prometheus {m}\n  view local {{\n    expr incidr(client_ip(), '127.0.0.0/24')\n  }}\n  cache 30\n  hosts {{\n    1.1.1.1 test\n  }}\n}}\n\
         .:{port} {{\n  prometheus {m}\n  hosts {{\n    3.3.3.3 test\n  }}\n}}\n"
    );
    let _s = start(&cf, port);
    a("127.0.0.1:0", port, "test.");
    a("127.0.1.1:0", port, "test.");
    let text = http_get(m, "/metrics", T).unwrap().1;
    let has = |needle: &str| {
        assert!(
            text.lines().any(|l| l.contains(needle)),
            "no line with {needle} in\n{}",
            text.lines()
                .filter(|l| l.contains("view="))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    has(&format!(
        "coredns_dns_requests_total{{family=\"1\",proto=\"udp\",server=\"dns://:{port}\",type=\"A\",view=\"local\",zone=\".\"}}"
    ));
    has(&format!(
        "coredns_dns_requests_total{{family=\"1\",proto=\"udp\",server=\"dns://:{port}\",type=\"A\",view=\"\",zone=\".\"}}"
    ));
    has(&format!(
        "coredns_dns_responses_total{{plugin=\"hosts\",rcode=\"NOERROR\",server=\"dns://:{port}\",view=\"local\",zone=\".\"}}"
    ));
    has(&format!(
        "coredns_plugin_enabled{{name=\"view\",server=\"dns://:{port}\",view=\"local\",zone=\".\"}} 1"
    ));
    has(&format!(
        "coredns_cache_requests_total{{server=\"dns://:{port}\",view=\"local\",zones=\".\"}}"
    ));
}

#[test]
fn bad_views_fail_at_start_with_their_position() {
    let cases: &[(&str, &str)] = &[
        (
            ". {\n  view v {\n    expr name() == 1\n  }\n  whoami\n}\n",
            "Corefile:3:17: view: invalid expression \"name() == 1\": invalid operation: == (mismatched types string and int) (1:8)",
        ),
        (
            ". {\n  view v {\n    expr nosuch()\n  }\n  whoami\n}\n",
            "Corefile:3:10: view: invalid expression \"nosuch()\": unknown name nosuch (1:1)",
        ),
        (
            ". {\n  view v {\n    expr incidr(client_ip())\n  }\n  whoami\n}\n",
            "Corefile:3:10: view: invalid expression \"incidr(client_ip())\": not enough arguments to call incidr (1:1)",
        ),
        (". {\n  view v {\n    when x\n  }\n  whoami\n}\n", "Corefile:3:5: when: unknown property 'when'"),
        (". {\n  view\n  whoami\n}\n", "Corefile:2:3: view:"),
        (". {\n  view a\n  view b\n  whoami\n}\n", "Corefile:3:3: view: this plugin can only be used once per Server Block"),
        (
            ".:1053 {\n  whoami\n}\n.:1053 {\n  whoami\n}\n",
            "cannot serve dns://.:1053 - it is already defined",
        ),
    ];
    for (cf, want) in cases {
        let (code, out, err) = Sextant::check(bin(), cf).unwrap();
        let all = format!("{out}{err}");
        assert_ne!(code, 0, "{cf} passed -check");
        let dir_prefix_stripped: String = all
            .lines()
            .map(|l| match l.find("Corefile:") {
                Some(i) => &l[i..],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            dir_prefix_stripped.contains(want),
            "{cf}\nwanted {want}\ngot {all}"
        );
    }
    // Several views and one catch-all on one zone and port are fine.
    let port = free_port();
    let (code, out, err) = Sextant::check(bin(), &split_dns(port)).unwrap();
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_bad_view_on_reload_keeps_the_running_configuration() {
    let port = free_port();
    let s = start(&split_dns(port), port);
    let bad = split_dns(port).replace("'192.168.0.0/16')", "'192.168.0.0/16') &&");
    s.rewrite_corefile(&bad).unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("unexpected end of expression", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", s.output()));
    assert_eq!(
        a("127.0.0.1:0", port, "test."),
        vec!["test. 3600 IN A 1.1.1.1"]
    );
    assert_eq!(
        a("127.0.1.2:0", port, "test."),
        vec!["test. 3600 IN A 3.3.3.3"]
    );
    // A good reload with a changed view takes effect.
    s.rewrite_corefile(&split_dns(port).replace("'127.0.0.0/24'", "'127.0.1.0/24'"))
        .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a("127.0.1.2:0", port, "test.") != vec!["test. 3600 IN A 1.1.1.1"] {
        assert!(
            Instant::now() < deadline,
            "reload did not apply\n{}",
            s.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        a("127.0.0.1:0", port, "test."),
        vec!["test. 3600 IN A 3.3.3.3"]
    );
}

/// The same Corefiles on the real CoreDNS: every answer must agree.
#[test]
fn answers_match_coredns() {
    let Some(coredns) = coredns_bin() else {
        eprintln!("skipping answers_match_coredns: COREDNS_BIN is not set");
        return;
    };
    let corefiles = |port: u16| {
        vec![
            split_dns(port),
            format!(
                "example.org:{port} {{\n  view nobody {{\n    expr client_ip() == '192.0.2.1'\n  }}\n  hosts {{\n    10.0.0.1 www.example.org\n  }}\n}}\n\
                 .:{port} {{\n  hosts {{\n    10.0.0.2 www.example.org\n  }}\n}}\n"
            ),
            format!(
                ".:{port} {{\n  view t {{\n    expr type() == 'AAAA' || name() startsWith 'six'\n    expr !(client_ip() in ['127.0.1.9'])\n  }}\n  hosts {{\n    2001:db8::6 six.test\n    10.6.6.6 six.test\n  }}\n}}\n\
                 .:{port} {{\n  view s1 {{\n    expr server_ip() == '::'\n  }}\n  hosts {{\n    10.5.5.1 six.test other.test\n  }}\n}}\n\
                 .:{port} {{\n  view s2 {{\n    expr server_ip() == '0.0.0.0'\n  }}\n  hosts {{\n    10.5.5.2 six.test other.test\n  }}\n}}\n\
                 .:{port} {{\n  view s3 {{\n    expr server_ip() == '127.0.0.1' && port() != '53'\n  }}\n  hosts {{\n    10.5.5.3 six.test other.test\n  }}\n}}\n\
                 .:{port} {{\n  hosts {{\n    10.9.9.9 six.test other.test\n  }}\n}}\n"
            ),
        ]
    };
    let questions: &[(&str, &str, RecordType)] = &[
        ("127.0.0.1:0", "test.", RecordType::A),
        ("127.0.1.2:0", "test.", RecordType::A),
        ("127.0.0.1:0", "test.", RecordType::AAAA),
        ("127.0.0.1:0", "www.example.org.", RecordType::A),
        ("127.0.0.1:0", "six.test.", RecordType::A),
        ("127.0.1.9:0", "six.test.", RecordType::A),
        ("127.0.0.1:0", "six.test.", RecordType::AAAA),
        ("127.0.0.1:0", "other.test.", RecordType::A),
    ];
    for i in 0..corefiles(0).len() {
        let (p1, p2) = (free_port(), free_port());
        let _ours = start(&corefiles(p1)[i], p1);
        let _theirs = start_with(&coredns, &corefiles(p2)[i], p2);
        for (src, name, qt) in questions {
            let ours = ask(src, v4(p1), name, *qt);
            let theirs = ask(src, v4(p2), name, *qt);
            assert_eq!(ours, theirs, "Corefile {i}: {name} {qt} from {src}");
            // Over TCP and from ::1 too.
            let q = Query::new(name, *qt);
            let ours = tcp(v4(p1), &q, T).unwrap();
            let theirs = tcp(v4(p2), &q, T).unwrap();
            assert_eq!(
                ours.answers_sorted(),
                theirs.answers_sorted(),
                "TCP {name} {qt}"
            );
            let ours = ask("[::1]:0", v6(p1), name, *qt);
            let theirs = ask("[::1]:0", v6(p2), name, *qt);
            assert_eq!(ours, theirs, "Corefile {i}: {name} {qt} from ::1");
        }
    }
}

/// Two blocks of one zone with `metadata`: the view's expression reads `metadata()` (the block's
/// metadata is collected before its view is asked, as CoreDNS's server does), the view publishes
/// `view/name`, and the block chosen after a view that failed collects its own metadata afresh
/// (no `view/name` there).
fn metadata_corefile(port: u16) -> String {
    format!(
        r#"example.org:{port} {{
    metadata
    view inner {{
        expr metadata('view/name') == 'inner' && incidr(client_ip(), '127.0.1.0/24')
    }}
    template IN TXT example.org {{
        answer "{{{{ .Name }}}} 60 IN TXT \"view={{{{ .Meta \"view/name\" }}}}\""
    }}
}}
example.org:{port} {{
    metadata
    template IN TXT example.org {{
        answer "{{{{ .Name }}}} 60 IN TXT \"view={{{{ .Meta \"view/name\" }}}}\""
    }}
}}
"#
    )
}

#[test]
fn view_expressions_read_the_blocks_metadata() {
    let port = free_port();
    let _s = start(&metadata_corefile(port), port);
    let txt = |src: &str| ask(src, v4(port), "a.example.org.", RecordType::TXT);
    assert_eq!(
        txt("127.0.1.4:0"),
        (
            "NOERROR".to_string(),
            vec!["a.example.org. 60 IN TXT view=inner".to_string()]
        )
    );
    assert_eq!(
        txt("127.0.0.1:0"),
        (
            "NOERROR".to_string(),
            vec!["a.example.org. 60 IN TXT view=".to_string()]
        )
    );
    let Some(coredns) = coredns_bin() else {
        eprintln!("COREDNS_BIN not set: view metadata answers not compared with CoreDNS");
        return;
    };
    let p2 = free_port();
    let _t = start_with(&coredns, &metadata_corefile(p2), p2);
    for src in ["127.0.1.4:0", "127.0.0.1:0"] {
        assert_eq!(
            txt(src),
            ask(src, v4(p2), "a.example.org.", RecordType::TXT),
            "from {src}: differs from CoreDNS"
        );
    }
}
