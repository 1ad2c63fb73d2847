//! The container images: `deploy/image.sh` builds them (buildah, no Docker engine), podman from
//! Debian runs them inside network namespaces the test creates, with the Corefiles, arguments,
//! mounts and capabilities of the shipped manifests: the cluster DNS image non-root with
//! NET_BIND_SERVICE only (binding :53 through the binary's file capability, no_new_privs,
//! read-only root) in front of the fake API server and Knot; the node-cache image with its
//! DaemonSet flags and NET_ADMIN in front of two Knots. Whole answers over UDP and TCP,
//! `/metrics`, `/health`, `/ready`, and the image configuration against `deploy/Dockerfile`.
//! Needs root, buildah, podman, runc, mmdebstrap, libcap2-bin, knot, iproute2, iptables (`./test.sh`
//! installs them).

mod netenv;

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netenv::*;
use serde_json::{json, Value as Json};
use serde_yaml_ng::Value;
use sextant_fakeapi::{namespace, service, FakeApi};
use sextant_testkit::*;

const DNS_IMAGE: &str = "localhost/sextant:dev";
const NC_IMAGE: &str = "localhost/sextant-node-cache:dev";
/// How podman runs on these machines (no systemd cgroups, no overlay): the same storage driver
/// deploy/image.sh gives buildah.
const PODMAN: [&str; 6] = [
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "--storage-driver",
    "vfs",
];
/// Limits podman would otherwise raise above the hard limits a container without
/// CAP_SYS_RESOURCE may set (runc then fails with "error setting rlimits").
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];
/// The first build compiles the release binary (minutes on two cores).
const BUILD_LIMIT: Duration = Duration::from_secs(25 * 60);
const PODMAN_LIMIT: Duration = Duration::from_secs(120);
const START_LIMIT: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails (never skips) when a program is missing, naming the Debian package.
fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file());
    assert!(
        found,
        "{program} not found: install it with `apt-get install -y {package}` (or run ./test.sh)"
    );
}

/// Runs `cmd` in its own process group with a hard time limit (the group is killed then).
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out_p, err_p) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_p).unwrap())
        .stderr(File::create(&err_p).unwrap())
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + limit;
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the child's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "{what}: no result within {limit:?}:\n{}{}",
                String::from_utf8_lossy(&read(&out_p)),
                String::from_utf8_lossy(&read(&err_p))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: read(&out_p),
        stderr: read(&err_p),
    }
}

fn podman(args: &[&str]) -> Output {
    let mut c = Command::new("podman");
    c.args(PODMAN).args(args);
    run_bounded(c, PODMAN_LIMIT, &format!("podman {}", args.join(" ")))
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds both images once per test binary with deploy/image.sh; returns its output.
fn images() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        for (p, pkg) in [
            ("buildah", "buildah"),
            ("podman", "podman"),
            ("runc", "runc"),
            ("mmdebstrap", "mmdebstrap"),
            ("setcap", "libcap2-bin"),
            ("knotd", "knot"),
            ("ip", "iproute2"),
            ("iptables-save", "iptables"),
        ] {
            require(p, pkg);
        }
        let start = Instant::now();
        // This test checks what the images hold and how they behave, not how fast the binary
        // is: optimising for size with more codegen units shortens the release build that
        // dominates the suite's time (and keeps the image under the README's size claim, which
        // opt-level 1 does not). deploy/image.sh run by hand builds with the release profile.
        let mut build = Command::new(root().join("deploy/image.sh"));
        build
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
        let out = run_bounded(build, BUILD_LIMIT, "deploy/image.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.status.success(), "deploy/image.sh failed:\n{text}");
        eprintln!("deploy/image.sh: {:?}\n{text}", start.elapsed());
        text
    })
}

/// `podman image inspect`'s Config of an image.
fn image_config(image: &str) -> Json {
    let v: Json = serde_json::from_str(&podman_ok(&["image", "inspect", image])).unwrap();
    v[0]["Config"].clone()
}

/// The directives of one stage of deploy/Dockerfile: USER, ENTRYPOINT, CMD, EXPOSE, LABEL keys.
struct Stage {
    user: String,
    entrypoint: Json,
    cmd: Json,
    expose: Vec<String>,
    labels: Vec<(String, String)>,
}

fn dockerfile_stage(name: &str) -> Stage {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    // Continuation lines joined.
    let joined = text.replace("\\\n", " ");
    let mut lines = joined
        .lines()
        .skip_while(|l| !l.ends_with(&format!(" AS {name}")));
    assert!(
        lines.next().is_some(),
        "no stage {name} in deploy/Dockerfile"
    );
    let mut s = Stage {
        user: String::new(),
        entrypoint: Json::Null,
        cmd: Json::Null,
        expose: Vec::new(),
        labels: Vec::new(),
    };
    for l in lines.take_while(|l| !l.starts_with("FROM ")) {
        let l = l.trim();
        if let Some(v) = l.strip_prefix("USER ") {
            s.user = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("ENTRYPOINT ") {
            s.entrypoint = serde_json::from_str(v).unwrap();
        } else if let Some(v) = l.strip_prefix("CMD ") {
            s.cmd = serde_json::from_str(v).unwrap();
        } else if let Some(v) = l.strip_prefix("EXPOSE ") {
            s.expose.extend(v.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                }
            }));
        } else if let Some(v) = l.strip_prefix("LABEL ") {
            // key="value" pairs.
            let mut rest = v.trim();
            while let Some(eq) = rest.find("=\"") {
                let key = rest[..eq].trim().to_string();
                let after = &rest[eq + 2..];
                let end = after.find('"').unwrap();
                s.labels.push((key, after[..end].to_string()));
                rest = &after[end + 1..];
            }
        }
    }
    s
}

/// The image's configuration is what the Dockerfile's stage declares (the Dockerfile stages the
/// same root file systems with `deploy/image.sh rootfs`).
fn same_as_dockerfile(cfg: &Json, stage: &str) {
    let d = dockerfile_stage(stage);
    assert_eq!(cfg["User"].as_str(), Some(d.user.as_str()), "{stage}: USER");
    assert_eq!(cfg["Entrypoint"], d.entrypoint, "{stage}: ENTRYPOINT");
    assert_eq!(cfg["Cmd"], d.cmd, "{stage}: CMD");
    let mut exposed: Vec<String> = cfg["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut want = d.expose.clone();
    exposed.sort();
    want.sort();
    assert_eq!(exposed, want, "{stage}: EXPOSE");
    let labels = cfg["Labels"].as_object().unwrap();
    let mut keys: Vec<&str> = labels
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("org.opencontainers."))
        .collect();
    let mut dkeys: Vec<&str> = d.labels.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    dkeys.sort();
    assert_eq!(keys, dkeys, "{stage}: LABEL keys");
    for (k, v) in &d.labels {
        if !v.contains('$') {
            assert_eq!(labels[k].as_str(), Some(v.as_str()), "{stage}: LABEL {k}");
        }
    }
    assert_eq!(
        labels["org.opencontainers.image.version"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let rev = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap();
    assert!(
        rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
        "{rev}"
    );
}

/// A container removed (with its output kept for messages) on drop.
struct Container {
    name: String,
}

impl Container {
    fn run(tag: &str, args: &[&str]) -> Container {
        let name = format!("sextant-test-{tag}-{}", std::process::id());
        let _ = podman(&["rm", "-f", "-t", "0", &name]);
        let mut all = vec!["run", "-d", "--pull", "never", "--name", &name];
        all.extend(ULIMITS);
        all.extend(args);
        podman_ok(&all);
        Container { name }
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn running(&self) -> bool {
        podman_ok(&["inspect", "-f", "{{.State.Running}}", &self.name]).trim() == "true"
    }

    fn pid(&self) -> u32 {
        podman_ok(&["inspect", "-f", "{{.State.Pid}}", &self.name])
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until `probe` (run inside namespace `ns`) holds, failing early if the container
    /// stopped.
    fn wait(&self, ns: &str, what: &str, probe: fn() -> bool) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if in_ns(ns, probe) {
                return;
            }
            assert!(
                self.running(),
                "{}: exited before {what}:\n{}",
                self.name,
                self.logs()
            );
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {START_LIMIT:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM with a grace period, like the kubelet; returns the exit code.
    fn stop(&self) -> i64 {
        podman_ok(&["stop", "-t", "15", &self.name]);
        podman_ok(&["inspect", "-f", "{{.State.ExitCode}}", &self.name])
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

fn yaml_docs(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `/proc/PID/status` fields of the container's process.
fn proc_status(pid: u32) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The fake API server with a small cluster, inside namespace `ns` on 127.0.0.1.
fn cluster_api(ns: &str) -> (tokio::runtime::Runtime, FakeApi) {
    in_ns(ns, || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = rt.block_on(FakeApi::start()).unwrap();
        for n in ["default", "kube-system", "shop"] {
            api.apply(namespace(n)).unwrap();
        }
        api.apply(
            service("default", "kubernetes")
                .cluster_ip("10.96.0.1")
                .port("https", 443, "TCP"),
        )
        .unwrap();
        api.apply(
            service("shop", "web")
                .cluster_ip("10.96.0.20")
                .port("http", 80, "TCP"),
        )
        .unwrap();
        (rt, api)
    })
}

/// Cluster DNS image: deploy/sextant.yaml's Corefile (plus an `endpoint` line: the fake API
/// speaks plain HTTP, in-cluster configuration needs TLS), its args, its securityContext
/// (non-root 65532, only NET_BIND_SERVICE, no privilege escalation, read-only root).
#[test]
fn cluster_dns_image_non_root_on_port_53() {
    images();
    let cfg = image_config(DNS_IMAGE);
    same_as_dockerfile(&cfg, "sextant");
    // The README's size claim (CoreDNS's image is tens of MB).
    let size = podman_ok(&["image", "inspect", "-f", "{{.Size}}", DNS_IMAGE]);
    let size: u64 = size.trim().parse().unwrap();
    assert!(size < 20_000_000, "{DNS_IMAGE} is {size} bytes");
    let plain = yaml_docs("deploy/sextant.yaml");
    let dep = find(&plain, "Deployment");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    // The Deployment's args are the image's CMD; it runs as the image's user.
    assert_eq!(json!(strings(&c["args"])), cfg["Cmd"]);
    assert_eq!(
        c["securityContext"]["runAsUser"].as_u64(),
        Some(65532),
        "{:?}",
        c["securityContext"]
    );
    assert_eq!(cfg["User"], "65532:65532");

    let p = pair("im");
    let _knot = knot_in(&p.up);
    let (_rt, api) = cluster_api(p.dns.name());
    let corefile = find(&plain, "ConfigMap")["data"]["Corefile"]
        .as_str()
        .unwrap()
        .to_string();
    let head = "kubernetes cluster.local in-addr.arpa ip6.arpa {\n";
    assert!(corefile.contains(head), "{corefile}");
    let corefile = corefile.replacen(head, &format!("{head}       endpoint {}\n", api.url()), 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("coredns")).unwrap();
    std::fs::write(dir.path().join("coredns/Corefile"), &corefile).unwrap();
    // dnsPolicy: Default: the node's resolv.conf, here naming Knot.
    std::fs::write(
        dir.path().join("resolv.conf"),
        format!("nameserver {UPSTREAM_IP}\n"),
    )
    .unwrap();
    let netns = format!("ns:/var/run/netns/{}", p.dns.name());
    let conf_mount = format!("{}:/etc/coredns:ro", dir.path().join("coredns").display());
    let resolv_mount = format!(
        "{}:/etc/resolv.conf:ro",
        dir.path().join("resolv.conf").display()
    );
    let start = Instant::now();
    let ctr = Container::run(
        "dns",
        &[
            "--network",
            &netns,
            "--read-only",
            "--cap-drop",
            "all",
            "--cap-add",
            "NET_BIND_SERVICE",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &conf_mount,
            "-v",
            &resolv_mount,
            DNS_IMAGE,
        ],
    );
    let ns = p.dns.name().to_string();
    ctr.wait(&ns, "/ready 200", || {
        matches!(http_get(sa("127.0.0.1:8181"), "/ready", T), Ok((200, _)))
    });
    eprintln!(
        "cluster DNS image: ready {:?} after podman run",
        start.elapsed()
    );

    // Non-root, NET_BIND_SERVICE only, no ambient set: the file capability on /sextant is what
    // lets it bind :53 (as under containerd and CRI-O, which set no ambient capabilities).
    let st = proc_status(ctr.pid());
    assert_eq!(st["Uid"], "65532 65532 65532 65532", "{st:?}");
    assert_eq!(st["Gid"], "65532 65532 65532 65532", "{st:?}");
    assert_eq!(st["CapEff"], "0000000000000400", "{st:?}");
    assert_eq!(st["CapBnd"], "0000000000000400", "{st:?}");
    assert_eq!(st["CapAmb"], "0000000000000000", "{st:?}");
    assert_eq!(st["NoNewPrivs"], "1", "{st:?}");

    in_ns(&ns, || {
        let a = sa("127.0.0.1:53");
        let (code, body) = http_get(sa("127.0.0.1:8181"), "/ready", T).unwrap();
        assert_eq!((code, body.as_str()), (200, "OK"));
        let (code, body) = http_get(sa("127.0.0.1:8080"), "/health", T).unwrap();
        assert_eq!((code, body.as_str()), (200, "OK"));

        let r = both(a, "kubernetes.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr,aa,rd")
        );
        assert_eq!(
            r.answers(),
            ["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]
        );
        assert!(r.authority().is_empty(), "{:?}", r.authority());
        let r = both(
            a,
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr,aa,rd")
        );
        assert_eq!(
            r.answers(),
            ["_https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 0 100 443 kubernetes.default.svc.cluster.local."]
        );
        assert_eq!(
            r.additional(),
            ["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]
        );
        let r = both(a, "20.0.96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            r.answers(),
            ["20.0.96.10.in-addr.arpa. 30 IN PTR web.shop.svc.cluster.local."]
        );
        let r = both(a, "nope.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NXDOMAIN", "qr,aa,rd")
        );
        assert!(r.answers().is_empty());
        let auth = r.authority();
        assert_eq!(auth.len(), 1, "{auth:?}");
        assert!(
            auth[0].starts_with(
                "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "
            ),
            "{auth:?}"
        );
        // External names: forward to the resolv.conf server (Knot), then the cache.
        let r = both(a, "www.example.test.", RecordType::AAAA);
        assert_eq!(
            (r.rcode_name().as_str(), r.flags().as_str()),
            ("NOERROR", "qr,aa,rd")
        );
        assert_eq!(
            no_ttl(r.answers()),
            ["www.example.test. IN AAAA 2001:db8::10"]
        );
        let r = both(a, "nothing.example.test.", RecordType::A);
        assert_eq!(r.rcode_name(), "NXDOMAIN");
        assert_eq!(r.authority().len(), 1, "{:?}", r.authority());

        let m = http_get(sa("127.0.0.1:9153"), "/metrics", T).unwrap().1;
        assert!(
            metric(&m, "coredns_dns_requests_total", &["server=\"dns://:53\""]) >= 12.0,
            "{m}"
        );
        assert!(
            metric(&m, "coredns_dns_responses_total", &["rcode=\"NXDOMAIN\""]) >= 4.0,
            "{m}"
        );
        assert!(
            metric(
                &m,
                "coredns_proxy_request_duration_seconds_count",
                &[&format!("to=\"{UPSTREAM_IP}:53\"")]
            ) >= 1.0,
            "{m}"
        );
    });
    let logs = ctr.logs();
    assert!(logs.contains("CoreDNS-"), "{logs}");
    assert!(!logs.contains("[ERROR]"), "{logs}");
    // SIGTERM: lameduck 5s, then a clean exit.
    let t = Instant::now();
    assert_eq!(ctr.stop(), 0, "{}", ctr.logs());
    eprintln!("cluster DNS image: stopped in {:?}", t.elapsed());
}

/// The kube-dns-upstream stand-in for node-cache: a cluster.local zone served by Knot.
const CLUSTER_ZONE: &str = "$TTL 30
@ SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30
@ NS ns.dns.cluster.local.
ns.dns A 169.254.20.12
kubernetes.default.svc A 10.96.0.1
";
const LOCAL_DNS: &str = "169.254.20.10";
const DNS_SERVER: &str = "169.254.20.11";
const KUBE_DNS_UPSTREAM: &str = "169.254.20.12";

/// Node-cache image: deploy/node-local-dns.yaml after the installer's substitutions (kube-proxy
/// iptables mode), its DaemonSet args (`-rules auto`: nftables here, no kube-proxy rules), mounts,
/// NET_ADMIN and the node's resolv.conf, in a namespace standing in for the node's network.
#[test]
fn node_cache_image_with_its_flags_and_net_admin() {
    images();
    let cfg = image_config(NC_IMAGE);
    same_as_dockerfile(&cfg, "node-cache");
    let subst = |s: &str| {
        s.replace("__PILLAR__LOCAL__DNS__", LOCAL_DNS)
            .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
            .replace("__PILLAR__DNS__SERVER__", DNS_SERVER)
    };
    let nl = yaml_docs("deploy/node-local-dns.yaml");
    let base = subst(find(&nl, "ConfigMap")["data"]["Corefile"].as_str().unwrap());
    let ds = &find(&nl, "DaemonSet")["spec"]["template"]["spec"];
    let c = &ds["containers"][0];
    let args: Vec<String> = strings(&c["args"]).iter().map(|a| subst(a)).collect();
    assert_eq!(
        args[..3],
        ["node-cache", "-localip", "169.254.20.10,169.254.20.11"]
    );
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["add"]),
        ["NET_ADMIN"]
    );

    let p = pair("in");
    let node = p.dns.name().to_string();
    let _root_knot = knot_in(&p.up);
    p.dns
        .exec_ok(
            IP,
            &[
                "addr",
                "add",
                &format!("{KUBE_DNS_UPSTREAM}/32"),
                "dev",
                "lo",
            ],
        )
        .unwrap();
    let _cluster_knot = in_ns(&node, || {
        Knot::start_on(
            sa(&format!("{KUBE_DNS_UPSTREAM}:53")),
            "cluster.local.",
            CLUSTER_ZONE,
        )
        .unwrap()
    });

    let dir = tempfile::tempdir().unwrap();
    for d in ["coredns", "kube-dns"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("coredns/Corefile.base"), &base).unwrap();
    std::fs::write(dir.path().join("xtables.lock"), "").unwrap();
    std::fs::write(
        dir.path().join("resolv.conf"),
        format!("nameserver {UPSTREAM_IP}\n"),
    )
    .unwrap();
    let m = |host: &str, ctr: &str| format!("{}:{ctr}", dir.path().join(host).display());
    let (v_conf, v_kdns, v_lock, v_resolv) = (
        m("coredns", "/etc/coredns"),
        m("kube-dns", "/etc/kube-dns"),
        m("xtables.lock", "/run/xtables.lock"),
        m("resolv.conf", "/etc/resolv.conf:ro"),
    );
    let netns = format!("ns:/var/run/netns/{node}");
    let env = format!("KUBE_DNS_UPSTREAM_SERVICE_HOST={KUBE_DNS_UPSTREAM}");
    let mut run: Vec<&str> = vec![
        "--network",
        &netns,
        "--cap-add",
        "NET_ADMIN",
        "-e",
        &env,
        "-v",
        &v_conf,
        "-v",
        &v_kdns,
        "-v",
        &v_lock,
        "-v",
        &v_resolv,
        NC_IMAGE,
    ];
    run.extend(args.iter().map(String::as_str));
    let start = Instant::now();
    let ctr = Container::run("nc", &run);
    ctr.wait(&node, "DNS on 169.254.20.10:53", || {
        udp(
            sa("169.254.20.10:53"),
            &Query::new("kubernetes.default.svc.cluster.local.", RecordType::A),
            Duration::from_millis(300),
        )
        .is_ok()
    });
    eprintln!(
        "node-cache image: answering {:?} after podman run",
        start.elapsed()
    );

    // The interface and the rules node-cache made with the image's nft (`-rules auto` finds no
    // kube-proxy rules here, so it takes nftables).
    let link = String::from_utf8_lossy(
        &p.dns
            .exec_ok(IP, &["addr", "show", "nodelocaldns"])
            .unwrap()
            .stdout,
    )
    .into_owned();
    for ip in [LOCAL_DNS, DNS_SERVER] {
        assert!(link.contains(&format!("inet {ip}/32")), "{link}");
    }
    let rules = || {
        let table = p
            .dns
            .exec("nft", &["list", "table", "inet", "sextant-nodelocaldns"])
            .unwrap();
        String::from_utf8_lossy(&table.stdout)
            .lines()
            .filter(|l| l.contains("NodeLocal DNS Cache"))
            .map(|l| l.trim().to_string())
            .collect::<Vec<_>>()
    };
    // The rules follow the listeners (node-cache adds them once it serves); NOTRACK only while
    // a socket listens.
    let want: Vec<String> = [LOCAL_DNS, DNS_SERVER]
        .iter()
        .flat_map(|ip| {
            [
                format!("ip daddr {ip} tcp dport 53 tcp flags syn / syn,ack ip saddr . tcp sport . ip daddr != @fallback4 socket wildcard 0 notrack comment \"NodeLocal DNS Cache: skip conntrack\""),
                format!("ip daddr {ip} udp dport 53 socket wildcard 0 notrack comment \"NodeLocal DNS Cache: skip conntrack\""),
            ]
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut r = rules();
    while !want.iter().all(|w| r.contains(w)) {
        assert!(
            Instant::now() < deadline,
            "rules missing after 10 s: want {want:#?}, have {r:#?}\n{}",
            ctr.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
        r = rules();
    }

    in_ns(&node, || {
        for ip in [LOCAL_DNS, DNS_SERVER] {
            let a = sa(&format!("{ip}:53"));
            // cluster.local block: force_tcp to kube-dns-upstream.
            let r = both(a, "kubernetes.default.svc.cluster.local.", RecordType::A);
            assert_eq!(
                (r.rcode_name().as_str(), r.flags().as_str()),
                ("NOERROR", "qr,aa,rd")
            );
            assert_eq!(
                no_ttl(r.answers()),
                ["kubernetes.default.svc.cluster.local. IN A 10.96.0.1"]
            );
            assert!((25..=30).contains(&ttl(&r)), "{:?}", r.answers());
            let r = both(a, "nope.default.svc.cluster.local.", RecordType::A);
            assert_eq!(r.rcode_name(), "NXDOMAIN");
            assert!(r.answers().is_empty());
            assert_eq!(r.authority().len(), 1, "{:?}", r.authority());
            // .:53 block: the node's resolv.conf (Knot).
            let r = both(a, "www.example.test.", RecordType::A);
            assert_eq!(
                (r.rcode_name().as_str(), r.flags().as_str()),
                ("NOERROR", "qr,aa,rd")
            );
            assert_eq!(no_ttl(r.answers()), ["www.example.test. IN A 192.0.2.10"]);
        }
        let (code, body) = http_get(sa("169.254.20.10:8080"), "/health", T).unwrap();
        assert_eq!((code, body.as_str()), (200, "OK"));
        let m = http_get(sa("127.0.0.1:9253"), "/metrics", T).unwrap().1;
        assert!(
            metric(
                &m,
                "coredns_dns_requests_total",
                &["server=\"dns://169.254.20.10:53\""]
            ) >= 6.0,
            "{m}"
        );
        assert!(
            metric(
                &m,
                "coredns_proxy_request_duration_seconds_count",
                &[&format!("to=\"{KUBE_DNS_UPSTREAM}:53\"")]
            ) >= 1.0,
            "{m}"
        );
        // force_tcp: the connections to kube-dns-upstream are TCP.
        assert!(
            metric(
                &m,
                "coredns_proxy_conn_cache_misses_total",
                &[&format!("to=\"{KUBE_DNS_UPSTREAM}:53\""), "proto=\"tcp\""]
            ) >= 1.0,
            "{m}"
        );
        let m = http_get(sa("127.0.0.1:9353"), "/metrics", T).unwrap().1;
        assert!(
            m.contains("coredns_nodecache_setup_errors_total{errortype=\"iptables\"} 0"),
            "{m}"
        );
    });

    // SIGTERM (kubelet's stop): node-cache removes its rules and interface.
    assert_eq!(ctr.stop(), 0, "{}", ctr.logs());
    assert!(rules().is_empty(), "{:#?}", rules());
    let out = p.dns.exec(IP, &["link", "show", "nodelocaldns"]).unwrap();
    assert!(!out.status.success(), "interface left behind");
}
