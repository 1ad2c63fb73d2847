//! Indexes shared across configuration generations: a reload whose `kubernetes` data source is
//! unchanged (same API client settings and watch options) keeps the running, synced index instead
//! of starting new watches, so a reload during an API outage never loses the cluster's data.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use sextant_kube::Index;

struct Entry {
    index: Index,
    users: usize,
}

static SHARED: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Default::default);

/// Takes a running index for `key`, if one is registered and still running.
pub(crate) fn acquire(key: &str) -> Option<Index> {
    let mut map = SHARED.lock().ok()?;
    match map.get_mut(key) {
        Some(e) if !e.index.stopped() => {
            e.users += 1;
            Some(e.index.clone())
        }
        Some(_) => {
            map.remove(key);
            None
        }
        None => None,
    }
}

/// Registers a freshly started index for `key` with one user.
pub(crate) fn register(key: &str, index: Index) {
    if let Ok(mut map) = SHARED.lock() {
        map.insert(key.to_string(), Entry { index, users: 1 });
    }
}

/// Gives up one use of `key`'s index; the last user stops its watches.
pub(crate) fn release(key: &str) {
    let Ok(mut map) = SHARED.lock() else {
        return;
    };
    let last = match map.get_mut(key) {
        Some(e) => {
            e.users = e.users.saturating_sub(1);
            e.users == 0
        }
        None => false,
    };
    if last {
        if let Some(e) = map.remove(key) {
            e.index.stop();
        }
    }
}
