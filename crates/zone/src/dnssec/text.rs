//! Presentation format of records for writing zone files: the typed data Sextant's wire crate
//! knows, the DNSSEC types (DNSKEY, CDNSKEY, DS, CDS, RRSIG, NSEC) as miekg/dns prints them,
//! and RFC 3597's `\# len hex` for every other type, which every zone parser reads back. No I/O.

use sextant_wire::{RData, RType, Record};

use crate::codec::{base64_encode, hex_encode};
use crate::rtype_name;
use crate::wire::name_at;

/// `YYYYMMDDHHmmSS` of an RRSIG time (RFC 4034 §3.2), taking the value as seconds since 1970.
pub fn sig_time_string(t: u32) -> String {
    let secs = t as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The types of an RFC 4034 type bitmap, in order.
pub fn bitmap_types(mut b: &[u8]) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let win = *b.first()? as u16;
        let len = *b.get(1)? as usize;
        let bits = b.get(2..2 + len)?;
        for (i, &byte) in bits.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    out.push((win << 8) | (i as u16 * 8 + bit));
                }
            }
        }
        b = &b[2 + len..];
    }
    Some(out)
}

fn generic(d: &[u8]) -> String {
    if d.is_empty() {
        "\\# 0".to_string()
    } else {
        format!("\\# {} {}", d.len(), hex_encode(d))
    }
}

/// The data of `r` in presentation format.
pub fn rdata_text(r: &Record) -> String {
    let d = match &r.data {
        RData::Unknown(d) => d,
        other => return other.to_string(),
    };
    let known = match r.rtype {
        RType::DNSKEY | RType(60) if d.len() >= 4 => Some(format!(
            "{} {} {} {}",
            u16::from_be_bytes([d[0], d[1]]),
            d[2],
            d[3],
            base64_encode(&d[4..])
        )),
        RType::DS | RType(59) if d.len() >= 4 => Some(format!(
            "{} {} {} {}",
            u16::from_be_bytes([d[0], d[1]]),
            d[2],
            d[3],
            hex_encode(&d[4..]).to_uppercase()
        )),
        RType::RRSIG => super::sign::RrsigHead::parse(d).map(|(h, end)| {
            format!(
                "{} {} {} {} {} {} {} {} {}",
                rtype_name(h.type_covered),
                h.algorithm,
                h.labels,
                h.orig_ttl,
                sig_time_string(h.expiration),
                sig_time_string(h.inception),
                h.key_tag,
                h.signer,
                base64_encode(&d[end..])
            )
        }),
        RType::NSEC => name_at(d, 0).and_then(|(next, end)| {
            let types = bitmap_types(&d[end..])?;
            let mut s = next.to_string();
            for t in types {
                s.push(' ');
                s.push_str(&rtype_name(RType(t)));
            }
            Some(s)
        }),
        _ => None,
    };
    known.unwrap_or_else(|| generic(d))
}

/// One record as a zone-file line: `owner<TAB>ttl<TAB>class<TAB>type<TAB>data`.
pub fn record_text(r: &Record) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}",
        r.name,
        r.ttl,
        r.class,
        rtype_name(r.rtype),
        rdata_text(r)
    )
}
