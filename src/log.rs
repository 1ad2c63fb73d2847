//! CoreDNS-format log lines on standard output: `[LEVEL] message`, plugin loggers prefixing
//! `plugin/<name>: `, no timestamps (Kubernetes adds them). `[DEBUG]` only with the debug plugin.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns `[DEBUG]` lines on or off (the `debug` plugin).
pub(crate) fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub(crate) fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Query log lines waiting to be written (see [`query`]).
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Flush once this much is pending.
const PENDING_MAX: usize = 32 * 1024;
/// How long a query log line may wait before it is written.
const PENDING_DELAY: Duration = Duration::from_millis(20);
static FLUSHER: Once = Once::new();

fn write_pending(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(pending);
        let _ = out.flush();
        pending.clear();
    }
}

/// Writes out the query log lines still buffered (before exit, and before any other line so
/// the order of lines is kept).
pub(crate) fn flush() {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    write_pending(&mut p);
}

/// Writes one line as is (the line carries its own `[INFO] `), now.
pub(crate) fn raw(line: &str) {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    write_pending(&mut p);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
}

/// Queues one query log line: lines go out in batches, at the latest [`PENDING_DELAY`] later,
/// so the hot path makes no write system call per query.
pub(crate) fn query(line: &[u8]) {
    FLUSHER.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("sextant-log".into())
            .spawn(|| loop {
                std::thread::sleep(PENDING_DELAY);
                flush();
            });
    });
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    p.extend_from_slice(line);
    p.push(b'\n');
    if p.len() >= PENDING_MAX {
        write_pending(&mut p);
    }
}

fn emit(level: &str, msg: &str) {
    raw(&format!("[{level}] {msg}"));
}

pub(crate) fn info(msg: &str) {
    emit("INFO", msg);
}

pub(crate) fn warning(msg: &str) {
    emit("WARNING", msg);
}

pub(crate) fn error(msg: &str) {
    emit("ERROR", msg);
}

pub(crate) fn debug(msg: &str) {
    if debug_enabled() {
        emit("DEBUG", msg);
    }
}

/// A logger for one plugin: lines read `[LEVEL] plugin/<name>: message`.
#[derive(Clone, Copy)]
pub(crate) struct PluginLog(pub &'static str);

impl PluginLog {
    pub(crate) fn info(&self, msg: &str) {
        emit("INFO", &format!("plugin/{}: {msg}", self.0));
    }
    pub(crate) fn warning(&self, msg: &str) {
        emit("WARNING", &format!("plugin/{}: {msg}", self.0));
    }
    pub(crate) fn error(&self, msg: &str) {
        emit("ERROR", &format!("plugin/{}: {msg}", self.0));
    }
    pub(crate) fn debug(&self, msg: &str) {
        if debug_enabled() {
            emit("DEBUG", &format!("plugin/{}: {msg}", self.0));
        }
    }
    /// `[FATAL]` then exit 1, like CoreDNS's `log.Fatal`.
    pub(crate) fn fatal(&self, msg: &str) -> ! {
        emit("FATAL", &format!("plugin/{}: {msg}", self.0));
        flush();
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
}
