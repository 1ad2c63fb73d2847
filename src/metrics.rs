//! Process-wide Prometheus metrics with CoreDNS's names, labels and buckets (server level,
//! reload, health, build info). Plugins define their own next to their code.

use std::sync::LazyLock;

use prometheus::{Counter, Histogram, HistogramVec};
use std::cell::RefCell;
use std::sync::Arc;

use sextant_wire::{Name, RType, Rcode};

use crate::plugin::{Proto, Request};

/// Version reported as CoreDNS's (dashboards key on it) and ours.
pub(crate) const COREDNS_VERSION: &str = "1.14.7";

/// `n` buckets from `start`, each `factor` times the one before (Prometheus' `ExponentialBuckets`).
pub(crate) fn exp_buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start * factor.powi(i as i32)).collect()
}

const SIZE_BUCKETS: &[f64] = &[
    0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3, 64e3,
];

/// Declares metrics registered in the default registry on first use, one a line:
/// `NAME: Kind("name", "help" [, [labels]] [, buckets]);` where `Kind` is the `prometheus` type
/// (`Counter`, `CounterVec`, `Gauge`, `GaugeVec`, `Histogram`, `HistogramVec`). Registration
/// only fails for a duplicate name, a programming error, never because of input.
macro_rules! metrics {
    ($($(#[$attr:meta])* $name:ident: $kind:ident($($arg:tt)*);)*) => {$(
        $(#[$attr])*
        pub(crate) static $name: ::std::sync::LazyLock<::prometheus::$kind> =
            ::std::sync::LazyLock::new(|| {
                $crate::metrics::register!($kind($($arg)*)).expect("metric registers once")
            });
    )*};
}
pub(crate) use metrics;

/// The `prometheus` registration macro for one line of [`metrics!`].
macro_rules! register {
    (Counter($n:expr, $h:expr)) => {
        ::prometheus::register_counter!($n, $h)
    };
    (Gauge($n:expr, $h:expr)) => {
        ::prometheus::register_gauge!($n, $h)
    };
    (Histogram($n:expr, $h:expr, $b:expr)) => {
        ::prometheus::register_histogram!($n, $h, $b)
    };
    (CounterVec($n:expr, $h:expr, [$($l:expr),*])) => {
        ::prometheus::register_counter_vec!($n, $h, &[$($l),*])
    };
    (GaugeVec($n:expr, $h:expr, [$($l:expr),*])) => {
        ::prometheus::register_gauge_vec!($n, $h, &[$($l),*])
    };
    (HistogramVec($n:expr, $h:expr, [$($l:expr),*], $b:expr)) => {
        ::prometheus::register_histogram_vec!($n, $h, &[$($l),*], $b)
    };
}
pub(crate) use register;

metrics! {
    BUILD_INFO: GaugeVec("coredns_build_info", "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.", ["version", "revision", "goversion"]);
    PANICS: Counter("coredns_panics_total", "A metrics that counts the number of panics.");
    REQUESTS: CounterVec("coredns_dns_requests_total", "Counter of DNS requests made per zone, protocol and family.", ["server", "zone", "view", "proto", "family", "type"]);
    DURATION: HistogramVec("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took per zone.", ["server", "zone", "view"], exp_buckets(0.00025, 2.0, 16));
    REQUEST_SIZE: HistogramVec("coredns_dns_request_size_bytes", "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.", ["server", "zone", "view", "proto"], SIZE_BUCKETS.to_vec());
    RESPONSE_SIZE: HistogramVec("coredns_dns_response_size_bytes", "Size of the returned response in bytes.", ["server", "zone", "view", "proto"], SIZE_BUCKETS.to_vec());
    DO_REQUESTS: CounterVec("coredns_dns_do_requests_total", "Counter of DNS requests with DO bit set per zone.", ["server", "zone", "view"]);
    RESPONSES: CounterVec("coredns_dns_responses_total", "Counter of response status codes.", ["server", "zone", "view", "rcode", "plugin"]);
    PLUGIN_ENABLED: GaugeVec("coredns_plugin_enabled", "A metric that indicates whether a plugin is enabled on per server and zone basis.", ["server", "zone", "view", "name"]);
    RELOAD_FAILED: Counter("coredns_reload_failed_total", "Counter of the number of failed reload attempts.");
    RELOAD_VERSION: GaugeVec("coredns_reload_version_info", "A metric with a constant '1' value labeled by hash, and value which type of hash generated.", ["hash", "value"]);
    HEALTH_DURATION: Histogram("coredns_health_request_duration_seconds", "Histogram of the time (in seconds) each request took.", exp_buckets(0.00025, 10.0, 5));
    HEALTH_FAILURES: Counter("coredns_health_request_failures_total", "The number of times the health check failed.");
}

/// The `type` label: CoreDNS's monitored types, else `other`.
pub(crate) fn type_label(t: RType) -> &'static str {
    match t {
        RType::A
        | RType::AAAA
        | RType::CNAME
        | RType::DNSKEY
        | RType::DS
        | RType::MX
        | RType::NSEC3
        | RType::NSEC
        | RType::NS
        | RType::PTR
        | RType::RRSIG
        | RType::SOA
        | RType::SRV
        | RType::TXT
        | RType::HTTPS
        | RType::SVCB
        | RType::IXFR
        | RType::AXFR
        | RType::ANY => t.mnemonic().unwrap_or("other"),
        _ => "other",
    }
}

fn family(req: &Request) -> &'static str {
    if req.client.is_ipv4() {
        "1"
    } else {
        "2"
    }
}

fn zone_label(req: &Request) -> String {
    req.zone.to_lowercase_string()
}

/// Label handles of one (server, zone), resolved once per thread: `with_label_values` hashes
/// the labels and takes a lock on every call, a cached handle is one atomic add.
struct ZoneHandles {
    server: Arc<str>,
    zone: Name,
    view: Option<Arc<str>>,
    do_requests: Counter,
    duration: Histogram,
    /// Indexed by [`proto_index`].
    request_size: [Histogram; 2],
    response_size: [Histogram; 2],
    /// (proto, family, type label) -> counter.
    requests: Vec<((Proto, bool, &'static str), Counter)>,
    /// (rcode, plugin) -> counter.
    responses: Vec<((Rcode, &'static str), Counter)>,
}

fn proto_index(p: Proto) -> usize {
    match p {
        Proto::Udp => 0,
        Proto::Tcp => 1,
    }
}

impl ZoneHandles {
    fn new(server: &Arc<str>, zone: &Name, view: &Option<Arc<str>>) -> ZoneHandles {
        let z = zone.to_lowercase_string();
        let s = &**server;
        let v = view.as_deref().unwrap_or("");
        let sizes = |h: &HistogramVec| {
            [Proto::Udp, Proto::Tcp].map(|p| h.with_label_values(&[s, &z, v, p.as_str()]))
        };
        ZoneHandles {
            server: server.clone(),
            zone: zone.clone(),
            view: view.clone(),
            do_requests: DO_REQUESTS.with_label_values(&[s, &z, v]),
            duration: DURATION.with_label_values(&[s, &z, v]),
            request_size: sizes(&REQUEST_SIZE),
            response_size: sizes(&RESPONSE_SIZE),
            requests: Vec::new(),
            responses: Vec::new(),
        }
    }
}

/// Per-thread handle caches are bounded: past this many (server, zone) pairs, or label
/// combinations within one, the slow path is used.
const HANDLE_CACHE_MAX: usize = 64;

thread_local! {
    static HANDLES: RefCell<Vec<ZoneHandles>> = const { RefCell::new(Vec::new()) };
}

/// Records one answered request for the `prometheus` plugin (CoreDNS `vars.Report`).
pub(crate) fn report(req: &Request, rcode: Rcode, plugin: &'static str, reply_size: usize) {
    let done = HANDLES.with(|cell| {
        let Ok(mut all) = cell.try_borrow_mut() else {
            return false;
        };
        let pos = all.iter().position(|h| {
            Arc::ptr_eq(&h.server, &req.server) && h.zone == *req.zone && h.view == req.view
        });
        let h = match pos {
            Some(i) => &mut all[i],
            None => {
                // Old generations' servers (reloads) age out: start over when full.
                if all.len() >= HANDLE_CACHE_MAX {
                    all.clear();
                }
                all.push(ZoneHandles::new(&req.server, &req.zone, &req.view));
                let last = all.len() - 1;
                &mut all[last]
            }
        };
        report_cached(h, req, rcode, plugin, reply_size)
    });
    if !done {
        report_slow(req, rcode, plugin, reply_size);
    }
}

fn report_cached(
    h: &mut ZoneHandles,
    req: &Request,
    rcode: Rcode,
    plugin: &'static str,
    reply_size: usize,
) -> bool {
    let rkey = (req.proto, req.client.is_ipv4(), type_label(req.qtype()));
    let requests = match h.requests.iter().position(|(k, _)| *k == rkey) {
        Some(i) => i,
        None if h.requests.len() < HANDLE_CACHE_MAX => {
            let z = h.zone.to_lowercase_string();
            let c = REQUESTS.with_label_values(&[
                &*h.server,
                &z,
                h.view.as_deref().unwrap_or(""),
                req.proto.as_str(),
                family(req),
                rkey.2,
            ]);
            h.requests.push((rkey, c));
            h.requests.len() - 1
        }
        None => return false,
    };
    let skey = (rcode, plugin);
    let responses = match h.responses.iter().position(|(k, _)| *k == skey) {
        Some(i) => i,
        None if h.responses.len() < HANDLE_CACHE_MAX => {
            let z = h.zone.to_lowercase_string();
            let v = h.view.as_deref().unwrap_or("");
            let c = RESPONSES.with_label_values(&[&*h.server, &z, v, &rcode.to_string(), plugin]);
            h.responses.push((skey, c));
            h.responses.len() - 1
        }
        None => return false,
    };
    h.requests[requests].1.inc();
    if req.do_bit() {
        h.do_requests.inc();
    }
    h.duration.observe(req.start.elapsed().as_secs_f64());
    let pi = proto_index(req.proto);
    h.request_size[pi].observe(req.size as f64);
    h.response_size[pi].observe(reply_size as f64);
    h.responses[responses].1.inc();
    true
}

fn report_slow(req: &Request, rcode: Rcode, plugin: &str, reply_size: usize) {
    let zone = zone_label(req);
    let server = &*req.server;
    let view = req.view.as_deref().unwrap_or("");
    REQUESTS
        .with_label_values(&[
            server,
            &zone,
            view,
            req.proto.as_str(),
            family(req),
            type_label(req.qtype()),
        ])
        .inc();
    if req.do_bit() {
        DO_REQUESTS.with_label_values(&[server, &zone, view]).inc();
    }
    DURATION
        .with_label_values(&[server, &zone, view])
        .observe(req.start.elapsed().as_secs_f64());
    REQUEST_SIZE
        .with_label_values(&[server, &zone, view, req.proto.as_str()])
        .observe(req.size as f64);
    RESPONSE_SIZE
        .with_label_values(&[server, &zone, view, req.proto.as_str()])
        .observe(reply_size as f64);
    RESPONSES
        .with_label_values(&[server, &zone, view, &rcode.to_string(), plugin])
        .inc();
}

/// Records a request the server answered before any block (no zone matched, malformed).
pub(crate) fn record_dropped(server: &str, proto: Proto, size: usize, rcode: Rcode) {
    REQUESTS
        .with_label_values(&[server, "dropped", "", proto.as_str(), "1", "other"])
        .inc();
    REQUEST_SIZE
        .with_label_values(&[server, "dropped", "", proto.as_str()])
        .observe(size as f64);
    RESPONSES
        .with_label_values(&[server, "dropped", "", &rcode.to_string(), ""])
        .inc();
}

/// Registers build info and makes every always-present metric exist.
pub(crate) fn init() {
    BUILD_INFO
        .with_label_values(&[COREDNS_VERSION, env!("CARGO_PKG_VERSION"), "rust"])
        .set(1.0);
    LazyLock::force(&PANICS);
    LazyLock::force(&RELOAD_FAILED);
    LazyLock::force(&HEALTH_FAILURES);
    LazyLock::force(&HEALTH_DURATION);
}

/// The text exposition of every registered metric.
pub(crate) fn gather_text() -> Vec<u8> {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&prometheus::gather(), &mut out) {
        crate::log::error(&format!("encoding metrics: {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::Message;

    /// Cached handles count into the same series as `with_label_values`, per proto, type,
    /// rcode and plugin, and a new server label (a reload) gets its own series.
    #[test]
    fn cached_handles_count_into_the_labelled_series() {
        let q = Message::query(1, Name::parse("a.cached.test.").unwrap(), RType::AAAA);
        let mut req = Request::new(q, "127.0.0.1:5000".parse().unwrap(), Proto::Udp);
        req.zone = Arc::new(Name::parse("Cached.Test.").unwrap());
        req.server = Arc::from("dns://:15999");
        for _ in 0..3 {
            report(&req, Rcode::NOERROR, "whoami", 60);
        }
        report(&req, Rcode::NXDOMAIN, "whoami", 60);
        req.proto = Proto::Tcp;
        report(&req, Rcode::NOERROR, "whoami", 60);
        let get = |s: &str, proto: &str| {
            REQUESTS
                .with_label_values(&[s, "cached.test.", "", proto, "1", "AAAA"])
                .get()
        };
        assert_eq!(get("dns://:15999", "udp"), 4.0);
        assert_eq!(get("dns://:15999", "tcp"), 1.0);
        let rc = |r: &str| {
            RESPONSES
                .with_label_values(&["dns://:15999", "cached.test.", "", r, "whoami"])
                .get()
        };
        assert_eq!((rc("NOERROR"), rc("NXDOMAIN")), (4.0, 1.0));
        let sizes = RESPONSE_SIZE.with_label_values(&["dns://:15999", "cached.test.", "", "udp"]);
        assert_eq!(sizes.get_sample_count(), 4);
        req.server = Arc::from("dns://:15999");
        report(&req, Rcode::NOERROR, "whoami", 60);
        assert_eq!(get("dns://:15999", "tcp"), 2.0);
    }
}
