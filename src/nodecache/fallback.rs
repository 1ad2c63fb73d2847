//! The fallback targets: the addresses of the cluster DNS pods, looked up as the A/AAAA records
//! of `-fallbackendpoints` (a headless Service selecting them) at the cluster DNS itself. The
//! fallback DNAT sends the link-local IP's queries there when no node cache listens; kube-proxy
//! cannot (a DNAT to a ClusterIP is not NATed again, and link-local addresses cannot be a
//! Service's external IPs). One blocking UDP exchange per family; no other I/O.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use sextant_wire::{Message, Name, RData, RType};

/// Time allowed for one lookup.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The A (if `v4`) and AAAA (if `v6`) records of `name` at `server`, sorted. An error when the
/// server does not answer or answers with an error; an empty list when the name has none.
pub(crate) fn lookup(
    server: SocketAddr,
    name: &str,
    v4: bool,
    v6: bool,
) -> Result<Vec<IpAddr>, String> {
    let qname = Name::parse(name).map_err(|e| format!("invalid name {name:?}: {e}"))?;
    let mut out = Vec::new();
    for (want, qtype) in [(v4, RType::A), (v6, RType::AAAA)] {
        if !want {
            continue;
        }
        let bind: SocketAddr = if server.is_ipv6() {
            "[::]:0".parse().map_err(|_| "address".to_string())?
        } else {
            "0.0.0.0:0".parse().map_err(|_| "address".to_string())?
        };
        let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        sock.connect(server).map_err(|e| format!("{server}: {e}"))?;
        let id: u16 = rand::random();
        let q = Message::query(id, qname.clone(), qtype);
        sock.send(&q.to_wire())
            .map_err(|e| format!("{server}: {e}"))?;
        let mut buf = vec![0u8; 65535];
        let reply = loop {
            let n = sock
                .recv(&mut buf)
                .map_err(|e| format!("no answer from {server}: {e}"))?;
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            if m.header.id == id && m.header.qr {
                break m;
            }
        };
        let rcode = reply.rcode();
        if rcode.0 != 0 && rcode.0 != 3 {
            return Err(format!(
                "{server} answered {name} {qtype:?} with rcode {}",
                rcode.0
            ));
        }
        for r in &reply.answers {
            match r.data {
                RData::A(a) if qtype == RType::A => out.push(IpAddr::V4(a)),
                RData::Aaaa(a) if qtype == RType::AAAA => out.push(IpAddr::V6(a)),
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server answering each query with the given records for its type.
    fn serve(sock: UdpSocket, queries: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..queries {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                let q = Message::parse(&buf[..n]).unwrap();
                let mut r = Message::reply_to(&q);
                let name = q.question().unwrap().name.clone();
                match q.question().unwrap().qtype {
                    RType::A => {
                        for a in ["203.0.113.3", "203.0.113.2"] {
                            r.answers.push(sextant_wire::Record::new(
                                name.clone(),
                                5,
                                RData::A(a.parse().unwrap()),
                            ));
                        }
                    }
                    _ => r.answers.push(sextant_wire::Record::new(
                        name,
                        5,
                        RData::Aaaa("2001:db8::2".parse().unwrap()),
                    )),
                }
                sock.send_to(&r.to_wire(), from).unwrap();
            }
        })
    }

    #[test]
    fn looks_up_both_families() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let h = serve(sock, 2);
        let got = lookup(
            addr,
            "kube-dns-endpoints.kube-system.svc.cluster.local.",
            true,
            true,
        )
        .unwrap();
        h.join().unwrap();
        assert_eq!(
            got,
            vec![
                "203.0.113.2".parse::<IpAddr>().unwrap(),
                "203.0.113.3".parse().unwrap(),
                "2001:db8::2".parse().unwrap()
            ]
        );
        // Nobody answering: an error, after the timeout.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = lookup(silent.local_addr().unwrap(), "x.example.", true, false).unwrap_err();
        assert!(e.starts_with("no answer from"), "{e}");
    }
}
