//! Parses the `kubernetes` directive into a [`Config`]: zones, data source, every option of
//! CoreDNS 1.14.7 plus Sextant's `manifests` and `snapshot`. No I/O beyond checking that named
//! files exist.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use sextant_corefile::{Directive, Error};
use sextant_kube::{ClientConfig, PodsMode, RateLimits};
use sextant_wire::Name;

use crate::pkg::fallthrough::Fall;
use crate::pkg::zones;
use crate::pkg::{duration, num};

/// Where the plugin's data comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DataSource {
    /// A Kubernetes API server (`endpoint`, `kubeconfig` or in-cluster).
    Api(ClientConfig),
    /// Static YAML/JSON files, re-read when they change (Sextant extension).
    Manifests(Vec<PathBuf>),
}

/// The parsed `kubernetes` block.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Authoritative zones, lower-case FQDN, in the order given.
    pub zones: Vec<Name>,
    /// Index into `zones` of the first non-reverse zone (PTR targets live there).
    pub primary: usize,
    pub source: DataSource,
    pub limits: RateLimits,
    /// `namespaces`: only these are exposed (empty = all).
    pub namespaces: BTreeSet<String>,
    pub namespace_labels: Option<String>,
    pub labels: Option<String>,
    pub pods: PodsMode,
    pub endpoint_pod_names: bool,
    pub ttl: u32,
    /// `noendpoints`: EndpointSlices are not watched (and ignored when given as manifests).
    pub noendpoints: bool,
    /// `fallthrough [ZONES...]`.
    pub fall: Fall,
    pub ignore_empty_service: bool,
    pub zonal: bool,
    /// `multicluster ZONES`: the zones answered from the MCS API (ServiceImports), each one of
    /// `zones`. Empty: the option is off and nothing of the MCS API is watched.
    pub multicluster: Vec<Name>,
    pub startup_timeout: Duration,
    /// `snapshot FILE`: persist the index there and load it at start.
    pub snapshot: Option<PathBuf>,
    /// `relist_period DURATION` (Sextant extension): period of the consistency re-list that
    /// repairs events the API server never delivered; 0 disables it. Default 5 minutes.
    pub relist_period: Duration,
}

impl Config {
    fn new(zones: Vec<Name>, primary: usize) -> Config {
        Config {
            zones,
            primary,
            source: DataSource::Api(ClientConfig::InCluster),
            limits: RateLimits::default(),
            namespaces: BTreeSet::new(),
            namespace_labels: None,
            labels: None,
            pods: PodsMode::Disabled,
            endpoint_pod_names: false,
            ttl: 5,
            noendpoints: false,
            fall: Fall::default(),
            ignore_empty_service: false,
            zonal: false,
            multicluster: Vec::new(),
            startup_timeout: Duration::from_secs(5),
            snapshot: None,
            relist_period: Duration::from_secs(300),
        }
    }

    /// The zone PTR targets are built in.
    pub(crate) fn primary_zone(&self) -> &Name {
        &self.zones[self.primary]
    }
}

/// Parses one `kubernetes` directive line and its block.
pub(crate) fn parse(d: &Directive, block_zones: &[String]) -> Result<Config, Error> {
    let zones = zones::from_args(d, &d.args, block_zones)?;
    let Some(primary) = zones.iter().position(|z| !z.is_reverse()) else {
        return Err(d.err("non-reverse zone name must be used"));
    };
    let mut c = Config::new(zones, primary);
    let mut endpoint: Option<String> = None;
    let mut tls: Option<(PathBuf, PathBuf, PathBuf)> = None;
    let mut kubeconfig: Option<(PathBuf, Option<String>)> = None;
    let mut manifests: Vec<PathBuf> = Vec::new();
    for sub in d.sub() {
        let name = sub.name.text.as_str();
        match name {
            "endpoint_pod_names" => {
                sub.arg_count(0, 0)?;
                c.endpoint_pod_names = true;
            }
            "pods" => {
                let t = sub.single_arg()?;
                c.pods = match t.text.as_str() {
                    "disabled" => PodsMode::Disabled,
                    "insecure" => PodsMode::Insecure,
                    "verified" => PodsMode::Verified,
                    other => {
                        return Err(sub.err_at(
                            t,
                            format!(
                                "wrong value for pods: {other},  must be one of: disabled, verified, insecure"
                            ),
                        ))
                    }
                };
            }
            "namespaces" => {
                sub.arg_count(1, usize::MAX)?;
                for a in &sub.args {
                    c.namespaces.insert(a.text.clone());
                }
            }
            "endpoint" => {
                sub.arg_count(1, usize::MAX)?;
                if sub.args.len() > 1 {
                    crate::log::PluginLog("kubernetes").warning(&format!(
                        "Multiple endpoints have been deprecated, only the first specified endpoint '{}' is used",
                        sub.args[0].text
                    ));
                }
                endpoint = Some(sub.args[0].text.clone());
            }
            "tls" => {
                sub.arg_count(3, 3)?;
                tls = Some((
                    PathBuf::from(&sub.args[0].text),
                    PathBuf::from(&sub.args[1].text),
                    PathBuf::from(&sub.args[2].text),
                ));
            }
            "labels" | "namespace_labels" => {
                sub.arg_count(1, usize::MAX)?;
                let sel = sub.arg_strs().join(" ");
                if let Err(e) = check_selector(&sel) {
                    let what = if name == "labels" {
                        "label selector"
                    } else {
                        "namespace_label selector"
                    };
                    return Err(sub.err(format!("unable to parse {what} value: '{sel}': {e}")));
                }
                if name == "labels" {
                    c.labels = Some(sel);
                } else {
                    c.namespace_labels = Some(sel);
                }
            }
            "fallthrough" => c.fall = Fall::parse(sub)?,
            "ttl" => {
                sub.arg_count(1, usize::MAX)?;
                let t = &sub.args[0];
                let v = num::atoi(sub, t)?;
                if !(0..=3600).contains(&v) {
                    return Err(sub.err_at(t, format!("ttl must be in range [0, 3600]: {v}")));
                }
                c.ttl = v as u32;
            }
            "noendpoints" => {
                sub.arg_count(0, 0)?;
                c.noendpoints = true;
            }
            "zonal" => {
                sub.arg_count(0, 0)?;
                c.zonal = true;
            }
            "ignore" => {
                // CoreDNS accepts a bare `ignore` silently; so do we.
                if let Some(t) = sub.args.first() {
                    if t.text != "empty_service" {
                        return Err(
                            sub.err_at(t, format!("unable to parse ignore value: '{}'", t.text))
                        );
                    }
                    c.ignore_empty_service = true;
                }
            }
            "kubeconfig" => {
                sub.arg_count(1, 2)?;
                kubeconfig = Some((
                    PathBuf::from(&sub.args[0].text),
                    sub.args.get(1).map(|t| t.text.clone()),
                ));
            }
            "multicluster" => {
                // CoreDNS: `OriginsFromArgsOrServerBlock(args, [])`, so a bare `multicluster`
                // names no zone; each zone must be one the plugin is authoritative for.
                let mut mc = Vec::new();
                for t in &sub.args {
                    for z in zones::normalize(sub, t)? {
                        if !c.zones.contains(&z) {
                            let auth: Vec<String> = c.zones.iter().map(|z| z.to_string()).collect();
                            return Err(sub.err_at(
                                t,
                                format!(
                                    "is not authoritative for the multicluster zone {z} (authoritative zones: [{}])",
                                    auth.join(" ")
                                ),
                            ));
                        }
                        mc.push(z);
                    }
                }
                c.multicluster = mc;
            }
            "startup_timeout" => {
                sub.arg_count(1, usize::MAX)?;
                let t = &sub.args[0];
                c.startup_timeout = duration::parse(&t.text).map_err(|_| {
                    sub.err_at(
                        t,
                        format!(
                            "failed to parse startup_timeout: {}, time: invalid duration {:?}",
                            t.text, t.text
                        ),
                    )
                })?;
            }
            "apiserver_qps" => {
                let t = sub.single_arg()?;
                let q: f32 = t
                    .text
                    .parse()
                    .map_err(|_| sub.err_at(t, format!("invalid apiserver_qps {:?}", t.text)))?;
                if q < 0.0 || !q.is_finite() {
                    return Err(sub.err_at(t, "apiserver_qps must be >= 0"));
                }
                c.limits.qps = q;
            }
            "apiserver_burst" | "apiserver_max_inflight" => {
                let t = sub.single_arg()?;
                let v: i64 = t
                    .text
                    .parse()
                    .map_err(|_| sub.err_at(t, format!("invalid {name} {:?}", t.text)))?;
                if v < 0 {
                    return Err(sub.err_at(t, format!("{name} must be >= 0")));
                }
                let v = u32::try_from(v).unwrap_or(u32::MAX);
                if name == "apiserver_burst" {
                    c.limits.burst = v;
                } else {
                    c.limits.max_inflight = v;
                }
            }
            "manifests" => {
                sub.arg_count(1, usize::MAX)?;
                for a in &sub.args {
                    let p = PathBuf::from(&a.text);
                    if !p.exists() {
                        return Err(sub.err_at(a, format!("manifests: {}: no such file", a.text)));
                    }
                    manifests.push(p);
                }
            }
            "relist_period" => {
                let t = sub.single_arg()?;
                c.relist_period = duration::parse(&t.text).map_err(|_| {
                    sub.err_at(
                        t,
                        format!(
                            "failed to parse relist_period: {}, time: invalid duration {:?}",
                            t.text, t.text
                        ),
                    )
                })?;
            }
            "snapshot" => {
                let t = sub.single_arg()?;
                c.snapshot = Some(PathBuf::from(&t.text));
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    if !c.namespaces.is_empty() && c.namespace_labels.is_some() {
        return Err(d.err("namespaces and namespace_labels cannot both be set"));
    }
    if c.zonal && c.noendpoints {
        return Err(d.err("zonal requires the endpoint cache; remove noendpoints"));
    }
    c.source = if !manifests.is_empty() {
        DataSource::Manifests(manifests)
    } else if let Some((path, context)) = kubeconfig {
        DataSource::Api(ClientConfig::Kubeconfig { path, context })
    } else if let Some(url) = endpoint {
        DataSource::Api(ClientConfig::Endpoint { url, tls })
    } else {
        DataSource::Api(ClientConfig::InCluster)
    };
    Ok(c)
}

/// What is wrong with a label selector (the texts of Kubernetes' selector parser).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SelectorError {
    #[error("unbalanced ')'")]
    UnbalancedClose,
    #[error("unbalanced '('")]
    UnbalancedOpen,
    #[error("found '', expected: !, identifier, or 'end of string'")]
    Empty,
    #[error("invalid label key {0:?}")]
    Key(String),
    #[error("expected ')'")]
    ExpectedClose,
    #[error("invalid label value {0:?}")]
    Value(String),
}

/// A light syntax check of a Kubernetes label selector (`a=b,c!=d,e in (x, y),!f,g`), so typos
/// fail at config time like CoreDNS's `ParseToLabelSelector`.
pub(crate) fn check_selector(sel: &str) -> Result<(), SelectorError> {
    let mut depth = 0i32;
    let mut part = String::new();
    let mut parts = Vec::new();
    for ch in sel.chars() {
        match ch {
            '(' => {
                depth += 1;
                part.push(ch);
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError::UnbalancedClose);
                }
                part.push(ch);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut part)),
            _ => part.push(ch),
        }
    }
    if depth != 0 {
        return Err(SelectorError::UnbalancedOpen);
    }
    parts.push(part);
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.len() <= 317
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            return Err(SelectorError::Empty);
        }
        if let Some(k) = p.strip_prefix('!') {
            if !key_ok(k.trim()) {
                return Err(SelectorError::Key(k.trim().to_string()));
            }
            continue;
        }
        let (k, rest) = if let Some(i) = p.find("!=") {
            (&p[..i], &p[i + 2..])
        } else if let Some(i) = p.find("==") {
            (&p[..i], &p[i + 2..])
        } else if let Some(i) = p.find('=') {
            (&p[..i], &p[i + 1..])
        } else if let Some(i) = p.find(" notin ") {
            (&p[..i], &p[i + 7..])
        } else if let Some(i) = p.find(" in ") {
            (&p[..i], &p[i + 4..])
        } else {
            if !key_ok(p) {
                return Err(SelectorError::Key(p.to_string()));
            }
            continue;
        };
        if !key_ok(k.trim()) {
            return Err(SelectorError::Key(k.trim().to_string()));
        }
        let rest = rest.trim();
        if rest.starts_with('(') {
            if !rest.ends_with(')') {
                return Err(SelectorError::ExpectedClose);
            }
        } else if !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(SelectorError::Value(rest.to_string()));
        }
    }
    Ok(())
}
