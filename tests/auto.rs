//! The `auto` plugin end to end: zones picked up from a directory by file name, a new file added
//! and a removed one dropped on the next scan, a changed serial re-read, transfers and a
//! custom regexp/template.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn zone(origin: &str, serial: u32, ip: &str) -> String {
    format!("$ORIGIN {origin}.\n$TTL 300\n@ SOA ns hostmaster {serial} 3600 600 86400 30\n@ NS ns\nns A 192.0.2.53\nwww A {ip}\n")
}

fn wait_rcode(addr: SocketAddr, name: &str, rcode: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = udp(addr, &Query::new(name, RecordType::A).rd(false), T).unwrap();
        if r.rcode_name() == rcode || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn directory_scan_adds_reloads_and_drops_zones() {
    let port = free_port();
    let cf = format!(
        "org:{port} {{\n    auto {{\n        directory zones\n        reload 1s\n    }}\n    transfer {{\n        to 127.0.0.1\n    }}\n}}\n"
    );
    let mut s = Sextant::builder(bin(), &cf)
        .file("zones/db.example.org", zone("example.org", 1, "192.0.2.1"))
        .file("zones/sub/db.other.org", zone("other.org", 1, "192.0.2.2"))
        .file("zones/ignored.org", zone("ignored.org", 1, "192.0.2.3"))
        .start();
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    let r = udp(
        a,
        &Query::new("www.example.org.", RecordType::A).rd(false),
        T,
    )
    .unwrap();
    assert_eq!(
        (r.rcode_name().as_str(), r.flags().as_str()),
        ("NOERROR", "qr,aa")
    );
    assert_eq!(r.answers(), ["www.example.org. 300 IN A 192.0.2.1"]);
    assert_eq!(
        udp(a, &Query::new("www.other.org.", RecordType::A), T)
            .unwrap()
            .answers(),
        ["www.other.org. 300 IN A 192.0.2.2"]
    );
    // A name in the block's zone that no file serves: REFUSED (auto is the last plugin).
    assert_eq!(
        udp(a, &Query::new("www.ignored.org.", RecordType::A), T)
            .unwrap()
            .rcode_name(),
        "REFUSED"
    );
    let r = tcp(a, &Query::new("example.org.", RecordType::AXFR), T).unwrap();
    assert_eq!(r.answers().len(), 5);
    // New file, new serial, removed file.
    s.write_file("zones/db.new.org", zone("new.org", 1, "192.0.2.4"))
        .unwrap();
    s.write_file("zones/db.example.org", zone("example.org", 2, "192.0.2.9"))
        .unwrap();
    std::fs::remove_file(s.dir().join("zones/sub/db.other.org")).unwrap();
    assert_eq!(
        wait_rcode(a, "www.new.org.", "NOERROR").answers(),
        ["www.new.org. 300 IN A 192.0.2.4"]
    );
    s.wait_for_line("Inserting zone `new.org.' from: zones/db.new.org", T)
        .unwrap();
    s.wait_for_line("Deleting zone `other.org.'", T).unwrap();
    assert_eq!(
        wait_rcode(a, "www.other.org.", "REFUSED").rcode_name(),
        "REFUSED"
    );
    s.wait_for_line("Successfully reloaded zone \"example.org.\"", T)
        .unwrap();
    assert_eq!(
        udp(a, &Query::new("www.example.org.", RecordType::A), T)
            .unwrap()
            .answers(),
        ["www.example.org. 300 IN A 192.0.2.9"]
    );
}

#[test]
fn regexp_and_template_name_the_origin() {
    let port = free_port();
    let cf = format!("org:{port} {{\n    auto {{\n        directory zones ^www\\.db\\.(.*)$ {{1}}\n        reload 0\n    }}\n}}\n");
    let mut s = Sextant::builder(bin(), &cf)
        .file(
            "zones/www.db.example.org",
            zone("example.org", 1, "192.0.2.1"),
        )
        .file("zones/db.other.org", zone("other.org", 1, "192.0.2.2"))
        .start();
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    assert_eq!(
        udp(a, &Query::new("www.example.org.", RecordType::A), T)
            .unwrap()
            .answers(),
        ["www.example.org. 300 IN A 192.0.2.1"]
    );
    assert_eq!(
        udp(a, &Query::new("www.other.org.", RecordType::A), T)
            .unwrap()
            .rcode_name(),
        "REFUSED"
    );
}
