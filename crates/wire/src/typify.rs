//! CoreDNS's `response.Typify` classes of a reply and `dnsutil.MinimalTTLWithMaximum`: how
//! long a reply may be kept (the cache, DoH's `Cache-Control`). Pure functions over `Message`.

use crate::message::{skip_name, HEADER_LEN};
use crate::{opcode, Message, RType, Rcode};

/// CoreDNS `response.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    NoError,
    NameError,
    ServerError,
    NoData,
    Delegation,
    Meta,
    Update,
    OtherError,
}

/// CoreDNS's floor for TTLs it has to make up (`dnsutil.MinimalDefaultTTL`), seconds.
pub const MINIMAL_DEFAULT_TTL: u32 = 5;

fn has_soa(m: &Message) -> bool {
    m.authority.iter().any(|r| r.rtype == RType::SOA)
}

/// `response.Typify` (without the expired-RRSIG check: Sextant does not interpret RRSIGs).
pub fn typify(m: &Message) -> MsgType {
    classify(&Shape {
        opcode: m.header.opcode,
        qtype: m.question().map(|q| q.qtype),
        rcode: m.rcode(),
        answers: !m.answers.is_empty(),
        soa: has_soa(m),
        ns: m.authority.iter().any(|r| r.rtype == RType::NS),
    })
}

/// What `response.Typify` looks at in a reply.
struct Shape {
    opcode: u8,
    /// The first question's type.
    qtype: Option<RType>,
    /// The full rcode (with the OPT record's high bits).
    rcode: Rcode,
    /// The answer section has records.
    answers: bool,
    /// The authority section has an SOA record.
    soa: bool,
    /// The authority section has an NS record.
    ns: bool,
}

fn classify(m: &Shape) -> MsgType {
    if m.opcode == opcode::UPDATE {
        return MsgType::Update;
    }
    if m.opcode == opcode::NOTIFY {
        return MsgType::Meta;
    }
    if m.qtype == Some(RType::AXFR) || m.qtype == Some(RType::IXFR) {
        return MsgType::Meta;
    }
    let rcode = m.rcode;
    if m.answers && rcode == Rcode::NOERROR {
        return MsgType::NoError;
    }
    if m.answers && rcode == Rcode::NXDOMAIN {
        return MsgType::OtherError;
    }
    if m.soa && rcode == Rcode::NOERROR {
        return MsgType::NoData;
    }
    if rcode == Rcode::NXDOMAIN {
        return MsgType::NameError;
    }
    if rcode == Rcode::SERVFAIL || rcode == Rcode::NOTIMP {
        return MsgType::ServerError;
    }
    if m.ns && rcode == Rcode::NOERROR {
        return MsgType::Delegation;
    }
    if rcode == Rcode::NOERROR {
        return MsgType::NoError;
    }
    MsgType::OtherError
}

/// CoreDNS `dnsutil.MinimalTTLWithMaximum`: the lowest RR TTL, at most `max`; 5 s for classes
/// other than NoError/NameError/NoData and for replies without records.
pub fn minimal_ttl(m: &Message, t: MsgType, max: u32) -> u32 {
    if !matches!(t, MsgType::NoError | MsgType::NameError | MsgType::NoData) {
        return MINIMAL_DEFAULT_TTL;
    }
    if m.answers.is_empty() && m.authority.is_empty() && m.additional.is_empty() {
        return MINIMAL_DEFAULT_TTL;
    }
    let mut ttl = max;
    for r in m.answers.iter().chain(&m.authority).chain(&m.additional) {
        ttl = ttl.min(r.ttl);
    }
    ttl
}

/// [`minimal_ttl`] of [`typify`]'s class, read from an encoded message without building a
/// [`Message`] (DoH's `Cache-Control` of every reply). The walk checks the framing the parser
/// checks (names, record lengths, one OPT record at the root in the additional section, its
/// option list, no trailing bytes) but not each record's data: meant for replies Sextant
/// encoded itself. None when the walk cannot read the bytes; the caller parses them then.
pub fn minimal_ttl_of_wire(bytes: &[u8], max: u32) -> Option<u32> {
    let h = bytes.get(..HEADER_LEN)?;
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]) as usize;
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let be16 = |p: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*bytes.get(p)?, *bytes.get(p + 1)?]))
    };
    let mut p = HEADER_LEN;
    let mut qtype = None;
    for i in 0..qd {
        p = skip_name(bytes, p).ok()?.0;
        let t = RType(be16(p)?);
        be16(p + 2)?;
        if i == 0 {
            qtype = Some(t);
        }
        p += 4;
    }
    let mut shape = Shape {
        opcode: (h[2] >> 3) & 0x0f,
        qtype,
        rcode: Rcode(u16::from(h[3] & 0x0f)),
        answers: false,
        soa: false,
        ns: false,
    };
    let mut ttl = max;
    let mut records = false;
    let mut opt = false;
    for i in 0..an + ns + ar {
        let (q, name_len) = skip_name(bytes, p).ok()?;
        let f = bytes.get(q..q + 10)?;
        let rtype = RType(u16::from_be_bytes([f[0], f[1]]));
        let rttl = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
        let end = q + 10 + u16::from_be_bytes([f[8], f[9]]) as usize;
        let data = bytes.get(q + 10..end)?;
        p = end;
        if rtype == RType::OPT {
            if i < an + ns || opt || name_len != 1 || !options_ok(data) {
                return None;
            }
            opt = true;
            shape.rcode = Rcode((u16::from(f[4]) << 4) | shape.rcode.0);
            continue;
        }
        records = true;
        ttl = ttl.min(rttl);
        if i < an {
            shape.answers = true;
        } else if i < an + ns {
            shape.soa |= rtype == RType::SOA;
            shape.ns |= rtype == RType::NS;
        }
    }
    if p != bytes.len() {
        return None;
    }
    let t = classify(&shape);
    if !matches!(t, MsgType::NoError | MsgType::NameError | MsgType::NoData) || !records {
        return Some(MINIMAL_DEFAULT_TTL);
    }
    Some(ttl)
}

/// True when an OPT record's data is a whole list of options.
fn options_ok(data: &[u8]) -> bool {
    let mut p = 0;
    while p < data.len() {
        match data.get(p + 2..p + 4) {
            Some(l) => p += 4 + u16::from_be_bytes([l[0], l[1]]) as usize,
            None => return false,
        }
    }
    p == data.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Edns, Name, RData, Record, Soa};

    fn rec(name: &str, ttl: u32, data: RData) -> Record {
        Record::new(Name::parse(name).unwrap(), ttl, data)
    }

    /// The walk gives what the parser's `minimal_ttl(typify)` gives, reply class by class.
    #[test]
    fn wire_walk_matches_the_parsed_message() {
        let q = Message::query(7, Name::parse("a.example.").unwrap(), RType::A);
        let soa = || {
            rec(
                "example.",
                90,
                RData::Soa(Soa {
                    mname: Name::parse("ns.example.").unwrap(),
                    rname: Name::parse("h.example.").unwrap(),
                    serial: 1,
                    refresh: 2,
                    retry: 3,
                    expire: 4,
                    minimum: 60,
                }),
            )
        };
        let a = |ttl| rec("a.example.", ttl, RData::A([10, 0, 0, 1].into()));
        let ns = || {
            rec(
                "example.",
                40,
                RData::Ns(Name::parse("ns.example.").unwrap()),
            )
        };
        let mut cases = Vec::new();
        let mut r = Message::reply_to(&q);
        r.answers = vec![a(300), a(30)];
        r.additional = vec![a(20)];
        cases.push(r.clone());
        r.edns = Some(Edns::new(1232));
        cases.push(r.clone());
        r.answers = vec![a(7200)];
        r.additional.clear();
        cases.push(r.clone());
        r.answers.clear();
        cases.push(r.clone());
        r.authority = vec![soa()];
        cases.push(r.clone());
        r.set_rcode(Rcode::NXDOMAIN);
        cases.push(r.clone());
        r.answers = vec![a(10)];
        cases.push(r.clone());
        r.answers.clear();
        r.set_rcode(Rcode::SERVFAIL);
        cases.push(r.clone());
        r.set_rcode(Rcode::BADVERS);
        cases.push(r.clone());
        r.set_rcode(Rcode::NOERROR);
        r.authority = vec![ns()];
        cases.push(r.clone());
        let mut axfr = Message::reply_to(&Message::query(
            1,
            Name::parse("example.").unwrap(),
            RType::AXFR,
        ));
        axfr.answers = vec![soa()];
        cases.push(axfr);
        for (i, m) in cases.iter().enumerate() {
            let w = m.to_wire();
            let parsed = Message::parse(&w).unwrap();
            let want = minimal_ttl(&parsed, typify(&parsed), 3600);
            assert_eq!(minimal_ttl_of_wire(&w, 3600), Some(want), "case {i}: {m:?}");
        }
        // Bytes the parser refuses are not read either.
        let w = cases[1].to_wire();
        assert_eq!(minimal_ttl_of_wire(&w[..w.len() - 1], 3600), None);
        let mut long = w.clone();
        long.push(0);
        assert_eq!(minimal_ttl_of_wire(&long, 3600), None);
        assert_eq!(minimal_ttl_of_wire(&w[..11], 3600), None);
    }

    /// `skip_name` agrees with `read_name` at every offset of messages with compressed names,
    /// including the offsets where no name starts (bad label types, pointers, truncation).
    #[test]
    fn skip_name_checks_what_read_name_checks() {
        let q = Message::query(7, Name::parse("a.example.").unwrap(), RType::A);
        let mut r = Message::reply_to(&q);
        r.answers = vec![rec(
            "a.example.",
            5,
            RData::Ns(Name::parse("ns.a.example.").unwrap()),
        )];
        r.edns = Some(Edns::new(512));
        let w = r.to_wire();
        for p in 0..w.len() + 2 {
            let want = crate::message::read_name(&w, p).map(|(n, e)| (e, n.wire().len()));
            assert_eq!(skip_name(&w, p), want, "offset {p}");
        }
    }
}
