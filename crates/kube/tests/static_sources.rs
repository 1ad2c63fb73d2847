//! Index without an API server: `apply_objects`, de-duplication across EndpointSlices,
//! manifests (YAML/JSON files and folders, reload on change) and snapshot persistence.

use std::net::IpAddr;
use std::time::Duration;

use sextant_fakeapi::{endpoint, endpoint_slice, pod, service};
use sextant_kube::{load_manifests, Index, Source};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn apply_objects_replaces_and_dedups_across_slices() {
    let idx = Index::new_static();
    assert!(idx.synced());
    idx.apply_objects(vec![
        service("ns", "h")
            .headless()
            .port("http", 80, "TCP")
            .build(),
        endpoint_slice("ns", "h-a", "h")
            .endpoint(endpoint("10.0.0.1").hostname("a"))
            .endpoint(endpoint("10.0.0.1").hostname("a")) // duplicate within a slice
            .port("http", 80, "TCP")
            .build(),
        endpoint_slice("ns", "h-b", "h")
            .endpoint(endpoint("10.0.0.1").hostname("a")) // duplicate across slices
            .endpoint(endpoint("10.0.0.1").hostname("b")) // same IP, other hostname: kept
            .endpoint(endpoint("fd00::2"))
            .address_type("IPv6")
            .build(),
        pod("ns", "p")
            .ip("10.0.0.1")
            .ip("fd00::1")
            .label("b", "2")
            .label("a", "1")
            .build(),
        serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "ignored"}}),
    ])
    .unwrap();
    let s = idx.snapshot();
    // Namespaces are implied by the objects.
    assert!(s.namespace("ns").is_some());
    let eps: Vec<_> = s.endpoints("ns", "h").map(|e| (e.ip, e.hostname)).collect();
    assert_eq!(
        eps,
        vec![
            (ip("10.0.0.1"), Some("a")),
            (ip("10.0.0.1"), Some("b")),
            (ip("fd00::2"), None)
        ]
    );
    assert_eq!(s.endpoints_by_ip(ip("10.0.0.1")).count(), 2);
    // The slice without ports carries the sentinel.
    let v6 = s.endpoints("ns", "h").find(|e| e.ip.is_ipv6()).unwrap();
    assert!(v6.ports[0].is_sentinel());
    let p = s.pod_by_ip(ip("fd00::1")).unwrap();
    assert_eq!(p.ips, vec![ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(&*p.labels[0].0, "a");
    let serial = s.serial();
    assert!(serial > 1_600_000_000);
    drop(s);

    // Replace all: objects not given disappear.
    idx.apply_objects(vec![service("ns", "c").cluster_ip("10.1.0.1").build()])
        .unwrap();
    let s = idx.snapshot();
    assert!(s.service("ns", "h").is_none());
    assert!(s.endpoints_by_ip(ip("10.0.0.1")).next().is_none());
    assert!(s.pod_by_ip(ip("10.0.0.1")).is_none());
    assert_eq!(s.counts().endpoints, 0);
    assert_eq!(s.services().count(), 1);

    // A malformed object is reported by name; the others still apply.
    let err = idx
        .apply_objects(vec![
            serde_json::json!({"kind": "Service", "metadata": {"namespace": "ns", "name": "bad"},
                               "spec": {"ports": "not-a-list"}}),
            service("ns", "good").build(),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("bad"), "{err}");
    assert!(idx.snapshot().service("ns", "good").is_some());
}

#[tokio::test]
async fn manifests_load_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("a.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {name: s1, namespace: x}\nspec: {clusterIP: 10.9.0.1}\n---\n\
         apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: y}\n",
    )
    .unwrap();
    let json = dir.path().join("b.json");
    std::fs::write(&json, service("x", "s2").headless().build().to_string()).unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "not yaml: [").unwrap();
    let objs = load_manifests(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(objs.len(), 3);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [unclosed").unwrap();
    let err = load_manifests(std::slice::from_ref(&bad)).unwrap_err();
    assert!(err.to_string().contains("bad.yaml"), "{err}");
    std::fs::remove_file(&bad).unwrap();

    let idx = Index::new_static();
    idx.watch_manifests(vec![dir.path().to_path_buf()]).unwrap();
    assert_eq!(idx.source(), Source::Manifests);
    assert!(idx.snapshot().service("x", "s1").is_some());
    assert!(idx.snapshot().namespace("y").is_some());
    let mut rx = idx.subscribe();
    // Change a file (different size, and wait past mtime granularity).
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&json, service("x", "s3").headless().build().to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let s = idx.snapshot();
    assert!(s.service("x", "s3").is_some());
    assert!(s.service("x", "s2").is_none());
    idx.stop();
}

#[tokio::test]
async fn snapshot_persist_and_load_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.json");
    let idx = Index::new_static();
    idx.persist_to(path.clone(), Duration::from_millis(10));
    idx.apply_objects(vec![
        service("ns", "a")
            .cluster_ip("10.0.0.1")
            .cluster_ip("fd00::1")
            .port("dns", 53, "UDP")
            .build(),
        service("ns", "e").external_name("example.org").build(),
        endpoint_slice("ns", "a-1", "a")
            .endpoint(endpoint("10.1.0.1").hostname("h").pod("p").node("n"))
            .port("dns", 53, "UDP")
            .build(),
        pod("ns", "p").ip("10.1.0.1").label("k", "v").build(),
    ])
    .unwrap();
    let mut ok = false;
    for _ in 0..200 {
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "snapshot not written");
    idx.stop();

    let back = Index::new_static();
    back.load_snapshot(&path).unwrap();
    assert_eq!(back.source(), Source::Snapshot);
    let (a, b) = (idx.snapshot(), back.snapshot());
    assert_eq!(a.counts(), b.counts());
    assert_eq!(a.service("ns", "a"), b.service("ns", "a"));
    assert_eq!(a.service("ns", "e"), b.service("ns", "e"));
    assert_eq!(
        a.endpoints("ns", "a").collect::<Vec<_>>(),
        b.endpoints("ns", "a").collect::<Vec<_>>()
    );
    assert_eq!(a.pod("ns", "p"), b.pod("ns", "p"));
    assert!(back
        .load_snapshot(&dir.path().join("missing.json"))
        .is_err());
}
