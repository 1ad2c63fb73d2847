//! RRset signatures (RFC 4034 §3, RFC 4035 §5.3): the canonical form of an RRset — owner and
//! the names inside the data of RFC 4034 §6.2's types lower-cased (not those of NSEC and RRSIG,
//! RFC 6840 §5.1), records sorted by their data and without duplicates — the RRSIG record
//! that signs it, and checking one. No I/O.

use sextant_wire::{Class, Name, RData, RType, Record};

use super::keys::{verify_bytes, SignError, SigningKey};
use crate::wire::rdata_to_wire;

/// The fields of an RRSIG record before the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrsigHead {
    pub type_covered: RType,
    pub algorithm: u8,
    pub labels: u8,
    pub orig_ttl: u32,
    pub expiration: u32,
    pub inception: u32,
    pub key_tag: u16,
    pub signer: Name,
}

impl RrsigHead {
    /// The head of RRSIG record data; None when shorter than one.
    pub fn parse(d: &[u8]) -> Option<(RrsigHead, usize)> {
        let u32_at = |p: usize| Some(u32::from_be_bytes(d.get(p..p + 4)?.try_into().ok()?));
        let (signer, end) = crate::wire::name_at(d, 18)?;
        Some((
            RrsigHead {
                type_covered: RType(u16::from_be_bytes([*d.first()?, *d.get(1)?])),
                algorithm: *d.get(2)?,
                labels: *d.get(3)?,
                orig_ttl: u32_at(4)?,
                expiration: u32_at(8)?,
                inception: u32_at(12)?,
                key_tag: u16::from_be_bytes([*d.get(16)?, *d.get(17)?]),
                signer,
            },
            end,
        ))
    }

    /// The head in wire form (signer in lower case, RFC 4034 §3.1.7).
    pub fn to_wire(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(18 + self.signer.wire_len());
        w.extend_from_slice(&self.type_covered.0.to_be_bytes());
        w.push(self.algorithm);
        w.push(self.labels);
        w.extend_from_slice(&self.orig_ttl.to_be_bytes());
        w.extend_from_slice(&self.expiration.to_be_bytes());
        w.extend_from_slice(&self.inception.to_be_bytes());
        w.extend_from_slice(&self.key_tag.to_be_bytes());
        w.extend_from_slice(self.signer.to_lowercase().wire());
        w
    }
}

/// The RRSIG labels field of `owner`: its labels without the root and a leading `*`.
pub fn rrsig_labels(owner: &Name) -> u8 {
    let n = owner.label_count();
    let wild = owner.labels().next() == Some(&b"*"[..]);
    (n - usize::from(wild)).min(255) as u8
}

/// Lower-cases the uncompressed name at `p` of `d` in place; returns the offset after it.
fn lower_name_at(d: &mut [u8], mut p: usize) -> Option<usize> {
    loop {
        let l = *d.get(p)? as usize;
        if l == 0 {
            return Some(p + 1);
        }
        if l > 63 {
            return None;
        }
        d.get_mut(p + 1..p + 1 + l)?.make_ascii_lowercase();
        p += 1 + l;
    }
}

/// Skips a character-string at `p`.
fn skip_string(d: &[u8], p: usize) -> Option<usize> {
    Some(p + 1 + *d.get(p)? as usize)
}

/// Record data `d` of type `t` in canonical form: the embedded names of RFC 4034 §6.2's list
/// (as amended by RFC 6840 §5.1: not NSEC, not RRSIG) in lower case. Data that does not parse
/// as its type is left as it is.
pub fn canonical_rdata(t: RType, d: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    let _ = lower_names(t.0, &mut d);
    d
}

fn lower_names(t: u16, d: &mut [u8]) -> Option<()> {
    match t {
        // NS MD MF CNAME MB MG MR PTR DNAME
        2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 39 => {
            lower_name_at(d, 0)?;
        }
        // SOA, MINFO, RP: two names
        6 | 14 | 17 => {
            let p = lower_name_at(d, 0)?;
            lower_name_at(d, p)?;
        }
        // MX AFSDB RT KX: preference, name
        15 | 18 | 21 | 36 => {
            lower_name_at(d, 2)?;
        }
        // PX: preference, two names
        26 => {
            let p = lower_name_at(d, 2)?;
            lower_name_at(d, p)?;
        }
        // SRV: priority, weight, port, name
        33 => {
            lower_name_at(d, 6)?;
        }
        // NAPTR: order, preference, flags, services, regexp, replacement
        35 => {
            let mut p = 4;
            for _ in 0..3 {
                p = skip_string(d, p)?;
            }
            lower_name_at(d, p)?;
        }
        // SIG: like RRSIG, the signer name after 18 octets
        24 => {
            lower_name_at(d, 18)?;
        }
        // NXT: next name, bitmap
        30 => {
            lower_name_at(d, 0)?;
        }
        // A6: prefix length, address suffix, prefix name
        38 => {
            let plen = *d.first()? as usize;
            if plen > 0 && plen <= 128 {
                let suffix = (128 - plen).div_ceil(8);
                lower_name_at(d, 1 + suffix)?;
            }
        }
        _ => {}
    }
    Some(())
}

/// The data a signature covers: the RRSIG head, then every record of `rrset` in canonical form
/// (owner lower-cased, or `*.` and the rightmost `labels` labels for a wildcard expansion; the
/// original TTL; data sorted, duplicates dropped).
pub fn signed_data(head: &RrsigHead, rrset: &[Record]) -> Vec<u8> {
    let mut out = head.to_wire();
    let Some(first) = rrset.first() else {
        return out;
    };
    let owner = first.name.to_lowercase();
    let owner_wire: Vec<u8> = if (head.labels as usize) < owner.label_count() {
        let skip = owner.label_count() - head.labels as usize;
        let mut n = owner.clone();
        for _ in 0..skip {
            n = n.parent();
        }
        match n.prepend(b"*") {
            Ok(w) => w.wire().to_vec(),
            Err(_) => owner.wire().to_vec(),
        }
    } else {
        owner.wire().to_vec()
    };
    let mut datas: Vec<Vec<u8>> = rrset
        .iter()
        .map(|r| canonical_rdata(r.rtype, &rdata_to_wire(&r.data)))
        .collect();
    datas.sort();
    datas.dedup();
    for d in &datas {
        out.extend_from_slice(&owner_wire);
        out.extend_from_slice(&first.rtype.0.to_be_bytes());
        out.extend_from_slice(&first.class.0.to_be_bytes());
        out.extend_from_slice(&head.orig_ttl.to_be_bytes());
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// What a signature is made with besides the key: signer (zone) name, the RRSIG record's TTL,
/// the original TTL and the validity period (RFC 1982 serial times).
#[derive(Clone, Debug)]
pub struct SigParams<'a> {
    pub signer: &'a Name,
    pub ttl: u32,
    pub orig_ttl: u32,
    pub inception: u32,
    pub expiration: u32,
}

/// Signs `rrset` (one owner, type and class; not empty) with `key`: the RRSIG record, owned by
/// the RRset's owner.
pub fn sign_rrset(
    key: &SigningKey,
    rrset: &[Record],
    p: &SigParams<'_>,
) -> Result<Record, SignError> {
    let first = rrset.first().ok_or(SignError)?;
    let head = RrsigHead {
        type_covered: first.rtype,
        algorithm: key.algorithm,
        labels: rrsig_labels(&first.name),
        orig_ttl: p.orig_ttl,
        expiration: p.expiration,
        inception: p.inception,
        key_tag: key.tag,
        signer: p.signer.to_lowercase(),
    };
    let data = signed_data(&head, rrset);
    let sig = key.sign_bytes(&data)?;
    let mut rdata = head.to_wire();
    rdata.extend_from_slice(&sig);
    Ok(Record {
        name: first.name.clone(),
        rtype: RType::RRSIG,
        class: first.class,
        ttl: p.ttl,
        data: RData::Unknown(rdata),
    })
}

/// True if `rrsig` is a good signature of `rrset` by the key with DNSKEY data `dnskey` (tag and
/// algorithm match, the signature checks; the validity period is not looked at).
pub fn verify_rrsig(dnskey: &[u8], rrsig: &Record, rrset: &[Record]) -> bool {
    let RData::Unknown(d) = &rrsig.data else {
        return false;
    };
    let Some((head, end)) = RrsigHead::parse(d) else {
        return false;
    };
    if dnskey.get(3) != Some(&head.algorithm) || super::key_tag(dnskey) != head.key_tag {
        return false;
    }
    if rrset
        .iter()
        .any(|r| r.rtype != head.type_covered || r.class != rrsig.class)
    {
        return false;
    }
    let data = signed_data(&head, rrset);
    verify_bytes(dnskey, &data, &d[end..])
}

/// The type an RRSIG record covers (None for another record).
pub fn covered_type(r: &Record) -> Option<RType> {
    match (&r.data, r.rtype) {
        (RData::Unknown(d), RType::RRSIG) if d.len() >= 2 => {
            Some(RType(u16::from_be_bytes([d[0], d[1]])))
        }
        _ => None,
    }
}

/// NSEC record data: the next owner (as given, RFC 6840 §5.1) and the type bitmap of `types`.
pub fn nsec_rdata(next: &Name, types: &[u16]) -> Vec<u8> {
    let mut d = next.wire().to_vec();
    d.extend_from_slice(&crate::type_bitmap(types));
    d
}

/// An NSEC record.
pub fn nsec_record(owner: Name, ttl: u32, next: &Name, types: &[u16]) -> Record {
    Record::unknown(owner, RType::NSEC, Class::IN, ttl, nsec_rdata(next, types))
}
