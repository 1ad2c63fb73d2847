//! DNS code points (record types, classes, rcodes, opcodes) and their mnemonics. No I/O.

use std::fmt;

/// A record type (QTYPE/TYPE).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RType(pub u16);

impl RType {
    pub const A: RType = RType(1);
    pub const NS: RType = RType(2);
    pub const CNAME: RType = RType(5);
    pub const SOA: RType = RType(6);
    pub const NULL: RType = RType(10);
    pub const PTR: RType = RType(12);
    pub const HINFO: RType = RType(13);
    pub const MX: RType = RType(15);
    pub const TXT: RType = RType(16);
    pub const AAAA: RType = RType(28);
    pub const SRV: RType = RType(33);
    pub const NAPTR: RType = RType(35);
    pub const DNAME: RType = RType(39);
    pub const OPT: RType = RType(41);
    pub const DS: RType = RType(43);
    pub const RRSIG: RType = RType(46);
    pub const NSEC: RType = RType(47);
    pub const DNSKEY: RType = RType(48);
    pub const NSEC3: RType = RType(50);
    pub const SVCB: RType = RType(64);
    pub const HTTPS: RType = RType(65);
    pub const IXFR: RType = RType(251);
    pub const AXFR: RType = RType(252);
    pub const ANY: RType = RType(255);
    pub const CAA: RType = RType(257);

    const TABLE: &'static [(u16, &'static str)] = &[
        (1, "A"),
        (2, "NS"),
        (5, "CNAME"),
        (6, "SOA"),
        (10, "NULL"),
        (12, "PTR"),
        (13, "HINFO"),
        (15, "MX"),
        (16, "TXT"),
        (28, "AAAA"),
        (33, "SRV"),
        (35, "NAPTR"),
        (39, "DNAME"),
        (41, "OPT"),
        (43, "DS"),
        (46, "RRSIG"),
        (47, "NSEC"),
        (48, "DNSKEY"),
        (50, "NSEC3"),
        (64, "SVCB"),
        (65, "HTTPS"),
        (251, "IXFR"),
        (252, "AXFR"),
        (255, "ANY"),
        (257, "CAA"),
    ];

    /// Mnemonic if known (`A`, `AAAA`, …).
    pub fn mnemonic(self) -> Option<&'static str> {
        Self::TABLE
            .iter()
            .find(|(v, _)| *v == self.0)
            .map(|(_, n)| *n)
    }

    /// Parses a mnemonic (case-insensitive) or `TYPEnnn`.
    pub fn from_name(s: &str) -> Option<RType> {
        if let Some(&(v, _)) = Self::TABLE.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)) {
            return Some(RType(v));
        }
        let up = s.to_ascii_uppercase();
        up.strip_prefix("TYPE")
            .and_then(|n| n.parse::<u16>().ok())
            .map(RType)
    }
}

impl fmt::Display for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(n) => f.write_str(n),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl fmt::Debug for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A record class (QCLASS/CLASS).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Class(pub u16);

impl Class {
    pub const IN: Class = Class(1);
    pub const CH: Class = Class(3);
    pub const HS: Class = Class(4);
    pub const NONE: Class = Class(254);
    pub const ANY: Class = Class(255);

    pub fn mnemonic(self) -> Option<&'static str> {
        match self.0 {
            1 => Some("IN"),
            3 => Some("CH"),
            4 => Some("HS"),
            254 => Some("NONE"),
            255 => Some("ANY"),
            _ => None,
        }
    }

    pub fn from_name(s: &str) -> Option<Class> {
        for c in [Class::IN, Class::CH, Class::HS, Class::NONE, Class::ANY] {
            if c.mnemonic().is_some_and(|m| m.eq_ignore_ascii_case(s)) {
                return Some(c);
            }
        }
        let up = s.to_ascii_uppercase();
        up.strip_prefix("CLASS")
            .and_then(|n| n.parse::<u16>().ok())
            .map(Class)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(n) => f.write_str(n),
            None => write!(f, "CLASS{}", self.0),
        }
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A response code, including the EDNS extended bits (12 bits in all).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Rcode(pub u16);

impl Rcode {
    pub const NOERROR: Rcode = Rcode(0);
    pub const FORMERR: Rcode = Rcode(1);
    pub const SERVFAIL: Rcode = Rcode(2);
    pub const NXDOMAIN: Rcode = Rcode(3);
    pub const NOTIMP: Rcode = Rcode(4);
    pub const REFUSED: Rcode = Rcode(5);
    pub const YXDOMAIN: Rcode = Rcode(6);
    pub const YXRRSET: Rcode = Rcode(7);
    pub const NXRRSET: Rcode = Rcode(8);
    pub const NOTAUTH: Rcode = Rcode(9);
    pub const NOTZONE: Rcode = Rcode(10);
    pub const BADVERS: Rcode = Rcode(16);
    pub const BADCOOKIE: Rcode = Rcode(23);

    const TABLE: &'static [(u16, &'static str)] = &[
        (0, "NOERROR"),
        (1, "FORMERR"),
        (2, "SERVFAIL"),
        (3, "NXDOMAIN"),
        (4, "NOTIMP"),
        (5, "REFUSED"),
        (6, "YXDOMAIN"),
        (7, "YXRRSET"),
        (8, "NXRRSET"),
        (9, "NOTAUTH"),
        (10, "NOTZONE"),
        (16, "BADVERS"),
        (17, "BADKEY"),
        (18, "BADTIME"),
        (19, "BADMODE"),
        (20, "BADNAME"),
        (21, "BADALG"),
        (22, "BADTRUNC"),
        (23, "BADCOOKIE"),
    ];

    pub fn mnemonic(self) -> Option<&'static str> {
        Self::TABLE
            .iter()
            .find(|(v, _)| *v == self.0)
            .map(|(_, n)| *n)
    }

    pub fn from_name(s: &str) -> Option<Rcode> {
        if let Some(&(v, _)) = Self::TABLE.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)) {
            return Some(Rcode(v));
        }
        s.parse::<u16>().ok().filter(|v| *v < 4096).map(Rcode)
    }

    /// Low four bits, for the header.
    pub fn low(self) -> u8 {
        (self.0 & 0x0f) as u8
    }

    /// High eight bits, for the OPT record.
    pub fn high(self) -> u8 {
        ((self.0 >> 4) & 0xff) as u8
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Header opcodes.
pub mod opcode {
    pub const QUERY: u8 = 0;
    pub const IQUERY: u8 = 1;
    pub const STATUS: u8 = 2;
    pub const NOTIFY: u8 = 4;
    pub const UPDATE: u8 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics_round_trip() {
        assert_eq!(RType::from_name("aaaa"), Some(RType::AAAA));
        assert_eq!(RType::from_name("TYPE666"), Some(RType(666)));
        assert_eq!(RType(666).to_string(), "TYPE666");
        assert_eq!(Class::from_name("ch"), Some(Class::CH));
        assert_eq!(Rcode::BADVERS.to_string(), "BADVERS");
        assert_eq!(Rcode(3841).to_string(), "3841");
        assert_eq!(Rcode::BADVERS.high(), 1);
        assert_eq!(Rcode::BADVERS.low(), 0);
    }
}
