//! Replies shaped the way CoreDNS 1.14.7 shapes them (issue 12), over real UDP and TCP sockets:
//! truncation keeps the records that fit (miekg/dns `Msg.Truncate`) on every reply path
//! (plugin answers, the kubernetes reply memo, cache hits, forwarded replies); the reply's OPT
//! record echoes the client's EDNS (`request.SizeAndDo`); CH-class queries pass through
//! `forward`; and a musl (< 1.2.4) `getaddrinfo` client, which never retries over TCP, gets
//! addresses from a truncated reply.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(8);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Forty addresses 10.1.0.1 ... 10.1.0.40.
fn forty() -> Vec<String> {
    (1..=40).map(|i| format!("10.1.0.{i}")).collect()
}

/// How many A records (owner compressed to a pointer: 16 bytes each) fit in `size` bytes after
/// the header, the question for `qname` and `opt` bytes of OPT record: miekg/dns's count.
fn fitting(qname: &str, size: usize, opt: usize) -> usize {
    let wire_len = qname.trim_end_matches('.').len() + 2;
    (size - 12 - (wire_len + 4) - opt) / 16
}

/// Checks one reply to `A qname` that had 40 addresses to give, for a client that takes `size`
/// bytes with `opt` bytes of OPT record in the reply.
fn check_truncated(r: &Reply, qname: &str, size: usize, opt: usize, what: &str) {
    assert_eq!(r.rcode_name(), "NOERROR", "{what}: {r:?}");
    assert!(r.truncated(), "{what}: TC expected: {r:?}");
    assert!(r.len() <= size, "{what}: {} bytes", r.len());
    let n = fitting(qname, size, opt);
    assert_eq!(r.answers().len(), n, "{what}: as many records as fit");
    assert_eq!(r.len(), 12 + qname.len() + 1 + 4 + 16 * n + opt, "{what}");
    assert!(
        r.authority().is_empty() && r.additional().is_empty(),
        "{what}"
    );
    // The records that were sent are the first ones, in order.
    let mut got: Vec<String> = r
        .answers()
        .iter()
        .map(|a| a.rsplit(' ').next().unwrap().to_string())
        .collect();
    got.sort_by_key(|ip| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap());
    assert!(
        got.iter().all(|ip| ip.starts_with("10.1.0.")),
        "{what}: {got:?}"
    );
    match opt {
        0 => assert!(r.edns().is_none(), "{what}"),
        _ => assert!(r.edns().is_some(), "{what}: the OPT record is kept"),
    }
}

/// All 40 over TCP and over UDP when the client takes enough.
fn check_whole(r: &Reply, what: &str) {
    assert_eq!(r.rcode_name(), "NOERROR", "{what}");
    assert!(!r.truncated(), "{what}: {r:?}");
    assert_eq!(r.answers().len(), 40, "{what}");
}

fn hosts_file() -> String {
    forty()
        .iter()
        .map(|ip| format!("{ip} big.example.org\n"))
        .collect()
}

/// A plugin's answer (`hosts`): UDP without EDNS gets the 30 records that fit in 512 bytes and
/// TC; with EDNS 512 the OPT record's 11 bytes come off; EDNS 1232 and TCP get all 40.
#[test]
fn truncation_keeps_the_records_that_fit_in_a_plugin_answer() {
    let port = free_port();
    let cf = format!(".:{port} {{\n    hosts hosts.txt\n}}\n");
    let mut s = Sextant::builder(bin(), &cf)
        .file("hosts.txt", hosts_file())
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let name = "big.example.org.";
    let q = || Query::new(name, RecordType::A);
    let r = udp(addr(port), &q(), T).unwrap();
    check_truncated(&r, name, 512, 0, "udp, no EDNS");
    assert_eq!(r.answers().len(), 29);
    let r = udp(addr(port), &q().edns(512), T).unwrap();
    check_truncated(&r, name, 512, 11, "udp, EDNS 512");
    let r = udp(addr(port), &q().edns(100), T).unwrap();
    check_truncated(&r, name, 512, 11, "udp, EDNS 100 (taken as 512)");
    assert_eq!(
        r.edns().unwrap().udp_size,
        100,
        "the client's size is echoed"
    );
    check_whole(
        &udp(addr(port), &q().edns(1232), T).unwrap(),
        "udp, EDNS 1232",
    );
    check_whole(&tcp(addr(port), &q(), T).unwrap(), "tcp");
    // 684 bytes fit a client that takes 4096; its OPT record says 4096.
    let r = udp(addr(port), &q().edns(4096), T).unwrap();
    check_whole(&r, "udp, EDNS 4096");
    assert_eq!(r.edns().unwrap().udp_size, 4096);
}

const HEADLESS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: big, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: http, port: 80, protocol: TCP}]
"#;

fn headless_manifest() -> String {
    let mut s = HEADLESS.to_string();
    s.push_str(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  namespace: shop\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nendpoints:\n",
    );
    for ip in forty() {
        s.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: true}}\n"
        ));
    }
    s.push_str("ports:\n- {name: http, port: 80, protocol: TCP}\n");
    s
}

/// A headless service with 40 ready endpoints: the first answer is built, the second comes from
/// the reply memo; both keep the records that fit, over UDP without EDNS, and TCP gets all.
#[test]
fn truncation_keeps_the_records_that_fit_for_a_headless_service() {
    let port = free_port();
    let cf = format!(
        "cluster.local:{port} {{\n    kubernetes cluster.local {{\n        manifests cluster.yaml\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("cluster.yaml", headless_manifest())
        .start();
    let name = "big.shop.svc.cluster.local.";
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let mut first = None;
    for round in 0..3 {
        let r = udp(addr(port), &Query::new(name, RecordType::A).id(7), T).unwrap();
        check_truncated(&r, name, 512, 0, &format!("udp round {round}"));
        let sorted = r.answers_sorted();
        match &first {
            None => first = Some(sorted),
            Some(f) => assert_eq!(&sorted, f, "the memo sends the same answer"),
        }
        check_whole(
            &tcp(addr(port), &Query::new(name, RecordType::A), T).unwrap(),
            &format!("tcp round {round}"),
        );
        let r = udp(addr(port), &Query::new(name, RecordType::A).edns(512), T).unwrap();
        check_truncated(&r, name, 512, 11, &format!("udp EDNS 512 round {round}"));
    }
}

/// An upstream that answers every A query with 40 records (it ignores the client's size: a
/// TCP upstream, or a server that does not truncate).
fn forty_upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| {
        // Owners spelled as asked, so they compress against the question (compression is
        // case-sensitive, in miekg/dns as here).
        let name = req.name_as_asked();
        let mut b = req.reply().aa(true);
        for ip in forty() {
            b = b.answer(&format!("{name} 300 IN A {ip}"));
        }
        b.action()
    })
    .unwrap()
}

/// A forwarded reply larger than the client takes: read over TCP (`force_tcp`), it is cut the
/// same way; a cache hit is too, whatever filled the cache. Over UDP CoreDNS reads the
/// upstream's reply into a buffer of the client's size, and a reply that overflows it becomes
/// an empty TC reply (its proxy's `truncateResponse`): Sextant does the same.
#[test]
fn truncation_keeps_the_records_that_fit_forwarded_and_cached() {
    let up = forty_upstream();
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n    forward . {up} {{\n        force_tcp\n    }}\n}}\ncached.example:{port} {{\n    cache 30\n    forward . {up}\n}}\nudp.example:{port} {{\n    forward . {up}\n}}\ninvalid.:{port} {{\n    whoami\n}}\n",
        up = up.addr()
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let a = |name: &str| Query::new(name, RecordType::A);
    for name in ["big.example.net.", "Other.Example.NET."] {
        for round in 0..2 {
            let what = format!("force_tcp {name} round {round}");
            let r = udp(addr(port), &a(name), T).unwrap();
            check_truncated(&r, name, 512, 0, &format!("{what}: udp"));
            let r = udp(addr(port), &a(name).edns(600), T).unwrap();
            check_truncated(&r, name, 600, 11, &format!("{what}: udp EDNS 600"));
            check_whole(
                &tcp(addr(port), &a(name), T).unwrap(),
                &format!("{what}: tcp"),
            );
            check_whole(
                &udp(addr(port), &a(name).edns(1232), T).unwrap(),
                &format!("{what}: udp EDNS 1232"),
            );
        }
    }
    // The cache is filled over TCP; UDP hits keep what fits.
    let name = "big.cached.example.";
    check_whole(
        &tcp(addr(port), &a(name), T).unwrap(),
        "cache fill over tcp",
    );
    for round in 0..2 {
        let r = udp(addr(port), &a(name), T).unwrap();
        check_truncated(&r, name, 512, 0, &format!("cache hit {round}"));
        let r = udp(addr(port), &a(name).edns(600), T).unwrap();
        check_truncated(&r, name, 600, 11, &format!("cache hit EDNS 600 {round}"));
    }
    // Over UDP, an upstream reply larger than the client takes: TC, nothing else.
    let name = "big.udp.example.";
    for q in [a(name), a(name).edns(600)] {
        let r = udp(addr(port), &q, T).unwrap();
        assert!(r.truncated(), "{r:?}");
        assert_eq!(r.rcode_name(), "NOERROR");
        assert!(r.answers().is_empty() && r.authority().is_empty(), "{r:?}");
    }
    check_whole(
        &tcp(addr(port), &a(name), T).unwrap(),
        "udp upstream, tcp client",
    );
    check_whole(
        &udp(addr(port), &a(name).edns(1232), T).unwrap(),
        "udp upstream, EDNS 1232",
    );
}

/// `example.org. A` with EDNS 4096 and DO through `forward`, with and without `cache`: the
/// reply's OPT record says 4096 and has DO (CoreDNS's test/cache_test.go), over UDP and TCP;
/// a client without EDNS gets no OPT record; a client cookie is echoed on a reply that has no
/// OPT record of its own (a cache hit), and a client subnet option is not.
#[test]
fn the_reply_opt_echoes_the_client_edns() {
    let up = Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .aa(true)
            .answer(&format!("{} 300 IN A 192.0.2.1", req.name()))
            .edns(1232)
            .action()
    })
    .unwrap();
    for cache in [false, true] {
        let port = free_port();
        let cf = format!(
            ".:{port} {{\n    {}\n    forward . {}\n}}\ninvalid.:{port} {{\n    whoami\n}}\n",
            if cache { "cache 30" } else { "" },
            up.addr()
        );
        let mut s = Sextant::start(bin(), &cf);
        s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
        for round in 0..2 {
            let what = format!("cache {cache} round {round}");
            let q = Query::new("example.org.", RecordType::A)
                .edns(4096)
                .do_bit();
            for (proto, r) in [
                ("udp", udp(addr(port), &q, T).unwrap()),
                ("tcp", tcp(addr(port), &q, T).unwrap()),
            ] {
                assert_eq!(r.answers().len(), 1, "{what} {proto}");
                let e = r.edns().expect("OPT");
                assert_eq!(
                    (e.udp_size, e.do_bit, e.version),
                    (4096, true, 0),
                    "{what} {proto}"
                );
                assert_eq!(e.opt_count, 1);
            }
            let r = udp(
                addr(port),
                &Query::new("example.org.", RecordType::A).edns(1400),
                T,
            )
            .unwrap();
            let e = r.edns().expect("OPT");
            assert_eq!((e.udp_size, e.do_bit), (1400, false), "{what}");
            let r = udp(addr(port), &Query::new("example.org.", RecordType::A), T).unwrap();
            assert!(r.edns().is_none(), "{what}: no OPT without EDNS");
        }
        if cache {
            // A cache hit: the reply has no OPT of its own, so the client's is reused, with
            // the options CoreDNS supports (the cookie) and without the others (subnet).
            let q = Query::new("example.org.", RecordType::A)
                .edns(2048)
                .edns_option(10, &[1, 2, 3, 4, 5, 6, 7, 8])
                .edns_option(8, &[0, 1, 24, 0, 192, 0, 2]);
            let e = udp(addr(port), &q, T).unwrap().edns().unwrap();
            assert_eq!(e.udp_size, 2048);
            assert_eq!(e.options, vec![(10, vec![1, 2, 3, 4, 5, 6, 7, 8])]);
        }
    }
}

/// `.:P6 { chaos }` and `.:P7 { forward . 127.0.0.1:P6 }`: P7 forwards `version.bind. CH TXT`
/// instead of refusing it (CoreDNS's TestProxyToChaosServer); a block with neither keeps
/// refusing CH.
#[test]
fn ch_class_queries_pass_through_forward() {
    let p6 = free_port();
    let p7 = free_port();
    let p8 = free_port();
    let cf = format!(
        ".:{p6} {{\n    chaos Sextant-test\n}}\n.:{p7} {{\n    forward . 127.0.0.1:{p6}\n}}\n.:{p8} {{\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(p8), Duration::from_secs(10)).unwrap();
    let q = Query::new("version.bind.", RecordType::TXT).class(3);
    for (proto, r) in [
        ("udp", udp(addr(p7), &q, T).unwrap()),
        ("tcp", tcp(addr(p7), &q, T).unwrap()),
    ] {
        assert_eq!(r.rcode_name(), "NOERROR", "{proto}: {r:?}");
        assert_eq!(r.answers().len(), 1, "{proto}");
        assert!(
            r.answers()[0].contains("Sextant-test"),
            "{proto}: {:?}",
            r.answers()
        );
    }
    let r = udp(addr(p8), &q, T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
}

const MUSL_CLIENT: &str = r#"
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

int main(int argc, char **argv) {
    struct addrinfo hints, *res, *p;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(argv[1], NULL, &hints, &res);
    if (rc != 0) {
        printf("error %s\n", gai_strerror(rc));
        return 2;
    }
    for (p = res; p; p = p->ai_next) {
        char buf[64];
        struct sockaddr_in *sa = (struct sockaddr_in *)p->ai_addr;
        printf("%s\n", inet_ntop(AF_INET, &sa->sin_addr, buf, sizeof buf));
    }
    freeaddrinfo(res);
    return 0;
}
"#;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// musl before 1.2.4 (Debian 12 ships 1.2.3) never retries over TCP: it uses what the truncated
/// UDP reply carries. A headless service with 40 endpoints and a forwarded name with 40
/// addresses must resolve for it. The client runs in a network namespace of its own, with a
/// resolv.conf bind-mounted over /etc/resolv.conf in a mount namespace, and asks Sextant on
/// port 53 at the host end of a veth pair.
#[test]
fn musl_getaddrinfo_uses_the_records_a_truncated_reply_keeps() {
    let missing: Vec<&str> = ["musl-gcc", "ip", "unshare", "mount"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: install musl-tools, iproute2, util-linux, mount (./test.sh does)"
    );
    assert!(
        nix_is_root(),
        "needs root (network and mount namespaces), as ./test.sh and CI run"
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("gai.c");
    std::fs::write(&src, MUSL_CLIENT).unwrap();
    let client = dir.path().join("gai");
    let out = Command::new("musl-gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&client)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "musl-gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ns = NetNs::create("musl").unwrap();
    let veth = ns.add_veth("169.254.77.1/30", "169.254.77.2/30").unwrap();
    let _ = veth;
    let up = forty_upstream();
    let cf = format!(
        "cluster.local:53 {{\n    bind 169.254.77.1\n    kubernetes cluster.local {{\n        manifests cluster.yaml\n    }}\n}}\n.:53 {{\n    bind 169.254.77.1\n    cache 30\n    forward . {} {{\n        force_tcp\n    }}\n}}\n",
        up.addr()
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("cluster.yaml", headless_manifest())
        .start();
    let server: SocketAddr = "169.254.77.1:53".parse().unwrap();
    s.wait_dns(server, Duration::from_secs(10)).unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 169.254.77.1\noptions attempts:2 timeout:2\n",
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} \"$0\"",
        resolv.display(),
        client.display()
    );
    for name in ["big.shop.svc.cluster.local", "big.example.net"] {
        // A plain UDP query shows what musl sees: TC with the records that fit.
        let r = udp(server, &Query::new(&format!("{name}."), RecordType::A), T).unwrap();
        assert!(r.truncated() && !r.answers().is_empty(), "{name}: {r:?}");
        let out = ns
            .command("unshare", &["-m", "sh", "-c", &script, name])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: musl getaddrinfo failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ips: Vec<&str> = stdout.lines().collect();
        assert_eq!(ips.len(), r.answers().len(), "{name}: {ips:?}");
        assert!(
            ips.iter().all(|ip| ip.starts_with("10.1.0.")),
            "{name}: {ips:?}"
        );
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
