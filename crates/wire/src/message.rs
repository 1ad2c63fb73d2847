//! DNS messages: header flags, EDNS(0), parsing with strict limits, and encoding with name
//! compression and truncation the way miekg/dns truncates (as many records as fit). No I/O.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::name::{Name, MAX_LABEL_LEN, MAX_NAME_LEN};
use crate::rr::{RData, Record, Soa, Srv};
use crate::types::{opcode, Class, RType, Rcode};
use crate::WireError;

/// Header length.
pub const HEADER_LEN: usize = 12;
/// Most compression pointers followed in one name before giving up.
const MAX_POINTER_HOPS: usize = 127;

/// The fixed header, without the section counts (those follow from the sections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub qr: bool,
    pub opcode: u8,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    pub z: bool,
    pub ad: bool,
    pub cd: bool,
    /// Low four bits of the rcode; the high bits live in the OPT record.
    pub rcode: u8,
}

impl Header {
    /// Decodes the 16 flag bits.
    pub fn from_flags(id: u16, flags: u16) -> Header {
        Header {
            id,
            qr: flags & 0x8000 != 0,
            opcode: ((flags >> 11) & 0x0f) as u8,
            aa: flags & 0x0400 != 0,
            tc: flags & 0x0200 != 0,
            rd: flags & 0x0100 != 0,
            ra: flags & 0x0080 != 0,
            z: flags & 0x0040 != 0,
            ad: flags & 0x0020 != 0,
            cd: flags & 0x0010 != 0,
            rcode: (flags & 0x000f) as u8,
        }
    }

    /// Encodes the 16 flag bits.
    pub fn flags(&self) -> u16 {
        let mut f = ((self.opcode as u16 & 0x0f) << 11) | (self.rcode as u16 & 0x0f);
        for (set, bit) in [
            (self.qr, 0x8000),
            (self.aa, 0x0400),
            (self.tc, 0x0200),
            (self.rd, 0x0100),
            (self.ra, 0x0080),
            (self.z, 0x0040),
            (self.ad, 0x0020),
            (self.cd, 0x0010),
        ] {
            if set {
                f |= bit;
            }
        }
        f
    }

    /// Set flags joined by `,` in CoreDNS's order `qr,aa,tc,rd,ra,z,ad,cd`.
    pub fn flags_string(&self) -> String {
        let mut out = String::new();
        self.write_flags(&mut out);
        out
    }

    /// Appends [`Header::flags_string`] to `out`.
    pub fn write_flags(&self, out: &mut String) {
        const NAMES: [&str; 8] = ["qr", "aa", "tc", "rd", "ra", "z", "ad", "cd"];
        let set = [
            self.qr, self.aa, self.tc, self.rd, self.ra, self.z, self.ad, self.cd,
        ];
        let mut first = true;
        for (set, name) in set.into_iter().zip(NAMES) {
            if set {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(name);
            }
        }
    }
}

/// One question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: RType,
    pub qclass: Class,
}

impl Question {
    pub fn new(name: Name, qtype: RType) -> Question {
        Question {
            name,
            qtype,
            qclass: Class::IN,
        }
    }
}

/// One EDNS option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdnsOption {
    pub code: u16,
    pub data: Vec<u8>,
}

/// The OPT pseudo-record (RFC 6891).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    /// High eight bits of the rcode.
    pub ext_rcode: u8,
    pub version: u8,
    pub dnssec_ok: bool,
    /// Flag bits other than DO (must be zero in replies).
    pub z: u16,
    pub options: Vec<EdnsOption>,
}

impl Edns {
    pub fn new(udp_size: u16) -> Edns {
        Edns {
            udp_size,
            ext_rcode: 0,
            version: 0,
            dnssec_ok: false,
            z: 0,
            options: Vec::new(),
        }
    }

    /// Length of the encoded OPT record.
    pub fn wire_len(&self) -> usize {
        11 + self.options.iter().map(|o| 4 + o.data.len()).sum::<usize>()
    }

    /// Appends the encoded OPT record (root owner, type 41) to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.push(0);
        buf.extend_from_slice(&RType::OPT.0.to_be_bytes());
        buf.extend_from_slice(&self.udp_size.to_be_bytes());
        let ttl = ((self.ext_rcode as u32) << 24)
            | ((self.version as u32) << 16)
            | if self.dnssec_ok { 0x8000 } else { 0 }
            | (self.z as u32 & 0x7fff);
        buf.extend_from_slice(&ttl.to_be_bytes());
        let len: usize = self.options.iter().map(|o| 4 + o.data.len()).sum();
        buf.extend_from_slice(&(len.min(u16::MAX as usize) as u16).to_be_bytes());
        for o in &self.options {
            buf.extend_from_slice(&o.code.to_be_bytes());
            buf.extend_from_slice(&(o.data.len() as u16).to_be_bytes());
            buf.extend_from_slice(&o.data);
        }
    }
}

/// A whole DNS message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    /// Additional records, without the OPT record (that is `edns`).
    pub additional: Vec<Record>,
    pub edns: Option<Edns>,
}

/// Why a packet could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than 12 bytes: nothing to answer.
    #[error("packet shorter than a DNS header")]
    NoHeader,
    /// The header was read; the rest is malformed. Enough is kept to send FORMERR.
    #[error("malformed message: {error}")]
    Malformed {
        header: Header,
        question: Option<Question>,
        error: WireError,
    },
}

impl Message {
    /// A query for `name`/`qtype` with RD set.
    pub fn query(id: u16, name: Name, qtype: RType) -> Message {
        Message {
            header: Header {
                id,
                rd: true,
                ..Header::default()
            },
            questions: vec![Question::new(name, qtype)],
            ..Message::default()
        }
    }

    /// The skeleton of a reply to `req`: same ID, opcode, RD, CD and question; QR set (like
    /// miekg/dns `SetReply`).
    pub fn reply_to(req: &Message) -> Message {
        Message {
            header: Header {
                id: req.header.id,
                qr: true,
                opcode: req.header.opcode,
                rd: req.header.rd,
                cd: req.header.cd,
                ..Header::default()
            },
            questions: req.questions.iter().take(1).cloned().collect(),
            ..Message::default()
        }
    }

    /// The first question, if any.
    pub fn question(&self) -> Option<&Question> {
        self.questions.first()
    }

    /// The full (extended) rcode.
    pub fn rcode(&self) -> Rcode {
        let hi = self.edns.as_ref().map(|e| e.ext_rcode as u16).unwrap_or(0);
        Rcode((hi << 4) | self.header.rcode as u16)
    }

    /// Sets the full rcode; the high bits go into the OPT record (one is added if the rcode needs
    /// it and there is none).
    pub fn set_rcode(&mut self, rcode: Rcode) {
        self.header.rcode = rcode.low();
        if rcode.high() != 0 {
            self.edns.get_or_insert_with(|| Edns::new(1232)).ext_rcode = rcode.high();
        } else if let Some(e) = self.edns.as_mut() {
            e.ext_rcode = 0;
        }
    }

    /// Parses a message, enforcing RFC 1035 limits: label and name lengths, label types,
    /// compression pointers that only point backwards, section counts matching content, one OPT
    /// record at the root in the additional section, no trailing bytes.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::NoHeader);
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let flags = u16::from_be_bytes([buf[2], buf[3]]);
        let header = Header::from_flags(id, flags);
        let counts = [
            u16::from_be_bytes([buf[4], buf[5]]),
            u16::from_be_bytes([buf[6], buf[7]]),
            u16::from_be_bytes([buf[8], buf[9]]),
            u16::from_be_bytes([buf[10], buf[11]]),
        ];
        let mut r = Reader {
            buf,
            pos: HEADER_LEN,
        };
        let mut msg = Message {
            header,
            ..Message::default()
        };
        let fail = |msg: &Message, error: WireError| ParseError::Malformed {
            header,
            question: msg.questions.first().cloned(),
            error,
        };
        for _ in 0..counts[0] {
            let q = r.question().map_err(|e| fail(&msg, e))?;
            msg.questions.push(q);
        }
        for (section, count) in counts[1..].iter().enumerate() {
            for _ in 0..*count {
                let rr = r.record().map_err(|e| fail(&msg, e))?;
                if rr.rtype == RType::OPT {
                    if section != 2 {
                        return Err(fail(&msg, WireError::OptOutsideAdditional));
                    }
                    if msg.edns.is_some() {
                        return Err(fail(&msg, WireError::MultipleOpt));
                    }
                    if !rr.name.is_root() {
                        return Err(fail(&msg, WireError::OptNotRoot));
                    }
                    let edns = opt_from_record(&rr).map_err(|e| fail(&msg, e))?;
                    msg.edns = Some(edns);
                    continue;
                }
                match section {
                    0 => msg.answers.push(rr),
                    1 => msg.authority.push(rr),
                    _ => msg.additional.push(rr),
                }
            }
        }
        if r.pos != buf.len() {
            return Err(fail(&msg, WireError::TrailingData));
        }
        Ok(msg)
    }

    /// Encodes the whole message with name compression.
    pub fn to_wire(&self) -> Vec<u8> {
        self.encode(usize::MAX).0
    }

    /// Encodes the message into at most `max_len` bytes (at least 512 are always allowed), the way
    /// miekg/dns `Msg.Truncate` cuts a reply: as many records as fit, in order (answer, then
    /// authority, then additional), name compression counted; the first record that does not
    /// fit ends the message. TC is set when any record was left out (a TC bit already set stays
    /// set). The OPT record is always kept. Returns the bytes and whether records were left out.
    /// The header, question and OPT record are never cut, so when they alone pass `max_len` the
    /// result is longer than `max_len` and holds no other record (miekg/dns does the same).
    pub fn to_wire_limited(&self, max_len: usize) -> (Vec<u8>, bool) {
        self.encode(max_len.max(512))
    }

    /// Encodes the whole message without name compression (miekg/dns `Pack` of a message that
    /// has `Compress` off, as a parsed query has: what CoreDNS's dnstap logs for one).
    pub fn to_wire_uncompressed(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(512);
        e.compress = false;
        self.encode_with(e, usize::MAX).0
    }

    /// Length of the message encoded without name compression (miekg/dns `Len()` of a message
    /// that has `Compress` off, which is what CoreDNS logs as the response size).
    pub fn uncompressed_len(&self) -> usize {
        let q: usize = self.questions.iter().map(|q| q.name.wire_len() + 4).sum();
        let rr: usize = [&self.answers, &self.authority, &self.additional]
            .into_iter()
            .flatten()
            .map(|r| r.name.wire_len() + 10 + r.data.wire_len())
            .sum();
        HEADER_LEN + q + rr + self.edns.as_ref().map_or(0, Edns::wire_len)
    }

    fn encode(&self, max_len: usize) -> (Vec<u8>, bool) {
        self.encode_with(Encoder::with_capacity(512), max_len)
    }

    fn encode_with(&self, mut e: Encoder, max_len: usize) -> (Vec<u8>, bool) {
        e.buf.extend_from_slice(&[0u8; HEADER_LEN]);
        let mut header = self.header;
        for q in &self.questions {
            e.name(&q.name, true);
            e.u16(q.qtype.0);
            e.u16(q.qclass.0);
        }
        let opt_len = self.edns.as_ref().map(Edns::wire_len).unwrap_or(0);
        // miekg/dns `Msg.Truncate`, which CoreDNS applies to every reply: records are added in
        // order (answer, authority, additional) while the compressed length stays within the
        // budget; the first one that does not fit ends the message, and so does one that fills
        // the budget exactly. TC is set when any record (of any section) was left out.
        let budget = max_len.saturating_sub(opt_len);
        let mut counts = [self.questions.len() as u16, 0, 0, 0];
        let mut full = e.buf.len() >= budget;
        let mut truncated = false;
        for (idx, section) in [&self.answers, &self.authority, &self.additional]
            .into_iter()
            .enumerate()
        {
            if full {
                truncated |= !section.is_empty();
                continue;
            }
            for rr in section {
                let mark = e.buf.len();
                e.record(rr);
                if e.buf.len() > budget {
                    e.rollback(mark);
                    full = true;
                } else {
                    counts[idx + 1] += 1;
                    full = e.buf.len() == budget;
                }
                if full {
                    truncated |= counts[idx + 1] as usize != section.len();
                    break;
                }
            }
        }
        if let Some(edns) = &self.edns {
            e.opt(edns);
            counts[3] += 1;
        }
        if truncated {
            header.tc = true;
        }
        let flags = header.flags();
        e.buf[0..2].copy_from_slice(&header.id.to_be_bytes());
        e.buf[2..4].copy_from_slice(&flags.to_be_bytes());
        for (k, c) in counts.iter().enumerate() {
            e.buf[4 + 2 * k..6 + 2 * k].copy_from_slice(&c.to_be_bytes());
        }
        (e.finish(), truncated)
    }
}

fn opt_from_record(rr: &Record) -> Result<Edns, WireError> {
    let RData::Unknown(data) = &rr.data else {
        return Err(WireError::BadRdata);
    };
    let mut options = Vec::new();
    let mut p = 0;
    while p < data.len() {
        let hdr = data.get(p..p + 4).ok_or(WireError::BadOption)?;
        let code = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let body = data.get(p + 4..p + 4 + len).ok_or(WireError::BadOption)?;
        options.push(EdnsOption {
            code,
            data: body.to_vec(),
        });
        p += 4 + len;
    }
    Ok(Edns {
        udp_size: rr.class.0,
        ext_rcode: (rr.ttl >> 24) as u8,
        version: (rr.ttl >> 16) as u8,
        dnssec_ok: rr.ttl & 0x8000 != 0,
        z: (rr.ttl & 0x7fff) as u16,
        options,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let v = *self.buf.get(self.pos).ok_or(WireError::ShortMessage)?;
        self.pos += 1;
        Ok(v)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 2)
            .ok_or(WireError::ShortMessage)?;
        self.pos += 2;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or(WireError::ShortMessage)?;
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], WireError> {
        let b = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(WireError::ShortMessage)?;
        self.pos += n;
        Ok(b)
    }

    /// Reads a possibly compressed name. Pointers must point strictly backwards and past the
    /// header, so a name always terminates.
    fn name(&mut self) -> Result<Name, WireError> {
        let (name, next) = read_name(self.buf, self.pos)?;
        self.pos = next;
        Ok(name)
    }

    fn question(&mut self) -> Result<Question, WireError> {
        let name = self.name()?;
        let qtype = RType(self.u16()?);
        let qclass = Class(self.u16()?);
        Ok(Question {
            name,
            qtype,
            qclass,
        })
    }

    fn record(&mut self) -> Result<Record, WireError> {
        let name = self.name()?;
        let rtype = RType(self.u16()?);
        let class = Class(self.u16()?);
        let ttl = self.u32()?;
        let rdlen = self.u16()? as usize;
        let start = self.pos;
        let end = start + rdlen;
        if end > self.buf.len() {
            return Err(WireError::ShortMessage);
        }
        let data = self.rdata(rtype, end)?;
        if self.pos != end {
            return Err(WireError::BadRdata);
        }
        Ok(Record {
            name,
            rtype,
            class,
            ttl,
            data,
        })
    }

    fn rdata(&mut self, rtype: RType, end: usize) -> Result<RData, WireError> {
        let len = end - self.pos;
        // Names inside RDATA may not run past the RDATA.
        let within = |r: &Reader<'_>| {
            if r.pos > end {
                Err(WireError::BadRdata)
            } else {
                Ok(())
            }
        };
        let data = match rtype {
            RType::A => {
                if len != 4 {
                    return Err(WireError::BadRdata);
                }
                let b = self.bytes(4)?;
                RData::A(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            RType::AAAA => {
                if len != 16 {
                    return Err(WireError::BadRdata);
                }
                let b = self.bytes(16)?;
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                RData::Aaaa(Ipv6Addr::from(o))
            }
            RType::NS | RType::CNAME | RType::PTR | RType::DNAME => {
                let n = self.name()?;
                within(self)?;
                match rtype {
                    RType::NS => RData::Ns(n),
                    RType::CNAME => RData::Cname(n),
                    RType::PTR => RData::Ptr(n),
                    _ => RData::Dname(n),
                }
            }
            RType::SOA => {
                let mname = self.name()?;
                let rname = self.name()?;
                within(self)?;
                let soa = Soa {
                    mname,
                    rname,
                    serial: self.u32()?,
                    refresh: self.u32()?,
                    retry: self.u32()?,
                    expire: self.u32()?,
                    minimum: self.u32()?,
                };
                RData::Soa(soa)
            }
            RType::MX => {
                let preference = self.u16()?;
                let exchange = self.name()?;
                within(self)?;
                RData::Mx {
                    preference,
                    exchange,
                }
            }
            RType::SRV => {
                let priority = self.u16()?;
                let weight = self.u16()?;
                let port = self.u16()?;
                let target = self.name()?;
                within(self)?;
                RData::Srv(Srv {
                    priority,
                    weight,
                    port,
                    target,
                })
            }
            RType::TXT => {
                let mut parts = Vec::new();
                while self.pos < end {
                    let l = self.u8()? as usize;
                    if self.pos + l > end {
                        return Err(WireError::BadRdata);
                    }
                    parts.push(self.bytes(l)?.to_vec());
                }
                RData::Txt(parts)
            }
            RType::HINFO => {
                let l = self.u8()? as usize;
                let cpu = self.bytes(l)?.to_vec();
                let l = self.u8()? as usize;
                let os = self.bytes(l)?.to_vec();
                within(self)?;
                RData::Hinfo { cpu, os }
            }
            _ => RData::Unknown(self.bytes(len)?.to_vec()),
        };
        Ok(data)
    }
}

/// Walks the possibly compressed name at `pos` of `buf` with every check of [`read_name`],
/// handing each label (its length byte and bytes) to `label`; returns the offset after the name
/// and its uncompressed length (1 for the root).
#[inline(always)]
fn walk_name(
    buf: &[u8],
    pos: usize,
    mut label: impl FnMut(&[u8]),
) -> Result<(usize, usize), WireError> {
    let mut len_total = 0;
    let mut p = pos;
    let mut next = None;
    let mut hops = 0;
    loop {
        let len = *buf.get(p).ok_or(WireError::NameTruncated)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    len_total += 1;
                    if len_total > MAX_NAME_LEN {
                        return Err(WireError::NameTooLong);
                    }
                    return Ok((next.unwrap_or(p + 1), len_total));
                }
                if len > MAX_LABEL_LEN {
                    return Err(WireError::LabelTooLong);
                }
                let l = buf.get(p..p + 1 + len).ok_or(WireError::NameTruncated)?;
                len_total += 1 + len;
                if len_total + 1 > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
                label(l);
                p += 1 + len;
            }
            0xc0 => {
                let lo = *buf.get(p + 1).ok_or(WireError::NameTruncated)? as usize;
                let target = ((len & 0x3f) << 8) | lo;
                if target >= p || target < HEADER_LEN {
                    return Err(WireError::BadPointer);
                }
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err(WireError::BadPointer);
                }
                if next.is_none() {
                    next = Some(p + 2);
                }
                p = target;
            }
            _ => return Err(WireError::BadLabelType),
        }
    }
}

/// [`read_name`] without building the name: the offset after the name at `pos` and the name's
/// uncompressed length (1 for the root), with the same checks.
pub fn skip_name(buf: &[u8], pos: usize) -> Result<(usize, usize), WireError> {
    walk_name(buf, pos, |_| {})
}

/// Reads a possibly compressed name at `pos` of `buf`; returns it and the offset after it.
pub fn read_name(buf: &[u8], pos: usize) -> Result<(Name, usize), WireError> {
    let mut wire = Vec::with_capacity(32);
    let (after, _) = walk_name(buf, pos, |l| wire.extend_from_slice(l))?;
    wire.push(0);
    // Every label and the total length were checked by the walk.
    Ok((Name::from_checked_wire(wire), after))
}

struct Encoder {
    buf: Vec<u8>,
    names: Compression,
    compress: bool,
}

/// Name suffixes already written, for compression: a flat table searched linearly while it is
/// small (the usual answer has a handful of names), with a hash index once it grows. Suffixes
/// match byte for byte, case included, like miekg/dns (CoreDNS): a name is never sent in
/// another name's spelling. Each name written is copied once into `arena`; its suffixes are
/// slices of that copy.
#[derive(Default)]
struct Compression {
    /// Wire names as written (uncompressed), back to back.
    arena: Vec<u8>,
    /// (start in `arena`, length, offset in the message).
    entries: Vec<(u32, u16, u16)>,
    /// Index over `entries` once there are more than [`Compression::LINEAR`].
    index: Option<HashMap<Vec<u8>, u16>>,
}

thread_local! {
    /// A compression table kept between encodings on this thread (cleared, not freed), so an
    /// encoding allocates only the message's own bytes.
    static SCRATCH: std::cell::Cell<Option<Compression>> = const { std::cell::Cell::new(None) };
}

impl Compression {
    const LINEAR: usize = 48;

    fn get(&self, suffix: &[u8]) -> Option<u16> {
        if let Some(ix) = &self.index {
            return ix.get(suffix).copied();
        }
        let len = suffix.len() as u16;
        self.entries.iter().find_map(|&(start, l, off)| {
            (l == len && &self.arena[start as usize..start as usize + l as usize] == suffix)
                .then_some(off)
        })
    }

    /// Records the suffixes of `wire` that start before `end` (`wire` written at `at`; only
    /// those a pointer can reach).
    fn insert(&mut self, wire: &[u8], end: usize, at: usize) {
        let base = self.arena.len() as u32;
        if self.index.is_none() {
            self.arena.extend_from_slice(wire);
        }
        let mut p = 0;
        while p < end && at + p < 0x4000 {
            let off = (at + p) as u16;
            match &mut self.index {
                Some(ix) => {
                    ix.insert(wire[p..].to_vec(), off);
                }
                None => self
                    .entries
                    .push((base + p as u32, (wire.len() - p) as u16, off)),
            }
            p += 1 + wire[p] as usize;
        }
        if self.index.is_none() && self.entries.len() > Self::LINEAR {
            let mut ix = HashMap::with_capacity(self.entries.len() * 2);
            for &(start, len, off) in &self.entries {
                let key = self.arena[start as usize..start as usize + len as usize].to_vec();
                ix.entry(key).or_insert(off);
            }
            self.index = Some(ix);
        }
    }

    fn truncate(&mut self, len: usize) {
        match &mut self.index {
            Some(ix) => ix.retain(|_, off| (*off as usize) < len),
            None => self.entries.retain(|&(_, _, off)| (off as usize) < len),
        }
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
        self.index = None;
    }
}

impl Encoder {
    fn with_capacity(cap: usize) -> Encoder {
        let names = SCRATCH.with(|s| s.take()).unwrap_or_else(|| Compression {
            arena: Vec::with_capacity(256),
            entries: Vec::with_capacity(16),
            index: None,
        });
        Encoder {
            buf: Vec::with_capacity(cap),
            names,
            compress: true,
        }
    }

    /// The encoded bytes; the compression table goes back to the thread for the next encoding
    /// (unless it grew large).
    fn finish(self) -> Vec<u8> {
        let Encoder { buf, mut names, .. } = self;
        if names.arena.capacity() <= 4096 && names.entries.capacity() <= 256 {
            names.clear();
            SCRATCH.with(|s| s.set(Some(names)));
        }
        buf
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn rollback(&mut self, len: usize) {
        self.buf.truncate(len);
        self.names.truncate(len);
    }

    fn name(&mut self, name: &Name, compress: bool) {
        let wire = name.wire();
        if !(compress && self.compress) {
            self.buf.extend_from_slice(wire);
            return;
        }
        // The longest suffix already written, if any: its start in `wire` and its offset.
        let mut hit = None;
        let mut p = 0;
        while wire[p] != 0 {
            if let Some(off) = self.names.get(&wire[p..]) {
                hit = Some((p, off));
                break;
            }
            p += 1 + wire[p] as usize;
        }
        let at = self.buf.len();
        // The suffixes written here in full, where a pointer can reach them.
        if p > 0 && at < 0x4000 {
            self.names.insert(wire, p, at);
        }
        match hit {
            Some((p, off)) => {
                self.buf.extend_from_slice(&wire[..p]);
                self.u16(0xc000 | off);
            }
            None => self.buf.extend_from_slice(wire),
        }
    }

    fn record(&mut self, rr: &Record) {
        self.name(&rr.name, true);
        self.u16(rr.rtype.0);
        self.u16(rr.class.0);
        self.u32(rr.ttl);
        let len_at = self.buf.len();
        self.u16(0);
        match &rr.data {
            RData::A(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Aaaa(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Ns(n) | RData::Cname(n) | RData::Ptr(n) => self.name(n, true),
            RData::Dname(n) => self.name(n, false),
            RData::Soa(s) => {
                self.name(&s.mname, true);
                self.name(&s.rname, true);
                for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                    self.u32(v);
                }
            }
            RData::Mx {
                preference,
                exchange,
            } => {
                self.u16(*preference);
                self.name(exchange, true);
            }
            RData::Srv(s) => {
                self.u16(s.priority);
                self.u16(s.weight);
                self.u16(s.port);
                self.name(&s.target, false);
            }
            RData::Txt(parts) => {
                for p in parts {
                    let p = &p[..p.len().min(255)];
                    self.buf.push(p.len() as u8);
                    self.buf.extend_from_slice(p);
                }
            }
            RData::Hinfo { cpu, os } => {
                for p in [cpu, os] {
                    let p = &p[..p.len().min(255)];
                    self.buf.push(p.len() as u8);
                    self.buf.extend_from_slice(p);
                }
            }
            RData::Unknown(d) => self.buf.extend_from_slice(d),
        }
        let rdlen = (self.buf.len() - len_at - 2).min(u16::MAX as usize) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    fn opt(&mut self, e: &Edns) {
        e.encode_into(&mut self.buf);
    }
}

/// True for opcodes Sextant serves (QUERY; NOTIFY is not served).
pub fn opcode_supported(op: u8) -> bool {
    op == opcode::QUERY
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compression with the linear table and, past its size, the hash index: every name comes
    /// back as written (case-insensitive matches reuse earlier spellings' offsets), pointers
    /// point backwards, and the message is as small as with the old hash-only encoder.
    #[test]
    fn compression_table_small_and_large() {
        for n in [3usize, 40, 200] {
            let q = Message::query(
                7,
                Name::parse("Svc.NS.svc.cluster.local.").unwrap(),
                RType::A,
            );
            let mut m = Message::reply_to(&q);
            for i in 0..n {
                let owner = Name::parse(&format!("h{i}.Svc.NS.svc.cluster.local.")).unwrap();
                m.answers.push(Record::new(
                    owner,
                    5,
                    RData::A(Ipv4Addr::new(10, 0, (i / 256) as u8, i as u8)),
                ));
            }
            let w = m.to_wire();
            let back = Message::parse(&w).unwrap();
            assert_eq!(back.answers.len(), n);
            for (i, rr) in back.answers.iter().enumerate() {
                assert_eq!(
                    rr.name.to_string(),
                    format!("h{i}.Svc.NS.svc.cluster.local.")
                );
            }
            // Question name 26 bytes + type/class; per answer: label "hN" + pointer + 10 fixed + 4 rdata.
            let labels: usize = (0..n).map(|i| 1 + format!("h{i}").len()).sum();
            assert_eq!(w.len(), HEADER_LEN + 26 + 4 + labels + n * (2 + 10 + 4));
        }
    }

    /// The computed uncompressed length is the length of the encoding without compression.
    #[test]
    fn uncompressed_len_is_the_plain_encoding_length() {
        let q = Message::query(1, Name::parse("a.example.org.").unwrap(), RType::A);
        let mut m = Message::reply_to(&q);
        let n = |s: &str| Name::parse(s).unwrap();
        m.answers.push(Record::new(
            n("a.example.org."),
            5,
            RData::A(Ipv4Addr::new(10, 0, 0, 1)),
        ));
        m.answers.push(Record::new(
            n("a.example.org."),
            5,
            RData::Aaaa("2001:db8::1".parse().unwrap()),
        ));
        m.answers.push(Record::new(
            n("a.example.org."),
            5,
            RData::Cname(n("b.example.org.")),
        ));
        m.answers.push(Record::new(
            n("a.example.org."),
            5,
            RData::Txt(vec![vec![b'x'; 300], b"hi".to_vec()]),
        ));
        m.answers.push(Record::new(
            n("a.example.org."),
            5,
            RData::Mx {
                preference: 1,
                exchange: n("mx.example.org."),
            },
        ));
        m.answers.push(Record::new(
            n("a.example.org."),
            5,
            RData::Hinfo {
                cpu: b"c".to_vec(),
                os: b"o".to_vec(),
            },
        ));
        m.authority.push(Record::new(
            n("example.org."),
            5,
            RData::Soa(crate::Soa {
                mname: n("ns.example.org."),
                rname: n("h.example.org."),
                serial: 1,
                refresh: 2,
                retry: 3,
                expire: 4,
                minimum: 5,
            }),
        ));
        m.additional.push(Record::new(
            n("b.example.org."),
            5,
            RData::Srv(crate::Srv {
                priority: 0,
                weight: 1,
                port: 2,
                target: n("c.example.org."),
            }),
        ));
        m.additional.push(Record::unknown(
            n("d.example.org."),
            RType(99),
            Class::IN,
            5,
            vec![1, 2, 3],
        ));
        let mut e = Edns::new(1232);
        e.options.push(EdnsOption {
            code: 10,
            data: vec![0; 8],
        });
        m.edns = Some(e);
        let plain = m.to_wire_uncompressed();
        assert_eq!(m.uncompressed_len(), plain.len());
        assert!(m.to_wire().len() < plain.len());
    }

    /// Compression matches case exactly (miekg/dns does): a name spelled differently from an
    /// earlier one keeps its own spelling, only the identical suffix is shared.
    #[test]
    fn compression_keeps_each_spelling() {
        let q = Message::query(1, Name::parse("A.Example.ORG.").unwrap(), RType::A);
        let mut m = Message::reply_to(&q);
        for owner in ["a.example.org.", "b.Example.ORG.", "A.Example.ORG."] {
            m.answers.push(Record::new(
                Name::parse(owner).unwrap(),
                5,
                RData::A(Ipv4Addr::new(10, 0, 0, 1)),
            ));
        }
        let back = Message::parse(&m.to_wire()).unwrap();
        let names: Vec<String> = back.answers.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(
            names,
            ["a.example.org.", "b.Example.ORG.", "A.Example.ORG."]
        );
    }

    /// Truncation rolls the table back: names after the cut are written in full again.
    #[test]
    fn compression_survives_truncation() {
        let q = Message::query(1, Name::parse("a.example.org.").unwrap(), RType::A);
        let mut m = Message::reply_to(&q);
        for i in 0..100u8 {
            m.answers.push(Record::new(
                Name::parse(&format!("n{i}.x.example.org.")).unwrap(),
                5,
                RData::A(Ipv4Addr::new(10, 0, 0, i)),
            ));
        }
        let (w, _) = m.to_wire_limited(512);
        assert!(w.len() <= 512);
        let back = Message::parse(&w).unwrap();
        assert!(back.header.tc || back.answers.len() == 100);
        for (i, rr) in back.answers.iter().enumerate() {
            assert_eq!(rr.name.to_string(), format!("n{i}.x.example.org."));
        }
    }

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn round_trip_with_compression() {
        let q = Message::query(7, n("www.example.com"), RType::A);
        let mut m = Message::reply_to(&q);
        m.header.aa = true;
        m.answers.push(Record::new(
            n("www.example.com"),
            300,
            RData::Cname(n("web.example.com")),
        ));
        m.answers.push(Record::new(
            n("web.example.com"),
            300,
            RData::A(Ipv4Addr::new(192, 0, 2, 1)),
        ));
        m.authority.push(Record::new(
            n("example.com"),
            60,
            RData::Soa(Soa {
                mname: n("ns.example.com"),
                rname: n("hostmaster.example.com"),
                serial: 1,
                refresh: 2,
                retry: 3,
                expire: 4,
                minimum: 5,
            }),
        ));
        m.edns = Some(Edns::new(1232));
        let wire = m.to_wire();
        let back = Message::parse(&wire).unwrap();
        assert_eq!(back, m);
        // Compression made it smaller than the sum of uncompressed names.
        assert_eq!(wire.len(), 128);
        assert_eq!(
            m.uncompressed_len(),
            12 + 21 + 17 + 10 + 17 + 17 + 10 + 4 + 13 + 10 + 16 + 24 + 20 + 11
        );
    }

    #[test]
    fn rejects_pointer_loops_and_bad_labels() {
        // header with qdcount 1, then a pointer to itself.
        let mut p = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(
            Message::parse(&p),
            Err(ParseError::Malformed {
                error: WireError::BadPointer,
                ..
            })
        ));
        let mut p = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[0x40, 0, 0, 1, 0, 1]);
        assert!(matches!(
            Message::parse(&p),
            Err(ParseError::Malformed {
                error: WireError::BadLabelType,
                ..
            })
        ));
        assert_eq!(Message::parse(&[1, 2, 3]), Err(ParseError::NoHeader));
    }

    #[test]
    fn two_opts_is_an_error() {
        let mut q = Message::query(1, n("a."), RType::A);
        q.edns = Some(Edns::new(1232));
        let mut w = q.to_wire();
        // Append a second OPT and bump ARCOUNT.
        w.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        w[11] = 2;
        assert!(matches!(
            Message::parse(&w),
            Err(ParseError::Malformed {
                error: WireError::MultipleOpt,
                ..
            })
        ));
    }

    fn big(count: usize) -> Message {
        let q = Message::query(1, n("big.example."), RType::A);
        let mut m = Message::reply_to(&q);
        for i in 0..count {
            m.answers.push(Record::new(
                n("big.example."),
                5,
                RData::A(Ipv4Addr::new(10, 0, 0, i as u8)),
            ));
        }
        m
    }

    /// Like miekg/dns `Truncate`: as many records as fit (not whole RRsets), TC set, the
    /// sections after the cut left empty.
    #[test]
    fn truncation_keeps_the_records_that_fit() {
        let mut m = big(100);
        m.authority
            .push(Record::new(n("example."), 5, RData::Ns(n("ns.example."))));
        let (w, tc) = m.to_wire_limited(512);
        assert!(tc);
        assert!(w.len() <= 512);
        let back = Message::parse(&w).unwrap();
        assert!(back.header.tc);
        // 12 header + 17 question, then 16 bytes per compressed A record: 30 fit in 512.
        assert_eq!(back.answers.len(), 30);
        assert_eq!(w.len(), 12 + 17 + 30 * 16);
        assert!(back.authority.is_empty());
        let (w, tc) = m.to_wire_limited(4096);
        assert!(!tc);
        assert_eq!(Message::parse(&w).unwrap().answers.len(), 100);
    }

    /// The OPT record's length comes off the budget and the OPT record is kept.
    #[test]
    fn truncation_keeps_the_opt_record() {
        let mut m = big(100);
        let mut e = Edns::new(4096);
        e.options.push(EdnsOption {
            code: 10,
            data: vec![7; 8],
        });
        m.edns = Some(e.clone());
        let (w, tc) = m.to_wire_limited(512);
        assert!(tc);
        let back = Message::parse(&w).unwrap();
        // 512 - 23 bytes of OPT = 489: (489 - 29) / 16 = 28 records.
        assert_eq!(back.answers.len(), 28);
        assert_eq!(back.edns, Some(e));
    }

    /// When the question and the OPT record alone pass the limit (a fuzzer found one: a 500-byte
    /// option), no record fits: they all go, TC is set, and the message keeps its question and
    /// OPT even though it is longer than the limit, as miekg/dns `Msg.Truncate` leaves it.
    #[test]
    fn truncation_when_question_and_opt_pass_the_limit() {
        let mut m = big(3);
        let mut e = Edns::new(4096);
        e.options.push(EdnsOption {
            code: 65001,
            data: vec![0; 500],
        });
        m.edns = Some(e.clone());
        let (w, tc) = m.to_wire_limited(512);
        assert!(tc);
        assert!(w.len() > 512);
        let back = Message::parse(&w).unwrap();
        assert!(back.header.tc);
        assert_eq!(back.questions, m.questions);
        assert_eq!((back.answers.len(), back.additional.len()), (0, 0));
        assert_eq!(back.edns, Some(e));
    }

    /// A record that fills the budget exactly is kept and ends the message; left-out
    /// additional records set TC too (miekg/dns does not special-case the additional section).
    #[test]
    fn truncation_exact_fit_and_additional() {
        // 29 + 30 * 16 = 509; a 3-byte budget gap after 30 records.
        let mut m = big(30);
        m.additional.push(Record::new(
            n("big.example."),
            5,
            RData::A(Ipv4Addr::new(10, 0, 1, 1)),
        ));
        let (w, tc) = m.to_wire_limited(512);
        let back = Message::parse(&w).unwrap();
        assert!(tc && back.header.tc);
        assert_eq!((back.answers.len(), back.additional.len()), (30, 0));
        // Exactly 525 bytes: everything fits without TC.
        let (w, tc) = m.to_wire_limited(525);
        assert!(!tc);
        assert_eq!(w.len(), 525);
        // One answer fills 512 exactly: the authority record after it is left out.
        let mut m = big(0);
        m.answers.push(Record::new(
            n("big.example."),
            5,
            RData::Txt(vec![vec![b'x'; 255], vec![b'y'; 214]]),
        ));
        m.authority
            .push(Record::new(n("example."), 5, RData::Ns(n("ns.example."))));
        let (w, tc) = m.to_wire_limited(512);
        assert_eq!(w.len(), 512);
        let back = Message::parse(&w).unwrap();
        assert!(tc);
        assert_eq!((back.answers.len(), back.authority.len()), (1, 0));
    }

    #[test]
    fn extended_rcode() {
        let q = Message::query(1, n("a."), RType::A);
        let mut m = Message::reply_to(&q);
        m.set_rcode(Rcode::BADVERS);
        let back = Message::parse(&m.to_wire()).unwrap();
        assert_eq!(back.rcode(), Rcode::BADVERS);
        assert_eq!(back.header.rcode, 0);
    }
}
