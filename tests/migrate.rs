//! `sextant migrate`: the Kubernetes documentation's kube-dns ConfigMap examples (a Consul stub
//! domain, upstream nameservers) become kubeadm's Corefile, which passes `sextant -check`;
//! federations are reported as not carried over; `migrate corefile` names deprecated options.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sextant")
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sextant-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// `-check` passes, or fails only on CoreDNS plugins this build does not have yet.
fn check(path: &PathBuf) {
    let out = Command::new(bin())
        .arg("-check")
        .arg("-conf")
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        return;
    }
    for line in stdout.lines() {
        assert!(line.contains("does not have yet"), "-check error: {line}");
    }
}

/// From the Kubernetes docs ("Customizing DNS Service"): a Consul stub domain and upstreams.
const DOCS_EXAMPLE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-dns
  namespace: kube-system
data:
  stubDomains: |
    {"consul.local": ["10.150.0.1"]}
  upstreamNameservers: |
    ["172.16.0.1"]
"#;

#[test]
fn kube_dns_docs_example() {
    let f = tmp("kube-dns.yaml", DOCS_EXAMPLE);
    let out = run(&["migrate", "kube-dns", f.to_str().unwrap()]);
    assert!(out.status.success());
    let cf = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        cf,
        ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n    prometheus :9153\n    forward . 172.16.0.1 {\n       max_concurrent 1000\n    }\n    cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }\n    loop\n    reload\n    loadbalance\n}\nconsul.local:53 {\n    errors\n    cache 30\n    loop\n    forward . 10.150.0.1\n}\n"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&tmp("Corefile.docs", &cf));
}

#[test]
fn federations_and_hostnames_are_reported() {
    let f = tmp(
        "kube-dns-fed.yaml",
        "kind: ConfigMap\nmetadata:\n  name: kube-dns\ndata:\n  federations: '{\"myfed\": \"example.com\"}'\n  stubDomains: '{\"acme.local\": [\"ns.acme.local\"], \"b.local\": [\"1.2.3.4:5353\"]}'\n",
    );
    let out = run(&[
        "migrate",
        "kube-dns",
        "-domain",
        "k8s.example",
        f.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let cf = String::from_utf8(out.stdout).unwrap();
    let notes = String::from_utf8(out.stderr).unwrap();
    assert!(cf.contains("kubernetes k8s.example in-addr.arpa ip6.arpa {"));
    assert!(cf.contains("forward . /etc/resolv.conf {"));
    assert!(cf.contains(
        "b.local:53 {\n    errors\n    cache 30\n    loop\n    forward . 1.2.3.4:5353\n}\n"
    ));
    assert!(!cf.contains("acme.local"));
    assert!(
        notes.contains("# federations: myfed=example.com not carried over"),
        "{notes}"
    );
    assert!(
        notes.contains(
            "# stubDomains acme.local: nameserver \"ns.acme.local\" is a host name; omitted"
        ),
        "{notes}"
    );
    assert!(
        notes.contains("# stubDomains acme.local: no address left; the stub domain was dropped"),
        "{notes}"
    );
    check(&tmp("Corefile.fed", &cf));
}

#[test]
fn kube_dns_errors() {
    let out = run(&["migrate", "kube-dns", "/nonexistent/kube-dns.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let bad = tmp(
        "bad.yaml",
        "kind: ConfigMap\ndata:\n  upstreamNameservers: 'not json'\n",
    );
    let out = run(&["migrate", "kube-dns", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid upstreamNameservers value"));
    assert_eq!(run(&["migrate"]).status.code(), Some(2));
    assert_eq!(run(&["migrate", "kube-dns"]).status.code(), Some(2));
}

#[test]
fn corefile_deprecations() {
    let f = tmp(
        "Corefile.old",
        ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        pods insecure\n        upstream\n        resyncperiod 30s\n    }\n    proxy . /etc/resolv.conf\n    whoami\n}\n",
    );
    let out = run(&["migrate", "corefile", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    let p = f.display().to_string();
    assert!(text.contains(&format!("{p}:5:9: ignored: option \"upstream\" of plugin \"kubernetes\" is ignored since CoreDNS 1.5.0")), "{text}");
    assert!(
        text.contains(&format!("{p}:6:9: ignored: option \"resyncperiod\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{p}:8:5: removed: plugin \"proxy\" was removed in CoreDNS 1.6.0; use forward"
        )),
        "{text}"
    );
    assert!(text.contains("here: forward . /etc/resolv.conf"), "{text}");
    assert!(
        text.contains("new default: kubeadm's Corefile has had \"ready\""),
        "{text}"
    );

    let clean = tmp(
        "Corefile.clean",
        ".:53 {\n    errors\n    ready\n    whoami\n}\n",
    );
    let out = run(&["migrate", "corefile", clean.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "No deprecated, removed or unsupported directives found.\n"
    );
}
