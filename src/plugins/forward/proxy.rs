//! One upstream of `forward`: query exchange over UDP, TCP and TLS (cached sockets and
//! connections with `expire`/`max_age`/`max_idle_conns`, as CoreDNS), RFC 5452 reply matching
//! (ID, question, source via connected sockets; bogus replies are counted and never end the
//! wait; a reused UDP socket never takes a late reply to an earlier query), and the
//! failure-triggered health check that marks the upstream up or down.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{Counter, Histogram};
use rustls::pki_types::ServerName;
use sextant_wire::{Message, Name, ParseError, RType, Rcode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

use crate::pkg::clock::Clock;
use crate::server::lifecycle::Spawner;

use super::metrics::{
    BOGUS_REPLIES, CONN_HITS, CONN_MISSES, HC_FAILURES, PROXY_NAME, REQUEST_DURATION,
};

/// Transport of one exchange (TLS upstreams always use TLS over TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Net {
    Udp,
    Tcp,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Pooled {
    stream: Box<dyn Stream>,
    /// Bytes read from `stream` past the last message taken (see [`Pooled::read_message`]).
    read: Vec<u8>,
    /// The framed query being written (kept: one allocation per connection, not per query).
    write: Vec<u8>,
    local: SocketAddr,
    /// When it was dialed (`max_age`).
    created: Instant,
    used: Instant,
}

/// A UDP socket connected to the upstream, cached between exchanges like a TCP connection
/// (CoreDNS keeps its UDP `dns.Conn`s in the same pool). It goes back to the cache only after
/// an exchange that got its reply (a timeout or an error closes it), so what can still arrive
/// on it is a late duplicate of a reply already taken: such datagrams are dropped before the
/// socket is reused (see [`Proxy::take_udp`]), a query never reuses one of the IDs of the last
/// [`RECENT_IDS`] queries answered on it, and replies are matched on ID and question.
struct PooledUdp {
    sock: UdpSocket,
    /// IDs of the last queries answered on this socket (`answered` of them are set).
    ids: [u16; RECENT_IDS],
    answered: usize,
    created: Instant,
    used: Instant,
}

/// How many IDs of queries answered on a cached UDP socket a new query on it avoids.
const RECENT_IDS: usize = 8;

/// Late datagrams dropped from a cached UDP socket before it is closed instead of reused.
const MAX_STALE: usize = 16;

impl PooledUdp {
    fn recent(&self) -> &[u16] {
        &self.ids[..self.answered.min(RECENT_IDS)]
    }

    fn answered(&mut self, id: u16) {
        self.ids[self.answered % RECENT_IDS] = id;
        self.answered = self.answered.wrapping_add(1);
    }
}

/// Room asked for when reading a message whose length is not yet known: a typical reply and
/// its length prefix arrive in one read.
const READ_AHEAD: usize = 2048;

impl Pooled {
    /// Reads the next DNS message of the stream (RFC 1035 4.2.2: a two-byte length, then the
    /// message) with as few reads as the bytes arrive in (a one-byte read, a two-byte read and
    /// the body's cost three system calls per reply) and returns its length: the message is
    /// then `self.read[2..2 + len]`, read in place (no copy), until [`Pooled::consume`] drops
    /// it; bytes past the message stay for the next one. A stream that ends before a whole
    /// message is `UnexpectedEof`.
    async fn read_message(&mut self) -> io::Result<usize> {
        loop {
            let want = match self.read.get(..2) {
                Some(len) => 2 + u16::from_be_bytes([len[0], len[1]]) as usize,
                None => READ_AHEAD,
            };
            if self.read.len() >= 2 && self.read.len() >= want {
                return Ok(want - 2);
            }
            self.read.reserve(want - self.read.len());
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
        }
    }

    /// The message [`Pooled::read_message`] read (`len` bytes).
    fn message(&self, len: usize) -> &[u8] {
        self.read.get(2..2 + len).unwrap_or_default()
    }

    /// Drops the message of `len` bytes read last (and its length prefix).
    fn consume(&mut self, len: usize) {
        let n = (2 + len).min(self.read.len());
        if n == self.read.len() {
            self.read.clear();
        } else {
            self.read.drain(..n);
        }
    }

    /// Test helper: the next message, copied out.
    #[cfg(test)]
    async fn next_message(&mut self) -> io::Result<Vec<u8>> {
        let len = self.read_message().await?;
        let body = self.message(len).to_vec();
        self.consume(len);
        Ok(body)
    }
}

/// TLS settings of a `tls://` upstream.
pub(super) struct TlsSettings {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
}

/// Health-check settings.
pub(super) struct HealthSettings {
    pub interval: Duration,
    pub recursion_desired: bool,
    pub domain: Name,
    /// Checks over TCP (`force_tcp`) instead of UDP; TLS upstreams always check over TLS.
    pub tcp: bool,
}

/// How long a health-check probe waits (CoreDNS `plugin/pkg/proxy/health.go`).
const HC_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_DIAL_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// One upstream server.
pub(super) struct Proxy {
    pub addr: SocketAddr,
    /// Metric label `to` (`IP:port`, IPv6 bracketed).
    pub label: String,
    pub tls: Option<TlsSettings>,
    /// DNS over HTTPS (`https://` upstreams); `tls` is then unused.
    pub doh: Option<super::doh::Doh>,
    pub read_timeout: Duration,
    pub expire: Duration,
    /// `max_age`: a connection older than this is not reused (zero: no limit).
    pub max_age: Duration,
    pub max_idle: usize,
    pub source: Option<IpAddr>,
    pub health: HealthSettings,
    fails: AtomicU32,
    probing: AtomicBool,
    /// Bumped by every successful probe.
    ok_epoch: AtomicU64,
    pool: Mutex<VecDeque<Pooled>>,
    /// Cached UDP sockets (oldest first, as CoreDNS takes them).
    udp_pool: Mutex<VecDeque<PooledUdp>>,
    avg_dial_ns: AtomicI64,
    /// Health-check probes run under the generation; `stop` is its cancellation.
    spawner: Spawner,
    stop: CancellationToken,
    /// Decides connection expiry and the health-check interval.
    clock: Clock,
    /// This upstream's `conn_cache_hits_total` and `conn_cache_misses_total` with
    /// `proto="udp"`, looked up on first use (so the series appear with the first UDP query).
    udp_hits: OnceLock<Counter>,
    udp_misses: OnceLock<Counter>,
    /// This upstream's `conn_cache_hits_total` and `conn_cache_misses_total` of its stream
    /// protocol (`tcp` or `tcp-tls`), looked up on first use like `udp_misses`.
    stream_hits: OnceLock<Counter>,
    stream_misses: OnceLock<Counter>,
    /// This upstream's `request_duration_seconds` per rcode below [`RCODE_HANDLES`], looked up
    /// on first use (a label lookup hashes and allocates per query).
    durations: [OnceLock<Histogram>; RCODE_HANDLES],
}

/// Rcodes whose duration histogram handle is kept per upstream (the others are looked up).
const RCODE_HANDLES: usize = 24;

/// Why an exchange over a stream failed.
enum StreamError {
    /// A cached connection turned out to be closed before anything was read: retry.
    CachedClosed,
    Other(String),
}

/// Go-like text for an I/O error (`connection refused`, `connection reset by peer`).
fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::BrokenPipe => "broken pipe".into(),
        io::ErrorKind::TimedOut => "i/o timeout".into(),
        io::ErrorKind::UnexpectedEof => "EOF".into(),
        _ => {
            let s = e.to_string();
            let s = match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            };
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
    }
}

/// Checks an upstream reply against the query: QR set, same ID, same question (name compared
/// case-insensitively, type, class). A reply that does not parse but has a matching header with
/// TC set becomes an empty truncated reply (CoreDNS does the same for overflowing UDP answers).
/// A reply without a question is accepted only as an error (FORMERR, SERVFAIL, NOTIMP,
/// REFUSED), as EDNS-intolerant servers send.
#[cfg(test)]
pub(super) fn match_reply(bytes: &[u8], query: &Message) -> Option<Message> {
    match_sent(
        bytes,
        Sent {
            id: query.header.id,
            msg: query,
        },
    )
}

/// A query as sent upstream: the message and the ID it went out with.
#[derive(Clone, Copy)]
pub(super) struct Sent<'a> {
    pub id: u16,
    pub msg: &'a Message,
}

/// [`match_reply`] for a query sent with `sent.id` in place of its own ID.
pub(super) fn match_sent(bytes: &[u8], sent: Sent<'_>) -> Option<Message> {
    match_cut(bytes, sent, false)
}

/// [`match_sent`] for a UDP reply longer than the client takes (CoreDNS reads upstream UDP
/// replies into a buffer of the client's size, `request.Size`): only the first `limit` bytes
/// are read, and a matching header makes it an empty truncated reply, TC set whatever the
/// upstream said (CoreDNS's proxy `truncateResponse`).
fn match_udp(bytes: &[u8], sent: Sent<'_>) -> Option<Message> {
    let limit = sextant_wire::reply::client_limit(false, sent.msg.edns.as_ref().map(|e| e.udp_size))
        as usize;
    match bytes.get(..limit) {
        Some(cut) if bytes.len() > limit => match_cut(cut, sent, true),
        _ => match_sent(bytes, sent),
    }
}

fn match_cut(bytes: &[u8], sent: Sent<'_>, cut: bool) -> Option<Message> {
    let query = sent.msg;
    let h = sextant_wire::reply::read_header(bytes)?;
    if bytes.len() < sextant_wire::HEADER_LEN || h.id != sent.id || !h.qr {
        return None;
    }
    let q = query.questions.first()?;
    let same =
        |n: &Name, t: RType, c: sextant_wire::Class| *n == q.name && t == q.qtype && c == q.qclass;
    match Message::parse(bytes) {
        Ok(m) => match m.questions.as_slice() {
            [rq] if same(&rq.name, rq.qtype, rq.qclass) => Some(m),
            [] if matches!(m.header.rcode, 1 | 2 | 4 | 5) && m.answers.is_empty() => Some(m),
            _ => None,
        },
        Err(ParseError::Malformed {
            mut header,
            question,
            ..
        }) if header.tc || cut => {
            header.tc = true;
            if let Some(rq) = &question {
                if !same(&rq.name, rq.qtype, rq.qclass) {
                    return None;
                }
            }
            let mut m = Message {
                header,
                ..Message::default()
            };
            m.questions = query.questions.clone();
            Some(m)
        }
        Err(_) => None,
    }
}

/// Room for the largest UDP datagram. The scratch holds two, one per thread, used only between a
/// socket's readiness and the parse of what it received (no `.await` in between), so a query
/// never holds it across threads; the buffer is allocated and zeroed once per thread. A 64 KiB
/// buffer per query (even pooled per thread: a task resumes on another thread about half of the
/// time) cost an allocation, its free and a malloc consolidation on every forwarded query.
const RECV_BUF: usize = 65_535;

thread_local! {
    static RECV_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Receives the datagrams queued on the connected `sock`, up to two in one `recvmmsg`, into this
/// thread's scratch buffer and hands each to `f` in order of arrival. Waits like tokio's
/// `recv_buf` (readable or an error, so an ICMP port unreachable is seen at once); the buffer is
/// borrowed only inside each attempt.
///
/// Asking for two tells, without another system call, whether the read emptied the socket: when
/// fewer than two came, the socket's readiness is cleared (the readiness seen before the call,
/// so a datagram arriving meanwhile still wakes its reader). A cached socket whose last exchange
/// emptied it then shows nothing to drop before its reuse ([`Proxy::take_udp`]), where a read
/// that finds nothing would otherwise be spent on every forwarded query.
async fn recv_with(sock: &UdpSocket, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let interest = Interest::READABLE | Interest::ERROR;
    loop {
        let ready = sock.ready(interest).await?;
        // `try_io` takes one interest (a combined one would never run the read): the error
        // alone when that is all there is, so the read reports it.
        let one = if ready.is_readable() || ready.is_read_closed() {
            Interest::READABLE
        } else {
            Interest::ERROR
        };
        let mut got = false;
        let res = sock.try_io(one, || {
            let mut read = |buf: &mut Vec<u8>| {
                if buf.len() != 2 * RECV_BUF {
                    buf.resize(2 * RECV_BUF, 0);
                }
                recv2(sock, buf, &mut f)
            };
            let (n, emptied) = match RECV_SCRATCH
                .try_with(|s| s.try_borrow_mut().ok().map(|mut b| read(&mut b)))
            {
                Ok(Some(r)) => r?,
                // The thread is exiting (or the buffer is borrowed further up this stack, which
                // nothing does): a buffer of its own for this attempt.
                _ => read(&mut Vec::new())?,
            };
            got = n > 0;
            if emptied {
                // Clears the readiness: the socket is empty.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if got {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// One `recvmmsg` of at most two datagrams into the two halves of `buf` (`2 * RECV_BUF` bytes),
/// each passed to `f`: how many came, and whether that emptied the socket (fewer than two).
fn recv2(sock: &UdpSocket, buf: &mut [u8], f: &mut impl FnMut(&[u8])) -> io::Result<(usize, bool)> {
    use std::os::fd::AsRawFd;
    let (first, second) = buf.split_at_mut(RECV_BUF);
    let mut iovs = [
        libc::iovec {
            iov_base: first.as_mut_ptr().cast(),
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_mut_ptr().cast(),
            iov_len: second.len(),
        },
    ];
    // SAFETY: mmsghdr is plain old data; zero is "no address, no control data, no flags".
    let mut hdrs: [libc::mmsghdr; 2] = unsafe { std::mem::MaybeUninit::zeroed().assume_init() };
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the socket's descriptor stays open for the call (`sock` is borrowed); each header
    // points at its own iovec, which points into its half of `buf`; all outlive the call and the
    // kernel writes within the given lengths. The socket is connected: no address is asked for.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            2,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for (h, part) in hdrs.iter().zip([&*first, &*second]).take(n) {
        f(&part[..(h.msg_len as usize).min(part.len())]);
    }
    Ok((n, n < 2))
}

/// What `sock` is marked ready for (readable, or an error), without a system call: something
/// came after the read that emptied it, or that read did not empty it. `None`: nothing.
fn pending(sock: &UdpSocket) -> Option<tokio::io::Ready> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let ready = std::pin::pin!(sock.ready(Interest::READABLE | Interest::ERROR));
    match std::future::Future::poll(ready, &mut cx) {
        std::task::Poll::Ready(Ok(r)) => Some(r),
        // The runtime is shutting down: treated as an error (the socket is not reused).
        std::task::Poll::Ready(Err(_)) => Some(tokio::io::Ready::ERROR),
        std::task::Poll::Pending => None,
    }
}

fn unspecified(addr: &SocketAddr) -> IpAddr {
    match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

impl Proxy {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        addr: SocketAddr,
        tls: Option<TlsSettings>,
        read_timeout: Duration,
        expire: Duration,
        max_idle: usize,
        source: Option<IpAddr>,
        health: HealthSettings,
        spawner: Spawner,
        clock: Clock,
    ) -> Proxy {
        let label = addr.to_string();
        Proxy {
            addr,
            tls,
            doh: None,
            read_timeout,
            expire,
            max_age: Duration::ZERO,
            max_idle,
            source,
            health,
            fails: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            ok_epoch: AtomicU64::new(0),
            pool: Mutex::new(VecDeque::new()),
            udp_pool: Mutex::new(VecDeque::new()),
            avg_dial_ns: AtomicI64::new(0),
            stop: spawner.token(),
            spawner,
            clock,
            udp_hits: OnceLock::new(),
            udp_misses: OnceLock::new(),
            stream_hits: OnceLock::new(),
            stream_misses: OnceLock::new(),
            durations: std::array::from_fn(|_| OnceLock::new()),
            label,
        }
    }

    fn observe_duration(&self, rcode: Rcode, secs: f64) {
        let labels = |r: Rcode| [PROXY_NAME.to_string(), self.label.clone(), r.to_string()];
        match self.durations.get(rcode.0 as usize) {
            Some(h) => h
                .get_or_init(|| REQUEST_DURATION.with_label_values(&labels(rcode)))
                .observe(secs),
            None => REQUEST_DURATION
                .with_label_values(&labels(rcode))
                .observe(secs),
        }
    }

    /// CoreDNS's `Down`: more failed health checks in a row than `max_fails` (never with 0).
    pub(super) fn down(&self, max_fails: u32) -> bool {
        max_fails != 0 && self.fails.load(Ordering::Relaxed) > max_fails
    }

    fn stream_proto(&self) -> &'static str {
        if self.tls.is_some() {
            "tcp-tls"
        } else {
            "tcp"
        }
    }

    /// Sends `query` (the client's message; a fresh random ID is used on the wire) and returns
    /// the upstream's reply with the client's ID restored.
    #[cfg(test)]
    pub(super) async fn connect(
        &self,
        query: &Message,
        net: Net,
        deadline: Instant,
    ) -> Result<Message, String> {
        self.connect_from(query, net, deadline, None).await
    }

    /// [`connect`](Self::connect), also filling `local` (when given) with the local address of
    /// the socket the query went out on (for dnstap; not known for DoH).
    pub(super) async fn connect_from(
        &self,
        query: &Message,
        net: Net,
        deadline: Instant,
        local: Option<&mut Option<SocketAddr>>,
    ) -> Result<Message, String> {
        let start = Instant::now();
        // The client's message encoded as it is, then the fresh ID written over the first two
        // bytes (no copy of the message).
        let id: u16 = rand::random();
        let mut wire = query.to_wire();
        sextant_wire::reply::set_id(&mut wire, id);
        let q = Sent { id, msg: query };
        let until = (start + self.read_timeout).min(deadline);
        // The DoH and stream exchanges are boxed: their futures (HTTP/2, TLS) are several times
        // the UDP one's, and inline they made every forwarded query's future that large, a
        // copy of kilobytes each time it is boxed. The UDP exchange is boxed too: inline, it
        // made `forward`'s future 1,256 bytes, and a malloc of 1 KiB or more is a "large"
        // request to glibc, which consolidates its fast bins first (~13% of a search-path
        // lookup's samples were in malloc); two smaller blocks come from the thread's cache.
        let res = if let Some(doh) = &self.doh {
            Box::pin(self.exchange_doh(doh, query, until)).await
        } else if self.tls.is_none() && net == Net::Udp {
            Box::pin(self.exchange_udp(&mut wire, q, until, local, true)).await
        } else {
            Box::pin(self.exchange_stream(&wire, q, until, deadline, local)).await
        };
        let mut m = res?;
        m.header.id = query.header.id;
        self.observe_duration(m.rcode(), start.elapsed().as_secs_f64());
        Ok(m)
    }

    /// A fresh non-blocking UDP socket connected to the upstream: the kernel drops datagrams
    /// from any other address or port. Without `source_address` the kernel picks the local
    /// address and a random port at `connect` (no separate `bind`, no `ioctl`: two system
    /// calls fewer per query).
    fn udp_socket(&self) -> io::Result<UdpSocket> {
        let domain = match self.addr {
            SocketAddr::V4(_) => socket2::Domain::IPV4,
            SocketAddr::V6(_) => socket2::Domain::IPV6,
        };
        let sock = socket2::Socket::new(
            domain,
            socket2::Type::DGRAM.nonblocking(),
            Some(socket2::Protocol::UDP),
        )?;
        if let Some(ip) = self.source {
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        sock.connect(&self.addr.into())?;
        UdpSocket::from_std(sock.into())
    }

    /// A cached UDP socket (counted as a cache hit) or a new one (a miss).
    fn udp_conn(&self) -> io::Result<PooledUdp> {
        let labels = |proto| [PROXY_NAME, &self.label, proto];
        if let Some(c) = self.take_udp() {
            self.udp_hits
                .get_or_init(|| CONN_HITS.with_label_values(&labels("udp")))
                .inc();
            return Ok(c);
        }
        self.udp_misses
            .get_or_init(|| CONN_MISSES.with_label_values(&labels("udp")))
            .inc();
        let now = self.clock.now();
        Ok(PooledUdp {
            sock: self.udp_socket()?,
            ids: [0; RECENT_IDS],
            answered: 0,
            created: now,
            used: now,
        })
    }

    /// The oldest cached UDP socket still fresh, emptied of late datagrams (dropped and counted
    /// as bogus replies). A socket with an error pending (an ICMP error that came after its
    /// last reply) or with more than [`MAX_STALE`] late datagrams is closed instead.
    ///
    /// A socket that nothing reached since the read that emptied it (its readiness is clear,
    /// see [`recv_with`]) is taken without a system call; one marked readable is read until
    /// empty, which also clears its readiness for the wait of its next exchange.
    fn take_udp(&self) -> Option<PooledUdp> {
        let mut byte = [0u8; 1];
        loop {
            let c = {
                let mut pool = self.udp_pool.lock().ok()?;
                loop {
                    let c = pool.pop_front()?;
                    if self.fresh(c.used, c.created) {
                        break c;
                    }
                }
            };
            let usable = match pending(&c.sock) {
                None => true,
                Some(r) if r.is_error() => false,
                Some(_) => {
                    let mut stale = 0;
                    loop {
                        match c.sock.try_recv(&mut byte) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                            Err(_) => break false,
                            Ok(_) => {
                                BOGUS_REPLIES.with_label_values(&[&self.label]).inc();
                                stale += 1;
                                if stale > MAX_STALE {
                                    break false;
                                }
                            }
                        }
                    }
                }
            };
            if usable {
                return Some(c);
            }
        }
    }

    fn give_back_udp(&self, c: PooledUdp) {
        if self.stop.is_cancelled() {
            return;
        }
        if let Ok(mut pool) = self.udp_pool.lock() {
            if self.max_idle == 0 || pool.len() < self.max_idle {
                pool.push_back(c);
            }
        }
    }

    /// One UDP exchange, on a cached socket when `cached` (queries) or a fresh one (health
    /// probes, as CoreDNS's). On a cached socket the query's ID is redrawn (in `wire` too)
    /// while it equals one of the IDs recently answered there; the socket goes back to the
    /// cache only once the reply came.
    async fn exchange_udp(
        &self,
        wire: &mut [u8],
        mut q: Sent<'_>,
        until: Instant,
        tapped: Option<&mut Option<SocketAddr>>,
        cached: bool,
    ) -> Result<Message, String> {
        let bind = SocketAddr::new(self.source.unwrap_or_else(|| unspecified(&self.addr)), 0);
        let dial_err = |e: io::Error| format!("dial udp {}: {}", self.addr, io_text(&e));
        let mut conn = if cached {
            self.udp_conn().map_err(dial_err)?
        } else {
            let now = self.clock.now();
            PooledUdp {
                sock: self.udp_socket().map_err(dial_err)?,
                ids: [0; RECENT_IDS],
                answered: 0,
                created: now,
                used: now,
            }
        };
        if conn.recent().contains(&q.id) {
            while conn.recent().contains(&q.id) {
                q.id = rand::random();
            }
            sextant_wire::reply::set_id(wire, q.id);
        }
        let m = self
            .udp_roundtrip(&conn.sock, wire, q, until, tapped, bind)
            .await?;
        if cached {
            conn.answered(q.id);
            conn.used = self.clock.now();
            self.give_back_udp(conn);
        }
        Ok(m)
    }

    async fn udp_roundtrip(
        &self,
        sock: &UdpSocket,
        wire: &[u8],
        q: Sent<'_>,
        until: Instant,
        tapped: Option<&mut Option<SocketAddr>>,
        bind: SocketAddr,
    ) -> Result<Message, String> {
        // The local address only goes into error messages and dnstap: asked for only then.
        let local = || sock.local_addr().unwrap_or(bind);
        if let Some(t) = tapped {
            *t = Some(local());
        }
        sock.send(wire).await.map_err(|e| {
            format!(
                "write udp {}->{}: write: {}",
                local(),
                self.addr,
                io_text(&e)
            )
        })?;
        let read_err =
            |e: &io::Error| format!("read udp {}->{}: read: {}", local(), self.addr, io_text(e));
        loop {
            let mut reply = None;
            let mut bogus = 0u32;
            let take = |bytes: &[u8]| match match_udp(bytes, q) {
                Some(m) if reply.is_none() => reply = Some(m),
                // Not the reply, or a second copy of it read with it: dropped.
                _ => bogus += 1,
            };
            let res = timeout_at(until.into(), recv_with(sock, take)).await;
            if bogus > 0 {
                BOGUS_REPLIES
                    .with_label_values(&[&self.label])
                    .inc_by(f64::from(bogus));
            }
            match res {
                Err(_) => return Err(format!("read udp {}->{}: i/o timeout", local(), self.addr)),
                Ok(Err(e)) => return Err(read_err(&e)),
                Ok(Ok(())) => {
                    if let Some(m) = reply {
                        return Ok(m);
                    }
                }
            }
        }
    }

    /// One DoH exchange: the query goes out with ID 0 (RFC 8484 §4.1), the reply must match it.
    async fn exchange_doh(
        &self,
        doh: &super::doh::Doh,
        query: &Message,
        until: Instant,
    ) -> Result<Message, String> {
        let mut wire = query.to_wire();
        sextant_wire::reply::set_id(&mut wire, 0);
        let body = doh
            .exchange(&wire, until, &self.spawner, || async {
                self.dial_tcp(until).await.map(|(tcp, _, _)| tcp)
            })
            .await?;
        match_sent(&body, Sent { id: 0, msg: query }).ok_or_else(|| {
            format!(
                "doh {}: the reply is not a DNS reply to the query",
                self.addr
            )
        })
    }

    fn take_pooled(&self) -> Option<Pooled> {
        let mut pool = self.pool.lock().ok()?;
        while let Some(p) = pool.pop_front() {
            if self.fresh(p.used, p.created) {
                return Some(p);
            }
        }
        None
    }

    /// Last used at most `expire` ago and, with `max_age`, opened at most `max_age` ago.
    fn fresh(&self, used: Instant, created: Instant) -> bool {
        self.clock.since(used) <= self.expire
            && (self.max_age.is_zero() || self.clock.since(created) <= self.max_age)
    }

    fn give_back(&self, p: Pooled) {
        if let Ok(mut pool) = self.pool.lock() {
            if self.max_idle == 0 || pool.len() < self.max_idle {
                pool.push_back(p);
            }
        }
    }

    /// Closes cached connections and sockets idle for longer than `expire` or older than
    /// `max_age` (run periodically).
    pub(super) fn sweep(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.retain(|p| self.fresh(p.used, p.created));
        }
        if let Ok(mut pool) = self.udp_pool.lock() {
            pool.retain(|c| self.fresh(c.used, c.created));
        }
    }

    /// Drops every cached connection and socket.
    pub(super) fn clear(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
        if let Ok(mut pool) = self.udp_pool.lock() {
            pool.clear();
        }
        if let Some(d) = &self.doh {
            d.clear();
        }
    }

    fn dial_timeout(&self) -> Duration {
        let avg = Duration::from_nanos(self.avg_dial_ns.load(Ordering::Relaxed).max(0) as u64);
        if avg < MIN_DIAL_TIMEOUT {
            MIN_DIAL_TIMEOUT
        } else if avg < MAX_DIAL_TIMEOUT / 2 {
            2 * avg
        } else {
            MAX_DIAL_TIMEOUT
        }
    }

    /// A TCP connection to the upstream (from `source_address` if set), within the adaptive
    /// dial timeout; returns it with the deadline left for a handshake on top.
    async fn dial_tcp(
        &self,
        deadline: Instant,
    ) -> Result<(tokio::net::TcpStream, SocketAddr, Instant), String> {
        let started = Instant::now();
        let until = (started + self.dial_timeout()).min(deadline);
        let sock = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("dial tcp {}: {}", self.addr, io_text(&e)))?;
        if let Some(ip) = self.source {
            sock.bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("dial tcp {}: bind: {}", self.addr, io_text(&e)))?;
        }
        let tcp = match timeout_at(until.into(), sock.connect(self.addr)).await {
            Err(_) => return Err(format!("dial tcp {}: i/o timeout", self.addr)),
            Ok(Err(e)) => return Err(format!("dial tcp {}: connect: {}", self.addr, io_text(&e))),
            Ok(Ok(s)) => s,
        };
        let dialed = started.elapsed().as_nanos().min(i64::MAX as u128) as i64;
        let avg = self.avg_dial_ns.load(Ordering::Relaxed);
        self.avg_dial_ns
            .fetch_add((dialed - avg) / 4, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(unspecified(&self.addr), 0));
        Ok((tcp, local, until))
    }

    async fn dial(&self, deadline: Instant) -> Result<Pooled, String> {
        let (tcp, local, until) = self.dial_tcp(deadline).await?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(t) => {
                let hs = t.connector.connect(t.server_name.clone(), tcp);
                match timeout_at(until.into(), hs).await {
                    Err(_) => return Err(format!("tls handshake with {}: i/o timeout", self.addr)),
                    Ok(Err(e)) => return Err(format!("tls handshake with {}: {e}", self.addr)),
                    Ok(Ok(s)) => Box::new(s),
                }
            }
        };
        let now = self.clock.now();
        Ok(Pooled {
            stream,
            read: Vec::new(),
            write: Vec::new(),
            local,
            created: now,
            used: now,
        })
    }

    async fn exchange_stream(
        &self,
        wire: &[u8],
        q: Sent<'_>,
        until: Instant,
        deadline: Instant,
        mut tapped: Option<&mut Option<SocketAddr>>,
    ) -> Result<Message, String> {
        loop {
            let labels = || [PROXY_NAME, &self.label, self.stream_proto()];
            let (mut conn, cached) = match self.take_pooled() {
                Some(c) => {
                    self.stream_hits
                        .get_or_init(|| CONN_HITS.with_label_values(&labels()))
                        .inc();
                    (c, true)
                }
                None => {
                    self.stream_misses
                        .get_or_init(|| CONN_MISSES.with_label_values(&labels()))
                        .inc();
                    (self.dial(deadline.min(until)).await?, false)
                }
            };
            if let Some(t) = tapped.as_deref_mut() {
                *t = Some(conn.local);
            }
            match self.roundtrip(&mut conn, wire, q, until, cached).await {
                Ok(m) => {
                    conn.used = self.clock.now();
                    self.give_back(conn);
                    return Ok(m);
                }
                // Each retry consumes one cached connection, so this ends.
                Err(StreamError::CachedClosed) => continue,
                Err(StreamError::Other(e)) => return Err(e),
            }
        }
    }

    async fn roundtrip(
        &self,
        conn: &mut Pooled,
        wire: &[u8],
        q: Sent<'_>,
        until: Instant,
        cached: bool,
    ) -> Result<Message, StreamError> {
        let (local, remote) = (conn.local, self.addr);
        let net = if self.tls.is_some() { "tcp-tls" } else { "tcp" };
        let mut framed = std::mem::take(&mut conn.write);
        framed.clear();
        framed.extend_from_slice(&(wire.len() as u16).to_be_bytes());
        framed.extend_from_slice(wire);
        let write = async {
            conn.stream.write_all(&framed).await?;
            conn.stream.flush().await
        };
        let written = timeout_at(until.into(), write).await;
        conn.write = framed;
        match written {
            Err(_) => {
                return Err(StreamError::Other(format!(
                    "write {net} {local}->{remote}: i/o timeout"
                )))
            }
            Ok(Err(_)) if cached => return Err(StreamError::CachedClosed),
            Ok(Err(e)) => {
                return Err(StreamError::Other(format!(
                    "write {net} {local}->{remote}: write: {}",
                    io_text(&e)
                )))
            }
            Ok(Ok(())) => {}
        }
        let mut first = true;
        loop {
            let len = match timeout_at(until.into(), conn.read_message()).await {
                Err(_) => {
                    return Err(StreamError::Other(format!(
                        "read {net} {local}->{remote}: i/o timeout"
                    )))
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    if cached && first {
                        return Err(StreamError::CachedClosed);
                    }
                    return Err(StreamError::Other("EOF".into()));
                }
                Ok(Err(e)) => {
                    return Err(StreamError::Other(format!(
                        "read {net} {local}->{remote}: read: {}",
                        io_text(&e)
                    )))
                }
                Ok(Ok(len)) => len,
            };
            first = false;
            let matched = match_sent(conn.message(len), q);
            conn.consume(len);
            match matched {
                Some(m) => return Ok(m),
                None => BOGUS_REPLIES.with_label_values(&[&self.label]).inc(),
            }
        }
    }

    /// One health-check probe: `<domain> IN NS`, RD unless `no_rec`, 1 s timeout. Any reply
    /// that matches the probe counts as healthy, whatever its rcode.
    async fn probe(&self) -> Result<(), String> {
        let mut q = Message::query(0, self.health.domain.clone(), RType::NS);
        q.header.rd = self.health.recursion_desired;
        q.header.id = rand::random();
        let mut wire = q.to_wire();
        let until = Instant::now() + HC_TIMEOUT;
        if let Some(doh) = &self.doh {
            return self.exchange_doh(doh, &q, until).await.map(|_| ());
        }
        if self.tls.is_none() && !self.health.tcp {
            self.exchange_udp(
                &mut wire,
                Sent {
                    id: q.header.id,
                    msg: &q,
                },
                until,
                None,
                false,
            )
            .await
            .map(|_| ())
        } else {
            let mut conn = self.dial(until).await?;
            let sent = Sent {
                id: q.header.id,
                msg: &q,
            };
            match self.roundtrip(&mut conn, &wire, sent, until, false).await {
                Ok(_) => Ok(()),
                Err(StreamError::CachedClosed) => Err("EOF".into()),
                Err(StreamError::Other(e)) => Err(e),
            }
        }
    }

    /// Starts probing after a failed query, unless probing already runs: one probe now, then
    /// one every interval until a probe succeeds (CoreDNS `Healthcheck` + `up.Probe`). Each
    /// failed probe adds one to the failure count; a success resets it, which re-admits the
    /// upstream. Unlike CoreDNS, a probe does not hold back the next one while it waits for its
    /// 1 s timeout, so a recovered upstream is seen within one interval.
    pub(super) fn healthcheck(self: &Arc<Self>) {
        if self.health.interval.is_zero() || self.stop.is_cancelled() {
            return;
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let start_epoch = self.ok_epoch.load(Ordering::Acquire);
        let started = self.spawner.spawn(async move {
            let mut probes = tokio::task::JoinSet::new();
            loop {
                if me.ok_epoch.load(Ordering::Acquire) != start_epoch {
                    break;
                }
                let p = me.clone();
                probes.spawn(async move {
                    let epoch = p.ok_epoch.load(Ordering::Acquire);
                    let res = tokio::select! {
                        _ = p.stop.cancelled() => return,
                        r = p.probe() => r,
                    };
                    match res {
                        Ok(()) => {
                            p.fails.store(0, Ordering::Relaxed);
                            p.ok_epoch.fetch_add(1, Ordering::AcqRel);
                        }
                        // A probe sent before a success that was already seen does not count.
                        Err(_) if p.ok_epoch.load(Ordering::Acquire) == epoch => {
                            HC_FAILURES.with_label_values(&[PROXY_NAME, &p.label]).inc();
                            let _ =
                                p.fails
                                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                                        Some(f.saturating_add(1))
                                    });
                        }
                        Err(_) => {}
                    }
                });
                // Reap finished probes so the set stays small.
                while probes.try_join_next().is_some() {}
                tokio::select! {
                    _ = me.stop.cancelled() => break,
                    _ = me.clock.sleep(me.health.interval) => {}
                }
            }
            me.probing.store(false, Ordering::Release);
            // Outstanding probes finish on their own (each is bounded by its 1 s timeout).
            probes.detach_all();
        });
        if !started {
            self.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::{Class, Question};

    fn query() -> Message {
        let mut q = Message::query(0x1234, Name::parse("www.Example.org.").unwrap(), RType::A);
        q.header.rd = true;
        q
    }

    /// Messages come out whole and in order however the bytes arrive: several in one read,
    /// one split over many reads, an empty one; a stream ending inside one is an EOF.
    #[tokio::test]
    async fn read_message_takes_one_message_at_a_time() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut conn = Pooled {
            stream: Box::new(client),
            read: Vec::new(),
            write: Vec::new(),
            local: "127.0.0.1:1".parse().unwrap(),
            created: Instant::now(),
            used: Instant::now(),
        };
        let long: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let mut bytes = vec![0, 3, b'a', b'b', b'c', 0, 0, 0, 1, b'z'];
        bytes.extend_from_slice(&300u16.to_be_bytes());
        bytes.extend_from_slice(&long);
        bytes.extend_from_slice(&[0, 9, b'x']);
        let writer = tokio::spawn(async move {
            // In pieces of 7 bytes: lengths and bodies split across reads.
            for piece in bytes.chunks(7) {
                server.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            server.shutdown().await.unwrap();
        });
        assert_eq!(conn.next_message().await.unwrap(), b"abc");
        assert_eq!(conn.next_message().await.unwrap(), b"");
        assert_eq!(conn.next_message().await.unwrap(), b"z");
        assert_eq!(conn.next_message().await.unwrap(), long);
        let e = conn.next_message().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        writer.await.unwrap();
    }

    fn reply(q: &Message) -> Message {
        let mut r = Message::reply_to(q);
        r.header.ra = true;
        r
    }

    #[test]
    fn matching_accepts_only_the_right_reply() {
        let q = query();
        let good = reply(&q);
        assert!(match_reply(&good.to_wire(), &q).is_some());
        // Question name compared case-insensitively.
        let mut case = good.clone();
        case.questions[0].name = Name::parse("WWW.example.ORG.").unwrap();
        assert!(match_reply(&case.to_wire(), &q).is_some());
        let mut wrong_id = good.clone();
        wrong_id.header.id ^= 1;
        assert!(match_reply(&wrong_id.to_wire(), &q).is_none());
        let mut not_reply = good.clone();
        not_reply.header.qr = false;
        assert!(match_reply(&not_reply.to_wire(), &q).is_none());
        let mut wrong_name = good.clone();
        wrong_name.questions[0].name = Name::parse("evil.example.org.").unwrap();
        assert!(match_reply(&wrong_name.to_wire(), &q).is_none());
        let mut wrong_type = good.clone();
        wrong_type.questions[0].qtype = RType::AAAA;
        assert!(match_reply(&wrong_type.to_wire(), &q).is_none());
        let mut wrong_class = good.clone();
        wrong_class.questions[0] = Question {
            qclass: Class::CH,
            ..wrong_class.questions[0].clone()
        };
        assert!(match_reply(&wrong_class.to_wire(), &q).is_none());
        assert!(match_reply(&[0x12, 0x34, 0x80], &q).is_none());
        let mut garbage = good.to_wire();
        garbage.extend_from_slice(&[1, 2, 3]);
        assert!(match_reply(&garbage, &q).is_none());
    }

    #[test]
    fn question_less_errors_and_broken_truncated_replies() {
        let q = query();
        let mut formerr = reply(&q);
        formerr.questions.clear();
        formerr.header.rcode = 1;
        assert!(match_reply(&formerr.to_wire(), &q).is_some());
        let mut noerror = formerr.clone();
        noerror.header.rcode = 0;
        assert!(match_reply(&noerror.to_wire(), &q).is_none());
        // TC set and an answer count with no answer behind it: an empty truncated reply.
        let mut tc = reply(&q);
        tc.header.tc = true;
        let mut bytes = tc.to_wire();
        bytes[7] = 3;
        let m = match_reply(&bytes, &q).unwrap();
        assert!(m.header.tc);
        assert!(m.answers.is_empty());
        assert_eq!(m.questions, q.questions);
        // The same without TC is bogus.
        bytes[2] &= !0x02;
        assert!(match_reply(&bytes, &q).is_none());
    }
}

/// Connection expiry and the health-check interval run on the proxy's clock: these tests move a
/// manual clock and talk to real upstream sockets on 127.0.0.1.
#[cfg(test)]
mod clock_tests {
    use super::*;
    use crate::pkg::clock::ManualClock;
    use crate::pkg::testing::eventually;
    use std::sync::atomic::AtomicUsize;

    fn proxy(addr: SocketAddr, expire: Duration, interval: Duration, clock: Clock) -> Arc<Proxy> {
        Arc::new(Proxy::new(
            addr,
            None,
            Duration::from_secs(2),
            expire,
            0,
            None,
            HealthSettings {
                interval,
                recursion_desired: true,
                domain: Name::root(),
                tcp: false,
            },
            Spawner::for_tests(),
            clock,
        ))
    }

    fn query(name: &str) -> Message {
        Message::query(7, Name::parse(name).unwrap(), RType::A)
    }

    /// A TCP upstream that answers every query with an empty reply and counts connections.
    async fn tcp_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    while s.read_exact(&mut len).await.is_ok() {
                        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
                        if s.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let wire = Message::reply_to(&Message::parse(&body).unwrap()).to_wire();
                        let mut out = (wire.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&wire);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// A cached connection is reused while it has been idle for at most `expire` on the clock,
    /// and dropped (a new one is dialled, `sweep` empties the pool) once it has been idle longer.
    #[tokio::test]
    async fn idle_connections_expire_by_the_clock() {
        let (addr, accepted) = tcp_upstream().await;
        let m = ManualClock::new();
        let p = proxy(addr, Duration::from_secs(10), Duration::ZERO, m.clock());
        let deadline = Instant::now() + Duration::from_secs(5);
        let ask = |name: &'static str| {
            let p = p.clone();
            async move { p.connect(&query(name), Net::Tcp, deadline).await.unwrap() }
        };
        assert_eq!(
            ask("a.example.").await.questions,
            query("a.example.").questions
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        m.advance(Duration::from_secs(10));
        ask("b.example.").await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "reused at exactly `expire`"
        );
        m.advance(Duration::from_secs(10) + Duration::from_millis(1));
        p.sweep();
        assert!(
            p.pool.lock().unwrap().is_empty(),
            "sweep drops the expired connection"
        );
        ask("c.example.").await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a new connection after expiry"
        );
        m.advance(Duration::from_secs(11));
        ask("d.example.").await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "expired in the pool, not swept"
        );
    }

    /// `max_age`: a connection in steady use is still replaced once it is older than `max_age`
    /// (CoreDNS 1.14.5), while `expire` alone would keep it forever.
    #[tokio::test]
    async fn max_age_replaces_busy_connections() {
        let (addr, accepted) = tcp_upstream().await;
        let m = ManualClock::new();
        let mut p = Proxy::new(
            addr,
            None,
            Duration::from_secs(2),
            Duration::from_secs(10),
            0,
            None,
            HealthSettings {
                interval: Duration::ZERO,
                recursion_desired: true,
                domain: Name::root(),
                tcp: false,
            },
            Spawner::for_tests(),
            m.clock(),
        );
        p.max_age = Duration::from_secs(30);
        let p = Arc::new(p);
        let deadline = Instant::now() + Duration::from_secs(5);
        // Used every 5 s: never idle for `expire`, so only `max_age` ends it.
        for _ in 0..6 {
            p.connect(&query("a.example."), Net::Tcp, deadline)
                .await
                .unwrap();
            m.advance(Duration::from_secs(5));
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "reused up to 30 s after dialing"
        );
        m.advance(Duration::from_millis(1));
        p.sweep();
        assert!(
            p.pool.lock().unwrap().is_empty(),
            "sweep drops the old connection"
        );
        p.connect(&query("b.example."), Net::Tcp, deadline)
            .await
            .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a fresh connection");
        // Without a sweep, an old connection is skipped when taken from the pool.
        m.advance(Duration::from_secs(31));
        p.connect(&query("c.example."), Net::Tcp, deadline)
            .await
            .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// Receives one datagram on a non-blocking std socket, letting the runtime run meanwhile.
    async fn recv_probe(up: &std::net::UdpSocket) -> (Message, SocketAddr) {
        let mut buf = [0u8; 512];
        let mut got = None;
        eventually("a health-check probe", || match up.recv_from(&mut buf) {
            Ok((n, from)) => {
                got = Some((Message::parse(&buf[..n]).unwrap(), from));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("{e}"),
        })
        .await;
        got.unwrap()
    }

    /// After a failed query the upstream is probed at once, then once per interval of the
    /// clock (never in between), until a probe is answered; then probing stops.
    #[tokio::test]
    async fn health_checks_repeat_on_the_clock_until_one_succeeds() {
        let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        up.set_nonblocking(true).unwrap();
        let m = ManualClock::new();
        let interval = Duration::from_secs(3);
        let p = proxy(
            up.local_addr().unwrap(),
            Duration::ZERO,
            interval,
            m.clock(),
        );
        p.healthcheck();
        let (probe, _) = recv_probe(&up).await;
        assert_eq!(probe.questions[0].qtype, RType::NS);
        assert!(probe.questions[0].name.is_root() && probe.header.rd);
        // Not answered: the next probe waits for the clock.
        m.sleepers(1).await;
        m.advance(interval - Duration::from_millis(1));
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        let mut buf = [0u8; 512];
        assert_eq!(
            up.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "probed again before the interval passed"
        );
        m.advance(Duration::from_millis(1));
        let (probe, from) = recv_probe(&up).await;
        up.send_to(&Message::reply_to(&probe).to_wire(), from)
            .unwrap();
        eventually("the answered probe to count", || {
            p.ok_epoch.load(Ordering::Acquire) == 1
        })
        .await;
        assert_eq!(p.fails.load(Ordering::Relaxed), 0);
        assert!(
            p.probing.load(Ordering::Acquire),
            "still probing until the next tick"
        );
        m.sleepers(1).await;
        m.advance(interval);
        eventually("probing to stop after a success", || {
            !p.probing.load(Ordering::Acquire)
        })
        .await;
        assert_eq!(
            up.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "no probe after the success"
        );
    }
}
