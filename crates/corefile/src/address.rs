//! Server block keys and zone arguments: scheme/port splitting, zone normalisation (lower-case FQDN) and
//! CIDR → reverse-zone expansion (the reverse zones themselves come from `sextant_wire::IpNet`),
//! following CoreDNS `core/dnsserver` + `plugin/normalize.go`. Pure: no I/O.

use std::fmt;

use sextant_wire::IpNet;

use crate::{Error, Token};

/// The transport a server block listens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Dns,
    Tls,
    Quic,
    Grpc,
    Https,
    Https3,
}

impl Scheme {
    /// The scheme's name as written in a key (`dns`, `tls`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Dns => "dns",
            Scheme::Tls => "tls",
            Scheme::Quic => "quic",
            Scheme::Grpc => "grpc",
            Scheme::Https => "https",
            Scheme::Https3 => "https3",
        }
    }

    /// The port used when a key has none (`dns` uses the caller's default, normally 53).
    pub fn default_port(self, dns_default: u16) -> u16 {
        match self {
            Scheme::Dns => dns_default,
            Scheme::Tls | Scheme::Quic => 853,
            Scheme::Grpc | Scheme::Https | Scheme::Https3 => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server block key, normalised.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ZoneAddr {
    pub scheme: Scheme,
    /// Lower-case FQDN, "." for the root.
    pub zone: String,
    pub port: u16,
}

/// `dns://cluster.local.:53`, the form CoreDNS uses for its `server` metric label.
impl fmt::Display for ZoneAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.zone, self.port)
    }
}

/// Split off a `scheme://` prefix. No prefix means `dns`.
fn split_scheme<'a>(key: &Token, s: &'a str) -> Result<(Scheme, &'a str), Error> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Ok((Scheme::Dns, s));
    };
    let scheme = match scheme {
        "dns" => Scheme::Dns,
        "tls" => Scheme::Tls,
        "quic" => Scheme::Quic,
        "grpc" => Scheme::Grpc,
        "https" => Scheme::Https,
        "https3" => Scheme::Https3,
        other => {
            return Err(key.err(
                "",
                format!(
                    "unsupported scheme '{other}' in '{s}': expected dns, tls, quic, grpc, https or https3"
                ),
            ))
        }
    };
    Ok((scheme, rest))
}

/// Split `host[:port]` like CoreDNS: the text after the last colon is a port only when it is a number
/// (so `fd00::/64` has no port, `fd00::/64:53` has). Returns the host and the port if one was given.
fn split_port<'a>(key: &Token, s: &'a str) -> Result<(&'a str, Option<u16>), Error> {
    let Some(colon) = s.rfind(':') else {
        return Ok((s, None));
    };
    let after = &s[colon + 1..];
    if after.is_empty() {
        return Err(key.err(
            "",
            format!("expecting a port after the last colon in '{s}'"),
        ));
    }
    let digits = after.strip_prefix(['+', '-']).unwrap_or(after);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((s, None));
    }
    match after.parse::<u16>() {
        Ok(p) if !after.starts_with('-') => Ok((&s[..colon], Some(p))),
        _ => Err(key.err(
            "",
            format!("invalid port '{after}' in '{s}': expected a number from 0 to 65535"),
        )),
    }
}

/// Check a host is a plausible domain name (what miekg/dns `IsDomainName` enforces that matters here).
fn check_domain(key: &Token, host: &str) -> Result<(), Error> {
    if host.len() > 255 {
        return Err(key.err("", format!("zone is too long: {} > 255", host.len())));
    }
    if host == "." {
        return Ok(());
    }
    if host.is_empty() {
        return Err(key.err("", "expected a zone name, found nothing"));
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(key.err(
                "",
                format!("zone is not a valid domain name (empty label): {host}"),
            ));
        }
        if label.len() > 63 {
            return Err(key.err(
                "",
                format!("zone is not a valid domain name (label longer than 63): {host}"),
            ));
        }
    }
    if trimmed.len() + 1 > 255 {
        return Err(key.err("", format!("zone is too long: {host}")));
    }
    Ok(())
}

/// Lower-case and fully qualify.
fn fqdn_lower(s: &str) -> String {
    let mut z = s.to_lowercase();
    if !z.ends_with('.') {
        z.push('.');
    }
    z
}

/// Normalise a host (no scheme, no port) into zones: a CIDR expands to reverse zones.
fn host_zones(key: &Token, host: &str) -> Result<Vec<String>, Error> {
    check_domain(key, host)?;
    let Ok(net) = IpNet::parse(host) else {
        return Ok(vec![fqdn_lower(host)]);
    };
    if host.starts_with(':') || (host.starts_with('0') && host.contains(':')) {
        return Err(key.err("", format!("invalid CIDR {host}")));
    }
    Ok(net.reverse_zones().iter().map(|z| z.to_string()).collect())
}

/// Parse one key (`dns://cluster.local:53`, `.`, `10.0.0.0/24`) into one or more ZoneAddrs (a CIDR key
/// expands to its reverse zones). `default_port` is used when the key has none and the scheme is dns
/// (tls/quic default 853, grpc/https/https3 443).
pub fn parse_key(key: &Token, default_port: u16) -> Result<Vec<ZoneAddr>, Error> {
    let (scheme, rest) = split_scheme(key, &key.text)?;
    let (host, port) = split_port(key, rest)?;
    let port = port.unwrap_or(scheme.default_port(default_port));
    Ok(host_zones(key, host)?
        .into_iter()
        .map(|zone| ZoneAddr { scheme, zone, port })
        .collect())
}

/// Normalise a zone argument given to a plugin (e.g. `kubernetes cluster.local 10.0.0.0/17`): lower-case
/// FQDN; CIDRs expand to reverse zones. A scheme prefix and a port, if present, are accepted and dropped
/// (as CoreDNS `Host.NormalizeExact`).
pub fn normalize_zone(arg: &Token) -> Result<Vec<String>, Error> {
    let (_, rest) = split_scheme(arg, &arg.text)?;
    let (host, _) = split_port(arg, rest)?;
    host_zones(arg, host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pos;
    use std::sync::Arc;

    fn tok(s: &str) -> Token {
        Token {
            text: s.to_string(),
            pos: Pos {
                file: Arc::from("Corefile"),
                line: 3,
                col: 7,
            },
            quoted: false,
        }
    }

    fn key(s: &str) -> Vec<String> {
        parse_key(&tok(s), 53)
            .unwrap()
            .into_iter()
            .map(|z| z.to_string())
            .collect()
    }

    fn zones(s: &str) -> Vec<String> {
        normalize_zone(&tok(s)).unwrap()
    }

    #[test]
    fn plain_keys() {
        assert_eq!(key("."), vec!["dns://.:53"]);
        assert_eq!(key(".:53"), vec!["dns://.:53"]);
        assert_eq!(key("Cluster.Local"), vec!["dns://cluster.local.:53"]);
        assert_eq!(
            key("cluster.local.:1053"),
            vec!["dns://cluster.local.:1053"]
        );
        assert_eq!(key("dns://example.org"), vec!["dns://example.org.:53"]);
        assert_eq!(key("tls://example.org"), vec!["tls://example.org.:853"]);
        assert_eq!(key("quic://example.org"), vec!["quic://example.org.:853"]);
        assert_eq!(key("grpc://example.org"), vec!["grpc://example.org.:443"]);
        assert_eq!(key("https://example.org"), vec!["https://example.org.:443"]);
        assert_eq!(
            key("https3://example.org"),
            vec!["https3://example.org.:443"]
        );
        assert_eq!(key("tls://.:5353"), vec!["tls://.:5353"]);
        assert_eq!(
            parse_key(&tok("example.org"), 1053).unwrap(),
            vec![ZoneAddr {
                scheme: Scheme::Dns,
                zone: "example.org.".into(),
                port: 1053
            }]
        );
        // the default port only applies to dns
        assert_eq!(parse_key(&tok("tls://a"), 1053).unwrap()[0].port, 853);
    }

    #[test]
    fn cidr_keys() {
        assert_eq!(key("10.0.0.0/8:53"), vec!["dns://10.in-addr.arpa.:53"]);
        assert_eq!(key("10.0.0.0/24"), vec!["dns://0.0.10.in-addr.arpa.:53"]);
        assert_eq!(
            zones("10.0.0.0/15"),
            vec!["0.10.in-addr.arpa.", "1.10.in-addr.arpa."]
        );
        let z = zones("10.9.3.0/18");
        assert_eq!(z.len(), 64);
        assert_eq!(z[0], "0.9.10.in-addr.arpa.");
        assert_eq!(z[2], "2.9.10.in-addr.arpa.");
        assert_eq!(z[63], "63.9.10.in-addr.arpa.");
        let z = zones("10.0.0.0/27");
        assert_eq!(z.len(), 32);
        assert_eq!(z[0], "0.0.0.10.in-addr.arpa.");
        assert_eq!(z[31], "31.0.0.10.in-addr.arpa.");
        assert_eq!(zones("10.0.0.0/17").len(), 128);
        assert_eq!(zones("0.0.0.0/0"), vec!["in-addr.arpa."]);
        assert_eq!(zones("192.168.1.7/32"), vec!["7.1.168.192.in-addr.arpa."]);
        assert_eq!(
            zones("2001:db8::/30"),
            vec![
                "8.b.d.0.1.0.0.2.ip6.arpa.",
                "9.b.d.0.1.0.0.2.ip6.arpa.",
                "a.b.d.0.1.0.0.2.ip6.arpa.",
                "b.b.d.0.1.0.0.2.ip6.arpa."
            ]
        );
        assert_eq!(zones("2001:db8::/29").len(), 8);
        assert_eq!(
            zones("2001:db8::/113")[7],
            "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
        assert_eq!(
            zones("2001:db8::/112"),
            vec!["0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]
        );
        assert_eq!(
            zones("fd00::/64"),
            vec!["0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."]
        );
        assert_eq!(
            key("fd00::/64:1053")[0],
            "dns://0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.:1053"
        );
        // host bits are masked off, as Go's net.ParseCIDR does
        assert_eq!(zones("10.1.2.3/16"), vec!["1.10.in-addr.arpa."]);
        // scheme and port are dropped by normalize_zone
        assert_eq!(zones("dns://10.0.0.0/8:53"), vec!["10.in-addr.arpa."]);
        // not a CIDR: kept as a name
        assert_eq!(zones("10.0.0.0/33"), vec!["10.0.0.0/33."]);
    }

    #[test]
    fn key_errors() {
        let e = |s: &str| parse_key(&tok(s), 53).unwrap_err();
        let err = e("example.org:");
        assert_eq!(err.pos.to_string(), "Corefile:3:7");
        assert!(err.msg.contains("expecting a port"), "{err}");
        assert!(e("example.org:99999").msg.contains("invalid port"));
        assert!(e("example.org:-1").msg.contains("invalid port"));
        assert!(e("foo://example.org")
            .msg
            .contains("unsupported scheme 'foo'"));
        assert!(e("unix://x").msg.contains("unsupported scheme"));
        assert!(e("a..b").msg.contains("empty label"));
        assert!(e(":53").msg.contains("expected a zone"));
        assert!(e(&"a".repeat(64)).msg.contains("63"));
        assert!(e(&"a.".repeat(130)).msg.contains("too long"));
        assert!(e("::/0").msg.contains("invalid CIDR"));
        assert!(e("0::1/120").msg.contains("invalid CIDR"));
        assert_eq!(
            e("a..b").to_string(),
            "Corefile:3:7: zone is not a valid domain name (empty label): a..b"
        );
    }
}
