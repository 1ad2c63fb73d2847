//! Network addresses in arguments: upstream and peer addresses (`IP`, `IP:PORT`, `[IPv6]:PORT`,
//! CoreDNS `parse.HostPort`) and the `[ADDRESS]` argument of the plugins that serve HTTP
//! (`health`, `ready`, `prometheus`), and the nameservers of a resolv.conf-style file's text.
//! No I/O beyond resolving a host name given as an HTTP address.

use std::net::{IpAddr, SocketAddr};

use sextant_corefile::{Directive, Error};

use crate::server::http::resolve_addr;

/// `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT`, with `default_port` when none is given.
pub(crate) fn host_port(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

/// The `nameserver` lines of a resolv.conf-style file (port 53).
pub(crate) fn resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if f.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = f.next() else { continue };
        // A zone suffix (`fe80::1%eth0`) is dropped.
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, 53));
        }
    }
    out
}

/// The optional `ADDRESS` argument of an HTTP-serving directive (`default` when absent): the
/// address as written (it names the shared listener) and where it listens.
pub(crate) fn http_arg(d: &Directive, default: &str) -> Result<(String, SocketAddr), Error> {
    d.arg_count(0, 1)?;
    let addr = d
        .args
        .first()
        .map_or_else(|| default.to_string(), |t| t.text.clone());
    let sa = resolve_addr(&addr).map_err(|e| d.err(e))?;
    Ok((addr, sa))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::line;

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(host_port("10.0.0.1", 53), sa("10.0.0.1:53"));
        assert_eq!(host_port("10.0.0.1:5353", 53), sa("10.0.0.1:5353"));
        assert_eq!(host_port("::1", 853), sa("[::1]:853"));
        assert_eq!(host_port("[::1]", 853), sa("[::1]:853"));
        assert_eq!(host_port("[::1]:54", 853), sa("[::1]:54"));
        assert_eq!(host_port("example.org", 53), None);
        assert_eq!(host_port("10.0.0.1:x", 53), None);
        assert_eq!(host_port("[10.0.0.1]", 53), sa("10.0.0.1:53"));
    }

    #[test]
    fn http_argument() {
        let (a, s) = http_arg(&line("ready"), ":8181").unwrap();
        assert_eq!((a.as_str(), s), (":8181", "0.0.0.0:8181".parse().unwrap()));
        let (a, s) = http_arg(&line("ready 127.0.0.1:9"), ":8181").unwrap();
        assert_eq!(
            (a.as_str(), s),
            ("127.0.0.1:9", "127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            http_arg(&line("ready a b"), ":8181")
                .unwrap_err()
                .to_string(),
            "Corefile:2:10: ready: wrong argument count: expected 0 to 1, got 2"
        );
        assert_eq!(
            http_arg(&line("ready :x"), ":8181")
                .unwrap_err()
                .to_string(),
            "Corefile:2:2: ready: invalid port in address \":x\""
        );
    }
}
