//! What the DNS-over-HTTPS, -HTTP/3, -QUIC and -gRPC listeners share: the request check CoreDNS
//! applies before its chain (`dnsutil.UnpackRequest`), TLS configurations with each scheme's
//! ALPN, connection and worker limits that a reload can change, and the transports' metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sextant_corefile::Scheme;
use sextant_wire::{opcode, scan_query, Message};
use tokio::sync::Notify;

use crate::metrics::metrics;

metrics! {
    HTTPS_RESPONSES: CounterVec("coredns_dns_https_responses_total", "Counter of DoH responses per server and http status code.", ["server", "status"]);
    HTTPS3_RESPONSES: CounterVec("coredns_dns_https3_responses_total", "Counter of DoH3 responses per server and http status code.", ["server", "status"]);
    QUIC_RESPONSES: CounterVec("coredns_dns_quic_responses_total", "Counter of DoQ responses per server and QUIC application code.", ["server", "status"]);
}

/// Largest DNS message a DoH body, a DoQ stream or a gRPC packet may carry.
pub(crate) const MAX_MESSAGE: usize = 65535;

/// Why a query received over HTTPS, QUIC or gRPC is refused before the chain sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Shorter than a DNS header.
    Short,
    /// A reply, an opcode other than QUERY/NOTIFY, or section counts no query has (miekg/dns's
    /// `DefaultMsgAcceptFunc`).
    NotAQuery,
    /// The message does not parse.
    Malformed,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejected::Short => "dns: buffer size too small",
            Rejected::NotAQuery => "dns request rejected",
            Rejected::Malformed => "dns: bad message",
        })
    }
}

/// CoreDNS's `dnsutil.UnpackRequest`: the header must pass miekg/dns's accept filter and the
/// whole message must parse. Returns the parsed message.
pub(crate) fn check_request(packet: &[u8]) -> Result<Message, Rejected> {
    accept_header(packet)?;
    Message::parse(packet).map_err(|_| Rejected::Malformed)
}

/// [`check_request`] without the parsed message, for a caller that hands the packet on to
/// `Site::handle` (which reads it again): the usual query is only scanned in place
/// (`scan_query` accepts only packets `Message::parse` reads, and reads them the same), the
/// rest is parsed in full.
pub(crate) fn accept_request(packet: &[u8]) -> Result<(), Rejected> {
    accept_header(packet)?;
    if scan_query(packet).is_ok() {
        return Ok(());
    }
    Message::parse(packet)
        .map(drop)
        .map_err(|_| Rejected::Malformed)
}

/// miekg/dns's `DefaultMsgAcceptFunc` on the header of a request.
fn accept_header(packet: &[u8]) -> Result<(), Rejected> {
    let h = packet.get(..12).ok_or(Rejected::Short)?;
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let qr = h[2] & 0x80 != 0;
    let op = (h[2] >> 3) & 0x0f;
    if qr
        || (op != opcode::QUERY && op != opcode::NOTIFY)
        || count(4) != 1
        || count(6) > 1
        || count(8) > 1
        || count(10) > 2
    {
        return Err(Rejected::NotAQuery);
    }
    Ok(())
}

/// The TLS configuration a listener of `scheme` uses: the `tls` plugin's, with the ALPN
/// protocols CoreDNS sets for that transport.
pub(crate) fn with_alpn(scheme: Scheme, cfg: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut c = cfg.clone();
    c.alpn_protocols = match scheme {
        Scheme::Https => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Scheme::Grpc => vec![b"h2".to_vec()],
        Scheme::Quic => vec![b"doq".to_vec()],
        Scheme::Https3 => vec![b"h3".to_vec()],
        Scheme::Dns | Scheme::Tls => c.alpn_protocols,
    };
    if matches!(scheme, Scheme::Quic | Scheme::Https3) {
        // QUIC takes 0-RTT data or none; CoreDNS allows it.
        c.max_early_data_size = u32::MAX;
    }
    Arc::new(c)
}

/// A count of things in use with a limit a reload may change (`0` = unbounded): connections of
/// a listener, DoQ streams being processed.
#[derive(Default)]
pub(crate) struct Limit {
    used: AtomicUsize,
    max: AtomicUsize,
    freed: Notify,
}

/// One unit of a [`Limit`], given back when dropped.
pub(crate) struct Permit(Arc<Limit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

impl Limit {
    pub(crate) fn new(max: usize) -> Arc<Limit> {
        Arc::new(Limit {
            used: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            freed: Notify::new(),
        })
    }

    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
        self.freed.notify_waiters();
    }

    /// A unit if one is free now.
    pub(crate) fn try_acquire(self: &Arc<Limit>) -> Option<Permit> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let max = self.max.load(Ordering::Acquire);
            if max != 0 && used >= max {
                return None;
            }
            match self
                .used
                .compare_exchange(used, used + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => used = now,
            }
        }
    }

    /// Waits for a free unit.
    pub(crate) async fn acquire(self: &Arc<Limit>) -> Permit {
        loop {
            let freed = self.freed.notified();
            if let Some(p) = self.try_acquire() {
                return p;
            }
            freed.await;
        }
    }
}

/// A metric label value for a status code, without allocating for the usual ones.
pub(crate) fn status_label(code: u16) -> std::borrow::Cow<'static, str> {
    match code {
        200 => "200".into(),
        400 => "400".into(),
        404 => "404".into(),
        405 => "405".into(),
        413 => "413".into(),
        500 => "500".into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::{Name, RType};

    #[test]
    fn request_check_follows_coredns() {
        let q = Message::query(0, Name::parse("example.org.").unwrap(), RType::A).to_wire();
        assert!(check_request(&q).is_ok());
        assert_eq!(check_request(&q[..11]).unwrap_err(), Rejected::Short);
        let mut reply = q.clone();
        reply[2] |= 0x80;
        assert_eq!(check_request(&reply).unwrap_err(), Rejected::NotAQuery);
        let mut update = q.clone();
        update[2] = 5 << 3;
        assert_eq!(check_request(&update).unwrap_err(), Rejected::NotAQuery);
        let mut two = q.clone();
        two[5] = 2;
        assert_eq!(check_request(&two).unwrap_err(), Rejected::NotAQuery);
        assert_eq!(
            check_request(&q[..q.len() - 1]).unwrap_err(),
            Rejected::Malformed
        );
    }

    #[tokio::test]
    async fn limit_waits_and_follows_a_new_maximum() {
        let l = Limit::new(1);
        let a = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        drop(a);
        let _b = l.acquire().await;
        assert!(l.try_acquire().is_none());
        l.set_max(0);
        let _c = l.try_acquire().unwrap();
        let _d = l.try_acquire().unwrap();
    }
}
