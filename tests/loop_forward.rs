//! Real forwarding loops: a block that forwards to its own listener with `loop` must log
//! CoreDNS's FATAL line and exit 1 within the probe window; without `loop` the same block must
//! stay up, refuse beyond `max_concurrent` and keep its memory bounded under a burst.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn self_forward_with_loop_is_fatal() {
    let port = free_port();
    let cf = format!(".:{port} {{\n  loop\n  forward . 127.0.0.1:{port}\n}}\n");
    let started = Instant::now();
    let mut s = Sextant::start(bin(), &cf);
    // CoreDNS probes for up to 30 s; a loop on loopback is seen on the first probe.
    let st = s
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running:\n{}", s.output()));
    let took = started.elapsed();
    assert_eq!(st.code(), Some(1), "{}", s.output());
    let fatal: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("[FATAL] "))
        .collect();
    assert_eq!(fatal.len(), 1, "{}", s.output());
    let l = &fatal[0];
    let prefix = "[FATAL] plugin/loop: Loop (127.0.0.1:";
    assert!(l.starts_with(prefix), "{l}");
    let rest = &l[prefix.len()..];
    let (remote_port, rest) = rest.split_once(' ').unwrap();
    assert!(remote_port.parse::<u16>().is_ok(), "{l}");
    let want = format!(
        "-> :{port}) detected for zone \".\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO "
    );
    assert!(rest.starts_with(&want), "{l}");
    let q = rest[want.len()..].trim_end_matches('"');
    let labels: Vec<&str> = q.split('.').collect();
    assert_eq!(labels.len(), 3, "<n>.<n>. for the root zone: {q}");
    assert!(
        labels[0].parse::<u64>().is_ok() && labels[1].parse::<u64>().is_ok(),
        "{q}"
    );
    assert_eq!(labels[2], "");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn self_forward_with_loop_in_a_zone_block_is_fatal_over_tcp_clients_too() {
    // The probe goes to the block's first zone; the forward runs over TCP (force_tcp).
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n  loop\n  forward . 127.0.0.1:{port} {{\n    force_tcp\n  }}\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    let st = s
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running:\n{}", s.output()));
    assert_eq!(st.code(), Some(1), "{}", s.output());
    let l = s
        .wait_for_line("[FATAL] plugin/loop: Loop (127.0.0.1:", T)
        .unwrap();
    assert!(
        l.contains(&format!(
            " -> :{port}) detected for zone \"example.org.\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO "
        )),
        "{l}"
    );
    assert!(l.ends_with(".example.org.\""), "{l}");
}

#[test]
fn self_forward_without_loop_stays_up_bounded_by_max_concurrent() {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        ".:{port} {{\n  prometheus 127.0.0.1:{mport}\n  forward . 127.0.0.1:{port} {{\n    max_concurrent 50\n  }}\n}}\nalive.test:{port} {{\n  whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let pid = s.pid();
    // Warm up (one looping query), then measure.
    let _ = udp(addr(port), &Query::new("warm.example.", RecordType::A), T);
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = rss_kib(pid);

    // A bounded burst: 2000 distinct names over UDP from 4 sockets, without waiting for
    // answers, then 20 over TCP.
    let socks: Vec<std::net::UdpSocket> = (0..4)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for i in 0..2000u16 {
        let q = Query::new(&format!("n{i}.loop.example."), RecordType::A).id(i);
        let _ = socks[i as usize % 4].send_to(&q.to_bytes(), addr(port));
    }
    // 20 TCP clients at once; each gets an answer (REFUSED, or SERVFAIL when a hop ran into
    // the forward deadline) within the 5 s deadline plus margin.
    let t0 = Instant::now();
    let tcp_clients: Vec<_> = (0..20)
        .map(|i| {
            let a = addr(port);
            std::thread::spawn(move || {
                let q = Query::new(&format!("t{i}.loop.example."), RecordType::A);
                tcp(a, &q, Duration::from_secs(12)).map(|r| r.rcode_name())
            })
        })
        .collect();
    let rcodes: Vec<String> = tcp_clients
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(
        rcodes.iter().all(|r| r == "REFUSED" || r == "SERVFAIL"),
        "{rcodes:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    // Each query re-enters the server until max_concurrent is hit; the REFUSED answer then
    // unwinds the chain: a client gets REFUSED (or SERVFAIL when a hop timed out).
    let r = udp(
        addr(port),
        &Query::new("one.loop.example.", RecordType::A),
        Duration::from_secs(8),
    )
    .unwrap();
    assert!(
        ["REFUSED", "SERVFAIL"].contains(&r.rcode_name().as_str()),
        "{:?}",
        r.message()
    );

    // Still up and answering other zones promptly.
    let t0 = Instant::now();
    let r = udp(addr(port), &Query::new("x.alive.test.", RecordType::A), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa,rd")
    );
    assert!(t0.elapsed() < Duration::from_secs(1));

    // Let every hop finish (5 s forward deadline), then memory.
    std::thread::sleep(Duration::from_secs(6));
    let rss1 = rss_kib(pid);
    eprintln!("RSS {rss0} KiB -> {rss1} KiB");
    assert!(
        rss1 < rss0 + 64 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
    let (_, m) = http_get(SocketAddr::from(([127, 0, 0, 1], mport)), "/metrics", T).unwrap();
    let rejects: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("coredns_forward_max_concurrent_rejects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(rejects >= 1.0, "{m}");
    assert!(s.exited().is_none(), "{}", s.output());
    assert_eq!(s.count_lines("[FATAL]"), 0);
    let r = udp(addr(port), &Query::new("y.alive.test.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
}
