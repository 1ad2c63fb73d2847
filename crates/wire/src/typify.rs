//! CoreDNS's `response.Typify` classes of a reply and `dnsutil.MinimalTTLWithMaximum`: how
//! long a reply may be kept (the cache, DoH's `Cache-Control`). Pure functions over `Message`.

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
    if m.header.opcode == opcode::UPDATE {
        return MsgType::Update;
    }
    if m.header.opcode == opcode::NOTIFY {
        return MsgType::Meta;
    }
    if let Some(q) = m.question() {
        if q.qtype == RType::AXFR || q.qtype == RType::IXFR {
            return MsgType::Meta;
        }
    }
    let rcode = m.rcode();
    if !m.answers.is_empty() && rcode == Rcode::NOERROR {
        return MsgType::NoError;
    }
    if !m.answers.is_empty() && rcode == Rcode::NXDOMAIN {
        return MsgType::OtherError;
    }
    let soa = has_soa(m);
    let ns = m.authority.iter().filter(|r| r.rtype == RType::NS).count();
    if soa && rcode == Rcode::NOERROR {
        return MsgType::NoData;
    }
    if rcode == Rcode::NXDOMAIN {
        return MsgType::NameError;
    }
    if rcode == Rcode::SERVFAIL || rcode == Rcode::NOTIMP {
        return MsgType::ServerError;
    }
    if ns > 0 && rcode == Rcode::NOERROR {
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
