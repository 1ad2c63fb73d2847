//! How the cache sees a reply: CoreDNS's `response.Typify` classes, whether a reply may be
//! cached at all, whether it answers its question (CNAME chain walk), and the TTL it is cached
//! for. Pure functions over `Message`; no clock, no I/O.

use sextant_wire::{Class, Message, Name, RData, RType, Rcode, Record};

pub(crate) use sextant_wire::typify::{typify, MsgType};

fn has_soa(m: &Message) -> bool {
    m.authority.iter().any(|r| r.rtype == RType::SOA)
}

/// The class the cache files a reply under: a NOERROR reply whose CNAME chain does not reach
/// the asked type is NODATA when an SOA gives it a negative TTL (CoreDNS `cacheResponseType`).
pub(crate) fn cache_type(m: &Message) -> MsgType {
    let t = typify(m);
    if t == MsgType::NoError && has_soa(m) && is_nodata(m) {
        return MsgType::NoData;
    }
    t
}

/// Whether a reply of class `t` may be stored (CoreDNS `key()`, plus the SOA-less empty NODATA
/// rule of RFC 2308 section 5, see the README).
pub(crate) fn cacheable(m: &Message, t: MsgType) -> bool {
    if m.header.tc {
        return false;
    }
    match t {
        MsgType::OtherError | MsgType::Meta | MsgType::Update => false,
        MsgType::NameError => has_soa(m),
        MsgType::NoError if !has_soa(m) => {
            if is_nodata(m) {
                return false;
            }
            // NOERROR with nothing at all (no answer, no SOA, no data anywhere): a NODATA the
            // cache cannot bound. CoreDNS keeps these for 5 s; RFC 2308 says not to.
            !(m.answers.is_empty() && m.authority.is_empty() && m.additional.is_empty())
        }
        _ => true,
    }
}

fn class_matches(rr: Class, q: Class) -> bool {
    q == Class::ANY || rr == q
}

/// The one CNAME target of `owner`; Err if it has two different ones; Ok(None) at the end.
fn unique_cname_target<'a>(
    answer: &'a [Record],
    owner: &Name,
    qclass: Class,
) -> Result<Option<&'a Name>, ()> {
    let mut target: Option<&Name> = None;
    for r in answer {
        let RData::Cname(t) = &r.data else { continue };
        if !class_matches(r.class, qclass) || r.name != *owner {
            continue;
        }
        match target {
            Some(prev) if prev != t => return Err(()),
            _ => target = Some(t),
        }
    }
    Ok(target)
}

/// Follows the CNAME chain from `name`; None for a loop or an ambiguous chain.
fn canonical_name<'a>(answer: &'a [Record], name: &'a Name, qclass: Class) -> Option<&'a Name> {
    // Borrowed names, and no list at all for the usual chain of length zero or one.
    let mut visited: Vec<&Name> = Vec::new();
    let mut cur = name;
    loop {
        if visited.contains(&cur) || visited.len() > answer.len() {
            return None;
        }
        match unique_cname_target(answer, cur, qclass) {
            Err(()) => return None,
            Ok(None) => return Some(cur),
            Ok(Some(t)) => {
                visited.push(cur);
                cur = t;
            }
        }
    }
}

/// True if a NOERROR reply carries an answer to its question (CoreDNS `answersQuestion`).
pub(crate) fn answers_question(m: &Message) -> bool {
    let Some(q) = m.question() else { return false };
    if m.rcode() != Rcode::NOERROR || m.answers.is_empty() {
        return false;
    }
    let answer = &m.answers;
    if q.qtype == RType::ANY {
        return answer
            .iter()
            .any(|r| class_matches(r.class, q.qclass) && r.name == q.name);
    }
    if q.qtype == RType::CNAME {
        return matches!(unique_cname_target(answer, &q.name, q.qclass), Ok(Some(_)));
    }
    let Some(terminal) = canonical_name(answer, &q.name, q.qclass) else {
        return false;
    };
    answer
        .iter()
        .any(|r| r.rtype == q.qtype && class_matches(r.class, q.qclass) && r.name == *terminal)
}

/// A non-empty answer that does not answer the question (CoreDNS `isNODATA`).
pub(crate) fn is_nodata(m: &Message) -> bool {
    !m.answers.is_empty() && !answers_question(m)
}

/// CoreDNS `dnsutil.MinimalTTLWithMaximum` ([`sextant_wire::typify::minimal_ttl`]); for
/// negative answers the SOA MINIMUM also bounds it (RFC 2308 section 5; CoreDNS looks at RR
/// TTLs only).
pub(crate) fn minimal_ttl(m: &Message, t: MsgType, max: u32) -> u32 {
    let mut ttl = sextant_wire::typify::minimal_ttl(m, t, max);
    if matches!(t, MsgType::NameError | MsgType::NoData) {
        for r in &m.authority {
            if let RData::Soa(s) = &r.data {
                ttl = ttl.min(s.minimum);
            }
        }
    }
    ttl
}

/// CoreDNS `computeTTL`: `min(max(ttl, min), max)`.
pub(crate) fn clamp_ttl(ttl: u32, min: u32, max: u32) -> u32 {
    ttl.max(min).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::Soa;
    use std::net::Ipv4Addr;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn reply(q: &str, t: RType) -> Message {
        let mut m = Message::reply_to(&Message::query(1, n(q), t));
        m.header.qr = true;
        m
    }

    fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
        Record::new(
            n(zone),
            ttl,
            RData::Soa(Soa {
                mname: n("ns.dns.example."),
                rname: n("hostmaster.example."),
                serial: 1,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum,
            }),
        )
    }

    #[test]
    fn typify_classes() {
        let mut m = reply("a.example.", RType::A);
        m.answers.push(Record::new(
            n("a.example."),
            30,
            RData::A(Ipv4Addr::LOCALHOST),
        ));
        assert_eq!(typify(&m), MsgType::NoError);
        let mut nx = reply("a.example.", RType::A);
        nx.set_rcode(Rcode::NXDOMAIN);
        assert_eq!(typify(&nx), MsgType::NameError);
        assert!(!cacheable(&nx, MsgType::NameError), "NXDOMAIN without SOA");
        nx.authority.push(soa("example.", 30, 30));
        assert!(cacheable(&nx, MsgType::NameError));
        let mut nd = reply("a.example.", RType::AAAA);
        nd.authority.push(soa("example.", 30, 30));
        assert_eq!(typify(&nd), MsgType::NoData);
        let mut sf = reply("a.example.", RType::A);
        sf.set_rcode(Rcode::SERVFAIL);
        assert_eq!(typify(&sf), MsgType::ServerError);
        let mut rf = reply("a.example.", RType::A);
        rf.set_rcode(Rcode::REFUSED);
        assert_eq!(typify(&rf), MsgType::OtherError);
        let mut dl = reply("a.example.", RType::A);
        dl.authority
            .push(Record::new(n("example."), 30, RData::Ns(n("ns.example."))));
        assert_eq!(typify(&dl), MsgType::Delegation);
        let axfr = reply("example.", RType::AXFR);
        assert_eq!(typify(&axfr), MsgType::Meta);
        let empty = reply("a.example.", RType::A);
        assert_eq!(typify(&empty), MsgType::NoError);
        assert!(
            !cacheable(&empty, MsgType::NoError),
            "SOA-less empty NODATA"
        );
        let mut tc = m.clone();
        tc.header.tc = true;
        assert!(!cacheable(&tc, MsgType::NoError));
    }

    #[test]
    fn cname_chains() {
        let mut m = reply("a.example.", RType::A);
        m.answers.push(Record::new(
            n("a.example."),
            30,
            RData::Cname(n("b.example.")),
        ));
        assert!(is_nodata(&m), "chain ends without an A");
        assert!(!cacheable(&m, cache_type(&m)));
        m.authority.push(soa("example.", 30, 30));
        assert_eq!(cache_type(&m), MsgType::NoData);
        m.authority.clear();
        m.answers.push(Record::new(
            n("B.example."),
            30,
            RData::A(Ipv4Addr::LOCALHOST),
        ));
        assert!(answers_question(&m));
        // A loop is never an answer.
        let mut l = reply("a.example.", RType::A);
        l.answers.push(Record::new(
            n("a.example."),
            30,
            RData::Cname(n("b.example.")),
        ));
        l.answers.push(Record::new(
            n("b.example."),
            30,
            RData::Cname(n("a.example.")),
        ));
        assert!(!answers_question(&l));
        let mut c = reply("a.example.", RType::CNAME);
        c.answers.push(Record::new(
            n("a.example."),
            30,
            RData::Cname(n("b.example.")),
        ));
        assert!(answers_question(&c));
    }

    #[test]
    fn ttls() {
        let mut m = reply("a.example.", RType::A);
        m.answers.push(Record::new(
            n("a.example."),
            300,
            RData::A(Ipv4Addr::LOCALHOST),
        ));
        m.additional.push(Record::new(
            n("x.example."),
            20,
            RData::A(Ipv4Addr::LOCALHOST),
        ));
        assert_eq!(minimal_ttl(&m, MsgType::NoError, 3600), 20);
        assert_eq!(minimal_ttl(&m, MsgType::NoError, 10), 10);
        assert_eq!(minimal_ttl(&m, MsgType::Delegation, 3600), 5);
        let mut nx = reply("a.example.", RType::A);
        nx.set_rcode(Rcode::NXDOMAIN);
        nx.authority.push(soa("example.", 3600, 60));
        assert_eq!(minimal_ttl(&nx, MsgType::NameError, 1800), 60);
        assert_eq!(clamp_ttl(0, 5, 3600), 5);
        assert_eq!(clamp_ttl(u32::MAX, 5, 3600), 3600);
        assert_eq!(clamp_ttl(0, 0, 3600), 0);
    }
}
