//! Prometheus metrics of the Kubernetes client and index, registered once in the default
//! registry under CoreDNS's names. No I/O; registration failures are logged, never fatal.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec,
    HistogramVec, IntCounterVec, IntGaugeVec,
};

use crate::model::Counts;

fn or_unregistered<T>(r: prometheus::Result<T>, fallback: impl FnOnce() -> T) -> T {
    r.unwrap_or_else(|e| {
        tracing::warn!("plugin/kubernetes: metric registration failed: {e}");
        fallback()
    })
}

pub(crate) static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = prometheus::HistogramOpts::new(
        "coredns_kubernetes_rest_client_request_duration_seconds",
        "Request latency in seconds. Broken down by verb and host.",
    );
    or_unregistered(
        register_histogram_vec!(opts.clone(), &["verb", "host"]),
        || HistogramVec::new(opts, &["verb", "host"]).unwrap_or_else(|_| unreachable_hist()),
    )
});

pub(crate) static RATE_LIMITER_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = prometheus::HistogramOpts::new(
        "coredns_kubernetes_rest_client_rate_limiter_duration_seconds",
        "Client side rate limiter latency in seconds. Broken down by verb and host.",
    );
    or_unregistered(
        register_histogram_vec!(opts.clone(), &["verb", "host"]),
        || HistogramVec::new(opts, &["verb", "host"]).unwrap_or_else(|_| unreachable_hist()),
    )
});

pub(crate) static REQUESTS_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = prometheus::Opts::new(
        "coredns_kubernetes_rest_client_requests_total",
        "Number of HTTP requests, partitioned by status code, method, and host.",
    );
    or_unregistered(
        register_int_counter_vec!(opts.clone(), &["code", "method", "host"]),
        || {
            IntCounterVec::new(opts, &["code", "method", "host"]).unwrap_or_else(|_| {
                IntCounterVec::new(prometheus::Opts::new("x", "x"), &["code", "method", "host"])
                    .unwrap_or_else(|_| unreachable!())
            })
        },
    )
});

static PROGRAMMING: LazyLock<HistogramVec> = LazyLock::new(|| {
    let buckets = exponential_buckets(0.001, 2.0, 20).unwrap_or_default();
    let opts = prometheus::HistogramOpts::new(
        "coredns_kubernetes_dns_programming_duration_seconds",
        "Histogram of the time (in seconds) it took to program a dns instance.",
    )
    .buckets(buckets);
    or_unregistered(
        register_histogram_vec!(opts.clone(), &["service_kind"]),
        || HistogramVec::new(opts, &["service_kind"]).unwrap_or_else(|_| unreachable_hist()),
    )
});

static INDEXED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let opts = prometheus::Opts::new(
        "sextant_kubernetes_indexed_objects",
        "Objects held in the Kubernetes DNS index, by kind.",
    );
    or_unregistered(register_int_gauge_vec!(opts.clone(), &["kind"]), || {
        IntGaugeVec::new(opts, &["kind"]).unwrap_or_else(|_| {
            IntGaugeVec::new(prometheus::Opts::new("x", "x"), &["kind"])
                .unwrap_or_else(|_| unreachable!())
        })
    })
});

fn unreachable_hist() -> HistogramVec {
    // A fixed, valid descriptor: cannot fail.
    HistogramVec::new(prometheus::HistogramOpts::new("x", "x"), &["l"])
        .unwrap_or_else(|_| unreachable!())
}

pub(crate) fn observe_programming(kind: &str, secs: f64) {
    PROGRAMMING.with_label_values(&[kind]).observe(secs);
}

pub(crate) fn set_counts(c: Counts) {
    let g = &*INDEXED;
    g.with_label_values(&["services"]).set(c.services as i64);
    g.with_label_values(&["endpoints"]).set(c.endpoints as i64);
    g.with_label_values(&["pods"]).set(c.pods as i64);
    g.with_label_values(&["namespaces"])
        .set(c.namespaces as i64);
}
