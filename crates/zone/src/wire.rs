//! Uncompressed record data → [`RData`]: the typed variants Sextant's wire crate has for the
//! types it interprets, raw bytes for the rest. Used for `\#` data and the zone store. No I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use sextant_wire::{Name, RData, RType, Soa, Srv};

/// Reads one uncompressed name at `pos`; returns it and the offset after it.
pub fn name_at(d: &[u8], pos: usize) -> Option<(Name, usize)> {
    let mut p = pos;
    loop {
        let l = *d.get(p)? as usize;
        if l == 0 {
            break;
        }
        if l > 63 {
            return None;
        }
        p += 1 + l;
    }
    let n = Name::from_wire(d.get(pos..=p)?).ok()?;
    Some((n, p + 1))
}

fn u16_at(d: &[u8], p: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(p)?, *d.get(p + 1)?]))
}

fn u32_at(d: &[u8], p: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(p..p + 4)?.try_into().ok()?))
}

/// Decodes uncompressed `d` as the data of `rtype`; None if it does not fit the type.
pub fn rdata_from_wire(rtype: RType, d: &[u8]) -> Option<RData> {
    let whole = |end: usize| (end == d.len()).then_some(());
    Some(match rtype {
        RType::A => RData::A(Ipv4Addr::from(<[u8; 4]>::try_from(d).ok()?)),
        RType::AAAA => RData::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(d).ok()?)),
        RType::NS | RType::CNAME | RType::PTR | RType::DNAME => {
            let (n, end) = name_at(d, 0)?;
            whole(end)?;
            match rtype {
                RType::NS => RData::Ns(n),
                RType::CNAME => RData::Cname(n),
                RType::PTR => RData::Ptr(n),
                _ => RData::Dname(n),
            }
        }
        RType::SOA => {
            let (mname, p) = name_at(d, 0)?;
            let (rname, p) = name_at(d, p)?;
            whole(p + 20)?;
            RData::Soa(Soa {
                mname,
                rname,
                serial: u32_at(d, p)?,
                refresh: u32_at(d, p + 4)?,
                retry: u32_at(d, p + 8)?,
                expire: u32_at(d, p + 12)?,
                minimum: u32_at(d, p + 16)?,
            })
        }
        RType::MX => {
            let (exchange, end) = name_at(d, 2)?;
            whole(end)?;
            RData::Mx {
                preference: u16_at(d, 0)?,
                exchange,
            }
        }
        RType::SRV => {
            let (target, end) = name_at(d, 6)?;
            whole(end)?;
            RData::Srv(Srv {
                priority: u16_at(d, 0)?,
                weight: u16_at(d, 2)?,
                port: u16_at(d, 4)?,
                target,
            })
        }
        RType::TXT => {
            let mut parts = Vec::new();
            let mut p = 0;
            while p < d.len() {
                let l = d[p] as usize;
                parts.push(d.get(p + 1..p + 1 + l)?.to_vec());
                p += 1 + l;
            }
            if parts.is_empty() {
                return None;
            }
            RData::Txt(parts)
        }
        RType::HINFO => {
            let l = *d.first()? as usize;
            let cpu = d.get(1..1 + l)?.to_vec();
            let l2 = *d.get(1 + l)? as usize;
            let os = d.get(2 + l..2 + l + l2)?.to_vec();
            whole(2 + l + l2)?;
            RData::Hinfo { cpu, os }
        }
        _ => RData::Unknown(d.to_vec()),
    })
}

/// Record data in uncompressed wire form (the inverse of [`rdata_from_wire`]).
pub fn rdata_to_wire(data: &RData) -> Vec<u8> {
    let mut w = Vec::with_capacity(data.wire_len());
    match data {
        RData::A(a) => w.extend_from_slice(&a.octets()),
        RData::Aaaa(a) => w.extend_from_slice(&a.octets()),
        RData::Ns(n) | RData::Cname(n) | RData::Ptr(n) | RData::Dname(n) => {
            w.extend_from_slice(n.wire())
        }
        RData::Soa(s) => {
            w.extend_from_slice(s.mname.wire());
            w.extend_from_slice(s.rname.wire());
            for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                w.extend_from_slice(&v.to_be_bytes());
            }
        }
        RData::Mx {
            preference,
            exchange,
        } => {
            w.extend_from_slice(&preference.to_be_bytes());
            w.extend_from_slice(exchange.wire());
        }
        RData::Srv(s) => {
            for v in [s.priority, s.weight, s.port] {
                w.extend_from_slice(&v.to_be_bytes());
            }
            w.extend_from_slice(s.target.wire());
        }
        RData::Txt(parts) => {
            for p in parts {
                let p = &p[..p.len().min(255)];
                w.push(p.len() as u8);
                w.extend_from_slice(p);
            }
        }
        RData::Hinfo { cpu, os } => {
            for p in [cpu, os] {
                let p = &p[..p.len().min(255)];
                w.push(p.len() as u8);
                w.extend_from_slice(p);
            }
        }
        RData::Unknown(d) => w.extend_from_slice(d),
    }
    w
}
