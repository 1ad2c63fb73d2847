//! Memory check of the manifests path (not a test): loads manifest files into a static index the
//! way the `kubernetes` plugin's `setup` does, then prints the live heap (bytes the program
//! asked for, and the allocator chunks they take), VmRSS and VmHWM, per indexed object.
//! Run: `cargo run --release -p sextant-kube --example manifests_mem -- FILE...`
//! (`bench/run.sh --scenarios large --keep` leaves a 10k/100k/30k `large.json` in its work dir).
//! With `MEM_SNAPSHOT=FILE` it then writes the index as a snapshot file and loads it back,
//! printing the peak of each step.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sextant_kube::Index;

mod memcount;
use memcount::{status_kib, Counting, CHUNKS, LIVE, PEAK};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: manifests_mem FILE...");
        std::process::exit(2);
    }
    let rss0 = status_kib("VmRSS:");
    let (live0, chunks0) = (LIVE.load(Ordering::Relaxed), CHUNKS.load(Ordering::Relaxed));
    let t0 = Instant::now();
    let idx = Index::new_static();
    if let Err(e) = idx.load_manifest_files(&paths) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let took = t0.elapsed();
    let c = idx.snapshot().counts();
    let objects = (c.services + c.endpoints + c.pods).max(1);
    let live = LIVE.load(Ordering::Relaxed) - live0;
    let chunks = CHUNKS.load(Ordering::Relaxed) - chunks0;
    let rss = status_kib("VmRSS:");
    let per = |b: usize| b as f64 / objects as f64;
    println!(
        "counts: {c:?}; {objects} objects; loaded in {:.2} s",
        took.as_secs_f64()
    );
    println!(
        "live heap: {:.1} MiB requested ({:.0} B/object), {:.1} MiB in malloc chunks ({:.0} B/object)",
        live as f64 / 1048576.0,
        per(live),
        chunks as f64 / 1048576.0,
        per(chunks)
    );
    println!(
        "peak live heap: {:.1} MiB; VmRSS {:.1} MiB (+{:.1} MiB = {:.0} B/object); VmHWM {:.1} MiB",
        PEAK.load(Ordering::Relaxed) as f64 / 1048576.0,
        rss as f64 / 1024.0,
        rss.saturating_sub(rss0) as f64 / 1024.0,
        per(rss.saturating_sub(rss0) as usize * 1024),
        status_kib("VmHWM:") as f64 / 1024.0
    );
    if let Some(snap) = std::env::var_os("MEM_SNAPSHOT").map(PathBuf::from) {
        // Write the index as a snapshot file and load it into a second index, measuring the
        // peak of each step (VmHWM reset through /proc/self/clear_refs).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let t = Instant::now();
        if let Err(e) = idx.write_snapshot(&snap) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        println!(
            "write_snapshot: {:.2} s, peak live heap {:.1} MiB, VmHWM {:.1} MiB",
            t.elapsed().as_secs_f64(),
            PEAK.load(Ordering::Relaxed) as f64 / 1048576.0,
            status_kib("VmHWM:") as f64 / 1024.0
        );
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let t = Instant::now();
        let back = Index::new_static();
        if let Err(e) = back.load_snapshot(&snap) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        println!(
            "load_snapshot: {:.2} s, {:?}, peak live heap {:.1} MiB, VmHWM {:.1} MiB",
            t.elapsed().as_secs_f64(),
            back.snapshot().counts(),
            PEAK.load(Ordering::Relaxed) as f64 / 1048576.0,
            status_kib("VmHWM:") as f64 / 1024.0
        );
    }
    drop(idx);
}
