//! Record data in presentation format → wire form, for every type the zone parser knows, and
//! the RFC 3597 `\# LEN HEX` form for any type. Names inside record data are written
//! uncompressed. No I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use sextant_wire::{Name, RData, RType, Soa, Srv};

use crate::codec::{absolute_name, base32hex_decode, base64_decode, hex_decode};
use crate::lexer::Token;
use crate::types::{self, T};

/// An error in record data: the message and the token it is about (None: the record's end).
pub(crate) type RdataError = (String, Option<Token>);

/// Reads the tokens of one record's data.
pub(crate) struct Cursor<'a> {
    toks: &'a [Token],
    i: usize,
    origin: &'a Name,
    tname: String,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(toks: &'a [Token], origin: &'a Name, rtype: RType) -> Cursor<'a> {
        Cursor {
            toks,
            i: 0,
            origin,
            tname: rtype.to_string(),
        }
    }

    fn err<T>(&self, what: &str, t: Option<&Token>) -> Result<T, RdataError> {
        Err((format!("bad {} {what}", self.tname), t.cloned()))
    }

    fn next(&mut self, what: &str) -> Result<&'a Token, RdataError> {
        match self.toks.get(self.i) {
            Some(t) => {
                self.i += 1;
                Ok(t)
            }
            None => self.err(what, self.toks.last()),
        }
    }

    fn done(&self) -> bool {
        self.i >= self.toks.len()
    }

    fn end(&self) -> Result<(), RdataError> {
        match self.toks.get(self.i) {
            None => Ok(()),
            Some(t) => Err((
                format!("garbage after {} rdata", self.tname),
                Some(t.clone()),
            )),
        }
    }

    fn rest(&mut self) -> &'a [Token] {
        let r = &self.toks[self.i.min(self.toks.len())..];
        self.i = self.toks.len();
        r
    }

    fn num<N: std::str::FromStr>(&mut self, what: &str) -> Result<N, RdataError> {
        let t = self.next(what)?;
        match t.text.parse() {
            Ok(v) if !t.quoted => Ok(v),
            _ => self.err(what, Some(t)),
        }
    }

    fn name(&mut self, what: &str) -> Result<Name, RdataError> {
        let t = self.next(what)?;
        match absolute_name(&t.text, self.origin) {
            Some(n) if !t.quoted => Ok(n),
            _ => self.err(what, Some(t)),
        }
    }

    /// A TTL-like duration (`3600`, `1h`, `1d2h`).
    fn ttl(&mut self, what: &str) -> Result<u32, RdataError> {
        let t = self.next(what)?;
        match crate::parse::ttl(&t.text) {
            Some(v) => Ok(v),
            None => self.err(what, Some(t)),
        }
    }

    /// One character-string (quoted or not), escapes decoded.
    fn char_string(&mut self, what: &str) -> Result<Vec<u8>, RdataError> {
        let t = self.next(what)?;
        match unescape(&t.text) {
            Some(v) if v.len() <= 255 => Ok(v),
            _ => self.err(what, Some(t)),
        }
    }

    /// The remaining tokens joined (base64 and hex may be split by blanks).
    fn joined(&mut self, what: &str) -> Result<(String, &'a Token), RdataError> {
        let first = self.toks.get(self.i);
        let Some(first) = first else {
            return self.err(what, self.toks.last());
        };
        let s: String = self.rest().iter().map(|t| t.text.as_str()).collect();
        Ok((s, first))
    }

    fn base64(&mut self, what: &str) -> Result<Vec<u8>, RdataError> {
        let (s, t) = self.joined(what)?;
        base64_decode(&s).map_or_else(|| self.err(what, Some(t)), Ok)
    }

    fn hex(&mut self, what: &str) -> Result<Vec<u8>, RdataError> {
        let (s, t) = self.joined(what)?;
        hex_decode(&s).map_or_else(|| self.err(what, Some(t)), Ok)
    }

    fn rtype(&mut self, what: &str) -> Result<RType, RdataError> {
        let t = self.next(what)?;
        types::rtype_from_name(&t.text).map_or_else(|| self.err(what, Some(t)), Ok)
    }

    /// An algorithm number or mnemonic (DNSKEY, DS, RRSIG, CERT).
    fn algorithm(&mut self, what: &str) -> Result<u8, RdataError> {
        let t = self.next(what)?;
        if let Ok(v) = t.text.parse::<u8>() {
            return Ok(v);
        }
        types::algorithm_from_name(&t.text).map_or_else(|| self.err(what, Some(t)), Ok)
    }

    /// Type bitmap (RFC 4034 §4.1.2) of the remaining mnemonics.
    fn bitmap(&mut self, what: &str) -> Result<Vec<u8>, RdataError> {
        let mut ts = Vec::new();
        while !self.done() {
            ts.push(self.rtype(what)?.0);
        }
        Ok(type_bitmap(&ts))
    }
}

/// Decodes `\X` and `\DDD` escapes.
pub(crate) fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let (v, n) = sextant_wire::name::unescape_at(b, i)?;
            out.push(v);
            i += n;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Builds an RFC 4034 type bitmap from type numbers.
pub fn type_bitmap(types: &[u16]) -> Vec<u8> {
    let mut ts = types.to_vec();
    ts.sort_unstable();
    ts.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < ts.len() {
        let win = (ts[i] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut max = 0;
        while i < ts.len() && (ts[i] >> 8) as u8 == win {
            let lo = (ts[i] & 0xff) as usize;
            bits[lo / 8] |= 0x80 >> (lo % 8);
            max = lo / 8;
            i += 1;
        }
        out.push(win);
        out.push(max as u8 + 1);
        out.extend_from_slice(&bits[..=max]);
    }
    out
}

fn put_name(out: &mut Vec<u8>, n: &Name) {
    out.extend_from_slice(n.wire());
}

/// Parses a `YYYYMMDDHHmmSS` time (or a plain number of seconds) into RRSIG serial time.
fn sig_time(s: &str) -> Option<u32> {
    if s.len() == 14 && s.bytes().all(|c| c.is_ascii_digit()) {
        let n = |a: usize, b: usize| s[a..b].parse::<i64>().ok();
        let (y, mo, d, h, mi, se) = (
            n(0, 4)?,
            n(4, 6)?,
            n(6, 8)?,
            n(8, 10)?,
            n(10, 12)?,
            n(12, 14)?,
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        // Days from the civil date (Howard Hinnant's algorithm).
        let (y2, m2) = if mo <= 2 {
            (y - 1, mo + 9)
        } else {
            (y, mo - 3)
        };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let doy = (153 * m2 + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146097 + doe - 719468;
        let secs = days * 86400 + h * 3600 + mi * 60 + se;
        return Some(secs.rem_euclid(1 << 32) as u32);
    }
    s.parse::<u32>().ok()
}

/// Parses `toks` as the data of a `rtype` record (after the type token).
pub(crate) fn parse(rtype: RType, toks: &[Token], origin: &Name) -> Result<RData, RdataError> {
    let mut c = Cursor::new(toks, origin, rtype);
    if toks.first().is_some_and(|t| t.text == "\\#" && !t.quoted) {
        c.i = 1;
        let len: usize = c.num("rdata length")?;
        let data = if len == 0 {
            Vec::new()
        } else {
            c.hex("rdata")?
        };
        if data.len() != len {
            return c.err("rdata length", toks.get(1));
        }
        return crate::wire::rdata_from_wire(rtype, &data)
            .map_or_else(|| c.err("rdata", toks.get(2)), Ok);
    }
    let Some(kind) = types::kind(rtype) else {
        return Err((
            format!("unknown RR type {rtype}: use the RFC 3597 form (\\# LEN HEX)"),
            toks.first().cloned(),
        ));
    };
    let mut w: Vec<u8> = Vec::new();
    let data = match kind {
        T::A => {
            let t = c.next("A")?;
            let ip: Ipv4Addr = t.text.parse().or_else(|_| c.err("A", Some(t)))?;
            RData::A(ip)
        }
        T::Aaaa => {
            let t = c.next("AAAA")?;
            let ip: Ipv6Addr = t.text.parse().or_else(|_| c.err("AAAA", Some(t)))?;
            RData::Aaaa(ip)
        }
        T::Name => {
            let n = c.name("name")?;
            match rtype {
                RType::NS => RData::Ns(n),
                RType::CNAME => RData::Cname(n),
                RType::PTR => RData::Ptr(n),
                RType::DNAME => RData::Dname(n),
                _ => {
                    put_name(&mut w, &n);
                    RData::Unknown(w)
                }
            }
        }
        T::Soa => {
            let mname = c.name("Ns")?;
            let rname = c.name("Mbox")?;
            let serial: u32 = c.num("Serial")?;
            let refresh = c.ttl("Refresh")?;
            let retry = c.ttl("Retry")?;
            let expire = c.ttl("Expire")?;
            let minimum = c.ttl("Minttl")?;
            RData::Soa(Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            })
        }
        T::TwoNames => {
            let a = c.name("name")?;
            let b = c.name("name")?;
            put_name(&mut w, &a);
            put_name(&mut w, &b);
            RData::Unknown(w)
        }
        T::PrefName => {
            let p: u16 = c.num("Preference")?;
            let n = c.name("name")?;
            if rtype == RType::MX {
                RData::Mx {
                    preference: p,
                    exchange: n,
                }
            } else {
                w.extend_from_slice(&p.to_be_bytes());
                put_name(&mut w, &n);
                RData::Unknown(w)
            }
        }
        T::Txt => {
            let mut parts = Vec::new();
            while !c.done() {
                let t = c.next("Txt")?;
                let v = unescape(&t.text).map_or_else(|| c.err("Txt", Some(t)), Ok)?;
                if v.is_empty() {
                    parts.push(v);
                    continue;
                }
                for chunk in v.chunks(255) {
                    parts.push(chunk.to_vec());
                }
            }
            if parts.is_empty() {
                return c.err("Txt", toks.first());
            }
            if rtype == RType::TXT {
                RData::Txt(parts)
            } else {
                for p in parts {
                    w.push(p.len() as u8);
                    w.extend_from_slice(&p);
                }
                RData::Unknown(w)
            }
        }
        T::Hinfo => {
            let cpu = c.char_string("Cpu")?;
            let os = c.char_string("Os")?;
            RData::Hinfo { cpu, os }
        }
        T::Srv => {
            let priority: u16 = c.num("Priority")?;
            let weight: u16 = c.num("Weight")?;
            let port: u16 = c.num("Port")?;
            let target = c.name("Target")?;
            RData::Srv(Srv {
                priority,
                weight,
                port,
                target,
            })
        }
        T::Naptr => {
            let order: u16 = c.num("Order")?;
            let pref: u16 = c.num("Preference")?;
            w.extend_from_slice(&order.to_be_bytes());
            w.extend_from_slice(&pref.to_be_bytes());
            for what in ["Flags", "Service", "Regexp"] {
                let s = c.char_string(what)?;
                w.push(s.len() as u8);
                w.extend_from_slice(&s);
            }
            put_name(&mut w, &c.name("Replacement")?);
            RData::Unknown(w)
        }
        T::Ds => {
            let tag: u16 = c.num("KeyTag")?;
            let alg = c.algorithm("Algorithm")?;
            let dt: u8 = c.num("DigestType")?;
            w.extend_from_slice(&tag.to_be_bytes());
            w.push(alg);
            w.push(dt);
            w.extend(c.hex("Digest")?);
            RData::Unknown(w)
        }
        T::Dnskey => {
            let flags: u16 = c.num("Flags")?;
            let proto: u8 = c.num("Protocol")?;
            let alg = c.algorithm("Algorithm")?;
            w.extend_from_slice(&flags.to_be_bytes());
            w.push(proto);
            w.push(alg);
            w.extend(c.base64("PublicKey")?);
            RData::Unknown(w)
        }
        T::Rrsig => {
            let covered = c.rtype("TypeCovered")?;
            let alg = c.algorithm("Algorithm")?;
            let labels: u8 = c.num("Labels")?;
            let ottl = c.ttl("OrigTtl")?;
            let t = c.next("Expiration")?;
            let exp = sig_time(&t.text).map_or_else(|| c.err("Expiration", Some(t)), Ok)?;
            let t = c.next("Inception")?;
            let inc = sig_time(&t.text).map_or_else(|| c.err("Inception", Some(t)), Ok)?;
            let tag: u16 = c.num("KeyTag")?;
            let signer = c.name("SignerName")?;
            w.extend_from_slice(&covered.0.to_be_bytes());
            w.push(alg);
            w.push(labels);
            w.extend_from_slice(&ottl.to_be_bytes());
            w.extend_from_slice(&exp.to_be_bytes());
            w.extend_from_slice(&inc.to_be_bytes());
            w.extend_from_slice(&tag.to_be_bytes());
            put_name(&mut w, &signer);
            w.extend(c.base64("Signature")?);
            RData::Unknown(w)
        }
        T::Nsec => {
            put_name(&mut w, &c.name("NextDomain")?);
            w.extend(c.bitmap("TypeBitMap")?);
            RData::Unknown(w)
        }
        T::Nsec3 | T::Nsec3Param => {
            let alg: u8 = c.num("Hash")?;
            let flags: u8 = c.num("Flags")?;
            let iter: u16 = c.num("Iterations")?;
            let t = c.next("Salt")?;
            let salt = if t.text == "-" {
                Vec::new()
            } else {
                hex_decode(&t.text).map_or_else(|| c.err("Salt", Some(t)), Ok)?
            };
            w.push(alg);
            w.push(flags);
            w.extend_from_slice(&iter.to_be_bytes());
            w.push(salt.len() as u8);
            w.extend(salt);
            if kind == T::Nsec3 {
                let t = c.next("NextDomain")?;
                let h =
                    base32hex_decode(&t.text).map_or_else(|| c.err("NextDomain", Some(t)), Ok)?;
                w.push(h.len() as u8);
                w.extend(h);
                w.extend(c.bitmap("TypeBitMap")?);
            }
            RData::Unknown(w)
        }
        T::ThreeU8Hex => {
            // TLSA/SMIMEA: usage selector matching-type data.
            for what in ["Usage", "Selector", "MatchingType"] {
                w.push(c.num(what)?);
            }
            w.extend(c.hex("Certificate")?);
            RData::Unknown(w)
        }
        T::Sshfp => {
            w.push(c.num("Algorithm")?);
            w.push(c.num("Type")?);
            w.extend(c.hex("FingerPrint")?);
            RData::Unknown(w)
        }
        T::Base64 => {
            w.extend(c.base64("data")?);
            RData::Unknown(w)
        }
        T::Caa => {
            let flags: u8 = c.num("Flag")?;
            let tag = c.next("Tag")?;
            let value = c.char_string_long("Value")?;
            w.push(flags);
            w.push(tag.text.len() as u8);
            w.extend_from_slice(tag.text.as_bytes());
            w.extend(value);
            RData::Unknown(w)
        }
        T::Uri => {
            let p: u16 = c.num("Priority")?;
            let wt: u16 = c.num("Weight")?;
            w.extend_from_slice(&p.to_be_bytes());
            w.extend_from_slice(&wt.to_be_bytes());
            w.extend(c.char_string_long("Target")?);
            RData::Unknown(w)
        }
        T::Cert => {
            let t = c.next("Type")?;
            let ty: u16 = match t.text.parse() {
                Ok(v) => v,
                Err(_) => types::cert_type_from_name(&t.text)
                    .map_or_else(|| c.err("Type", Some(t)), Ok)?,
            };
            let tag: u16 = c.num("KeyTag")?;
            let alg = c.algorithm("Algorithm")?;
            w.extend_from_slice(&ty.to_be_bytes());
            w.extend_from_slice(&tag.to_be_bytes());
            w.push(alg);
            w.extend(c.base64("Certificate")?);
            RData::Unknown(w)
        }
        T::Eui(n) => {
            let t = c.next("Address")?;
            let parts: Vec<&str> = t.text.split('-').collect();
            if parts.len() != n {
                return c.err("Address", Some(t));
            }
            for p in parts {
                let v = if p.len() == 2 {
                    u8::from_str_radix(p, 16).ok()
                } else {
                    None
                };
                w.push(v.map_or_else(|| c.err("Address", Some(t)), Ok)?);
            }
            RData::Unknown(w)
        }
        T::Zonemd => {
            let serial: u32 = c.num("Serial")?;
            w.extend_from_slice(&serial.to_be_bytes());
            w.push(c.num("Scheme")?);
            w.push(c.num("Hash")?);
            w.extend(c.hex("Digest")?);
            RData::Unknown(w)
        }
        T::Csync => {
            let serial: u32 = c.num("Serial")?;
            let flags: u16 = c.num("Flags")?;
            w.extend_from_slice(&serial.to_be_bytes());
            w.extend_from_slice(&flags.to_be_bytes());
            w.extend(c.bitmap("TypeBitMap")?);
            RData::Unknown(w)
        }
        T::Svcb => {
            let prio: u16 = c.num("Priority")?;
            let target = c.name("Target")?;
            w.extend_from_slice(&prio.to_be_bytes());
            put_name(&mut w, &target);
            let params =
                crate::svcb::params(c.rest()).map_err(|(m, t)| (format!("bad SVCB {m}"), t))?;
            w.extend(params);
            RData::Unknown(w)
        }
        T::Loc => {
            let data =
                crate::loc::parse(c.rest()).map_err(|t| ("bad LOC Latitude".to_string(), t))?;
            w.extend(data);
            RData::Unknown(w)
        }
        T::Nid => {
            // NID/L64: preference + 64-bit locator as four 16-bit hex groups.
            let p: u16 = c.num("Preference")?;
            w.extend_from_slice(&p.to_be_bytes());
            let t = c.next("Locator")?;
            let groups: Vec<&str> = t.text.split(':').collect();
            if groups.len() != 4 {
                return c.err("Locator", Some(t));
            }
            for g in groups {
                let v = u16::from_str_radix(g, 16).or_else(|_| c.err("Locator", Some(t)))?;
                w.extend_from_slice(&v.to_be_bytes());
            }
            RData::Unknown(w)
        }
        T::L32 => {
            let p: u16 = c.num("Preference")?;
            let t = c.next("Locator32")?;
            let ip: Ipv4Addr = t.text.parse().or_else(|_| c.err("Locator32", Some(t)))?;
            w.extend_from_slice(&p.to_be_bytes());
            w.extend_from_slice(&ip.octets());
            RData::Unknown(w)
        }
        T::Apl => {
            for t in c.rest() {
                match apl_item(&t.text) {
                    Some(item) => w.extend(item),
                    None => return Err(("bad APL prefix".to_string(), Some(t.clone()))),
                }
            }
            RData::Unknown(w)
        }
        T::Ipseckey => {
            let prec: u8 = c.num("Precedence")?;
            let gt: u8 = c.num("GatewayType")?;
            let alg: u8 = c.num("Algorithm")?;
            w.extend_from_slice(&[prec, gt, alg]);
            let t = c.next("Gateway")?;
            match gt {
                0 if t.text == "." => {}
                1 => w.extend_from_slice(
                    &t.text
                        .parse::<Ipv4Addr>()
                        .or_else(|_| c.err("Gateway", Some(t)))?
                        .octets(),
                ),
                2 => w.extend_from_slice(
                    &t.text
                        .parse::<Ipv6Addr>()
                        .or_else(|_| c.err("Gateway", Some(t)))?
                        .octets(),
                ),
                3 => put_name(
                    &mut w,
                    &absolute_name(&t.text, origin)
                        .map_or_else(|| c.err("Gateway", Some(t)), Ok)?,
                ),
                _ => return c.err("GatewayType", Some(t)),
            }
            if !c.done() {
                w.extend(c.base64("PublicKey")?);
            }
            RData::Unknown(w)
        }
        T::Dhcid => {
            w.extend(c.base64("Digest")?);
            RData::Unknown(w)
        }
    };
    c.end()?;
    Ok(data)
}

/// One APL item (`[!]afi:address/prefix`, RFC 3123) in wire form.
fn apl_item(text: &str) -> Option<Vec<u8>> {
    let (neg, s) = match text.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (fam, rest) = s.split_once(':')?;
    let (addr, plen) = rest.split_once('/')?;
    let plen: u8 = plen.parse().ok()?;
    let (afi, mut bytes) = match fam {
        "1" if plen <= 32 => (1u16, addr.parse::<Ipv4Addr>().ok()?.octets().to_vec()),
        "2" if plen <= 128 => (2u16, addr.parse::<Ipv6Addr>().ok()?.octets().to_vec()),
        _ => return None,
    };
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    let mut w = afi.to_be_bytes().to_vec();
    w.push(plen);
    w.push(bytes.len() as u8 | if neg { 0x80 } else { 0 });
    w.extend(bytes);
    Some(w)
}

impl Cursor<'_> {
    /// A character string without the 255-octet limit (CAA value, URI target).
    fn char_string_long(&mut self, what: &str) -> Result<Vec<u8>, RdataError> {
        let t = self.next(what)?;
        unescape(&t.text).map_or_else(|| self.err(what, Some(t)), Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer;

    fn rd(ty: &str, text: &str) -> Result<RData, String> {
        let o = Name::parse("example.org.").unwrap();
        let l = lexer::lines(text, "t").unwrap();
        let toks = l.first().map(|l| l.tokens.clone()).unwrap_or_default();
        parse(types::rtype_from_name(ty).unwrap(), &toks, &o).map_err(|e| e.0)
    }

    fn raw(ty: &str, text: &str) -> Vec<u8> {
        match rd(ty, text).unwrap() {
            RData::Unknown(w) => w,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn common_types() {
        assert_eq!(
            rd("A", "192.0.2.1").unwrap(),
            RData::A("192.0.2.1".parse().unwrap())
        );
        assert!(rd("A", "192.0.2").unwrap_err().contains("bad A"));
        assert_eq!(
            rd("MX", "10 mail").unwrap().to_string(),
            "10 mail.example.org."
        );
        assert_eq!(
            rd("TXT", "\"a b\" c \"\\065\\\"\"").unwrap(),
            RData::Txt(vec![b"a b".to_vec(), b"c".to_vec(), b"A\"".to_vec()])
        );
        assert_eq!(
            rd("TXT", &format!("\"{}\"", "x".repeat(300))).unwrap(),
            RData::Txt(vec![vec![b'x'; 255], vec![b'x'; 45]])
        );
        assert_eq!(
            rd("SOA", "ns h 1 1h 30m 1w 1d").unwrap().to_string(),
            "ns.example.org. h.example.org. 1 3600 1800 604800 86400"
        );
        assert_eq!(
            raw("CAA", "0 issue \"ca.example.net\""),
            [&[0u8, 5][..], b"issue", b"ca.example.net"].concat()
        );
        assert_eq!(
            raw("DS", "60485 5 1 2BB183AF5F22588179A53B0A 98631FAD1A292118"),
            {
                let mut v = vec![0xec, 0x45, 5, 1];
                v.extend(hex_decode("2BB183AF5F22588179A53B0A98631FAD1A292118").unwrap());
                v
            }
        );
        let mut want = vec![0, 6, 0x40, 1, 0, 0, 0, 3, 4, 27];
        want.extend([0; 26]);
        want.push(0x20);
        assert_eq!(
            raw("NSEC", "host.example.com. A MX RRSIG NSEC TYPE1234")[18..],
            want
        );
        assert!(rd("NSEC", "a. BOGUS").unwrap_err().contains("TypeBitMap"));
        assert_eq!(
            rd("TYPE65534", "\\# 3 010203").unwrap(),
            RData::Unknown(vec![1, 2, 3])
        );
        assert_eq!(
            rd("A", "\\# 4 c0000201").unwrap(),
            RData::A("192.0.2.1".parse().unwrap())
        );
        assert!(rd("A", "\\# 5 c0000201").is_err());
        assert!(rd("A", "1.2.3.4 extra").unwrap_err().contains("garbage"));
    }

    #[test]
    fn rrsig_times() {
        let w = raw(
            "RRSIG",
            "A 8 3 86400 20300101000000 20200101000000 12345 example.org. AAEC",
        );
        assert_eq!(&w[0..2], &[0, 1]);
        assert_eq!(u32::from_be_bytes([w[8], w[9], w[10], w[11]]), 1893456000);
        assert_eq!(u32::from_be_bytes([w[12], w[13], w[14], w[15]]), 1577836800);
        assert_eq!(&w[w.len() - 3..], &[0, 1, 2]);
    }
}
