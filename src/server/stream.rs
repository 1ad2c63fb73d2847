//! The TCP side of `https://` (DoH over HTTP/1.1 and HTTP/2) and `grpc://` (HTTP/2 only)
//! listeners: accepts under the connection limit, TLS with the scheme's ALPN when the block has
//! the `tls` plugin (plain HTTP otherwise, as behind a TLS-terminating proxy), then hyper serves
//! the connection on the one HTTP stack — DoH over TLS with ALPN `h2` on hyper's HTTP/2 layer
//! driven directly (`doh_h2.rs`) — (`http.rs`: bounded request heads, and the `timeouts`
//! plugin's read, idle and write timeouts, by default CoreDNS's 3 s to read a request, 10 s idle
//! and 5 s for a blocked write) until it closes, idles out, stops reading or the listener stops.
//! With `proxyproto`, the PROXY header is read first, before TLS.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use sextant_corefile::Scheme;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::server::config::TransportOpts;
use crate::server::doh::Conn;
use crate::server::http::{self, Activity};
use crate::server::listen::TLS_HANDSHAKE;
use crate::server::site::Site;
use crate::server::transport::Limit;

/// What an accept loop serves; shared with the listener so a reload can swap it.
pub(crate) struct Serving {
    pub scheme: Scheme,
    pub site: Arc<ArcSwap<Site>>,
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    pub opts: Arc<ArcSwap<TransportOpts>>,
    pub conns: Arc<Limit>,
    pub cancel: CancellationToken,
    pub inflight: Arc<AtomicUsize>,
    /// PROXY protocol headers are read before TLS (`proxyproto`).
    pub proxy: Option<Arc<crate::server::proxy::ProxySettings>>,
}

/// Accepts connections until cancelled; at most `max_connections` at once (further ones wait
/// in the kernel's backlog, like Go's `LimitListener`).
pub(crate) async fn accept_loop(l: TcpListener, s: Arc<Serving>) {
    loop {
        let permit = tokio::select! {
            _ = s.cancel.cancelled() => break,
            p = s.conns.acquire() => p,
        };
        let (stream, peer) = tokio::select! {
            _ = s.cancel.cancelled() => break,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let s = s.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_conn(stream, peer, s).await;
        });
    }
}

async fn serve_conn(stream: TcpStream, peer: SocketAddr, s: Arc<Serving>) {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Below TLS: a client that stops reading blocks the socket's writes, whatever the layer
    // above is doing.
    let stall = http::WriteStall::new(s.opts.load().write);
    let stream = http::WriteTimeout::new(stream, stall.clone());
    match s.proxy.clone() {
        None => serve_tls(stream, peer, local, stall, s).await,
        Some(p) => {
            let wait = crate::server::proxy::HEADER_TIMEOUT.min(s.opts.load().read);
            if let Some(a) = crate::server::proxy::accept(stream, &p, peer, local, wait).await {
                serve_tls(a.stream, a.peer, a.local, stall, s).await;
            }
        }
    }
}

async fn serve_tls<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    stall: Arc<http::WriteStall>,
    s: Arc<Serving>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let conn = Arc::new(Conn {
        site: s.site.clone(),
        peer,
        local,
        activity: Activity::default(),
        read: s.opts.load().read,
    });
    let tls = s.tls.as_ref().map(|t| t.load_full());
    match tls {
        None => serve_http(TokioIo::new(stream), conn, &stall, &s).await,
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            if let Ok(Ok(t)) = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                let h2 = t.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                if h2 && s.scheme == Scheme::Https {
                    serve_doh_h2(t, conn, &stall, &s).await;
                } else {
                    serve_http(TokioIo::new(t), conn, &stall, &s).await;
                }
            }
        }
    }
}

/// DoH over HTTP/2 (TLS with ALPN `h2`) on h2 directly, every request in the connection's task
/// (`doh_h2.rs`), with the timeouts of [`serve_http`].
async fn serve_doh_h2<I>(io: I, conn: Arc<Conn>, stall: &http::WriteStall, s: &Serving)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let opts = **s.opts.load();
    let streams = match opts.max_streams {
        0 => None,
        n => Some(n.min(u32::MAX as usize) as u32),
    };
    let serve = crate::server::doh_h2::serve(io, streams, conn.clone(), s.inflight.clone());
    http::drive(serve, &conn.activity, &s.cancel, opts.idle, Some(stall)).await;
}

async fn serve_http<I>(io: I, conn: Arc<Conn>, stall: &http::WriteStall, s: &Serving)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let opts = **s.opts.load();
    let streams = match opts.max_streams {
        0 => None,
        n => Some(n.min(u32::MAX as usize) as u32),
    };
    let builder = http::builder(streams, opts.read);
    let c = conn.clone();
    let inflight = s.inflight.clone();
    match s.scheme {
        Scheme::Grpc => {
            let svc = hyper::service::service_fn(move |req| {
                let _g = crate::server::listen::InFlight::new(&inflight);
                let c = c.clone();
                async move {
                    let _g = _g;
                    crate::server::grpc::handle(req, c).await
                }
            });
            let builder = builder.http2_only();
            http::drive(
                builder.serve_connection(io, svc),
                &conn.activity,
                &s.cancel,
                opts.idle,
                Some(stall),
            )
            .await;
        }
        _ => {
            // hyper runs each HTTP/2 stream as a task holding this future, and moves the task
            // (several times) and its result by value: boxed, the task is a few words and the
            // request's state (a chain's future, ~2 KiB) is written once, where it stays.
            let svc = hyper::service::service_fn(move |req| {
                let _g = crate::server::listen::InFlight::new(&inflight);
                let c = c.clone();
                Box::pin(async move {
                    let _g = _g;
                    crate::server::doh::handle_http(req, c).await
                })
            });
            http::drive(
                builder.serve_connection(io, svc),
                &conn.activity,
                &s.cancel,
                opts.idle,
                Some(stall),
            )
            .await;
        }
    }
}
