//! Index without an API server: `apply_objects`, de-duplication across EndpointSlices,
//! manifests (YAML/JSON files and folders, reload on change) and snapshot persistence.

use std::net::IpAddr;
use std::time::Duration;

use sextant_fakeapi::{endpoint, endpoint_slice, mc_endpoint_slice, pod, service, service_import};
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

/// An object whose `apiVersion` is not its kind's is refused with the k8s-openapi text.
#[test]
fn wrong_api_version_is_reported() {
    let idx = Index::new_static();
    let err = idx
        .apply_objects(vec![
            serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "Service",
                               "metadata": {"namespace": "ns", "name": "old"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "EndpointSlice",
                               "metadata": {"namespace": "ns", "name": "slice"}}),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "object \"old\": invalid value: string \"discovery.k8s.io/v1\", expected v1"
    );
    assert!(idx.snapshot().service("ns", "old").is_none());
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
        service_import("ns", "a")
            .ip("10.200.0.1")
            .port("dns", 53, "UDP")
            .build(),
        service_import("ns", "h")
            .headless()
            .port("", 80, "TCP")
            .build(),
        mc_endpoint_slice("ns", "h-east", "h", "east")
            .endpoint(endpoint("10.2.0.1").hostname("h-0"))
            .endpoint(endpoint("10.2.0.2").ready(Some(false)))
            .port("", 80, "TCP")
            .build(),
        // Both service-name labels: a local slice and an MCS one at once.
        mc_endpoint_slice("ns", "a-west", "a", "west")
            .label("kubernetes.io/service-name", "a")
            .endpoint(endpoint("10.3.0.1"))
            .port("dns", 53, "UDP")
            .build(),
    ])
    .unwrap();
    {
        let s = idx.snapshot();
        assert_eq!(
            (s.counts().service_imports, s.counts().mc_endpoints),
            (2, 2)
        );
        assert!(s.service_import("ns", "h").is_some_and(|i| i.headless));
        let h: Vec<_> = s
            .mc_endpoints("ns", "h")
            .map(|e| (e.ip.to_string(), e.hostname, e.cluster))
            .collect();
        assert_eq!(h, [("10.2.0.1".to_string(), Some("h-0"), Some("east"))]);
        // MCS endpoints are no PTR source; the doubly labelled slice is in both views.
        assert_eq!(s.endpoints_by_ip(ip("10.2.0.1")).count(), 0);
        assert_eq!(s.endpoints_by_ip(ip("10.3.0.1")).count(), 1);
        assert_eq!(s.mc_endpoints("ns", "a").count(), 1);
        assert!(s.mc_serial() > 0);
    }
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
    for (ns, name) in [("ns", "a"), ("ns", "h")] {
        assert_eq!(a.service_import(ns, name), b.service_import(ns, name));
        assert_eq!(
            a.mc_endpoints(ns, name).collect::<Vec<_>>(),
            b.mc_endpoints(ns, name).collect::<Vec<_>>()
        );
    }
    assert!(back
        .load_snapshot(&dir.path().join("missing.json"))
        .is_err());
}

/// Everything DNS reads from an index, as plain data, to compare two indexes.
fn dump(idx: &Index) -> Vec<String> {
    let s = idx.snapshot();
    let mut out = vec![format!("{:?}", s.counts())];
    out.extend(s.namespaces().map(|n| format!("ns {}", n.name)));
    for svc in s.services() {
        out.push(format!("{svc:?}"));
        for e in s.endpoints(&svc.namespace, &svc.name) {
            out.push(format!("  {e:?}"));
            out.push(format!(
                "  by ip {:?}",
                s.endpoints_by_ip(e.ip).collect::<Vec<_>>()
            ));
        }
        for ip in svc.cluster_ips() {
            let by: Vec<_> = s.services_by_ip(*ip).map(|x| &*x.name).collect();
            out.push(format!("  svc ip {ip} {by:?}"));
        }
    }
    for ns in s.namespaces() {
        // Pods are only reachable by name or address; probe the addresses of the fixture.
        for i in 0..=3u8 {
            for a in [
                format!("10.0.0.{i}"),
                format!("10.0.0.25{i}"),
                format!("10.0.1.{i}"),
            ] {
                let pods: Vec<_> = s
                    .pods_by_ip(ip(&a))
                    .filter(|p| *p.namespace == *ns.name)
                    .collect();
                if !pods.is_empty() {
                    out.push(format!("pods {a} {pods:?}"));
                }
            }
        }
    }
    out
}

/// A `kubectl get -o json`-style list: keys sorted (so `items` comes before `kind` and
/// `endpoints` before `kind`), a nested List, escaped strings, non-object items, other kinds
/// with fields the index's decoder would not accept, and every field the index reads.
const KUBECTL_LIST: &str = r#"{
 "apiVersion": "v1",
 "items": [
  {"apiVersion": "v1", "data": {"a": "b"}, "kind": "ConfigMap",
   "metadata": {"name": "cm", "namespace": "other"}, "spec": {"ports": "not-a-list"}},
  null, 5, "text",
  {"apiVersion": "v1", "kind": "Service",
   "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":\"\\\"b\"}"},
                "labels": {"app": "web"}, "name": "w\u0065b", "namespace": "prod"},
   "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
            "externalIPs": ["192.0.2.7"], "ipFamilies": ["IPv4", "IPv6"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                      {"name": "dns", "port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"}, "type": "LoadBalancer"},
   "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb.example"}]}}},
  {"addressType": "IPv4",
   "endpoints": [
     {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "hostname": "web-0",
      "nodeName": "node-a", "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "prod"},
      "zone": "Zone-1"},
     {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "nodeName": "node-b"},
     {"addresses": ["10.0.0.3", "bogus"], "conditions": {"ready": null},
      "targetRef": {"kind": "Node", "name": "n"}}
   ],
   "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
   "metadata": {"annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2024-01-01T00:00:00Z"},
                "labels": {"kubernetes.io/service-name": "web"}, "name": "web-x1", "namespace": "prod"},
   "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": null, "port": null}]},
  {"apiVersion": "v1", "items": [
     {"apiVersion": "v1", "kind": "Pod",
      "metadata": {"labels": {"z": "1", "a": "2"}, "name": "web-0", "namespace": "prod"},
      "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
      "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}},
     {"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "host-net", "namespace": "prod"},
      "status": {"podIP": "10.0.0.1"}},
     {"apiVersion": "v1", "kind": "Pod",
      "metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z", "name": "gone", "namespace": "prod"},
      "status": {"podIP": "10.0.0.3"}},
     {"kind": "Pod", "metadata": {"name": "edge", "namespace": "prod"},
      "status": {"podIPs": [{"ip": "10.0.0.255"}, {"ip": "10.0.1.0"}]}}
   ], "kind": "PodList"},
  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "empty-ns"}},
  {"kind": "Service", "metadata": {"name": "ext", "namespace": "prod"},
   "spec": {"externalName": "example.org", "type": "ExternalName"}},
  {"kind": "Service", "metadata": {"name": "h", "namespace": "prod"}, "spec": {"clusterIP": "None"}}
 ],
 "kind": "List",
 "metadata": {"resourceVersion": ""}
}"#;

#[test]
fn json_manifests_stream_into_the_same_index_as_apply_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.json");
    std::fs::write(&path, KUBECTL_LIST).unwrap();

    let streamed = Index::new_static();
    streamed
        .load_manifest_files(std::slice::from_ref(&path))
        .unwrap();
    let tree = Index::new_static();
    tree.apply_objects(load_manifests(std::slice::from_ref(&path)).unwrap())
        .unwrap();
    let got = dump(&streamed);
    assert_eq!(got, dump(&tree));

    let s = streamed.snapshot();
    let c = s.counts();
    assert_eq!((c.services, c.endpoints, c.pods), (3, 2, 3), "{c:?}");
    // `other` (ConfigMap only) is not implied; `empty-ns` is listed; `prod` is implied.
    let nss: Vec<_> = s.namespaces().map(|n| n.name.to_string()).collect();
    assert_eq!(nss, ["empty-ns", "prod"]);
    let web = s.service("prod", "web").expect("escaped name decoded");
    assert_eq!(web.cluster_ips(), [ip("10.96.0.20"), ip("fd00::20")]);
    assert_eq!(*web.external_ips, [ip("192.0.2.7"), ip("198.51.100.1")]);
    assert_eq!(
        &*web.external_hosts,
        [std::sync::Arc::<str>::from("lb.example")]
    );
    let by_ext: Vec<_> = s
        .services_by_external_ip(ip("198.51.100.1"))
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(by_ext, ["web"]);
    assert_eq!(s.ext_serial(), 0, "no service was updated");
    let ports: Vec<_> = web
        .ports
        .iter()
        .map(|p| (&*p.name, p.port, p.protocol.as_str()))
        .collect();
    assert_eq!(ports, [("http", 80, "TCP"), ("dns", 53, "UDP")]);
    assert!(s.service("prod", "h").unwrap().is_headless());
    let eps: Vec<_> = s.endpoints("prod", "web").collect();
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert_eq!(
        (
            eps[0].ip,
            eps[0].hostname,
            eps[0].pod_name,
            eps[0].node_name,
            eps[0].zone
        ),
        (
            ip("10.0.0.1"),
            Some("web-0"),
            Some("web-0"),
            Some("node-a"),
            Some("zone-1")
        )
    );
    assert_eq!((eps[1].ip, eps[1].pod_name), (ip("10.0.0.3"), None));
    let ports: Vec<_> = eps[0].ports.iter().map(|p| (&*p.name, p.port)).collect();
    assert_eq!(ports, [("http", 8080), ("", -1)]);
    // Two pods on one address: the first listed answers; the terminating pod is dropped.
    assert_eq!(&*s.pod_by_ip(ip("10.0.0.1")).unwrap().name, "web-0");
    assert_eq!(s.pods_by_ip(ip("10.0.0.1")).count(), 2);
    assert!(s.pod_by_ip(ip("10.0.0.3")).is_none());
    let labels: Vec<_> = s
        .pod("prod", "web-0")
        .unwrap()
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(labels, ["a=2", "z=1"]);
    // Addresses on both sides of a /24 boundary, and v4 vs v4-mapped v6.
    assert_eq!(&*s.pod_by_ip(ip("10.0.0.255")).unwrap().name, "edge");
    assert_eq!(&*s.pod_by_ip(ip("10.0.1.0")).unwrap().name, "edge");
    assert!(s.pod_by_ip(ip("10.0.1.1")).is_none());
    assert!(s.pod_by_ip(ip("::ffff:10.0.0.1")).is_none());
    assert_eq!(s.services_by_ip(ip("fd00::20")).count(), 1);
    assert!(s.services_by_ip(ip("fd00::21")).next().is_none());
    drop(s);

    // Removing one of two pods on an address keeps the other; the address group stays exact.
    tree.apply_objects(vec![pod("prod", "host-net").ip("10.0.0.1").build()])
        .unwrap();
    let s = tree.snapshot();
    assert_eq!(&*s.pod_by_ip(ip("10.0.0.1")).unwrap().name, "host-net");
    assert_eq!(s.pods_by_ip(ip("10.0.0.1")).count(), 1);
    assert!(s.pod_by_ip(ip("10.0.0.255")).is_none());
}

#[test]
fn manifest_files_check_everything_before_applying() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("a.json");
    std::fs::write(&good, KUBECTL_LIST).unwrap();
    let idx = Index::new_static();
    idx.load_manifest_files(std::slice::from_ref(&good))
        .unwrap();
    let before = dump(&idx);

    // A file that is not JSON: nothing of the good file is re-applied, nothing removed.
    let broken = dir.path().join("b.json");
    std::fs::write(&broken, r#"{"kind": "List", "items": [{"kind": "Service""#).unwrap();
    let err = idx
        .load_manifest_files(&[good.clone(), broken.clone()])
        .unwrap_err();
    assert!(err.to_string().contains("b.json"), "{err}");
    assert_eq!(dump(&idx), before);

    // Objects that do not decode are named; every other object is applied.
    std::fs::write(
        &broken,
        r#"{"kind": "List", "items": [
            {"apiVersion": "v2", "kind": "Service", "metadata": {"name": "wrong-version", "namespace": "x"}},
            {"kind": "Service", "metadata": {"name": "ok", "namespace": "x"}, "spec": {"clusterIP": "10.9.9.9"}}]}"#,
    )
    .unwrap();
    let err = idx
        .load_manifest_files(std::slice::from_ref(&broken))
        .unwrap_err();
    assert!(err.to_string().contains("wrong-version"), "{err}");
    let s = idx.snapshot();
    assert!(s.service("x", "ok").is_some());
    assert!(s.service("x", "wrong-version").is_none());
    assert!(
        s.service("prod", "web").is_none(),
        "the replaced file's objects are gone"
    );
    drop(s);
    std::fs::write(
        &broken,
        r#"[{"kind": "Pod", "metadata": {"name": "p", "namespace": "x"}, "status": {"podIP": 7}}]"#,
    )
    .unwrap();
    // A top-level array is not an object: nothing in it is read (as before).
    idx.load_manifest_files(&[broken]).unwrap();
    assert_eq!(idx.snapshot().counts().services, 0);
}

/// The by-name lookups (`namespace`, `service`, `lookup`, `endpoints`) agree with the ordered
/// listings through adds, replacements, slices that move to another service or name no service,
/// deletions and a namespace that goes away; a snapshot taken before keeps what it saw.
#[test]
fn name_lookups_follow_every_change() {
    // (namespace, service, slice) triples and the services that exist, per round.
    fn objects(round: usize) -> (Vec<serde_json::Value>, Vec<(String, String)>) {
        let mut objs = Vec::new();
        let mut services = Vec::new();
        for i in 0..400 {
            let ns = format!("ns{}", i % 5);
            if round == 1 && ns == "ns4" {
                continue; // the whole namespace is gone
            }
            let name = format!("svc{i}");
            if round == 0 || i % 3 != 0 {
                objs.push(
                    service(&ns, &name)
                        .cluster_ip(&format!("10.1.{}.{}", i / 250, i % 250))
                        .port("p", 80, "TCP")
                        .build(),
                );
                services.push((ns.clone(), name.clone()));
            }
            // Round 1 moves the slices of every fourth service to "other{i}" (no service).
            let owner = if round == 1 && i % 4 == 0 {
                format!("other{i}")
            } else {
                name.clone()
            };
            for k in 0..1 + i % 2 {
                if round == 1 && i % 7 == 0 && k == 0 {
                    continue; // a slice deleted
                }
                objs.push(
                    endpoint_slice(&ns, &format!("{name}-{k}"), &owner)
                        .endpoint(endpoint(&format!("10.2.{}.{}", i / 100, 2 * (i % 100) + k)))
                        .port("p", 80, "TCP")
                        .build(),
                );
            }
        }
        (objs, services)
    }
    let idx = Index::new_static();
    let mut before = None;
    for round in 0..2 {
        let (objs, want) = objects(round);
        idx.apply_objects(objs).unwrap();
        let s = idx.snapshot();
        let listed: Vec<(String, String)> = s
            .services()
            .map(|v| (v.namespace.to_string(), v.name.to_string()))
            .collect();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "round {round}");
        for i in 0..400 {
            let ns = format!("ns{}", i % 5);
            let name = format!("svc{i}");
            let exists = want.contains(&(ns.clone(), name.clone()));
            assert_eq!(s.namespace(&ns).is_some(), round == 0 || i % 5 != 4);
            let svc = s.service(&ns, &name);
            assert_eq!(svc.is_some(), exists, "{ns}/{name} round {round}");
            if let Some(v) = svc {
                assert_eq!((&*v.namespace, &*v.name), (ns.as_str(), name.as_str()));
            }
            // Endpoints by name: the slices that name it, wherever they came from.
            let mut eps: Vec<IpAddr> = s.endpoints(&ns, &name).map(|e| e.ip).collect();
            let mut want_eps: Vec<IpAddr> = Vec::new();
            let gone = round == 1 && i % 5 == 4;
            let moved = round == 1 && i % 4 == 0;
            for k in 0..1 + i % 2 {
                let deleted = round == 1 && i % 7 == 0 && k == 0;
                if !(gone || moved || deleted) {
                    want_eps.push(ip(&format!("10.2.{}.{}", i / 100, 2 * (i % 100) + k)));
                }
            }
            eps.sort();
            assert_eq!(eps, want_eps, "{ns}/{name} round {round}");
            let entry = s.lookup(&ns, &name);
            assert_eq!(entry.is_some(), exists || !want_eps.is_empty());
            if let Some(e) = entry {
                assert_eq!(e.service().map(|v| &*v.name), svc.map(|v| &*v.name));
                assert_eq!(e.endpoints().count(), want_eps.len());
            }
            // Slices that name no service are found by that name.
            let other = format!("other{i}");
            let orphan = s.lookup(&ns, &other);
            let kept = (0..1 + i % 2).filter(|k| !(i % 7 == 0 && *k == 0)).count();
            assert_eq!(orphan.is_some(), moved && !gone && kept > 0, "{ns}/{other}");
            if let Some(o) = orphan {
                assert!(o.service().is_none());
                assert!(o.endpoints().count() >= 1);
            }
            // Another namespace's name is not this one's.
            assert!(s.service(&format!("ns{}", (i + 1) % 5), &name).is_none());
        }
        if round == 0 {
            before = Some(s.clone());
        }
    }
    // The first round's snapshot is unchanged by the second.
    let s0 = before.unwrap();
    assert!(s0.namespace("ns4").is_some());
    assert!(s0.service("ns0", "svc0").is_some());
    assert_eq!(s0.endpoints("ns0", "svc0").count(), 1);
    assert_eq!(s0.services().count(), 400);
}
