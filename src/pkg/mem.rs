//! Giving the heap's free memory back to the system after a large structure was built or
//! replaced: glibc keeps the freed chunks of a build's peak (parser buffers, the builder's map)
//! in its arenas, so without this the resident memory stays near the peak for good. Also the
//! allocator's totals, for `/debug/pprof/heap?debug=1`.

/// Returns free heap pages to the system (glibc `malloc_trim`). Walks every arena: call it
/// after loading or replacing something large, never on the query path.
pub(crate) fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganises the allocator's own free lists; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The allocator's totals as text (the `pprof` plugin's heap page): glibc's `mallinfo2` over
/// every arena, and the resident set size; None where the allocator gives none.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn figures() -> Option<String> {
    // SAFETY: mallinfo2 takes no arguments, only reads glibc's own arena counters under their
    // locks and returns a plain struct by value; it is safe from any thread at any time.
    let m = unsafe { libc::mallinfo2() };
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "-".to_string());
    Some(format!(
        "# heap figures of the system allocator (glibc mallinfo2)\n\
         # in_use_bytes: allocated and not freed (uordblks + hblkhd)\n\
         in_use_bytes {}\n\
         heap_in_use_bytes {}\n\
         mmap_in_use_bytes {}\n\
         mmap_chunks {}\n\
         heap_total_bytes {}\n\
         free_bytes {}\n\
         free_chunks {}\n\
         fastbin_free_bytes {}\n\
         top_releasable_bytes {}\n\
         # resident set size of the process\n\
         vm_rss {}\n",
        m.uordblks + m.hblkhd,
        m.uordblks,
        m.hblkhd,
        m.hblks,
        m.arena,
        m.fordblks,
        m.ordblks,
        m.fsmblks,
        m.keepcost,
        rss
    ))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn figures() -> Option<String> {
    None
}
