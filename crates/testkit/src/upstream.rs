//! Scripted upstream DNS server for forward/cache tests: UDP and TCP on one 127.0.0.1 port,
//! a live-replaceable handler that returns an [`Action`] per query, counters, stop/restart on
//! the same port. Listens on loopback only.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};

use crate::error::{Error, Result};
use crate::ports::free_addr;
use crate::sched::{SchedHandle, Scheduler};
use crate::text::parse_record;

/// Transport a query arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// UDP datagram.
    Udp,
    /// Length-prefixed message on a TCP connection.
    Tcp,
}

/// One query as the upstream received it.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// The parsed query.
    pub message: Message,
    /// The exact bytes received (without TCP length prefix).
    pub bytes: Vec<u8>,
    /// UDP or TCP.
    pub proto: Proto,
    /// The sender's address (for TCP: the connection's peer).
    pub src: SocketAddr,
    /// When it arrived.
    pub at: Instant,
}

impl UpstreamRequest {
    /// Query name, lower-cased, with final dot (`""` if the query had no question).
    pub fn name(&self) -> String {
        self.message
            .queries
            .first()
            .map(|q| q.name().to_ascii().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// Query name as the sender spelled it, with final dot (`""` without a question). Real
    /// servers answer with this spelling (owner names follow the question).
    pub fn name_as_asked(&self) -> String {
        self.message
            .queries
            .first()
            .map(|q| q.name().to_ascii())
            .unwrap_or_default()
    }

    /// Query type (`RecordType::Unknown(0)` if there is no question).
    pub fn qtype(&self) -> RecordType {
        self.message
            .queries
            .first()
            .map(|q| q.query_type())
            .unwrap_or(RecordType::Unknown(0))
    }

    /// Message ID.
    pub fn id(&self) -> u16 {
        self.message.metadata.id
    }

    /// Start a reply to this request (see [`reply_to`]).
    pub fn reply(&self) -> ReplyBuilder {
        reply_to(&self.message)
    }
}

/// What the upstream does with one query.
///
/// TCP-only actions (`Tcp*`) do nothing when the query came over UDP.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send this message (one datagram, or one length-prefixed TCP message).
    Reply(Message),
    /// Send these bytes as the message (garbage, a hand-made reply...): one datagram, or one
    /// length-prefixed TCP message.
    Raw(Vec<u8>),
    /// Send nothing (a blackhole).
    Drop,
    /// Do the inner action after a delay, without blocking other queries.
    Delay(Duration, Box<Action>),
    /// Do each action in order (delays inside do not hold back the ones after them), e.g. a
    /// reply with a wrong ID, then the right one.
    Multiple(Vec<Action>),
    /// Reset the TCP connection (RST, via SO_LINGER 0) instead of answering.
    TcpReset,
    /// Close the TCP connection (FIN) instead of answering.
    TcpCloseBeforeAnswer,
    /// Send this message length-prefixed, one byte at a time with the given pause per byte.
    TcpDrip(Duration, Message),
    /// Send length prefix 0xFFFF followed by a short body (the query with QR set), then
    /// keep the connection open.
    TcpBadLength,
    /// Write these bytes verbatim on the TCP stream (no prefix added): partial answers.
    TcpWrite(Vec<u8>),
}

impl From<Message> for Action {
    fn from(m: Message) -> Self {
        Action::Reply(m)
    }
}

impl From<ReplyBuilder> for Action {
    fn from(b: ReplyBuilder) -> Self {
        Action::Reply(b.build())
    }
}

/// Builds a reply to a query: ID, question, RD and CD copied; QR set; OPT (size 1232, DO
/// copied) added when the query had one.
#[derive(Debug, Clone)]
pub struct ReplyBuilder {
    msg: Message,
}

/// Start a reply to `query`.
///
/// ```
/// use sextant_testkit::*;
/// let q = Query::new("example.com.", RecordType::A).to_message().unwrap();
/// let r = reply_to(&q).answer("example.com. 300 IN A 192.0.2.1").aa(true).build();
/// assert_eq!(r.answers.len(), 1);
/// ```
pub fn reply_to(query: &Message) -> ReplyBuilder {
    let mut msg = Message::new(query.metadata.id, MessageType::Response, query.op_code);
    msg.metadata.recursion_desired = query.metadata.recursion_desired;
    msg.metadata.checking_disabled = query.metadata.checking_disabled;
    msg.add_queries(query.queries.iter().cloned());
    if let Some(qe) = &query.edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(qe.flags().dnssec_ok);
        msg.set_edns(e);
    }
    ReplyBuilder { msg }
}

fn must_parse(text: &str) -> Record {
    match parse_record(text) {
        Ok(r) => r,
        Err(e) => panic!("sextant-testkit: {e}"),
    }
}

impl ReplyBuilder {
    /// Add an answer record in presentation form.
    ///
    /// # Panics
    /// If `text` is not a valid record (a bug in the test itself).
    pub fn answer(mut self, text: &str) -> Self {
        self.msg.add_answer(must_parse(text));
        self
    }

    /// Add several answer records in presentation form (panics like [`Self::answer`]).
    pub fn answers(mut self, texts: &[&str]) -> Self {
        for t in texts {
            self.msg.add_answer(must_parse(t));
        }
        self
    }

    /// Add an authority record in presentation form (panics like [`Self::answer`]).
    pub fn authority(mut self, text: &str) -> Self {
        self.msg.add_authority(must_parse(text));
        self
    }

    /// Add an additional record in presentation form (panics like [`Self::answer`]).
    pub fn additional(mut self, text: &str) -> Self {
        self.msg.add_additional(must_parse(text));
        self
    }

    /// Add an already-built answer record.
    pub fn answer_record(mut self, r: Record) -> Self {
        self.msg.add_answer(r);
        self
    }

    /// Add an already-built authority record.
    pub fn authority_record(mut self, r: Record) -> Self {
        self.msg.add_authority(r);
        self
    }

    /// Set the rcode (extended rcodes go into OPT automatically).
    pub fn rcode(mut self, rcode: ResponseCode) -> Self {
        self.msg.metadata.response_code = rcode;
        self
    }

    /// Set or clear TC.
    pub fn tc(mut self, on: bool) -> Self {
        self.msg.metadata.truncation = on;
        self
    }

    /// Set or clear AA.
    pub fn aa(mut self, on: bool) -> Self {
        self.msg.metadata.authoritative = on;
        self
    }

    /// Set or clear RA.
    pub fn ra(mut self, on: bool) -> Self {
        self.msg.metadata.recursion_available = on;
        self
    }

    /// Set or clear AD.
    pub fn ad(mut self, on: bool) -> Self {
        self.msg.metadata.authentic_data = on;
        self
    }

    /// Override the message ID (e.g. a forged reply with a wrong ID).
    pub fn id(mut self, id: u16) -> Self {
        self.msg.metadata.id = id;
        self
    }

    /// Remove the OPT record.
    pub fn no_edns(mut self) -> Self {
        self.msg.edns = None;
        self
    }

    /// Add (or replace) an OPT record advertising `udp_size`.
    pub fn edns(mut self, udp_size: u16) -> Self {
        let mut e = self.msg.edns.take().unwrap_or_default();
        e.set_max_payload(udp_size);
        self.msg.set_edns(e);
        self
    }

    /// Mutable access for anything else.
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.msg
    }

    /// The finished message.
    pub fn build(self) -> Message {
        self.msg
    }

    /// The finished message as [`Action::Reply`].
    pub fn action(self) -> Action {
        Action::Reply(self.msg)
    }
}

/// A handler deciding what to do with each query.
pub type Handler = Arc<dyn Fn(&UpstreamRequest) -> Action + Send + Sync + 'static>;

/// A static authoritative responder over `records`: exact name+type match → NOERROR with
/// AA; a CNAME at the name answers any type; name known with other types → NODATA; unknown
/// name → NXDOMAIN. Negative answers carry an SOA from `records` if there is one.
pub fn records_handler(records: &[&str]) -> Result<Handler> {
    let recs: Vec<Record> = records
        .iter()
        .map(|t| parse_record(t))
        .collect::<Result<_>>()?;
    Ok(Arc::new(move |req: &UpstreamRequest| {
        let Some(q) = req.message.queries.first() else {
            return req.reply().rcode(ResponseCode::FormErr).action();
        };
        let qname: Name = q.name().to_lowercase();
        let qtype = q.query_type();
        let at_name: Vec<&Record> = recs
            .iter()
            .filter(|r| r.name.to_lowercase() == qname)
            .collect();
        let mut b = req.reply().aa(true);
        let hits: Vec<&Record> = at_name
            .iter()
            .copied()
            .filter(|r| {
                r.record_type() == qtype
                    || qtype == RecordType::ANY
                    || (r.record_type() == RecordType::CNAME && qtype != RecordType::CNAME)
            })
            .collect();
        if !hits.is_empty() {
            // Like Knot, BIND or Unbound: records at the question name carry its spelling.
            for r in hits {
                let mut r = r.clone();
                r.name = q.name().clone();
                b = b.answer_record(r);
            }
            return b.action();
        }
        if at_name.is_empty() {
            b = b.rcode(ResponseCode::NXDomain);
        }
        if let Some(soa) = recs.iter().find(|r| r.record_type() == RecordType::SOA) {
            b = b.authority_record(soa.clone());
        }
        b.action()
    }))
}

/// Live counters of an [`Upstream`].
#[derive(Debug, Default, Clone)]
pub struct UpstreamStats {
    /// Queries received (parsed), both transports.
    pub total: u64,
    /// Over UDP.
    pub udp: u64,
    /// Over TCP.
    pub tcp: u64,
    /// Per lower-cased query name with final dot.
    pub per_name: HashMap<String, u64>,
    /// Messages that did not parse as DNS (never given to the handler).
    pub malformed: u64,
    /// Handler calls that panicked (treated as [`Action::Drop`]).
    pub handler_panics: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
}

const LOG_CAP: usize = 10_000;

struct Shared {
    handler: RwLock<Handler>,
    stats: Mutex<(UpstreamStats, Vec<UpstreamRequest>)>,
    cv: Condvar,
}

impl Shared {
    fn handle(&self, bytes: Vec<u8>, proto: Proto, src: SocketAddr) -> Option<Action> {
        let message = match Message::from_vec(&bytes) {
            Ok(m) => m,
            Err(_) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.0.malformed += 1;
                }
                self.cv.notify_all();
                return None;
            }
        };
        let req = UpstreamRequest {
            message,
            bytes,
            proto,
            src,
            at: Instant::now(),
        };
        let handler = self.handler.read().ok()?.clone();
        let action = catch_unwind(AssertUnwindSafe(|| handler(&req)));
        if let Ok(mut s) = self.stats.lock() {
            s.0.total += 1;
            match proto {
                Proto::Udp => s.0.udp += 1,
                Proto::Tcp => s.0.tcp += 1,
            }
            *s.0.per_name.entry(req.name()).or_default() += 1;
            if action.is_err() {
                s.0.handler_panics += 1;
            }
            if s.1.len() < LOG_CAP {
                s.1.push(req);
            }
        }
        self.cv.notify_all();
        Some(action.unwrap_or(Action::Drop))
    }
}

/// Per-connection shared state: a writer clone that any job may use, and a closed flag.
struct Conn {
    writer: Mutex<Option<TcpStream>>,
    closed: AtomicBool,
}

impl Conn {
    fn write(&self, bytes: &[u8]) {
        if let Ok(mut w) = self.writer.lock() {
            if let Some(s) = w.as_mut() {
                let _ = s.write_all(bytes);
            }
        }
    }

    fn close(&self, reset: bool) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut w) = self.writer.lock() {
            if let Some(s) = w.take() {
                if reset {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    // Wake the reader without sending anything; the RST goes out when the
                    // last descriptor (the reader's) is closed.
                    let _ = s.shutdown(Shutdown::Read);
                } else {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Open TCP connections of one incarnation, with their reader threads.
type ConnList = Arc<Mutex<Vec<(Arc<Conn>, JoinHandle<()>)>>>;

#[derive(Clone)]
enum Ctx {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(Arc<Conn>, Vec<u8>),
}

fn framed(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut v = Vec::with_capacity(bytes.len() + 2);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(bytes);
    v
}

fn send_bytes(ctx: &Ctx, bytes: &[u8]) {
    match ctx {
        Ctx::Udp(sock, peer) => {
            let _ = sock.send_to(bytes, peer);
        }
        Ctx::Tcp(conn, _) => conn.write(&framed(bytes)),
    }
}

fn execute(action: Action, ctx: &Ctx, sched: &SchedHandle) {
    match action {
        Action::Reply(m) => {
            if let Ok(b) = m.to_vec() {
                send_bytes(ctx, &b);
            }
        }
        Action::Raw(b) => send_bytes(ctx, &b),
        Action::Drop => {}
        Action::Delay(d, inner) => {
            let ctx2 = ctx.clone();
            let s2 = sched.clone();
            sched.after(d, move || execute(*inner, &ctx2, &s2));
        }
        Action::Multiple(list) => {
            for a in list {
                execute(a, ctx, sched);
            }
        }
        Action::TcpReset => {
            if let Ctx::Tcp(conn, _) = ctx {
                conn.close(true);
            }
        }
        Action::TcpCloseBeforeAnswer => {
            if let Ctx::Tcp(conn, _) = ctx {
                conn.close(false);
            }
        }
        Action::TcpWrite(b) => {
            if let Ctx::Tcp(conn, _) = ctx {
                conn.write(&b);
            }
        }
        Action::TcpBadLength => {
            if let Ctx::Tcp(conn, query) = ctx {
                let mut body = query.clone();
                if let Some(b) = body.get_mut(2) {
                    *b |= 0x80;
                }
                let mut out = vec![0xff, 0xff];
                out.extend_from_slice(&body);
                conn.write(&out);
            }
        }
        Action::TcpDrip(per_byte, m) => {
            if let (Ctx::Tcp(conn, _), Ok(b)) = (ctx, m.to_vec()) {
                let conn = conn.clone();
                let bytes = framed(&b);
                let _ = std::thread::Builder::new()
                    .name("upstream-drip".into())
                    .spawn(move || {
                        if let Ok(mut w) = conn.writer.lock() {
                            for byte in bytes {
                                let Some(s) = w.as_mut() else { return };
                                if s.write_all(&[byte]).is_err() {
                                    return;
                                }
                                std::thread::sleep(per_byte);
                            }
                        }
                    });
            }
        }
    }
}

/// One running incarnation of the listeners (torn down by `stop`).
struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    conns: ConnList,
    _sched: Scheduler,
}

/// A scripted DNS server on 127.0.0.1 (UDP and TCP on the same port).
///
/// ```
/// use sextant_testkit::*;
/// use std::time::Duration;
/// let up = Upstream::start(|req: &UpstreamRequest| {
///     req.reply().answer(&format!("{} 60 IN A 192.0.2.1", req.name())).action()
/// }).unwrap();
/// let r = udp(up.addr(), &Query::new("a.example.", RecordType::A), Duration::from_secs(2)).unwrap();
/// assert_eq!(r.answers(), vec!["a.example. 60 IN A 192.0.2.1"]);
/// assert_eq!(up.queries_for("a.example."), 1);
/// ```
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl Upstream {
    /// Start on a fresh port with `handler`.
    pub fn start<F>(handler: F) -> Result<Upstream>
    where
        F: Fn(&UpstreamRequest) -> Action + Send + Sync + 'static,
    {
        Self::start_with(Arc::new(handler))
    }

    /// Start with an already-shared [`Handler`].
    pub fn start_with(handler: Handler) -> Result<Upstream> {
        let shared = Arc::new(Shared {
            handler: RwLock::new(handler),
            stats: Mutex::new((UpstreamStats::default(), Vec::new())),
            cv: Condvar::new(),
        });
        let mut last_err = None;
        for _ in 0..20 {
            let addr = free_addr();
            match spawn_listeners(addr, &shared) {
                Ok(r) => {
                    return Ok(Upstream {
                        addr,
                        shared,
                        running: Mutex::new(Some(r)),
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Command {
            command: "bind upstream".into(),
            detail: "no port".into(),
        }))
    }

    /// Start on a given address (for example port 53 of an address inside a network
    /// namespace the calling thread has entered) with `handler`.
    pub fn start_on(addr: SocketAddr, handler: Handler) -> Result<Upstream> {
        let shared = Arc::new(Shared {
            handler: RwLock::new(handler),
            stats: Mutex::new((UpstreamStats::default(), Vec::new())),
            cv: Condvar::new(),
        });
        let r = spawn_listeners(addr, &shared)?;
        Ok(Upstream {
            addr,
            shared,
            running: Mutex::new(Some(r)),
        })
    }

    /// A static authoritative responder (see [`records_handler`]).
    ///
    /// ```
    /// use sextant_testkit::*;
    /// use std::time::Duration;
    /// let up = Upstream::records(&[
    ///     "example.org. 300 IN SOA ns.example.org. h.example.org. 1 2 3 4 60",
    ///     "www.example.org. 300 IN A 192.0.2.80",
    /// ]).unwrap();
    /// let r = udp(up.addr(), &Query::new("nope.example.org.", RecordType::A), Duration::from_secs(2)).unwrap();
    /// assert_eq!(r.rcode_name(), "NXDOMAIN");
    /// ```
    pub fn records(records: &[&str]) -> Result<Upstream> {
        Self::start_with(records_handler(records)?)
    }

    /// The address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the handler; takes effect for the next query.
    pub fn set_handler<F>(&self, handler: F)
    where
        F: Fn(&UpstreamRequest) -> Action + Send + Sync + 'static,
    {
        if let Ok(mut h) = self.shared.handler.write() {
            *h = Arc::new(handler);
        }
    }

    /// Close both listeners and every open TCP connection, and drop pending delayed replies:
    /// the port then answers ICMP port-unreachable (UDP) and RST (TCP). No-op if stopped.
    pub fn stop(&self) {
        let running = self.running.lock().ok().and_then(|mut r| r.take());
        if let Some(r) = running {
            teardown(r);
        }
    }

    /// Listen again on the same port after [`Upstream::stop`] (retries binding for up to 2 s).
    /// No-op if running.
    pub fn restart(&self) -> Result<()> {
        let mut guard = self.running.lock().map_err(|_| Error::Closed)?;
        if guard.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match spawn_listeners(self.addr, &self.shared) {
                Ok(r) => {
                    *guard = Some(r);
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// True while listening.
    pub fn is_running(&self) -> bool {
        self.running.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UpstreamStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.0.clone())
            .unwrap_or_default()
    }

    /// Queries received, both transports.
    pub fn queries(&self) -> u64 {
        self.stats().total
    }

    /// Queries received over UDP.
    pub fn queries_udp(&self) -> u64 {
        self.stats().udp
    }

    /// Queries received over TCP.
    pub fn queries_tcp(&self) -> u64 {
        self.stats().tcp
    }

    /// Queries received for `name` (case-insensitive; final dot optional).
    pub fn queries_for(&self, name: &str) -> u64 {
        let mut n = name.to_ascii_lowercase();
        if !n.ends_with('.') {
            n.push('.');
        }
        self.stats().per_name.get(&n).copied().unwrap_or(0)
    }

    /// The first 10 000 requests received since start or the last reset, in arrival order.
    pub fn requests(&self) -> Vec<UpstreamRequest> {
        self.shared
            .stats
            .lock()
            .map(|s| s.1.clone())
            .unwrap_or_default()
    }

    /// Zero all counters and the request log.
    pub fn reset_counters(&self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = (UpstreamStats::default(), Vec::new());
        }
    }

    /// Wait until at least `n` queries have been received in total.
    pub fn wait_queries(&self, n: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.stats.lock().map_err(|_| Error::Closed)?;
        while s.0.total < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::timeout(
                    timeout,
                    format!("{n} upstream queries (saw {})", s.0.total),
                ));
            }
            s = self
                .shared
                .cv
                .wait_timeout(s, left)
                .map_err(|_| Error::Closed)?
                .0;
        }
        Ok(())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An address on 127.0.0.1 where nothing listens: UDP queries get ICMP port-unreachable,
/// TCP connects get RST. The port is never handed out again by this process.
pub fn closed_port() -> SocketAddr {
    free_addr()
}

fn spawn_listeners(addr: SocketAddr, shared: &Arc<Shared>) -> Result<Running> {
    let udp = Arc::new(UdpSocket::bind(addr)?);
    let tcp = TcpListener::bind(addr)?;
    udp.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sched = Scheduler::new("upstream-timer")?;
    let conns: ConnList = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();

    {
        let (udp, shared, stop, sh) = (udp.clone(), shared.clone(), stop.clone(), sched.handle());
        threads.push(
            std::thread::Builder::new()
                .name("upstream-udp".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 65_535];
                    while !stop.load(Ordering::SeqCst) {
                        match udp.recv_from(&mut buf) {
                            Ok((n, src)) => {
                                let bytes = buf[..n].to_vec();
                                if let Some(a) = shared.handle(bytes, Proto::Udp, src) {
                                    execute(a, &Ctx::Udp(udp.clone(), src), &sh);
                                }
                            }
                            Err(_) => continue,
                        }
                    }
                })?,
        );
    }
    {
        let (shared, stop, sh, conns) =
            (shared.clone(), stop.clone(), sched.handle(), conns.clone());
        threads.push(
            std::thread::Builder::new()
                .name("upstream-accept".into())
                .spawn(move || {
                    for stream in tcp.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        if let Ok(mut s) = shared.stats.lock() {
                            s.0.tcp_connections += 1;
                        }
                        let Ok(writer) = stream.try_clone() else {
                            continue;
                        };
                        let _ = writer.set_write_timeout(Some(Duration::from_secs(5)));
                        let conn = Arc::new(Conn {
                            writer: Mutex::new(Some(writer)),
                            closed: AtomicBool::new(false),
                        });
                        let (c2, sh2, shared2, stop2) =
                            (conn.clone(), sh.clone(), shared.clone(), stop.clone());
                        let Ok(t) = std::thread::Builder::new()
                            .name("upstream-conn".into())
                            .spawn(move || tcp_conn_loop(stream, &c2, &shared2, &stop2, &sh2))
                        else {
                            continue;
                        };
                        if let Ok(mut list) = conns.lock() {
                            list.retain(|(_, h)| !h.is_finished());
                            list.push((conn, t));
                        }
                    }
                })?,
        );
    }
    Ok(Running {
        addr,
        stop,
        threads,
        conns,
        _sched: sched,
    })
}

fn tcp_conn_loop(
    stream: TcpStream,
    conn: &Arc<Conn>,
    shared: &Shared,
    stop: &AtomicBool,
    sched: &SchedHandle,
) {
    tcp_conn_read(stream, conn, shared, stop, sched);
    // The client closed (or we were stopped, or an action closed it): close our side too.
    if !conn.closed.load(Ordering::SeqCst) {
        conn.close(false);
    }
}

fn tcp_conn_read(
    mut stream: TcpStream,
    conn: &Arc<Conn>,
    shared: &Shared,
    stop: &AtomicBool,
    sched: &SchedHandle,
) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if stop.load(Ordering::SeqCst) || conn.closed.load(Ordering::SeqCst) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        while buf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = buf[2..2 + len].to_vec();
            buf.drain(..2 + len);
            if let Some(a) = shared.handle(msg.clone(), Proto::Tcp, peer) {
                execute(a, &Ctx::Tcp(conn.clone(), msg), sched);
            }
            if conn.closed.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

fn teardown(r: Running) {
    r.stop.store(true, Ordering::SeqCst);
    // Wake the accept loop: it checks the flag after each accepted connection.
    let _ = TcpStream::connect_timeout(&r.addr, Duration::from_secs(1));
    let conns = r
        .conns
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    for (c, _) in &conns {
        c.close(false);
    }
    for (_, h) in conns {
        let _ = h.join();
    }
    drop(r._sched);
    for t in r.threads {
        let _ = t.join();
    }
}
