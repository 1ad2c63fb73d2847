//! The cache's storage: cached items (the encoded reply plus the offsets of
//! its TTL fields, so a hit is a copy and a few patches) and a 256-shard map with random
//! eviction per shard, like CoreDNS's `plugin/pkg/cache`; optionally a memory [`Budget`] shared
//! by several stores, which evicts from the largest of them once the bytes they hold together
//! pass it. No I/O.
//!
//! Keys are already the output of the cache's randomly keyed hash, so the shards' maps use them
//! as they are (no second hash); a hit takes one shard's read lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use sextant_wire::reply::{set_flags, set_ttls, ttl_offsets};
use sextant_wire::{Class, Message, Name, RType, Rcode};

/// Which of the two caches an item lives in (also the metric `type` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Success,
    Denial,
}

/// One cached reply.
pub(crate) struct Item {
    pub name: Name,
    pub qtype: RType,
    pub qclass: Class,
    pub do_bit: bool,
    pub cd: bool,
    pub rcode: Rcode,
    pub ad: bool,
    pub ra: bool,
    /// True if the reply answers its question (for `serve_stale_policy prefer_positive`).
    pub answering: bool,
    /// The reply encoded without OPT, every TTL set to `orig_ttl`.
    pub wire: Vec<u8>,
    /// Where the four TTL bytes of each record sit in `wire`.
    pub ttl_offsets: Vec<usize>,
    pub orig_ttl: u32,
    pub stored: Instant,
    /// A positive answer kept when a non-answer replaced it (prefer_positive).
    pub last_known_good: Option<Arc<Item>>,
    freq: Mutex<(Option<Instant>, u64)>,
    refreshing: AtomicBool,
    retry_after: Mutex<Option<Instant>>,
}

impl Item {
    /// Encodes `m` (TTLs already rewritten to `ttl`) for storing, without copying the message:
    /// its ID and OPT record are taken out for the encoding and put back.
    pub(crate) fn from_reply(
        m: &mut Message,
        do_bit: bool,
        cd: bool,
        answering: bool,
        ttl: u32,
        now: Instant,
    ) -> Option<Item> {
        let edns = m.edns.take();
        let id = std::mem::replace(&mut m.header.id, 0);
        let wire = m.to_wire();
        m.edns = edns;
        m.header.id = id;
        let q = m.question()?;
        let ttl_offsets = ttl_offsets(&wire)?;
        Some(Item {
            name: q.name.clone(),
            qtype: q.qtype,
            qclass: q.qclass,
            do_bit,
            cd,
            rcode: m.rcode(),
            ad: m.header.ad,
            ra: m.header.ra,
            answering,
            wire,
            ttl_offsets,
            orig_ttl: ttl,
            stored: now,
            last_known_good: None,
            freq: Mutex::new((None, 0)),
            refreshing: AtomicBool::new(false),
            retry_after: Mutex::new(None),
        })
    }

    /// The memory this item holds, roughly: the item, its encoded reply, its TTL offsets, its
    /// name and the map slot and reference count around it.
    pub(crate) fn cost(&self) -> usize {
        std::mem::size_of::<Item>()
            + self.wire.capacity()
            + self.ttl_offsets.capacity() * std::mem::size_of::<usize>()
            + self.name.wire().len()
            + 48
    }

    /// Seconds left (negative once expired), truncated like Go's `int(d.Seconds())`.
    pub(crate) fn ttl(&self, now: Instant) -> i64 {
        self.orig_ttl as i64 - now.saturating_duration_since(self.stored).as_secs() as i64
    }

    /// Same question (name case-insensitively, type, class) and the same DO/CD bits.
    pub(crate) fn matches(
        &self,
        name: &Name,
        qtype: RType,
        qclass: Class,
        do_bit: bool,
        cd: bool,
    ) -> bool {
        self.qtype == qtype
            && self.qclass == qclass
            && self.do_bit == do_bit
            && self.cd == cd
            && self.name == *name
    }

    /// The reply for a query with header flags `rd`/`cd` and DO/AD wishes, every TTL `ttl`.
    /// Like CoreDNS's `toMsg`: AA always set, RA and rcode as stored, AD only if the client
    /// asked with DO or AD.
    pub(crate) fn to_wire(&self, rd: bool, cd: bool, do_bit: bool, ad: bool, ttl: u32) -> Vec<u8> {
        let mut out = self.wire.clone();
        // QR and AA always; RD/CD as asked; RA and rcode as stored; AD only for DO or AD.
        let mut f: u16 = 0x8000 | 0x0400 | (self.rcode.low() as u16 & 0x0f);
        for (set, bit) in [
            (rd, 0x0100),
            (self.ra, 0x0080),
            (self.ad && (do_bit || ad), 0x0020),
            (cd, 0x0010),
        ] {
            if set {
                f |= bit;
            }
        }
        set_flags(&mut out, f);
        set_ttls(&mut out, &self.ttl_offsets, ttl);
        out
    }

    /// CoreDNS `freq.Update`: counts hits with gaps shorter than `d`.
    pub(crate) fn update_freq(&self, d: Duration, now: Instant) -> u64 {
        let Ok(mut f) = self.freq.lock() else {
            return 0;
        };
        let fresh = match f.0 {
            Some(last) => now.checked_sub(d).is_none_or(|earliest| last >= earliest),
            None => false,
        };
        f.0 = Some(now);
        f.1 = if fresh { f.1 + 1 } else { 1 };
        f.1
    }

    pub(crate) fn hits(&self) -> u64 {
        self.freq.lock().map(|f| f.1).unwrap_or(0)
    }

    pub(crate) fn reset_freq(&self, now: Instant, hits: u64) {
        if let Ok(mut f) = self.freq.lock() {
            *f = (Some(now), hits);
        }
    }

    /// At most one refresh in flight; none before `retry_after` when a recheck delay is set.
    pub(crate) fn begin_refresh(&self, now: Instant, recheck: Duration) -> bool {
        if !recheck.is_zero() {
            if let Ok(r) = self.retry_after.lock() {
                if r.is_some_and(|t| now < t) {
                    return false;
                }
            }
        }
        self.refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn end_refresh(&self, now: Instant, recheck: Duration, refreshed: bool) {
        if let Ok(mut r) = self.retry_after.lock() {
            *r = (!recheck.is_zero() && !refreshed).then(|| now + recheck);
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

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

type Shard = HashMap<u64, Arc<Item>, BuildHasherDefault<KeyHasher>>;

/// A memory budget shared by several stores (`cache { budget SIZE }` in several server blocks).
pub(crate) struct Budget {
    pub limit: usize,
    used: AtomicUsize,
    members: Mutex<Vec<Weak<Store>>>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            members: Mutex::new(Vec::new()),
        }
    }

    /// Bytes the member stores hold together.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn join(&self, s: &Arc<Store>) {
        if let Ok(mut m) = self.members.lock() {
            m.retain(|w| w.strong_count() > 0);
            m.push(Arc::downgrade(s));
        }
    }

    fn charge(&self, add: usize, sub: usize) {
        if add >= sub {
            self.used.fetch_add(add - sub, Ordering::Relaxed);
        } else {
            // Never below zero, whatever the interleaving.
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(sub - add))
                });
        }
    }

    /// While over the limit, evicts a random item of the member holding the most bytes (so a
    /// busy block cannot starve the others of their share). Bounded per call.
    fn enforce(&self) {
        for _ in 0..64 {
            if self.used() <= self.limit {
                return;
            }
            let victim = self.members.lock().ok().and_then(|m| {
                m.iter()
                    .filter_map(Weak::upgrade)
                    .max_by_key(|s| s.bytes.load(Ordering::Relaxed))
            });
            match victim {
                Some(v) if v.evict_one() => {}
                _ => return,
            }
        }
    }
}

/// 256 shards of `key -> item`, each holding at most `shard_cap` items.
pub(crate) struct Store {
    shards: Vec<RwLock<Shard>>,
    shard_cap: usize,
    /// Items in all shards (kept under the shard locks, read without them).
    count: AtomicUsize,
    /// Bytes of the items (see [`Item::cost`]).
    bytes: AtomicUsize,
    budget: Option<Arc<Budget>>,
    /// Evictions the shared budget made here, not yet counted in the owner's metric.
    budget_evictions: AtomicU64,
}

impl Store {
    /// CoreDNS: `max(size / 256, 4)` per shard, so 9984 for 10000 and never below 1024.
    pub(crate) fn new(cap: i64) -> Store {
        let shard_cap = (cap / SHARDS as i64).max(4) as usize;
        Store {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            shard_cap,
            count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            budget: None,
            budget_evictions: AtomicU64::new(0),
        }
    }

    /// A store whose items also count against `budget` (when there is one).
    pub(crate) fn shared(cap: i64, budget: Option<Arc<Budget>>) -> Arc<Store> {
        let mut s = Store::new(cap);
        s.budget = budget.clone();
        let s = Arc::new(s);
        if let Some(b) = budget {
            b.join(&s);
        }
        s
    }

    /// Bytes of the items held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Evictions the shared budget made in this store since the last call.
    pub(crate) fn take_budget_evictions(&self) -> u64 {
        self.budget_evictions.swap(0, Ordering::Relaxed)
    }

    fn account(&self, add: usize, sub: usize) {
        if add >= sub {
            self.bytes.fetch_add(add - sub, Ordering::Relaxed);
        } else {
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(sub - add))
                });
        }
        if let Some(b) = &self.budget {
            b.charge(add, sub);
        }
    }

    /// Evicts one random item (for the budget); false if the store is empty.
    fn evict_one(&self) -> bool {
        let start = rand::random_range(0..SHARDS);
        for i in 0..SHARDS {
            let Ok(mut s) = self.shards[(start + i) % SHARDS].write() else {
                continue;
            };
            if s.is_empty() {
                continue;
            }
            let victim = s.keys().nth(rand::random_range(0..s.len())).copied();
            if let Some(item) = victim.and_then(|v| s.remove(&v)) {
                self.count.fetch_sub(1, Ordering::Relaxed);
                drop(s);
                self.account(0, item.cost());
                self.budget_evictions.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// The shard comes from bits 32..40 of the key: the map inside uses the low bits for its
    /// buckets and the top seven as tags, so neither is constant within a shard.
    fn shard(&self, key: u64) -> &RwLock<Shard> {
        &self.shards[((key >> 32) as usize) & (SHARDS - 1)]
    }

    pub(crate) fn get(&self, key: u64) -> Option<Arc<Item>> {
        if self.is_empty() {
            // No lock to take (an empty denial cache in front of every positive hit).
            return None;
        }
        self.shard(key).read().ok()?.get(&key).cloned()
    }

    /// Inserts or replaces; true if another item was evicted (at random) to make room. Then,
    /// with a shared budget over its limit, items of the largest member store go.
    pub(crate) fn add(&self, key: u64, item: Arc<Item>) -> bool {
        let cost = item.cost();
        let mut freed = 0;
        let mut evicted = false;
        {
            let Ok(mut s) = self.shard(key).write() else {
                return false;
            };
            if s.len() >= self.shard_cap && !s.contains_key(&key) {
                let victim = s.keys().nth(rand::random_range(0..s.len())).copied();
                if let Some(old) = victim.and_then(|v| s.remove(&v)) {
                    freed += old.cost();
                    evicted = true;
                }
            }
            match s.insert(key, item) {
                Some(old) => freed += old.cost(),
                None if !evicted => {
                    self.count.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
        }
        self.account(cost, freed);
        if let Some(b) = &self.budget {
            b.enforce();
        }
        evicted
    }

    pub(crate) fn remove(&self, key: u64) {
        let gone = match self.shard(key).write() {
            Ok(mut s) => s.remove(&key),
            Err(_) => None,
        };
        if let Some(old) = gone {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.account(0, old.cost());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Drops every item `drop` says yes to; returns how many went.
    pub(crate) fn remove_if(&self, drop: impl Fn(&Item) -> bool) -> usize {
        let mut n = 0;
        let mut freed = 0;
        for s in &self.shards {
            if let Ok(mut s) = s.write() {
                let before = s.len();
                s.retain(|_, i| {
                    let gone = drop(i);
                    if gone {
                        freed += i.cost();
                    }
                    !gone
                });
                let gone = before - s.len();
                self.count.fetch_sub(gone, Ordering::Relaxed);
                n += gone;
            }
        }
        self.account(0, freed);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::{RData, Record};
    use std::net::Ipv4Addr;

    fn item(now: Instant) -> Item {
        let mut m = Message::reply_to(&Message::query(
            7,
            Name::parse("a.example.").unwrap(),
            RType::A,
        ));
        for i in 0..3 {
            m.answers.push(Record::new(
                Name::parse("a.example.").unwrap(),
                30,
                RData::A(Ipv4Addr::new(10, 0, 0, i)),
            ));
        }
        m.additional.push(Record::new(
            Name::parse("ns.example.").unwrap(),
            30,
            RData::A(Ipv4Addr::new(10, 0, 1, 1)),
        ));
        Item::from_reply(&mut m.clone(), false, false, true, 30, now).unwrap()
    }

    #[test]
    fn ttl_patching_and_flags() {
        let now = Instant::now();
        let i = item(now);
        assert_eq!(i.ttl_offsets.len(), 4);
        let w = i.to_wire(true, true, false, false, 17);
        let m = Message::parse(&w).unwrap();
        assert!(m.header.aa && m.header.rd && m.header.cd && m.header.qr);
        assert!(!m.header.ad && !m.header.tc);
        assert!(m.answers.iter().chain(&m.additional).all(|r| r.ttl == 17));
        assert_eq!(m.answers.len(), 3);
        assert_eq!(i.ttl(now + Duration::from_millis(29_999)), 1);
        assert_eq!(i.ttl(now + Duration::from_secs(31)), -1);
    }

    #[test]
    fn shard_capacity_and_eviction() {
        assert_eq!(Store::new(10000).capacity(), 9984);
        assert_eq!(Store::new(100).capacity(), 1024);
        assert_eq!(Store::new(5000).capacity(), 4864);
        let s = Store::new(1024);
        let now = Instant::now();
        let it = Arc::new(item(now));
        // Keys in shard 0 only: the fifth evicts one.
        let mut evictions = 0;
        for k in 0..6u64 {
            if s.add(k * 256, it.clone()) {
                evictions += 1;
            }
        }
        assert_eq!(evictions, 2);
        assert_eq!(s.len(), 4);
        assert!(s.get(5 * 256).is_some(), "the newest item is kept");
        // Replacing an existing key never evicts.
        assert!(!s.add(5 * 256, it.clone()));
        assert_eq!(s.remove_if(|_| true), 4);
    }

    #[test]
    fn a_shared_budget_evicts_from_the_largest_store() {
        let now = Instant::now();
        let cost = item(now).cost();
        // Room for 10 items across both stores.
        let b = Arc::new(Budget::new(cost * 10));
        let big = Store::shared(10000, Some(b.clone()));
        let small = Store::shared(10000, Some(b.clone()));
        for k in 0..8u64 {
            big.add(k, Arc::new(item(now)));
        }
        assert_eq!((big.len(), b.used()), (8, 8 * cost));
        assert_eq!(big.bytes(), 8 * cost);
        for k in 0..4u64 {
            small.add(k, Arc::new(item(now)));
        }
        // 12 items asked, 10 fit: the two evicted came from the larger store.
        assert_eq!((big.len(), small.len()), (6, 4));
        assert_eq!(b.used(), 10 * cost);
        assert_eq!(big.take_budget_evictions(), 2);
        assert_eq!(big.take_budget_evictions(), 0);
        assert_eq!(small.take_budget_evictions(), 0);
        // Replacing an item costs nothing more; removing one gives its bytes back.
        small.add(0, Arc::new(item(now)));
        assert_eq!(b.used(), 10 * cost);
        small.remove(0);
        assert_eq!((b.used(), small.bytes()), (9 * cost, 3 * cost));
        assert_eq!(big.remove_if(|_| true), 6);
        assert_eq!(b.used(), 3 * cost);
        // Without a budget a store only counts its own bytes.
        let alone = Store::new(10000);
        alone.add(1, Arc::new(item(now)));
        assert_eq!(alone.bytes(), cost);
    }

    #[test]
    fn freq_and_refresh_gate() {
        let now = Instant::now();
        let i = item(now);
        let m = Duration::from_secs(60);
        assert_eq!(i.update_freq(m, now), 1);
        assert_eq!(i.update_freq(m, now + Duration::from_secs(10)), 2);
        assert_eq!(i.update_freq(m, now + Duration::from_secs(100)), 1);
        let r = Duration::from_secs(30);
        assert!(i.begin_refresh(now, r));
        assert!(!i.begin_refresh(now, r), "one refresh at a time");
        i.end_refresh(now, r, false);
        assert!(!i.begin_refresh(now + Duration::from_secs(29), r));
        assert!(i.begin_refresh(now + Duration::from_secs(30), r));
        i.end_refresh(now, Duration::ZERO, true);
        assert!(i.begin_refresh(now, Duration::ZERO));
    }
}
