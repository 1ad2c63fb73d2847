//! HTTP/1.1 front of the fake API server: accept loop, routing, LIST pages, WATCH streams and
//! fault injection. Owns sockets; holds store locks only briefly and never across an await.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Filter, Kind};
use crate::{lock, Inner, Stall};

type Body = UnsyncBoxBody<Bytes, Infallible>;

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        let mut conn_rx = inner.conn_gen.subscribe();
        conn_rx.borrow_and_update();
        tokio::spawn(async move {
            let svc_inner = inner.clone();
            let svc = service_fn(move |req| handle(svc_inner.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            // Biased: once `go_down` has run, nothing more is written on this connection,
            // not even an event queued after it (an outage must hide later changes).
            tokio::select! {
                biased;
                _ = conn_rx.changed() => {}
                _ = conn => {}
            }
        });
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        410 => "Expired",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

fn status_json(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason_for(code), "code": code})
}

fn status_response(code: u16, message: &str) -> Response<Body> {
    let st = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = full(st, status_json(code, message).to_string());
    if code == 429 {
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// What a request addresses.
enum Target {
    Discovery(Value),
    Collection {
        kind: Kind,
        ns: Option<String>,
    },
    Object {
        kind: Kind,
        ns: String,
        name: String,
    },
}

fn resource_list(group_version: &str, kinds: &[Kind]) -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": kinds.iter().map(|k| json!({
            "name": k.resource(), "singularName": k.name().to_lowercase(), "namespaced": k.namespaced(),
            "kind": k.name(), "verbs": ["get", "list", "watch"]})).collect::<Vec<_>>()})
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let core = |k: Kind| k != Kind::EndpointSlice && k != Kind::ServiceImport;
    let (rest, group_ok): (&[&str], fn(Kind) -> bool) = match segs.as_slice() {
        ["version"] => {
            return Some(Target::Discovery(json!({"major": "1", "minor": "34",
                "gitVersion": "v1.34.0-sextant-fake", "platform": "linux/amd64"})))
        }
        ["api"] => {
            return Some(Target::Discovery(
                json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ))
        }
        ["apis"] => {
            return Some(Target::Discovery(
                json!({"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [{"name": "discovery.k8s.io",
                    "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}},
                    {"name": "multicluster.x-k8s.io",
                    "versions": [{"groupVersion": "multicluster.x-k8s.io/v1alpha1", "version": "v1alpha1"}],
                    "preferredVersion": {"groupVersion": "multicluster.x-k8s.io/v1alpha1", "version": "v1alpha1"}}]}),
            ))
        }
        ["api", "v1"] => {
            return Some(Target::Discovery(resource_list(
                "v1",
                &[Kind::Service, Kind::Pod, Kind::Namespace],
            )))
        }
        ["apis", "discovery.k8s.io", "v1"] => {
            return Some(Target::Discovery(resource_list(
                "discovery.k8s.io/v1",
                &[Kind::EndpointSlice],
            )))
        }
        ["apis", "multicluster.x-k8s.io", "v1alpha1"] => {
            return Some(Target::Discovery(resource_list(
                "multicluster.x-k8s.io/v1alpha1",
                &[Kind::ServiceImport],
            )))
        }
        ["api", "v1", rest @ ..] => (rest, core),
        ["apis", "multicluster.x-k8s.io", "v1alpha1", rest @ ..] => {
            (rest, |k| k == Kind::ServiceImport)
        }
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => (rest, |k| k == Kind::EndpointSlice),
        _ => return None,
    };
    let kind_of = |r: &str| Kind::from_resource(r).filter(|k| group_ok(*k));
    match rest {
        [r] => kind_of(r).map(|kind| Target::Collection { kind, ns: None }),
        ["namespaces", name] if group_ok(Kind::Namespace) => Some(Target::Object {
            kind: Kind::Namespace,
            ns: String::new(),
            name: (*name).to_string(),
        }),
        ["namespaces", ns, r] => {
            kind_of(r)
                .filter(|k| k.namespaced())
                .map(|kind| Target::Collection {
                    kind,
                    ns: Some((*ns).to_string()),
                })
        }
        ["namespaces", ns, r, name] => {
            kind_of(r)
                .filter(|k| k.namespaced())
                .map(|kind| Target::Object {
                    kind,
                    ns: (*ns).to_string(),
                    name: (*name).to_string(),
                })
        }
        _ => None,
    }
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let params = query_params(req.uri().query());
    let target = route(req.uri().path());
    let watch = matches!(params.get("watch").map(String::as_str), Some("1" | "true"));
    let (verb, resource) = match &target {
        None => ("get", "unknown"),
        Some(Target::Discovery(_)) => ("get", "discovery"),
        Some(Target::Object { kind, .. }) => ("get", kind.resource()),
        Some(Target::Collection { kind, .. }) => {
            (if watch { "watch" } else { "list" }, kind.resource())
        }
    };
    inner.count(verb, resource);

    let stall = lock(&inner.faults).stall;
    match stall {
        Stall::None => {}
        Stall::Delay(d) => tokio::time::sleep(d).await,
        Stall::Forever => std::future::pending::<()>().await,
    }
    let fail = {
        let mut f = lock(&inner.faults);
        match f.fail {
            Some((code, None)) => Some(code),
            Some((code, Some(n))) => {
                f.fail = if n > 1 {
                    Some((code, Some(n - 1)))
                } else {
                    None
                };
                (n > 0).then_some(code)
            }
            None => None,
        }
    };
    if let Some(code) = fail {
        return Ok(status_response(code, "injected failure"));
    }
    if req.method() != hyper::Method::GET {
        return Ok(status_response(405, "only GET is served"));
    }
    let resp = match target {
        None => status_response(404, "the server could not find the requested resource"),
        Some(Target::Discovery(v)) => full(StatusCode::OK, v.to_string()),
        Some(Target::Object { kind, ns, name }) => match lock(&inner.store).get(kind, &ns, &name) {
            Some(o) => full(StatusCode::OK, serde_json::to_vec(&*o).unwrap_or_default()),
            None => status_response(404, &format!("{} {name:?} not found", kind.resource())),
        },
        Some(Target::Collection { kind, ns }) => {
            let filter = match make_filter(ns, &params) {
                Ok(f) => f,
                Err(e) => return Ok(status_response(400, &e)),
            };
            if watch {
                start_watch(inner, kind, filter, &params)
            } else {
                list(inner, kind, filter, &params).await
            }
        }
    };
    Ok(resp)
}

fn make_filter(ns: Option<String>, params: &HashMap<String, String>) -> Result<Filter, String> {
    let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| e.to_string())?;
    let fields = FieldSelector::parse(params.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| e.to_string())?;
    Ok(Filter {
        namespace: ns,
        labels,
        fields,
    })
}

async fn list(
    inner: Arc<Inner>,
    kind: Kind,
    filter: Filter,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let slow = lock(&inner.faults).slow_list;
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let after = match params.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(tok) => match unhex(tok).and_then(|s| {
            s.split_once('\0')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        }) {
            Some(p) => Some(p),
            None => return status_response(400, "invalid continue token"),
        },
    };
    let (items, more, rv) = {
        let st = lock(&inner.store);
        let (items, more) = st.list(
            kind,
            &filter,
            after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            limit,
        );
        (items, more, st.rv())
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if more {
        if let Some(last) = items.last() {
            let ns = last
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = last
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            meta["continue"] = Value::String(hex(&format!("{ns}\0{name}")));
        }
    }
    let head = json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
                      "metadata": meta});
    // Stream the items into the body without deep-cloning them into one Value.
    let mut body = head.to_string();
    body.pop(); // trailing '}'
    body.push_str(",\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&serde_json::to_string(&**it).unwrap_or_else(|_| "null".into()));
    }
    body.push_str("]}");
    full(StatusCode::OK, body)
}

struct WatchGuard(Arc<Inner>);

impl WatchGuard {
    fn new(inner: Arc<Inner>) -> Self {
        inner.open_watches.fetch_add(1, Ordering::SeqCst);
        WatchGuard(inner)
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

fn start_watch(
    inner: Arc<Inner>,
    kind: Kind,
    filter: Filter,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let since = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => match s.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return status_response(400, "invalid resourceVersion"),
        },
    };
    let bookmarks = matches!(
        params.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    // Watch-list (client-go's streaming list): the current state as ADDED events, then a
    // bookmark marking the end of the initial events.
    let initial = matches!(
        params.get("sendInitialEvents").map(String::as_str),
        Some("true" | "1")
    );
    let since = if initial { None } else { since };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let guard = WatchGuard::new(inner.clone());
    tokio::spawn(watch_task(
        guard,
        kind,
        filter,
        since,
        Flags { bookmarks, initial },
        timeout,
        tx,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// What a watch asked for besides events: periodic bookmarks, and the current state first
/// (watch-list).
struct Flags {
    bookmarks: bool,
    initial: bool,
}

async fn watch_task(
    guard: WatchGuard,
    kind: Kind,
    filter: Filter,
    since: Option<u64>,
    Flags { bookmarks, initial }: Flags,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let inner = guard.0.clone();
    let mut rv_rx = inner.rv_tx.subscribe();
    let mut drop_rx = inner.drop_gen.subscribe();
    drop_rx.borrow_and_update();
    let every = *lock(&inner.bookmark_interval);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);

    let mut cursor = match since {
        Some(v) => v,
        None => {
            // "Start at most recent": synthetic ADDED events for the current state.
            let (items, rv) = {
                let st = lock(&inner.store);
                (st.list(kind, &filter, None, 0).0, st.rv())
            };
            for it in items {
                let line = json!({"type": "ADDED", "object": &*it}).to_string() + "\n";
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            if initial {
                let ev = json!({"type": "BOOKMARK", "object": {"kind": kind.name(),
                    "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"}}}});
                if tx.send(Bytes::from(ev.to_string() + "\n")).await.is_err() {
                    return;
                }
            }
            rv
        }
    };
    loop {
        rv_rx.borrow_and_update();
        let batch = {
            let st = lock(&inner.store);
            st.events_since(kind, &filter, cursor)
                .map(|evs| (evs, st.rv()))
        };
        match batch {
            Err(()) => {
                let ev = json!({"type": "ERROR", "object": status_json(410,
                    &format!("too old resource version: {cursor} ({})", lock(&inner.store).rv()))});
                let _ = tx.send(Bytes::from(ev.to_string() + "\n")).await;
                break;
            }
            Ok((evs, now)) => {
                for e in evs {
                    if tx.send(Bytes::from(e.to_line())).await.is_err() {
                        return;
                    }
                }
                cursor = now;
            }
        }
        tokio::select! {
            r = rv_rx.changed() => if r.is_err() { break },
            _ = drop_rx.changed() => break,
            _ = &mut deadline => break,
            _ = tx.closed() => break,
            _ = tick.tick(), if bookmarks => {
                let ev = json!({"type": "BOOKMARK", "object": {"kind": kind.name(),
                    "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": cursor.to_string()}}});
                if tx.send(Bytes::from(ev.to_string() + "\n")).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_and_tokens() {
        assert_eq!(percent_decode("a%3Db%2Cc+d"), "a=b,c d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(unhex(&hex("ns\0name")).as_deref(), Some("ns\0name"));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route("/api/v1/services"),
            Some(Target::Collection {
                kind: Kind::Service,
                ns: None
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces/x/pods"),
            Some(Target::Collection {
                kind: Kind::Pod,
                ns: Some(_)
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces"),
            Some(Target::Collection {
                kind: Kind::Namespace,
                ns: None
            })
        ));
        assert!(matches!(
            route("/apis/discovery.k8s.io/v1/namespaces/x/endpointslices"),
            Some(Target::Collection {
                kind: Kind::EndpointSlice,
                ..
            })
        ));
        assert!(route("/api/v1/endpointslices").is_none());
        assert!(matches!(
            route("/apis/multicluster.x-k8s.io/v1alpha1/serviceimports"),
            Some(Target::Collection {
                kind: Kind::ServiceImport,
                ns: None
            })
        ));
        assert!(matches!(
            route("/apis/multicluster.x-k8s.io/v1alpha1/namespaces/x/serviceimports/y"),
            Some(Target::Object {
                kind: Kind::ServiceImport,
                ..
            })
        ));
        assert!(route("/api/v1/serviceimports").is_none());
        assert!(route("/apis/discovery.k8s.io/v1/services").is_none());
        assert!(matches!(route("/version"), Some(Target::Discovery(_))));
    }
}
