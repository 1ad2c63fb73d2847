//! The first-answer fast path of the `kubernetes` plugin: an A or AAAA question for a service
//! (`<svc>.<ns>.svc.<zone>`) or one of its endpoints (`<endpoint>.<svc>.<ns>.svc.<zone>`) that
//! exists is answered straight from the snapshot into reply bytes (its addresses, or NODATA with
//! the zone's SOA when it has none of that family), and so is the NXDOMAIN of such a name whose
//! namespace or service does not exist or whose last label is neither `svc` nor `pod` (the
//! search path's names), without the general path's parsed request, found items, records and
//! message. Anything else (an ExternalName, a pod name, other forms, fallthrough, an index not
//! synced yet, an option that changes these answers) returns None and takes the general path,
//! which gives the same bytes for what is answered here (`fast_path_matches_the_general_path`
//! in the tests compares them).

use std::net::IpAddr;

use sextant_kube::{ServiceKind, Snapshot};
use sextant_wire::name::{MAX_LABEL_LEN, MAX_NAME_LEN};
use sextant_wire::{Header, Message, RType, Rcode, HEADER_LEN};

use super::setup::Config;
use crate::pkg::zones;

/// Addresses answered here at most; more go the general way (the de-duplication here is a
/// linear scan).
const MAX_ADDRS: usize = 32;

/// `l` lower-cased into `buf`, as text; None for a label that is not UTF-8 (the general path
/// turns such bytes into U+FFFD, which no object's name holds: it answers NXDOMAIN).
fn lower<'b>(l: &[u8], buf: &'b mut [u8; MAX_LABEL_LEN]) -> Option<&'b str> {
    let out = buf.get_mut(..l.len())?;
    for (d, s) in out.iter_mut().zip(l) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// The IPv4 address whose dashed label (`lookup::dashed`: decimal octets without leading
/// zeros) is `label`, if it is one.
fn dashed_v4(label: &str) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = label.split('-');
    for o in &mut octets {
        let p = parts.next()?.as_bytes();
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p[0] == b'0') {
            return None;
        }
        let mut v: u16 = 0;
        for d in p {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(d - b'0');
        }
        *o = u8::try_from(v).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(std::net::Ipv4Addr::from(octets))
}

/// `<port>.<protocol>.<service>.<namespace>.svc.<zone>` (`labels` in front of the zone), which
/// is also the first name of the ndots:5 search path for a dotted name (`a.b.c.<ns>.svc.<zone>`):
/// its name error (`name_error`) when the namespace is not served or the service does not exist,
/// as `parse_request` and `find_services` decide; None (the general path) otherwise.
fn port_form_name_error<R>(
    cfg: &Config,
    snap: &Snapshot,
    labels: &[&[u8]; 8],
    name_error: impl FnOnce() -> Option<R>,
) -> Option<R> {
    let mut bufs = [[0u8; MAX_LABEL_LEN]; 2];
    let [ns_buf, name_buf] = &mut bufs;
    let ns = lower(labels[3], ns_buf)?;
    let name = lower(labels[2], name_buf)?;
    let served =
        snap.namespace(ns).is_some() && (cfg.namespaces.is_empty() || cfg.namespaces.contains(ns));
    if served && snap.service(ns, name).is_some() {
        return None;
    }
    name_error()
}

/// An endpoint's DNS label (`lookup::endpoint_hostname`) in a stack buffer.
struct Host {
    buf: [u8; 48],
    len: usize,
}

impl Host {
    fn dashed(ip: IpAddr) -> Host {
        let mut h = Host {
            buf: [0; 48],
            len: 0,
        };
        match ip {
            IpAddr::V4(a) => {
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        h.push(b'-');
                    }
                    if o >= 100 {
                        h.push(b'0' + o / 100);
                    }
                    if o >= 10 {
                        h.push(b'0' + o / 10 % 10);
                    }
                    h.push(b'0' + o % 10);
                }
            }
            IpAddr::V6(a) => {
                use std::io::Write;
                let mut w = &mut h.buf[..];
                // 39 characters at most: always fits.
                let _ = write!(w, "{a}");
                let left = w.len();
                h.len = h.buf.len() - left;
                for b in &mut h.buf[..h.len] {
                    if *b == b':' {
                        *b = b'-';
                    }
                }
                if h.buf[h.len - 1] == b'-' {
                    h.push(b'0');
                }
            }
        }
        h
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The reply to `msg` (one question, A or AAAA, under one of `cfg`'s zones) when the fast path
/// answers it: (bytes as `Message::to_wire` writes the general path's reply, uncompressed
/// length).
pub(super) fn answer(
    cfg: &Config,
    snap: &Snapshot,
    synced: bool,
    msg: &Message,
) -> Option<(Vec<u8>, usize)> {
    let q = msg.question()?;
    let v6 = match q.qtype {
        RType::A => false,
        RType::AAAA => true,
        _ => return None,
    };
    if cfg.ignore_empty_service || !cfg.multicluster.is_empty() {
        return None;
    }
    let zone = zones::matches(&cfg.zones, &q.name)?;
    if zone.is_root() || q.name.is_reverse() {
        return None;
    }
    let wire = q.name.wire();
    // The labels in front of the zone (at most 8 here).
    let mut labels: [&[u8]; 8] = [&[]; 8];
    let mut n = 0;
    let mut pos = 0;
    let keep = wire.len() - zone.wire_len();
    while pos < keep {
        let len = wire[pos] as usize;
        if n == labels.len() {
            return None;
        }
        labels[n] = &wire[pos + 1..pos + 1 + len];
        n += 1;
        pos += 1 + len;
    }
    // The general path's NXDOMAIN (`NameError`, no fallthrough, synced).
    let name_error = || {
        (synced && !cfg.fall.through(&q.name)).then(|| {
            negative(
                msg,
                Rcode::NXDOMAIN,
                zone.wire_len(),
                snap.serial(),
                cfg.ttl,
            )
        })
    };
    let last = *labels[..n].last()?;
    if !last.eq_ignore_ascii_case(b"svc") {
        // Neither `svc` nor `pod`: a name error (`parse_request`). Not `ns.dns.<zone>` (it has
        // addresses), nor a name whose labels the SOA's would compress into.
        if last.eq_ignore_ascii_case(b"pod")
            || last.eq_ignore_ascii_case(b"dns")
            || last.eq_ignore_ascii_case(b"hostmaster")
        {
            return None;
        }
        return name_error();
    }
    if n == 5 {
        return port_form_name_error(cfg, snap, &labels, name_error);
    }
    if !(3..=4).contains(&n) {
        return None;
    }
    let mut bufs = [[0u8; MAX_LABEL_LEN]; 3];
    let [ns_buf, name_buf, ep_buf] = &mut bufs;
    let ns = lower(labels[n - 2], ns_buf)?;
    let name = lower(labels[n - 3], name_buf)?;
    let endpoint = if n == 4 {
        Some(lower(labels[0], ep_buf)?)
    } else {
        None
    };
    if snap.namespace(ns).is_none() || (!cfg.namespaces.is_empty() && !cfg.namespaces.contains(ns))
    {
        return name_error();
    }
    let Some(svc) = snap.service(ns, name) else {
        return name_error();
    };
    let mut ips: [IpAddr; MAX_ADDRS] = [IpAddr::from([0u8; 4]); MAX_ADDRS];
    let mut count = 0;
    // The general path's "items found" (its NXDOMAIN when not).
    let mut found = false;
    let mut add = |ip: IpAddr| -> Option<()> {
        if ip.is_ipv6() != v6 || ips[..count].contains(&ip) {
            return Some(());
        }
        if count == MAX_ADDRS {
            return None;
        }
        ips[count] = ip;
        count += 1;
        Some(())
    };
    match &svc.kind {
        ServiceKind::ExternalName(_) => return None,
        ServiceKind::ClusterIp(cips) if endpoint.is_none() => {
            if svc.ports.is_empty() {
                return None;
            }
            found = true;
            for ip in cips {
                add(*ip)?;
            }
        }
        _ => {
            if cfg.noendpoints {
                return None;
            }
            // Endpoint names live at `<host>.<svc>.<ns>.svc.<zone>` (as `lookup::name_in`
            // builds it: every label 1..=63 bytes, the name at most 255).
            let base = svc.name.len() + svc.namespace.len() + 2 + 4 + zone.wire_len();
            let fits = |l: usize| (1..=MAX_LABEL_LEN).contains(&l) && base + 1 + l <= MAX_NAME_LEN;
            if svc.name.is_empty()
                || svc.name.len() > MAX_LABEL_LEN
                || svc.namespace.is_empty()
                || svc.namespace.len() > MAX_LABEL_LEN
            {
                return None;
            }
            // An IPv4 endpoint without a name is `a-b-c-d` (7 to 15 bytes): when any such label
            // fits, it is compared by address instead of being written out.
            let v4_fits = fits(15);
            let asked_v4 = endpoint.map(dashed_v4);
            for ep in snap.endpoints(&svc.namespace, &svc.name) {
                if ep.ports.is_empty() {
                    continue;
                }
                let text = ep.hostname.filter(|h| !h.is_empty()).or_else(|| {
                    ep.pod_name
                        .filter(|p| cfg.endpoint_pod_names && !p.is_empty())
                });
                let dashed;
                let host = match (text, ep.ip) {
                    (Some(t), _) => t.as_bytes(),
                    (None, IpAddr::V4(a)) if v4_fits => {
                        if asked_v4.is_none_or(|x| x == Some(a)) {
                            found = true;
                            add(ep.ip)?;
                        }
                        continue;
                    }
                    (None, ip) => {
                        dashed = Host::dashed(ip);
                        dashed.bytes()
                    }
                };
                if let Some(e) = &endpoint {
                    if !e.as_bytes().eq_ignore_ascii_case(host) {
                        continue;
                    }
                }
                if fits(host.len()) {
                    found = true;
                    add(ep.ip)?;
                }
            }
        }
    }
    if !found {
        return None;
    }
    if count == 0 {
        return Some(negative(
            msg,
            Rcode::NOERROR,
            zone.wire_len(),
            snap.serial(),
            cfg.ttl,
        ));
    }
    Some(encode(msg, &ips[..count], cfg.ttl))
}

/// The header (`rcode`) and question of the reply to `msg` (`Message::reply_to` with AA set)
/// with `answers` and `authority` records to follow, into a buffer of `capacity`.
fn start(
    msg: &Message,
    rcode: Rcode,
    answers: usize,
    authority: usize,
    capacity: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    let Some(q) = msg.question() else {
        return out;
    };
    let header = Header {
        id: msg.header.id,
        qr: true,
        opcode: msg.header.opcode,
        aa: true,
        rd: msg.header.rd,
        cd: msg.header.cd,
        rcode: rcode.low(),
        ..Header::default()
    };
    out.extend_from_slice(&header.id.to_be_bytes());
    out.extend_from_slice(&header.flags().to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(answers as u16).to_be_bytes());
    out.extend_from_slice(&(authority as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(q.name.wire());
    out.extend_from_slice(&q.qtype.0.to_be_bytes());
    out.extend_from_slice(&q.qclass.0.to_be_bytes());
    out
}

/// The general path's negative reply (`Kubernetes::negative`: NODATA or NXDOMAIN): the zone's
/// SOA in the authority section, its owner the zone as the question spells it. As the encoder
/// compresses it: the owner and the zone under MNAME (`ns.dns.<zone>`) and RNAME
/// (`hostmaster.<zone>`) point at the zone's labels in the question (the label in front of the
/// zone there is neither `dns` nor `hostmaster`, so nothing longer matches).
fn negative(
    msg: &Message,
    rcode: Rcode,
    zone_len: usize,
    serial: u32,
    ttl: u32,
) -> (Vec<u8>, usize) {
    let Some(q) = msg.question() else {
        return (Vec::new(), 0);
    };
    let qlen = q.name.wire_len();
    let zone_ptr = (0xc000 | (HEADER_LEN + qlen - zone_len) as u16).to_be_bytes();
    const RDLEN: u16 = 9 + 13 + 20;
    let len = HEADER_LEN + qlen + 4 + 2 + 10 + usize::from(RDLEN);
    let mut out = start(msg, rcode, 0, 1, len + 11);
    out.extend_from_slice(&zone_ptr);
    out.extend_from_slice(&RType::SOA.0.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.min(300).to_be_bytes());
    out.extend_from_slice(&RDLEN.to_be_bytes());
    out.extend_from_slice(b"\x02ns\x03dns");
    out.extend_from_slice(&zone_ptr);
    out.extend_from_slice(b"\x0ahostmaster");
    out.extend_from_slice(&zone_ptr);
    for v in [serial, 7200, 1800, 86400, ttl] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let soa = zone_len + 10 + (zone_len + 7) + (zone_len + 11) + 20;
    (out, HEADER_LEN + qlen + 4 + soa)
}

/// The reply `Message::reply_to(msg)` with AA set and these address records for the question
/// name would encode to: the owner names compress to the question's, at offset 12.
fn encode(msg: &Message, ips: &[IpAddr], ttl: u32) -> (Vec<u8>, usize) {
    let Some(q) = msg.question() else {
        return (Vec::new(), 0);
    };
    let qname = q.name.wire();
    let rdlen: usize = if ips.first().is_some_and(IpAddr::is_ipv6) {
        16
    } else {
        4
    };
    let len = HEADER_LEN + qname.len() + 4 + ips.len() * (2 + 10 + rdlen);
    // Room for the OPT record the server appends.
    let mut out = start(msg, Rcode::NOERROR, ips.len(), 0, len + 11);
    for ip in ips {
        out.extend_from_slice(&[0xc0, 0x0c]);
        match ip {
            IpAddr::V4(a) => {
                out.extend_from_slice(&RType::A.0.to_be_bytes());
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.extend_from_slice(&RType::AAAA.0.to_be_bytes());
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&a.octets());
            }
        }
    }
    let uncompressed = HEADER_LEN + qname.len() + 4 + ips.len() * (qname.len() + 10 + rdlen);
    (out, uncompressed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::kubernetes::lookup::dashed;

    #[test]
    fn dashed_v4_reads_exactly_the_labels_dashed_writes() {
        for a in [
            "0.0.0.0",
            "10.0.0.1",
            "172.16.254.3",
            "255.255.255.255",
            "1.20.100.9",
        ] {
            let ip: std::net::Ipv4Addr = a.parse().unwrap();
            assert_eq!(dashed_v4(&dashed(IpAddr::V4(ip))), Some(ip), "{a}");
            let ip = IpAddr::V4(ip);
            assert_eq!(Host::dashed(ip).bytes(), dashed(ip).as_bytes());
        }
        for l in [
            "01-2-3-4",
            "1-2-3",
            "256-1-1-1",
            "1-2-3-4-5",
            "a-b-c-d",
            "1--2-3",
            "",
            "1-2-3-0004",
        ] {
            assert_eq!(dashed_v4(l), None, "{l}");
        }
        for ip in ["::1", "fd00::", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(Host::dashed(ip).bytes(), dashed(ip).as_bytes());
        }
    }
}
