//! Prometheus metrics of the `forward` plugin, with CoreDNS's names, labels and buckets
//! (`coredns_proxy_*` from `plugin/pkg/proxy`, `coredns_forward_*`), plus Sextant's count of
//! rejected bogus upstream replies. No I/O.

use std::sync::LazyLock;

use crate::metrics::metrics;

/// The `proxy_name` label value this plugin uses.
pub(super) const PROXY_NAME: &str = "forward";

metrics! {
    REQUEST_DURATION: HistogramVec("coredns_proxy_request_duration_seconds", "Histogram of the time each request to an upstream took.", ["proxy_name", "to", "rcode"], crate::metrics::exp_buckets(0.00025, 2.0, 16));
    HC_FAILURES: CounterVec("coredns_proxy_healthcheck_failures_total", "Counter of the number of failed health checks per upstream.", ["proxy_name", "to"]);
    CONN_HITS: CounterVec("coredns_proxy_conn_cache_hits_total", "Counter of upstream connections taken from the connection cache.", ["proxy_name", "to", "proto"]);
    CONN_MISSES: CounterVec("coredns_proxy_conn_cache_misses_total", "Counter of upstream connections that had to be opened (not in the cache).", ["proxy_name", "to", "proto"]);
    HC_BROKEN: Counter("coredns_forward_healthcheck_broken_total", "Counter of the number of times every upstream was unhealthy and one was picked at random.");
    MAX_CONCURRENT_REJECTS: Counter("coredns_forward_max_concurrent_rejects_total", "Counter of queries refused because max_concurrent was reached.");
    BOGUS_REPLIES: CounterVec("sextant_forward_bogus_replies_total", "Counter of upstream replies dropped because ID, question or format did not match the query.", ["to"]);
}

/// Registers the label-less counters so they show up (at 0) as soon as `forward` is configured,
/// like CoreDNS registering its metrics at start-up.
pub(super) fn init() {
    LazyLock::force(&HC_BROKEN);
    LazyLock::force(&MAX_CONCURRENT_REJECTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&HC_FAILURES);
    LazyLock::force(&CONN_HITS);
    LazyLock::force(&CONN_MISSES);
    LazyLock::force(&BOGUS_REPLIES);
}
