//! The node-cache rules as one nftables table of its own (`table inet sextant-<interface>`, both
//! families), replaced in one `nft -f` transaction and deleted whole on teardown, so it never
//! touches kube-proxy's tables, iptables-nft's or iptables-legacy's. Blocking `nft` calls.
//!
//! Its filter-input ACCEPT rules only accept within this table: a DROP elsewhere (another
//! table, or iptables) still drops; in iptables mode the ACCEPT sits in the shared filter chain.
//!
//! A TCP connection conntrack tracks (opened through the fallback or kube-proxy's DNAT while no
//! node cache listened) is remembered in the `fallback4`/`fallback6` sets (client address and
//! port, local IP; refreshed by each of its packets, forgotten 2 minutes after the last): its
//! packets skip the NOTRACK rules, so once a node cache listens again they still reach conntrack
//! and its NAT instead of the new listener, which would answer them with a reset. The sets
//! survive a replacement of the rules (only the chains are replaced).

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::nodecache::rules::{
    Backend, Event, RulesError, Spec, COMMENT_ALLOW_TRAFFIC, COMMENT_FALLBACK,
    COMMENT_SKIP_CONNTRACK, COMMENT_TRACKED,
};

/// Programs node-cache's nftables table.
pub(crate) struct Nftables {
    pub table: String,
    /// The script last applied.
    installed: Mutex<Option<String>>,
}

fn fam(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() {
        "ip6"
    } else {
        "ip"
    }
}

/// The chains of the table, in script order.
const CHAINS: [&str; 6] = [
    "raw-prerouting",
    "conntrack-prerouting",
    "raw-output",
    "filter-input",
    "filter-output",
    "nat-prerouting",
];

/// The set of tracked TCP connections for a family (see the module doc).
fn tracked_set(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() {
        "fallback6"
    } else {
        "fallback4"
    }
}

/// The table's contents. With `draining`, without the NOTRACK rules of prerouting that steer
/// new queries to the sockets, UDP and TCP SYNs (what is left while the sockets drain on
/// shutdown, see `Backend::remove_local`).
pub(crate) fn script(table: &str, spec: &Spec, targets: &[IpAddr], draining: bool) -> String {
    let (p, hp) = (spec.port, spec.health_port);
    let skip = format!("comment \"{COMMENT_SKIP_CONNTRACK}\"");
    let allow = format!("comment \"{COMMENT_ALLOW_TRAFFIC}\"");
    let tracked = format!("comment \"{COMMENT_TRACKED}\"");
    let mut pre = Vec::new();
    let mut ct_pre = Vec::new();
    let mut raw_out = Vec::new();
    let mut input = Vec::new();
    let mut output = Vec::new();
    let mut nat = Vec::new();
    for ip in &spec.ips {
        let f = fam(*ip);
        let set = tracked_set(*ip);
        let conn = format!("{f} saddr . tcp sport . {f} daddr");
        for proto in ["tcp", "udp"] {
            // Only while a socket (not a wildcard one) serves the IP. `socket wildcard` cannot
            // look at a connection still in its handshake (no full socket yet), so TCP packets
            // other than the SYN ask `socket transparent 0` instead, which any socket answers:
            // for them the lookup finds the connection's own socket first — or the listener,
            // for a connection NATed to the cluster DNS before it listened: the set excepts
            // those.
            if proto == "tcp" {
                // The SYN rule steers new connections: it goes while the listener drains.
                if !draining {
                    pre.push(format!(
                        "{f} daddr {ip} tcp dport {p} tcp flags syn / syn,ack {conn} != @{set} socket wildcard 0 notrack {skip}"
                    ));
                }
                pre.push(format!(
                    "{f} daddr {ip} tcp dport {p} tcp flags != syn / syn,ack {conn} != @{set} socket transparent 0 notrack {skip}"
                ));
                ct_pre.push(format!(
                    "{f} daddr {ip} tcp dport {p} ct state established,new update @{set} {{ {conn} }} {tracked}"
                ));
            } else if !draining {
                pre.push(format!(
                    "{f} daddr {ip} udp dport {p} socket wildcard 0 notrack {skip}"
                ));
            }
            input.push(format!("{f} daddr {ip} {proto} dport {p} accept {allow}"));
            raw_out.push(format!("{f} saddr {ip} {proto} sport {p} notrack {skip}"));
            output.push(format!("{f} saddr {ip} {proto} sport {p} accept {allow}"));
            raw_out.push(format!("{f} daddr {ip} {proto} dport {p} notrack {skip}"));
        }
        raw_out.push(format!("{f} daddr {ip} tcp dport {hp} notrack {skip}"));
        raw_out.push(format!("{f} saddr {ip} tcp sport {hp} notrack {skip}"));
        let t = Spec::targets_for(*ip, targets);
        let to = match t.len() {
            0 => None,
            1 => Some(t[0].to_string()),
            n => Some(format!(
                "numgen random mod {n} map {{ {} }}",
                t.iter()
                    .enumerate()
                    .map(|(i, a)| format!("{i} : {a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        if let Some(to) = to {
            for proto in ["tcp", "udp"] {
                nat.push(format!(
                    "{f} daddr {ip} {proto} dport {p} dnat {f} to {to} comment \"{COMMENT_FALLBACK}\""
                ));
            }
        }
    }
    let chain = |name: &str, hook: &str, kind: &str, prio: &str, rules: &[String]| {
        let mut c = format!(
            "\tchain {name} {{\n\t\ttype {kind} hook {hook} priority {prio}; policy accept;\n"
        );
        for r in rules {
            c.push_str(&format!("\t\t{r}\n"));
        }
        c.push_str("\t}\n");
        c
    };
    let mut s = format!("table inet {table} {{\n");
    let mut sets: Vec<&str> = spec.ips.iter().map(|ip| tracked_set(*ip)).collect();
    sets.sort_unstable();
    sets.dedup();
    for set in sets {
        let a = if set == "fallback6" {
            "ipv6_addr"
        } else {
            "ipv4_addr"
        };
        s.push_str(&format!(
            "\tset {set} {{\n\t\ttype {a} . inet_service . {a}\n\t\tsize 65536\n\t\tflags dynamic,timeout\n\t\ttimeout 2m\n\t}}\n"
        ));
    }
    s.push_str(&chain(
        "raw-prerouting",
        "prerouting",
        "filter",
        "raw",
        &pre,
    ));
    // After conntrack, before any NAT: connections conntrack tracks.
    s.push_str(&chain(
        "conntrack-prerouting",
        "prerouting",
        "filter",
        "mangle",
        &ct_pre,
    ));
    s.push_str(&chain("raw-output", "output", "filter", "raw", &raw_out));
    s.push_str(&chain("filter-input", "input", "filter", "filter", &input));
    s.push_str(&chain(
        "filter-output",
        "output",
        "filter",
        "filter",
        &output,
    ));
    // After kube-proxy's NAT (dstnat): its Service rule wins for the kube-dns ClusterIP.
    s.push_str(&chain(
        "nat-prerouting",
        "prerouting",
        "nat",
        "dstnat + 10",
        &nat,
    ));
    s.push_str("}\n");
    s
}

/// True if two rulesets read the same, blank lines and indentation aside.
fn same_text(a: &str, b: &str) -> bool {
    let lines = |s: &str| {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    lines(a) == lines(b)
}

/// How many of our commented rules a listing or script holds.
fn count_rules(text: &str) -> usize {
    text.matches("comment \"NodeLocal DNS Cache").count()
}

impl Nftables {
    pub(crate) fn new(interface: &str) -> Nftables {
        Nftables {
            table: format!("sextant-{interface}"),
            installed: Mutex::new(None),
        }
    }

    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<String, RulesError> {
        let mut c = Command::new("nft");
        c.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| RulesError::Other(format!("running nft: {e}")))?;
        if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(text.as_bytes())
                .map_err(|e| RulesError::Other(format!("nft: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RulesError::Other(format!("nft: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RulesError::Other(format!(
                "nft {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// The table's listing without the sets' elements (`-t`), None if it does not exist.
    fn listing(&self) -> Option<String> {
        self.nft(&["-t", "list", "table", "inet", &self.table], None)
            .ok()
    }

    /// Replaces the table's chains with `script`'s in one transaction, keeping the sets and
    /// their elements (the connections they except from NOTRACK are still open). If that fails
    /// (a set of another definition, left by another version), replaces the whole table.
    fn replace(&self, script: &str) -> Result<(), RulesError> {
        let t = &self.table;
        let mut text = format!("add table inet {t}\n");
        for c in CHAINS {
            text.push_str(&format!("add chain inet {t} {c}\n"));
        }
        for c in CHAINS {
            text.push_str(&format!("delete chain inet {t} {c}\n"));
        }
        text.push_str(script);
        if self.nft(&["-f", "-"], Some(&text)).is_err() {
            let text = format!("table inet {t} {{}}\ndelete table inet {t}\n{script}");
            self.nft(&["-f", "-"], Some(&text))?;
        }
        if let Ok(mut i) = self.installed.lock() {
            *i = Some(script.to_string());
        }
        Ok(())
    }
}

impl Backend for Nftables {
    fn describe(&self) -> String {
        format!("nftables table inet {}", self.table)
    }

    fn ensure(&self, spec: &Spec, targets: &[IpAddr]) -> Vec<Event> {
        let want = script(&self.table, spec, targets, false);
        let name = format!(
            "{{table inet {} [{} rules]}}",
            self.table,
            count_rules(&want)
        );
        let listing = self.listing();
        let same = self.installed.lock().ok().and_then(|i| i.clone()).as_ref() == Some(&want);
        let intact = listing
            .as_ref()
            .is_some_and(|l| count_rules(l) == count_rules(&want));
        // Installed by another instance exactly as this one would.
        let identical = listing.as_ref().is_some_and(|l| same_text(l, &want));
        if (same && intact) || identical {
            if let Ok(mut i) = self.installed.lock() {
                *i = Some(want);
            }
            return vec![Event::Present(name)];
        }
        match self.replace(&want) {
            Ok(()) => vec![Event::Added(name)],
            Err(e) => vec![Event::Failed(name, e)],
        }
    }

    fn remove_local(&self, spec: &Spec) -> Vec<Event> {
        if self.listing().is_none() {
            return Vec::new();
        }
        // The fallback targets as installed; only the steering goes.
        let targets = self
            .installed
            .lock()
            .ok()
            .and_then(|i| i.clone())
            .map(|s| targets_in(&s))
            .unwrap_or_default();
        let keep = script(&self.table, spec, &targets, true);
        let name = format!("{{table inet {} steering rules}}", self.table);
        match self.replace(&keep) {
            Ok(()) => vec![Event::Deleted(name)],
            Err(e) => vec![Event::Failed(name, e)],
        }
    }

    fn remove_all(&self, _spec: &Spec) -> Vec<Event> {
        let name = format!("{{table inet {}}}", self.table);
        if let Ok(mut i) = self.installed.lock() {
            *i = None;
        }
        if self.listing().is_none() {
            return Vec::new();
        }
        match self.nft(&["delete", "table", "inet", &self.table], None) {
            Ok(_) => vec![Event::Deleted(name)],
            Err(e) => vec![Event::Failed(name, e)],
        }
    }
}

/// The fallback targets written in a script (to keep them when the local rules go).
fn targets_in(script: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for line in script.lines().filter(|l| l.contains(" dnat ")) {
        let Some((_, to)) = line.split_once(" to ") else {
            continue;
        };
        for tok in to.split([' ', ',', '{', '}']) {
            if let Ok(ip) = tok.parse::<IpAddr>() {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            ips: vec![
                "169.254.20.10".parse().unwrap(),
                "fd00::10".parse().unwrap(),
            ],
            port: 53,
            health_port: 8080,
        }
    }

    #[test]
    fn one_table_both_families() {
        let targets: Vec<IpAddr> = vec![
            "203.0.113.2".parse().unwrap(),
            "203.0.113.3".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ];
        let s = script("sextant-nodelocaldns", &spec(), &targets, false);
        assert!(s.starts_with("table inet sextant-nodelocaldns {\n\tset fallback4 {\n\t\ttype ipv4_addr . inet_service . ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic,timeout\n\t\ttimeout 2m\n\t}\n\tset fallback6 {\n"), "{s}");
        assert!(s.contains("\tchain raw-prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tip daddr 169.254.20.10 tcp dport 53 tcp flags syn / syn,ack ip saddr . tcp sport . ip daddr != @fallback4 socket wildcard 0 notrack comment \"NodeLocal DNS Cache: skip conntrack\"\n\t\tip daddr 169.254.20.10 tcp dport 53 tcp flags != syn / syn,ack ip saddr . tcp sport . ip daddr != @fallback4 socket transparent 0 notrack comment"), "{s}");
        assert!(s.contains("\t\tip6 daddr fd00::10 udp dport 53 socket wildcard 0 notrack comment"));
        assert!(s.contains("\t\tip daddr 169.254.20.10 udp dport 53 dnat ip to numgen random mod 2 map { 0 : 203.0.113.2, 1 : 203.0.113.3 } comment \"NodeLocal DNS Cache: fallback to cluster DNS\"\n"), "{s}");
        assert!(s.contains("\t\tip6 daddr fd00::10 tcp dport 53 dnat ip6 to 2001:db8::2 comment"));
        assert!(s.contains("type nat hook prerouting priority dstnat + 10; policy accept;"));
        // 2 IPs x (11 DNS + 1 tracked + 2 health) + 2 x 2 fallback.
        assert_eq!(count_rules(&s), 32);
        assert!(s.contains("\t\tip6 daddr fd00::10 tcp dport 53 tcp flags != syn / syn,ack ip6 saddr . tcp sport . ip6 daddr != @fallback6 socket transparent 0 notrack comment"), "{s}");
        assert!(s.contains("\t\tip daddr 169.254.20.10 tcp dport 53 ct state established,new update @fallback4 { ip saddr . tcp sport . ip daddr } comment \"NodeLocal DNS Cache: connections through NAT\"\n"), "{s}");
        assert!(s.contains("\tset fallback6 {\n\t\ttype ipv6_addr . inet_service . ipv6_addr\n"));
        assert_eq!(targets_in(&s), targets);
        let keep = script("t", &spec(), &targets, true);
        assert_eq!(count_rules(&keep), 28);
        assert!(!keep.contains("udp dport 53 socket"));
        assert!(!keep.contains("tcp flags syn / syn,ack"));
        assert!(keep.contains("tcp dport 53 tcp flags != syn / syn,ack ip saddr . tcp sport . ip daddr != @fallback4 socket transparent 0 notrack"));
        assert_eq!(targets_in(&keep), targets);
        assert_eq!(count_rules(&script("t", &spec(), &[], false)), 28);
    }
}
