//! Offline signing of a whole zone (what the `sign` plugin writes to `db.<zone>.signed`): the
//! keys' DNSKEY, CDS (SHA-1 and SHA-256) and CDNSKEY records added at the apex, the SOA serial
//! set, an NSEC chain over the authoritative names and an RRSIG for every authoritative RRset,
//! with every key (CSK) or, when the keys hold both KSKs and ZSKs, the DNSKEY RRset with the KSKs
//! and the rest with the ZSKs. Delegation points get their NSEC and a signed DS; NS records at
//! a cut and names below it (glue) are not signed. No I/O.

use std::collections::HashMap;

use sextant_wire::{Class, Name, RData, RType, Record};

use super::keys::{ds_rdata, SigningKey};
use super::sign::{nsec_record, sign_rrset, SigParams};

/// How a zone is signed.
#[derive(Clone, Copy, Debug)]
pub struct ZoneSigning<'a> {
    pub keys: &'a [&'a SigningKey],
    /// RRSIG inception and expiration (seconds since 1970, RFC 1982 arithmetic).
    pub inception: u32,
    pub expiration: u32,
    /// The SOA serial of the signed zone.
    pub serial: u32,
}

/// True when the keys split into KSKs (DNSKEY RRset) and ZSKs (everything else).
pub fn split_keys(keys: &[&SigningKey]) -> bool {
    keys.iter().any(|k| k.is_ksk()) && keys.iter().any(|k| k.is_zsk())
}

/// The keys that sign RRsets of type `t`: all of them, or with a KSK/ZSK split the KSKs for
/// DNSKEY and the ZSKs for the rest (CoreDNS `dnssec`'s rule).
pub fn keys_for<'k>(keys: &[&'k SigningKey], t: RType) -> Vec<&'k SigningKey> {
    let split = split_keys(keys);
    keys.iter()
        .copied()
        .filter(|k| !split || (t == RType::DNSKEY) == k.is_ksk())
        .collect()
}

/// One owner name while signing: its records by type, in first-seen order.
struct Node {
    sets: Vec<(RType, Vec<Record>)>,
}

impl Node {
    fn push(&mut self, r: Record) {
        match self.sets.iter_mut().find(|(t, _)| *t == r.rtype) {
            Some((_, v)) => {
                if !v.iter().any(|x| x.data == r.data) {
                    v.push(r)
                }
            }
            None => self.sets.push((r.rtype, vec![r])),
        }
    }

    fn has(&self, t: RType) -> bool {
        self.sets.iter().any(|(x, _)| *x == t)
    }
}

/// Signs the zone at `origin` made of `records` (which hold no DNSKEY, RRSIG, CDS or CDNSKEY;
/// exactly one SOA at the apex): returns the signed zone's records in the order they are
/// written — the SOA and its signatures, the apex NS and theirs, then every name in canonical
/// order with its RRsets, each followed by its signatures.
pub fn sign_zone(
    records: Vec<Record>,
    origin: &Name,
    p: &ZoneSigning<'_>,
) -> Result<Vec<Record>, String> {
    let origin = origin.to_lowercase();
    let mut soa: Option<Record> = None;
    let mut nodes: HashMap<Name, Node> = HashMap::new();
    for mut r in records {
        if !r.name.is_subdomain_of(&origin) {
            return Err(format!("record {r} is not in zone {origin}"));
        }
        r.name.make_lowercase();
        if r.rtype == RType::SOA {
            if r.name != origin {
                return Err(format!("SOA record {r} is not at the apex {origin}"));
            }
            soa = Some(r);
            continue;
        }
        nodes
            .entry(r.name.clone())
            .or_insert_with(|| Node { sets: Vec::new() })
            .push(r);
    }
    let Some(mut soa) = soa else {
        return Err(format!("no SOA record for {origin}"));
    };
    let (soa_ttl, minimum) = match &mut soa.data {
        RData::Soa(s) => {
            s.serial = p.serial;
            (soa.ttl, s.minimum)
        }
        _ => return Err("SOA record without SOA data".to_string()),
    };
    let apex = nodes
        .entry(origin.clone())
        .or_insert_with(|| Node { sets: Vec::new() });
    let split = split_keys(p.keys);
    for k in p.keys {
        apex.push(Record::unknown(
            origin.clone(),
            RType::DNSKEY,
            Class::IN,
            soa_ttl,
            k.rdata.clone(),
        ));
    }
    for k in p.keys.iter().filter(|k| !split || k.is_ksk()) {
        for digest in [1u8, 2] {
            if let Some(ds) = ds_rdata(&origin, &k.rdata, digest) {
                apex.push(Record::unknown(
                    origin.clone(),
                    RType(59),
                    Class::IN,
                    soa_ttl,
                    ds,
                ));
            }
        }
        apex.push(Record::unknown(
            origin.clone(),
            RType(60),
            Class::IN,
            soa_ttl,
            k.rdata.clone(),
        ));
    }
    // Canonical order, then which names are authoritative: delegation points are (they hold
    // the NSEC and DS), names below one are not.
    let mut names: Vec<Name> = nodes.keys().cloned().collect();
    names.sort_by(|a, b| crate::zone::canonical_cmp(a.wire(), b.wire()));
    let mut cuts: Vec<Name> = Vec::new();
    let mut auth: Vec<Name> = Vec::new();
    for n in &names {
        if cuts.iter().any(|c| n != c && n.is_subdomain_of(c)) {
            continue;
        }
        if n != &origin && nodes[n].has(RType::NS) {
            cuts.push(n.clone());
        }
        auth.push(n.clone());
    }
    let sign = |rrset: &[Record], out: &mut Vec<Record>| -> Result<(), String> {
        let t = rrset[0].rtype;
        for k in keys_for(p.keys, t) {
            let params = SigParams {
                signer: &origin,
                ttl: rrset[0].ttl,
                orig_ttl: rrset[0].ttl,
                inception: p.inception,
                expiration: p.expiration,
            };
            let sig = sign_rrset(k, rrset, &params)
                .map_err(|e| format!("signing {} {t}: {e}", rrset[0].name))?;
            out.push(sig);
        }
        Ok(())
    };
    let mut out: Vec<Record> = Vec::new();
    out.push(soa.clone());
    sign(std::slice::from_ref(&soa), &mut out)?;
    let apex_ns: Vec<Record> = nodes[&origin]
        .sets
        .iter()
        .find(|(t, _)| *t == RType::NS)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if !apex_ns.is_empty() {
        out.extend(apex_ns.iter().cloned());
        sign(&apex_ns, &mut out)?;
    }
    let auth_pos: HashMap<&Name, usize> = auth.iter().enumerate().map(|(i, n)| (n, i)).collect();
    for n in &names {
        let node = &nodes[n];
        let pos = auth_pos.get(n).copied();
        let is_auth = pos.is_some();
        let is_cut = cuts.contains(n);
        for (t, rrs) in &node.sets {
            if n == &origin && *t == RType::NS {
                continue; // written above
            }
            out.extend(rrs.iter().cloned());
            if is_auth && (!is_cut || *t == RType::DS) {
                sign(rrs, &mut out)?;
            }
        }
        if let Some(pos) = pos {
            let next = &auth[(pos + 1) % auth.len()];
            let mut types: Vec<u16> = node
                .sets
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| !is_cut || *t == RType::NS || *t == RType::DS)
                .map(|t| t.0)
                .collect();
            if n == &origin {
                types.push(RType::SOA.0);
            }
            types.push(RType::NSEC.0);
            types.push(RType::RRSIG.0);
            let nsec = [nsec_record(n.clone(), minimum, next, &types)];
            out.push(nsec[0].clone());
            sign(&nsec, &mut out)?;
        }
    }
    Ok(out)
}
