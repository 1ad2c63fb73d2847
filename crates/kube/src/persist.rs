//! The `snapshot FILE` option: writes the index as a Kubernetes `List` JSON (atomically, temp
//! file + rename, at a bounded rate) and loads it back at start. File I/O only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::index::Index;
use crate::model::{Port, ServiceKind, Source};
use crate::snapshot::Snapshot;
use crate::Error;

fn ports(ps: &[Port]) -> Value {
    Value::Array(
        ps.iter()
            .filter(|p| !p.is_sentinel())
            .map(|p| json!({"name": &*p.name, "port": p.port, "protocol": p.protocol.as_str()}))
            .collect(),
    )
}

/// Renders a snapshot as Kubernetes objects (what `apply_objects` reads back), one at a time.
pub(crate) fn for_each_object(s: &Snapshot, out: &mut dyn FnMut(Value)) {
    let mut out = Emit(out);
    for ns in s.namespaces() {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": &*ns.name}}));
    }
    for svc in s.services() {
        let mut spec = json!({"ports": ports(&svc.ports)});
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => {
                let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                if let Some(f) = ips.first() {
                    spec["clusterIP"] = json!(f);
                }
                spec["clusterIPs"] = json!(ips);
            }
            ServiceKind::Headless => spec["clusterIP"] = json!("None"),
            ServiceKind::ExternalName(t) => {
                spec["type"] = json!("ExternalName");
                spec["externalName"] = json!(&**t);
            }
        }
        if !svc.external_ips.is_empty() {
            spec["externalIPs"] = json!(svc
                .external_ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>());
        }
        let mut obj = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": &*svc.namespace, "name": &*svc.name}, "spec": spec});
        if !svc.external_hosts.is_empty() {
            let ing: Vec<Value> = svc
                .external_hosts
                .iter()
                .map(|h| json!({"hostname": &**h}))
                .collect();
            obj["status"] = json!({"loadBalancer": {"ingress": ing}});
        }
        out.push(obj);
    }
    for imp in s.service_imports() {
        let mut spec = json!({"type": if imp.headless { "Headless" } else { "ClusterSetIP" },
            "ports": ports(&imp.ports)});
        if !imp.ips.is_empty() {
            spec["ips"] = json!(imp.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>());
        }
        out.push(
            json!({"apiVersion": crate::decode::MCS_API_VERSION, "kind": "ServiceImport",
            "metadata": {"namespace": &*imp.namespace, "name": &*imp.name}, "spec": spec}),
        );
    }
    // A slice carrying both service-name labels is in both maps: written once, with both
    // labels (it is the same object).
    let mut both: std::collections::HashMap<(&str, &str), Option<&str>> = s
        .mc_slices
        .values()
        .flat_map(|m| m.values())
        .flat_map(|l| l.values())
        .map(|sl| ((&*sl.namespace, &*sl.name), None))
        .collect();
    for (mc, map) in [(false, &s.slices), (true, &s.mc_slices)] {
        for (_, by_svc) in map.iter() {
            for (_, slices) in by_svc.iter() {
                for sl in slices.values() {
                    if !mc {
                        if let Some(local) = both.get_mut(&(&*sl.namespace, &*sl.name)) {
                            *local = Some(&*sl.service);
                            continue;
                        }
                    }
                    let eps: Vec<Value> = sl
                    .endpoints
                    .iter()
                    .map(|e| {
                        let mut v =
                            json!({"addresses": [sl.ip(e).to_string()], "conditions": {"ready": true}});
                        let r = e.as_ref(sl);
                        if let Some(h) = r.hostname {
                            v["hostname"] = json!(h);
                        }
                        if let Some(n) = r.node_name {
                            v["nodeName"] = json!(n);
                        }
                        if let Some(z) = r.zone {
                            v["zone"] = json!(z);
                        }
                        if let Some(p) = r.pod_name {
                            v["targetRef"] = json!({"kind": "Pod", "name": p});
                        }
                        v
                    })
                    .collect();
                    let labels = if mc {
                        let mut l = json!({crate::MC_SERVICE_NAME_LABEL: &*sl.service,
                        crate::MC_SOURCE_CLUSTER_LABEL: sl.mc_cluster()});
                        if let Some(Some(local)) = both.get(&(&*sl.namespace, &*sl.name)) {
                            l[crate::SERVICE_NAME_LABEL] = json!(local);
                        }
                        l
                    } else {
                        json!({crate::SERVICE_NAME_LABEL: &*sl.service})
                    };
                    out.push(
                        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"namespace": &*sl.namespace, "name": &*sl.name,
                        "labels": labels},
                    "addressType": "IPv4", "endpoints": eps, "ports": ports(&sl.ports)}),
                    );
                }
            }
        }
    }
    for (_, pods) in s.pods.iter() {
        for (_, p) in pods.iter() {
            let labels: serde_json::Map<String, Value> = p
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), json!(&**v)))
                .collect();
            let ips: Vec<Value> = p.ips.iter().map(|i| json!({"ip": i.to_string()})).collect();
            out.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": &*p.namespace, "name": &*p.name, "labels": labels},
                "status": {"podIPs": ips}}));
        }
    }
}

struct Emit<'a>(&'a mut dyn FnMut(Value));

impl Emit<'_> {
    fn push(&mut self, v: Value) {
        (self.0)(v)
    }
}

/// Writes the snapshot as one Kubernetes `List` to a temporary file, object by object (no
/// tree of the whole list is built), then renames it over `path`.
fn write_atomic(path: &Path, s: &Snapshot) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(br#"{"apiVersion":"v1","kind":"List","items":["#)?;
    let mut first = true;
    let mut failed = None;
    for_each_object(s, &mut |v| {
        if failed.is_some() {
            return;
        }
        let r = (if first { Ok(()) } else { w.write_all(b",") })
            .and_then(|()| serde_json::to_writer(&mut w, &v).map_err(std::io::Error::other));
        first = false;
        if let Err(e) = r {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    w.write_all(b"]}")?;
    w.into_inner().map_err(|e| e.into_error())?;
    std::fs::rename(&tmp, path)
}

impl Index {
    /// Writes the current snapshot to `path` now.
    pub fn write_snapshot(&self, path: &Path) -> Result<(), Error> {
        write_atomic(path, &self.snapshot()).map_err(|e| Error::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Writes the index to `path` after every change, at most once per `min_interval`, until
    /// [`Index::stop`] (only once synced, so a partial list is never persisted).
    pub fn persist_to(&self, path: PathBuf, min_interval: Duration) {
        let idx = self.clone();
        let mut changes = self.subscribe();
        tokio::spawn(async move {
            let mut stop = idx.shared.stop_tx.subscribe();
            let mut synced = idx.shared.synced_tx.subscribe();
            let mut dirty = idx.synced();
            loop {
                if dirty && idx.synced() {
                    let p = path.clone();
                    let i = idx.clone();
                    let res = tokio::task::spawn_blocking(move || i.write_snapshot(&p)).await;
                    match res {
                        Ok(Err(e)) => tracing::warn!("plugin/kubernetes: snapshot: {e}"),
                        Err(e) => tracing::warn!("plugin/kubernetes: snapshot: {e}"),
                        Ok(Ok(())) => {}
                    }
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(min_interval) => {}
                    }
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    // The last list to finish may change nothing, yet completes the sync.
                    r = synced.changed(), if !*synced.borrow() => {
                        if r.is_err() {
                            return;
                        }
                        dirty = true;
                    }
                    r = changes.recv() => match r {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dirty = true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
    }

    /// Loads a snapshot written by [`Index::persist_to`] so last-known data can be served while
    /// the API server is unreachable at start. Call it before the watchers start (see
    /// [`crate::WatchOptions::snapshot`]). The index then counts as synced (answers, NXDOMAIN
    /// included, come from the snapshot) with source `Snapshot`, until every watcher completed
    /// a list from the API and the source becomes `Api`.
    pub fn load_snapshot(&self, path: &Path) -> Result<(), Error> {
        let file = crate::manifests::read_file(path)?;
        self.set_source(Source::Snapshot);
        self.write(|w| {
            file.walk(
                &mut |o| {
                    w.upsert_obj(&o);
                },
                &mut |_, _| {},
            );
        });
        drop(file);
        crate::release_memory();
        self.mark_synced();
        Ok(())
    }
}
