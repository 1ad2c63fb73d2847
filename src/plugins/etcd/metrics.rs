//! The etcd plugin's metrics: whether the watch of the path is live, and the size and revision
//! of the local copy (CoreDNS's etcd plugin has none; these are Sextant's).

use crate::metrics::metrics;

metrics! {
    UP: GaugeVec("sextant_etcd_up", "1 while the etcd plugin's watch of its path is live, 0 while etcd cannot be reached (the last good data is served).", ["endpoints", "path", "zones"]);
    KEYS: GaugeVec("sextant_etcd_keys", "Keys in the etcd plugin's local copy of its path.", ["endpoints", "path", "zones"]);
    REVISION: GaugeVec("sextant_etcd_revision", "etcd revision the etcd plugin's local copy is at.", ["endpoints", "path", "zones"]);
    SYNC_FAILURES: CounterVec("sextant_etcd_sync_failures_total", "Reads or watches of etcd that failed (connection, authentication, timeout, compaction).", ["endpoints", "path", "zones"]);
}
