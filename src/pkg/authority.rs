//! Zones served from memory, shared by `file`, `auto` and `secondary` the way CoreDNS's `auto`
//! and `secondary` reuse `plugin/file`: a zone slot that is swapped whole on reload or transfer,
//! loading a zone file, reloading it when its serial (or mtime) changed, and answering a query
//! from a slot (CoreDNS `File.ServeDNS` + `Zone.Lookup`), with the wire fast path for plain
//! positive answers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use sextant_wire::{Message, Name, RData, RType, Rcode, Record};
use sextant_zone::{Lookup, Res, Zone};

use crate::log::PluginLog;
use crate::pkg::fallthrough::Fall;
use crate::plugin::{Next, Outcome, Request};

/// Names from which a zone counts as large: installing one gives the heap's free memory back.
const LARGE_ZONE: usize = 10_000;

/// One zone as served: its origin and its current data (None until loaded or transferred).
pub(crate) struct ZoneSlot {
    pub(crate) origin: Name,
    data: ArcSwapOption<Zone>,
    expired: AtomicBool,
    /// The zone file (file, auto); empty for a secondary zone.
    file: Mutex<PathBuf>,
    /// Modification time of the file when it was last loaded (`reload_by_mtime`).
    mtime: Mutex<Option<SystemTime>>,
}

impl ZoneSlot {
    pub(crate) fn new(origin: Name, file: PathBuf) -> ZoneSlot {
        ZoneSlot {
            origin: origin.to_lowercase(),
            data: ArcSwapOption::empty(),
            expired: AtomicBool::new(false),
            file: Mutex::new(file),
            mtime: Mutex::new(None),
        }
    }

    /// The current data.
    pub(crate) fn zone(&self) -> Option<Arc<Zone>> {
        self.data.load_full()
    }

    /// Replaces the data (and clears `expired`), like CoreDNS `Zone.setData`.
    pub(crate) fn set(&self, z: Zone) {
        let large = z.len() >= LARGE_ZONE;
        self.data.store(Some(Arc::new(z)));
        self.expired.store(false, Ordering::Release);
        if large {
            // Building it (and dropping the copy it replaces) left the heap at its peak.
            sextant_kube::release_memory();
        }
    }

    pub(crate) fn set_expired(&self, on: bool) {
        self.expired.store(on, Ordering::Release);
    }

    pub(crate) fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// The current SOA serial, if the zone has data.
    pub(crate) fn serial(&self) -> Option<u32> {
        self.zone().and_then(|z| z.serial())
    }

    pub(crate) fn file(&self) -> PathBuf {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_file(&self, p: PathBuf) {
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn set_mtime(&self, t: Option<SystemTime>) {
        *self.mtime.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    fn mtime(&self) -> Option<SystemTime> {
        *self.mtime.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a zone file did not (re)load.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file could not be opened.
    Open(String),
    /// The SOA serial is the one already loaded: nothing to do (CoreDNS `serialErr`).
    NoChange,
    /// A syntax or data error, with `file:line:col`.
    Parse(String),
}

/// Reads a zone file for `origin` (CoreDNS `file.Parse`): `$INCLUDE` is allowed, relative to the
/// including file. When `serial` is given and the file's first SOA has that serial, the file is
/// not read further ([`LoadError::NoChange`]).
pub(crate) fn load(path: &Path, origin: &Name, serial: Option<u32>) -> Result<Zone, LoadError> {
    let text = std::fs::read(path).map_err(|e| LoadError::Open(e.to_string()))?;
    let text = String::from_utf8_lossy(&text);
    let name = path.display().to_string();
    let loader = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    let mut b = sextant_zone::Builder::new(origin);
    let mut seen_soa = false;
    let r = sextant_zone::parse_zone(&text, origin, &name, Some(&loader), &mut |rec: Record| {
        if !seen_soa {
            if let RData::Soa(s) = &rec.data {
                seen_soa = true;
                if serial == Some(s.serial) {
                    return Err("\u{0}nochange".to_string());
                }
            }
        }
        b.insert(rec).map_err(|e| e.to_string())
    });
    match r {
        Err(e) if e.msg == "\u{0}nochange" => return Err(LoadError::NoChange),
        Err(e) => {
            return Err(LoadError::Parse(format!(
                "failed to parse file {name:?} for origin {origin} with error {e}"
            )))
        }
        Ok(()) => {}
    }
    if !b.has_soa() {
        return Err(LoadError::Parse(format!(
            "file {name:?} has no SOA record for origin {origin}"
        )));
    }
    Ok(b.build())
}

/// Loads `slot` from its file at start-up; records the mtime.
pub(crate) fn load_slot(slot: &ZoneSlot) -> Result<(), LoadError> {
    let path = slot.file();
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let z = load(&path, &slot.origin, None)?;
    slot.set(z);
    slot.set_mtime(mtime);
    Ok(())
}

/// One reload check of a zone file (CoreDNS `Zone.Reload` tick): by serial, or by mtime when
/// `by_mtime`. Returns true when new data was loaded. Errors are logged; the old data stays.
pub(crate) fn reload_slot(log: PluginLog, slot: &ZoneSlot, by_mtime: bool) -> bool {
    let path = slot.file();
    let mut serial = slot.serial();
    let mut mtime = None;
    if by_mtime {
        match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Err(e) => {
                log.error(&format!(
                    "Failed to stat zone {:?} in {:?}: {e}",
                    slot.origin.to_string(),
                    path.display().to_string()
                ));
                return false;
            }
            Ok(t) => {
                if slot.mtime().is_some_and(|old| t <= old) {
                    return false;
                }
                mtime = Some(t);
                serial = Some(0);
            }
        }
    }
    match load(&path, &slot.origin, serial) {
        Ok(z) => {
            let s = z.serial().unwrap_or(0);
            slot.set(z);
            if mtime.is_some() {
                slot.set_mtime(mtime);
            }
            log.info(&format!(
                "Successfully reloaded zone {:?} in {:?} with {s} SOA serial",
                slot.origin.to_string(),
                path.display().to_string()
            ));
            true
        }
        Err(LoadError::NoChange) => false,
        Err(LoadError::Open(e)) => {
            log.error(&format!(
                "Failed to open zone {:?} in {:?}: {e}",
                slot.origin.to_string(),
                path.display().to_string()
            ));
            false
        }
        Err(LoadError::Parse(e)) => {
            log.error(&format!("Parsing zone {:?}: {e}", slot.origin.to_string()));
            false
        }
    }
}

/// The longest of `slots` whose origin `qname` is in (CoreDNS `plugin.Zones.Matches`).
pub(crate) fn longest<'s>(slots: &'s [Arc<ZoneSlot>], qname: &Name) -> Option<&'s Arc<ZoneSlot>> {
    let mut best: Option<&Arc<ZoneSlot>> = None;
    for s in slots {
        if qname.is_subdomain_of(&s.origin)
            && best.is_none_or(|b| s.origin.label_count() > b.origin.label_count())
        {
            best = Some(s);
        }
    }
    best
}

/// The reply from a zone slot for a query `file` (or `auto`, `secondary`) is authoritative for
/// (CoreDNS `File.ServeDNS` after the zone was found, NOTIFY handled by the caller): REFUSED
/// for transfers (no `transfer` plugin took them), SERVFAIL when expired or without data, the
/// fast path for plain positive answers, else the full lookup with CNAME targets outside the
/// zone resolved through the server; an empty answer for a missing name falls through when
/// `fall` says so.
pub(crate) async fn answer(
    plugin: &'static str,
    log: PluginLog,
    slot: &ZoneSlot,
    fall: &Fall,
    req: &mut Request,
    next: Next<'_>,
) -> Outcome {
    let qtype = req.qtype();
    if qtype == RType::AXFR || qtype == RType::IXFR {
        return Outcome::rcode(plugin, Rcode::REFUSED);
    }
    if slot.is_expired() {
        log.error(&format!("Zone {} is expired", slot.origin));
        return Outcome::rcode(plugin, Rcode::SERVFAIL);
    }
    let Some(z) = slot.zone() else {
        return Outcome::rcode(plugin, Rcode::SERVFAIL);
    };
    let dnssec = req.do_bit();
    // The fast path gives what the lookup gives without DO; with DO that is the same answer as
    // long as the zone holds no signatures (an unsigned zone, or one `dnssec` signs online).
    if !dnssec || !z.is_signed() {
        if let Some(q) = req.msg.question() {
            let h = &req.msg.header;
            if let Some(w) = z.fast_reply(h.id, h.rd, h.cd, q.name.wire(), q.qtype, q.qclass) {
                return Outcome::wire(plugin, w);
            }
        }
    }
    let qname = req.qname().to_lowercase();
    let mut l: Lookup = z.lookup(&qname, qtype, dnssec, req.depth);
    if let Some(x) = l.external.clone() {
        let out = req.resolve(x.target.clone(), x.qtype).await;
        // Re-entered lookups come back parsed (Site::resolve decodes).
        let reply = out.reply.as_ref().and_then(sextant_wire::Reply::as_message);
        let (answers, res) = match (reply, out.final_rcode()) {
            (Some(m), Rcode::NXDOMAIN) => (m.answers.clone(), Res::NameError),
            (Some(m), Rcode::SERVFAIL) => (m.answers.clone(), Res::ServerFailure),
            (Some(m), Rcode::NOERROR) if m.answers.is_empty() => (Vec::new(), Res::NoData),
            (Some(m), _) => (m.answers.clone(), Res::Success),
            (None, Rcode::NOERROR) => (Vec::new(), Res::Success),
            (None, _) => (Vec::new(), Res::ServerFailure),
        };
        l = z.finish_external(l, answers, res, dnssec);
    }
    if l.answer.is_empty()
        && (l.result == Res::NameError || l.result == Res::Success)
        && fall.through(&req.qname())
    {
        return next.run(req).await;
    }
    let mut m: Message = req.reply();
    m.header.aa = true;
    match l.result {
        Res::Success | Res::NoData => {}
        Res::NameError => m.set_rcode(Rcode::NXDOMAIN),
        Res::Delegation => {
            if l.answer.is_empty() {
                m.header.aa = false;
            }
        }
        Res::ServerFailure => {
            if l.answer.is_empty() {
                return Outcome::rcode(plugin, Rcode::SERVFAIL);
            }
            m.set_rcode(Rcode::SERVFAIL);
        }
    }
    m.answers = l.answer;
    m.authority = l.ns;
    m.additional = l.extra;
    Outcome::reply(plugin, m)
}

/// The records of the slot whose origin is `zone`, for a transfer with client serial `serial`
/// (0: AXFR): just the SOA when the serial is current, else the whole zone (CoreDNS
/// `Zone.Transfer`, IXFR fallback).
pub(crate) fn transfer(slots: &[Arc<ZoneSlot>], zone: &Name, serial: u32) -> Option<Vec<Record>> {
    let slot = slots.iter().find(|s| s.origin == *zone)?;
    let z = slot.zone()?;
    let soa = z.soa()?.clone();
    if serial != 0 && z.serial() == Some(serial) {
        return Some(vec![soa]);
    }
    Some(z.transfer_records())
}
