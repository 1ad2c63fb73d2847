//! The list/watch loops: one kube-runtime watcher per resource, folded into the index, with
//! exponential backoff on HTTP errors, a 1 s retry while unreachable (at most ~1 request/s per
//! resource while failing), re-list on
//! 410 (done by the watcher), and a periodic consistency re-list. Network I/O via kube only.

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod, Service as K8sService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::client::{build_client, ClientConfig, RateLimits};
use crate::decode::K8sServiceImport;
use crate::fold::MC_SERVICE_NAME_LABEL;
use crate::fold::{Res, Writer};
use crate::index::Index;
use crate::model::Source;
use crate::Error;

/// `pods` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodsMode {
    /// No pod records (default).
    #[default]
    Disabled,
    /// Pod records for any parseable IP; no pod watch.
    Insecure,
    /// Pod records only for existing pods: watches Pods.
    Verified,
}

/// Field selector of the Pod watch (as CoreDNS).
pub const POD_FIELD_SELECTOR: &str =
    "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown";

/// What to watch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchOptions {
    /// Label selector for the Namespace watch (`namespace_labels`).
    pub namespace_labels: Option<String>,
    /// Label selector for Services, EndpointSlices and Pods (`labels`).
    pub labels: Option<String>,
    /// Pods mode; only `Verified` watches Pods.
    pub pods: PodsMode,
    /// Watch EndpointSlices (false with `noendpoints`).
    pub endpoints: bool,
    /// Store endpoint zones (`zonal`).
    pub zonal: bool,
    /// Watch the MCS API (`multicluster ZONES`): ServiceImports and the EndpointSlices
    /// labelled `multicluster.kubernetes.io/service-name`. Off: no extra watch.
    pub multicluster: bool,
    /// Period of the consistency re-list (0 = never). Default 5 minutes.
    pub resync: Duration,
    /// Page size of LIST requests (0 = kube's default, 500). Default 100: a page is held
    /// decoded while it is folded, and at 500 the pages of the four watchers made a re-list of a
    /// 140k-object cluster peak at 1.28x the steady heap (1.09x at 100; same re-list time).
    pub page_size: u32,
    /// First retry delay after an error; doubles up to `backoff_max`. Default 1 s.
    pub backoff_min: Duration,
    /// Retry delay cap. Default 30 s.
    pub backoff_max: Duration,
    /// A file written by [`Index::persist_to`], loaded before the watchers start: its data is
    /// served (as synced) until the API's lists replace it. Missing file: ignored.
    pub snapshot: Option<PathBuf>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            namespace_labels: None,
            labels: None,
            pods: PodsMode::Disabled,
            endpoints: true,
            zonal: false,
            multicluster: false,
            resync: Duration::from_secs(300),
            page_size: 100,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            snapshot: None,
        }
    }
}

/// Builds the client and starts the watchers on the current tokio runtime; returns at once.
pub async fn start(
    client: ClientConfig,
    limits: RateLimits,
    opts: WatchOptions,
) -> Result<Index, Error> {
    let client = build_client(&client, &limits).await?;
    Ok(start_with_client(client, opts))
}

/// Starts the watchers with an existing client (tests, shared clients).
pub fn start_with_client(client: Client, opts: WatchOptions) -> Index {
    let mut needed = vec![Res::Namespace, Res::Service];
    if opts.endpoints {
        needed.push(Res::EndpointSlice);
    }
    if opts.pods == PodsMode::Verified {
        needed.push(Res::Pod);
    }
    if opts.multicluster {
        needed.push(Res::ServiceImport);
        needed.push(Res::McSlice);
    }
    let index = Index::with_needed(needed.clone(), opts.zonal, Source::Api);
    crate::manifests::trim_freed_memory_eagerly();
    if let Some(p) = opts.snapshot.as_deref().filter(|p| p.exists()) {
        // Before any watcher runs, so a list never races with (and loses to) older data.
        match index.load_snapshot(p) {
            Ok(()) => tracing::info!(
                "plugin/kubernetes: serving last-known data from snapshot {} until the API answers",
                p.display()
            ),
            Err(e) => tracing::warn!("plugin/kubernetes: snapshot: {e}"),
        }
    }
    let base = |sel: &Option<String>| {
        let mut c = watcher::Config::default();
        if let Some(l) = sel.as_deref().filter(|l| !l.trim().is_empty()) {
            c = c.labels(l);
        }
        if opts.page_size > 0 {
            c = c.page_size(opts.page_size);
        }
        c
    };
    for r in needed {
        let idx = index.clone();
        let o = opts.clone();
        match r {
            Res::Namespace => {
                let api: Api<K8sNamespace> = Api::all(client.clone());
                tokio::spawn(run(
                    idx,
                    api,
                    base(&opts.namespace_labels),
                    o,
                    r,
                    fold_namespace,
                ));
            }
            Res::Service => {
                let api: Api<K8sService> = Api::all(client.clone());
                tokio::spawn(run(idx, api, base(&opts.labels), o, r, fold_service));
            }
            Res::EndpointSlice => {
                let api: Api<EndpointSlice> = Api::all(client.clone());
                tokio::spawn(run(idx, api, base(&opts.labels), o, r, fold_slice));
            }
            Res::Pod => {
                let api: Api<K8sPod> = Api::all(client.clone());
                let cfg = base(&opts.labels).fields(POD_FIELD_SELECTOR);
                tokio::spawn(run(idx, api, cfg, o, r, fold_pod));
            }
            Res::ServiceImport => {
                // CoreDNS lists ServiceImports with the *namespace* label selector.
                let api: Api<K8sServiceImport> = Api::all(client.clone());
                let cfg = base(&opts.namespace_labels);
                tokio::spawn(run(idx, api, cfg, o, r, fold_import));
            }
            Res::McSlice => {
                // The `labels` selector plus "has the MCS service-name label".
                let sel = match opts.labels.as_deref().filter(|l| !l.trim().is_empty()) {
                    Some(l) => format!("{l},{MC_SERVICE_NAME_LABEL}"),
                    None => MC_SERVICE_NAME_LABEL.to_string(),
                };
                let api: Api<EndpointSlice> = Api::all(client.clone());
                let cfg = base(&Some(sel));
                tokio::spawn(run(idx, api, cfg, o, r, fold_mc_slice));
            }
        }
    }
    index
}

/// A watched Kubernetes type.
pub(crate) trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// How one watch folds its objects into the index (one type may feed two watches:
/// EndpointSlices of local services and of ServiceImports).
type Fold<K> = fn(&K, &mut Writer);

fn fold_service(o: &K8sService, w: &mut Writer) {
    w.upsert_service(&crate::decode::ServiceIn::from(o));
}
fn fold_slice(o: &EndpointSlice, w: &mut Writer) {
    w.upsert_slice(&crate::decode::SliceIn::from(o));
}
fn fold_mc_slice(o: &EndpointSlice, w: &mut Writer) {
    w.upsert_mc_slice(&crate::decode::SliceIn::from(o));
}
fn fold_pod(o: &K8sPod, w: &mut Writer) {
    w.upsert_pod(&crate::decode::PodIn::from(o));
}
fn fold_namespace(o: &K8sNamespace, w: &mut Writer) {
    if let Some(n) = o.metadata.name.as_deref() {
        w.upsert_namespace(n);
    }
}
fn fold_import(o: &K8sServiceImport, w: &mut Writer) {
    w.upsert_import(&crate::decode::ImportIn::from(o));
}

/// Retry delay cap while the API server cannot be reached at all (connect refused, reset).
const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);

/// Exponential backoff; resets after a quiet period without errors.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    last_err: Option<Instant>,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(10));
        Backoff {
            min,
            max: max.max(min),
            next: min,
            last_err: None,
        }
    }
    /// A successful event: the next error starts from the minimum again.
    fn reset(&mut self) {
        self.next = self.min;
        self.last_err = None;
    }
    fn on_error(&mut self) -> Duration {
        let now = Instant::now();
        if self
            .last_err
            .is_some_and(|t| now.duration_since(t) > self.max * 2)
        {
            self.next = self.min;
        }
        self.last_err = Some(now);
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

fn api_error(e: &watcher::Error) -> Option<&kube::core::ErrorResponse> {
    match e {
        watcher::Error::WatchError(r) => Some(r),
        watcher::Error::InitialListFailed(kube::Error::Api(r))
        | watcher::Error::WatchStartFailed(kube::Error::Api(r))
        | watcher::Error::WatchFailed(kube::Error::Api(r)) => Some(r),
        _ => None,
    }
}

fn log_error(res: Res, e: &watcher::Error, retry: Duration) {
    let what = res.as_str();
    match api_error(e).map(|r| r.code) {
        Some(401) => tracing::error!(
            "plugin/kubernetes: {what}: unauthorized (401): token expired or invalid; retrying in {retry:?}: {e}"
        ),
        Some(403) => tracing::error!(
            "plugin/kubernetes: {what}: forbidden (403): check RBAC (list/watch {what}); retrying in {retry:?}: {e}"
        ),
        Some(410) => tracing::info!(
            "plugin/kubernetes: {what}: resource version expired (410); re-listing: {e}"
        ),
        Some(429) => tracing::warn!(
            "plugin/kubernetes: {what}: throttled by the API server (429); retrying in {retry:?}"
        ),
        Some(c) if c >= 500 => tracing::warn!(
            "plugin/kubernetes: {what}: API server error ({c}); retrying in {retry:?}: {e}"
        ),
        _ => tracing::warn!("plugin/kubernetes: {what}: {e}; retrying in {retry:?}"),
    }
}

async fn run<K: Watched>(
    index: Index,
    api: Api<K>,
    cfg: watcher::Config,
    opts: WatchOptions,
    res: Res,
    fold: Fold<K>,
) {
    let mut stop = index.shared.stop_tx.subscribe();
    let mut backoff = Backoff::new(opts.backoff_min, opts.backoff_max);
    let far = Duration::from_secs(86400 * 365);
    let resync = if opts.resync.is_zero() {
        far
    } else {
        opts.resync
    };
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        // A fresh watcher starts with a full list: this is the consistency re-list.
        let stream = watcher(api.clone(), cfg.clone());
        futures::pin_mut!(stream);
        let resync_at = tokio::time::sleep(resync);
        tokio::pin!(resync_at);
        let mut in_init = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = &mut resync_at, if !in_init => {
                    tracing::debug!("plugin/kubernetes: {}: periodic re-list", res.as_str());
                    break;
                }
                ev = stream.next() => match ev {
                    None => break,
                    Some(Ok(ev)) => {
                        // Any event means the API server answers again: the next error backs
                        // off from the minimum (a watch that resumes after errors does not
                        // re-list, so waiting for InitDone would carry a long delay over).
                        backoff.reset();
                        fold_event(&index, ev, &mut in_init, res, fold)
                    }
                    Some(Err(e)) => {
                        // An unreachable API server costs nothing to retry: once a second, so
                        // the index converges within a second of it coming back. HTTP errors
                        // (429, 5xx, 403) back off exponentially.
                        let d = backoff.on_error();
                        let d = if api_error(&e).is_none() {
                            d.min(UNREACHABLE_RETRY)
                        } else {
                            d
                        };
                        log_error(res, &e, d);
                        tokio::select! {
                            _ = stop.changed() => return,
                            _ = tokio::time::sleep(d) => {}
                        }
                    }
                }
            }
        }
    }
}

fn fold_event<K: Watched>(
    index: &Index,
    ev: Event<K>,
    in_init: &mut bool,
    res: Res,
    fold: Fold<K>,
) {
    match ev {
        Event::Init => {
            *in_init = true;
            index.write_quiet(|w| w.begin_relist(res));
        }
        Event::InitApply(o) => index.write_quiet(|w| fold(&o, w)),
        Event::InitDone => {
            *in_init = false;
            index.write(|w| w.end_relist(res));
            // The pages of the list are freed by now: hand their memory back.
            crate::release_memory();
            tracing::debug!("plugin/kubernetes: {}: list complete", res.as_str());
        }
        Event::Apply(o) => index.write(|w| fold(&o, w)),
        Event::Delete(o) => {
            let ns = o.namespace().unwrap_or_default();
            let name = o.name_any();
            index.write(|w| w.delete(res, &ns, &name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let d: Vec<_> = (0..5).map(|_| b.on_error().as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 4, 4]);
    }
}
