//! DNS listeners: per address, SO_REUSEPORT UDP sockets (one per core or as many as
//! `multisocket` asks, each read and answered in batches by its own thread, see `udp_thread`)
//! and SO_REUSEPORT TCP listeners (one, or `multisocket`'s count) with
//! RFC 7766 behaviour (pipelining, out-of-order answers, idle and read timeouts, connection and
//! in-flight caps). The routing table they serve is swapped atomically on reload. A stopping
//! listener drains the datagrams already queued to its UDP sockets before closing them.
//!
//! Also the hand-over registry of listening sockets (see [`handover`]): what this process has
//! open (so a second instance can be given duplicates and read the very same sockets) and what
//! it inherited from another instance (taken by the next bind of the same address).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use sextant_corefile::Scheme;

use crate::server::backlog;
use crate::server::config::{ListenKey, ListenOpts, TcpLimits, TransportOpts};
use crate::server::mmsg;
use crate::server::outbox;
use crate::server::proxy;
use crate::server::site::Site;
use crate::server::transport::Limit;
use crate::server::wstack;

/// TCP idle timeout between queries (CoreDNS: 10 s).
pub(crate) const TCP_IDLE: Duration = Duration::from_secs(10);
/// Time allowed to receive the rest of a started message (CoreDNS: 3 s).
pub(crate) const TCP_READ: Duration = Duration::from_secs(3);
/// Time allowed to write an answer (CoreDNS: 5 s).
pub(crate) const TCP_WRITE: Duration = Duration::from_secs(5);
/// Open TCP connections per listener.
pub(crate) const TCP_MAX_CONNS: usize = 1024;
/// Queries in flight per TCP connection before reading pauses.
pub(crate) const TCP_MAX_INFLIGHT: usize = 128;
/// After a stop, how long an open connection waits for one more query before it closes.
const TCP_DRAIN: Duration = Duration::from_millis(300);
/// After a stop, how long open connections are served at most.
const TCP_DRAIN_MAX: Duration = Duration::from_secs(1);

/// A bound listener address.
pub(crate) struct Listener {
    pub site: Arc<ArcSwap<Site>>,
    /// TLS configuration of a `tls://` listener (swapped on reload: new certificates apply to
    /// new connections).
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    pub cancel: CancellationToken,
    pub inflight: Arc<AtomicUsize>,
    pub local: Vec<SocketAddr>,
    /// What it was bound with (a change on reload rebinds it).
    pub opts: ListenOpts,
    /// UDP reader threads and TCP connections still running (after a stop they drain what is
    /// queued or already sent to them, then end).
    running: Arc<AtomicUsize>,
    /// Limits and QUIC endpoint of an `https://`, `https3://`, `quic://` or `grpc://` listener.
    pub transport: Option<Transport>,
}

/// What a reload may change on a DoH, DoH3, DoQ or gRPC listener besides its routing table.
pub(crate) struct Transport {
    scheme: Scheme,
    opts: Arc<ArcSwap<TransportOpts>>,
    conns: Arc<Limit>,
    workers: Arc<Limit>,
    endpoint: Option<quinn::Endpoint>,
    /// The QUIC endpoint's socket, for its PROXY settings.
    quic_socket: Option<Arc<proxy::QuicSocket>>,
}

/// A blocking UDP socket sharing its port (SO_REUSEPORT) whose reads give up after
/// [`UDP_STOP_CHECK`], so its thread can notice a stop.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(backlog::FULL);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_read_timeout(Some(UDP_STOP_CHECK))?;
    s.bind(&addr.into())?;
    let s: std::net::UdpSocket = s.into();
    // Without receive times queries are served however long they waited (see `backlog`).
    let _ = mmsg::enable_timestamps(std::os::fd::AsRawFd::as_raw_fd(&s));
    Ok(s)
}

/// The UDP socket of a QUIC endpoint.
fn quic_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A non-blocking TCP listener sharing its port (SO_REUSEPORT, like CoreDNS's listeners), so a
/// second instance can bind beside a running one; a port held by a socket without SO_REUSEPORT
/// is still an error.
pub(crate) fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The TCP listener for `addr`: the one inherited from another instance if there is one (the
/// same socket, its accept queue included), else a new one.
pub(crate) fn tcp_listener_or_inherited(
    addr: SocketAddr,
) -> std::io::Result<std::net::TcpListener> {
    let mut inherited = handover::take(handover::SocketKind::Tcp, addr);
    match inherited.pop() {
        Some(s) => {
            s.set_nonblocking(true)?;
            Ok(s.into())
        }
        None => tcp_listener(addr),
    }
}

/// Guard counting a request in flight.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn new(c: &Arc<AtomicUsize>) -> InFlight {
        c.fetch_add(1, Ordering::AcqRel);
        InFlight(c.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The sockets of a listener address, bound but not yet read: datagrams and connections queue
/// in the kernel until [`Bound::start`].
pub(crate) struct Bound {
    scheme: Scheme,
    tcp: Vec<std::net::TcpListener>,
    udp: Vec<std::net::UdpSocket>,
    local: Vec<SocketAddr>,
    opts: ListenOpts,
}

impl Bound {
    /// The bound addresses (the real port when the Corefile asked for port 0).
    pub(crate) fn local(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Starts reading: one thread per UDP socket, one accept task per TCP listener, serving
    /// `site`.
    pub(crate) fn start(
        self,
        site: Arc<Site>,
        tls: Option<Arc<rustls::ServerConfig>>,
        opts: Option<TransportOpts>,
        quic_proxy: Option<Arc<proxy::ProxySettings>>,
    ) -> std::io::Result<Listener> {
        if !matches!(self.scheme, Scheme::Dns | Scheme::Tls) {
            let opts = opts.unwrap_or_else(|| TransportOpts::defaults(self.scheme));
            return self.start_transport(site, tls, opts, quic_proxy);
        }
        let site = Arc::new(ArcSwap::new(site));
        let cancel = CancellationToken::new();
        let inflight = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let handle = tokio::runtime::Handle::current();
        for u in self.udp {
            // A thread per socket, blocked in recvmmsg like Knot's UDP workers: no poller
            // round trip and no task wake-up per batch.
            let u = Arc::new(u);
            if let Ok(a) = u.local_addr() {
                handover::register(handover::SocketKind::Udp, a, &u);
            }
            // With `shed`: the socket's replies go through a bounded stack and its own writer
            // thread, which ends once the reader and every pending answer are done.
            let producer = match self.opts.shed {
                Some(hook) => {
                    let stack = wstack::WriteStack::new(hook, site.load().label.clone());
                    let producer = wstack::Producer::new(&stack);
                    let (w, guard) = (u.clone(), ThreadCount::new(&running));
                    let spawned = std::thread::Builder::new()
                        .name("sextant-shed".into())
                        .spawn(move || {
                            use std::os::fd::AsRawFd;
                            let _running = guard;
                            wstack::writer(w.as_raw_fd(), stack)
                        });
                    if let Err(e) = spawned {
                        cancel.cancel();
                        return Err(e);
                    }
                    Some(producer)
                }
                None => None,
            };
            let (site, c, inflight, handle) = (
                site.clone(),
                cancel.clone(),
                inflight.clone(),
                handle.clone(),
            );
            // With `proxyproto`: each socket its own header state (and session table).
            let proxy = self.opts.proxy.clone().map(proxy::UdpProxy::new);
            let guard = ThreadCount::new(&running);
            let spawned = std::thread::Builder::new()
                .name("sextant-udp".into())
                .spawn(move || {
                    let _running = guard;
                    udp_thread(u, site, c, inflight, handle, producer, proxy)
                });
            if let Err(e) = spawned {
                cancel.cancel();
                return Err(e);
            }
        }
        let tls = tls.map(|c| Arc::new(ArcSwap::new(c)));
        for t in self.tcp {
            let l = match TcpListener::from_std(t) {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    cancel.cancel();
                    return Err(e);
                }
            };
            if let Ok(a) = l.local_addr() {
                handover::register(handover::SocketKind::Tcp, a, &l);
            }
            let ctx = ConnCtx {
                site: site.clone(),
                cancel: cancel.clone(),
                inflight: inflight.clone(),
                limits: self.opts.tcp,
            };
            tokio::spawn(tcp_accept(
                l,
                ctx,
                tls.clone(),
                running.clone(),
                self.opts.proxy.clone(),
            ));
        }
        Ok(Listener {
            site,
            tls,
            cancel,
            inflight,
            local: self.local,
            opts: self.opts,
            running,
            transport: None,
        })
    }

    /// Starts a DoH, DoH3, DoQ or gRPC listener: an accept task on the bound socket.
    fn start_transport(
        self,
        site: Arc<Site>,
        tls: Option<Arc<rustls::ServerConfig>>,
        opts: TransportOpts,
        quic_proxy: Option<Arc<proxy::ProxySettings>>,
    ) -> std::io::Result<Listener> {
        let site = Arc::new(ArcSwap::new(site));
        let cancel = CancellationToken::new();
        let inflight = Arc::new(AtomicUsize::new(0));
        let conns = Limit::new(opts.max_connections);
        let workers = Limit::new(opts.worker_pool);
        let opts_slot = Arc::new(ArcSwap::from_pointee(opts));
        let tls_slot = tls.clone().map(|c| Arc::new(ArcSwap::new(c)));
        let mut endpoint = None;
        let mut quic_socket = None;
        match self.scheme {
            Scheme::Quic | Scheme::Https3 => {
                let tls =
                    tls.ok_or_else(|| std::io::Error::other("QUIC needs a TLS configuration"))?;
                let cfg = crate::server::quic::server_config(tls, &opts)
                    .map_err(std::io::Error::other)?;
                for (u, local) in self.udp.into_iter().zip(self.local.iter()) {
                    let sock = proxy::QuicSocket::new(u, quic_proxy.clone(), opts.idle)?;
                    let ep = crate::server::quic::endpoint(sock.clone(), cfg.clone())?;
                    quic_socket = Some(sock);
                    let serving = Arc::new(crate::server::quic::Serving {
                        scheme: self.scheme,
                        site: site.clone(),
                        conns: conns.clone(),
                        workers: workers.clone(),
                        cancel: cancel.clone(),
                        inflight: inflight.clone(),
                        local: *local,
                        opts: opts_slot.clone(),
                    });
                    endpoint = Some(ep.clone());
                    tokio::spawn(crate::server::quic::accept_loop(ep, serving));
                }
            }
            _ => {
                let serving = Arc::new(crate::server::stream::Serving {
                    scheme: self.scheme,
                    site: site.clone(),
                    tls: tls_slot.clone(),
                    opts: opts_slot.clone(),
                    conns: conns.clone(),
                    cancel: cancel.clone(),
                    inflight: inflight.clone(),
                    proxy: self.opts.proxy.clone(),
                });
                for t in self.tcp {
                    let l = match TcpListener::from_std(t) {
                        Ok(l) => l,
                        Err(e) => {
                            cancel.cancel();
                            return Err(e);
                        }
                    };
                    tokio::spawn(crate::server::stream::accept_loop(l, serving.clone()));
                }
            }
        }
        Ok(Listener {
            site,
            tls: tls_slot,
            cancel,
            inflight,
            local: self.local,
            opts: self.opts,
            // Their connections count in `inflight` while they answer; nothing else drains.
            running: Arc::new(AtomicUsize::new(0)),
            transport: Some(Transport {
                scheme: self.scheme,
                opts: opts_slot,
                conns,
                workers,
                endpoint,
                quic_socket,
            }),
        })
    }
}

impl Listener {
    /// Binds every socket of `key` now, without reading them; fails without leaving anything
    /// bound. Without `multisocket`: one UDP socket (and reader thread) per core and one TCP
    /// listener; with it, `n` of each.
    pub(crate) fn bind(key: ListenKey, opts: &ListenOpts) -> std::io::Result<Bound> {
        let addrs: Vec<SocketAddr> = match key.ip {
            Some(ip) => vec![SocketAddr::new(ip, key.port)],
            None => vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), key.port)],
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let n_udp = opts.sockets.unwrap_or(cores);
        let n_tcp = opts.sockets.unwrap_or(1);
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        let mut local = Vec::new();
        if matches!(key.scheme, Scheme::Quic | Scheme::Https3) {
            // One UDP socket for the QUIC endpoint, without SO_REUSEPORT: QUIC connections
            // live in one process's endpoint.
            for a in &addrs {
                let u = quic_socket(*a)?;
                local.push(u.local_addr()?);
                udp.push(u);
            }
            return Ok(Bound {
                scheme: key.scheme,
                tcp,
                udp,
                local,
                opts: opts.clone(),
            });
        }
        let plain = key.scheme == Scheme::Dns;
        for a in &addrs {
            // TCP first, so a port held by a socket without SO_REUSEPORT is an error before any
            // UDP socket exists.
            let ts = tcp_listeners(*a, n_tcp)?;
            let bound = ts[0].local_addr()?;
            local.push(bound);
            tcp.extend(ts);
            if plain {
                udp.extend(udp_sockets(bound, n_udp)?);
            }
        }
        // Best effort: also every IPv6 address when listening on every address.
        if key.ip.is_none() && plain {
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), local[0].port());
            let n_v6 = opts.sockets.unwrap_or(1);
            if let (Ok(t), Ok(u)) = (tcp_listeners(v6, n_tcp), udp_sockets(v6, n_v6)) {
                tcp.extend(t);
                udp.extend(u);
            }
        }
        Ok(Bound {
            scheme: key.scheme,
            tcp,
            udp,
            local,
            opts: opts.clone(),
        })
    }

    /// Takes a reload's TLS configuration and limits: new connections use them.
    pub(crate) fn update(
        &self,
        tls: Option<&Arc<rustls::ServerConfig>>,
        opts: Option<&TransportOpts>,
        quic_proxy: Option<&Arc<proxy::ProxySettings>>,
    ) {
        if let (Some(slot), Some(cfg)) = (&self.tls, tls) {
            slot.store(cfg.clone());
        }
        let (Some(t), Some(o)) = (&self.transport, opts) else {
            return;
        };
        t.opts.store(Arc::new(*o));
        t.conns.set_max(o.max_connections);
        t.workers.set_max(o.worker_pool);
        if let Some(q) = &t.quic_socket {
            q.set(quic_proxy.cloned(), o.idle);
        }
        if let (Some(ep), Some(cfg)) = (&t.endpoint, tls) {
            match crate::server::quic::server_config(cfg.clone(), o) {
                Ok(sc) => ep.set_server_config(Some(sc)),
                Err(e) => crate::log::error(&format!("{}: {e}", t.scheme)),
            }
        }
    }

    /// Stops reading; datagrams already queued and answers in flight still go out.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
    }

    /// True once every UDP thread has drained its socket and every TCP connection has closed
    /// (after [`Listener::stop`]).
    pub(crate) fn drained(&self) -> bool {
        self.running.load(Ordering::Acquire) == 0
    }
}

/// `n` TCP listeners for `addr` (the first one inherited from another instance if there is
/// one); later ones bind the port the first got (the Corefile may ask for port 0). Never empty.
fn tcp_listeners(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = tcp_listener_or_inherited(addr)?;
    let bound = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(tcp_listener(bound)?);
    }
    Ok(out)
}

/// `n` new UDP sockets for `addr`, or all of those inherited from another instance for it
/// (every one of them gets a reader: a socket nobody reads would swallow what the kernel
/// hashes to it).
fn udp_sockets(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let inherited = handover::take(handover::SocketKind::Udp, addr);
    if !inherited.is_empty() {
        return inherited
            .into_iter()
            .map(|s| {
                s.set_read_timeout(Some(UDP_STOP_CHECK))?;
                let _ = mmsg::enable_timestamps(std::os::fd::AsRawFd::as_raw_fd(&s));
                Ok(s.into())
            })
            .collect();
    }
    (0..n).map(|_| udp_socket(addr)).collect()
}

/// Counts a running thread (or connection task) until dropped.
struct ThreadCount(Arc<AtomicUsize>);

impl ThreadCount {
    fn new(c: &Arc<AtomicUsize>) -> ThreadCount {
        c.fetch_add(1, Ordering::AcqRel);
        ThreadCount(c.clone())
    }
}

impl Drop for ThreadCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often a UDP thread blocked in recvmmsg looks whether its listener was stopped.
const UDP_STOP_CHECK: Duration = Duration::from_millis(100);
/// The longest a stopped listener keeps draining datagrams that are still arriving.
const UDP_DRAIN_MAX: Duration = Duration::from_millis(500);

fn udp_thread(
    sock: Arc<std::net::UdpSocket>,
    site: Arc<ArcSwap<Site>>,
    cancel: CancellationToken,
    inflight: Arc<AtomicUsize>,
    handle: tokio::runtime::Handle,
    stack: Option<wstack::Producer>,
    mut proxy: Option<proxy::UdpProxy>,
) {
    use std::os::fd::AsRawFd;
    // Plugins polled here may create timers or spawn tasks: they find the runtime.
    let _rt = handle.enter();
    let local = sock
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let fd = sock.as_raw_fd();
    let mut batch = mmsg::RecvBatch::new();
    let mut ready: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(mmsg::BATCH);
    let mut queue = backlog::Backlog::new();
    // Replies of this socket's waiting queries, handed back while this thread is busy.
    let outbox = Arc::new(outbox::Outbox::new());
    let mut serve_batch = |batch: &mmsg::RecvBatch, n: usize| {
        // The whole batch counts as in flight until its replies are out.
        let batch_guard = InFlight::new(&inflight);
        let site_now = site.load_full();
        // How long the batch waited in the socket (its first datagram is the oldest): a
        // query that waited too long is dropped, and the receive buffer follows the pace.
        let now = std::time::SystemTime::now();
        let waited = |i: usize| {
            batch
                .received_at(i)
                .and_then(|t| now.duration_since(t).ok())
        };
        if let Some(w) = waited(0) {
            if let Some(size) = queue.observe(w, Instant::now()) {
                let _ = socket2::SockRef::from(&*sock).set_recv_buffer_size(size);
            }
        }
        for i in 0..n {
            if waited(i).is_some_and(|w| w > backlog::STALE) {
                backlog::stale_dropped();
                continue;
            }
            let Some((packet, src)) = batch.get(i) else {
                continue;
            };
            // PROXY protocol: the payload after the header, and the header's client (the
            // reply still goes to the proxy, `src`).
            let (packet, client) = match proxy.as_mut() {
                None => (packet, src),
                Some(p) => match p.datagram(packet, src) {
                    Some(x) => x,
                    None => continue,
                },
            };
            let reply = serve_udp(
                &sock,
                &handle,
                &site_now,
                &inflight,
                packet,
                (client, src),
                local,
                stack.as_ref(),
                &outbox,
            );
            match (reply, &stack) {
                (Some(reply), None) => ready.push((reply, src)),
                (Some(reply), Some(p)) => p.stack().push(reply, src),
                (None, _) => {}
            }
        }
        outbox.drain_into(&mut ready);
        if !ready.is_empty() {
            send_batch(fd, &mut ready);
        }
        drop(batch_guard);
    };
    while !cancel.is_cancelled() {
        // About to wait: what was handed over goes out now, and tasks send their own replies
        // until datagrams come.
        send_batch(fd, &mut outbox.set_idle());
        let n = match batch.recv_wait(fd) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        outbox.set_busy();
        serve_batch(&batch, n);
    }
    // Stopped: answer what is already queued (closing the socket would drop it), until the
    // queue is empty or, if datagrams keep arriving, for at most UDP_DRAIN_MAX.
    let deadline = Instant::now() + UDP_DRAIN_MAX;
    while Instant::now() < deadline {
        match batch.recv_queued(fd) {
            Ok(n) if n > 0 => {
                outbox.set_busy();
                serve_batch(&batch, n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    // Gone: tasks still waiting send their own replies from now on.
    send_batch(fd, &mut outbox.set_idle());
}

/// Sends the replies that are ready with `sendmmsg`; when the socket buffer is full, waits
/// for room a little (this thread has nothing better to do) and drops what still does not fit,
/// as a full buffer would.
fn send_batch(fd: std::os::fd::RawFd, ready: &mut Vec<(Vec<u8>, SocketAddr)>) {
    let mut done = 0;
    let mut waits = 0;
    while done < ready.len() {
        match mmsg::send(fd, &ready[done..]) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && waits < 10 => {
                waits += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            // A reply the kernel refuses (e.g. an unreachable destination) is dropped alone.
            Err(_) => done += 1,
        }
    }
    ready.clear();
}

/// Sends a reply from a task (a query that had to wait): without blocking the runtime's thread,
/// retrying for a while when the socket buffer is full.
async fn send_from_task(sock: &std::net::UdpSocket, reply: &[u8], dst: SocketAddr) {
    use std::os::fd::AsRawFd;
    for _ in 0..50 {
        match mmsg::send_one(sock.as_raw_fd(), reply, &dst) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            _ => return,
        }
    }
}

/// Answers one datagram. Where a chain may answer at once without futures (`Site::now`: the
/// kubernetes plugin's remembered and fast-path replies behind `errors`), that is tried first
/// (`Site::handle_udp_now`), on the packet as received: no copy of it, no boxed future.
/// Otherwise the handler future is polled once right here: answers that need no
/// waiting (kubernetes, cache hits, whoami, ...) are returned to be sent with the batch, without
/// a task; only a future that is still pending (forward, a blocked plugin) becomes a task on the
/// runtime, which owns a copy of the packet and sends its reply itself (or pushes it onto the
/// socket's write stack, with `shed`).
#[allow(clippy::too_many_arguments)]
fn serve_udp(
    sock: &Arc<std::net::UdpSocket>,
    handle: &tokio::runtime::Handle,
    site: &Arc<Site>,
    inflight: &Arc<AtomicUsize>,
    packet: &[u8],
    (client, src): (SocketAddr, SocketAddr),
    local: SocketAddr,
    stack: Option<&wstack::Producer>,
    outbox: &Arc<outbox::Outbox>,
) -> Option<Vec<u8>> {
    let backlogged = stack.is_some_and(|p| p.stack().full());
    if site.now {
        if let Some(reply) = site.handle_udp_now(packet, client, local, backlogged) {
            return reply;
        }
    }
    let mut fut = Box::pin(handle_owned(
        site.clone(),
        packet.to_vec(),
        client,
        local,
        backlogged,
    ));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(reply) => reply,
        std::task::Poll::Pending => {
            // The spawned task polls the future again at once with its own waker (futures
            // register the waker of their latest poll), so no wake-up is lost.
            let sock = sock.clone();
            let guard = InFlight::new(inflight);
            let producer = stack.map(|p| wstack::Producer::new(p.stack()));
            let outbox = outbox.clone();
            handle.spawn(async move {
                let _guard = guard;
                if let Some(reply) = fut.await {
                    match producer {
                        Some(p) => p.stack().push(reply, src),
                        // With the next batch of the socket's reader if it is busy.
                        None => match outbox.offer(reply, src) {
                            outbox::Offer::Taken => {}
                            outbox::Offer::Yours(reply, dst) => {
                                send_from_task(&sock, &reply, dst).await
                            }
                            outbox::Offer::All(all) => {
                                for (reply, dst) in all {
                                    send_from_task(&sock, &reply, dst).await;
                                }
                            }
                        },
                    }
                }
            });
            None
        }
    }
}

/// The query future of one UDP datagram, owning what it reads. An `async` block rather than an
/// `async fn`: the function's body would move its arguments into locals, a second copy of the
/// site and the packet in every query's future.
#[allow(clippy::manual_async_fn)]
fn handle_owned(
    site: Arc<Site>,
    packet: Vec<u8>,
    src: SocketAddr,
    local: SocketAddr,
    backlogged: bool,
) -> impl Future<Output = Option<Vec<u8>>> + Send {
    async move { site.handle_udp(&packet, src, local, backlogged).await }
}

/// Time allowed for a TLS handshake.
pub(crate) const TLS_HANDSHAKE: Duration = Duration::from_secs(5);

/// Accepts connections until stopped; `running` counts the open connections (they drain
/// after the stop, see `tcp_conn`).
async fn tcp_accept(
    l: Arc<TcpListener>,
    ctx: ConnCtx,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    running: Arc<AtomicUsize>,
    proxy: Option<Arc<proxy::ProxySettings>>,
) {
    let conns = Arc::new(Semaphore::new(TCP_MAX_CONNS));
    let cancel = ctx.cancel.clone();
    let limits = ctx.limits;
    let serve = |stream: tokio::net::TcpStream,
                 peer: SocketAddr,
                 permit: tokio::sync::OwnedSemaphorePermit| {
        let conn = ctx.clone();
        let tls = tls.as_ref().map(|t| t.load_full());
        let open = ThreadCount::new(&running);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let _ = stream.set_nodelay(true);
            let local = stream
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            match proxy {
                None => tcp_serve(stream, peer, local, tls, conn).await,
                // The PROXY header comes before TLS; the read timeout bounds its wait too.
                Some(p) => {
                    let wait = proxy::HEADER_TIMEOUT.min(limits.read);
                    if let Some(a) = proxy::accept(stream, &p, peer, local, wait).await {
                        tcp_serve(a.stream, a.peer, a.local, tls, conn).await;
                    }
                }
            }
        });
    };
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        serve(stream, peer, permit);
    }
    // Stopped: connections whose handshake already completed wait in the accept queue, and
    // closing the listener would reset them. Take them (they are served in drain mode).
    for _ in 0..TCP_MAX_CONNS {
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            break;
        };
        match tokio::time::timeout(Duration::from_millis(1), l.accept()).await {
            Ok(Ok((stream, peer))) => serve(stream, peer, permit),
            _ => break,
        }
    }
}

/// What a TCP or TLS connection is served with.
#[derive(Clone)]
struct ConnCtx {
    site: Arc<ArcSwap<Site>>,
    cancel: CancellationToken,
    inflight: Arc<AtomicUsize>,
    limits: TcpLimits,
}

/// Serves a connection, after a TLS handshake on `tls://` listeners.
async fn tcp_serve<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    c: ConnCtx,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    match tls {
        None => tcp_conn(stream, peer, local, c.site, c.cancel, c.inflight, c.limits).await,
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            if let Ok(Ok(s)) = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                tcp_conn(s, peer, local, c.site, c.cancel, c.inflight, c.limits).await;
            }
        }
    }
}

/// Serves one connection: pipelined queries answered as they complete, until the client
/// closes, a timeout of `limits` passes, `limits.max_queries` have been read, or the listener
/// stops (then it drains briefly).
async fn tcp_conn<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    site: Arc<ArcSwap<Site>>,
    cancel: CancellationToken,
    inflight: Arc<AtomicUsize>,
    limits: TcpLimits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let wr = Arc::new(Mutex::new(wr));
    let slots = Arc::new(Semaphore::new(TCP_MAX_INFLIGHT));
    // Cancelled when an answer could not be written in time: the stream is broken (a message
    // may be cut), so the connection closes without writing more.
    let broken = CancellationToken::new();
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut queries: u32 = 0;
    loop {
        if limits.max_queries.is_some_and(|m| queries >= m) {
            break;
        }
        let mut len = [0u8; 2];
        // Wait for the first byte of the next message up to the idle timeout. Once the
        // listener stopped, a query already sent (a client that connected just before) is
        // still answered: the connection closes after TCP_DRAIN without one, or at the latest
        // TCP_DRAIN_MAX after the stop.
        let first = match drain_until {
            Some(end) => {
                let now = tokio::time::Instant::now();
                if now >= end {
                    break;
                }
                tokio::time::timeout(TCP_DRAIN.min(end - now), rd.read(&mut len[..1])).await
            }
            None => tokio::select! {
                _ = cancel.cancelled() => {
                    drain_until = Some(tokio::time::Instant::now() + TCP_DRAIN_MAX);
                    continue;
                }
                _ = broken.cancelled() => break,
                r = tokio::time::timeout(limits.idle, rd.read(&mut len[..1])) => r,
            },
        };
        match first {
            Ok(Ok(1)) => {}
            _ => break,
        }
        let rest = async {
            rd.read_exact(&mut len[1..]).await?;
            let n = u16::from_be_bytes(len) as usize;
            let mut body = vec![0u8; n];
            rd.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::select! {
            _ = broken.cancelled() => break,
            r = tokio::time::timeout(limits.read, rest) => match r {
                Ok(Ok(b)) => b,
                _ => break,
            },
        };
        if body.is_empty() {
            break;
        }
        queries = queries.saturating_add(1);
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let site = site.load_full();
        let wr = wr.clone();
        let guard = InFlight::new(&inflight);
        let broken = broken.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _slot = slot;
            let mut more = Vec::new();
            if let Some(reply) = site.handle_stream(&body, peer, local, &mut more).await {
                let mut out = Vec::with_capacity(reply.len() + 2);
                for m in std::iter::once(&reply).chain(more.iter()) {
                    out.extend_from_slice(&(m.len() as u16).to_be_bytes());
                    out.extend_from_slice(m);
                }
                let mut w = wr.lock().await;
                if broken.is_cancelled() {
                    return;
                }
                // A zone transfer may be many messages: the write time grows with its size.
                let limit = limits.write * (1 + (out.len() / (1 << 20)) as u32);
                if !matches!(
                    tokio::time::timeout(limit, w.write_all(&out)).await,
                    Ok(Ok(()))
                ) {
                    broken.cancel();
                }
            }
        });
    }
    // Let answers in flight on this connection go out before closing it.
    if !broken.is_cancelled() {
        tokio::select! {
            _ = broken.cancelled() => {}
            _ = tokio::time::timeout(limits.write, slots.acquire_many(TCP_MAX_INFLIGHT as u32)) => {}
        }
    }
    if broken.is_cancelled() {
        // Nothing more is written; the stream closes when the last task lets go of it.
        return;
    }
    let mut w = wr.lock().await;
    let _ = w.shutdown().await;
}

/// The hand-over registry: the listening sockets this process has open, and those a running
/// instance handed to this one at start (see `nodecache::peers`). Two instances holding
/// duplicates of the same socket both read it; when one exits, the socket, its queued datagrams
/// and its accept queue live on in the other, so nothing queued is lost.
pub(crate) mod handover {
    use std::net::SocketAddr;
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::{Arc, Mutex, Weak};

    use socket2::{Socket, Type};

    /// What a shared listening socket is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum SocketKind {
        Udp,
        /// A listening TCP socket (DNS or HTTP).
        Tcp,
    }

    impl SocketKind {
        pub(crate) fn as_str(self) -> &'static str {
            match self {
                SocketKind::Udp => "udp",
                SocketKind::Tcp => "tcp",
            }
        }

        pub(crate) fn parse(s: &str) -> Option<SocketKind> {
            match s {
                "udp" => Some(SocketKind::Udp),
                "tcp" => Some(SocketKind::Tcp),
                _ => None,
            }
        }
    }

    struct Open {
        kind: SocketKind,
        addr: SocketAddr,
        sock: Weak<dyn AsFd + Send + Sync>,
    }

    /// Sockets in use, held weakly: a stopped listener's socket closes as usual.
    static OPEN: Mutex<Vec<Open>> = Mutex::new(Vec::new());
    /// Sockets handed over by another instance, not yet taken by a bind.
    static INHERITED: Mutex<Vec<(SocketKind, SocketAddr, Socket)>> = Mutex::new(Vec::new());

    /// Records a socket this process listens on.
    pub(crate) fn register<T: AsFd + Send + Sync + 'static>(
        kind: SocketKind,
        addr: SocketAddr,
        sock: &Arc<T>,
    ) {
        let weak: Weak<dyn AsFd + Send + Sync> = Arc::downgrade(sock) as _;
        if let Ok(mut open) = OPEN.lock() {
            open.retain(|o| o.sock.strong_count() > 0);
            open.push(Open {
                kind,
                addr,
                sock: weak,
            });
        }
    }

    /// Duplicates of every socket this process listens on now, to hand to another instance.
    pub(crate) fn open_sockets() -> Vec<(SocketKind, SocketAddr, OwnedFd)> {
        let Ok(mut open) = OPEN.lock() else {
            return Vec::new();
        };
        open.retain(|o| o.sock.strong_count() > 0);
        open.iter()
            .filter_map(|o| {
                let s = o.sock.upgrade()?;
                let fd = s.as_fd().try_clone_to_owned().ok()?;
                Some((o.kind, o.addr, fd))
            })
            .collect()
    }

    /// Keeps sockets handed over by another instance for the binds to come. Each must be what
    /// it claims to be (type and bound address); others are closed and reported.
    pub(crate) fn inherit(socks: Vec<(SocketKind, SocketAddr, OwnedFd)>) -> Result<usize, String> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for (kind, addr, fd) in socks {
            let s = Socket::from(fd);
            let want = match kind {
                SocketKind::Udp => Type::DGRAM,
                SocketKind::Tcp => Type::STREAM,
            };
            let is_type = s.r#type().is_ok_and(|t| t == want);
            let bound = s.local_addr().ok().and_then(|a| a.as_socket());
            let listening = kind == SocketKind::Udp || s.is_listener().unwrap_or(false);
            if is_type && listening && bound == Some(addr) {
                ok.push((kind, addr, s));
            } else {
                bad.push(format!("{} {addr}", kind.as_str()));
            }
        }
        let n = ok.len();
        if let Ok(mut inh) = INHERITED.lock() {
            inh.extend(ok);
        }
        if bad.is_empty() {
            Ok(n)
        } else {
            Err(format!(
                "refused sockets that are not what they claim: {}",
                bad.join(", ")
            ))
        }
    }

    /// Takes every inherited socket of this kind bound to `addr`.
    pub(crate) fn take(kind: SocketKind, addr: SocketAddr) -> Vec<Socket> {
        let Ok(mut inh) = INHERITED.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < inh.len() {
            if inh[i].0 == kind && inh[i].1 == addr {
                out.push(inh.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Closes the inherited sockets no bind took (addresses this configuration does not serve):
    /// kept open unread, they would swallow what the kernel hashes to them. Returns them named.
    pub(crate) fn release_unclaimed() -> Vec<String> {
        let Ok(mut inh) = INHERITED.lock() else {
            return Vec::new();
        };
        inh.drain(..)
            .map(|(k, a, _)| format!("{} {a}", k.as_str()))
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn hands_over_live_sockets_only_and_checks_what_it_inherits() {
            let u = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            let ua = u.local_addr().unwrap();
            let t = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
            let ta = t.local_addr().unwrap();
            register(SocketKind::Udp, ua, &u);
            register(SocketKind::Tcp, ta, &t);
            let gone = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            let ga = gone.local_addr().unwrap();
            register(SocketKind::Udp, ga, &gone);
            drop(gone);
            let open = open_sockets();
            assert!(open
                .iter()
                .any(|(k, a, _)| *k == SocketKind::Udp && *a == ua));
            assert!(open
                .iter()
                .any(|(k, a, _)| *k == SocketKind::Tcp && *a == ta));
            assert!(!open.iter().any(|(_, a, _)| *a == ga), "a closed socket");
            // A duplicate is the same socket: what is sent to it can be read from the original.
            let dup: Vec<_> = open
                .into_iter()
                .filter(|(_, a, _)| *a == ua || *a == ta)
                .collect();
            assert_eq!(inherit(dup).unwrap(), 2);
            let mine = take(SocketKind::Udp, ua);
            assert_eq!(mine.len(), 1);
            let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            c.send_to(b"hi", ua).unwrap();
            let mine: std::net::UdpSocket = mine.into_iter().next().unwrap().into();
            mine.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(mine.recv(&mut buf).unwrap(), 2);
            assert!(take(SocketKind::Udp, ua).is_empty(), "taken once");
            assert_eq!(release_unclaimed(), vec![format!("tcp {ta}")]);
            // A socket claiming another address or kind is refused.
            let fd = u.as_fd().try_clone_to_owned().unwrap();
            let err = inherit(vec![(SocketKind::Tcp, ua, fd)]).unwrap_err();
            assert!(err.contains(&format!("tcp {ua}")), "{err}");
            let fd = u.as_fd().try_clone_to_owned().unwrap();
            assert!(inherit(vec![(SocketKind::Udp, ta, fd)]).is_err());
            assert!(release_unclaimed().is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every UDP query's future is boxed (`serve_udp`). Above 1032 bytes glibc's per-thread
    /// cache never takes the block (cache hit 4,815 instructions against 4,187 within it);
    /// above 1000 bytes the block is a large-bin one, and whenever the thread's cache has none
    /// (the futures that wait are freed on a worker thread: forwarded queries, under load) each
    /// allocation consolidates the fast bins first, which took ~3% of the UDP thread's time
    /// under overload. 1,016 bytes before this bound, 664 since.
    #[test]
    fn a_udp_query_future_is_a_small_allocation() {
        let site = Arc::new(Site::new("dns://:53", vec![]));
        let a = SocketAddr::from(([127, 0, 0, 1], 53));
        let f = handle_owned(site, vec![0; 12], a, a, false);
        let n = std::mem::size_of_val(&f);
        eprintln!("handle_owned future: {n} bytes");
        assert!(n <= 1000, "handle_owned future: {n} bytes");
    }
}
