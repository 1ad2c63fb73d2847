//! One listening address's routing table: picks the server block by longest zone match, runs its
//! plugin chain and turns the outcome into the bytes sent back (EDNS, truncation, error replies).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sextant_wire::{opcode, Class, Edns, Message, Name, ParseError, RType, Rcode};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Proto, Request, Resolver};

/// Largest UDP payload Sextant sends (DNS Flag Day 2020) and advertises in its OPT record.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// A server block as served on one listener.
pub struct Block {
    /// Zones this block claims on this listener (normalised).
    pub zones: Vec<Name>,
    pub chain: Vec<Arc<dyn Handler>>,
    /// True when the block has the `chaos` plugin (CH class queries are let in).
    pub chaos: bool,
    /// True when the block has `prometheus` (server-level drops are counted for it).
    pub metrics: bool,
}

/// All blocks on one listener address, searched by longest zone match.
pub struct Site {
    /// Metric label, e.g. `dns://:53`.
    pub label: Arc<str>,
    /// (zone, block) sorted by zone length, longest first.
    pub zones: Vec<(Name, Arc<Block>)>,
}

impl Site {
    pub fn new(label: &str, mut zones: Vec<(Name, Arc<Block>)>) -> Site {
        zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.label_count()));
        Site {
            label: Arc::from(label),
            zones,
        }
    }

    /// The block for `qname`: the longest matching zone. DS queries for a zone apex go to the
    /// parent zone's block when there is one, like CoreDNS.
    pub fn route(&self, qname: &Name, qtype: RType) -> Option<(&Name, &Arc<Block>)> {
        let mut found = None;
        for (z, b) in &self.zones {
            if qname.is_subdomain_of(z) {
                if qtype == RType::DS && z == qname && found.is_none() {
                    found = Some((z, b));
                    continue;
                }
                return Some((z, b));
            }
        }
        found
    }

    /// Handles one packet; returns the reply bytes, or None to send nothing.
    pub async fn handle(
        self: &Arc<Site>,
        packet: &[u8],
        client: SocketAddr,
        local: SocketAddr,
        proto: Proto,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        let msg = match Message::parse(packet) {
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
                let rcode = if header.opcode != opcode::QUERY {
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
        if msg.header.opcode != opcode::QUERY {
            let mut r = Message::reply_to(&msg);
            r.header.rd = false;
            r.header.cd = false;
            r.header.rcode = Rcode::NOTIMP.low();
            return Some(finish(&msg, r, proto));
        }
        if msg.questions.len() != 1 || msg.answers.len() > 1 || msg.authority.len() > 1 {
            let mut r = Message::reply_to(&msg);
            r.set_rcode(Rcode::FORMERR);
            return Some(finish(&msg, r, proto));
        }
        if let Some(e) = &msg.edns {
            if e.version > 0 {
                let mut r = Message::reply_to(&msg);
                r.edns = Some(Edns::new(MAX_UDP_PAYLOAD));
                r.set_rcode(Rcode::BADVERS);
                return Some(finish(&msg, r, proto));
            }
        }
        let q = msg.questions[0].clone();
        let Some((zone, block)) = self.route(&q.name, q.qtype) else {
            crate::metrics::record_dropped(&self.label, proto, packet.len(), Rcode::REFUSED);
            let mut r = Message::reply_to(&msg);
            r.set_rcode(Rcode::REFUSED);
            return Some(finish(&msg, r, proto));
        };
        if q.qclass != Class::IN && !(q.qclass == Class::CH && block.chaos) {
            let mut r = Message::reply_to(&msg);
            r.set_rcode(Rcode::REFUSED);
            return Some(finish(&msg, r, proto));
        }
        let zone = zone.clone();
        let block = block.clone();
        let query = msg.clone();
        let mut req = Request {
            msg,
            client,
            local,
            proto,
            size: packet.len(),
            start,
            zone,
            server: self.label.clone(),
            depth: 0,
            resolver: Some(self.clone() as Arc<dyn Resolver>),
        };
        let out = run_chain(&block, &mut req).await;
        let reply = outcome_to_reply(&query, out);
        Some(finish(&query, reply, proto))
    }
}

/// Runs a block's chain with CoreDNS's panic semantics left to the caller (tasks isolate panics).
async fn run_chain(block: &Block, req: &mut Request) -> Outcome {
    Next::new(&block.chain).run(req).await
}

/// Turns what the chain returned into a reply message.
pub fn outcome_to_reply(query: &Message, out: Outcome) -> Message {
    match out.reply {
        Some(m) => m,
        None => {
            let mut r = Message::reply_to(query);
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
pub fn finish(query: &Message, mut reply: Message, proto: Proto) -> Vec<u8> {
    reply.header.id = query.header.id;
    reply.header.qr = true;
    reply.header.opcode = query.header.opcode;
    reply.header.z = false;
    if let Some(q) = query.questions.first() {
        // Keep the client's spelling of the question.
        reply.questions = vec![q.clone()];
    }
    let rcode = reply.rcode();
    match &query.edns {
        Some(qe) => {
            let mut e = Edns::new(MAX_UDP_PAYLOAD);
            e.dnssec_ok = qe.dnssec_ok;
            if let Some(re) = &reply.edns {
                // Options a plugin set on purpose (e.g. NSID) survive; nothing is echoed blindly.
                e.options = re.options.clone();
            }
            e.ext_rcode = rcode.high();
            reply.edns = Some(e);
        }
        None => reply.edns = None,
    }
    let limit = match proto {
        Proto::Tcp => u16::MAX as usize,
        Proto::Udp => query
            .edns
            .as_ref()
            .map(|e| e.udp_size.clamp(512, MAX_UDP_PAYLOAD))
            .unwrap_or(512) as usize,
    };
    reply.to_wire_limited(limit).0
}

impl Resolver for Site {
    fn resolve<'a>(&'a self, req: &'a Request, name: Name, qtype: RType) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut q = Message::query(rand::random(), name.clone(), qtype);
            q.edns = req.msg.edns.as_ref().map(|e| {
                let mut n = Edns::new(e.udp_size.max(MAX_UDP_PAYLOAD));
                n.dnssec_ok = e.dnssec_ok;
                n
            });
            q.header.cd = req.msg.header.cd;
            let Some((zone, block)) = self.route(&name, qtype) else {
                return Outcome::rcode("", Rcode::REFUSED);
            };
            let mut sub = Request {
                size: 0,
                msg: q,
                client: req.client,
                local: req.local,
                proto: req.proto,
                start: Instant::now(),
                zone: zone.clone(),
                server: self.label.clone(),
                depth: req.depth + 1,
                resolver: req.resolver.clone(),
            };
            let block = block.clone();
            Next::new(&block.chain).run(&mut sub).await
        })
    }
}
