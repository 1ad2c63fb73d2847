//! A node in network namespaces for the node-cache zero-loss tests: `node` (where node-cache
//! runs, with kube-proxy-like DNAT rules for the kube-dns and kube-dns-upstream ClusterIPs),
//! `pod` (the client, routed through `node`) and `dns` (cluster DNS instances and the upstream,
//! Knot or Sextant). A bounded open-loop query stream from the pod counts every query that got
//! no correct answer. Everything is created by the test and removed on drop; no traffic leaves
//! the namespaces. Needs root, iproute2, iptables (legacy and nft), nft and knot.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sextant_testkit::*;

pub(crate) const NODE_LOCAL: &str = "169.254.20.10";
/// The kube-dns ClusterIP stand-in (node-cache listens on it too).
pub(crate) const KUBE_DNS: &str = "192.0.2.10";
/// The kube-dns-upstream ClusterIP stand-in (node-cache forwards the cluster domain there).
pub(crate) const KUBE_DNS_UPSTREAM: &str = "192.0.2.11";
pub(crate) const NODE_LOCAL6: &str = "2001:db8:20::10";
pub(crate) const KUBE_DNS6: &str = "2001:db8:96::10";
pub(crate) const KUBE_DNS_UPSTREAM6: &str = "2001:db8:96::11";
/// Cluster DNS instances (pods) in the `dns` namespace, and the upstream ("the internet").
pub(crate) const DNS_A: &str = "203.0.113.2";
pub(crate) const DNS_B: &str = "203.0.113.3";
pub(crate) const DNS_C: &str = "203.0.113.4";
pub(crate) const UPSTREAM: &str = "203.0.113.53";
pub(crate) const DNS_A6: &str = "2001:db8:113::2";
pub(crate) const DNS_B6: &str = "2001:db8:113::3";
/// The headless Service naming the cluster DNS pods (`-fallbackendpoints`).
pub(crate) const ENDPOINTS_NAME: &str = "kube-dns-endpoints.kube-system.svc.cluster.local";

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sextant")
}

pub(crate) fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// One lab test at a time: they measure losses, so they must not starve each other of CPU.
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a thread that entered namespace `name` (sockets, threads and children it
/// creates live there). A panic in `f` is re-raised.
pub(crate) fn in_ns<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let h = spawn_in_ns(name, f);
    match h.join() {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    }
}

pub(crate) fn spawn_in_ns<R: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<R> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Raises the open-file limit to its maximum (a stream holds a socket per query in flight).
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Which iptables the kube-proxy stand-in uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proxy {
    IptablesNft,
    IptablesLegacy,
}

impl Proxy {
    pub(crate) fn program(self, v6: bool) -> String {
        let base = if v6 { "ip6tables" } else { "iptables" };
        match self {
            Proxy::IptablesNft => format!("{base}-nft"),
            Proxy::IptablesLegacy => format!("{base}-legacy"),
        }
    }
}

pub(crate) struct Lab {
    pub node: NetNs,
    pub pod: NetNs,
    pub dns: NetNs,
    pub proxy: Proxy,
    pub v6: bool,
    /// The endpoints programmed last (to clear conntrack for those removed, as kube-proxy does).
    endpoints: Mutex<Vec<String>>,
}

fn sh(ns: &NetNs, prog: &str, args: &[&str]) -> String {
    let out = ns.exec(prog, args).unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn output(ns: &NetNs, prog: &str, args: &[&str]) -> String {
    let out = ns.exec(prog, args).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The zone every Knot serves (root, authoritative): cluster names, an external name and the
/// headless Service of the cluster DNS pods.
pub(crate) const ROOT_ZONE: &str = "$TTL 300
@ SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 60
@ NS ns.example.test.
ns.example.test. A 203.0.113.53
www.example.test. A 192.0.2.80
svc-a.default.svc.cluster.local. 5 A 10.96.1.1
*.wild.default.svc.cluster.local. 5 A 10.96.9.9
kube-dns-endpoints.kube-system.svc.cluster.local. 5 A 203.0.113.2
kube-dns-endpoints.kube-system.svc.cluster.local. 5 A 203.0.113.3
kube-dns-endpoints.kube-system.svc.cluster.local. 5 AAAA 2001:db8:113::2
kube-dns-endpoints.kube-system.svc.cluster.local. 5 AAAA 2001:db8:113::3
";

impl Lab {
    pub(crate) fn new(tag: &str, proxy: Proxy, v6: bool) -> Lab {
        raise_nofile();
        // node-cache fills an ipset in iptables mode (without the tool its rules differ).
        let ipset = std::process::Command::new("ipset")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ipset,
            "ipset not found: install it with `apt-get install -y ipset` (or run ./test.sh)"
        );
        let node = NetNs::create(&format!("{tag}n")).unwrap();
        let pod = NetNs::create(&format!("{tag}p")).unwrap();
        let dns = NetNs::create(&format!("{tag}d")).unwrap();
        let lab = Lab {
            node,
            pod,
            dns,
            proxy,
            v6,
            endpoints: Mutex::new(Vec::new()),
        };
        lab.wire();
        lab
    }

    fn wire(&self) {
        let (n, p, d) = (&self.node, &self.pod, &self.dns);
        for (peer, a, b) in [(p, "ncpod0", "ncpod1"), (d, "ncdns0", "ncdns1")] {
            let out = std::process::Command::new(IP)
                .args(["link", "add", a, "netns", n.name(), "type", "veth", "peer"])
                .args(["name", b, "netns", peer.name()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        sh(n, IP, &["addr", "add", "198.51.100.1/24", "dev", "ncpod0"]);
        sh(p, IP, &["addr", "add", "198.51.100.2/24", "dev", "ncpod1"]);
        sh(n, IP, &["addr", "add", "203.0.113.1/24", "dev", "ncdns0"]);
        for ip in [DNS_A, DNS_B, DNS_C, UPSTREAM] {
            sh(
                d,
                IP,
                &["addr", "add", &format!("{ip}/24"), "dev", "ncdns1"],
            );
        }
        if self.v6 {
            sh(
                n,
                IP,
                &[
                    "-6",
                    "addr",
                    "add",
                    "2001:db8:100::1/64",
                    "dev",
                    "ncpod0",
                    "nodad",
                ],
            );
            sh(
                p,
                IP,
                &[
                    "-6",
                    "addr",
                    "add",
                    "2001:db8:100::2/64",
                    "dev",
                    "ncpod1",
                    "nodad",
                ],
            );
            sh(
                n,
                IP,
                &[
                    "-6",
                    "addr",
                    "add",
                    "2001:db8:113::1/64",
                    "dev",
                    "ncdns0",
                    "nodad",
                ],
            );
            for ip in [DNS_A6, DNS_B6, "2001:db8:113::4", "2001:db8:113::53"] {
                sh(
                    d,
                    IP,
                    &[
                        "-6",
                        "addr",
                        "add",
                        &format!("{ip}/64"),
                        "dev",
                        "ncdns1",
                        "nodad",
                    ],
                );
            }
        }
        for (ns, ifc) in [(n, "ncpod0"), (n, "ncdns0"), (p, "ncpod1"), (d, "ncdns1")] {
            sh(ns, IP, &["link", "set", ifc, "up"]);
        }
        sh(p, IP, &["route", "add", "default", "via", "198.51.100.1"]);
        sh(d, IP, &["route", "add", "default", "via", "203.0.113.1"]);
        // The service range is routed towards the cluster (a real node's default route).
        sh(n, IP, &["route", "add", "192.0.2.0/24", "via", UPSTREAM]);
        sh(n, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        if self.v6 {
            sh(
                p,
                IP,
                &["-6", "route", "add", "default", "via", "2001:db8:100::1"],
            );
            sh(
                d,
                IP,
                &["-6", "route", "add", "default", "via", "2001:db8:113::1"],
            );
            sh(
                n,
                IP,
                &[
                    "-6",
                    "route",
                    "add",
                    "2001:db8:96::/64",
                    "via",
                    "2001:db8:113::53",
                ],
            );
            sh(n, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
        }
    }

    /// Knot serving [`ROOT_ZONE`] on `ip`:53 in the `dns` namespace.
    pub(crate) fn knot(&self, ip: &str) -> Knot {
        let addr = sa(ip, 53);
        in_ns(self.dns.name(), move || {
            Knot::start_on(addr, ".", ROOT_ZONE).unwrap()
        })
    }

    /// Programs (or reprograms, atomically per table) the kube-proxy stand-in: the kube-dns and
    /// kube-dns-upstream ClusterIPs DNATed to `endpoints` (spread with `statistic`, as
    /// kube-proxy's iptables mode does), in PREROUTING (pods) and OUTPUT (the node); then, like
    /// kube-proxy, deletes the UDP conntrack entries NATed to endpoints that are gone.
    pub(crate) fn set_endpoints(&self, endpoints: &[&str]) {
        self.program_endpoints(endpoints);
        let mut last = self.endpoints.lock().unwrap();
        for gone in last.iter().filter(|e| !endpoints.contains(&e.as_str())) {
            let svcs: &[&str] = if gone.contains(':') {
                &[KUBE_DNS6, KUBE_DNS_UPSTREAM6]
            } else {
                &[KUBE_DNS, KUBE_DNS_UPSTREAM]
            };
            for svc in svcs {
                // Exit status 1 just means there was nothing to delete.
                let _ = self.node.exec(
                    "conntrack",
                    &["-D", "-p", "udp", "--orig-dst", svc, "--dst-nat", gone],
                );
            }
        }
        *last = endpoints.iter().map(|e| e.to_string()).collect();
    }

    fn program_endpoints(&self, endpoints: &[&str]) {
        for v6 in [false, true] {
            if v6 && !self.v6 {
                continue;
            }
            let eps: Vec<&str> = endpoints
                .iter()
                .copied()
                .filter(|e| e.contains(':') == v6)
                .collect();
            let (dns, up, plen) = if v6 {
                (KUBE_DNS6, KUBE_DNS_UPSTREAM6, 128)
            } else {
                (KUBE_DNS, KUBE_DNS_UPSTREAM, 32)
            };
            let mut t = String::from(
                "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-DNS - [0:0]\n:KUBE-SVC-UPSTREAM - [0:0]\n",
            );
            for (ip, chain) in [(dns, "KUBE-SVC-DNS"), (up, "KUBE-SVC-UPSTREAM")] {
                for p in ["udp", "tcp"] {
                    t.push_str(&format!(
                        "-A KUBE-SERVICES -d {ip}/{plen} -p {p} -m {p} --dport 53 -j {chain}\n"
                    ));
                }
            }
            for chain in ["KUBE-SVC-DNS", "KUBE-SVC-UPSTREAM"] {
                for (i, e) in eps.iter().enumerate() {
                    let left = eps.len() - i;
                    let stat = if left > 1 {
                        format!(
                            "-m statistic --mode random --probability {:.5} ",
                            1.0 / left as f64
                        )
                    } else {
                        String::new()
                    };
                    t.push_str(&format!("-A {chain} {stat}-j DNAT --to-destination {e}\n"));
                }
            }
            t.push_str("COMMIT\n");
            let program = self.proxy.program(v6);
            let mut child = self
                .node
                .command(&format!("{program}-restore"), &["-w", "5", "--noflush"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{t}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for chain in ["PREROUTING", "OUTPUT"] {
                let check = self
                    .node
                    .exec(
                        &program,
                        &["-w", "5", "-t", "nat", "-C", chain, "-j", "KUBE-SERVICES"],
                    )
                    .unwrap();
                if !check.status.success() {
                    sh(
                        &self.node,
                        &program,
                        &["-w", "5", "-t", "nat", "-I", chain, "-j", "KUBE-SERVICES"],
                    );
                }
            }
        }
    }

    /// `iptables-save`-style dump of every table of the kube-proxy stand-in's flavour.
    pub(crate) fn proxy_rules(&self) -> String {
        let mut s = output(
            &self.node,
            &format!("{}-save", self.proxy.program(false)),
            &[],
        );
        if self.v6 {
            s.push_str(&output(
                &self.node,
                &format!("{}-save", self.proxy.program(true)),
                &[],
            ));
        }
        strip_save_noise(&s)
    }

    /// The links of the node namespace, by name.
    pub(crate) fn links(&self) -> Vec<String> {
        output(&self.node, IP, &["-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_string())
            })
            .collect()
    }
}

/// The rules and non-builtin chains of an iptables-save dump (no comments, counters or
/// builtin chains, which a table gains just by being used).
pub(crate) fn strip_save_noise(s: &str) -> String {
    const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    s.lines()
        .filter_map(|l| {
            if l.starts_with("-A ") {
                Some(l.to_string())
            } else if let Some(c) = l.strip_prefix(':') {
                let name = c.split(' ').next().unwrap_or("");
                (!BUILTIN.contains(&name)).then(|| format!(":{name}"))
            } else {
                None
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The node-local-dns ConfigMap's Corefile from deploy/node-local-dns.yaml, rendered the way
/// the install docs say (`sed` of the three installer variables).
pub(crate) fn template(local_dns: &str, dns_server: &str) -> String {
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
    template
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__LOCAL__DNS__", local_dns)
        .replace("__PILLAR__DNS__SERVER__", dns_server)
}

/// A node-cache process in the lab's node namespace, started with the DaemonSet's flags (its own
/// directory, like a pod's filesystem).
pub(crate) struct NodeCache {
    pub s: Sextant,
}

pub(crate) struct NodeCacheOpts<'a> {
    pub local_ips: &'a str,
    pub base: String,
    pub extra: Vec<&'a str>,
}

impl NodeCache {
    pub(crate) fn start(lab: &Lab, o: &NodeCacheOpts<'_>) -> NodeCache {
        let mut args: Vec<String> = [
            "netns",
            "exec",
            lab.node.name(),
            bin(),
            "node-cache",
            "-localip",
            o.local_ips,
            "-conf",
            "Corefile",
            "-basecorefile",
            "base/Corefile.base",
            "-kubednscm",
            "kube-dns",
            "-upstreamsvc",
            "kube-dns-upstream",
            "-pidfile",
            "node-cache.pid",
            "-syncinterval",
            "1",
            "-fallbackendpoints",
            ENDPOINTS_NAME,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(o.extra.iter().map(|s| s.to_string()));
        let s = Sextant::builder(Path::new(IP), "")
            .conf_flag(false)
            .args(args)
            .file("base/Corefile.base", &o.base)
            .file("kube-dns/upstreamNameservers", format!("[\"{UPSTREAM}\"]"))
            .env("KUBE_DNS_UPSTREAM_SERVICE_HOST", KUBE_DNS_UPSTREAM)
            .start();
        NodeCache { s }
    }

    /// Waits until it serves (its banner is printed once the listeners are read).
    pub(crate) fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.s.count_lines("CoreDNS-") > 0 {
                return;
            }
            assert!(
                self.s.exited().is_none(),
                "node-cache exited:\n{}",
                self.s.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node-cache not serving within 20 s:\n{}", self.s.output());
    }

    pub(crate) fn wait_line(&self, needle: &str, within: Duration) {
        if self.s.wait_for_line(needle, within).is_err() {
            panic!("no line {needle:?} within {within:?}:\n{}", self.s.output());
        }
    }

    pub(crate) fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        match self.s.wait_exit(within) {
            Some(st) => st,
            None => panic!(
                "node-cache did not exit within {within:?}:\n{}",
                self.s.output()
            ),
        }
    }
}

/// What a query of the stream asks and must get back (answers without TTLs).
#[derive(Clone)]
pub(crate) struct Ask {
    pub name: String,
    pub want: Vec<String>,
}

/// The stream's questions: a cached cluster name, a cluster name never asked before (a cache
/// miss the node cache forwards to the cluster DNS over TCP) and an external name.
pub(crate) fn ask(i: u64) -> Ask {
    match i % 3 {
        0 => Ask {
            name: "svc-a.default.svc.cluster.local.".into(),
            want: vec!["svc-a.default.svc.cluster.local. IN A 10.96.1.1".into()],
        },
        1 => {
            let name = format!(
                "q{i}-{}.wild.default.svc.cluster.local.",
                std::process::id()
            );
            Ask {
                want: vec![format!("{name} IN A 10.96.9.9")],
                name,
            }
        }
        _ => Ask {
            name: "www.example.test.".into(),
            want: vec!["www.example.test. IN A 192.0.2.80".into()],
        },
    }
}

/// One query of a stream.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// When it was sent, from the start of the stream.
    pub sent: Duration,
    pub tcp: bool,
    /// None: answered right. Some: why not.
    pub failure: Option<String>,
}

/// A running stream.
pub(crate) struct QueryStream {
    pub target: SocketAddr,
    pub start: Instant,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Outcome>>,
}

/// A query that got no correct answer within this long is lost.
pub(crate) const LOST_AFTER: Duration = Duration::from_secs(2);

/// Starts an open-loop stream from the `pod` namespace to `target`: `qps` queries a second
/// (every tenth over TCP, each on a new connection, every UDP query from a new source port, as a
/// stub resolver does), until stopped or `max` passed.
pub(crate) fn stream(lab: &Lab, target: SocketAddr, qps: u32, max: Duration) -> QueryStream {
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let start = Instant::now();
    let handle = spawn_in_ns(lab.pod.name(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_stream(target, qps, max, st, start))
    });
    QueryStream {
        target,
        start,
        stop,
        handle,
    }
}

async fn run_stream(
    target: SocketAddr,
    qps: u32,
    max: Duration,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> Vec<Outcome> {
    let every = Duration::from_secs_f64(1.0 / f64::from(qps));
    let mut tasks = Vec::new();
    let mut i: u64 = 0;
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < max {
        tokio::time::sleep_until(next).await;
        next += every;
        let a = ask(i);
        let tcp = i % 10 == 9;
        let sent = start.elapsed();
        i += 1;
        tasks.push(tokio::spawn(async move {
            let failure = match tokio::time::timeout(LOST_AFTER, one(target, &a, tcp)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("lost: no answer within 2 s".to_string()),
            };
            Outcome { sent, tcp, failure }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(o) = t.await {
            out.push(o);
        }
    }
    out
}

async fn one(target: SocketAddr, a: &Ask, tcp: bool) -> Result<(), String> {
    let id: u16 = rand_id();
    let q = Query::new(&a.name, RecordType::A).id(id).to_bytes();
    let bytes = if tcp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("lost: tcp connect: {e}"))?;
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        c.write_all(&msg)
            .await
            .map_err(|e| format!("lost: tcp write: {e}"))?;
        let mut len = [0u8; 2];
        c.read_exact(&mut len)
            .await
            .map_err(|e| format!("lost: tcp read: {e}"))?;
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        c.read_exact(&mut body)
            .await
            .map_err(|e| format!("lost: tcp read: {e}"))?;
        body
    } else {
        let bind: SocketAddr = if target.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let s = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("bind: {e}"))?;
        s.send_to(&q, target)
            .await
            .map_err(|e| format!("lost: send: {e}"))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = s
                .recv_from(&mut buf)
                .await
                .map_err(|e| format!("lost: recv: {e}"))?;
            if from == target && n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                buf.truncate(n);
                break buf;
            }
        }
    };
    let r = Reply::parse(bytes).map_err(|e| format!("wrong: unparsable answer: {e}"))?;
    let got: Vec<String> = r
        .answers()
        .iter()
        .map(|s| {
            let f: Vec<&str> = s.split_whitespace().collect();
            let mut g = vec![f[0]];
            g.extend_from_slice(&f[2..]);
            g.join(" ")
        })
        .collect();
    if r.id() != id || r.rcode_name() != "NOERROR" || got != a.want || !r.has_flag("qr") {
        return Err(format!(
            "wrong: {} {} {got:?} for {}",
            r.rcode_name(),
            r.flags(),
            a.name
        ));
    }
    Ok(())
}

fn rand_id() -> u16 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0x9e37);
    let x = N.fetch_add(0x9e37_79b9, Ordering::Relaxed);
    (x ^ (x >> 16)) as u16
}

/// A finished stream.
pub(crate) struct Report {
    pub target: SocketAddr,
    pub start: Instant,
    pub outcomes: Vec<Outcome>,
}

impl QueryStream {
    /// Stops sending and waits for the answers in flight (at most [`LOST_AFTER`]).
    pub(crate) fn finish(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let outcomes = self.handle.join().expect("stream thread");
        Report {
            target: self.target,
            start: self.start,
            outcomes,
        }
    }
}

impl Report {
    pub(crate) fn sent(&self) -> usize {
        self.outcomes.len()
    }

    pub(crate) fn failed(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| o.failure.is_some())
            .collect()
    }

    pub(crate) fn lost(&self) -> usize {
        self.failed().len()
    }

    /// Failures among the queries sent between `from` and `to` (instants).
    pub(crate) fn lost_between(&self, from: Instant, to: Instant) -> usize {
        let (a, b) = (from - self.start, to.saturating_duration_since(self.start));
        self.outcomes
            .iter()
            .filter(|o| o.sent >= a && o.sent < b && o.failure.is_some())
            .count()
    }

    /// After `t`: how long until queries were answered again (the send time of the last failed
    /// query sent after `t`, plus one query interval), zero if none failed.
    pub(crate) fn recovered_after(&self, t: Instant) -> Duration {
        let a = t.saturating_duration_since(self.start);
        self.outcomes
            .iter()
            .filter(|o| o.sent >= a && o.failure.is_some())
            .map(|o| o.sent - a)
            .max()
            .unwrap_or_default()
    }

    pub(crate) fn summary(&self, what: &str) -> String {
        let f = self.failed();
        let mut s = format!(
            "{what}: {} lost of {} queries to {} ({} over TCP)",
            f.len(),
            self.sent(),
            self.target,
            self.outcomes.iter().filter(|o| o.tcp).count()
        );
        for o in f.iter().take(8) {
            s.push_str(&format!(
                "\n    at {:.3}s{}: {}",
                o.sent.as_secs_f64(),
                if o.tcp { " tcp" } else { "" },
                o.failure.as_deref().unwrap_or("")
            ));
        }
        s
    }
}

/// The node-cache rules in an `iptables-save` dump, in order.
pub(crate) fn nodelocal_lines(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.contains("NodeLocal DNS Cache") || l.contains("NODE-LOCAL-DNS-FALLBACK"))
        .map(String::from)
        .collect()
}

/// Polls `f` every 20 ms until true or `within` passed.
pub(crate) fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// A cluster DNS instance (a CoreDNS pod's job, done by Sextant) on `ip`:53 in the `dns`
/// namespace: lameduck 2 s, ready, forwarding to the upstream Knot.
pub(crate) fn cluster_dns(lab: &Lab, ip: &str) -> Sextant {
    let corefile = format!(
        ".:53 {{\n    bind {ip}\n    errors\n    health {ip}:8080 {{\n        lameduck 2s\n    }}\n    ready {ip}:8181\n    forward . {UPSTREAM}\n    cache 30\n}}\n"
    );
    Sextant::builder(Path::new(IP), &corefile)
        .conf_flag(false)
        .args(["netns", "exec", lab.dns.name(), bin(), "-conf", "Corefile"])
        .start()
}

/// `/ready`'s status of the cluster DNS instance on `ip` (0 if it does not answer).
pub(crate) fn ready(lab: &Lab, ip: &str) -> u16 {
    let a = sa(ip, 8181);
    in_ns(lab.dns.name(), move || {
        http_get(a, "/ready", Duration::from_millis(500))
            .map(|r| r.0)
            .unwrap_or(0)
    })
}

/// A TCP connection from the `pod` namespace kept open across an event, to ask one query on it
/// before and one after (a stub resolver reusing its connection, or one slow to send its query).
pub(crate) struct HeldTcp {
    pub target: SocketAddr,
    conn: std::net::TcpStream,
    n: u64,
}

impl HeldTcp {
    /// Connects (no query yet).
    pub(crate) fn open(lab: &Lab, target: SocketAddr) -> HeldTcp {
        let conn = in_ns(lab.pod.name(), move || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))
        })
        .unwrap_or_else(|e| panic!("tcp connect {target}: {e}"));
        conn.set_read_timeout(Some(LOST_AFTER)).unwrap();
        HeldTcp { target, conn, n: 0 }
    }

    /// Asks the stream's next kind of question on the held connection; Err says why it got no
    /// correct answer.
    pub(crate) fn ask(&mut self) -> Result<(), String> {
        use std::io::{Read, Write};
        let a = ask(self.n);
        self.n += 1;
        let id = rand_id();
        let q = Query::new(&a.name, RecordType::A).id(id).to_bytes();
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        self.conn
            .write_all(&msg)
            .map_err(|e| format!("tcp write: {e}"))?;
        let mut len = [0u8; 2];
        self.conn
            .read_exact(&mut len)
            .map_err(|e| format!("tcp read: {e}"))?;
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        self.conn
            .read_exact(&mut body)
            .map_err(|e| format!("tcp read: {e}"))?;
        let r = Reply::parse(body).map_err(|e| format!("unparsable answer: {e}"))?;
        let got: Vec<String> = r
            .answers()
            .iter()
            .map(|s| {
                let f: Vec<&str> = s.split_whitespace().collect();
                let mut g = vec![f[0]];
                g.extend_from_slice(&f[2..]);
                g.join(" ")
            })
            .collect();
        if r.id() != id || r.rcode_name() != "NOERROR" || got != a.want || !r.has_flag("qr") {
            return Err(format!("wrong: {} {got:?} for {}", r.rcode_name(), a.name));
        }
        Ok(())
    }
}
