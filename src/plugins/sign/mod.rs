//! The `sign` plugin (CoreDNS `plugin/sign`): signs zone files offline into
//! `<directory>/db.<zone>.signed` for `file` or `auto` to serve — DNSKEY, CDS and CDNSKEY of the
//! keys at the apex, the SOA serial set to the signing time, an NSEC chain, RRSIGs valid for
//! 32 days (plus up to 5 days of jitter) from 3 hours back (minus up to 18 hours) — when the
//! generation starts and every 5 hours, whenever the signed file is missing, its SOA signature
//! was made more than 6 days ago or expires within 7 days. It serves nothing itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sextant_corefile::{Directive, Error};
use sextant_wire::{Name, RType, Record};
use sextant_zone::dnssec::{self, Resign, SigningKey, ZoneSigning};

use crate::log::PluginLog;
use crate::pkg::clock::Clock;
use crate::pkg::duration;
use crate::pkg::zones;
use crate::plugin::SetupCtx;

const LOG: PluginLog = PluginLog("sign");

const DAY: i64 = 86400;
/// Sign again when the SOA signature is older than this (6 days)...
const RESIGN_AFTER: i64 = 6 * DAY;
/// ...or expires within this (7 days).
const EXPIRE_WITHIN: i64 = 7 * DAY;
/// Signatures last 32 days...
const VALIDITY: i64 = 32 * DAY;
/// ...plus up to 5 days of jitter chosen per zone.
const EXPIRATION_JITTER: i64 = 5 * DAY;
/// They start 3 hours back...
const INCEPTION_BACK: i64 = 3 * 3600;
/// ...minus up to 18 hours of jitter.
const INCEPTION_JITTER: i64 = 18 * 3600;
/// The signed files are checked every 5 hours.
const REFRESH: Duration = Duration::from_secs(5 * 3600);

/// One zone to sign.
#[derive(Debug)]
pub(crate) struct ZoneSigner {
    pub(crate) origin: Name,
    pub(crate) dbfile: PathBuf,
    pub(crate) directory: PathBuf,
    pub(crate) keys: Vec<Arc<SigningKey>>,
    /// Seconds taken off the inception (0..18 h) and added to the expiration (0..5 days).
    pub(crate) jitter_inception: i64,
    pub(crate) jitter_expiration: i64,
}

impl ZoneSigner {
    /// `db.<origin>signed` (the origin ends with a dot).
    pub(crate) fn signed_name(&self) -> String {
        format!("db.{}signed", self.origin)
    }

    pub(crate) fn signed_path(&self) -> PathBuf {
        self.directory.join(self.signed_name())
    }
}

/// Reads `key file` arguments (CoreDNS `keyParse`): every key must be a KSK or CSK unless there
/// is a KSK among them, in which case ZSKs sign everything but the DNSKEY RRset.
fn key_files(sub: &Directive) -> Result<Vec<Arc<SigningKey>>, Error> {
    let Some(kind) = sub.args.first() else {
        return Err(sub.arg_err(&sub.name));
    };
    match kind.text.as_str() {
        "file" => {
            if sub.args.len() < 2 {
                return Err(sub.err("Wrong argument count or unexpected line ending after 'file'"));
            }
            let mut keys = Vec::new();
            for a in &sub.args[1..] {
                let k = crate::pkg::keyfile::read_key(&a.text, Path::new("."))
                    .map_err(|e| sub.err_at(a, e))?;
                keys.push((a, Arc::new(k)));
            }
            if !keys.iter().any(|(_, k)| k.is_ksk()) {
                if let Some((a, _)) = keys.iter().find(|(_, k)| !k.is_ksk()) {
                    let stem = a
                        .text
                        .strip_suffix(".key")
                        .or_else(|| a.text.strip_suffix(".private"))
                        .unwrap_or(&a.text);
                    return Err(sub.err_at(a, format!("DNSKEY in \"{stem}.key\" is not a CSK/KSK")));
                }
            }
            Ok(keys.into_iter().map(|(_, k)| k).collect())
        }
        "directory" => Err(sub.err_at(kind, "directory: not implemented")),
        // CoreDNS reads no key for another word.
        _ => Ok(Vec::new()),
    }
}

pub(crate) fn parse(lines: &[&Directive], block: &[String]) -> Result<Vec<ZoneSigner>, Error> {
    let mut out = Vec::new();
    for d in lines {
        let Some(db) = d.args.first() else {
            return Err(d.arg_err(&d.name));
        };
        if db.text.contains('\u{FFFD}') {
            return Err(d.err_at(
                db,
                format!("dbfile {:?} contains invalid characters", db.text),
            ));
        }
        let origins = zones::from_args(d, &d.args[1..], block)?;
        let mut keys: Vec<Arc<SigningKey>> = Vec::new();
        let mut directory = PathBuf::from("/var/lib/coredns");
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "key" => keys.extend(key_files(sub)?),
                "directory" => {
                    if sub.args.len() != 1 {
                        return Err(sub.err("can only be one argument after \"directory\""));
                    }
                    directory = PathBuf::from(&sub.args[0].text);
                }
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
        for o in origins {
            out.push(ZoneSigner {
                origin: o,
                dbfile: PathBuf::from(&db.text),
                directory: directory.clone(),
                keys: keys.clone(),
                jitter_inception: (rand::random::<f64>() * INCEPTION_JITTER as f64) as i64,
                jitter_expiration: (rand::random::<f64>() * EXPIRATION_JITTER as f64) as i64,
            });
        }
    }
    Ok(out)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let signers: Vec<Arc<ZoneSigner>> = parse(lines, &ctx.block.zones)?
        .into_iter()
        .map(Arc::new)
        .collect();
    let clock = ctx.clock();
    // At the start every zone is checked (and signed if it must be); then every 5 hours.
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    ctx.periodic_now(REFRESH, move || {
        let first = !started.swap(true, std::sync::atomic::Ordering::Relaxed);
        for s in &signers {
            match why_resign(s, &clock) {
                None if first => LOG.info(&format!(
                    "Skipping signing zone {:?} in {:?}: signatures are valid",
                    s.origin.to_string(),
                    s.signed_path().display().to_string()
                )),
                None => {}
                Some(why) => sign_and_log(s, &why, &clock),
            }
        }
    });
    Ok(())
}

/// Seconds since 1970 of `t`.
fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Go's `2006-01-02T15:04:05.000Z07:00` in UTC.
pub(crate) fn go_time(secs: i64, millis: u32) -> String {
    let s = dnssec::sig_time_string(secs.rem_euclid(1 << 32) as u32);
    format!(
        "{}-{}-{}T{}:{}:{}.{millis:03}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[8..10],
        &s[10..12],
        &s[12..14]
    )
}

fn go_wall(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    go_time(unix(t), ms)
}

/// Go's duration text of a number of seconds (negative with a `-`).
fn go_secs(s: i64) -> String {
    let d = duration::format(Duration::from_secs(s.unsigned_abs()));
    if s < 0 {
        format!("-{d}")
    } else {
        d
    }
}

/// Why `s`'s signed file must be made again, as CoreDNS words it; None when it is fine.
pub(crate) fn why_resign(s: &ZoneSigner, clock: &Clock) -> Option<String> {
    let path = s.signed_path();
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!(
                "open {}: no such file or directory",
                path.display()
            ))
        }
        Err(e) => return Some(format!("open {}: {e}", path.display())),
    };
    let wall = clock.wall();
    let now = unix(wall);
    let nows = go_wall(wall);
    let r = dnssec::resign_reason(
        &text,
        &path.display().to_string(),
        now,
        RESIGN_AFTER,
        EXPIRE_WITHIN,
    )?;
    Some(match r {
        Resign::Old { inception } => format!(
            "inception {:?} was more than: {} ago from {nows}: {}",
            go_time(inception as i64, 0),
            go_secs(RESIGN_AFTER),
            go_secs(now - inception as i64)
        ),
        Resign::Future { inception } => format!(
            "inception {:?} date is in the future: {}",
            go_time(inception as i64, 0),
            go_secs(now - inception as i64)
        ),
        Resign::Expiring { expiration } => format!(
            "expiration {:?} is less than: {} away from {nows}: {}",
            go_time(expiration as i64, 0),
            go_secs(EXPIRE_WITHIN),
            go_secs(expiration as i64 - now)
        ),
        Resign::NoSoaSig => "no SOA RRSIG found in first 100 records".to_string(),
        Resign::Parse(e) => e,
    })
}

fn key_tags(keys: &[Arc<SigningKey>]) -> String {
    keys.iter()
        .map(|k| k.tag.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads the zone file as `sign` does: `$INCLUDE` allowed, DNSKEY, RRSIG, CDNSKEY and CDS left
/// out (the keys given are added instead), an SOA required.
fn read_zone(s: &ZoneSigner) -> Result<Vec<Record>, String> {
    let text = std::fs::read(&s.dbfile).map_err(|e| format!("open {}: {e}", s.dbfile.display()))?;
    let text = String::from_utf8_lossy(&text);
    let loader = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    let mut out = Vec::new();
    let mut soa = false;
    let file = s.dbfile.display().to_string();
    sextant_zone::parse_zone(&text, &s.origin, &file, Some(&loader), &mut |r: Record| {
        match r.rtype {
            RType::DNSKEY | RType::RRSIG | RType(59) | RType(60) => {}
            t => {
                soa |= t == RType::SOA;
                out.push(r);
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if !soa {
        return Err(format!("file {file:?} has no SOA record"));
    }
    Ok(out)
}

/// Signs the zone of `s` at `now` (seconds since 1970): the records of the signed zone.
pub(crate) fn sign_at(s: &ZoneSigner, now: i64) -> Result<Vec<Record>, String> {
    let records = read_zone(s)?;
    let owned: Vec<&SigningKey> = s.keys.iter().map(|k| k.as_ref()).collect();
    let incep = now - INCEPTION_BACK - s.jitter_inception;
    let expir = now + VALIDITY + s.jitter_expiration;
    let p = ZoneSigning {
        keys: &owned,
        inception: incep.rem_euclid(1 << 32) as u32,
        expiration: expir.rem_euclid(1 << 32) as u32,
        serial: now.rem_euclid(1 << 32) as u32,
    };
    dnssec::sign_zone(records, &s.origin, &p)
}

/// Writes the signed zone to a temporary file in the directory and moves it into place.
fn write(s: &ZoneSigner, records: &[Record]) -> Result<(), String> {
    use std::io::Write;
    let mut text = String::with_capacity(records.len() * 64);
    for r in records {
        text.push_str(&dnssec::record_text(r));
        text.push('\n');
    }
    let tmp = s.directory.join(format!(
        "signed-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, s.signed_path())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| e.to_string())
}

fn sign_and_log(s: &ZoneSigner, why: &str, clock: &Clock) {
    let wall = clock.wall();
    let now = unix(wall);
    let start = Instant::now();
    let next = go_wall(wall + REFRESH);
    let res = sign_at(s, now);
    LOG.info(&format!("Signing {:?} because {why}", s.origin.to_string()));
    let records = match res {
        Ok(r) => r,
        Err(e) => {
            LOG.warning(&format!(
                "Error signing {:?} with key tags {:?} in {}: {e}, next: {next}",
                s.origin.to_string(),
                key_tags(&s.keys),
                duration::format(start.elapsed()),
            ));
            return;
        }
    };
    if let Err(e) = write(s, &records) {
        LOG.warning(&format!(
            "Error signing {:?}: failed to move zone file into place: {e}",
            s.origin.to_string()
        ));
        return;
    }
    let serial = records
        .first()
        .and_then(|r| match &r.data {
            sextant_wire::RData::Soa(soa) => Some(soa.serial),
            _ => None,
        })
        .unwrap_or(0);
    LOG.info(&format!(
        "Successfully signed zone {:?} in {:?} with key tags {:?} and {serial} SOA serial, elapsed {:.6}, next: {next}",
        s.origin.to_string(),
        s.signed_path().display().to_string(),
        key_tags(&s.keys),
        start.elapsed().as_secs_f64(),
    ));
}

#[cfg(test)]
mod tests;
