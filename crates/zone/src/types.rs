//! Record types, classes and DNSSEC algorithm mnemonics the zone parser knows, and how each
//! type's data is written in presentation format. No I/O.

use sextant_wire::{Class, RType};

/// How a type's data is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum T {
    A,
    Aaaa,
    Name,
    Soa,
    TwoNames,
    PrefName,
    Txt,
    Hinfo,
    Srv,
    Naptr,
    Ds,
    Dnskey,
    Rrsig,
    Nsec,
    Nsec3,
    Nsec3Param,
    ThreeU8Hex,
    Sshfp,
    Base64,
    Dhcid,
    Caa,
    Uri,
    Cert,
    Eui(usize),
    Zonemd,
    Csync,
    Svcb,
    Loc,
    Nid,
    L32,
    Apl,
    Ipseckey,
}

/// (number, mnemonic, kind); kind None: only the RFC 3597 form.
const TYPES: &[(u16, &str, Option<T>)] = &[
    (1, "A", Some(T::A)),
    (2, "NS", Some(T::Name)),
    (3, "MD", Some(T::Name)),
    (4, "MF", Some(T::Name)),
    (5, "CNAME", Some(T::Name)),
    (6, "SOA", Some(T::Soa)),
    (7, "MB", Some(T::Name)),
    (8, "MG", Some(T::Name)),
    (9, "MR", Some(T::Name)),
    (10, "NULL", None),
    (12, "PTR", Some(T::Name)),
    (13, "HINFO", Some(T::Hinfo)),
    (14, "MINFO", Some(T::TwoNames)),
    (15, "MX", Some(T::PrefName)),
    (16, "TXT", Some(T::Txt)),
    (17, "RP", Some(T::TwoNames)),
    (18, "AFSDB", Some(T::PrefName)),
    (19, "X25", None),
    (20, "ISDN", None),
    (21, "RT", Some(T::PrefName)),
    (23, "NSAPPTR", Some(T::Name)),
    (24, "SIG", Some(T::Rrsig)),
    (25, "KEY", Some(T::Dnskey)),
    (26, "PX", None),
    (27, "GPOS", None),
    (28, "AAAA", Some(T::Aaaa)),
    (29, "LOC", Some(T::Loc)),
    (30, "NXT", None),
    (31, "EID", None),
    (32, "NIMLOC", None),
    (33, "SRV", Some(T::Srv)),
    (34, "ATMA", None),
    (35, "NAPTR", Some(T::Naptr)),
    (36, "KX", Some(T::PrefName)),
    (37, "CERT", Some(T::Cert)),
    (38, "A6", None),
    (39, "DNAME", Some(T::Name)),
    (41, "OPT", None),
    (42, "APL", Some(T::Apl)),
    (43, "DS", Some(T::Ds)),
    (44, "SSHFP", Some(T::Sshfp)),
    (45, "IPSECKEY", Some(T::Ipseckey)),
    (46, "RRSIG", Some(T::Rrsig)),
    (47, "NSEC", Some(T::Nsec)),
    (48, "DNSKEY", Some(T::Dnskey)),
    (49, "DHCID", Some(T::Dhcid)),
    (50, "NSEC3", Some(T::Nsec3)),
    (51, "NSEC3PARAM", Some(T::Nsec3Param)),
    (52, "TLSA", Some(T::ThreeU8Hex)),
    (53, "SMIMEA", Some(T::ThreeU8Hex)),
    (55, "HIP", None),
    (56, "NINFO", Some(T::Txt)),
    (57, "RKEY", Some(T::Dnskey)),
    (58, "TALINK", Some(T::TwoNames)),
    (59, "CDS", Some(T::Ds)),
    (60, "CDNSKEY", Some(T::Dnskey)),
    (61, "OPENPGPKEY", Some(T::Base64)),
    (62, "CSYNC", Some(T::Csync)),
    (63, "ZONEMD", Some(T::Zonemd)),
    (64, "SVCB", Some(T::Svcb)),
    (65, "HTTPS", Some(T::Svcb)),
    (99, "SPF", Some(T::Txt)),
    (100, "UINFO", None),
    (101, "UID", None),
    (102, "GID", None),
    (103, "UNSPEC", None),
    (104, "NID", Some(T::Nid)),
    (105, "L32", Some(T::L32)),
    (106, "L64", Some(T::Nid)),
    (107, "LP", Some(T::PrefName)),
    (108, "EUI48", Some(T::Eui(6))),
    (109, "EUI64", Some(T::Eui(8))),
    (249, "TKEY", None),
    (250, "TSIG", None),
    (251, "IXFR", None),
    (252, "AXFR", None),
    (253, "MAILB", None),
    (254, "MAILA", None),
    (255, "ANY", None),
    (256, "URI", Some(T::Uri)),
    (257, "CAA", Some(T::Caa)),
    (258, "AVC", Some(T::Txt)),
    (260, "AMTRELAY", None),
    (32768, "TA", Some(T::Ds)),
    (32769, "DLV", Some(T::Ds)),
];

/// The parse kind of `t`, if the parser knows its presentation format.
pub(crate) fn kind(t: RType) -> Option<T> {
    TYPES
        .iter()
        .find(|(v, _, _)| *v == t.0)
        .and_then(|(_, _, k)| *k)
}

/// A type mnemonic (case-insensitive) or `TYPEnnn`.
pub fn rtype_from_name(s: &str) -> Option<RType> {
    if let Some((v, _, _)) = TYPES.iter().find(|(_, n, _)| n.eq_ignore_ascii_case(s)) {
        return Some(RType(*v));
    }
    let up = s.to_ascii_uppercase();
    up.strip_prefix("TYPE")
        .and_then(|n| n.parse::<u16>().ok())
        .map(RType)
}

/// The mnemonic of a type (`TYPEnnn` when unknown).
pub fn rtype_name(t: RType) -> String {
    match TYPES.iter().find(|(v, _, _)| *v == t.0) {
        Some((_, n, _)) => n.to_string(),
        None => format!("TYPE{}", t.0),
    }
}

/// A class mnemonic or `CLASSnnn`.
pub(crate) fn class_from_name(s: &str) -> Option<Class> {
    match s.to_ascii_uppercase().as_str() {
        "IN" => Some(Class::IN),
        "CH" | "CHAOS" => Some(Class::CH),
        "HS" => Some(Class::HS),
        "CS" => Some(Class(2)),
        "NONE" => Some(Class::NONE),
        "ANY" => Some(Class::ANY),
        up => up
            .strip_prefix("CLASS")
            .and_then(|n| n.parse::<u16>().ok())
            .map(Class),
    }
}

/// DNSSEC algorithm mnemonics (RFC 8624 names, as miekg/dns accepts them).
pub(crate) fn algorithm_from_name(s: &str) -> Option<u8> {
    const A: &[(u8, &str)] = &[
        (1, "RSAMD5"),
        (2, "DH"),
        (3, "DSA"),
        (5, "RSASHA1"),
        (6, "DSA-NSEC3-SHA1"),
        (7, "RSASHA1-NSEC3-SHA1"),
        (8, "RSASHA256"),
        (10, "RSASHA512"),
        (12, "ECC-GOST"),
        (13, "ECDSAP256SHA256"),
        (14, "ECDSAP384SHA384"),
        (15, "ED25519"),
        (16, "ED448"),
        (252, "INDIRECT"),
        (253, "PRIVATEDNS"),
        (254, "PRIVATEOID"),
    ];
    A.iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(s))
        .map(|(v, _)| *v)
}

/// CERT type mnemonics (RFC 4398).
pub(crate) fn cert_type_from_name(s: &str) -> Option<u16> {
    const C: &[(u16, &str)] = &[
        (1, "PKIX"),
        (2, "SPKI"),
        (3, "PGP"),
        (4, "IPKIX"),
        (5, "ISPKI"),
        (6, "IPGP"),
        (7, "ACPKIX"),
        (8, "IACPKIX"),
        (253, "URI"),
        (254, "OID"),
    ];
    C.iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(s))
        .map(|(v, _)| *v)
}
