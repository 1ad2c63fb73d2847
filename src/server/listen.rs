//! DNS listeners: per address, SO_REUSEPORT UDP sockets (one per core, each read and answered in
//! batches by its own thread, see `udp_thread`) and one TCP listener with
//! RFC 7766 behaviour (pipelining, out-of-order answers, idle and read timeouts, connection and
//! in-flight caps). The routing table they serve is swapped atomically on reload.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::plugin::Proto;
use crate::server::config::ListenKey;
use crate::server::mmsg;
use crate::server::site::Site;

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

/// A bound listener address.
pub(crate) struct Listener {
    pub site: Arc<ArcSwap<Site>>,
    /// TLS configuration of a `tls://` listener (swapped on reload: new certificates apply to
    /// new connections).
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    pub cancel: CancellationToken,
    pub inflight: Arc<AtomicUsize>,
    pub local: Vec<SocketAddr>,
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
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_read_timeout(Some(UDP_STOP_CHECK))?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
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
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Guard counting a request in flight.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(c: &Arc<AtomicUsize>) -> InFlight {
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
    tcp: Vec<std::net::TcpListener>,
    udp: Vec<std::net::UdpSocket>,
    local: Vec<SocketAddr>,
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
    ) -> std::io::Result<Listener> {
        let site = Arc::new(ArcSwap::new(site));
        let cancel = CancellationToken::new();
        let inflight = Arc::new(AtomicUsize::new(0));
        let handle = tokio::runtime::Handle::current();
        for u in self.udp {
            // A thread per socket, blocked in recvmmsg like Knot's UDP workers: no poller
            // round trip and no task wake-up per batch.
            let (site, c, inflight, handle) = (
                site.clone(),
                cancel.clone(),
                inflight.clone(),
                handle.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("sextant-udp".into())
                .spawn(move || udp_thread(Arc::new(u), site, c, inflight, handle));
            if let Err(e) = spawned {
                cancel.cancel();
                return Err(e);
            }
        }
        let tls = tls.map(|c| Arc::new(ArcSwap::new(c)));
        for t in self.tcp {
            let l = match TcpListener::from_std(t) {
                Ok(l) => l,
                Err(e) => {
                    cancel.cancel();
                    return Err(e);
                }
            };
            tokio::spawn(tcp_accept(
                l,
                site.clone(),
                tls.clone(),
                cancel.clone(),
                inflight.clone(),
            ));
        }
        Ok(Listener {
            site,
            tls,
            cancel,
            inflight,
            local: self.local,
        })
    }
}

impl Listener {
    /// Binds every socket of `key` now, without reading them; fails without leaving anything
    /// bound.
    pub(crate) fn bind(key: ListenKey) -> std::io::Result<Bound> {
        let addrs: Vec<SocketAddr> = match key.ip {
            Some(ip) => vec![SocketAddr::new(ip, key.port)],
            None => vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), key.port)],
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        let mut local = Vec::new();
        for a in &addrs {
            // TCP first, without SO_REUSEPORT, so a port held by another process is an error.
            let t = tcp_listener(*a)?;
            let bound = t.local_addr()?;
            local.push(bound);
            tcp.push(t);
            if !key.tls {
                for _ in 0..cores {
                    udp.push(udp_socket(bound)?);
                }
            }
        }
        // Best effort: also every IPv6 address when listening on every address.
        if key.ip.is_none() && !key.tls {
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), local[0].port());
            if let (Ok(t), Ok(u)) = (tcp_listener(v6), udp_socket(v6)) {
                tcp.push(t);
                udp.push(u);
            }
        }
        Ok(Bound { tcp, udp, local })
    }

    /// Stops reading; answers in flight still go out.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
    }
}

/// How often a UDP thread blocked in recvmmsg looks whether its listener was stopped.
const UDP_STOP_CHECK: Duration = Duration::from_millis(100);

fn udp_thread(
    sock: Arc<std::net::UdpSocket>,
    site: Arc<ArcSwap<Site>>,
    cancel: CancellationToken,
    inflight: Arc<AtomicUsize>,
    handle: tokio::runtime::Handle,
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
    while !cancel.is_cancelled() {
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
        // The whole batch counts as in flight until its replies are out.
        let batch_guard = InFlight::new(&inflight);
        let site_now = site.load_full();
        for i in 0..n {
            let Some((packet, src)) = batch.get(i) else {
                continue;
            };
            if let Some(reply) = serve_udp(&sock, &handle, &site_now, &inflight, packet, src, local)
            {
                ready.push((reply, src));
            }
        }
        send_batch(fd, &mut ready);
        drop(batch_guard);
    }
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

/// Answers one datagram. The handler future is polled once right here: answers that need no
/// waiting (kubernetes, cache hits, whoami, ...) are returned to be sent with the batch, without
/// a task; only a future that is still pending (forward, a blocked plugin) becomes a task on the
/// runtime, which owns a copy of the packet and sends its reply itself.
fn serve_udp(
    sock: &Arc<std::net::UdpSocket>,
    handle: &tokio::runtime::Handle,
    site: &Arc<Site>,
    inflight: &Arc<AtomicUsize>,
    packet: &[u8],
    src: SocketAddr,
    local: SocketAddr,
) -> Option<Vec<u8>> {
    let mut fut = Box::pin(handle_owned(site.clone(), packet.to_vec(), src, local));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(reply) => reply,
        std::task::Poll::Pending => {
            // The spawned task polls the future again at once with its own waker (futures
            // register the waker of their latest poll), so no wake-up is lost.
            let sock = sock.clone();
            let guard = InFlight::new(inflight);
            handle.spawn(async move {
                let _guard = guard;
                if let Some(reply) = fut.await {
                    send_from_task(&sock, &reply, src).await;
                }
            });
            None
        }
    }
}

async fn handle_owned(
    site: Arc<Site>,
    packet: Vec<u8>,
    src: SocketAddr,
    local: SocketAddr,
) -> Option<Vec<u8>> {
    site.handle(&packet, src, local, Proto::Udp).await
}

/// Time allowed for a TLS handshake.
pub(crate) const TLS_HANDSHAKE: Duration = Duration::from_secs(5);

async fn tcp_accept(
    l: TcpListener,
    site: Arc<ArcSwap<Site>>,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    cancel: CancellationToken,
    inflight: Arc<AtomicUsize>,
) {
    let conns = Arc::new(Semaphore::new(TCP_MAX_CONNS));
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
        let site = site.clone();
        let cancel = cancel.clone();
        let inflight = inflight.clone();
        let tls = tls.as_ref().map(|t| t.load_full());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let local = stream
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            match tls {
                None => tcp_conn(stream, peer, local, site, cancel, inflight).await,
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await
                    {
                        tcp_conn(s, peer, local, site, cancel, inflight).await;
                    }
                }
            }
        });
    }
}

async fn tcp_conn<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    site: Arc<ArcSwap<Site>>,
    cancel: CancellationToken,
    inflight: Arc<AtomicUsize>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let wr = Arc::new(Mutex::new(wr));
    let slots = Arc::new(Semaphore::new(TCP_MAX_INFLIGHT));
    loop {
        let mut len = [0u8; 2];
        // Wait for the first byte of the next message up to the idle timeout.
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(TCP_IDLE, rd.read(&mut len[..1])) => r,
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
        let body = match tokio::time::timeout(TCP_READ, rest).await {
            Ok(Ok(b)) => b,
            _ => break,
        };
        if body.is_empty() {
            break;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let site = site.load_full();
        let wr = wr.clone();
        let guard = InFlight::new(&inflight);
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
                // A zone transfer may be many messages: the write time grows with its size.
                let limit = TCP_WRITE * (1 + (out.len() / (1 << 20)) as u32);
                let _ = tokio::time::timeout(limit, w.write_all(&out)).await;
            }
        });
    }
    // Let answers in flight on this connection go out before closing it.
    let _ = tokio::time::timeout(TCP_WRITE, slots.acquire_many(TCP_MAX_INFLIGHT as u32)).await;
    let mut w = wr.lock().await;
    let _ = w.shutdown().await;
}
