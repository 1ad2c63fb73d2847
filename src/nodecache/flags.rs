//! The flags of `sextant node-cache`, parsed the way Go's `flag` package does (`-flag=value`,
//! `-flag value`, `--flag`, booleans as `-flag` or `-flag=false`), with the defaults and checks
//! of the k8s-dns-node-cache image. Pure parsing: no I/O.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::pkg::duration;
use crate::pkg::flags::{FlagError, Flags};

/// Why `sextant node-cache`'s command line is refused, with k8s-dns-node-cache's texts.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlagsError {
    /// `-h`/`-help`: the usage text is the whole message.
    #[error("{}", usage())]
    Help,
    /// What Go's `flag` package reports (syntax, missing value, boolean, unknown flag).
    #[error("{0}")]
    Flag(FlagError),
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    #[error("invalid value {0:?} for flag -syncinterval: must be > 0")]
    ZeroInterval(String),
    #[error("invalid value {0:?} for flag -syncinterval: parse error")]
    Interval(String),
    #[error(
        "invalid rules mode {0:?}: want iptables, iptables-legacy, iptables-nft, nftables or auto"
    )]
    RulesMode(String),
    #[error("invalid healthcheck port specified - {0:?}")]
    HealthPort(String),
    #[error("invalid port specified - {0:?}")]
    Port(String),
    #[error("invalid localip specified - {0:?}")]
    LocalIp(String),
    #[error("invalid interface name {0:?}: must be 1 to 15 bytes")]
    InterfaceLength(String),
    #[error("invalid interface name {0:?}")]
    InterfaceName(String),
}

impl From<FlagError> for FlagsError {
    fn from(e: FlagError) -> Self {
        FlagsError::Flag(e)
    }
}

/// Everything node-cache is told on its command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Params {
    /// `-localip` as given (comma list), used verbatim in iptables rules.
    pub local_ip_str: String,
    /// The parsed local IPs, IPv4 and IPv6 in any mix (one process serves both).
    pub local_ips: Vec<IpAddr>,
    /// `-dns.port` (53): the port the cache listens on, used in the iptables rules.
    pub local_port: u16,
    pub metrics_listen_address: String,
    pub setup_interface: bool,
    pub interface_name: String,
    /// `-syncinterval`: seconds between iptables/interface checks.
    pub interval: Duration,
    pub pidfile: Option<PathBuf>,
    pub base_corefile: PathBuf,
    /// `-corefile`, overridden by `-conf`: where the generated Corefile is written and served from.
    pub corefile: PathBuf,
    /// `-kubednscm`: empty means `/etc/kube-dns` if that exists.
    pub kubedns_cm_path: Option<PathBuf>,
    pub upstream_svc_name: String,
    pub health_port: u16,
    pub setup_iptables: bool,
    /// `-rules`: the tool that programs them.
    pub rules: crate::nodecache::rules::Mode,
    /// `-fallbackendpoints`: a name whose A/AAAA records are the cluster DNS pods, the
    /// fallback DNAT targets of the local IPs when no node cache listens.
    pub fallback_endpoints: Option<String>,
    pub skip_teardown: bool,
    pub reload_with_signal: bool,
    /// `-quiet` (CoreDNS flag): no start-up banner.
    pub quiet: bool,
    /// Set when `-conf` was given (logged as `Using Corefile`).
    pub conf_given: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            local_ip_str: String::new(),
            local_ips: Vec::new(),
            local_port: 53,
            metrics_listen_address: "0.0.0.0:9353".into(),
            setup_interface: true,
            interface_name: "nodelocaldns".into(),
            interval: Duration::from_secs(60),
            pidfile: None,
            base_corefile: PathBuf::from("/etc/coredns/Corefile.base"),
            corefile: PathBuf::from("/etc/Corefile"),
            kubedns_cm_path: None,
            upstream_svc_name: "kube-dns".into(),
            health_port: 8080,
            setup_iptables: true,
            rules: crate::nodecache::rules::Mode::Iptables,
            fallback_endpoints: None,
            skip_teardown: false,
            reload_with_signal: false,
            quiet: false,
            conf_given: false,
        }
    }
}

/// The usage text, Go `flag.PrintDefaults` style.
pub(crate) fn usage() -> String {
    let mut s = String::from(
        "Usage of sextant node-cache:\nRuns Sextant as a node-local DNS cache listening on the specified ip:port\n\n",
    );
    for (name, kind, help, def) in [
        (
            "basecorefile",
            "string",
            "Path to the template Corefile for node-cache",
            "/etc/coredns/Corefile.base",
        ),
        (
            "conf",
            "string",
            "Corefile to load (overrides -corefile)",
            "",
        ),
        (
            "corefile",
            "string",
            "Path to the Corefile to be used by node-cache",
            "/etc/Corefile",
        ),
        ("dns.port", "string", "Default port", "53"),
        (
            "fallbackendpoints",
            "string",
            "name whose A/AAAA records are the cluster DNS pods: where the local IPs' queries go while no node cache listens",
            "",
        ),
        (
            "health-port",
            "string",
            "port used by health plugin",
            "8080",
        ),
        (
            "interfacename",
            "string",
            "name of the interface to be created",
            "nodelocaldns",
        ),
        (
            "kubednscm",
            "string",
            "Path where the kube-dns configmap will be mounted",
            "",
        ),
        (
            "localip",
            "string",
            "comma-separated string of ip addresses to bind dnscache to",
            "",
        ),
        (
            "metrics-listen-address",
            "string",
            "address to serve metrics on",
            "0.0.0.0:9353",
        ),
        ("pidfile", "string", "Path to write pid file", ""),
        ("quiet", "", "Quiet mode (no initialization output)", ""),
        (
            "rules",
            "string",
            "what programs the rules: iptables, iptables-legacy, iptables-nft, nftables or auto",
            "iptables",
        ),
        (
            "reloadwithsignal",
            "",
            "use SIGUSR1 on self to reload CoreDNS",
            "",
        ),
        (
            "setupinterface",
            "",
            "indicates whether network interface should be setup",
            "true",
        ),
        (
            "setupiptables",
            "",
            "indicates whether iptables rules should be setup",
            "true",
        ),
        (
            "skipteardown",
            "",
            "indicates whether iptables rules should be torn down on exit",
            "",
        ),
        (
            "syncinterval",
            "duration",
            "interval(in seconds) to check for iptables rules",
            "60",
        ),
        (
            "upstreamsvc",
            "string",
            "Service name whose cluster IP is upstream for node-cache",
            "kube-dns",
        ),
    ] {
        s.push_str(&format!("  -{name} {kind}\n    \t{help}"));
        if !def.is_empty() {
            s.push_str(&format!(" (default {def:?})"));
        }
        s.push('\n');
    }
    s
}

/// `-syncinterval`: Go's flag is a `time.Duration` defaulting to 60 that is later multiplied by
/// a second, so a bare number means seconds; a Go duration (`30s`, `1m`) is accepted too.
fn parse_interval(v: &str) -> Result<Duration, FlagsError> {
    if let Ok(n) = v.parse::<u64>() {
        if n == 0 {
            return Err(FlagsError::ZeroInterval(v.to_string()));
        }
        return Ok(Duration::from_secs(n));
    }
    match duration::parse(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(FlagsError::Interval(v.to_string())),
    }
}

/// Parses the arguments after `node-cache`.
pub(crate) fn parse(args: &[String]) -> Result<Params, FlagsError> {
    let mut p = Params::default();
    let mut it = Flags::new(args);
    while let Some(flag) = it.next_flag()? {
        let mut value = || it.value(&flag).map(str::to_string);
        let boolean = || flag.bool();
        match flag.name {
            "localip" => p.local_ip_str = value()?,
            "setupinterface" => p.setup_interface = boolean()?,
            "interfacename" => p.interface_name = value()?,
            "syncinterval" => p.interval = parse_interval(&value()?)?,
            "metrics-listen-address" => p.metrics_listen_address = value()?,
            "setupiptables" => p.setup_iptables = boolean()?,
            "rules" => {
                let v = value()?;
                p.rules = crate::nodecache::rules::Mode::parse(&v)
                    .ok_or_else(|| FlagsError::RulesMode(v.clone()))?;
            }
            "fallbackendpoints" => {
                let v = value()?;
                p.fallback_endpoints = (!v.is_empty()).then_some(v);
            }
            "basecorefile" => p.base_corefile = PathBuf::from(value()?),
            "corefile" => {
                let v = value()?;
                if !p.conf_given {
                    p.corefile = PathBuf::from(v);
                }
            }
            "conf" => {
                p.corefile = PathBuf::from(value()?);
                p.conf_given = true;
            }
            "kubednscm" => {
                let v = value()?;
                p.kubedns_cm_path = if v.is_empty() {
                    None
                } else {
                    Some(PathBuf::from(v))
                };
            }
            "upstreamsvc" => p.upstream_svc_name = value()?,
            "health-port" => {
                let v = value()?;
                p.health_port = v.parse().map_err(|_| FlagsError::HealthPort(v.clone()))?;
            }
            "skipteardown" => p.skip_teardown = boolean()?,
            "reloadwithsignal" => p.reload_with_signal = boolean()?,
            "pidfile" => {
                let v = value()?;
                p.pidfile = if v.is_empty() {
                    None
                } else {
                    Some(PathBuf::from(v))
                };
            }
            "dns.port" => {
                let v = value()?;
                p.local_port = v.parse().map_err(|_| FlagsError::Port(v.clone()))?;
            }
            "quiet" => p.quiet = boolean()?,
            "h" | "help" => return Err(FlagsError::Help),
            _ => return Err(flag.not_defined().into()),
        }
    }
    if let Some(a) = it.rest().first() {
        return Err(FlagsError::Unexpected(a.clone()));
    }
    validate(&mut p)?;
    Ok(p)
}

fn validate(p: &mut Params) -> Result<(), FlagsError> {
    p.local_ips.clear();
    for s in p.local_ip_str.split(',') {
        let ip: IpAddr = s.parse().map_err(|_| FlagsError::LocalIp(s.to_string()))?;
        p.local_ips.push(ip);
    }
    if p.setup_interface && (p.interface_name.is_empty() || p.interface_name.len() > 15) {
        return Err(FlagsError::InterfaceLength(p.interface_name.clone()));
    }
    if p.interface_name.contains(['/', ' ', '\0']) {
        return Err(FlagsError::InterfaceName(p.interface_name.clone()));
    }
    Ok(())
}

impl Params {
    /// True when some local IP is IPv6.
    #[cfg(test)]
    pub(crate) fn has_ipv6(&self) -> bool {
        self.local_ips.iter().any(|ip| ip.is_ipv6())
    }

    /// The local IPs separated by spaces, as substituted into the Corefile.
    #[cfg(test)]
    pub(crate) fn local_ips_spaced(&self) -> String {
        self.local_ip_str.replace(',', " ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn defaults() {
        let p = parse(&args(&["-localip", "169.254.20.10"])).unwrap();
        assert_eq!(
            p.local_ips,
            vec!["169.254.20.10".parse::<IpAddr>().unwrap()]
        );
        assert!(p.setup_interface && p.setup_iptables);
        assert!(!p.skip_teardown && !p.reload_with_signal);
        assert_eq!(p.interface_name, "nodelocaldns");
        assert_eq!(p.interval, Duration::from_secs(60));
        assert_eq!(p.metrics_listen_address, "0.0.0.0:9353");
        assert_eq!(p.base_corefile, PathBuf::from("/etc/coredns/Corefile.base"));
        assert_eq!(p.corefile, PathBuf::from("/etc/Corefile"));
        assert_eq!(p.kubedns_cm_path, None);
        assert_eq!(p.upstream_svc_name, "kube-dns");
        assert_eq!(p.health_port, 8080);
        assert_eq!(p.local_port, 53);
        assert_eq!(p.pidfile, None);
    }

    #[test]
    fn every_flag_in_every_syntax() {
        let p = parse(&args(&[
            "-localip=169.254.20.10,10.0.0.10",
            "--setupinterface=false",
            "-interfacename",
            "nlc0",
            "-syncinterval=5",
            "-metrics-listen-address",
            "127.0.0.1:9999",
            "-setupiptables=0",
            "-basecorefile",
            "/b/Corefile.base",
            "-corefile=/x/Corefile",
            "-kubednscm",
            "/k",
            "-upstreamsvc=kube-dns-upstream",
            "-health-port",
            "8081",
            "-skipteardown",
            "-reloadwithsignal=true",
            "-pidfile",
            "/tmp/p.pid",
            "-dns.port=1053",
            "-quiet",
            "-rules=nftables",
            "-fallbackendpoints",
            "kube-dns-endpoints.kube-system.svc.cluster.local",
        ]))
        .unwrap();
        assert_eq!(p.rules, crate::nodecache::rules::Mode::Nftables);
        assert_eq!(
            p.fallback_endpoints.as_deref(),
            Some("kube-dns-endpoints.kube-system.svc.cluster.local")
        );
        assert_eq!(p.local_ips.len(), 2);
        assert_eq!(p.local_ips_spaced(), "169.254.20.10 10.0.0.10");
        assert!(!p.setup_interface && !p.setup_iptables);
        assert!(p.skip_teardown && p.reload_with_signal && p.quiet);
        assert_eq!(p.interface_name, "nlc0");
        assert_eq!(p.interval, Duration::from_secs(5));
        assert_eq!(p.metrics_listen_address, "127.0.0.1:9999");
        assert_eq!(p.base_corefile, PathBuf::from("/b/Corefile.base"));
        assert_eq!(p.corefile, PathBuf::from("/x/Corefile"));
        assert_eq!(p.kubedns_cm_path, Some(PathBuf::from("/k")));
        assert_eq!(p.upstream_svc_name, "kube-dns-upstream");
        assert_eq!(p.health_port, 8081);
        assert_eq!(p.pidfile, Some(PathBuf::from("/tmp/p.pid")));
        assert_eq!(p.local_port, 1053);
    }

    #[test]
    fn conf_overrides_corefile_in_any_order() {
        let a = parse(&args(&["-localip=::1", "-conf", "/a", "-corefile", "/b"])).unwrap();
        assert_eq!(a.corefile, PathBuf::from("/a"));
        assert!(a.conf_given && a.has_ipv6());
        let b = parse(&args(&["-localip=::1", "-corefile", "/b", "-conf=/a"])).unwrap();
        assert_eq!(b.corefile, PathBuf::from("/a"));
    }

    #[test]
    fn syncinterval_accepts_go_durations() {
        let p = parse(&args(&["-localip=1.2.3.4", "-syncinterval=2m"])).unwrap();
        assert_eq!(p.interval, Duration::from_secs(120));
        assert!(parse(&args(&["-localip=1.2.3.4", "-syncinterval=0"])).is_err());
        assert!(parse(&args(&["-localip=1.2.3.4", "-syncinterval=soon"])).is_err());
    }

    #[test]
    fn errors() {
        let e = |a: &[&str]| parse(&args(a)).unwrap_err().to_string();
        assert_eq!(e(&[]), "invalid localip specified - \"\"");
        assert_eq!(
            e(&["-localip=1.2.3.4,x"]),
            "invalid localip specified - \"x\""
        );
        // Both families in one process.
        let both = parse(&args(&["-localip=169.254.20.10,fd00::10"])).unwrap();
        assert_eq!(both.local_ips.len(), 2);
        assert!(both.has_ipv6());
        assert!(e(&["-localip=1.2.3.4", "-rules=ipfw"]).starts_with("invalid rules mode \"ipfw\""));
        assert_eq!(e(&["-localip"]), "flag needs an argument: -localip");
        assert_eq!(
            e(&["-localip=1.2.3.4", "-nope"]),
            "flag provided but not defined: -nope"
        );
        assert_eq!(
            e(&["-localip=1.2.3.4", "stray"]),
            "unexpected argument \"stray\""
        );
        assert_eq!(
            e(&["-localip=1.2.3.4", "-dns.port=x"]),
            "invalid port specified - \"x\""
        );
        assert_eq!(
            e(&["-localip=1.2.3.4", "-health-port=http"]),
            "invalid healthcheck port specified - \"http\""
        );
        assert_eq!(
            e(&["-localip=1.2.3.4", "-skipteardown=maybe"]),
            "invalid boolean value \"maybe\" for -skipteardown: parse error"
        );
        assert!(
            e(&["-localip=1.2.3.4", "-interfacename=averyveryverylongname"])
                .starts_with("invalid interface name")
        );
        assert!(e(&["-h"]).starts_with("Usage of sextant node-cache"));
    }
}
