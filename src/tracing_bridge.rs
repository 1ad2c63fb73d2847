//! Routes `tracing` events of the libraries (the Kubernetes client in `crates/kube`; kube-rs and
//! hyper with the debug plugin) into CoreDNS-format log lines: `[WARNING] plugin/kubernetes: ...`. Sextant's own code
//! logs through `crate::log` directly.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

struct Bridge;

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Bridge {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let ours = meta.target().starts_with("sextant");
        let level = *meta.level();
        // Our crates at INFO and above (DEBUG with the debug plugin). Libraries (kube-rs, hyper)
        // only with the debug plugin: what matters of their errors our crates already log, with
        // the cause spelled out.
        let wanted = if ours {
            level <= Level::INFO || (level == Level::DEBUG && crate::log::debug_enabled())
        } else {
            crate::log::debug_enabled() && level <= Level::WARN
        };
        if !wanted {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let plugin =
            if meta.target().starts_with("sextant_kube") || meta.target().starts_with("kube") {
                "kubernetes"
            } else {
                meta.target().split("::").next().unwrap_or("sextant")
            };
        let msg = if f.message.starts_with("plugin/") {
            format!("{}{}", f.message, f.rest)
        } else {
            format!("plugin/{plugin}: {}{}", f.message, f.rest)
        };
        match level {
            Level::ERROR => crate::log::error(&msg),
            Level::WARN => crate::log::warning(&msg),
            Level::INFO => crate::log::info(&msg),
            _ => crate::log::debug(&msg),
        }
    }
}

/// Installs the bridge as the process's `tracing` subscriber (once; later calls do nothing).
pub(crate) fn install() {
    let _ = tracing_subscriber::registry().with(Bridge).try_init();
}
