//! End-to-end tests of `sextant node-cache` inside network namespaces the tests create: the
//! interface (bridge fallback where the kernel has no dummy links), the exact iptables rules,
//! answers on 169.254.20.10:53, rules re-added, the Corefile re-rendered when the kube-dns
//! ConfigMap folder changes, the setup-error metric, and full teardown on SIGTERM. Nothing
//! touches the host's interfaces, routes or iptables. Needs root, iproute2 and iptables.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sextant_testkit::{http_get, tcp, udp, Handler, NetNs, Query, RecordType, Upstream};

const LOCAL_IP: &str = "169.254.20.10";
/// Stands in for the kube-dns ClusterIP (link-local on purpose: no private ranges).
const CLUSTER_IP: &str = "169.254.20.11";
/// Stands in for the kube-dns-upstream ClusterIP; the scripted upstream listens on it.
const UPSTREAM_IP: &str = "169.254.20.12";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sextant")
}

/// Runs `f` on a thread that entered `ns`'s network namespace; sockets it creates (and
/// threads it starts) live there.
fn in_ns<T: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid fd for this thread only; the thread ends after `f`.
        let rc = unsafe {
            sextant_testkit::libc::setns(file.as_raw_fd(), sextant_testkit::libc::CLONE_NEWNET)
        };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// An upstream started inside a namespace; stopped from inside it too (stopping wakes its
/// accept loop by connecting to its address, which only exists in the namespace).
struct NsUpstream {
    up: Option<Upstream>,
    netns: String,
}

impl NsUpstream {
    fn start(ns: &NetNs, addr: std::net::SocketAddr, handler: Handler) -> NsUpstream {
        let up = in_ns(ns, move || Upstream::start_on(addr, handler).unwrap());
        NsUpstream {
            up: Some(up),
            netns: ns.name().to_string(),
        }
    }
}

impl Drop for NsUpstream {
    fn drop(&mut self) {
        if let Some(up) = self.up.take() {
            let path = format!("/var/run/netns/{}", self.netns);
            let _ = std::thread::spawn(move || {
                if let Ok(file) = std::fs::File::open(&path) {
                    // SAFETY: as in `in_ns`.
                    let rc = unsafe {
                        sextant_testkit::libc::setns(
                            file.as_raw_fd(),
                            sextant_testkit::libc::CLONE_NEWNET,
                        )
                    };
                    if rc == 0 {
                        drop(up);
                        return;
                    }
                }
                // Cannot enter the namespace: leak it rather than connect from the host.
                std::mem::forget(up);
            })
            .join();
        }
    }
}

fn sh(ns: &NetNs, prog: &str, args: &[&str]) -> String {
    let out = ns.exec(prog, args).unwrap();
    let package = if prog.starts_with("ip") && prog.contains("tables") {
        "iptables"
    } else {
        "iproute2"
    };
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("No such file or directory"),
        "{prog} not found: install it with `apt-get install -y {package}` (or run ./test.sh)"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// node-cache fills an ipset in iptables mode (without the tool its rules differ, see
/// src/nodecache/iptables.rs).
fn need_ipset() {
    let ok = std::process::Command::new("ipset")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "ipset not found: install it with `apt-get install -y ipset` (or run ./test.sh)"
    );
}

fn rules_in(ns: &NetNs) -> Vec<String> {
    need_ipset();
    sh(ns, "iptables-save", &[])
        .lines()
        .filter(|l| l.contains("NodeLocal DNS Cache"))
        .map(String::from)
        .collect()
}

/// The rules `iptables-save` must show, in chain order (prepending reverses the insertion order).
fn expected_rules(ips: &[&str]) -> Vec<String> {
    let skip = "-m comment --comment \"NodeLocal DNS Cache: skip conntrack\" -j NOTRACK";
    let allow = "-m comment --comment \"NodeLocal DNS Cache: allow DNS traffic\" -j ACCEPT";
    let mut raw_pre = Vec::new();
    let mut raw_out = Vec::new();
    let mut f_in = Vec::new();
    let mut f_out = Vec::new();
    let mut mangle_pre = Vec::new();
    for ip in ips {
        // In insertion order, then reversed below.
        for p in ["tcp", "udp"] {
            // Only while a socket listens (`-m socket`): else the query is NATed. For TCP, not
            // for a connection conntrack tracks (NATed before a node cache listened).
            let tracked = if p == "tcp" {
                "-m set ! --match-set NODE-LOCAL-DNS-NAT4 src,src,dst "
            } else {
                ""
            };
            // TCP in two: SYNs (steering new connections, removed first on shutdown) and
            // the rest.
            let flags: &[&str] = if p == "tcp" {
                &[
                    "--tcp-flags FIN,SYN,RST,ACK SYN ",
                    "! --tcp-flags FIN,SYN,RST,ACK SYN ",
                ]
            } else {
                &[""]
            };
            for f in flags {
                raw_pre.push(format!(
                    "-A PREROUTING -d {ip}/32 -p {p} -m {p} --dport 53 {f}{tracked}-m socket {skip}"
                ));
            }
            f_in.push(format!(
                "-A INPUT -d {ip}/32 -p {p} -m {p} --dport 53 {allow}"
            ));
        }
        for p in ["tcp", "udp"] {
            raw_out.push(format!(
                "-A OUTPUT -s {ip}/32 -p {p} -m {p} --sport 53 {skip}"
            ));
            f_out.push(format!(
                "-A OUTPUT -s {ip}/32 -p {p} -m {p} --sport 53 {allow}"
            ));
        }
        for p in ["tcp", "udp"] {
            raw_out.push(format!(
                "-A OUTPUT -d {ip}/32 -p {p} -m {p} --dport 53 {skip}"
            ));
        }
        raw_out.push(format!(
            "-A OUTPUT -d {ip}/32 -p tcp -m tcp --dport 8080 {skip}"
        ));
        raw_out.push(format!(
            "-A OUTPUT -s {ip}/32 -p tcp -m tcp --sport 8080 {skip}"
        ));
        mangle_pre.push(format!(
            "-A PREROUTING -d {ip}/32 -p tcp -m tcp --dport 53 -m conntrack --ctstate NEW,ESTABLISHED -m comment --comment \"NodeLocal DNS Cache: connections through NAT\" -j SET --add-set NODE-LOCAL-DNS-NAT4 src,src,dst --exist --timeout 120"
        ));
    }
    let mut all = Vec::new();
    for mut v in [mangle_pre, raw_pre, raw_out, f_in, f_out] {
        v.reverse();
        all.extend(v);
    }
    // The fallback chain's jumps, appended to nat PREROUTING (kube-proxy's rules go first).
    let fallback = "-m comment --comment \"NodeLocal DNS Cache: fallback to cluster DNS\" -j NODE-LOCAL-DNS-FALLBACK";
    for ip in ips {
        for p in ["tcp", "udp"] {
            all.push(format!(
                "-A PREROUTING -d {ip}/32 -p {p} -m {p} --dport 53 {fallback}"
            ));
        }
    }
    all
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

struct NodeCache {
    child: Child,
    log: PathBuf,
}

impl NodeCache {
    fn spawn(ns: &NetNs, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> NodeCache {
        let log = dir.join("node-cache.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let base = dir.join("base/Corefile.base");
        let conf = dir.join("Corefile");
        let kdns = dir.join("kube-dns");
        let pid = dir.join("node-cache.pid");
        let mut args: Vec<String> = [
            "node-cache",
            "-localip",
            &format!("{LOCAL_IP},{CLUSTER_IP}"),
            "-basecorefile",
            base.to_str().unwrap(),
            "-conf",
            conf.to_str().unwrap(),
            "-kubednscm",
            kdns.to_str().unwrap(),
            "-pidfile",
            pid.to_str().unwrap(),
            "-metrics-listen-address",
            "127.0.0.1:9353",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = ns.command(bin(), &argv);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.env_remove("KUBE_DNS_SERVICE_HOST")
            .env_remove("KUBE_DNS_UPSTREAM_SERVICE_HOST");
        for (k, v) in env {
            cmd.env(k, v);
        }
        NodeCache {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, s: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(s) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no log line {s:?} within {timeout:?}; log:\n{}", self.log());
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        sextant_testkit::send_signal(self.child.id(), sextant_testkit::libc::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "node-cache did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeCache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sextant-nc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("base")).unwrap();
    std::fs::create_dir_all(d.join("kube-dns")).unwrap();
    d
}

fn plugins() -> String {
    let out = std::process::Command::new(bin())
        .arg("-plugins")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_plugins(names: &[&str]) -> bool {
    let p = plugins();
    names.iter().all(|n| p.contains(&format!("dns.{n}\n")))
}

/// The whole life of node-cache with a Corefile using only always-present plugins: interface,
/// rules, answers, metric, rule re-added, ConfigMap change, teardown.
#[test]
fn node_cache_lifecycle_in_namespace() {
    let ns = NetNs::create("snc").unwrap();
    let dir = tempdir("life");
    std::fs::write(
        dir.join("base/Corefile.base"),
        "__PILLAR__DNS__DOMAIN__:53 {\n    errors\n    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__\n    whoami\n    health 169.254.20.10:8080\n}\n"
            .replace("__PILLAR__DNS__DOMAIN__", "cluster.local"),
    )
    .unwrap();
    std::fs::write(
        dir.join("base/Corefile.base"),
        std::fs::read_to_string(dir.join("base/Corefile.base")).unwrap()
            + ".:53 {\n    errors\n    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__\n    chaos Sextant-nc\n    whoami\n}\n",
    )
    .unwrap();
    let start = Instant::now();
    let mut nc = NodeCache::spawn(&ns, &dir, &["-syncinterval", "1", "-reloadwithsignal"], &[]);
    let server: std::net::SocketAddr = format!("{LOCAL_IP}:53").parse().unwrap();
    // Answers on the link-local address from a client in the namespace.
    let first = in_ns(&ns, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = udp(
                server,
                &Query::new("a.cluster.local.", RecordType::A),
                Duration::from_millis(200),
            ) {
                return r;
            }
            assert!(Instant::now() < deadline, "no answer from {server}");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let to_first_answer = start.elapsed();
    eprintln!("node-cache: first answer {to_first_answer:?} after start");
    assert!(
        to_first_answer < Duration::from_secs(2),
        "{to_first_answer:?}"
    );
    assert_eq!(first.rcode_name(), "NOERROR");
    assert!(first.has_flag("aa"), "{}", first.flags());
    assert!(first.answers().is_empty());
    assert_eq!(
        first.additional()[0],
        "a.cluster.local. 0 IN A 169.254.20.10".to_string()
    );
    // The second address (kube-dns ClusterIP stand-in) answers too, over TCP as well.
    let (via_cluster_ip, via_tcp) = in_ns(&ns, move || {
        let ci: std::net::SocketAddr = format!("{CLUSTER_IP}:53").parse().unwrap();
        let q = Query::new("x.example.", RecordType::A);
        (
            udp(ci, &q, Duration::from_secs(2)).unwrap(),
            tcp(server, &q, Duration::from_secs(2)).unwrap(),
        )
    });
    assert_eq!(
        via_cluster_ip.additional()[0],
        "x.example. 0 IN A 169.254.20.11"
    );
    assert_eq!(via_tcp.rcode_name(), "NOERROR");
    assert!(via_tcp
        .additional()
        .iter()
        .any(|r| r.contains("IN SRV 0 0 ") && r.starts_with("_tcp.x.example. 0")));

    // Interface: created as a bridge here (the kernel lacks dummy), holding both /32s.
    let link = sh(&ns, "ip", &["-d", "addr", "show", "nodelocaldns"]);
    assert!(link.contains(&format!("inet {LOCAL_IP}/32")), "{link}");
    assert!(link.contains(&format!("inet {CLUSTER_IP}/32")), "{link}");
    let log = nc.log();
    assert!(
        log.starts_with("[INFO] Starting node-cache image: sextant-"),
        "{log}"
    );
    if link.contains("dummy") {
        assert!(!log.contains("empty bridge"));
    } else {
        assert!(link.contains("bridge"), "{link}");
        assert!(
            log.contains("[WARNING] Kernel refused link type dummy")
                && log.contains("created nodelocaldns as an empty bridge"),
            "{log}"
        );
    }
    assert!(log.contains("[INFO] Added interface - nodelocaldns"));

    // Rules, exactly, once the server is up (pidfile).
    wait_until("iptables rules", Duration::from_secs(5), || {
        rules_in(&ns).len() == 32
    });
    assert_eq!(rules_in(&ns), expected_rules(&[LOCAL_IP, CLUSTER_IP]));

    // Metric on -metrics-listen-address, every error type at 0.
    let metrics = in_ns(&ns, || {
        http_get(
            "127.0.0.1:9353".parse().unwrap(),
            "/metrics",
            Duration::from_secs(2),
        )
        .unwrap()
    });
    assert_eq!(metrics.0, 200);
    for t in [
        "iptables",
        "iptables_lock",
        "interface_add",
        "interface_check",
        "configmap",
    ] {
        assert!(
            metrics.1.contains(&format!(
                "coredns_nodecache_setup_errors_total{{errortype=\"{t}\"}} 0\n"
            )),
            "{t}: {}",
            metrics.1
        );
    }

    // Delete one rule; it comes back within the sync interval.
    let out = ns
        .exec(
            "iptables",
            &[
                "-w",
                "-t",
                "raw",
                "-D",
                "PREROUTING",
                "-p",
                "udp",
                "-d",
                LOCAL_IP,
                "--dport",
                "53",
                "-m",
                "socket",
                "-j",
                "NOTRACK",
                "-m",
                "comment",
                "--comment",
                "NodeLocal DNS Cache: skip conntrack",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rules_in(&ns).len(), 31);
    wait_until("rule re-added", Duration::from_secs(5), || {
        rules_in(&ns).len() == 32
    });
    assert!(rules_in(&ns).contains(&format!(
        "-A PREROUTING -d {LOCAL_IP}/32 -p udp -m udp --dport 53 -m socket -m comment --comment \"NodeLocal DNS Cache: skip conntrack\" -j NOTRACK"
    )));
    nc.wait_log(
        "[INFO] Added back nodelocaldns rule - {raw PREROUTING [-p udp -d 169.254.20.10",
        Duration::from_secs(1),
    );

    // The rendered Corefile, then a kube-dns ConfigMap change re-renders it.
    let conf = dir.join("Corefile");
    let before = std::fs::read_to_string(&conf).unwrap();
    assert!(
        before.contains("    bind 169.254.20.10 169.254.20.11 \n"),
        "{before}"
    );
    assert!(!before.contains("__PILLAR__"));
    std::fs::write(
        dir.join("kube-dns/stubDomains"),
        r#"{"acme.local": ["127.0.0.1:5300"]}"#,
    )
    .unwrap();
    wait_until("Corefile rewritten", Duration::from_secs(15), || {
        std::fs::read_to_string(&conf)
            .unwrap()
            .contains("acme.local:53 {")
    });
    let after = std::fs::read_to_string(&conf).unwrap();
    assert!(after.ends_with(
        "\nacme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10 169.254.20.11\n    forward . 127.0.0.1:5300\n}\n"
    ), "{after}");
    nc.wait_log(
        "[INFO] Updated Corefile with 1 custom stubdomains and upstream servers /etc/resolv.conf",
        Duration::from_secs(1),
    );
    nc.wait_log(
        "[INFO] Sending reload signal to PID",
        Duration::from_secs(1),
    );
    nc.wait_log("SIGUSR1: Reloading", Duration::from_secs(2));

    // Teardown on SIGTERM: no interface, no rules, nothing else left in the namespace.
    let status = nc.terminate();
    assert!(status.success(), "{status:?}\n{}", nc.log());
    assert!(nc.log().contains("[INFO] Tearing down"));
    assert!(rules_in(&ns).is_empty(), "{:?}", rules_in(&ns));
    let links = sh(&ns, "ip", &["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:"));
    assert!(!dir.join("node-cache.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-skipteardown` leaves the interface and rules; `-setupiptables=false` installs none.
#[test]
fn skip_teardown_and_no_iptables() {
    let ns = NetNs::create("snc").unwrap();
    let dir = tempdir("skip");
    std::fs::write(
        dir.join("base/Corefile.base"),
        ".:53 {\n    bind __PILLAR__LOCAL__DNS__\n    whoami\n}\n",
    )
    .unwrap();
    let mut nc = NodeCache::spawn(
        &ns,
        &dir,
        &[
            "-skipteardown",
            "-setupiptables=false",
            "-interfacename=nlc-test",
        ],
        &[],
    );
    let server: std::net::SocketAddr = format!("{LOCAL_IP}:53").parse().unwrap();
    in_ns(&ns, move || {
        sextant_testkit::wait_dns(server, Duration::from_secs(10)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(rules_in(&ns).is_empty());
    assert!(nc.terminate().success());
    let link = sh(&ns, "ip", &["addr", "show", "nlc-test"]);
    assert!(link.contains(&format!("inet {LOCAL_IP}/32")), "{link}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad flags: a fatal line after the start line, exit 1, nothing created.
#[test]
fn bad_flags_are_fatal() {
    let out = std::process::Command::new(bin())
        .args(["node-cache", "-localip", "169.254.20.10,::1,x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("[INFO] Starting node-cache image: sextant-"));
    assert_eq!(
        lines[1],
        "[FATAL] Error parsing flags - invalid localip specified - \"x\", Exiting"
    );
}

/// The upstream NodeLocal DNSCache template from deploy/node-local-dns.yaml, with the
/// installer's sed substitutions, run by node-cache with the kube-dns ConfigMap pointing at a
/// scripted upstream inside the namespace. Until `cache`, `forward` and `loop` are merged, the
/// server must refuse it naming exactly those plugins.
#[test]
fn upstream_template_in_namespace() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/node-local-dns.yaml"
    ))
    .unwrap();
    let template = manifest
        .split("\n---\n")
        .find(|d| d.contains("kind: ConfigMap") && d.contains("name: node-local-dns"))
        .and_then(|d| d.split_once("  Corefile: |\n"))
        .map(|(_, c)| {
            c.lines()
                .map(|l| l.strip_prefix("    ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        })
        .expect("Corefile in the node-local-dns ConfigMap");
    assert!(
        template.starts_with("__PILLAR__DNS__DOMAIN__:53 {\n    errors\n"),
        "{template}"
    );
    let rendered = template
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__LOCAL__DNS__", LOCAL_IP)
        .replace("__PILLAR__DNS__SERVER__", CLUSTER_IP);

    let ns = NetNs::create("snc").unwrap();
    ns.exec_ok(
        "ip",
        &["addr", "add", &format!("{UPSTREAM_IP}/32"), "dev", "lo"],
    )
    .unwrap();
    let up_addr: std::net::SocketAddr = format!("{UPSTREAM_IP}:53").parse().unwrap();
    let handler: Handler = sextant_testkit::records_handler(&[
        "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5",
        "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1",
        "example.org. 300 IN SOA ns.example.org. h.example.org. 1 2 3 4 60",
        "www.example.org. 300 IN A 192.0.2.80",
    ])
    .unwrap();
    let upstream = NsUpstream::start(&ns, up_addr, handler);
    let dir = tempdir("tmpl");
    std::fs::write(dir.join("base/Corefile.base"), &rendered).unwrap();
    std::fs::write(
        dir.join("kube-dns/upstreamNameservers"),
        format!("[\"{UPSTREAM_IP}\"]"),
    )
    .unwrap();
    let mut nc = NodeCache::spawn(
        &ns,
        &dir,
        &["-upstreamsvc", "kube-dns-upstream"],
        &[("KUBE_DNS_UPSTREAM_SERVICE_HOST", UPSTREAM_IP)],
    );
    let _ = nc.child.id();
    let conf = dir.join("Corefile");
    wait_until("Corefile written", Duration::from_secs(5), || conf.exists());
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(!text.contains("__PILLAR__"), "{text}");
    assert!(
        text.contains(&format!(
            "forward . {UPSTREAM_IP} {{\n            force_tcp\n    }}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\n    forward . {UPSTREAM_IP}\n    prometheus :9253"
        )),
        "{text}"
    );

    // `-check` on the rendered result.
    let check = std::process::Command::new(bin())
        .args(["-check", "-conf"])
        .arg(&conf)
        .output()
        .unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned();
    if !has_plugins(&["cache", "forward", "loop"]) {
        assert_eq!(check.status.code(), Some(1), "{check_out}");
        for line in check_out.lines() {
            assert!(
                ["cache", "forward", "loop"]
                    .iter()
                    .any(|p| line.contains(&format!("Unknown directive '{p}'"))),
                "unexpected -check error: {line}"
            );
        }
        nc.wait_log("[FATAL]", Duration::from_secs(5));
        eprintln!(
            "cache/forward/loop not in this build: checked the template up to those plugins only"
        );
        return;
    }
    assert!(check.status.success(), "{check_out}");
    let server: std::net::SocketAddr = format!("{LOCAL_IP}:53").parse().unwrap();
    let (cluster, external, external_tcp) = in_ns(&ns, move || {
        sextant_testkit::wait_dns(server, Duration::from_secs(10)).unwrap();
        (
            udp(
                server,
                &Query::new("kubernetes.default.svc.cluster.local.", RecordType::A),
                Duration::from_secs(3),
            )
            .unwrap(),
            udp(
                server,
                &Query::new("www.example.org.", RecordType::A),
                Duration::from_secs(3),
            )
            .unwrap(),
            tcp(
                server,
                &Query::new("www.example.org.", RecordType::A),
                Duration::from_secs(3),
            )
            .unwrap(),
        )
    });
    assert_eq!(cluster.rcode_name(), "NOERROR");
    assert_eq!(
        cluster.answers(),
        vec!["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]
    );
    assert_eq!(external.answers().len(), 1, "{:?}", external.answers());
    assert!(external.answers()[0].starts_with("www.example.org. "));
    assert!(external.answers()[0].ends_with(" IN A 192.0.2.80"));
    assert_eq!(external_tcp.rcode_name(), "NOERROR");
    // cluster.local goes to the upstream over TCP (force_tcp), the rest over UDP.
    let stats = upstream.up.as_ref().unwrap().stats();
    assert!(stats.tcp >= 1, "{stats:?}");
    assert!(nc.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}
