//! The `auto` plugin: serves every zone file of a directory whose name matches a regexp, the
//! origin made from the match by a template (CoreDNS `plugin/auto`); the directory is walked
//! again every `reload` (new files added, removed ones dropped) and each zone re-read when its
//! SOA serial changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use regex::Regex;
use sextant_corefile::{Directive, Error};
use sextant_wire::{Name, Rcode, Record};

use crate::log::PluginLog;
use crate::pkg::authority::{self, ZoneSlot};
use crate::pkg::duration;
use crate::pkg::fallthrough::Fall;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Notifier, Outcome, Request, SetupCtx, Transferer};

const LOG: PluginLog = PluginLog("auto");
const FILE_LOG: PluginLog = PluginLog("file");
/// Longest regexp accepted (CoreDNS `maxRegexpLen`).
const MAX_REGEXP: usize = 10000;

/// One `auto` line, parsed.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) origins: Vec<Name>,
    pub(crate) directory: PathBuf,
    pub(crate) re: Regex,
    /// The origin template with `{n}` rewritten to `${n}`.
    pub(crate) template: String,
    pub(crate) reload: Duration,
}

pub(crate) fn parse(d: &Directive, block: &[String]) -> Result<Config, Error> {
    let mut c = Config {
        origins: zones::from_args(d, &d.args, block)?,
        directory: PathBuf::new(),
        re: Regex::new(r"db\.(.*)").map_err(|e| d.err(e.to_string()))?,
        template: "${1}".to_string(),
        reload: Duration::from_secs(60),
    };
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "directory" => {
                sub.arg_count(1, 3)?;
                c.directory = PathBuf::from(&sub.args[0].text);
                match std::fs::metadata(&c.directory) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => LOG.warning(&format!(
                        "Directory does not exist: {}",
                        c.directory.display()
                    )),
                    Err(e) => {
                        return Err(sub.err(format!(
                            "Unable to access root path '{}': {e}",
                            c.directory.display()
                        )))
                    }
                }
                if let Some(r) = sub.args.get(1) {
                    if r.text.len() > MAX_REGEXP {
                        return Err(sub.err_at(r, "regexp too large"));
                    }
                    c.re = Regex::new(&r.text).map_err(|e| sub.err_at(r, e.to_string()))?;
                    if c.re.captures_len() < 2 {
                        return Err(sub.err_at(r, "Need at least one sub expression"));
                    }
                    let Some(t) = sub.args.get(2) else {
                        return Err(sub.err(
                            "Wrong argument count or unexpected line ending after the regexp",
                        ));
                    };
                    c.template = t.text.replace('{', "${");
                }
            }
            "reload" => {
                let Some(t) = sub.args.first() else {
                    return Err(sub.err("reload duration value is expected"));
                };
                c.reload = duration::arg(sub, t)?;
            }
            "upstream" => {}
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    Ok(c)
}

/// The origin for `file_name` if it matches (CoreDNS `matches`): the template expanded with
/// the regexp's groups, made fully qualified.
fn origin_of(re: &Regex, template: &str, file_name: &str) -> Option<Name> {
    let caps = re.captures(file_name)?;
    let mut out = String::new();
    caps.expand(template, &mut out);
    Name::parse(&out).ok().map(|n| n.to_lowercase())
}

/// The handler and its loaded zones.
pub(crate) struct Auto {
    c: Config,
    zones: ArcSwap<Vec<Arc<ZoneSlot>>>,
    notifier: OnceLock<Arc<dyn Notifier>>,
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        LOG.warning(&format!("error reading {}", dir.display()));
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() && depth < 16 => walk_dir(&p, out, depth + 1),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
}

impl Auto {
    /// One scan of the directory (CoreDNS `Auto.Walk`), then NOTIFY for every zone.
    fn walk(&self) {
        let old = self.zones.load_full();
        let mut files = Vec::new();
        walk_dir(&self.c.directory, &mut files, 0);
        let mut next: Vec<Arc<ZoneSlot>> = Vec::new();
        let mut seen: Vec<(Name, PathBuf)> = Vec::new();
        for path in files {
            let Some(base) = path.file_name().and_then(|b| b.to_str()) else {
                continue;
            };
            let Some(origin) = origin_of(&self.c.re, &self.c.template, base) else {
                continue;
            };
            if let Some((_, prev)) = seen.iter().find(|(o, _)| *o == origin) {
                LOG.warning(&format!(
                    "Multiple zone files match origin {:?}: using {:?} instead of {:?}",
                    origin.to_string(),
                    prev.display().to_string(),
                    path.display().to_string()
                ));
                continue;
            }
            seen.push((origin.clone(), path.clone()));
            if let Some(z) = old.iter().find(|z| z.origin == origin) {
                z.set_file(path);
                next.push(z.clone());
                continue;
            }
            let slot = Arc::new(ZoneSlot::new(origin.clone(), path.clone()));
            match authority::load_slot(&slot) {
                Ok(()) => {
                    LOG.info(&format!(
                        "Inserting zone `{origin}' from: {}",
                        path.display()
                    ));
                    next.push(slot);
                }
                Err(e) => LOG.warning(&format!("Parse zone `{origin}': {e:?}")),
            }
        }
        for z in old.iter() {
            if !next.iter().any(|n| n.origin == z.origin) {
                LOG.info(&format!("Deleting zone `{}'", z.origin));
            }
        }
        self.zones.store(Arc::new(next));
        self.notify_all();
    }

    /// Re-reads each loaded zone whose serial changed (each zone's own reload in CoreDNS).
    fn reload_zones(&self) {
        for z in self.zones.load().iter() {
            if authority::reload_slot(FILE_LOG, z, false) {
                if let Some(n) = self.notifier.get() {
                    n.notify(&z.origin);
                }
            }
        }
    }

    fn notify_all(&self) {
        if let Some(n) = self.notifier.get() {
            for z in self.zones.load().iter() {
                n.notify(&z.origin);
            }
        }
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    for d in lines {
        let mut c = parse(d, &ctx.block.zones)?;
        // A relative directory is under the block's `root`, as in CoreDNS.
        c.directory = ctx.file_path(&c.directory.to_string_lossy());
        let reload = c.reload;
        let a = Arc::new(Auto {
            c,
            zones: ArcSwap::from_pointee(Vec::new()),
            notifier: OnceLock::new(),
        });
        let aa = a.clone();
        ctx.link(d, move |chain| {
            if let Some(n) = chain.iter().find_map(|h| h.notifier()) {
                let _ = aa.notifier.set(n);
            }
            Ok(())
        });
        // The first walk before serving, on start (not for -check).
        let aa = a.clone();
        ctx.warmup(move |_t| async move { aa.walk() });
        if !reload.is_zero() {
            let aa = a.clone();
            ctx.periodic(reload, move || {
                aa.walk();
                aa.reload_zones();
            });
        }
        ctx.add_handler(a);
    }
    Ok(())
}

impl Handler for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let qname = req.qname();
        if !self.c.origins.iter().any(|o| qname.is_subdomain_of(o)) {
            return next.run(req);
        }
        let zones = self.zones.load_full();
        let Some(slot) = authority::longest(&zones, &qname).cloned() else {
            if next.handlers().is_empty() {
                return Box::pin(async { Outcome::rcode("auto", Rcode::REFUSED) });
            }
            return next.run(req);
        };
        Box::pin(async move {
            let mut out =
                authority::answer("auto", FILE_LOG, &slot, &Fall::default(), req, next).await;
            // auto clears AA on every delegation, even one behind an in-zone CNAME.
            // Built replies only, as before: the zone's encoded fast path is sent as it is.
            if let Some(sextant_wire::Reply::Parsed(m)) = out.reply.as_mut() {
                if m.answers
                    .iter()
                    .any(|r| r.rtype == sextant_wire::RType::CNAME)
                    && !m.authority.is_empty()
                    && m.authority
                        .iter()
                        .all(|r| r.rtype == sextant_wire::RType::NS && r.name != slot.origin)
                {
                    m.header.aa = false;
                }
            }
            out
        })
    }

    fn transferer(&self) -> Option<&dyn Transferer> {
        Some(self)
    }
}

impl Transferer for Auto {
    fn transfer(&self, zone: &Name, serial: u32) -> Option<Vec<Record>> {
        authority::transfer(&self.zones.load(), zone, serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_corefile::parse_str;

    fn conf(text: &str) -> Result<Config, Error> {
        let cf = parse_str("Corefile", text, std::path::Path::new(".")).expect("corefile");
        parse(&cf.blocks[0].directives[0], &["org.".to_string()])
    }

    #[test]
    fn options_and_templates() {
        let c = conf(
            "org {\n auto {\n  directory /nonexistent www\\.db\\.(.*) {1}\n  reload 45s\n }\n}\n",
        )
        .unwrap();
        assert_eq!(c.reload, Duration::from_secs(45));
        assert_eq!(
            origin_of(&c.re, &c.template, "www.db.example.org")
                .unwrap()
                .to_string(),
            "example.org."
        );
        assert!(origin_of(&c.re, &c.template, "db.example.org").is_none());
        let c = conf("org {\n auto {\n  directory /nonexistent\n }\n}\n").unwrap();
        assert_eq!(
            origin_of(&c.re, &c.template, "db.example.COM")
                .unwrap()
                .to_string(),
            "example.com."
        );
        assert_eq!(c.origins, vec![Name::parse("org.").unwrap()]);
        let e = conf("org {\n auto {\n  directory /x (.*\n }\n}\n").unwrap_err();
        assert!(
            e.to_string().starts_with("Corefile:3:16: directory:"),
            "{e}"
        );
        let e = conf("org {\n auto {\n  directory /x db\\..* {1}\n }\n}\n").unwrap_err();
        assert!(
            e.to_string().contains("Need at least one sub expression"),
            "{e}"
        );
        let e = conf("org {\n auto {\n  directory /x db\\.(.*)\n }\n}\n").unwrap_err();
        assert!(e.to_string().contains("Wrong argument count"), "{e}");
        let e = conf("org {\n auto {\n  reload\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:3: reload: reload duration value is expected"
        );
    }
}
