//! The local copy of the etcd prefix the plugin serves from: keys with their decoded SkyDNS
//! values and leases, the revision it is at, the remaining time of each lease, and whether the
//! copy is live (watch connected) or the last good data of an etcd that cannot be reached.
//! CoreDNS's two-step `get` (prefix `path/`, then the key `path`) runs on it. No I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::metrics::{KEYS, REVISION, SYNC_FAILURES, UP};
use super::service::Service;

/// One key's value.
#[derive(Clone, Debug)]
pub(crate) struct Kv {
    /// The decoded service, or why the value does not decode.
    pub value: Result<Service, String>,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl Kv {
    pub(crate) fn new(value: &[u8], lease: i64) -> Kv {
        Kv {
            value: Service::from_json(value),
            lease,
        }
    }
}

/// Why a lookup found nothing to answer from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GetError {
    /// No such key (CoreDNS `errKeyNotFound`: NXDOMAIN).
    NotFound,
    /// No copy yet (etcd never reached): CoreDNS's failed `Get` (SERVFAIL).
    Unavailable(String),
}

/// The remaining time of a lease when last asked.
#[derive(Clone, Copy, Debug)]
struct Lease {
    ttl: i64,
    at: Instant,
}

#[derive(Default)]
struct Data {
    kvs: BTreeMap<String, Kv>,
    /// The newest revision seen (of the full read or of a watch).
    revision: i64,
    /// The revision of the last full read: older watched changes are already in it.
    read_revision: i64,
    /// True once a full copy was read.
    synced: bool,
    leases: HashMap<i64, Lease>,
    /// Why the last sync or watch failed, while etcd is unreachable.
    down: Option<String>,
}

/// Sync status, for the warmup and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Nothing tried yet.
    Starting,
    /// The watch is live.
    Up,
    /// etcd cannot be reached (the copy, if any, is the last good one).
    Down,
}

/// The copy shared by the handler and the sync task.
pub(crate) struct Store {
    data: RwLock<Data>,
    status: tokio::sync::watch::Sender<Status>,
    /// Metric labels: endpoints, path, zones.
    labels: [String; 3],
}

impl Store {
    pub(crate) fn new(endpoints: String, path: String, zones: String) -> Store {
        Store {
            data: RwLock::default(),
            status: tokio::sync::watch::Sender::new(Status::Starting),
            labels: [endpoints, path, zones],
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    fn labels(&self) -> [&str; 3] {
        [&self.labels[0], &self.labels[1], &self.labels[2]]
    }

    /// Counts a failed read or watch.
    pub(crate) fn sync_failed(&self) {
        SYNC_FAILURES.with_label_values(&self.labels()).inc();
    }

    /// Replaces the copy with a full read at `revision`.
    pub(crate) fn replace(&self, kvs: BTreeMap<String, Kv>, revision: i64) {
        // A full read is the truth even at a lower revision (an etcd rebuilt from scratch).
        let mut d = self.write();
        d.leases
            .retain(|id, _| kvs.values().any(|kv| kv.lease == *id));
        d.kvs = kvs;
        d.revision = revision;
        d.read_revision = revision;
        d.synced = true;
        KEYS.with_label_values(&self.labels())
            .set(d.kvs.len() as f64);
        REVISION
            .with_label_values(&self.labels())
            .set(revision as f64);
    }

    /// Applies watched changes at `revision`: a value to put, or None to delete. Changes of
    /// different watches (one per zone, on keys apart) may come out of revision order; a
    /// change the full read already holds is ignored.
    pub(crate) fn apply(&self, events: Vec<(String, Option<Kv>)>, revision: i64) {
        let mut d = self.write();
        if revision <= d.read_revision {
            return;
        }
        for (k, v) in events {
            match v {
                Some(kv) => {
                    d.kvs.insert(k, kv);
                }
                None => {
                    d.kvs.remove(&k);
                }
            }
        }
        d.revision = d.revision.max(revision);
        KEYS.with_label_values(&self.labels())
            .set(d.kvs.len() as f64);
        REVISION
            .with_label_values(&self.labels())
            .set(d.revision as f64);
    }

    pub(crate) fn revision(&self) -> i64 {
        self.read().revision
    }

    pub(crate) fn len(&self) -> usize {
        self.read().kvs.len()
    }

    pub(crate) fn synced(&self) -> bool {
        self.read().synced
    }

    /// The leases keys are attached to.
    pub(crate) fn lease_ids(&self) -> Vec<i64> {
        let d = self.read();
        let mut v: Vec<i64> = d
            .kvs
            .values()
            .map(|kv| kv.lease)
            .filter(|l| *l != 0)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether a lease's remaining time is known.
    pub(crate) fn lease_known(&self, id: i64) -> bool {
        self.read().leases.contains_key(&id)
    }

    /// Leases attached to keys whose remaining time is not known.
    #[cfg(test)]
    pub(crate) fn unknown_leases(&self) -> Vec<i64> {
        let ids = self.lease_ids();
        let d = self.read();
        ids.into_iter()
            .filter(|id| !d.leases.contains_key(id))
            .collect()
    }

    /// Records a lease's remaining time (`ttl` seconds, -1 when expired) as of `at`.
    pub(crate) fn set_lease(&self, id: i64, ttl: i64, at: Instant) {
        self.write().leases.insert(id, Lease { ttl, at });
    }

    /// A lease's remaining seconds at `now`, if known and positive.
    pub(crate) fn lease_remaining(&self, id: i64, now: Instant) -> Option<i64> {
        let d = self.read();
        let l = d.leases.get(&id)?;
        // etcd reports whole seconds, truncated: the lease had about half a second more.
        let ms = l.ttl * 1000 + 500 - now.saturating_duration_since(l.at).as_millis() as i64;
        let left = ms.div_euclid(1000);
        (left > 0).then_some(left)
    }

    /// Marks the watch live.
    pub(crate) fn set_up(&self) {
        self.write().down = None;
        UP.with_label_values(&self.labels()).set(1.0);
        self.status.send_replace(Status::Up);
    }

    /// Marks etcd unreachable; returns true when it was not already.
    pub(crate) fn set_down(&self, why: &str) -> bool {
        let was = self.write().down.replace(why.to_string()).is_some();
        UP.with_label_values(&self.labels()).set(0.0);
        self.status.send_replace(Status::Down);
        !was
    }

    pub(crate) fn status_now(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the first sync attempt ended (either way), for at most `limit`.
    pub(crate) async fn first_attempt(&self, limit: Duration) {
        let mut rx = self.status.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|s| *s != Status::Starting)).await;
    }

    /// CoreDNS's `get`: with `recursive`, the keys under `path/`, else (or if there are none)
    /// the key `path` itself; in key order.
    pub(crate) fn get(&self, path: &str, recursive: bool) -> Result<Vec<(String, Kv)>, GetError> {
        let d = self.read();
        if !d.synced {
            return Err(GetError::Unavailable(
                d.down
                    .clone()
                    .unwrap_or_else(|| "no data read from etcd yet".to_string()),
            ));
        }
        if recursive {
            let p = if path.ends_with('/') {
                path.to_string()
            } else {
                format!("{path}/")
            };
            let found: Vec<(String, Kv)> = d
                .kvs
                .range(p.clone()..)
                .take_while(|(k, _)| k.starts_with(&p))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !found.is_empty() {
                return Ok(found);
            }
            let exact = p.strip_suffix('/').unwrap_or(&p);
            return d
                .kvs
                .get(exact)
                .map(|v| vec![(exact.to_string(), v.clone())])
                .ok_or(GetError::NotFound);
        }
        d.kvs
            .get(path)
            .map(|v| vec![(path.to_string(), v.clone())])
            .ok_or(GetError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keys: &[&str]) -> Store {
        let s = Store::new("e".into(), "p".into(), "z".into());
        let kvs = keys
            .iter()
            .map(|k| (k.to_string(), Kv::new(br#"{"host":"10.0.0.1"}"#, 0)))
            .collect();
        s.replace(kvs, 5);
        s
    }

    fn keys(r: Result<Vec<(String, Kv)>, GetError>) -> Result<Vec<String>, GetError> {
        r.map(|v| v.into_iter().map(|(k, _)| k).collect())
    }

    #[test]
    fn get_is_prefix_then_exact() {
        let s = store(&[
            "/skydns/a/x",
            "/skydns/a/x/1",
            "/skydns/a/x1",
            "/skydns/a/y/",
        ]);
        assert_eq!(keys(s.get("/skydns/a/x", true)).unwrap(), ["/skydns/a/x/1"]);
        assert_eq!(keys(s.get("/skydns/a/x1", true)).unwrap(), ["/skydns/a/x1"]);
        assert_eq!(keys(s.get("/skydns/a/y", true)).unwrap(), ["/skydns/a/y/"]);
        assert_eq!(keys(s.get("/skydns/a/x", false)).unwrap(), ["/skydns/a/x"]);
        assert_eq!(s.get("/skydns/a/z", true).unwrap_err(), GetError::NotFound);
        assert_eq!(s.get("/skydns/a/y", false).unwrap_err(), GetError::NotFound);
        assert_eq!(keys(s.get("/skydns/a", true)).unwrap().len(), 4);
    }

    #[test]
    fn unsynced_is_unavailable_and_stale_events_are_ignored() {
        let s = Store::new("e".into(), "p".into(), "z".into());
        assert!(matches!(s.get("/x", true), Err(GetError::Unavailable(_))));
        s.replace(BTreeMap::new(), 7);
        s.apply(vec![("/x".into(), Some(Kv::new(b"{}", 0)))], 8);
        s.apply(vec![("/x".into(), None)], 7); // in the full read already: ignored
        assert_eq!((s.len(), s.revision()), (1, 8));
        // Another zone's watch, behind the first one: applied, the revision stays.
        s.apply(vec![("/y".into(), Some(Kv::new(b"{}", 0)))], 8);
        assert_eq!((s.len(), s.revision()), (2, 8));
        // An etcd rebuilt from scratch: a full read at a lower revision replaces the copy.
        s.replace(BTreeMap::new(), 2);
        assert_eq!((s.len(), s.revision()), (0, 2));
    }

    #[test]
    fn lease_remaining_counts_down() {
        let s = store(&[]);
        let t0 = Instant::now();
        s.set_lease(9, 30, t0);
        assert_eq!(s.lease_remaining(9, t0 + Duration::from_secs(10)), Some(20));
        assert_eq!(s.lease_remaining(9, t0 + Duration::from_secs(30)), None);
        assert_eq!(s.lease_remaining(8, t0), None);
    }
}
