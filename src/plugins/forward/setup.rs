//! Parsing of `forward FROM TO... { ... }` lines into [`Config`]: every option, its defaults
//! and CoreDNS's validation rules. Reads resolv.conf-style files named as TO; no sockets.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sextant_corefile::{Directive, Error, Token};
use sextant_wire::{Name, Rcode};

use crate::pkg::{addr, duration, num, zones};

/// Most upstreams one `forward` line may have (CoreDNS `max`).
pub(crate) const MAX_UPSTREAMS: usize = 15;

/// How an upstream is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Plain DNS over UDP/TCP.
    Dns,
    /// DNS over TLS.
    Tls,
}

/// Upstream selection order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    Random,
    RoundRobin,
    Sequential,
}

/// One `forward` line, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub from: Name,
    pub except: Vec<Name>,
    pub to: Vec<(Transport, SocketAddr)>,
    pub force_tcp: bool,
    pub prefer_udp: bool,
    pub expire: Duration,
    pub max_idle_conns: usize,
    pub max_fails: u32,
    /// `None`: 2 × number of upstreams (CoreDNS default); `Some(0)`: unlimited.
    pub max_connect_attempts: Option<u32>,
    /// Arguments of `tls` (0 to 3 file names), if given.
    pub tls: Option<Vec<Token>>,
    pub tls_servername: Option<String>,
    pub policy: Policy,
    pub hc_interval: Duration,
    pub hc_recursion_desired: bool,
    pub hc_domain: Name,
    pub max_concurrent: u64,
    pub next: Vec<Rcode>,
    pub next_on_nodata: bool,
    pub failover: Vec<Rcode>,
    pub failfast: bool,
    pub read_timeout: Duration,
    pub source_address: Option<IpAddr>,
}

impl Config {
    fn new(from: Name) -> Config {
        Config {
            from,
            except: Vec::new(),
            to: Vec::new(),
            force_tcp: false,
            prefer_udp: false,
            expire: Duration::from_secs(10),
            max_idle_conns: 0,
            max_fails: 2,
            max_connect_attempts: None,
            tls: None,
            tls_servername: None,
            policy: Policy::Random,
            hc_interval: Duration::from_millis(500),
            hc_recursion_desired: true,
            hc_domain: Name::root(),
            max_concurrent: 0,
            next: Vec::new(),
            next_on_nodata: false,
            failover: Vec::new(),
            failfast: false,
            read_timeout: Duration::from_secs(2),
            source_address: None,
        }
    }
}

/// Splits `tls://`/`dns://` off an upstream argument.
fn split_transport(s: &str) -> Result<(Transport, &str), String> {
    match s.split_once("://") {
        None => Ok((Transport::Dns, s)),
        Some(("dns", rest)) => Ok((Transport::Dns, rest)),
        Some(("tls", rest)) => Ok((Transport::Tls, rest)),
        Some((other, _)) => Err(format!(
            "'{other}' is not supported as a destination protocol in forward: {s}"
        )),
    }
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

fn parse_to(d: &Directive, t: &Token, out: &mut Vec<(Transport, SocketAddr)>) -> Result<(), Error> {
    let (trans, host) = split_transport(&t.text).map_err(|e| d.err_at(t, e))?;
    let port = match trans {
        Transport::Dns => 53,
        Transport::Tls => 853,
    };
    if let Some(sa) = addr::host_port(host, port) {
        out.push((trans, sa));
        return Ok(());
    }
    // Not an address: a resolv.conf-style file (like CoreDNS `parse.HostPortOrFile`).
    match std::fs::read_to_string(host) {
        Ok(text) => {
            let servers = resolv_conf(&text);
            if servers.is_empty() {
                return Err(d.err_at(t, format!("no nameservers found in {host}")));
            }
            out.extend(servers.into_iter().map(|sa| {
                let sa = if trans == Transport::Tls {
                    SocketAddr::new(sa.ip(), 853)
                } else {
                    sa
                };
                (trans, sa)
            }));
            Ok(())
        }
        Err(_) => Err(d.err_at(t, format!("not an IP address or file: \"{}\"", t.text))),
    }
}

fn rcodes(sub: &Directive, allow_noerror: bool) -> Result<Vec<Rcode>, Error> {
    sub.arg_count(1, usize::MAX)?;
    let mut out = Vec::new();
    for t in &sub.args {
        let rc = Rcode::from_name(&t.text)
            .filter(|_| t.text.parse::<u16>().is_err())
            .ok_or_else(|| sub.err_at(t, format!("{} is not a valid rcode", t.text)))?;
        if !allow_noerror && rc == Rcode::NOERROR {
            return Err(sub.err_at(t, "NoError cannot be used in failover"));
        }
        out.push(rc);
    }
    Ok(out)
}

fn parse_option(sub: &Directive, c: &mut Config) -> Result<(), Error> {
    match sub.name.text.as_str() {
        "except" => {
            sub.arg_count(1, usize::MAX)?;
            c.except = zones::normalize_all(sub, &sub.args)?;
        }
        "force_tcp" => {
            sub.arg_count(0, 0)?;
            c.force_tcp = true;
        }
        "prefer_udp" => {
            sub.arg_count(0, 0)?;
            c.prefer_udp = true;
        }
        "expire" => {
            c.expire = duration::arg(sub, sub.single_arg()?)?;
        }
        "max_idle_conns" => {
            c.max_idle_conns = num::count(sub, sub.single_arg()?)? as usize;
        }
        "max_fails" => {
            c.max_fails = num::count32(sub, sub.single_arg()?)?;
        }
        "max_connect_attempts" => {
            c.max_connect_attempts = Some(num::count32(sub, sub.single_arg()?)?);
        }
        "read_timeout" => {
            let t = sub.single_arg()?;
            let dur = duration::arg(sub, t)?;
            if dur.is_zero() {
                return Err(sub.err_at(t, format!("read_timeout must be positive: {}", t.text)));
            }
            c.read_timeout = dur;
        }
        "tls" => {
            sub.arg_count(0, 3)?;
            c.tls = Some(sub.args.clone());
        }
        "tls_servername" => {
            c.tls_servername = Some(sub.single_arg()?.text.clone());
        }
        "policy" => {
            let t = sub.single_arg()?;
            c.policy = match t.text.as_str() {
                "random" => Policy::Random,
                "round_robin" => Policy::RoundRobin,
                "sequential" => Policy::Sequential,
                other => return Err(sub.err_at(t, format!("unknown policy '{other}'"))),
            };
        }
        "health_check" => {
            sub.arg_count(1, 4)?;
            c.hc_interval = duration::arg(sub, &sub.args[0])?;
            c.hc_domain = Name::root();
            let mut i = 1;
            while i < sub.args.len() {
                let t = &sub.args[i];
                match t.text.as_str() {
                    "no_rec" => c.hc_recursion_desired = false,
                    "domain" => {
                        let Some(dt) = sub.args.get(i + 1) else {
                            return Err(sub.err_at(t, "health_check: domain needs a name"));
                        };
                        c.hc_domain = Name::parse(&dt.text).map_err(|_| {
                            sub.err_at(dt, format!("health_check: invalid domain name {}", dt.text))
                        })?;
                        i += 1;
                    }
                    other => {
                        return Err(sub.err_at(t, format!("health_check: unknown option {other}")))
                    }
                }
                i += 1;
            }
        }
        "max_concurrent" => {
            c.max_concurrent = num::count(sub, sub.single_arg()?)?;
        }
        "next" => c.next = rcodes(sub, true)?,
        "next_on_nodata" => {
            sub.arg_count(0, 0)?;
            c.next_on_nodata = true;
        }
        "failover" => c.failover = rcodes(sub, false)?,
        "failfast_all_unhealthy_upstreams" => {
            sub.arg_count(0, 0)?;
            c.failfast = true;
        }
        "source_address" => {
            let t = sub.single_arg()?;
            c.source_address = Some(
                t.text
                    .parse()
                    .map_err(|_| sub.err_at(t, format!("invalid IP address: {}", t.text)))?,
            );
        }
        other => return Err(sub.err(format!("unknown property '{other}'"))),
    }
    Ok(())
}

/// Parses one `forward` line.
pub(crate) fn parse(d: &Directive) -> Result<Config, Error> {
    d.arg_count(2, usize::MAX)?;
    let mut c = Config::new(zones::first(d, &d.args[0])?);
    for sub in d.sub() {
        parse_option(sub, &mut c)?;
    }
    let mut to = Vec::new();
    for t in &d.args[1..] {
        parse_to(d, t, &mut to)?;
    }
    // Duplicates are dropped, first one wins (CoreDNS de-duplicates its TO list).
    let mut seen = Vec::new();
    to.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(*x);
            true
        }
    });
    if to.len() > MAX_UPSTREAMS {
        return Err(d.err_at(
            &d.args[1],
            format!("more than {MAX_UPSTREAMS} TOs configured: {}", to.len()),
        ));
    }
    c.to = to;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::directive;

    fn cfg(text: &str) -> Config {
        parse(&directive(text)).unwrap()
    }

    fn err(text: &str) -> String {
        parse(&directive(text)).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let c = cfg(". {\n forward . 127.0.0.1\n}\n");
        assert!(c.from.is_root());
        assert_eq!(
            c.to,
            vec![(Transport::Dns, "127.0.0.1:53".parse().unwrap())]
        );
        assert_eq!(c.expire, Duration::from_secs(10));
        assert_eq!(c.max_fails, 2);
        assert_eq!(c.max_connect_attempts, None);
        assert_eq!(c.policy, Policy::Random);
        assert_eq!(c.hc_interval, Duration::from_millis(500));
        assert!(c.hc_recursion_desired);
        assert_eq!(c.read_timeout, Duration::from_secs(2));
        assert_eq!(c.max_concurrent, 0);
        assert!(!c.force_tcp && !c.prefer_udp && !c.failfast);
    }

    #[test]
    fn upstream_forms() {
        let c = cfg(
            ". {\n forward Example.ORG 10.0.0.1:5353 dns://10.0.0.2 tls://10.0.0.3 [::1]:54 ::2 tls://[::3] 10.0.0.1:5353\n}\n",
        );
        assert_eq!(c.from, Name::parse("example.org.").unwrap());
        let want: Vec<(Transport, SocketAddr)> = vec![
            (Transport::Dns, "10.0.0.1:5353".parse().unwrap()),
            (Transport::Dns, "10.0.0.2:53".parse().unwrap()),
            (Transport::Tls, "10.0.0.3:853".parse().unwrap()),
            (Transport::Dns, "[::1]:54".parse().unwrap()),
            (Transport::Dns, "[::2]:53".parse().unwrap()),
            (Transport::Tls, "[::3]:853".parse().unwrap()),
        ];
        assert_eq!(c.to, want);
    }

    #[test]
    fn resolv_conf_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(
            &p,
            "# comment\nsearch a.b\nnameserver 127.0.0.53\nnameserver ::1\noptions ndots:5\nnameserver fe80::1%eth0\n",
        )
        .unwrap();
        let c = cfg(&format!(". {{\n forward . {}\n}}\n", p.display()));
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "[fe80::1]:53".parse().unwrap(),
        ];
        assert_eq!(c.to.iter().map(|x| x.1).collect::<Vec<_>>(), want);
        let empty = dir.path().join("empty.conf");
        std::fs::write(&empty, "search x\n").unwrap();
        let e = err(&format!(". {{\n forward . {}\n}}\n", empty.display()));
        assert!(
            e.starts_with("Corefile:2:12: forward: no nameservers found in"),
            "{e}"
        );
    }

    #[test]
    fn every_option() {
        let c = cfg(". {\n forward . 127.0.0.1 {\n  except a.example B.example.\n  force_tcp\n  prefer_udp\n  expire 20s\n  max_idle_conns 7\n  max_fails 3\n  max_connect_attempts 4\n  tls\n  tls_servername dns.example\n  policy round_robin\n  health_check 1s no_rec domain example.org\n  max_concurrent 100\n  next NXDOMAIN servfail\n  next_on_nodata\n  failover REFUSED\n  failfast_all_unhealthy_upstreams\n  read_timeout 300ms\n  source_address 127.0.0.1\n }\n}\n");
        assert_eq!(
            c.except,
            vec![
                Name::parse("a.example.").unwrap(),
                Name::parse("b.example.").unwrap()
            ]
        );
        assert!(c.force_tcp && c.prefer_udp && c.failfast && c.next_on_nodata);
        assert_eq!(c.expire, Duration::from_secs(20));
        assert_eq!(c.max_idle_conns, 7);
        assert_eq!(c.max_fails, 3);
        assert_eq!(c.max_connect_attempts, Some(4));
        assert_eq!(c.tls, Some(vec![]));
        assert_eq!(c.tls_servername.as_deref(), Some("dns.example"));
        assert_eq!(c.policy, Policy::RoundRobin);
        assert_eq!(c.hc_interval, Duration::from_secs(1));
        assert!(!c.hc_recursion_desired);
        assert_eq!(c.hc_domain, Name::parse("example.org.").unwrap());
        assert_eq!(c.max_concurrent, 100);
        assert_eq!(c.next, vec![Rcode::NXDOMAIN, Rcode::SERVFAIL]);
        assert_eq!(c.failover, vec![Rcode::REFUSED]);
        assert_eq!(c.read_timeout, Duration::from_millis(300));
        assert_eq!(c.source_address, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            cfg(". {\n forward . 127.0.0.1 {\n policy sequential\n }\n}\n").policy,
            Policy::Sequential
        );
        assert_eq!(
            cfg(". {\n forward . 127.0.0.1 {\n policy random\n }\n}\n").policy,
            Policy::Random
        );
    }

    #[test]
    fn errors_name_position_and_directive() {
        let cases: &[(&str, &str)] = &[
            (". {\n forward .\n}\n", "Corefile:2:2: forward: wrong argument count: expected at least 2, got 1"),
            (". {\n forward . foo\n}\n", "Corefile:2:12: forward: not an IP address or file: \"foo\""),
            (". {\n forward . https://1.1.1.1\n}\n", "Corefile:2:12: forward: 'https' is not supported as a destination protocol in forward: https://1.1.1.1"),
            (". {\n forward . 127.0.0.1 {\n  bogus\n }\n}\n", "Corefile:3:3: bogus: unknown property 'bogus'"),
            (". {\n forward . 127.0.0.1 {\n  policy fastest\n }\n}\n", "Corefile:3:10: policy: unknown policy 'fastest'"),
            (". {\n forward . 127.0.0.1 {\n  expire 10\n }\n}\n", "Corefile:3:10: expire: invalid duration '10'"),
            (". {\n forward . 127.0.0.1 {\n  max_fails x\n }\n}\n", "Corefile:3:13: max_fails: invalid number 'x'"),
            (". {\n forward . 127.0.0.1 {\n  max_fails\n }\n}\n", "Corefile:3:3: max_fails: wrong argument count: expected 1, got 0"),
            (". {\n forward . 127.0.0.1 {\n  force_tcp yes\n }\n}\n", "Corefile:3:13: force_tcp: wrong argument count: expected 0, got 1"),
            (". {\n forward . 127.0.0.1 {\n  next NOPE\n }\n}\n", "Corefile:3:8: next: NOPE is not a valid rcode"),
            (". {\n forward . 127.0.0.1 {\n  failover NOERROR\n }\n}\n", "Corefile:3:12: failover: NoError cannot be used in failover"),
            (". {\n forward . 127.0.0.1 {\n  health_check 1s foo\n }\n}\n", "Corefile:3:19: health_check: health_check: unknown option foo"),
            (". {\n forward . 127.0.0.1 {\n  health_check 1s domain\n }\n}\n", "Corefile:3:19: health_check: health_check: domain needs a name"),
            (". {\n forward . 127.0.0.1 {\n  read_timeout 0s\n }\n}\n", "Corefile:3:16: read_timeout: read_timeout must be positive: 0s"),
            (". {\n forward . 127.0.0.1 {\n  source_address nope\n }\n}\n", "Corefile:3:18: source_address: invalid IP address: nope"),
            (". {\n forward . 127.0.0.1 {\n  tls a b c d\n }\n}\n", "Corefile:3:13: tls: wrong argument count: expected 0 to 3, got 4"),
            (". {\n forward . 127.0.0.1 {\n  max_concurrent -1\n }\n}\n", "Corefile:3:18: max_concurrent: invalid number '-1'"),
            (". {\n forward . 127.0.0.1 {\n  except\n }\n}\n", "Corefile:3:3: except: wrong argument count: expected at least 1, got 0"),
        ];
        for (text, want) in cases {
            assert_eq!(&err(text), want, "for {text:?}");
        }
        let many: Vec<String> = (1..=16).map(|i| format!("127.0.0.{i}")).collect();
        let e = err(&format!(". {{\n forward . {}\n}}\n", many.join(" ")));
        assert_eq!(e, "Corefile:2:12: forward: more than 15 TOs configured: 16");
    }
}
