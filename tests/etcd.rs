//! The `etcd` plugin end to end against a real etcd v3 (Debian's `etcd-server`, started here on
//! loopback high ports with a temporary data dir; records written with `etcdctl`): whole
//! answers for SkyDNS keys and their changes through the watch, etcd stopped mid-run (the last
//! good data served, said in the log and `sextant_etcd_up`) and started again, TLS with and
//! without client certificates, user/password authentication with a client certificate that has
//! a CommonName, etcd's authentication by the certificate's CommonName (a user with a read role
//! answers, one without gets SERVFAIL and a log line), bad options, and (with `COREDNS_BIN`) the
//! same answers as CoreDNS for the same keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: apt-get install etcd-server etcd-client (./test.sh installs them)");
}

/// Certificates for a TLS etcd: a CA, the server's (127.0.0.1) and a client's, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        // Client certificates with a subject CommonName, the user etcd takes when a request
        // carries no token: "client" (no such user), "reader" (a user with read on the zone)
        // and "stranger" (a user without a role).
        for (name, cn) in [
            ("server", None),
            ("client", Some("client")),
            ("reader", Some("reader")),
            ("stranger", Some("stranger")),
        ] {
            let key = KeyPair::generate().unwrap();
            let sans = vec![cn.unwrap_or("127.0.0.1").to_string()];
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            if let Some(cn) = cn {
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, cn);
            }
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }
}

/// A one-member etcd on loopback.
struct Etcd {
    child: Option<Child>,
    data: tempfile::TempDir,
    port: u16,
    peer: u16,
    tls: Option<Pki>,
    /// With TLS: etcd asks for client certificates (`--client-cert-auth`).
    client_cert_auth: bool,
    /// `user:password` for etcdctl once authentication is on.
    user: Option<String>,
}

impl Etcd {
    /// An etcd over plain HTTP, or over TLS asking for client certificates.
    fn start(tls: bool) -> Etcd {
        Etcd::start_with(tls, tls)
    }

    fn start_with(tls: bool, client_cert_auth: bool) -> Etcd {
        let mut e = Etcd {
            child: None,
            data: tempfile::tempdir().unwrap(),
            port: free_port(),
            peer: free_port(),
            tls: tls.then(Pki::new),
            client_cert_auth,
            user: None,
        };
        e.run();
        e
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server on the same data and waits until it answers.
    fn run(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let mut cmd = Command::new(tool("etcd"));
        cmd.arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(self.data.path().join("d"))
            .arg("--listen-client-urls")
            .arg(self.url())
            .arg("--advertise-client-urls")
            .arg(self.url())
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.tls {
            cmd.arg("--cert-file")
                .arg(p.path("server.pem"))
                .arg("--key-file")
                .arg(p.path("server-key.pem"));
            if self.client_cert_auth {
                cmd.arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(p.path("ca.pem"));
            }
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.ctl_output(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ctl_output(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(tool("etcdctl"));
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .arg("--dial-timeout=2s");
        if let Some(p) = &self.tls {
            cmd.arg(format!("--cacert={}", p.path("ca.pem")))
                .arg(format!("--cert={}", p.path("client.pem")))
                .arg(format!("--key={}", p.path("client-key.pem")));
        }
        if let Some(u) = &self.user {
            cmd.arg(format!("--user={u}"));
        }
        cmd.args(args).output().unwrap()
    }

    /// Runs etcdctl; panics on failure; returns its output.
    fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn q(name: &str, t: RecordType) -> Query {
    Query::new(name, t).rd(false)
}

/// Asks until `pred` holds on the reply (the watch delivers changes asynchronously).
fn until(addr: SocketAddr, query: &Query, what: &str, pred: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = udp(addr, query, T).unwrap();
        if pred(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: last {:?} {:?}",
            r.rcode_name(),
            r.answers()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The authority section with the SOA serial (the time) replaced by `SERIAL`.
fn authority(r: &Reply) -> Vec<String> {
    r.authority()
        .into_iter()
        .map(|s| {
            let mut f: Vec<String> = s.split_whitespace().map(str::to_string).collect();
            if f.get(3).map(String::as_str) == Some("SOA") && f.len() > 6 {
                f[6] = "SERIAL".into();
            }
            f.join(" ")
        })
        .collect()
}

/// What two servers must agree on: rcode, flags, every section (the SOA serial masked).
fn view(r: &Reply) -> (String, String, Vec<String>, Vec<String>, Vec<String>) {
    (
        r.rcode_name(),
        r.flags(),
        r.answers(),
        authority(r),
        r.additional(),
    )
}

/// CoreDNS (`COREDNS_BIN`) serving a Corefile, stopped on drop.
struct CoreDns {
    child: Child,
    _dir: tempfile::TempDir,
}

impl CoreDns {
    /// Starts CoreDNS on `port` with `corefile` and waits until it answers; None (said on
    /// stderr) without `COREDNS_BIN`.
    fn start(test: &str, corefile: &str, port: u16) -> Option<CoreDns> {
        let Ok(bin) = std::env::var("COREDNS_BIN") else {
            eprintln!("{test}: COREDNS_BIN not set, comparison with CoreDNS not run");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Corefile"), corefile).unwrap();
        let child = Command::new(bin)
            .current_dir(dir.path())
            .arg("-conf")
            .arg("Corefile")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let c = CoreDns { child, _dir: dir };
        wait_dns(local(port), Duration::from_secs(10)).unwrap();
        Some(c)
    }
}

impl Drop for CoreDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `COREDNS_BIN`: CoreDNS with the same etcd settings answers `queries` as Sextant at
/// `sextant` does.
fn same_as_coredns(
    test: &str,
    sextant: SocketAddr,
    etcd: &Etcd,
    extra: &str,
    queries: &[(&str, RecordType)],
) {
    let port = free_port();
    let Some(_c) = CoreDns::start(test, &corefile(port, &etcd.url(), extra), port) else {
        return;
    };
    for (name, t) in queries {
        let a = udp(local(port), &q(name, *t).edns(1232), T).unwrap();
        let b = udp(sextant, &q(name, *t).edns(1232), T).unwrap();
        assert_eq!(view(&a), view(&b), "{test}: {name} {t:?}");
    }
}

const SOA: &str = "skydns.local. 30 IN SOA ns.dns.skydns.local. hostmaster.skydns.local. SERIAL 7200 1800 86400 30";

fn corefile(port: u16, etcd: &str, extra: &str) -> String {
    format!("skydns.local:{port} {{\n    etcd {{\n        endpoint {etcd}\n{extra}    }}\n}}\n")
}

/// The SkyDNS keys of the CoreDNS README and more: addresses, a subtree, SRV with weights, MX,
/// NS, TXT, a CNAME inside the zone, a group.
fn fill(e: &Etcd) {
    for (k, v) in [
        ("/skydns/local/skydns/x1", r#"{"host":"1.1.1.1","ttl":60}"#),
        ("/skydns/local/skydns/x2", r#"{"host":"1.1.1.2","ttl":60}"#),
        (
            "/skydns/local/skydns/x3",
            r#"{"host":"2003::8:1","ttl":60}"#,
        ),
        (
            "/skydns/local/skydns/svc/a",
            r#"{"host":"10.0.0.1","port":80,"priority":10,"weight":25}"#,
        ),
        (
            "/skydns/local/skydns/svc/b",
            r#"{"host":"10.0.0.2","port":8080,"priority":10,"weight":75,"ttl":30}"#,
        ),
        (
            "/skydns/local/skydns/mail/mx1",
            r#"{"host":"10.0.0.25","mail":true,"priority":5}"#,
        ),
        (
            "/skydns/local/skydns/dns/ns/ns1",
            r#"{"host":"10.0.0.53","ttl":3600}"#,
        ),
        (
            "/skydns/local/skydns/txt",
            r#"{"text":"this is a random text message.","ttl":60}"#,
        ),
        (
            "/skydns/local/skydns/alias",
            r#"{"host":"x1.skydns.local","ttl":120}"#,
        ),
        (
            "/skydns/local/skydns/g/a",
            r#"{"host":"10.9.0.1","group":"blue"}"#,
        ),
        (
            "/skydns/local/skydns/g/a/b",
            r#"{"host":"10.9.0.2","group":"red"}"#,
        ),
        (
            "/skydns/local/skydns/g/a/c",
            r#"{"host":"10.9.0.3","group":"blue"}"#,
        ),
        (
            "/skydns/arpa/in-addr/10/0/0/127",
            r#"{"host":"reverse.skydns.local."}"#,
        ),
    ] {
        e.put(k, v);
    }
}

#[test]
fn answers_from_skydns_keys_and_follows_changes() {
    let e = Etcd::start(false);
    fill(&e);
    let port = free_port();
    let cf = format!(
        "skydns.local:{port} 0.0.10.in-addr.arpa:{port} apex.test:{port} {{\n    etcd skydns.local 10.0.0.0/24 apex.test {{\n        endpoint {}\n    }}\n}}\nexample.net:{port} {{\n    hosts {{\n        192.0.2.80 outside.example.net\n    }}\n}}\n",
        e.url()
    );
    e.put(
        "/skydns/local/skydns/out",
        r#"{"host":"outside.example.net","port":25,"ttl":70}"#,
    );
    // A zone with nothing under it but the key of its name (read for the zone name, as
    // CoreDNS does when the subtree is empty).
    e.put("/skydns/test/apex", r#"{"host":"192.0.2.99","ttl":99}"#);
    let mut s = Sextant::builder(bin(), &cf).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();

    // A name outside the zone: the CNAME, completed through the whole server (the hosts block).
    let r = udp(a, &q("out.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa")
    );
    assert_eq!(
        r.answers(),
        [
            "out.skydns.local. 70 IN CNAME outside.example.net.",
            "outside.example.net. 3600 IN A 192.0.2.80"
        ]
    );
    let r = udp(a, &q("out.skydns.local.", RecordType::SRV), T).unwrap();
    assert_eq!(
        r.answers(),
        ["out.skydns.local. 70 IN SRV 10 100 25 outside.example.net."]
    );
    assert_eq!(
        r.additional(),
        ["outside.example.net. 3600 IN A 192.0.2.80"]
    );

    let r = udp(a, &q("x1.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa")
    );
    assert_eq!(r.answers(), ["x1.skydns.local. 60 IN A 1.1.1.1"]);
    assert!(r.authority().is_empty() && r.additional().is_empty());

    // The subtree under a name: every record below it, in key order.
    let r = udp(a, &q("svc.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        r.answers(),
        [
            "svc.skydns.local. 300 IN A 10.0.0.1",
            "svc.skydns.local. 30 IN A 10.0.0.2"
        ]
    );
    // SRV: weights shared within a priority, targets named after the keys, addresses added.
    let r = tcp(a, &q("svc.skydns.local.", RecordType::SRV), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(
        r.answers(),
        [
            "svc.skydns.local. 300 IN SRV 10 25 80 a.svc.skydns.local.",
            "svc.skydns.local. 30 IN SRV 10 75 8080 b.svc.skydns.local."
        ]
    );
    assert_eq!(
        r.additional(),
        [
            "a.svc.skydns.local. 300 IN A 10.0.0.1",
            "b.svc.skydns.local. 30 IN A 10.0.0.2"
        ]
    );
    let r = udp(a, &q("mail.skydns.local.", RecordType::MX), T).unwrap();
    assert_eq!(
        r.answers(),
        ["mail.skydns.local. 300 IN MX 5 mx1.mail.skydns.local."]
    );
    assert_eq!(
        r.additional(),
        ["mx1.mail.skydns.local. 300 IN A 10.0.0.25"]
    );
    let r = udp(a, &q("skydns.local.", RecordType::NS), T).unwrap();
    assert_eq!(
        r.answers(),
        ["skydns.local. 3600 IN NS ns1.ns.dns.skydns.local."]
    );
    assert_eq!(
        r.additional(),
        ["ns1.ns.dns.skydns.local. 3600 IN A 10.0.0.53"]
    );
    let r = udp(a, &q("txt.skydns.local.", RecordType::TXT), T).unwrap();
    assert_eq!(
        r.answers(),
        ["txt.skydns.local. 60 IN TXT this is a random text message."]
    );
    let r = udp(a, &q("alias.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        r.answers(),
        [
            "alias.skydns.local. 120 IN CNAME x1.skydns.local.",
            "x1.skydns.local. 60 IN A 1.1.1.1"
        ]
    );
    // The zone name: every address of the zone (no apex.dns entry).
    let r = udp(a, &q("skydns.local.", RecordType::AAAA), T).unwrap();
    assert_eq!(
        r.answers(),
        [
            // The out-of-zone CNAME stays even though its target has no AAAA (as in CoreDNS).
            "skydns.local. 70 IN CNAME outside.example.net.",
            "skydns.local. 60 IN AAAA 2003::8:1"
        ]
    );
    // Groups: the shortest key's group and entries without one.
    let r = udp(a, &q("g.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        r.answers(),
        [
            "g.skydns.local. 300 IN A 10.9.0.1",
            "g.skydns.local. 300 IN A 10.9.0.3"
        ]
    );
    // Wildcards.
    let r = udp(a, &q("b.*.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), ["b.*.skydns.local. 30 IN A 10.0.0.2"]);
    // Reverse.
    let r = udp(a, &q("127.0.0.10.in-addr.arpa.", RecordType::PTR), T).unwrap();
    assert_eq!(
        r.answers(),
        ["127.0.0.10.in-addr.arpa. 300 IN PTR reverse.skydns.local."]
    );
    // NODATA and NXDOMAIN: the zone's SOA, authoritative.
    let r = udp(a, &q("x1.skydns.local.", RecordType::MX), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa")
    );
    assert!(r.answers().is_empty());
    assert_eq!(authority(&r), [SOA]);
    let r = udp(a, &q("nope.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NXDOMAIN", "qr,aa")
    );
    assert_eq!(authority(&r), [SOA]);

    let r = udp(a, &q("apex.test.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa")
    );
    assert_eq!(r.answers(), ["apex.test. 99 IN A 192.0.2.99"]);
    e.put("/skydns/test/apex", r#"{"host":"192.0.2.98","ttl":99}"#);
    until(
        a,
        &q("apex.test.", RecordType::A),
        "the change of the zone name's key",
        |r| r.answers() == ["apex.test. 99 IN A 192.0.2.98"],
    );

    // Changes arrive through the watch: a new key, a changed one, a deleted one.
    e.put(
        "/skydns/local/skydns/new",
        r#"{"host":"192.0.2.7","ttl":15}"#,
    );
    let r = until(
        a,
        &q("new.skydns.local.", RecordType::A),
        "the new key",
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.answers(), ["new.skydns.local. 15 IN A 192.0.2.7"]);
    e.put("/skydns/local/skydns/x1", r#"{"host":"1.1.1.9","ttl":61}"#);
    until(
        a,
        &q("x1.skydns.local.", RecordType::A),
        "the changed key",
        |r| r.answers() == ["x1.skydns.local. 61 IN A 1.1.1.9"],
    );
    e.ctl(&["del", "/skydns/local/skydns/new"]);
    until(
        a,
        &q("new.skydns.local.", RecordType::A),
        "the deleted key",
        |r| r.rcode_name() == "NXDOMAIN",
    );

    // A lease: the TTL is the lease's remaining time, at least min-lease-ttl (30 s).
    let out = e.ctl(&["lease", "grant", "600"]);
    let lease = out.split_whitespace().nth(1).unwrap().to_string();
    e.ctl(&[
        "put",
        "--lease",
        &lease,
        "/skydns/local/skydns/leased",
        r#"{"host":"192.0.2.8"}"#,
    ]);
    let r = until(
        a,
        &q("leased.skydns.local.", RecordType::A),
        "the leased key",
        |r| r.rcode_name() == "NOERROR",
    );
    let ttl: u32 = r.answers()[0]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&ttl), "{:?}", r.answers());
    e.ctl(&[
        "put",
        "--lease",
        &lease,
        "/skydns/local/skydns/leased2",
        r#"{"host":"192.0.2.9","ttl":100}"#,
    ]);
    let r = until(
        a,
        &q("leased2.skydns.local.", RecordType::A),
        "the second leased key",
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(
        r.answers(),
        ["leased2.skydns.local. 100 IN A 192.0.2.9"],
        "the smaller of the two"
    );
    drop(s);
}

fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics", T).ok()?;
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn etcd_stopped_mid_run_keeps_the_last_good_data() {
    let mut e = Etcd::start(false);
    fill(&e);
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        "skydns.local:{port} {{\n    etcd {{\n        endpoint {}\n    }}\n    prometheus 127.0.0.1:{mport}\n}}\n",
        e.url()
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let m = local(mport);
    // The zone's 12 keys (fill's reverse key is outside the zone, not read).
    s.wait_for_line("synced 12 keys", Duration::from_secs(10))
        .unwrap();
    assert_eq!(metric(m, "sextant_etcd_up{"), Some(1.0));
    assert_eq!(metric(m, "sextant_etcd_keys{"), Some(12.0));

    e.stop();
    s.wait_for_line(
        "serving the last good data (12 keys",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(metric(m, "sextant_etcd_up{"), Some(0.0));
    assert!(metric(m, "sextant_etcd_sync_failures_total{").unwrap() >= 1.0);
    // Every answer still comes from the last good copy, at once.
    let t0 = Instant::now();
    let r = udp(a, &q("x1.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa")
    );
    assert_eq!(r.answers(), ["x1.skydns.local. 60 IN A 1.1.1.1"]);
    let r = udp(a, &q("svc.skydns.local.", RecordType::SRV), T).unwrap();
    assert_eq!(r.answers().len(), 2);
    let r = udp(a, &q("nope.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "answers wait for etcd"
    );
    // One error line for the outage, not one per retry.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        s.count_lines("serving the last good data"),
        1,
        "{}",
        s.output()
    );

    // A reload during the outage keeps the copy (same endpoints, path and credentials).
    std::fs::write(
        s.corefile_path(),
        cf.replace("    prometheus", "    errors\n    prometheus"),
    )
    .unwrap();
    let tasks = metric(m, "sextant_generation_tasks ");
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("Reloading complete", Duration::from_secs(15))
        .unwrap();
    // The retired generation's sync task is gone: as many tasks as before.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(m, "sextant_generation_tasks ") != tasks && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tasks.is_some());
    assert_eq!(metric(m, "sextant_generation_tasks "), tasks);
    let r = udp(a, &q("x1.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        r.answers(),
        ["x1.skydns.local. 60 IN A 1.1.1.1"],
        "{}",
        s.output()
    );
    assert_eq!(metric(m, "sextant_etcd_up{"), Some(0.0));

    // etcd back (same data): the watch resumes and sees new changes.
    e.run();
    e.put("/skydns/local/skydns/x1", r#"{"host":"1.1.1.10","ttl":60}"#);
    until(
        a,
        &q("x1.skydns.local.", RecordType::A),
        "the change after the restart",
        |r| r.answers() == ["x1.skydns.local. 60 IN A 1.1.1.10"],
    );
    assert_eq!(metric(m, "sextant_etcd_up{"), Some(1.0));
}

#[test]
fn without_etcd_at_start_answers_servfail_then_serves_once_it_is_up() {
    let mut e = Etcd::start(false);
    e.stop();
    let port = free_port();
    let mut s = Sextant::builder(bin(), &corefile(port, &e.url(), "")).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let r = udp(a, &q("x1.skydns.local.", RecordType::A), T).unwrap();
    // CoreDNS answers SERVFAIL with the SOA when etcd cannot be read.
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("SERVFAIL", "qr,aa")
    );
    assert_eq!(authority(&r), [SOA]);
    s.wait_for_line("no data yet, answering SERVFAIL", Duration::from_secs(5))
        .unwrap();
    e.run();
    fill(&e);
    until(
        a,
        &q("x1.skydns.local.", RecordType::A),
        "the first sync",
        |r| r.answers() == ["x1.skydns.local. 60 IN A 1.1.1.1"],
    );
}

#[test]
fn tls_client_certificates_and_credentials() {
    let mut e = Etcd::start(true);
    fill(&e);
    let p = e.tls.as_ref().unwrap();
    // TLS with a client certificate (with a CommonName), no authentication.
    let port = free_port();
    let tls_client = format!(
        "        tls {} {} {}\n",
        p.path("client.pem"),
        p.path("client-key.pem"),
        p.path("ca.pem")
    );
    let mut s = Sextant::builder(bin(), &corefile(port, &e.url(), &tls_client)).start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let r = until(
        local(port),
        &q("x1.skydns.local.", RecordType::A),
        "the TLS sync",
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.answers(), ["x1.skydns.local. 60 IN A 1.1.1.1"]);
    drop(s);

    // Authentication on: a root user with a password. The client certificate keeps its
    // CommonName ("client", no such user): the password's token is what etcd uses.
    e.ctl(&["user", "add", "root:s3cret"]);
    e.ctl(&["auth", "enable"]);
    e.user = Some("root:s3cret".into());
    e.put(
        "/skydns/local/skydns/secure",
        r#"{"host":"192.0.2.44","ttl":44}"#,
    );
    let tls = tls_client;
    let port = free_port();
    let cf = corefile(
        port,
        &e.url(),
        &format!("{tls}        credentials root s3cret\n"),
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let r = until(
        a,
        &q("secure.skydns.local.", RecordType::A),
        "the TLS and password sync",
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.answers(), ["secure.skydns.local. 44 IN A 192.0.2.44"]);
    e.put(
        "/skydns/local/skydns/secure",
        r#"{"host":"192.0.2.45","ttl":44}"#,
    );
    until(
        a,
        &q("secure.skydns.local.", RecordType::A),
        "a change over the TLS watch",
        |r| r.answers() == ["secure.skydns.local. 44 IN A 192.0.2.45"],
    );
    same_as_coredns(
        "TLS client certificate with a CommonName and a password",
        a,
        &e,
        &format!("{tls}        credentials root s3cret\n"),
        &[
            ("secure.skydns.local.", RecordType::A),
            ("svc.skydns.local.", RecordType::SRV),
        ],
    );
    drop(s);

    // A wrong password: nothing is read, the log says why.
    let p = e.tls.as_ref().unwrap();
    let port = free_port();
    let cf = corefile(
        port,
        &e.url(),
        &format!("{tls}        credentials root wrong\n"),
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    s.wait_for_line(
        &format!(
            "etcd at {} refused access: authenticate: etcdserver: authentication failed, \
             invalid user ID or password; no data yet, answering SERVFAIL",
            e.url()
        ),
        Duration::from_secs(10),
    )
    .unwrap();
    let r = udp(local(port), &q("secure.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    drop(s);

    // No client certificate: the handshake is refused.
    let port = free_port();
    let cf = corefile(
        port,
        &e.url(),
        &format!(
            "        tls {}\n        credentials root s3cret\n",
            p.path("ca.pem")
        ),
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    s.wait_for_line("unreachable", Duration::from_secs(10))
        .unwrap();
    let r = udp(local(port), &q("secure.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

/// etcd's authentication by client certificate: with `--client-cert-auth` and authentication
/// on, a request without a token is made as the user named by the certificate's CommonName.
#[test]
fn client_certificate_common_name_is_the_user() {
    let mut e = Etcd::start(true);
    fill(&e);
    e.ctl(&["user", "add", "root:s3cret"]);
    e.ctl(&["role", "add", "dns-read"]);
    e.ctl(&[
        "role",
        "grant-permission",
        "dns-read",
        "--prefix=true",
        "read",
        "/skydns/local/skydns/",
    ]);
    // etcd 3.4's etcdctl has no --no-password: the passwords are never used.
    e.ctl(&["user", "add", "reader:unused-1"]);
    e.ctl(&["user", "grant-role", "reader", "dns-read"]);
    e.ctl(&["user", "add", "stranger:unused-2"]);
    e.ctl(&["auth", "enable"]);
    e.user = Some("root:s3cret".into());
    let p = e.tls.as_ref().unwrap();
    let tls = |who: &str| {
        format!(
            "        tls {} {} {}\n",
            p.path(&format!("{who}.pem")),
            p.path(&format!("{who}-key.pem")),
            p.path("ca.pem")
        )
    };

    // "reader" may read the zone's keys (not the key of the zone name itself, which is then
    // left out, as CoreDNS would be refused it): whole answers, and changes through the watch.
    let port = free_port();
    let mut s = Sextant::builder(bin(), &corefile(port, &e.url(), &tls("reader"))).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let r = until(
        a,
        &q("svc.skydns.local.", RecordType::SRV),
        "the sync as reader",
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.flags(), "qr,aa");
    assert_eq!(
        r.answers(),
        [
            "svc.skydns.local. 300 IN SRV 10 25 80 a.svc.skydns.local.",
            "svc.skydns.local. 30 IN SRV 10 75 8080 b.svc.skydns.local."
        ]
    );
    assert_eq!(
        r.additional(),
        [
            "a.svc.skydns.local. 300 IN A 10.0.0.1",
            "b.svc.skydns.local. 30 IN A 10.0.0.2"
        ]
    );
    e.put("/skydns/local/skydns/x1", r#"{"host":"1.1.1.7","ttl":60}"#);
    until(
        a,
        &q("x1.skydns.local.", RecordType::A),
        "a change over the watch as reader",
        |r| r.answers() == ["x1.skydns.local. 60 IN A 1.1.1.7"],
    );
    let asked = [
        ("x1.skydns.local.", RecordType::A),
        ("svc.skydns.local.", RecordType::SRV),
        ("nope.skydns.local.", RecordType::A),
    ];
    same_as_coredns("CN reader", a, &e, &tls("reader"), &asked);
    drop(s);

    // "stranger" has no role: etcd refuses the read; SERVFAIL with the SOA, and the log says
    // who etcd took the client for.
    let port = free_port();
    let mut s = Sextant::builder(bin(), &corefile(port, &e.url(), &tls("stranger"))).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    s.wait_for_line(
        &format!(
            "etcd at {} refused access: range /skydns/local/skydns/: etcdserver: permission denied \
             (without `credentials` etcd's user is the CommonName of the client certificate); \
             no data yet, answering SERVFAIL",
            e.url()
        ),
        Duration::from_secs(10),
    )
    .unwrap();
    let r = udp(a, &q("x1.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("SERVFAIL", "qr,aa")
    );
    assert!(r.answers().is_empty());
    assert_eq!(authority(&r), [SOA]);
    same_as_coredns("CN stranger", a, &e, &tls("stranger"), &asked[..1]);
}

/// TLS that checks the server only: an etcd that asks for no client certificate.
#[test]
fn tls_without_a_client_certificate() {
    let e = Etcd::start_with(true, false);
    fill(&e);
    let p = e.tls.as_ref().unwrap();
    let port = free_port();
    let tls = format!("        tls {}\n", p.path("ca.pem"));
    let mut s = Sextant::builder(bin(), &corefile(port, &e.url(), &tls)).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let r = until(
        a,
        &q("x1.skydns.local.", RecordType::A),
        "the TLS sync",
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.answers(), ["x1.skydns.local. 60 IN A 1.1.1.1"]);
    // Another CA: the server's certificate is refused.
    let other = Pki::new();
    let port = free_port();
    let tls = format!("        tls {}\n", other.path("ca.pem"));
    let mut s = Sextant::builder(bin(), &corefile(port, &e.url(), &tls)).start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    s.wait_for_line(
        "unreachable: transport error: TLS handshake: invalid peer certificate",
        Duration::from_secs(10),
    )
    .unwrap();
    let r = udp(local(port), &q("x1.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn fallthrough_hands_names_without_data_to_the_next_plugin() {
    let e = Etcd::start(false);
    fill(&e);
    let port = free_port();
    // hosts runs before etcd (CoreDNS's order): it falls through to etcd, which falls through
    // to whoami for names etcd has no data for. The first endpoint has no etcd: the next one
    // is used. Credentials for an etcd without authentication are not needed, and not an error.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cf = format!(
        "skydns.local:{port} {{\n    hosts {{\n        192.0.2.1 fromhosts.skydns.local\n        fallthrough\n    }}\n    etcd {{\n        endpoint {dead} {}\n        credentials nobody nothing\n        fallthrough\n    }}\n    whoami\n}}\n",
        e.url()
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    let a = local(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    s.wait_for_line(
        &format!("synced 12 keys at revision 14 from {}", e.url()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(s.count_lines(&format!("etcd at {dead} unreachable: ")), 1);
    let r = udp(a, &q("x1.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), ["x1.skydns.local. 60 IN A 1.1.1.1"]);
    let r = udp(a, &q("fromhosts.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), ["fromhosts.skydns.local. 3600 IN A 192.0.2.1"]);
    // No data in etcd: whoami answers (its A record is the client's address).
    let r = udp(a, &q("nope.skydns.local.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.additional()[0], "nope.skydns.local. 0 IN A 127.0.0.1");
    // NODATA is not a missing name: etcd answers it itself.
    let r = udp(a, &q("x1.skydns.local.", RecordType::MX), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa")
    );
    assert_eq!(authority(&r), [SOA]);
}

#[test]
fn bad_options_name_file_line_column() {
    for (body, want) in [
        (
            "credentials root",
            "Corefile:3:9: credentials: credentials requires 2 arguments, username and password",
        ),
        ("bogus", "Corefile:3:9: bogus: unknown property 'bogus'"),
        (
            "min-lease-ttl soon",
            "Corefile:3:23: min-lease-ttl: invalid min-lease-ttl value",
        ),
        (
            "endpoint ftp://x",
            "Corefile:3:18: endpoint: invalid endpoint 'ftp://x'",
        ),
        (
            "tls /nonexistent.pem /nonexistent-key.pem",
            "Corefile:3:13: tls: cannot read certificate",
        ),
    ] {
        let cf = format!("skydns.local:1053 {{\n    etcd {{\n        {body}\n    }}\n}}\n");
        let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
        assert_ne!(code, 0, "{body}");
        let all = format!("{out}{err}");
        assert!(all.contains(want), "{body}: {all}");
    }
}

/// With `COREDNS_BIN` set, CoreDNS and Sextant read the same etcd and must give the same
/// answers (rcode, flags, every section in order, TTLs; the SOA serial is the clock).
#[test]
fn same_answers_as_coredns() {
    if std::env::var_os("COREDNS_BIN").is_none() {
        eprintln!("same_answers_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run");
        return;
    }
    let e = Etcd::start(false);
    fill(&e);
    e.put(
        "/skydns/local/skydns/ext",
        r#"{"host":"outside.example.","port":443}"#,
    );
    e.put("/skydns/local/skydns/bad", r#"{"host":7}"#);
    e.put(
        "/skydns/local/skydns/out",
        r#"{"host":"outside.example.net","port":25,"mail":true,"ttl":70}"#,
    );
    e.put(
        "/skydns/local/skydns/long",
        &format!(r#"{{"text":"{}"}}"#, "y".repeat(300)),
    );
    let (p1, p2) = (free_port(), free_port());
    // A second block answers the names outside the etcd zone that CNAME, SRV and MX targets
    // point at (resolved through the whole server, CoreDNS's upstream).
    // A third has only the key of its zone name (and credentials, which an etcd without
    // authentication ignores).
    e.put("/skydns/test/apex", r#"{"host":"192.0.2.99","ttl":99}"#);
    let with_hosts = |port: u16| {
        format!(
            "{}example.net:{port} {{\n    hosts {{\n        192.0.2.80 outside.example.net\n        2001:db8::80 outside.example.net\n    }}\n}}\napex.test:{port} {{\n    etcd {{\n        endpoint {}\n        credentials nobody nothing\n    }}\n}}\n",
            corefile(port, &e.url(), ""),
            e.url()
        )
    };
    let _coredns = CoreDns::start("same_answers_as_coredns", &with_hosts(p1), p1).unwrap();
    let mut s = Sextant::builder(bin(), &with_hosts(p2)).start();
    s.wait_dns(local(p2), Duration::from_secs(10)).unwrap();
    for (name, t) in [
        ("x1.skydns.local.", RecordType::A),
        ("X1.SkyDNS.local.", RecordType::A),
        ("skydns.local.", RecordType::A),
        ("skydns.local.", RecordType::AAAA),
        ("skydns.local.", RecordType::NS),
        ("skydns.local.", RecordType::SOA),
        ("x1.skydns.local.", RecordType::SOA),
        ("svc.skydns.local.", RecordType::SRV),
        ("svc.skydns.local.", RecordType::A),
        ("svc.skydns.local.", RecordType::TXT),
        ("a.svc.skydns.local.", RecordType::A),
        ("*.svc.skydns.local.", RecordType::A),
        ("any.svc.skydns.local.", RecordType::SRV),
        ("mail.skydns.local.", RecordType::MX),
        ("txt.skydns.local.", RecordType::TXT),
        ("long.skydns.local.", RecordType::TXT),
        ("alias.skydns.local.", RecordType::A),
        ("alias.skydns.local.", RecordType::CNAME),
        ("alias.skydns.local.", RecordType::AAAA),
        ("g.skydns.local.", RecordType::A),
        ("ext.skydns.local.", RecordType::SRV),
        ("ext.skydns.local.", RecordType::CNAME),
        ("bad.skydns.local.", RecordType::A),
        ("nope.skydns.local.", RecordType::A),
        ("nope.skydns.local.", RecordType::NS),
        ("x1.skydns.local.", RecordType::MX),
        ("x1.skydns.local.", RecordType::PTR),
        ("x1.skydns.local.", RecordType::HINFO),
        ("dns.skydns.local.", RecordType::A),
        ("out.skydns.local.", RecordType::A),
        ("out.skydns.local.", RecordType::AAAA),
        ("out.skydns.local.", RecordType::SRV),
        ("out.skydns.local.", RecordType::MX),
        ("out.skydns.local.", RecordType::TXT),
        ("apex.test.", RecordType::A),
        ("apex.test.", RecordType::AAAA),
        ("x.apex.test.", RecordType::A),
    ] {
        let a = udp(local(p1), &q(name, t).edns(1232), T).unwrap();
        let b = udp(local(p2), &q(name, t).edns(1232), T).unwrap();
        assert_eq!(view(&a), view(&b), "{name} {t:?}");
    }
}
