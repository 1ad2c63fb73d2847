//! DNS over HTTPS (RFC 8484) to an `https://` upstream of `forward` (CoreDNS 1.14.5): the query
//! (ID 0) is POSTed as `application/dns-message` to `https://IP:PORT/dns-query`, or sent with
//! GET as `?dns=` base64url when `doh_method GET`. HTTP/2 is negotiated with ALPN and its one
//! connection per upstream is shared by every query in flight; with a server that only speaks
//! HTTP/1.1, a connection carries one query at a time and up to `idle_cap` idle connections are
//! kept for reuse (Go's client keeps 2 per host, or `max_idle_conns`). Like CoreDNS, the HTTP status is not looked at: the body
//! must be a DNS message.

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use crate::server::lifecycle::Spawner;

/// Largest DoH reply body read (CoreDNS `maxDNSQuerySize`).
const MAX_BODY: usize = 65536;

/// How queries are sent (`doh_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Post,
    Get,
}

/// The DoH side of one upstream.
pub(super) struct Doh {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
    /// `IP:PORT` as it goes in the URL (`[v6]:port`).
    pub authority: String,
    pub method: Method,
    /// The shared HTTP/2 connection, while it is open.
    h2: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
    /// Idle HTTP/1.1 connections.
    h1: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    /// Most idle HTTP/1.1 connections kept.
    idle_cap: usize,
}

/// RFC 4648 base64url without padding (Go's `base64.RawURLEncoding`).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Either protocol's request sender.
enum Sender {
    H2(http2::SendRequest<Full<Bytes>>),
    H1(http1::SendRequest<Full<Bytes>>),
}

impl Doh {
    pub(super) fn new(
        connector: tokio_rustls::TlsConnector,
        server_name: ServerName<'static>,
        authority: String,
        method: Method,
        idle_cap: usize,
    ) -> Doh {
        Doh {
            connector,
            server_name,
            authority,
            method,
            h2: Mutex::new(None),
            h1: Mutex::new(Vec::new()),
            idle_cap,
        }
    }

    /// The request for `wire`: with the absolute URI for HTTP/2 (its `:scheme` and `:authority`),
    /// origin form and a `Host` header for HTTP/1.1, as Go's client sends them.
    fn request(&self, wire: &[u8], h1: bool) -> Result<hyper::Request<Full<Bytes>>, String> {
        let base = match h1 {
            false => format!("https://{}/dns-query", self.authority),
            true => "/dns-query".to_string(),
        };
        let mut b = hyper::Request::builder();
        if h1 {
            b = b.header("host", &self.authority);
        }
        let b = b
            .header("content-type", "application/dns-message")
            .header("accept", "application/dns-message");
        let r = match self.method {
            Method::Post => b
                .method("POST")
                .uri(base)
                .body(Full::new(Bytes::copy_from_slice(wire))),
            Method::Get => b
                .method("GET")
                .uri(format!("{base}?dns={}", base64url(wire)))
                .body(Full::new(Bytes::new())),
        };
        r.map_err(|e| format!("doh request: {e}"))
    }

    /// The open HTTP/2 connection, or an idle HTTP/1.1 one, if there is one.
    fn cached(&self) -> Option<Sender> {
        if let Some(s) = self
            .h2
            .lock()
            .ok()?
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned()
        {
            return Some(Sender::H2(s));
        }
        let mut idle = self.h1.lock().ok()?;
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(Sender::H1(s));
            }
        }
        None
    }

    /// Keeps an HTTP/1.1 connection whose exchange is over for the next query.
    fn give_back(&self, s: http1::SendRequest<Full<Bytes>>) {
        if let Ok(mut idle) = self.h1.lock() {
            if idle.len() < self.idle_cap && !s.is_closed() {
                idle.push(s);
            }
        }
    }

    /// Drops the shared connection (retired generation).
    pub(super) fn clear(&self) {
        if let Ok(mut g) = self.h2.lock() {
            *g = None;
        }
        if let Ok(mut g) = self.h1.lock() {
            g.clear();
        }
    }

    /// A new TLS connection over `tcp`, then HTTP/2 if the server agreed to it in ALPN, else
    /// HTTP/1.1.
    async fn handshake(
        &self,
        tcp: TcpStream,
        until: Instant,
        spawner: &Spawner,
    ) -> Result<Sender, String> {
        let hs = self.connector.connect(self.server_name.clone(), tcp);
        let tls = match timeout_at(until.into(), hs).await {
            Err(_) => {
                return Err(format!(
                    "tls handshake with {}: i/o timeout",
                    self.authority
                ))
            }
            Ok(Err(e)) => return Err(format!("tls handshake with {}: {e}", self.authority)),
            Ok(Ok(s)) => s,
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
        let io = TokioIo::new(tls);
        if h2 {
            let hs = http2::Builder::new(spawner.clone()).handshake(io);
            let (sender, conn) = match timeout_at(until.into(), hs).await {
                Err(_) => {
                    return Err(format!(
                        "http2 handshake with {}: i/o timeout",
                        self.authority
                    ))
                }
                Ok(Err(e)) => return Err(format!("http2 handshake with {}: {e}", self.authority)),
                Ok(Ok(x)) => x,
            };
            spawner.spawn(async move {
                let _ = conn.await;
            });
            if let Ok(mut g) = self.h2.lock() {
                *g = Some(sender.clone());
            }
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = match timeout_at(until.into(), http1::handshake(io)).await {
                Err(_) => {
                    return Err(format!(
                        "http handshake with {}: i/o timeout",
                        self.authority
                    ))
                }
                Ok(Err(e)) => return Err(format!("http handshake with {}: {e}", self.authority)),
                Ok(Ok(x)) => x,
            };
            spawner.spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H1(sender))
        }
    }

    /// Sends `wire` and returns the reply body. `dial` opens a TCP connection to the upstream
    /// when no HTTP/2 connection is open (or the open one turns out closed).
    pub(super) async fn exchange<D, Fut>(
        &self,
        wire: &[u8],
        until: Instant,
        spawner: &Spawner,
        dial: D,
    ) -> Result<Vec<u8>, String>
    where
        D: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<TcpStream, String>>,
    {
        let mut fresh_tried = false;
        loop {
            let (sender, fresh) = match self.cached() {
                Some(s) => (s, false),
                None => {
                    let tcp = dial().await?;
                    (self.handshake(tcp, until, spawner).await?, true)
                }
            };
            let req = self.request(wire, matches!(sender, Sender::H1(_)))?;
            let mut h1_back = None;
            let sent = async {
                match sender {
                    Sender::H2(mut s) => {
                        s.ready().await?;
                        s.send_request(req).await
                    }
                    Sender::H1(mut s) => {
                        s.ready().await?;
                        let r = s.send_request(req).await;
                        h1_back = Some(s);
                        r
                    }
                }
            };
            let resp = match timeout_at(until.into(), sent).await {
                Err(_) => return Err(format!("doh {}: i/o timeout", self.authority)),
                // A cached connection the server has closed meanwhile: once more on a new one.
                Ok(Err(_)) if !fresh && !fresh_tried => {
                    self.clear();
                    fresh_tried = true;
                    continue;
                }
                Ok(Err(e)) => return Err(format!("doh {}: {e}", self.authority)),
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY).collect();
            return match timeout_at(until.into(), body).await {
                Err(_) => Err(format!("doh {}: i/o timeout", self.authority)),
                Ok(Err(e)) => Err(format!(
                    "doh {}: reading body ({status}): {e}",
                    self.authority
                )),
                Ok(Ok(b)) => {
                    // The whole body is read: the HTTP/1.1 connection can take the next query.
                    if let Some(s) = h1_back {
                        self.give_back(s);
                    }
                    Ok(b.to_bytes().to_vec())
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_without_padding() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"\xfb\xff\xfe", "-__-"),
        ] {
            assert_eq!(base64url(input), want);
        }
        // RFC 8484 §4.1.1's example query for www.example.com A.
        let q = [
            0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x77,
            0x77, 0x77, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d,
            0x00, 0x00, 0x01, 0x00, 0x01,
        ];
        assert_eq!(
            base64url(&q),
            "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"
        );
    }
}
