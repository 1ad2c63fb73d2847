//! The etcd v3 client of the etcd plugin, over etcd's gRPC API (HTTP/2, plain or TLS, tonic
//! with the hand-written messages of [`super::proto`]): `Auth.Authenticate` for `credentials`
//! (the token sent in the `token` metadata), a paged `KV.Range` of each zone's keys at one
//! revision, then `Watch`es from the next revision that keep the local [`Store`] current, a
//! liveness read every few seconds, and lease times from `Lease.LeaseTimeToLive`. Without `credentials`, an etcd
//! with client-certificate authentication takes the user from the certificate's CommonName.
//! When etcd cannot be reached the store keeps its last good data and is marked down (log and
//! `sextant_etcd_up`); the session is retried with backoff over the endpoints in turn.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::codegen::tokio_stream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::proto::{self, Codec};
use super::store::{Kv, Store};
use crate::log::PluginLog;
use crate::pkg::clock::Clock;
use crate::server::lifecycle::Spawner;

const LOG: PluginLog = PluginLog("etcd");

/// CoreDNS's default endpoint.
pub(crate) const DEFAULT_ENDPOINT: &str = "http://localhost:2379";
/// Connect and per-call timeout (CoreDNS `etcdTimeout`).
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often a live watch is checked with a read (and lease times refreshed).
const LIVENESS: Duration = Duration::from_secs(5);
/// Keys per range page.
const PAGE: i64 = 1000;
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How an endpoint asks for TLS (etcd clientv3's rule: `https://` needs it, `http://` drops
/// it, no scheme uses it when `tls` is configured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Bare,
}

/// One etcd endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    text: String,
    scheme: Scheme,
    host: String,
    port: u16,
}

impl Endpoint {
    /// `http://host:port`, `https://host:port` or `host:port` (port 2379 when left out).
    pub(crate) fn parse(s: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if s.contains("://") {
            return Err("only http:// and https:// endpoints are supported".into());
        } else {
            (Scheme::Bare, s)
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err("expected [http[s]://]HOST[:PORT]".into());
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, p) = r.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("bad port '{p}'"))?,
            None => 2379,
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Endpoint {
            text: s.to_string(),
            scheme,
            host,
            port,
        })
    }

    /// True when the endpoint requires TLS.
    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Largest gRPC message received (etcd clientv3's default `MaxCallRecvMsgSize`).
const MAX_RECV: usize = i32::MAX as usize;

/// An `Auth.Authenticate` token, sent in the `token` metadata of every call.
type Token = MetadataValue<Ascii>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens the byte stream of an endpoint's channel: TCP, or TLS over TCP (ALPN h2).
#[derive(Clone)]
struct Connector {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connector {
    async fn open(self) -> Result<Box<dyn Io>, String> {
        let tcp = tokio::time::timeout(
            TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(cfg) = self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("TLS server name {:?}: {e}", self.host))?;
        let s = tokio::time::timeout(
            TIMEOUT,
            tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Box::new(s))
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let c = self.clone();
        Box::pin(async move {
            c.open()
                .await
                .map(TokioIo::new)
                .map_err(std::io::Error::other)
        })
    }
}

/// Why a call or a session failed: the text logged, and etcd's gRPC code when etcd answered.
#[derive(Debug, PartialEq)]
struct Failure {
    text: String,
    code: Option<Code>,
}

impl Failure {
    /// A failure to reach etcd (connection, TLS, timeout, a broken stream).
    fn unreachable(text: impl Into<String>) -> Failure {
        Failure {
            text: text.into(),
            code: None,
        }
    }

    /// An error status of the call `what`.
    fn status(what: &str, s: &Status) -> Failure {
        let mut text = s.message().to_string();
        push_causes(&mut text, std::error::Error::source(s));
        if text.is_empty() {
            text = format!("{:?}", s.code());
        }
        Failure {
            text: format!("{what}: {text}"),
            code: Some(s.code()),
        }
    }

    /// etcd answered but refused: bad credentials, no user, no permission on the path.
    fn refused(&self) -> bool {
        matches!(
            self.code,
            Some(
                Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
            )
        )
    }
}

/// Appends the causes of an error (tonic and hyper keep the useful part there) to `text`.
fn push_causes(text: &mut String, mut cause: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(e) = cause {
        let t = e.to_string();
        if !text.contains(&t) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&t);
        }
        cause = e.source();
    }
}

/// An error and its causes.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    push_causes(&mut text, e.source());
    text
}

/// The first key after every key starting with `prefix` (etcd's `WithPrefix` range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// One range of keys the plugin reads and watches: every key under one zone's path, or the
/// key of the zone name itself.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    key: Vec<u8>,
    /// The range end; empty for the single key `key`.
    end: Vec<u8>,
    /// A zone name's own key, which CoreDNS reads only when nothing is under it: a user who
    /// may not read it (a role granting `PATH/<zone>/` only) goes without it.
    optional: bool,
}

impl Span {
    /// What a read of the span is called in the log.
    fn what(&self) -> String {
        format!("range {}", String::from_utf8_lossy(&self.key))
    }
}

/// The spans of `zones` under the etcd path `path`: `PATH/<zone labels reversed>/` each (a
/// zone's names and subtrees are all there), without a span inside another, then the zone
/// names' own keys that no span holds. CoreDNS reads nothing else for these zones, so a role
/// with read on the same keys is enough for both.
fn spans(zones: &[sextant_wire::Name], path: &str) -> Vec<Span> {
    let mut keys: Vec<String> = zones
        .iter()
        .map(|z| {
            let mut k = super::service::path(z, path);
            if !k.ends_with('/') {
                k.push('/');
            }
            k
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut out: Vec<Span> = Vec::new();
    for k in &keys {
        // Sorted: a prefix of `k` comes before it.
        if out.iter().any(|s| k.as_bytes().starts_with(&s.key)) {
            continue;
        }
        let key = k.clone().into_bytes();
        out.push(Span {
            end: prefix_end(&key),
            key,
            optional: false,
        });
    }
    let prefixes = out.len();
    for k in &keys {
        let exact = k.trim_end_matches('/').as_bytes();
        if exact.is_empty() || out[..prefixes].iter().any(|s| exact.starts_with(&s.key)) {
            continue;
        }
        out.push(Span {
            key: exact.to_vec(),
            end: Vec::new(),
            optional: true,
        });
    }
    out
}

/// A key and its value.
fn key_value(kv: proto::KeyValue) -> (String, Kv) {
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    (key, Kv::new(&kv.value, kv.lease))
}

/// The plugin's connection settings.
pub(crate) struct Client {
    endpoints: Vec<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<(String, String)>,
    /// No `credentials` but a client certificate: etcd's user is then the certificate's
    /// CommonName (said in the log when etcd refuses).
    cert_user: bool,
    /// The ranges read and watched: each zone's keys, then the zone names' own keys (never
    /// empty).
    spans: Vec<Span>,
}

impl Client {
    pub(crate) fn new(
        endpoints: Vec<Endpoint>,
        tls: Option<Arc<rustls::ClientConfig>>,
        credentials: Option<(String, String)>,
        path: &str,
        zones: &[sextant_wire::Name],
    ) -> Client {
        let mut spans = spans(zones, path);
        if spans.is_empty() {
            // No zone (not from setup): the whole path.
            spans = self::spans(&[sextant_wire::Name::root()], path);
        }
        // gRPC over TLS is HTTP/2, which etcd's TLS listener picks by ALPN.
        let tls = tls.map(|c| {
            let mut c = (*c).clone();
            c.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(c)
        });
        let cert_user = credentials.is_none()
            && tls
                .as_ref()
                .is_some_and(|c| c.client_auth_cert_resolver.has_certs());
        Client {
            spans,
            endpoints,
            tls,
            credentials,
            cert_user,
        }
    }

    /// An HTTP/2 connection to `ep`, its tasks run by `spawner`.
    async fn channel(&self, ep: &Endpoint, spawner: &Spawner) -> Result<Channel, Failure> {
        let connector = Connector {
            host: ep.host.clone(),
            port: ep.port,
            tls: match ep.scheme {
                Scheme::Http => None,
                Scheme::Https | Scheme::Bare => self.tls.clone(),
            },
        };
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", ep.authority()))
                .map_err(|e| Failure::unreachable(format!("endpoint: {e}")))?
                .executor(spawner.clone());
        // The connector bounds the TCP connect and the TLS handshake; this, the HTTP/2
        // handshake too.
        tokio::time::timeout(3 * TIMEOUT, endpoint.connect_with_connector(connector))
            .await
            .map_err(|_| Failure::unreachable("connect timed out"))?
            .map_err(|e| Failure::unreachable(error_text(&e)))
    }

    /// One unary call, bounded by [`TIMEOUT`].
    async fn unary<Req, Resp>(
        &self,
        ch: &Channel,
        path: &'static str,
        what: &str,
        req: Req,
        token: Option<&Token>,
    ) -> Result<Resp, Failure>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let work = async {
            let mut g = tonic::client::Grpc::new(ch.clone()).max_decoding_message_size(MAX_RECV);
            g.ready()
                .await
                .map_err(|e| Failure::unreachable(format!("{what}: {}", error_text(&e))))?;
            let mut r = tonic::Request::new(req);
            if let Some(t) = token {
                r.metadata_mut().insert("token", t.clone());
            }
            g.unary::<Req, Resp, Codec<Req, Resp>>(
                r,
                http::uri::PathAndQuery::from_static(path),
                Codec::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Failure::status(what, &s))
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| Failure::unreachable(format!("{what}: timed out")))?
    }

    /// A token for `credentials` (None without them, or when etcd has authentication off,
    /// as etcd's own client does).
    async fn authenticate(&self, ch: &Channel) -> Result<Option<Token>, Failure> {
        let Some((user, pass)) = &self.credentials else {
            return Ok(None);
        };
        let req = proto::AuthenticateRequest {
            name: user.clone(),
            password: pass.clone(),
        };
        match self
            .unary::<_, proto::AuthenticateResponse>(
                ch,
                proto::AUTHENTICATE,
                "authenticate",
                req,
                None,
            )
            .await
        {
            Ok(r) if r.token.is_empty() => Ok(None),
            Ok(r) => r.token.parse().map(Some).map_err(|_| Failure {
                text: "authenticate: the token is not ASCII".into(),
                code: Some(Code::Unauthenticated),
            }),
            Err(f)
                if f.code == Some(Code::FailedPrecondition)
                    && f.text.contains("authentication is not enabled") =>
            {
                Ok(None)
            }
            Err(f) => Err(f),
        }
    }

    /// Every span, page by page, all at the revision of the first page; also the spans read
    /// (an optional span etcd refuses is left out).
    async fn range(
        &self,
        ch: &Channel,
        token: Option<&Token>,
    ) -> Result<(BTreeMap<String, Kv>, i64, Vec<Span>), Failure> {
        let mut out = BTreeMap::new();
        let mut revision = 0i64;
        let mut read = Vec::with_capacity(self.spans.len());
        for span in &self.spans {
            let what = span.what();
            let mut from = span.key.clone();
            let mut kvs = Vec::new();
            loop {
                let req = proto::RangeRequest {
                    key: from,
                    range_end: span.end.clone(),
                    limit: PAGE,
                    revision,
                    count_only: false,
                };
                let r: proto::RangeResponse =
                    match self.unary(ch, proto::RANGE, &what, req, token).await {
                        Ok(r) => r,
                        Err(f) if span.optional && f.code == Some(Code::PermissionDenied) => {
                            LOG.debug(&format!("{}; the zone name's own key is not read", f.text));
                            break;
                        }
                        Err(f) => return Err(f),
                    };
                if revision == 0 {
                    revision = r.header.map_or(0, |h| h.revision);
                }
                let more = r.more;
                kvs.extend(r.kvs);
                match kvs.last() {
                    Some(l) if more => {
                        let mut next = l.key.clone();
                        next.push(0);
                        from = next;
                    }
                    _ => {
                        read.push(span.clone());
                        break;
                    }
                }
            }
            for kv in kvs {
                let (k, v) = key_value(kv);
                out.insert(k, v);
            }
        }
        Ok((out, revision, read))
    }

    /// Fetches the remaining time of `ids`; failures leave them unknown.
    async fn leases(
        &self,
        ch: &Channel,
        token: Option<&Token>,
        store: &Store,
        clock: &Clock,
        ids: Vec<i64>,
    ) {
        for id in ids {
            let at = clock.now();
            if let Ok(r) = self
                .unary::<_, proto::LeaseTimeToLiveResponse>(
                    ch,
                    proto::LEASE_TIME_TO_LIVE,
                    "lease time-to-live",
                    proto::LeaseTimeToLiveRequest { id },
                    token,
                )
                .await
            {
                store.set_lease(id, r.ttl, at);
            }
        }
    }

    /// A small read that proves the connection and the token alive; an expired token (etcd's
    /// JWT tokens, or simple ones lost in an etcd restart) is renewed once.
    async fn probe(&self, ch: &Channel, token: &mut Option<Token>) -> Result<(), Failure> {
        let span = &self.spans[0];
        let what = span.what();
        let req = || proto::RangeRequest {
            key: span.key.clone(),
            range_end: span.end.clone(),
            count_only: true,
            ..Default::default()
        };
        let r = self
            .unary::<_, proto::RangeResponse>(ch, proto::RANGE, &what, req(), token.as_ref())
            .await;
        match r {
            Err(f) if f.code == Some(Code::Unauthenticated) && self.credentials.is_some() => {
                *token = self.authenticate(ch).await?;
                self.unary::<_, proto::RangeResponse>(
                    ch,
                    proto::RANGE,
                    &what,
                    req(),
                    token.as_ref(),
                )
                .await
                .map(drop)
            }
            r => r.map(drop),
        }
    }

    /// Keeps `store` in sync until the generation ends; connections run under `spawner`.
    pub(crate) async fn run(&self, store: &Store, clock: &Clock, spawner: &Spawner) {
        let mut i = 0usize;
        let mut delay = FIRST_RETRY;
        loop {
            let ep = &self.endpoints[i % self.endpoints.len()];
            let (synced, err) = self.session(ep, store, clock, spawner).await;
            if synced {
                delay = FIRST_RETRY;
            }
            store.sync_failed();
            let msg = format!(
                "etcd at {ep} {}; {}",
                self.reason(&err),
                if store.synced() {
                    format!(
                        "serving the last good data ({} keys at revision {})",
                        store.len(),
                        store.revision()
                    )
                } else {
                    "no data yet, answering SERVFAIL".to_string()
                }
            );
            if store.set_down(&err.text) {
                LOG.error(&msg);
            } else {
                LOG.debug(&msg);
            }
            clock.sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
            i += 1;
        }
    }

    /// The log's words for `err`.
    fn reason(&self, err: &Failure) -> String {
        if !err.refused() {
            return format!("unreachable: {}", err.text);
        }
        let hint = if self.cert_user {
            " (without `credentials` etcd's user is the CommonName of the client certificate)"
        } else {
            ""
        };
        format!("refused access: {}{hint}", err.text)
    }

    /// Reads the range and watches it; returns (a full read happened, why it ended).
    async fn session(
        &self,
        ep: &Endpoint,
        store: &Store,
        clock: &Clock,
        spawner: &Spawner,
    ) -> (bool, Failure) {
        let ch = match self.channel(ep, spawner).await {
            Ok(c) => c,
            Err(e) => return (false, e),
        };
        let mut token = match self.authenticate(&ch).await {
            Ok(t) => t,
            Err(e) => return (false, e),
        };
        let (kvs, revision, spans) = match self.range(&ch, token.as_ref()).await {
            Ok(r) => r,
            Err(e) => return (false, e),
        };
        let was_down = store.status_now() != super::store::Status::Up;
        store.replace(kvs, revision);
        self.leases(&ch, token.as_ref(), store, clock, store.lease_ids())
            .await;
        store.set_up();
        if was_down {
            LOG.info(&format!(
                "synced {} keys at revision {revision} from {ep}",
                store.len()
            ));
        }
        (
            true,
            self.watch(&ch, &spans, store, clock, &mut token, revision)
                .await,
        )
    }

    /// Applies one watch response; Err ends the watch. True when a put carries a lease.
    #[cfg(test)]
    fn watch_message(&self, store: &Store, w: proto::WatchResponse) -> Result<bool, Failure> {
        Ok(match watch_events(w)? {
            Some((changes, revision)) => {
                let leased = changes
                    .iter()
                    .any(|(_, kv)| kv.as_ref().is_some_and(|kv| kv.lease != 0));
                store.apply(changes, revision);
                leased
            }
            None => false,
        })
    }

    /// Watches from `revision + 1` until the stream breaks or a liveness read fails.
    async fn watch(
        &self,
        ch: &Channel,
        spans: &[Span],
        store: &Store,
        clock: &Clock,
        token: &mut Option<Token>,
        revision: i64,
    ) -> Failure {
        // One watch per span on the stream. The request side stays open while the watches are
        // followed and ends when this returns (the sender dropped): without that, hyper's task
        // sending it would keep the HTTP/2 stream, and so the connection, alive after a hung
        // etcd was left.
        let (requests_tx, requests) = tokio::sync::mpsc::unbounded_channel();
        for span in spans {
            let _ = requests_tx.send(proto::WatchRequest {
                create_request: Some(proto::WatchCreateRequest {
                    key: span.key.clone(),
                    range_end: span.end.clone(),
                    start_revision: revision + 1,
                }),
            });
        }
        let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(requests);
        let mut req = tonic::Request::new(requests);
        if let Some(t) = token.as_ref() {
            req.metadata_mut().insert("token", t.clone());
        }
        let mut g = tonic::client::Grpc::new(ch.clone()).max_decoding_message_size(MAX_RECV);
        let open = async {
            g.ready()
                .await
                .map_err(|e| Failure::unreachable(format!("watch: {}", error_text(&e))))?;
            g.streaming::<_, proto::WatchRequest, proto::WatchResponse, _>(
                req,
                http::uri::PathAndQuery::from_static(proto::WATCH),
                Codec::default(),
            )
            .await
            .map_err(|s| Failure::status("watch", &s))
        };
        let mut stream = match tokio::time::timeout(TIMEOUT, open).await {
            Err(_) => return Failure::unreachable("watch: timed out"),
            Ok(Err(f)) => return f,
            Ok(Ok(r)) => r.into_inner(),
        };
        let mut next_check = clock.now() + LIVENESS;
        loop {
            tokio::select! {
                m = stream.message() => {
                    let w = match m {
                        Ok(Some(w)) => w,
                        Ok(None) => return Failure::unreachable("watch stream ended"),
                        Err(s) => return Failure::status("watch", &s),
                    };
                    let (changes, revision) = match watch_events(w) {
                        Ok(Some(c)) => c,
                        Ok(None) => continue,
                        Err(f) => return f,
                    };
                    // A new lease's remaining time is asked before its keys are served, so
                    // they never answer with the default TTL meanwhile.
                    let mut new: Vec<i64> = changes
                        .iter()
                        .filter_map(|(_, kv)| kv.as_ref().map(|kv| kv.lease))
                        .filter(|&id| id != 0 && !store.lease_known(id))
                        .collect();
                    new.sort_unstable();
                    new.dedup();
                    if !new.is_empty() {
                        self.leases(ch, token.as_ref(), store, clock, new).await;
                    }
                    store.apply(changes, revision);
                }
                _ = clock.sleep_until(next_check) => {
                    next_check = clock.now() + LIVENESS;
                    if let Err(f) = self.probe(ch, token).await {
                        return f;
                    }
                    self.leases(ch, token.as_ref(), store, clock, store.lease_ids()).await;
                }
            }
        }
    }
}

/// The changes of one watch response and their revision (None when it has no events); Err ends
/// the watch.
#[allow(clippy::type_complexity)]
fn watch_events(
    w: proto::WatchResponse,
) -> Result<Option<(Vec<(String, Option<Kv>)>, i64)>, Failure> {
    if w.compact_revision != 0 {
        return Err(Failure::unreachable(format!(
            "watch: revision compacted (at {})",
            w.compact_revision
        )));
    }
    if w.canceled {
        // etcd cancels a watch it may not create (no read permission) with the reason.
        let code = w
            .cancel_reason
            .contains("permission denied")
            .then_some(Code::PermissionDenied);
        return Err(Failure {
            text: format!("watch canceled: {}", w.cancel_reason),
            code,
        });
    }
    // Replayed events of one revision may come in several responses that all carry the
    // current header revision: the events' own revisions order them.
    let revision = w
        .events
        .iter()
        .filter_map(|e| e.kv.as_ref())
        .map(|kv| kv.mod_revision)
        .max();
    let Some(revision) = revision else {
        return Ok(None);
    };
    let mut changes = Vec::with_capacity(w.events.len());
    for e in w.events {
        let Some(kv) = e.kv else { continue };
        let delete = e.r#type == proto::EVENT_DELETE;
        let (k, kv) = key_value(kv);
        changes.push((k, (!delete).then_some(kv)));
    }
    Ok(Some((changes, revision)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Event, KeyValue, WatchResponse};

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://localhost:2379").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Http, "localhost", 2379)
        );
        let e = Endpoint::parse("https://[::1]:4001/").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Https, "::1", 4001)
        );
        assert_eq!(e.authority(), "[::1]:4001");
        let e = Endpoint::parse("10.0.0.1").unwrap();
        assert_eq!((e.scheme, e.port), (Scheme::Bare, 2379));
        for bad in ["unix:///x", "http://", "http://h:x", "http://h:1/p"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    fn event(delete: bool, key: &str, value: &str, rev: i64, lease: i64) -> Event {
        Event {
            r#type: if delete { proto::EVENT_DELETE } else { 0 },
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: rev,
                value: value.as_bytes().to_vec(),
                lease,
            }),
        }
    }

    #[test]
    fn watch_messages_apply_puts_and_deletes_and_stop_on_compaction() {
        let c = Client::new(
            vec![Endpoint::parse("127.0.0.1:1").unwrap()],
            None,
            None,
            "skydns",
            &[],
        );
        assert_eq!(
            c.spans,
            [
                Span {
                    key: b"/skydns/".to_vec(),
                    end: b"/skydns0".to_vec(),
                    optional: false
                },
                Span {
                    key: b"/skydns".to_vec(),
                    end: Vec::new(),
                    optional: true
                }
            ]
        );
        let store = Store::new("e".into(), "p".into(), "z".into());
        store.replace(BTreeMap::new(), 1);
        let created = WatchResponse {
            created: true,
            ..Default::default()
        };
        assert_eq!(c.watch_message(&store, created), Ok(false));
        let put = WatchResponse {
            events: vec![
                event(false, "/skydns/a", r#"{"host":"10.0.0.1"}"#, 2, 0),
                event(false, "/skydns/b", "{}", 3, 77),
            ],
            ..Default::default()
        };
        assert_eq!(
            c.watch_message(&store, put),
            Ok(true),
            "a leased key is new"
        );
        assert_eq!((store.len(), store.revision()), (2, 3));
        assert_eq!(store.unknown_leases(), [77]);
        let del = WatchResponse {
            events: vec![event(true, "/skydns/a", "", 4, 0)],
            ..Default::default()
        };
        assert_eq!(c.watch_message(&store, del), Ok(false));
        assert_eq!((store.len(), store.revision()), (1, 4));
        let compacted = WatchResponse {
            compact_revision: 5,
            canceled: true,
            ..Default::default()
        };
        let f = c.watch_message(&store, compacted).unwrap_err();
        assert!(f.text.contains("compacted") && !f.refused(), "{f:?}");
        let denied = WatchResponse {
            canceled: true,
            cancel_reason: "etcdserver: permission denied".into(),
            ..Default::default()
        };
        let f = c.watch_message(&store, denied).unwrap_err();
        assert_eq!(f.text, "watch canceled: etcdserver: permission denied");
        assert!(f.refused());
        assert_eq!((store.len(), store.revision()), (1, 4), "kept");
    }

    #[test]
    fn failures_say_what_etcd_answered() {
        let f = Failure::status(
            "authenticate",
            &Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ),
        );
        assert_eq!(
            f.text,
            "authenticate: etcdserver: authentication failed, invalid user ID or password"
        );
        assert!(f.refused());
        let c = Client::new(
            vec![Endpoint::parse("127.0.0.1:1").unwrap()],
            None,
            None,
            "skydns",
            &[],
        );
        assert_eq!(
            c.reason(&f),
            "refused access: authenticate: etcdserver: authentication failed, invalid user ID or password"
        );
        let f = Failure::status("watch", &Status::unavailable("error reading a body"));
        assert!(!f.refused());
        assert_eq!(c.reason(&f), "unreachable: watch: error reading a body");
    }

    #[test]
    fn one_span_per_zone_none_inside_another() {
        let n = |s: &str| sextant_wire::Name::parse(s).unwrap();
        let keys = |zones: &[&str], path: &str| {
            let z: Vec<_> = zones.iter().map(|z| n(z)).collect();
            spans(&z, path)
                .into_iter()
                .map(|s| {
                    format!(
                        "{}..{}{}",
                        String::from_utf8(s.key).unwrap(),
                        String::from_utf8(s.end).unwrap(),
                        if s.optional { " optional" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&["skydns.local.", "0.0.10.in-addr.arpa."], "skydns"),
            [
                "/skydns/arpa/in-addr/10/0/0/../skydns/arpa/in-addr/10/0/00",
                "/skydns/local/skydns/../skydns/local/skydns0",
                "/skydns/arpa/in-addr/10/0/0.. optional",
                "/skydns/local/skydns.. optional",
            ]
        );
        // Zones inside another: its span holds theirs, and their names' keys.
        assert_eq!(
            keys(&["a.local.", "local.", "b.local.", "local."], "/skydns"),
            ["/skydns/local/../skydns/local0", "/skydns/local.. optional"]
        );
        assert_eq!(
            keys(&["."], "skydns"),
            ["/skydns/../skydns0", "/skydns.. optional"]
        );
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/skydns"), b"/skydnt");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
