//! Per-thread memo of the `kubernetes` plugin's encoded replies: a reply that depends only on
//! the question (exact spelling, type, class, the RD/CD bits copied into it) and on one index
//! snapshot is built once, kept as wire bytes and sent again as bytes until the snapshot, the
//! server's own addresses or the synced state change. No lock: each worker thread has its own.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use sextant_kube::Snapshot;

/// Replies kept per generation, plugin instance and thread: [`BUDGET`] shared out over the
/// worker threads (one per core), at least [`MIN_ENTRIES`]. When the current generation is full
/// it becomes the previous one and the one before is retired; a hit in the previous generation
/// moves the reply back into the current one. So the names a cluster keeps asking stay, a flood
/// of distinct names costs at most two generations per thread (plus one being freed), and nothing
/// scans. A retired generation is freed [`FREE_PER_PUT`] entries per later insertion, never at
/// once: dropping 65,536 replies in one go (131,072 frees) stopped the thread's queries for
/// milliseconds every few seconds under a stream of distinct names (the ndots:5 search path).
pub(super) fn max_entries() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        (BUDGET / threads).max(MIN_ENTRIES)
    })
}
/// Entries per generation over all threads (a reply is ~100-300 bytes).
const BUDGET: usize = 65536;
const MIN_ENTRIES: usize = 2048;
/// Plugin instances remembered per thread (older generations after reloads fall out).
const MAX_TABLES: usize = 4;
/// Entries of retired generations freed per insertion: a generation is refilled by
/// `max_entries()` insertions, by which time the one retired before it is long gone.
const FREE_PER_PUT: usize = 4;
/// Retired generations waiting to be freed at most (after many snapshot changes in a row the
/// oldest is freed at once; each then holds only what was inserted since the change before).
const MAX_RETIRED: usize = 8;
/// Longest key: a name (255) plus type, class and flags.
const MAX_KEY: usize = 255 + 5;

/// Hands out instance ids, so a reloaded plugin never reads its predecessor's replies.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(super) fn new_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A remembered reply and its key in one allocation (one malloc and one free per reply, not
/// two): the key's bytes, then the reply's bytes (no OPT), and the message's uncompressed
/// length (for `log`). Hashed and compared by the key alone, so a table finds it by key bytes.
struct Entry {
    buf: Box<[u8]>,
    key_len: u16,
    uncompressed: u32,
}

impl Entry {
    fn new(key: &Key, reply: &[u8], uncompressed: usize) -> Entry {
        let k = key.bytes();
        let mut v = Vec::with_capacity(k.len() + reply.len());
        v.extend_from_slice(k);
        v.extend_from_slice(reply);
        Entry {
            buf: v.into_boxed_slice(),
            key_len: k.len() as u16,
            uncompressed: u32::try_from(uncompressed).unwrap_or(u32::MAX),
        }
    }

    fn key(&self) -> &[u8] {
        &self.buf[..usize::from(self.key_len)]
    }

    /// The reply in a new buffer with room for the OPT record the server appends, and its
    /// uncompressed length.
    fn copy(&self) -> (Vec<u8>, usize) {
        let bytes = &self.buf[usize::from(self.key_len)..];
        let mut v = Vec::with_capacity(bytes.len() + 11);
        v.extend_from_slice(bytes);
        (v, self.uncompressed as usize)
    }
}

impl std::borrow::Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, so a lookup by key bytes finds it.
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

/// What a table's replies were built from. Weak pointers: the memo never keeps an old snapshot's
/// contents alive, and the allocation it pins cannot be reused by a newer snapshot (no ABA).
struct Source {
    snap: Weak<Snapshot>,
    local: Weak<Vec<IpAddr>>,
    synced: bool,
}

impl Source {
    fn new(snap: &Arc<Snapshot>, local: &Arc<Vec<IpAddr>>, synced: bool) -> Source {
        Source {
            snap: Arc::downgrade(snap),
            local: Arc::downgrade(local),
            synced,
        }
    }

    fn is(&self, snap: &Arc<Snapshot>, local: &Arc<Vec<IpAddr>>, synced: bool) -> bool {
        self.synced == synced
            && std::ptr::eq(self.snap.as_ptr(), Arc::as_ptr(snap))
            && std::ptr::eq(self.local.as_ptr(), Arc::as_ptr(local))
    }
}

type Map = HashSet<Entry, foldhash::fast::RandomState>;

struct Table {
    id: u64,
    source: Source,
    map: Map,
    previous: Map,
    /// Generations that went out, being freed a few entries per insertion.
    retired: Vec<std::collections::hash_set::IntoIter<Entry>>,
}

thread_local! {
    static TABLES: RefCell<Vec<Table>> = const { RefCell::new(Vec::new()) };
}

/// The memo key of a question: name bytes as sent, type, class, RD and CD. None for names
/// longer than a valid name (never memoised).
pub(super) struct Key {
    buf: [u8; MAX_KEY],
    len: usize,
}

impl Key {
    pub(super) fn new(qname: &[u8], qtype: u16, qclass: u16, rd: bool, cd: bool) -> Option<Key> {
        let n = qname.len();
        if n + 5 > MAX_KEY {
            return None;
        }
        let mut buf = [0u8; MAX_KEY];
        buf[..n].copy_from_slice(qname);
        buf[n..n + 2].copy_from_slice(&qtype.to_be_bytes());
        buf[n + 2..n + 4].copy_from_slice(&qclass.to_be_bytes());
        buf[n + 4] = u8::from(rd) | (u8::from(cd) << 1);
        Some(Key { buf, len: n + 5 })
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Calls `f` with this thread's table for plugin `id` built from `snap`/`local`/`synced`
/// (emptied first if it was built from anything else).
fn with_table<R>(
    id: u64,
    snap: &Arc<Snapshot>,
    local: &Arc<Vec<IpAddr>>,
    synced: bool,
    f: impl FnOnce(&mut Table) -> R,
) -> R {
    TABLES.with(|t| {
        let mut tables = t.borrow_mut();
        let pos = match tables.iter().position(|t| t.id == id) {
            Some(p) => p,
            None => {
                if tables.len() >= MAX_TABLES {
                    tables.remove(0);
                }
                tables.push(Table {
                    id,
                    source: Source::new(snap, local, synced),
                    map: Map::default(),
                    previous: Map::default(),
                    retired: Vec::new(),
                });
                tables.len() - 1
            }
        };
        let table = &mut tables[pos];
        if !table.source.is(snap, local, synced) {
            let (map, previous) = (
                std::mem::take(&mut table.map),
                std::mem::take(&mut table.previous),
            );
            table.retire(map);
            table.retire(previous);
            table.source = Source::new(snap, local, synced);
        }
        f(table)
    })
}

/// The remembered reply for `key`, copied out: (bytes, uncompressed length).
pub(super) fn get(
    id: u64,
    snap: &Arc<Snapshot>,
    local: &Arc<Vec<IpAddr>>,
    synced: bool,
    key: &Key,
) -> Option<(Vec<u8>, usize)> {
    with_table(id, snap, local, synced, |t| {
        if let Some(e) = t.map.get(key.bytes()) {
            return Some(e.copy());
        }
        let e = t.previous.take(key.bytes())?;
        let out = e.copy();
        t.insert(e);
        Some(out)
    })
}

/// Remembers a reply (its bytes and uncompressed length) built from `snap`/`local`/`synced`.
pub(super) fn put(
    id: u64,
    snap: &Arc<Snapshot>,
    local: &Arc<Vec<IpAddr>>,
    synced: bool,
    key: &Key,
    reply: &[u8],
    uncompressed: usize,
) {
    with_table(id, snap, local, synced, |t| {
        t.insert(Entry::new(key, reply, uncompressed))
    })
}

impl Table {
    fn insert(&mut self, e: Entry) {
        self.free_some();
        if self.map.len() >= max_entries() {
            // Full: sized as it ended up, so the new generation never rehashes while it fills.
            let fresh = Map::with_capacity_and_hasher(self.map.capacity(), Default::default());
            let old =
                std::mem::replace(&mut self.previous, std::mem::replace(&mut self.map, fresh));
            self.retire(old);
        }
        self.map.replace(e);
    }

    /// Hands a generation over to be freed bit by bit (an empty one goes at once).
    fn retire(&mut self, map: Map) {
        if map.is_empty() {
            return;
        }
        if self.retired.len() >= MAX_RETIRED {
            self.retired.remove(0);
        }
        self.retired.push(map.into_iter());
    }

    /// Frees up to [`FREE_PER_PUT`] entries of the retired generations.
    fn free_some(&mut self) {
        let mut budget = FREE_PER_PUT;
        while budget > 0 {
            let Some(oldest) = self.retired.first_mut() else {
                return;
            };
            match oldest.next() {
                Some(_) => budget -= 1,
                // Empty: only its table is left, one allocation.
                None => {
                    self.retired.remove(0);
                }
            }
        }
    }
}

/// Entries this thread holds for plugin `id` (tests).
#[cfg(test)]
pub(super) fn len(id: u64) -> usize {
    TABLES.with(|t| {
        t.borrow()
            .iter()
            .find(|t| t.id == id)
            .map_or(0, |t| t.map.len() + t.previous.len())
    })
}

/// Entries of retired generations this thread has not freed yet for plugin `id` (tests).
#[cfg(test)]
pub(super) fn retired_len(id: u64) -> usize {
    TABLES.with(|t| {
        t.borrow()
            .iter()
            .find(|t| t.id == id)
            .map_or(0, |t| t.retired.iter().map(|r| r.len()).sum::<usize>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_kept_per_question_spelling_and_flags() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let k = Key::new(b"\x01a\x00", 1, 1, true, false).unwrap();
        assert!(get(id, &snap, &local, true, &k).is_none());
        put(id, &snap, &local, true, &k, b"abc", 3);
        assert_eq!(get(id, &snap, &local, true, &k).unwrap().0, b"abc");
        for other in [
            Key::new(b"\x01A\x00", 1, 1, true, false).unwrap(),
            Key::new(b"\x01a\x00", 28, 1, true, false).unwrap(),
            Key::new(b"\x01a\x00", 1, 3, true, false).unwrap(),
            Key::new(b"\x01a\x00", 1, 1, false, false).unwrap(),
            Key::new(b"\x01a\x00", 1, 1, true, true).unwrap(),
        ] {
            assert!(get(id, &snap, &local, true, &other).is_none());
        }
        // Another instance never sees it.
        assert!(get(new_id(), &snap, &local, true, &k).is_none());
    }

    #[test]
    fn a_new_snapshot_addresses_or_sync_state_empties_the_table() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let k = Key::new(b"\x01a\x00", 1, 1, false, false).unwrap();
        put(id, &snap, &local, true, &k, b"x", 1);
        assert!(get(id, &snap, &local, false, &k).is_none());
        put(id, &snap, &local, true, &k, b"x", 1);
        let local2 = Arc::new(vec![IpAddr::from([10, 0, 0, 1])]);
        assert!(get(id, &snap, &local2, true, &k).is_none());
        put(id, &snap, &local, true, &k, b"x", 1);
        let snap2 = Arc::new(Snapshot::default());
        assert!(get(id, &snap2, &local, true, &k).is_none());
        assert_eq!(len(id), 0);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_what_is_asked() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let key = |i: usize| {
            let name = format!("\x06{i:06}\x00");
            Key::new(name.as_bytes(), 1, 1, false, false).unwrap()
        };
        let hot = Key::new(b"\x03hot\x00", 1, 1, false, false).unwrap();
        put(id, &snap, &local, true, &hot, b"hot", 3);
        for i in 0..(3 * max_entries()) {
            put(id, &snap, &local, true, &key(i), b"x", 1);
            assert!(len(id) <= 2 * max_entries());
            if i % 1000 == 0 {
                assert!(
                    get(id, &snap, &local, true, &hot).is_some(),
                    "hot name lost at {i}"
                );
            }
        }
        // The oldest cold names are gone, the newest are there.
        assert!(get(id, &snap, &local, true, &key(0)).is_none());
        assert!(get(id, &snap, &local, true, &key(3 * max_entries() - 1)).is_some());
        let long = vec![1u8; 300];
        assert!(Key::new(&long, 1, 1, false, false).is_none());
    }

    /// A generation that goes out is freed a few entries per later insertion, never all at
    /// once, and is gone well before the next one goes out; so is what a new snapshot empties.
    #[test]
    fn retired_generations_are_freed_a_few_entries_at_a_time() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let key = |i: usize| {
            let name = format!("\x06{i:06}\x00");
            Key::new(name.as_bytes(), 1, 1, false, false).unwrap()
        };
        let max = max_entries();
        // Two full generations: the next insertion retires the first.
        for i in 0..2 * max {
            put(id, &snap, &local, true, &key(i), b"x", 1);
        }
        assert_eq!(retired_len(id), 0);
        put(id, &snap, &local, true, &key(2 * max), b"x", 1);
        assert_eq!(retired_len(id), max, "retired whole, freed later");
        for n in 1..=10 {
            put(id, &snap, &local, true, &key(2 * max + n), b"x", 1);
            assert_eq!(retired_len(id), max - n * FREE_PER_PUT);
        }
        for i in 2 * max + 11..3 * max {
            put(id, &snap, &local, true, &key(i), b"x", 1);
        }
        assert_eq!(retired_len(id), 0, "freed before the next generation fills");
        // A new snapshot: both generations retired, answered from neither, freed as it goes.
        let held = len(id);
        let snap2 = Arc::new(Snapshot::default());
        assert!(get(id, &snap2, &local, true, &key(3 * max - 1)).is_none());
        assert_eq!((len(id), retired_len(id)), (0, held));
        put(id, &snap2, &local, true, &key(0), b"y", 1);
        assert_eq!(retired_len(id), held - FREE_PER_PUT);
        assert_eq!(get(id, &snap2, &local, true, &key(0)).unwrap().0, b"y");
    }
}
