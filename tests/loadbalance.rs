//! End-to-end tests of the `loadbalance` plugin with `hosts` behind it: the real binary over UDP
//! and TCP on 127.0.0.1.

use std::collections::HashSet;
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

fn start(corefile: &str, files: &[(&str, &str)], port: u16) -> Sextant {
    let mut b = Sextant::builder(bin(), corefile);
    for (n, c) in files {
        b = b.file(n, c);
    }
    let mut s = b.start();
    s.wait_dns(addr(port), Duration::from_secs(10))
        .expect("server answers");
    s
}

const INLINE: &str = "    10.0.0.1 www.example.org\n    10.0.0.2 www.example.org\n    10.0.0.3 www.example.org\n    10.1.0.9 www.example.org\n";

#[test]
fn round_robin_shuffles_whole_answer_over_udp_and_tcp() {
    let port = free_port();
    let cf = format!(".:{port} {{\n  loadbalance\n  hosts {{\n{INLINE}  }}\n}}\n");
    let _s = start(&cf, &[], port);
    let q = Query::new("www.example.org.", RecordType::A);
    let mut firsts = HashSet::new();
    let mut orders = HashSet::new();
    for i in 0..60 {
        let r = if i % 2 == 0 {
            udp(addr(port), &q, T).unwrap()
        } else {
            tcp(addr(port), &q, T).unwrap()
        };
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(
            r.answers_sorted(),
            vec![
                "www.example.org. 3600 IN A 10.0.0.1",
                "www.example.org. 3600 IN A 10.0.0.2",
                "www.example.org. 3600 IN A 10.0.0.3",
                "www.example.org. 3600 IN A 10.1.0.9"
            ]
        );
        firsts.insert(r.answers()[0].clone());
        orders.insert(r.answers().join("|"));
    }
    // 60 shuffles of 4 records: every first position shows up (miss chance ~ 4*(3/4)^60).
    assert_eq!(firsts.len(), 4, "{firsts:?}");
    assert!(orders.len() >= 8, "{orders:?}");
}

#[test]
fn prefer_puts_subnet_first() {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  loadbalance round_robin {{\n    prefer 10.1.0.0/16\n  }}\n  hosts {{\n{INLINE}  }}\n}}\n"
    );
    let _s = start(&cf, &[], port);
    let q = Query::new("www.example.org.", RecordType::A);
    for i in 0..20 {
        let r = if i % 2 == 0 {
            udp(addr(port), &q, T).unwrap()
        } else {
            tcp(addr(port), &q, T).unwrap()
        };
        let ans = r.answers();
        assert_eq!(ans.len(), 4);
        assert_eq!(ans[0], "www.example.org. 3600 IN A 10.1.0.9");
    }
}

#[test]
fn weighted_prefers_heavy_address_and_leaves_errors_alone() {
    let port = free_port();
    let cf = format!(
        ".:{port} {{\n  loadbalance weighted weights {{\n    reload 0\n  }}\n  hosts {{\n{INLINE}  }}\n}}\n"
    );
    let weights = "www.example.org\n10.0.0.3 255\n10.0.0.1 1\n10.0.0.2 1\n10.1.0.9 1\n";
    let s = start(&cf, &[("weights", weights)], port);
    s.wait_for_line(
        "[INFO] plugin/loadbalance: Successfully reloaded weight file weights",
        T,
    )
    .unwrap();
    let q = Query::new("www.example.org.", RecordType::A);
    let mut top = 0;
    for _ in 0..50 {
        let r = udp(addr(port), &q, T).unwrap();
        assert_eq!(r.answers().len(), 4);
        if r.answers()[0].ends_with(" 10.0.0.3") {
            top += 1;
        }
    }
    // P(top) = 255/258 per query.
    assert!(top >= 40, "{top}");
    // SERVFAIL from hosts (unknown name) passes through untouched.
    let r = tcp(
        addr(port),
        &Query::new("nope.example.org.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
}

#[test]
fn bad_weight_file_fails_setup() {
    let cf =
        ".:1053 {\n  loadbalance weighted /nonexistent/weights {\n    reload 0\n  }\n  whoami\n}\n";
    let (code, out, err) = Sextant::check(bin(), cf).unwrap();
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains(":2:3: loadbalance: weight file open error"),
        "{all}"
    );
}
