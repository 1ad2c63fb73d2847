//! The `errors` plugin: logs every error the rest of the chain returns as
//! `[ERROR] plugin/errors: <rcode> <qname> <qtype>: <error>`, optionally consolidating errors that
//! match a pattern into one line per period.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use sextant_corefile::{Directive, Error};

use crate::log::PluginLog;
use crate::pkg::duration;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

const LOG: PluginLog = PluginLog("errors");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

struct Pattern {
    period: Duration,
    text: String,
    re: Regex,
    level: Level,
    show_first: bool,
    count: AtomicU64,
}

pub(crate) struct Errors {
    patterns: Vec<Arc<Pattern>>,
}

fn emit(level: Level, msg: &str) {
    match level {
        Level::Error => LOG.error(msg),
        Level::Warning => LOG.warning(msg),
        Level::Info => LOG.info(msg),
        Level::Debug => LOG.debug(msg),
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 0)?;
    let mut patterns = Vec::new();
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "stacktrace" => sub.arg_count(0, 0)?,
            "consolidate" => {
                sub.arg_count(2, 4)?;
                let period = duration::arg(sub, &sub.args[0])?;
                let text = sub.args[1].text.clone();
                if text.len() > 10000 {
                    return Err(sub.err_at(&sub.args[1], "regexp too long"));
                }
                let re = Regex::new(&text)
                    .map_err(|e| sub.err_at(&sub.args[1], format!("invalid regexp: {e}")))?;
                let mut level = Level::Error;
                let mut show_first = false;
                for t in &sub.args[2..] {
                    match t.text.as_str() {
                        "warning" => level = Level::Warning,
                        "error" => level = Level::Error,
                        "info" => level = Level::Info,
                        "debug" => level = Level::Debug,
                        "show_first" => show_first = true,
                        other => {
                            return Err(sub.err_at(
                                t,
                                format!("unknown log level argument in consolidate: {other}"),
                            ))
                        }
                    }
                }
                patterns.push(Arc::new(Pattern {
                    period,
                    text,
                    re,
                    level,
                    show_first,
                    count: AtomicU64::new(0),
                }));
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    for p in &patterns {
        let p = p.clone();
        ctx.task(move |t| async move {
            loop {
                tokio::select! {
                    _ = t.cancelled() => return,
                    _ = tokio::time::sleep(p.period) => {}
                }
                let n = p.count.swap(0, Ordering::Relaxed);
                if n > 0 {
                    emit(
                        p.level,
                        &format!(
                            "{n} errors like '{}' occurred in last {}",
                            p.text,
                            duration::format(p.period)
                        ),
                    );
                }
            }
        });
    }
    ctx.add_handler(Arc::new(Errors { patterns }));
    Ok(())
}

impl Errors {
    fn log(&self, req: &Request, out: &Outcome, err: &str) {
        let line = format!(
            "{} {} {}: {}",
            out.rcode.0,
            req.qname().to_lowercase_string(),
            req.qtype(),
            err
        );
        for p in &self.patterns {
            if p.re.is_match(err) {
                let before = p.count.fetch_add(1, Ordering::Relaxed);
                if before == 0 && p.show_first {
                    emit(p.level, &line);
                }
                return;
            }
        }
        LOG.error(&line);
    }
}

impl Handler for Errors {
    fn name(&self) -> &'static str {
        "errors"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let out = next.run(req).await;
            if let Some(e) = &out.error {
                self.log(req, &out, e);
            }
            out
        })
    }

    fn now(&self) -> crate::plugin::Now {
        crate::plugin::Now::Passes
    }

    fn serve_now(&self, req: &mut Request, next: Next<'_>) -> Option<Outcome> {
        let out = next.run_now(req)?;
        if let Some(e) = &out.error {
            self.log(req, &out, e);
        }
        Some(out)
    }
}
