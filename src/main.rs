//! The `sextant` binary: CoreDNS-compatible command line, and the process's global allocator.

/// mimalloc instead of glibc's malloc: fewer instructions per allocation, and a block freed on
/// another thread than the one that allocated it (replies built on a tokio worker and freed on
/// the UDP thread, and the other way round) costs no more than a local free.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sextant::run(args));
}
