//! PROXY protocol on listeners (what the `proxyproto` plugin turns on), as CoreDNS 1.14.7 wraps
//! its listeners with go-proxyproto: the policy by the connecting address (`allow` CIDRs and
//! `default`), the header read at the start of a TCP connection before TLS or HTTP (the stream
//! then goes on with the bytes after it), and the per-datagram header of UDP (v2 only) with the
//! optional session table of header-only datagrams (`udp_session_tracking`), and the same
//! per-datagram header in front of a QUIC endpoint (`quic://`, `https3://`: [`QuicSocket`]).
//! Plugins see the header's client; replies go back to the proxy. The header decoder is
//! `pkg::proxyproto`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::pkg::cidr::IpNet;
use crate::pkg::proxyproto::{decode, Decoded, MAX_HEADER};

/// What to do with a connection or datagram from some address (go-proxyproto's `Policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Take the header's addresses.
    Use,
    /// Read and drop a header, keep the connection's addresses.
    Ignore,
    /// A header closes the connection (drops the datagram).
    Reject,
    /// No PROXY processing: a header stays in the DNS stream.
    Skip,
}

/// Default session cap of `udp_session_tracking` (CoreDNS's `udpSessionMaxEntries`).
pub(crate) const DEFAULT_MAX_SESSIONS: usize = 10_240;
/// How long a connection may take to send its header (go-proxyproto's
/// `DefaultReadHeaderTimeout`; the read timeout bounds it when shorter, as its deadline does
/// in CoreDNS).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener's PROXY protocol settings (from the last block of the address that has
/// `proxyproto`, as in CoreDNS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxySettings {
    pub allow: Vec<IpNet>,
    /// `default`, when given.
    pub default: Option<Policy>,
    /// `udp_session_tracking` TTL; zero: off.
    pub session_ttl: Duration,
    pub max_sessions: usize,
}

impl ProxySettings {
    /// The policy for a connection or datagram from `upstream` (CoreDNS's `ConnPolicy`):
    /// without `allow`, `use` unless `default` says otherwise; with it, `use` inside and
    /// `default` (else `ignore`) outside.
    pub(crate) fn policy(&self, upstream: IpAddr) -> Policy {
        let upstream = match upstream {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(upstream, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.is_empty() {
            return self.default.unwrap_or(Policy::Use);
        }
        if self.allow.iter().any(|n| n.contains(&upstream)) {
            Policy::Use
        } else {
            self.default.unwrap_or(Policy::Ignore)
        }
    }
}

/// The PROXY state of one UDP socket (its own thread's: no lock).
pub(crate) struct UdpProxy {
    settings: Arc<ProxySettings>,
    sessions: Option<Sessions>,
}

impl UdpProxy {
    pub(crate) fn new(settings: Arc<ProxySettings>) -> UdpProxy {
        let sessions = (!settings.session_ttl.is_zero())
            .then(|| Sessions::new(settings.session_ttl, settings.max_sessions));
        UdpProxy { settings, sessions }
    }

    /// The DNS payload of a datagram from `peer` and the client plugins see, or None when
    /// the datagram is dropped (a bad or refused header, v1, a header-only datagram).
    pub(crate) fn datagram<'a>(
        &mut self,
        packet: &'a [u8],
        peer: SocketAddr,
    ) -> Option<(&'a [u8], SocketAddr)> {
        let policy = self.settings.policy(peer.ip());
        if policy == Policy::Skip {
            return Some((packet, peer));
        }
        let (header, payload) = match decode(packet, true) {
            Ok(Decoded::Header { header, len }) => {
                if header.version != 2 {
                    warn_drop(
                        peer,
                        "unsupported Proxy Protocol version 1 (only v2 supported for UDP)",
                    );
                    return None;
                }
                if !header.is_udp() {
                    warn_drop(
                        peer,
                        &format!(
                            "PROXY Protocol header is not UDP type (transport protocol: 0x{:x})",
                            header.family
                        ),
                    );
                    return None;
                }
                (Some(header), packet.get(len..).unwrap_or_default())
            }
            Ok(_) => (None, packet),
            Err(e) => {
                warn_drop(peer, &format!("parsing Proxy Protocol header: {e}"));
                return None;
            }
        };
        let mut client = peer;
        match policy {
            Policy::Reject if header.is_some() => {
                warn_drop(
                    peer,
                    "connection rejected by Proxy Protocol connection policy",
                );
                return None;
            }
            Policy::Use => match (header.and_then(|h| h.source), &mut self.sessions) {
                (Some(src), Some(s)) => {
                    s.store(peer, src, Instant::now());
                    if payload.is_empty() {
                        return None;
                    }
                    client = src;
                }
                (Some(src), None) => client = src,
                (None, Some(s)) => {
                    if let Some(src) = s.lookup(peer, Instant::now()) {
                        client = src;
                    }
                }
                (None, None) => {}
            },
            _ => {}
        }
        Some((payload, client))
    }
}

fn warn_drop(peer: SocketAddr, why: &str) {
    crate::log::warning(&format!(
        "dropping invalid Proxy Protocol packet from {peer}: {why}"
    ));
}

/// `udp_session_tracking`: the client of a proxy's address, from its last header, for `ttl`
/// after the last packet; at most `cap` sessions, the least recently used evicted first.
pub(crate) struct Sessions {
    ttl: Duration,
    cap: usize,
    map: HashMap<SocketAddr, (SocketAddr, Instant, u64)>,
    /// Use order: stamp -> proxy address.
    order: BTreeMap<u64, SocketAddr>,
    next: u64,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, cap: usize) -> Sessions {
        Sessions {
            ttl,
            cap: cap.max(1),
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    pub(crate) fn store(&mut self, peer: SocketAddr, client: SocketAddr, now: Instant) {
        self.next += 1;
        if let Some((_, _, old)) = self.map.insert(peer, (client, now + self.ttl, self.next)) {
            self.order.remove(&old);
        }
        self.order.insert(self.next, peer);
        while self.map.len() > self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }

    /// The session's client, its TTL refreshed; None when unknown or expired.
    pub(crate) fn lookup(&mut self, peer: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let &(client, expires, stamp) = self.map.get(&peer)?;
        if now >= expires {
            self.map.remove(&peer);
            self.order.remove(&stamp);
            return None;
        }
        self.store(peer, client, now);
        Some(client)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The UDP socket of a QUIC endpoint (`quic://`, `https3://`) with the PROXY protocol in
/// front of it, as CoreDNS wraps the packet connection of its QUIC servers: each datagram's v2
/// header is decoded and stripped under the listener's policy (as for plain UDP, without
/// session tracking, which CoreDNS does not give QUIC), quinn sees the header's client as the
/// datagram's source, so connections, plugins and logs see that client, and what quinn sends
/// to such a client goes to the proxy it came through (to an address no datagram came from
/// lately: nowhere). Without `proxyproto` (which a reload may turn on or off) datagrams pass
/// untouched.
pub(crate) struct QuicSocket {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    on: std::sync::atomic::AtomicBool,
    state: std::sync::Mutex<QuicProxy>,
}

struct QuicProxy {
    udp: Option<UdpProxy>,
    /// Source quinn saw (a header's client, or the sender itself) -> the address its
    /// datagrams came from, refreshed by each datagram and each send; kept a while past QUIC's
    /// idle timeout, so no live connection loses it.
    back: Sessions,
}

/// How long past the idle timeout a client's proxy address is kept.
const QUIC_BACK_MARGIN: Duration = Duration::from_secs(30);

impl std::fmt::Debug for QuicSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl QuicSocket {
    pub(crate) fn new(
        sock: std::net::UdpSocket,
        settings: Option<Arc<ProxySettings>>,
        idle: Duration,
    ) -> std::io::Result<Arc<QuicSocket>> {
        use quinn::Runtime as _;
        let inner = quinn::TokioRuntime.wrap_udp_socket(sock)?;
        let s = Arc::new(QuicSocket {
            inner,
            on: std::sync::atomic::AtomicBool::new(false),
            state: std::sync::Mutex::new(QuicProxy {
                udp: None,
                back: Sessions::new(idle + QUIC_BACK_MARGIN, DEFAULT_MAX_SESSIONS),
            }),
        });
        s.set(settings, idle);
        Ok(s)
    }

    /// The listener's PROXY settings (None: off) and QUIC idle timeout, on start and reload.
    /// Known clients keep their proxy address.
    pub(crate) fn set(&self, settings: Option<Arc<ProxySettings>>, idle: Duration) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.back.ttl = idle + QUIC_BACK_MARGIN;
        if let Some(s) = &settings {
            st.back.cap = s.max_sessions.max(DEFAULT_MAX_SESSIONS);
        }
        st.udp = settings.map(|s| {
            UdpProxy::new(Arc::new(ProxySettings {
                session_ttl: Duration::ZERO,
                ..(*s).clone()
            }))
        });
        self.on
            .store(st.udp.is_some(), std::sync::atomic::Ordering::Release);
    }
}

impl QuicProxy {
    /// Rewrites one received buffer in place (one datagram, or several of one size under GRO
    /// with `stride`): headers stripped, the source made the header's client. False: drop it.
    fn rewrite(&mut self, buf: &mut [u8], meta: &mut quinn::udp::RecvMeta) -> bool {
        let Some(udp) = self.udp.as_mut() else {
            return true;
        };
        let peer = meta.addr;
        let len = meta.len.min(buf.len());
        let stride = if meta.stride == 0 { len } else { meta.stride };
        // Every segment of a batch comes from the same proxy; each must carry the same header
        // length and client (a batch that does not is dropped whole).
        let mut found: Option<(usize, SocketAddr)> = None;
        let mut start = 0;
        while start < len {
            let end = (start + stride).min(len);
            let seg = &buf[start..end];
            let Some((payload, client)) = udp.datagram(seg, peer) else {
                return false;
            };
            let skip = seg.len() - payload.len();
            match found {
                None => found = Some((skip, client)),
                Some(f) if f == (skip, client) => {}
                Some(_) => return false,
            }
            start = end;
        }
        let Some((skip, client)) = found else {
            return false;
        };
        if skip > 0 {
            // Move each segment's payload down over the headers.
            let mut w = 0;
            let mut start = 0;
            while start < len {
                let end = (start + stride).min(len);
                buf.copy_within(start + skip..end, w);
                w += end - start - skip;
                start = end;
            }
            if w == 0 {
                return false;
            }
            meta.len = w;
            meta.stride = stride - skip;
        }
        // Every source is remembered, direct ones too: a destination not in the table is
        // then one forgotten (more live clients than the table holds), which is not sent to.
        self.back.store(client, peer, Instant::now());
        meta.addr = client;
        true
    }
}

impl quinn::AsyncUdpSocket for QuicSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        if self.on.load(std::sync::atomic::Ordering::Acquire) {
            let proxy = match self.state.lock() {
                Ok(mut st) => st.back.lookup(transmit.destination, Instant::now()),
                Err(_) => None,
            };
            // Unknown: a header's client whose proxy was forgotten; never sent to directly
            // (QUIC takes it as a loss).
            let Some(proxy) = proxy else {
                return Ok(());
            };
            if proxy != transmit.destination {
                return self.inner.try_send(&quinn::udp::Transmit {
                    destination: proxy,
                    ecn: transmit.ecn,
                    contents: transmit.contents,
                    segment_size: transmit.segment_size,
                    src_ip: transmit.src_ip,
                });
            }
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            if !self.on.load(std::sync::atomic::Ordering::Acquire) {
                return Poll::Ready(Ok(n));
            }
            let Ok(mut st) = self.state.lock() else {
                return Poll::Ready(Ok(n));
            };
            let mut kept = 0;
            for i in 0..n.min(bufs.len()).min(meta.len()) {
                let mut m = meta[i];
                if !st.rewrite(&mut bufs[i], &mut m) {
                    continue;
                }
                if kept != i {
                    let (to, from) = bufs.split_at_mut(i);
                    let l = m.len.min(to[kept].len());
                    to[kept][..l].copy_from_slice(&from[0][..l]);
                }
                meta[kept] = m;
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was dropped: read on.
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A stream whose first bytes were already read (past a PROXY header): they are read again
/// first, then the stream itself.
pub(crate) struct Prefixed<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.pre[start..start + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                self.pre = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection past its PROXY header: the stream, the client plugins see and the local
/// address (the header's destination under `use`).
pub(crate) struct Accepted<S> {
    pub stream: Prefixed<S>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Reads the PROXY header at the start of a connection from `peer` under `settings`. None:
/// the connection is to be closed (a malformed header, a header refused by the policy, or
/// nothing decidable within `timeout`). Under `skip` nothing is read.
pub(crate) async fn accept<S>(
    mut stream: S,
    settings: &ProxySettings,
    peer: SocketAddr,
    local: SocketAddr,
    timeout: Duration,
) -> Option<Accepted<S>>
where
    S: AsyncRead + Unpin,
{
    let policy = settings.policy(peer.ip());
    let mut buf = Vec::new();
    if policy == Policy::Skip {
        return Some(Accepted {
            stream: Prefixed {
                pre: buf,
                pos: 0,
                inner: stream,
            },
            peer,
            local,
        });
    }
    let read = async {
        let mut chunk = [0u8; 512];
        loop {
            let done = match decode(&buf, false) {
                Ok(Decoded::Incomplete) => None,
                Ok(Decoded::None) => Some(Ok(None)),
                Ok(Decoded::Header { header, len }) => Some(Ok(Some((header, len)))),
                Err(e) => Some(Err(e.to_string())),
            };
            if let Some(d) = done {
                return d;
            }
            let want = chunk.len().min(MAX_HEADER + 2 - buf.len().min(MAX_HEADER));
            match stream.read(&mut chunk[..want]).await {
                Ok(0) => {
                    // The stream ended: decide on what came.
                    return match decode(&buf, true) {
                        Ok(Decoded::Header { header, len }) => Ok(Some((header, len))),
                        Ok(_) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    };
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let found = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => {
            crate::log::debug(&format!(
                "proxyproto: closing connection from {peer}: {why}"
            ));
            return None;
        }
        Err(_) => return None,
    };
    let (mut peer_out, mut local_out) = (peer, local);
    if let Some((header, len)) = found {
        buf.drain(..len.min(buf.len()));
        match policy {
            Policy::Reject => {
                crate::log::debug(&format!(
                    "proxyproto: closing connection from {peer}: upstream connection sent PROXY header but isn't allowed to send one"
                ));
                return None;
            }
            Policy::Use => {
                if let Some((src, dst)) = header.stream_client() {
                    peer_out = src;
                    local_out = dst.unwrap_or(local);
                }
            }
            _ => {}
        }
    }
    Some(Accepted {
        stream: Prefixed {
            pre: buf,
            pos: 0,
            inner: stream,
        },
        peer: peer_out,
        local: local_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allow: &[&str], default: Option<Policy>, ttl: u64) -> ProxySettings {
        ProxySettings {
            allow: allow.iter().map(|a| IpNet::parse(a).unwrap()).collect(),
            default,
            session_ttl: Duration::from_secs(ttl),
            max_sessions: 2,
        }
    }

    fn v2_udp(src: [u8; 4], sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c".to_vec();
        b.extend_from_slice(&src);
        b.extend_from_slice(&[127, 0, 0, 1]);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&53u16.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn policy_follows_coredns() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(settings(&[], None, 0).policy(ip("10.0.0.1")), Policy::Use);
        assert_eq!(
            settings(&[], Some(Policy::Reject), 0).policy(ip("10.0.0.1")),
            Policy::Reject
        );
        let s = settings(&["10.0.0.0/8"], None, 0);
        assert_eq!(s.policy(ip("10.9.9.9")), Policy::Use);
        assert_eq!(s.policy(ip("192.0.2.1")), Policy::Ignore);
        assert_eq!(s.policy(ip("::ffff:10.1.1.1")), Policy::Use);
        let s = settings(&["10.0.0.0/8"], Some(Policy::Skip), 0);
        assert_eq!(s.policy(ip("192.0.2.1")), Policy::Skip);
    }

    #[test]
    fn udp_headers_by_policy() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let pkt = v2_udp([10, 1, 2, 3], 5555, b"query");
        let mut u = UdpProxy::new(Arc::new(settings(&[], None, 0)));
        assert_eq!(
            u.datagram(&pkt, peer),
            Some((&b"query"[..], "10.1.2.3:5555".parse().unwrap()))
        );
        assert_eq!(u.datagram(b"plain", peer), Some((&b"plain"[..], peer)));
        // v1 and TCP families are dropped on UDP, as is a cut header.
        assert_eq!(
            u.datagram(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 1\r\nquery", peer),
            None
        );
        let mut tcp = pkt.clone();
        tcp[13] = 0x11;
        assert_eq!(u.datagram(&tcp, peer), None);
        assert_eq!(u.datagram(&pkt[..20], peer), None);
        // Outside `allow`: ignore strips, reject drops, skip leaves the header in.
        let mut u = UdpProxy::new(Arc::new(settings(&["10.0.0.0/8"], None, 0)));
        assert_eq!(u.datagram(&pkt, peer), Some((&b"query"[..], peer)));
        let mut u = UdpProxy::new(Arc::new(settings(&["10.0.0.0/8"], Some(Policy::Reject), 0)));
        assert_eq!(u.datagram(&pkt, peer), None);
        assert_eq!(u.datagram(b"plain", peer), Some((&b"plain"[..], peer)));
        let mut u = UdpProxy::new(Arc::new(settings(&["10.0.0.0/8"], Some(Policy::Skip), 0)));
        assert_eq!(u.datagram(&pkt, peer), Some((&pkt[..], peer)));
    }

    #[test]
    fn quic_datagrams_lose_their_headers_even_in_gro_batches() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let client: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut q = QuicProxy {
            udp: Some(UdpProxy::new(Arc::new(settings(&[], None, 0)))),
            back: Sessions::new(Duration::from_secs(30), 8),
        };
        let meta = |len: usize, stride: usize| quinn::udp::RecvMeta {
            addr: peer,
            len,
            stride,
            ..Default::default()
        };
        // Two segments of one GRO batch (28-byte header, 6 and 4 bytes of QUIC each).
        let mut buf = v2_udp([10, 1, 2, 3], 5555, b"quic-1");
        let stride = buf.len();
        buf.extend(v2_udp([10, 1, 2, 3], 5555, b"qc-2"));
        let mut m = meta(buf.len(), stride);
        assert!(q.rewrite(&mut buf, &mut m));
        assert_eq!((m.addr, m.len, m.stride), (client, 10, 6));
        assert_eq!(&buf[..10], b"quic-1qc-2");
        assert_eq!(q.back.lookup(client, Instant::now()), Some(peer));
        // Segments naming different clients: the batch is dropped; so is a bad header.
        let mut buf = v2_udp([10, 1, 2, 3], 5555, b"quic-1");
        buf.extend(v2_udp([10, 9, 9, 9], 5555, b"qc-2"));
        let mut m = meta(buf.len(), stride);
        assert!(!q.rewrite(&mut buf, &mut m));
        let mut bad = b"PROXY TCP4 1.2.3.4 1.2.3.4 1 1\r\nquic".to_vec();
        let mut m = meta(bad.len(), bad.len());
        assert!(!q.rewrite(&mut bad, &mut m));
        // Without a header (and proxyproto off) the datagram passes as it is.
        let mut plain = b"quic".to_vec();
        let mut m = meta(4, 4);
        assert!(q.rewrite(&mut plain, &mut m));
        assert_eq!((m.addr, m.len), (peer, 4));
        assert_eq!(q.back.lookup(peer, Instant::now()), Some(peer));
        q.udp = None;
        let mut hdr = v2_udp([10, 1, 2, 3], 5555, b"quic-1");
        let mut m = meta(hdr.len(), hdr.len());
        assert!(q.rewrite(&mut hdr, &mut m));
        assert_eq!((m.addr, m.len), (peer, 34));
    }

    #[test]
    fn udp_sessions_from_header_only_datagrams() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut u = UdpProxy::new(Arc::new(settings(&[], None, 30)));
        assert_eq!(u.datagram(&v2_udp([10, 1, 2, 3], 5555, b""), peer), None);
        assert_eq!(
            u.datagram(b"query", peer),
            Some((&b"query"[..], "10.1.2.3:5555".parse().unwrap()))
        );
        let other: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        assert_eq!(u.datagram(b"query", other), Some((&b"query"[..], other)));
    }

    #[test]
    fn sessions_expire_and_evict_least_recent() {
        let t0 = Instant::now();
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut s = Sessions::new(Duration::from_secs(10), 2);
        s.store(a(1), a(101), t0);
        s.store(a(2), a(102), t0);
        // Using 1 makes 2 the least recent one.
        assert_eq!(s.lookup(a(1), t0 + Duration::from_secs(5)), Some(a(101)));
        s.store(a(3), a(103), t0 + Duration::from_secs(5));
        assert_eq!(s.len(), 2);
        assert_eq!(s.lookup(a(2), t0 + Duration::from_secs(5)), None);
        // The lookup at 5 s refreshed 1 until 15 s.
        assert_eq!(s.lookup(a(1), t0 + Duration::from_secs(14)), Some(a(101)));
        assert_eq!(s.lookup(a(3), t0 + Duration::from_secs(15)), None);
        assert_eq!(s.lookup(a(1), t0 + Duration::from_secs(30)), None);
    }

    #[tokio::test]
    async fn stream_header_then_payload() {
        let s = settings(&[], None, 0);
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let mut data = b"PROXY TCP4 10.1.2.3 192.0.2.1 5555 5353\r\n".to_vec();
        data.extend_from_slice(b"\x00\x03abc");
        let a = accept(&data[..], &s, peer, local, HEADER_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(a.peer, "10.1.2.3:5555".parse().unwrap());
        assert_eq!(a.local, "192.0.2.1:5353".parse().unwrap());
        let mut rest = Vec::new();
        let mut st = a.stream;
        st.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"\x00\x03abc");
        // Plain DNS passes whole; a malformed header closes.
        let a = accept(&b"\x00\x03abc"[..], &s, peer, local, HEADER_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(a.peer, peer);
        assert!(
            accept(&b"PROXY TCP4 x\r\n"[..], &s, peer, local, HEADER_TIMEOUT)
                .await
                .is_none()
        );
        let r = settings(&["10.0.0.0/8"], Some(Policy::Reject), 0);
        assert!(accept(&data[..], &r, peer, local, HEADER_TIMEOUT)
            .await
            .is_none());
    }
}
