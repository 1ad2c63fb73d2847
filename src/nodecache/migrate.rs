//! `sextant migrate`: `kube-dns FILE` turns a kube-dns ConfigMap (YAML) into the Corefile kubeadm
//! generated when it replaced kube-dns with CoreDNS, and says what it could not carry over;
//! `corefile FILE` lists directives and options CoreDNS deprecated or removed (and ones this
//! build lacks), each with its replacement. Reads files, prints; serves nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use sextant_corefile::{Corefile, Directive};

use super::config::{ConfigError, KubeDnsConfig};

/// Why a kube-dns ConfigMap cannot be translated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error("invalid YAML: {0}")]
    Yaml(#[source] serde_yaml_ng::Error),
    #[error("ConfigMap data values must be strings")]
    NotString,
    #[error("no ConfigMap document found")]
    NoConfigMap,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn usage() -> &'static str {
    "Usage: sextant migrate kube-dns [-domain cluster.local] FILE\n       sextant migrate corefile FILE\n"
}

/// Entry point of `sextant migrate ARGS`; returns the exit code.
pub(crate) fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("kube-dns") => {
            let mut domain = "cluster.local".to_string();
            let mut file = None;
            let mut i = 1;
            while i < args.len() {
                let a = args[i].as_str();
                if let Some(v) = a
                    .strip_prefix("-domain=")
                    .or_else(|| a.strip_prefix("--domain="))
                {
                    domain = v.to_string();
                } else if a == "-domain" || a == "--domain" {
                    i += 1;
                    match args.get(i) {
                        Some(v) => domain = v.clone(),
                        None => {
                            eprint!("flag needs an argument: -domain\n{}", usage());
                            return 2;
                        }
                    }
                } else if file.is_none() && !a.starts_with('-') {
                    file = Some(a.to_string());
                } else {
                    eprint!("unexpected argument {a:?}\n{}", usage());
                    return 2;
                }
                i += 1;
            }
            let Some(file) = file else {
                eprint!("{}", usage());
                return 2;
            };
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    return 1;
                }
            };
            match kube_dns(&text, &domain) {
                Ok(out) => {
                    print!("{}", out.corefile);
                    for n in &out.notes {
                        eprintln!("# {n}");
                    }
                    0
                }
                Err(e) => {
                    eprintln!("{file}: {e}");
                    1
                }
            }
        }
        Some("corefile") if args.len() == 2 => {
            let path = Path::new(&args[1]);
            let cf = match sextant_corefile::parse_file(path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            };
            let notes = corefile(&cf);
            if notes.is_empty() {
                println!("No deprecated, removed or unsupported directives found.");
                return 0;
            }
            for n in &notes {
                println!("{n}");
            }
            // Non-zero when something must change before the Corefile works here.
            if notes.iter().any(|n| n.severity.blocks()) {
                3
            } else {
                0
            }
        }
        _ => {
            eprint!("{}", usage());
            2
        }
    }
}

/// The result of translating a kube-dns ConfigMap.
pub(crate) struct KubeDnsMigration {
    pub corefile: String,
    /// What was dropped or changed, one line each.
    pub notes: Vec<String>,
}

/// The `data` of a ConfigMap document (a `kind: ConfigMap` YAML; the first one if several).
fn configmap_data(yaml: &str) -> Result<BTreeMap<String, String>, MigrateError> {
    use serde::Deserialize;
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = serde_yaml_ng::Value::deserialize(doc).map_err(MigrateError::Yaml)?;
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != "ConfigMap" {
            continue;
        }
        let mut out = BTreeMap::new();
        if let Some(serde_yaml_ng::Value::Mapping(m)) = v.get("data") {
            for (k, val) in m {
                let (Some(k), Some(val)) = (k.as_str(), val.as_str()) else {
                    return Err(MigrateError::NotString);
                };
                out.insert(k.to_string(), val.to_string());
            }
        }
        return Ok(out);
    }
    Err(MigrateError::NoConfigMap)
}

/// Keeps IP[:port] nameservers, dropping host names as kubeadm did.
fn omit_hostnames(servers: &[String], notes: &mut Vec<String>, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in servers {
        let host = if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            sa.ip().to_string()
        } else {
            s.rsplit_once(':')
                .filter(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
                .map(|(h, _)| h.to_string())
                .unwrap_or_else(|| s.clone())
        };
        if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            out.push(s.clone());
        } else {
            notes.push(format!(
                "{what}: nameserver {s:?} is a host name; omitted (forward takes addresses only)"
            ));
        }
    }
    out
}

/// Translates a kube-dns ConfigMap into kubeadm's CoreDNS Corefile for `domain`.
pub(crate) fn kube_dns(yaml: &str, domain: &str) -> Result<KubeDnsMigration, MigrateError> {
    let data = configmap_data(yaml)?;
    let cfg = KubeDnsConfig::from_data(&data)?;
    let mut notes = Vec::new();
    let mut upstream = "/etc/resolv.conf".to_string();
    if data.contains_key("upstreamNameservers") {
        let kept = omit_hostnames(&cfg.upstream_nameservers, &mut notes, "upstreamNameservers");
        if kept.is_empty() {
            notes.push(
                "upstreamNameservers: no address left; forwarding to /etc/resolv.conf instead"
                    .into(),
            );
        } else {
            upstream = kept.join(" ");
        }
    }
    for (name, fdomain) in &cfg.federations {
        notes.push(format!(
            "federations: {name}={fdomain} not carried over (Kubernetes federation v1 and CoreDNS's federation plugin are gone; no replacement)"
        ));
    }
    for k in data.keys() {
        if !["stubDomains", "upstreamNameservers", "federations"].contains(&k.as_str()) {
            notes.push(format!("data key {k:?} is not a kube-dns setting; ignored"));
        }
    }
    let mut cf = format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    forward . {upstream} {{\n       max_concurrent 1000\n    }}\n    cache 30 {{\n       disable success {domain}\n       disable denial {domain}\n    }}\n    loop\n    reload\n    loadbalance\n}}\n"
    );
    for (stub, servers) in &cfg.stub_domains {
        let kept = omit_hostnames(servers, &mut notes, &format!("stubDomains {stub}"));
        if kept.is_empty() {
            notes.push(format!(
                "stubDomains {stub}: no address left; the stub domain was dropped"
            ));
            continue;
        }
        cf.push_str(&format!(
            "{stub}:53 {{\n    errors\n    cache 30\n    loop\n    forward . {}\n}}\n",
            kept.join(" ")
        ));
    }
    Ok(KubeDnsMigration {
        corefile: cf,
        notes,
    })
}

/// How serious a Corefile finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// Accepted but does nothing.
    Ignored,
    /// Refused by current CoreDNS (and by Sextant).
    Removed,
    /// A CoreDNS plugin this build does not have.
    Unsupported,
    /// A default that changed; worth adding.
    NewDefault,
}

impl Severity {
    fn blocks(self) -> bool {
        matches!(self, Severity::Removed | Severity::Unsupported)
    }
    fn as_str(self) -> &'static str {
        match self {
            Severity::Ignored => "ignored",
            Severity::Removed => "removed",
            Severity::Unsupported => "unsupported",
            Severity::NewDefault => "new default",
        }
    }
}

/// One finding, printed as `file:line:col: severity: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    pub at: String,
    pub severity: Severity,
    pub msg: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.severity.as_str(), self.msg)
    }
}

fn at(d: &Directive) -> String {
    let p = &d.name.pos;
    format!("{}:{}:{}", p.file, p.line, p.col)
}

/// Plugins CoreDNS removed, with the version and what to use instead.
const REMOVED_PLUGINS: &[(&str, &str, &str)] = &[
    ("proxy", "1.6.0", "use forward (proxy FROM TO... becomes forward FROM TO...; policy/fail_timeout/max_fails map to forward's policy/health_check/max_fails)"),
    ("federation", "1.7.0", "no replacement in CoreDNS; Kubernetes federation v1 is gone"),
    ("reverse", "1.1.0", "use the template plugin (or kubernetes' own PTR records)"),
    ("dnssec_upstream", "1.2.0", "no replacement"),
];

/// kubernetes options CoreDNS deprecated or removed.
const KUBERNETES_OPTIONS: &[(&str, Severity, &str, &str)] = &[
    (
        "upstream",
        Severity::Ignored,
        "1.5.0",
        "delete it: external CNAME targets are always resolved through the server itself",
    ),
    (
        "resyncperiod",
        Severity::Ignored,
        "1.7.0",
        "delete it: watches keep the data current",
    ),
    (
        "transfer",
        Severity::Removed,
        "1.7.0",
        "use the transfer plugin: transfer { to ADDRESS }",
    ),
    (
        "cidrs",
        Severity::Removed,
        "1.1.0",
        "list the reverse zones (for example 10.in-addr.arpa) in the kubernetes plugin's zones",
    ),
    (
        "autopath",
        Severity::Removed,
        "1.0.0",
        "use the autopath plugin: autopath @kubernetes",
    ),
    ("federation", Severity::Removed, "1.7.0", "no replacement"),
];

/// Lists deprecated/removed/unsupported directives and options in `cf`.
pub(crate) fn corefile(cf: &Corefile) -> Vec<Note> {
    let known: Vec<&str> = crate::plugins::ORDER.iter().map(|p| p.name).collect();
    let mut notes = Vec::new();
    let mut has_kubernetes = false;
    let mut has_ready = false;
    let mut first_kubernetes: Option<String> = None;
    for block in &cf.blocks {
        for d in &block.directives {
            let name = d.name.text.as_str();
            if let Some((_, v, repl)) = REMOVED_PLUGINS.iter().find(|(n, _, _)| *n == name) {
                let mut msg = format!("plugin \"{name}\" was removed in CoreDNS {v}; {repl}");
                if name == "proxy" && !d.args.is_empty() {
                    msg.push_str(&format!("; here: forward {}", d.arg_strs().join(" ")));
                }
                notes.push(Note {
                    at: at(d),
                    severity: Severity::Removed,
                    msg,
                });
                continue;
            }
            if name == "kubernetes" {
                has_kubernetes = true;
                first_kubernetes.get_or_insert_with(|| at(d));
                for o in d.sub() {
                    let oname = o.name.text.as_str();
                    if let Some((_, sev, v, repl)) =
                        KUBERNETES_OPTIONS.iter().find(|(n, _, _, _)| *n == oname)
                    {
                        let verb = match sev {
                            Severity::Ignored => "is ignored since",
                            _ => "was removed in",
                        };
                        notes.push(Note {
                            at: at(o),
                            severity: *sev,
                            msg: format!(
                                "option \"{oname}\" of plugin \"kubernetes\" {verb} CoreDNS {v}; {repl}"
                            ),
                        });
                    }
                    if oname == "endpoint" && o.args.len() > 1 {
                        notes.push(Note {
                            at: at(o),
                            severity: Severity::Removed,
                            msg: "option \"endpoint\" of plugin \"kubernetes\" takes one address since CoreDNS 1.7.0; keep one (use a load-balanced API address)".into(),
                        });
                    }
                }
            }
            if name == "ready" {
                has_ready = true;
            }
            if name == "forward" {
                for o in d.sub() {
                    if o.name.text == "protocol" {
                        notes.push(Note {
                            at: at(o),
                            severity: Severity::Removed,
                            msg: "option \"protocol\" of plugin \"forward\" was removed in CoreDNS 1.5.0; use tls:// addresses with tls and tls_servername".into(),
                        });
                    }
                }
            }
            if name != "import" && !known.contains(&name) {
                let pending = crate::plugins::PENDING.contains(&name);
                notes.push(Note {
                    at: at(d),
                    severity: Severity::Unsupported,
                    msg: if pending {
                        format!("plugin \"{name}\" is a CoreDNS plugin this Sextant build does not have yet")
                    } else {
                        format!("plugin \"{name}\" is not available in Sextant")
                    },
                });
            }
        }
    }
    if has_kubernetes && !has_ready {
        notes.push(Note {
            at: first_kubernetes.unwrap_or_default(),
            severity: Severity::NewDefault,
            msg: "kubeadm's Corefile has had \"ready\" since CoreDNS 1.5.0 (readiness probe on :8181/ready); add it".into(),
        });
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Kubernetes documentation's kube-dns example: a Consul stub domain and upstreams.
    const DOC_EXAMPLE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-dns
  namespace: kube-system
data:
  stubDomains: |
    {"abc.com" : ["1.2.3.4"], "my.cluster.local" : ["2.3.4.5"]}
  upstreamNameservers: |
    ["8.8.8.8", "8.8.4.4"]
  federations: |
    {"foo" : "foo.feddomain.com"}
"#;

    #[test]
    fn kube_dns_doc_example() {
        let m = kube_dns(DOC_EXAMPLE, "cluster.local").unwrap();
        assert!(m
            .corefile
            .contains("    forward . 8.8.8.8 8.8.4.4 {\n       max_concurrent 1000\n    }\n"));
        assert!(m.corefile.contains(
            "abc.com:53 {\n    errors\n    cache 30\n    loop\n    forward . 1.2.3.4\n}\n"
        ));
        assert!(m.corefile.contains("my.cluster.local:53 {"));
        assert_eq!(m.notes.len(), 1);
        assert!(m.notes[0].starts_with("federations: foo=foo.feddomain.com not carried over"));
    }

    #[test]
    fn hostnames_are_dropped_and_said() {
        let y = "kind: ConfigMap\ndata:\n  stubDomains: '{\"foo.com\": [\"service.consul\"], \"bar.com\": [\"1.2.3.4:5300\", \"ns.x\"]}'\n  upstreamNameservers: '[\"dns.google\"]'\n";
        let m = kube_dns(y, "k.local").unwrap();
        assert!(m.corefile.contains("forward . /etc/resolv.conf {"));
        assert!(m
            .corefile
            .contains("kubernetes k.local in-addr.arpa ip6.arpa {"));
        assert!(m.corefile.contains(
            "bar.com:53 {\n    errors\n    cache 30\n    loop\n    forward . 1.2.3.4:5300\n}"
        ));
        assert!(!m.corefile.contains("foo.com"));
        assert_eq!(m.notes.len(), 5, "{:?}", m.notes);
    }

    #[test]
    fn no_configmap_is_an_error() {
        assert_eq!(
            kube_dns("kind: Service\n", "c").err().unwrap().to_string(),
            "no ConfigMap document found"
        );
        assert!(
            kube_dns("kind: ConfigMap\ndata:\n  stubDomains: '{x'\n", "c")
                .err()
                .unwrap()
                .to_string()
                .starts_with("invalid stubDomains value")
        );
    }

    #[test]
    fn corefile_findings() {
        let text = ".:53 {\n    proxy . 8.8.8.8\n    kubernetes cluster.local {\n        upstream\n        resyncperiod 30s\n        transfer to *\n    }\n    federation\n}\n";
        let cf = sextant_corefile::parse_str("Corefile", text, Path::new(".")).unwrap();
        let notes: Vec<String> = corefile(&cf).iter().map(|n| n.to_string()).collect();
        assert!(
            notes.iter().any(|n| n.starts_with(
                "Corefile:2:5: removed: plugin \"proxy\" was removed in CoreDNS 1.6.0"
            ) && n.ends_with("here: forward . 8.8.8.8")),
            "{notes:#?}"
        );
        assert!(notes
            .iter()
            .any(|n| n.starts_with("Corefile:4:9: ignored: option \"upstream\"")));
        assert!(notes
            .iter()
            .any(|n| n.starts_with("Corefile:5:9: ignored: option \"resyncperiod\"")));
        assert!(notes.iter().any(
            |n| n.starts_with("Corefile:6:9: removed: option \"transfer\"")
                && n.contains("transfer plugin")
        ));
        assert!(notes
            .iter()
            .any(|n| n.starts_with("Corefile:8:5: removed: plugin \"federation\"")));
        assert!(notes
            .iter()
            .any(|n| n.contains("new default") && n.contains("\"ready\"")));
    }
}
