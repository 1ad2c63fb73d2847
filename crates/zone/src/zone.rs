//! The in-memory zone: apex records apart (SOA, NS and their signatures, as CoreDNS keeps
//! them), every other name a node in canonical order with a hash index over it, each RRset
//! kept as encoded record tails. [`Zone::lookup`] is CoreDNS 1.14.7's `file` lookup
//! (`plugin/file/lookup.go`) on this store; [`Zone::fast_reply`] encodes the common positive
//! answer straight from the stored bytes.

use std::cmp::Ordering;
use std::collections::HashMap;

use sextant_wire::{Class, Name, RData, RType, Record};

use crate::wire::{rdata_from_wire, rdata_to_wire};

/// Result of a lookup (CoreDNS `file.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Res {
    Success,
    NameError,
    Delegation,
    NoData,
    ServerFailure,
}

/// A name the zone cannot answer itself (a CNAME target outside it, or a missing name inside
/// it): the caller resolves `target`/`qtype` through the whole server and finishes with
/// [`Zone::finish_external`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    pub target: Name,
    pub qtype: RType,
    /// DNAME records (with signatures) that go in front of the answer.
    pub prefix: Vec<Record>,
}

/// What a lookup found: the three sections, the result, and maybe a name to resolve outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub answer: Vec<Record>,
    pub ns: Vec<Record>,
    pub extra: Vec<Record>,
    pub result: Res,
    pub external: Option<External>,
}

impl Lookup {
    fn new(answer: Vec<Record>, ns: Vec<Record>, extra: Vec<Record>, result: Res) -> Lookup {
        Lookup {
            answer,
            ns,
            extra,
            result,
            external: None,
        }
    }

    fn fail() -> Lookup {
        Lookup::new(Vec::new(), Vec::new(), Vec::new(), Res::ServerFailure)
    }
}

/// Why a record was not taken into a zone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("record {0} is not in zone {1}")]
    OutOfZone(String, String),
    #[error("record data of {0} is longer than 65535 octets")]
    TooLong(String),
}

/// One RRset, as stored in its node: its type, the owner spelling if it differs from the
/// node's (SRV owners keep their case in CoreDNS), in wire form, and its records as
/// `type class ttl rdlen rdata` tails.
#[derive(Clone, Copy, Debug)]
struct Set<'a> {
    rtype: RType,
    owner: Option<&'a [u8]>,
    tails: &'a [u8],
}

const F_CUT: u8 = 1;
const F_BELOW_CUT: u8 = 2;
const F_DNAME_ABOVE: u8 = 4;
const F_CNAME: u8 = 8;

/// One owner name and its RRsets, packed into one allocation (a zone holds one node per name,
/// and one allocation per name, per RRset and per RRset's data made most of a large zone's
/// memory): the name's length and wire form, then per RRset its type (2 bytes), the length (1
/// byte, 0 for none) and wire form of its own owner spelling, the length of its tails (4 bytes)
/// and the tails.
#[derive(Clone, Debug)]
struct Node {
    blob: Box<[u8]>,
    flags: u8,
}

fn tails_iter(t: &[u8]) -> impl Iterator<Item = (RType, Class, u32, &[u8])> {
    let mut p = 0;
    std::iter::from_fn(move || {
        let h = t.get(p..p + 10)?;
        let rtype = RType(u16::from_be_bytes([h[0], h[1]]));
        let class = Class(u16::from_be_bytes([h[2], h[3]]));
        let ttl = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = u16::from_be_bytes([h[8], h[9]]) as usize;
        let d = t.get(p + 10..p + 10 + len)?;
        p += 10 + len;
        Some((rtype, class, ttl, d))
    })
}

/// A name stored in a node (checked when it was inserted).
fn stored_name(w: &[u8]) -> Name {
    Name::from_wire(w).unwrap_or_else(|_| Name::root())
}

impl Set<'_> {
    fn records(&self, owner: &Name) -> Vec<Record> {
        tails_iter(self.tails)
            .map(|(rtype, class, ttl, d)| Record {
                name: owner.clone(),
                rtype,
                class,
                ttl,
                data: rdata_from_wire(rtype, d).unwrap_or_else(|| RData::Unknown(d.to_vec())),
            })
            .collect()
    }

    fn len(&self) -> usize {
        tails_iter(self.tails).count()
    }
}

impl Node {
    /// Packs `name` and its `(type, owner spelling, tails)` sets (see [`Node`]).
    fn new(name: &Name, sets: &[(RType, Option<Name>, Vec<u8>)]) -> Node {
        let size = 1
            + name.wire_len()
            + sets
                .iter()
                .map(|(_, o, t)| 7 + o.as_ref().map_or(0, Name::wire_len) + t.len())
                .sum::<usize>();
        let mut b = Vec::with_capacity(size);
        // Names are at most 255 octets; tails at most 65535 records of 65545 octets each.
        b.push(name.wire_len() as u8);
        b.extend_from_slice(name.wire());
        for (t, o, tails) in sets {
            b.extend_from_slice(&t.0.to_be_bytes());
            match o {
                Some(o) => {
                    b.push(o.wire_len() as u8);
                    b.extend_from_slice(o.wire());
                }
                None => b.push(0),
            }
            b.extend_from_slice(&(tails.len() as u32).to_be_bytes());
            b.extend_from_slice(tails);
        }
        Node {
            blob: b.into_boxed_slice(),
            flags: 0,
        }
    }

    /// The owner name in wire form.
    fn name_wire(&self) -> &[u8] {
        let b = &self.blob;
        b.get(1..1 + *b.first().unwrap_or(&0) as usize)
            .unwrap_or(&[0])
    }

    fn name(&self) -> Name {
        stored_name(self.name_wire())
    }

    fn is_named(&self, name: &Name) -> bool {
        self.name_wire().eq_ignore_ascii_case(name.wire())
    }

    /// The RRsets, in insertion order.
    fn sets(&self) -> impl Iterator<Item = Set<'_>> {
        let b = &self.blob[..];
        let mut p = 1 + self.name_wire().len();
        std::iter::from_fn(move || {
            let h = b.get(p..p + 3)?;
            let rtype = RType(u16::from_be_bytes([h[0], h[1]]));
            let ol = h[2] as usize;
            let owner = if ol == 0 {
                None
            } else {
                Some(b.get(p + 3..p + 3 + ol)?)
            };
            let q = p + 3 + ol;
            let l = b.get(q..q + 4)?;
            let tl = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
            let tails = b.get(q + 4..q + 4 + tl)?;
            p = q + 4 + tl;
            Some(Set {
                rtype,
                owner,
                tails,
            })
        })
    }

    fn set(&self, t: RType) -> Option<Set<'_>> {
        self.sets().find(|s| s.rtype == t)
    }

    /// The owner a set's records carry: its own spelling, else the node's name.
    fn owner_of(&self, s: &Set<'_>) -> Name {
        s.owner.map(stored_name).unwrap_or_else(|| self.name())
    }

    /// The records of type `t` with their stored owner (CoreDNS `Elem.Type`).
    fn rrs(&self, t: RType) -> Vec<Record> {
        match self.set(t) {
            Some(s) => s.records(&self.owner_of(&s)),
            None => Vec::new(),
        }
    }

    /// The records of type `t` owned by `qname` (CoreDNS `Elem.TypeForWildcard`).
    fn rrs_as(&self, t: RType, qname: &Name) -> Vec<Record> {
        self.set(t).map(|s| s.records(qname)).unwrap_or_default()
    }

    /// Signatures covering `covered` (CoreDNS `rrutil.SubTypeSignature`).
    fn sigs(&self, covered: RType, owner: Option<&Name>) -> Vec<Record> {
        let mut v = match owner {
            Some(o) => self.rrs_as(RType::RRSIG, o),
            None => self.rrs(RType::RRSIG),
        };
        v.retain(|r| sig_covers(r, covered));
        v
    }

    /// `typeFromElem`: records of `t` and, with DO, their signatures.
    fn with_sigs(&self, t: RType, dnssec: bool) -> Vec<Record> {
        let mut v = self.rrs(t);
        if dnssec {
            v.extend(self.sigs(t, None));
        }
        v
    }

    /// Every record of the node (CoreDNS `Elem.All`), sets in insertion order.
    fn all(&self) -> Vec<Record> {
        self.sets()
            .flat_map(|s| s.records(&self.owner_of(&s)))
            .collect()
    }
}

fn sig_covers(r: &Record, covered: RType) -> bool {
    r.rtype == RType::RRSIG
        && matches!(&r.data, RData::Unknown(d) if d.len() >= 2 && u16::from_be_bytes([d[0], d[1]]) == covered.0)
}

/// Canonical order of two names in wire form (RFC 4034 §6.1): labels compared from the right,
/// case-insensitively, a shorter label before a longer one it prefixes.
pub(crate) fn canonical_cmp(a: &[u8], b: &[u8]) -> Ordering {
    fn offsets(w: &[u8], out: &mut [u8; 128]) -> usize {
        let (mut p, mut n) = (0usize, 0usize);
        while p < w.len() && w[p] != 0 && n < 128 {
            out[n] = p as u8;
            n += 1;
            p += 1 + w[p] as usize;
        }
        n
    }
    let (mut oa, mut ob) = ([0u8; 128], [0u8; 128]);
    let (na, nb) = (offsets(a, &mut oa), offsets(b, &mut ob));
    for k in 1..=na.min(nb) {
        let pa = oa[na - k] as usize;
        let pb = ob[nb - k] as usize;
        let la = &a[pa + 1..pa + 1 + a[pa] as usize];
        let lb = &b[pb + 1..pb + 1 + b[pb] as usize];
        let o = la
            .iter()
            .map(u8::to_ascii_lowercase)
            .cmp(lb.iter().map(u8::to_ascii_lowercase));
        if o != Ordering::Equal {
            return o;
        }
    }
    na.cmp(&nb)
}

fn hash_name(w: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in w {
        h ^= b.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^ (h >> 29)
}

/// True if serial `a` is older than `b` (RFC 1982).
pub fn serial_less(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// An immutable zone (CoreDNS `file.Zone` data: apex and tree).
#[derive(Clone, Debug)]
pub struct Zone {
    origin: Name,
    soa: Option<Record>,
    sig_soa: Vec<Record>,
    ns: Vec<Record>,
    sig_ns: Vec<Record>,
    nodes: Vec<Node>,
    /// Open addressing over `nodes`: 0 empty, else index + 1.
    index: Vec<u32>,
    /// Apex NS records as `type class ttl rdlen rdata` tails (the authority of positive answers).
    ns_tails: Vec<u8>,
    ns_count: u16,
    /// The zone holds RRSIG records (answers with DO differ from those without).
    signed: bool,
}

/// Collects records into a [`Zone`] the way CoreDNS's `Zone.Insert` files them.
pub struct Builder {
    origin: Name,
    soa: Option<Record>,
    sig_soa: Vec<Record>,
    ns: Vec<Record>,
    sig_ns: Vec<Record>,
    nodes: HashMap<Name, NodeBuf>,
}

/// A node while building: its first owner spelling and (type, owner spelling, tails) sets.
type NodeBuf = (Name, Vec<(RType, Option<Name>, Vec<u8>)>);

fn push_tail(buf: &mut Vec<u8>, r: &Record) {
    let d = rdata_to_wire(&r.data);
    buf.extend_from_slice(&r.rtype.0.to_be_bytes());
    buf.extend_from_slice(&r.class.0.to_be_bytes());
    buf.extend_from_slice(&r.ttl.to_be_bytes());
    buf.extend_from_slice(&(d.len().min(u16::MAX as usize) as u16).to_be_bytes());
    buf.extend_from_slice(&d);
}

/// Lower-cases the first name in SVCB/HTTPS data (after the priority).
fn lower_svcb_target(d: &mut [u8]) {
    let mut p = 2;
    while p < d.len() && d[p] != 0 {
        let l = d[p] as usize;
        let end = (p + 1 + l).min(d.len());
        d[p + 1..end].make_ascii_lowercase();
        p += 1 + l;
    }
}

impl Builder {
    /// A builder for the zone at `origin`.
    pub fn new(origin: &Name) -> Builder {
        Builder {
            origin: origin.to_lowercase(),
            soa: None,
            sig_soa: Vec::new(),
            ns: Vec::new(),
            sig_ns: Vec::new(),
            nodes: HashMap::new(),
        }
    }

    /// The zone's origin.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// True once an SOA was inserted.
    pub fn has_soa(&self) -> bool {
        self.soa.is_some()
    }

    /// Files `r` like CoreDNS `Zone.Insert`: owners lower-cased (except SRV), the apex SOA, NS
    /// and their signatures apart, targets of NS, CNAME, MX, SVCB and HTTPS lower-cased.
    /// Records outside the zone are an error (CoreDNS keeps them unreachable; see the README).
    pub fn insert(&mut self, mut r: Record) -> Result<(), InsertError> {
        if !r.name.is_subdomain_of(&self.origin) {
            return Err(InsertError::OutOfZone(
                r.to_string(),
                self.origin.to_string(),
            ));
        }
        if r.data.wire_len() > u16::MAX as usize {
            return Err(InsertError::TooLong(r.name.to_string()));
        }
        if r.rtype != RType::SRV {
            r.name.make_lowercase();
        }
        match &mut r.data {
            RData::Ns(n) | RData::Cname(n) => n.make_lowercase(),
            RData::Mx { exchange, .. } => exchange.make_lowercase(),
            RData::Soa(s) => {
                s.mname.make_lowercase();
                s.rname.make_lowercase();
            }
            RData::Unknown(d) if r.rtype == RType::SVCB || r.rtype == RType::HTTPS => {
                lower_svcb_target(d)
            }
            _ => {}
        }
        match r.rtype {
            RType::NS if r.name == self.origin => {
                self.ns.push(r);
                return Ok(());
            }
            RType::SOA => {
                self.soa = Some(r);
                return Ok(());
            }
            RType::RRSIG => {
                if let RData::Unknown(d) = &r.data {
                    if d.len() >= 2 {
                        let covered = RType(u16::from_be_bytes([d[0], d[1]]));
                        if covered == RType::SOA {
                            self.sig_soa.push(r);
                            return Ok(());
                        }
                        if covered == RType::NS && r.name == self.origin {
                            self.sig_ns.push(r);
                            return Ok(());
                        }
                    }
                }
            }
            _ => {}
        }
        let key = r.name.to_lowercase();
        let node = self
            .nodes
            .entry(key)
            .or_insert_with(|| (r.name.clone(), Vec::new()));
        match node.1.iter_mut().find(|(t, _, _)| *t == r.rtype) {
            Some((_, _, buf)) => push_tail(buf, &r),
            None => {
                let owner = (!r.name.eq_case_sensitive(&node.0)).then(|| r.name.clone());
                let mut buf = Vec::new();
                push_tail(&mut buf, &r);
                node.1.push((r.rtype, owner, buf));
            }
        }
        Ok(())
    }

    /// The finished zone.
    pub fn build(self) -> Zone {
        let origin = self.origin;
        let mut nodes: Vec<Node> = self
            .nodes
            .into_values()
            .map(|(name, sets)| Node::new(&name, &sets))
            .collect();
        nodes.sort_by(|a, b| canonical_cmp(a.name_wire(), b.name_wire()));
        let mut z = Zone {
            origin,
            soa: self.soa,
            sig_soa: self.sig_soa,
            ns: self.ns,
            sig_ns: self.sig_ns,
            nodes,
            index: Vec::new(),
            ns_tails: Vec::new(),
            ns_count: 0,
            signed: false,
        };
        z.signed = !z.sig_soa.is_empty()
            || !z.sig_ns.is_empty()
            || z.nodes.iter().any(|n| n.set(RType::RRSIG).is_some());
        let size = (z.nodes.len() * 2).next_power_of_two().max(16);
        z.index = vec![0; size];
        for i in 0..z.nodes.len() {
            let mut slot = hash_name(z.nodes[i].name_wire()) as usize & (size - 1);
            while z.index[slot] != 0 {
                slot = (slot + 1) & (size - 1);
            }
            z.index[slot] = i as u32 + 1;
        }
        // Flags: zone cuts, names below a cut or a DNAME, CNAME owners.
        let mut flags = vec![0u8; z.nodes.len()];
        for (i, n) in z.nodes.iter().enumerate() {
            let mut f = 0;
            if n.set(RType::NS).is_some() && !n.is_named(&z.origin) {
                f |= F_CUT;
            }
            if n.set(RType::CNAME).is_some() {
                f |= F_CNAME;
            }
            let mut a = n.name();
            while a != z.origin && !a.is_root() {
                a = a.parent();
                if let Some(p) = z.search(&a) {
                    if p.set(RType::DNAME).is_some() {
                        f |= F_DNAME_ABOVE;
                    }
                    if a != z.origin && p.set(RType::NS).is_some() {
                        f |= F_BELOW_CUT;
                    }
                }
            }
            flags[i] = f;
        }
        for (n, f) in z.nodes.iter_mut().zip(flags) {
            n.flags = f;
        }
        for r in &z.ns {
            push_tail(&mut z.ns_tails, r);
            z.ns_count += 1;
        }
        z
    }
}

impl Zone {
    /// Parses zone text into a zone (CoreDNS `file.Parse`): every record inserted, an SOA
    /// required.
    pub fn parse(
        text: &str,
        origin: &Name,
        file: &str,
        include: Option<crate::IncludeLoader<'_>>,
    ) -> Result<Zone, crate::ZoneError> {
        let mut b = Builder::new(origin);
        crate::parse_zone(text, origin, file, include, &mut |r| {
            b.insert(r).map_err(|e| e.to_string())
        })?;
        if !b.has_soa() {
            return Err(crate::ZoneError {
                file: file.to_string(),
                line: 0,
                col: 0,
                msg: format!("file {file:?} has no SOA record for origin {origin}"),
            });
        }
        Ok(b.build())
    }

    /// True when the zone holds RRSIG records: an answer with DO then carries signatures and
    /// the same answer without DO does not. An unsigned zone answers both alike.
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// The zone's origin (lower-case).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The apex SOA record.
    pub fn soa(&self) -> Option<&Record> {
        self.soa.as_ref()
    }

    /// The SOA serial, if there is an SOA.
    pub fn serial(&self) -> Option<u32> {
        match self.soa.as_ref().map(|r| &r.data) {
            Some(RData::Soa(s)) => Some(s.serial),
            _ => None,
        }
    }

    /// Number of owner names below the apex records (tree elements).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the tree holds no names.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn find(&self, w: &[u8]) -> Option<usize> {
        let mask = self.index.len().checked_sub(1)?;
        let mut slot = hash_name(w) as usize & mask;
        loop {
            let v = self.index[slot];
            if v == 0 {
                return None;
            }
            let i = v as usize - 1;
            if self.nodes[i].name_wire().eq_ignore_ascii_case(w) {
                return Some(i);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn search(&self, name: &Name) -> Option<&Node> {
        self.find(name.wire()).map(|i| &self.nodes[i])
    }

    /// Largest name ≤ `name` (CoreDNS `Tree.Prev`).
    fn prev(&self, name: &Name) -> Option<&Node> {
        let i = self
            .nodes
            .partition_point(|n| canonical_cmp(n.name_wire(), name.wire()) != Ordering::Greater);
        i.checked_sub(1).map(|i| &self.nodes[i])
    }

    /// Smallest name ≥ `name` (CoreDNS `Tree.Next`).
    fn next(&self, name: &Name) -> Option<&Node> {
        let i = self
            .nodes
            .partition_point(|n| canonical_cmp(n.name_wire(), name.wire()) == Ordering::Less);
        self.nodes.get(i)
    }

    /// A name strictly below `name` exists (CoreDNS `hasDescendant`).
    fn has_descendant(&self, name: &Name) -> bool {
        match self.next(name) {
            Some(x) => !x.is_named(name) && x.name().is_subdomain_of(name),
            None => false,
        }
    }

    fn soa_rrs(&self, dnssec: bool) -> Vec<Record> {
        let mut v: Vec<Record> = self.soa.iter().cloned().collect();
        if dnssec {
            v.extend(self.sig_soa.iter().cloned());
        }
        v
    }

    fn ns_rrs(&self, dnssec: bool) -> Vec<Record> {
        let mut v = self.ns.clone();
        if dnssec {
            v.extend(self.sig_ns.iter().cloned());
        }
        v
    }

    /// The authority section for `result`: the SOA for negative answers, else the NS.
    fn authority(&self, dnssec: bool, result: Res) -> Vec<Record> {
        if result == Res::NameError || result == Res::NoData {
            self.soa_rrs(dnssec)
        } else {
            self.ns_rrs(dnssec)
        }
    }

    /// Address records of in-bailiwick NS targets (CoreDNS `Tree.Glue`).
    fn glue(&self, ns: &[Record], dnssec: bool) -> Vec<Record> {
        let mut out = Vec::new();
        for r in ns {
            if let RData::Ns(target) = &r.data {
                if target.is_subdomain_of(&r.name) {
                    if let Some(e) = self.search(target) {
                        out.extend(e.with_sigs(RType::A, dnssec));
                        out.extend(e.with_sigs(RType::AAAA, dnssec));
                    }
                }
            }
        }
        out
    }

    /// The last `origin + i` labels of `qname`, or None when that overshoots it.
    fn name_from_right(&self, qname: &Name, i: usize) -> Option<Name> {
        if i == 0 {
            return Some(self.origin.clone());
        }
        let want = self.origin.label_count() + i;
        let have = qname.label_count();
        if want > have {
            return None;
        }
        let mut n = qname.clone();
        for _ in 0..have - want {
            n = n.parent();
        }
        Some(n)
    }

    fn delegation_from(
        &self,
        elem: &Node,
        qname: &Name,
        qtype: RType,
        dnssec: bool,
    ) -> Option<(Vec<Record>, Vec<Record>)> {
        let mut ns = elem.rrs(RType::NS);
        if ns.is_empty() || (qtype == RType::DS && elem.is_named(qname)) {
            return None;
        }
        let extra = self.glue(&ns, dnssec);
        if dnssec {
            ns.extend(elem.with_sigs(RType::DS, true));
        }
        Some((ns, extra))
    }

    fn find_delegation(
        &self,
        qname: &Name,
        qtype: RType,
        dnssec: bool,
        exact: Option<&Node>,
    ) -> Option<(Vec<Record>, Vec<Record>)> {
        let mut i = 1;
        loop {
            let name = self.name_from_right(qname, i)?;
            if name == *qname {
                return exact.and_then(|e| self.delegation_from(e, qname, qtype, dnssec));
            }
            if let Some(e) = self.search(&name) {
                if let Some(d) = self.delegation_from(e, qname, qtype, dnssec) {
                    return Some(d);
                }
            }
            i += 1;
        }
    }

    /// A and AAAA records (and signatures) of in-zone SRV, MX, SVCB and HTTPS targets.
    fn additional(&self, answer: &[Record], dnssec: bool) -> Vec<Record> {
        let mut seen: Vec<Name> = Vec::new();
        let mut extra = Vec::new();
        for r in answer {
            let target = match (&r.data, r.rtype) {
                (RData::Srv(s), _) => Some(s.target.clone()),
                (RData::Mx { exchange, .. }, _) => Some(exchange.clone()),
                (RData::Unknown(d), RType::SVCB | RType::HTTPS) => {
                    crate::wire::name_at(d, 2).map(|(n, _)| n)
                }
                _ => None,
            };
            let Some(t) = target else { continue };
            if t.is_root() || !t.is_subdomain_of(&self.origin) || seen.contains(&t) {
                continue;
            }
            seen.push(t.clone());
            if let Some(e) = self.search(&t) {
                extra.extend(e.with_sigs(RType::A, dnssec));
                extra.extend(e.with_sigs(RType::AAAA, dnssec));
            }
        }
        extra
    }

    /// The authoritative answer for `qname` (lower-case) and `qtype` (CoreDNS `Zone.Lookup`).
    /// `depth` is how often the query re-entered the server; past 8 it is a loop.
    pub fn lookup(&self, qname: &Name, qtype: RType, dnssec: bool, depth: u8) -> Lookup {
        if self.soa.is_none() {
            return Lookup::fail();
        }
        if *qname == self.origin {
            match qtype {
                RType::SOA => {
                    return Lookup::new(
                        self.soa_rrs(dnssec),
                        self.ns_rrs(dnssec),
                        Vec::new(),
                        Res::Success,
                    )
                }
                RType::NS => {
                    let ns = self.ns_rrs(dnssec);
                    let glue = self.glue(&ns, dnssec);
                    return Lookup::new(ns, Vec::new(), glue, Res::Success);
                }
                _ => {}
            }
        }
        if depth > 8 {
            return Lookup::fail();
        }
        let mut found = false;
        let mut elem: Option<&Node> = None;
        let mut wild_elem: Option<&Node> = None;
        let mut wild_name: Option<Name> = None;
        let mut i = 0;
        while let Some(parts) = self.name_from_right(qname, i) {
            match self.search(&parts) {
                None => {
                    found = false;
                    elem = None;
                    if !parts.is_root() {
                        if let Ok(wc) = parts.parent().prepend(b"*") {
                            if let Some(w) = self.search(&wc) {
                                wild_elem = Some(w);
                                wild_name = Some(w.name());
                            } else if self.has_descendant(&wc) {
                                wild_elem = None;
                                wild_name = Some(wc);
                            }
                        }
                    }
                    i += 1;
                    continue;
                }
                Some(e) => {
                    found = true;
                    elem = Some(e);
                    if let Some(dname) = e.rrs(RType::DNAME).into_iter().next() {
                        if let Some(cname) = synthesize_cname(qname, &dname) {
                            if let RData::Cname(t) = &cname.data {
                                if t == &cname.name {
                                    return Lookup::fail();
                                }
                            }
                            let mut prefix = e.rrs(RType::DNAME);
                            if dnssec {
                                prefix.extend(e.sigs(RType::DNAME, None));
                            }
                            let mut l = if qtype == RType::CNAME {
                                Lookup::new(
                                    vec![cname],
                                    self.ns_rrs(dnssec),
                                    Vec::new(),
                                    Res::Success,
                                )
                            } else {
                                self.external_lookup(qtype, dnssec, vec![cname], e, true)
                            };
                            match &mut l.external {
                                Some(x) => x.prefix = prefix,
                                None => {
                                    prefix.append(&mut l.answer);
                                    l.answer = prefix;
                                }
                            }
                            return l;
                        }
                    }
                    if let Some((ns, glue)) = self.delegation_from(e, qname, qtype, dnssec) {
                        return Lookup::new(Vec::new(), ns, glue, Res::Delegation);
                    }
                    i += 1;
                }
            }
        }
        if let Some(e) = elem.filter(|_| found) {
            let cname = e.rrs(RType::CNAME);
            if !cname.is_empty() && qtype != RType::CNAME {
                return self.external_lookup(qtype, dnssec, cname, e, false);
            }
            let mut rrs = e.rrs(qtype);
            if rrs.is_empty() {
                let mut ret = self.soa_rrs(dnssec);
                if dnssec {
                    ret.extend(e.with_sigs(RType::NSEC, true));
                }
                return Lookup::new(Vec::new(), ret, Vec::new(), Res::NoData);
            }
            let extra = self.additional(&rrs, dnssec);
            if dnssec {
                rrs.extend(e.sigs(qtype, None));
            }
            return Lookup::new(rrs, self.ns_rrs(dnssec), extra, Res::Success);
        }
        if let Some(wname) = &wild_name {
            if !self.closer_ent_exists(qname, wname) {
                let Some(w) = wild_elem else {
                    return Lookup::new(Vec::new(), self.soa_rrs(dnssec), Vec::new(), Res::NoData);
                };
                let cname = w.rrs_as(RType::CNAME, qname);
                if !cname.is_empty() && qtype != RType::CNAME {
                    return self.external_lookup_wild(qtype, dnssec, cname, w, qname);
                }
                let mut rrs = w.rrs_as(qtype, qname);
                if rrs.is_empty() {
                    let mut ret = self.soa_rrs(dnssec);
                    if dnssec {
                        ret.extend(w.with_sigs(RType::NSEC, true));
                    }
                    return Lookup::new(Vec::new(), ret, Vec::new(), Res::NoData);
                }
                let extra = self.additional(&rrs, dnssec);
                let mut auth = self.ns_rrs(dnssec);
                if dnssec {
                    if let Some(deny) = self.prev(qname) {
                        auth.extend(deny.with_sigs(RType::NSEC, true));
                    }
                    rrs.extend(w.sigs(qtype, Some(qname)));
                }
                return Lookup::new(rrs, auth, extra, Res::Success);
            }
        }
        let mut rcode = Res::NameError;
        if self.has_descendant(qname) {
            rcode = Res::Success;
        }
        let mut ret = self.soa_rrs(dnssec);
        if dnssec {
            if let Some(deny) = self.prev(qname) {
                ret.extend(deny.with_sigs(RType::NSEC, true));
                if rcode == Res::NameError {
                    if let Some(ce) = self.closest_encloser(qname) {
                        if let Ok(wc) = ce.name().prepend(b"*") {
                            if let Some(ss) = self.prev(&wc) {
                                if !ss.name_wire().eq_ignore_ascii_case(deny.name_wire()) {
                                    ret.extend(ss.with_sigs(RType::NSEC, true));
                                }
                            }
                        }
                    }
                }
            }
        }
        Lookup::new(Vec::new(), ret, Vec::new(), rcode)
    }

    fn closest_encloser(&self, qname: &Name) -> Option<&Node> {
        let mut n = qname.clone();
        while !n.is_root() {
            if let Some(e) = self.search(&n) {
                return Some(e);
            }
            n = n.parent();
        }
        self.search(&self.origin)
    }

    /// An empty non-terminal between the wildcard's parent and `qname` (RFC 4592: it is the
    /// closest encloser, so the shallower wildcard does not apply).
    fn closer_ent_exists(&self, qname: &Name, wildcard: &Name) -> bool {
        let wl: Vec<&[u8]> = wildcard.labels().collect();
        if wl.first() != Some(&&b"*"[..]) {
            return false;
        }
        let parent = wildcard.parent();
        let mut name = qname.clone();
        while !name.is_root() {
            name = name.parent();
            if name == parent || !name.is_subdomain_of(&parent) {
                return false;
            }
            if self.has_descendant(&name) {
                return true;
            }
        }
        false
    }

    fn external_lookup_wild(
        &self,
        qtype: RType,
        dnssec: bool,
        mut rrs: Vec<Record>,
        w: &Node,
        qname: &Name,
    ) -> Lookup {
        if dnssec {
            rrs.extend(w.sigs(RType::CNAME, Some(qname)));
        }
        self.chase(qtype, dnssec, rrs)
    }

    fn external_lookup(
        &self,
        qtype: RType,
        dnssec: bool,
        mut rrs: Vec<Record>,
        e: &Node,
        _dname: bool,
    ) -> Lookup {
        if dnssec {
            rrs.extend(e.sigs(RType::CNAME, None));
        }
        self.chase(qtype, dnssec, rrs)
    }

    /// CoreDNS `externalLookup` after the signatures of the first CNAME: follows CNAMEs inside
    /// the zone (at most 8 more), stops at a delegation, or asks for the target outside.
    fn chase(&self, qtype: RType, dnssec: bool, mut rrs: Vec<Record>) -> Lookup {
        let mut target = match rrs.first().map(|r| &r.data) {
            Some(RData::Cname(t)) => t.clone(),
            _ => return Lookup::fail(),
        };
        let mut i = 0;
        loop {
            let elem = self.search(&target);
            if let Some((ns, extra)) = self.find_delegation(&target, qtype, dnssec, elem) {
                return Lookup::new(rrs, ns, extra, Res::Delegation);
            }
            let Some(e) = elem.filter(|_| {
                !(qtype == RType::NS || (qtype == RType::SOA && target == self.origin))
            }) else {
                return Lookup {
                    answer: rrs,
                    ns: Vec::new(),
                    extra: Vec::new(),
                    result: Res::Success,
                    external: Some(External {
                        target,
                        qtype,
                        prefix: Vec::new(),
                    }),
                };
            };
            let cname = e.rrs(RType::CNAME);
            if cname.is_empty() {
                let mut t = e.rrs(qtype);
                if !t.is_empty() {
                    if dnssec {
                        t.extend(e.sigs(qtype, None));
                    }
                    rrs.extend(t);
                }
                let extra = self.additional(&rrs, dnssec);
                return Lookup::new(rrs, self.ns_rrs(dnssec), extra, Res::Success);
            }
            if let Some(RData::Cname(t)) = cname.first().map(|r| &r.data) {
                target = t.clone();
            }
            rrs.extend(cname);
            if dnssec {
                rrs.extend(e.sigs(RType::CNAME, None));
            }
            i += 1;
            if i > 8 {
                let extra = self.additional(&rrs, dnssec);
                return Lookup::new(rrs, self.ns_rrs(dnssec), extra, Res::Success);
            }
        }
    }

    /// Completes a lookup that needed an outside answer: `answer` and `rcode` are what the
    /// server said for the external target (`failed`: it could not answer at all).
    pub fn finish_external(
        &self,
        mut l: Lookup,
        answer: Vec<Record>,
        result: Res,
        dnssec: bool,
    ) -> Lookup {
        // Only a lookup that asked for an outside answer has something to finish.
        let Some(x) = l.external.take() else {
            return l;
        };
        l.answer.extend(answer);
        l.result = result;
        l.ns = self.authority(dnssec, result);
        l.extra = self.additional(&l.answer, dnssec);
        if !x.prefix.is_empty() {
            let mut a = x.prefix;
            a.append(&mut l.answer);
            l.answer = a;
        }
        l
    }

    /// The zone's records in AXFR order: SOA, its signatures, apex NS, their signatures, every
    /// other name in canonical order, the SOA again (CoreDNS `Zone.Transfer`).
    pub fn transfer_records(&self) -> Vec<Record> {
        let Some(soa) = &self.soa else {
            return Vec::new();
        };
        let mut v = vec![soa.clone()];
        v.extend(self.sig_soa.iter().cloned());
        v.extend(self.ns.iter().cloned());
        v.extend(self.sig_ns.iter().cloned());
        for n in &self.nodes {
            v.extend(n.all());
        }
        v.push(soa.clone());
        v
    }

    /// The number of records the zone holds (apex included, the closing SOA not).
    pub fn record_count(&self) -> usize {
        self.soa.iter().count()
            + self.sig_soa.len()
            + self.ns.len()
            + self.sig_ns.len()
            + self
                .nodes
                .iter()
                .map(|n| n.sets().map(|s| s.len()).sum::<usize>())
                .sum::<usize>()
    }

    /// The reply to a plain query for `qname`/`qtype` (no DO, or DO to a zone that is not
    /// signed: the same answer; not re-entered) when it is a
    /// positive answer from the stored bytes: an exact name outside delegations and DNAMEs,
    /// without a CNAME, holding `qtype`, of a type without additional-section processing.
    /// `query_head` is the query's first 12 bytes (ID and flags are taken from it); `qname` is
    /// the question name in wire form as sent. None: take [`Zone::lookup`].
    pub fn fast_reply(
        &self,
        id: u16,
        rd: bool,
        cd: bool,
        qname: &[u8],
        qtype: RType,
        qclass: Class,
    ) -> Option<Vec<u8>> {
        if matches!(
            qtype,
            RType::MX | RType::SRV | RType::SVCB | RType::HTTPS | RType::CNAME | RType::ANY
        ) {
            return None;
        }
        let i = self.find(qname)?;
        let node = &self.nodes[i];
        if node.flags != 0 {
            return None;
        }
        let set = node.set(qtype)?;
        let owner = set.owner.unwrap_or(node.name_wire());
        let mut out = Vec::with_capacity(
            12 + qname.len() + 4 + set.tails.len() + owner.len() + 64 + self.ns_tails.len(),
        );
        out.extend_from_slice(&id.to_be_bytes());
        let mut flags: u16 = 0x8400;
        if rd {
            flags |= 0x0100;
        }
        if cd {
            flags |= 0x0010;
        }
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(qname);
        out.extend_from_slice(&qtype.0.to_be_bytes());
        out.extend_from_slice(&qclass.0.to_be_bytes());
        // Answer owners: a pointer to the question when spelled the same, else written once.
        let mut owner_ptr: Option<u16> = (owner == qname).then_some(12);
        let mut an = 0u16;
        let mut p = 0;
        let t = set.tails;
        while p + 10 <= t.len() {
            let len = u16::from_be_bytes([t[p + 8], t[p + 9]]) as usize;
            match owner_ptr {
                Some(ptr) => out.extend_from_slice(&(0xc000 | ptr).to_be_bytes()),
                None => {
                    owner_ptr = Some(out.len() as u16);
                    out.extend_from_slice(owner);
                }
            }
            out.extend_from_slice(t.get(p..p + 10 + len)?);
            p += 10 + len;
            an += 1;
        }
        // Authority: the apex NS, owner a pointer to the origin inside the question when spelled
        // the same.
        let origin = self.origin.wire();
        let mut optr: Option<u16> = None;
        if qname.len() >= origin.len() && qname[qname.len() - origin.len()..] == *origin {
            optr = Some((12 + qname.len() - origin.len()) as u16);
        }
        let mut p = 0;
        let t = &self.ns_tails;
        while p + 10 <= t.len() {
            let len = u16::from_be_bytes([t[p + 8], t[p + 9]]) as usize;
            match optr {
                Some(ptr) => out.extend_from_slice(&(0xc000 | ptr).to_be_bytes()),
                None => {
                    optr = Some(out.len() as u16);
                    out.extend_from_slice(origin);
                }
            }
            out.extend_from_slice(t.get(p..p + 10 + len)?);
            p += 10 + len;
        }
        out[6..8].copy_from_slice(&an.to_be_bytes());
        out[8..10].copy_from_slice(&self.ns_count.to_be_bytes());
        Some(out)
    }
}

/// The CNAME a DNAME makes for `qname` (RFC 6672), owned by `qname`, TTL of the DNAME.
fn synthesize_cname(qname: &Name, dname: &Record) -> Option<Record> {
    let RData::Dname(target) = &dname.data else {
        return None;
    };
    if !qname.is_subdomain_of(&dname.name) || qname == &dname.name {
        return None;
    }
    let t = qname.replace_suffix(&dname.name, target)?;
    Some(Record::new(qname.clone(), dname.ttl, RData::Cname(t)))
}

#[cfg(test)]
mod tests;
