//! The kube-dns ConfigMap folder (`stubDomains`, `upstreamNameservers`, `federations`, one JSON
//! value per file as Kubernetes mounts it) and the rendering of the node-cache Corefile from its
//! template: the `__PILLAR__` substitutions and appended stub-domain blocks, like k8s-dns-node-cache's
//! `updateCorefile`. Reading files only; writing and reloading are the caller's.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::pkg::addr;

pub(crate) const UPSTREAM_SERVERS_VAR: &str = "__PILLAR__UPSTREAM__SERVERS__";
pub(crate) const CLUSTER_DNS_VAR: &str = "__PILLAR__CLUSTER__DNS__";
pub(crate) const LOCAL_DNS_VAR: &str = "__PILLAR__LOCAL__DNS__";
pub(crate) const DNS_SERVER_VAR: &str = "__PILLAR__DNS__SERVER__";

/// The TCP forward block of the template that custom upstreams turn into plain UDP.
const UPSTREAM_TCP_BLOCK: &str =
    "\n    forward . __PILLAR__UPSTREAM__SERVERS__ {\n            force_tcp\n    }\n";
const UPSTREAM_UDP_BLOCK: &str = "\n    forward . __PILLAR__UPSTREAM__SERVERS__\n";

/// Why the kube-dns ConfigMap folder or its data is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// A file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config path {:?} is not a directory", .0.display().to_string())]
    NotDir(PathBuf),
    #[error("non-utf8 data in {}", .0.display())]
    NotUtf8(PathBuf),
    /// A key's value is not the JSON it should be.
    #[error("invalid {key} value: {source} (value was {value:?})")]
    Json {
        key: &'static str,
        value: String,
        source: serde_json::Error,
    },
    #[error("invalid nameservers {servers:?} for the stub domain {domain}: {source}")]
    StubDomain {
        domain: String,
        servers: Vec<String>,
        source: NameserverError,
    },
    #[error("invalid upstream nameservers {servers:?}: {source}")]
    Upstream {
        servers: Vec<String>,
        source: NameserverError,
    },
}

/// A nameserver node-cache cannot forward to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NameserverError {
    #[error("unsupported transport {transport} of nameserver {server}")]
    Transport { transport: String, server: String },
    #[error("not an IP address or file: {0:?}")]
    NotAddress(String),
}

fn json<T: serde::de::DeserializeOwned>(key: &'static str, value: &str) -> Result<T, ConfigError> {
    serde_json::from_str(value).map_err(|source| ConfigError::Json {
        key,
        value: value.to_string(),
        source,
    })
}

/// The kube-dns ConfigMap's data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KubeDnsConfig {
    pub federations: BTreeMap<String, String>,
    pub stub_domains: BTreeMap<String, Vec<String>>,
    pub upstream_nameservers: Vec<String>,
}

impl KubeDnsConfig {
    /// Builds the config from the ConfigMap's key/value data (values are JSON).
    pub(crate) fn from_data(data: &BTreeMap<String, String>) -> Result<KubeDnsConfig, ConfigError> {
        let mut c = KubeDnsConfig::default();
        for (k, v) in data {
            match k.as_str() {
                "federations" => c.federations = json("federations", v)?,
                "stubDomains" => c.stub_domains = json("stubDomains", v)?,
                "upstreamNameservers" => c.upstream_nameservers = json("upstreamNameservers", v)?,
                _ => {}
            }
        }
        Ok(c)
    }

    /// node-cache's check: every nameserver is an IP (or IP:port), a file, or `dns://`/`tls://`
    /// one of those; other transports are refused.
    pub(crate) fn validate_for_node_cache(&self) -> Result<(), ConfigError> {
        for (domain, ns) in &self.stub_domains {
            validate_forward(ns).map_err(|source| ConfigError::StubDomain {
                domain: domain.clone(),
                servers: ns.clone(),
                source,
            })?;
        }
        validate_forward(&self.upstream_nameservers).map_err(|source| ConfigError::Upstream {
            servers: self.upstream_nameservers.clone(),
            source,
        })
    }
}

fn validate_forward(servers: &[String]) -> Result<(), NameserverError> {
    for s in servers {
        let host = match s.split_once("://") {
            Some(("dns" | "tls", rest)) => rest,
            Some((t, _)) => {
                return Err(NameserverError::Transport {
                    transport: t.to_string(),
                    server: s.clone(),
                })
            }
            None => s.as_str(),
        };
        if !is_host_port(host) && !Path::new(host).is_file() {
            return Err(NameserverError::NotAddress(host.to_string()));
        }
    }
    Ok(())
}

/// `1.2.3.4`, `1.2.3.4:53`, `::1`, `[::1]:53` (a TLS server name after `%` is allowed too).
fn is_host_port(s: &str) -> bool {
    let s = s.split('%').next().unwrap_or(s);
    addr::host_port(s, 53).is_some()
}

/// Reads a ConfigMap folder: every regular file not starting with `.` (Kubernetes' `..data`
/// symlinks are skipped; the key symlinks are followed). Returns the data and a version hash
/// (empty when the folder holds no key).
pub(crate) fn read_dir(dir: &Path) -> Result<(BTreeMap<String, String>, String), ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| ConfigError::Io { path, source }
    };
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() {
        return Err(ConfigError::NotDir(dir.to_path_buf()));
    }
    let mut data = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        if m.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8(path.clone()))?;
        data.insert(name, text);
    }
    let mut h = Sha256::new();
    for (k, v) in &data {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let version = if data.is_empty() {
        String::new()
    } else {
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    };
    Ok((data, version))
}

/// What the caller needs to render.
pub(crate) struct RenderParams<'a> {
    /// `-localip` as given (comma list).
    pub local_ips: &'a str,
    pub port: u16,
    /// ClusterIP of `-upstreamsvc`, when its `_SERVICE_HOST` variable is set.
    pub cluster_dns: Option<IpAddr>,
}

/// The result of rendering.
pub(crate) struct Rendered {
    pub text: String,
    /// What `__PILLAR__UPSTREAM__SERVERS__` became (for the log line).
    pub upstream_servers: String,
    /// Set when custom upstreams were given but no TCP block was found to turn into UDP.
    pub no_tcp_block: bool,
}

/// Renders the Corefile from the template text and the kube-dns config.
pub(crate) fn render(base: &str, cfg: &KubeDnsConfig, p: &RenderParams<'_>) -> Rendered {
    let local = p.local_ips.replace(',', " ");
    let mut text = base.to_string();
    let mut upstream = cfg.upstream_nameservers.join(" ");
    let mut no_tcp_block = false;
    if upstream.is_empty() {
        upstream = "/etc/resolv.conf".to_string();
        text = text.replace(UPSTREAM_SERVERS_VAR, &upstream);
    } else {
        let udp = UPSTREAM_UDP_BLOCK.replace(UPSTREAM_SERVERS_VAR, &upstream);
        text = text.replace(UPSTREAM_TCP_BLOCK, &udp);
        if text.contains(UPSTREAM_SERVERS_VAR) {
            no_tcp_block = true;
            text = text.replace(UPSTREAM_SERVERS_VAR, &upstream);
        }
    }
    if let Some(ip) = p.cluster_dns {
        text = text.replace(CLUSTER_DNS_VAR, &ip.to_string());
    }
    text = text.replace(LOCAL_DNS_VAR, &local);
    text = text.replace(DNS_SERVER_VAR, "");
    for (domain, servers) in &cfg.stub_domains {
        text.push_str(&format!(
            "\n{domain}:{port} {{\n    errors\n    cache 30\n    bind {local}\n    forward . {servers}\n}}\n",
            port = p.port,
            servers = servers.join(" ")
        ));
    }
    Rendered {
        text,
        upstream_servers: upstream,
        no_tcp_block,
    }
}

/// `kube-dns-upstream` → `KUBE_DNS_UPSTREAM_SERVICE_HOST`.
pub(crate) fn service_env(svc: &str) -> String {
    format!("{}_SERVICE_HOST", svc.replace('-', "_").to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "cluster.local:53 {\n    errors\n    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__\n    forward . __PILLAR__CLUSTER__DNS__ {\n            force_tcp\n    }\n}\n.:53 {\n    errors\n    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__\n    forward . __PILLAR__UPSTREAM__SERVERS__ {\n            force_tcp\n    }\n}\n";

    fn params() -> RenderParams<'static> {
        RenderParams {
            local_ips: "169.254.20.10,10.0.0.10",
            port: 53,
            cluster_dns: Some("10.0.0.11".parse().unwrap()),
        }
    }

    #[test]
    fn defaults_to_resolv_conf_over_tcp() {
        let r = render(TEMPLATE, &KubeDnsConfig::default(), &params());
        assert_eq!(r.upstream_servers, "/etc/resolv.conf");
        assert!(r.text.contains("bind 169.254.20.10 10.0.0.10 \n"));
        assert!(r
            .text
            .contains("forward . 10.0.0.11 {\n            force_tcp"));
        assert!(r
            .text
            .contains("forward . /etc/resolv.conf {\n            force_tcp"));
        assert!(!r.text.contains("__PILLAR__"));
    }

    #[test]
    fn custom_upstreams_switch_to_udp_and_stub_domains_append() {
        let mut data = BTreeMap::new();
        data.insert(
            "upstreamNameservers".into(),
            r#"["8.8.8.8", "8.8.4.4:5353"]"#.into(),
        );
        data.insert(
            "stubDomains".into(),
            r#"{"acme.local": ["1.2.3.4"], "b.example": ["5.6.7.8", "9.9.9.9"]}"#.into(),
        );
        let cfg = KubeDnsConfig::from_data(&data).unwrap();
        cfg.validate_for_node_cache().unwrap();
        let r = render(TEMPLATE, &cfg, &params());
        assert!(!r.no_tcp_block);
        assert!(r.text.contains("\n    forward . 8.8.8.8 8.8.4.4:5353\n}"));
        assert!(r.text.ends_with(
            "\nacme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10 10.0.0.10\n    forward . 1.2.3.4\n}\n\nb.example:53 {\n    errors\n    cache 30\n    bind 169.254.20.10 10.0.0.10\n    forward . 5.6.7.8 9.9.9.9\n}\n"
        ));
    }

    #[test]
    fn udp_template_gets_servers_substituted() {
        let base = ".:53 {\n  forward . __PILLAR__UPSTREAM__SERVERS__\n}\n";
        let cfg = KubeDnsConfig {
            upstream_nameservers: vec!["1.1.1.1".into()],
            ..Default::default()
        };
        let r = render(base, &cfg, &params());
        assert!(r.no_tcp_block);
        assert_eq!(r.text, ".:53 {\n  forward . 1.1.1.1\n}\n");
    }

    #[test]
    fn missing_cluster_ip_leaves_the_variable() {
        let p = RenderParams {
            cluster_dns: None,
            ..params()
        };
        let r = render(TEMPLATE, &KubeDnsConfig::default(), &p);
        assert!(r.text.contains("forward . __PILLAR__CLUSTER__DNS__ {"));
    }

    #[test]
    fn invalid_config() {
        let mut data = BTreeMap::new();
        data.insert("stubDomains".into(), "{not json".into());
        assert!(KubeDnsConfig::from_data(&data)
            .unwrap_err()
            .to_string()
            .starts_with("invalid stubDomains value"));
        let cfg = KubeDnsConfig {
            upstream_nameservers: vec!["https://dns.example".into()],
            ..Default::default()
        };
        assert_eq!(
            cfg.validate_for_node_cache().unwrap_err().to_string(),
            "invalid upstream nameservers [\"https://dns.example\"]: unsupported transport https of nameserver https://dns.example"
        );
        let cfg = KubeDnsConfig {
            stub_domains: [("a.b".to_string(), vec!["ns.example.com".to_string()])].into(),
            ..Default::default()
        };
        assert!(cfg
            .validate_for_node_cache()
            .unwrap_err()
            .to_string()
            .contains("for the stub domain a.b"));
        let ok = KubeDnsConfig {
            upstream_nameservers: vec![
                "tls://1.1.1.1".into(),
                "[::1]:53".into(),
                "dns://9.9.9.9:53".into(),
            ],
            ..Default::default()
        };
        ok.validate_for_node_cache().unwrap();
    }

    #[test]
    fn service_env_names() {
        assert_eq!(service_env("kube-dns"), "KUBE_DNS_SERVICE_HOST");
        assert_eq!(
            service_env("kube-dns-upstream"),
            "KUBE_DNS_UPSTREAM_SERVICE_HOST"
        );
    }

    #[test]
    fn reads_configmap_folder_like_kubelet_mounts_it() {
        let dir = std::env::temp_dir().join(format!("nc-cm-{}", std::process::id()));
        let data = dir.join("..2026_01_01");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("stubDomains"), r#"{"x.y": ["1.2.3.4"]}"#).unwrap();
        let _ = std::fs::remove_file(dir.join("..data"));
        let _ = std::fs::remove_file(dir.join("stubDomains"));
        std::os::unix::fs::symlink("..2026_01_01", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/stubDomains", dir.join("stubDomains")).unwrap();
        let (d, v) = read_dir(&dir).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(v.len(), 64);
        let cfg = KubeDnsConfig::from_data(&d).unwrap();
        assert_eq!(cfg.stub_domains["x.y"], vec!["1.2.3.4".to_string()]);
        assert!(read_dir(&dir.join("stubDomains"))
            .unwrap_err()
            .to_string()
            .contains("is not a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
