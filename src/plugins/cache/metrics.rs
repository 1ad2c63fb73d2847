//! The cache's Prometheus metrics, with CoreDNS's names, help texts and labels, and the label
//! handles a cache keeps so that counting a hit does not look the series up again.

use std::sync::{Arc, OnceLock};

use prometheus::{Counter, Gauge};

use crate::metrics::metrics;

metrics! {
    ENTRIES: GaugeVec("coredns_cache_entries", "The number of elements in the cache.", ["server", "type", "zones", "view"]);
    REQUESTS: CounterVec("coredns_cache_requests_total", "The count of cache requests.", ["server", "zones", "view"]);
    HITS: CounterVec("coredns_cache_hits_total", "The count of cache hits.", ["server", "type", "zones", "view"]);
    MISSES: CounterVec("coredns_cache_misses_total", "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.", ["server", "zones", "view"]);
    PREFETCH: CounterVec("coredns_cache_prefetch_total", "The number of times the cache has prefetched a cached item.", ["server", "zones", "view"]);
    DROPS: CounterVec("coredns_cache_drops_total", "The number responses that are not cached, because the reply is malformed.", ["server", "zones", "view"]);
    SERVED_STALE: CounterVec("coredns_cache_served_stale_total", "The number of requests served from stale cache entries.", ["server", "zones", "view"]);
    EVICTIONS: CounterVec("coredns_cache_evictions_total", "The count of cache evictions.", ["server", "type", "zones", "view"]);
}

/// The cache's counters with one label set each (the `type` label folded in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ctr {
    Requests,
    Misses,
    HitSuccess,
    HitDenial,
    Prefetch,
    Drops,
    ServedStale,
    EvictSuccess,
    EvictDenial,
}

const CTRS: usize = 9;

impl Ctr {
    /// The series for `server` and `zones` (`with_label_values` hashes and locks: slow path).
    fn resolve(self, server: &str, zones: &str, view: &str) -> Counter {
        let (vec, typ) = match self {
            Ctr::Requests => (&REQUESTS, None),
            Ctr::Misses => (&MISSES, None),
            Ctr::HitSuccess => (&HITS, Some("success")),
            Ctr::HitDenial => (&HITS, Some("denial")),
            Ctr::Prefetch => (&PREFETCH, None),
            Ctr::Drops => (&DROPS, None),
            Ctr::ServedStale => (&SERVED_STALE, None),
            Ctr::EvictSuccess => (&EVICTIONS, Some("success")),
            Ctr::EvictDenial => (&EVICTIONS, Some("denial")),
        };
        match typ {
            Some(t) => vec.with_label_values(&[server, t, zones, view]),
            None => vec.with_label_values(&[server, zones, view]),
        }
    }
}

/// Label handles of one server label, each resolved on first use (so a series appears only
/// once it is counted, as with `with_label_values` on every call).
struct ServerHandles {
    server: Arc<str>,
    ctrs: [OnceLock<Counter>; CTRS],
    /// `coredns_cache_entries` for success, denial.
    entries: [OnceLock<Gauge>; 2],
}

/// How many server labels one cache keeps handles for (a block is served under one label per
/// listener key; past this the slow path is used).
const SERVERS: usize = 8;

/// One cache's metric handles: a hit costs a few pointer compares and atomic adds, no hashing
/// of label values and no lock.
pub(crate) struct Handles {
    zones: String,
    view: String,
    servers: [OnceLock<ServerHandles>; SERVERS],
}

impl Handles {
    pub(crate) fn new(zones: String, view: String) -> Handles {
        Handles {
            zones,
            view,
            servers: Default::default(),
        }
    }

    /// The `zones` label.
    #[cfg(test)]
    pub(crate) fn zones(&self) -> &str {
        &self.zones
    }

    fn server(&self, server: &Arc<str>) -> Option<&ServerHandles> {
        for slot in &self.servers {
            let h = match slot.get() {
                Some(h) => h,
                None => slot.get_or_init(|| ServerHandles {
                    server: server.clone(),
                    ctrs: Default::default(),
                    entries: Default::default(),
                }),
            };
            if Arc::ptr_eq(&h.server, server) || *h.server == **server {
                return Some(h);
            }
        }
        None
    }

    pub(crate) fn inc(&self, server: &Arc<str>, c: Ctr) {
        self.meter(server).inc(c);
    }

    /// The handles of `server`, looked up once for several counts.
    pub(crate) fn meter<'a>(&'a self, server: &'a Arc<str>) -> Meter<'a> {
        Meter {
            zones: &self.zones,
            view: &self.view,
            server,
            slot: self.server(server),
        }
    }

    /// Sets `coredns_cache_entries` for `kind` (0 success, 1 denial).
    pub(crate) fn set_entries(&self, server: &Arc<str>, denial: bool, n: usize) {
        let typ = if denial { "denial" } else { "success" };
        let resolve = || ENTRIES.with_label_values(&[server, typ, &self.zones, &self.view]);
        match self.server(server) {
            Some(h) => h.entries[denial as usize]
                .get_or_init(resolve)
                .set(n as f64),
            None => resolve().set(n as f64),
        }
    }
}

/// One server label's handles, looked up once per request.
pub(crate) struct Meter<'a> {
    zones: &'a str,
    view: &'a str,
    server: &'a Arc<str>,
    slot: Option<&'a ServerHandles>,
}

impl Meter<'_> {
    pub(crate) fn inc(&self, c: Ctr) {
        match self.slot {
            Some(h) => h.ctrs[c as usize]
                .get_or_init(|| c.resolve(self.server, self.zones, self.view))
                .inc(),
            None => c.resolve(self.server, self.zones, self.view).inc(),
        }
    }
}
