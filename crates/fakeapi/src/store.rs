//! The fake API server's object store: objects, the global resourceVersion counter and the
//! retained watch-event history. Pure data structure: no I/O, no locking (the caller locks).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::selector::{FieldSelector, LabelSelector};

/// The resource kinds the fake API server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1 Service`
    Service,
    /// `discovery.k8s.io/v1 EndpointSlice`
    EndpointSlice,
    /// `v1 Pod`
    Pod,
    /// `v1 Namespace` (cluster-scoped)
    Namespace,
    /// `multicluster.x-k8s.io/v1alpha1 ServiceImport` (the MCS API)
    ServiceImport,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 5] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::ServiceImport,
    ];

    /// The `kind` field value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ServiceImport => "ServiceImport",
        }
    }

    /// The plural resource name used in URLs.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::ServiceImport => "serviceimports",
        }
    }

    /// The `apiVersion` field value.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::ServiceImport => "multicluster.x-k8s.io/v1alpha1",
            _ => "v1",
        }
    }

    /// Parses a `kind` field value.
    pub fn from_kind(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Parses a plural resource name.
    pub fn from_resource(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.resource() == s)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object replaced.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One retained event.
#[derive(Debug, Clone)]
pub struct Event {
    /// resourceVersion assigned by this event.
    pub rv: u64,
    /// Kind of the object.
    pub kind: Kind,
    /// Event type.
    pub ty: EventType,
    /// The object as of this event.
    pub object: Arc<Value>,
    /// The object before this event (MODIFIED only), to turn selector transitions into
    /// ADDED/DELETED as the real API server does.
    pub prev: Option<Arc<Value>>,
}

impl Event {
    /// The newline-terminated JSON line sent on a watch stream.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(&json!({"type": self.ty.as_str(), "object": &*self.object}))
            .unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Key of a stored object: (kind, namespace or "", name).
pub type Key = (Kind, String, String);

/// Filters applied by a list or watch request.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Restrict to one namespace.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether `obj` passes the filter.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str()) {
                return false;
            }
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// Error from a store mutation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `kind` missing or not one of the served kinds.
    #[error("object kind {0:?} is not served")]
    UnknownKind(String),
    /// `metadata.name` missing.
    #[error("object has no metadata.name")]
    NoName,
    /// Namespaced object without `metadata.namespace`.
    #[error("namespaced object has no metadata.namespace")]
    NoNamespace,
}

/// Objects, resourceVersion counter and event history.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    floor: u64,
    max_history: usize,
    /// While set, mutations are not recorded in the history (a simulated gap).
    pub skip_events: bool,
}

impl Store {
    /// Empty store; rv starts at 1000 so "0" and small numbers are distinguishable.
    pub fn new(max_history: usize) -> Self {
        Self {
            rv: 1000,
            uid: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 1000,
            max_history: max_history.max(1),
            skip_events: false,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    fn record(&mut self, kind: Kind, ty: EventType, object: Arc<Value>, prev: Option<Arc<Value>>) {
        if self.skip_events {
            return;
        }
        self.history.push_back(Event {
            rv: self.rv,
            kind,
            ty,
            object,
            prev,
        });
        while self.history.len() > self.max_history {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.rv;
            }
        }
    }

    /// Creates or replaces an object; assigns resourceVersion (and uid on create).
    pub fn apply(&mut self, mut obj: Value) -> Result<Arc<Value>, StoreError> {
        let kind_s = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let kind = Kind::from_kind(kind_s).ok_or_else(|| StoreError::UnknownKind(kind_s.into()))?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or(StoreError::NoName)?
            .to_string();
        let ns = if kind.namespaced() {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .ok_or(StoreError::NoNamespace)?
                .to_string()
        } else {
            String::new()
        };
        let key = (kind, ns, name);
        self.rv += 1;
        let prev = self.objects.get(&key).cloned();
        let old_uid = prev
            .as_ref()
            .and_then(|o| o.pointer("/metadata/uid").cloned());
        let ty = if old_uid.is_some() || self.objects.contains_key(&key) {
            EventType::Modified
        } else {
            EventType::Added
        };
        let uid = match old_uid {
            Some(u) => u,
            None => {
                self.uid += 1;
                Value::String(format!("00000000-0000-4000-8000-{:012x}", self.uid))
            }
        };
        if obj.get("apiVersion").is_none() {
            obj["apiVersion"] = Value::String(kind.api_version().into());
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(self.rv.to_string()));
            meta.insert("uid".into(), uid);
            meta.entry("creationTimestamp")
                .or_insert_with(|| Value::String("2024-01-01T00:00:00Z".into()));
        }
        let obj = Arc::new(obj);
        self.objects.insert(key, obj.clone());
        self.record(kind, ty, obj.clone(), prev);
        Ok(obj)
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> bool {
        let key = (kind, ns.to_string(), name.to_string());
        let Some(old) = self.objects.remove(&key) else {
            return false;
        };
        self.rv += 1;
        let mut obj = (*old).clone();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        }
        self.record(kind, EventType::Deleted, Arc::new(obj), None);
        true
    }

    /// Forgets all history: a watch from any resourceVersion before now gets 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// Objects of `kind` matching `filter`, in (namespace, name) order, starting strictly after
    /// `after` (a (namespace, name) pair), at most `limit` (0 = all). Returns the page and whether
    /// more remain.
    pub fn list(
        &self,
        kind: Kind,
        filter: &Filter,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> (Vec<Arc<Value>>, bool) {
        let start = match after {
            Some((ns, name)) => std::ops::Bound::Excluded((kind, ns.to_string(), name.to_string())),
            None => std::ops::Bound::Included((kind, String::new(), String::new())),
        };
        let mut out = Vec::new();
        let mut more = false;
        for ((k, _, _), obj) in self.objects.range((start, std::ops::Bound::Unbounded)) {
            if *k != kind {
                break;
            }
            if !filter.matches(obj) {
                continue;
            }
            if limit > 0 && out.len() == limit {
                more = true;
                break;
            }
            out.push(obj.clone());
        }
        (out, more)
    }

    /// Events of `kind` matching `filter` with rv > `since`. `Err(())` when `since` is older than
    /// the retained history (410 Gone).
    #[allow(clippy::result_unit_err)]
    pub fn events_since(&self, kind: Kind, filter: &Filter, since: u64) -> Result<Vec<Event>, ()> {
        if since < self.floor {
            return Err(());
        }
        let first = self.history.partition_point(|e| e.rv <= since);
        // Like the API server: an object entering the selection is ADDED, one leaving it is
        // DELETED (with its new state).
        Ok(self
            .history
            .range(first..)
            .filter(|e| e.kind == kind)
            .filter_map(|e| {
                let now = filter.matches(&e.object);
                let before = e.prev.as_ref().is_some_and(|p| filter.matches(p));
                match (e.ty, now, before) {
                    (EventType::Modified, true, false) => Some(Event {
                        ty: EventType::Added,
                        ..e.clone()
                    }),
                    (EventType::Modified, false, true) => Some(Event {
                        ty: EventType::Deleted,
                        ..e.clone()
                    }),
                    (_, true, _) => Some(e.clone()),
                    _ => None,
                }
            })
            .collect())
    }

    /// Number of stored objects of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.objects.keys().filter(|(k, _, _)| *k == kind).count()
    }

    /// Looks up one object.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> Value {
        json!({"kind": "Service", "metadata": {"namespace": "ns", "name": name}})
    }

    #[test]
    fn apply_assigns_rv_and_events() {
        let mut s = Store::new(10);
        let a = s.apply(svc("a")).unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "1001");
        let a2 = s.apply(svc("a")).unwrap();
        assert_eq!(a2["metadata"]["uid"], a["metadata"]["uid"]);
        assert!(s.delete(Kind::Service, "ns", "a"));
        assert!(!s.delete(Kind::Service, "ns", "a"));
        let ev = s
            .events_since(Kind::Service, &Filter::default(), 1000)
            .unwrap();
        let tys: Vec<_> = ev.iter().map(|e| e.ty).collect();
        assert_eq!(
            tys,
            vec![EventType::Added, EventType::Modified, EventType::Deleted]
        );
        s.compact();
        assert!(s
            .events_since(Kind::Service, &Filter::default(), 1002)
            .is_err());
        assert!(s
            .events_since(Kind::Service, &Filter::default(), 1003)
            .is_ok());
        assert!(s.apply(json!({"kind": "Foo"})).is_err());
    }

    #[test]
    fn history_bound_moves_floor() {
        let mut s = Store::new(2);
        for i in 0..5 {
            s.apply(svc(&format!("s{i}"))).unwrap();
        }
        assert!(s
            .events_since(Kind::Service, &Filter::default(), 1001)
            .is_err());
        assert_eq!(
            s.events_since(Kind::Service, &Filter::default(), 1003)
                .unwrap()
                .len(),
            2
        );
    }
}
