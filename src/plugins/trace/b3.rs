//! The B3 trace context of a DoH request's HTTP headers (`b3`, `X-B3-*`), read as zipkin-go's
//! `b3.ExtractHTTP` reads them, and carried to the `trace` plugin for the request's lifetime so
//! its `servedns` span joins the client's trace (CoreDNS's `HTTPRequestKey` in the context).

use http::HeaderMap;

/// A client's trace context. Ids are 0 when absent (zipkin-go's empty ids).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct B3 {
    /// Upper 64 bits of a 128-bit trace id (0 for a 64-bit one).
    pub(crate) trace_high: u64,
    pub(crate) trace: u64,
    /// The client's span.
    pub(crate) span: u64,
    /// The client span's parent, if it said.
    pub(crate) parent: Option<u64>,
    /// The client's sampling decision, if it made one.
    pub(crate) sampled: Option<bool>,
    pub(crate) debug: bool,
}

impl B3 {
    /// True when the context names a trace to join (else the span starts a trace of its own,
    /// with this context's sampling flags).
    pub(crate) fn joins(&self) -> bool {
        self.trace != 0 || self.trace_high != 0
    }
}

tokio::task_local! {
    static HTTP_PARENT: B3;
}

/// Runs `fut` (the DNS handling of one DoH request) with the B3 context of `headers`, if they
/// carry one, visible to the `trace` plugin through [`current`]. Without B3 headers `fut` runs
/// as is. (Not an `async fn`: that would hold `fut` both as its argument and inside the future
/// it awaits, doubling the size of every DoH request's future — the chain's, ~2 KiB — and the
/// bytes copied each time it moves.)
pub(crate) fn scope<F: std::future::Future>(
    headers: &HeaderMap,
    fut: F,
) -> futures_util::future::Either<tokio::task::futures::TaskLocalFuture<B3, F>, F> {
    match extract(headers) {
        Some(b3) => futures_util::future::Either::Left(HTTP_PARENT.scope(b3, fut)),
        None => futures_util::future::Either::Right(fut),
    }
}

/// The B3 context of the DoH request being handled, if any.
pub(crate) fn current() -> Option<B3> {
    HTTP_PARENT.try_with(|b| *b).ok()
}

/// zipkin-go's `ExtractHTTP`: the single `b3` header when it parses, else the `X-B3-*`
/// headers; None when neither gives a context (CoreDNS then starts a trace of its own).
pub(crate) fn extract(h: &HeaderMap) -> Option<B3> {
    // Almost every DoH request carries no B3 header: one pass over its few header names
    // instead of six lookups (each parses and hashes a name) on every request.
    if !h.keys().any(|k| {
        let k = k.as_str();
        k == "b3" || k.starts_with("x-b3-")
    }) {
        return None;
    }
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let single = get("b3");
    if !single.is_empty() {
        if let Some(b) = parse_single(single) {
            return Some(b);
        }
    }
    let (trace, span, parent, sampled, flags) = (
        get("x-b3-traceid"),
        get("x-b3-spanid"),
        get("x-b3-parentspanid"),
        get("x-b3-sampled"),
        get("x-b3-flags"),
    );
    if [trace, span, parent, sampled, flags]
        .iter()
        .all(|s| s.is_empty())
    {
        return None;
    }
    parse_headers(trace, span, parent, sampled, flags)
}

/// A hex id of at most 16 digits (Go's `strconv.ParseUint(s, 16, 64)`).
fn hex64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// zipkin-go's `ParseHeaders` (the `X-B3-*` form).
fn parse_headers(trace: &str, span: &str, parent: &str, sampled: &str, flags: &str) -> Option<B3> {
    let mut b = B3 {
        sampled: match sampled.to_ascii_lowercase().as_str() {
            "0" | "false" => Some(false),
            "1" | "true" => Some(true),
            "" => None,
            _ => return None,
        },
        ..B3::default()
    };
    if flags == "1" {
        b.debug = true;
        b.sampled = None;
    }
    let mut required = 0;
    if !trace.is_empty() {
        required += 1;
        // model.TraceIDFromHex: up to 32 digits, the last 16 the low half.
        if trace.len() > 32 || !trace.is_ascii() {
            return None;
        }
        let split = trace.len().saturating_sub(16);
        b.trace_high = if split > 0 {
            hex64(&trace[..split])?
        } else {
            0
        };
        b.trace = hex64(&trace[split..])?;
    }
    if !span.is_empty() {
        required += 1;
        b.span = hex64(span)?;
    }
    if required == 1 {
        return None;
    }
    if !parent.is_empty() {
        if required == 0 {
            return None;
        }
        b.parent = Some(hex64(parent)?);
    }
    Some(b)
}

/// zipkin-go's `ParseSingleHeader`: `{trace}-{span}[-{sampling}[-{parent}]]` or a lone
/// sampling flag (`0`, `1`, `d`).
fn parse_single(h: &str) -> Option<B3> {
    let mut b = B3::default();
    if !h.is_ascii() {
        return None;
    }
    let sampling;
    if h.len() == 1 {
        sampling = h;
    } else if h.len() < 33 {
        return None;
    } else {
        let pos = if &h[16..17] != "-" {
            b.trace_high = hex64(&h[..16])?;
            16
        } else {
            0
        };
        // Like zipkin-go, the separators are not checked, only skipped.
        b.trace = hex64(h.get(pos..pos + 16)?)?;
        b.span = hex64(h.get(pos + 17..pos + 33)?)?;
        let rest = &h[pos + 33..];
        sampling = match rest.len() {
            0 => "",
            2 => &rest[1..],
            19 => {
                b.parent = Some(hex64(&rest[3..])?);
                &rest[1..2]
            }
            _ => return None,
        };
    }
    match sampling {
        "d" => b.debug = true,
        "1" => b.sampled = Some(true),
        "0" => b.sampled = Some(false),
        "" => {}
        _ => return None,
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn multi_header_form() {
        let b = extract(&headers(&[
            ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
            ("X-B3-SpanId", "a2fb4a1d1a96d312"),
            ("X-B3-ParentSpanId", "0020000000000001"),
            ("X-B3-Sampled", "1"),
        ]))
        .unwrap();
        assert_eq!(
            b,
            B3 {
                trace_high: 0x463ac35c9f6413ad,
                trace: 0x48485a3953bb6124,
                span: 0xa2fb4a1d1a96d312,
                parent: Some(0x20000000000001),
                sampled: Some(true),
                debug: false,
            }
        );
        // Flags 1 is debug and drops the sampled flag; "false" is accepted as zipkin-go does.
        let b = extract(&headers(&[("X-B3-Flags", "1"), ("X-B3-Sampled", "false")])).unwrap();
        assert!(b.debug && b.sampled.is_none() && !b.joins());
        assert_eq!(
            extract(&headers(&[("X-B3-Sampled", "0")])).unwrap().sampled,
            Some(false)
        );
        // A trace id alone, a bad id, a parent without ids, a bad flag: no context.
        for bad in [
            vec![("X-B3-TraceId", "463ac35c9f6413ad")],
            vec![("X-B3-TraceId", "zz"), ("X-B3-SpanId", "a2fb4a1d1a96d312")],
            vec![("X-B3-ParentSpanId", "a2fb4a1d1a96d312")],
            vec![("X-B3-Sampled", "yes")],
        ] {
            assert_eq!(extract(&headers(&bad)), None, "{bad:?}");
        }
        assert_eq!(extract(&HeaderMap::new()), None);
    }

    #[test]
    fn single_header_form() {
        let b = extract(&headers(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-d")])).unwrap();
        assert_eq!(
            (b.trace_high, b.trace, b.span, b.debug, b.sampled),
            (0, 0x80f198ee56343ba8, 0xe457b5a2e4d86bd1, true, None)
        );
        let b = extract(&headers(&[(
            "b3",
            "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-0-0020000000000001",
        )]))
        .unwrap();
        assert_eq!(
            (b.trace_high, b.span, b.sampled, b.parent),
            (
                0x463ac35c9f6413ad,
                0xa2fb4a1d1a96d312,
                Some(false),
                Some(0x20000000000001)
            )
        );
        assert_eq!(
            extract(&headers(&[("b3", "1")])).unwrap().sampled,
            Some(true)
        );
        // A bad single header falls back to the X-B3 headers.
        let b = extract(&headers(&[
            ("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-x"),
            ("X-B3-Sampled", "0"),
        ]))
        .unwrap();
        assert_eq!(b.sampled, Some(false));
        for bad in [
            "80f198ee56343ba8",
            "80f198ee56343ba8-e457b5a2e4d86bd1-",
            "80f198ee56343ba8-e457b5a2e4d86bd1-1-00200000",
            "80f198ee56343ba8xe457b5a2e4d86bd1",
            "é0f198ee56343ba8-e457b5a2e4d86bd1-1",
        ] {
            assert_eq!(parse_single(bad), None, "{bad}");
        }
    }
}
