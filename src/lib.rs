//! Sextant: a Kubernetes cluster DNS server that reads CoreDNS Corefiles.
//!
//! Everything is crate-private; the binary enters through [`run`], and the fuzz targets reach
//! the few functions they drive through [`fuzzing`].

pub(crate) mod alloc;
pub(crate) mod cli;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod nodecache;
pub(crate) mod pkg;
pub(crate) mod plugin;
pub(crate) mod plugins;
pub(crate) mod server;
pub(crate) mod setup;
pub(crate) mod tracing_bridge;

/// Runs the command line (`sextant ARGS...`) and returns the process exit code, with every log
/// line written out.
pub fn run(args: Vec<String>) -> i32 {
    alloc::init();
    let code = cli::main(args);
    log::flush();
    code
}

/// What the fuzz targets in `fuzz/` drive; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;

    pub use crate::plugin::Proto;
    pub use crate::plugins::hosts::file::{parse_ip, Map, ParseOpts};

    /// One listener's routing table (blocks and their plugin chains).
    pub struct Site(Arc<crate::server::site::Site>);

    impl Site {
        /// The whole request path for one packet: the reply bytes, or None for no reply.
        pub async fn handle(
            &self,
            packet: &[u8],
            client: SocketAddr,
            local: SocketAddr,
            proto: Proto,
        ) -> Option<Vec<u8>> {
            self.0.handle(packet, client, local, proto).await
        }
    }

    /// Why [`first_site`] has no routing table.
    #[derive(Debug, thiserror::Error)]
    pub enum SiteError {
        /// The text is not a Corefile.
        #[error("{0}")]
        Parse(#[from] sextant_corefile::Error),
        /// Setting up found these problems.
        #[error("{0:?}")]
        Setup(Vec<sextant_corefile::Error>),
        #[error("no listener")]
        NoListener,
    }

    /// Sets up `text` as a Corefile (port 53 for keys without one) and returns the routing
    /// table of its first listener.
    pub fn first_site(text: &str) -> Result<Site, SiteError> {
        let cf = sextant_corefile::parse_str("Corefile", text, Path::new("."))?;
        let gen = crate::server::config::build(&cf, 53, Default::default(), Default::default())
            .map_err(SiteError::Setup)?;
        gen.sites
            .into_values()
            .next()
            .map(Site)
            .ok_or(SiteError::NoListener)
    }

    /// The DNS message of a DoH request (`GET /dns-query?dns=` or a `POST` body), as the
    /// `https://` and `https3://` listeners decode it; `Err` for a 404 or 400.
    pub fn doh_request(
        method: &http::Method,
        uri: &http::Uri,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, String> {
        crate::server::doh::request_message(method, uri, body)
            .map(std::borrow::Cow::into_owned)
            .map_err(|e| format!("{e:?}"))
    }

    /// The request check of the HTTPS, QUIC and gRPC listeners (CoreDNS's
    /// `dnsutil.UnpackRequest`).
    pub fn transport_request_ok(packet: &[u8]) -> bool {
        crate::server::transport::check_request(packet).is_ok()
    }

    /// Decodes a gRPC `coredns.dns.DnsPacket` body with the server's protobuf codec type and
    /// returns its DNS message; `encode_dns_packet` is the reverse.
    pub fn decode_dns_packet(data: &[u8]) -> Result<Vec<u8>, String> {
        <crate::server::grpc::DnsPacket as prost::Message>::decode(data)
            .map(|p| p.msg)
            .map_err(|e| e.to_string())
    }

    /// Encodes a DNS message as a `coredns.dns.DnsPacket`.
    pub fn encode_dns_packet(msg: &[u8]) -> Vec<u8> {
        prost::Message::encode_to_vec(&crate::server::grpc::DnsPacket { msg: msg.to_vec() })
    }

    /// What the PROXY protocol decoder found at the start of some bytes.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ProxyHeader {
        /// No signature: the bytes are DNS data.
        None,
        /// A stream that must send more before it is decided.
        Incomplete,
        /// A header of `len` bytes.
        Header {
            len: usize,
            version: u8,
            local: bool,
            family: u8,
            source: Option<SocketAddr>,
            destination: Option<SocketAddr>,
        },
    }

    /// The PROXY protocol decoder of every listener (`complete`: the bytes are a whole
    /// datagram or a stream that ended); `Err` with go-proxyproto's text.
    pub fn proxy_header(data: &[u8], complete: bool) -> Result<ProxyHeader, String> {
        use crate::pkg::proxyproto::{decode, Decoded};
        match decode(data, complete) {
            Ok(Decoded::None) => Ok(ProxyHeader::None),
            Ok(Decoded::Incomplete) => Ok(ProxyHeader::Incomplete),
            Ok(Decoded::Header { header, len }) => Ok(ProxyHeader::Header {
                len,
                version: header.version,
                local: header.local,
                family: header.family,
                source: header.source,
                destination: header.destination,
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One datagram from `peer` through a UDP listener's PROXY handling (every source allowed,
    /// with session tracking when `sessions`): the offset of the DNS payload in `packet` and
    /// the client plugins see, or None when dropped. `state` carries the sessions across calls.
    pub fn proxy_datagram(
        state: &mut Option<ProxyUdp>,
        sessions: bool,
        packet: &[u8],
        peer: SocketAddr,
    ) -> Option<(usize, SocketAddr)> {
        let p = state.get_or_insert_with(|| {
            ProxyUdp(crate::server::proxy::UdpProxy::new(Arc::new(
                crate::server::proxy::ProxySettings {
                    allow: Vec::new(),
                    default: None,
                    session_ttl: if sessions {
                        std::time::Duration::from_secs(60)
                    } else {
                        std::time::Duration::ZERO
                    },
                    max_sessions: 4,
                },
            )))
        });
        let (payload, client) = p.0.datagram(packet, peer)?;
        Some((packet.len() - payload.len(), client))
    }

    /// A UDP socket's PROXY state, for [`proxy_datagram`].
    pub struct ProxyUdp(crate::server::proxy::UdpProxy);

    /// Builds a configuration generation from Corefile text the way a reload does, and
    /// returns the configuration hash (SHA512 hex) when it sets up.
    pub fn build_generation(text: &str) -> Option<String> {
        let runtime = crate::server::runtime::Runtime::new(
            crate::server::runtime::Source::Inline(text.to_string()),
            53,
        );
        runtime.build().ok().map(|(_gen, hash)| hash)
    }
}
