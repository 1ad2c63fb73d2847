//! DNS over HTTPS (RFC 8484) as CoreDNS serves it: `GET /dns-query?dns=` (base64url) and
//! `POST /dns-query` with an `application/dns-message` body, over HTTP/1.1 and HTTP/2
//! (`https://`: hyper, and `doh_h2.rs` for HTTP/2 over TLS) or HTTP/3 (`https3://`, see [`crate::server::quic`]). Other paths get 404,
//! undecodable requests 400, a chain that writes nothing 500; replies carry
//! `Cache-Control: max-age=` of their lowest TTL. This module decides; the listeners carry bytes.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use sextant_corefile::Scheme;
use sextant_wire::typify::{minimal_ttl, minimal_ttl_of_wire, typify};
use sextant_wire::Message;

use crate::plugin::Proto;
use crate::server::http::Activity;
use crate::server::site::Site;
use crate::server::transport::{accept_request, status_label, HTTPS3_RESPONSES, HTTPS_RESPONSES};

/// The only path DoH is served on.
pub(crate) const PATH: &str = "/dns-query";
/// The DoH media type.
pub(crate) const MIME: &str = "application/dns-message";
/// Largest POST body read (CoreDNS: 64 KiB).
pub(crate) const MAX_BODY: usize = 65536;
/// Longest `dns=` value accepted (the base64 of [`MAX_BODY`] bytes).
const MAX_BASE64: usize = (MAX_BODY * 8).div_ceil(6);
/// Longest `max-age` (CoreDNS `dnsutil.MaximumDefaultTTL`).
const MAX_AGE: u32 = 3600;
/// Time allowed to receive a request's body (CoreDNS's read timeout).
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a DoH request gets no DNS answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not `/dns-query`: 404.
    NotFound,
    /// No DNS query could be taken from it: 400 (the reason is logged at debug level).
    Invalid(String),
}

/// The DNS message of a DoH request: the `dns` parameter of a GET, the body of a POST (`None`
/// when the body was too large or could not be read). The message must pass CoreDNS's request
/// check ([`check_request`]).
pub(crate) fn request_message<'a>(
    method: &Method,
    uri: &Uri,
    body: Option<&'a [u8]>,
) -> Result<Cow<'a, [u8]>, Refusal> {
    if uri.path() != PATH {
        return Err(Refusal::NotFound);
    }
    let packet = match *method {
        Method::GET => Cow::Owned(get_message(uri.query().unwrap_or(""))?),
        Method::POST => match body {
            Some(b) if b.len() <= MAX_BODY => Cow::Borrowed(b),
            _ => return Err(Refusal::Invalid("http: request body too large".into())),
        },
        ref m => return Err(Refusal::Invalid(format!("method not allowed: {m}"))),
    };
    accept_request(&packet).map_err(|e| Refusal::Invalid(e.to_string()))?;
    Ok(packet)
}

/// The `dns` parameter of a query string, decoded like Go's `url.Query()` (pairs holding `;`
/// or a bad escape are skipped) and then as unpadded base64url.
fn get_message(query: &str) -> Result<Vec<u8>, Refusal> {
    let mut found = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (unescape(k), unescape(v)) else {
            continue;
        };
        if k == "dns" {
            found.push(v);
        }
    }
    let b64 = match found.as_slice() {
        [] => return Err(Refusal::Invalid("no 'dns' query parameter found".into())),
        [one] => one,
        _ => return Err(Refusal::Invalid("multiple 'dns' query values found".into())),
    };
    if b64.len() > MAX_BASE64 {
        return Err(Refusal::Invalid("dns query too large".into()));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.as_bytes())
        .map_err(|e| Refusal::Invalid(format!("illegal base64 data: {e}")))
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a bad escape is an error. A string
/// without `+` or `%` (a base64url value always) is itself.
fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|c| c == b'+' || c == b'%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `max-age` of a reply: its lowest TTL as CoreDNS computes it (5 s for errors and replies
/// without records, at most an hour).
pub(crate) fn max_age(reply: &[u8]) -> u32 {
    // Read in place; only bytes the walk cannot read (none Sextant writes) are parsed.
    if let Some(age) = minimal_ttl_of_wire(reply, MAX_AGE) {
        return age;
    }
    match Message::parse(reply) {
        Ok(m) => minimal_ttl(&m, typify(&m), MAX_AGE),
        Err(_) => sextant_wire::typify::MINIMAL_DEFAULT_TTL,
    }
}

/// A 200 with a DNS reply.
pub(crate) fn answer(reply: Vec<u8>) -> Response<Bytes> {
    let age = max_age(&reply);
    let mut r = Response::new(Bytes::from(reply));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(MIME));
    h.insert(
        header::CACHE_CONTROL,
        AGES.with(|c| cached_value(c, age, cache_control)),
    );
    r
}

/// Slots of a [`Values`] cache.
pub(crate) const VALUE_SLOTS: usize = 64;

/// Header values made from a number, kept per thread in a direct-mapped cache (slot: the
/// number modulo [`VALUE_SLOTS`]): a cached value is a reference-counted clone, while making
/// one validates the text and copies it into a new allocation (one `Cache-Control` and one
/// `Content-Length` per DoH answer, nearly always a value seen just before).
pub(crate) type Values = [Option<(u32, header::HeaderValue)>; VALUE_SLOTS];

thread_local! {
    /// `Cache-Control` values by age.
    static AGES: std::cell::RefCell<Values> =
        const { std::cell::RefCell::new([const { None }; VALUE_SLOTS]) };
}

/// The value `make(n)` from `cache` (made and kept there when not cached).
pub(crate) fn cached_value(
    cache: &std::cell::RefCell<Values>,
    n: u32,
    make: fn(u32) -> header::HeaderValue,
) -> header::HeaderValue {
    let Ok(mut slots) = cache.try_borrow_mut() else {
        return make(n);
    };
    match &mut slots[n as usize % VALUE_SLOTS] {
        Some((k, v)) if *k == n => v.clone(),
        slot => {
            let v = make(n);
            *slot = Some((n, v.clone()));
            v
        }
    }
}

/// `max-age=AGE`, written without the formatting machinery (one header per reply).
fn cache_control(age: u32) -> header::HeaderValue {
    const PREFIX: &[u8] = b"max-age=";
    let mut buf = [0u8; PREFIX.len() + 10];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = age;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for (i, d) in digits[..n].iter().rev().enumerate() {
        buf[PREFIX.len() + i] = *d;
    }
    match header::HeaderValue::from_bytes(&buf[..PREFIX.len() + n]) {
        Ok(v) => v,
        // Digits and ASCII letters are always a valid header value.
        Err(_) => header::HeaderValue::from_static("max-age=5"),
    }
}

/// An error page the way Go's `http.Error` writes it.
pub(crate) fn error(status: StatusCode, text: &str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(format!("{text}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Answers one DoH request: decodes it, runs the site's chain, counts the status in
/// `coredns_dns_https_responses_total` (or `https3_`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    site: &Arc<Site>,
    scheme: Scheme,
    method: &Method,
    uri: &Uri,
    headers: &http::HeaderMap,
    body: Option<&[u8]>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Response<Bytes> {
    let resp = match request_message(method, uri, body) {
        Err(Refusal::NotFound) => error(StatusCode::NOT_FOUND, ""),
        Err(Refusal::Invalid(why)) => {
            crate::log::debug(&format!("DoH request could not be parsed: {why}"));
            error(StatusCode::BAD_REQUEST, "invalid request")
        }
        Ok(packet) => {
            // CoreDNS gives DoH3 requests a UDP client address, so its replies are sized like
            // UDP ones; DoH over HTTP/1.1 and HTTP/2 counts as TCP.
            let proto = if scheme == Scheme::Https3 {
                Proto::Udp
            } else {
                Proto::Tcp
            };
            // The `trace` plugin joins the client's trace through its B3 headers.
            let handled = site.handle(&packet, peer, local, proto);
            match crate::plugins::trace::http_scope(headers, handled).await {
                Some(reply) => answer(reply),
                None => error(StatusCode::INTERNAL_SERVER_ERROR, "No response"),
            }
        }
    };
    count_response(
        &site.label,
        scheme == Scheme::Https3,
        resp.status().as_u16(),
    );
    resp
}

/// Label handles of `coredns_dns_https{,3}_responses_total` cached per thread, keyed by the
/// site's label (the same `Arc` while its generation lives), HTTP/3 or not, and status:
/// `with_label_values` hashes the labels and takes a lock on every call.
type ResponseHandles = Vec<((Arc<str>, bool, u16), prometheus::Counter)>;

/// Handles kept per thread; past this many (old generations' labels) the cache starts over.
const RESPONSE_HANDLES_MAX: usize = 32;

thread_local! {
    static RESPONSE_HANDLES: std::cell::RefCell<ResponseHandles> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Counts one DoH response with status `status` of the site labelled `label`.
fn count_response(label: &Arc<str>, h3: bool, status: u16) {
    RESPONSE_HANDLES.with(|cell| {
        let mut all = cell.borrow_mut();
        let hit = all
            .iter()
            .find(|((l, h, s), _)| Arc::ptr_eq(l, label) && *h == h3 && *s == status);
        if let Some((_, c)) = hit {
            c.inc();
            return;
        }
        let metric = if h3 {
            &HTTPS3_RESPONSES
        } else {
            &HTTPS_RESPONSES
        };
        let c = metric.with_label_values(&[&**label, &status_label(status)]);
        c.inc();
        if all.len() >= RESPONSE_HANDLES_MAX {
            all.clear();
        }
        all.push(((label.clone(), h3, status), c));
    });
}

/// What one HTTP connection of an `https://` listener knows: the routing table (swapped on
/// reload), both ends' addresses, and its activity for the idle timeout.
pub(crate) struct Conn {
    pub site: Arc<ArcSwap<Site>>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub activity: Activity,
    /// Time allowed to read a request body (`timeouts` read).
    pub read: Duration,
}

/// hyper's request handler for `https://`.
pub(crate) async fn handle_http(
    req: http::Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _busy = conn.activity.busy();
    let (parts, body) = req.into_parts();
    let body = if parts.method == Method::POST && parts.uri.path() == PATH {
        let read = Limited::new(body, MAX_BODY).collect();
        match tokio::time::timeout(conn.read, read).await {
            Ok(Ok(c)) => Some(c.to_bytes()),
            _ => None,
        }
    } else {
        None
    };
    let site = conn.site.load_full();
    let resp = serve(
        &site,
        Scheme::Https,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body.as_deref(),
        conn.peer,
        conn.local,
    )
    .await;
    Ok(resp.map(Full::new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::{Name, RType};

    fn query() -> Vec<u8> {
        Message::query(0, Name::parse("example.org.").unwrap(), RType::A).to_wire()
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn get_and_post_decode_the_same_message() {
        let q = query();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&q);
        let got = request_message(&Method::GET, &uri(&format!("/dns-query?dns={b64}")), None);
        assert_eq!(&*got.unwrap(), &q[..]);
        let got = request_message(&Method::POST, &uri("/dns-query"), Some(&q));
        assert_eq!(&*got.unwrap(), &q[..]);
        // Other parameters are ignored; an escaped value is unescaped first.
        let got = request_message(
            &Method::GET,
            &uri(&format!(
                "/dns-query?ct=x&dns={}&x=%41",
                b64.replace('-', "%2D")
            )),
            None,
        );
        assert_eq!(&*got.unwrap(), &q[..]);
    }

    #[test]
    fn refusals_follow_coredns() {
        let q = query();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&q);
        assert_eq!(
            request_message(&Method::GET, &uri("/other"), None),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            request_message(&Method::GET, &uri("/dns-query/"), None),
            Err(Refusal::NotFound)
        );
        let invalid = |m: &Method, u: &str, b: Option<&[u8]>| {
            matches!(request_message(m, &uri(u), b), Err(Refusal::Invalid(_)))
        };
        assert!(invalid(&Method::GET, "/dns-query", None));
        assert!(invalid(
            &Method::GET,
            &format!("/dns-query?dns={b64}&dns={b64}"),
            None
        ));
        // Padding and the standard alphabet are not base64url without padding.
        assert!(invalid(
            &Method::GET,
            &format!("/dns-query?dns={b64}="),
            None
        ));
        assert!(invalid(&Method::GET, "/dns-query?dns=a+b/", None));
        assert!(invalid(&Method::PUT, "/dns-query", Some(&q)));
        assert!(invalid(&Method::POST, "/dns-query", None));
        assert!(invalid(&Method::POST, "/dns-query", Some(&q[..5])));
        assert!(invalid(
            &Method::POST,
            "/dns-query",
            Some(&vec![0; MAX_BODY + 1])
        ));
        // (hyper refuses request targets over 64 KiB first; the check stands behind it.)
        let long = "A".repeat(MAX_BASE64 + 4);
        assert_eq!(
            get_message(&format!("dns={long}")),
            Err(Refusal::Invalid("dns query too large".into()))
        );
    }

    #[test]
    fn cache_control_spells_the_age() {
        for age in [0, 5, 30, 300, 3600, u32::MAX] {
            assert_eq!(cache_control(age), format!("max-age={age}").as_str());
        }
    }

    /// The per-thread cache gives the value of the number asked for, whatever shares its slot.
    #[test]
    fn cached_values_are_the_values_of_their_number() {
        let cache = std::cell::RefCell::new([const { None }; VALUE_SLOTS]);
        let n = VALUE_SLOTS as u32;
        for age in [5, 5 + n, 5, 300, 300 + 2 * n, 5 + n, 0, n] {
            let v = cached_value(&cache, age, cache_control);
            assert_eq!(v, format!("max-age={age}").as_str());
        }
        let r = answer(Message::reply_to(&Message::query(0, Name::root(), RType::A)).to_wire());
        assert_eq!(r.headers()[header::CACHE_CONTROL], "max-age=5");
    }

    #[test]
    fn max_age_is_the_lowest_ttl() {
        use sextant_wire::{RData, Record};
        let q = Message::query(0, Name::parse("example.org.").unwrap(), RType::A);
        let mut r = Message::reply_to(&q);
        for ttl in [300, 30, 7200] {
            r.answers.push(Record::new(
                Name::parse("example.org.").unwrap(),
                ttl,
                RData::A([10, 0, 0, 1].into()),
            ));
        }
        assert_eq!(max_age(&r.to_wire()), 30);
        r.answers.truncate(0);
        assert_eq!(max_age(&r.to_wire()), 5);
        let mut big = Message::reply_to(&q);
        big.answers.push(Record::new(
            Name::parse("example.org.").unwrap(),
            7200,
            RData::A([10, 0, 0, 1].into()),
        ));
        assert_eq!(max_age(&big.to_wire()), 3600);
    }
}
