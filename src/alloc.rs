//! The process's memory allocator: jemalloc with one arena, its figures for `pprof`'s heap
//! page, and handing freed memory back to the system after a large load.
//!
//! Why jemalloc and not glibc's malloc (bench/findings.md, "Overload"): under overload the same
//! binary's goodput varied ±12–15% from run to run with glibc, all of it in user CPU per query
//! (fragmented arenas); with jemalloc the spread is ±3% and goodput 14% higher, and first answers
//! cost 5–11% fewer instructions. One arena: the threads that allocate on the query path are
//! few (one per UDP socket, the runtime's workers), each has its own cache in front of the
//! arena, and more arenas only keep more memory at rest.
//!
//! Fuzz builds (`--cfg fuzzing`) keep the system allocator, which AddressSanitizer watches.

/// Every allocation of the program goes to jemalloc.
#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read as it starts (jemalloc's `malloc_conf` symbol, prefixed as
/// tikv-jemalloc-sys builds it); `_RJEM_MALLOC_CONF` in the environment still overrides them.
#[cfg(not(fuzzing))]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 10] = b"narenas:1\0";

/// The mallctl that purges every arena (4096 is `MALLCTL_ARENAS_ALL`, every arena at once).
#[cfg(not(fuzzing))]
const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";

/// Called once at start: the kube crate's `release_memory` (after a manifest, a list from the
/// API server, a large zone) purges jemalloc's arenas instead of trimming glibc's.
pub(crate) fn init() {
    #[cfg(not(fuzzing))]
    {
        // Referenced so the linker keeps the options even if nothing else names them.
        let _ = MALLOC_CONF.len();
        sextant_kube::set_memory_release(release);
    }
}

/// Hands every arena's freed (dirty) pages back to the system now, instead of after jemalloc's
/// decay time. Never on the query path: it walks every arena.
#[cfg(not(fuzzing))]
fn release() {
    // SAFETY: a mallctl that takes and returns no value: every pointer is null and the length
    // zero; the name is a NUL-terminated constant.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// The allocator's totals in bytes, by jemalloc's names (`stats.*`, refreshed now); None where
/// the allocator gives none.
pub(crate) fn figures() -> Option<Vec<(&'static str, u64)>> {
    #[cfg(not(fuzzing))]
    {
        // The statistics are a snapshot taken when the epoch advances.
        let mut epoch: u64 = 1;
        // SAFETY: "epoch" takes a u64 in; the pointer is to a local of that size, alive for the
        // call, and nothing is read back (null old-value pointers).
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"epoch".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                (&mut epoch as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if rc != 0 {
            return None;
        }
        let names: [(&'static str, &std::ffi::CStr); 6] = [
            ("allocated", c"stats.allocated"),
            ("active", c"stats.active"),
            ("metadata", c"stats.metadata"),
            ("resident", c"stats.resident"),
            ("mapped", c"stats.mapped"),
            ("retained", c"stats.retained"),
        ];
        let mut out = Vec::with_capacity(names.len());
        for (label, name) in names {
            let mut v: usize = 0;
            let mut len = std::mem::size_of::<usize>();
            // SAFETY: these statistics are size_t values; `v` and `len` are locals alive for
            // the call, `len` says how much room `v` has, and nothing is written in.
            let rc = unsafe {
                tikv_jemalloc_sys::mallctl(
                    name.as_ptr(),
                    (&mut v as *mut usize).cast(),
                    &mut len,
                    std::ptr::null_mut(),
                    0,
                )
            };
            if rc != 0 {
                return None;
            }
            out.push((label, v as u64));
        }
        Some(out)
    }
    #[cfg(fuzzing)]
    None
}

#[cfg(all(test, not(fuzzing)))]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_what_is_allocated_and_a_purge_keeps_them_sound() {
        init();
        let before = figures().expect("jemalloc's statistics");
        let get = |f: &[(&str, u64)], k: &str| f.iter().find(|(n, _)| *n == k).map(|x| x.1);
        let allocated = get(&before, "allocated").unwrap();
        // 64 MiB held and touched: the allocated total grows by about that (other tests run
        // beside this one and free memory meanwhile).
        let big = vec![7u8; 64 << 20];
        let during = figures().unwrap();
        assert!(
            get(&during, "allocated").unwrap() >= allocated + (60 << 20),
            "{before:?} {during:?}"
        );
        assert!(get(&during, "resident").unwrap() >= 64 << 20, "{during:?}");
        drop(big);
        release();
        let after = figures().unwrap();
        assert!(
            get(&after, "allocated").unwrap() < get(&during, "allocated").unwrap(),
            "{during:?} {after:?}"
        );
        for (name, v) in &after {
            assert!(*v > 0, "{name}: {after:?}");
        }
    }
}
