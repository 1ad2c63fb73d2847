//! The `trace` plugin's reporter: a bounded queue of finished traces filled on the query path
//! (one lock, never a wait on the network) and a generation task that sends them in batches —
//! Zipkin v2 JSON POSTed to the collector, or msgpack to the Datadog agent's `/v0.4/traces` —
//! each request with its own connection and a 5 s limit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

use super::{Config, Endpoint};
use crate::log::PluginLog;
use crate::pkg::clock::Clock;
use crate::plugin::Span;
use crate::server::lifecycle::TaskCtx;

const LOG: PluginLog = PluginLog("trace");
/// Time for one POST, connection included (zipkin-go's default).
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Sending errors are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A non-zero random span (and trace) id.
pub(crate) fn span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// A finished trace waiting to be sent.
struct Queued {
    trace_id: u64,
    /// Upper 64 bits of a 128-bit trace id: Datadog's, or a joined DoH client's (Zipkin).
    high: Option<u64>,
    /// A B3 debug trace (Zipkin's `debug` on every span).
    debug: bool,
    spans: Vec<Span>,
}

#[derive(Default)]
struct Queue {
    traces: VecDeque<Queued>,
    spans: usize,
}

/// Where and how a block's traces are sent.
pub(crate) struct Reporter {
    endpoint: Endpoint,
    /// The TLS client of an `https` endpoint.
    tls: Option<Arc<rustls::ClientConfig>>,
    target: Option<Target>,
    service: String,
    /// The block's bound address, Zipkin's `localEndpoint` (CoreDNS: the first listen host).
    local: Option<SocketAddr>,
    backlog: usize,
    batch: usize,
    interval: Duration,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    /// Spans dropped because the backlog was full.
    dropped: AtomicU64,
}

/// An HTTP URL split for the client.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    /// `https`: TLS verified against the system's roots.
    tls: bool,
    host: String,
    port: u16,
    /// Path and query.
    path: String,
    /// The `Host` header.
    authority: String,
}

fn target(endpoint: &Endpoint) -> Result<Target, String> {
    let url = match endpoint {
        Endpoint::Zipkin(u) => u.clone(),
        Endpoint::Datadog(a) => {
            let a = a.trim_start_matches("http://").trim_end_matches('/');
            format!("http://{a}/v0.4/traces")
        }
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid endpoint '{url}': {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(s) => {
            return Err(format!(
                "endpoint '{url}': scheme '{s}' is not supported (http or https)"
            ))
        }
        None => return Err(format!("invalid endpoint '{url}': no scheme")),
    };
    let auth = uri
        .authority()
        .ok_or_else(|| format!("invalid endpoint '{url}': no host"))?;
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("invalid endpoint '{url}': no host"));
    }
    Ok(Target {
        tls,
        host: host.to_string(),
        port: auth.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        authority: auth.as_str().to_string(),
    })
}

/// Checks that an endpoint can be sent to (an http or https URL with a host); true for https.
pub(super) fn check_endpoint(endpoint: &Endpoint) -> Result<bool, String> {
    target(endpoint).map(|t| t.tls)
}

impl Reporter {
    pub(crate) fn new(
        cfg: &Config,
        local: Option<SocketAddr>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Reporter {
        Reporter {
            tls,
            target: target(&cfg.endpoint).ok(),
            endpoint: cfg.endpoint.clone(),
            service: cfg.service.clone(),
            local,
            backlog: cfg.backlog.max(1),
            batch: cfg.batch.max(1),
            interval: cfg.interval,
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn datadog(&self) -> bool {
        matches!(self.endpoint, Endpoint::Datadog(_))
    }

    /// Datadog's upper 64 bits of a trace id begun at `start_us` (the start second, as
    /// dd-trace-go makes them); None for Zipkin's 64-bit ids.
    pub(crate) fn trace_id_high(&self, start_us: u64) -> Option<u64> {
        self.datadog().then_some((start_us / 1_000_000) << 32)
    }

    /// Queues a finished trace: `spans` and the root span last. The oldest traces go when the
    /// backlog is exceeded; a full batch wakes the sender. Never waits.
    pub(crate) fn submit(
        &self,
        trace_id: u64,
        high: Option<u64>,
        debug: bool,
        mut spans: Vec<Span>,
        root: Span,
    ) {
        spans.push(root);
        let n = spans.len();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.traces.push_back(Queued {
            trace_id,
            high,
            debug,
            spans,
        });
        q.spans += n;
        while q.spans > self.backlog {
            let Some(old) = q.traces.pop_front() else {
                break;
            };
            q.spans -= old.spans.len();
            self.dropped
                .fetch_add(old.spans.len() as u64, Ordering::Relaxed);
        }
        let full = q.spans >= self.batch;
        drop(q);
        if full {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Vec<Queued> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.spans = 0;
        q.traces.drain(..).collect()
    }

    /// The sender: every interval, or when a batch is full, sends what is queued.
    pub(crate) async fn run(&self, t: TaskCtx, clock: Clock) {
        let mut last_log: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = t.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = clock.sleep(self.interval) => {}
            }
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            let batch = self.take();
            if batch.is_empty() {
                continue;
            }
            let res = match &self.target {
                Some(target) => self.send(target, &batch).await,
                None => Err("no endpoint".to_string()),
            };
            if let Err(e) = res {
                if last_log.is_none_or(|l| l.elapsed() >= LOG_EVERY) {
                    LOG.error(&format!("failed to send the request: {e}"));
                    last_log = Some(Instant::now());
                }
            }
            if dropped > 0 {
                LOG.debug(&format!("backlog full: {dropped} spans dropped"));
            }
        }
    }

    async fn send(&self, target: &Target, batch: &[Queued]) -> Result<(), String> {
        let (body, content_type, mut headers) = if self.datadog() {
            (
                self.datadog_body(batch)?,
                "application/msgpack",
                vec![
                    ("X-Datadog-Trace-Count", batch.len().to_string()),
                    ("Datadog-Meta-Lang", "rust".to_string()),
                    (
                        "Datadog-Meta-Tracer-Version",
                        env!("CARGO_PKG_VERSION").to_string(),
                    ),
                    ("Datadog-Client-Computed-Top-Level", "t".to_string()),
                ],
            )
        } else {
            (self.zipkin_body(batch), "application/json", Vec::new())
        };
        // The collector must not trace its own intake (zipkin-go sends this too).
        if !self.datadog() {
            headers.push(("b3", "0".to_string()));
        }
        let tls = self.tls.clone();
        let status =
            tokio::time::timeout(POST_TIMEOUT, post(target, tls, content_type, headers, body))
                .await
                .map_err(|_| "timed out".to_string())??;
        if !(200..300).contains(&status) {
            return Err(format!("collector answered HTTP {status}"));
        }
        Ok(())
    }

    /// Zipkin's v2 JSON: an array of spans.
    fn zipkin_body(&self, batch: &[Queued]) -> Vec<u8> {
        let mut local = Map::new();
        local.insert("serviceName".into(), Value::from(self.service.as_str()));
        if let Some(a) = self.local {
            let key = if a.is_ipv4() { "ipv4" } else { "ipv6" };
            local.insert(key.into(), Value::from(a.ip().to_string()));
            local.insert("port".into(), Value::from(a.port()));
        }
        let local = Value::Object(local);
        let mut out = Vec::new();
        for tr in batch {
            for s in &tr.spans {
                let mut o = Map::new();
                let trace_id = match tr.high {
                    Some(h) => format!("{h:016x}{:016x}", tr.trace_id),
                    None => format!("{:016x}", tr.trace_id),
                };
                o.insert("traceId".into(), trace_id.into());
                o.insert("id".into(), format!("{:016x}", s.id).into());
                if s.parent != 0 {
                    o.insert("parentId".into(), format!("{:016x}", s.parent).into());
                }
                o.insert("name".into(), s.name.into());
                if s.server {
                    o.insert("kind".into(), "SERVER".into());
                }
                if s.shared {
                    o.insert("shared".into(), true.into());
                }
                if tr.debug {
                    o.insert("debug".into(), true.into());
                }
                o.insert("timestamp".into(), s.start_us.into());
                o.insert(
                    "duration".into(),
                    (s.duration.as_micros().max(1) as u64).into(),
                );
                o.insert("localEndpoint".into(), local.clone());
                let mut tags: Map<String, Value> = s
                    .tags
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), Value::from(v.as_str())))
                    .collect();
                if let Some(e) = &s.error {
                    // OpenTracing's error tag and log fields, as zipkin-go-opentracing maps them.
                    tags.insert("error".into(), "true".into());
                    let at = s.start_us + s.duration.as_micros() as u64;
                    o.insert(
                        "annotations".into(),
                        json!([
                            {"timestamp": at, "value": "event:error"},
                            {"timestamp": at, "value": format!("error.object:{e}")},
                        ]),
                    );
                }
                if !tags.is_empty() {
                    o.insert("tags".into(), Value::Object(tags));
                }
                out.push(Value::Object(o));
            }
        }
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// The agent's v0.4 payload: an array of traces, each an array of span maps.
    fn datadog_body(&self, batch: &[Queued]) -> Result<Vec<u8>, String> {
        use rmp::encode as mp;
        let e = |e: rmp::encode::ValueWriteError| e.to_string();
        let mut b = Vec::with_capacity(512 * batch.len());
        mp::write_array_len(&mut b, batch.len() as u32).map_err(e)?;
        for tr in batch {
            mp::write_array_len(&mut b, tr.spans.len() as u32).map_err(e)?;
            for s in &tr.spans {
                let root = s.parent == 0;
                let mut meta: Vec<(&str, String)> =
                    s.tags.iter().map(|(k, v)| (*k, v.clone())).collect();
                if root {
                    // CoreDNS's global tag `dns: true`, and the trace id's upper half.
                    meta.push(("dns", "true".to_string()));
                    if let Some(h) = tr.high {
                        meta.push(("_dd.p.tid", format!("{h:016x}")));
                    }
                }
                if let Some(err) = &s.error {
                    meta.push(("error.message", err.clone()));
                    meta.push(("error.type", "dns_error".to_string()));
                }
                let metrics: &[(&str, f64)] = if root {
                    &[("_sampling_priority_v1", 1.0), ("_dd.top_level", 1.0)]
                } else {
                    &[]
                };
                mp::write_map_len(&mut b, 12).map_err(e)?;
                mp::write_str(&mut b, "name").map_err(e)?;
                mp::write_str(&mut b, s.name).map_err(e)?;
                mp::write_str(&mut b, "service").map_err(e)?;
                mp::write_str(&mut b, &self.service).map_err(e)?;
                mp::write_str(&mut b, "resource").map_err(e)?;
                mp::write_str(&mut b, s.name).map_err(e)?;
                mp::write_str(&mut b, "type").map_err(e)?;
                mp::write_str(&mut b, "").map_err(e)?;
                mp::write_str(&mut b, "start").map_err(e)?;
                mp::write_sint(&mut b, (s.start_us as i64).saturating_mul(1000)).map_err(e)?;
                mp::write_str(&mut b, "duration").map_err(e)?;
                mp::write_sint(&mut b, s.duration.as_nanos().min(i64::MAX as u128) as i64)
                    .map_err(e)?;
                mp::write_str(&mut b, "meta").map_err(e)?;
                mp::write_map_len(&mut b, meta.len() as u32).map_err(e)?;
                for (k, v) in &meta {
                    mp::write_str(&mut b, k).map_err(e)?;
                    mp::write_str(&mut b, v).map_err(e)?;
                }
                mp::write_str(&mut b, "metrics").map_err(e)?;
                mp::write_map_len(&mut b, metrics.len() as u32).map_err(e)?;
                for (k, v) in metrics {
                    mp::write_str(&mut b, k).map_err(e)?;
                    mp::write_f64(&mut b, *v).map_err(|e| e.to_string())?;
                }
                mp::write_str(&mut b, "span_id").map_err(e)?;
                mp::write_uint(&mut b, s.id).map_err(e)?;
                mp::write_str(&mut b, "trace_id").map_err(e)?;
                mp::write_uint(&mut b, tr.trace_id).map_err(e)?;
                mp::write_str(&mut b, "parent_id").map_err(e)?;
                mp::write_uint(&mut b, s.parent).map_err(e)?;
                mp::write_str(&mut b, "error").map_err(e)?;
                mp::write_sint(&mut b, i64::from(s.error.is_some())).map_err(e)?;
            }
        }
        Ok(b)
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One POST on its own connection (TLS with `tls` for an https target); the response status.
async fn post(
    target: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    content_type: &str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Result<u16, String> {
    let mut last = format!("{}: no address", target.host);
    let mut stream = None;
    let addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("{}: {e}", target.host))?;
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("dial tcp {a}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let io: Box<dyn Io> = match (target.tls, tls) {
        (false, _) => Box::new(stream),
        (true, None) => return Err("no TLS configuration".to_string()),
        (true, Some(cfg)) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("TLS server name {:?}: {e}", target.host))?;
            Box::new(
                tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?,
            )
        }
    };
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let mut req = http::Request::post(target.path.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::CONTENT_TYPE, content_type)
        .header(
            http::header::USER_AGENT,
            concat!("sextant/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("HTTP request: {e}"))?;
    let exchange = async move {
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = resp.status().as_u16();
        // Read (and drop) a bounded body so the connection ends cleanly.
        let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await;
        drop(tx);
        Ok::<_, String>(status)
    };
    let (r, _) = tokio::join!(exchange, conn);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = target(&Endpoint::Zipkin("http://h:9411/api/v2/spans".into())).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("h", 9411, "/api/v2/spans")
        );
        let t = target(&Endpoint::Datadog("localhost:8126".into())).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 8126, "/v0.4/traces")
        );
        let t = target(&Endpoint::Zipkin("http://[::1]/x".into())).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        let t = target(&Endpoint::Zipkin("https://h/api/v2/spans".into())).unwrap();
        assert_eq!((t.tls, t.port), (true, 443));
        assert!(target(&Endpoint::Zipkin("ftp://h/api/v2/spans".into()))
            .unwrap_err()
            .contains("scheme 'ftp' is not supported"));
    }
}
