//! Records in presentation form (`"example.com. 300 IN A 192.0.2.1"`) to and from hickory
//! types, and CoreDNS-style names for rcodes. Pure conversions; no I/O.

use std::str::FromStr;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::error::{Error, Result};

/// Parse one record in presentation form: `name ttl class type rdata...`.
///
/// The class may be omitted (`"a.example. 60 A 192.0.2.1"`, then `IN`); names should be
/// absolute (end with `.`); a relative name is taken as absolute.
/// ```
/// let r = sextant_testkit::parse_record("example.com. 300 IN A 192.0.2.1").unwrap();
/// assert_eq!(r.to_string(), "example.com. 300 IN A 192.0.2.1");
/// ```
pub fn parse_record(text: &str) -> Result<Record> {
    let bad = |reason: &str| Error::RecordText {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let mut rest = text.trim();
    let next = |rest: &mut &str| -> Option<String> {
        let s = rest.trim_start();
        if s.is_empty() {
            return None;
        }
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        let (tok, tail) = s.split_at(end);
        *rest = tail;
        Some(tok.to_string())
    };
    let name_s = next(&mut rest).ok_or_else(|| bad("empty"))?;
    let ttl_s = next(&mut rest).ok_or_else(|| bad("missing ttl"))?;
    let ttl: u32 = ttl_s.parse().map_err(|_| bad("ttl is not a number"))?;
    let mut tok = next(&mut rest).ok_or_else(|| bad("missing class/type"))?;
    let class = match tok.to_ascii_uppercase().as_str() {
        "IN" => Some(DNSClass::IN),
        "CH" => Some(DNSClass::CH),
        "HS" => Some(DNSClass::HS),
        "ANY" => Some(DNSClass::ANY),
        "NONE" => Some(DNSClass::NONE),
        _ => None,
    };
    if class.is_some() {
        tok = next(&mut rest).ok_or_else(|| bad("missing type"))?;
    }
    let class = class.unwrap_or(DNSClass::IN);
    let rtype = RecordType::from_str(&tok.to_ascii_uppercase())
        .map_err(|e| bad(&format!("unknown type {tok}: {e}")))?;
    let mut name = Name::from_ascii(&name_s).map_err(|e| bad(&format!("bad name: {e}")))?;
    name.set_fqdn(true);
    let rdata_text = rest.trim();
    let rdata =
        RData::try_from_str(rtype, rdata_text).map_err(|e| bad(&format!("bad rdata: {e}")))?;
    let mut rec = Record::from_rdata(name, ttl, rdata);
    rec.dns_class = class;
    Ok(rec)
}

/// Parse many records; fails on the first bad one.
pub fn parse_records(texts: &[&str]) -> Result<Vec<Record>> {
    texts.iter().map(|t| parse_record(t)).collect()
}

/// The presentation form used by [`crate::Reply::answers`]: `name ttl class type rdata`.
pub fn record_to_string(r: &Record) -> String {
    r.to_string()
}

/// CoreDNS (miekg/dns) name of an rcode value, e.g. `0 -> "NOERROR"`, `16 -> "BADVERS"`.
pub fn rcode_name(code: u16) -> String {
    let s = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        other => return format!("RCODE{other}"),
    };
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_common_types() {
        for t in [
            "example.com. 300 IN A 192.0.2.1",
            "example.com. 300 IN AAAA 2001:db8::1",
            "www.example.com. 60 IN CNAME example.com.",
            "example.com. 30 IN MX 10 mail.example.com.",
            "_http._tcp.example.com. 5 IN SRV 0 100 80 web.example.com.",
            "example.com. 3600 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30",
            "example.com. 10 IN NS ns.example.com.",
            "1.2.0.192.in-addr.arpa. 5 IN PTR example.com.",
        ] {
            assert_eq!(parse_record(t).unwrap().to_string(), t);
        }
        let txt = parse_record("example.com. 1 IN TXT \"hello world\"").unwrap();
        assert_eq!(txt.record_type(), RecordType::TXT);
        assert!(txt.to_string().contains("hello world"), "{txt}");
    }

    #[test]
    fn class_is_optional_and_errors_are_typed() {
        let r = parse_record("a.example. 60 A 192.0.2.7").unwrap();
        assert_eq!(r.to_string(), "a.example. 60 IN A 192.0.2.7");
        assert!(matches!(
            parse_record("a.example. x IN A 1.2.3.4"),
            Err(Error::RecordText { .. })
        ));
        assert!(parse_record("a.example. 1 IN A not-an-ip").is_err());
        assert!(parse_record("").is_err());
        assert!(parse_record("a.example. 1 IN BOGUSTYPE x").is_err());
    }

    #[test]
    fn rcode_names_match_coredns() {
        assert_eq!(rcode_name(0), "NOERROR");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(16), "BADVERS");
        assert_eq!(rcode_name(4000), "RCODE4000");
    }
}
