//! The `hosts` plugin: answers A, AAAA and PTR from an /etc/hosts-style file and inline Corefile
//! lines, re-reading the file when its mtime or size changes; setup, handler and metrics.

pub(crate) mod file;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sextant_corefile::{Directive, Error, Token};
use sextant_wire::{Name, RData, RType, Record};

use crate::log::PluginLog;
use crate::metrics::metrics;
use crate::pkg::duration::{self, DurationError};
use crate::pkg::fallthrough::Fall;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx, ERR_ONCE};

use file::{Map, ParseOpts};

const LOG: PluginLog = PluginLog("hosts");

metrics! {
    ENTRIES: GaugeVec("coredns_hosts_entries", "The combined number of entries in hosts and Corefile.", ["hostsfile"]);
    RELOAD_TIME: Gauge("coredns_hosts_reload_timestamp_seconds", "The timestamp of the last reload of hosts file.");
}

/// Everything the Corefile says about one `hosts` line.
#[derive(Debug)]
pub(crate) struct Config {
    pub path: PathBuf,
    pub origins: Vec<Name>,
    pub ttl: u32,
    pub auto_reverse: bool,
    pub reload: Duration,
    pub fall: Fall,
    pub fallthrough_unsupported: bool,
    pub inline: Vec<String>,
}

/// Parses a `hosts` directive. Warnings (missing file) are logged, not returned.
pub(crate) fn parse(d: &Directive, block_zones: &[String]) -> Result<Config, Error> {
    let mut c = Config {
        path: PathBuf::from("/etc/hosts"),
        origins: Vec::new(),
        ttl: 3600,
        auto_reverse: true,
        reload: Duration::from_secs(5),
        fall: Fall::default(),
        fallthrough_unsupported: false,
        inline: Vec::new(),
    };
    let mut zone_args: &[Token] = &[];
    if let Some((first, rest)) = d.args.split_first() {
        c.path = PathBuf::from(&first.text);
        zone_args = rest;
        match std::fs::metadata(&c.path) {
            Ok(m) if m.is_dir() => {
                LOG.warning(&format!("Hosts file {:?} is a directory", first.text))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                LOG.warning(&format!("File does not exist: {}", first.text))
            }
            Err(e) => {
                return Err(d.err_at(
                    first,
                    format!("unable to access hosts file '{}': {e}", first.text),
                ))
            }
        }
    }
    c.origins = zones::from_args(d, zone_args, block_zones)?;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "fallthrough" => c.fall = Fall::parse(sub)?,
            "fallthrough_unsupported" => {
                sub.arg_count(0, 0)?;
                c.fallthrough_unsupported = true;
            }
            "no_reverse" => c.auto_reverse = false,
            "ttl" => {
                let Some(t) = sub.args.first() else {
                    return Err(sub.err("ttl needs a time in second"));
                };
                let ttl: i64 = t
                    .text
                    .parse()
                    .map_err(|_| sub.err_at(t, "ttl needs a number of second"))?;
                if ttl <= 0 || ttl > 65535 {
                    return Err(sub.err_at(t, "ttl provided is invalid"));
                }
                c.ttl = ttl as u32;
            }
            "reload" => {
                if sub.args.len() != 1 {
                    return Err(sub.err("reload needs a duration (zero seconds to disable)"));
                }
                let t = &sub.args[0];
                c.reload = duration::parse(&t.text).map_err(|e| {
                    let what = match e {
                        DurationError::Negative(_) => "invalid negative duration",
                        _ => "invalid duration",
                    };
                    sub.err_at(t, format!("{what} for reload '{}'", t.text))
                })?;
            }
            other => {
                if !c.fall.is_off() {
                    return Err(sub.err(format!("unknown property '{other}'")));
                }
                let mut line = sub.name.text.clone();
                for a in &sub.args {
                    line.push(' ');
                    line.push_str(&a.text);
                }
                c.inline.push(line);
            }
        }
    }
    if c.fallthrough_unsupported && c.fall.is_off() {
        return Err(d.err("fallthrough_unsupported requires fallthrough"));
    }
    Ok(c)
}

/// The file's data plus what was last read, swapped whole on reload.
struct FileState {
    map: Map,
    mtime: Option<SystemTime>,
    size: u64,
}

pub(crate) struct Hosts {
    path: PathBuf,
    label: String,
    zones: Vec<Name>,
    ttl: u32,
    fall: Fall,
    fallthrough_unsupported: bool,
    opts: ParseOpts,
    inline: Map,
    file: ArcSwap<FileState>,
    /// Serialises reloads (the periodic task and startup).
    reload_lock: Mutex<()>,
}

impl Hosts {
    pub(crate) fn new(c: Config) -> Hosts {
        let opts = ParseOpts {
            origins: c.origins.clone(),
            auto_reverse: c.auto_reverse,
        };
        let inline = Map::parse(&c.inline.join("\n"), &opts);
        Hosts {
            label: c.path.display().to_string(),
            path: c.path,
            zones: c.origins,
            ttl: c.ttl,
            fall: c.fall,
            fallthrough_unsupported: c.fallthrough_unsupported,
            opts,
            inline,
            file: ArcSwap::from_pointee(FileState {
                map: Map::default(),
                mtime: None,
                size: 0,
            }),
            reload_lock: Mutex::new(()),
        }
    }

    /// Re-reads the file if its mtime or size changed (CoreDNS's `readHosts`). A file that
    /// cannot be opened keeps the old data.
    pub(crate) fn read_hosts(&self) {
        let Ok(_guard) = self.reload_lock.lock() else {
            return;
        };
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return;
        };
        if meta.is_dir() {
            return;
        }
        let mtime = meta.modified().ok();
        let cur = self.file.load();
        if cur.mtime.is_some() && cur.mtime == mtime && cur.size == meta.len() {
            return;
        }
        let Ok(bytes) = std::fs::read(&self.path) else {
            return;
        };
        let text = String::from_utf8_lossy(&bytes);
        let map = Map::parse(&text, &self.opts);
        LOG.debug(&format!("Parsed hosts file into {} entries", map.len()));
        ENTRIES
            .with_label_values(&[&self.label])
            .set((self.inline.len() + map.len()) as f64);
        if let Some(t) = mtime {
            if let Ok(d) = t.duration_since(SystemTime::UNIX_EPOCH) {
                RELOAD_TIME.set(d.as_secs_f64());
            }
        }
        self.file.store(Arc::new(FileState {
            map,
            mtime,
            size: meta.len(),
        }));
    }

    fn has_address(&self, f: &Map, qname: &Name) -> bool {
        !f.v4(qname).is_empty()
            || !self.inline.v4(qname).is_empty()
            || !f.v6(qname).is_empty()
            || !self.inline.v6(qname).is_empty()
    }

    /// What the plugin does with a query: `None` means pass it on.
    fn answer(&self, req: &Request) -> Option<Result<Vec<Record>, ()>> {
        let qname = req.qname().to_lowercase();
        let qtype = req.qtype();
        let in_zone = self.zones.iter().any(|z| qname.is_subdomain_of(z));
        if !in_zone && qtype != RType::PTR {
            return None;
        }
        let f = self.file.load();
        let ttl = self.ttl;
        let mut answers = Vec::new();
        match qtype {
            RType::PTR => {
                let ip: Option<IpAddr> = qname.reverse_address();
                let names: Vec<&Name> = match &ip {
                    Some(ip) => f
                        .map
                        .names(ip)
                        .iter()
                        .chain(self.inline.names(ip))
                        .collect(),
                    None => Vec::new(),
                };
                if names.is_empty() {
                    return None;
                }
                for n in names {
                    answers.push(Record::new(qname.clone(), ttl, RData::Ptr(n.clone())));
                }
            }
            RType::A => {
                for a in f.map.v4(&qname).iter().chain(self.inline.v4(&qname)) {
                    answers.push(Record::new(qname.clone(), ttl, RData::A(*a)));
                }
            }
            RType::AAAA => {
                for a in f.map.v6(&qname).iter().chain(self.inline.v6(&qname)) {
                    answers.push(Record::new(qname.clone(), ttl, RData::Aaaa(*a)));
                }
            }
            _ => {
                if self.fallthrough_unsupported && self.fall.through(&qname) {
                    return None;
                }
            }
        }
        if answers.is_empty() && !self.has_address(&f.map, &qname) {
            if self.fall.through(&qname) {
                return None;
            }
            return Some(Err(()));
        }
        Some(Ok(answers))
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    if lines.len() > 1 {
        return Err(lines[1].err(ERR_ONCE));
    }
    let c = parse(lines[0], &ctx.block.zones)?;
    let reload = c.reload;
    let h = Arc::new(Hosts::new(c));
    h.read_hosts();
    if !reload.is_zero() {
        let hh = h.clone();
        ctx.periodic(reload, move || hh.read_hosts());
    }
    ctx.add_handler(h);
    Ok(())
}

impl Handler for Hosts {
    fn name(&self) -> &'static str {
        "hosts"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        match self.answer(req) {
            None => next.run(req),
            Some(Err(())) => {
                // No SOA to send an NXDOMAIN with: CoreDNS returns SERVFAIL (no reply, no error).
                Box::pin(async { Outcome::rcode("hosts", sextant_wire::Rcode::SERVFAIL) })
            }
            Some(Ok(answers)) => {
                let mut m = req.reply();
                m.header.aa = true;
                m.answers = answers;
                Box::pin(async move { Outcome::reply("hosts", m) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn directive(text: &str) -> Directive {
        let cf = sextant_corefile::parse_str("Corefile", text, Path::new(".")).unwrap();
        cf.blocks[0]
            .directives
            .iter()
            .find(|d| d.name.text == "hosts")
            .unwrap()
            .clone()
    }

    fn parse_ok(text: &str) -> Config {
        parse(&directive(text), &["example.org.".to_string()]).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(&directive(text), &["example.org.".to_string()])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults() {
        let c = parse_ok(".:53 {\n hosts\n}\n");
        assert_eq!(c.path, PathBuf::from("/etc/hosts"));
        assert_eq!(c.origins, vec![Name::parse("example.org.").unwrap()]);
        assert_eq!(c.ttl, 3600);
        assert!(c.auto_reverse);
        assert_eq!(c.reload, Duration::from_secs(5));
        assert!(c.fall.is_off());
        assert!(!c.fallthrough_unsupported);
        assert!(c.inline.is_empty());
    }

    #[test]
    fn every_option() {
        let c = parse_ok(
            ".:53 {\n hosts /nonexistent/hosts example.com 10.0.0.0/24 {\n  10.0.0.1 a.example.com\n  ::1 b.example.com c\n  ttl 60\n  no_reverse\n  reload 0\n  fallthrough a.example.com\n  fallthrough_unsupported\n }\n}\n",
        );
        assert_eq!(c.path, PathBuf::from("/nonexistent/hosts"));
        assert_eq!(
            c.origins,
            vec![
                Name::parse("example.com.").unwrap(),
                Name::parse("0.0.10.in-addr.arpa.").unwrap()
            ]
        );
        assert_eq!(c.ttl, 60);
        assert!(!c.auto_reverse);
        assert_eq!(c.reload, Duration::ZERO);
        assert_eq!(c.fall.zones(), [Name::parse("a.example.com.").unwrap()]);
        assert!(c.fallthrough_unsupported);
        assert_eq!(
            c.inline,
            vec!["10.0.0.1 a.example.com", "::1 b.example.com c"]
        );
        let c = parse_ok(".:53 {\n hosts {\n  fallthrough\n  reload 1m30s\n }\n}\n");
        assert_eq!(c.fall.zones(), [Name::root()]);
        assert_eq!(c.reload, Duration::from_secs(90));
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  ttl\n }\n}\n"),
            "Corefile:3:3: ttl: ttl needs a time in second"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  ttl abc\n }\n}\n"),
            "Corefile:3:7: ttl: ttl needs a number of second"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  ttl 0\n }\n}\n"),
            "Corefile:3:7: ttl: ttl provided is invalid"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  ttl 65536\n }\n}\n"),
            "Corefile:3:7: ttl: ttl provided is invalid"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  reload\n }\n}\n"),
            "Corefile:3:3: reload: reload needs a duration (zero seconds to disable)"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  reload 5x\n }\n}\n"),
            "Corefile:3:10: reload: invalid duration for reload '5x'"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  reload -5s\n }\n}\n"),
            "Corefile:3:10: reload: invalid negative duration for reload '-5s'"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  fallthrough_unsupported x\n }\n}\n"),
            "Corefile:3:27: fallthrough_unsupported: wrong argument count: expected 0, got 1"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  fallthrough_unsupported\n }\n}\n"),
            "Corefile:2:2: hosts: fallthrough_unsupported requires fallthrough"
        );
        assert_eq!(
            parse_err(".:53 {\n hosts {\n  fallthrough\n  10.0.0.1 x.example.org\n }\n}\n"),
            "Corefile:4:3: 10.0.0.1: unknown property '10.0.0.1'"
        );
    }

    #[test]
    fn inaccessible_file_is_an_error() {
        // A path through a regular file gives ENOTDIR, not "not found".
        let dir = std::env::temp_dir().join(format!("sextant-hosts-{}", std::process::id()));
        std::fs::write(&dir, "x").unwrap();
        let p = format!("{}/sub", dir.display());
        let text = format!(".:53 {{\n hosts {p}\n}}\n");
        let e = parse_err(&text);
        std::fs::remove_file(&dir).unwrap();
        assert!(
            e.starts_with(&format!(
                "Corefile:2:8: hosts: unable to access hosts file '{p}': "
            )),
            "{e}"
        );
    }
}
