//! The `multisocket` plugin end to end: the number of UDP sockets (each with its reader thread)
//! and TCP listening sockets the process really holds on the port, every one of them serving,
//! the core-count default, the first block on an address deciding, a reload changing the count,
//! bad values at file:line:column, and (with `COREDNS_BIN`) the same socket counts as CoreDNS.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
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

fn cores() -> usize {
    std::thread::available_parallelism().unwrap().get()
}

/// Inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(l) = std::fs::read_link(e.path()) {
            let l = l.to_string_lossy().to_string();
            if let Some(n) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                out.insert(n.parse().unwrap());
            }
        }
    }
    out
}

/// (UDP sockets, listening TCP sockets) that process `pid` holds on 127.0.0.1:`port`.
fn sockets_on(pid: u32, port: u16) -> (usize, usize) {
    let mine = socket_inodes(pid);
    let local = format!("0100007F:{port:04X}");
    let count = |table: &str, listen_only: bool| {
        std::fs::read_to_string(table)
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f[1] == local
                    && (!listen_only || f[3] == "0A")
                    && mine.contains(&f[9].parse::<u64>().unwrap())
            })
            .count()
    };
    (count("/proc/net/udp", false), count("/proc/net/tcp", true))
}

/// Threads of process `pid` named `sextant-udp`.
fn udp_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim() == "sextant-udp")
                .unwrap_or(false)
        })
        .count()
}

/// Waits until process `pid` holds `want` (UDP, TCP) sockets on `port`.
fn wait_sockets(pid: u32, port: u16, want: (usize, usize)) {
    let t0 = Instant::now();
    let mut got = sockets_on(pid, port);
    while got != want && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        got = sockets_on(pid, port);
    }
    assert_eq!(got, want, "(udp, tcp) sockets on port {port}");
}

/// Queries from `n` UDP sockets (as many source ports, which the kernel hashes over the
/// listening sockets) and `n` TCP connections; every answer is checked whole.
fn all_serve(port: u16, n: usize) {
    for i in 0..n {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        let q = Query::new("ms.example.", RecordType::A).id(1000 + i as u16);
        c.send_to(&q.to_bytes(), addr(port)).unwrap();
        let mut buf = [0u8; 512];
        let (len, _) = c
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("query {i} from {:?}: {e}", c.local_addr()));
        let r = Reply::parse(buf[..len].to_vec()).unwrap();
        let cport = c.local_addr().unwrap().port();
        assert_eq!(r.id(), 1000 + i as u16);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.question().unwrap(), "ms.example. IN A");
        assert!(r.answers().is_empty());
        assert_eq!(
            r.additional(),
            vec![
                "ms.example. 0 IN A 127.0.0.1".to_string(),
                format!("_udp.ms.example. 0 IN SRV 0 0 {cport} .")
            ]
        );
    }
    for i in 0..n {
        let mut c = TcpConn::connect(addr(port), T).unwrap();
        let cport = c.local_addr().unwrap().port();
        c.send_query(&Query::new("ms.example.", RecordType::A).id(i as u16))
            .unwrap();
        let r = c.recv_reply(T).unwrap();
        assert_eq!(r.id(), i as u16);
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(
            r.additional(),
            vec![
                "ms.example. 0 IN A 127.0.0.1".to_string(),
                format!("_tcp.ms.example. 0 IN SRV 0 0 {cport} .")
            ]
        );
    }
}

fn start(cf: &str, port: u16) -> Sextant {
    let mut s = Sextant::start(bin(), cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    s
}

#[test]
fn n_sockets_of_each_kind_and_all_serve() {
    let port = free_port();
    let s = start(
        &format!(".:{port} {{\n    bind 127.0.0.1\n    multisocket 3\n    whoami\n}}\n"),
        port,
    );
    wait_sockets(s.pid(), port, (3, 3));
    assert_eq!(udp_threads(s.pid()), 3, "one reader thread per UDP socket");
    all_serve(port, 48);
    // Nothing was left queued to (or dropped by) a socket nobody reads.
    let mine = socket_inodes(s.pid());
    let local = format!("0100007F:{port:04X}");
    for l in std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f[1] == local && mine.contains(&f[9].parse::<u64>().unwrap()) {
            assert!(f[4].ends_with(":00000000"), "rx queue left: {l}");
            assert_eq!(f[f.len() - 1], "0", "drops: {l}");
        }
    }
}

#[test]
fn without_a_number_one_socket_per_core() {
    let port = free_port();
    let s = start(
        &format!(".:{port} {{\n    bind 127.0.0.1\n    multisocket\n    whoami\n}}\n"),
        port,
    );
    wait_sockets(s.pid(), port, (cores(), cores()));
    all_serve(port, 8);
}

#[test]
fn without_the_plugin_udp_per_core_and_one_tcp_listener() {
    let port = free_port();
    let s = start(
        &format!(".:{port} {{\n    bind 127.0.0.1\n    whoami\n}}\n"),
        port,
    );
    wait_sockets(s.pid(), port, (cores(), 1));
    assert_eq!(udp_threads(s.pid()), cores());
    all_serve(port, 8);
}

#[test]
fn the_first_block_on_an_address_decides() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    bind 127.0.0.1\n    multisocket 2\n    whoami\n}}\n\
         .:{port} {{\n    bind 127.0.0.1\n    multisocket 4\n    whoami\n}}\n"
    );
    let s = start(&cf, port);
    wait_sockets(s.pid(), port, (2, 2));
    all_serve(port, 8);
}

#[test]
fn a_reload_changes_the_count_and_keeps_serving() {
    let port = free_port();
    let cf = |n: usize| {
        format!(".:{port} {{\n    bind 127.0.0.1\n    multisocket {n}\n    whoami\n}}\n")
    };
    let s = start(&cf(2), port);
    wait_sockets(s.pid(), port, (2, 2));
    std::fs::write(s.corefile_path(), cf(3)).unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("Reloading complete", Duration::from_secs(10))
        .unwrap();
    // The old sockets drain and close; only the new ones remain, and they serve.
    wait_sockets(s.pid(), port, (3, 3));
    let t0 = Instant::now();
    while udp_threads(s.pid()) != 3 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(udp_threads(s.pid()), 3);
    all_serve(port, 16);
    // Back to the default.
    std::fs::write(
        s.corefile_path(),
        format!(".:{port} {{\n    bind 127.0.0.1\n    whoami\n}}\n"),
    )
    .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_nth_line("Reloading complete", 2, Duration::from_secs(10))
        .unwrap();
    wait_sockets(s.pid(), port, (cores(), 1));
    all_serve(port, 8);
}

#[test]
fn bad_values_are_reported_at_their_position() {
    for (line, want) in [
        ("multisocket 0", "Corefile:2:17: multisocket: num sockets can not be zero or negative: 0"),
        ("multisocket -1", "Corefile:2:17: multisocket: num sockets can not be zero or negative: -1"),
        ("multisocket 1025", "Corefile:2:17: multisocket: num sockets exceeds maximum (1024): 1025"),
        (
            "multisocket abc",
            "Corefile:2:17: multisocket: invalid num sockets: strconv.Atoi: parsing \"abc\": invalid syntax",
        ),
        ("multisocket 1 2", "Corefile:2:19"),
        ("multisocket 2\n    multisocket 3", "Corefile:3:5"),
    ] {
        let cf = format!(".:{} {{\n    {line}\n    whoami\n}}\n", free_port());
        let (code, out, err) = Sextant::check(bin(), &cf).unwrap();
        assert_ne!(code, 0, "{line}: accepted");
        let text = format!("{out}{err}");
        assert!(text.contains(want), "{line}: {text}");
    }
}

/// With `COREDNS_BIN` set, CoreDNS holds as many sockets of each kind for `multisocket 3` as
/// Sextant does.
#[test]
fn same_socket_counts_as_coredns() {
    let Ok(coredns) = std::env::var("COREDNS_BIN") else {
        eprintln!(
            "same_socket_counts_as_coredns: COREDNS_BIN not set, comparison with CoreDNS not run"
        );
        return;
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Corefile"),
        format!(".:{port} {{\n    bind 127.0.0.1\n    multisocket 3\n    whoami\n}}\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(coredns)
        .current_dir(dir.path())
        .args(["-conf", "Corefile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while sockets_on(child.id(), port) != (3, 3) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let theirs = sockets_on(child.id(), port);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(theirs, (3, 3), "CoreDNS's (udp, tcp) sockets");
    let p2 = free_port();
    let s = start(
        &format!(".:{p2} {{\n    bind 127.0.0.1\n    multisocket 3\n    whoami\n}}\n"),
        p2,
    );
    wait_sockets(s.pid(), p2, theirs);
}
