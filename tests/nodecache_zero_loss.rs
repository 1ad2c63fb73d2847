//! Lost queries through node-cache upgrades, restarts, reloads and crashes, and a cluster DNS
//! rolling update, measured in network namespaces (see `nodecache_lab`): a pod sends a steady,
//! bounded stream of queries (cached, uncached and external names; UDP and TCP) to the
//! node-local IP and to the kube-dns ClusterIP while the event happens; every query without a
//! correct answer within 2 s counts as lost. Knot serves as cluster DNS and upstream; a
//! kube-proxy stand-in DNATs the ClusterIPs with `statistic` rules. Each figure is printed as
//! `LOSS <scenario>: ...` (run with `--nocapture` to see them). Needs root, iproute2, iptables,
//! nftables and knot.

mod nodecache_lab;

use std::time::{Duration, Instant};

use nodecache_lab::*;
use sextant_testkit::*;

/// Queries a second per stream (two streams run at once).
const QPS: u32 = 250;

fn opts(local_ips: &str, extra: &[&'static str]) -> NodeCacheOpts<'static> {
    NodeCacheOpts {
        local_ips: Box::leak(local_ips.to_string().into_boxed_str()),
        base: template(NODE_LOCAL, KUBE_DNS),
        extra: extra.to_vec(),
    }
}

fn rules_iptables(lab: &Lab) -> Vec<String> {
    nodelocal_lines(&output(&lab.node, "iptables-save", &[]))
}

fn print(line: &str) {
    eprintln!("LOSS {line}");
}

/// Two node caches with the same flags, as a DaemonSet with `maxSurge: 1` runs them: the second
/// shares the first's sockets (DNS on both local IPs, metrics, health, prometheus), the first
/// hands over on SIGTERM without touching the interface or rules, and a third that fails at
/// start leaves everything alone. Zero queries lost; the last one out tears down exactly.
#[test]
fn overlapping_upgrade_loses_nothing() {
    let _serial = serial();
    let lab = Lab::new("ncup", Proxy::IptablesNft, false);
    let _knots = [lab.knot(DNS_A), lab.knot(DNS_B), lab.knot(UPSTREAM)];
    lab.set_endpoints(&[DNS_A, DNS_B]);
    let proxy_before = lab.proxy_rules();
    let local_ips = format!("{NODE_LOCAL},{KUBE_DNS}");
    let mut a = NodeCache::start(&lab, &opts(&local_ips, &[]));
    a.wait_serving();
    wait_until("rules", Duration::from_secs(5), || {
        // 12 per IP, 2 jumps per IP, the fallback chain and its 2 x 2 DNAT rules per IP.
        rules_iptables(&lab).len() == 24 + 4 + 1 + 8
    });
    let rules = rules_iptables(&lab);

    let s1 = stream(&lab, sa(NODE_LOCAL, 53), QPS, Duration::from_secs(20));
    let s2 = stream(&lab, sa(KUBE_DNS, 53), QPS, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let t_b = Instant::now();
    let mut b = NodeCache::start(&lab, &opts(&local_ips, &[]));
    b.wait_serving();
    assert!(
        b.s.count_lines("[INFO] Sharing ") == 1,
        "B shares A's sockets:\n{}",
        b.s.output()
    );
    assert_eq!(
        b.s.count_lines("Address already in use"),
        0,
        "{}",
        b.s.output()
    );
    std::thread::sleep(Duration::from_millis(500));

    // A replacement that fails at start (a broken template) leaves the interface and rules.
    let mut broken = opts(&local_ips, &[]);
    broken.base = broken
        .base
        .replacen("    errors\n", "    errors\n    nosuchplugin\n", 1);
    let t_c = Instant::now();
    let mut c = NodeCache::start(&lab, &broken);
    let st = c.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(1), "{}", c.s.output());
    assert!(
        c.s.output()
            .contains("Leaving the interface and rules to node-cache instance pid"),
        "{}",
        c.s.output()
    );
    assert_eq!(
        rules_iptables(&lab),
        rules,
        "rules untouched by the failed start"
    );
    assert!(lab.links().contains(&"nodelocaldns".to_string()));
    std::thread::sleep(Duration::from_secs(1));

    let t_term = Instant::now();
    a.s.signal(libc::SIGTERM).unwrap();
    let st = a.wait_exit(Duration::from_secs(10));
    let t_gone = Instant::now();
    assert!(st.success(), "{}", a.s.output());
    assert!(
        a.s.output()
            .contains("serves the same sockets: handing over"),
        "{}",
        a.s.output()
    );
    assert!(
        a.s.output()
            .contains("Leaving the interface and rules to node-cache instance pid"),
        "{}",
        a.s.output()
    );
    assert_eq!(rules_iptables(&lab), rules, "rules untouched by A's exit");
    std::thread::sleep(Duration::from_secs(2));
    let r1 = s1.finish();
    let r2 = s2.finish();
    for r in [&r1, &r2] {
        print(&format!(
            "overlapping upgrade (B starts {:.1}s, failed C {:.1}s, A SIGTERM {:.1}s, A gone {:.1}s): {}",
            (t_b - r.start).as_secs_f64(),
            (t_c - r.start).as_secs_f64(),
            (t_term - r.start).as_secs_f64(),
            (t_gone - r.start).as_secs_f64(),
            r.summary("stream")
        ));
    }
    assert_eq!(
        r1.lost() + r2.lost(),
        0,
        "{}\n{}",
        r1.summary("node-local"),
        r2.summary("kube-dns")
    );
    assert!(r1.sent() > 800 && r2.sent() > 800);

    // B, the last one, tears down exactly what node-cache added.
    b.s.signal(libc::SIGTERM).unwrap();
    assert!(b.wait_exit(Duration::from_secs(10)).success());
    assert!(
        b.s.output().contains("[INFO] Tearing down"),
        "{}",
        b.s.output()
    );
    assert!(
        rules_iptables(&lab).is_empty(),
        "{:?}",
        rules_iptables(&lab)
    );
    assert!(!lab.links().contains(&"nodelocaldns".to_string()));
    assert_eq!(
        lab.proxy_rules(),
        proxy_before,
        "kube-proxy's rules untouched"
    );
}
