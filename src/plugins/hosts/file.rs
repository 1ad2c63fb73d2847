//! The hosts-file data of the `hosts` plugin: the /etc/hosts line parser, the name and address
//! maps it fills and lookups (exact, then leftmost `*` wildcard). No I/O.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sextant_wire::Name;

/// One parsed hosts source (the file, or the Corefile's inline lines).
#[derive(Default, Debug)]
pub struct Map {
    name4: HashMap<Name, Vec<Ipv4Addr>>,
    name6: HashMap<Name, Vec<Ipv6Addr>>,
    /// Wildcard entries keyed by the name below the `*` label (`*.a.b.` is stored as `a.b.`).
    wild4: HashMap<Name, Vec<Ipv4Addr>>,
    wild6: HashMap<Name, Vec<Ipv6Addr>>,
    /// Reverse map: address to names (only when automatic PTRs are on).
    addr: HashMap<IpAddr, Vec<Name>>,
}

/// Parsing options that change what goes into a [`Map`].
#[derive(Clone, Debug)]
pub struct ParseOpts {
    /// Zones names must be in; names outside are skipped.
    pub origins: Vec<Name>,
    /// Fill the reverse map.
    pub auto_reverse: bool,
}

/// Go's `net.ParseIP` as CoreDNS uses it: an IPv6 zone (`%eth0`) is dropped, IPv4-mapped IPv6
/// addresses count as IPv4.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = match s.find('%') {
        Some(i) => &s[..i],
        None => s,
    };
    let ip: IpAddr = s.parse().ok()?;
    Some(unmap(ip))
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Map {
    /// Parses hosts-file text. Lines that are not `IP NAME...` are skipped; so are names that are
    /// not valid DNS names or lie outside the origins. Never fails.
    pub fn parse(text: &str, opts: &ParseOpts) -> Map {
        let mut m = Map::default();
        for line in text.lines() {
            let line = match line.find('#') {
                Some(i) => &line[..i],
                None => line,
            };
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields.len() < 2 {
                continue;
            }
            let Some(ip) = parse_ip(fields[0]) else {
                continue;
            };
            for f in &fields[1..] {
                let Some(name) = normalize_name(f) else {
                    continue;
                };
                if !opts.origins.iter().any(|z| name.is_subdomain_of(z)) {
                    continue;
                }
                if let Some(below) = wildcard_base(&name) {
                    match ip {
                        IpAddr::V4(a) => m.wild4.entry(below).or_default().push(a),
                        IpAddr::V6(a) => m.wild6.entry(below).or_default().push(a),
                    }
                    continue;
                }
                match ip {
                    IpAddr::V4(a) => m.name4.entry(name.clone()).or_default().push(a),
                    IpAddr::V6(a) => m.name6.entry(name.clone()).or_default().push(a),
                }
                if opts.auto_reverse {
                    m.addr.entry(ip).or_default().push(name);
                }
            }
        }
        m
    }

    /// Number of entries the way CoreDNS counts them (addresses per name, wildcard addresses and
    /// reverse names).
    pub fn len(&self) -> usize {
        self.name4.values().map(Vec::len).sum::<usize>()
            + self.name6.values().map(Vec::len).sum::<usize>()
            + self.wild4.values().map(Vec::len).sum::<usize>()
            + self.wild6.values().map(Vec::len).sum::<usize>()
            + self.addr.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// IPv4 addresses of `name`: the exact entry, else the wildcard one level up.
    pub fn v4(&self, name: &Name) -> &[Ipv4Addr] {
        lookup(&self.name4, &self.wild4, name)
    }

    /// IPv6 addresses of `name`: the exact entry, else the wildcard one level up.
    pub fn v6(&self, name: &Name) -> &[Ipv6Addr] {
        lookup(&self.name6, &self.wild6, name)
    }

    /// Names for an address (reverse map).
    pub fn names(&self, ip: &IpAddr) -> &[Name] {
        self.addr.get(ip).map(Vec::as_slice).unwrap_or(&[])
    }
}

fn lookup<'a, T>(
    exact: &'a HashMap<Name, Vec<T>>,
    wild: &'a HashMap<Name, Vec<T>>,
    name: &Name,
) -> &'a [T] {
    if let Some(v) = exact.get(name) {
        return v;
    }
    if name.is_root() {
        return &[];
    }
    wild.get(&name.parent()).map(Vec::as_slice).unwrap_or(&[])
}

/// A hosts-file name as a lower-case FQDN, if it is a valid DNS name.
fn normalize_name(s: &str) -> Option<Name> {
    let mut n = Name::parse(s).ok()?;
    n.make_lowercase();
    Some(n)
}

/// For `*.rest.` returns `rest.`; CoreDNS treats only a leading `*.` as a wildcard.
fn wildcard_base(name: &Name) -> Option<Name> {
    let first = name.labels().next()?;
    (first == b"*").then(|| name.parent())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn opts() -> ParseOpts {
        ParseOpts {
            origins: vec![Name::root()],
            auto_reverse: true,
        }
    }

    #[test]
    fn parses_lines_and_skips_garbage() {
        let text = "# comment\n\
            127.0.0.1 localhost localhost.localdomain # trailing\n\
            ::1 localhost ip6-localhost\n\
            10.0.0.1\n\
            not-an-ip host\n\
            10.0.0.2 Host.Example.COM\n\
            fe80::1%eth0 linklocal\n\
            ::ffff:10.1.1.1 mapped\n\
            10.0.0.3 bad..name good\n\
            \t  \n\
            10.0.0.4 *.wild.example\n\
            \u{0}\u{ff}garbage\n";
        let m = Map::parse(text, &opts());
        assert_eq!(m.v4(&n("localhost.")), &[Ipv4Addr::new(127, 0, 0, 1)]);
        assert_eq!(m.v4(&n("LOCALHOST.localdomain.")).len(), 1);
        assert_eq!(
            m.v6(&n("localhost.")),
            &["::1".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(m.v4(&n("host.example.com.")), &[Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(m.v6(&n("linklocal.")).len(), 1);
        assert_eq!(m.v4(&n("mapped.")), &[Ipv4Addr::new(10, 1, 1, 1)]);
        assert_eq!(m.v4(&n("good.")), &[Ipv4Addr::new(10, 0, 0, 3)]);
        assert_eq!(m.v4(&n("a.wild.example.")), &[Ipv4Addr::new(10, 0, 0, 4)]);
        assert!(m.v4(&n("a.b.wild.example.")).is_empty());
        assert!(m.v4(&n("wild.example.")).is_empty());
        assert_eq!(
            m.names(&"127.0.0.1".parse().unwrap()),
            &[n("localhost."), n("localhost.localdomain.")]
        );
        // Wildcards get no reverse entry.
        assert!(m.names(&"10.0.0.4".parse().unwrap()).is_empty());
        // 127.0.0.1 x2, ::1 x2, host, linklocal, mapped, good, wild = 9 forward; 8 reverse.
        assert_eq!(m.len(), 17);
    }

    #[test]
    fn origins_and_no_reverse() {
        let o = ParseOpts {
            origins: vec![n("example.org.")],
            auto_reverse: false,
        };
        let m = Map::parse("10.0.0.1 a.example.org b.example.com\n", &o);
        assert_eq!(m.v4(&n("a.example.org.")).len(), 1);
        assert!(m.v4(&n("b.example.com.")).is_empty());
        assert!(m.names(&"10.0.0.1".parse().unwrap()).is_empty());
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            n("4.3.2.1.in-addr.arpa.").reverse_address(),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(n("3.2.1.in-addr.arpa.").reverse_address(), None);
        assert_eq!(n("example.org.").reverse_address(), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        assert_eq!(
            n(v6).reverse_address(),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(n("1.0.ip6.arpa.").reverse_address(), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut s = Vec::new();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"0123456789abcdef.:*# \n\t%fF-x";
                s.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let text = String::from_utf8_lossy(&s);
            let _ = Map::parse(&text, &opts());
        }
    }
}
