//! Narrow decoding of the indexed kinds (and the MCS API's ServiceImport): typed views with only the fields the index
//! reads, borrowing strings from the input where it can (JSON text, `serde_json::Value`, or the
//! k8s-openapi types of the watch path), and streaming of `List` items out of JSON text
//! without building a `serde_json::Value` tree. No I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Pod as K8sPod, Service as K8sService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::fold::TRIGGER_TIME_ANNOTATION;

/// A string borrowed from the input when it has no escapes, owned otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Str<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Str(Cow::Borrowed(s))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

fn s(o: &Option<String>) -> Option<Str<'_>> {
    o.as_deref().map(Str::from)
}

fn strs(o: &Option<Vec<String>>) -> Option<Vec<Str<'_>>> {
    o.as_ref()
        .map(|v| v.iter().map(|x| Str::from(x.as_str())).collect())
}

/// The value of the programming-latency annotation, other annotations skipped unread.
#[derive(Debug, Default)]
pub(crate) struct Trigger<'a>(pub Option<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Trigger<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Trigger<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Trigger<'de>, A::Error> {
                let mut out = None;
                while let Some(k) = m.next_key::<Str<'de>>()? {
                    if &*k == TRIGGER_TIME_ANNOTATION {
                        out = m.next_value::<Option<Str<'de>>>()?;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Trigger(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The parts of `metadata` the index reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Meta<'a> {
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow)]
    pub labels: Option<BTreeMap<Str<'a>, Str<'a>>>,
    #[serde(borrow)]
    pub annotations: Option<Trigger<'a>>,
    pub deletion_timestamp: Option<IgnoredAny>,
}

impl Meta<'_> {
    pub(crate) fn label(&self, k: &str) -> Option<&str> {
        self.labels.as_ref()?.get(k).map(|v| &**v)
    }

    pub(crate) fn trigger(&self) -> Option<&str> {
        self.annotations.as_ref()?.0.as_deref()
    }

    fn of(m: &ObjectMeta) -> Meta<'_> {
        Meta {
            name: s(&m.name),
            namespace: s(&m.namespace),
            labels: m.labels.as_ref().map(|l| {
                l.iter()
                    .map(|(k, v)| (Str::from(k.as_str()), Str::from(v.as_str())))
                    .collect()
            }),
            annotations: m.annotations.as_ref().map(|a| {
                Trigger(
                    a.get(TRIGGER_TIME_ANNOTATION)
                        .map(|v| Str::from(v.as_str())),
                )
            }),
            deletion_timestamp: m.deletion_timestamp.as_ref().map(|_| IgnoredAny),
        }
    }
}

/// A port of a Service or an EndpointSlice.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PortIn<'a> {
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    pub port: Option<i32>,
    #[serde(borrow)]
    pub protocol: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ServiceSpec<'a> {
    #[serde(borrow, rename = "type")]
    pub type_: Option<Str<'a>>,
    #[serde(borrow, rename = "clusterIP")]
    pub cluster_ip: Option<Str<'a>>,
    #[serde(borrow, rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    pub external_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub ports: Option<Vec<PortIn<'a>>>,
    #[serde(borrow, rename = "externalIPs")]
    pub external_ips: Option<Vec<Str<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Ingress<'a> {
    #[serde(borrow)]
    pub ip: Option<Str<'a>>,
    #[serde(borrow)]
    pub hostname: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LoadBalancer<'a> {
    #[serde(borrow)]
    pub ingress: Option<Vec<Ingress<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ServiceStatus<'a> {
    #[serde(borrow)]
    pub load_balancer: Option<LoadBalancer<'a>>,
}

/// A Service, as far as DNS reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ServiceIn<'a> {
    #[serde(borrow)]
    pub api_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub metadata: Meta<'a>,
    #[serde(borrow)]
    pub spec: Option<ServiceSpec<'a>>,
    #[serde(borrow)]
    pub status: Option<ServiceStatus<'a>>,
}

impl<'a> From<&'a K8sService> for ServiceIn<'a> {
    fn from(k: &'a K8sService) -> Self {
        ServiceIn {
            api_version: None,
            metadata: Meta::of(&k.metadata),
            spec: k.spec.as_ref().map(|sp| ServiceSpec {
                type_: s(&sp.type_),
                cluster_ip: s(&sp.cluster_ip),
                cluster_ips: strs(&sp.cluster_ips),
                external_name: s(&sp.external_name),
                ports: sp.ports.as_ref().map(|ps| {
                    ps.iter()
                        .map(|p| PortIn {
                            name: s(&p.name),
                            port: Some(p.port),
                            protocol: s(&p.protocol),
                        })
                        .collect()
                }),
                external_ips: strs(&sp.external_ips),
            }),
            status: k.status.as_ref().map(|st| ServiceStatus {
                load_balancer: st.load_balancer.as_ref().map(|lb| LoadBalancer {
                    ingress: lb.ingress.as_ref().map(|v| {
                        v.iter()
                            .map(|i| Ingress {
                                ip: s(&i.ip),
                                hostname: s(&i.hostname),
                            })
                            .collect()
                    }),
                }),
            }),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Conditions {
    pub ready: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TargetRef<'a> {
    #[serde(borrow)]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct EndpointIn<'a> {
    #[serde(borrow)]
    pub addresses: Option<Vec<Str<'a>>>,
    pub conditions: Option<Conditions>,
    #[serde(borrow)]
    pub hostname: Option<Str<'a>>,
    #[serde(borrow)]
    pub target_ref: Option<TargetRef<'a>>,
    #[serde(borrow)]
    pub node_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub zone: Option<Str<'a>>,
}

/// An EndpointSlice, as far as DNS reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SliceIn<'a> {
    #[serde(borrow)]
    pub api_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub metadata: Meta<'a>,
    #[serde(borrow)]
    pub endpoints: Option<Vec<EndpointIn<'a>>>,
    #[serde(borrow)]
    pub ports: Option<Vec<PortIn<'a>>>,
}

impl<'a> From<&'a EndpointSlice> for SliceIn<'a> {
    fn from(k: &'a EndpointSlice) -> Self {
        SliceIn {
            api_version: None,
            metadata: Meta::of(&k.metadata),
            endpoints: Some(
                k.endpoints
                    .iter()
                    .map(|e| EndpointIn {
                        addresses: Some(
                            e.addresses.iter().map(|a| Str::from(a.as_str())).collect(),
                        ),
                        conditions: e.conditions.as_ref().map(|c| Conditions { ready: c.ready }),
                        hostname: s(&e.hostname),
                        target_ref: e.target_ref.as_ref().map(|r| TargetRef {
                            kind: s(&r.kind),
                            name: s(&r.name),
                        }),
                        node_name: s(&e.node_name),
                        zone: s(&e.zone),
                    })
                    .collect(),
            ),
            ports: k.ports.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| PortIn {
                        name: s(&p.name),
                        port: p.port,
                        protocol: s(&p.protocol),
                    })
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PodIp<'a> {
    #[serde(borrow)]
    pub ip: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PodStatus<'a> {
    #[serde(borrow, rename = "podIP")]
    pub pod_ip: Option<Str<'a>>,
    #[serde(borrow, rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp<'a>>>,
}

/// A Pod, as far as DNS reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PodIn<'a> {
    #[serde(borrow)]
    pub api_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub metadata: Meta<'a>,
    #[serde(borrow)]
    pub status: Option<PodStatus<'a>>,
}

impl<'a> From<&'a K8sPod> for PodIn<'a> {
    fn from(k: &'a K8sPod) -> Self {
        PodIn {
            api_version: None,
            metadata: Meta::of(&k.metadata),
            status: k.status.as_ref().map(|st| PodStatus {
                pod_ip: s(&st.pod_ip),
                pod_ips: st.pod_ips.as_ref().map(|v| {
                    v.iter()
                        .map(|i| PodIp {
                            ip: Some(Str::from(i.ip.as_str())),
                        })
                        .collect()
                }),
            }),
        }
    }
}

/// A Namespace: only its name.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct NamespaceIn<'a> {
    #[serde(borrow)]
    pub api_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub metadata: Meta<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ImportSpec<'a> {
    #[serde(borrow, rename = "type")]
    pub type_: Option<Str<'a>>,
    #[serde(borrow)]
    pub ips: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    pub ports: Option<Vec<PortIn<'a>>>,
}

/// A ServiceImport (`multicluster.x-k8s.io/v1alpha1`), as far as DNS reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ImportIn<'a> {
    #[serde(borrow)]
    pub api_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub metadata: Meta<'a>,
    #[serde(borrow)]
    pub spec: Option<ImportSpec<'a>>,
}

/// The owned ServiceImport the watcher decodes (the MCS API has no k8s-openapi type): only the
/// fields DNS reads, everything else skipped while parsing.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct K8sServiceImport {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<K8sImportSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct K8sImportSpec {
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub ips: Option<Vec<String>>,
    #[serde(default)]
    pub ports: Option<Vec<K8sImportPort>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct K8sImportPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
    #[serde(default)]
    pub protocol: Option<String>,
}

impl kube::Resource for K8sServiceImport {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;
    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("ServiceImport")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(MCS_GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1alpha1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("serviceimports")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// API group of the Multi-Cluster Services API.
pub(crate) const MCS_GROUP: &str = "multicluster.x-k8s.io";
/// `apiVersion` of ServiceImports.
pub(crate) const MCS_API_VERSION: &str = "multicluster.x-k8s.io/v1alpha1";

impl<'a> From<&'a K8sServiceImport> for ImportIn<'a> {
    fn from(k: &'a K8sServiceImport) -> Self {
        ImportIn {
            api_version: None,
            metadata: Meta::of(&k.metadata),
            spec: k.spec.as_ref().map(|sp| ImportSpec {
                type_: s(&sp.type_),
                ips: strs(&sp.ips),
                ports: sp.ports.as_ref().map(|ps| {
                    ps.iter()
                        .map(|p| PortIn {
                            name: s(&p.name),
                            port: p.port,
                            protocol: s(&p.protocol),
                        })
                        .collect()
                }),
            }),
        }
    }
}

/// One decoded object of an indexed kind.
pub(crate) enum Obj<'a> {
    Service(ServiceIn<'a>),
    Slice(SliceIn<'a>),
    Pod(PodIn<'a>),
    Namespace(NamespaceIn<'a>),
    Import(ImportIn<'a>),
}

/// Why an object of an indexed kind does not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The deserializer's message.
    #[error("{0}")]
    Format(String),
    /// `apiVersion` is not the one of the kind (the k8s-openapi decoder's text).
    #[error("invalid value: string {got:?}, expected {want}")]
    Version { got: String, want: &'static str },
}

/// The API version each kind must carry when it names one (as the k8s-openapi decoder checks).
fn check_version(kind: &str, v: Option<&Str<'_>>) -> Result<(), DecodeError> {
    let want = match kind {
        "EndpointSlice" => "discovery.k8s.io/v1",
        "ServiceImport" => MCS_API_VERSION,
        _ => "v1",
    };
    match v {
        Some(v) if &**v != want => Err(DecodeError::Version {
            got: (**v).to_string(),
            want,
        }),
        _ => Ok(()),
    }
}

/// Decodes an object of `kind` from any deserializer; `Ok(None)` for kinds the index ignores.
pub(crate) fn decode<'de, D>(kind: &str, d: D) -> Result<Option<Obj<'de>>, DecodeError>
where
    D: Deserializer<'de>,
    D::Error: fmt::Display,
{
    let e = |e: D::Error| DecodeError::Format(e.to_string());
    let o = match kind {
        "Service" => Obj::Service(ServiceIn::deserialize(d).map_err(e)?),
        "EndpointSlice" => Obj::Slice(SliceIn::deserialize(d).map_err(e)?),
        "Pod" => Obj::Pod(PodIn::deserialize(d).map_err(e)?),
        "Namespace" => Obj::Namespace(NamespaceIn::deserialize(d).map_err(e)?),
        "ServiceImport" => Obj::Import(ImportIn::deserialize(d).map_err(e)?),
        _ => return Ok(None),
    };
    let v = match &o {
        Obj::Service(x) => x.api_version.as_ref(),
        Obj::Slice(x) => x.api_version.as_ref(),
        Obj::Pod(x) => x.api_version.as_ref(),
        Obj::Namespace(x) => x.api_version.as_ref(),
        Obj::Import(x) => x.api_version.as_ref(),
    };
    check_version(kind, v)?;
    Ok(Some(o))
}

/// `kind` and `items` of an object in JSON text, both left unparsed.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    items: Option<&'a RawValue>,
}

/// `metadata.name` only (for error messages).
#[derive(Deserialize)]
struct NameOnly<'a> {
    #[serde(borrow, default)]
    metadata: Option<MetaName<'a>>,
}

#[derive(Deserialize)]
struct MetaName<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// Walks JSON text holding one object or a (nested) `List` of them and hands each object of
/// an indexed kind to `f`, decoded straight from the text: no `serde_json::Value` tree is
/// built. Non-objects and other kinds are skipped, like [`crate::load_manifests`] does.
/// `Err` only when the text is not JSON; objects that fail to decode go to `bad`
/// (name, reason) and the walk goes on.
pub(crate) fn walk_json<'a>(
    raw: &'a RawValue,
    f: &mut dyn FnMut(Obj<'a>),
    bad: &mut dyn FnMut(String, String),
) -> Result<(), serde_json::Error> {
    if !is_object(raw) {
        return Ok(());
    }
    let head: Head<'a> = serde_json::from_str(raw.get())?;
    let kind: Option<Str<'a>> = head.kind.and_then(|k| {
        serde_json::from_str::<Option<Str<'a>>>(k.get())
            .ok()
            .flatten()
    });
    let kind = kind.as_deref().unwrap_or("");
    if kind.ends_with("List") {
        if let Some(items) = head.items.filter(|i| i.get().trim_start().starts_with('[')) {
            let items: Vec<&'a RawValue> = serde_json::from_str(items.get())?;
            for it in items {
                walk_json(it, f, bad)?;
            }
        }
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match decode(kind, &mut de) {
        Ok(Some(o)) => f(o),
        Ok(None) => {}
        Err(reason) => {
            let name = serde_json::from_str::<NameOnly<'_>>(raw.get())
                .ok()
                .and_then(|n| n.metadata)
                .and_then(|m| m.name)
                .map_or_else(|| "?".to_string(), |n| n.0.into_owned());
            bad(name, reason.to_string());
        }
    }
    Ok(())
}

/// Like [`walk_json`] for a `serde_json::Value` (YAML documents, [`crate::Index::apply_objects`]).
pub(crate) fn walk_value<'a>(
    v: &'a serde_json::Value,
    f: &mut dyn FnMut(Obj<'a>),
    bad: &mut dyn FnMut(String, String),
) {
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind.ends_with("List") {
        if let Some(items) = v.get("items").and_then(|i| i.as_array()) {
            for it in items {
                walk_value(it, f, bad);
            }
        }
        return;
    }
    if !v.is_object() {
        return;
    }
    match decode(kind, v) {
        Ok(Some(o)) => f(o),
        Ok(None) => {}
        Err(reason) => {
            let name = v
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("?")
                .to_string();
            bad(name, reason.to_string());
        }
    }
}
