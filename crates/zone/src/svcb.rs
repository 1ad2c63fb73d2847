//! SVCB/HTTPS service parameters (RFC 9460) in presentation format → wire form. No I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::codec::base64_decode;
use crate::lexer::Token;
use crate::rdata::unescape;

fn key_number(k: &str) -> Option<u16> {
    Some(match k {
        "mandatory" => 0,
        "alpn" => 1,
        "no-default-alpn" => 2,
        "port" => 3,
        "ipv4hint" => 4,
        "ech" => 5,
        "ipv6hint" => 6,
        "dohpath" => 7,
        "ohttp" => 8,
        _ => return k.strip_prefix("key").and_then(|n| n.parse().ok()),
    })
}

/// Splits a comma-separated value, honouring `\,` escapes.
fn split_commas(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for ch in v.chars() {
        if esc {
            if ch != ',' {
                cur.push('\\');
            }
            cur.push(ch);
            esc = false;
        } else if ch == '\\' {
            esc = true;
        } else if ch == ',' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    out.push(cur);
    out
}

/// The parameters of the remaining tokens, sorted by key, in wire form.
pub(crate) fn params(toks: &[Token]) -> Result<Vec<u8>, (String, Option<Token>)> {
    let mut ps: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let bad = |m: &str| Err((m.to_string(), Some(t.clone())));
        let (k, mut v) = match t.text.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (t.text.clone(), None),
        };
        if v.as_deref() == Some("") {
            // `key="value"`: the lexer split the quoted value off.
            match toks.get(i + 1) {
                Some(n) if n.quoted => {
                    v = Some(n.text.clone());
                    i += 1;
                }
                _ => v = Some(String::new()),
            }
        }
        i += 1;
        let Some(key) = key_number(&k) else {
            return bad("Key");
        };
        if ps.iter().any(|(x, _)| *x == key) {
            return bad("Key (duplicate)");
        }
        let val = v.unwrap_or_default();
        let mut w = Vec::new();
        match key {
            0 => {
                for m in val.split(',') {
                    match key_number(m) {
                        Some(n) => w.extend_from_slice(&n.to_be_bytes()),
                        None => return bad("mandatory"),
                    }
                }
            }
            1 => {
                for a in split_commas(&val) {
                    let Some(b) = unescape(&a) else {
                        return bad("alpn");
                    };
                    if b.is_empty() || b.len() > 255 {
                        return bad("alpn");
                    }
                    w.push(b.len() as u8);
                    w.extend(b);
                }
            }
            2 | 8 => {
                if !val.is_empty() {
                    return bad("Value (must be empty)");
                }
            }
            3 => match val.parse::<u16>() {
                Ok(p) => w.extend_from_slice(&p.to_be_bytes()),
                Err(_) => return bad("port"),
            },
            4 => {
                for a in val.split(',') {
                    match a.parse::<Ipv4Addr>() {
                        Ok(ip) => w.extend_from_slice(&ip.octets()),
                        Err(_) => return bad("ipv4hint"),
                    }
                }
            }
            6 => {
                for a in val.split(',') {
                    match a.parse::<Ipv6Addr>() {
                        Ok(ip) => w.extend_from_slice(&ip.octets()),
                        Err(_) => return bad("ipv6hint"),
                    }
                }
            }
            5 => match base64_decode(&val) {
                Some(b) => w.extend(b),
                None => return bad("ech"),
            },
            _ => match unescape(&val) {
                Some(b) => w.extend(b),
                None => return bad("Value"),
            },
        }
        ps.push((key, w));
    }
    ps.sort_by_key(|(k, _)| *k);
    let mut out = Vec::new();
    for (k, v) in ps {
        out.extend_from_slice(&k.to_be_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend(v);
    }
    Ok(out)
}
