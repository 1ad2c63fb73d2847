//! The cache's storage: cached items (the encoded reply plus the offsets of
//! its TTL fields, so a hit is a copy and a few patches) in the toolkit's 256-shard map with random
//! eviction per shard ([`ShardCache`], like CoreDNS's `plugin/pkg/cache`), with the bytes they
//! hold counted; optionally a memory [`Budget`] shared
//! by several stores, which evicts from the largest of them once the bytes they hold together
//! pass it. No I/O.
//!
//! Keys are already the output of the cache's randomly keyed hash, so the shards' maps use them
//! as they are (no second hash); a hit takes one shard's read lock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sextant_wire::message::{skip_name, HEADER_LEN};
use sextant_wire::name::wire_is_subdomain;
use sextant_wire::reply::{set_flags, set_ttls, ttl_offsets};
use sextant_wire::{Class, Message, Name, RType, Rcode};

use crate::pkg::shardcache::ShardCache;

/// Which of the two caches an item lives in (also the metric `type` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Success,
    Denial,
}

/// One cached reply: two allocations, this (in its `Arc`) and `data`, the encoded reply with
/// the offsets of its TTL fields after it. The question name is read from the reply's bytes
/// (uncompressed at offset 12), not kept a second time. About 128 + (reply + 2 per record +
/// 8, rounded up to 16) bytes from the allocator plus the slot in the map: bench/cache_mem.py
/// measures ~370 bytes of RSS an entry (search-path names), where separate name, reply and
/// offset buffers took ~940.
pub(crate) struct Item {
    /// The reply encoded without OPT, every TTL set to `orig_ttl`; then, from `wire_len` on,
    /// where the four TTL bytes of each record sit in it (u16, little endian).
    data: Box<[u8]>,
    wire_len: u32,
    pub orig_ttl: u32,
    pub qtype: RType,
    pub qclass: Class,
    pub rcode: Rcode,
    /// DO, CD, AD, RA and `answering` (see [`Item::answering`]).
    bits: u8,
    refreshing: AtomicBool,
    pub stored: Instant,
    /// A positive answer kept when a non-answer replaced it (prefer_positive).
    pub last_known_good: Option<Arc<Item>>,
    /// Prefetch popularity and the stale-refresh recheck time.
    state: Mutex<State>,
}

const DO: u8 = 1;
const CD: u8 = 2;
const AD: u8 = 4;
const RA: u8 = 8;
const ANSWERING: u8 = 16;

/// What hits and refreshes change in an [`Item`].
#[derive(Default)]
struct State {
    /// CoreDNS `freq`: the last hit and the hits counted.
    last_hit: Option<Instant>,
    hits: u64,
    /// No background refresh before this (a failed stale refresh's recheck delay).
    retry_after: Option<Instant>,
}

impl Item {
    /// Encodes `m` (TTLs already rewritten to `ttl`) for storing, without copying the message:
    /// its ID and OPT record are taken out for the encoding and put back. None if it has no
    /// question or is too long for 16-bit offsets.
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
        let offsets = ttl_offsets(&wire)?;
        if wire.len() > u16::MAX as usize {
            return None;
        }
        // One exact-size buffer (the encoder's has room for 512 bytes; shrinking it in place
        // would leave the rest as a hole next to a long-lived block).
        let mut data = Vec::with_capacity(wire.len() + 2 * offsets.len());
        data.extend_from_slice(&wire);
        for o in offsets {
            data.extend_from_slice(&(o as u16).to_le_bytes());
        }
        let bits = [
            (do_bit, DO),
            (cd, CD),
            (m.header.ad, AD),
            (m.header.ra, RA),
            (answering, ANSWERING),
        ]
        .iter()
        .fold(0, |b, &(set, bit)| if set { b | bit } else { b });
        Some(Item {
            data: data.into_boxed_slice(),
            wire_len: wire.len() as u32,
            orig_ttl: ttl,
            qtype: q.qtype,
            qclass: q.qclass,
            rcode: m.rcode(),
            bits,
            refreshing: AtomicBool::new(false),
            stored: now,
            last_known_good: None,
            state: Mutex::new(State::default()),
        })
    }

    fn wire(&self) -> &[u8] {
        &self.data[..self.wire_len as usize]
    }

    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[self.wire_len as usize..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize)
    }

    /// The question name's wire bytes (uncompressed at offset 12: the first name of a message).
    pub(crate) fn qname(&self) -> &[u8] {
        let w = self.wire();
        match skip_name(w, HEADER_LEN) {
            Ok((end, _)) => &w[HEADER_LEN..end],
            Err(_) => &[],
        }
    }

    /// True if the question name is `name` (case-insensitively).
    pub(crate) fn name_is(&self, name: &Name) -> bool {
        let n = name.wire();
        // A name's wire form is self-delimiting: the stored bytes of `n`'s length equal to `n`
        // are the whole stored name (length bytes are below 64, untouched by case folding).
        self.wire()
            .get(HEADER_LEN..HEADER_LEN + n.len())
            .is_some_and(|s| s == n || s.eq_ignore_ascii_case(n))
    }

    /// True if the question name is `zone` or below it.
    pub(crate) fn name_under(&self, zone: &Name) -> bool {
        wire_is_subdomain(self.qname(), zone)
    }

    /// True if the reply answers its question (for `serve_stale_policy prefer_positive`).
    pub(crate) fn answering(&self) -> bool {
        self.bits & ANSWERING != 0
    }

    /// The memory this item holds, roughly: the item, its bytes, and the map slot, reference
    /// counts and allocator headers around them.
    pub(crate) fn cost(&self) -> usize {
        std::mem::size_of::<Item>() + self.data.len() + 48
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
            && (self.bits & DO != 0) == do_bit
            && (self.bits & CD != 0) == cd
            && self.name_is(name)
    }

    /// The reply for a query with header flags `rd`/`cd` and DO/AD wishes, every TTL `ttl`.
    /// Like CoreDNS's `toMsg`: AA always set, RA and rcode as stored, AD only if the client
    /// asked with DO or AD.
    pub(crate) fn to_wire(&self, rd: bool, cd: bool, do_bit: bool, ad: bool, ttl: u32) -> Vec<u8> {
        let mut out = self.wire().to_vec();
        // QR and AA always; RD/CD as asked; RA and rcode as stored; AD only for DO or AD.
        let mut f: u16 = 0x8000 | 0x0400 | (self.rcode.low() as u16 & 0x0f);
        for (set, bit) in [
            (rd, 0x0100),
            (self.bits & RA != 0, 0x0080),
            (self.bits & AD != 0 && (do_bit || ad), 0x0020),
            (cd, 0x0010),
        ] {
            if set {
                f |= bit;
            }
        }
        set_flags(&mut out, f);
        set_ttls(&mut out, self.ttl_offsets(), ttl);
        out
    }

    /// CoreDNS `freq.Update`: counts hits with gaps shorter than `d`.
    pub(crate) fn update_freq(&self, d: Duration, now: Instant) -> u64 {
        let Ok(mut f) = self.state.lock() else {
            return 0;
        };
        let fresh = match f.last_hit {
            Some(last) => now.checked_sub(d).is_none_or(|earliest| last >= earliest),
            None => false,
        };
        f.last_hit = Some(now);
        f.hits = if fresh { f.hits + 1 } else { 1 };
        f.hits
    }

    pub(crate) fn hits(&self) -> u64 {
        self.state.lock().map(|f| f.hits).unwrap_or(0)
    }

    pub(crate) fn reset_freq(&self, now: Instant, hits: u64) {
        if let Ok(mut f) = self.state.lock() {
            f.last_hit = Some(now);
            f.hits = hits;
        }
    }

    /// At most one refresh in flight; none before `retry_after` when a recheck delay is set.
    pub(crate) fn begin_refresh(&self, now: Instant, recheck: Duration) -> bool {
        if !recheck.is_zero() {
            if let Ok(r) = self.state.lock() {
                if r.retry_after.is_some_and(|t| now < t) {
                    return false;
                }
            }
        }
        self.refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn end_refresh(&self, now: Instant, recheck: Duration, refreshed: bool) {
        if let Ok(mut r) = self.state.lock() {
            r.retry_after = (!recheck.is_zero() && !refreshed).then(|| now + recheck);
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

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

/// The 256-shard map of [`ShardCache`] plus the bytes its items hold (see [`Item::cost`]).
pub(crate) struct Store {
    map: ShardCache<Item>,
    /// Bytes of the items (see [`Item::cost`]).
    bytes: AtomicUsize,
    budget: Option<Arc<Budget>>,
    /// Evictions the shared budget made here, not yet counted in the owner's metric.
    budget_evictions: AtomicU64,
}

impl Store {
    /// CoreDNS: `max(size / 256, 4)` per shard, so 9984 for 10000 and never below 1024.
    pub(crate) fn new(cap: i64) -> Store {
        Store {
            map: ShardCache::new(cap),
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
        let Some(item) = self.map.evict_one() else {
            return false;
        };
        self.account(0, item.cost());
        self.budget_evictions.fetch_add(1, Ordering::Relaxed);
        true
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.map.capacity()
    }

    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<Arc<Item>> {
        self.map.get(key)
    }

    /// Inserts or replaces; true if another item was evicted (at random) to make room. Then,
    /// with a shared budget over its limit, items of the largest member store go.
    pub(crate) fn add(&self, key: u64, item: Arc<Item>) -> bool {
        let cost = item.cost();
        let Some(out) = self.map.insert(key, item) else {
            return false;
        };
        let freed = out.evicted.as_ref().map_or(0, |i| i.cost())
            + out.replaced.as_ref().map_or(0, |i| i.cost());
        self.account(cost, freed);
        if let Some(b) = &self.budget {
            b.enforce();
        }
        out.evicted.is_some()
    }

    pub(crate) fn remove(&self, key: u64) {
        if let Some(old) = self.map.remove(key) {
            self.account(0, old.cost());
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops every item `drop` says yes to; returns how many went.
    pub(crate) fn remove_if(&self, drop: impl Fn(&Item) -> bool) -> usize {
        let mut freed = 0;
        let n = self.map.remove_if(|i| {
            let gone = drop(i);
            if gone {
                freed += i.cost();
            }
            gone
        });
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
        assert_eq!(i.ttl_offsets().count(), 4);
        assert_eq!(i.qname(), Name::parse("a.example.").unwrap().wire());
        assert!(i.name_is(&Name::parse("A.Example.").unwrap()));
        assert!(!i.name_is(&Name::parse("a.example.com.").unwrap()));
        assert!(!i.name_is(&Name::parse("example.").unwrap()));
        assert!(i.name_under(&Name::parse("EXAMPLE.").unwrap()));
        assert!(i.name_under(&Name::root()));
        assert!(!i.name_under(&Name::parse("b.example.").unwrap()));
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
    fn an_item_is_small() {
        // Two allocations per entry: this (in its Arc) and the reply with its TTL offsets. The
        // search path's ~20,000 entries are ~1/3 of the scenario's RSS (issue 17): keep it so.
        assert!(
            std::mem::size_of::<Item>() <= 104,
            "{}",
            std::mem::size_of::<Item>()
        );
        let i = item(Instant::now());
        assert_eq!(i.data.len(), i.wire().len() + 2 * 4);
        assert_eq!(i.data.len(), i.wire_len as usize + 8);
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
