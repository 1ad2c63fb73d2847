//! Parsing of `forward FROM TO... { ... }` lines into [`Config`]: every option, its defaults
//! and CoreDNS's validation rules. Reads resolv.conf-style files named as TO and resolves
//! host-name TOs (through `resolver` or the system resolver, see [`super::resolve`]).

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
    /// DNS over HTTPS (RFC 8484).
    Https,
}

/// One upstream of a `forward` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The TLS server name given with the address (`tls://IP%NAME`).
    pub server_name: Option<String>,
}

impl Upstream {
    fn new(transport: Transport, addr: SocketAddr) -> Upstream {
        Upstream {
            transport,
            addr,
            server_name: None,
        }
    }
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
    pub to: Vec<Upstream>,
    pub force_tcp: bool,
    pub prefer_udp: bool,
    pub expire: Duration,
    /// `max_age`: cached connections are closed this long after they were opened, whatever
    /// their use (zero: never).
    pub max_age: Duration,
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
    /// `doh_method`: how `https://` upstreams are sent queries (POST by default).
    pub doh_method: super::doh::Method,
    /// `resolver`: where host-name TOs are resolved (empty: the system resolver).
    pub resolver: Vec<SocketAddr>,
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
            max_age: Duration::ZERO,
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
            doh_method: super::doh::Method::Post,
            resolver: Vec::new(),
        }
    }
}

/// Splits `tls://`/`dns://` off an upstream argument.
fn split_transport(s: &str) -> Result<(Transport, &str), String> {
    match s.split_once("://") {
        None => Ok((Transport::Dns, s)),
        Some(("dns", rest)) => Ok((Transport::Dns, rest)),
        Some(("tls", rest)) => Ok((Transport::Tls, rest)),
        Some(("https", rest)) => Ok((Transport::Https, rest)),
        Some((other, _)) => Err(format!(
            "'{other}' is not supported as a destination protocol in forward: {s}"
        )),
    }
}

/// CoreDNS's `splitZone`: `IP%NAME[:PORT]` is the address `IP[:PORT]` with the server name
/// `NAME` (for IPv6, `[IP%NAME]:PORT`).
fn split_zone(host: &str) -> (String, Option<String>) {
    let Some(at) = host.rfind('%') else {
        return (host.to_string(), None);
    };
    let mut addr = host[..at].to_string();
    if addr.starts_with('[') {
        addr.push(']');
    }
    let mut zone = &host[at + 1..];
    if let Some(colon) = zone.rfind(':') {
        addr.push_str(&zone[colon..]);
        zone = zone[..colon].trim_end_matches(']');
    }
    (addr, Some(zone.to_string()))
}

/// Go's `net.SplitHostPort` for the host-name form: `HOST:PORT` or `[HOST]:PORT`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        return Some((h, p));
    }
    let (h, p) = s.rsplit_once(':')?;
    (!h.contains(':')).then_some((h, p))
}

/// What one TO argument stands for, before host names are resolved.
enum To {
    /// Addresses (an address, or a file's nameservers).
    Static(Vec<Upstream>),
    /// A host name, resolved later: (name, port, transport, server name).
    Host(String, u16, Transport, Option<String>),
    /// A file without nameservers: skipped, as CoreDNS skips it.
    Empty,
}

fn classify_to(d: &Directive, t: &Token) -> Result<To, Error> {
    let (trans, rest) = split_transport(&t.text).map_err(|e| d.err_at(t, e))?;
    let port = match trans {
        Transport::Dns => 53,
        Transport::Tls => 853,
        Transport::Https => 443,
    };
    // A zone after `%` is the TLS server name (and an IPv6 scope otherwise, dropped).
    let (host, zone) = split_zone(rest);
    let server_name = zone.filter(|_| trans == Transport::Tls);
    if let Some(addr) = addr::host_port(&host, port) {
        return Ok(To::Static(vec![Upstream {
            transport: trans,
            addr,
            server_name,
        }]));
    }
    // A resolv.conf-style file (CoreDNS `parse.HostPortOrFile`): its nameservers are plain DNS
    // on port 53 whatever the scheme.
    if let Ok(text) = std::fs::read_to_string(rest) {
        let servers = addr::resolv_conf(&text);
        if servers.is_empty() {
            return Ok(To::Empty);
        }
        return Ok(To::Static(
            servers
                .into_iter()
                .map(|sa| Upstream::new(Transport::Dns, sa))
                .collect(),
        ));
    }
    // Anything else must be a host name.
    let (name, port) = match split_host_port(&host) {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| {
                d.err_at(
                    t,
                    format!("not an IP address, file, or valid domain: {:?}", t.text),
                )
            })?,
        ),
        None => (host.as_str(), port),
    };
    let name = name.trim_matches(|c| c == '[' || c == ']');
    if name.is_empty() || name.parse::<IpAddr>().is_ok() || Name::parse(name).is_err() {
        return Err(d.err_at(
            t,
            format!("not an IP address, file, or valid domain: {:?}", t.text),
        ));
    }
    Ok(To::Host(name.to_string(), port, trans, server_name))
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
        "doh_method" => {
            let t = sub.single_arg()?;
            c.doh_method = match t.text.as_str() {
                "POST" => super::doh::Method::Post,
                "GET" => super::doh::Method::Get,
                _ => return Err(sub.err_at(t, "doh_method must be either POST or GET")),
            };
        }
        "max_age" => {
            c.max_age = duration::arg(sub, sub.single_arg()?)?;
        }
        "resolver" => {
            sub.arg_count(1, usize::MAX)?;
            let mut out = Vec::new();
            for t in &sub.args {
                let sa = addr::host_port(&t.text, 53).ok_or_else(|| {
                    sub.err_at(
                        t,
                        format!("resolver must be an IP address or IP:port: {:?}", t.text),
                    )
                })?;
                out.push(sa);
            }
            c.resolver = out;
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
    if !c.max_age.is_zero() && c.max_age < c.expire {
        let at = d
            .sub()
            .iter()
            .find(|s| s.name.text == "max_age")
            .unwrap_or(d);
        return Err(at.err(format!(
            "max_age ({}) must not be less than expire ({})",
            duration::format(c.max_age),
            duration::format(c.expire)
        )));
    }
    // The DoH path is always /dns-query.
    for t in &d.args[1..] {
        if let Ok((Transport::Https, rest)) = split_transport(&t.text) {
            if rest.contains('/') {
                return Err(d.err_at(t, format!("paths are not allowed in HTTPS upstream addresses (the /dns-query path is used by default): {}", t.text)));
            }
        }
    }
    let mut entries = Vec::new();
    for t in &d.args[1..] {
        entries.push((t, classify_to(d, t)?));
    }
    // Host names are resolved in order and every address is kept once, the first time it is
    // seen, whatever its scheme (CoreDNS `expandAndDedup`).
    let mut to: Vec<Upstream> = Vec::new();
    let mut counted = 0;
    for (t, e) in entries {
        let found = match e {
            To::Empty => continue,
            To::Static(v) => v,
            To::Host(name, port, transport, server_name) => {
                super::resolve::lookup(&name, &c.resolver)
                    .map_err(|e| d.err_at(t, format!("failed to resolve {name:?}: {e}")))?
                    .into_iter()
                    .map(|ip| Upstream {
                        transport,
                        addr: SocketAddr::new(ip, port),
                        server_name: server_name.clone(),
                    })
                    .collect()
            }
        };
        counted += 1;
        for u in found {
            if !to.iter().any(|x| x.addr == u.addr) {
                to.push(u);
            }
        }
    }
    if to.is_empty() {
        return Err(d.err_at(&d.args[1], "no valid upstream addresses found"));
    }
    // CoreDNS counts TO arguments here (a file is one), not addresses.
    if counted > MAX_UPSTREAMS {
        return Err(d.err_at(
            &d.args[1],
            format!("more than {MAX_UPSTREAMS} TOs configured: {counted}"),
        ));
    }
    let per_upstream_names = to.iter().any(|u| u.server_name.is_some());
    if let (true, Some(n)) = (per_upstream_names, &c.tls_servername) {
        let u = to.iter().find(|u| u.server_name.is_some());
        let (name, addr) = u.map_or((String::new(), String::new()), |u| {
            (
                u.server_name.clone().unwrap_or_default(),
                u.addr.to_string(),
            )
        });
        return Err(d.err(format!(
            "both forward ('{n}') and proxy level ('{name}') TLS servernames are set for upstream proxy 'tls://{addr}'"
        )));
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
            vec![Upstream::new(
                Transport::Dns,
                "127.0.0.1:53".parse().unwrap()
            )]
        );
        assert_eq!(c.max_age, Duration::ZERO);
        assert!(c.resolver.is_empty());
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
        let got: Vec<(Transport, SocketAddr)> =
            c.to.iter().map(|u| (u.transport, u.addr)).collect();
        assert_eq!(got, want);
        assert!(c.to.iter().all(|u| u.server_name.is_none()));
        // Per-upstream TLS server names; a scope on a plain address is dropped.
        let c = cfg(". {\n forward . tls://10.0.0.1%dns.example tls://[::1%dns6.example]:8853 tls://10.0.0.2%n.example:10853 fe80::1%eth0\n}\n");
        let got: Vec<(Transport, String, Option<&str>)> =
            c.to.iter()
                .map(|u| (u.transport, u.addr.to_string(), u.server_name.as_deref()))
                .collect();
        assert_eq!(
            got,
            vec![
                (Transport::Tls, "10.0.0.1:853".into(), Some("dns.example")),
                (Transport::Tls, "[::1]:8853".into(), Some("dns6.example")),
                (Transport::Tls, "10.0.0.2:10853".into(), Some("n.example")),
                (Transport::Dns, "[fe80::1]:53".into(), None),
            ]
        );
        // The same address twice is kept once whatever its scheme; first one wins.
        let c = cfg(". {\n forward . https://10.0.0.5 https://[::5]:8443 https://10.0.0.6%x.example {\n  doh_method GET\n }\n}\n");
        let got: Vec<(Transport, String, Option<&str>)> =
            c.to.iter()
                .map(|u| (u.transport, u.addr.to_string(), u.server_name.as_deref()))
                .collect();
        assert_eq!(
            got,
            vec![
                (Transport::Https, "10.0.0.5:443".into(), None),
                (Transport::Https, "[::5]:8443".into(), None),
                (Transport::Https, "10.0.0.6:443".into(), None),
            ]
        );
        assert_eq!(c.doh_method, super::super::doh::Method::Get);
        assert_eq!(
            cfg(". {\n forward . https://10.0.0.5\n}\n").doh_method,
            super::super::doh::Method::Post
        );
        let c = cfg(". {\n forward . 10.0.0.1:853 tls://10.0.0.1\n}\n");
        assert_eq!(
            c.to,
            vec![Upstream::new(
                Transport::Dns,
                "10.0.0.1:853".parse().unwrap()
            )]
        );
    }

    /// Host-name TOs are resolved through `resolver` (a DNS server on loopback here) or the
    /// system resolver, in order, keeping the TO's scheme, port and server name.
    #[test]
    fn host_names_resolve_at_setup() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let q = sextant_wire::Message::parse(&buf[..n]).unwrap();
                let mut r = sextant_wire::Message::reply_to(&q);
                let qn = q.questions[0].name.clone();
                let data = match q.questions[0].qtype {
                    sextant_wire::RType::A => sextant_wire::RData::A("192.0.2.53".parse().unwrap()),
                    _ => sextant_wire::RData::Aaaa("2001:db8::53".parse().unwrap()),
                };
                if qn.to_string() == "dns.example." {
                    r.answers.push(sextant_wire::Record::new(qn, 60, data));
                }
                sock.send_to(&r.to_wire(), from).unwrap();
            }
        });
        let c = cfg(&format!(". {{\n forward . 10.0.0.1 dns.example:5353 tls://dns.example%tls.example https://dns.example:8443 {{\n  resolver 127.0.0.1:{port} 127.0.0.1:1\n }}\n}}\n"));
        assert_eq!(c.resolver.len(), 2);
        let got: Vec<(Transport, String, Option<&str>)> =
            c.to.iter()
                .map(|u| (u.transport, u.addr.to_string(), u.server_name.as_deref()))
                .collect();
        assert_eq!(
            got,
            vec![
                (Transport::Dns, "10.0.0.1:53".into(), None),
                (Transport::Dns, "192.0.2.53:5353".into(), None),
                (Transport::Dns, "[2001:db8::53]:5353".into(), None),
                (Transport::Tls, "192.0.2.53:853".into(), Some("tls.example")),
                (
                    Transport::Tls,
                    "[2001:db8::53]:853".into(),
                    Some("tls.example")
                ),
                (Transport::Https, "192.0.2.53:8443".into(), None),
                (Transport::Https, "[2001:db8::53]:8443".into(), None),
            ]
        );
        let e = err(&format!(
            ". {{\n forward . nothere.example {{\n  resolver 127.0.0.1:{port}\n }}\n}}\n"
        ));
        assert_eq!(e, "Corefile:2:12: forward: failed to resolve \"nothere.example\": no addresses found for \"nothere.example\"");
        // Without `resolver`, the system resolver (/etc/hosts here).
        let c = cfg(". {\n forward . localhost:5300\n}\n");
        assert!(
            !c.to.is_empty()
                && c.to
                    .iter()
                    .all(|u| u.addr.ip().is_loopback() && u.addr.port() == 5300),
            "{:?}",
            c.to
        );
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
        assert_eq!(c.to.iter().map(|x| x.addr).collect::<Vec<_>>(), want);
        let empty = dir.path().join("empty.conf");
        std::fs::write(&empty, "search x\n").unwrap();
        // A file without nameservers is skipped, as CoreDNS skips it.
        let e = err(&format!(". {{\n forward . {}\n}}\n", empty.display()));
        assert_eq!(
            e,
            "Corefile:2:12: forward: no valid upstream addresses found"
        );
        let c = cfg(&format!(
            ". {{\n forward . {} 10.0.0.9\n}}\n",
            empty.display()
        ));
        assert_eq!(
            c.to,
            vec![Upstream::new(
                Transport::Dns,
                "10.0.0.9:53".parse().unwrap()
            )]
        );
    }

    #[test]
    fn every_option() {
        let c = cfg(". {\n forward . 127.0.0.1 {\n  except a.example B.example.\n  force_tcp\n  prefer_udp\n  expire 20s\n  max_idle_conns 7\n  max_fails 3\n  max_connect_attempts 4\n  tls\n  tls_servername dns.example\n  policy round_robin\n  health_check 1s no_rec domain example.org\n  max_concurrent 100\n  next NXDOMAIN servfail\n  next_on_nodata\n  failover REFUSED\n  failfast_all_unhealthy_upstreams\n  read_timeout 300ms\n  source_address 127.0.0.1\n  max_age 30s\n  resolver 127.0.0.1 [::1]:5353 10.0.0.1:53\n }\n}\n");
        assert_eq!(c.max_age, Duration::from_secs(30));
        assert_eq!(
            c.resolver,
            vec![
                "127.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:5353".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap()
            ]
        );
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
            (". {\n forward . foo..bar\n}\n", "Corefile:2:12: forward: not an IP address, file, or valid domain: \"foo..bar\""),
            (". {\n forward . 127.0.0.1 {\n  expire 30s\n  max_age 10s\n }\n}\n", "Corefile:4:3: max_age: max_age (10s) must not be less than expire (30s)"),
            (". {\n forward . 127.0.0.1 {\n  max_age -1s\n }\n}\n", "Corefile:3:11: max_age: invalid duration '-1s'"),
            (". {\n forward . 127.0.0.1 {\n  resolver foo\n }\n}\n", "Corefile:3:12: resolver: resolver must be an IP address or IP:port: \"foo\""),
            (". {\n forward . 127.0.0.1 {\n  resolver\n }\n}\n", "Corefile:3:3: resolver: wrong argument count: expected at least 1, got 0"),
            (". {\n forward . tls://127.0.0.1%a.example {\n  tls_servername b.example\n }\n}\n", "Corefile:2:2: forward: both forward ('b.example') and proxy level ('a.example') TLS servernames are set for upstream proxy 'tls://127.0.0.1:853'"),
            (". {\n forward . quic://1.1.1.1\n}\n", "Corefile:2:12: forward: 'quic' is not supported as a destination protocol in forward: quic://1.1.1.1"),
            (". {\n forward . https://1.1.1.1/dns-query\n}\n", "Corefile:2:12: forward: paths are not allowed in HTTPS upstream addresses (the /dns-query path is used by default): https://1.1.1.1/dns-query"),
            (". {\n forward . https://1.1.1.1 {\n  doh_method PUT\n }\n}\n", "Corefile:3:14: doh_method: doh_method must be either POST or GET"),
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
