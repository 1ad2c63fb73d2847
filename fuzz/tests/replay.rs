//! Replays the checked-in seed corpus (`fuzz/corpus/<target>/`) and every past crash
//! (`fuzz/regressions/<target>/`) through the fuzz target functions, so CI exercises them on
//! stable Rust without libFuzzer.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn replay_corpus_and_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for (name, target) in sextant_fuzz::TARGETS {
        let mut n = 0;
        for sub in ["corpus", "regressions"] {
            for f in files(&root.join(sub).join(name)) {
                let data = std::fs::read(&f).unwrap();
                let r = std::panic::catch_unwind(|| target(&data));
                assert!(r.is_ok(), "{name}: {} fails", f.display());
                n += 1;
            }
        }
        eprintln!("{name}: {n} inputs replayed");
        assert!(n > 0, "{name}: empty corpus");
        total += n;
    }
    eprintln!("{total} inputs in all");
}
