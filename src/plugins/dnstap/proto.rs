//! The dnstap protobuf message set (`dnstap.proto`, proto2, package `dnstap`) as prost
//! messages: field numbers and types follow the schema; prost does the encoding.

/// `dnstap.Dnstap`: the envelope of every frame.
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
