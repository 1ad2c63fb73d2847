//! Every Corefile of `tests/corefiles/` (the Corefiles that Kubernetes distributions ship or
//! document, table in `tests/corefiles/README.md`) passes `-check`, starts and answers over the
//! wire. Each runs as written, with only what a test box needs changed: listener and HTTP ports
//! moved to free ones on 127.0.0.1, each `bind` address to its own 127.0.0.N (the first to
//! 127.0.0.1), `/etc/coredns/` (and `/etc/pki/` as `pki/`, kops' `/rootfs/etc/` as
//! `rootfs/etc/`) files taken from `NAME.files/`, every forward upstream replaced by one scripted
//! upstream, and an `endpoint` to the fake API server added to `kubernetes`. With `COREDNS_BIN`
//! set, CoreDNS runs the same rewritten Corefile and every answer must be the same (rcode,
//! flags, sections). `# Expect:` lines name answers the Corefile must give over 127.0.0.1,
//! `# Expect6:` lines the same over `[::1]`.
//!
//! A Corefile whose header says `# Needs: PLUGINS -> BRANCH` uses plugins another branch adds: it
//! must fail `-check` naming one of them (so the table is updated when they land); `# Fails:
//! TEXT -> OWNER` marks a known gap of an existing plugin the same way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sextant_fakeapi::{endpoint, endpoint_slice, namespace, service, FakeApi};
use sextant_testkit::*;

const T: Duration = Duration::from_secs(5);
/// What the scripted upstream answers every A query with.
const UPSTREAM_A: &str = "192.0.2.55";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corefiles")
}

/// One collected Corefile.
struct Case {
    name: String,
    text: String,
    /// Plugins another branch adds (from `# Needs:`), and that branch.
    needs: Option<(Vec<String>, String)>,
    /// `# Fails: TEXT -> OWNER`: a known Sextant gap another issue closes; `-check` must still
    /// fail with TEXT in its error.
    fails: Option<(String, String)>,
    /// `# Expect: NAME TYPE ANSWER` lines: an answer this Corefile must give.
    expect: Vec<(String, RecordType, String)>,
    /// `# Expect6: NAME TYPE ANSWER` lines: the same, asked over IPv6 (`[::1]`).
    expect6: Vec<(String, RecordType, String)>,
    /// Files next to the Corefile (`NAME.files/`), relative path and contents.
    files: Vec<(String, String)>,
}

fn read_files(root: &Path, at: &Path, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(at) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_files(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir()).unwrap() {
        let p = e.unwrap().path();
        let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".Corefile"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&p).unwrap();
        let mut needs = None;
        let mut fails = None;
        let mut expect = Vec::new();
        let mut expect6 = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# Needs:") {
                let (plugins, branch) = rest.split_once("->").expect("# Needs: P... -> BRANCH");
                needs = Some((
                    plugins.split_whitespace().map(String::from).collect(),
                    branch.trim().to_string(),
                ));
            }
            if let Some(rest) = l.strip_prefix("# Fails:") {
                let (text, owner) = rest.split_once("->").expect("# Fails: TEXT -> OWNER");
                fails = Some((text.trim().to_string(), owner.trim().to_string()));
            }
            for (prefix, to) in [("# Expect:", &mut expect), ("# Expect6:", &mut expect6)] {
                if let Some(rest) = l.strip_prefix(prefix) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let t: RecordType = f[1].parse().unwrap();
                    to.push((f[0].to_string(), t, f[2..].join(" ")));
                }
            }
        }
        let mut files = Vec::new();
        let fdir = dir().join(format!("{name}.files"));
        read_files(&fdir, &fdir, &mut files);
        out.push(Case {
            name: name.to_string(),
            text,
            needs,
            fails,
            expect,
            expect6,
            files,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Free loopback addresses for one run: the DNS port, one address per distinct HTTP address
/// of the Corefile (blocks that share an address keep sharing it), and one loopback address
/// per distinct `bind` address, in order of appearance (the first is 127.0.0.1, where the
/// common questions go; blocks of the same zone on different addresses stay apart).
struct Ports {
    dns: u16,
    http: HashMap<String, String>,
    binds: Vec<String>,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            dns: free_port(),
            http: HashMap::new(),
            binds: Vec::new(),
        }
    }

    /// The loopback address standing in for the Corefile's `bind` address `orig`.
    fn bind(&mut self, orig: &str) -> String {
        let i = match self.binds.iter().position(|b| b == orig) {
            Some(i) => i,
            None => {
                self.binds.push(orig.to_string());
                self.binds.len() - 1
            }
        };
        format!("127.0.0.{}", i + 1)
    }

    /// The test's address of the listener the Corefile binds to `orig`.
    fn listener(&mut self, orig: &str) -> SocketAddr {
        SocketAddr::new(self.bind(orig).parse().unwrap(), self.dns)
    }

    fn http(&mut self, plugin: &str, orig: Option<&str>) -> String {
        let key = format!("{plugin} {}", orig.unwrap_or(""));
        self.http
            .entry(key)
            .or_insert_with(|| format!("127.0.0.1:{}", free_port()))
            .clone()
    }
}

/// The test-box rewrite of one Corefile (or imported file) text; see the module comment.
/// `keys`: lines at column 0 that open a block are server keys (not in `*.override` files,
/// which hold directives for inside a block).
fn rewrite(text: &str, keys: bool, ports: &mut Ports, api: &str, upstream: SocketAddr) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let opens = words.last() == Some(&"{");
        let args: Vec<&str> = words
            .iter()
            .skip(1)
            .take_while(|w| **w != "{")
            .copied()
            .collect();
        let brace = if opens { " {" } else { "" };
        let first = words.first().copied().unwrap_or("");
        let new = if keys
            && indent.is_empty()
            && opens
            && !first.starts_with('(')
            && !first.starts_with('#')
            && first != "import"
        {
            // Server keys: every key on the test's port.
            let keys: Vec<String> = words[..words.len() - 1]
                .iter()
                .map(|k| match k.rsplit_once(':') {
                    Some((zone, _)) => format!("{zone}:{}", ports.dns),
                    None => format!("{k}:{}", ports.dns),
                })
                .collect();
            format!("{} {{", keys.join(" "))
        } else {
            match first {
                "kubernetes" if opens => format!("{line}\n{indent}    endpoint {api}"),
                "kubernetes" => format!("{line} {{\n{indent}    endpoint {api}\n{indent}}}"),
                "prometheus" | "health" | "ready" if !indent.is_empty() || !keys => {
                    let a = ports.http(first, args.first().copied());
                    format!("{indent}{first} {a}{brace}")
                }
                "forward" if args.len() >= 2 => {
                    format!("{indent}forward {} {upstream}{brace}", args[0])
                }
                "bind" => {
                    let a: Vec<String> = args.iter().map(|a| ports.bind(a)).collect();
                    format!("{indent}bind {}{brace}", a.join(" "))
                }
                _ => line
                    .replace("/etc/coredns/", "")
                    .replace("/etc/pki/", "pki/")
                    .replace("/rootfs/etc/", "rootfs/etc/")
                    .replace("{$POD_IP}", "127.0.0.1"),
            }
        };
        out.push_str(&new);
        out.push('\n');
    }
    out
}

/// The cluster every Corefile with `kubernetes` serves.
fn cluster(rt: &tokio::runtime::Runtime) -> FakeApi {
    let api = rt.block_on(FakeApi::start()).expect("fake api");
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
    api.apply(service("shop", "db").headless().port("pg", 5432, "TCP"))
        .unwrap();
    api.apply(
        endpoint_slice("shop", "db-a", "db")
            .endpoint(endpoint("10.244.0.10").hostname("db-0"))
            .port("pg", 5432, "TCP"),
    )
    .unwrap();
    api
}

/// (rcode, flags, answers, authority, additional) with records' whitespace normalised and SOA
/// serials dropped (they follow the clock of the API's last change).
type Whole = (String, String, Vec<String>, Vec<String>, Vec<String>);

fn whole(r: &Reply) -> Whole {
    let norm = |v: Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = v
            .into_iter()
            .map(|s| {
                let mut f: Vec<String> = s.split_whitespace().map(String::from).collect();
                if f.get(3).map(String::as_str) == Some("SOA") && f.len() > 6 {
                    f[6] = "SERIAL".into();
                }
                f.join(" ")
            })
            .collect();
        v.sort();
        v
    };
    (
        r.rcode_name(),
        r.flags(),
        norm(r.answers()),
        norm(r.authority()),
        norm(r.additional()),
    )
}

/// The questions every Corefile is asked.
fn questions(c: &Case) -> Vec<(String, RecordType)> {
    let mut q: Vec<(String, RecordType)> = [
        ("kubernetes.default.svc.cluster.local.", RecordType::A),
        ("web.shop.svc.cluster.local.", RecordType::A),
        ("web.shop.svc.cluster.local.", RecordType::AAAA),
        ("db.shop.svc.cluster.local.", RecordType::A),
        ("_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV),
        ("nope.shop.svc.cluster.local.", RecordType::A),
        ("20.0.96.10.in-addr.arpa.", RecordType::PTR),
        ("www.example.org.", RecordType::A),
        ("www.example.test.", RecordType::A),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), *t))
    .collect();
    q.extend(c.expect.iter().map(|(n, t, _)| (n.clone(), *t)));
    q
}

/// True when a (non-comment) line of the Corefile is a `kubernetes` directive.
fn has_kubernetes(text: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().next() == Some("kubernetes"))
}

/// Starts `binary` on the case rewritten for `ports`; waits until cluster data is served.
fn start(
    binary: &Path,
    c: &Case,
    ports: &mut Ports,
    api: &FakeApi,
    upstream: SocketAddr,
) -> Sextant {
    let text = rewrite(&c.text, true, ports, &api.url(), upstream);
    let mut b = Sextant::builder(binary, &text).env("POD_IP", "127.0.0.1");
    for (rel, body) in &c.files {
        b = b.file(
            rel,
            rewrite(
                body,
                !rel.ends_with(".override"),
                ports,
                &api.url(),
                upstream,
            ),
        );
    }
    let mut s = b.start();
    let a = SocketAddr::from(([127, 0, 0, 1], ports.dns));
    s.wait_dns(a, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{}: {e}\n{text}\n{}", c.name, s.output()));
    if has_kubernetes(&c.text) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let q = Query::new("web.shop.svc.cluster.local.", RecordType::A);
        while udp(a, &q, T)
            .map(|r| r.answers().is_empty())
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "{}: no cluster data\n{}",
                c.name,
                s.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    s
}

#[test]
fn every_collected_corefile_checks_starts_and_answers() {
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "the collection went missing: {}",
        cases.len()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let upstream = Upstream::start(|req: &UpstreamRequest| match req.qtype() {
        RecordType::A => req
            .reply()
            .answer(&format!("{} 60 IN A {UPSTREAM_A}", req.name()))
            .action(),
        _ => req.reply().action(),
    })
    .unwrap();
    let coredns = std::env::var("COREDNS_BIN").ok().map(PathBuf::from);
    if coredns.is_none() {
        eprintln!("COREDNS_BIN not set: answers are checked, not compared with CoreDNS");
    }
    let mut ran = Vec::new();
    for c in &cases {
        let mut ports = Ports::new();
        let text = rewrite(&c.text, true, &mut ports, &api.url(), upstream.addr());
        if let Some((plugins, branch)) = &c.needs {
            let mut b = Sextant::builder(bin(), &text).arg("-check");
            for (rel, body) in &c.files {
                b = b.file(rel, body);
            }
            let (code, out, err) = Sextant::run_to_end(b, T).unwrap();
            let all = format!("{out}{err}");
            assert_ne!(
                code, 0,
                "{}: passes -check now: update its # Needs and the table",
                c.name
            );
            assert!(
                plugins.iter().any(|p| all.contains(&format!("'{p}'"))),
                "{}: -check should name one of {plugins:?} (finished by {branch}):\n{all}",
                c.name
            );
            eprintln!("{}: needs {plugins:?}, finished by {branch}", c.name);
            continue;
        }
        if let Some((want, owner)) = &c.fails {
            let mut b = Sextant::builder(bin(), &text).arg("-check");
            for (rel, body) in &c.files {
                b = b.file(rel, body);
            }
            let (code, out, err) = Sextant::run_to_end(b, T).unwrap();
            let all = format!("{out}{err}");
            assert!(
                code != 0 && all.contains(want.as_str()),
                "{}: expected -check to fail with {want:?} (closed by {owner}); update the table:\n{all}",
                c.name
            );
            eprintln!("{}: fails with {want:?}, closed by {owner}", c.name);
            continue;
        }
        let mut b = Sextant::builder(bin(), &text).arg("-check");
        for (rel, body) in &c.files {
            b = b.file(
                rel,
                rewrite(
                    body,
                    !rel.ends_with(".override"),
                    &mut ports,
                    &api.url(),
                    upstream.addr(),
                ),
            );
        }
        let (code, out, err) = Sextant::run_to_end(b, T).unwrap();
        assert_eq!(code, 0, "{}: -check failed:\n{out}{err}\n{text}", c.name);

        let _ours = start(bin(), c, &mut ports, &api, upstream.addr());
        let ours = SocketAddr::from(([127, 0, 0, 1], ports.dns));
        let has_k8s = has_kubernetes(&c.text);
        let mut answers = Vec::new();
        for (name, t) in questions(c) {
            let q = Query::new(&name, t).edns(1232);
            let r = udp(ours, &q, T).unwrap_or_else(|e| panic!("{} {name} {t}: {e}", c.name));
            answers.push(((name.clone(), t), whole(&r)));
        }
        let get = |n: &str, t: RecordType| {
            answers
                .iter()
                .find(|((an, at), _)| an == n && *at == t)
                .map(|(_, w)| w.clone())
                .unwrap()
        };
        // Cluster names from the API when the Corefile has `kubernetes`, else from upstream.
        let k = get("kubernetes.default.svc.cluster.local.", RecordType::A);
        let want_ip = if has_k8s { "10.96.0.1" } else { UPSTREAM_A };
        assert!(
            k.2.iter().any(|a| a.ends_with(&format!("IN A {want_ip}"))),
            "{}: {k:?}",
            c.name
        );
        let w = get("www.example.org.", RecordType::A);
        assert_eq!(w.0, "NOERROR", "{}: {w:?}", c.name);
        assert!(
            w.2.iter().any(|a| a.ends_with(UPSTREAM_A)),
            "{}: {w:?}",
            c.name
        );
        for (name, t, want) in &c.expect {
            let got = get(name, *t);
            assert!(
                got.2.iter().any(|a| a.ends_with(want.as_str())),
                "{}: {name} {t} should answer {want}: {got:?}",
                c.name
            );
        }
        let ours6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, ports.dns));
        let mut answers6 = Vec::new();
        for (name, t, want) in &c.expect6 {
            let q = Query::new(name, *t).edns(1232);
            let r =
                udp(ours6, &q, T).unwrap_or_else(|e| panic!("{} {name} {t} over ::1: {e}", c.name));
            let got = whole(&r);
            assert!(
                got.2.iter().any(|a| a.ends_with(want.as_str())),
                "{}: {name} {t} over ::1 should answer {want}: {got:?}",
                c.name
            );
            answers6.push(((name.clone(), *t), got));
        }
        if let Some(cd) = &coredns {
            let mut cports = Ports::new();
            let _theirs = start(cd, c, &mut cports, &api, upstream.addr());
            let theirs = SocketAddr::from(([127, 0, 0, 1], cports.dns));
            for ((name, t), w) in &answers {
                let q = Query::new(name, *t).edns(1232);
                let r = udp(theirs, &q, T).unwrap();
                assert_eq!(&whole(&r), w, "{}: {name} {t} differs from CoreDNS", c.name);
            }
            let theirs6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, cports.dns));
            for ((name, t), w) in &answers6 {
                let q = Query::new(name, *t).edns(1232);
                let r = udp(theirs6, &q, T).unwrap();
                assert_eq!(
                    &whole(&r),
                    w,
                    "{}: {name} {t} over ::1 differs from CoreDNS",
                    c.name
                );
            }
        }
        ran.push(c.name.clone());
    }
    eprintln!("served and answered: {ran:?}");
}

/// NSID option code (RFC 5001).
const NSID: u16 = 3;

/// AKS LocalDNS runs one Corefile with two listeners: 169.254.10.10 for node (VnetDNS) traffic
/// and 169.254.10.11 for pods (KubeDNS traffic), each with `.` and `cluster.local` blocks. Each
/// listener is asked directly: its NSID, the whoami health check both share, the two Azure
/// templates (NXDOMAIN for deep internal.cloudapp.net names and reddog.microsoft.com, a short
/// internal.cloudapp.net name falls through to the upstream), cluster names forwarded over TCP
/// (`force_tcp`), and with `COREDNS_BIN` the same answers from CoreDNS.
#[test]
fn aks_localdns_answers_on_both_listeners() {
    let c = cases()
        .into_iter()
        .find(|c| c.name == "aks-localdns")
        .expect("tests/corefiles/aks-localdns.Corefile");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = cluster(&rt);
    let upstream = Upstream::start(|req: &UpstreamRequest| match req.qtype() {
        RecordType::A => req
            .reply()
            .answer(&format!("{} 60 IN A {UPSTREAM_A}", req.name()))
            .action(),
        _ => req.reply().action(),
    })
    .unwrap();

    /// What one listener answers: per question, the whole answer and the NSID option.
    fn ask(node: SocketAddr, pod: SocketAddr) -> Vec<(String, Whole, Option<String>)> {
        let mut out = Vec::new();
        for (who, at) in [("node", node), ("pod", pod)] {
            for (name, t) in [
                ("www.example.org.", RecordType::A),
                ("kubernetes.default.svc.cluster.local.", RecordType::A),
                ("a.b.c.d.internal.cloudapp.net.", RecordType::A),
                ("vm1.internal.cloudapp.net.", RecordType::A),
                ("x.reddog.microsoft.com.", RecordType::AAAA),
                ("health-check.localdns.local.", RecordType::A),
            ] {
                let q = Query::new(name, t).edns(1232).edns_option(NSID, &[]);
                let r = udp(at, &q, T).unwrap_or_else(|e| panic!("{who} {name} {t}: {e}"));
                let nsid = r.edns().and_then(|e| {
                    e.options
                        .iter()
                        .find(|(code, _)| *code == NSID)
                        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
                });
                let mut w = whole(&r);
                // whoami's SRV carries the client's source port: keep its A record only.
                w.4.retain(|rr| !rr.contains(" SRV "));
                out.push((format!("{who} {name} {t}"), w, nsid));
            }
        }
        out
    }

    let mut ports = Ports::new();
    let _s = start(bin(), &c, &mut ports, &api, upstream.addr());
    let node = ports.listener("169.254.10.10");
    let pod = ports.listener("169.254.10.11");
    assert_eq!(
        (node.ip().to_string(), pod.ip().to_string()),
        ("127.0.0.1".to_string(), "127.0.0.2".to_string())
    );
    let tcp_before = upstream.queries_tcp();
    let ours = ask(node, pod);
    let get = |key: &str| -> (Whole, Option<String>) {
        ours.iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, w, n)| (w.clone(), n.clone()))
            .unwrap()
    };
    for (who, nsid) in [("node", "localdns"), ("pod", "localdns-pod")] {
        let (w, n) = get(&format!("{who} www.example.org. A"));
        assert_eq!(w.0, "NOERROR", "{who}: {w:?}");
        assert_eq!(w.2, vec![format!("www.example.org. 60 IN A {UPSTREAM_A}")]);
        assert_eq!(n.as_deref(), Some(nsid), "{who}: NSID");
        let (w, n) = get(&format!("{who} kubernetes.default.svc.cluster.local. A"));
        assert_eq!(
            w.2,
            vec![format!(
                "kubernetes.default.svc.cluster.local. 60 IN A {UPSTREAM_A}"
            )],
            "{who}"
        );
        assert_eq!(n.as_deref(), Some(nsid), "{who}: NSID of cluster.local");
        let (w, n) = get(&format!("{who} a.b.c.d.internal.cloudapp.net. A"));
        assert_eq!((w.0.as_str(), w.2.len()), ("NXDOMAIN", 0), "{who}: {w:?}");
        assert_eq!(n.as_deref(), Some(nsid), "{who}: NSID of a template answer");
        let (w, _) = get(&format!("{who} vm1.internal.cloudapp.net. A"));
        assert_eq!(
            w.2,
            vec![format!("vm1.internal.cloudapp.net. 60 IN A {UPSTREAM_A}")],
            "{who}: a short internal name falls through to the upstream"
        );
        let (w, _) = get(&format!("{who} x.reddog.microsoft.com. AAAA"));
        assert_eq!((w.0.as_str(), w.2.len()), ("NXDOMAIN", 0), "{who}: {w:?}");
        let (w, _) = get(&format!("{who} health-check.localdns.local. A"));
        assert_eq!(w.0, "NOERROR", "{who}: {w:?}");
        assert!(
            w.4.iter()
                .any(|rr| rr.starts_with("health-check.localdns.local. 0 IN A 127.0.0.1")),
            "{who}: whoami names the client: {w:?}"
        );
    }
    assert!(
        upstream.queries_tcp() >= tcp_before + 2,
        "cluster.local is forwarded over TCP (force_tcp) from both listeners"
    );

    let Some(cd) = std::env::var("COREDNS_BIN").ok().map(PathBuf::from) else {
        eprintln!("COREDNS_BIN not set: LocalDNS answers are checked, not compared with CoreDNS");
        return;
    };
    let mut cports = Ports::new();
    let _t = start(&cd, &c, &mut cports, &api, upstream.addr());
    let theirs = ask(
        cports.listener("169.254.10.10"),
        cports.listener("169.254.10.11"),
    );
    for ((k, w, n), (_, tw, tn)) in ours.iter().zip(&theirs) {
        assert_eq!((w, n), (tw, tn), "{k} differs from CoreDNS");
    }
}
