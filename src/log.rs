//! CoreDNS-format log lines on standard output: `[LEVEL] message`, plugin loggers prefixing
//! `plugin/<name>: `, no timestamps (Kubernetes adds them). `[DEBUG]` only with the debug plugin.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns `[DEBUG]` lines on or off (the `debug` plugin).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes one line as is (the query log uses this; the line carries its own `[INFO] `).
pub fn raw(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
}

fn emit(level: &str, msg: &str) {
    raw(&format!("[{level}] {msg}"));
}

pub fn info(msg: &str) {
    emit("INFO", msg);
}

pub fn warning(msg: &str) {
    emit("WARNING", msg);
}

pub fn error(msg: &str) {
    emit("ERROR", msg);
}

pub fn debug(msg: &str) {
    if debug_enabled() {
        emit("DEBUG", msg);
    }
}

/// A logger for one plugin: lines read `[LEVEL] plugin/<name>: message`.
#[derive(Clone, Copy)]
pub struct PluginLog(pub &'static str);

impl PluginLog {
    pub fn info(&self, msg: &str) {
        emit("INFO", &format!("plugin/{}: {msg}", self.0));
    }
    pub fn warning(&self, msg: &str) {
        emit("WARNING", &format!("plugin/{}: {msg}", self.0));
    }
    pub fn error(&self, msg: &str) {
        emit("ERROR", &format!("plugin/{}: {msg}", self.0));
    }
    pub fn debug(&self, msg: &str) {
        if debug_enabled() {
            emit("DEBUG", &format!("plugin/{}: {msg}", self.0));
        }
    }
    /// `[FATAL]` then exit 1, like CoreDNS's `log.Fatal`.
    pub fn fatal(&self, msg: &str) -> ! {
        emit("FATAL", &format!("plugin/{}: {msg}", self.0));
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
}
