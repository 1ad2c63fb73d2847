//! Reverse mapping (RFC 1035 §3.5, RFC 3596 §2.5): IP networks written as CIDRs, the
//! `in-addr.arpa.` / `ip6.arpa.` name of an address, the reverse zones of a network (CoreDNS
//! `plugin/pkg/cidr`), and the address a reverse name stands for (CoreDNS
//! `dnsutil.ExtractAddressFromReverse`). Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::Name;

/// An IP network: an address with its host bits cleared and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse; displays as Go's `net.ParseCIDR` error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR address: {0}")]
pub struct CidrError(pub String);

impl IpNet {
    /// The network of `addr` with `prefix` bits (host bits cleared); None when the prefix is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        if u32::from(prefix) > bits(addr) {
            return None;
        }
        Some(IpNet {
            addr: from_u128(addr.is_ipv4(), to_u128(addr) & mask(addr, prefix)),
            prefix,
        })
    }

    /// Parses `IP/PREFIX` the way Go's `net.ParseCIDR` does: a full address (no zone), a
    /// decimal prefix length no longer than the address; host bits are allowed and cleared.
    pub fn parse(s: &str) -> Result<IpNet, CidrError> {
        let bad = || CidrError(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        IpNet::new(ip, prefix).ok_or_else(bad)
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `ip` is of the same family and inside the network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4()
            && to_u128(*ip) & mask(*ip, self.prefix) == to_u128(self.addr)
    }

    /// The reverse zones covering the network: one zone when the prefix is on an octet (IPv4)
    /// or nibble (IPv6) boundary, otherwise one zone for each subnet at the next boundary
    /// (`10.0.0.0/15` → `0.10.in-addr.arpa.` and `1.10.in-addr.arpa.`), like CoreDNS's
    /// `cidr.Split`.
    pub fn reverse_zones(&self) -> Vec<Name> {
        let v4 = self.addr.is_ipv4();
        let (bits, unit): (u32, u32) = if v4 { (32, 8) } else { (128, 4) };
        let prefix = u32::from(self.prefix);
        let aligned = prefix.div_ceil(unit) * unit;
        let count = 1u128 << (aligned - prefix);
        let step_shift = bits - aligned;
        let base = to_u128(self.addr);
        (0..count)
            .map(|i| {
                let addr = if step_shift >= 128 {
                    base
                } else {
                    base.wrapping_add(i << step_shift)
                };
                reverse_labels(v4, addr, aligned)
            })
            .collect()
    }
}

impl FromStr for IpNet {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<IpNet, CidrError> {
        IpNet::parse(s)
    }
}

/// `10.0.0.0/8`, `fd00::/64`.
impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u32 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v4: bool, v: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// The network mask of `prefix` bits in `ip`'s family, as a number like [`to_u128`]'s.
fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let bits = bits(ip);
    let host = bits.saturating_sub(u32::from(prefix));
    let all = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if host >= 128 {
        0
    } else {
        all & !((1u128 << host) - 1)
    }
}

/// The reverse name of the first `prefix` bits (a multiple of 8 for IPv4, of 4 for IPv6) of
/// `addr`: octets or nibbles, least significant first, then `in-addr.arpa.` or `ip6.arpa.`.
fn reverse_labels(v4: bool, addr: u128, prefix: u32) -> Name {
    let mut labels: Vec<String> = if v4 {
        (0..prefix / 8)
            .map(|i| ((addr >> (24 - 8 * i)) & 0xff).to_string())
            .collect()
    } else {
        (0..prefix / 4)
            .map(|i| format!("{:x}", (addr >> (124 - 4 * i)) & 0xf))
            .collect()
    };
    labels.reverse();
    let suffix: &[&str] = if v4 {
        &["in-addr", "arpa"]
    } else {
        &["ip6", "arpa"]
    };
    let all = labels
        .iter()
        .map(|l| l.as_bytes())
        .chain(suffix.iter().map(|l| l.as_bytes()));
    // At most 32 one-character labels plus the suffix: always a valid name.
    Name::from_labels(all).unwrap_or_else(|_| Name::root())
}

impl Name {
    /// The reverse name of an address: `4.3.2.1.in-addr.arpa.` for 1.2.3.4, 32 nibble labels
    /// under `ip6.arpa.` for an IPv6 address.
    pub fn reverse_of(ip: IpAddr) -> Name {
        let full = bits(ip);
        reverse_labels(ip.is_ipv4(), to_u128(ip), full)
    }

    /// True for `in-addr.arpa.`, `ip6.arpa.` and every name under them.
    pub fn is_reverse(&self) -> bool {
        let (mut prev, mut last): (Option<&[u8]>, Option<&[u8]>) = (None, None);
        for l in self.labels() {
            prev = last;
            last = Some(l);
        }
        matches!((prev, last), (Some(p), Some(l))
            if l.eq_ignore_ascii_case(b"arpa")
                && (p.eq_ignore_ascii_case(b"in-addr") || p.eq_ignore_ascii_case(b"ip6")))
    }

    /// The address a full reverse name stands for (`4.3.2.1.in-addr.arpa.` → 1.2.3.4; 32
    /// nibbles under `ip6.arpa.`), decoded as CoreDNS's `dnsutil.ExtractAddressFromReverse`
    /// does: the labels before the suffix reversed and read as an address (IPv6 nibbles in
    /// groups of four). An IPv4-mapped IPv6 address comes back as the IPv4 address, the way
    /// Go prints it. None when the name is not a reverse name or does not make an address.
    pub fn reverse_address(&self) -> Option<IpAddr> {
        let s = self.to_lowercase_string();
        if let Some(rest) = s.strip_suffix(".in-addr.arpa.") {
            let mut parts: Vec<&str> = rest.split('.').collect();
            parts.reverse();
            return match parts.join(".").parse::<IpAddr>().ok()? {
                IpAddr::V4(a) => Some(IpAddr::V4(a)),
                IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
            };
        }
        if let Some(rest) = s.strip_suffix(".ip6.arpa.") {
            let mut parts: Vec<&str> = rest.split('.').collect();
            parts.reverse();
            let groups: Vec<String> = parts.chunks_exact(4).map(|c| c.concat()).collect();
            return match groups.join(":").parse::<IpAddr>().ok()? {
                IpAddr::V6(a) => Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)),
                v4 => Some(v4),
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn net(s: &str) -> IpNet {
        IpNet::parse(s).unwrap()
    }

    fn zones(s: &str) -> Vec<String> {
        net(s).reverse_zones().iter().map(Name::to_string).collect()
    }

    #[test]
    fn parse_like_go() {
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(
            net("10.1.2.3/32").addr(),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(net("0.0.0.0/0").prefix(), 0);
        assert_eq!(net("fd00::1/64").to_string(), "fd00::/64");
        assert_eq!(net("::/0").to_string(), "::/0");
        assert_eq!(net("10.0.0.0/008").prefix(), 8);
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "x/8",
            "10.0.0.0/300",
        ] {
            assert_eq!(
                IpNet::parse(bad),
                Err(CidrError(bad.to_string())),
                "{bad} must not parse"
            );
        }
        assert_eq!(
            CidrError("10.0.0.0/33".into()).to_string(),
            "invalid CIDR address: 10.0.0.0/33"
        );
        assert_eq!("10.0.0.0/8".parse::<IpNet>(), Ok(net("10.0.0.0/8")));
        assert_eq!(IpNet::new("10.0.0.1".parse().unwrap(), 33), None);
    }

    #[test]
    fn contains() {
        let v4 = net("10.1.0.0/16");
        assert!(v4.contains(&"10.1.255.3".parse().unwrap()));
        assert!(!v4.contains(&"10.2.0.1".parse().unwrap()));
        assert!(!v4.contains(&"::ffff:10.1.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains(&"192.0.2.1".parse().unwrap()));
        assert!(!net("0.0.0.0/0").contains(&"::1".parse().unwrap()));
        let v6 = net("fd00:1::/32");
        assert!(v6.contains(&"fd00:1:ffff::1".parse().unwrap()));
        assert!(!v6.contains(&"fd00:2::1".parse().unwrap()));
        assert!(net("::/0").contains(&"fd00:2::1".parse().unwrap()));
        assert!(net("fd00::1/128").contains(&"fd00::1".parse().unwrap()));
        assert!(!net("fd00::1/128").contains(&"fd00::2".parse().unwrap()));
    }

    #[test]
    fn reverse_zones_split_on_octets_and_nibbles() {
        assert_eq!(zones("172.16.0.0/16"), vec!["16.172.in-addr.arpa."]);
        let z = zones("172.16.0.0/12");
        assert_eq!(z.len(), 16);
        assert_eq!(
            (z[0].as_str(), z[15].as_str()),
            ("16.172.in-addr.arpa.", "31.172.in-addr.arpa.")
        );
        assert_eq!(
            zones("192.168.4.9/23"),
            vec!["4.168.192.in-addr.arpa.", "5.168.192.in-addr.arpa."]
        );
        assert_eq!(zones("0.0.0.0/0"), vec!["in-addr.arpa."]);
        let z = zones("0.0.0.0/1");
        assert_eq!(z.len(), 128);
        assert_eq!(
            (z[0].as_str(), z[127].as_str()),
            ("0.in-addr.arpa.", "127.in-addr.arpa.")
        );
        assert_eq!(zones("198.51.100.7/32"), vec!["7.100.51.198.in-addr.arpa."]);
        assert_eq!(
            zones("fd00:ab00::/26"),
            vec![
                "0.b.a.0.0.d.f.ip6.arpa.",
                "1.b.a.0.0.d.f.ip6.arpa.",
                "2.b.a.0.0.d.f.ip6.arpa.",
                "3.b.a.0.0.d.f.ip6.arpa."
            ]
        );
        assert_eq!(zones("fd00::/8"), vec!["d.f.ip6.arpa."]);
        assert_eq!(zones("::/0"), vec!["ip6.arpa."]);
    }

    #[test]
    fn reverse_names_both_ways() {
        let v4: IpAddr = "1.2.3.4".parse().unwrap();
        assert_eq!(Name::reverse_of(v4), n("4.3.2.1.in-addr.arpa."));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v6_name = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        assert_eq!(Name::reverse_of(v6), n(v6_name));
        assert_eq!(n("4.3.2.1.in-addr.arpa.").reverse_address(), Some(v4));
        assert_eq!(n("4.3.2.1.IN-ADDR.Arpa.").reverse_address(), Some(v4));
        assert_eq!(n(v6_name).reverse_address(), Some(v6));
        for ip in ["10.0.0.1", "255.255.255.255", "::", "fd00::ff", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(Name::reverse_of(ip).reverse_address(), Some(ip), "{ip}");
        }
        // An IPv4-mapped IPv6 name stands for the IPv4 address, as Go prints it.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            Name::reverse_of(mapped).reverse_address(),
            Some("10.0.0.1".parse().unwrap())
        );
        for not in [
            "3.2.1.in-addr.arpa.",
            "5.4.3.2.1.in-addr.arpa.",
            "in-addr.arpa.",
            "x.3.2.1.in-addr.arpa.",
            "example.org.",
            "1.0.ip6.arpa.",
            "ip6.arpa.",
        ] {
            assert_eq!(n(not).reverse_address(), None, "{not}");
        }
    }

    #[test]
    fn is_reverse() {
        assert!(n("in-addr.arpa.").is_reverse());
        assert!(n("10.IN-ADDR.ARPA.").is_reverse());
        assert!(n("1.0.ip6.arpa.").is_reverse());
        assert!(!n("arpa.").is_reverse());
        assert!(!n("xin-addr.arpa.").is_reverse());
        assert!(!n("in-addr.arpa.example.").is_reverse());
        assert!(!n(".").is_reverse());
        assert!(!n("cluster.local.").is_reverse());
    }
}
