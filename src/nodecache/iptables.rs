//! The node-cache rules as iptables rules (NOTRACK in `raw`, ACCEPT in `filter`, for each local
//! IP, with `ip6tables` for IPv6 ones; the fallback DNAT in a `nat` chain of its own) and the
//! `iptables`/`iptables-legacy`/`iptables-nft` calls that check, prepend, append and delete them,
//! waiting for the xtables lock with `-w`. Blocking; the caller runs it off the async runtime.
//!
//! A TCP connection conntrack tracks (opened through the fallback or kube-proxy's DNAT while no
//! node cache listened) is remembered in the ipset `NODE-LOCAL-DNS-NAT4`/`-NAT6` (client address
//! and port, local IP; refreshed by each of its packets from `mangle PREROUTING`, forgotten 2
//! minutes after the last): the TCP NOTRACK rule skips its packets, so once a node cache listens
//! again they still reach conntrack and its NAT instead of the new listener, which would answer
//! them with a reset. Without the `ipset` tool the rules go without that exception (logged).

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::nodecache::rules::{
    Backend, Event, RulesError, Spec, COMMENT_ALLOW_TRAFFIC, COMMENT_FALLBACK,
    COMMENT_SKIP_CONNTRACK, COMMENT_TRACKED,
};

/// The `nat` chain holding the fallback DNAT rules.
pub(crate) const FALLBACK_CHAIN: &str = "NODE-LOCAL-DNS-FALLBACK";

/// Seconds to wait for the xtables lock.
const LOCK_WAIT: &str = "5";

/// The ipset of tracked TCP connections per family (see the module doc).
pub(crate) const TRACKED_SET4: &str = "NODE-LOCAL-DNS-NAT4";
pub(crate) const TRACKED_SET6: &str = "NODE-LOCAL-DNS-NAT6";

/// Seconds a tracked connection stays in the set after its last packet.
const TRACKED_TIMEOUT: &str = "120";

/// One rule: table, chain, match and target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub args: Vec<String>,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{{{} {} [{}]}}",
            self.table,
            self.chain,
            self.args.join(" ")
        )
    }
}

fn rule(
    table: &'static str,
    chain: &'static str,
    args: &[&str],
    target: &str,
    comment: &str,
) -> Rule {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend(["-j", target, "-m", "comment", "--comment", comment].map(String::from));
    Rule {
        table,
        chain,
        args: a,
    }
}

/// The DNS rules per local IP and protocol, in k8s-dns-node-cache's order:
/// (table, chain, address flag, port flag, target). `-d`/`--dport` match traffic to the IP,
/// `-s`/`--sport` traffic from it. The first one only while a socket serves the IP.
const DNS_RULES: [(&str, &str, &str, &str, &str); 5] = [
    ("raw", "PREROUTING", "-d", "--dport", "NOTRACK"),
    ("filter", "INPUT", "-d", "--dport", "ACCEPT"),
    ("raw", "OUTPUT", "-s", "--sport", "NOTRACK"),
    ("filter", "OUTPUT", "-s", "--sport", "ACCEPT"),
    // Host-network clients.
    ("raw", "OUTPUT", "-d", "--dport", "NOTRACK"),
];

/// The rules for every local IP (all of one family), in the order k8s-dns-node-cache ensures
/// them (each prepended, so the chain ends up holding them in reverse), then the rule filling
/// `tracked` (the ipset of tracked TCP connections; None without the ipset tool).
pub(crate) fn rules(
    local_ips: &str,
    dns_port: u16,
    health_port: u16,
    tracked: Option<&str>,
) -> Vec<Rule> {
    let port = dns_port.to_string();
    let hport = health_port.to_string();
    let (p, hp) = (port.as_str(), hport.as_str());
    let mut out = Vec::new();
    for ip in local_ips.split(',') {
        for (table, chain, addr, port_flag, target) in DNS_RULES {
            let comment = if target == "ACCEPT" {
                COMMENT_ALLOW_TRAFFIC
            } else {
                COMMENT_SKIP_CONNTRACK
            };
            for proto in ["tcp", "udp"] {
                if chain != "PREROUTING" {
                    let m = ["-p", proto, addr, ip, port_flag, p];
                    out.push(rule(table, chain, &m, target, comment));
                    continue;
                }
                // TCP's rule comes in two: the SYN one steers new connections to the listener
                // and goes on shutdown with the UDP one (see `is_steering`); the other keeps
                // the connections already there (handshakes included) on their socket.
                let flags: &[&[&str]] = if proto == "tcp" {
                    &[&["--syn"], &["!", "--syn"]]
                } else {
                    &[&[]]
                };
                for f in flags {
                    let mut m = vec!["-p", proto, addr, ip, port_flag, p];
                    m.extend_from_slice(f);
                    if let (Some(set), "tcp") = (tracked, proto) {
                        // Not for a connection conntrack tracks (NATed before a node cache
                        // listened): the listener would reset it.
                        m.extend(["-m", "set", "!", "--match-set", set, "src,src,dst"]);
                    }
                    // Only while something listens on the IP: else conntrack and NAT apply and
                    // the query reaches the cluster DNS (kube-proxy's DNAT, or the fallback).
                    m.extend(["-m", "socket"]);
                    out.push(rule(table, chain, &m, target, comment));
                }
            }
        }
        // The health probe on the local IP.
        for (addr, port_flag) in [("-d", "--dport"), ("-s", "--sport")] {
            out.push(rule(
                "raw",
                "OUTPUT",
                &["-p", "tcp", addr, ip, port_flag, hp],
                "NOTRACK",
                COMMENT_SKIP_CONNTRACK,
            ));
        }
        if let Some(set) = tracked {
            // After conntrack, before NAT: the connections conntrack tracks.
            let a: Vec<String> = [
                "-p",
                "tcp",
                "-d",
                ip,
                "--dport",
                p,
                "-m",
                "conntrack",
                "--ctstate",
                "NEW,ESTABLISHED",
                "-j",
                "SET",
                "--add-set",
                set,
                "src,src,dst",
                "--exist",
                "--timeout",
                TRACKED_TIMEOUT,
                "-m",
                "comment",
                "--comment",
                COMMENT_TRACKED,
            ]
            .map(String::from)
            .to_vec();
            out.push(Rule {
                table: "mangle",
                chain: "PREROUTING",
                args: a,
            });
        }
    }
    out
}

/// True for the NOTRACK rules of PREROUTING that steer new queries to the local sockets: UDP,
/// and TCP SYNs. On a lone shutdown they go first, so new queries and connections reach the
/// cluster DNS while handshakes already under way complete on the listener, which takes them
/// before it closes (a SYN reaching a closing listener would be reset).
fn is_steering(r: &Rule) -> bool {
    let a = &r.args;
    r.chain == "PREROUTING"
        && r.table == "raw"
        && (a.starts_with(&["-p".into(), "udp".into()])
            || a.windows(2).any(|w| w[1] == "--syn" && w[0] != "!"))
}

/// The single TCP NOTRACK rule of PREROUTING that earlier versions installed (SYNs and the
/// rest together), with and without the tracked-connections exception: a teardown removes it
/// too, when an instance of such a version left it.
fn legacy_tcp_steering(local_ips: &str, dns_port: u16, tracked: Option<&str>) -> Vec<Rule> {
    let port = dns_port.to_string();
    let mut out = Vec::new();
    for ip in local_ips.split(',') {
        let mut m = vec!["-p", "tcp", "-d", ip, "--dport", &port];
        out.push(rule(
            "raw",
            "PREROUTING",
            &[&m[..], &["-m", "socket"]].concat(),
            "NOTRACK",
            COMMENT_SKIP_CONNTRACK,
        ));
        if let Some(set) = tracked {
            m.extend([
                "-m",
                "set",
                "!",
                "--match-set",
                set,
                "src,src,dst",
                "-m",
                "socket",
            ]);
            out.push(rule(
                "raw",
                "PREROUTING",
                &m,
                "NOTRACK",
                COMMENT_SKIP_CONNTRACK,
            ));
        }
    }
    out
}

/// The jumps from `nat PREROUTING` to the fallback chain, per local IP and protocol. Appended,
/// so kube-proxy's Service rules (inserted first) win for the kube-dns ClusterIP.
pub(crate) fn fallback_jumps(local_ips: &str, dns_port: u16) -> Vec<Rule> {
    let port = dns_port.to_string();
    let mut out = Vec::new();
    for ip in local_ips.split(',') {
        for proto in ["tcp", "udp"] {
            out.push(rule(
                "nat",
                "PREROUTING",
                &["-p", proto, "-d", ip, "--dport", &port],
                FALLBACK_CHAIN,
                COMMENT_FALLBACK,
            ));
        }
    }
    out
}

/// The fallback chain's rules in `iptables -S` form: each local IP's DNS traffic DNATed to one
/// of `targets` at random (kube-proxy's `statistic` spread), same port.
pub(crate) fn fallback_chain(ips: &[IpAddr], dns_port: u16, targets: &[IpAddr]) -> Vec<String> {
    let mut out = Vec::new();
    for ip in ips {
        let t = Spec::targets_for(*ip, targets);
        let prefix = if ip.is_ipv6() { 128 } else { 32 };
        for proto in ["tcp", "udp"] {
            for (i, target) in t.iter().enumerate() {
                let left = t.len() - i;
                let stat = if left > 1 {
                    format!(
                        " -m statistic --mode random --probability {:.11}",
                        1.0 / left as f64
                    )
                } else {
                    String::new()
                };
                out.push(format!(
                    "-A {FALLBACK_CHAIN} -d {ip}/{prefix} -p {proto} -m {proto} --dport {dns_port}{stat} -j DNAT --to-destination {target}"
                ));
            }
        }
    }
    out
}

/// True if the chain as listed by `-S` holds `want` (iptables prints probabilities back rounded
/// to its own precision, so their values are not compared).
fn same_chain(have: &[String], want: &[String]) -> bool {
    let norm = |l: &String| {
        let mut out = Vec::new();
        let mut skip = false;
        for t in l.split_whitespace() {
            if skip {
                skip = false;
                continue;
            }
            skip = t == "--probability";
            out.push(t.to_string());
        }
        out.join(" ")
    };
    have.len() == want.len() && have.iter().map(norm).eq(want.iter().map(norm))
}

/// Runs one iptables flavour, both families: `iptables{flavour}` and `ip6tables{flavour}`.
pub(crate) struct Iptables {
    flavour: &'static str,
    /// Whether the `ipset` tool runs (for the tracked-connection sets).
    ipset: bool,
    /// The fallback chain contents last installed, per family.
    installed: Mutex<[Option<Vec<String>>; 2]>,
}

/// Result of a rule check.
enum Check {
    Present,
    Absent,
}

impl Iptables {
    /// `flavour` is `""`, `"-legacy"` or `"-nft"`.
    pub(crate) fn new(flavour: &'static str) -> Iptables {
        let ipset = Command::new("ipset")
            .arg("version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ipset {
            crate::log::warning(
                "ipset not found: a TCP connection NATed to the cluster DNS while no node cache listened is reset if it is still open when one listens again",
            );
        }
        Iptables {
            flavour,
            ipset,
            installed: Mutex::new([None, None]),
        }
    }

    /// The tracked-connection set of a family, None without the ipset tool.
    fn tracked_set(&self, ipv6: bool) -> Option<&'static str> {
        match (self.ipset, ipv6) {
            (false, _) => None,
            (true, false) => Some(TRACKED_SET4),
            (true, true) => Some(TRACKED_SET6),
        }
    }

    /// Runs `ipset` with `args`; true if it succeeded.
    fn ipset(&self, args: &[&str]) -> Result<(), RulesError> {
        let out = Command::new("ipset")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RulesError::Other(format!("running ipset: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RulesError::Other(format!(
                "ipset {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    pub(crate) fn program(&self, ipv6: bool) -> String {
        format!(
            "{}{}",
            if ipv6 { "ip6tables" } else { "iptables" },
            self.flavour
        )
    }

    fn run(&self, program: &str, op: &str, r: &Rule) -> Result<std::process::Output, RulesError> {
        let mut c = Command::new(program);
        c.args(["-w", LOCK_WAIT, "-t", r.table, op, r.chain]);
        c.args(&r.args);
        c.stdin(Stdio::null());
        c.output()
            .map_err(|e| RulesError::Other(format!("running {program}: {e}")))
    }

    fn failure(program: &str, what: &str, out: &std::process::Output) -> RulesError {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let msg = format!("{program} {what}: {}: {stderr}", out.status);
        if stderr.contains("xtables lock") {
            RulesError::Lock(msg)
        } else {
            RulesError::Other(msg)
        }
    }

    fn check(&self, program: &str, r: &Rule) -> Result<Check, RulesError> {
        let out = self.run(program, "-C", r)?;
        if out.status.success() {
            return Ok(Check::Present);
        }
        // Exit 1 with "does a matching rule exist" (or "Bad rule", or a missing chain) means
        // absent; lock and other problems report differently.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(1) && !stderr.contains("xtables lock") {
            return Ok(Check::Absent);
        }
        Err(Self::failure(program, &format!("-C {r}"), &out))
    }

    /// Makes sure the rule exists, adding it (`-I` first or `-A` last) if not. Returns true if
    /// it already existed.
    fn ensure_rule(&self, program: &str, r: &Rule, op: &str) -> Result<bool, RulesError> {
        if let Check::Present = self.check(program, r)? {
            return Ok(true);
        }
        let out = self.run(program, op, r)?;
        if out.status.success() {
            Ok(false)
        } else {
            Err(Self::failure(program, &format!("{op} {r}"), &out))
        }
    }

    /// Deletes every copy of the rule (bounded loop). Returns how many were deleted.
    fn delete_all(&self, program: &str, r: &Rule) -> Result<usize, RulesError> {
        for n in 0..64 {
            if let Check::Absent = self.check(program, r)? {
                return Ok(n);
            }
            let out = self.run(program, "-D", r)?;
            if !out.status.success() {
                return Err(Self::failure(program, &format!("-D {r}"), &out));
            }
        }
        Err(RulesError::Other(format!(
            "rule {r} still present after 64 deletions"
        )))
    }

    /// The rules of `-S FALLBACK_CHAIN` in the nat table; None if the chain does not exist.
    fn chain_rules(&self, program: &str) -> Result<Option<Vec<String>>, RulesError> {
        let out = Command::new(program)
            .args(["-w", LOCK_WAIT, "-t", "nat", "-S", FALLBACK_CHAIN])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RulesError::Other(format!("running {program}: {e}")))?;
        if out.status.success() {
            return Ok(Some(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with("-A "))
                    .map(String::from)
                    .collect(),
            ));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("xtables lock") {
            return Err(Self::failure(program, "-S", &out));
        }
        Ok(None)
    }

    /// Replaces the fallback chain's contents in one `iptables-restore --noflush` transaction
    /// (creating the chain if needed).
    fn install_chain(&self, program: &str, rules: &[String]) -> Result<(), RulesError> {
        let restore = format!("{program}-restore");
        let mut input = format!("*nat\n:{FALLBACK_CHAIN} - [0:0]\n");
        for r in rules {
            input.push_str(r);
            input.push('\n');
        }
        input.push_str("COMMIT\n");
        let mut child = Command::new(&restore)
            .args(["-w", LOCK_WAIT, "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RulesError::Other(format!("running {restore}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| RulesError::Other(format!("{restore}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RulesError::Other(format!("{restore}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Self::failure(&restore, FALLBACK_CHAIN, &out))
        }
    }

    fn remove_chain(&self, program: &str) -> Result<bool, RulesError> {
        if self.chain_rules(program)?.is_none() {
            return Ok(false);
        }
        for op in ["-F", "-X"] {
            let out = Command::new(program)
                .args(["-w", LOCK_WAIT, "-t", "nat", op, FALLBACK_CHAIN])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| RulesError::Other(format!("running {program}: {e}")))?;
            if !out.status.success() {
                return Err(Self::failure(
                    program,
                    &format!("{op} {FALLBACK_CHAIN}"),
                    &out,
                ));
            }
        }
        Ok(true)
    }

    fn families(spec: &Spec) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let ips: Vec<String> = spec
                .ips
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .map(|ip| ip.to_string())
                .collect();
            if !ips.is_empty() {
                out.push((v6, ips.join(",")));
            }
        }
        out
    }

    /// Ensures (or, with `delete`, deletes) the local rules; `only_steering` limits it to the
    /// rules steering new queries to the sockets (see [`is_steering`]).
    fn local_events(&self, spec: &Spec, ev: &mut Vec<Event>, delete: bool, only_steering: bool) {
        for (v6, ips) in Self::families(spec) {
            let program = self.program(v6);
            let set = self.tracked_set(v6);
            if let (Some(set), false) = (set, delete) {
                // Before the rules naming it; `-exist`: kept as it is (with its connections)
                // when another instance created it.
                let family = if v6 { "inet6" } else { "inet" };
                if let Err(e) = self.ipset(&[
                    "create",
                    set,
                    "hash:ip,port,ip",
                    "family",
                    family,
                    "timeout",
                    TRACKED_TIMEOUT,
                    // Sized for every element from the start: an add from the packet path
                    // cannot grow the hash, it fails while a resize is pending (a burst of
                    // connections through NAT then leaves some out, and the listener resets
                    // them once it is back).
                    "hashsize",
                    "65536",
                    "maxelem",
                    "65536",
                    "-exist",
                ]) {
                    // A set made with other parameters (an earlier version's) is kept and used.
                    if self.ipset(&["list", "-n", set]).is_err() {
                        ev.push(Event::Failed(format!("{{ipset {set}}}"), e));
                    }
                }
            }
            for r in rules(&ips, spec.port, spec.health_port, set) {
                if only_steering && !is_steering(&r) {
                    continue;
                }
                let name = format!("{r}");
                if delete {
                    match self.delete_all(&program, &r) {
                        Ok(0) => {}
                        Ok(_) => ev.push(Event::Deleted(name)),
                        Err(e) => ev.push(Event::Failed(name, e)),
                    }
                } else {
                    match self.ensure_rule(&program, &r, "-I") {
                        Ok(true) => ev.push(Event::Present(name)),
                        Ok(false) => ev.push(Event::Added(name)),
                        Err(e) => ev.push(Event::Failed(name, e)),
                    }
                }
            }
        }
    }
}

impl Backend for Iptables {
    fn describe(&self) -> String {
        format!("{} and {}", self.program(false), self.program(true))
    }

    fn ensure(&self, spec: &Spec, targets: &[IpAddr]) -> Vec<Event> {
        let mut ev = Vec::new();
        self.local_events(spec, &mut ev, false, false);
        for (v6, ips) in Self::families(spec) {
            let program = self.program(v6);
            let fam: Vec<IpAddr> = spec
                .ips
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .copied()
                .collect();
            let want = fallback_chain(&fam, spec.port, targets);
            let chain = format!("{{nat {FALLBACK_CHAIN} [{} rules]}}", want.len());
            // The chain first, so the jumps always have a target.
            let have = self.chain_rules(&program);
            let installed = self
                .installed
                .lock()
                .ok()
                .and_then(|i| i[v6 as usize].clone());
            match have {
                Ok(Some(h))
                    if same_chain(&h, &want)
                        || installed.as_ref() == Some(&want) && h.len() == want.len() =>
                {
                    if let Ok(mut i) = self.installed.lock() {
                        i[v6 as usize] = Some(want);
                    }
                    ev.push(Event::Present(chain))
                }
                Ok(_) => match self.install_chain(&program, &want) {
                    Ok(()) => {
                        if let Ok(mut i) = self.installed.lock() {
                            i[v6 as usize] = Some(want);
                        }
                        ev.push(Event::Added(chain));
                    }
                    Err(e) => ev.push(Event::Failed(chain, e)),
                },
                Err(e) => ev.push(Event::Failed(chain, e)),
            }
            for r in fallback_jumps(&ips, spec.port) {
                let name = format!("{r}");
                match self.ensure_rule(&program, &r, "-A") {
                    Ok(true) => ev.push(Event::Present(name)),
                    Ok(false) => ev.push(Event::Added(name)),
                    Err(e) => ev.push(Event::Failed(name, e)),
                }
            }
        }
        ev
    }

    fn remove_local(&self, spec: &Spec) -> Vec<Event> {
        let mut ev = Vec::new();
        self.local_events(spec, &mut ev, true, true);
        ev
    }

    fn remove_all(&self, spec: &Spec) -> Vec<Event> {
        let mut ev = Vec::new();
        self.local_events(spec, &mut ev, true, false);
        for (v6, ips) in Self::families(spec) {
            let program = self.program(v6);
            let legacy = legacy_tcp_steering(&ips, spec.port, self.tracked_set(v6));
            for r in legacy.iter().chain(&fallback_jumps(&ips, spec.port)) {
                let name = format!("{r}");
                match self.delete_all(&program, r) {
                    Ok(0) => {}
                    Ok(_) => ev.push(Event::Deleted(name)),
                    Err(e) => ev.push(Event::Failed(name, e)),
                }
            }
            let chain = format!("{{nat {FALLBACK_CHAIN}}}");
            match self.remove_chain(&program) {
                Ok(false) => {}
                Ok(true) => ev.push(Event::Deleted(chain)),
                Err(e) => ev.push(Event::Failed(chain, e)),
            }
            if let Ok(mut i) = self.installed.lock() {
                i[v6 as usize] = None;
            }
            // Once no rule names it.
            if let Some(set) = self.tracked_set(v6) {
                let name = format!("{{ipset {set}}}");
                if self.ipset(&["list", "-n", set]).is_ok() {
                    match self.ipset(&["destroy", set]) {
                        Ok(()) => ev.push(Event::Deleted(name)),
                        Err(e) => ev.push(Event::Failed(name, e)),
                    }
                }
            }
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_rules_per_ip_in_upstream_order() {
        let r = rules("169.254.20.10,10.0.0.10", 53, 8080, None);
        assert_eq!(r.len(), 26);
        assert_eq!(r[0].table, "raw");
        assert_eq!(r[0].chain, "PREROUTING");
        assert_eq!(
            r[0].args.join(" "),
            "-p tcp -d 169.254.20.10 --dport 53 --syn -m socket -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack"
        );
        assert_eq!(
            r[1].args.join(" "),
            "-p tcp -d 169.254.20.10 --dport 53 ! --syn -m socket -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack"
        );
        assert_eq!((r[4].table, r[4].chain), ("filter", "INPUT"));
        assert!(r[4]
            .args
            .join(" ")
            .starts_with("-p udp -d 169.254.20.10 --dport 53 -j ACCEPT"));
        assert_eq!((r[7].table, r[7].chain), ("filter", "OUTPUT"));
        assert!(r[7]
            .args
            .join(" ")
            .starts_with("-p tcp -s 169.254.20.10 --sport 53 -j ACCEPT"));
        assert!(r[11]
            .args
            .join(" ")
            .starts_with("-p tcp -d 169.254.20.10 --dport 8080 -j NOTRACK"));
        assert!(r[12]
            .args
            .join(" ")
            .starts_with("-p tcp -s 169.254.20.10 --sport 8080 -j NOTRACK"));
        assert!(r[13].args.join(" ").contains("-d 10.0.0.10 "));
        // What goes first on a lone shutdown: UDP and TCP SYN steering, per IP.
        let steering: Vec<usize> = (0..r.len()).filter(|&i| is_steering(&r[i])).collect();
        assert_eq!(steering, vec![0, 2, 13, 15]);
    }

    #[test]
    fn tracked_connections_skip_the_tcp_notrack() {
        let r = rules("169.254.20.10,10.0.0.10", 53, 8080, Some(TRACKED_SET4));
        assert_eq!(r.len(), 28);
        assert_eq!(
            r[0].args.join(" "),
            "-p tcp -d 169.254.20.10 --dport 53 --syn -m set ! --match-set NODE-LOCAL-DNS-NAT4 src,src,dst -m socket -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack"
        );
        assert_eq!(
            r[1].args.join(" "),
            "-p tcp -d 169.254.20.10 --dport 53 ! --syn -m set ! --match-set NODE-LOCAL-DNS-NAT4 src,src,dst -m socket -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack"
        );
        assert!(r[2]
            .args
            .join(" ")
            .starts_with("-p udp -d 169.254.20.10 --dport 53 -m socket -j NOTRACK"));
        assert_eq!((r[13].table, r[13].chain), ("mangle", "PREROUTING"));
        assert_eq!(
            r[13].args.join(" "),
            "-p tcp -d 169.254.20.10 --dport 53 -m conntrack --ctstate NEW,ESTABLISHED -j SET --add-set NODE-LOCAL-DNS-NAT4 src,src,dst --exist --timeout 120 -m comment --comment NodeLocal DNS Cache: connections through NAT"
        );
        assert!(r[27].args.join(" ").contains("-d 10.0.0.10 "));
    }

    #[test]
    fn teardown_knows_the_single_tcp_rule_of_earlier_versions() {
        // Exactly what earlier versions installed, with and without the ipset.
        let r: Vec<String> = legacy_tcp_steering("169.254.20.10", 53, Some(TRACKED_SET4))
            .iter()
            .map(|r| format!("{} {} {}", r.table, r.chain, r.args.join(" ")))
            .collect();
        assert_eq!(
            r,
            [
                "raw PREROUTING -p tcp -d 169.254.20.10 --dport 53 -m socket -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack",
                "raw PREROUTING -p tcp -d 169.254.20.10 --dport 53 -m set ! --match-set NODE-LOCAL-DNS-NAT4 src,src,dst -m socket -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack",
            ]
        );
    }

    #[test]
    fn ports_and_programs_follow_flags() {
        let r = rules("::1", 1053, 9090, None);
        assert!(r[0].args.contains(&"1053".to_string()));
        assert!(r[12].args.contains(&"9090".to_string()));
        let i = Iptables::new("-legacy");
        assert_eq!(i.program(true), "ip6tables-legacy");
        assert_eq!(i.program(false), "iptables-legacy");
        assert_eq!(Iptables::new("").program(true), "ip6tables");
    }

    #[test]
    fn fallback_spreads_over_targets_of_the_family() {
        let ips: Vec<IpAddr> = vec![
            "169.254.20.10".parse().unwrap(),
            "fd00::10".parse().unwrap(),
        ];
        let targets: Vec<IpAddr> = vec![
            "203.0.113.2".parse().unwrap(),
            "203.0.113.3".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ];
        let c = fallback_chain(&ips, 53, &targets);
        assert_eq!(
            c,
            vec![
                "-A NODE-LOCAL-DNS-FALLBACK -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 203.0.113.2",
                "-A NODE-LOCAL-DNS-FALLBACK -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 203.0.113.3",
                "-A NODE-LOCAL-DNS-FALLBACK -d 169.254.20.10/32 -p udp -m udp --dport 53 -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 203.0.113.2",
                "-A NODE-LOCAL-DNS-FALLBACK -d 169.254.20.10/32 -p udp -m udp --dport 53 -j DNAT --to-destination 203.0.113.3",
                "-A NODE-LOCAL-DNS-FALLBACK -d fd00::10/128 -p tcp -m tcp --dport 53 -j DNAT --to-destination 2001:db8::2",
                "-A NODE-LOCAL-DNS-FALLBACK -d fd00::10/128 -p udp -m udp --dport 53 -j DNAT --to-destination 2001:db8::2",
            ]
        );
        assert!(fallback_chain(&ips, 53, &[]).is_empty());
        let j = fallback_jumps("169.254.20.10", 53);
        assert_eq!(
            j[1].args.join(" "),
            "-p udp -d 169.254.20.10 --dport 53 -j NODE-LOCAL-DNS-FALLBACK -m comment --comment NodeLocal DNS Cache: fallback to cluster DNS"
        );
        assert_eq!((j[0].table, j[0].chain), ("nat", "PREROUTING"));
    }
}
