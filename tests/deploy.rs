//! Deployment artefacts: the plain manifests and the Helm chart (rendered offline with
//! deploy/helm/render.py) validate against the Kubernetes schemas (`kubernetes-validate`, from
//! requirements-test.txt), the chart's defaults match the plain manifests, and every Corefile
//! shipped in a ConfigMap passes `sextant -check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sextant-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Runs kubernetes-validate --strict on a file; returns (success, output).
fn validate(path: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(path)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is missing: pip install -r requirements-test.txt"
    );
    (out.status.success(), text)
}

fn render(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(root().join("deploy/helm/render.py"))
        .arg(root().join("deploy/helm/sextant"))
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "render.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn plugins() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .arg("-plugins")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sextant -check` must accept the Corefile; while some CoreDNS plugins are still being
/// written on other branches, the only errors allowed are those plugins being unknown.
fn check_corefile(name: &str, text: &str) {
    let path = tmp(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["-check", "-conf"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        assert!(stdout.starts_with("Corefile OK"), "{stdout}");
        return;
    }
    let have = plugins();
    for line in stdout.lines() {
        let pending = line
            .split("Unknown directive '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .filter(|p| {
                !have.contains(&format!("dns.{p}\n")) && line.contains("does not have yet")
            });
        assert!(pending.is_some(), "{name}: -check error: {line}\n{text}");
    }
}

#[test]
fn plain_manifests_validate() {
    for f in [
        "deploy/sextant.yaml",
        "deploy/node-local-dns.yaml",
        "deploy/node-local-dns-samenode.yaml",
    ] {
        let (ok, out) = validate(&root().join(f));
        assert!(ok, "{f}: {out}");
    }
    // NodeLocal DNSCache: overlapping upgrades, readiness, the fallback targets.
    let nl = docs(&std::fs::read_to_string(root().join("deploy/node-local-dns.yaml")).unwrap());
    let ds = find(&nl, "DaemonSet", "node-local-dns");
    let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].as_u64(), ru["maxUnavailable"].as_u64()),
        (Some(1), Some(0))
    );
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["port"].as_u64(), Some(8181));
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/ready")
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(
        after("-fallbackendpoints"),
        "kube-dns-endpoints.kube-system.svc.__PILLAR__DNS__DOMAIN__"
    );
    assert_eq!(after("-rules"), "auto");
    let eps = find(&nl, "Service", "kube-dns-endpoints");
    assert_eq!(eps["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        eps["spec"]["selector"]["k8s-app"].as_str(),
        Some("kube-dns")
    );
    // Without interface or rules: kube-dns selects the caches and prefers the client's node.
    let sn =
        docs(&std::fs::read_to_string(root().join("deploy/node-local-dns-samenode.yaml")).unwrap());
    let svc = find(&sn, "Service", "kube-dns");
    assert_eq!(
        svc["spec"]["trafficDistribution"].as_str(),
        Some("PreferSameNode")
    );
    assert_eq!(
        svc["spec"]["selector"]["k8s-app"].as_str(),
        Some("node-local-dns")
    );
    let ds = find(&sn, "DaemonSet", "node-local-dns");
    assert!(ds["spec"]["template"]["spec"]["hostNetwork"].is_null());
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in ["-setupinterface=false", "-setupiptables=false"] {
        assert!(args.contains(&want), "{args:?}");
    }
    assert_eq!(
        c["securityContext"]["capabilities"]["add"][0].as_str(),
        Some("NET_BIND_SERVICE")
    );
    let d = docs(&std::fs::read_to_string(root().join("deploy/sextant.yaml")).unwrap());
    assert_eq!(
        kinds(&d),
        [
            "ServiceAccount/coredns",
            "ClusterRole/system:coredns",
            "ClusterRoleBinding/system:coredns",
            "ConfigMap/coredns",
            "Deployment/coredns",
            "Service/kube-dns",
            "PodDisruptionBudget/coredns",
            "HorizontalPodAutoscaler/coredns"
        ]
    );
    // What replacing CoreDNS in place relies on.
    let svc = find(&d, "Service", "kube-dns");
    assert_eq!(svc["metadata"]["namespace"].as_str(), Some("kube-system"));
    assert_eq!(
        svc["spec"]["selector"]["k8s-app"].as_str(),
        Some("kube-dns")
    );
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{}",
                p["name"].as_str().unwrap(),
                p["port"].as_u64().unwrap(),
                p["protocol"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(ports, ["dns:53/UDP", "dns-tcp:53/TCP", "metrics:9153/TCP"]);
    let dep = find(&d, "Deployment", "coredns");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["port"].as_u64(), Some(8080));
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/health")
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["port"].as_u64(), Some(8181));
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/ready")
    );
    assert_eq!(
        c["securityContext"]["capabilities"]["add"][0].as_str(),
        Some("NET_BIND_SERVICE")
    );
    assert_eq!(c["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        dep["spec"]["template"]["spec"]["dnsPolicy"].as_str(),
        Some("Default")
    );
    let rules = find(&d, "ClusterRole", "system:coredns")["rules"]
        .as_sequence()
        .unwrap()
        .clone();
    let mut granted = Vec::new();
    for r in &rules {
        for res in r["resources"].as_sequence().unwrap() {
            assert_eq!(r["verbs"], Value::from(vec!["list", "watch"]));
            granted.push(res.as_str().unwrap().to_string());
        }
    }
    for need in ["services", "endpointslices", "pods", "namespaces"] {
        assert!(granted.contains(&need.to_string()), "{need}");
    }
}

#[test]
fn invalid_manifest_is_rejected() {
    let path = tmp("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: dns\n",
    )
    .unwrap();
    let (ok, out) = validate(&path);
    assert!(!ok, "{out}");
}

#[test]
fn chart_renders_and_validates() {
    let plain = docs(&std::fs::read_to_string(root().join("deploy/sextant.yaml")).unwrap());
    let default = render(&[]);
    let path = tmp("chart-default.yaml");
    std::fs::write(&path, &default).unwrap();
    let (ok, out) = validate(&path);
    assert!(ok, "{out}");
    let d = docs(&default);
    assert_eq!(d.len(), 8, "{:?}", kinds(&d));
    // The chart's defaults are the plain manifest.
    for (kind, name) in [
        ("Service", "kube-dns"),
        ("ClusterRole", "system:coredns"),
        ("PodDisruptionBudget", "coredns"),
        ("HorizontalPodAutoscaler", "coredns"),
        ("ServiceAccount", "coredns"),
    ] {
        assert_eq!(
            find(&d, kind, name),
            find(&plain, kind, name),
            "{kind}/{name}"
        );
    }
    let chart_cf = find(&d, "ConfigMap", "coredns")["data"]["Corefile"]
        .as_str()
        .unwrap()
        .to_string();
    let plain_cf = find(&plain, "ConfigMap", "coredns")["data"]["Corefile"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        chart_cf,
        format!("{plain_cf}import /etc/coredns/custom/*.server\n")
    );
    let c = |docs: &[Value]| {
        find(docs, "Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]
            ["resources"]
            .clone()
    };
    assert_eq!(c(&d), c(&plain));

    // Values: replicas, node-cache on, extra server blocks, no HPA, fixed ClusterIP.
    let values = tmp("values.yaml");
    std::fs::write(
        &values,
        "extraServerBlocks: |\n  example.org:53 {\n      whoami\n  }\n",
    )
    .unwrap();
    let custom = render(&[
        "-f",
        values.to_str().unwrap(),
        "--set",
        "replicas=3",
        "--set",
        "nodeCache.enabled=true",
        "--set",
        "autoscaling.enabled=false",
        "--set",
        "serviceClusterIP=10.96.0.10",
    ]);
    let path = tmp("chart-custom.yaml");
    std::fs::write(&path, &custom).unwrap();
    let (ok, out) = validate(&path);
    assert!(ok, "{out}");
    let d = docs(&custom);
    let names = kinds(&d);
    assert!(!names.contains(&"HorizontalPodAutoscaler/coredns".to_string()));
    for k in [
        "DaemonSet/node-local-dns",
        "ConfigMap/node-local-dns",
        "Service/kube-dns-upstream",
        "ConfigMap/coredns-custom",
    ] {
        assert!(names.contains(&k.to_string()), "{k} missing in {names:?}");
    }
    assert_eq!(
        find(&d, "Deployment", "coredns")["spec"]["replicas"].as_u64(),
        Some(3)
    );
    assert_eq!(
        find(&d, "Service", "kube-dns")["spec"]["clusterIP"].as_str(),
        Some("10.96.0.10")
    );
    let ds = find(&d, "DaemonSet", "node-local-dns");
    let args: Vec<&str> = ds["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[..3],
        ["node-cache", "-localip", "169.254.20.10,10.96.0.10"]
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["hostNetwork"].as_bool(),
        Some(true)
    );
    let extra = find(&d, "ConfigMap", "coredns-custom")["data"]["extra.server"]
        .as_str()
        .unwrap();
    assert_eq!(extra, "example.org:53 {\n    whoami\n}\n");

    // The main Corefile importing the extra block passes -check when both sit side by side.
    let dir = tmp("cf");
    std::fs::create_dir_all(dir.join("custom")).unwrap();
    std::fs::write(dir.join("custom/extra.server"), extra).unwrap();
    let main = chart_cf.replace(
        "/etc/coredns/custom/",
        &format!("{}/custom/", dir.display()),
    );
    check_corefile("cf/Corefile", &main);
}

/// The coredns/helm chart's `zoneFiles` value, as in its values.yaml example: the file lands in
/// the `coredns` ConfigMap beside the Corefile and is mounted at /etc/coredns/FILENAME (the
/// Deployment's config volume lists it), and a server block naming it with `file` (here in
/// `extraServerBlocks`) passes -check with the main Corefile and serves the zone from that
/// layout: SOA and A at the apex, the wildcard, NODATA with the SOA (the records have no TTL and
/// the zone no `$TTL`: TTL 0, as CoreDNS 1.14.7 serves them).
#[test]
fn chart_zone_files_are_mounted_and_served() {
    use sextant_testkit::{free_port, udp, Query, RecordType, Sextant};
    let zone = "example.com.   IN SOA sns.dns.icann.com. noc.dns.icann.com. 2015082541 7200 3600 1209600 3600\n\
                example.com.   IN NS  b.iana-servers.net.\n\
                example.com.   IN NS  a.iana-servers.net.\n\
                example.com.   IN A   192.168.99.102\n\
                *.example.com. IN A   192.168.99.102\n";
    let values = tmp("zonefiles.yaml");
    let indented: String = zone.lines().map(|l| format!("      {l}\n")).collect();
    std::fs::write(
        &values,
        format!(
            "zoneFiles:\n  - filename: example.db\n    domain: example.com\n    contents: |\n{indented}\
             extraServerBlocks: |\n  example.com:53 {{\n      file /etc/coredns/example.db\n  }}\n"
        ),
    )
    .unwrap();
    let text = render(&["-f", values.to_str().unwrap()]);
    let path = tmp("chart-zonefiles.yaml");
    std::fs::write(&path, &text).unwrap();
    let (ok, out) = validate(&path);
    assert!(ok, "{out}");
    let d = docs(&text);
    let cm = &find(&d, "ConfigMap", "coredns")["data"];
    assert_eq!(cm["example.db"].as_str(), Some(zone));
    let items = &find(&d, "Deployment", "coredns")["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(items["name"].as_str(), Some("config-volume"));
    let paths: Vec<(&str, &str)> = items["configMap"]["items"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| (i["key"].as_str().unwrap(), i["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [("Corefile", "Corefile"), ("example.db", "example.db")]
    );
    let extra = find(&d, "ConfigMap", "coredns-custom")["data"]["extra.server"]
        .as_str()
        .unwrap();

    // /etc/coredns as the pod sees it: the config volume's items, custom/ the optional one.
    let dir = tmp("zonefiles-etc-coredns");
    std::fs::create_dir_all(dir.join("custom")).unwrap();
    let etc = format!("{}/", dir.display());
    for (key, file) in &paths {
        let body = cm[*key].as_str().unwrap().replace("/etc/coredns/", &etc);
        std::fs::write(dir.join(file), body).unwrap();
    }
    let extra = extra.replace("/etc/coredns/", &etc);
    std::fs::write(dir.join("custom/extra.server"), &extra).unwrap();
    let main = std::fs::read_to_string(dir.join("Corefile")).unwrap();
    check_corefile("zonefiles.Corefile", &main);

    // Serve the zone's block as rendered, on a free port.
    let port = free_port();
    let mut s = Sextant::builder(
        Path::new(env!("CARGO_BIN_EXE_sextant")),
        &extra.replace(":53 {", &format!(":{port} {{")),
    )
    .start();
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(at, std::time::Duration::from_secs(10)).unwrap();
    let t = std::time::Duration::from_secs(3);
    let r = udp(at, &Query::new("example.com.", RecordType::A), t).unwrap();
    assert_eq!(
        (r.rcode_name(), r.flags()),
        ("NOERROR".into(), "qr,aa,rd".into())
    );
    assert_eq!(r.answers(), ["example.com. 0 IN A 192.168.99.102"]);
    let r = udp(at, &Query::new("www.example.com.", RecordType::A), t).unwrap();
    assert_eq!(r.answers(), ["www.example.com. 0 IN A 192.168.99.102"]);
    let r = udp(at, &Query::new("example.com.", RecordType::SOA), t).unwrap();
    assert_eq!(r.answers().len(), 1, "{:?}", r.answers());
    assert!(r.answers()[0].contains("IN SOA sns.dns.icann.com. noc.dns.icann.com. 2015082541"));
    let r = udp(at, &Query::new("www.example.com.", RecordType::TXT), t).unwrap();
    assert_eq!((r.rcode_name(), r.answers().len()), ("NOERROR".into(), 0));
    assert_eq!(
        r.authority().len(),
        1,
        "NODATA carries the SOA: {:?}",
        r.authority()
    );
}

#[test]
fn configmap_corefiles_pass_check() {
    let plain = docs(&std::fs::read_to_string(root().join("deploy/sextant.yaml")).unwrap());
    check_corefile(
        "coredns.Corefile",
        find(&plain, "ConfigMap", "coredns")["data"]["Corefile"]
            .as_str()
            .unwrap(),
    );
    // The node-local-dns template after the installer's and node-cache's substitutions.
    let nl = docs(&std::fs::read_to_string(root().join("deploy/node-local-dns.yaml")).unwrap());
    let t = find(&nl, "ConfigMap", "node-local-dns")["data"]["Corefile"]
        .as_str()
        .unwrap();
    let rendered = t
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__LOCAL__DNS__", "127.0.0.1")
        .replace(" __PILLAR__DNS__SERVER__", "")
        .replace("__PILLAR__CLUSTER__DNS__", "127.0.0.1")
        .replace("__PILLAR__UPSTREAM__SERVERS__", "127.0.0.1");
    check_corefile("node-local-dns.Corefile", &rendered);
    let sn =
        docs(&std::fs::read_to_string(root().join("deploy/node-local-dns-samenode.yaml")).unwrap());
    let t = find(&sn, "ConfigMap", "node-local-dns")["data"]["Corefile"]
        .as_str()
        .unwrap();
    assert!(!t.contains("bind "), "{t}");
    let rendered = t
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__CLUSTER__DNS__", "127.0.0.1")
        .replace("__PILLAR__UPSTREAM__SERVERS__", "127.0.0.1")
        .replace(":53 {", ":1053 {");
    check_corefile("node-local-dns-samenode.Corefile", &rendered);
}

#[test]
fn dockerfile_is_multi_stage_non_root() {
    let d = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(d.contains(" AS build"));
    // Both images are staged by the script deploy/image.sh uses (tests/images.rs compares the
    // directives with what buildah built).
    assert!(d.contains("RUN deploy/image.sh rootfs"));
    assert!(d.contains("FROM scratch AS sextant"));
    assert!(d.contains("FROM scratch AS node-cache"));
    assert!(d.contains("USER 65532:65532"));
    assert!(d.contains("ENTRYPOINT [\"/sextant\"]"));
    // The version label defaults to this crate's version.
    assert_eq!(
        d.matches(&format!("ARG VERSION={}\n", env!("CARGO_PKG_VERSION")))
            .count(),
        2
    );
    // The default target (last stage) is the cluster DNS image.
    let last_from = d.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(last_from.ends_with("AS sextant"));
}

/// One value names the image: the chart's `image.tag` (the crate's version) tags both images,
/// the plain manifests name exactly the chart's default images, and deploy/image.sh builds
/// images of the same names under localhost/.
#[test]
fn images_named_by_one_value() {
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/helm/sextant/values.yaml")).unwrap(),
    )
    .unwrap();
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/helm/sextant/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let tag = values["image"]["tag"].as_str().unwrap();
    assert_eq!(tag, env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"].as_str(), Some(tag));
    assert!(values["nodeCache"]["image"]["tag"].is_null(), "one tag");
    let dns = format!("{}:{tag}", values["image"]["repository"].as_str().unwrap());
    let nc = format!(
        "{}:{tag}",
        values["nodeCache"]["image"]["repository"].as_str().unwrap()
    );

    let images = |path: &str| -> Vec<String> {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .map(|s| s.trim_matches('"').to_string())
            .collect()
    };
    assert_eq!(images("deploy/sextant.yaml"), [dns.as_str()]);
    assert_eq!(images("deploy/node-local-dns.yaml"), [nc.as_str()]);

    let image_of = |docs: &[Value], kind: &str, name: &str| {
        find(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let d = docs(&render(&["--set", "nodeCache.enabled=true"]));
    assert_eq!(image_of(&d, "Deployment", "coredns"), dns);
    assert_eq!(image_of(&d, "DaemonSet", "node-local-dns"), nc);
    let d = docs(&render(&[
        "--set",
        "nodeCache.enabled=true",
        "--set",
        "image.tag=9.9.9",
    ]));
    assert!(image_of(&d, "Deployment", "coredns").ends_with("/sextant:9.9.9"));
    assert!(image_of(&d, "DaemonSet", "node-local-dns").ends_with("/sextant-node-cache:9.9.9"));

    let script = std::fs::read_to_string(root().join("deploy/image.sh")).unwrap();
    for (built, repo) in [
        ("localhost/sextant:", &dns),
        ("localhost/sextant-node-cache:", &nc),
    ] {
        assert!(script.contains(built), "{built}");
        let base = repo.rsplit('/').next().unwrap().split(':').next().unwrap();
        assert!(built.ends_with(&format!("/{base}:")), "{built} vs {repo}");
    }
}
