//! One listening address's routing table: picks the server block by longest zone match, runs its
//! plugin chain and turns the outcome into the bytes sent back (EDNS, truncation, error replies).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sextant_wire::{
    opcode, scan_query, Class, Edns, Message, Name, ParseError, Question, RType, Rcode, HEADER_LEN,
};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Proto, Request, Resolver, ViewFilter};

/// Largest UDP payload Sextant sends (DNS Flag Day 2020) and advertises in its OPT record.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;

/// What the server keeps of a query to shape its reply: ID, opcode, RD/CD, the question as the
/// client spelled it and its EDNS size and DO bit. Plugins may change the request (`rewrite`),
/// the reply still answers what the client asked.
#[derive(Clone, Debug)]
pub(crate) struct Asked {
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    pub question: Option<Question>,
    /// (UDP payload size, DO) of the client's OPT record.
    pub edns: Option<(u16, bool)>,
}

impl Asked {
    pub(crate) fn of(m: &Message) -> Asked {
        Asked {
            id: m.header.id,
            opcode: m.header.opcode,
            rd: m.header.rd,
            cd: m.header.cd,
            question: m.questions.first().cloned(),
            edns: m.edns.as_ref().map(|e| (e.udp_size, e.dnssec_ok)),
        }
    }

    /// A reply skeleton, like `Message::reply_to` on the original query.
    pub(crate) fn reply(&self) -> Message {
        let mut r = Message::default();
        r.header.id = self.id;
        r.header.qr = true;
        r.header.opcode = self.opcode;
        r.header.rd = self.rd;
        r.header.cd = self.cd;
        r.questions.extend(self.question.iter().cloned());
        r
    }

    /// Largest reply the client takes: 64 KiB over TCP; over UDP its EDNS size within
    /// 512..=[`MAX_UDP_PAYLOAD`], 512 without EDNS.
    pub(crate) fn limit(&self, proto: Proto) -> usize {
        match proto {
            Proto::Tcp => u16::MAX as usize,
            Proto::Udp => self
                .edns
                .map(|(size, _)| size.clamp(512, MAX_UDP_PAYLOAD))
                .unwrap_or(512) as usize,
        }
    }
}

/// A server block as served on one listener.
pub(crate) struct Block {
    pub chain: Vec<Arc<dyn Handler>>,
    /// True when the block has the `chaos` plugin (CH class queries are let in).
    pub chaos: bool,
    /// The block's view (name, filter): it serves a query only when the filter accepts it.
    pub view: Option<(Arc<str>, Arc<dyn ViewFilter>)>,
}

/// All blocks on one listener address, searched by longest zone match.
pub(crate) struct Site {
    /// Metric label, e.g. `dns://:53`.
    pub label: Arc<str>,
    /// (zone, block) sorted by zone length, longest first.
    pub zones: Vec<(Name, Arc<Block>)>,
}

impl Site {
    pub(crate) fn new(label: &str, mut zones: Vec<(Name, Arc<Block>)>) -> Site {
        zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.label_count()));
        Site {
            label: Arc::from(label),
            zones,
        }
    }

    /// The block for the request's question: the longest matching zone whose view, if it has
    /// one, accepts the request; blocks sharing a zone are tried in Corefile order. DS queries
    /// for a zone apex go to the parent zone's block when there is one, like CoreDNS.
    pub(crate) fn route<'s>(&'s self, req: &mut Request) -> Option<(&'s Name, &'s Arc<Block>)> {
        let qtype = req.qtype();
        let mut found = None;
        for (z, b) in &self.zones {
            let (inside, apex) = match req.msg.questions.first() {
                Some(q) => (q.name.is_subdomain_of(z), q.name == *z),
                None => (false, false),
            };
            if !inside {
                continue;
            }
            if let Some((_, filter)) = &b.view {
                if !filter.matches(req) {
                    continue;
                }
            }
            if qtype == RType::DS && apex && found.is_none() {
                found = Some((z, b));
                continue;
            }
            return Some((z, b));
        }
        found
    }

    /// Handles one packet; returns the reply bytes, or None to send nothing.
    pub(crate) async fn handle(
        self: &Arc<Site>,
        packet: &[u8],
        client: SocketAddr,
        local: SocketAddr,
        proto: Proto,
    ) -> Option<Vec<u8>> {
        self.handle_inner(packet, client, local, proto, None).await
    }

    /// Handles one packet received over TCP: the reply, then any further messages of the same
    /// exchange (a zone transfer) in `more`.
    pub(crate) async fn handle_stream(
        self: &Arc<Site>,
        packet: &[u8],
        client: SocketAddr,
        local: SocketAddr,
        more: &mut Vec<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        self.handle_inner(packet, client, local, Proto::Tcp, Some(more))
            .await
    }

    async fn handle_inner(
        self: &Arc<Site>,
        packet: &[u8],
        client: SocketAddr,
        local: SocketAddr,
        proto: Proto,
        more: Option<&mut Vec<Vec<u8>>>,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        // The usual query (one question, at most an OPT) is read by the in-place scanner; the
        // full parser handles the rest and decides on FORMERR.
        let parsed = match scan_query(packet) {
            Ok(v) => Ok(v.to_message()),
            Err(_) => Message::parse(packet),
        };
        let msg = match parsed {
            Ok(m) => m,
            Err(ParseError::NoHeader) => return None,
            Err(ParseError::Malformed {
                header, question, ..
            }) => {
                if header.qr {
                    return None;
                }
                // Like miekg/dns's accept filter, the opcode is judged before the body: an
                // unsupported opcode is NOTIMP whatever follows the header.
                let rcode = if header.opcode != opcode::QUERY && header.opcode != opcode::NOTIFY {
                    Rcode::NOTIMP
                } else {
                    Rcode::FORMERR
                };
                let mut r = Message::default();
                r.header.id = header.id;
                r.header.qr = true;
                r.header.opcode = header.opcode;
                r.header.rcode = rcode.low();
                if let Some(q) = question {
                    r.questions.push(q);
                }
                crate::metrics::record_dropped(&self.label, proto, packet.len(), rcode);
                return Some(r.to_wire_limited(512).0);
            }
        };
        if msg.header.qr {
            return None;
        }
        let asked = Asked::of(&msg);
        // Like miekg/dns's accept filter: QUERY and NOTIFY go to the plugins.
        if msg.header.opcode != opcode::QUERY && msg.header.opcode != opcode::NOTIFY {
            let mut r = Message::reply_to(&msg);
            r.header.rd = false;
            r.header.cd = false;
            r.header.rcode = Rcode::NOTIMP.low();
            return Some(finish(&asked, r, proto));
        }
        if msg.questions.len() != 1 || msg.answers.len() > 1 || msg.authority.len() > 1 {
            let mut r = Message::reply_to(&msg);
            r.set_rcode(Rcode::FORMERR);
            return Some(finish(&asked, r, proto));
        }
        if let Some(e) = &msg.edns {
            if e.version > 0 {
                let mut r = Message::reply_to(&msg);
                r.edns = Some(Edns::new(MAX_UDP_PAYLOAD));
                r.set_rcode(Rcode::BADVERS);
                return Some(finish(&asked, r, proto));
            }
        }
        let mut req = Request {
            msg,
            client,
            local,
            proto,
            size: packet.len(),
            start,
            zone: Name::root(),
            server: self.label.clone(),
            depth: 0,
            resolver: Some(self.clone() as Arc<dyn Resolver>),
            view: None,
        };
        let Some((zone, block)) = self.route(&mut req) else {
            crate::metrics::record_dropped(&self.label, proto, packet.len(), Rcode::REFUSED);
            let mut r = Message::reply_to(&req.msg);
            r.set_rcode(Rcode::REFUSED);
            return Some(finish(&asked, r, proto));
        };
        let qclass = req.qclass();
        if qclass != Class::IN && !(qclass == Class::CH && block.chaos) {
            let mut r = Message::reply_to(&req.msg);
            r.set_rcode(Rcode::REFUSED);
            return Some(finish(&asked, r, proto));
        }
        req.zone = zone.clone();
        req.view = block.view.as_ref().map(|(name, _)| name.clone());
        let block = block.clone();
        let mut out = run_chain(&block, &mut req).await;
        if let Some(ext) = out.ext.take() {
            return finish_ext(&asked, out, *ext, proto, more);
        }
        if let Some(w) = out.wire.take() {
            match finish_wire(&asked, w.bytes, proto) {
                Ok(bytes) => return Some(bytes),
                Err(bytes) => {
                    out.wire = Some(crate::plugin::WireReply {
                        bytes,
                        uncompressed: w.uncompressed,
                    })
                }
            }
        }
        let reply = outcome_to_reply(&asked, out);
        Some(finish(&asked, reply, proto))
    }
}

/// Finishes an outcome with its rarely used parts: nothing for a silent one; the reply, signed
/// if a signer asks, and over TCP every further message, each finished and signed in turn.
fn finish_ext(
    asked: &Asked,
    out: Outcome,
    mut ext: crate::plugin::OutcomeExt,
    proto: Proto,
    more: Option<&mut Vec<Vec<u8>>>,
) -> Option<Vec<u8>> {
    if ext.silent {
        return None;
    }
    let reserve = ext.signer.as_ref().map_or(0, |s| s.reserve());
    let reply = outcome_to_reply(asked, out);
    let mut first = finish_reserving(asked, reply, proto, reserve);
    if let Some(s) = ext.signer.as_mut() {
        s.sign(&mut first);
    }
    if let Some(more) = more {
        for m in std::mem::take(&mut ext.more) {
            let mut b = finish_reserving(asked, m, proto, reserve);
            if let Some(s) = ext.signer.as_mut() {
                s.sign(&mut b);
            }
            more.push(b);
        }
    }
    Some(first)
}

/// Runs a block's chain with CoreDNS's panic semantics left to the caller (tasks isolate panics).
async fn run_chain(block: &Block, req: &mut Request) -> Outcome {
    Next::new(&block.chain).run(req).await
}

/// Turns what the chain returned into a reply message.
pub(crate) fn outcome_to_reply(query: &Asked, mut out: Outcome) -> Message {
    out.message_mut();
    match out.reply {
        Some(m) => m,
        None => {
            let mut r = query.reply();
            let rc = match out.rcode {
                Rcode::SERVFAIL | Rcode::REFUSED | Rcode::FORMERR | Rcode::NOTIMP => out.rcode,
                _ => Rcode::SERVFAIL,
            };
            r.set_rcode(rc);
            r
        }
    }
}

/// Final touches before the reply leaves: the client's ID and question, EDNS as the client asked
/// (our buffer size, DO copied, no options echoed), truncation to what the client can take.
pub(crate) fn finish(query: &Asked, reply: Message, proto: Proto) -> Vec<u8> {
    finish_reserving(query, reply, proto, 0)
}

/// [`finish`], keeping `reserve` bytes of the client's limit free (for a TSIG record).
fn finish_reserving(query: &Asked, mut reply: Message, proto: Proto, reserve: usize) -> Vec<u8> {
    reply.header.id = query.id;
    reply.header.qr = true;
    reply.header.opcode = query.opcode;
    reply.header.z = false;
    if let Some(q) = &query.question {
        // Keep the client's spelling of the question.
        reply.questions = vec![q.clone()];
    }
    let rcode = reply.rcode();
    match query.edns {
        Some((_, dnssec_ok)) => {
            let mut e = Edns::new(MAX_UDP_PAYLOAD);
            e.dnssec_ok = dnssec_ok;
            if let Some(re) = &reply.edns {
                // Options a plugin set on purpose (e.g. NSID) survive; nothing is echoed blindly.
                e.options = re.options.clone();
            }
            e.ext_rcode = rcode.high();
            reply.edns = Some(e);
        }
        None => reply.edns = None,
    }
    reply
        .to_wire_limited(query.limit(proto).saturating_sub(reserve))
        .0
}

/// The fast path for a reply a plugin sent as wire bytes (see [`crate::plugin::WireReply`]):
/// patches the ID, QR/opcode/Z and the client's spelling of the question in place, and adds the
/// OPT record the client should see. Gives the bytes back untouched when they do not fit this
/// query (a different question, or larger than the client's limit): the caller then decodes
/// them and uses [`finish`], which truncates.
pub(crate) fn finish_wire(
    query: &Asked,
    mut out: Vec<u8>,
    proto: Proto,
) -> Result<Vec<u8>, Vec<u8>> {
    let Some(q) = &query.question else {
        return Err(out);
    };
    let qname = q.name.wire();
    let qend = HEADER_LEN + qname.len();
    let fits = match out.get(HEADER_LEN..qend + 4) {
        Some(stored_q) => {
            let (sname, stc) = stored_q.split_at(qname.len());
            out[4..6] == [0, 1]
                && sname.eq_ignore_ascii_case(qname)
                && stc[..2] == q.qtype.0.to_be_bytes()
                && stc[2..] == q.qclass.0.to_be_bytes()
        }
        None => false,
    };
    let opt_len = if query.edns.is_some() { 11 } else { 0 };
    let arcount = match out.get(10..12) {
        Some(b) if fits => u16::from_be_bytes([b[0], b[1]]),
        _ => return Err(out),
    };
    if out.len() + opt_len > query.limit(proto) || (opt_len > 0 && arcount == u16::MAX) {
        return Err(out);
    }
    out[0..2].copy_from_slice(&query.id.to_be_bytes());
    // QR set, opcode from the query, Z clear; AA/TC/RD/RA/AD/CD/rcode as the plugin wrote them.
    out[2] = (out[2] & 0x87) | 0x80 | ((query.opcode & 0x0f) << 3);
    out[3] &= !0x40;
    out[HEADER_LEN..qend].copy_from_slice(qname);
    if let Some((_, dnssec_ok)) = query.edns {
        out[10..12].copy_from_slice(&(arcount + 1).to_be_bytes());
        out.push(0); // root owner
        out.extend_from_slice(&RType::OPT.0.to_be_bytes());
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        // Extended rcode 0 (wire replies carry a four-bit rcode), version 0, DO as asked.
        out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        out.extend_from_slice(&[0, 0]);
    }
    Ok(out)
}

impl Resolver for Site {
    fn resolve<'a>(&'a self, req: &'a Request, name: Name, qtype: RType) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut q = Message::query(rand::random(), name, qtype);
            q.edns = req.msg.edns.as_ref().map(|e| {
                let mut n = Edns::new(e.udp_size.max(MAX_UDP_PAYLOAD));
                n.dnssec_ok = e.dnssec_ok;
                n
            });
            q.header.cd = req.msg.header.cd;
            let mut sub = Request {
                size: 0,
                msg: q,
                client: req.client,
                local: req.local,
                proto: req.proto,
                start: Instant::now(),
                zone: Name::root(),
                server: self.label.clone(),
                depth: req.depth + 1,
                resolver: req.resolver.clone(),
                view: None,
            };
            let Some((zone, block)) = self.route(&mut sub) else {
                return Outcome::rcode("", Rcode::REFUSED);
            };
            sub.zone = zone.clone();
            sub.view = block.view.as_ref().map(|(n, _)| n.clone());
            let block = block.clone();
            let mut out = Next::new(&block.chain).run(&mut sub).await;
            // Callers inspect the reply as a message.
            out.message_mut();
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::{RData, Record};
    use std::net::Ipv4Addr;

    fn stored(name: &str, n: usize) -> Vec<u8> {
        let q = Message::query(0, Name::parse(name).unwrap(), RType::A);
        let mut m = Message::reply_to(&q);
        m.header.aa = true;
        for i in 0..n {
            m.answers.push(Record::new(
                Name::parse(name).unwrap(),
                30,
                RData::A(Ipv4Addr::new(10, 0, (i / 256) as u8, i as u8)),
            ));
        }
        m.to_wire()
    }

    #[test]
    fn finish_wire_patches_id_question_and_adds_opt() {
        let mut q = Message::query(0xbeef, Name::parse("A.Example.Org.").unwrap(), RType::A);
        let bytes = stored("a.example.org.", 2);
        let out = finish_wire(&Asked::of(&q), bytes.clone(), Proto::Udp).unwrap();
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.header.id, 0xbeef);
        assert!(m.header.qr && m.header.aa);
        assert!(m.questions[0].name.eq_case_sensitive(&q.questions[0].name));
        assert_eq!(m.answers.len(), 2);
        assert!(m.edns.is_none());

        let mut e = Edns::new(4096);
        e.dnssec_ok = true;
        q.edns = Some(e);
        let m = Message::parse(&finish_wire(&Asked::of(&q), bytes.clone(), Proto::Udp).unwrap())
            .unwrap();
        let e = m.edns.unwrap();
        assert_eq!(
            (e.udp_size, e.dnssec_ok, e.version),
            (MAX_UDP_PAYLOAD, true, 0)
        );

        // Another question, or too big for the client: None (the caller decodes and truncates).
        let other = Message::query(1, Name::parse("b.example.org.").unwrap(), RType::A);
        assert!(finish_wire(&Asked::of(&other), bytes.clone(), Proto::Udp).is_err());
        let aaaa = Message::query(1, Name::parse("a.example.org.").unwrap(), RType::AAAA);
        assert!(finish_wire(&Asked::of(&aaaa), bytes.clone(), Proto::Udp).is_err());
        let big = stored("a.example.org.", 40);
        let q512 = Message::query(2, Name::parse("a.example.org.").unwrap(), RType::A);
        assert!(finish_wire(&Asked::of(&q512), big.clone(), Proto::Udp).is_err());
        assert!(finish_wire(&Asked::of(&q512), vec![0; 11], Proto::Udp).is_err());
        assert!(finish_wire(&Asked::of(&q512), big, Proto::Tcp).is_ok());
    }

    #[test]
    fn a_wire_outcome_too_big_for_udp_is_truncated_by_finish() {
        let q = Message::query(3, Name::parse("a.example.org.").unwrap(), RType::A);
        let out = Outcome::wire("cache", stored("a.example.org.", 40));
        let reply = outcome_to_reply(&Asked::of(&q), out);
        let bytes = finish(&Asked::of(&q), reply, Proto::Udp);
        assert!(bytes.len() <= 512);
        let m = Message::parse(&bytes).unwrap();
        assert!(m.header.tc);
        assert_eq!(m.header.id, 3);
    }
}
