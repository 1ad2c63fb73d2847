//! Prometheus metrics of the Kubernetes client and index, registered once in the default
//! registry under CoreDNS's names. No I/O; a registration failure (e.g. a name already taken by
//! another collector) is logged and the metric kept unregistered, never a panic.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::model::Counts;

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    if let Err(e) = prometheus::register(Box::new(c.clone())) {
        tracing::warn!("plugin/kubernetes: metric registration failed: {e}");
    }
    c
}

fn histogram(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Option<Vec<f64>>,
) -> Option<HistogramVec> {
    let mut opts = HistogramOpts::new(name, help);
    if let Some(b) = buckets {
        opts = opts.buckets(b);
    }
    HistogramVec::new(opts, labels).ok().map(register)
}

pub(crate) static REQUEST_DURATION: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    histogram(
        "coredns_kubernetes_rest_client_request_duration_seconds",
        "Request latency in seconds. Broken down by verb and host.",
        &["verb", "host"],
        None,
    )
});

pub(crate) static RATE_LIMITER_DURATION: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    histogram(
        "coredns_kubernetes_rest_client_rate_limiter_duration_seconds",
        "Client side rate limiter latency in seconds. Broken down by verb and host.",
        &["verb", "host"],
        None,
    )
});

pub(crate) static REQUESTS_TOTAL: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "coredns_kubernetes_rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
        ),
        &["code", "method", "host"],
    )
    .ok()
    .map(register)
});

static PROGRAMMING: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    histogram(
        "coredns_kubernetes_dns_programming_duration_seconds",
        "Histogram of the time (in seconds) it took to program a dns instance.",
        &["service_kind"],
        prometheus::exponential_buckets(0.001, 2.0, 20).ok(),
    )
});

static INDEXED: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    IntGaugeVec::new(
        Opts::new(
            "sextant_kubernetes_indexed_objects",
            "Objects held in the Kubernetes DNS index, by kind.",
        ),
        &["kind"],
    )
    .ok()
    .map(register)
});

static DATA_SOURCE: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    IntGaugeVec::new(
        Opts::new(
            "sextant_kubernetes_data_source",
            "Where the Kubernetes DNS index's answers come from: 1 for the current source.",
        ),
        &["source"],
    )
    .ok()
    .map(register)
});

/// Sets the data-source gauge: 1 for `s`, 0 for the others.
pub(crate) fn set_source(s: crate::model::Source) {
    let Some(g) = DATA_SOURCE.as_ref() else {
        return;
    };
    use crate::model::Source;
    for (x, name) in [
        (Source::Api, "api"),
        (Source::Snapshot, "snapshot"),
        (Source::Manifests, "manifests"),
    ] {
        g.with_label_values(&[name]).set(i64::from(x == s));
    }
}

/// Observes `secs` in a histogram vector, if it exists.
pub(crate) fn observe(h: &LazyLock<Option<HistogramVec>>, labels: &[&str], secs: f64) {
    if let Some(h) = h.as_ref() {
        h.with_label_values(labels).observe(secs);
    }
}

pub(crate) fn count_request(code: &str, method: &str, host: &str) {
    if let Some(c) = REQUESTS_TOTAL.as_ref() {
        c.with_label_values(&[code, method, host]).inc();
    }
}

pub(crate) fn observe_programming(kind: &str, secs: f64) {
    observe(&PROGRAMMING, &[kind], secs);
}

pub(crate) fn set_counts(c: Counts) {
    let Some(g) = INDEXED.as_ref() else {
        return;
    };
    g.with_label_values(&["services"]).set(c.services as i64);
    g.with_label_values(&["endpoints"]).set(c.endpoints as i64);
    g.with_label_values(&["pods"]).set(c.pods as i64);
    g.with_label_values(&["namespaces"])
        .set(c.namespaces as i64);
    g.with_label_values(&["serviceimports"])
        .set(c.service_imports as i64);
    g.with_label_values(&["multicluster_endpoints"])
        .set(c.mc_endpoints as i64);
}
