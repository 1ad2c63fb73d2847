//! The master-file parser: owners, TTLs and classes in either order, `$ORIGIN`, `$TTL`,
//! `$INCLUDE` (through a loader the caller gives, at most 7 deep) and `$GENERATE`, record data
//! of every known type and the RFC 3597 form. Records are handed out one at a time.

use sextant_wire::{Class, Name, Record};

use crate::codec::absolute_name;
use crate::lexer::{self, Line, Token};
use crate::{rdata, types, ZoneError};

/// The record sink: each record with its line.
type Emit<'a> = dyn FnMut(Record, usize) -> Result<(), String> + 'a;

/// Most `$INCLUDE` levels (as miekg/dns).
const MAX_INCLUDE_DEPTH: usize = 7;
/// Most records one `$GENERATE` may produce.
const MAX_GENERATE: u64 = 65536;

/// Reads an included file: given the path (already joined with the including file's
/// directory), returns its text or an error message.
pub type IncludeLoader<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// A TTL in seconds or BIND units (`1h30m`, `2d`, `1w`), as miekg/dns reads them.
pub fn ttl(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let (mut total, mut cur) = (0u32, 0u32);
    for c in s.chars() {
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            '0'..='9' => {
                cur = cur.wrapping_mul(10).wrapping_add(c as u32 - '0' as u32);
                continue;
            }
            _ => return None,
        };
        total = total.wrapping_add(cur.wrapping_mul(mult));
        cur = 0;
    }
    Some(total.wrapping_add(cur))
}

struct State<'a> {
    origin: Name,
    /// Default TTL and whether `$TTL` set it (a record's own TTL then does not replace it).
    default_ttl: Option<(u32, bool)>,
    owner: Option<Name>,
    file: String,
    depth: usize,
    include: Option<IncludeLoader<'a>>,
}

fn token_err(file: &str, t: &Token, msg: &str) -> ZoneError {
    ZoneError {
        file: file.to_string(),
        line: t.line,
        col: t.col,
        msg: format!("{msg}: {:?}", t.text),
    }
}

/// Parses zone text with `origin` as the initial `$ORIGIN`, calling `emit` for each record in
/// file order. `file` names the text in errors (`file:line:col: message`). Without `include`,
/// `$INCLUDE` is an error.
pub fn parse_zone(
    text: &str,
    origin: &Name,
    file: &str,
    include: Option<IncludeLoader<'_>>,
    emit: &mut dyn FnMut(Record) -> Result<(), String>,
) -> Result<(), ZoneError> {
    let mut st = State {
        origin: origin.clone(),
        default_ttl: None,
        owner: None,
        file: file.to_string(),
        depth: 0,
        include,
    };
    parse_text(&mut st, text, &mut |r, _| emit(r))
}

/// Parses records with a default TTL in force from the start (miekg/dns `ReadRR` reads a lone
/// record with TTL 3600 when it gives none), handing each record with its line; `$INCLUDE` is
/// not allowed. Used for DNSKEY key files.
pub(crate) fn parse_records_default_ttl(
    text: &str,
    origin: &Name,
    file: &str,
    default_ttl: u32,
    emit: &mut dyn FnMut(Record, usize) -> Result<(), String>,
) -> Result<(), ZoneError> {
    let mut st = State {
        origin: origin.clone(),
        default_ttl: Some((default_ttl, false)),
        owner: None,
        file: file.to_string(),
        depth: 0,
        include: None,
    };
    parse_text(&mut st, text, emit)
}

fn parse_text(st: &mut State<'_>, text: &str, emit: &mut Emit<'_>) -> Result<(), ZoneError> {
    for line in lexer::lines(text, &st.file)? {
        let first = &line.tokens[0];
        if !line.blank_start && first.text.starts_with('$') && !first.quoted {
            directive(st, &line, emit)?;
            continue;
        }
        record_line(st, &line, emit)?;
    }
    Ok(())
}

fn directive(st: &mut State<'_>, line: &Line, emit: &mut Emit<'_>) -> Result<(), ZoneError> {
    let t = &line.tokens;
    let d = &t[0];
    let file = st.file.clone();
    match d.text.to_ascii_uppercase().as_str() {
        "$ORIGIN" => {
            let v = t
                .get(1)
                .ok_or_else(|| token_err(&file, d, "expecting $ORIGIN value"))?;
            if let Some(extra) = t.get(2) {
                return Err(token_err(&file, extra, "garbage after $ORIGIN"));
            }
            st.origin = absolute_name(&v.text, &st.origin)
                .ok_or_else(|| token_err(&file, v, "bad origin name"))?;
        }
        "$TTL" => {
            let v = t
                .get(1)
                .ok_or_else(|| token_err(&file, d, "expecting $TTL value"))?;
            if let Some(extra) = t.get(2) {
                return Err(token_err(&file, extra, "garbage after $TTL"));
            }
            let v = ttl(&v.text)
                .ok_or_else(|| token_err(&file, v, "expecting $TTL value, not this..."))?;
            st.default_ttl = Some((v, true));
        }
        "$INCLUDE" => {
            let p = t
                .get(1)
                .ok_or_else(|| token_err(&file, d, "expecting $INCLUDE value"))?;
            let new_origin = match t.get(2) {
                Some(o) => absolute_name(&o.text, &st.origin)
                    .ok_or_else(|| token_err(&file, o, "bad origin name"))?,
                None => st.origin.clone(),
            };
            if let Some(extra) = t.get(3) {
                return Err(token_err(&file, extra, "garbage after $INCLUDE"));
            }
            let Some(loader) = st.include else {
                return Err(token_err(&file, d, "$INCLUDE directive not allowed"));
            };
            if st.depth >= MAX_INCLUDE_DEPTH {
                return Err(token_err(&file, p, "too deeply nested $INCLUDE"));
            }
            let path = if p.text.starts_with('/') {
                p.text.clone()
            } else {
                match std::path::Path::new(&st.file).parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => {
                        dir.join(&p.text).to_string_lossy().into_owned()
                    }
                    _ => p.text.clone(),
                }
            };
            let text = loader(&path)
                .map_err(|e| token_err(&file, p, &format!("failed to open `{path}': {e}")))?;
            let mut sub = State {
                origin: new_origin,
                default_ttl: st.default_ttl,
                owner: None,
                file: path,
                depth: st.depth + 1,
                include: st.include,
            };
            parse_text(&mut sub, &text, emit)?;
        }
        "$GENERATE" => generate(st, line, emit)?,
        _ => return Err(token_err(&file, d, "unknown directive")),
    }
    Ok(())
}

fn record_line(st: &mut State<'_>, line: &Line, emit: &mut Emit<'_>) -> Result<(), ZoneError> {
    let toks = &line.tokens;
    let file = st.file.clone();
    let mut i = 0;
    let owner = if line.blank_start {
        match &st.owner {
            Some(o) => o.clone(),
            None => {
                return Err(token_err(
                    &file,
                    &toks[0],
                    "no owner name before this record",
                ))
            }
        }
    } else {
        let t = &toks[0];
        i = 1;
        if t.quoted {
            return Err(token_err(&file, t, "bad owner name"));
        }
        absolute_name(&t.text, &st.origin).ok_or_else(|| token_err(&file, t, "bad owner name"))?
    };
    st.owner = Some(owner.clone());
    let mut rec_ttl: Option<u32> = None;
    let mut class: Option<Class> = None;
    let rtype = loop {
        let Some(t) = toks.get(i) else {
            let last = toks.last().unwrap_or(&toks[0]);
            return Err(token_err(&file, last, "expecting RR type"));
        };
        i += 1;
        if !t.quoted {
            if let Some(rt) = types::rtype_from_name(&t.text) {
                break rt;
            }
            if class.is_none() {
                if let Some(c) = types::class_from_name(&t.text) {
                    class = Some(c);
                    continue;
                }
            }
            if rec_ttl.is_none() {
                if let Some(v) = ttl(&t.text) {
                    rec_ttl = Some(v);
                    continue;
                }
            }
        }
        return Err(token_err(
            &file,
            t,
            "expecting RR type, TTL or class, not this...",
        ));
    };
    // Meta types (OPT, TKEY, TSIG, IXFR, AXFR, MAILB, MAILA, ANY) are not zone data.
    if rtype.0 == 41 || (249..=255).contains(&rtype.0) {
        return Err(token_err(&file, &toks[i - 1], "bad RR type"));
    }
    let ttl = match rec_ttl {
        Some(v) => {
            if !st.default_ttl.is_some_and(|(_, by_directive)| by_directive) {
                st.default_ttl = Some((v, false));
            }
            v
        }
        None => match st.default_ttl {
            Some((v, _)) => v,
            // miekg/dns: a class before the type (and no TTL, no default yet) leaves the TTL
            // at 0 (the coredns/helm chart's `zoneFiles` example is written like this).
            None if class.is_some() => 0,
            None => {
                return Err(token_err(
                    &file,
                    &toks[i - 1],
                    "missing TTL with no previous value",
                ))
            }
        },
    };
    let rd = &toks[i..];
    if rd.is_empty() {
        return Err(token_err(
            &file,
            &toks[i - 1],
            &format!("no rdata for {}", types::rtype_name(rtype)),
        ));
    }
    let data = rdata::parse(rtype, rd, &st.origin).map_err(|(msg, t)| {
        let t = t.unwrap_or_else(|| toks[i - 1].clone());
        token_err(&file, &t, &msg)
    })?;
    let rec = Record {
        name: owner,
        rtype,
        class: class.unwrap_or(Class::IN),
        ttl,
        data,
    };
    emit(rec, line.line).map_err(|m| ZoneError {
        file: file.clone(),
        line: line.line,
        col: 1,
        msg: m,
    })
}

/// `${offset,width,base}` / `$` substitution of one `$GENERATE` template.
fn substitute(tpl: &str, i: i64) -> Option<String> {
    let b = tpl.as_bytes();
    let mut out = String::new();
    let mut k = 0;
    while k < b.len() {
        match b[k] {
            b'\\' if k + 1 < b.len() && b[k + 1] == b'$' => {
                out.push('$');
                k += 2;
            }
            b'$' if k + 1 < b.len() && b[k + 1] == b'{' => {
                let end = tpl[k..].find('}')? + k;
                let spec: Vec<&str> = tpl[k + 2..end].split(',').collect();
                let off: i64 = spec
                    .first()
                    .filter(|s| !s.is_empty())
                    .map_or(Some(0), |s| s.parse().ok())?;
                let width: usize = spec.get(1).map_or(Some(0), |s| s.parse().ok())?;
                let base = spec.get(2).copied().unwrap_or("d");
                let v = i.checked_add(off)?;
                if v < 0 || width > 255 {
                    return None;
                }
                let s = match base {
                    "d" => format!("{v:0width$}"),
                    "o" => format!("{v:0width$o}"),
                    "x" => format!("{v:0width$x}"),
                    "X" => format!("{v:0width$X}"),
                    _ => return None,
                };
                out.push_str(&s);
                k = end + 1;
            }
            b'$' => {
                out.push_str(&i.to_string());
                k += 1;
            }
            _ => {
                let ch = tpl[k..].chars().next()?;
                out.push(ch);
                k += ch.len_utf8();
            }
        }
    }
    Some(out)
}

fn generate(st: &mut State<'_>, line: &Line, emit: &mut Emit<'_>) -> Result<(), ZoneError> {
    let t = &line.tokens;
    let file = st.file.clone();
    let range = t
        .get(1)
        .ok_or_else(|| token_err(&file, &t[0], "expecting $GENERATE value"))?;
    let bad_range = || token_err(&file, range, "bad range in $GENERATE range");
    let (span, step) = match range.text.split_once('/') {
        Some((s, st)) => (s, st.parse::<i64>().map_err(|_| bad_range())?),
        None => (range.text.as_str(), 1),
    };
    let (a, b) = span.split_once('-').ok_or_else(bad_range)?;
    let (start, stop): (i64, i64) = (
        a.parse().map_err(|_| bad_range())?,
        b.parse().map_err(|_| bad_range())?,
    );
    if start < 0 || stop < start || step <= 0 || ((stop - start) / step) as u64 >= MAX_GENERATE {
        return Err(bad_range());
    }
    if t.len() < 4 {
        return Err(token_err(
            &file,
            t.last().unwrap_or(range),
            "garbage after $GENERATE",
        ));
    }
    let mut i = start;
    while i <= stop {
        let mut toks = Vec::with_capacity(t.len() - 2);
        for tok in &t[2..] {
            let text = substitute(&tok.text, i)
                .ok_or_else(|| token_err(&file, tok, "bad modifier in $GENERATE"))?;
            toks.push(Token {
                text,
                ..tok.clone()
            });
        }
        let l = Line {
            line: line.line,
            blank_start: false,
            tokens: toks,
        };
        record_line(st, &l, emit)?;
        i += step;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::{RData, RType};

    fn all(text: &str) -> Result<Vec<Record>, ZoneError> {
        let mut v = Vec::new();
        parse_zone(
            text,
            &Name::parse("example.org.").unwrap(),
            "db.test",
            None,
            &mut |r| {
                v.push(r);
                Ok(())
            },
        )?;
        Ok(v)
    }

    #[test]
    fn owners_ttls_classes() {
        let z = all("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n  NS ns\nwww 60 IN A 192.0.2.1\n IN 30 AAAA ::1\nmail MX 10 @\n$ORIGIN sub.example.org.\nx CNAME www.example.org.\n").unwrap();
        let s: Vec<String> = z.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            s,
            [
                "example.org.\t3600\tIN\tSOA\tns.example.org. h.example.org. 1 2 3 4 5",
                "example.org.\t3600\tIN\tNS\tns.example.org.",
                "www.example.org.\t60\tIN\tA\t192.0.2.1",
                "www.example.org.\t30\tIN\tAAAA\t::1",
                "mail.example.org.\t3600\tIN\tMX\t10 example.org.",
                "x.sub.example.org.\t3600\tIN\tCNAME\twww.example.org.",
            ]
        );
        // Without $TTL, the previous record's TTL is the default.
        let z = all("a 100 A 1.1.1.1\nb A 2.2.2.2\n").unwrap();
        assert_eq!(z[1].ttl, 100);
        // A class with neither TTL nor default: TTL 0, as CoreDNS 1.14.7 serves it.
        let z = all("a IN A 1.1.1.1\nb IN A 2.2.2.2\nc 5 IN A 3.3.3.3\nd IN A 4.4.4.4\n").unwrap();
        assert_eq!(z.iter().map(|r| r.ttl).collect::<Vec<_>>(), [0, 0, 5, 5]);
        assert_eq!(
            all("a A 1.1.1.1\n").unwrap_err().to_string(),
            "db.test:1:3: missing TTL with no previous value: \"A\""
        );
    }

    #[test]
    fn errors_name_file_line_column() {
        let e = all("$TTL 60\n@ SOA ns h 1 2 3 4 5\nwww A 1.2.3\n").unwrap_err();
        assert_eq!(e.to_string(), "db.test:3:7: bad A A: \"1.2.3\"");
        let e = all("$TTL 60\nwww BOGUS 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = all("$INCLUDE other\n").unwrap_err();
        assert!(
            e.to_string().contains("$INCLUDE directive not allowed"),
            "{e}"
        );
        let e = all("$TTL 60\nwww ( A\n").unwrap_err();
        assert_eq!(e.to_string(), "db.test:2:5: unbalanced brace");
    }

    #[test]
    fn include_and_generate() {
        let loader = |p: &str| -> Result<String, String> {
            match p {
                "dir/inc.db" => Ok("inc A 10.0.0.1\n$ORIGIN other.\nz A 10.0.0.2\n".to_string()),
                _ => Err("no such file".to_string()),
            }
        };
        let mut v = Vec::new();
        parse_zone(
            "$TTL 5\n$INCLUDE inc.db sub\nafter A 10.0.0.3\n$INCLUDE nope\n",
            &Name::parse("example.org.").unwrap(),
            "dir/db",
            Some(&loader),
            &mut |r| {
                v.push(r.name.to_string());
                Ok(())
            },
        )
        .map_err(|e| {
            assert_eq!(
                e.to_string(),
                "dir/db:4:10: failed to open `dir/nope': no such file: \"nope\""
            )
        })
        .unwrap_err();
        assert_eq!(
            v,
            ["inc.sub.example.org.", "z.other.", "after.example.org."]
        );
        let z =
            all("$TTL 5\n$GENERATE 1-3/2 host-$ A 10.0.0.${10}\n$GENERATE 0-1 ${0,2,x}.r PTR h$\n")
                .unwrap();
        let s: Vec<String> = z.iter().map(|r| format!("{} {}", r.name, r.data)).collect();
        assert_eq!(
            s,
            [
                "host-1.example.org. 10.0.0.11",
                "host-3.example.org. 10.0.0.13",
                "00.r.example.org. h0.example.org.",
                "01.r.example.org. h1.example.org."
            ]
        );
        assert_eq!(z[0].data, RData::A("10.0.0.11".parse().unwrap()));
        assert_eq!(z[2].rtype, RType::PTR);
    }

    #[test]
    fn ttl_units() {
        assert_eq!(ttl("1h30m"), Some(5400));
        assert_eq!(ttl("1W"), Some(604800));
        assert_eq!(ttl("90"), Some(90));
        assert_eq!(ttl("x"), None);
    }
}
