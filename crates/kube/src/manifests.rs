//! The `manifests` source: reads Kubernetes YAML (multi-document) / JSON files or folders into
//! JSON objects, and re-applies them to an index when their modification times change.
//! File I/O only; errors name the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::index::Index;
use crate::model::Source;
use crate::Error;

fn file_err(path: &Path, reason: impl ToString) -> Error {
    Error::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let md = std::fs::metadata(p).map_err(|e| file_err(p, e))?;
        if md.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| file_err(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    matches!(
                        f.extension().and_then(|x| x.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn unwrap_lists(v: Value, out: &mut Vec<Value>) {
    if v.is_null() {
        return;
    }
    let is_list = v
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    if is_list {
        if let Some(Value::Array(items)) = v.get("items").cloned() {
            for i in items {
                unwrap_lists(i, out);
            }
        }
    } else {
        out.push(v);
    }
}

fn parse_file(path: &Path, out: &mut Vec<Value>) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let is_json = path.extension().and_then(|x| x.to_str()) == Some("json");
    if is_json {
        let v: Value = serde_json::from_str(&text).map_err(|e| file_err(path, e))?;
        unwrap_lists(v, out);
        return Ok(());
    }
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).map_err(|e| file_err(path, e))?;
        unwrap_lists(v, out);
    }
    Ok(())
}

/// Reads Kubernetes objects from YAML (multi-document) or JSON files, or from every
/// `.yaml`/`.yml`/`.json` file in the given folders (sorted). `List` kinds are unwrapped.
pub fn load_manifests(paths: &[PathBuf]) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for f in expand(paths)? {
        parse_file(&f, &mut out)?;
    }
    Ok(out)
}

fn mtimes(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>)> {
    let files = expand(paths).unwrap_or_else(|_| paths.to_vec());
    files
        .into_iter()
        .map(|f| {
            let t = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
            (f, t)
        })
        .collect()
}

/// One manifest file, syntax-checked and ready to fold.
pub(crate) enum Parsed {
    /// JSON text (validated); its objects are decoded straight from it.
    Json(Box<RawValue>),
    /// YAML documents.
    Yaml(Vec<Value>),
}

pub(crate) fn read_file(path: &Path) -> Result<Parsed, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    if path.extension().and_then(|x| x.to_str()) == Some("json") {
        // Checks the syntax of the whole file before anything is applied; the text is kept as
        // is (one allocation) and each object is decoded from it later.
        let raw: Box<RawValue> = serde_json::from_str(&text).map_err(|e| file_err(path, e))?;
        return Ok(Parsed::Json(raw));
    }
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        docs.push(Value::deserialize(doc).map_err(|e| file_err(path, e))?);
    }
    Ok(Parsed::Yaml(docs))
}

impl Parsed {
    /// Hands each object of an indexed kind to `fold` (see [`crate::decode::walk_json`]).
    pub(crate) fn walk<'a>(
        &'a self,
        fold: &mut dyn FnMut(crate::decode::Obj<'a>),
        bad: &mut dyn FnMut(String, String),
    ) {
        match self {
            Parsed::Json(raw) => {
                if let Err(e) = crate::decode::walk_json(raw, fold, bad) {
                    bad("?".to_string(), e.to_string());
                }
            }
            Parsed::Yaml(docs) => {
                for d in docs {
                    crate::decode::walk_value(d, fold, bad);
                }
            }
        }
    }
}

impl Index {
    /// Replaces the content with the objects of these manifest files (or folders, as
    /// [`load_manifests`] reads them) and hands the memory the parse used back to the system.
    /// Every file is read and syntax-checked first (a broken file changes nothing); JSON
    /// objects are then decoded one at a time straight into the index, without a
    /// `serde_json::Value` tree of the file. Returns the first object that failed to decode,
    /// after applying all the others.
    pub fn load_manifest_files(&self, paths: &[PathBuf]) -> Result<(), Error> {
        let files = expand(paths)?
            .iter()
            .map(|f| read_file(f))
            .collect::<Result<Vec<_>, _>>()?;
        let r = self.replace_all(|fold, bad| {
            for f in &files {
                f.walk(fold, bad);
            }
        });
        drop(files);
        release_memory();
        r
    }

    /// Loads the manifests now (replacing the content) and re-reads them whenever a file's
    /// modification time changes (polled every second) until [`Index::stop`]. A broken file is
    /// logged and the previous data kept.
    pub fn watch_manifests(&self, paths: Vec<PathBuf>) -> Result<(), Error> {
        self.load_manifest_files(&paths)?;
        self.follow_manifests(paths);
        Ok(())
    }

    /// Like [`Index::watch_manifests`] for an index that already holds the files' objects (loaded
    /// with [`load_manifests`] and [`Index::apply_objects`]): only re-reads them when they change,
    /// so start-up parses each file once.
    pub fn follow_manifests(&self, paths: Vec<PathBuf>) {
        self.set_source(Source::Manifests);
        let idx = self.clone();
        let mut seen = mtimes(&paths);
        tokio::spawn(async move {
            let mut stop = idx.shared.stop_tx.subscribe();
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let now = mtimes(&paths);
                if now == seen {
                    continue;
                }
                seen = now;
                match idx.load_manifest_files(&paths) {
                    Ok(()) => tracing::info!("plugin/kubernetes: manifests reloaded"),
                    Err(e) => tracing::error!("plugin/kubernetes: manifests: {e}"),
                }
            }
        });
    }
}

/// Fixes glibc's trim threshold (256 KiB), for a server that lists the API: freed memory at
/// the top of a heap is then handed back as soon as it is freed. By default glibc raises the
/// threshold each time a large block is freed (up to 64 MiB), and `malloc_trim` does not reach
/// the top of a thread's arena, so what a re-list of a large cluster used on a watcher thread
/// stayed resident afterwards (api scenario of `bench/bench.py`: 57 -> 64 MiB after a re-list
/// of 100k pods; with the fixed threshold the RSS after it is at or below the steady one).
/// Fixing it also fixes the mmap threshold at its default (128 KiB).
pub(crate) fn trim_freed_memory_eagerly() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets one of glibc's tuning parameters; it takes no pointers and is
    // safe to call at any time from any thread.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}

/// How the program's allocator hands freed memory back, when it is not glibc's (see
/// [`set_memory_release`]).
static RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Tells [`release_memory`] how to hand freed memory back when the program's global allocator is
/// not glibc's malloc (Sextant's is jemalloc); the first call wins.
pub fn set_memory_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Hands the memory freed after loading something large back to the system (allocators keep
/// freed pages unless asked): a manifest, a list from the API server, and (from the server) a
/// large zone. Walks every arena: never on the query path. The allocator's own way if one was
/// set ([`set_memory_release`]), else glibc's `malloc_trim`.
pub fn release_memory() {
    if let Some(release) = RELEASE.get() {
        release();
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas and returns free pages to the kernel; it
    // takes no pointers from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
