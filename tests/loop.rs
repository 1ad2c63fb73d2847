//! End-to-end tests of the `loop` plugin: the start-up probe reaches the server's own listener,
//! the plugin turns itself off, and look-alike probes sent afterwards never make it exit.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The probe's qname from the query log line `"HINFO IN <qname> udp ..."`.
fn probe_name(line: &str) -> String {
    let after = line.split("\"HINFO IN ").nth(1).unwrap();
    after.split(' ').next().unwrap().to_string()
}

#[test]
fn probe_reaches_itself_then_lookalikes_are_harmless() {
    let port = free_port();
    let cf = format!("example.org:{port} {{\n  log\n  loop\n  whoami\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let line = s
        .wait_for_line("\"HINFO IN ", Duration::from_secs(5))
        .unwrap();
    let qname = probe_name(&line);
    // <62-bit>.<62-bit>.<first zone of the block>
    let labels: Vec<&str> = qname.split('.').collect();
    assert_eq!(labels.len(), 5, "{qname}");
    assert!(labels[0].parse::<u64>().unwrap() < 1 << 62);
    assert!(labels[1].parse::<u64>().unwrap() < 1 << 62);
    assert!(qname.ends_with(".example.org."), "{qname}");
    assert!(line.contains(" NOERROR qr,aa,rd "), "{line}");
    // Disabled right after the first answered probe: the same query many times over UDP and TCP
    // is simply served.
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..6 {
        let q = Query::new(&qname, RecordType::HINFO);
        let r = if i % 2 == 0 {
            udp(addr(port), &q, T).unwrap()
        } else {
            tcp(addr(port), &q, T).unwrap()
        };
        assert_eq!(r.rcode_name(), "NOERROR");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.exited().is_none(), "server exited:\n{}", s.output());
    assert_eq!(s.count_lines("[FATAL]"), 0);
    assert_eq!(s.count_lines("\"HINFO IN "), 7);
}

#[test]
fn probe_goes_to_the_root_zone_block() {
    let port = free_port();
    let cf = format!(".:{port} {{\n  log\n  loop\n  whoami\n}}\n");
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let line = s
        .wait_for_line("\"HINFO IN ", Duration::from_secs(5))
        .unwrap();
    let qname = probe_name(&line);
    assert_eq!(qname.split('.').count(), 3, "{qname}");
    assert!(s.exited().is_none());
}

#[test]
fn loop_takes_no_arguments_and_only_once() {
    let (code, out, err) = Sextant::check(bin(), ".:1053 {\n  loop x\n}\n").unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains(":2:8: loop: wrong argument count: expected 0, got 1"),
        "{all}"
    );
    let (code, out, err) = Sextant::check(bin(), ".:1053 {\n  loop\n  loop\n}\n").unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains("this plugin can only be used once per Server Block"),
        "{all}"
    );
}
