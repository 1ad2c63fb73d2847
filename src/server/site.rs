//! One listening address's routing table: picks the server block by longest zone match, runs its
//! plugin chain and turns the outcome into the bytes sent back (error replies; the EDNS echo
//! and truncation rules are CoreDNS's, applied by `sextant_wire::Reply::finish`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sextant_wire::reply::client_limit;
use sextant_wire::{
    opcode, scan_query, Asked, Class, Edns, Message, Name, ParseError, Question, RType, Rcode,
    Reply, HEADER_LEN,
};

use crate::plugin::{
    BoxFuture, Handler, Next, Outcome, Proto, ReplyTap, Request, Resolver, ViewFilter,
};

/// Largest UDP reply Sextant sends (DNS Flag Day 2020), whatever size the client advertises:
/// the amplification bound of faults.md §5.6. Below it replies are truncated to the client's
/// size as CoreDNS truncates them (`request.Size`, see [`limit`]). Also the size Sextant
/// advertises in queries it makes itself (re-entering the server for a CNAME target) and in OPT
/// records a plugin adds for an extended rcode. The OPT record of a reply carries the client's
/// own size (CoreDNS's `SizeAndDo`), not this.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;

/// True for the EDNS options a reply without an OPT record of its own echoes from the client's
/// (CoreDNS's built-in list; the options `rewrite edns0 local` registers there are echoed by
/// the `rewrite` plugin itself, which puts an OPT record on the reply).
pub(crate) fn echoed_option(code: u16) -> bool {
    sextant_wire::reply::ECHOED_OPTIONS.contains(&code)
}

/// Largest reply the client gets: CoreDNS's `request.Size` (TCP 65535; UDP the client's EDNS
/// size, at least 512), over UDP at most [`MAX_UDP_PAYLOAD`].
fn limit(asked: &Asked, proto: Proto) -> usize {
    let size = client_limit(proto == Proto::Tcp, asked.edns.map(|e| e.udp_size));
    match proto {
        Proto::Tcp => size as usize,
        Proto::Udp => size.min(MAX_UDP_PAYLOAD) as usize,
    }
}

/// The bytes of a reply the server writes itself, for a query the checks ahead of the chain
/// turn away (`r`, made from `msg` with its rcode set).
fn early_reply(msg: &Message, r: Message, proto: Proto) -> Vec<u8> {
    finish(&Asked::of(msg), msg.edns.as_ref(), Reply::parsed(r), proto)
}

/// The bytes sent back for `reply` to the client that asked `asked`, echoing options of the
/// request's OPT record `req_opt` (see [`Reply::finish`]).
pub(crate) fn finish(asked: &Asked, req_opt: Option<&Edns>, reply: Reply, proto: Proto) -> Vec<u8> {
    let options = req_opt.map_or(&[][..], |e| &e.options[..]);
    reply.finish(asked, options, limit(asked, proto), echoed_option)
}

/// Plugins that open the server to classes other than IN (CoreDNS's `EnableChaos`).
const OPEN_CLASSES: [&str; 2] = ["chaos", "forward"];

/// A server block as served on one listener.
pub(crate) struct Block {
    pub chain: Vec<Arc<dyn Handler>>,
    /// True when the block has the `chaos` plugin (CH class queries are let in).
    pub chaos: bool,
    /// The block's view (name, filter): it serves a query only when the filter accepts it.
    pub view: Option<(Arc<str>, Arc<dyn ViewFilter>)>,
    /// The block's `metadata` plugin, whose collector fills a request's metadata while it is
    /// routed, before the view filters read it (CoreDNS's `metaCollector`).
    pub collector: Option<Arc<dyn Handler>>,
    /// Where the replies sent for the block's requests are reported (its `dnstap` plugin).
    pub tap: Option<BlockTap>,
    /// The chain may answer a query at once, without futures (`plugin::chain_answers_now`).
    pub now: bool,
}

/// A block's [`ReplyTap`] and what it asks of the server, read once.
pub(crate) struct BlockTap {
    tap: Arc<dyn ReplyTap>,
    /// Keep the query's bytes in `Request::raw`.
    query_bytes: bool,
    /// Leave the question in the request until the tap has seen the reply.
    reads_request: bool,
}

impl Block {
    /// A block serving `chain`; its metadata collector is the first one in the chain.
    pub(crate) fn new(
        chain: Vec<Arc<dyn Handler>>,
        chaos: bool,
        view: Option<(Arc<str>, Arc<dyn ViewFilter>)>,
    ) -> Block {
        let collector = chain
            .iter()
            .find(|h| h.metadata_collector().is_some())
            .cloned();
        let tap = chain
            .iter()
            .find_map(|h| h.reply_tap())
            .map(|tap| BlockTap {
                query_bytes: tap.wants_query_bytes(),
                reads_request: tap.reads_request(),
                tap,
            });
        Block {
            now: crate::plugin::chain_answers_now(&chain),
            chain,
            chaos,
            view,
            collector,
            tap,
        }
    }
}

/// All blocks on one listener address, searched by longest zone match.
pub(crate) struct Site {
    /// Metric label, e.g. `dns://:53`.
    pub label: Arc<str>,
    /// (zone, block) sorted by zone length, longest first; shared so a request names its zone
    /// without copying it.
    pub zones: Vec<(Arc<Name>, Arc<Block>)>,
    /// The root name, a request's zone until it is routed.
    root: Arc<Name>,
    /// Queries of any class are let in: some block on this address has `chaos` or `forward`
    /// (CoreDNS decides per server, that is per listening address, not per block).
    pub any_class: bool,
    /// Some block's chain may answer a query at once (`Block::now`): UDP queries are tried
    /// with [`Site::handle_udp_now`] first.
    pub now: bool,
}

impl Site {
    pub(crate) fn new(label: &str, mut zones: Vec<(Name, Arc<Block>)>) -> Site {
        zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.label_count()));
        let any_class = zones
            .iter()
            .any(|(_, b)| b.chaos || b.chain.iter().any(|h| OPEN_CLASSES.contains(&h.name())));
        let now = zones.iter().any(|(_, b)| b.now);
        Site {
            now,
            label: Arc::from(label),
            zones: zones.into_iter().map(|(z, b)| (Arc::new(z), b)).collect(),
            root: Arc::new(Name::root()),
            any_class,
        }
    }

    /// The block for the request's question: the longest matching zone whose view, if it has
    /// one, accepts the request; blocks sharing a zone are tried in Corefile order. DS queries
    /// for a zone apex go to the parent zone's block when there is one, like CoreDNS. Like
    /// CoreDNS, each block tried that has the `metadata` plugin collects the request's metadata
    /// first (a fresh map each time), so its view can read it and its chain finds it there.
    pub(crate) fn route<'s>(
        &'s self,
        req: &mut Request,
    ) -> Option<(&'s Arc<Name>, &'s Arc<Block>)> {
        let qtype = req.qtype();
        let mut found = None;
        for (z, b) in &self.zones {
            let (inside, apex) = match req.msg.questions.first() {
                // Every name is under the root: no label comparison (blocks for `.`, the
                // common case, and each view block of `.` would pay one per query).
                Some(q) if z.is_root() => (true, q.name.is_root()),
                Some(q) => (q.name.is_subdomain_of(z), q.name == **z),
                None => (false, false),
            };
            if !inside {
                continue;
            }
            if let Some(c) = b.collector.as_ref().and_then(|h| h.metadata_collector()) {
                c.collect(req);
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

    /// Handles one packet; returns the reply bytes, or None to send nothing. (Not an `async fn`
    /// itself: a wrapper layer would hold a second copy of the arguments in every query's
    /// future.)
    pub(crate) fn handle<'a>(
        self: &'a Arc<Site>,
        packet: &'a [u8],
        client: SocketAddr,
        local: SocketAddr,
        proto: Proto,
    ) -> impl Future<Output = Option<Vec<u8>>> + Send + 'a {
        self.handle_inner(packet, client, local, proto, None, false, None)
    }

    /// Handles one UDP datagram arriving on a socket whose write stack is full or not
    /// (`backlogged`, see `Request::backlogged`).
    pub(crate) fn handle_udp<'a>(
        self: &'a Arc<Site>,
        packet: &'a [u8],
        client: SocketAddr,
        local: SocketAddr,
        backlogged: bool,
    ) -> impl Future<Output = Option<Vec<u8>>> + Send + 'a {
        self.handle_inner(packet, client, local, Proto::Udp, None, backlogged, None)
    }

    /// Handles one packet received over TCP: the reply, then any further messages of the same
    /// exchange (a zone transfer) in `more`.
    pub(crate) fn handle_stream<'a>(
        self: &'a Arc<Site>,
        packet: &'a [u8],
        client: SocketAddr,
        local: SocketAddr,
        more: &'a mut Vec<Vec<u8>>,
    ) -> impl Future<Output = Option<Vec<u8>>> + Send + 'a {
        self.handle_inner(packet, client, local, Proto::Tcp, Some(more), false, None)
    }

    /// Answers one UDP datagram as [`Site::handle_udp`] does when the block's chain can at once,
    /// without futures ([`Next::run_now`]): Some(what to send), on the packet as received, no
    /// copy of it, nothing boxed. None when the chain cannot: nothing has been done then that
    /// anyone could see (the query was read and routed only), so the caller serves the packet
    /// with [`Site::handle_udp`] instead.
    pub(crate) fn handle_udp_now(
        self: &Arc<Site>,
        packet: &[u8],
        client: SocketAddr,
        local: SocketAddr,
        backlogged: bool,
    ) -> Option<Option<Vec<u8>>> {
        let mut declined = false;
        let done = {
            let fut = std::pin::pin!(self.handle_inner(
                packet,
                client,
                local,
                Proto::Udp,
                None,
                backlogged,
                Some(&mut declined),
            ));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            // Never pending: with `now` set, the chain runs without futures.
            match fut.poll(&mut cx) {
                std::task::Poll::Ready(reply) => Some(reply),
                std::task::Poll::Pending => None,
            }
        };
        done.filter(|_| !declined)
    }

    /// `now`: run the chain with [`Next::run_now`] only, without waiting; if it declines, set
    /// the flag and return None at once.
    #[allow(clippy::too_many_arguments)]
    async fn handle_inner(
        self: &Arc<Site>,
        packet: &[u8],
        client: SocketAddr,
        local: SocketAddr,
        proto: Proto,
        more: Option<&mut Vec<Vec<u8>>>,
        backlogged: bool,
        now: Option<&mut bool>,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        // Scoped: the parsed message is moved into the request, but a local that lives to the
        // end of the function keeps its room in this future (boxed per UDP query) even once
        // moved from; declared in this block, it is gone before the chain's await.
        let (mut req, mut asked, asked_q) = {
            // The usual query (one question, at most an OPT) is read by the in-place scanner;
            // the full parser handles the rest and decides on FORMERR.
            let (parsed, scanned) = match scan_query(packet) {
                Ok(v) => (Ok(v.to_message()), true),
                Err(_) => (Message::parse(packet), false),
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
                    let rcode = if header.opcode != opcode::QUERY && header.opcode != opcode::NOTIFY
                    {
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
            // Like miekg/dns's accept filter: QUERY and NOTIFY go to the plugins.
            if msg.header.opcode != opcode::QUERY && msg.header.opcode != opcode::NOTIFY {
                let mut r = Message::reply_to(&msg);
                r.header.rd = false;
                r.header.cd = false;
                r.header.rcode = Rcode::NOTIMP.low();
                return Some(early_reply(&msg, r, proto));
            }
            if msg.questions.len() != 1 || msg.answers.len() > 1 || msg.authority.len() > 1 {
                let mut r = Message::reply_to(&msg);
                r.set_rcode(Rcode::FORMERR);
                return Some(early_reply(&msg, r, proto));
            }
            let q = &msg.questions[0];
            // Like CoreDNS's ServeDNS: the class, then the EDNS version, then the zone.
            if q.qclass != Class::IN && !self.any_class {
                crate::metrics::record_dropped(&self.label, proto, packet.len(), Rcode::REFUSED);
                let mut r = Message::reply_to(&msg);
                r.set_rcode(Rcode::REFUSED);
                return Some(early_reply(&msg, r, proto));
            }
            // The question as asked is needed only once the chain is done: it is taken back from
            // the request then, or read again from the packet if the chain changed it (see
            // `asked_question`), instead of being copied here.
            let mut asked = Asked::without_question(&msg);
            let asked_q = AskedQuestion::of(q, packet, scanned);
            if asked_q.is_none() {
                asked.question = Some(q.clone());
            }
            if let Some(e) = &msg.edns {
                if e.version > 0 {
                    // CoreDNS's edns.Version: a fresh OPT record (size 0, version 0) with the
                    // extended rcode, written without the usual EDNS echo.
                    let mut r = Message::reply_to(&msg);
                    r.edns = Some(Edns::new(0));
                    r.set_rcode(Rcode::BADVERS);
                    return Some(r.to_wire_limited(limit(&asked, proto)).0);
                }
            }
            // A TSIG's MAC covers the request's exact bytes: keep them for the `tsig` plugin.
            let raw = msg
                .additional
                .last()
                .filter(|r| r.rtype == sextant_wire::tsig::TSIG)
                .map(|_| Arc::from(packet));
            // Inline: this future (boxed per UDP query) must stay a small-bin block for glibc
            // (at most 1000 bytes), else a query whose block is not in the thread's cache costs
            // a malloc consolidation; `handle` adds no layer of its own for that reason (see
            // listen.rs `a_udp_query_future_is_a_small_allocation`).
            let req = Request {
                msg,
                client,
                local,
                proto,
                size: packet.len(),
                start,
                zone: self.root.clone(),
                server: self.label.clone(),
                depth: 0,
                resolver: Some(self.clone() as Arc<dyn Resolver>),
                raw,
                backlogged,
                reply_tapped: false,
                meta: None,
                view: None,
                trace: None,
            };
            (req, asked, asked_q)
        };
        let Some((zone, block)) = self.route(&mut req) else {
            crate::metrics::record_dropped(&self.label, proto, packet.len(), Rcode::REFUSED);
            let mut r = Message::reply_to(&req.msg);
            r.set_rcode(Rcode::REFUSED);
            return Some(finish(
                &asked,
                req.msg.edns.as_ref(),
                Reply::parsed(r),
                proto,
            ));
        };
        req.zone = zone.clone();
        req.view = block.view.as_ref().map(|(name, _)| name.clone());
        let block = block.clone();
        let mut asked_q = asked_q;
        if let Some(t) = &block.tap {
            req.reply_tapped = true;
            if t.query_bytes && req.raw.is_none() {
                req.raw = Some(Arc::from(packet));
            }
            if t.reads_request && asked_q.is_some() {
                // The tap reads the request after the reply is finished: the question is
                // copied now instead of being taken back from it.
                asked.question = req.msg.questions.first().cloned();
                asked_q = None;
            }
        }
        let mut out = match now {
            None => Next::new(&block.chain).run(&mut req).await,
            Some(declined) => match Next::new(&block.chain).run_now(&mut req) {
                Some(out) => out,
                None => {
                    *declined = true;
                    return None;
                }
            },
        };
        // The reply is truncated to the buffer size as the chain left it (`bufsize` lowers it),
        // like CoreDNS's ScrubWriter reading the request it passed down.
        if let (Some(c), Some(e)) = (asked.edns.as_mut(), req.msg.edns.as_ref()) {
            c.udp_size = c.udp_size.min(e.udp_size);
        }
        // An error reply the server writes copies RD and CD from the query as the chain left
        // it (`header` may change them), like CoreDNS's errorFunc.
        asked.rd = req.msg.header.rd;
        asked.cd = req.msg.header.cd;
        if let Some(a) = asked_q {
            asked.question = a.take(&mut req.msg, packet);
        }
        let options = req.msg.edns.as_ref().map_or(&[][..], |e| &e.options[..]);
        // A reply a plugin wrote goes to the tap as sent; the server's own error reply does not.
        let tap = block
            .tap
            .as_ref()
            .filter(|_| out.reply.is_some())
            .map(|t| (&*t.tap, &req));
        if let Some(ext) = out.ext.take() {
            return finish_ext(&asked, options, out, *ext, proto, more, tap);
        }
        // Options are echoed from the request as the chain left it (CoreDNS's rewrite edits
        // the request its ScrubWriter reads); DO is the client's, the size as `bufsize` left it.
        let limit = limit(&asked, proto);
        let wire = match out.reply.as_mut() {
            // Finished where it lies: a parsed reply is large, moving it costs a copy.
            Some(r) => r.take_finished(&asked, options, limit, echoed_option),
            None => outcome_to_reply(&asked, out).finish(&asked, options, limit, echoed_option),
        };
        if let Some((t, req)) = tap {
            t.replied(req, &wire);
        }
        Some(wire)
    }
}

/// Where the question of a query lies in its packet, to get it back after the chain without
/// having copied it before: the usual query spells it uncompressed right after the header.
#[derive(Clone, Copy)]
struct AskedQuestion {
    len: usize,
    qtype: RType,
    qclass: Class,
}

impl AskedQuestion {
    /// None when `q`'s name is not spelled as is at the packet's offset 12 (the caller copies
    /// the question then); a query the scanner read (`scanned`) always has it there.
    #[inline]
    fn of(q: &Question, packet: &[u8], scanned: bool) -> Option<AskedQuestion> {
        let len = q.name.wire().len();
        let there = scanned
            || packet
                .get(HEADER_LEN..HEADER_LEN + len)
                .is_some_and(|w| same_bytes(w, q.name.wire()));
        there.then_some(AskedQuestion {
            len,
            qtype: q.qtype,
            qclass: q.qclass,
        })
    }

    /// The question as asked: moved out of the request if the chain left it as it was (the
    /// request is done with), else read again from the packet.
    #[inline]
    fn take(self, msg: &mut Message, packet: &[u8]) -> Option<Question> {
        let wire = packet.get(HEADER_LEN..HEADER_LEN + self.len)?;
        let same = msg.questions.first().is_some_and(|q| {
            q.qtype == self.qtype && q.qclass == self.qclass && same_bytes(q.name.wire(), wire)
        });
        if same {
            return Some(msg.questions.swap_remove(0));
        }
        Some(Question {
            name: Name::from_wire(wire).ok()?,
            qtype: self.qtype,
            qclass: self.qclass,
        })
    }
}

/// Byte equality for names (at most 255 bytes, usually 20 to 40): eight bytes at a time,
/// inline, where `==` on slices calls `memcmp`.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        let (mut u, mut v) = ([0u8; 8], [0u8; 8]);
        u.copy_from_slice(x);
        v.copy_from_slice(y);
        if u64::from_ne_bytes(u) != u64::from_ne_bytes(v) {
            return false;
        }
    }
    ca.remainder()
        .iter()
        .zip(cb.remainder())
        .all(|(x, y)| x == y)
}

/// Finishes an outcome with its rarely used parts: nothing for a silent one; the reply, signed
/// if a signer asks, and over TCP every further message, each finished and signed in turn.
fn finish_ext(
    asked: &Asked,
    options: &[sextant_wire::EdnsOption],
    out: Outcome,
    mut ext: crate::plugin::OutcomeExt,
    proto: Proto,
    more: Option<&mut Vec<Vec<u8>>>,
    tap: Option<(&dyn ReplyTap, &Request)>,
) -> Option<Vec<u8>> {
    if ext.silent {
        return None;
    }
    // A signature's bytes are kept free of the client's limit.
    let reserve = ext.signer.as_ref().map_or(0, |s| s.reserve());
    let limit = limit(asked, proto).saturating_sub(reserve);
    let reply = outcome_to_reply(asked, out);
    let mut first = reply.finish(asked, options, limit, echoed_option);
    if let Some(s) = ext.signer.as_mut() {
        s.sign(&mut first);
    }
    if let Some((t, req)) = tap {
        t.replied(req, &first);
    }
    if let Some(more) = more {
        for m in std::mem::take(&mut ext.more) {
            let mut b = Reply::parsed(m).finish(asked, options, limit, echoed_option);
            if let Some(s) = ext.signer.as_mut() {
                s.sign(&mut b);
            }
            if let Some((t, req)) = tap {
                t.replied(req, &b);
            }
            more.push(b);
        }
    }
    Some(first)
}

/// The reply the chain wrote, or the server's error reply for its rcode.
pub(crate) fn outcome_to_reply(query: &Asked, out: Outcome) -> Reply {
    match out.reply {
        Some(r) => r,
        None => {
            let mut r = query.reply();
            let rc = match out.rcode {
                Rcode::SERVFAIL | Rcode::REFUSED | Rcode::FORMERR | Rcode::NOTIMP => out.rcode,
                _ => Rcode::SERVFAIL,
            };
            r.set_rcode(rc);
            Reply::parsed(r)
        }
    }
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
                zone: self.root.clone(),
                server: self.label.clone(),
                depth: req.depth + 1,
                resolver: req.resolver.clone(),
                raw: None,
                backlogged: false,
                reply_tapped: false,
                meta: None,
                view: None,
                trace: None,
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
    fn a_wire_outcome_too_big_for_udp_keeps_what_fits() {
        let q = Message::query(3, Name::parse("a.example.org.").unwrap(), RType::A);
        let out = Outcome::wire("cache", stored("a.example.org.", 40));
        let reply = outcome_to_reply(&Asked::of(&q), out);
        let bytes = finish(&Asked::of(&q), None, reply, Proto::Udp);
        assert!(bytes.len() <= 512);
        let m = Message::parse(&bytes).unwrap();
        assert!(m.header.tc);
        assert_eq!(m.answers.len(), (512 - 12 - 19) / 16);
        assert_eq!(m.header.id, 3);
        let out = Outcome::wire("cache", stored("a.example.org.", 40));
        let bytes = finish(
            &Asked::of(&q),
            None,
            outcome_to_reply(&Asked::of(&q), out),
            Proto::Tcp,
        );
        assert_eq!(Message::parse(&bytes).unwrap().answers.len(), 40);
    }
}
