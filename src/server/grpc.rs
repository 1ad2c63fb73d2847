//! DNS over gRPC: CoreDNS's `coredns.dns.DnsService/Query` (pb/dns.proto: one `DnsPacket`
//! message holding the wire bytes) served with tonic's unary handling on a hyper HTTP/2
//! connection, and the message type the `grpc` upstream plugin sends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use tonic::{Request, Response, Status};

use crate::plugin::Proto;
use crate::server::doh::Conn;
use crate::server::transport::{accept_request, MAX_MESSAGE};

/// `coredns.dns.DnsPacket`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DnsPacket {
    #[prost(bytes = "vec", tag = "1")]
    pub msg: Vec<u8>,
}

/// The method's HTTP/2 path.
pub(crate) const QUERY_PATH: &str = "/coredns.dns.DnsService/Query";
/// Largest gRPC message received or sent: a DNS message and its protobuf framing (CoreDNS:
/// 65535 + 4).
pub(crate) const MAX_GRPC_MESSAGE: usize = MAX_MESSAGE + 4;

/// The codec of `DnsService/Query` (encodes the reply, decodes the query).
pub(crate) type Codec = tonic_prost::ProstCodec<DnsPacket, DnsPacket>;

struct Query(Arc<Conn>);

impl tonic::server::UnaryService<DnsPacket> for Query {
    type Response = DnsPacket;
    type Future = Pin<Box<dyn Future<Output = Result<Response<DnsPacket>, Status>> + Send>>;

    fn call(&mut self, request: Request<DnsPacket>) -> Self::Future {
        let conn = self.0.clone();
        Box::pin(async move {
            let _busy = conn.activity.busy();
            let packet = request.into_inner().msg;
            if packet.len() > MAX_MESSAGE {
                return Err(Status::unknown(format!(
                    "dns message exceeds size limit: {}",
                    packet.len()
                )));
            }
            accept_request(&packet).map_err(|e| Status::unknown(e.to_string()))?;
            let site = conn.site.load_full();
            // A chain that writes nothing leaves CoreDNS's response writer holding the query,
            // which it sends back as it is.
            let reply = site
                .handle(&packet, conn.peer, conn.local, Proto::Tcp)
                .await
                .unwrap_or(packet);
            Ok(Response::new(DnsPacket { msg: reply }))
        })
    }
}

/// hyper's request handler for `grpc://`: `DnsService/Query`, UNIMPLEMENTED for anything else.
pub(crate) async fn handle(
    req: http::Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    if req.uri().path() != QUERY_PATH {
        return Ok(
            Status::unimplemented(format!("unknown method {}", req.uri().path())).into_http(),
        );
    }
    let mut grpc = tonic::server::Grpc::new(Codec::default())
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    Ok(grpc.unary(Query(conn), req).await)
}
