//! TSIG (RFC 8945) on the wire: the TSIG record's data, finding it at the end of a message, the
//! message as it was before signing, and the bytes a MAC is computed over (request, response,
//! and the later messages of a TCP exchange, which use the timers only). The HMAC itself is the
//! caller's (no cryptography here). No I/O.

use crate::message::{read_name, HEADER_LEN};
use crate::name::Name;
use crate::types::{Class, RType};
use crate::WireError;

/// The TSIG record type.
pub const TSIG: RType = RType(250);

/// TSIG errors (RFC 8945 §3, in the TSIG record's Error field).
pub mod tsig_error {
    pub const BADSIG: u16 = 16;
    pub const BADKEY: u16 = 17;
    pub const BADTIME: u16 = 18;
    pub const BADTRUNC: u16 = 22;
}

/// A TSIG record: the key name (its owner) and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tsig {
    pub key: Name,
    pub algorithm: Name,
    /// Seconds since 1970, 48 bits.
    pub time_signed: u64,
    pub fudge: u16,
    pub mac: Vec<u8>,
    pub orig_id: u16,
    pub error: u16,
    pub other: Vec<u8>,
}

impl Tsig {
    /// Reads TSIG record data (uncompressed: RFC 8945 forbids compressing the algorithm name)
    /// owned by `key`.
    pub fn from_rdata(key: Name, d: &[u8]) -> Result<Tsig, WireError> {
        let mut p = 0;
        loop {
            let l = *d.get(p).ok_or(WireError::BadRdata)? as usize;
            if l == 0 {
                break;
            }
            if l > 63 {
                return Err(WireError::BadRdata);
            }
            p += 1 + l;
        }
        let algorithm = Name::from_wire(d.get(..=p).ok_or(WireError::BadRdata)?)?;
        let mut p = p + 1;
        let mut take = |n: usize| -> Result<&[u8], WireError> {
            let s = d.get(p..p + n).ok_or(WireError::BadRdata)?;
            p += n;
            Ok(s)
        };
        let t = take(6)?;
        let time_signed = t.iter().fold(0u64, |a, &b| (a << 8) | b as u64);
        let u16v = |s: &[u8]| u16::from_be_bytes([s[0], s[1]]);
        let fudge = u16v(take(2)?);
        let mac_len = u16v(take(2)?) as usize;
        let mac = take(mac_len)?.to_vec();
        let orig_id = u16v(take(2)?);
        let error = u16v(take(2)?);
        let other_len = u16v(take(2)?) as usize;
        let other = take(other_len)?.to_vec();
        if p != d.len() {
            return Err(WireError::BadRdata);
        }
        Ok(Tsig {
            key,
            algorithm,
            time_signed,
            fudge,
            mac,
            orig_id,
            error,
            other,
        })
    }

    /// The record data.
    pub fn rdata(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(self.algorithm.wire_len() + 16 + self.mac.len());
        w.extend_from_slice(self.algorithm.wire());
        w.extend_from_slice(&self.time_signed.to_be_bytes()[2..]);
        w.extend_from_slice(&self.fudge.to_be_bytes());
        w.extend_from_slice(&(self.mac.len() as u16).to_be_bytes());
        w.extend_from_slice(&self.mac);
        w.extend_from_slice(&self.orig_id.to_be_bytes());
        w.extend_from_slice(&self.error.to_be_bytes());
        w.extend_from_slice(&(self.other.len() as u16).to_be_bytes());
        w.extend_from_slice(&self.other);
        w
    }

    /// The whole record in wire form (owner uncompressed, class ANY, TTL 0).
    pub fn record_wire(&self) -> Vec<u8> {
        let rd = self.rdata();
        let mut w = Vec::with_capacity(self.key.wire_len() + 10 + rd.len());
        w.extend_from_slice(self.key.wire());
        w.extend_from_slice(&TSIG.0.to_be_bytes());
        w.extend_from_slice(&Class::ANY.0.to_be_bytes());
        w.extend_from_slice(&0u32.to_be_bytes());
        w.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        w.extend_from_slice(&rd);
        w
    }

    /// Length of [`Tsig::record_wire`] for a MAC of `mac_len` octets and `other_len` other
    /// octets (what a signature adds to a message).
    pub fn record_len(key: &Name, algorithm: &Name, mac_len: usize, other_len: usize) -> usize {
        key.wire_len() + 10 + algorithm.wire_len() + 16 + mac_len + other_len
    }

    /// The TSIG variables a MAC covers (RFC 8945 §4.3.3): key name and algorithm in canonical
    /// form, class ANY, TTL 0, time, fudge, error, other data; or with `timers_only` the time
    /// and fudge alone (§5.3.1, the later messages of a TCP exchange).
    pub fn variables(&self, timers_only: bool) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        if !timers_only {
            w.extend_from_slice(self.key.to_lowercase().wire());
            w.extend_from_slice(&Class::ANY.0.to_be_bytes());
            w.extend_from_slice(&0u32.to_be_bytes());
            w.extend_from_slice(self.algorithm.to_lowercase().wire());
        }
        w.extend_from_slice(&self.time_signed.to_be_bytes()[2..]);
        w.extend_from_slice(&self.fudge.to_be_bytes());
        if !timers_only {
            w.extend_from_slice(&self.error.to_be_bytes());
            w.extend_from_slice(&(self.other.len() as u16).to_be_bytes());
            w.extend_from_slice(&self.other);
        }
        w
    }
}

/// The input of a MAC: `prior_mac` (the request's MAC for a response, the previous message's
/// for a later message of a TCP exchange; empty for a request) with its length, then
/// `unsigned` (the message without its TSIG, ID set to the TSIG's original ID), then the TSIG
/// variables.
pub fn mac_input(prior_mac: &[u8], unsigned: &[u8], tsig: &Tsig, timers_only: bool) -> Vec<u8> {
    let vars = tsig.variables(timers_only);
    let mut w = Vec::with_capacity(2 + prior_mac.len() + unsigned.len() + vars.len());
    if !prior_mac.is_empty() {
        w.extend_from_slice(&(prior_mac.len() as u16).to_be_bytes());
        w.extend_from_slice(prior_mac);
    }
    w.extend_from_slice(unsigned);
    w.extend_from_slice(&vars);
    w
}

/// The TSIG record closing `msg`, if its last additional record is one: the offset where that
/// record starts and its content.
pub fn find_tsig(msg: &[u8]) -> Result<Option<(usize, Tsig)>, WireError> {
    let count = |i: usize| -> Result<usize, WireError> {
        Ok(u16::from_be_bytes([
            *msg.get(i).ok_or(WireError::ShortMessage)?,
            *msg.get(i + 1).ok_or(WireError::ShortMessage)?,
        ]) as usize)
    };
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    if ar == 0 {
        return Ok(None);
    }
    let mut p = HEADER_LEN;
    for _ in 0..qd {
        p = read_name(msg, p)?.1 + 4;
    }
    let total = an + ns + ar;
    for i in 0..total {
        let start = p;
        let (owner, after) = read_name(msg, p)?;
        let h = msg.get(after..after + 10).ok_or(WireError::ShortMessage)?;
        let rtype = RType(u16::from_be_bytes([h[0], h[1]]));
        let rdlen = u16::from_be_bytes([h[8], h[9]]) as usize;
        let rd = msg
            .get(after + 10..after + 10 + rdlen)
            .ok_or(WireError::ShortMessage)?;
        p = after + 10 + rdlen;
        if i + 1 == total && rtype == TSIG {
            if p != msg.len() {
                return Err(WireError::TrailingData);
            }
            return Ok(Some((start, Tsig::from_rdata(owner, rd)?)));
        }
    }
    Ok(None)
}

/// `msg` as it was before the TSIG record at `offset` was added: the record cut off, ARCOUNT
/// one less and the ID set to `orig_id`.
pub fn strip_tsig(msg: &[u8], offset: usize, orig_id: u16) -> Vec<u8> {
    let mut w = msg[..offset.min(msg.len())].to_vec();
    if w.len() >= HEADER_LEN {
        w[0..2].copy_from_slice(&orig_id.to_be_bytes());
        let ar = u16::from_be_bytes([w[10], w[11]]).saturating_sub(1);
        w[10..12].copy_from_slice(&ar.to_be_bytes());
    }
    w
}

/// Appends the TSIG record `t` to the finished message `msg` and counts it in ARCOUNT.
pub fn append_tsig(msg: &mut Vec<u8>, t: &Tsig) {
    if msg.len() < HEADER_LEN {
        return;
    }
    let ar = u16::from_be_bytes([msg[10], msg[11]]).saturating_add(1);
    msg[10..12].copy_from_slice(&ar.to_be_bytes());
    msg.extend_from_slice(&t.record_wire());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Edns, Message};
    use crate::rr::Record;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn sample() -> Tsig {
        Tsig {
            key: n("Key.Example."),
            algorithm: n("hmac-sha256."),
            time_signed: 0x0001_6000_0000,
            fudge: 300,
            mac: vec![0xaa; 32],
            orig_id: 0x1234,
            error: 0,
            other: vec![],
        }
    }

    #[test]
    fn record_round_trip_and_lengths() {
        let t = sample();
        let rd = t.rdata();
        assert_eq!(Tsig::from_rdata(t.key.clone(), &rd).unwrap(), t);
        assert_eq!(
            t.record_wire().len(),
            Tsig::record_len(&t.key, &t.algorithm, 32, 0)
        );
        assert!(Tsig::from_rdata(t.key.clone(), &rd[..rd.len() - 1]).is_err());
        let mut long = rd.clone();
        long.push(0);
        assert!(Tsig::from_rdata(t.key.clone(), &long).is_err());
    }

    #[test]
    fn variables_are_canonical() {
        let v = sample().variables(false);
        assert!(v.starts_with(b"\x03key\x07example\x00\x00\xff\x00\x00\x00\x00\x0bhmac-sha256\x00"));
        assert!(v.ends_with(&[0, 0x01, 0x60, 0, 0, 0, 0x01, 0x2c, 0, 0, 0, 0]));
        assert_eq!(
            sample().variables(true),
            [0, 0x01, 0x60, 0, 0, 0, 0x01, 0x2c]
        );
        let m = mac_input(&[1, 2], b"MSG", &sample(), true);
        assert_eq!(&m[..7], &[0, 2, 1, 2, b'M', b'S', b'G']);
        assert_eq!(mac_input(&[], b"MSG", &sample(), true)[..3], *b"MSG");
    }

    #[test]
    fn find_and_strip() {
        let mut q = Message::query(0x4321, n("example.org."), RType::AXFR);
        q.edns = Some(Edns::new(1232));
        let plain = q.to_wire();
        assert_eq!(find_tsig(&plain).unwrap(), None);
        let mut signed = plain.clone();
        let t = sample();
        append_tsig(&mut signed, &t);
        let (off, got) = find_tsig(&signed).unwrap().unwrap();
        assert_eq!(off, plain.len());
        assert_eq!(got, t);
        let back = strip_tsig(&signed, off, 0x1234);
        assert_eq!(&back[2..], &plain[2..]);
        assert_eq!(&back[..2], &[0x12, 0x34]);
        // It parses as a message with the TSIG as the last additional record.
        let m = Message::parse(&signed).unwrap();
        assert_eq!(m.additional.last().map(|r: &Record| r.rtype), Some(TSIG));
        // A TSIG that is not last is not a signature.
        let mut q2 = Message::query(1, n("a."), RType::A);
        q2.additional
            .push(Record::unknown(n("k."), TSIG, Class::ANY, 0, t.rdata()));
        q2.edns = Some(Edns::new(1232));
        assert_eq!(find_tsig(&q2.to_wire()).unwrap(), None);
        assert!(find_tsig(&signed[..signed.len() - 1]).is_err());
    }
}
