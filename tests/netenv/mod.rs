//! Shared set-up for the whole-Corefile integration tests: namespaces linked by a veth pair,
//! a per-namespace `/etc/netns/NAME/resolv.conf` (removed on drop), threads that enter a
//! namespace, `sextant` started through `ip netns exec`, Knot serving an external-looking root
//! zone inside a namespace, and Prometheus text helpers. Everything it creates is removed on
//! drop, also when the test fails.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sextant_testkit::*;

pub(crate) const T: Duration = Duration::from_secs(3);

/// Address of the upstream (Knot) namespace's end of the veth pair.
pub(crate) const UPSTREAM_IP: &str = "169.254.53.2";
/// Address of the DNS namespace's end of the veth pair.
pub(crate) const DNS_IP: &str = "169.254.53.1";

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sextant")
}

/// Runs `f` on a thread that entered namespace `name`; sockets and child processes it creates
/// live there. A panic in `f` is re-raised on the caller with its message.
pub(crate) fn in_ns<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let path = format!("/var/run/netns/{name}");
    let h = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd, for this thread only; the thread ends after `f`.
        let rc = unsafe {
            sextant_testkit::libc::setns(file.as_raw_fd(), sextant_testkit::libc::CLONE_NEWNET)
        };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    });
    match h.join() {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// `/etc/netns/NAME/` with a `resolv.conf`: `ip netns exec NAME` bind-mounts it over
/// `/etc/resolv.conf`. Removed on drop.
pub(crate) struct EtcNetns {
    dir: PathBuf,
}

impl EtcNetns {
    pub(crate) fn create(ns: &NetNs, resolv_conf: &str) -> EtcNetns {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), resolv_conf).unwrap();
        EtcNetns { dir }
    }
}

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // Remove /etc/netns itself only if nothing else (another test) uses it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// Two namespaces joined by a veth pair: `dns` (169.254.53.1/30) and `up` (169.254.53.2/30).
/// Dropping the namespaces deletes the pair.
pub(crate) struct Pair {
    pub up: NetNs,
    pub dns: NetNs,
}

pub(crate) fn pair(prefix: &str) -> Pair {
    let dns = NetNs::create(&format!("{prefix}d")).unwrap();
    let up = NetNs::create(&format!("{prefix}u")).unwrap();
    let n = std::process::id() % 0xfffff;
    let (a, b) = (format!("it{n:x}d{prefix}"), format!("it{n:x}u{prefix}"));
    let (a, b) = (&a[..a.len().min(15)], &b[..b.len().min(15)]);
    let out = std::process::Command::new(IP)
        .args([
            "link",
            "add",
            a,
            "netns",
            dns.name(),
            "type",
            "veth",
            "peer",
            "name",
            b,
        ])
        .args(["netns", up.name()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dns.exec_ok(IP, &["addr", "add", &format!("{DNS_IP}/30"), "dev", a])
        .unwrap();
    dns.exec_ok(IP, &["link", "set", a, "up"]).unwrap();
    up.exec_ok(IP, &["addr", "add", &format!("{UPSTREAM_IP}/30"), "dev", b])
        .unwrap();
    up.exec_ok(IP, &["link", "set", b, "up"]).unwrap();
    Pair { up, dns }
}

/// The external world as the upstream sees it: a root zone with `example.test` names and one
/// reverse name outside the cluster's ranges.
pub(crate) const ROOT_ZONE: &str = "$TTL 300
@ SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 60
@ NS ns.example.test.
ns.example.test. A 169.254.53.2
www.example.test. A 192.0.2.10
www.example.test. AAAA 2001:db8::10
api.example.test. 120 A 192.0.2.20
alias.example.test. CNAME www.example.test.
_sip._udp.example.test. SRV 0 5 5060 www.example.test.
10.2.0.192.in-addr.arpa. PTR www.example.test.
";

/// Knot (Debian `knot`) authoritative for [`ROOT_ZONE`] on 169.254.53.2:53 inside `ns`.
pub(crate) fn knot_in(ns: &NetNs) -> Knot {
    let addr: SocketAddr = format!("{UPSTREAM_IP}:53").parse().unwrap();
    in_ns(ns.name(), move || {
        Knot::start_on(addr, ".", ROOT_ZONE).unwrap()
    })
}

/// Starts `sextant -conf Corefile` inside namespace `ns` (through `ip netns exec`, so the
/// namespace's `/etc/netns/NAME/resolv.conf` is its `/etc/resolv.conf`), with `files` beside
/// the Corefile. Dropping the returned value kills it.
pub(crate) fn sextant_in(ns: &NetNs, corefile: &str, files: &[(&str, &str)]) -> Sextant {
    let mut b = Sextant::builder(Path::new(IP), corefile)
        .conf_flag(false)
        .args(["netns", "exec", ns.name(), bin(), "-conf", "Corefile"]);
    for (name, text) in files {
        b = b.file(name, text);
    }
    b.start()
}

/// Waits until `addr` answers DNS from inside `ns`, failing early if `s` exited.
pub(crate) fn wait_dns_in(s: &mut Sextant, ns: &NetNs, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(s.exited().is_none(), "sextant exited:\n{}", s.output());
        let ok = in_ns(ns.name(), move || {
            udp(
                addr,
                &Query::new("health.check.", RecordType::SOA),
                Duration::from_millis(300),
            )
            .is_ok()
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no DNS on {addr}:\n{}",
            s.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whitespace-normalised, sorted records.
pub(crate) fn norm(v: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = v
        .into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

/// Queries over UDP and TCP (from the current thread's namespace) and checks both give the
/// same rcode, flags and sections, ignoring TTLs (a cache may count down between the two).
pub(crate) fn both(a: SocketAddr, name: &str, t: RecordType) -> Reply {
    let u = udp(a, &Query::new(name, t), T).expect("udp");
    let c = tcp(a, &Query::new(name, t), T).expect("tcp");
    assert_eq!(u.rcode_name(), c.rcode_name(), "{name} {t}");
    assert_eq!(u.flags(), c.flags(), "{name} {t}");
    assert_eq!(no_ttl(u.answers()), no_ttl(c.answers()), "{name} {t}");
    assert_eq!(no_ttl(u.authority()), no_ttl(c.authority()), "{name} {t}");
    assert_eq!(no_ttl(u.additional()), no_ttl(c.additional()), "{name} {t}");
    u
}

/// Records without their TTL field, sorted.
pub(crate) fn no_ttl(v: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = v
        .into_iter()
        .map(|s| {
            let f: Vec<&str> = s.split_whitespace().collect();
            let mut g = vec![f[0]];
            g.extend_from_slice(&f[2..]);
            g.join(" ")
        })
        .collect();
    v.sort();
    v
}

/// The TTL of the first answer record.
pub(crate) fn ttl(r: &Reply) -> u32 {
    let a = r.answers();
    a[0].split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sum of the samples of `metric` whose label set contains every `labels` fragment
/// (e.g. `rcode="NOERROR"`).
pub(crate) fn metric(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(metric)
                && matches!(l.as_bytes().get(metric.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
