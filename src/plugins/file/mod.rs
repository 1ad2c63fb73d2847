//! The `file` plugin: serves zones from RFC 1035 zone files (CoreDNS `plugin/file`), reloading
//! a file when its SOA serial (or mtime) changed, falling through on request, and handing its
//! zones to `transfer` (with NOTIFY to the secondaries after a reload).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sextant_corefile::{Directive, Error};
use sextant_wire::{opcode, Name, Rcode, Record};

use crate::log::PluginLog;
use crate::pkg::authority::{self, LoadError, ZoneSlot};
use crate::pkg::duration;
use crate::pkg::fallthrough::Fall;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Notifier, Outcome, Request, SetupCtx, Transferer};

const LOG: PluginLog = PluginLog("file");

/// The Corefile lines of one block, parsed.
#[derive(Debug)]
pub(crate) struct Config {
    /// (zone file, origins) per `file` line.
    pub(crate) files: Vec<(PathBuf, Vec<Name>)>,
    pub(crate) reload: Duration,
    pub(crate) by_mtime: bool,
    pub(crate) fall: Fall,
}

pub(crate) fn parse(lines: &[&Directive], block: &[String]) -> Result<Config, Error> {
    let mut c = Config {
        files: Vec::new(),
        reload: Duration::from_secs(60),
        by_mtime: false,
        fall: Fall::default(),
    };
    for d in lines {
        d.arg_count(1, usize::MAX)?;
        let origins = zones::from_args(d, &d.args[1..], block)?;
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "fallthrough" => c.fall = Fall::parse(sub)?,
                "reload" => {
                    let Some(t) = sub.args.first() else {
                        return Err(sub.err("reload duration value is expected"));
                    };
                    c.reload = duration::arg(sub, t)?;
                }
                "reload_by_mtime" => c.by_mtime = true,
                // Accepted and ignored, as in CoreDNS ("remove soon").
                "upstream" => {}
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
        c.files.push((PathBuf::from(&d.args[0].text), origins));
    }
    Ok(c)
}

/// The handler: the zones of every `file` line of the block.
pub(crate) struct File {
    slots: Vec<Arc<ZoneSlot>>,
    fall: Fall,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut c = parse(lines, &ctx.block.zones)?;
    // Relative zone file names are under the block's `root`, as in CoreDNS.
    for (path, _) in c.files.iter_mut() {
        *path = ctx.file_path(&path.to_string_lossy());
    }
    let mut slots: Vec<Arc<ZoneSlot>> = Vec::new();
    for ((path, origins), d) in c.files.iter().zip(lines) {
        for o in origins {
            let slot = Arc::new(ZoneSlot::new(o.clone(), path.clone()));
            match authority::load_slot(&slot) {
                Ok(()) => {}
                Err(LoadError::Open(e)) if !c.reload.is_zero() => LOG.warning(&format!(
                    "Failed to open {:?}: trying again in {}",
                    format!("open {}: {e}", path.display()),
                    crate::pkg::duration::format(c.reload)
                )),
                Err(LoadError::Open(e)) => {
                    return Err(d.err(format!("open {}: {e}", path.display())))
                }
                Err(LoadError::Parse(e)) => return Err(d.err(e)),
                Err(LoadError::NoChange) => {}
            }
            slots.retain(|s| s.origin != slot.origin);
            slots.push(slot);
        }
    }
    let notifier: Arc<OnceLock<Arc<dyn Notifier>>> = Arc::new(OnceLock::new());
    let n = notifier.clone();
    ctx.link(lines[0], move |chain| {
        if let Some(x) = chain.iter().find_map(|h| h.notifier()) {
            let _ = n.set(x);
        }
        Ok(())
    });
    // Tell the secondaries at start-up, as CoreDNS does when the server starts.
    let (n, names): (_, Vec<Name>) = (
        notifier.clone(),
        slots.iter().map(|s| s.origin.clone()).collect(),
    );
    ctx.task(move |_t| async move {
        if let Some(x) = n.get() {
            for z in &names {
                x.notify(z);
            }
        }
    });
    if !c.reload.is_zero() {
        let (n, s, by_mtime) = (notifier, slots.clone(), c.by_mtime);
        ctx.periodic(c.reload, move || {
            for slot in &s {
                if authority::reload_slot(LOG, slot, by_mtime) {
                    if let Some(x) = n.get() {
                        x.notify(&slot.origin);
                    }
                }
            }
        });
    }
    ctx.add_handler(Arc::new(File {
        slots,
        fall: c.fall,
    }));
    Ok(())
}

impl Handler for File {
    fn name(&self) -> &'static str {
        "file"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let qname = req.qname();
        let Some(slot) = authority::longest(&self.slots, &qname) else {
            if next.handlers().is_empty() {
                return Box::pin(async { Outcome::rcode("file", Rcode::REFUSED) });
            }
            return next.run(req);
        };
        if req.msg.header.opcode == opcode::NOTIFY {
            LOG.info(&format!(
                "Dropping notify from {} for {}",
                req.client.ip(),
                slot.origin
            ));
            return Box::pin(async { Outcome::silent("file") });
        }
        Box::pin(authority::answer("file", LOG, slot, &self.fall, req, next))
    }

    fn transferer(&self) -> Option<&dyn Transferer> {
        Some(self)
    }
}

impl Transferer for File {
    fn transfer(&self, zone: &Name, serial: u32) -> Option<Vec<Record>> {
        authority::transfer(&self.slots, zone, serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_corefile::parse_str;

    fn conf(text: &str) -> Result<Config, Error> {
        let cf = parse_str("Corefile", text, std::path::Path::new(".")).expect("corefile");
        let ds: Vec<&Directive> = cf.blocks[0]
            .directives
            .iter()
            .filter(|d| d.name.text == "file")
            .collect();
        parse(&ds, &["example.org.".to_string()])
    }

    #[test]
    fn options() {
        let c = conf("example.org {\n file db.example.org example.org example.net {\n  reload 30s\n  reload_by_mtime\n  fallthrough in-addr.arpa\n  upstream\n }\n}\n").unwrap();
        assert_eq!(c.files[0].1.len(), 2);
        assert_eq!(c.reload, Duration::from_secs(30));
        assert!(c.by_mtime);
        assert_eq!(c.fall.zones(), [Name::parse("in-addr.arpa.").unwrap()]);
        let c = conf("example.org {\n file db\n}\n").unwrap();
        assert_eq!(c.files[0].1, vec![Name::parse("example.org.").unwrap()]);
        assert_eq!(c.reload, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_position() {
        let e = conf("example.org {\n file\n}\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Corefile:2:2: file: wrong argument count"),
            "{e}"
        );
        let e = conf("example.org {\n file db {\n  reload\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:3: reload: reload duration value is expected"
        );
        let e = conf("example.org {\n file db {\n  bogus\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:3: bogus: unknown property 'bogus'"
        );
    }
}
