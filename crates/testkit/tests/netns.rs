//! Network namespace create / exec / veth / teardown (needs root and iproute2).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use sextant_testkit::*;

fn netns_list() -> String {
    let out = Command::new(IP).args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn create_exec_veth_and_teardown() {
    let ns = NetNs::create("tktest").unwrap();
    let name = ns.name().to_string();
    assert!(netns_list().contains(&name));
    let out = ns.exec_ok("ip", &["-o", "link", "show", "lo"]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("UP"),
        "lo is up"
    );
    assert!(ns.exec_ok("false", &[]).is_err());

    let v = ns.add_veth("169.254.213.1/30", "169.254.213.2/30").unwrap();
    let out = ns
        .exec_ok("ip", &["-4", "-o", "addr", "show", "dev", &v.ns_if])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("169.254.213.2/30"));

    // A UDP packet from inside the namespace reaches a socket in the root namespace.
    let sock = UdpSocket::bind("169.254.213.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let cmd = format!("printf hello > /dev/udp/169.254.213.1/{port}");
    ns.exec_ok("bash", &["-c", &cmd]).unwrap();
    let mut buf = [0u8; 16];
    let (n, from): (usize, SocketAddr) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip().to_string(), "169.254.213.2");

    let host_if = v.host_if.clone();
    drop(ns);
    assert!(!netns_list().contains(&name), "namespace deleted");
    let st = Command::new(IP)
        .args(["link", "show", &host_if])
        .output()
        .unwrap();
    assert!(!st.status.success(), "root end of the veth removed");
}
