//! What the memory examples share: a global allocator that counts live heap bytes (requested,
//! and as malloc chunks) and their peak, and `/proc/self/status` fields. Each example installs
//! it with `#[global_allocator]`.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live heap bytes (requested, and as malloc chunks) so the index's own footprint can be
/// told apart from allocator slack.
pub(crate) struct Counting;
pub(crate) static LIVE: AtomicUsize = AtomicUsize::new(0);
pub(crate) static CHUNKS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static PEAK: AtomicUsize = AtomicUsize::new(0);

fn chunk(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: `p` was returned by the system allocator and is not freed yet.
    unsafe { libc::malloc_usable_size(p.cast()) + 8 }
}

// SAFETY: defers every call to the system allocator unchanged; only adds counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(l) };
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(p), Ordering::Relaxed);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(p), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

/// A `/proc/self/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 if absent.
pub(crate) fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
