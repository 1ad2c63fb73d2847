//! The dnstap protobuf message set (`dnstap.proto`, proto2, package `dnstap`): the writer's
//! encoder of one [`Record`] into a data frame (prost's field encoders writing into a buffer on
//! the stack and the reused frame buffer, no message struct built per message) and, for tests,
//! the schema as prost messages to decode frames with.

use std::net::SocketAddr;
use std::time::SystemTime;

/// Nanoseconds since the Unix epoch.
pub(crate) type Nanos = u64;

/// `t` in nanoseconds since the Unix epoch.
pub(crate) fn nanos(t: SystemTime) -> Nanos {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as Nanos
}

use prost::bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

/// One dnstap message as the query path leaves it (addresses, times and, with `full`, where
/// its wire bytes lie in the batch's byte buffer); the writer task encodes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub(crate) kind: MessageType,
    pub(crate) tcp: bool,
    pub(crate) query_addr: Option<SocketAddr>,
    pub(crate) response_addr: Option<SocketAddr>,
    pub(crate) query_time: Nanos,
    /// 0 for none.
    pub(crate) response_time: Nanos,
    /// The query (CLIENT_QUERY, FORWARDER_QUERY) or response (the *_RESPONSE types) message:
    /// its start and end in the bytes queued with the record (no allocation per message).
    pub(crate) wire: Option<(usize, usize)>,
    /// The `extra` field with its placeholders filled in (None: the output's literal one).
    pub(crate) extra: Option<String>,
}

/// The envelope fields every frame of one output starts with (identity and version), encoded
/// once.
pub(crate) fn envelope_prefix(identity: &[u8], version: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_bytes(1, identity, &mut b);
    put_bytes(2, version, &mut b);
    b
}

fn put_bytes(tag: u32, v: &[u8], b: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, b);
    encode_varint(v.len() as u64, b);
    b.put_slice(v);
}

fn put_varint(tag: u32, v: u64, b: &mut impl BufMut) {
    encode_key(tag, WireType::Varint, b);
    encode_varint(v, b);
}

fn put_fixed32(tag: u32, v: u32, b: &mut impl BufMut) {
    encode_key(tag, WireType::ThirtyTwoBit, b);
    b.put_u32_le(v);
}

/// Seconds and nanoseconds since the epoch.
fn timestamp(t: Nanos) -> (u64, u32) {
    (t / 1_000_000_000, (t % 1_000_000_000) as u32)
}

/// The family and address bytes of `a` (an IPv4-mapped IPv6 address counts as IPv4, like
/// Go's `To4`).
pub(crate) fn family_and_address(a: &SocketAddr) -> (SocketFamily, [u8; 16], usize) {
    let mut out = [0u8; 16];
    match a.ip().to_canonical() {
        std::net::IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (SocketFamily::Inet, out, 4)
        }
        std::net::IpAddr::V6(v6) => (SocketFamily::Inet6, v6.octets(), 16),
    }
}

/// Room for the fields of a `dnstap.Message` other than its wire message: at most 82 bytes
/// (three enums, two addresses of 16 bytes, two ports, two times).
const FIELDS: usize = 96;

/// The fields of `r`'s `dnstap.Message` other than its wire message, encoded into `out`:
/// returns the length of fields 1 to 9 (the query message, field 10, goes after them) and the
/// whole length (fields 12 and 13 follow; the response message, field 14, goes last).
fn put_fields(r: &Record, out: &mut [u8; FIELDS]) -> (usize, usize) {
    let mut b = &mut out[..];
    put_varint(1, r.kind as u64, &mut b);
    let qa = r.query_addr.as_ref().map(family_and_address);
    let ra = r.response_addr.as_ref().map(family_and_address);
    // The family of the last address set, as CoreDNS's msg.Set*Address leave it.
    if let Some((family, _, _)) = ra.as_ref().or(qa.as_ref()) {
        put_varint(2, *family as u64, &mut b);
        let proto = if r.tcp {
            SocketProtocol::Tcp
        } else {
            SocketProtocol::Udp
        };
        put_varint(3, proto as u64, &mut b);
    }
    if let Some((_, ip, n)) = &qa {
        put_bytes(4, &ip[..*n], &mut b);
    }
    if let Some((_, ip, n)) = &ra {
        put_bytes(5, &ip[..*n], &mut b);
    }
    if let Some(a) = &r.query_addr {
        put_varint(6, u64::from(a.port()), &mut b);
    }
    if let Some(a) = &r.response_addr {
        put_varint(7, u64::from(a.port()), &mut b);
    }
    let (s, ns) = timestamp(r.query_time);
    put_varint(8, s, &mut b);
    put_fixed32(9, ns, &mut b);
    let head = FIELDS - b.len();
    if r.response_time != 0 {
        let (s, ns) = timestamp(r.response_time);
        put_varint(12, s, &mut b);
        put_fixed32(13, ns, &mut b);
    }
    (head, FIELDS - b.len())
}

/// Appends one Frame Streams data frame (length, then the `dnstap.Dnstap` envelope: `prefix`,
/// the extra field, the message, type MESSAGE) for `r` (whose wire message lies in `bytes`) to
/// `buf`. The message's fields are encoded on the stack and `buf` grows once per frame.
pub(crate) fn encode_frame(
    prefix: &[u8],
    extra: Option<&[u8]>,
    r: &Record,
    bytes: &[u8],
    buf: &mut Vec<u8>,
) {
    let mut fields = [0u8; FIELDS];
    let (head, all) = put_fields(r, &mut fields);
    let wire = r.wire.and_then(|(s, e)| bytes.get(s..e));
    let response = matches!(
        r.kind,
        MessageType::ClientResponse | MessageType::ForwarderResponse
    );
    let wire_tag = if response { 14 } else { 10 };
    let wire_len = wire.map_or(0, |w| {
        key_len(wire_tag) + encoded_len_varint(w.len() as u64) + w.len()
    });
    let msg_len = all + wire_len;
    let extra = r.extra.as_deref().map(str::as_bytes).or(extra);
    let extra_len = extra.map_or(0, |e| {
        key_len(3) + encoded_len_varint(e.len() as u64) + e.len()
    });
    let len = prefix.len()
        + extra_len
        + key_len(14)
        + encoded_len_varint(msg_len as u64)
        + msg_len
        + key_len(15)
        + 1;
    buf.reserve(4 + len);
    buf.put_u32(len as u32);
    buf.put_slice(prefix);
    if let Some(e) = extra {
        put_bytes(3, e, buf);
    }
    encode_key(14, WireType::LengthDelimited, buf);
    encode_varint(msg_len as u64, buf);
    match wire {
        Some(w) if !response => {
            buf.put_slice(&fields[..head]);
            put_bytes(10, w, buf);
            buf.put_slice(&fields[head..all]);
        }
        Some(w) => {
            buf.put_slice(&fields[..all]);
            put_bytes(14, w, buf);
        }
        None => buf.put_slice(&fields[..all]),
    }
    put_varint(15, DnstapType::Message as u64, buf);
}

/// `dnstap.Dnstap`: the envelope of every frame.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Dnstap {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) identity: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub(crate) version: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub(crate) extra: Option<Vec<u8>>,
    #[prost(enumeration = "DnstapType", required, tag = "15")]
    pub(crate) r#type: i32,
    #[prost(message, optional, tag = "14")]
    pub(crate) message: Option<TapMessage>,
}

/// `dnstap.Dnstap.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum DnstapType {
    Message = 1,
}

/// `dnstap.SocketFamily`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum SocketFamily {
    Inet = 1,
    Inet6 = 2,
}

/// `dnstap.SocketProtocol` (the values CoreDNS sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum SocketProtocol {
    Udp = 1,
    Tcp = 2,
}

/// `dnstap.Message.Type` (the values CoreDNS emits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum MessageType {
    ClientQuery = 5,
    ClientResponse = 6,
    ForwarderQuery = 7,
    ForwarderResponse = 8,
}

/// `dnstap.Message`.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TapMessage {
    #[prost(enumeration = "MessageType", required, tag = "1")]
    pub(crate) r#type: i32,
    #[prost(enumeration = "SocketFamily", optional, tag = "2")]
    pub(crate) socket_family: Option<i32>,
    #[prost(enumeration = "SocketProtocol", optional, tag = "3")]
    pub(crate) socket_protocol: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub(crate) query_address: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub(crate) response_address: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "6")]
    pub(crate) query_port: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub(crate) response_port: Option<u32>,
    #[prost(uint64, optional, tag = "8")]
    pub(crate) query_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "9")]
    pub(crate) query_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub(crate) query_message: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "11")]
    pub(crate) query_zone: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "12")]
    pub(crate) response_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "13")]
    pub(crate) response_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "14")]
    pub(crate) response_message: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn decode(frame: &[u8]) -> Dnstap {
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        Dnstap::decode(&frame[4..]).unwrap()
    }

    #[test]
    fn records_encode_to_the_schema_message() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        let t2 = t + std::time::Duration::from_millis(3);
        let prefix = envelope_prefix(b"host", b"Sextant-x");
        let mut buf = Vec::new();
        let r = Record {
            kind: MessageType::ForwarderResponse,
            tcp: true,
            query_addr: Some("[::ffff:10.0.0.1]:40000".parse().unwrap()),
            response_addr: Some("[2001:db8::53]:53".parse().unwrap()),
            query_time: nanos(t),
            response_time: nanos(t2),
            wire: Some((1, 4)),
            extra: None,
        };
        let bytes = [9, 1, 2, 3];
        encode_frame(&prefix, Some(b"lit"), &r, &bytes, &mut buf);
        let first = buf.len();
        let q = Record {
            kind: MessageType::ClientQuery,
            tcp: false,
            query_addr: Some("192.0.2.7:5353".parse().unwrap()),
            response_addr: None,
            query_time: nanos(t),
            response_time: 0,
            wire: Some((0, 1)),
            extra: Some("rendered".into()),
        };
        encode_frame(&prefix, Some(b"lit"), &q, &bytes, &mut buf);
        let d = decode(&buf[..first]);
        let want = TapMessage {
            r#type: MessageType::ForwarderResponse as i32,
            socket_family: Some(SocketFamily::Inet6 as i32),
            socket_protocol: Some(SocketProtocol::Tcp as i32),
            query_address: Some(vec![10, 0, 0, 1]),
            response_address: Some(
                "2001:db8::53"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
                    .to_vec(),
            ),
            query_port: Some(40000),
            response_port: Some(53),
            query_time_sec: Some(1_700_000_000),
            query_time_nsec: Some(123_456_789),
            query_message: None,
            query_zone: None,
            response_time_sec: Some(1_700_000_000),
            response_time_nsec: Some(126_456_789),
            response_message: Some(vec![1, 2, 3]),
        };
        assert_eq!(
            d,
            Dnstap {
                identity: Some(b"host".to_vec()),
                version: Some(b"Sextant-x".to_vec()),
                extra: Some(b"lit".to_vec()),
                r#type: DnstapType::Message as i32,
                message: Some(want),
            }
        );
        let d = decode(&buf[first..]);
        assert_eq!(d.extra.as_deref(), Some(&b"rendered"[..]));
        let m = d.message.unwrap();
        assert_eq!(m.r#type, MessageType::ClientQuery as i32);
        assert_eq!(m.socket_family, Some(SocketFamily::Inet as i32));
        assert_eq!(m.socket_protocol, Some(SocketProtocol::Udp as i32));
        assert_eq!(m.query_address, Some(vec![192, 0, 2, 7]));
        assert_eq!((m.query_port, m.response_port), (Some(5353), None));
        assert_eq!(m.query_message, Some(vec![9]));
        assert_eq!((m.response_message, m.response_time_sec), (None, None));
    }

    #[test]
    fn field_numbers_and_wire_types_are_the_schema_ones() {
        let m = Dnstap {
            identity: Some(b"id".to_vec()),
            version: None,
            extra: None,
            r#type: DnstapType::Message as i32,
            message: Some(TapMessage {
                r#type: MessageType::ClientQuery as i32,
                query_port: Some(53),
                query_time_nsec: Some(1),
                ..TapMessage::default()
            }),
        };
        let b = m.encode_to_vec();
        // identity: field 1, length-delimited (0x0a); message: field 14 (0x72); type: field 15
        // varint (0x78) = 1.
        assert_eq!(&b[..4], &[0x0a, 2, b'i', b'd']);
        assert_eq!(b[4], 0x72);
        assert_eq!(&b[b.len() - 2..], &[0x78, 1]);
        // Inside: type 5 (0x08 05), query_port 53 (0x30 0x35), nsec as fixed32 (0x4d).
        let inner = &b[6..b.len() - 2];
        assert_eq!(inner, &[0x08, 5, 0x30, 53, 0x4d, 1, 0, 0, 0]);
        assert_eq!(Dnstap::decode(&b[..]).unwrap(), m);
    }
}
