//! sextant-kube: the Kubernetes data side of Sextant. Lists and watches Services,
//! EndpointSlices, Namespaces, (with `pods verified`) Pods and (with `multicluster`) the MCS
//! API's ServiceImports and their EndpointSlices, and folds them into a compact
//! index of DNS-visible data that the query path reads as one atomic snapshot.
//!
//! Contract for the `kubernetes` plugin:
//! * [`start`] (or [`Index::new_static`] + [`Index::load_manifest_files`] /
//!   [`Index::apply_objects`]) gives an [`Index`].
//! * Per query: `let snap = index.snapshot();` then [`Snapshot`] lookups; names are compared
//!   as stored (Kubernetes names are lower-case: lower-case the query labels first).
//! * [`Index::synced`] is false until every watcher completed its first list (answer SERVFAIL
//!   instead of NXDOMAIN until then). After a sync the index is never emptied by an outage.
//! * [`Index::subscribe`] yields a [`Change`] per published update for cache invalidation.

mod byname;
mod client;
mod decode;
mod fold;
mod index;
mod manifests;
mod metrics;
mod model;
mod persist;
mod snapshot;
mod watch;

pub use client::{build_client, ClientConfig, RateLimits, USER_AGENT};
pub use fold::{
    Res, MC_SERVICE_NAME_LABEL, MC_SOURCE_CLUSTER_LABEL, SERVICE_NAME_LABEL,
    TRIGGER_TIME_ANNOTATION,
};
pub use index::Index;
pub use manifests::{load_manifests, release_memory, set_memory_release};
pub use model::{
    Change, Counts, EndpointHit, EndpointRef, Ips, Labels, Namespace, Pod, Port, Proto, Service,
    ServiceImport, ServiceKind, Source,
};
pub use snapshot::{ServiceEntry, Snapshot};
pub use watch::{start, start_with_client, PodsMode, WatchOptions, POD_FIELD_SELECTOR};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Client configuration could not be built (kubeconfig, URL, certificates, in-cluster env).
    #[error("kubernetes client config: {0}")]
    Config(String),
    /// A manifest or snapshot file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An object could not be decoded.
    #[error("object {name:?}: {reason}")]
    Object {
        /// `metadata.name` of the object.
        name: String,
        /// Decoder message.
        reason: String,
    },
}
