//! Zone transfers between Sextant and Knot DNS, both started by the tests on loopback: Knot as
//! the primary and Sextant's `secondary` (AXFR, IXFR after a change, NOTIFY starting the
//! refresh, SOA timers, an unreachable primary), Knot as a secondary of Sextant's `file` +
//! `transfer` (AXFR, NOTIFY after a reload), and kdig's AXFR/IXFR of a multi-message zone.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `addr` for `name`/`t` until the answer section satisfies `ok` (bounded).
fn wait_answer(
    addr: SocketAddr,
    name: &str,
    t: RecordType,
    within: Duration,
    ok: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(r) = udp(
            addr,
            &Query::new(name, t).rd(false),
            Duration::from_millis(500),
        ) {
            if ok(&r) {
                return r;
            }
            last = Some(r);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no satisfying answer for {name} {t:?} from {addr} within {within:?}; last: {last:?}");
}

fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics", T).unwrap().1
}

fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const PRIMARY_ZONE: &str = "$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 30
@ NS ns
ns A 192.0.2.53
www A 192.0.2.1
www AAAA 2001:db8::1
";

#[test]
fn knot_primary_sextant_secondary_axfr_ixfr_notify_refresh_and_outage() {
    let port = free_port();
    let mport = free_port();
    let kaddr = free_addr();
    let top = format!(
        "remote:\n  - id: sextant\n    address: 127.0.0.1@{port}\nacl:\n  - id: xfr\n    address: 127.0.0.1\n    action: transfer\n"
    );
    let knot = Knot::start_with(
        kaddr,
        "example.test.",
        Some(PRIMARY_ZONE),
        &top,
        "    notify: sextant\n    acl: xfr\n    zonefile-sync: -1\n",
    )
    .unwrap();
    let cf = format!(
        "example.test:{port} {{\n    secondary {{\n        transfer from {kaddr}\n    }}\n    prometheus 127.0.0.1:{mport}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    let addr = local(port);
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    // The first transfer is an AXFR.
    let r = wait_answer(
        addr,
        "www.example.test.",
        RecordType::A,
        Duration::from_secs(10),
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.flags(), "qr,aa");
    assert_eq!(r.answers(), ["www.example.test. 300 IN A 192.0.2.1"]);
    assert_eq!(r.authority(), ["example.test. 300 IN NS ns.example.test."]);
    s.wait_for_line("(AXFR, serial 1)", T).unwrap();
    let r = udp(addr, &Query::new("nope.example.test.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(r.authority(), ["example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 30"]);

    // A change on the primary: Knot bumps the serial, sends NOTIFY; the refresh timer (3600 s)
    // cannot be what brings it, so NOTIFY starts the check and IXFR brings the difference.
    knot.knotc(&["zone-begin", "example.test."]).unwrap();
    knot.knotc(&[
        "zone-set",
        "example.test.",
        "new.example.test.",
        "300",
        "A",
        "192.0.2.7",
    ])
    .unwrap();
    knot.knotc(&["zone-unset", "example.test.", "www.example.test.", "AAAA"])
        .unwrap();
    knot.knotc(&["zone-commit", "example.test."]).unwrap();
    s.wait_for_line(
        "Notify from 127.0.0.1 for example.test.: checking transfer",
        Duration::from_secs(10),
    )
    .unwrap();
    s.wait_for_line("(IXFR, serial 2)", Duration::from_secs(10))
        .unwrap();
    let r = udp(addr, &Query::new("new.example.test.", RecordType::A), T).unwrap();
    assert_eq!(r.answers(), ["new.example.test. 300 IN A 192.0.2.7"]);
    let r = udp(addr, &Query::new("www.example.test.", RecordType::AAAA), T).unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.answers().len()),
        ("NOERROR", 0),
        "the deleted AAAA is gone"
    );
    let m = metrics(local(mport));
    assert_eq!(
        metric_value(&m, "sextant_secondary_zone_serial{zone=\"example.test.\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(metric_value(&m, "sextant_secondary_transfers_total{result=\"success\",type=\"IXFR\",zone=\"example.test.\"}"), Some(1.0), "{m}");

    // New SOA timers (refresh 1 s) come with the next transfer; then the primary goes away: the
    // refresh check fails, the last good copy is still served, the log and metrics say so.
    knot.knotc(&["zone-begin", "example.test."]).unwrap();
    knot.knotc(&[
        "zone-set",
        "example.test.",
        "example.test.",
        "30",
        "SOA",
        "ns",
        "hostmaster",
        "10",
        "1",
        "1",
        "86400",
        "30",
    ])
    .unwrap();
    knot.knotc(&["zone-commit", "example.test."]).unwrap();
    s.wait_for_line("(IXFR, serial 10)", Duration::from_secs(10))
        .unwrap();
    drop(knot);
    s.wait_for_line("Failed refresh check", Duration::from_secs(15))
        .unwrap();
    let r = udp(addr, &Query::new("new.example.test.", RecordType::A), T).unwrap();
    assert_eq!((r.rcode_name().as_str(), r.answers().len()), ("NOERROR", 1));
    let m = metrics(local(mport));
    assert!(
        metric_value(
            &m,
            "sextant_secondary_refresh_failures_total{zone=\"example.test.\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "sextant_secondary_zone_expired{zone=\"example.test.\"}"),
        Some(0.0)
    );
}

#[test]
fn secondary_expires_without_primary_and_drops_foreign_notify() {
    let port = free_port();
    let kaddr = free_addr();
    let top = "acl:\n  - id: xfr\n    address: 127.0.0.1\n    action: transfer\n";
    let zone = "$TTL 300\n@ SOA ns hostmaster 5 1 1 3 30\n@ NS ns\nns A 192.0.2.53\n";
    let knot = Knot::start_with(kaddr, "exp.test.", Some(zone), top, "    acl: xfr\n").unwrap();
    let cf = format!(
        "exp.test:{port} {{\n    secondary {{\n        transfer from {kaddr}\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf).start();
    let addr = local(port);
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    wait_answer(
        addr,
        "ns.exp.test.",
        RecordType::A,
        Duration::from_secs(10),
        |r| r.rcode_name() == "NOERROR",
    );
    // NOTIFY from an address that is not a primary: dropped, no answer.
    let mut w = Query::new("exp.test.", RecordType::SOA)
        .opcode(4)
        .to_bytes();
    w[2] |= 0x04;
    let other = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    other.send_to(&w, addr).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        other.recv_from(&mut buf).is_err(),
        "a NOTIFY from a stranger is not answered"
    );
    s.wait_for_line("Dropping notify from 127.0.0.2 for exp.test.", T)
        .unwrap();
    drop(knot);
    // Retry 1 s, expire 3 s: the zone expires and answers SERVFAIL.
    wait_answer(
        addr,
        "ns.exp.test.",
        RecordType::A,
        Duration::from_secs(15),
        |r| r.rcode_name() == "SERVFAIL",
    );
    s.wait_for_line("Zone exp.test. is expired", T).unwrap();
}

#[test]
fn knot_secondary_of_sextant_file_with_notify_after_reload() {
    let port = free_port();
    let kaddr = free_addr();
    let zone = |serial: u32, extra: &str| {
        format!("$ORIGIN example.org.\n$TTL 300\n@ SOA ns hostmaster {serial} 3600 600 86400 30\n@ NS ns\nns A 192.0.2.53\nwww A 192.0.2.1\n{extra}")
    };
    let cf = format!(
        "example.org:{port} {{\n    file db.example.org {{\n        reload 1s\n    }}\n    transfer {{\n        to * {kaddr}\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("db.example.org", zone(1, ""))
        .start();
    let addr = local(port);
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    let top = format!(
        "remote:\n  - id: primary\n    address: 127.0.0.1@{port}\nacl:\n  - id: notify\n    address: 127.0.0.1\n    action: notify\n"
    );
    let knot = Knot::start_with(
        kaddr,
        "example.org.",
        None,
        &top,
        "    master: primary\n    acl: notify\n",
    )
    .unwrap();
    let r = wait_answer(
        knot.addr(),
        "www.example.org.",
        RecordType::A,
        Duration::from_secs(15),
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 192.0.2.1"]);
    s.wait_for_line("Outgoing transfer of 5 records of zone \"example.org.\"", T)
        .unwrap();
    // A new serial on disk: reload, NOTIFY to Knot, Knot transfers again.
    s.write_file("db.example.org", zone(2, "new A 192.0.2.9\n"))
        .unwrap();
    s.wait_for_line(
        "Successfully reloaded zone \"example.org.\"",
        Duration::from_secs(10),
    )
    .unwrap();
    let r = wait_answer(
        knot.addr(),
        "new.example.org.",
        RecordType::A,
        Duration::from_secs(15),
        |r| r.rcode_name() == "NOERROR",
    );
    assert_eq!(r.answers(), ["new.example.org. 300 IN A 192.0.2.9"]);
    assert!(knot.log().contains("notify"), "{}", knot.log());
}

fn kdig(args: &[&str]) -> String {
    let out = Command::new("kdig")
        .args(args)
        .output()
        .expect("kdig (knot-dnsutils) is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kdig_axfr_ixfr_of_a_multi_message_zone() {
    let port = free_port();
    let mut z = String::from(
        "$ORIGIN big.test.\n$TTL 300\n@ SOA ns h 7 3600 600 86400 30\n@ NS ns\nns A 10.0.0.1\n",
    );
    for i in 0..4000 {
        z.push_str(&format!(
            "h{i} A 10.1.{}.{}\nh{i} TXT \"host number {i}\"\n",
            i >> 8,
            i & 255
        ));
    }
    let cf = format!(
        "big.test:{port} {{\n    file db.big\n    transfer {{\n        to 127.0.0.1\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf).file("db.big", &z).start();
    s.wait_dns(local(port), Duration::from_secs(10)).unwrap();
    let p = port.to_string();
    let out = kdig(&["@127.0.0.1", "-p", &p, "big.test.", "AXFR", "+stats"]);
    assert!(out.contains("8004 records"), "{out}");
    let msgs: usize = out
        .split("B (")
        .nth(1)
        .and_then(|x| x.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(msgs >= 3, "a zone of ~250 kB needs several messages: {out}");
    // IXFR with the current serial: the SOA alone; with an older one, the whole zone.
    let out = kdig(&[
        "@127.0.0.1",
        "-p",
        &p,
        "big.test.",
        "IXFR=7",
        "+noall",
        "+answer",
    ]);
    assert_eq!(out.lines().filter(|l| !l.is_empty()).count(), 1, "{out}");
    assert!(out.contains("SOA"), "{out}");
    let out = kdig(&["@127.0.0.1", "-p", &p, "big.test.", "IXFR=6", "+stats"]);
    assert!(out.contains("8004 records"), "{out}");
    // Transfers over UDP are refused.
    let r = udp(local(port), &Query::new("big.test.", RecordType::AXFR), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
}
