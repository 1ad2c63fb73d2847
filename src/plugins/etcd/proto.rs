//! The few messages of etcd's v3 gRPC API the etcd plugin uses (`etcdserverpb` rpc.proto and
//! `mvccpb` kv.proto, written by hand from their field numbers so no `protoc` is needed), the
//! method paths, and their prost codecs. Fields the plugin never reads or sets are left out:
//! prost skips unknown fields when decoding, and an unset proto3 field is not sent.

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseHeader {
    #[prost(int64, tag = "3")]
    pub(crate) revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub(crate) mod_revision: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub(crate) value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub(crate) lease: i64,
}

/// `mvccpb.Event.EventType` DELETE (PUT is 0).
pub(crate) const EVENT_DELETE: i32 = 1;

/// `mvccpb.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Event {
    #[prost(int32, tag = "1")]
    pub(crate) r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub(crate) kv: Option<KeyValue>,
}

/// `etcdserverpb.RangeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub(crate) limit: i64,
    #[prost(int64, tag = "4")]
    pub(crate) revision: i64,
    #[prost(bool, tag = "9")]
    pub(crate) count_only: bool,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub(crate) more: bool,
    #[prost(int64, tag = "4")]
    pub(crate) count: i64,
}

/// `etcdserverpb.WatchRequest`: its `request_union` oneof with only `create_request` (field
/// 1), which is on the wire exactly an optional message field.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    pub(crate) create_request: Option<WatchCreateRequest>,
}

/// `etcdserverpb.WatchCreateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub(crate) start_revision: i64,
}

/// `etcdserverpb.WatchResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub(crate) watch_id: i64,
    #[prost(bool, tag = "3")]
    pub(crate) created: bool,
    #[prost(bool, tag = "4")]
    pub(crate) canceled: bool,
    #[prost(int64, tag = "5")]
    pub(crate) compact_revision: i64,
    #[prost(string, tag = "6")]
    pub(crate) cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub(crate) events: Vec<Event>,
}

/// `etcdserverpb.AuthenticateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AuthenticateRequest {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) password: String,
}

/// `etcdserverpb.AuthenticateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AuthenticateResponse {
    #[prost(string, tag = "2")]
    pub(crate) token: String,
}

/// `etcdserverpb.LeaseTimeToLiveRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaseTimeToLiveRequest {
    #[prost(int64, tag = "1")]
    pub(crate) id: i64,
}

/// `etcdserverpb.LeaseTimeToLiveResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaseTimeToLiveResponse {
    #[prost(int64, tag = "2")]
    pub(crate) id: i64,
    /// Remaining seconds; -1 when the lease has expired or does not exist.
    #[prost(int64, tag = "3")]
    pub(crate) ttl: i64,
}

pub(crate) const RANGE: &str = "/etcdserverpb.KV/Range";
pub(crate) const WATCH: &str = "/etcdserverpb.Watch/Watch";
pub(crate) const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
pub(crate) const LEASE_TIME_TO_LIVE: &str = "/etcdserverpb.Lease/LeaseTimeToLive";

/// The codec of a method taking `Req` and answering `Resp`.
pub(crate) type Codec<Req, Resp> = tonic_prost::ProstCodec<Req, Resp>;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Bytes as etcd's own generated code writes them (field numbers and wire types of
    /// rpc.proto / kv.proto), decoded and encoded by the hand-written structs.
    #[test]
    fn wire_format_matches_the_field_numbers() {
        // RangeRequest{key:"/a", range_end:"/b", limit:1000, revision:7, count_only:true}
        let r = RangeRequest {
            key: b"/a".to_vec(),
            range_end: b"/b".to_vec(),
            limit: 1000,
            revision: 7,
            count_only: true,
        };
        assert_eq!(
            r.encode_to_vec(),
            [0x0a, 2, b'/', b'a', 0x12, 2, b'/', b'b', 0x18, 0xe8, 0x07, 0x20, 7, 0x48, 1]
        );
        // WatchResponse{header{cluster_id:1, revision:9}, watch_id:0, created:true,
        // events:[{type:DELETE, kv{key:"k", mod_revision:9, lease:5}}]}
        let bytes = [
            0x0a, 4, 0x08, 1, 0x18, 9, // header
            0x18, 1, // created
            0x5a, 11, 0x08, 1, 0x12, 7, 0x0a, 1, b'k', 0x18, 9, 0x30, 5, // event
        ];
        let w = WatchResponse::decode(&bytes[..]).unwrap();
        assert_eq!(w.header.unwrap().revision, 9);
        assert!(w.created && !w.canceled);
        let e = &w.events[0];
        assert_eq!(e.r#type, EVENT_DELETE);
        let kv = e.kv.as_ref().unwrap();
        assert_eq!(
            (kv.key.as_slice(), kv.mod_revision, kv.lease),
            (&b"k"[..], 9, 5)
        );
        // WatchRequest{create_request{key:"k", start_revision:3}}
        let w = WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: b"k".to_vec(),
                range_end: Vec::new(),
                start_revision: 3,
            }),
        };
        assert_eq!(w.encode_to_vec(), [0x0a, 5, 0x0a, 1, b'k', 0x18, 3]);
        // LeaseTimeToLiveResponse{header{}, ID:77, TTL:590, grantedTTL:600}
        let l = LeaseTimeToLiveResponse::decode(
            &[0x0a, 0, 0x10, 77, 0x18, 0xce, 0x04, 0x20, 0xd8, 0x04][..],
        )
        .unwrap();
        assert_eq!((l.id, l.ttl), (77, 590));
        let a = AuthenticateResponse::decode(&[0x0a, 0, 0x12, 3, b't', b'o', b'k'][..]).unwrap();
        assert_eq!(a.token, "tok");
    }
}
