//! Giving the heap's free memory back to the system after a large structure was built or
//! replaced: glibc keeps the freed chunks of a build's peak (parser buffers, the builder's map)
//! in its arenas, so without this the resident memory stays near the peak for good.

/// Returns free heap pages to the system (glibc `malloc_trim`). Walks every arena: call it
/// after loading or replacing something large, never on the query path.
pub(crate) fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganises the allocator's own free lists; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}
