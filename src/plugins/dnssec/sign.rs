//! Signing a reply the way CoreDNS's `dnssec.Sign` does, with its signature cache, plus the
//! memo of signed wire replies. Time comes from the generation's clock.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use sextant_wire::{Class, Message, Name, RData, RType, Rcode, Record};
use sextant_zone::dnssec::{nsec_record, sign_rrset, RrsigHead, SigParams, SigningKey};

use super::Meter;
use crate::pkg::clock::Clock;
use crate::pkg::shardcache::ShardCache;
use crate::pkg::zones;

/// Original TTL of every signature (CoreDNS cannot see the RRset's own and always uses 3600).
const ORIG_TTL: u32 = 3600;
/// Signatures start 3 hours back and last 8 days.
const INCEPTION_BACK: u32 = 3 * 3600;
const VALIDITY: u32 = 8 * 24 * 3600;
/// A cached signature is made again once it would not be valid in two days (75% of 8 days).
const REFRESH_AHEAD: u32 = 2 * 24 * 3600;

/// Signatures of one RRset, with what they were made for (the cache key is a hash).
pub(crate) struct Sigs {
    key: Box<[u8]>,
    sigs: Vec<Record>,
    /// Inception and expiration of the signatures.
    inception: u32,
    expiration: u32,
}

/// One signed wire reply: the reply as the plugin below sent it and as signed.
pub(crate) struct Signed {
    unsigned: Box<[u8]>,
    signed: Box<[u8]>,
    /// Signatures it holds (cache hits it stands for).
    nsigs: u32,
    inception: u32,
    expiration: u32,
}

/// The zones, keys and caches of one `dnssec` line.
pub(crate) struct Signer {
    pub(crate) zones: Vec<Name>,
    keys: Vec<Arc<SigningKey>>,
    split: bool,
    sigs: ShardCache<Sigs>,
    memo: ShardCache<Signed>,
    hasher: foldhash::fast::RandomState,
    clock: Clock,
}

/// True while signatures made at `inception`..`expiration` are still good two days from `now`
/// (miekg/dns `ValidityPeriod(now + 2 days)`, RFC 1982 arithmetic).
fn fresh(inception: u32, expiration: u32, now: u32) -> bool {
    let t = now.wrapping_add(REFRESH_AHEAD);
    let after = |a: u32, b: u32| a.wrapping_sub(b) as i32 >= 0;
    after(t, inception) && after(expiration, t)
}

/// Response classes of CoreDNS's `response.Typify` that signing tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    NoError,
    NameError,
    NoData,
    Delegation,
    /// NOTIFY, AXFR, IXFR, UPDATE: not signed here.
    Meta,
    Other,
}

pub(crate) fn typify(m: &Message) -> Kind {
    if m.header.opcode == sextant_wire::opcode::NOTIFY
        || m.header.opcode == sextant_wire::opcode::UPDATE
    {
        return Kind::Meta;
    }
    if m.question()
        .is_some_and(|q| q.qtype == RType::AXFR || q.qtype == RType::IXFR)
    {
        return Kind::Meta;
    }
    let rcode = m.rcode();
    if !m.answers.is_empty() {
        return if rcode == Rcode::NOERROR {
            Kind::NoError
        } else {
            Kind::Other
        };
    }
    let soa = m.authority.iter().any(|r| r.rtype == RType::SOA);
    let ns = m.authority.iter().any(|r| r.rtype == RType::NS);
    if soa && rcode == Rcode::NOERROR {
        return Kind::NoData;
    }
    if rcode == Rcode::NXDOMAIN {
        return Kind::NameError;
    }
    if ns && rcode == Rcode::NOERROR {
        return Kind::Delegation;
    }
    if rcode == Rcode::NOERROR {
        return Kind::NoError;
    }
    Kind::Other
}

// Black-lie bitmaps (CoreDNS `black_lies.go`).
const DELEGATION_BITMAP: [u16; 15] = [1, 2, 13, 16, 28, 29, 33, 37, 44, 46, 47, 52, 55, 61, 99];
const ZONE_BITMAP: [u16; 14] = [1, 13, 16, 28, 29, 33, 37, 44, 46, 47, 52, 55, 61, 99];
const APEX_BITMAP: [u16; 18] = [
    1, 2, 6, 13, 15, 16, 28, 29, 33, 37, 44, 46, 47, 48, 52, 55, 61, 99,
];

/// The bitmap without `t` for NODATA and NXDOMAIN (CoreDNS `filter14`/`filter18`), whole
/// otherwise or when `t` is NSEC.
fn filtered(bitmap: &[u16], t: RType, kind: Kind) -> Vec<u16> {
    if (kind != Kind::NoData && kind != Kind::NameError) || t == RType::NSEC {
        return bitmap.to_vec();
    }
    bitmap.iter().copied().filter(|&x| x != t.0).collect()
}

/// Records grouped into RRsets (owner as written, type), in order of first appearance; RRSIG
/// and OPT/TSIG records are left out (not signed).
fn rrsets(rrs: &[Record]) -> Vec<Vec<&Record>> {
    let mut out: Vec<Vec<&Record>> = Vec::new();
    for r in rrs {
        if matches!(r.rtype, RType::RRSIG | RType::OPT) || r.rtype.0 == 250 {
            continue;
        }
        match out
            .iter_mut()
            .find(|s| s[0].rtype == r.rtype && s[0].name.eq_case_sensitive(&r.name))
        {
            Some(s) => s.push(r),
            None => out.push(vec![r]),
        }
    }
    out
}

impl Signer {
    pub(crate) fn new(
        zones: Vec<Name>,
        keys: Vec<Arc<SigningKey>>,
        capacity: i64,
        clock: Clock,
    ) -> Signer {
        let split = keys.iter().any(|k| k.is_ksk()) && keys.iter().any(|k| k.is_zsk());
        Signer {
            zones,
            keys,
            split,
            sigs: ShardCache::new(capacity),
            memo: ShardCache::new(capacity),
            hasher: foldhash::fast::RandomState::default(),
            clock,
        }
    }

    fn now(&self) -> u32 {
        self.clock.unix() as u32
    }

    /// Inception and expiration for signatures made now.
    fn period(&self) -> (u32, u32) {
        let now = self.now();
        (now.wrapping_sub(INCEPTION_BACK), now.wrapping_add(VALIDITY))
    }

    /// The keys that sign an RRset of type `t` (split: KSKs for DNSKEY, ZSKs for the rest).
    fn keys_for(&self, t: RType) -> impl Iterator<Item = &Arc<SigningKey>> {
        let split = self.split;
        self.keys.iter().filter(move |k| {
            !split
                || if t == RType::DNSKEY {
                    k.is_ksk()
                } else {
                    k.is_zsk()
                }
        })
    }

    /// The cache key of an RRset signed by `signer`: the names in lower case, type, class and
    /// every record's data (TTLs left out: the original TTL is fixed and a signature's own TTL
    /// is set on use).
    fn rrset_key(rrset: &[&Record], signer: &Name) -> Vec<u8> {
        let mut k = Vec::with_capacity(64);
        k.extend_from_slice(signer.to_lowercase().wire());
        k.extend_from_slice(rrset[0].name.to_lowercase().wire());
        k.extend_from_slice(&rrset[0].rtype.0.to_be_bytes());
        k.extend_from_slice(&rrset[0].class.0.to_be_bytes());
        for r in rrset {
            let d = sextant_zone::wire::rdata_to_wire(&r.data);
            k.extend_from_slice(&(d.len() as u16).to_be_bytes());
            k.extend_from_slice(&d);
        }
        k
    }

    fn hash(&self, b: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(b);
        h.finish()
    }

    /// The signatures of `rrset` by `signer` with RRSIG TTL `ttl`: from the cache while fresh,
    /// else made and cached (CoreDNS `Dnssec.sign`).
    fn sign(&self, rrset: &[&Record], signer: &Name, ttl: u32, meter: &Meter) -> Vec<Record> {
        let key = Self::rrset_key(rrset, signer);
        let h = self.hash(&key);
        let now = self.now();
        if let Some(c) = self.sigs.get(h) {
            if *c.key == *key && fresh(c.inception, c.expiration, now) {
                meter.hits.inc();
                return c
                    .sigs
                    .iter()
                    .map(|s| {
                        let mut s = s.clone();
                        s.ttl = ttl;
                        s
                    })
                    .collect();
            }
        }
        meter.misses.inc();
        let (inception, expiration) = self.period();
        let owned: Vec<Record> = rrset.iter().map(|r| (*r).clone()).collect();
        let p = SigParams {
            signer,
            ttl,
            orig_ttl: ORIG_TTL,
            inception,
            expiration,
        };
        let sigs: Vec<Record> = self
            .keys_for(owned[0].rtype)
            .filter_map(|k| sign_rrset(k, &owned, &p).ok())
            .collect();
        if !sigs.is_empty() {
            self.sigs.add(
                h,
                Arc::new(Sigs {
                    key: key.into_boxed_slice(),
                    sigs: sigs.clone(),
                    inception,
                    expiration,
                }),
            );
        }
        sigs
    }

    /// The black-lie NSEC for the question and its signatures (signatures first, as CoreDNS
    /// returns them).
    fn nsec(&self, m: &Message, zone: &Name, kind: Kind, ttl: u32, meter: &Meter) -> Vec<Record> {
        let Some(q) = m.question() else {
            return Vec::new();
        };
        let qname = &q.name;
        let next = if qname.is_root() {
            Name::from_labels([&[0u8][..]]).unwrap_or_else(|_| Name::root())
        } else {
            qname.prepend(&[0]).unwrap_or_else(|_| qname.clone())
        };
        let lower = qname.to_lowercase();
        let (bitmap, next) = if lower == *zone {
            (filtered(&APEX_BITMAP, q.qtype, kind), next)
        } else if kind == Kind::Delegation || q.qtype == RType::DS {
            let next = if kind == Kind::Delegation {
                let mut labels: Vec<Vec<u8>> = qname.labels().map(<[u8]>::to_vec).collect();
                if let Some(first) = labels.first_mut() {
                    first.push(0);
                }
                Name::from_labels(labels.iter().map(Vec::as_slice)).unwrap_or(next)
            } else {
                next
            };
            (DELEGATION_BITMAP.to_vec(), next)
        } else {
            (filtered(&ZONE_BITMAP, q.qtype, kind), next)
        };
        let nsec = nsec_record(qname.clone(), ttl, &next, &bitmap);
        let mut out = self.sign(&[&nsec], zone, ttl, meter);
        out.push(nsec);
        out
    }

    /// Signs `m` in place (CoreDNS `Dnssec.Sign`); `zone` is the dnssec zone of its question.
    pub(crate) fn sign_message(&self, m: &mut Message, zone: &Name, meter: &Meter) {
        let kind = typify(m);
        match kind {
            Kind::Meta => {}
            Kind::Delegation => {
                let Some(ttl) = m.authority.first().map(|r| r.ttl) else {
                    return;
                };
                let ds: Vec<&Record> = m
                    .authority
                    .iter()
                    .filter(|r| r.rtype == RType::DS)
                    .collect();
                let add = if ds.is_empty() {
                    self.nsec(m, zone, kind, ttl, meter)
                } else {
                    self.sign(&ds, zone, ttl, meter)
                };
                m.authority.extend(add);
            }
            Kind::NameError | Kind::NoData => {
                if m.authority.len() != 1 || m.authority[0].rtype != RType::SOA {
                    return;
                }
                let ttl = m.authority[0].ttl;
                let soa = [&m.authority[0]];
                let sigs = self.sign(&soa, zone, ttl, meter);
                m.authority.extend(sigs);
                let nsec = self.nsec(m, zone, kind, ttl, meter);
                m.authority.extend(nsec);
                if m.authority.len() > 1 {
                    m.set_rcode(Rcode::NOERROR);
                    if m.question().is_some_and(|q| q.qtype == RType::NSEC) {
                        let n = m.authority.len();
                        m.answers = m.authority[n - 2..].to_vec();
                        m.authority.clear();
                    }
                }
            }
            Kind::NoError | Kind::Other => {
                for section in 0..3 {
                    let rrs = match section {
                        0 => &m.answers,
                        1 => &m.authority,
                        _ => &m.additional,
                    };
                    let mut add = Vec::new();
                    for set in rrsets(rrs) {
                        let Some(signer) = zones::matches(&self.zones, &set[0].name.to_lowercase())
                        else {
                            continue;
                        };
                        add.extend(self.sign(&set, &signer.clone(), set[0].ttl, meter));
                    }
                    match section {
                        0 => m.answers.extend(add),
                        1 => m.authority.extend(add),
                        _ => m.additional.extend(add),
                    }
                }
            }
        }
        meter.entries.set(self.sigs.len() as f64);
    }

    /// A reply a plugin sent as wire bytes (no OPT), signed in place: from the memo while its
    /// signatures are fresh, else decoded, signed and remembered. False (bytes unchanged) if it
    /// does not decode.
    pub(crate) fn sign_wire(&self, bytes: &mut Vec<u8>, zone: &Name, meter: &Meter) -> bool {
        if bytes.len() < 12 {
            return false;
        }
        let h = self.hash(&bytes[2..]);
        if let Some(s) = self.memo.get(h) {
            if s.unsigned[2..] == bytes[2..] && fresh(s.inception, s.expiration, self.now()) {
                meter.hits.inc_by(f64::from(s.nsigs));
                // The client's ID and the signed copy, in a new buffer with room for the OPT
                // record the server appends (growing the old one costs a realloc and a copy).
                let mut out = Vec::with_capacity(s.signed.len() + 64);
                out.extend_from_slice(&bytes[0..2]);
                out.extend_from_slice(&s.signed[2..]);
                *bytes = out;
                return true;
            }
        }
        let Some(signed) = self.sign_new(bytes, h, zone, meter) else {
            return false;
        };
        *bytes = signed;
        true
    }

    /// The miss of [`Signer::sign_wire`]: decode, sign, remember.
    fn sign_new(&self, unsigned: &[u8], h: u64, zone: &Name, meter: &Meter) -> Option<Vec<u8>> {
        let mut m = Message::parse(unsigned).ok()?;
        if m.edns.is_some() {
            return None;
        }
        let zone = m
            .question()
            .and_then(|q| zones::matches(&self.zones, &q.name.to_lowercase()).cloned())
            .unwrap_or_else(|| zone.clone());
        let (inception, expiration) = self.period();
        self.sign_message(&mut m, &zone, meter);
        let all = m.answers.iter().chain(&m.authority).chain(&m.additional);
        let mut nsigs = 0u32;
        let (mut lo, mut hi) = (inception, expiration);
        for r in all.filter(|r| r.rtype == RType::RRSIG) {
            nsigs += 1;
            if let RData::Unknown(d) = &r.data {
                if let Some((hd, _)) = RrsigHead::parse(d) {
                    // The oldest signature decides when the whole reply is refreshed.
                    if hd.expiration.wrapping_sub(hi) as i32 <= 0 {
                        hi = hd.expiration;
                        lo = hd.inception;
                    }
                }
            }
        }
        let signed = m.to_wire();
        self.memo.add(
            h,
            Arc::new(Signed {
                unsigned: unsigned.into(),
                signed: signed.clone().into_boxed_slice(),
                nsigs,
                inception: lo,
                expiration: hi,
            }),
        );
        Some(signed)
    }

    /// The answer to DNSKEY at a zone apex: the keys, owned by the zone, signed with DO
    /// (CoreDNS `getDNSKEY`: RRSIG TTL 3600).
    pub(crate) fn dnskey_reply(
        &self,
        mut m: Message,
        zone: &Name,
        do_bit: bool,
        meter: &Meter,
    ) -> Message {
        m.header.aa = true;
        let keys: Vec<Record> = self
            .keys
            .iter()
            .map(|k| {
                Record::unknown(
                    zone.clone(),
                    RType::DNSKEY,
                    Class::IN,
                    k.dnskey.ttl,
                    k.rdata.clone(),
                )
            })
            .collect();
        m.answers = keys;
        if do_bit {
            let refs: Vec<&Record> = m.answers.iter().collect();
            let sigs = self.sign(&refs, zone, 3600, meter);
            m.answers.extend(sigs);
            meter.entries.set(self.sigs.len() as f64);
        }
        m
    }

    /// Drops cached signatures past 75% of their validity (CoreDNS `periodicClean`).
    pub(crate) fn sweep(&self) {
        let now = self.now();
        self.sigs
            .remove_if(|s| !fresh(s.inception, s.expiration, now));
        self.memo
            .remove_if(|s| !fresh(s.inception, s.expiration, now));
    }

    /// Cached signature sets (the `coredns_dnssec_cache_entries` gauge).
    #[cfg(test)]
    pub(crate) fn cached(&self) -> usize {
        self.sigs.len()
    }
}
