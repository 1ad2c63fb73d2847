//! The etcd v3 client of the etcd plugin, over etcd's JSON gRPC gateway (HTTP/1.1, plain or
//! TLS, with `/v3/auth/authenticate` tokens): a paginated `/v3/kv/range` of the whole path,
//! then a `/v3/watch` from the next revision that keeps the local [`Store`] current, a
//! liveness read every few seconds, and lease times from `/v3/lease/timetolive`. When etcd
//! cannot be reached the store keeps its last good data and is marked down (log and
//! `sextant_etcd_up`); the session is retried with backoff over the endpoints in turn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use super::metrics::SYNC_FAILURES;
use super::store::{Kv, Store};
use crate::log::PluginLog;
use crate::pkg::clock::Clock;

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

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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

/// An int64 of the gateway's JSON (a string, or a number).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// The gateway's error text.
fn gateway_error(v: &Value) -> String {
    for k in ["error", "message"] {
        match v.get(k) {
            Some(Value::String(s)) => return s.clone(),
            Some(Value::Object(o)) => {
                if let Some(Value::String(s)) = o.get("message") {
                    return s.clone();
                }
            }
            _ => {}
        }
    }
    v.to_string()
}

/// A key and its value from the gateway's JSON.
fn key_value(kv: &Value) -> (String, Kv) {
    let key = String::from_utf8_lossy(&b64(&kv["key"])).into_owned();
    (key, Kv::new(&b64(&kv["value"]), int(&kv["lease"])))
}

/// The plugin's connection settings.
pub(crate) struct Client {
    endpoints: Vec<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<(String, String)>,
    /// The watched range: every key starting with the path.
    key: Vec<u8>,
    range_end: Vec<u8>,
    labels: [String; 2],
}

impl Client {
    pub(crate) fn new(
        endpoints: Vec<Endpoint>,
        tls: Option<Arc<rustls::ClientConfig>>,
        credentials: Option<(String, String)>,
        path: &str,
    ) -> Client {
        let root = super::service::path(&sextant_wire::Name::root(), path);
        let key = root.into_bytes();
        Client {
            labels: [
                endpoints
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                path.to_string(),
            ],
            range_end: prefix_end(&key),
            key,
            endpoints,
            tls,
            credentials,
        }
    }

    async fn connect(&self, ep: &Endpoint) -> Result<Box<dyn Io>, String> {
        let tcp = tokio::time::timeout(
            TIMEOUT,
            tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = match ep.scheme {
            Scheme::Http => None,
            Scheme::Https | Scheme::Bare => self.tls.clone(),
        };
        let Some(cfg) = tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
            .map_err(|e| format!("TLS server name {:?}: {e}", ep.host))?;
        let s = tokio::time::timeout(
            TIMEOUT,
            tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Box::new(s))
    }

    fn request(
        &self,
        ep: &Endpoint,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let mut b = http::Request::post(path)
            .header(http::header::HOST, ep.authority())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            b = b.header(http::header::AUTHORIZATION, t);
        }
        b.body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())
    }

    /// One unary gateway call on its own connection.
    async fn call(
        &self,
        ep: &Endpoint,
        path: &str,
        body: Value,
        token: Option<&str>,
    ) -> Result<Value, String> {
        let work = async {
            let io = self.connect(ep).await?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            let req = self.request(ep, path, &body, token)?;
            let exchange = async move {
                let resp = tx
                    .send_request(req)
                    .await
                    .map_err(|e| format!("HTTP: {e}"))?;
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("HTTP body: {e}"))?
                    .to_bytes();
                drop(tx);
                Ok::<_, String>((status, bytes))
            };
            let (r, _) = tokio::join!(exchange, conn);
            let (status, bytes) = r?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{path}: HTTP {status}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )
            })?;
            if !status.is_success() {
                return Err(format!("{path}: {}", gateway_error(&v)));
            }
            Ok(v)
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| format!("{path}: timed out"))?
    }

    async fn authenticate(&self, ep: &Endpoint) -> Result<Option<String>, String> {
        let Some((user, pass)) = &self.credentials else {
            return Ok(None);
        };
        let v = self
            .call(
                ep,
                "/v3/auth/authenticate",
                json!({"name": user, "password": pass}),
                None,
            )
            .await?;
        match v.get("token").and_then(Value::as_str) {
            Some(t) => Ok(Some(t.to_string())),
            None => Err(format!("authentication: no token in {v}")),
        }
    }

    /// The whole range, page by page at one revision.
    async fn range(
        &self,
        ep: &Endpoint,
        token: Option<&str>,
    ) -> Result<(BTreeMap<String, Kv>, i64), String> {
        let mut out = BTreeMap::new();
        let mut from = self.key.clone();
        let mut revision = 0i64;
        loop {
            let mut body = json!({
                "key": B64.encode(&from),
                "range_end": B64.encode(&self.range_end),
                "limit": PAGE,
            });
            if revision != 0 {
                body["revision"] = json!(revision);
            }
            let v = self.call(ep, "/v3/kv/range", body, token).await?;
            if revision == 0 {
                revision = int(&v["header"]["revision"]);
            }
            let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
            let mut last = None;
            for kv in &kvs {
                let (k, val) = key_value(kv);
                last = Some(b64(&kv["key"]));
                out.insert(k, val);
            }
            let more = v["more"].as_bool().unwrap_or(false);
            match last {
                Some(mut l) if more => {
                    l.push(0);
                    from = l;
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// Fetches the remaining time of `ids`; failures leave them unknown.
    async fn leases(
        &self,
        ep: &Endpoint,
        token: Option<&str>,
        store: &Store,
        clock: &Clock,
        ids: Vec<i64>,
    ) {
        for id in ids {
            let at = clock.now();
            if let Ok(v) = self
                .call(ep, "/v3/lease/timetolive", json!({"ID": id}), token)
                .await
            {
                store.set_lease(id, int(&v["TTL"]), at);
            }
        }
    }

    /// Keeps `store` in sync until the generation ends.
    pub(crate) async fn run(&self, store: &Store, clock: &Clock) {
        let mut i = 0usize;
        let mut delay = FIRST_RETRY;
        loop {
            let ep = &self.endpoints[i % self.endpoints.len()];
            let (synced, err) = self.session(ep, store, clock).await;
            if synced {
                delay = FIRST_RETRY;
            }
            SYNC_FAILURES
                .with_label_values(&[&self.labels[0], &self.labels[1]])
                .inc();
            let msg = if store.synced() {
                format!(
                    "etcd at {ep} unreachable: {err}; serving the last good data ({} keys at revision {})",
                    store.len(),
                    store.revision()
                )
            } else {
                format!("etcd at {ep} unreachable: {err}; no data yet, answering SERVFAIL")
            };
            if store.set_down(&err) {
                LOG.error(&msg);
            } else {
                LOG.debug(&msg);
            }
            clock.sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
            i += 1;
        }
    }

    /// Reads the range and watches it; returns (a full read happened, why it ended).
    async fn session(&self, ep: &Endpoint, store: &Store, clock: &Clock) -> (bool, String) {
        let token = match self.authenticate(ep).await {
            Ok(t) => t,
            Err(e) => return (false, e),
        };
        let token = token.as_deref();
        let (kvs, revision) = match self.range(ep, token).await {
            Ok(r) => r,
            Err(e) => return (false, e),
        };
        let was_down = store.status_now() != super::store::Status::Up;
        store.replace(kvs, revision);
        self.leases(ep, token, store, clock, store.lease_ids())
            .await;
        store.set_up();
        if was_down {
            LOG.info(&format!(
                "synced {} keys at revision {revision} from {ep}",
                store.len()
            ));
        }
        (true, self.watch(ep, store, clock, token, revision).await)
    }

    /// Applies one watch response; Err ends the watch. True when a put carries a lease.
    #[cfg(test)]
    fn watch_message(&self, store: &Store, v: &Value) -> Result<bool, String> {
        Ok(match watch_events(v)? {
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
}

/// The changes of one watch response and their revision (None when it has no events); Err ends
/// the watch.
#[allow(clippy::type_complexity)]
fn watch_events(v: &Value) -> Result<Option<(Vec<(String, Option<Kv>)>, i64)>, String> {
    if let Some(e) = v.get("error") {
        return Err(format!("watch: {}", gateway_error(&json!({"error": e}))));
    }
    let r = &v["result"];
    if int(&r["compact_revision"]) != 0 {
        return Err(format!(
            "watch: revision compacted (at {})",
            int(&r["compact_revision"])
        ));
    }
    if r["canceled"].as_bool().unwrap_or(false) {
        return Err(format!(
            "watch canceled: {}",
            r["cancel_reason"].as_str().unwrap_or("")
        ));
    }
    let Some(events) = r["events"].as_array() else {
        return Ok(None);
    };
    // Replayed events of one revision may come in several responses that all carry the
    // current header revision: the events' own revisions order them.
    let revision = events
        .iter()
        .map(|e| int(&e["kv"]["mod_revision"]))
        .max()
        .unwrap_or(0);
    let mut changes = Vec::with_capacity(events.len());
    for e in events {
        let (k, kv) = key_value(&e["kv"]);
        if e["type"].as_str() == Some("DELETE") {
            changes.push((k, None));
        } else {
            changes.push((k, Some(kv)));
        }
    }
    Ok(Some((changes, revision)))
}

impl Client {
    /// Watches from `revision + 1` until the stream breaks or a liveness read fails.
    async fn watch(
        &self,
        ep: &Endpoint,
        store: &Store,
        clock: &Clock,
        token: Option<&str>,
        revision: i64,
    ) -> String {
        let io = match self.connect(ep).await {
            Ok(io) => io,
            Err(e) => return e,
        };
        let (mut tx, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
            Ok(x) => x,
            Err(e) => return format!("HTTP: {e}"),
        };
        let body = json!({"create_request": {
            "key": B64.encode(&self.key),
            "range_end": B64.encode(&self.range_end),
            "start_revision": revision + 1,
        }});
        let req = match self.request(ep, "/v3/watch", &body, token) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let work = async move {
            let resp = tokio::time::timeout(TIMEOUT, tx.send_request(req))
                .await
                .map_err(|_| "watch: timed out".to_string())?
                .map_err(|e| format!("watch: {e}"))?;
            if !resp.status().is_success() {
                let st = resp.status();
                let b = resp.into_body().collect().await.map(|b| b.to_bytes());
                let text = b
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                return Err(format!("watch: HTTP {st}: {text}"));
            }
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            let mut next_check = clock.now() + LIVENESS;
            loop {
                tokio::select! {
                    f = body.frame() => {
                        let data = match f {
                            None => return Err("watch stream ended".to_string()),
                            Some(Err(e)) => return Err(format!("watch stream: {e}")),
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(d) => d,
                                Err(_) => continue,
                            },
                        };
                        buf.extend_from_slice(&data);
                        let mut used = 0;
                        let mut batches = Vec::new();
                        {
                            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                            loop {
                                match it.next() {
                                    Some(Ok(v)) => {
                                        used = it.byte_offset();
                                        batches.extend(watch_events(&v)?);
                                    }
                                    Some(Err(e)) if e.is_eof() => break,
                                    Some(Err(e)) => return Err(format!("watch: bad JSON: {e}")),
                                    None => break,
                                }
                            }
                        }
                        buf.drain(..used);
                        // A new lease's remaining time is asked before its keys are served, so
                        // they never answer with the default TTL meanwhile.
                        let mut new: Vec<i64> = batches
                            .iter()
                            .flat_map(|(changes, _)| changes.iter())
                            .filter_map(|(_, kv)| kv.as_ref().map(|kv| kv.lease))
                            .filter(|&id| id != 0 && !store.lease_known(id))
                            .collect();
                        new.sort_unstable();
                        new.dedup();
                        if !new.is_empty() {
                            self.leases(ep, token, store, clock, new).await;
                        }
                        for (changes, revision) in batches {
                            store.apply(changes, revision);
                        }
                    }
                    _ = clock.sleep_until(next_check) => {
                        next_check = clock.now() + LIVENESS;
                        let probe = json!({
                            "key": B64.encode(&self.key),
                            "range_end": B64.encode(&self.range_end),
                            "count_only": true,
                        });
                        self.call(ep, "/v3/kv/range", probe, token).await?;
                        self.leases(ep, token, store, clock, store.lease_ids()).await;
                    }
                }
            }
        };
        tokio::pin!(conn);
        tokio::select! {
            r = work => match r {
                Ok(()) => "watch ended".to_string(),
                Err(e) => e,
            },
            r = &mut conn => match r {
                Ok(()) => "watch connection closed".to_string(),
                Err(e) => format!("watch connection: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn b(s: &str) -> String {
        B64.encode(s)
    }

    #[test]
    fn watch_messages_apply_puts_and_deletes_and_stop_on_compaction() {
        let c = Client::new(
            vec![Endpoint::parse("127.0.0.1:1").unwrap()],
            None,
            None,
            "skydns",
        );
        assert_eq!(
            (c.key.as_slice(), c.range_end.as_slice()),
            (&b"/skydns"[..], &b"/skydnt"[..])
        );
        let store = Store::new("e".into(), "p".into());
        store.replace(BTreeMap::new(), 1);
        let created = json!({"result": {"header": {"revision": "1"}, "created": true}});
        assert_eq!(c.watch_message(&store, &created), Ok(false));
        let put = json!({"result": {"header": {"revision": "3"}, "events": [
            {"kv": {"key": b("/skydns/a"), "value": b(r#"{"host":"10.0.0.1"}"#), "mod_revision": "2"}},
            {"kv": {"key": b("/skydns/b"), "value": b("{}"), "mod_revision": "3", "lease": "77"}}
        ]}});
        assert_eq!(
            c.watch_message(&store, &put),
            Ok(true),
            "a leased key is new"
        );
        assert_eq!((store.len(), store.revision()), (2, 3));
        assert_eq!(store.unknown_leases(), [77]);
        let del = json!({"result": {"header": {"revision": "4"}, "events": [
            {"type": "DELETE", "kv": {"key": b("/skydns/a"), "mod_revision": "4"}}
        ]}});
        assert_eq!(c.watch_message(&store, &del), Ok(false));
        assert_eq!((store.len(), store.revision()), (1, 4));
        let compacted = json!({"result": {"header": {"revision": "9"}, "compact_revision": "5"}});
        assert!(c
            .watch_message(&store, &compacted)
            .unwrap_err()
            .contains("compacted"));
        let canceled = json!({"result": {"canceled": true, "cancel_reason": "x"}});
        assert!(c
            .watch_message(&store, &canceled)
            .unwrap_err()
            .contains("canceled"));
        let err = json!({"error": {"grpc_code": 16, "message": "etcdserver: invalid auth token"}});
        assert_eq!(
            c.watch_message(&store, &err).unwrap_err(),
            "watch: etcdserver: invalid auth token"
        );
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/skydns"), b"/skydnt");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
