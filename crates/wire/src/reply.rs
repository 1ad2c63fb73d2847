//! One reply type, parsed or encoded, and every byte-level edit of an encoded DNS message: ID,
//! header flags, question spelling, TTLs, the OPT record, and the final shaping of a reply for
//! the client that asked (CoreDNS's `SizeAndDo` and miekg/dns's `Truncate`). No I/O.
//!
//! An encoded reply is a whole DNS message with one question at offset 12 and no OPT record;
//! its fast path is a copy and a few patches, never a decode.

use crate::message::{Edns, EdnsOption, Header, Message, Question, HEADER_LEN};
use crate::name::Name;
use crate::read_name;
use crate::types::{Class, RType, Rcode};

/// A reply on its way back to the client: a message a plugin built (or decoded), or bytes a
/// plugin kept (the cache, the kubernetes reply memo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Parsed(Message),
    Encoded(Encoded),
}

/// An encoded reply: one question at offset 12, no OPT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// The message's uncompressed length, when the writer knows it (saves `log` a decode).
    pub uncompressed: Option<usize>,
}

/// What the client asked, as far as its reply is concerned: ID, opcode, RD/CD, the question as
/// the client spelled it and its OPT record's size and flags. Plugins may change the request
/// (`rewrite`); the reply still answers what the client asked. The options a reply echoes are
/// read from the request as the chain left it (CoreDNS's `rewrite` edits the request its
/// `ScrubWriter` reads), and passed to [`Reply::finish`] separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    pub question: Option<Question>,
    /// The client's OPT record without its options; None without EDNS.
    pub edns: Option<ClientEdns>,
}

/// The size and flags of a client's OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientEdns {
    pub udp_size: u16,
    pub dnssec_ok: bool,
    /// The flag bits other than DO.
    pub z: u16,
}

/// EDNS option codes CoreDNS echoes from the client's OPT record when the reply has none of
/// its own (`request.supportedOptions`): NSID, EXPIRE, COOKIE, TCP-KEEPALIVE, PADDING.
pub const ECHOED_OPTIONS: [u16; 5] = [3, 9, 10, 11, 12];

impl Asked {
    #[inline]
    pub fn of(m: &Message) -> Asked {
        let mut a = Asked::without_question(m);
        a.question = m.questions.first().cloned();
        a
    }

    /// [`Asked::of`] without copying the question (`question` is None): for a caller that
    /// fills it in later, once the request is done with.
    #[inline]
    pub fn without_question(m: &Message) -> Asked {
        Asked {
            id: m.header.id,
            opcode: m.header.opcode,
            rd: m.header.rd,
            cd: m.header.cd,
            question: None,
            edns: m.edns.as_ref().map(|e| ClientEdns {
                udp_size: e.udp_size,
                dnssec_ok: e.dnssec_ok,
                z: e.z,
            }),
        }
    }

    /// A reply skeleton, like `Message::reply_to` on the original query.
    pub fn reply(&self) -> Message {
        let mut r = Message::default();
        r.header.id = self.id;
        r.header.qr = true;
        r.header.opcode = self.opcode;
        r.header.rd = self.rd;
        r.header.cd = self.cd;
        r.questions.extend(self.question.iter().cloned());
        r
    }
}

/// The OPT record a reply carries, CoreDNS's `SizeAndDo`, for a client whose OPT record is
/// `client` and a request with `options`: none if the client sent none. Otherwise the UDP size
/// is the client's, the version 0, DO set if the client or the reply's own OPT record has it;
/// the options are the reply's own if it has an OPT record (`reply`), else those of `options`
/// that `echo` accepts (see [`ECHOED_OPTIONS`]). The extended rcode is the reply's (CoreDNS
/// clears it here; Sextant keeps the rcode the reply has).
pub fn reply_opt(
    client: Option<ClientEdns>,
    options: &[EdnsOption],
    reply: Option<&Edns>,
    echo: impl Fn(u16) -> bool,
) -> Option<Edns> {
    let client = client?;
    let mut e = Edns::new(client.udp_size);
    match reply {
        Some(r) => {
            e.dnssec_ok = r.dnssec_ok || client.dnssec_ok;
            e.z = r.z & 0x7f00;
            e.ext_rcode = r.ext_rcode;
            e.options = r.options.clone();
        }
        None => {
            e.dnssec_ok = client.dnssec_ok;
            e.z = client.z & 0x7f00;
            e.options = options.iter().filter(|o| echo(o.code)).cloned().collect();
        }
    }
    Some(e)
}

/// Largest reply a client takes, CoreDNS's `request.Size`: over TCP 65535; over UDP the size
/// its OPT record advertises, at least 512; 512 without EDNS.
#[inline]
pub fn client_limit(tcp: bool, edns_size: Option<u16>) -> u16 {
    if tcp {
        return u16::MAX;
    }
    edns_size.map_or(512, |s| s.max(512))
}

impl Reply {
    /// A parsed reply.
    pub fn parsed(m: Message) -> Reply {
        Reply::Parsed(m)
    }

    /// An encoded reply (see [`Encoded`]).
    #[inline]
    pub fn encoded(bytes: Vec<u8>, uncompressed: Option<usize>) -> Reply {
        Reply::Encoded(Encoded {
            bytes,
            uncompressed,
        })
    }

    /// The header (ID and flags); a zero header if encoded bytes are shorter than one.
    #[inline]
    pub fn header(&self) -> Header {
        match self {
            Reply::Parsed(m) => m.header,
            Reply::Encoded(e) => read_header(&e.bytes).unwrap_or_default(),
        }
    }

    /// The full rcode (an encoded reply has no OPT, so only the header's four bits).
    #[inline]
    pub fn rcode(&self) -> Rcode {
        match self {
            Reply::Parsed(m) => m.rcode(),
            Reply::Encoded(_) => Rcode(self.header().rcode as u16),
        }
    }

    /// The reply as a message to read, if it is one already (no decode).
    pub fn as_message(&self) -> Option<&Message> {
        match self {
            Reply::Parsed(m) => Some(m),
            Reply::Encoded(_) => None,
        }
    }

    /// The reply as a message to inspect or change: encoded bytes are decoded once and the
    /// reply becomes a parsed one. None if the bytes do not decode (the reply is left as is).
    pub fn message_mut(&mut self) -> Option<&mut Message> {
        if let Reply::Encoded(e) = self {
            *self = Reply::parsed(Message::parse(&e.bytes).ok()?);
        }
        match self {
            Reply::Parsed(m) => Some(m),
            Reply::Encoded(_) => None,
        }
    }

    /// The reply as a message, decoding encoded bytes; None if they do not decode.
    pub fn into_message(self) -> Option<Message> {
        match self {
            Reply::Parsed(m) => Some(m),
            Reply::Encoded(e) => Message::parse(&e.bytes).ok(),
        }
    }

    /// Encoded length as the plugin wrote it (before the server's final touches).
    pub fn wire_len(&self) -> usize {
        match self {
            Reply::Parsed(m) => m.to_wire().len(),
            Reply::Encoded(e) => e.bytes.len(),
        }
    }

    /// The uncompressed length (what CoreDNS logs as the size): known, computed, or decoded.
    pub fn uncompressed_len(&self) -> Option<usize> {
        match self {
            Reply::Parsed(m) => Some(m.uncompressed_len()),
            Reply::Encoded(e) => e
                .uncompressed
                .or_else(|| Message::parse(&e.bytes).ok().map(|m| m.uncompressed_len())),
        }
    }

    /// The bytes sent to the client that asked `to`, at most `limit` bytes long: the client's ID,
    /// opcode and question spelling, QR set and Z clear, the OPT record of [`reply_opt`] (the
    /// request's `options` are echoed when `echo` accepts their code),
    /// and miekg/dns's truncation when the reply is larger than `limit` (at least 512). An
    /// encoded reply for the asked question that fits is patched in place; anything else is
    /// decoded and encoded again.
    pub fn finish(
        mut self,
        to: &Asked,
        options: &[EdnsOption],
        limit: usize,
        echo: impl Fn(u16) -> bool,
    ) -> Vec<u8> {
        self.take_finished(to, options, limit, echo)
    }

    /// [`Reply::finish`] without moving the reply (a parsed reply can be large): its contents
    /// are taken, an empty reply is left behind.
    pub fn take_finished(
        &mut self,
        to: &Asked,
        options: &[EdnsOption],
        limit: usize,
        echo: impl Fn(u16) -> bool,
    ) -> Vec<u8> {
        let limit = limit.max(512);
        match self {
            Reply::Encoded(e) => {
                match finish_encoded(std::mem::take(&mut e.bytes), to, options, limit, &echo) {
                    Ok(bytes) => bytes,
                    Err(bytes) => finish_undecided(bytes, to, options, limit, echo),
                }
            }
            Reply::Parsed(m) => finish_message(std::mem::take(m), to, options, limit, echo),
        }
    }
}

/// [`Reply::finish`] for encoded bytes its fast path could not take: decoded and finished as
/// a message.
#[cold]
fn finish_undecided(
    bytes: Vec<u8>,
    to: &Asked,
    options: &[EdnsOption],
    limit: usize,
    echo: impl Fn(u16) -> bool,
) -> Vec<u8> {
    let msg = match Message::parse(&bytes) {
        Ok(m) => m,
        // Unreadable bytes from a plugin: the client gets SERVFAIL, not garbage.
        Err(_) => {
            let mut r = to.reply();
            r.set_rcode(Rcode::SERVFAIL);
            r
        }
    };
    finish_message(msg, to, options, limit, echo)
}

/// [`Reply::finish`] for a parsed reply.
fn finish_message(
    mut reply: Message,
    to: &Asked,
    options: &[EdnsOption],
    limit: usize,
    echo: impl Fn(u16) -> bool,
) -> Vec<u8> {
    reply.header.id = to.id;
    reply.header.qr = true;
    reply.header.opcode = to.opcode;
    reply.header.z = false;
    if let Some(q) = &to.question {
        // Keep the client's spelling of the question.
        reply.questions.clear();
        reply.questions.push(q.clone());
    }
    let rcode = reply.rcode();
    reply.edns = reply_opt(to.edns, options, reply.edns.as_ref(), echo).map(|mut e| {
        e.ext_rcode = rcode.high();
        e
    });
    reply.to_wire_limited(limit).0
}

/// The fast path of [`Reply::finish`]: gives the bytes back untouched when they do not answer
/// the asked question or do not fit `limit` with the OPT record added.
fn finish_encoded(
    mut out: Vec<u8>,
    to: &Asked,
    options: &[EdnsOption],
    limit: usize,
    echo: &impl Fn(u16) -> bool,
) -> Result<Vec<u8>, Vec<u8>> {
    let Some(q) = &to.question else {
        return Err(out);
    };
    if !answers_question(&out, &q.name, q.qtype, q.qclass) {
        return Err(out);
    }
    let opt = match to.edns {
        Some(_) => reply_opt(to.edns, options, None, echo),
        None => None,
    };
    let opt_len = opt.as_ref().map_or(0, Edns::wire_len);
    if out.len() + opt_len > limit {
        return Err(out);
    }
    // answers_question checked the header and the question's length.
    let qname = q.name.wire();
    out[HEADER_LEN..HEADER_LEN + qname.len()].copy_from_slice(qname);
    out[0..2].copy_from_slice(&to.id.to_be_bytes());
    // QR set, opcode from the query, Z clear; AA/TC/RD/RA/AD/CD/rcode as the plugin wrote them.
    out[2] = (out[2] & 0x87) | 0x80 | ((to.opcode & 0x0f) << 3);
    out[3] &= !0x40;
    if let Some(e) = &opt {
        if !push_opt(&mut out, e) {
            return Err(out);
        }
    }
    Ok(out)
}

/// The header of an encoded message, if it has one.
#[inline]
pub fn read_header(bytes: &[u8]) -> Option<Header> {
    let id = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
    Some(Header::from_flags(id, read_flags(bytes)?))
}

/// The 16 flag bits of an encoded message.
#[inline]
pub fn read_flags(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]))
}

/// Writes the message ID (nothing if the bytes are shorter than a header).
#[inline]
pub fn set_id(bytes: &mut [u8], id: u16) {
    if bytes.len() >= HEADER_LEN {
        bytes[0..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// Writes the 16 flag bits (nothing if the bytes are shorter than a header).
#[inline]
pub fn set_flags(bytes: &mut [u8], flags: u16) {
    if bytes.len() >= HEADER_LEN {
        bytes[2..4].copy_from_slice(&flags.to_be_bytes());
    }
}

/// Section counts (question, answer, authority, additional).
fn counts(bytes: &[u8]) -> Option<[usize; 4]> {
    let c = |i: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]) as usize)
    };
    Some([c(4)?, c(6)?, c(8)?, c(10)?])
}

/// True when the message has exactly one question and it is `name` (compared
/// case-insensitively, uncompressed at offset 12), `qtype`, `qclass`.
#[inline]
pub fn answers_question(bytes: &[u8], name: &Name, qtype: RType, qclass: Class) -> bool {
    let qname = name.wire();
    let qend = HEADER_LEN + qname.len();
    match bytes.get(HEADER_LEN..qend + 4) {
        Some(stored) => {
            let (sname, tc) = stored.split_at(qname.len());
            bytes[4..6] == [0, 1]
                && (sname == qname || sname.eq_ignore_ascii_case(qname))
                && tc[..2] == qtype.0.to_be_bytes()
                && tc[2..] == qclass.0.to_be_bytes()
        }
        None => false,
    }
}

/// Writes `name`'s spelling over the question name at offset 12. The caller has checked with
/// [`answers_question`] that it is the same name; otherwise nothing is written.
pub fn set_question_spelling(bytes: &mut [u8], name: &Name) {
    let qname = name.wire();
    if let Some(dst) = bytes.get_mut(HEADER_LEN..HEADER_LEN + qname.len()) {
        if dst.eq_ignore_ascii_case(qname) {
            dst.copy_from_slice(qname);
        }
    }
}

/// Offsets of the TTL fields of every record in an encoded message (None if it is malformed).
pub fn ttl_offsets(bytes: &[u8]) -> Option<Vec<usize>> {
    let [qd, an, ns, ar] = counts(bytes)?;
    let mut p = HEADER_LEN;
    for _ in 0..qd {
        p = read_name(bytes, p).ok()?.1 + 4;
    }
    let mut out = Vec::with_capacity(an + ns + ar);
    for _ in 0..an + ns + ar {
        p = read_name(bytes, p).ok()?.1;
        let rdlen = u16::from_be_bytes([*bytes.get(p + 8)?, *bytes.get(p + 9)?]) as usize;
        out.push(p + 4);
        p += 10 + rdlen;
    }
    (p == bytes.len()).then_some(out)
}

/// Writes `ttl` into every TTL field at `offsets` (from [`ttl_offsets`]).
#[inline]
pub fn set_ttls(bytes: &mut [u8], offsets: impl IntoIterator<Item = usize>, ttl: u32) {
    let t = ttl.to_be_bytes();
    for o in offsets {
        if let Some(dst) = bytes.get_mut(o..o + 4) {
            dst.copy_from_slice(&t);
        }
    }
}

/// Appends `e` as the OPT record and counts it in ARCOUNT. False (bytes unchanged) when the
/// bytes have no header or ARCOUNT is full.
pub fn push_opt(bytes: &mut Vec<u8>, e: &Edns) -> bool {
    let Some([_, _, _, ar]) = counts(bytes) else {
        return false;
    };
    if ar >= u16::MAX as usize {
        return false;
    }
    bytes[10..12].copy_from_slice(&(ar as u16 + 1).to_be_bytes());
    e.encode_into(bytes);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RData, Record};
    use std::net::Ipv4Addr;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn stored(name: &str, count: usize) -> Vec<u8> {
        let q = Message::query(0, n(name), RType::A);
        let mut m = Message::reply_to(&q);
        m.header.aa = true;
        for i in 0..count {
            m.answers.push(Record::new(
                n(name),
                30,
                RData::A(Ipv4Addr::new(10, 0, (i / 256) as u8, i as u8)),
            ));
        }
        m.to_wire()
    }

    fn opts(q: &Message) -> &[EdnsOption] {
        q.edns.as_ref().map_or(&[], |e| &e.options)
    }

    fn echo_all(_: u16) -> bool {
        true
    }

    fn echo_std(c: u16) -> bool {
        ECHOED_OPTIONS.contains(&c)
    }

    #[test]
    fn encoded_reply_is_patched_in_place() {
        let mut q = Message::query(0xbeef, n("A.Example.Org."), RType::A);
        q.header.opcode = 0;
        let bytes = stored("a.example.org.", 2);
        let out =
            Reply::encoded(bytes.clone(), None).finish(&Asked::of(&q), opts(&q), 512, echo_all);
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.header.id, 0xbeef);
        assert!(m.header.qr && m.header.aa && !m.header.tc);
        assert!(m.questions[0].name.eq_case_sensitive(&q.questions[0].name));
        assert_eq!(m.answers.len(), 2);
        assert!(m.edns.is_none());
        // Same length: patched, not re-encoded.
        assert_eq!(out.len(), bytes.len());
    }

    #[test]
    fn the_opt_record_echoes_the_client() {
        let mut q = Message::query(1, n("a.example.org."), RType::A);
        let mut e = Edns::new(4096);
        e.dnssec_ok = true;
        e.z = 0x7fff;
        e.options = vec![
            EdnsOption {
                code: 10,
                data: vec![1; 8],
            },
            EdnsOption {
                code: 8,
                data: vec![0, 1, 24, 0, 10, 0, 0],
            },
        ];
        q.edns = Some(e);
        let asked = Asked::of(&q);
        for reply in [
            Reply::encoded(stored("a.example.org.", 2), None),
            Reply::parsed(Message::parse(&stored("a.example.org.", 2)).unwrap()),
        ] {
            let m = Message::parse(&reply.finish(&asked, opts(&q), 4096, echo_std)).unwrap();
            let e = m.edns.unwrap();
            assert_eq!(
                (e.udp_size, e.dnssec_ok, e.version, e.z),
                (4096, true, 0, 0x7f00)
            );
            // The cookie is echoed, the client subnet is not.
            assert_eq!(e.options.len(), 1);
            assert_eq!(e.options[0].code, 10);
        }
        // A reply with an OPT record of its own keeps its options and adds the client's DO.
        let mut m = Message::parse(&stored("a.example.org.", 1)).unwrap();
        let mut own = Edns::new(1232);
        own.options.push(EdnsOption {
            code: 3,
            data: b"ns1".to_vec(),
        });
        m.edns = Some(own);
        let back =
            Message::parse(&Reply::parsed(m).finish(&asked, opts(&q), 4096, echo_std)).unwrap();
        let e = back.edns.unwrap();
        assert_eq!((e.udp_size, e.dnssec_ok), (4096, true));
        assert_eq!(e.options[0].data, b"ns1");
        // No OPT from the client: none in the reply, even if the plugin set one.
        let plain = Asked::of(&Message::query(1, n("a.example.org."), RType::A));
        let mut m = Message::parse(&stored("a.example.org.", 1)).unwrap();
        m.edns = Some(Edns::new(1232));
        let back = Message::parse(&Reply::parsed(m).finish(&plain, &[], 512, echo_std)).unwrap();
        assert!(back.edns.is_none());
    }

    #[test]
    fn a_reply_for_another_question_or_too_big_is_reencoded() {
        let bytes = stored("a.example.org.", 2);
        for (name, t) in [
            ("b.example.org.", RType::A),
            ("a.example.org.", RType::AAAA),
        ] {
            let q = Message::query(1, n(name), t);
            let asked = Asked::of(&q);
            assert!(finish_encoded(bytes.clone(), &asked, &[], 512, &echo_all).is_err());
            // Re-encoded with the asked question.
            let m = Message::parse(&Reply::encoded(bytes.clone(), None).finish(
                &asked,
                &[],
                512,
                echo_all,
            ))
            .unwrap();
            assert_eq!(m.questions[0].name, n(name));
        }
        let q = Message::query(2, n("a.example.org."), RType::A);
        let asked = Asked::of(&q);
        let big = stored("a.example.org.", 40);
        assert!(finish_encoded(big.clone(), &asked, &[], 512, &echo_all).is_err());
        assert!(finish_encoded(vec![0; 11], &asked, &[], 512, &echo_all).is_err());
        assert!(finish_encoded(big.clone(), &asked, &[], 65535, &echo_all).is_ok());
        // Too big for UDP without EDNS: as many records as fit, TC.
        let out = Reply::encoded(big, None).finish(&asked, &[], 512, echo_all);
        let m = Message::parse(&out).unwrap();
        assert!(m.header.tc);
        // 12 + 19 question + 16 per record.
        assert_eq!(m.answers.len(), (512 - 31) / 16);
        // Garbage from a plugin: SERVFAIL.
        let m =
            Message::parse(&Reply::encoded(vec![0; 13], None).finish(&asked, &[], 512, echo_all))
                .unwrap();
        assert_eq!(m.rcode(), Rcode::SERVFAIL);
    }

    #[test]
    fn byte_edits() {
        let mut b = stored("a.example.org.", 3);
        set_id(&mut b, 0x1234);
        set_flags(&mut b, 0x8180);
        let h = read_header(&b).unwrap();
        assert_eq!(
            (h.id, h.qr, h.rd, h.ra, h.aa),
            (0x1234, true, true, true, false)
        );
        let offs = ttl_offsets(&b).unwrap();
        assert_eq!(offs.len(), 3);
        set_ttls(&mut b, offs.iter().copied(), 7);
        let m = Message::parse(&b).unwrap();
        assert!(m.answers.iter().all(|r| r.ttl == 7));
        assert!(answers_question(
            &b,
            &n("A.EXAMPLE.org."),
            RType::A,
            Class::IN
        ));
        set_question_spelling(&mut b, &n("A.EXAMPLE.org."));
        assert_eq!(
            Message::parse(&b).unwrap().questions[0].name.to_string(),
            "A.EXAMPLE.org."
        );
        // Another name is never written.
        set_question_spelling(&mut b, &n("b.example.org."));
        assert!(answers_question(
            &b,
            &n("a.example.org."),
            RType::A,
            Class::IN
        ));
        assert!(push_opt(&mut b, &Edns::new(4096)));
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.edns.unwrap().udp_size, 4096);
        assert!(ttl_offsets(&b[..b.len() - 1]).is_none());
        assert!(!push_opt(&mut vec![0; 5], &Edns::new(512)));
        assert_eq!(read_header(&[1]), None);
    }

    #[test]
    fn limits_follow_coredns() {
        assert_eq!(client_limit(true, Some(1232)), 65535);
        assert_eq!(client_limit(false, None), 512);
        assert_eq!(client_limit(false, Some(100)), 512);
        assert_eq!(client_limit(false, Some(4096)), 4096);
    }
}
