//! The one HTTP stack of every HTTP listener (hyper: HTTP/1.1 with keep-alive, and HTTP/2):
//! the connection settings (bounded headers, header-read and idle timeouts), the loop that
//! closes a connection gracefully when it idles out or its listener stops — shared with DoH and
//! gRPC (`stream.rs`) — and the server of `/health`, `/ready`, `/metrics` and `/debug/pprof/`:
//! GET and HEAD, 404 for other paths, 405 with `Allow` for other methods; a route ending in `/`
//! serves its whole subtree (Go's `ServeMux` rule). Routes are swapped atomically on
//! reload; the socket stays. The listening socket has SO_REUSEPORT and is in the hand-over
//! registry, so a second instance can serve the same port beside this one (see
//! `listen::handover`).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Read and idle timeouts of the health, ready and metrics servers (CoreDNS: 5 s each).
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time given to requests in progress when the listener stops.
const GRACE: Duration = Duration::from_secs(5);
/// After an idle connection was told to go away, how long it may take to close (Go's HTTP/2
/// server: `goAwayTimeout`, 1 s).
const IDLE_CLOSE: Duration = Duration::from_secs(1);
/// How often a connection looks whether it is idle (the idle time is met within this).
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// Largest request head (request line and headers) read, HTTP/1.1 and HTTP/2 alike.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Streams an HTTP/2 client may open at once on the health, ready and metrics listener.
const MAX_STREAMS: u32 = 16;
/// Open connections per health, ready or metrics listener (further ones wait in the backlog).
const MAX_CONNS: usize = 256;

/// hyper's server settings shared by every HTTP listener: keep-alive, a bounded request head,
/// `header_read` to read a request head, and at most `max_streams` concurrent HTTP/2 streams
/// (`None`: unbounded). hyper's HTTP/1.1 header-read timer also runs while a kept-alive
/// connection waits for its next request, so an HTTP/1.1 connection idles out after
/// `header_read` (HTTP/2 ones after the idle time given to [`drive`]).
pub(crate) fn builder(
    max_streams: Option<u32>,
    header_read: Duration,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32)
        .max_concurrent_streams(max_streams);
    b
}

/// Requests in progress on a connection and the time of the last one's end, for idle timeouts.
pub(crate) struct Activity {
    start: Instant,
    active: AtomicUsize,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            start: Instant::now(),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }
}

/// A request in progress; marks the connection active until dropped.
pub(crate) struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

impl Activity {
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Busy(self)
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.last_ms.store(ms, Ordering::Release);
    }

    /// True when nothing is in progress and nothing happened for `idle`.
    pub(crate) fn idle_for(&self, idle: Duration) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        self.active.load(Ordering::Acquire) == 0
            && now.saturating_sub(self.last_ms.load(Ordering::Acquire)) >= idle.as_millis() as u64
    }
}

/// Runs a connection to its end: closes it gracefully when it was idle for `idle` (GOAWAY on
/// HTTP/2, then closed at the latest [`IDLE_CLOSE`] later, as Go's server does) or `cancel`
/// fires, drops it when requests outlive the grace period, and drops it at once when its
/// writes have been blocked for the write timeout (`stall`).
pub(crate) async fn drive<F>(
    fut: F,
    activity: &Activity,
    cancel: &CancellationToken,
    idle: Duration,
    stall: Option<&WriteStall>,
) where
    F: std::future::Future + GracefulConn,
{
    let mut fut = std::pin::pin!(fut);
    let mut closing: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(IDLE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = fut.as_mut() => return,
            _ = cancel.cancelled(), if closing.is_none() => {
                fut.as_mut().graceful();
                closing = Some(tokio::time::Instant::now() + GRACE);
            }
            _ = tick.tick() => {
                if stall.is_some_and(WriteStall::expired) {
                    return;
                }
                match closing {
                    Some(deadline) if tokio::time::Instant::now() >= deadline => return,
                    Some(_) => {}
                    None if activity.idle_for(idle) => {
                        fut.as_mut().graceful();
                        closing = Some(tokio::time::Instant::now() + IDLE_CLOSE);
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

/// Since when a connection's writes have been blocked (the client reads nothing), for the
/// `timeouts` plugin's write timeout on DoH and gRPC: [`WriteTimeout`] records it, [`drive`]
/// closes the connection once it lasts `limit` (within [`IDLE_CHECK`]), as a write deadline
/// does in Go. hyper's HTTP/2 side does not always write again when woken, so the check is
/// the driver's, not the stream's.
pub(crate) struct WriteStall {
    start: Instant,
    /// Milliseconds since `start` + 1 when the current block began; 0: writes flow.
    since: AtomicU64,
    limit: Duration,
}

impl WriteStall {
    pub(crate) fn new(limit: Duration) -> Arc<WriteStall> {
        Arc::new(WriteStall {
            start: Instant::now(),
            since: AtomicU64::new(0),
            limit,
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis().min(u64::MAX as u128 - 1) as u64
    }

    /// True when the writes have been blocked for the limit.
    fn expired(&self) -> bool {
        match self.since.load(Ordering::Acquire) {
            0 => false,
            s => self.now_ms().saturating_sub(s - 1) >= self.limit.as_millis() as u64,
        }
    }
}

/// A connection stream that records in its [`WriteStall`] when its writes block and when
/// they flow again; a connection whose writes never block pays one atomic load per write.
pub(crate) struct WriteTimeout<S> {
    inner: S,
    stall: Arc<WriteStall>,
}

impl<S> WriteTimeout<S> {
    pub(crate) fn new(inner: S, stall: Arc<WriteStall>) -> WriteTimeout<S> {
        WriteTimeout { inner, stall }
    }

    /// After a write (`wrote`), flush or shutdown returned `r`: bytes that went out end a
    /// block (a flush of a socket is done at once and says nothing of bytes still waiting);
    /// a write that cannot proceed starts one.
    fn watch<T>(
        &self,
        r: std::task::Poll<std::io::Result<T>>,
        wrote: bool,
    ) -> std::task::Poll<std::io::Result<T>> {
        let st = &self.stall;
        match &r {
            std::task::Poll::Ready(_) if wrote => {
                if st.since.load(Ordering::Relaxed) != 0 {
                    st.since.store(0, Ordering::Release);
                }
            }
            std::task::Poll::Ready(_) => {}
            std::task::Poll::Pending => {
                if st.since.load(Ordering::Relaxed) == 0 {
                    st.since.store(st.now_ms() + 1, Ordering::Release);
                }
            }
        }
        r
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(r, true)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(r, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(r, false)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(r, false)
    }
}

/// One HTTP answer of a route.
pub(crate) struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Further headers (`Location`, `Content-Disposition`).
    pub headers: Vec<(header::HeaderName, String)>,
}

impl HttpResponse {
    pub(crate) fn text(status: u16, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// The response with header `name: value` added.
    pub(crate) fn with_header(mut self, name: header::HeaderName, value: String) -> HttpResponse {
        self.headers.push((name, value));
        self
    }
}

/// A GET or HEAD request as a route sees it.
pub(crate) struct HttpRequest {
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: Option<String>,
}

impl HttpRequest {
    /// The first value of query parameter `name` (not percent-decoded: the parameters served
    /// here are numbers and flags).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// Something served at a path.
pub(crate) trait HttpHandler: Send + Sync {
    fn get(&self, path: &str) -> HttpResponse;

    /// Answers `req`, possibly after a while (a CPU profile records for the seconds asked);
    /// the page of [`HttpHandler::get`] unless the handler needs the query or time. The future
    /// is dropped when the client goes away or the listener stops.
    fn serve(self: Arc<Self>, req: HttpRequest) -> BoxFuture<'static, HttpResponse> {
        let page = self.get(&req.path);
        Box::pin(std::future::ready(page))
    }
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

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
        let conns = crate::server::transport::Limit::new(MAX_CONNS);
        let r = routes.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = c.cancelled() => break,
                    p = conns.acquire() => p,
                };
                tokio::select! {
                    _ = c.cancelled() => break,
                    acc = listener.accept() => {
                        let Ok((stream, _)) = acc else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let (r, c) = (r.clone(), c.clone());
                        tokio::spawn(async move {
                            let _permit = permit;
                            serve_conn(stream, r, c).await;
                        });
                    }
                }
            }
        });
        Ok(HttpServer { routes, cancel })
    }
}

async fn serve_conn(stream: TcpStream, routes: Arc<ArcSwap<Routes>>, cancel: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let a = activity.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        a.active.fetch_add(1, Ordering::AcqRel);
        // Routes as they are now: a reload's new routes apply to the next request.
        Answer {
            page: respond(req.method(), req.uri(), &routes.load()),
            activity: a.clone(),
        }
    });
    let b = builder(Some(MAX_STREAMS), PAGE_TIMEOUT);
    drive(
        b.serve_connection(TokioIo::new(stream), svc),
        &activity,
        &cancel,
        PAGE_TIMEOUT,
        None,
    )
    .await;
}

/// A page being made; marks its connection active until dropped.
struct Answer {
    page: BoxFuture<'static, Response<Full<Bytes>>>,
    activity: Arc<Activity>,
}

impl std::future::Future for Answer {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.page.as_mut().poll(cx).map(Ok)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.activity.active.fetch_sub(1, Ordering::AcqRel);
        self.activity.touch();
    }
}

/// The route serving `path`: the one named exactly, else the longest route ending in `/` that
/// `path` starts with (Go's `ServeMux`: `/debug/pprof/` serves `/debug/pprof/heap`).
fn route<'r>(routes: &'r Routes, path: &str) -> Option<&'r Arc<dyn HttpHandler>> {
    if let Some((_, h)) = routes.iter().find(|(p, _)| p == path) {
        return Some(h);
    }
    routes
        .iter()
        .filter(|(p, _)| p.ends_with('/') && path.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, h)| h)
}

/// The answer to `method uri`: the route's page for GET and HEAD (HEAD with the same headers
/// and no body), 404 for a path without a route, 405 for another method.
fn respond(
    method: &Method,
    uri: &http::Uri,
    routes: &Routes,
) -> BoxFuture<'static, Response<Full<Bytes>>> {
    let head = *method == Method::HEAD;
    let path = uri.path();
    let ready = |r: Response<Full<Bytes>>| -> BoxFuture<'static, Response<Full<Bytes>>> {
        Box::pin(std::future::ready(r))
    };
    match route(routes, path) {
        None => ready(HttpResponse::text(404, "404 page not found\n").into_response(head)),
        Some(_) if *method != Method::GET && !head => {
            let mut r = HttpResponse::text(405, "405 method not allowed\n").into_response(false);
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            ready(r)
        }
        Some(h) => {
            let page = h.clone().serve(HttpRequest {
                path: path.to_string(),
                query: uri.query().map(str::to_string),
            });
            Box::pin(async move { page.await.into_response(head) })
        }
    }
}

impl HttpResponse {
    fn into_response(self, head: bool) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let len = self.body.len();
        let body = if head { Bytes::new() } else { self.body.into() };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
        for (name, value) in self.headers {
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    struct Page;

    impl HttpHandler for Page {
        fn get(&self, _path: &str) -> HttpResponse {
            HttpResponse::text(200, "OK")
        }
    }

    fn routes() -> Routes {
        vec![(
            "/health".to_string(),
            Arc::new(Page) as Arc<dyn HttpHandler>,
        )]
    }

    fn get(method: Method, uri: &str, r: &Routes) -> Response<Full<Bytes>> {
        let uri: http::Uri = uri.parse().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(respond(&method, &uri, r))
    }

    #[test]
    fn methods_and_paths() {
        let r = routes();
        let get = get(Method::GET, "/health", &r);
        assert_eq!(get.status(), 200);
        assert_eq!(get.headers()[header::CONTENT_LENGTH], "2");
        let head = super::tests::get(Method::HEAD, "/health", &r);
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "2");
        assert_eq!(head.into_body().size_hint().exact(), Some(0));
        let post = super::tests::get(Method::POST, "/health", &r);
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(super::tests::get(Method::GET, "/nope", &r).status(), 404);
        assert_eq!(super::tests::get(Method::DELETE, "/nope", &r).status(), 404);
        // A route is exact unless it ends in `/`, which serves its subtree.
        assert_eq!(
            super::tests::get(Method::GET, "/health/x", &r).status(),
            404
        );
        let mut r = routes();
        r.push((
            "/debug/".to_string(),
            Arc::new(Page) as Arc<dyn HttpHandler>,
        ));
        assert_eq!(
            super::tests::get(Method::GET, "/debug/a/b?x=1", &r).status(),
            200
        );
        assert_eq!(super::tests::get(Method::GET, "/debug", &r).status(), 404);
    }

    #[test]
    fn query_parameters() {
        let q = |s: &str| HttpRequest {
            path: "/".into(),
            query: Some(s.into()),
        };
        assert_eq!(q("seconds=5&debug=1").param("seconds"), Some("5"));
        assert_eq!(q("seconds=5&debug=1").param("debug"), Some("1"));
        assert_eq!(q("gc").param("gc"), Some(""));
        assert_eq!(q("a=1").param("b"), None);
    }
}
