//! Routes `tracing` events of the libraries (the Kubernetes client in `crates/kube`; kube-rs and
//! hyper with the debug plugin) into CoreDNS-format log lines: `[WARNING] plugin/kubernetes: ...`. Sextant's own code
//! logs through `crate::log` directly.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
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

/// Whether an event is logged: our crates at INFO and above (DEBUG with the debug plugin);
/// libraries (kube-rs, hyper, h2, quinn) only with the debug plugin, WARN and above: what matters
/// of their errors our crates already log, with the cause spelled out.
fn wanted(meta: &Metadata<'_>, debug: bool) -> bool {
    let level = *meta.level();
    if meta.target().starts_with("sextant") {
        level <= Level::INFO || (level == Level::DEBUG && debug)
    } else {
        debug && level <= Level::WARN
    }
}

impl<S: Subscriber> Layer<S> for Bridge {
    // Spans are never used, and events that can never be logged are turned off where they are
    // written: without this every trace-level span of h2 and hyper (several per DoH request)
    // went through the registry, about a fifth of a DoH request's CPU.
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() || !(wanted(meta, true)) {
            Interest::never()
        } else if wanted(meta, false) {
            Interest::always()
        } else {
            // Depends on the debug plugin, which a reload turns on and off.
            Interest::sometimes()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        !meta.is_span() && wanted(meta, crate::log::debug_enabled())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if !wanted(meta, crate::log::debug_enabled()) {
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
