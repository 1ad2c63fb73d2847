//! A bounded map of `u64 -> Arc<T>` in 256 shards, each with its own lock and random eviction
//! when full, like CoreDNS's `plugin/pkg/cache` (capacity `max(size / 256, 4)` per shard). Used
//! by `dnssec` (signatures; `cache` keeps its own store under the shared memory budget). Keys
//! are already hashes. No I/O.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

const SHARDS: usize = 256;

/// Passes a key that is already a keyed hash through unchanged.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Shard<T> = HashMap<u64, Arc<T>, BuildHasherDefault<KeyHasher>>;

/// 256 shards of `key -> item`, each holding at most `shard_cap` items.
pub(crate) struct ShardCache<T> {
    shards: Vec<RwLock<Shard<T>>>,
    shard_cap: usize,
    /// Items in all shards (kept under the shard locks, read without them).
    count: AtomicUsize,
}

impl<T> ShardCache<T> {
    /// CoreDNS: `max(size / 256, 4)` per shard, so 9984 for 10000 and never below 1024.
    pub(crate) fn new(cap: i64) -> ShardCache<T> {
        let shard_cap = (cap / SHARDS as i64).max(4) as usize;
        ShardCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            shard_cap,
            count: AtomicUsize::new(0),
        }
    }

    /// The shard comes from bits 32..40 of the key: the map inside uses the low bits for its
    /// buckets and the top seven as tags, so neither is constant within a shard.
    fn shard(&self, key: u64) -> &RwLock<Shard<T>> {
        &self.shards[((key >> 32) as usize) & (SHARDS - 1)]
    }

    pub(crate) fn get(&self, key: u64) -> Option<Arc<T>> {
        if self.is_empty() {
            // No lock to take (an empty denial cache in front of every positive hit).
            return None;
        }
        self.shard(key).read().ok()?.get(&key).cloned()
    }

    /// Inserts or replaces; true if another item was evicted (at random) to make room.
    pub(crate) fn add(&self, key: u64, item: Arc<T>) -> bool {
        let Ok(mut s) = self.shard(key).write() else {
            return false;
        };
        let mut evicted = false;
        if s.len() >= self.shard_cap && !s.contains_key(&key) {
            let victim = s.keys().nth(rand::random_range(0..s.len())).copied();
            if let Some(v) = victim {
                s.remove(&v);
                evicted = true;
            }
        }
        if s.insert(key, item).is_none() && !evicted {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        evicted
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Drops every item `drop` says yes to; returns how many went.
    pub(crate) fn remove_if(&self, drop: impl Fn(&T) -> bool) -> usize {
        let mut n = 0;
        for s in &self.shards {
            if let Ok(mut s) = s.write() {
                let before = s.len();
                s.retain(|_, i| !drop(i));
                let gone = before - s.len();
                self.count.fetch_sub(gone, Ordering::Relaxed);
                n += gone;
            }
        }
        n
    }
}
