//! A persistent hash table by (namespace, name): the snapshot's one-step lookups of a
//! namespace, and of a service together with its EndpointSlices, for the query path (the
//! ordered maps beside it serve iteration: AXFR, persistence, re-lists).

use std::hash::BuildHasher;
use std::sync::Arc;

/// A value filed by (namespace, name), which it can be asked about.
pub(crate) trait Keyed: Clone {
    fn is(&self, ns: &str, name: &str) -> bool;
}

/// Entries per shard, on average, above which the shards double (and below an eighth of
/// which they halve).
const LOAD: usize = 8;
/// The fewest shards of a non-empty index.
const MIN_SHARDS: usize = 16;

/// One shard: its entries with their hashes, in no order. Shared between snapshots until
/// changed; a change builds the shard again (a few entries).
type Shard<V> = Option<Arc<[(u64, V)]>>;

/// (namespace, name) -> value. Shard `i` holds the entries whose hash's top bits are `i`.
/// Cloning is O(1) (two reference counts); a change copies the shard it touches and, the first
/// time after a clone, the list of shards (16 bytes a shard, a shard per ~4-8 entries). The
/// hasher is seeded per index at random: names that cluster users choose cannot be made to
/// collide.
pub(crate) struct HashIndex<V> {
    hasher: foldhash::fast::RandomState,
    /// 64 - log2(number of shards).
    shift: u32,
    shards: Arc<[Shard<V>]>,
    len: usize,
}

impl<V> Clone for HashIndex<V> {
    fn clone(&self) -> Self {
        HashIndex {
            hasher: self.hasher.clone(),
            shift: self.shift,
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<V> Default for HashIndex<V> {
    fn default() -> Self {
        HashIndex {
            hasher: foldhash::fast::RandomState::default(),
            shift: 64,
            shards: Arc::new([]),
            len: 0,
        }
    }
}

impl<V: Keyed> HashIndex<V> {
    fn hash(&self, ns: &str, name: &str) -> u64 {
        self.hasher.hash_one((ns, name))
    }

    fn shard_of(&self, h: u64) -> usize {
        // `shift` is 64 while there are no shards (checked by the callers).
        h.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// The value filed under (`ns`, `name`).
    pub(crate) fn get(&self, ns: &str, name: &str) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        let h = self.hash(ns, name);
        let shard = self.shards.get(self.shard_of(h))?.as_deref()?;
        shard
            .iter()
            .find(|(x, v)| *x == h && v.is(ns, name))
            .map(|(_, v)| v)
    }

    /// Files `f(current value)` under (`ns`, `name`), or nothing when it returns None.
    pub(crate) fn update(&mut self, ns: &str, name: &str, f: impl FnOnce(Option<&V>) -> Option<V>) {
        if self.shards.is_empty() {
            self.rebuild(MIN_SHARDS);
        }
        let h = self.hash(ns, name);
        let i = self.shard_of(h);
        let old: &[(u64, V)] = self.shards.get(i).and_then(|s| s.as_deref()).unwrap_or(&[]);
        let at = old.iter().position(|(x, v)| *x == h && v.is(ns, name));
        let new = f(at.map(|p| &old[p].1));
        if at.is_none() && new.is_none() {
            return;
        }
        let mut list: Vec<(u64, V)> = Vec::with_capacity(old.len() + 1);
        list.extend(
            old.iter()
                .enumerate()
                .filter(|(p, _)| Some(*p) != at)
                .map(|(_, e)| e.clone()),
        );
        let added = new.is_some();
        if let Some(v) = new {
            list.push((h, v));
        }
        let Some(slot) = Arc::make_mut(&mut self.shards).get_mut(i) else {
            return;
        };
        *slot = (!list.is_empty()).then(|| list.into());
        match (at.is_some(), added) {
            (false, true) => self.len += 1,
            (true, false) => self.len -= 1,
            _ => {}
        }
        let n = self.shards.len();
        if self.len > LOAD * n {
            self.rebuild(2 * n);
        } else if n > MIN_SHARDS && self.len < LOAD * n / 8 {
            self.rebuild(n / 2);
        }
    }

    /// Spreads the entries over `n` (a power of two) shards.
    fn rebuild(&mut self, n: usize) {
        let shift = 64 - n.trailing_zeros();
        let mut lists: Vec<Vec<(u64, V)>> = (0..n).map(|_| Vec::new()).collect();
        for (h, v) in self.shards.iter().flatten().flat_map(|s| s.iter()) {
            let i = h.checked_shr(shift).unwrap_or(0) as usize;
            if let Some(l) = lists.get_mut(i) {
                l.push((*h, v.clone()));
            }
        }
        self.shift = shift;
        self.shards = lists
            .into_iter()
            .map(|l| (!l.is_empty()).then(|| l.into()))
            .collect();
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of shards.
    #[cfg(test)]
    fn shards(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct V(String, String, u32);

    impl Keyed for V {
        fn is(&self, ns: &str, name: &str) -> bool {
            self.0 == ns && self.1 == name
        }
    }

    fn put(ix: &mut HashIndex<V>, ns: &str, name: &str, n: u32) {
        ix.update(ns, name, |_| Some(V(ns.into(), name.into(), n)));
    }

    #[test]
    fn grows_shrinks_and_shares_with_earlier_clones() {
        let mut ix: HashIndex<V> = HashIndex::default();
        assert!(ix.get("a", "b").is_none());
        for i in 0..1000 {
            put(&mut ix, &format!("ns{}", i % 7), &format!("svc{i}"), i);
        }
        assert_eq!(ix.len(), 1000);
        assert!(ix.shards() >= 1000 / LOAD && ix.shards() <= 2 * 1000 / LOAD);
        let published = ix.clone();
        for i in 0..1000 {
            let (ns, name) = (format!("ns{}", i % 7), format!("svc{i}"));
            assert_eq!(ix.get(&ns, &name).map(|v| v.2), Some(i));
            // The same name in another namespace is another entry.
            assert!(ix.get(&format!("ns{}", (i + 1) % 7), &name).is_none());
        }
        // Replace some, remove most: the clone still sees what it saw.
        for i in 0..1000 {
            let (ns, name) = (format!("ns{}", i % 7), format!("svc{i}"));
            if i % 10 == 0 {
                ix.update(&ns, &name, |old| {
                    old.map(|v| V(v.0.clone(), v.1.clone(), v.2 + 1))
                });
            } else {
                ix.update(&ns, &name, |_| None);
            }
        }
        assert_eq!(ix.len(), 100);
        assert!(ix.shards() < 1000 / LOAD, "halved: {}", ix.shards());
        for i in 0..1000 {
            let (ns, name) = (format!("ns{}", i % 7), format!("svc{i}"));
            let want = (i % 10 == 0).then_some(i + 1);
            assert_eq!(ix.get(&ns, &name).map(|v| v.2), want);
            assert_eq!(published.get(&ns, &name).map(|v| v.2), Some(i));
        }
        assert_eq!(published.len(), 1000);
        // Removing what is not there changes nothing.
        ix.update("nope", "nope", |_| None);
        assert_eq!(ix.len(), 100);
    }
}
