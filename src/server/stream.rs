//! The TCP side of `https://` (DoH over HTTP/1.1 and HTTP/2) and `grpc://` (HTTP/2 only)
//! listeners: accepts under the connection limit, TLS with the scheme's ALPN when the block has
//! the `tls` plugin (plain HTTP otherwise, as behind a TLS-terminating proxy), then hyper serves
//! the connection with CoreDNS's timeouts (3 s to read a request, 10 s idle) until it closes,
//! idles out or the listener stops.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sextant_corefile::Scheme;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::server::config::TransportOpts;
use crate::server::doh::{Activity, Conn};
use crate::server::listen::TLS_HANDSHAKE;
use crate::server::site::Site;
use crate::server::transport::Limit;

/// Idle time after which a connection is closed (CoreDNS's idle timeout).
pub(crate) const IDLE: Duration = Duration::from_secs(10);
/// Time allowed to read a request's header (CoreDNS's read timeout).
const HEADER_READ: Duration = Duration::from_secs(3);
/// Time given to requests in progress when the listener stops.
const GRACE: Duration = Duration::from_secs(5);

/// What an accept loop serves; shared with the listener so a reload can swap it.
pub(crate) struct Serving {
    pub scheme: Scheme,
    pub site: Arc<ArcSwap<Site>>,
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    pub opts: Arc<ArcSwap<TransportOpts>>,
    pub conns: Arc<Limit>,
    pub cancel: CancellationToken,
    pub inflight: Arc<AtomicUsize>,
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
    let conn = Arc::new(Conn {
        site: s.site.clone(),
        peer,
        local,
        activity: Activity::default(),
    });
    let tls = s.tls.as_ref().map(|t| t.load_full());
    match tls {
        None => serve_http(TokioIo::new(stream), conn, &s).await,
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            if let Ok(Ok(t)) = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                serve_http(TokioIo::new(t), conn, &s).await;
            }
        }
    }
}

async fn serve_http<I>(io: I, conn: Arc<Conn>, s: &Serving)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let opts = **s.opts.load();
    let streams = match opts.max_streams {
        0 => None,
        n => Some(n.min(u32::MAX as usize) as u32),
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams);
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
            drive(builder.serve_connection(io, svc), &conn, s).await;
        }
        _ => {
            let svc = hyper::service::service_fn(move |req| {
                let _g = crate::server::listen::InFlight::new(&inflight);
                let c = c.clone();
                async move {
                    let _g = _g;
                    crate::server::doh::handle_http(req, c).await
                }
            });
            drive(builder.serve_connection(io, svc), &conn, s).await;
        }
    }
}

/// Runs a connection to its end: closes it gracefully when it idles out or the listener
/// stops, and drops it when requests outlive the grace period.
async fn drive<F>(fut: F, conn: &Conn, s: &Serving)
where
    F: std::future::Future + GracefulConn,
{
    let mut fut = std::pin::pin!(fut);
    let mut closing: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = fut.as_mut() => return,
            _ = s.cancel.cancelled(), if closing.is_none() => {
                fut.as_mut().graceful();
                closing = Some(tokio::time::Instant::now() + GRACE);
            }
            _ = tick.tick() => {
                match closing {
                    Some(deadline) if tokio::time::Instant::now() >= deadline => return,
                    Some(_) => {}
                    None if conn.activity.idle_for(IDLE) => {
                        fut.as_mut().graceful();
                        closing = Some(tokio::time::Instant::now() + GRACE);
                    }
                    None => {}
                }
            }
        }
    }
}

/// A hyper connection that can be asked to finish what it is doing and close.
pub(crate) trait GracefulConn {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulConn for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
