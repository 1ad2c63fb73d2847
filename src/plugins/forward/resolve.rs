//! Hostname upstreams of `forward` (CoreDNS 1.14.4+): a TO that is neither an address nor a
//! file is a host name, resolved once while the Corefile is set up, through the `resolver`
//! addresses (A then AAAA, 2 s each, first resolver that gives addresses wins) or, without
//! them, the system resolver (`/etc/hosts` and `/etc/resolv.conf`, via getaddrinfo). Blocking
//! std sockets: setup is synchronous, and like CoreDNS a slow resolver delays the start.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use sextant_wire::{Message, Name, RData, RType};

/// CoreDNS's client timeouts for a resolver query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses of `host`, or the error text CoreDNS puts after `failed to resolve "HOST": `.
pub(crate) fn lookup(host: &str, resolvers: &[SocketAddr]) -> Result<Vec<IpAddr>, String> {
    if resolvers.is_empty() {
        return system(host);
    }
    let name = Name::parse(host).map_err(|e| format!("invalid name {host:?}: {e}"))?;
    let mut last_err = None;
    for r in resolvers {
        let mut ips = Vec::new();
        match query(*r, &name, RType::A) {
            Ok(found) => ips.extend(found),
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        }
        match query(*r, &name, RType::AAAA) {
            Ok(found) => ips.extend(found),
            // A records are enough when the AAAA query fails.
            Err(_) if !ips.is_empty() => return Ok(ips),
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        }
        if !ips.is_empty() {
            return Ok(ips);
        }
    }
    Err(match last_err {
        Some(e) => format!("no addresses found for {host:?}: {e}"),
        None => format!("no addresses found for {host:?}"),
    })
}

/// The system resolver: getaddrinfo, as Go's `net.LookupHost` reads /etc/hosts and resolv.conf.
fn system(host: &str) -> Result<Vec<IpAddr>, String> {
    let found = (host, 0u16)
        .to_socket_addrs()
        .map_err(|e| format!("lookup {host}: {e}"))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for sa in found {
        if !ips.contains(&sa.ip()) {
            ips.push(sa.ip());
        }
    }
    if ips.is_empty() {
        return Err(format!("no addresses found for {host:?}"));
    }
    Ok(ips)
}

/// One recursive query over UDP; the addresses of type `qtype` in its answer section.
fn query(server: SocketAddr, name: &Name, qtype: RType) -> Result<Vec<IpAddr>, String> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().map_err(|_| "bind".to_string())?,
        SocketAddr::V6(_) => "[::]:0".parse().map_err(|_| "bind".to_string())?,
    };
    let io = |e: std::io::Error| format!("udp {server}: {e}");
    let sock = UdpSocket::bind(bind).map_err(io)?;
    sock.connect(server).map_err(io)?;
    let id: u16 = rand::random();
    let mut q = Message::query(id, name.clone(), qtype);
    q.header.rd = true;
    sock.send(&q.to_wire()).map_err(io)?;
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("read udp {server}: i/o timeout"));
        }
        sock.set_read_timeout(Some(left)).map_err(io)?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("read udp {server}: i/o timeout"))
            }
            Err(e) => return Err(format!("read udp {server}: {e}")),
        };
        let Ok(m) = Message::parse(&buf[..n]) else {
            continue;
        };
        if m.header.id != id || !m.header.qr {
            continue;
        }
        return Ok(m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) if qtype == RType::A => Some(IpAddr::V4(*a)),
                RData::Aaaa(a) if qtype == RType::AAAA => Some(IpAddr::V6(*a)),
                _ => None,
            })
            .collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver on loopback answering A and AAAA for one name, NXDOMAIN otherwise.
    fn resolver(v4: Option<&str>, v6: Option<&str>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let (v4, v6) = (v4.map(str::to_string), v6.map(str::to_string));
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let q = Message::parse(&buf[..n]).unwrap();
                let mut r = Message::reply_to(&q);
                let qn = q.questions[0].name.clone();
                match (q.questions[0].qtype, &v4, &v6) {
                    (RType::A, Some(a), _) => r.answers.push(sextant_wire::Record::new(
                        qn,
                        60,
                        RData::A(a.parse().unwrap()),
                    )),
                    (RType::AAAA, _, Some(a)) => r.answers.push(sextant_wire::Record::new(
                        qn,
                        60,
                        RData::Aaaa(a.parse().unwrap()),
                    )),
                    _ => {}
                }
                sock.send_to(&r.to_wire(), from).unwrap();
            }
        });
        addr
    }

    #[test]
    fn a_then_aaaa_from_the_first_resolver_that_answers() {
        let dead: SocketAddr = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let r = resolver(Some("192.0.2.1"), Some("2001:db8::1"));
        let ips = lookup("dns.example", &[dead, r]).unwrap();
        assert_eq!(
            ips,
            vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        let e = lookup("dns.example", &[dead]).unwrap_err();
        assert!(
            e.starts_with("no addresses found for \"dns.example\": read udp"),
            "{e}"
        );
        let none = resolver(None, None);
        assert_eq!(
            lookup("dns.example", &[none]).unwrap_err(),
            "no addresses found for \"dns.example\""
        );
    }

    #[test]
    fn system_resolver_reads_etc_hosts() {
        let ips = lookup("localhost", &[]).unwrap();
        assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
    }
}
