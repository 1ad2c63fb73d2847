//! Parser tests through the public API: structure, the reference Corefiles, snippets, env, errors.

use std::path::Path;

use sextant_corefile::{parse_str, parse_str_with_env, Corefile, Directive, Error, Scheme};

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Corefile {
    match parse_str_with_env("Corefile", text, Path::new("/nonexistent-dir"), &no_env) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}\n---\n{text}"),
    }
}

fn parse_err(text: &str) -> Error {
    match parse_str_with_env("Corefile", text, Path::new("/nonexistent-dir"), &no_env) {
        Ok(c) => panic!("expected an error, got {:?}\n---\n{text}", c.blocks),
        Err(e) => e,
    }
}

/// Render directives as a compact string: `name arg arg { sub; sub }` joined by "; ".
fn render(ds: &[Directive]) -> String {
    ds.iter()
        .map(|d| {
            let mut s = d.name.text.clone();
            for a in &d.args {
                s.push(' ');
                s.push_str(&a.text);
            }
            if let Some(b) = &d.block {
                s.push_str(" { ");
                s.push_str(&render(b));
                s.push_str(" }");
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn keys(c: &Corefile, i: usize) -> Vec<String> {
    c.blocks[i].keys.iter().map(|k| k.text.clone()).collect()
}

const KUBEADM: &str = r#".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"#;

#[test]
fn kubeadm_corefile() {
    let c = parse(KUBEADM);
    assert_eq!(c.blocks.len(), 1);
    assert_eq!(keys(&c, 0), vec![".:53"]);
    assert_eq!(
        render(&c.blocks[0].directives),
        "errors; health { lameduck 5s }; ready; \
         kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure; fallthrough in-addr.arpa ip6.arpa; ttl 30 }; \
         prometheus :9153; forward . /etc/resolv.conf { max_concurrent 1000 }; \
         cache 30 { disable success cluster.local; disable denial cluster.local }; loop; reload; loadbalance"
    );
    let k = &c.blocks[0].directives[3];
    assert_eq!(k.name.text, "kubernetes");
    assert_eq!((k.name.pos.line, k.name.pos.col), (7, 5));
    assert_eq!((k.args[1].pos.line, k.args[1].pos.col), (7, 30));
    let ttl = &k.sub()[2];
    assert_eq!(ttl.name.text, "ttl");
    assert_eq!((ttl.name.pos.line, ttl.name.pos.col), (10, 8));
    assert_eq!(ttl.args[0].text, "30");
    assert!(c.blocks[0].directives[0].block.is_none());
    assert!(c.blocks[0].directives[0].sub().is_empty());
    let za = c.blocks[0].zone_addrs(53).unwrap();
    assert_eq!(za.len(), 1);
    assert_eq!(
        (za[0].scheme, za[0].zone.as_str(), za[0].port),
        (Scheme::Dns, ".", 53)
    );
    assert!(c.files.is_empty());
    assert!(c.warnings.is_empty());
}

const NODELOCAL: &str = r#"__PILLAR__DNS__DOMAIN__:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    health __PILLAR__LOCAL__DNS__:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
    }
"#;

#[test]
fn nodelocal_corefile_template_and_substituted() {
    let c = parse(NODELOCAL);
    assert_eq!(c.blocks.len(), 4);
    assert_eq!(keys(&c, 0), vec!["__PILLAR__DNS__DOMAIN__:53"]);
    assert_eq!(keys(&c, 1), vec!["in-addr.arpa:53"]);
    assert_eq!(keys(&c, 2), vec!["ip6.arpa:53"]);
    assert_eq!(keys(&c, 3), vec![".:53"]);
    assert_eq!(
        render(&c.blocks[0].directives),
        "errors; cache { success 9984 30; denial 9984 5 }; reload; loop; \
         bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__; \
         forward . __PILLAR__CLUSTER__DNS__ { force_tcp }; prometheus :9253; \
         health __PILLAR__LOCAL__DNS__:8080"
    );
    assert_eq!(
        render(&c.blocks[3].directives),
        "errors; cache 30; reload; loop; bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__; \
         forward . __PILLAR__UPSTREAM__SERVERS__; prometheus :9253"
    );

    // What the installer + node-cache produce (IPVS-free iptables mode), with a stub domain appended.
    let text = NODELOCAL
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__SERVER__", "10.96.0.10")
        .replace("__PILLAR__CLUSTER__DNS__", "10.96.0.11")
        .replace("__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf")
        + "acme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10 10.96.0.10\n    forward . 1.2.3.4\n}\n";
    let c = parse(&text);
    assert_eq!(c.blocks.len(), 5);
    let zones: Vec<String> = c
        .blocks
        .iter()
        .flat_map(|b| b.zone_addrs(53).unwrap())
        .map(|z| z.to_string())
        .collect();
    assert_eq!(
        zones,
        vec![
            "dns://cluster.local.:53",
            "dns://in-addr.arpa.:53",
            "dns://ip6.arpa.:53",
            "dns://.:53",
            "dns://acme.local.:53"
        ]
    );
    let health = &c.blocks[0].directives[7];
    assert_eq!(health.arg_strs(), vec!["169.254.20.10:8080"]);
    assert_eq!(
        render(&c.blocks[4].directives),
        "errors; cache 30; bind 169.254.20.10 10.96.0.10; forward . 1.2.3.4"
    );
}

#[test]
fn keys_spaces_commas_and_continuation() {
    let c = parse("a.:53 b.:53, c.:53,d.:53,\n  e.:53 {\n  whoami\n}\n");
    assert_eq!(
        keys(&c, 0),
        vec!["a.:53", "b.:53", "c.:53", "d.:53", "e.:53"]
    );
    assert_eq!(render(&c.blocks[0].directives), "whoami");
    assert_eq!(c.blocks[0].keys[4].pos.line, 2);
}

#[test]
fn brace_on_next_line() {
    let c = parse("example.org\n{\n  whoami\n}\nexample.net {\n log\n}\n");
    assert_eq!(c.blocks.len(), 2);
    assert_eq!(keys(&c, 0), vec!["example.org"]);
    assert_eq!(render(&c.blocks[0].directives), "whoami");
    assert_eq!(render(&c.blocks[1].directives), "log");
}

#[test]
fn braceless_single_block() {
    let c = parse(".:1053\nwhoami\nlog\nforward . 1.1.1.1 {\n force_tcp\n}\n");
    assert_eq!(c.blocks.len(), 1);
    assert_eq!(
        render(&c.blocks[0].directives),
        "whoami; log; forward . 1.1.1.1 { force_tcp }"
    );
    // keys only, nothing else
    let c = parse("example.org");
    assert_eq!(c.blocks.len(), 1);
    assert!(c.blocks[0].directives.is_empty());
    // a snippet before a braceless block is fine (it is not a server block)
    let c = parse("(s) {\n log\n}\n.\nimport s\nwhoami\n");
    assert_eq!(render(&c.blocks[0].directives), "log; whoami");
}

#[test]
fn braceless_block_after_another_block_is_an_error() {
    let e = parse_err("a {\n whoami\n}\nb\n whoami\n");
    assert_eq!(e.pos.to_string(), "Corefile:4:1");
    assert!(e.msg.contains("expected '{'"), "{e}");
}

#[test]
fn nesting_and_one_line_blocks() {
    let c = parse(
        ". {\n  health { lameduck 5s }\n  a 1 {\n    b 2 {\n      c 3\n      d { e }\n    }\n    f\n  }\n  g\n}\n",
    );
    assert_eq!(
        render(&c.blocks[0].directives),
        "health { lameduck 5s }; a 1 { b 2 { c 3; d { e } }; f }; g"
    );
    let d = &c.blocks[0].directives[1].sub()[0].sub()[1];
    assert_eq!(d.name.text, "d");
    assert_eq!(d.sub()[0].name.text, "e");
    // empty blocks
    let c = parse(". {\n  a {\n  }\n  b {}\n}\n");
    assert_eq!(c.blocks[0].directives[0].block.as_deref(), Some(&[][..]));
    // `{}` is a single token, an argument (not a block), as in CoreDNS
    assert_eq!(render(&c.blocks[0].directives), "a {  }; b {}");
    // the server block may close on the last directive's line (lenient; CoreDNS rejects this)
    let c = parse(". { whoami }\nexample.org { log\n}");
    assert_eq!(render(&c.blocks[0].directives), "whoami");
    assert_eq!(render(&c.blocks[1].directives), "log");
}

#[test]
fn directive_ends_at_newline_and_quotes() {
    let c = parse(". {\n  a \"x y\" \"multi\nline\" z\n  b\n  c \"{\" \"}\" \"import\"\n}\n");
    let ds = &c.blocks[0].directives;
    assert_eq!(ds[0].arg_strs(), vec!["x y", "multi\nline", "z"]);
    assert!(ds[0].args[0].quoted && !ds[0].args[2].quoted);
    assert_eq!((ds[0].args[2].pos.line, ds[0].args[2].pos.col), (3, 7));
    assert_eq!(ds[1].name.text, "b");
    // quoted braces and "import" are plain words
    assert_eq!(ds[2].arg_strs(), vec!["{", "}", "import"]);
    assert!(ds[2].block.is_none());
}

#[test]
fn comments_bom_crlf() {
    let c =
        parse("\u{feff}# top\r\n.:53 { # open\r\n  errors # tail\r\n  log#x\r\n#  cache\r\n}\r\n");
    assert_eq!(render(&c.blocks[0].directives), "errors; log");
    assert_eq!(
        (c.blocks[0].keys[0].pos.line, c.blocks[0].keys[0].pos.col),
        (2, 1)
    );
}

#[test]
fn empty_corefile() {
    assert!(parse("").blocks.is_empty());
    assert!(parse("# nothing\n\n").blocks.is_empty());
}

#[test]
fn snippets() {
    let text = "(common) {\n  errors\n  cache 30 {\n    success 10\n  }\n}\n\
                (x) {\n  log\n}\n\
                a.:53 {\n  import common\n  whoami\n}\n\
                b.:53 {\n  forward . 1.1.1.1 {\n    import x\n  }\n  import common\n}\n";
    let c = parse(text);
    assert_eq!(c.blocks.len(), 2, "snippets are not server blocks");
    assert_eq!(
        render(&c.blocks[0].directives),
        "errors; cache 30 { success 10 }; whoami"
    );
    assert_eq!(
        render(&c.blocks[1].directives),
        "forward . 1.1.1.1 { log }; errors; cache 30 { success 10 }"
    );
    // pasted tokens keep the positions of the snippet definition
    let errors = &c.blocks[0].directives[0];
    assert_eq!((errors.name.pos.line, errors.name.pos.col), (2, 3));
    // a snippet can hold whole server blocks, imported at top level
    let c = parse("(blocks) {\n  a {\n    log\n  }\n  b {\n    whoami\n  }\n}\nimport blocks\n");
    assert_eq!(c.blocks.len(), 2);
    assert_eq!(keys(&c, 1), vec!["b"]);
    // a snippet used on the same line as a block's brace, and inside a one-line block
    let c = parse("(s) {\n  log\n}\n. { import s\n}\nx { a { import s }\n}\n");
    assert_eq!(render(&c.blocks[0].directives), "log");
    assert_eq!(render(&c.blocks[1].directives), "a { log }");
    // the same snippet imported many times, nested snippets
    let c = parse("(a) {\n x\n}\n(b) {\n import a\n import a\n}\n. {\n import b\n import b\n}\n");
    assert_eq!(render(&c.blocks[0].directives), "x; x; x; x");
}

#[test]
fn env_substitution() {
    let env = |k: &str| match k {
        "ZONE" => Some("cluster.local".to_string()),
        "PORT" => Some("1053".to_string()),
        "PLUGIN" => Some("whoami".to_string()),
        "TTL" => Some("30".to_string()),
        "SNIP" => Some("s".to_string()),
        "SPACE" => Some("a b".to_string()),
        _ => None,
    };
    let text = "(s) {\n  cache {$TTL}\n}\n{$ZONE}:{%PORT%} {\n  {$PLUGIN}\n  kubernetes {$ZONE} x{$UNSET}y \"q {$ZONE}\" {$SPACE}\n  import {$SNIP}\n}\n";
    let c = parse_str_with_env("Corefile", text, Path::new("/x"), &env).unwrap();
    assert_eq!(keys(&c, 0), vec!["cluster.local:1053"]);
    assert_eq!(
        render(&c.blocks[0].directives),
        "whoami; kubernetes cluster.local xy q cluster.local a b; cache 30"
    );
    assert_eq!(
        c.blocks[0].directives[1].args.len(),
        4,
        "a value with spaces stays one token"
    );
    assert_eq!(
        c.blocks[0].zone_addrs(53).unwrap()[0].to_string(),
        "dns://cluster.local.:1053"
    );
    // the process environment is used by parse_str
    let c = parse_str(
        "Corefile",
        ". {\n  a {$SEXTANT_SURELY_UNSET_VAR}b\n}\n",
        Path::new("/x"),
    )
    .unwrap();
    assert_eq!(render(&c.blocks[0].directives), "a b");
}

#[test]
fn directive_helpers() {
    let c = parse(". {\n  cache 30 a b\n  loop\n}\n");
    let cache = &c.blocks[0].directives[0];
    assert!(cache.arg_count(0, 3).is_ok());
    assert!(cache.arg_count(3, usize::MAX).is_ok());
    let e = cache.arg_count(0, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:2:12: cache: wrong argument count: expected 0 to 1, got 3"
    );
    let e = cache.arg_count(4, 4).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Corefile:2:3: cache: wrong argument count: expected 4, got 3"
    );
    let e = cache.arg_count(5, usize::MAX).unwrap_err();
    assert!(e.msg.contains("at least 5"), "{e}");
    assert_eq!(cache.err("bad").to_string(), "Corefile:2:3: cache: bad");
    assert_eq!(
        cache.err_at(&cache.args[1], "bad zone").to_string(),
        "Corefile:2:12: cache: bad zone"
    );
    assert_eq!(
        cache.args[2].err("", "plain").to_string(),
        "Corefile:2:14: plain"
    );
    assert_eq!(cache.args[2].err("x", "m").directive.as_deref(), Some("x"));
}

/// Every syntax error with its exact position.
#[test]
fn errors_with_positions() {
    let cases: &[(&str, &str, &str)] = &[
        // unexpected closing brace at top level
        ("}\n", "Corefile:1:1", "unexpected '}'"),
        (". {\n  log\n}\n}\n", "Corefile:4:1", "unexpected '}'"),
        // unexpected closing brace in a braceless block
        (".\nlog\n  }\n", "Corefile:3:3", "unexpected '}'"),
        // unclosed braces point at the opening brace, naming the directive
        (". {\n  log\n", "Corefile:1:3", "unclosed '{'"),
        (
            ". {\n  cache 30 {\n    success 1\n}\n",
            "Corefile:1:3",
            "unclosed '{'",
        ),
        (
            ". {\n  cache 30 {\n    success 1\n",
            "Corefile:2:12",
            "cache: unclosed '{'",
        ),
        (
            "(s) {\n  log\n",
            "Corefile:1:5",
            "unclosed '{' of snippet 's'",
        ),
        // unterminated quote points at the opening quote
        (
            ". {\n  log \"abc\n}\n",
            "Corefile:2:7",
            "unterminated quoted string",
        ),
        // import argument count
        (
            ". {\n  import\n}\n",
            "Corefile:2:3",
            "import: wrong argument count",
        ),
        (
            ". {\n  import a b\n}\n",
            "Corefile:2:12",
            "import: wrong argument count",
        ),
        ("import\n", "Corefile:1:1", "import: wrong argument count"),
        (
            ". {\n  import \"\"\n}\n",
            "Corefile:2:10",
            "import: expected a non-empty",
        ),
        // unknown snippet / missing file
        (
            ". {\n  import nosuch\n}\n",
            "Corefile:2:10",
            "import: no snippet named 'nosuch'",
        ),
        // snippets
        (
            "(s) {\n}\n(s) {\n}\n",
            "Corefile:3:1",
            "redeclaration of previously declared snippet 's'",
        ),
        (
            "(s) {\n  import s\n}\n",
            "Corefile:2:3",
            "import: snippet 's' imports itself",
        ),
        (
            "(a) {\n  import b\n}\n(b) {\n  import a\n}\n. {\n  import a\n}\n",
            "Corefile:5:10",
            "import: import cycle: snippet 'a' imports itself",
        ),
        (
            "(s)\nlog\n",
            "Corefile:1:1",
            "expected '{' after snippet name 's'",
        ),
        ("(s)", "Corefile:1:1", "expected '{' after snippet name 's'"),
        // keys
        (
            "a, {\n}\n",
            "Corefile:1:4",
            "expected another server block key after ','",
        ),
        ("a,", "Corefile:1:1", "unexpected end of file"),
        ("\"\" {\n}\n", "Corefile:1:1", "expected a server block key"),
        // stray braces inside blocks
        (
            ". {\n  cache 30\n  {\n  }\n}\n",
            "Corefile:3:3",
            "unexpected '{'",
        ),
        (
            ". {\n  cache { success 1 } 30\n}\n",
            "Corefile:2:23",
            "cache: unexpected '30' after '}'",
        ),
        // glob limits
        (
            ". {\n  import *.d/*.conf\n}\n",
            "Corefile:2:10",
            "import: glob pattern may contain at most one '*'",
        ),
        (
            ". {\n  import [ab].conf\n}\n",
            "Corefile:2:10",
            "import: glob pattern",
        ),
    ];
    for (text, pos, msg) in cases {
        let e = parse_err(text);
        assert_eq!(e.pos.to_string(), *pos, "position for {text:?}: {e}");
        assert!(
            e.to_string().contains(msg),
            "message for {text:?}: got {e}, want {msg}"
        );
        assert!(e.to_string().starts_with(pos), "{e}");
    }
}

#[test]
fn snippet_expansion_cap() {
    // 4 levels of 11 imports each = 11^4 = 14 641 leaf expansions > 10 000.
    let mut text = String::from("(s0) {\n x\n}\n");
    for level in 1..=4 {
        text.push_str(&format!("(s{level}) {{\n"));
        for _ in 0..11 {
            text.push_str(&format!(" import s{}\n", level - 1));
        }
        text.push_str("}\n");
    }
    text.push_str(". {\n import s4\n}\n");
    let e = parse_err(&text);
    assert!(
        e.msg
            .contains("maximum snippet import count (10000) exceeded"),
        "{e}"
    );
    // 3 levels (1 331 expansions) are fine
    let text = text.replace(" import s4", " import s3");
    assert_eq!(parse(&text).blocks[0].directives.len(), 1331);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 20_000;
    let text = format!(". {{\n{}{}}}\n", "a {\n".repeat(depth), "}\n".repeat(depth));
    let e = parse_err(&text);
    assert!(e.msg.contains("nested too deeply"), "{e}");
    assert_eq!(e.pos.to_string(), "Corefile:102:3");
    // 100 levels are fine
    let text = format!(". {{\n{}{}}}\n", "a {\n".repeat(100), "}\n".repeat(100));
    let mut d = &parse(&text).blocks[0].directives[0];
    for _ in 0..99 {
        d = &d.sub()[0];
    }
    assert!(d.sub().is_empty());
}

#[test]
fn token_cap_bounds_expansion() {
    // 600 imports of a 2 000-token snippet = 1.2 million tokens > 1 000 000 (but only 601 expansions).
    let mut text = format!("(big) {{\n{}\n}}\n(many) {{\n", "x ".repeat(2000));
    text.push_str(&" import big\n".repeat(600));
    text.push_str("}\n. {\n import many\n}\n");
    let e = parse_err(&text);
    assert!(e.msg.contains("too large"), "{e}");
}
