//! One resource record from its RFC 1035 presentation form, the way miekg/dns's `NewRR` reads
//! what a `template` produces: `OWNER [TTL] [CLASS] TYPE RDATA` (TTL and class in either
//! order), origin `.`, TTL 3600 when none is given, parentheses joining lines, `;` comments,
//! quoted character strings. Types: A, AAAA, NS, CNAME, PTR, DNAME, MX, SRV, TXT, SOA, HINFO,
//! CAA and any type in RFC 3597 form (`TYPE123 \# LEN HEX`). This could move to `sextant_wire`
//! when a zone-file reader needs it too. No I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use sextant_wire::{Class, Name, RData, RType, Record, Soa, Srv};

/// miekg/dns's default TTL for records that give none.
const DEFAULT_TTL: u32 = 3600;

/// A token and whether it was quoted.
type Tok = (String, bool);

fn tokens(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    let mut depth = 0usize;
    while let Some(&c) = it.peek() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if c == '\n' && depth == 0 && !out.is_empty() {
                    // A record ends at the end of its line (outside parentheses).
                    let rest: String = it.clone().collect();
                    if !rest.trim().is_empty() && !rest.trim_start().starts_with(';') {
                        return Err("dns: extra text after the record".to_string());
                    }
                    break;
                }
                it.next();
            }
            ';' => {
                for c in it.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' => {
                depth += 1;
                it.next();
            }
            ')' => {
                depth = depth.checked_sub(1).ok_or("dns: extra closing brace")?;
                it.next();
            }
            '"' => {
                it.next();
                let mut t = String::new();
                loop {
                    match it.next() {
                        None => return Err("dns: unbalanced quotes".to_string()),
                        Some('"') => break,
                        Some('\\') => {
                            t.push('\\');
                            if let Some(e) = it.next() {
                                t.push(e);
                            }
                        }
                        Some(c) => t.push(c),
                    }
                }
                out.push((t, true));
            }
            _ => {
                let mut t = String::new();
                while let Some(&c) = it.peek() {
                    if matches!(c, ' ' | '\t' | '\r' | '\n' | ';' | '(' | ')' | '"') {
                        break;
                    }
                    if c == '\\' {
                        t.push(c);
                        it.next();
                        if let Some(e) = it.next() {
                            t.push(e);
                        }
                        continue;
                    }
                    t.push(c);
                    it.next();
                }
                out.push((t, false));
            }
        }
    }
    if depth != 0 {
        return Err("dns: unbalanced brace".to_string());
    }
    Ok(out)
}

/// A name relative to the root origin (`@` is the root).
fn name(t: &str) -> Result<Name, String> {
    if t == "@" {
        return Ok(Name::root());
    }
    let full = if t.ends_with('.') && !t.ends_with("\\.") {
        t.to_string()
    } else {
        format!("{t}.")
    };
    Name::parse(&full).map_err(|e| format!("dns: bad name {t:?}: {e}"))
}

/// A TTL: seconds, or a BIND duration (`1h30m`, `2d`, `1w`).
fn ttl(t: &str) -> Option<u32> {
    if let Ok(n) = t.parse::<u32>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in t.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).checked_mul(10)?.checked_add(d as u64)?);
            continue;
        }
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return None,
        };
        total = total.checked_add(num.take()?.checked_mul(mult)?)?;
    }
    if let Some(n) = num {
        total = total.checked_add(n)?;
    }
    u32::try_from(total).ok()
}

fn class(t: &str) -> Option<Class> {
    Class::from_name(t)
}

fn rtype(t: &str) -> Option<RType> {
    RType::from_name(t)
}

fn num<T: std::str::FromStr>(t: &str, what: &str) -> Result<T, String> {
    t.parse().map_err(|_| format!("dns: bad {what} {t:?}"))
}

/// A character string as written (escapes `\X` and `\DDD` resolved).
fn char_string(t: &str) -> Result<Vec<u8>, String> {
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
                let v: u32 = t[i + 1..i + 4].parse().unwrap_or(256);
                out.push(u8::try_from(v).map_err(|_| "dns: bad escape in string")?);
                i += 4;
            } else {
                out.push(b[i + 1]);
                i += 2;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.len() > 255 {
        return Err("dns: character string longer than 255".to_string());
    }
    Ok(out)
}

/// Parses one record. An empty or comment-only text gives `None`, as `NewRR` does.
pub(crate) fn parse_rr(text: &str) -> Result<Option<Record>, String> {
    let toks = tokens(text)?;
    let Some(((owner, _), rest)) = toks.split_first() else {
        return Ok(None);
    };
    if text.starts_with([' ', '\t']) {
        return Err("dns: no owner name (a record may not start with a blank)".to_string());
    }
    let owner = name(owner)?;
    let mut i = 0;
    let mut ttl_v = None;
    let mut class_v = None;
    while i < rest.len() {
        let (t, _) = &rest[i];
        if ttl_v.is_none() && t.starts_with(|c: char| c.is_ascii_digit()) {
            ttl_v = Some(ttl(t).ok_or_else(|| format!("dns: bad TTL {t:?}"))?);
            i += 1;
        } else if class_v.is_none() && class(t).is_some() && rtype(t).is_none() {
            class_v = class(t);
            i += 1;
        } else {
            break;
        }
    }
    let Some((tname, _)) = rest.get(i) else {
        return Err("dns: missing type".to_string());
    };
    let t = rtype(tname).ok_or_else(|| format!("dns: unknown RR type {tname:?}"))?;
    let rd: Vec<&str> = rest[i + 1..].iter().map(|(s, _)| s.as_str()).collect();
    let want = |n: usize| -> Result<(), String> {
        if rd.len() == n {
            Ok(())
        } else {
            Err(format!(
                "dns: bad {tname} rdata: {} fields, want {n}",
                rd.len()
            ))
        }
    };
    let data = if rd.first() == Some(&"\\#") {
        // RFC 3597: \# LENGTH HEX...
        let len: usize = num(rd.get(1).copied().unwrap_or(""), "length")?;
        let hex: String = rd[2.min(rd.len())..].concat();
        if hex.len() != len * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("dns: bad RFC 3597 rdata".to_string());
        }
        let bytes = (0..len)
            .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap_or(0))
            .collect();
        RData::Unknown(bytes)
    } else {
        match t {
            RType::A => {
                want(1)?;
                RData::A(rd[0].parse::<Ipv4Addr>().map_err(|_| format!("dns: bad A {:?}", rd[0]))?)
            }
            RType::AAAA => {
                want(1)?;
                let a = rd[0].parse::<Ipv6Addr>().map_err(|_| format!("dns: bad AAAA {:?}", rd[0]))?;
                RData::Aaaa(a)
            }
            RType::NS => {
                want(1)?;
                RData::Ns(name(rd[0])?)
            }
            RType::CNAME => {
                want(1)?;
                RData::Cname(name(rd[0])?)
            }
            RType::PTR => {
                want(1)?;
                RData::Ptr(name(rd[0])?)
            }
            RType::DNAME => {
                want(1)?;
                RData::Dname(name(rd[0])?)
            }
            RType::MX => {
                want(2)?;
                RData::Mx {
                    preference: num(rd[0], "MX preference")?,
                    exchange: name(rd[1])?,
                }
            }
            RType::SRV => {
                want(4)?;
                RData::Srv(Srv {
                    priority: num(rd[0], "SRV priority")?,
                    weight: num(rd[1], "SRV weight")?,
                    port: num(rd[2], "SRV port")?,
                    target: name(rd[3])?,
                })
            }
            RType::SOA => {
                want(7)?;
                let n = |k: usize| ttl(rd[k]).ok_or_else(|| format!("dns: bad SOA field {:?}", rd[k]));
                RData::Soa(Soa {
                    mname: name(rd[0])?,
                    rname: name(rd[1])?,
                    serial: num(rd[2], "SOA serial")?,
                    refresh: n(3)?,
                    retry: n(4)?,
                    expire: n(5)?,
                    minimum: n(6)?,
                })
            }
            RType::TXT => {
                if rd.is_empty() {
                    RData::Txt(vec![Vec::new()])
                } else {
                    RData::Txt(rd.iter().map(|s| char_string(s)).collect::<Result<_, _>>()?)
                }
            }
            RType::HINFO => {
                want(2)?;
                RData::Hinfo {
                    cpu: char_string(rd[0])?,
                    os: char_string(rd[1])?,
                }
            }
            RType::CAA => {
                want(3)?;
                let flags: u8 = num(rd[0], "CAA flags")?;
                let tag = rd[1].as_bytes();
                if tag.is_empty() || tag.len() > 255 {
                    return Err("dns: bad CAA tag".to_string());
                }
                let mut b = vec![flags, tag.len() as u8];
                b.extend_from_slice(tag);
                b.extend_from_slice(&char_string(rd[2])?);
                RData::Unknown(b)
            }
            other => {
                return Err(format!(
                    "dns: {other} records in presentation form are not supported by Sextant (use RFC 3597 \\# form)"
                ))
            }
        }
    };
    Ok(Some(Record {
        name: owner,
        rtype: t,
        class: class_v.unwrap_or(Class::IN),
        ttl: ttl_v.unwrap_or(DEFAULT_TTL),
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        parse_rr(s).unwrap().unwrap().to_string()
    }

    #[test]
    fn the_forms_templates_produce() {
        assert_eq!(
            show("ip-1-2-3-4.example. 60 IN A 1.2.3.4"),
            "ip-1-2-3-4.example.\t60\tIN\tA\t1.2.3.4"
        );
        assert_eq!(
            show("a.example. 60 in aaaa 2001:db8::1"),
            "a.example.\t60\tIN\tAAAA\t2001:db8::1"
        );
        assert_eq!(
            show("foogle.com 60 IN CNAME google.com"),
            "foogle.com.\t60\tIN\tCNAME\tgoogle.com."
        );
        assert_eq!(show(". IN 0 A 192.0.2.53"), ".\t0\tIN\tA\t192.0.2.53");
        assert_eq!(
            show("x.example. A 10.0.0.1"),
            "x.example.\t3600\tIN\tA\t10.0.0.1"
        );
        assert_eq!(
            show("invalid. 60 CH SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"),
            "invalid.\t60\tCH\tSOA\tns.invalid. hostmaster.invalid. 1 60 60 60 60"
        );
        assert_eq!(show("e. 60 IN MX 10 mx.e."), "e.\t60\tIN\tMX\t10 mx.e.");
        assert_eq!(
            show("_s._tcp.e. 60 IN SRV 0 5 80 w.e."),
            "_s._tcp.e.\t60\tIN\tSRV\t0 5 80 w.e."
        );
        assert_eq!(
            show("t.e. 60 IN TXT \"a b\" c ; note"),
            "t.e.\t60\tIN\tTXT\t\"a b\" \"c\""
        );
        assert_eq!(show("p.e. 1h IN PTR h.e."), "p.e.\t3600\tIN\tPTR\th.e.");
        assert_eq!(
            show("u.e. 60 IN TYPE999 \\# 2 abcd"),
            "u.e.\t60\tIN\tTYPE999\t\\# 2 abcd"
        );
        assert!(parse_rr("").unwrap().is_none());
    }

    #[test]
    fn bad_records_are_errors() {
        for s in [
            "x.e. 60 IN A 300.1.1.1",
            "x.e. 60 IN A",
            "x.e. 60 IN BOGUS 1",
            "x.e. 60 IN MX x y",
            "x.e. 60 IN SOA a. b. (1 2 3",
            "x.e. 60 IN TXT \"open",
            " x.e. 60 IN A 1.2.3.4",
            "x.e. 60 IN A 1.2.3.4\ny.e. 60 IN A 1.2.3.4",
        ] {
            assert!(parse_rr(s).is_err(), "{s}");
        }
    }
}
