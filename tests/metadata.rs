//! End-to-end tests of `metadata` with its providers and readers: the kubernetes plugin's
//! labels (client pod by source address, question parts) read by `log`'s `{/label}` and
//! `template`'s `.Meta`; `log/type` and `log/class`; nothing stored without the plugin. Also
//! `root` (relative file names) and `-plugins` (execution order with the new plugins).

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

const CLUSTER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-1, namespace: shop, labels: {app: checkout}}
status:
  podIP: 127.0.0.1
  podIPs: [{ip: 127.0.0.1}]
"#;

fn start(with_metadata: bool, port: u16, up: &Upstream) -> Sextant {
    let md = if with_metadata { "metadata" } else { "" };
    let cf = format!(
        r#"cluster.local:{port} example:{port} {{
    {md}
    log . "META {{name}} {{/kubernetes/kind}} {{/kubernetes/namespace}} {{/kubernetes/service}} {{/kubernetes/client-namespace}} {{/kubernetes/client-pod-name}} {{/kubernetes/client-label/app}} {{/log/type}} {{/log/class}} {{/nope/none}}"
    template IN TXT example {{
        answer "{{{{ .Name }}}} 5 IN TXT \"{{{{ .Meta \"kubernetes/client-namespace\" }}}}/{{{{ .Meta \"kubernetes/client-pod-name\" }}}}\""
    }}
    kubernetes cluster.local {{
        manifests cluster.yaml
        pods verified
    }}
}}
example.net:{port} {{
    metadata
    log . "UP {{name}} {{/forward/upstream}}"
    forward . {}
}}
"#,
        up.addr()
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("cluster.yaml", CLUSTER)
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    s
}

#[test]
fn kubernetes_labels_reach_log_and_template() {
    let port = free_port();
    let up = Upstream::records(&["up.example.net. 5 IN A 192.0.2.1"]).unwrap();
    let s = start(true, port, &up);
    let r = udp(
        addr(port),
        &Query::new("web.shop.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(
        r.answers(),
        vec!["web.shop.svc.cluster.local. 5 IN A 10.96.0.20"]
    );
    let line = s
        .wait_for_line("META web.shop.svc.cluster.local.", T)
        .unwrap();
    assert!(
        line.ends_with("META web.shop.svc.cluster.local. svc shop web shop client-1 checkout NOERROR success -"),
        "{line}"
    );
    let r = udp(
        addr(port),
        &Query::new("nope.shop.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    let line = s
        .wait_for_line("META nope.shop.svc.cluster.local.", T)
        .unwrap();
    assert!(
        line.ends_with("svc shop nope shop client-1 checkout NXDOMAIN denial -"),
        "{line}"
    );
    // A name the kubernetes plugin cannot parse.
    let _ = udp(
        addr(port),
        &Query::new("a.b.c.d.e.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    let line = s.wait_for_line("META a.b.c.d.e.cluster.local.", T).unwrap();
    assert!(line.contains(" - - - shop client-1 checkout "), "{line}");
    // Outside the kubernetes zones only the client's labels exist; forward names its upstream.
    let _ = udp(addr(port), &Query::new("up.example.net.", RecordType::A), T).unwrap();
    let line = s.wait_for_line("UP up.example.net.", T).unwrap();
    assert!(
        line.ends_with(&format!("UP up.example.net. {}", up.addr())),
        "{line}"
    );
    let r = udp(addr(port), &Query::new("x.example.", RecordType::TXT), T).unwrap();
    assert_eq!(r.answers(), vec!["x.example. 5 IN TXT shop/client-1"]);
}

#[test]
fn metadata_zones_limit_collection_not_the_map() {
    // `metadata example`: the providers (kubernetes) are asked only for names under `example.`;
    // elsewhere the request still has a map, so labels plugins set while serving (`log/type`)
    // exist, like CoreDNS's Collect (a map for every request, providers only in the zones).
    let port = free_port();
    let cf = format!(
        r#"cluster.local:{port} example:{port} {{
    metadata example
    log . "META {{name}} {{/kubernetes/kind}} {{/kubernetes/client-namespace}} {{/log/type}}"
    template IN TXT example {{
        answer "{{{{ .Name }}}} 5 IN TXT \"{{{{ .Meta \"kubernetes/client-namespace\" }}}}\""
    }}
    kubernetes cluster.local {{
        manifests cluster.yaml
        pods verified
    }}
}}
"#
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("cluster.yaml", CLUSTER)
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let r = udp(
        addr(port),
        &Query::new("web.shop.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(
        r.answers(),
        vec!["web.shop.svc.cluster.local. 5 IN A 10.96.0.20"]
    );
    let line = s
        .wait_for_line("META web.shop.svc.cluster.local.", T)
        .unwrap();
    assert!(
        line.ends_with("META web.shop.svc.cluster.local. - - NOERROR"),
        "{line}"
    );
    let r = udp(addr(port), &Query::new("x.example.", RecordType::TXT), T).unwrap();
    assert_eq!(r.answers(), vec!["x.example. 5 IN TXT shop"]);
    let line = s.wait_for_line("META x.example.", T).unwrap();
    assert!(line.ends_with("META x.example. - shop NOERROR"), "{line}");
}

#[test]
fn without_metadata_labels_are_unset() {
    let port = free_port();
    let up = Upstream::records(&[]).unwrap();
    let s = start(false, port, &up);
    let _ = udp(
        addr(port),
        &Query::new("web.shop.svc.cluster.local.", RecordType::A),
        T,
    )
    .unwrap();
    let line = s
        .wait_for_line("META web.shop.svc.cluster.local.", T)
        .unwrap();
    assert!(
        line.ends_with("META web.shop.svc.cluster.local. - - - - - - - - -"),
        "{line}"
    );
    let r = udp(addr(port), &Query::new("x.example.", RecordType::TXT), T).unwrap();
    assert_eq!(r.answers(), vec!["x.example. 5 IN TXT /"]);
    let (code, out, err) =
        Sextant::check(bin(), ".:53 {\n    metadata {\n        x\n    }\n}\n").unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":3:9: x: unexpected token 'x'"),
        "{out}{err}"
    );
}

#[test]
fn root_directs_relative_file_names() {
    let port = free_port();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cf = format!(
        "tls://example.org:{port} {{\n    root certs\n    tls cert.pem key.pem\n    whoami\n}}\n"
    );
    let (code, out, err) = Sextant::run_to_end(
        Sextant::builder(bin(), &cf)
            .file("certs/cert.pem", pair.cert.pem())
            .file("certs/key.pem", pair.signing_key.serialize_pem())
            .arg("-check"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    // Without root the same names are not found.
    let (code, out, err) = Sextant::run_to_end(
        Sextant::builder(bin(), &cf.replace("    root certs\n", ""))
            .file("certs/cert.pem", pair.cert.pem())
            .arg("-check"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":2:9: tls: cannot read certificate \"cert.pem\""),
        "{out}{err}"
    );
    // A missing root only warns.
    let mut s = Sextant::start(
        bin(),
        &format!("example.org:{port} {{\n    root /nonexistent/zones\n    whoami\n}}\n"),
    );
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    assert_eq!(
        s.count_lines("[WARNING] plugin/root: Root path does not exist: /nonexistent/zones"),
        1
    );
}

/// `-plugins` lists every plugin of this build in CoreDNS 1.14.7's plugin.cfg order (the order
/// of every block's chain; the list is `tests/data/plugin-cfg-order.txt`), and nothing else:
/// every plugin folder of `src/plugins/` is listed, so a plugin added without its place in the
/// order is caught here.
#[test]
fn plugins_are_listed_in_plugin_cfg_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg_text = std::fs::read_to_string(root.join("tests/data/plugin-cfg-order.txt")).unwrap();
    let cfg: Vec<&str> = cfg_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(cfg.len(), 60, "CoreDNS 1.14.7's plugin.cfg has 60 plugins");
    let (code, out, _) = Sextant::run_to_end(
        Sextant::builder(bin(), "").conf_flag(false).arg("-plugins"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(code, 0);
    let listed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("dns."))
        .collect();
    for p in &listed {
        assert!(
            cfg.contains(p),
            "-plugins lists {p}, which plugin.cfg does not have"
        );
    }
    let want: Vec<&str> = cfg.iter().copied().filter(|p| listed.contains(p)).collect();
    assert_eq!(listed, want, "-plugins is not in plugin.cfg order");
    let mut folders: Vec<String> = std::fs::read_dir(root.join("src/plugins"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.join("mod.rs")
                .exists()
                .then(|| p.file_name().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    folders.sort();
    for f in &folders {
        assert!(
            listed.contains(&f.as_str()),
            "plugin folder {f} is not in -plugins:\n{out}"
        );
    }
    let missing: Vec<&str> = cfg
        .iter()
        .copied()
        .filter(|p| !listed.contains(p))
        .collect();
    eprintln!(
        "{} of plugin.cfg's {} plugins; not in this build: {missing:?}",
        listed.len(),
        cfg.len()
    );
}
