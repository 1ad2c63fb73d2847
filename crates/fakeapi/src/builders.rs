//! Typed builders that produce Kubernetes objects as `serde_json::Value` for tests.
//! Pure constructors: no I/O. Tests may also hand-write odd or malformed objects instead.

use serde_json::{json, Map, Value};

fn meta(ns: Option<&str>, name: &str, labels: &Map<String, Value>) -> Value {
    let mut m = json!({"name": name});
    if let Some(ns) = ns {
        m["namespace"] = Value::String(ns.into());
    }
    if !labels.is_empty() {
        m["labels"] = Value::Object(labels.clone());
    }
    m
}

/// A service port.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// Port name ("" for unnamed).
    pub name: String,
    /// Port number.
    pub port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

fn ports_json(ports: &[PortSpec]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut v = json!({"port": p.port, "protocol": p.protocol});
                if !p.name.is_empty() {
                    v["name"] = Value::String(p.name.clone());
                }
                v
            })
            .collect(),
    )
}

/// Builder for a `v1 Service`.
#[derive(Debug, Clone)]
pub struct ServiceBuilder {
    ns: String,
    name: String,
    cluster_ips: Vec<String>,
    headless: bool,
    external_name: Option<String>,
    external_ips: Vec<String>,
    /// LoadBalancer ingress entries: (ip, hostname).
    ingress: Vec<(Option<String>, Option<String>)>,
    ports: Vec<PortSpec>,
    labels: Map<String, Value>,
    publish_not_ready: bool,
    ip_families: Vec<String>,
}

/// Starts a Service builder (type ClusterIP, no IP until set).
pub fn service(ns: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder {
        ns: ns.into(),
        name: name.into(),
        cluster_ips: Vec::new(),
        headless: false,
        external_name: None,
        external_ips: Vec::new(),
        ingress: Vec::new(),
        ports: Vec::new(),
        labels: Map::new(),
        publish_not_ready: false,
        ip_families: Vec::new(),
    }
}

impl ServiceBuilder {
    /// Adds a cluster IP (first one becomes `spec.clusterIP`; all go to `spec.clusterIPs`).
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.cluster_ips.push(ip.into());
        self
    }
    /// Makes the service headless (`clusterIP: None`).
    pub fn headless(mut self) -> Self {
        self.headless = true;
        self
    }
    /// Makes the service `type: ExternalName`.
    pub fn external_name(mut self, target: &str) -> Self {
        self.external_name = Some(target.into());
        self
    }
    /// Adds an entry to `spec.externalIPs`.
    pub fn external_ip(mut self, ip: &str) -> Self {
        self.external_ips.push(ip.into());
        self
    }
    /// Makes the service `type: LoadBalancer` with an ingress IP in its status.
    pub fn lb_ingress_ip(mut self, ip: &str) -> Self {
        self.ingress.push((Some(ip.into()), None));
        self
    }
    /// Makes the service `type: LoadBalancer` with an ingress hostname in its status.
    pub fn lb_ingress_hostname(mut self, host: &str) -> Self {
        self.ingress.push((None, Some(host.into())));
        self
    }
    /// Adds a port (`name` "" = unnamed).
    pub fn port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        self.ports.push(PortSpec {
            name: name.into(),
            port,
            protocol: protocol.into(),
        });
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), Value::String(v.into()));
        self
    }
    /// Sets `spec.publishNotReadyAddresses`.
    pub fn publish_not_ready_addresses(mut self, on: bool) -> Self {
        self.publish_not_ready = on;
        self
    }
    /// Adds an entry to `spec.ipFamilies` (`IPv4` / `IPv6`).
    pub fn ip_family(mut self, fam: &str) -> Self {
        self.ip_families.push(fam.into());
        self
    }
    /// The object.
    pub fn build(self) -> Value {
        let mut spec = json!({"ports": ports_json(&self.ports)});
        if let Some(t) = &self.external_name {
            spec["type"] = json!("ExternalName");
            spec["externalName"] = json!(t);
        } else {
            spec["type"] = json!("ClusterIP");
            if self.headless {
                spec["clusterIP"] = json!("None");
                spec["clusterIPs"] = json!(["None"]);
            } else if let Some(first) = self.cluster_ips.first() {
                spec["clusterIP"] = json!(first);
                spec["clusterIPs"] = json!(self.cluster_ips);
            }
        }
        if !self.external_ips.is_empty() {
            spec["externalIPs"] = json!(self.external_ips);
        }
        if self.publish_not_ready {
            spec["publishNotReadyAddresses"] = json!(true);
        }
        if !self.ip_families.is_empty() {
            spec["ipFamilies"] = json!(self.ip_families);
        }
        let mut obj = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(Some(&self.ns), &self.name, &self.labels),
            "spec": spec,
        });
        if !self.ingress.is_empty() {
            obj["spec"]["type"] = json!("LoadBalancer");
            let ing: Vec<Value> = self
                .ingress
                .iter()
                .map(|(ip, host)| match (ip, host) {
                    (Some(ip), _) => json!({"ip": ip}),
                    (None, Some(h)) => json!({"hostname": h}),
                    (None, None) => json!({}),
                })
                .collect();
            obj["status"] = json!({"loadBalancer": {"ingress": ing}});
        }
        obj
    }
}

impl From<ServiceBuilder> for Value {
    fn from(b: ServiceBuilder) -> Value {
        b.build()
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    addresses: Vec<String>,
    hostname: Option<String>,
    node_name: Option<String>,
    zone: Option<String>,
    pod: Option<String>,
    ready: Option<bool>,
}

/// Starts an endpoint with one address, `conditions.ready: true`.
pub fn endpoint(ip: &str) -> EndpointSpec {
    EndpointSpec {
        addresses: vec![ip.into()],
        hostname: None,
        node_name: None,
        zone: None,
        pod: None,
        ready: Some(true),
    }
}

impl EndpointSpec {
    /// Adds another address.
    pub fn address(mut self, ip: &str) -> Self {
        self.addresses.push(ip.into());
        self
    }
    /// Sets `hostname`.
    pub fn hostname(mut self, h: &str) -> Self {
        self.hostname = Some(h.into());
        self
    }
    /// Sets `nodeName`.
    pub fn node(mut self, n: &str) -> Self {
        self.node_name = Some(n.into());
        self
    }
    /// Sets `zone`.
    pub fn zone(mut self, z: &str) -> Self {
        self.zone = Some(z.into());
        self
    }
    /// Sets `targetRef` to a Pod of this name.
    pub fn pod(mut self, p: &str) -> Self {
        self.pod = Some(p.into());
        self
    }
    /// Sets `conditions.ready` (None = field absent / null).
    pub fn ready(mut self, r: Option<bool>) -> Self {
        self.ready = r;
        self
    }
    fn to_json(&self, ns: &str) -> Value {
        let mut v = json!({"addresses": self.addresses, "conditions": {}});
        if let Some(r) = self.ready {
            v["conditions"]["ready"] = json!(r);
        }
        if let Some(h) = &self.hostname {
            v["hostname"] = json!(h);
        }
        if let Some(n) = &self.node_name {
            v["nodeName"] = json!(n);
        }
        if let Some(z) = &self.zone {
            v["zone"] = json!(z);
        }
        if let Some(p) = &self.pod {
            v["targetRef"] = json!({"kind": "Pod", "namespace": ns, "name": p});
        }
        v
    }
}

/// Builder for a `discovery.k8s.io/v1 EndpointSlice`.
#[derive(Debug, Clone)]
pub struct EndpointSliceBuilder {
    ns: String,
    name: String,
    service: String,
    /// The label naming the service: `kubernetes.io/service-name`, or the MCS one.
    service_label: &'static str,
    family: String,
    endpoints: Vec<EndpointSpec>,
    ports: Vec<PortSpec>,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
}

/// Starts an EndpointSlice builder labelled `kubernetes.io/service-name: <service>`.
pub fn endpoint_slice(ns: &str, name: &str, service: &str) -> EndpointSliceBuilder {
    EndpointSliceBuilder {
        ns: ns.into(),
        name: name.into(),
        service: service.into(),
        service_label: "kubernetes.io/service-name",
        family: "IPv4".into(),
        endpoints: Vec::new(),
        ports: Vec::new(),
        labels: Map::new(),
        annotations: Map::new(),
    }
}

/// Starts an EndpointSlice builder of the MCS API: labelled
/// `multicluster.kubernetes.io/service-name: <service>` and
/// `multicluster.kubernetes.io/source-cluster: <cluster>` (no `kubernetes.io/service-name`), as
/// an MCS implementation writes them for a ServiceImport.
pub fn mc_endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    cluster: &str,
) -> EndpointSliceBuilder {
    let mut b = endpoint_slice(ns, name, service);
    b.service_label = "multicluster.kubernetes.io/service-name";
    b.label("multicluster.kubernetes.io/source-cluster", cluster)
}

impl EndpointSliceBuilder {
    /// Adds an endpoint.
    pub fn endpoint(mut self, e: EndpointSpec) -> Self {
        self.endpoints.push(e);
        self
    }
    /// Adds a port (`name` "" = unnamed).
    pub fn port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        self.ports.push(PortSpec {
            name: name.into(),
            port,
            protocol: protocol.into(),
        });
        self
    }
    /// Sets `addressType` (`IPv4` default, `IPv6`).
    pub fn address_type(mut self, fam: &str) -> Self {
        self.family = fam.into();
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), Value::String(v.into()));
        self
    }
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), Value::String(v.into()));
        self
    }
    /// The object.
    pub fn build(self) -> Value {
        let mut labels = self.labels.clone();
        labels.insert(
            self.service_label.into(),
            Value::String(self.service.clone()),
        );
        let mut m = meta(Some(&self.ns), &self.name, &labels);
        if !self.annotations.is_empty() {
            m["annotations"] = Value::Object(self.annotations.clone());
        }
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": m,
            "addressType": self.family,
            "endpoints": self.endpoints.iter().map(|e| e.to_json(&self.ns)).collect::<Vec<_>>(),
            "ports": ports_json(&self.ports),
        })
    }
}

impl From<EndpointSliceBuilder> for Value {
    fn from(b: EndpointSliceBuilder) -> Value {
        b.build()
    }
}

/// Builder for a `multicluster.x-k8s.io/v1alpha1 ServiceImport`.
#[derive(Debug, Clone)]
pub struct ServiceImportBuilder {
    ns: String,
    name: String,
    type_: String,
    ips: Vec<String>,
    ports: Vec<PortSpec>,
    labels: Map<String, Value>,
}

/// Starts a ServiceImport builder (type `ClusterSetIP`, no IP until set).
pub fn service_import(ns: &str, name: &str) -> ServiceImportBuilder {
    ServiceImportBuilder {
        ns: ns.into(),
        name: name.into(),
        type_: "ClusterSetIP".into(),
        ips: Vec::new(),
        ports: Vec::new(),
        labels: Map::new(),
    }
}

impl ServiceImportBuilder {
    /// Adds a ClusterSetIP (`spec.ips`).
    pub fn ip(mut self, ip: &str) -> Self {
        self.ips.push(ip.into());
        self
    }
    /// `spec.type: Headless`.
    pub fn headless(mut self) -> Self {
        self.type_ = "Headless".into();
        self
    }
    /// Adds a port (`name` "" = unnamed).
    pub fn port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        self.ports.push(PortSpec {
            name: name.into(),
            port,
            protocol: protocol.into(),
        });
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), Value::String(v.into()));
        self
    }
    /// The object.
    pub fn build(self) -> Value {
        let mut spec = json!({"type": self.type_, "ports": ports_json(&self.ports)});
        if !self.ips.is_empty() {
            spec["ips"] = json!(self.ips);
        }
        json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": meta(Some(&self.ns), &self.name, &self.labels),
            "spec": spec,
        })
    }
}

impl From<ServiceImportBuilder> for Value {
    fn from(b: ServiceImportBuilder) -> Value {
        b.build()
    }
}

/// Builder for a `v1 Pod`.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    ns: String,
    name: String,
    ips: Vec<String>,
    phase: String,
    labels: Map<String, Value>,
    hostname: Option<String>,
    subdomain: Option<String>,
    deleting: bool,
}

/// Starts a Pod builder (phase Running).
pub fn pod(ns: &str, name: &str) -> PodBuilder {
    PodBuilder {
        ns: ns.into(),
        name: name.into(),
        ips: Vec::new(),
        phase: "Running".into(),
        labels: Map::new(),
        hostname: None,
        subdomain: None,
        deleting: false,
    }
}

impl PodBuilder {
    /// Adds a pod IP (first is `status.podIP`; all in `status.podIPs`).
    pub fn ip(mut self, ip: &str) -> Self {
        self.ips.push(ip.into());
        self
    }
    /// Sets `status.phase`.
    pub fn phase(mut self, p: &str) -> Self {
        self.phase = p.into();
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), Value::String(v.into()));
        self
    }
    /// Sets `spec.hostname`.
    pub fn hostname(mut self, h: &str) -> Self {
        self.hostname = Some(h.into());
        self
    }
    /// Sets `spec.subdomain`.
    pub fn subdomain(mut self, s: &str) -> Self {
        self.subdomain = Some(s.into());
        self
    }
    /// Sets `metadata.deletionTimestamp` (a terminating pod).
    pub fn terminating(mut self) -> Self {
        self.deleting = true;
        self
    }
    /// The object.
    pub fn build(self) -> Value {
        let mut m = meta(Some(&self.ns), &self.name, &self.labels);
        if self.deleting {
            m["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        let mut spec = json!({"containers": [{"name": "c", "image": "img"}]});
        if let Some(h) = &self.hostname {
            spec["hostname"] = json!(h);
        }
        if let Some(s) = &self.subdomain {
            spec["subdomain"] = json!(s);
        }
        let mut status = json!({"phase": self.phase});
        if let Some(first) = self.ips.first() {
            status["podIP"] = json!(first);
            status["podIPs"] = Value::Array(self.ips.iter().map(|i| json!({"ip": i})).collect());
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": spec, "status": status})
    }
}

impl From<PodBuilder> for Value {
    fn from(b: PodBuilder) -> Value {
        b.build()
    }
}

/// Builder for a `v1 Namespace`.
#[derive(Debug, Clone)]
pub struct NamespaceBuilder {
    name: String,
    labels: Map<String, Value>,
}

/// Starts a Namespace builder (labelled `kubernetes.io/metadata.name: <name>` like the API does).
pub fn namespace(name: &str) -> NamespaceBuilder {
    let mut labels = Map::new();
    labels.insert(
        "kubernetes.io/metadata.name".into(),
        Value::String(name.into()),
    );
    NamespaceBuilder {
        name: name.into(),
        labels,
    }
}

impl NamespaceBuilder {
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), Value::String(v.into()));
        self
    }
    /// The object.
    pub fn build(self) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(None, &self.name, &self.labels),
               "status": {"phase": "Active"}})
    }
}

impl From<NamespaceBuilder> for Value {
    fn from(b: NamespaceBuilder) -> Value {
        b.build()
    }
}
