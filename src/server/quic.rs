//! The QUIC listeners (quinn): `quic://` serves DNS over QUIC (RFC 9250: one query per
//! bidirectional stream, 2-byte length prefix, message ID 0) and `https3://` serves DoH over
//! HTTP/3 (h3). Connection, stream and worker limits as CoreDNS's `quic` and `https3` plugins
//! set them; a reload swaps certificates and limits for new connections.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use sextant_corefile::Scheme;
use tokio_util::sync::CancellationToken;

use crate::plugin::Proto;
use crate::server::config::TransportOpts;
use crate::server::listen::InFlight;
use crate::server::site::Site;
use crate::server::transport::{check_request, Limit, MAX_MESSAGE, QUIC_RESPONSES};

/// DoQ error codes (RFC 9250 section 4.3).
const DOQ_NO_ERROR: u32 = 0;
const DOQ_INTERNAL_ERROR: u32 = 1;
const DOQ_PROTOCOL_ERROR: u32 = 2;
/// HTTP/3's H3_EXCESSIVE_LOAD, sent to connections over the limit.
const H3_EXCESSIVE_LOAD: u32 = 0x107;
/// Time allowed for the QUIC handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// EDNS TCP keepalive option: not allowed over DoQ (RFC 9250 section 5.5.2).
const EDNS_TCP_KEEPALIVE: u16 = 11;

/// quinn's server configuration for `scheme` from the block's TLS configuration (with the
/// scheme's ALPN already set) and its limits.
pub(crate) fn server_config(
    tls: Arc<rustls::ServerConfig>,
    opts: &TransportOpts,
) -> Result<quinn::ServerConfig, String> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| format!("TLS configuration unusable for QUIC: {e}"))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    if opts.max_streams > 0 {
        let n = quinn::VarInt::from_u32(opts.max_streams.min(u32::MAX as usize) as u32);
        t.max_concurrent_bidi_streams(n);
        t.max_concurrent_uni_streams(n);
    }
    t.max_idle_timeout(quinn::IdleTimeout::try_from(opts.idle).ok());
    sc.transport_config(Arc::new(t));
    Ok(sc)
}

/// What a QUIC listener serves; shared with the listener so a reload can swap it.
pub(crate) struct Serving {
    pub scheme: Scheme,
    pub site: Arc<ArcSwap<Site>>,
    pub conns: Arc<Limit>,
    pub workers: Arc<Limit>,
    pub cancel: CancellationToken,
    pub inflight: Arc<AtomicUsize>,
    pub local: SocketAddr,
    /// Limits and timeouts, swapped on reload.
    pub opts: Arc<ArcSwap<TransportOpts>>,
}

/// Makes the endpoint on a bound UDP socket (wrapped for the PROXY protocol, which a reload
/// may turn on); it reads nothing until [`accept_loop`] runs.
pub(crate) fn endpoint(
    sock: Arc<crate::server::proxy::QuicSocket>,
    cfg: quinn::ServerConfig,
) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(cfg),
        sock,
        Arc::new(quinn::TokioRuntime),
    )
}

/// Accepts connections until cancelled. A connection over the limit is accepted and closed at
/// once, as CoreDNS does (DoQ: code 0 "too many connections"; DoH3: H3_EXCESSIVE_LOAD).
pub(crate) async fn accept_loop(ep: quinn::Endpoint, s: Arc<Serving>) {
    loop {
        let incoming = tokio::select! {
            _ = s.cancel.cancelled() => break,
            i = ep.accept() => match i { Some(i) => i, None => break },
        };
        let s = s.clone();
        tokio::spawn(async move {
            let permit = s.conns.try_acquire();
            let Ok(Ok(conn)) = tokio::time::timeout(HANDSHAKE, async { incoming.await }).await
            else {
                return;
            };
            let Some(_permit) = permit else {
                let code = if s.scheme == Scheme::Https3 {
                    H3_EXCESSIVE_LOAD
                } else {
                    DOQ_NO_ERROR
                };
                conn.close(code.into(), b"too many connections");
                return;
            };
            match s.scheme {
                Scheme::Https3 => serve_h3(conn, &s).await,
                _ => serve_doq(conn, &s).await,
            }
        });
    }
    ep.close(DOQ_NO_ERROR.into(), b"");
}

fn count_doq(s: &Serving, code: u32) {
    let site = s.site.load();
    QUIC_RESPONSES
        .with_label_values(&[&*site.label, &format!("0x{code:x}")])
        .inc();
}

/// Closes a DoQ connection with an error code, counted like CoreDNS.
fn close_doq(conn: &quinn::Connection, s: &Serving, code: u32) {
    conn.close(code.into(), b"");
    if code != DOQ_NO_ERROR {
        count_doq(s, code);
    }
}

async fn serve_doq(conn: quinn::Connection, s: &Arc<Serving>) {
    loop {
        let (send, recv) = tokio::select! {
            _ = s.cancel.cancelled() => {
                conn.close(DOQ_NO_ERROR.into(), b"");
                return;
            }
            r = conn.accept_bi() => match r {
                Ok(x) => x,
                // Closed by the peer, idle, or a transport error: nothing more to read.
                Err(_) => return,
            },
        };
        let worker = tokio::select! {
            w = s.workers.acquire() => w,
            _ = conn.closed() => return,
        };
        let conn = conn.clone();
        let s = s.clone();
        tokio::spawn(async move {
            let _worker = worker;
            let _g = InFlight::new(&s.inflight);
            doq_stream(&conn, send, recv, &s).await;
        });
    }
}

/// Reads one DoQ query from a stream, answers it and finishes the stream. A stream that does not
/// hold exactly a length-prefixed query with ID 0 is a protocol error for the whole connection.
async fn doq_stream(
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    s: &Serving,
) {
    let read = async {
        let mut len = [0u8; 2];
        recv.read_exact(&mut len).await.ok()?;
        let n = u16::from_be_bytes(len) as usize;
        if n == 0 {
            return None;
        }
        let mut body = vec![0u8; n];
        recv.read_exact(&mut body).await.ok()?;
        Some(body)
    };
    let packet = match tokio::time::timeout(s.opts.load().read, read).await {
        Ok(Some(p)) => p,
        _ => return close_doq(conn, s, DOQ_PROTOCOL_ERROR),
    };
    let msg = match check_request(&packet) {
        Ok(m) => m,
        Err(e) => {
            crate::log::debug(&format!("unpacking quic packet: {e}"));
            return close_doq(conn, s, DOQ_PROTOCOL_ERROR);
        }
    };
    let keepalive = msg
        .edns
        .as_ref()
        .is_some_and(|e| e.options.iter().any(|o| o.code == EDNS_TCP_KEEPALIVE));
    if msg.header.id != 0 || keepalive {
        return close_doq(conn, s, DOQ_PROTOCOL_ERROR);
    }
    let site = s.site.load_full();
    // CoreDNS hands the chain the connection's UDP address: DoQ counts as udp.
    if let Some(reply) = site
        .handle(&packet, conn.remote_address(), s.local, Proto::Udp)
        .await
    {
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len().min(MAX_MESSAGE) as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        if send.write_all(&out).await.is_err() {
            return close_doq(conn, s, DOQ_INTERNAL_ERROR);
        }
    }
    let _ = send.finish();
    count_doq(s, DOQ_NO_ERROR);
}

async fn serve_h3(conn: quinn::Connection, s: &Arc<Serving>) {
    let peer = conn.remote_address();
    let mut h3 = match h3::server::builder()
        .max_field_section_size(16 << 10)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await
    {
        Ok(c) => c,
        Err(_) => return,
    };
    loop {
        let resolver = tokio::select! {
            _ = s.cancel.cancelled() => {
                let _ = h3.shutdown(0).await;
                return;
            }
            r = h3.accept() => match r {
                Ok(Some(r)) => r,
                _ => return,
            },
        };
        let s = s.clone();
        tokio::spawn(async move {
            let _g = InFlight::new(&s.inflight);
            let Ok((req, mut stream)) = resolver.resolve_request().await else {
                return;
            };
            let body = if req.method() == http::Method::POST
                && req.uri().path() == crate::server::doh::PATH
            {
                let read = async {
                    let mut buf = BytesMut::new();
                    while let Some(mut chunk) = stream.recv_data().await.ok()? {
                        if buf.len() + chunk.remaining() > crate::server::doh::MAX_BODY {
                            return None;
                        }
                        while chunk.has_remaining() {
                            let c = chunk.chunk();
                            buf.extend_from_slice(c);
                            let n = c.len();
                            chunk.advance(n);
                        }
                    }
                    Some(buf.freeze())
                };
                tokio::time::timeout(crate::server::doh::READ_TIMEOUT, read)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            let site = s.site.load_full();
            let resp = crate::server::doh::serve(
                &site,
                Scheme::Https3,
                req.method(),
                req.uri(),
                req.headers(),
                body.as_deref(),
                peer,
                s.local,
            )
            .await;
            let (parts, body) = resp.into_parts();
            let head = http::Response::from_parts(parts, ());
            if stream.send_response(head).await.is_ok() && stream.send_data(body).await.is_ok() {
                let _ = stream.finish().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_reach_quinn() {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(pair.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pair.cert.der().clone()], key)
            .unwrap();
        let tls = crate::server::transport::with_alpn(Scheme::Quic, &tls);
        let opts = TransportOpts::defaults(Scheme::Quic);
        assert!(server_config(tls, &opts).is_ok());
    }
}
