//! The shared index handle: holds the writer behind a mutex, publishes snapshots through
//! `ArcSwap`, tracks sync state and broadcasts change notices. No network I/O here.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};

use crate::decode::Obj;
use crate::fold::{Res, Writer};
use crate::model::{Change, Source};
use crate::snapshot::Snapshot;
use crate::Error;

pub(crate) struct Shared {
    snap: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    needed: Vec<Res>,
    pub(crate) synced_tx: watch::Sender<bool>,
    /// The value `synced_tx` holds, read by every query without the channel's lock.
    synced: AtomicBool,
    changes: broadcast::Sender<Change>,
    pub(crate) stop_tx: watch::Sender<bool>,
    source: AtomicU8,
}

/// Handle to the index; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Index {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("synced", &self.synced())
            .field("source", &self.source())
            .finish()
    }
}

fn lock(m: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Index {
    pub(crate) fn with_needed(needed: Vec<Res>, zonal: bool, source: Source) -> Index {
        crate::metrics::set_source(source);
        Index {
            shared: Arc::new(Shared {
                snap: ArcSwap::from_pointee(Snapshot::default()),
                writer: Mutex::new(Writer::new(zonal)),
                needed,
                synced_tx: watch::channel(false).0,
                synced: AtomicBool::new(false),
                changes: broadcast::channel(1024).0,
                stop_tx: watch::channel(false).0,
                source: AtomicU8::new(source as u8),
            }),
        }
    }

    /// An empty index fed without an API server (manifests, snapshots, tests). It counts as
    /// synced from the start; zone data is stored.
    pub fn new_static() -> Index {
        let idx = Index::with_needed(Vec::new(), true, Source::Manifests);
        idx.mark_synced();
        idx
    }

    /// The current snapshot: one atomic load; hold it for the duration of one query.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.shared.snap.load()
    }

    /// True once every watcher has completed its first full list (static indexes: always).
    pub fn synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// From now on synced (it never goes back): the flag, then the waiters.
    pub(crate) fn mark_synced(&self) {
        self.shared.synced.store(true, Ordering::Release);
        self.shared.synced_tx.send_replace(true);
    }

    /// Waits until synced or `timeout`; returns `synced()`.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.synced_tx.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| *s)).await;
        self.synced()
    }

    /// Change notices, one per published snapshot (lagging receivers should flush everything).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// Stops the watchers (and manifest/persist tasks); the last snapshot stays readable.
    pub fn stop(&self) {
        self.shared.stop_tx.send_replace(true);
    }

    /// True after [`Index::stop`].
    pub fn stopped(&self) -> bool {
        *self.shared.stop_tx.borrow()
    }

    /// Where the data currently comes from.
    pub fn source(&self) -> Source {
        match self.shared.source.load(Ordering::Relaxed) {
            x if x == Source::Snapshot as u8 => Source::Snapshot,
            x if x == Source::Manifests as u8 => Source::Manifests,
            _ => Source::Api,
        }
    }

    pub(crate) fn set_source(&self, s: Source) {
        self.shared.source.store(s as u8, Ordering::Relaxed);
        crate::metrics::set_source(s);
    }

    /// Runs `f` on the writer and publishes if it changed anything.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Writer) -> R) -> R {
        let mut w = lock(&self.shared.writer);
        let r = f(&mut w);
        self.publish_locked(&mut w);
        r
    }

    /// Runs `f` on the writer without publishing (during a re-list).
    pub(crate) fn write_quiet<R>(&self, f: impl FnOnce(&mut Writer) -> R) -> R {
        f(&mut lock(&self.shared.writer))
    }

    fn publish_locked(&self, w: &mut Writer) {
        let obs = std::mem::take(&mut w.observations);
        for (kind, secs) in obs {
            crate::metrics::observe_programming(kind, secs);
        }
        if w.dirty {
            w.dirty = false;
            let snap = w.snap.clone();
            crate::metrics::set_counts(snap.counts);
            self.shared.snap.store(Arc::new(snap));
            let ch = w.take_change();
            if !ch.is_empty() {
                let _ = self.shared.changes.send(ch);
            }
        }
        if !self.shared.needed.is_empty()
            && self.source() != Source::Api
            && w.synced(&self.shared.needed)
        {
            // Every watcher listed the API: a loaded snapshot's data is replaced by now.
            self.set_source(Source::Api);
        }
        if !self.synced() && w.synced(&self.shared.needed) {
            self.mark_synced();
        }
    }

    /// Replaces the whole content with these objects (Service, EndpointSlice, Pod, Namespace as
    /// Kubernetes JSON; `List` kinds are unwrapped; others ignored). Namespaces referenced by
    /// objects are created implicitly. Returns the first object that failed to decode, if any,
    /// after applying all the others.
    pub fn apply_objects(&self, objs: Vec<serde_json::Value>) -> Result<(), Error> {
        self.replace_all(|fold, bad| {
            for o in &objs {
                crate::decode::walk_value(o, fold, bad);
            }
        })
    }

    /// Replaces the whole content with the objects `feed` hands over (one re-list of every
    /// resource, published once). Objects that failed to decode are reported through the
    /// second callback; the first one is returned after everything else was applied.
    pub(crate) fn replace_all(
        &self,
        feed: impl FnOnce(&mut dyn FnMut(Obj<'_>), &mut dyn FnMut(String, String)),
    ) -> Result<(), Error> {
        self.write(|w| {
            for r in Res::ALL {
                w.begin_relist(r);
            }
            let mut first_err = None;
            feed(
                &mut |o| {
                    if let Some(ns) = w.upsert_obj(&o) {
                        w.upsert_namespace(ns);
                    }
                },
                &mut |name, reason| {
                    if first_err.is_none() {
                        first_err = Some(Error::Object { name, reason });
                    }
                },
            );
            for r in Res::ALL {
                w.end_relist(r);
            }
            first_err.map_or(Ok(()), Err)
        })
    }
}
