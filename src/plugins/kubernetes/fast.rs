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
    let mut high = 0u8;
    for (d, s) in out.iter_mut().zip(l) {
        high |= *s;
        *d = s.to_ascii_lowercase();
    }
    if high < 0x80 {
        // SAFETY: every byte of `out` is below 0x80 (an ASCII lower-casing of bytes that all
        // were), and ASCII is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(out) });
    }
    std::str::from_utf8(out).ok()
}

/// The IPv4 address whose dashed label (`lookup::dashed`: decimal octets without leading
/// zeros) is `label`, if it is one.
fn dashed_v4(label: &str) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    // The octet being read and its digits so far.
    let (mut v, mut digits) = (0u16, 0);
    for &b in label.as_bytes() {
        match b {
            b'0'..=b'9' => {
                // At most three digits, no leading zero.
                if digits == 3 || (digits == 1 && v == 0) {
                    return None;
                }
                v = v * 10 + u16::from(b - b'0');
                digits += 1;
            }
            b'-' if digits > 0 && i < 3 => {
                octets[i] = u8::try_from(v).ok()?;
                i += 1;
                (v, digits) = (0, 0);
            }
            _ => return None,
        }
    }
    if digits == 0 || i != 3 {
        return None;
    }
    octets[3] = u8::try_from(v).ok()?;
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
    let wire = q.name.wire();
    // Only a name ending in `arpa` can be a reverse name: the full check for those alone.
    let arpa = wire.len() >= 6 && wire[wire.len() - 6..].eq_ignore_ascii_case(b"\x04arpa\x00");
    if zone.is_root() || (arpa && q.name.is_reverse()) {
        return None;
    }
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
    // One lookup for the service and its endpoints; the namespace must exist too (a missing
    // namespace or service is the same name error).
    let Some((svc, entry)) = snap.lookup(ns, name).and_then(|e| Some((e.service()?, e))) else {
        return name_error();
    };
    if snap.namespace(ns).is_none() || (!cfg.namespaces.is_empty() && !cfg.namespaces.contains(ns))
    {
        return name_error();
    }
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
            // Internal iteration (`try_for_each`): tighter than stepping the nested iterator.
            entry.endpoints().try_for_each(|ep| -> Option<()> {
                if ep.ports.is_empty() {
                    return Some(());
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
                        return Some(());
                    }
                    (None, ip) => {
                        dashed = Host::dashed(ip);
                        dashed.bytes()
                    }
                };
                if let Some(e) = &endpoint {
                    if !e.as_bytes().eq_ignore_ascii_case(host) {
                        return Some(());
                    }
                }
                if fits(host.len()) {
                    found = true;
                    add(ep.ip)?;
                }
                Some(())
            })?;
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
    let [i0, i1] = header.id.to_be_bytes();
    let [f0, f1] = header.flags().to_be_bytes();
    let [a0, a1] = (answers as u16).to_be_bytes();
    let [n0, n1] = (authority as u16).to_be_bytes();
    out.extend_from_slice(&[i0, i1, f0, f1, 0, 1, a0, a1, n0, n1, 0, 0]);
    out.extend_from_slice(q.name.wire());
    let [t0, t1] = q.qtype.0.to_be_bytes();
    let [c0, c1] = q.qclass.0.to_be_bytes();
    out.extend_from_slice(&[t0, t1, c0, c1]);
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
    // Owner, type, class, TTL, RDLENGTH; MNAME, RNAME; the five numbers.
    let mut soa = [0u8; 12 + RDLEN as usize];
    let [z0, z1] = zone_ptr;
    let [t0, t1] = RType::SOA.0.to_be_bytes();
    let [l0, l1, l2, l3] = ttl.min(300).to_be_bytes();
    let [r0, r1] = RDLEN.to_be_bytes();
    soa[..12].copy_from_slice(&[z0, z1, t0, t1, 0, 1, l0, l1, l2, l3, r0, r1]);
    soa[12..21].copy_from_slice(b"\x02ns\x03dns\xc0\x00");
    soa[19..21].copy_from_slice(&zone_ptr);
    soa[21..34].copy_from_slice(b"\x0ahostmaster\xc0\x00");
    soa[32..34].copy_from_slice(&zone_ptr);
    for (i, v) in [serial, 7200, 1800, 86400, ttl].into_iter().enumerate() {
        soa[34 + 4 * i..38 + 4 * i].copy_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&soa);
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
    // Owner (a pointer to the question's name), type, class, TTL, RDLENGTH, address.
    let [l0, l1, l2, l3] = ttl.to_be_bytes();
    for ip in ips {
        match ip {
            IpAddr::V4(a) => {
                let [t0, t1] = RType::A.0.to_be_bytes();
                let mut rr = [0xc0, 0x0c, t0, t1, 0, 1, l0, l1, l2, l3, 0, 4, 0, 0, 0, 0];
                rr[12..].copy_from_slice(&a.octets());
                out.extend_from_slice(&rr);
            }
            IpAddr::V6(a) => {
                let [t0, t1] = RType::AAAA.0.to_be_bytes();
                let mut rr = [0u8; 28];
                rr[..12].copy_from_slice(&[0xc0, 0x0c, t0, t1, 0, 1, l0, l1, l2, l3, 0, 16]);
                rr[12..].copy_from_slice(&a.octets());
                out.extend_from_slice(&rr);
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
            "1-2-3-4-",
            "-1-2-3-4",
            "1-2-3-00",
            "1-2-3-",
            "1-2-3-4a",
            "1.2.3.4",
            "1-2-3-1000",
            "1-2-3-256",
        ] {
            assert_eq!(dashed_v4(l), None, "{l}");
        }
        for ip in ["::1", "fd00::", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(Host::dashed(ip).bytes(), dashed(ip).as_bytes());
        }
    }
}
