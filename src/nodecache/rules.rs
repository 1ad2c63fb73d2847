//! What node-cache programs into the packet filter, whatever the tool (`iptables.rs`,
//! `nftables.rs`), and the choice of tool (`-rules`, or detected from kube-proxy's rules).
//!
//! For each local IP (either family): DNS traffic to it skips conntrack (NOTRACK) — but only
//! while a socket is bound to it (`-m socket` / `socket wildcard 0`), so when no node cache
//! listens (killed, OOM-killed, not started yet) the same packets are tracked and NATed to the
//! cluster DNS: by kube-proxy's own Service rule for the kube-dns ClusterIP, by node-cache's
//! fallback DNAT (consulted after kube-proxy's) for the link-local IP. Replies and host-network
//! clients skip conntrack as in k8s-dns-node-cache, and ACCEPT rules let the traffic through.

use std::net::IpAddr;
use std::process::{Command, Stdio};

pub(crate) const COMMENT_SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
pub(crate) const COMMENT_ALLOW_TRAFFIC: &str = "NodeLocal DNS Cache: allow DNS traffic";
pub(crate) const COMMENT_FALLBACK: &str = "NodeLocal DNS Cache: fallback to cluster DNS";
pub(crate) const COMMENT_TRACKED: &str = "NodeLocal DNS Cache: connections through NAT";

/// What the rules are about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The local IPs, in `-localip` order (either family).
    pub ips: Vec<IpAddr>,
    /// `-dns.port`.
    pub port: u16,
    /// `-health-port`.
    pub health_port: u16,
}

impl Spec {
    /// The fallback targets of the family of `ip`.
    pub(crate) fn targets_for(ip: IpAddr, targets: &[IpAddr]) -> Vec<IpAddr> {
        targets
            .iter()
            .filter(|t| t.is_ipv6() == ip.is_ipv6())
            .copied()
            .collect()
    }
}

/// Why a rules command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RulesError {
    /// Another program held the xtables lock past our wait (`iptables_lock` metric).
    Lock(String),
    /// Anything else (`iptables` metric, also for nftables).
    Other(String),
}

impl RulesError {
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            RulesError::Lock(_) => "iptables_lock",
            RulesError::Other(_) => "iptables",
        }
    }
}

impl std::fmt::Display for RulesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RulesError::Lock(s) | RulesError::Other(s) => f.write_str(s),
        }
    }
}

/// What a pass over the rules found or did, for the log and the error metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The rule was there.
    Present(String),
    /// The rule was missing and was added.
    Added(String),
    /// The rule was deleted.
    Deleted(String),
    /// Checking, adding or deleting the rule failed.
    Failed(String, RulesError),
}

/// A tool that programs the rules.
pub(crate) trait Backend: Send + Sync {
    /// Names the tool for the log (`iptables-nft`, `nftables table inet sextant-nodelocaldns`).
    fn describe(&self) -> String;
    /// Puts back whatever rule is missing and installs the fallback targets if they changed.
    fn ensure(&self, spec: &Spec, targets: &[IpAddr]) -> Vec<Event>;
    /// Removes the rules that steer new queries to the local sockets (the conditional NOTRACK
    /// of PREROUTING for UDP and for TCP SYNs), keeping everything else: new queries and
    /// connections go to the cluster DNS (NAT) while the sockets drain, and a TCP handshake
    /// already under way completes on the listener, which takes it before closing. (With the
    /// SYN rule left, a SYN reaching the listener as it closes would be reset.)
    fn remove_local(&self, spec: &Spec) -> Vec<Event>;
    /// Removes everything it added.
    fn remove_all(&self, spec: &Spec) -> Vec<Event>;
}

/// `-rules`: which tool programs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `iptables`/`ip6tables` as found on PATH (k8s-dns-node-cache's behaviour).
    Iptables,
    IptablesLegacy,
    IptablesNft,
    /// `nft`, in a table of node-cache's own.
    Nftables,
    /// The tool kube-proxy uses, see [`detect`].
    Auto,
}

impl Mode {
    pub(crate) fn parse(s: &str) -> Option<Mode> {
        match s {
            "iptables" => Some(Mode::Iptables),
            "iptables-legacy" => Some(Mode::IptablesLegacy),
            "iptables-nft" => Some(Mode::IptablesNft),
            "nftables" => Some(Mode::Nftables),
            "auto" => Some(Mode::Auto),
            _ => None,
        }
    }
}

fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// For `-rules auto`: kube-proxy's own tool when its rules are found (a `kube-proxy` nftables
/// table; `KUBE-` chains in the legacy or nft iptables), else nftables when `nft` runs, else
/// iptables. Returns the mode and why.
pub(crate) fn detect() -> (Mode, &'static str) {
    for fam in ["ip", "ip6"] {
        if output_of("nft", &["list", "table", fam, "kube-proxy"]).is_some() {
            return (Mode::Nftables, "kube-proxy's nftables table exists");
        }
    }
    if output_of("iptables-legacy-save", &["-t", "nat"]).is_some_and(|t| t.contains(":KUBE-")) {
        return (
            Mode::IptablesLegacy,
            "kube-proxy's chains are in iptables-legacy",
        );
    }
    if output_of("iptables-nft-save", &["-t", "nat"]).is_some_and(|t| t.contains(":KUBE-")) {
        return (Mode::IptablesNft, "kube-proxy's chains are in iptables-nft");
    }
    if output_of("nft", &["--version"]).is_some() {
        return (
            Mode::Nftables,
            "no kube-proxy rules found, nft is available",
        );
    }
    (
        Mode::Iptables,
        "no kube-proxy rules found, nft is not available",
    )
}

/// The backend for a mode (`Auto` resolved by the caller).
pub(crate) fn backend(mode: Mode, interface: &str) -> Box<dyn Backend> {
    match mode {
        Mode::Nftables => Box::new(crate::nodecache::nftables::Nftables::new(interface)),
        Mode::IptablesLegacy => Box::new(crate::nodecache::iptables::Iptables::new("-legacy")),
        Mode::IptablesNft => Box::new(crate::nodecache::iptables::Iptables::new("-nft")),
        Mode::Iptables | Mode::Auto => Box::new(crate::nodecache::iptables::Iptables::new("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_targets() {
        assert_eq!(Mode::parse("nftables"), Some(Mode::Nftables));
        assert_eq!(Mode::parse("iptables-legacy"), Some(Mode::IptablesLegacy));
        assert_eq!(Mode::parse("ipfw"), None);
        let t: Vec<IpAddr> = vec![
            "203.0.113.2".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            "203.0.113.3".parse().unwrap(),
        ];
        assert_eq!(
            Spec::targets_for("169.254.20.10".parse().unwrap(), &t),
            vec![t[0], t[2]]
        );
        assert_eq!(
            Spec::targets_for("fd00::10".parse().unwrap(), &t),
            vec![t[1]]
        );
        assert_eq!(RulesError::Lock("x".into()).metric_label(), "iptables_lock");
    }
}
