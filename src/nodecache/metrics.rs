//! `coredns_nodecache_setup_errors_total{errortype}` and the HTTP endpoint that serves the
//! process's metrics on `-metrics-listen-address` (k8s-dns-node-cache's port 9353).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::metrics::metrics;

use crate::server::http::{HttpHandler, HttpResponse, HttpServer};

/// The error types, all pre-initialised to 0.
pub(crate) const ERROR_TYPES: [&str; 5] = [
    "iptables",
    "iptables_lock",
    "interface_add",
    "interface_check",
    "configmap",
];

metrics! {
    SETUP_ERRORS: CounterVec("coredns_nodecache_setup_errors_total", "The number of errors during periodic network setup for node-cache", ["errortype"]);
}

/// Makes every error type exist with value 0.
pub(crate) fn init() {
    for t in ERROR_TYPES {
        SETUP_ERRORS.with_label_values(&[t]);
    }
}

/// Counts one setup error.
pub(crate) fn error(kind: &str) {
    SETUP_ERRORS.with_label_values(&[kind]).inc();
}

struct Page;

impl HttpHandler for Page {
    fn get(&self, _path: &str) -> HttpResponse {
        HttpResponse {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: crate::metrics::gather_text(),
            headers: Vec::new(),
        }
    }
}

/// Why the metrics endpoint is not served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// `-metrics-listen-address` is not an address (the resolver's text).
    #[error("{0}")]
    Address(String),
    #[error("listen tcp {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves `/metrics` on `addr`; the server lives until the process exits.
pub(crate) async fn serve(addr: &str) -> Result<HttpServer, ServeError> {
    let sa = crate::server::http::resolve_addr(addr).map_err(ServeError::Address)?;
    HttpServer::bind(
        sa,
        vec![(
            "/metrics".to_string(),
            Arc::new(Page) as Arc<dyn HttpHandler>,
        )],
    )
    .await
    .map_err(|source| ServeError::Listen { addr: sa, source })
}
