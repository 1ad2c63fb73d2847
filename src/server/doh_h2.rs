//! DoH over HTTP/2 with the `h2` crate (the HTTP/2 layer under hyper) driven directly: a
//! connection's requests run inside the connection's own task instead of one task per stream,
//! so an answer wakes nothing else and the responses ready in one round go out in one write.
//! Requests are answered exactly as on hyper's side (`doh::serve`; the `Date` and
//! `Content-Length` headers hyper adds; a stream the client resets drops its request);
//! HTTP/1.1 and plain-text connections stay on hyper (`stream.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use h2::server::{Connection, Handshake, SendResponse};
use h2::{Reason, RecvStream};
use http::{header, HeaderValue, Method, Request, Response};
use sextant_corefile::Scheme;

use crate::server::doh::{cached_value, Conn, Values, MAX_BODY, PATH, VALUE_SLOTS};
use crate::server::http::{GracefulConn, MAX_HEAD};
use crate::server::listen::InFlight;

/// The settings hyper gives its HTTP/2 server connections (hyper 1.x defaults: 1 MiB stream and
/// connection windows, 16 KiB frames and header lists, 400 KiB send buffer per stream, at most
/// 1024 locally reset streams), with `max_streams` concurrent streams (`None`: no limit).
fn builder(max_streams: Option<u32>) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(1024 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_header_list_size(MAX_HEAD as u32)
        .max_local_error_reset_streams(Some(1024))
        .max_send_buffer_size(400 * 1024);
    if let Some(n) = max_streams {
        b.max_concurrent_streams(n);
    }
    b
}

/// Starts one request's work (`answer`).
type Start<W> = fn(Request<RecvStream>, SendResponse<Bytes>, Arc<Conn>, &Arc<AtomicUsize>) -> W;

/// An HTTP/2 DoH connection: handshake, then requests accepted and answered in this future.
/// `W` is the type of one request's work ([`answer`]'s future), kept unboxed in the set the
/// connection polls: one allocation per request (the set's node) instead of two.
pub(crate) struct Serve<T, W> {
    state: State<T, W>,
    start: Start<W>,
    conn: Arc<Conn>,
    inflight: Arc<AtomicUsize>,
    /// Asked to close before the handshake ended: GOAWAY as soon as it has.
    graceful: bool,
}

enum State<T, W> {
    Handshake(Handshake<T, Bytes>),
    Serving {
        h2: Connection<T, Bytes>,
        requests: FuturesUnordered<W>,
    },
    Done,
}

/// Serves one HTTP/2 DoH connection on `io` (TLS done, ALPN `h2`).
pub(crate) fn serve<T>(
    io: T,
    max_streams: Option<u32>,
    conn: Arc<Conn>,
    inflight: Arc<AtomicUsize>,
) -> impl Future<Output = ()> + GracefulConn + Send
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    Serve {
        state: State::Handshake(builder(max_streams).handshake(io)),
        start: answer,
        conn,
        inflight,
        graceful: false,
    }
}

impl<T, W> Future for Serve<T, W>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    W: Future<Output = ()>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = &mut *self;
        loop {
            match &mut me.state {
                State::Handshake(hs) => match Pin::new(hs).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => {
                        me.state = State::Done;
                        return Poll::Ready(());
                    }
                    Poll::Ready(Ok(mut h2)) => {
                        if me.graceful {
                            h2.graceful_shutdown();
                        }
                        me.state = State::Serving {
                            h2,
                            requests: FuturesUnordered::new(),
                        };
                    }
                },
                State::Serving { h2, requests } => {
                    // Requests first, so the answers they queue go out in the connection's
                    // write below, together.
                    while let Poll::Ready(Some(())) = requests.poll_next_unpin(cx) {}
                    match h2.poll_accept(cx) {
                        Poll::Ready(Some(Ok((req, respond)))) => {
                            let work = (me.start)(req, respond, me.conn.clone(), &me.inflight);
                            requests.push(work);
                        }
                        // The connection failed or closed: requests still running have
                        // nowhere to send their answers.
                        Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                            me.state = State::Done;
                            return Poll::Ready(());
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

impl<T, W> GracefulConn for Serve<T, W>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    W: Future<Output = ()>,
{
    fn graceful(self: Pin<&mut Self>) {
        let me = self.get_mut();
        me.graceful = true;
        if let State::Serving { h2, .. } = &mut me.state {
            h2.graceful_shutdown();
        }
    }
}

/// Answers one stream: the request read (a POST's body within the read timeout), the DoH
/// answer sent; dropped unanswered when the client resets the stream first.
fn answer(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    conn: Arc<Conn>,
    inflight: &Arc<AtomicUsize>,
) -> impl Future<Output = ()> + Send + 'static {
    let guard = InFlight::new(inflight);
    async move {
        let _guard = guard;
        let mut work = std::pin::pin!(respond_to(req, conn));
        let resp = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            match respond.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(resp) = resp {
            send(&mut respond, resp);
        }
    }
}

/// The DoH response to `req` (as `doh::handle_http` makes it on hyper's side).
async fn respond_to(req: Request<RecvStream>, conn: Arc<Conn>) -> Response<Bytes> {
    let _busy = conn.activity.busy();
    let (parts, body) = req.into_parts();
    let body = if parts.method == Method::POST && parts.uri.path() == PATH {
        tokio::time::timeout(conn.read, read_body(body))
            .await
            .ok()
            .flatten()
    } else {
        // A body nobody reads (a PUT, a POST elsewhere): read and dropped before the refusal,
        // for the reason `read_body` gives.
        if !body.is_end_stream() {
            let _ = tokio::time::timeout(conn.read, drain(body, 0)).await;
        }
        None
    };
    let site = conn.site.load_full();
    crate::server::doh::serve(
        &site,
        Scheme::Https,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body.as_deref(),
        conn.peer,
        conn.local,
    )
    .await
}

/// Bytes of a too large body read and dropped before the refusal is sent.
const DRAIN_MAX: usize = 1024 * 1024;

/// A request body of at most [`MAX_BODY`] bytes (`None` when larger or broken off). The rest of
/// a larger one is read and dropped (up to [`DRAIN_MAX`]) before the refusal goes out: an
/// answer that ends the stream while the client still sends makes h2 reset the stream at once,
/// and a client still uploading (curl) then sees the reset, not the 400 before it. (On hyper's
/// task-per-stream side the reset happened to come later.)
async fn read_body(mut body: RecvStream) -> Option<Bytes> {
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        let had = first.as_ref().map_or(0, Bytes::len) + more.len();
        if had + chunk.len() > MAX_BODY {
            drain(body, had + chunk.len()).await;
            return None;
        }
        match &first {
            None => first = Some(chunk),
            Some(f) => {
                if more.is_empty() {
                    more.extend_from_slice(f);
                }
                more.extend_from_slice(&chunk);
            }
        }
    }
    Some(if more.is_empty() {
        first.unwrap_or_default()
    } else {
        more.freeze()
    })
}

/// Reads the rest of a body and drops it, until it ends or [`DRAIN_MAX`] bytes (counting the
/// `dropped` ones already read) are gone.
async fn drain(mut body: RecvStream, mut dropped: usize) {
    while dropped <= DRAIN_MAX {
        let Some(Ok(chunk)) = body.data().await else {
            break;
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        dropped += chunk.len();
    }
}

/// Sends `resp` on its stream with the headers hyper adds (`Date`, and `Content-Length` of a
/// body); the body goes in one DATA frame that ends the stream.
fn send(respond: &mut SendResponse<Bytes>, resp: Response<Bytes>) {
    let (mut head, body) = resp.into_parts();
    head.headers.entry(header::DATE).or_insert_with(date);
    if body.is_empty() {
        let _ = respond.send_response(Response::from_parts(head, ()), true);
        return;
    }
    head.headers
        .entry(header::CONTENT_LENGTH)
        .or_insert_with(|| content_length(body.len()));
    match respond.send_response(Response::from_parts(head, ()), false) {
        Ok(mut stream) => {
            let _ = stream.send_data(body, true);
        }
        Err(_) => respond.send_reset(Reason::INTERNAL_ERROR),
    }
}

thread_local! {
    /// `Content-Length` values by length.
    static LENGTHS: std::cell::RefCell<Values> =
        const { std::cell::RefCell::new([const { None }; VALUE_SLOTS]) };
}

/// The `Content-Length` value of a body of `len` bytes.
fn content_length(len: usize) -> HeaderValue {
    match u32::try_from(len) {
        Ok(n) => LENGTHS.with(|c| cached_value(c, n, HeaderValue::from)),
        Err(_) => HeaderValue::from(len),
    }
}

thread_local! {
    /// The `Date` value of the current second, made once a second per thread.
    static DATE: std::cell::RefCell<(u64, HeaderValue)> =
        const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
}

/// The `Date` header's value now (RFC 9110 IMF-fixdate).
fn date() -> HeaderValue {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            match HeaderValue::from_str(&text) {
                Ok(v) => *c = (secs, v),
                Err(_) => return HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
            }
        }
        c.1.clone()
    })
}
