//! The `ready` plugin: `/ready` answers 200 `OK` once every plugin that reports readiness is
//! ready, 503 with the comma-separated names of those that are not, and 503 `Shutting down` once
//! shutdown began.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sextant_corefile::{Directive, Error};

use crate::pkg::addr;
use crate::plugin::SetupCtx;
use crate::server::http::{HttpHandler, HttpResponse};
use crate::server::lifecycle::RuntimeState;
use crate::setup::ReadinessList;

pub(crate) const DEFAULT_ADDR: &str = ":8181";

struct Ready {
    list: ReadinessList,
    state: Arc<RuntimeState>,
    /// `monitor until-ready`: once ready, stay ready (CoreDNS's default).
    until_ready: bool,
    was_ready: AtomicBool,
}

impl HttpHandler for Ready {
    fn get(&self, _path: &str) -> HttpResponse {
        if self.state.shutting_down() {
            return HttpResponse::text(503, "Shutting down");
        }
        if self.until_ready && self.was_ready.load(Ordering::Relaxed) {
            return HttpResponse::text(200, "OK");
        }
        let mut not_ready: Vec<String> = match self.list.read() {
            Ok(l) => l
                .iter()
                .filter(|(_, r)| !r.ready())
                .map(|(n, _)| n.clone())
                .collect(),
            Err(_) => vec!["ready".to_string()],
        };
        not_ready.sort();
        not_ready.dedup();
        if not_ready.is_empty() {
            self.was_ready.store(true, Ordering::Relaxed);
            HttpResponse::text(200, "OK")
        } else {
            let names = not_ready.join(",");
            crate::log::PluginLog("ready").info(&format!("Plugins not ready: {names:?}"));
            HttpResponse::text(503, names)
        }
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    let (addr, _) = addr::http_arg(d, DEFAULT_ADDR)?;
    let mut until_ready = true;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "monitor" => {
                sub.arg_count(1, 1)?;
                until_ready = match sub.args[0].text.as_str() {
                    "until-ready" => true,
                    "continuously" => false,
                    other => {
                        return Err(sub.err_at(
                            &sub.args[0],
                            format!(
                                "monitor type must be until-ready or continuously, got '{other}'"
                            ),
                        ))
                    }
                };
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    let list = ctx.readiness_list();
    let state = ctx.runtime_state();
    ctx.add_http(
        &addr,
        "/ready",
        Arc::new(Ready {
            list,
            state,
            until_ready,
            was_ready: AtomicBool::new(false),
        }),
    );
    Ok(())
}
