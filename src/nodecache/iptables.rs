//! The node-cache iptables rules (NOTRACK in `raw`, ACCEPT in `filter`, for each local IP) and
//! the `iptables`/`ip6tables` binary calls that check, prepend and delete them, waiting for the
//! xtables lock with `-w`. Blocking; the caller runs it off the async runtime.

use std::process::{Command, Stdio};

pub(crate) const COMMENT_SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
pub(crate) const COMMENT_ALLOW_TRAFFIC: &str = "NodeLocal DNS Cache: allow DNS traffic";

/// Seconds to wait for the xtables lock.
const LOCK_WAIT: &str = "5";

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
/// `-s`/`--sport` traffic from it.
const DNS_RULES: [(&str, &str, &str, &str, &str); 5] = [
    ("raw", "PREROUTING", "-d", "--dport", "NOTRACK"),
    ("filter", "INPUT", "-d", "--dport", "ACCEPT"),
    ("raw", "OUTPUT", "-s", "--sport", "NOTRACK"),
    ("filter", "OUTPUT", "-s", "--sport", "ACCEPT"),
    // Host-network clients.
    ("raw", "OUTPUT", "-d", "--dport", "NOTRACK"),
];

/// The rules for every local IP, in the order k8s-dns-node-cache ensures them (each prepended,
/// so the chain ends up holding them in reverse).
pub(crate) fn rules(local_ips: &str, dns_port: u16, health_port: u16) -> Vec<Rule> {
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
                out.push(rule(
                    table,
                    chain,
                    &["-p", proto, addr, ip, port_flag, p],
                    target,
                    comment,
                ));
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
    }
    out
}

/// Why an iptables call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IptError {
    /// Another program held the xtables lock past our wait (`iptables_lock` metric).
    Lock(String),
    /// Anything else (`iptables` metric).
    Other(String),
}

impl IptError {
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            IptError::Lock(_) => "iptables_lock",
            IptError::Other(_) => "iptables",
        }
    }
}

impl std::fmt::Display for IptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IptError::Lock(s) | IptError::Other(s) => f.write_str(s),
        }
    }
}

/// Runs iptables (v4) or ip6tables for one family.
#[derive(Debug, Clone)]
pub(crate) struct Iptables {
    pub program: String,
}

/// Result of a rule check.
enum Check {
    Present,
    Absent,
}

impl Iptables {
    pub(crate) fn new(ipv6: bool) -> Iptables {
        Iptables {
            program: if ipv6 { "ip6tables" } else { "iptables" }.to_string(),
        }
    }

    fn run(&self, op: &str, r: &Rule) -> Result<std::process::Output, IptError> {
        let mut c = Command::new(&self.program);
        c.args(["-w", LOCK_WAIT, "-t", r.table, op, r.chain]);
        c.args(&r.args);
        c.stdin(Stdio::null());
        c.output()
            .map_err(|e| IptError::Other(format!("running {}: {e}", self.program)))
    }

    fn failure(&self, op: &str, r: &Rule, out: &std::process::Output) -> IptError {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let msg = format!("{} {op} {r}: {}: {stderr}", self.program, out.status);
        if stderr.contains("xtables lock") {
            IptError::Lock(msg)
        } else {
            IptError::Other(msg)
        }
    }

    fn check(&self, r: &Rule) -> Result<Check, IptError> {
        let out = self.run("-C", r)?;
        if out.status.success() {
            return Ok(Check::Present);
        }
        // Exit 1 with "does a matching rule exist" (or "Bad rule") means absent; lock and
        // other problems report differently.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(1) && !stderr.contains("xtables lock") {
            return Ok(Check::Absent);
        }
        Err(self.failure("-C", r, &out))
    }

    /// Makes sure the rule exists, prepending it if not. Returns true if it already existed.
    pub(crate) fn ensure_prepended(&self, r: &Rule) -> Result<bool, IptError> {
        if let Check::Present = self.check(r)? {
            return Ok(true);
        }
        let out = self.run("-I", r)?;
        if out.status.success() {
            Ok(false)
        } else {
            Err(self.failure("-I", r, &out))
        }
    }

    /// Deletes every copy of the rule (bounded loop). Returns how many were deleted.
    pub(crate) fn delete_all(&self, r: &Rule) -> Result<usize, IptError> {
        for n in 0..64 {
            if let Check::Absent = self.check(r)? {
                return Ok(n);
            }
            let out = self.run("-D", r)?;
            if !out.status.success() {
                return Err(self.failure("-D", r, &out));
            }
        }
        Err(IptError::Other(format!(
            "rule {r} still present after 64 deletions"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_rules_per_ip_in_upstream_order() {
        let r = rules("169.254.20.10,10.0.0.10", 53, 8080);
        assert_eq!(r.len(), 24);
        assert_eq!(r[0].table, "raw");
        assert_eq!(r[0].chain, "PREROUTING");
        assert_eq!(
            r[0].args.join(" "),
            "-p tcp -d 169.254.20.10 --dport 53 -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack"
        );
        assert_eq!((r[3].table, r[3].chain), ("filter", "INPUT"));
        assert!(r[3]
            .args
            .join(" ")
            .starts_with("-p udp -d 169.254.20.10 --dport 53 -j ACCEPT"));
        assert_eq!((r[6].table, r[6].chain), ("filter", "OUTPUT"));
        assert!(r[6]
            .args
            .join(" ")
            .starts_with("-p tcp -s 169.254.20.10 --sport 53 -j ACCEPT"));
        assert!(r[10]
            .args
            .join(" ")
            .starts_with("-p tcp -d 169.254.20.10 --dport 8080 -j NOTRACK"));
        assert!(r[11]
            .args
            .join(" ")
            .starts_with("-p tcp -s 169.254.20.10 --sport 8080 -j NOTRACK"));
        assert!(r[12].args.join(" ").contains("-d 10.0.0.10 "));
    }

    #[test]
    fn ports_follow_flags() {
        let r = rules("::1", 1053, 9090);
        assert!(r[0].args.contains(&"1053".to_string()));
        assert!(r[11].args.contains(&"9090".to_string()));
        assert_eq!(Iptables::new(true).program, "ip6tables");
    }
}
