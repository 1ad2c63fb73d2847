//! Drives the fake API server with a plain hyper HTTP/1.1 client over loopback.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sextant_fakeapi::{endpoint, endpoint_slice, namespace, pod, service, FakeApi, Kind, Stall};

const T: Duration = Duration::from_secs(5);

async fn send(api: &FakeApi, path: &str) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "fake")
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        )
        .body(Empty::<Bytes>::new())
        .unwrap();
    tokio::time::timeout(T, tx.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

async fn get(api: &FakeApi, path: &str) -> (u16, Value) {
    let r = send(api, path).await;
    let code = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = tokio::time::timeout(T, r.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (code, serde_json::from_slice(&body).unwrap())
}

/// Reads watch lines until `n` events arrived or the stream ends.
struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    async fn open(api: &FakeApi, path: &str) -> Watch {
        let r = send(api, path).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["transfer-encoding"], "chunked");
        Watch {
            body: r.into_body(),
            buf: Vec::new(),
        }
    }
    /// Next event, None at end of stream.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(p) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout(T, self.body.frame()).await.unwrap()?;
            if let Ok(d) = frame.unwrap().into_data() {
                self.buf.extend_from_slice(&d);
            }
        }
    }
    /// Next non-bookmark event.
    async fn next_event(&mut self) -> Option<Value> {
        loop {
            let e = self.next().await?;
            if e["type"] != "BOOKMARK" {
                return Some(e);
            }
        }
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_paging_and_selectors() {
    let api = FakeApi::start().await.unwrap();
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.apply(
            service("ns", &format!("s{i}"))
                .cluster_ip(&format!("10.0.0.{i}"))
                .label("tier", tier),
        )
        .unwrap();
    }
    api.apply(service("other", "x").label("tier", "even"))
        .unwrap();
    let (code, all) = get(&api, "/api/v1/services").await;
    assert_eq!(code, 200);
    assert_eq!(all["kind"], "ServiceList");
    assert_eq!(names(&all).len(), 8);
    let rv: u64 = all["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rv, api.resource_version());

    // Paging with limit=3 walks every item exactly once.
    let mut seen = Vec::new();
    let mut cont = String::new();
    for _ in 0..10 {
        let (_, page) = get(&api, &format!("/api/v1/services?limit=3&continue={cont}")).await;
        let n = names(&page);
        assert!(n.len() <= 3);
        seen.extend(n);
        match page["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 8);

    let (_, sel) = get(
        &api,
        "/api/v1/namespaces/ns/services?labelSelector=tier%3Deven",
    )
    .await;
    assert_eq!(names(&sel), vec!["s0", "s2", "s4", "s6"]);
    let (_, sel) = get(&api, "/api/v1/services?labelSelector=tier+notin+(even)").await;
    assert_eq!(names(&sel), vec!["s1", "s3", "s5"]);
    let (_, sel) = get(&api, "/api/v1/services?fieldSelector=metadata.name%3Dx").await;
    assert_eq!(names(&sel), vec!["x"]);
    let (code, _) = get(&api, "/api/v1/services?labelSelector=a+~+b").await;
    assert_eq!(code, 400);
    assert_eq!(api.requests("list", "services"), 8);
}

#[tokio::test]
async fn pods_phase_field_selector_and_other_kinds() {
    let api = FakeApi::start().await.unwrap();
    api.apply(pod("a", "run").ip("10.1.0.1")).unwrap();
    api.apply(pod("a", "done").ip("10.1.0.2").phase("Succeeded"))
        .unwrap();
    api.apply(namespace("a").label("team", "x")).unwrap();
    api.apply(
        endpoint_slice("a", "s-1", "s")
            .endpoint(endpoint("10.1.0.1"))
            .port("http", 80, "TCP"),
    )
    .unwrap();
    let (_, l) = get(&api, "/api/v1/pods?fieldSelector=status.phase!%3DSucceeded,status.phase!%3DFailed,status.phase!%3DUnknown").await;
    assert_eq!(names(&l), vec!["run"]);
    let (_, l) = get(&api, "/api/v1/namespaces?labelSelector=team").await;
    assert_eq!(names(&l), vec!["a"]);
    let (_, l) = get(&api, "/apis/discovery.k8s.io/v1/endpointslices").await;
    assert_eq!(l["kind"], "EndpointSliceList");
    assert_eq!(names(&l), vec!["s-1"]);
    let (code, v) = get(&api, "/version").await;
    assert_eq!((code, v["major"].as_str()), (200, Some("1")));
    let (code, _) = get(&api, "/api/v1/nothing").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn watch_replays_and_streams() {
    let api = FakeApi::start().await.unwrap();
    let created = api
        .apply(service("ns", "a").cluster_ip("10.0.0.1"))
        .unwrap();
    let rv0: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    api.apply(service("ns", "a").cluster_ip("10.0.0.2"))
        .unwrap();
    api.apply(pod("ns", "p")).unwrap(); // other kind: not in the services stream
    assert!(api.delete(Kind::Service, "ns", "a"));

    let mut w = Watch::open(
        &api,
        &format!("/api/v1/services?watch=1&resourceVersion={}", rv0 - 1),
    )
    .await;
    let tys: Vec<String> = [
        w.next_event().await,
        w.next_event().await,
        w.next_event().await,
    ]
    .into_iter()
    .map(|e| e.unwrap()["type"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(tys, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(api.open_watches(), 1);
    // Live event after the replay.
    api.apply(service("ns", "b")).unwrap();
    let e = w.next_event().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );
    // Drop all watches: the stream ends cleanly, the counter returns to 0.
    api.drop_watches();
    assert!(w.next_event().await.is_none());
    for _ in 0..100 {
        if api.open_watches() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.open_watches(), 0);
}

#[tokio::test]
async fn watch_from_compacted_rv_gets_410_and_bookmarks_flow() {
    let api = FakeApi::start().await.unwrap();
    api.set_bookmark_interval(Duration::from_millis(50));
    api.apply(service("ns", "a")).unwrap();
    let old = api.resource_version();
    api.apply(service("ns", "b")).unwrap();
    api.compact();
    let mut w = Watch::open(
        &api,
        &format!("/api/v1/services?watch=true&resourceVersion={old}"),
    )
    .await;
    let e = w.next().await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(w.next().await.is_none());

    let now = api.resource_version();
    let mut w = Watch::open(
        &api,
        &format!("/api/v1/services?watch=1&resourceVersion={now}&allowWatchBookmarks=true&timeoutSeconds=30"),
    )
    .await;
    let e = w.next().await.unwrap();
    assert_eq!(e["type"], "BOOKMARK");
    assert_eq!(e["object"]["metadata"]["resourceVersion"], now.to_string());
}

#[tokio::test]
async fn skipped_events_are_not_streamed() {
    let api = FakeApi::start().await.unwrap();
    let now = api.resource_version();
    let mut w = Watch::open(
        &api,
        &format!("/api/v1/services?watch=1&resourceVersion={now}"),
    )
    .await;
    api.skip_events(true);
    api.apply(service("ns", "hidden")).unwrap();
    api.skip_events(false);
    api.apply(service("ns", "seen")).unwrap();
    let e = w.next_event().await.unwrap();
    assert_eq!(e["object"]["metadata"]["name"], "seen");
    let (_, l) = get(&api, "/api/v1/services").await;
    assert_eq!(names(&l), vec!["hidden", "seen"]);
}

#[tokio::test]
async fn fault_injection() {
    let api = FakeApi::start().await.unwrap();
    api.fail_next(429, 2);
    let r = send(&api, "/api/v1/services").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(get(&api, "/api/v1/services").await.0, 429);
    assert_eq!(get(&api, "/api/v1/services").await.0, 200);
    api.fail_all(403);
    for _ in 0..3 {
        let (code, st) = get(&api, "/api/v1/pods").await;
        assert_eq!((code, st["reason"].as_str()), (403, Some("Forbidden")));
    }
    api.clear_failures();
    assert_eq!(get(&api, "/api/v1/pods").await.0, 200);
    assert_eq!(api.requests("list", "pods"), 4);

    // Stall with a delay.
    api.stall(Stall::Delay(Duration::from_millis(200)));
    let t0 = std::time::Instant::now();
    assert_eq!(get(&api, "/api/v1/pods").await.0, 200);
    assert!(t0.elapsed() >= Duration::from_millis(200));
    // Stall forever: no answer within a bound.
    api.stall(Stall::Forever);
    let stream = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/api/v1/pods")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), tx.send_request(req))
            .await
            .is_err()
    );
    api.stall(Stall::None);

    // Down: connections refused; up again on the same port.
    api.go_down();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(api.addr()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused);
    api.come_up().await.unwrap();
    assert_eq!(get(&api, "/api/v1/pods").await.0, 200);
}
