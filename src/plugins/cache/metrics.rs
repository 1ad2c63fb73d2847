//! The cache's Prometheus metrics, with CoreDNS's names, help texts and labels.

use prometheus::{register_counter_vec, register_gauge_vec, CounterVec, GaugeVec};

use crate::metrics::lazy_metric;

lazy_metric!(ENTRIES: GaugeVec = register_gauge_vec!(
    "coredns_cache_entries",
    "The number of elements in the cache.",
    &["server", "type", "zones", "view"]
));
lazy_metric!(REQUESTS: CounterVec = register_counter_vec!(
    "coredns_cache_requests_total",
    "The count of cache requests.",
    &["server", "zones", "view"]
));
lazy_metric!(HITS: CounterVec = register_counter_vec!(
    "coredns_cache_hits_total",
    "The count of cache hits.",
    &["server", "type", "zones", "view"]
));
lazy_metric!(MISSES: CounterVec = register_counter_vec!(
    "coredns_cache_misses_total",
    "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
    &["server", "zones", "view"]
));
lazy_metric!(PREFETCH: CounterVec = register_counter_vec!(
    "coredns_cache_prefetch_total",
    "The number of times the cache has prefetched a cached item.",
    &["server", "zones", "view"]
));
lazy_metric!(DROPS: CounterVec = register_counter_vec!(
    "coredns_cache_drops_total",
    "The number responses that are not cached, because the reply is malformed.",
    &["server", "zones", "view"]
));
lazy_metric!(SERVED_STALE: CounterVec = register_counter_vec!(
    "coredns_cache_served_stale_total",
    "The number of requests served from stale cache entries.",
    &["server", "zones", "view"]
));
lazy_metric!(EVICTIONS: CounterVec = register_counter_vec!(
    "coredns_cache_evictions_total",
    "The count of cache evictions.",
    &["server", "type", "zones", "view"]
));
