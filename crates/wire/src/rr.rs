//! Resource records and the record data Sextant understands, with presentation format. No I/O.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::name::Name;
use crate::types::{Class, RType};

/// SOA record data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soa {
    pub mname: Name,
    pub rname: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// SRV record data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: Name,
}

/// Record data. Types Sextant does not interpret are kept as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ns(Name),
    Cname(Name),
    Ptr(Name),
    Dname(Name),
    Soa(Soa),
    Mx { preference: u16, exchange: Name },
    Txt(Vec<Vec<u8>>),
    Srv(Srv),
    Hinfo { cpu: Vec<u8>, os: Vec<u8> },
    Unknown(Vec<u8>),
}

impl RData {
    /// Length of the data on the wire without name compression.
    pub fn wire_len(&self) -> usize {
        match self {
            RData::A(_) => 4,
            RData::Aaaa(_) => 16,
            RData::Ns(n) | RData::Cname(n) | RData::Ptr(n) | RData::Dname(n) => n.wire_len(),
            RData::Soa(s) => s.mname.wire_len() + s.rname.wire_len() + 20,
            RData::Mx { exchange, .. } => 2 + exchange.wire_len(),
            RData::Srv(s) => 6 + s.target.wire_len(),
            RData::Txt(parts) => parts.iter().map(|p| 1 + p.len().min(255)).sum(),
            RData::Hinfo { cpu, os } => 2 + cpu.len().min(255) + os.len().min(255),
            RData::Unknown(d) => d.len(),
        }
    }

    /// The target name of a record that points at another name.
    pub fn target(&self) -> Option<&Name> {
        match self {
            RData::Ns(n) | RData::Cname(n) | RData::Ptr(n) | RData::Dname(n) => Some(n),
            RData::Mx { exchange, .. } => Some(exchange),
            RData::Srv(s) => Some(&s.target),
            _ => None,
        }
    }
}

/// One resource record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: RType,
    pub class: Class,
    pub ttl: u32,
    pub data: RData,
}

impl Record {
    pub fn new(name: Name, ttl: u32, data: RData) -> Record {
        let rtype = match &data {
            RData::A(_) => RType::A,
            RData::Aaaa(_) => RType::AAAA,
            RData::Ns(_) => RType::NS,
            RData::Cname(_) => RType::CNAME,
            RData::Ptr(_) => RType::PTR,
            RData::Dname(_) => RType::DNAME,
            RData::Soa(_) => RType::SOA,
            RData::Mx { .. } => RType::MX,
            RData::Txt(_) => RType::TXT,
            RData::Srv(_) => RType::SRV,
            RData::Hinfo { .. } => RType::HINFO,
            RData::Unknown(_) => RType(0),
        };
        Record {
            name,
            rtype,
            class: Class::IN,
            ttl,
            data,
        }
    }

    /// A record of a type Sextant does not interpret.
    pub fn unknown(name: Name, rtype: RType, class: Class, ttl: u32, data: Vec<u8>) -> Record {
        Record {
            name,
            rtype,
            class,
            ttl,
            data: RData::Unknown(data),
        }
    }

    pub fn with_class(mut self, class: Class) -> Record {
        self.class = class;
        self
    }

    /// True if both records belong to the same RRset (name, type, class).
    pub fn same_rrset(&self, other: &Record) -> bool {
        self.rtype == other.rtype && self.class == other.class && self.name == other.name
    }
}

fn write_char_string(f: &mut fmt::Formatter<'_>, s: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for &b in s {
        match b {
            b'"' | b'\\' => {
                f.write_str("\\")?;
                write!(f, "{}", b as char)?;
            }
            0x20..=0x7e => write!(f, "{}", b as char)?,
            _ => write!(f, "\\{:03}", b)?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for RData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RData::A(a) => write!(f, "{a}"),
            RData::Aaaa(a) => write!(f, "{a}"),
            RData::Ns(n) | RData::Cname(n) | RData::Ptr(n) | RData::Dname(n) => write!(f, "{n}"),
            RData::Soa(s) => write!(
                f,
                "{} {} {} {} {} {} {}",
                s.mname, s.rname, s.serial, s.refresh, s.retry, s.expire, s.minimum
            ),
            RData::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            RData::Txt(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write_char_string(f, p)?;
                }
                Ok(())
            }
            RData::Srv(s) => write!(f, "{} {} {} {}", s.priority, s.weight, s.port, s.target),
            RData::Hinfo { cpu, os } => {
                write_char_string(f, cpu)?;
                f.write_str(" ")?;
                write_char_string(f, os)
            }
            RData::Unknown(d) => {
                write!(f, "\\# {}", d.len())?;
                if !d.is_empty() {
                    f.write_str(" ")?;
                    for b in d {
                        write!(f, "{b:02x}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Record {
    /// `name<TAB>ttl<TAB>class<TAB>type<TAB>rdata`, as miekg/dns prints records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}\t{}",
            self.name, self.ttl, self.class, self.rtype, self.data
        )
    }
}
