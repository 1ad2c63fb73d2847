//! In-place query scanner for the hot path: reads the header, the one question and the OPT
//! record straight from the packet without allocating. No I/O.
//!
//! Anything unusual (more than one question, answer or authority records, extra additional
//! records, compression in the question) is reported as [`ScanError::Unusual`] so the caller can
//! fall back to the full parser in [`crate::message`], which decides on FORMERR.

use crate::message::{Edns, EdnsOption, Header, Message, Question, HEADER_LEN};
use crate::name::{Name, MAX_LABEL_LEN, MAX_NAME_LEN};
use crate::types::{Class, RType};

/// What the scanner saw in the OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptView {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// Offset of the OPT record in the packet.
    pub offset: usize,
}

/// A query as it sits in the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryView<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    pub flags: u16,
    /// The question name's wire bytes (uncompressed), root label included.
    pub qname: &'a [u8],
    pub qtype: RType,
    pub qclass: Class,
    /// Offset just after the question.
    pub question_end: usize,
    pub opt: Option<OptView>,
}

/// Why the scanner gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// Shorter than a header: drop.
    NoHeader,
    /// Not a plain query with one question: use the full parser.
    Unusual,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Scans a plain query: QR=0, QDCOUNT=1, ANCOUNT=NSCOUNT=0, ARCOUNT<=1 (an OPT at the root), no
/// compression in the question, no trailing bytes.
pub fn scan_query(packet: &[u8]) -> Result<QueryView<'_>, ScanError> {
    if packet.len() < HEADER_LEN {
        return Err(ScanError::NoHeader);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let counts = [
        be16(packet, 4),
        be16(packet, 6),
        be16(packet, 8),
        be16(packet, 10),
    ];
    if counts != [Some(1), Some(0), Some(0), Some(0)]
        && counts != [Some(1), Some(0), Some(0), Some(1)]
    {
        return Err(ScanError::Unusual);
    }
    let mut p = HEADER_LEN;
    loop {
        let len = *packet.get(p).ok_or(ScanError::Unusual)? as usize;
        if len == 0 {
            p += 1;
            break;
        }
        if len > MAX_LABEL_LEN {
            return Err(ScanError::Unusual);
        }
        p += 1 + len;
        if p - HEADER_LEN + 1 > MAX_NAME_LEN {
            return Err(ScanError::Unusual);
        }
    }
    if p > packet.len() {
        return Err(ScanError::Unusual);
    }
    let qname = &packet[HEADER_LEN..p];
    let qtype = RType(be16(packet, p).ok_or(ScanError::Unusual)?);
    let qclass = Class(be16(packet, p + 2).ok_or(ScanError::Unusual)?);
    let question_end = p + 4;
    let mut opt = None;
    if counts[3] == Some(1) {
        let o = question_end;
        if packet.get(o) != Some(&0) || be16(packet, o + 1) != Some(RType::OPT.0) {
            return Err(ScanError::Unusual);
        }
        let udp_size = be16(packet, o + 3).ok_or(ScanError::Unusual)?;
        let ttl_hi = be16(packet, o + 5).ok_or(ScanError::Unusual)?;
        let ttl_lo = be16(packet, o + 7).ok_or(ScanError::Unusual)?;
        let rdlen = be16(packet, o + 9).ok_or(ScanError::Unusual)? as usize;
        let end = o + 11 + rdlen;
        if end != packet.len() {
            return Err(ScanError::Unusual);
        }
        // Walk the options so a malformed option list goes to the full parser.
        let mut q = o + 11;
        while q < end {
            let l = be16(packet, q + 2).ok_or(ScanError::Unusual)? as usize;
            q += 4 + l;
        }
        if q != end {
            return Err(ScanError::Unusual);
        }
        opt = Some(OptView {
            udp_size,
            version: (ttl_hi & 0xff) as u8,
            dnssec_ok: ttl_lo & 0x8000 != 0,
            offset: o,
        });
    } else if question_end != packet.len() {
        return Err(ScanError::Unusual);
    }
    Ok(QueryView {
        packet,
        id,
        flags,
        qname,
        qtype,
        qclass,
        question_end,
        opt,
    })
}

impl QueryView<'_> {
    /// True when `msg` still is the query these bytes spell, so that encoding it gives exactly
    /// the packet: same header, the one question as spelled, no other records, and the same
    /// OPT record (size, flags, options in order) or none. Allocates nothing: a plugin that
    /// must log the query as it is now (dnstap) takes the packet instead of encoding `msg`.
    pub fn spells(&self, msg: &Message) -> bool {
        let [q] = &msg.questions[..] else {
            return false;
        };
        if msg.header != Header::from_flags(self.id, self.flags)
            || !msg.answers.is_empty()
            || !msg.authority.is_empty()
            || !msg.additional.is_empty()
            || q.qtype != self.qtype
            || q.qclass != self.qclass
            || q.name.wire() != self.qname
        {
            return false;
        }
        match (&msg.edns, self.opt) {
            (None, None) => true,
            (Some(e), Some(o)) => {
                let p = self.packet;
                let ttl = self.opt_ttl(o);
                if e.udp_size != o.udp_size
                    || e.ext_rcode != (ttl >> 24) as u8
                    || e.version != (ttl >> 16) as u8
                    || e.dnssec_ok != (ttl & 0x8000 != 0)
                    || e.z != (ttl & 0x7fff) as u16
                {
                    return false;
                }
                // The scanner walked the options: each header and body is inside the packet.
                let mut at = o.offset + 11;
                for opt in &e.options {
                    let (Some(code), Some(len)) = (be16(p, at), be16(p, at + 2)) else {
                        return false;
                    };
                    let len = len as usize;
                    if code != opt.code || p.get(at + 4..at + 4 + len) != Some(&opt.data[..]) {
                        return false;
                    }
                    at += 4 + len;
                }
                at == p.len()
            }
            _ => false,
        }
    }

    /// The TTL field of the OPT record at `o` (extended rcode, version, DO and Z); the scanner
    /// checked the record's fixed part is inside the packet.
    fn opt_ttl(&self, o: OptView) -> u32 {
        let p = self.packet;
        u32::from_be_bytes([
            p[o.offset + 5],
            p[o.offset + 6],
            p[o.offset + 7],
            p[o.offset + 8],
        ])
    }

    /// The query as a [`Message`], built from what the scan found instead of parsing the packet
    /// again: the same message `Message::parse` returns for every packet the scanner accepts
    /// (the `differential` fuzz target checks this).
    pub fn to_message(&self) -> Message {
        let edns = self.opt.map(|o| {
            let p = self.packet;
            let ttl = self.opt_ttl(o);
            let mut options = Vec::new();
            let mut q = o.offset + 11;
            // The scanner walked these already: each header and body is inside the packet.
            while let (Some(code), Some(len)) = (be16(p, q), be16(p, q + 2)) {
                let len = len as usize;
                let Some(data) = p.get(q + 4..q + 4 + len) else {
                    break;
                };
                options.push(EdnsOption {
                    code,
                    data: data.to_vec(),
                });
                q += 4 + len;
            }
            Edns {
                udp_size: o.udp_size,
                ext_rcode: (ttl >> 24) as u8,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
                z: (ttl & 0x7fff) as u16,
                options,
            }
        });
        Message {
            header: Header::from_flags(self.id, self.flags),
            questions: vec![Question {
                name: Name::from_checked_wire(self.qname.to_vec()),
                qtype: self.qtype,
                qclass: self.qclass,
            }],
            edns,
            ..Message::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Edns, Message, Name};

    #[test]
    fn a_query_spells_its_packet_until_edited() {
        let mut q = Message::query(7, Name::parse("MiXed.example.org.").unwrap(), RType::A);
        let mut e = Edns::new(1232);
        e.dnssec_ok = true;
        e.z = 0x0123;
        e.options.push(EdnsOption {
            code: 10,
            data: vec![1; 8],
        });
        e.options.push(EdnsOption {
            code: 65001,
            data: b"xyz".to_vec(),
        });
        q.edns = Some(e);
        q.header.cd = true;
        let w = q.to_wire();
        let v = scan_query(&w).unwrap();
        assert!(v.spells(&q));
        assert!(v.spells(&v.to_message()));
        let edits: [fn(&mut Message); 7] = [
            |m| m.edns.as_mut().unwrap().udp_size = 512,
            |m| m.edns.as_mut().unwrap().options.pop().map(|_| ()).unwrap(),
            |m| m.edns.as_mut().unwrap().options[0].data[0] = 2,
            |m| m.edns = None,
            |m| m.header.rd = false,
            |m| m.questions[0].name = Name::parse("mixed.example.org.").unwrap(),
            |m| m.questions[0].qtype = RType::AAAA,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut m = q.clone();
            edit(&mut m);
            assert!(!v.spells(&m), "edit {i}");
        }
        let plain = Message::query(8, Name::parse("a.example.").unwrap(), RType::A);
        let w = plain.to_wire();
        let v = scan_query(&w).unwrap();
        assert!(v.spells(&plain));
        let mut m = plain.clone();
        m.edns = Some(Edns::new(512));
        assert!(!v.spells(&m));
    }

    #[test]
    fn scans_plain_and_edns_queries() {
        let mut q = Message::query(
            0x1234,
            Name::parse("Kubernetes.default.svc.").unwrap(),
            RType::AAAA,
        );
        let w = q.to_wire();
        let v = scan_query(&w).unwrap();
        assert_eq!(v.id, 0x1234);
        assert_eq!(v.qtype, RType::AAAA);
        assert_eq!(v.qclass, Class::IN);
        assert_eq!(
            v.qname,
            Name::parse("Kubernetes.default.svc.").unwrap().wire()
        );
        assert!(v.opt.is_none());
        let mut e = Edns::new(4096);
        e.dnssec_ok = true;
        q.edns = Some(e);
        let w = q.to_wire();
        let v = scan_query(&w).unwrap();
        let o = v.opt.unwrap();
        assert_eq!((o.udp_size, o.version, o.dnssec_ok), (4096, 0, true));
        assert_eq!(v.to_message(), Message::parse(&w).unwrap());
        q.edns.as_mut().unwrap().options.push(crate::EdnsOption {
            code: 10,
            data: vec![1, 2, 3, 4, 5, 6, 7, 8],
        });
        q.edns.as_mut().unwrap().z = 0x11;
        let w = q.to_wire();
        assert_eq!(
            scan_query(&w).unwrap().to_message(),
            Message::parse(&w).unwrap()
        );
        assert_eq!(scan_query(&w[..w.len() - 1]), Err(ScanError::Unusual));
        assert_eq!(scan_query(&w[..5]), Err(ScanError::NoHeader));
    }
}
