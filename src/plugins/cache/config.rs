//! Parsing of the `cache` directive and its block into [`Config`], with CoreDNS's defaults,
//! limits and error texts. No I/O.

use std::time::Duration;

use sextant_corefile::{Directive, Error, Token};
use sextant_wire::Name;

use crate::pkg::num::atoi;
use crate::pkg::{duration, zones};

/// Everything the Corefile says about one cache.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    /// Zones cached (normalised, lower-case FQDN).
    pub zones: Vec<Name>,
    pub pcap: i64,
    /// Max and min TTL for the success cache, seconds.
    pub pttl: u32,
    pub minpttl: u32,
    pub ncap: i64,
    pub nttl: u32,
    pub minnttl: u32,
    /// How long SERVFAIL/NOTIMP replies are cached.
    pub failttl: Duration,
    pub prefetch: u64,
    pub prefetch_window: Duration,
    pub prefetch_pct: u32,
    /// Zero = serve_stale off.
    pub stale_up_to: Duration,
    pub verify_stale: bool,
    pub verify_timeout: Duration,
    pub stale_ttl: u32,
    pub stale_recheck: Duration,
    pub prefer_positive: bool,
    /// Zones where the success / denial cache is off.
    pub pexcept: Vec<Name>,
    pub nexcept: Vec<Name>,
    pub keepttl: bool,
    /// The block's view name (metric label `view`), "" without one.
    pub view: String,
    /// `budget SIZE`: bytes shared by every cache of the Corefile that names a budget.
    pub budget: Option<u64>,
}

/// CoreDNS `defaultCap`.
pub(crate) const DEFAULT_CAP: i64 = 10000;
pub(crate) const MAX_TTL: u32 = 3600;
pub(crate) const MAX_NTTL: u32 = 1800;
pub(crate) const MIN_TTL: u32 = 5;

impl Config {
    pub(crate) fn new(zones: Vec<Name>) -> Config {
        Config {
            zones,
            pcap: DEFAULT_CAP,
            pttl: MAX_TTL,
            minpttl: MIN_TTL,
            ncap: DEFAULT_CAP,
            nttl: MAX_NTTL,
            minnttl: MIN_TTL,
            failttl: Duration::from_secs(MIN_TTL as u64),
            prefetch: 0,
            prefetch_window: Duration::from_secs(60),
            prefetch_pct: 10,
            stale_up_to: Duration::ZERO,
            verify_stale: false,
            verify_timeout: Duration::ZERO,
            stale_ttl: 0,
            stale_recheck: Duration::ZERO,
            prefer_positive: false,
            pexcept: Vec::new(),
            nexcept: Vec::new(),
            keepttl: false,
            view: String::new(),
            budget: None,
        }
    }
}

fn duration(d: &Directive, t: &Token, what: &str) -> Result<Duration, Error> {
    duration::parse(&t.text).map_err(|_| {
        d.err_at(
            t,
            format!("invalid {what}: time: invalid duration {:?}", t.text),
        )
    })
}

fn ttl_arg(d: &Directive, t: &Token) -> Result<u32, Error> {
    let v = atoi(d, t)?;
    if v <= 0 {
        return Err(d.err_at(t, format!("cache TTL can not be zero or negative: {v}")));
    }
    Ok(v.min(u32::MAX as i64) as u32)
}

fn min_ttl_arg(d: &Directive, t: &Token) -> Result<u32, Error> {
    let v = atoi(d, t)?;
    if v < 0 {
        return Err(d.err_at(t, format!("cache min TTL can not be negative: {v}")));
    }
    Ok(v.min(u32::MAX as i64) as u32)
}

fn zone_names(d: &Directive, toks: &[Token]) -> Result<Vec<Name>, Error> {
    let mut out = Vec::new();
    for t in toks {
        let n = Name::parse(&t.text)
            .map_err(|_| d.err_at(t, format!("invalid disabled zone: {}", t.text)))?;
        out.push(n.to_lowercase());
    }
    Ok(out)
}

/// Parses the (single) `cache` line of a block with zones `block_zones`.
pub(crate) fn parse(d: &Directive, block_zones: &[String]) -> Result<Config, Error> {
    let mut args: &[Token] = &d.args;
    let mut c = Config::new(Vec::new());
    if let Some(first) = args.first() {
        if let Ok(ttl) = first.text.parse::<i64>() {
            if ttl <= 0 {
                return Err(d.err_at(
                    first,
                    format!("cache TTL can not be zero or negative: {ttl}"),
                ));
            }
            let ttl = ttl.min(u32::MAX as i64) as u32;
            c.pttl = ttl;
            c.nttl = ttl;
            args = &args[1..];
        }
    }
    c.zones = zones::from_args(d, args, block_zones)?;
    let mut stale_seen = false;
    let mut policy_seen = false;
    for sub in d.sub() {
        let a = &sub.args;
        match sub.name.text.as_str() {
            "success" | "denial" => {
                sub.arg_count(1, usize::MAX)?;
                let cap = atoi(sub, &a[0])?;
                let ttl = a.get(1).map(|t| ttl_arg(sub, t)).transpose()?;
                let min = a.get(2).map(|t| min_ttl_arg(sub, t)).transpose()?;
                let (pc, pt, pm) = if sub.name.text == "success" {
                    (&mut c.pcap, &mut c.pttl, &mut c.minpttl)
                } else {
                    (&mut c.ncap, &mut c.nttl, &mut c.minnttl)
                };
                *pc = cap;
                if let Some(t) = ttl {
                    *pt = t;
                }
                if let Some(m) = min {
                    *pm = m;
                }
            }
            "prefetch" => {
                sub.arg_count(1, 3)?;
                let amount = atoi(sub, &a[0])?;
                if amount < 0 {
                    return Err(sub.err_at(
                        &a[0],
                        format!("prefetch amount should be positive: {amount}"),
                    ));
                }
                c.prefetch = amount as u64;
                if let Some(t) = a.get(1) {
                    c.prefetch_window = duration(sub, t, "prefetch duration")?;
                }
                if let Some(t) = a.get(2) {
                    let Some(num) = t.text.strip_suffix('%') else {
                        let last = t.text.chars().last().unwrap_or(' ');
                        return Err(sub.err_at(
                            t,
                            format!("last character of percentage should be `%`, but is: '{last}'"),
                        ));
                    };
                    let tok = Token {
                        text: num.to_string(),
                        ..t.clone()
                    };
                    let n = atoi(sub, &tok)?;
                    if !(10..=90).contains(&n) {
                        return Err(
                            sub.err_at(t, format!("percentage should fall in range [10, 90]: {n}"))
                        );
                    }
                    c.prefetch_pct = n as u32;
                }
            }
            "serve_stale" => {
                stale_seen = true;
                sub.arg_count(0, 5)?;
                c.stale_up_to = Duration::from_secs(3600);
                c.stale_ttl = 0;
                c.stale_recheck = Duration::ZERO;
                c.verify_stale = false;
                c.verify_timeout = Duration::ZERO;
                if let Some(t) = a.first() {
                    c.stale_up_to = duration(sub, t, "serve_stale duration")?;
                }
                if let Some(t) = a.get(1) {
                    match t.text.to_ascii_lowercase().as_str() {
                        "immediate" => {}
                        "verify" => c.verify_stale = true,
                        other => {
                            return Err(sub.err_at(
                                t,
                                format!("invalid value for serve_stale refresh mode: {other}"),
                            ))
                        }
                    }
                }
                let mut rest = a.get(2..).unwrap_or(&[]);
                if c.verify_stale {
                    if let Some(t) = rest.first() {
                        c.verify_timeout = duration(sub, t, "serve_stale verify timeout")?;
                        rest = &rest[1..];
                    }
                } else if rest.len() > 2 {
                    sub.arg_count(0, 4)?;
                }
                if let Some(t) = rest.first() {
                    let ttl = duration(sub, t, "serve_stale response TTL")?;
                    if ttl.subsec_nanos() != 0 {
                        return Err(sub.err_at(
                            t,
                            "serve_stale response TTL must be a whole number of seconds",
                        ));
                    }
                    if ttl.as_secs() > u32::MAX as u64 {
                        return Err(
                            sub.err_at(t, "serve_stale response TTL exceeds the DNS TTL range")
                        );
                    }
                    c.stale_ttl = ttl.as_secs() as u32;
                }
                if let Some(t) = rest.get(1) {
                    let r = duration(sub, t, "serve_stale failure recheck")?;
                    if r > Duration::from_secs(300) {
                        return Err(
                            sub.err_at(t, "serve_stale failure recheck cannot exceed 5 minutes")
                        );
                    }
                    c.stale_recheck = r;
                }
            }
            "serve_stale_policy" => {
                if policy_seen {
                    return Err(sub.err("serve_stale_policy can only be specified once"));
                }
                policy_seen = true;
                sub.arg_count(1, 1)?;
                if a[0].text.eq_ignore_ascii_case("prefer_positive") {
                    c.prefer_positive = true;
                } else {
                    return Err(
                        sub.err_at(&a[0], format!("invalid serve_stale_policy: {}", a[0].text))
                    );
                }
            }
            "servfail" => {
                sub.arg_count(1, 1)?;
                let dur = duration(sub, &a[0], "servfail duration")?;
                if dur > Duration::from_secs(300) {
                    return Err(sub.err_at(
                        &a[0],
                        "caching SERVFAIL responses over 5 minutes is not permitted",
                    ));
                }
                c.failttl = dur;
            }
            "disable" => {
                sub.arg_count(1, usize::MAX)?;
                let zones = if a.len() > 1 {
                    zone_names(sub, &a[1..])?
                } else {
                    vec![Name::root()]
                };
                match a[0].text.as_str() {
                    "success" => c.pexcept = zones,
                    "denial" => c.nexcept = zones,
                    _ => {
                        return Err(sub.err_at(
                            &a[0],
                            "cache type for disable must be \"success\" or \"denial\"",
                        ))
                    }
                }
            }
            "keepttl" => {
                sub.arg_count(0, 0)?;
                c.keepttl = true;
            }
            "budget" => {
                sub.arg_count(1, 1)?;
                let size = crate::pkg::num::size(sub, &a[0])?;
                c.budget = Some(size);
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    if policy_seen && !stale_seen {
        return Err(d.err("serve_stale_policy requires serve_stale"));
    }
    Ok(c)
}
