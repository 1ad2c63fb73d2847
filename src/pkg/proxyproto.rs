//! The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) as CoreDNS 1.14.7
//! reads it through go-proxyproto v0.15: one decoder for the start of a TCP stream and for a UDP
//! datagram, with that library's acceptance rules (v1 line of at most 107 bytes ending in CRLF,
//! `TCP4`/`TCP6`/`UNKNOWN`; v2 commands LOCAL and PROXY, the seven address families, length
//! checks, at most 4096 bytes of addresses and TLVs). No I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v1 signature.
const SIG_V1: &[u8; 5] = b"PROXY";
/// The v2 signature.
const SIG_V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included.
const V1_MAX: usize = 107;
/// Largest v2 address block (addresses and TLVs), as go-proxyproto's `MaxV2HeaderSize`.
const V2_MAX_LEN: usize = 4096;
/// Longest header of either version.
pub(crate) const MAX_HEADER: usize = 16 + V2_MAX_LEN;

/// A decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// 1 or 2.
    pub version: u8,
    /// LOCAL (a health check of the proxy itself, or v1 `UNKNOWN`): the connection's own
    /// addresses stand.
    pub local: bool,
    /// The v2 address family and protocol byte (`0x11` TCP over IPv4, `0x12` UDP over IPv4,
    /// `0x21`/`0x22` IPv6, `0x31`/`0x32` Unix, `0` unspecified); v1 `TCP4` is `0x11`, `TCP6`
    /// `0x21`, `UNKNOWN` `0`.
    pub family: u8,
    /// The original client, for IPv4 and IPv6 families (None for Unix and unspecified).
    pub source: Option<SocketAddr>,
    /// The address the client connected to.
    pub destination: Option<SocketAddr>,
}

impl Header {
    /// A UDP family (`0x12`, `0x22`) with its addresses: what a datagram's header must be.
    pub(crate) fn is_udp(&self) -> bool {
        matches!(self.family, 0x12 | 0x22) && self.source.is_some()
    }

    /// The client the header names on a stream: None for LOCAL, Unix or unspecified.
    pub(crate) fn stream_client(&self) -> Option<(SocketAddr, Option<SocketAddr>)> {
        if self.local {
            return None;
        }
        self.source.map(|s| (s, self.destination))
    }
}

/// What the start of some bytes holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// No PROXY signature: the bytes are the payload.
    None,
    /// A stream that has not yet sent enough to decide (only with `complete == false`).
    Incomplete,
    /// A header of `len` bytes; the payload follows it.
    Header { header: Header, len: usize },
}

/// Why a header is refused (go-proxyproto's error texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    #[error("proxyproto: can't read version 1 header")]
    V1Read,
    #[error("proxyproto: version 1 header must be 107 bytes or less")]
    V1TooLong,
    #[error("proxyproto: version 1 header is invalid, must end with \\r\\n")]
    V1Crlf,
    #[error("proxyproto: can't read address family or protocol")]
    Family,
    #[error("proxyproto: invalid address")]
    Address,
    #[error("proxyproto: invalid port number")]
    Port,
    #[error("proxyproto: can't read proxy protocol version and command")]
    V2Read,
    #[error("proxyproto: unsupported proxy protocol version and command")]
    V2Command,
    #[error("proxyproto: unsupported address family and protocol")]
    V2Family,
    #[error("proxyproto: invalid length")]
    V2Length,
}

/// Decodes the header at the start of `buf`. `complete`: `buf` is all there is (a datagram,
/// or a stream that ended); otherwise a prefix that may be a header gives
/// [`Decoded::Incomplete`] until enough has arrived. As go-proxyproto, a datagram shorter than
/// a signature is no header, and a started but cut header is an error.
pub(crate) fn decode(buf: &[u8], complete: bool) -> Result<Decoded, Error> {
    let Some(&first) = buf.first() else {
        return Ok(if complete {
            Decoded::None
        } else {
            Decoded::Incomplete
        });
    };
    if first != SIG_V1[0] && first != SIG_V2[0] {
        return Ok(Decoded::None);
    }
    if buf.len() < SIG_V1.len() {
        return Ok(if complete {
            Decoded::None
        } else {
            Decoded::Incomplete
        });
    }
    if buf[..5] == SIG_V1[..] {
        return v1(buf, complete);
    }
    if buf.len() < SIG_V2.len() {
        if !complete && SIG_V2.starts_with(buf) {
            return Ok(Decoded::Incomplete);
        }
        return Ok(Decoded::None);
    }
    if buf[..12] == SIG_V2[..] {
        return v2(buf, complete);
    }
    Ok(Decoded::None)
}

fn v1(buf: &[u8], complete: bool) -> Result<Decoded, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(Error::V1TooLong);
        }
        return if complete {
            Err(Error::V1Read)
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    let len = nl + 1;
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(Error::V1Crlf);
    }
    let line = std::str::from_utf8(&buf[..nl - 1]).map_err(|_| Error::Address)?;
    let tokens: Vec<&str> = line.split(' ').collect();
    if tokens[0] != "PROXY" {
        return Err(Error::V1Read);
    }
    let Some(proto) = tokens.get(1) else {
        return Err(Error::Family);
    };
    let family = match *proto {
        "TCP4" => 0x11,
        "TCP6" => 0x21,
        "UNKNOWN" => {
            let header = Header {
                version: 1,
                local: true,
                family: 0,
                source: None,
                destination: None,
            };
            return Ok(Decoded::Header { header, len });
        }
        _ => return Err(Error::Family),
    };
    if tokens.len() != 6 {
        return Err(Error::Family);
    }
    let src = v1_ip(family, tokens[2])?;
    let dst = v1_ip(family, tokens[3])?;
    let sport = v1_port(tokens[4])?;
    let dport = v1_port(tokens[5])?;
    let header = Header {
        version: 1,
        local: false,
        family,
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    };
    Ok(Decoded::Header { header, len })
}

/// An address of a v1 line: dotted quad for `TCP4`, IPv6 text (an IPv4-mapped one included)
/// for `TCP6`, no zone.
fn v1_ip(family: u8, s: &str) -> Result<IpAddr, Error> {
    if family == 0x11 {
        s.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| Error::Address)
    } else {
        s.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| Error::Address)
    }
}

/// A port of a v1 line: decimal digits, no leading zero, at most 65535.
fn v1_port(s: &str) -> Result<u16, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(Error::Port);
    }
    s.parse().map_err(|_| Error::Port)
}

fn v2(buf: &[u8], complete: bool) -> Result<Decoded, Error> {
    let need = |n: usize, err: Error| -> Result<(), Option<Error>> {
        if buf.len() >= n {
            Ok(())
        } else if complete {
            Err(Some(err))
        } else {
            Err(None)
        }
    };
    let incomplete = |e: Option<Error>| match e {
        Some(e) => Err(e),
        None => Ok(Decoded::Incomplete),
    };
    if let Err(e) = need(13, Error::V2Read) {
        return incomplete(e);
    }
    let command = buf[12];
    if command != 0x20 && command != 0x21 {
        return Err(Error::V2Command);
    }
    let local = command == 0x20;
    if let Err(e) = need(14, Error::Family) {
        return incomplete(e);
    }
    let family = buf[13];
    if !matches!(family, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32) {
        return Err(Error::V2Family);
    }
    if family == 0 && !local {
        return Err(Error::V2Family);
    }
    if let Err(e) = need(16, Error::V2Length) {
        return incomplete(e);
    }
    let length = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let min = match family >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    let mut header = Header {
        version: 2,
        local,
        family,
        source: None,
        destination: None,
    };
    if length < min {
        // A LOCAL header may carry anything short: skipped, its family unspecified.
        if !local {
            return Err(Error::V2Length);
        }
        if let Err(e) = need(16 + length, Error::V2Length) {
            return incomplete(e);
        }
        header.family = 0;
        return Ok(Decoded::Header {
            header,
            len: 16 + length,
        });
    }
    if length > V2_MAX_LEN {
        return Err(Error::V2Length);
    }
    let total = 16 + length;
    if let Err(e) = need(total, Error::Address) {
        return incomplete(e);
    }
    let a = &buf[16..total];
    match family >> 4 {
        1 => {
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            header.source = Some(SocketAddr::new(ip(0), port(8)));
            header.destination = Some(SocketAddr::new(ip(4), port(10)));
        }
        2 => {
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            header.source = Some(SocketAddr::new(ip(0), port(32)));
            header.destination = Some(SocketAddr::new(ip(16), port(34)));
        }
        // Unix addresses (and unspecified): no IP address to take.
        _ => {}
    }
    Ok(Decoded::Header { header, len: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut b = SIG_V2.to_vec();
        b.push(command);
        b.push(family);
        b.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        b.extend_from_slice(addrs);
        b
    }

    fn v4_addrs() -> Vec<u8> {
        vec![10, 1, 2, 3, 192, 0, 2, 1, 0x30, 0x39, 0, 53]
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let buf = b"PROXY TCP4 10.1.2.3 192.0.2.1 12345 53\r\n\x00\x1dquery";
        let Decoded::Header { header, len } = decode(buf, false).unwrap() else {
            panic!("no header");
        };
        assert_eq!(len, buf.len() - 7);
        assert_eq!(header.version, 1);
        assert_eq!(header.source, Some("10.1.2.3:12345".parse().unwrap()));
        assert_eq!(header.destination, Some("192.0.2.1:53".parse().unwrap()));
        assert_eq!(
            header.stream_client().map(|c| c.0),
            Some("10.1.2.3:12345".parse().unwrap())
        );
        let buf = b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 65535\r\n";
        let Decoded::Header { header, .. } = decode(buf, true).unwrap() else {
            panic!("no header");
        };
        assert_eq!(header.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert!(!header.is_udp(), "v1 is TCP only");
        let Decoded::Header { header, len } = decode(b"PROXY UNKNOWN x y\r\nrest", true).unwrap()
        else {
            panic!("no header");
        };
        assert_eq!((header.local, header.source, len), (true, None, 19));
        assert_eq!(header.stream_client(), None);
    }

    #[test]
    fn v1_refusals() {
        let bad: &[(&[u8], Error)] = &[
            (b"PROXY TCP4 10.1.2.3 192.0.2.1 12345 53\n", Error::V1Crlf),
            (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 1\r\n", Error::Family),
            (b"PROXY\r\n", Error::Family),
            (b"PROXYX TCP4\r\n", Error::V1Read),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", Error::Family),
            (b"PROXY TCP4 1.2.3.4  1.2.3.4 1 1\r\n", Error::Family),
            (b"PROXY TCP4 ::1 1.2.3.4 1 1\r\n", Error::Address),
            (b"PROXY TCP6 1.2.3.4 ::1 1 1\r\n", Error::Address),
            (b"PROXY TCP4 01.2.3.4 1.2.3.4 1 1\r\n", Error::Address),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 1\r\n", Error::Port),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 1\r\n", Error::Port),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n", Error::Port),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 1", Error::V1Read),
        ];
        for (b, want) in bad {
            assert_eq!(
                decode(b, true),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(decode(&long, false), Err(Error::V1TooLong));
        // A stream still sending its line waits.
        assert_eq!(
            decode(b"PROXY TCP4 1.2.3.4", false),
            Ok(Decoded::Incomplete)
        );
        assert_eq!(decode(b"PRO", false), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"PRO", true), Ok(Decoded::None));
    }

    #[test]
    fn v2_addresses_local_and_lengths() {
        let mut b = v2_header(0x21, 0x12, &v4_addrs());
        b.extend_from_slice(b"dns");
        let Decoded::Header { header, len } = decode(&b, true).unwrap() else {
            panic!("no header");
        };
        assert_eq!(len, 28);
        assert!(header.is_udp());
        assert_eq!(header.source, Some("10.1.2.3:12345".parse().unwrap()));
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[31] = 2;
        six[32..34].copy_from_slice(&1000u16.to_be_bytes());
        let b = v2_header(0x21, 0x21, &six);
        let Decoded::Header { header, .. } = decode(&b, true).unwrap() else {
            panic!("no header");
        };
        assert_eq!(header.source, Some("[::1]:1000".parse().unwrap()));
        assert!(!header.is_udp());
        // TLVs after the addresses are skipped.
        let mut with_tlv = v4_addrs();
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]);
        let b = v2_header(0x21, 0x11, &with_tlv);
        assert!(matches!(
            decode(&b, true),
            Ok(Decoded::Header { len: 32, .. })
        ));
        // LOCAL: any short block, the family unspecified.
        let b = v2_header(0x20, 0x11, &[1, 2, 3]);
        let Decoded::Header { header, len } = decode(&b, true).unwrap() else {
            panic!("no header");
        };
        assert_eq!((header.local, header.family, len), (true, 0, 19));
        let b = v2_header(0x20, 0x00, &[]);
        assert!(matches!(
            decode(&b, true),
            Ok(Decoded::Header { len: 16, .. })
        ));
    }

    #[test]
    fn v2_refusals_and_partial_streams() {
        assert_eq!(
            decode(&v2_header(0x22, 0x11, &v4_addrs()), true),
            Err(Error::V2Command)
        );
        assert_eq!(
            decode(&v2_header(0x11, 0x11, &v4_addrs()), true),
            Err(Error::V2Command)
        );
        assert_eq!(
            decode(&v2_header(0x21, 0x13, &v4_addrs()), true),
            Err(Error::V2Family)
        );
        assert_eq!(
            decode(&v2_header(0x21, 0x00, &[]), true),
            Err(Error::V2Family)
        );
        assert_eq!(
            decode(&v2_header(0x21, 0x11, &[1, 2, 3]), true),
            Err(Error::V2Length)
        );
        assert_eq!(
            decode(&v2_header(0x21, 0x11, &vec![0; 4097]), true),
            Err(Error::V2Length)
        );
        let full = v2_header(0x21, 0x11, &v4_addrs());
        for cut in 1..full.len() {
            assert_eq!(
                decode(&full[..cut], false),
                Ok(Decoded::Incomplete),
                "{cut}"
            );
        }
        assert_eq!(decode(&full[..20], true), Err(Error::Address));
        assert_eq!(decode(&full[..14], true), Err(Error::V2Length));
        // Not a signature: the bytes are the payload.
        assert_eq!(
            decode(b"\r\n\r\n\0\r\nQUIX\n1234", false),
            Ok(Decoded::None)
        );
        assert_eq!(decode(b"\x00\x1d\x12\x34", false), Ok(Decoded::None));
        assert_eq!(decode(b"\r\n\r\n", true), Ok(Decoded::None));
    }
}
