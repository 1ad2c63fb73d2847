//! A small HTTP/1.1 server for /health, /ready and /metrics: GET only, one request per
//! connection, bounded reads. Routes are swapped atomically on reload; the socket stays. The
//! listening socket has SO_REUSEPORT and is in the hand-over registry, so a second instance can
//! serve the same port beside this one (see `listen::handover`).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One HTTP answer.
pub(crate) struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn text(status: u16, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Something served at a path.
pub(crate) trait HttpHandler: Send + Sync {
    fn get(&self, path: &str) -> HttpResponse;
}

/// Routes of one address: path -> handler.
pub(crate) type Routes = Vec<(String, Arc<dyn HttpHandler>)>;

/// Resolves a CoreDNS-style HTTP address (`:8080`, `localhost:9153`, `[::1]:8181`).
pub(crate) fn resolve_addr(addr: &str) -> Result<SocketAddr, String> {
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in address {addr:?}"))?;
        return Ok(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port));
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("invalid address {addr:?}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("address {addr:?} does not resolve"))
}

/// A running HTTP listener.
pub(crate) struct HttpServer {
    pub routes: Arc<ArcSwap<Routes>>,
    pub cancel: CancellationToken,
}

impl HttpServer {
    /// Binds now (so a reload can fail before swapping) and serves in the background.
    pub(crate) async fn bind(addr: SocketAddr, routes: Routes) -> std::io::Result<HttpServer> {
        let listener = Arc::new(TcpListener::from_std(
            crate::server::listen::tcp_listener_or_inherited(addr)?,
        )?);
        if let Ok(a) = listener.local_addr() {
            crate::server::listen::handover::register(
                crate::server::listen::handover::SocketKind::Tcp,
                a,
                &listener,
            );
        }
        let routes = Arc::new(ArcSwap::from_pointee(routes));
        let cancel = CancellationToken::new();
        let r = routes.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = c.cancelled() => break,
                    acc = listener.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        let routes = r.load_full();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(10), serve(stream, routes)).await;
                        });
                    }
                }
            }
        });
        Ok(HttpServer { routes, cancel })
    }
}

async fn serve(mut s: TcpStream, routes: Arc<Routes>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > 16 * 1024 {
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let resp = if method != "GET" && method != "HEAD" {
        HttpResponse::text(405, "method not allowed\n")
    } else {
        match routes.iter().find(|(p, _)| p == path) {
            Some((_, h)) => h.get(path),
            None => HttpResponse::text(404, "404 page not found\n"),
        }
    };
    let reason = match resp.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason,
        resp.content_type,
        resp.body.len()
    );
    s.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        s.write_all(&resp.body).await?;
    }
    s.shutdown().await
}
