//! Per-thread memo of the `kubernetes` plugin's encoded replies: a reply that depends only on
//! the question (exact spelling, type, class, the RD/CD bits copied into it) and on one index
//! snapshot is built once, kept as wire bytes and sent again as bytes until the snapshot, the
//! server's own addresses or the synced state change. No lock: each worker thread has its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use sextant_kube::Snapshot;

use crate::pkg::shardcache::KeyHasher;

/// Bytes of entries per generation, plugin instance and thread: [`BUDGET`] shared out over the
/// worker threads (one per core), at least [`MIN_BYTES`] and at most [`MAX_BYTES`]. When the
/// current generation is full it becomes the previous one and the one before is emptied for
/// reuse; a hit in the previous generation copies the reply into the current one. So the names a cluster keeps asking stay,
/// and a flood of distinct names (the ndots:5 search path's NXDOMAINs) holds at most two
/// generations' bytes per thread. A generation is one buffer of entries back to back and one
/// index of hashes to offsets: storing a reply allocates nothing once the buffers have grown,
/// and going to the next generation frees nothing (the old one is cleared and refilled), so
/// there is no per-entry free to stall a thread, and no per-entry allocator overhead.
pub(super) fn gen_bytes() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        (BUDGET / threads).clamp(MIN_BYTES, MAX_BYTES)
    })
}
/// Bytes per generation over all threads. An entry is its key (the name as asked, ~30-80
/// bytes), its reply (~100-300 bytes) and 8 bytes of lengths, plus ~20 bytes of index: 4 MiB
/// holds ~15,000 replies, and two generations keep the ~10,000 distinct names of the kubeadm
/// instruction benchmark (bench/cg_corefile.py) on each of two threads.
const BUDGET: usize = 4 << 20;
const MIN_BYTES: usize = 1 << 20;
/// What one thread's generation needs for those ~10,000 names. On one core the whole budget
/// went to one thread, and a flood of distinct names (the search path's NXDOMAINs, each asked
/// once) kept 2 x 4 MiB resident where 2 x 2 MiB hold the same working set (issue 17: the
/// search-path scenario's RSS against Unbound's).
const MAX_BYTES: usize = 2 << 20;
/// Plugin instances remembered per thread (older generations after reloads fall out).
const MAX_TABLES: usize = 4;
/// Longest name in a key.
const MAX_NAME: usize = 255;
/// A key's bytes after the name: type, class and flags.
const TAIL: usize = 5;
/// Bytes before an entry's key: key length (u16), reply length (u16), uncompressed length (u32).
const HEAD: usize = 8;

/// Hands out instance ids, so a reloaded plugin never reads its predecessor's replies.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(super) fn new_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

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

/// One generation: entries back to back in `arena` (`HEAD` bytes of lengths, the key, the
/// reply), found by the key's hash. Two keys with the same 64-bit hash share a slot: the later
/// one wins, and a lookup compares the stored key, so a collision is only a miss.
#[derive(Default)]
struct Gen {
    arena: Vec<u8>,
    index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
}

impl Gen {
    /// The stored entry for `key` (hash `h`): (reply bytes, uncompressed length).
    fn find(&self, h: u64, key: &Key<'_>) -> Option<(&[u8], usize)> {
        let at = *self.index.get(&h)? as usize;
        let (head, e) = self.arena.get(at..)?.split_first_chunk::<HEAD>()?;
        let klen = u16::from_le_bytes([head[0], head[1]]) as usize;
        let rlen = u16::from_le_bytes([head[2], head[3]]) as usize;
        let ulen = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if klen != key.len() {
            return None;
        }
        let (name, rest) = e.split_at_checked(key.name.len())?;
        let (tail, rest) = rest.split_first_chunk::<TAIL>()?;
        if tail != &key.tail || name != key.name {
            return None;
        }
        Some((rest.get(..rlen)?, ulen))
    }

    /// Bytes an entry takes in the arena.
    fn need(key: &Key<'_>, reply: &[u8]) -> usize {
        HEAD + key.len() + reply.len()
    }

    fn push(&mut self, h: u64, key: &Key<'_>, reply: &[u8], ulen: usize) {
        let at = self.arena.len() as u32;
        let mut head = [0u8; HEAD];
        head[..2].copy_from_slice(&(key.len() as u16).to_le_bytes());
        head[2..4].copy_from_slice(&(reply.len() as u16).to_le_bytes());
        head[4..].copy_from_slice(&(ulen.min(u32::MAX as usize) as u32).to_le_bytes());
        self.arena.extend_from_slice(&head);
        self.arena.extend_from_slice(key.name);
        self.arena.extend_from_slice(&key.tail);
        self.arena.extend_from_slice(reply);
        self.index.insert(h, at);
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.index.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }
}

struct Table {
    id: u64,
    source: Source,
    hasher: foldhash::fast::RandomState,
    current: Gen,
    previous: Gen,
}

thread_local! {
    static TABLES: RefCell<Vec<Table>> = const { RefCell::new(Vec::new()) };
}

/// The memo key of a question: name bytes as sent, type, class, RD and CD. None for names
/// longer than a valid name (never memoised). It borrows the name: making one copies nothing.
pub(super) struct Key<'a> {
    name: &'a [u8],
    tail: [u8; TAIL],
}

impl<'a> Key<'a> {
    pub(super) fn new(
        qname: &'a [u8],
        qtype: u16,
        qclass: u16,
        rd: bool,
        cd: bool,
    ) -> Option<Key<'a>> {
        if qname.len() > MAX_NAME {
            return None;
        }
        let [t0, t1] = qtype.to_be_bytes();
        let [c0, c1] = qclass.to_be_bytes();
        Some(Key {
            name: qname,
            tail: [t0, t1, c0, c1, u8::from(rd) | (u8::from(cd) << 1)],
        })
    }

    fn len(&self) -> usize {
        self.name.len() + TAIL
    }

    /// The key's hash under `hasher`: the name's bytes, then the tail's.
    fn hash(&self, hasher: &foldhash::fast::RandomState) -> u64 {
        let mut h = hasher.build_hasher();
        h.write(self.name);
        h.write(&self.tail);
        h.finish()
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
                    hasher: foldhash::fast::RandomState::default(),
                    current: Gen::default(),
                    previous: Gen::default(),
                });
                tables.len() - 1
            }
        };
        let table = &mut tables[pos];
        if !table.source.is(snap, local, synced) {
            table.current.clear();
            table.previous.clear();
            table.source = Source::new(snap, local, synced);
        }
        f(table)
    })
}

/// The remembered reply for `key`, copied out into a buffer with room for the OPT record the
/// server appends: (bytes, uncompressed length).
#[cfg(test)]
fn get(
    id: u64,
    snap: &Arc<Snapshot>,
    local: &Arc<Vec<IpAddr>>,
    synced: bool,
    key: &Key<'_>,
) -> Option<(Vec<u8>, usize)> {
    get_or_fill(id, snap, local, synced, key, || None)
}

/// The remembered reply for `key` as [`get`] gives it; when there is none, `fill`'s reply (if
/// it gives one) is remembered and returned: one look in the table for both, and one hash of
/// the key. `fill` runs while this thread's tables are borrowed: it must not use the memo.
pub(super) fn get_or_fill(
    id: u64,
    snap: &Arc<Snapshot>,
    local: &Arc<Vec<IpAddr>>,
    synced: bool,
    key: &Key<'_>,
    fill: impl FnOnce() -> Option<(Vec<u8>, usize)>,
) -> Option<(Vec<u8>, usize)> {
    with_table(id, snap, local, synced, |t| {
        let h = key.hash(&t.hasher);
        let copy = |(reply, ulen): (&[u8], usize)| {
            let mut v = Vec::with_capacity(reply.len() + 11);
            v.extend_from_slice(reply);
            (v, ulen)
        };
        if let Some(found) = t.current.find(h, key) {
            return Some(copy(found));
        }
        if let Some(found) = t.previous.find(h, key) {
            let (v, ulen) = copy(found);
            // Asked again: into the current generation, so it outlives the previous one.
            t.insert(h, key, &v, ulen);
            return Some((v, ulen));
        }
        let (v, ulen) = fill()?;
        t.insert(h, key, &v, ulen);
        Some((v, ulen))
    })
}

/// Remembers `reply` (ID 0, no OPT; `ulen` its uncompressed length, for `log`), built from
/// `snap`/`local`/`synced`.
pub(super) fn put(
    id: u64,
    snap: &Arc<Snapshot>,
    local: &Arc<Vec<IpAddr>>,
    synced: bool,
    key: &Key<'_>,
    reply: &[u8],
    ulen: usize,
) {
    with_table(id, snap, local, synced, |t| {
        let h = key.hash(&t.hasher);
        t.insert(h, key, reply, ulen)
    })
}

impl Table {
    fn insert(&mut self, h: u64, key: &Key<'_>, reply: &[u8], ulen: usize) {
        let need = Gen::need(key, reply);
        let max = gen_bytes();
        // A reply larger than a quarter generation is built again each time instead.
        if reply.len() > u16::MAX as usize || need > max / 4 {
            return;
        }
        if self.current.arena.len() + need > max {
            // Full: the previous generation goes and its buffers take the next entries.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        if self.current.arena.capacity() == 0 {
            self.current.arena.reserve_exact(max);
        }
        self.current.push(h, key, reply, ulen);
    }
}

/// Entries this thread holds for plugin `id` (tests).
#[cfg(test)]
pub(super) fn len(id: u64) -> usize {
    TABLES.with(|t| {
        t.borrow()
            .iter()
            .find(|t| t.id == id)
            .map_or(0, |t| t.current.len() + t.previous.len())
    })
}

/// Arena bytes this thread holds for plugin `id` (tests).
#[cfg(test)]
pub(super) fn bytes(id: u64) -> usize {
    TABLES.with(|t| {
        t.borrow()
            .iter()
            .find(|t| t.id == id)
            .map_or(0, |t| t.current.arena.len() + t.previous.arena.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_bytes(id: u64, snap: &Arc<Snapshot>, local: &Arc<Vec<IpAddr>>, k: &Key<'_>, b: &[u8]) {
        put(id, snap, local, true, k, b, b.len());
    }

    /// The A/IN key of a name, RD and CD clear.
    fn key(name: &[u8]) -> Key<'_> {
        Key::new(name, 1, 1, false, false).unwrap()
    }

    /// `get_or_fill` answers from the table when it can, else from `fill`, whose reply it
    /// remembers (and nothing when `fill` has none).
    #[test]
    fn a_miss_is_filled_and_remembered() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let (a, b) = (key(b"\x01a\x00"), key(b"\x01b\x00"));
        let calls = std::cell::Cell::new(0);
        let fill = |r: Option<&[u8]>| {
            calls.set(calls.get() + 1);
            r.map(|r| (r.to_vec(), r.len() + 1))
        };
        let got = get_or_fill(id, &snap, &local, true, &a, || fill(Some(b"one")));
        assert_eq!(got, Some((b"one".to_vec(), 4)));
        let got = get_or_fill(id, &snap, &local, true, &a, || fill(Some(b"two")));
        assert_eq!(got, Some((b"one".to_vec(), 4)));
        assert_eq!(calls.get(), 1, "a hit does not call fill");
        assert_eq!(get(id, &snap, &local, true, &a), Some((b"one".to_vec(), 4)));
        assert_eq!(
            get_or_fill(id, &snap, &local, true, &b, || fill(None)),
            None
        );
        assert_eq!(calls.get(), 2);
        assert_eq!(get(id, &snap, &local, true, &b), None);
        assert_eq!(len(id), 1);
    }

    #[test]
    fn a_reply_is_kept_per_question_spelling_and_flags() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let k = Key::new(b"\x01a\x00", 1, 1, true, false).unwrap();
        assert!(get(id, &snap, &local, true, &k).is_none());
        put(id, &snap, &local, true, &k, b"abc", 7);
        assert_eq!(
            get(id, &snap, &local, true, &k).unwrap(),
            (b"abc".to_vec(), 7)
        );
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
        // A new reply for the same question replaces the old one.
        put(id, &snap, &local, true, &k, b"defg", 4);
        assert_eq!(get(id, &snap, &local, true, &k).unwrap().0, b"defg");
    }

    #[test]
    fn a_new_snapshot_addresses_or_sync_state_empties_the_table() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let k = Key::new(b"\x01a\x00", 1, 1, false, false).unwrap();
        put_bytes(id, &snap, &local, &k, b"x");
        assert!(get(id, &snap, &local, false, &k).is_none());
        put_bytes(id, &snap, &local, &k, b"x");
        let local2 = Arc::new(vec![IpAddr::from([10, 0, 0, 1])]);
        assert!(get(id, &snap, &local2, true, &k).is_none());
        put_bytes(id, &snap, &local, &k, b"x");
        let snap2 = Arc::new(Snapshot::default());
        assert!(get(id, &snap2, &local, true, &k).is_none());
        assert_eq!((len(id), bytes(id)), (0, 0));
    }

    /// Bounded in bytes (two generations), keeping a name that is asked while a stream of
    /// distinct names goes through, and dropping the oldest of those.
    #[test]
    fn the_table_is_bounded_in_bytes_and_keeps_what_is_asked() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let name = |i: usize| format!("\x07{i:07}\x00").into_bytes();
        let reply = [7u8; 150];
        let per = Gen::need(&key(&name(0)), &reply);
        let n = 3 * gen_bytes() / per;
        let hot = Key::new(b"\x03hot\x00", 1, 1, false, false).unwrap();
        put_bytes(id, &snap, &local, &hot, b"hot");
        for i in 0..n {
            put_bytes(id, &snap, &local, &key(&name(i)), &reply);
            assert!(bytes(id) <= 2 * gen_bytes());
            if i % 1000 == 0 {
                assert_eq!(
                    get(id, &snap, &local, true, &hot).map(|r| r.0),
                    Some(b"hot".to_vec()),
                    "hot name lost at {i}"
                );
            }
        }
        assert!(len(id) >= gen_bytes() / per, "a full generation is kept");
        // The oldest cold names are gone, the newest are there.
        assert!(get(id, &snap, &local, true, &key(&name(0))).is_none());
        assert_eq!(
            get(id, &snap, &local, true, &key(&name(n - 1))).unwrap().0,
            reply
        );
        let long = vec![1u8; 300];
        assert!(Key::new(&long, 1, 1, false, false).is_none());
        // A reply of more than a quarter generation is not kept.
        let big = Key::new(b"\x03big\x00", 1, 1, false, false).unwrap();
        put_bytes(id, &snap, &local, &big, &vec![0u8; gen_bytes() / 4 + 1]);
        assert!(get(id, &snap, &local, true, &big).is_none());
    }

    /// A generation's buffers are reused by the next one: once two generations have filled,
    /// storing more allocates nothing (the arena's capacity stays what it was).
    #[test]
    fn generations_reuse_their_buffers() {
        let id = new_id();
        let snap = Arc::new(Snapshot::default());
        let local = Arc::new(vec![]);
        let name = |i: usize| format!("\x07{i:07}\x00").into_bytes();
        let reply = [9u8; 200];
        let per = Gen::need(&key(&name(0)), &reply);
        let caps = || {
            TABLES.with(|t| {
                let t = t.borrow();
                let t = t.iter().find(|t| t.id == id).unwrap();
                (t.current.arena.capacity(), t.previous.arena.capacity())
            })
        };
        for i in 0..2 * gen_bytes() / per + 10 {
            put_bytes(id, &snap, &local, &key(&name(i)), &reply);
        }
        let (a, b) = caps();
        assert_eq!((a, b), (gen_bytes(), gen_bytes()));
        for i in 0..3 * gen_bytes() / per {
            put_bytes(id, &snap, &local, &key(&name(1_000_000 + i)), &reply);
            assert_eq!(caps(), (a, b));
        }
    }
}
