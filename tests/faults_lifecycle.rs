//! Lifecycle faults (faults.md §5.7) with the real binary: SIGTERM with lameduck under a UDP+TCP
//! stream, SIGKILL and restart, and bind failures at start (address in use, not permitted).

mod faults_common;

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use faults_common::*;
use sextant_testkit::*;

fn hosts_block(port: u16, extra: &str) -> String {
    format!(
        ".:{port} {{\n{extra}\n    hosts {{\n        192.0.2.1 a.example.org\n        192.0.2.2 b.example.org\n    }}\n}}\n"
    )
}

fn hosts_check() -> Check {
    answers_one_of(vec![
        (
            "a.example.org.".into(),
            vec![vec!["a.example.org. 3600 IN A 192.0.2.1".into()]],
        ),
        (
            "b.example.org.".into(),
            vec![vec!["b.example.org. 3600 IN A 192.0.2.2".into()]],
        ),
    ])
}

fn hosts_names() -> Vec<(String, RecordType)> {
    vec![
        ("a.example.org.".into(), RecordType::A),
        ("b.example.org.".into(), RecordType::A),
    ]
}

#[test]
fn sigterm_lameduck_under_load() {
    let (port, health, ready) = (free_port(), free_port(), free_port());
    // A slow forwarded zone gives TCP answers that are still in flight when lameduck ends.
    let up = Upstream::start(|req: &UpstreamRequest| {
        Action::Delay(
            Duration::from_millis(800),
            Box::new(req.reply().answer("slow.test. 60 IN A 192.0.2.9").action()),
        )
    })
    .unwrap();
    let core = format!(
        "{}slow.test:{port} {{\n    forward . {}\n}}\n",
        hosts_block(
            port,
            &format!("    health 127.0.0.1:{health} {{\n        lameduck 2s\n    }}\n    ready 127.0.0.1:{ready}"),
        ),
        up.addr()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = lo(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    assert_eq!(http_status(ready, "/ready"), 200);
    let load = Load::start(a, 800, 200, hosts_names(), hosts_check());
    std::thread::sleep(Duration::from_secs(1));

    let t0 = Instant::now();
    s.signal(libc::SIGTERM).unwrap();
    // /ready says 503 at once.
    let not_ready = poll(Duration::from_secs(1), || {
        (http_status(ready, "/ready") == 503).then(|| t0.elapsed())
    })
    .expect("/ready 503 after SIGTERM");
    eprintln!("/ready 503 {not_ready:?} after SIGTERM");
    assert!(not_ready < Duration::from_millis(500), "{not_ready:?}");
    assert_eq!(http_status(health, "/health"), 200);
    // Pipelined slow queries sent late in lameduck: answered after the listeners close.
    std::thread::sleep(Duration::from_millis(1300).saturating_sub(t0.elapsed()));
    let mut c = TcpConn::connect(a, T).unwrap();
    for i in 0..20u16 {
        c.send_query(&Query::new("slow.test.", RecordType::A).id(i))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1800).saturating_sub(t0.elapsed()));
    assert_eq!(
        http_status(health, "/health"),
        200,
        "health during lameduck"
    );
    let stats = load.stop();
    assert_eq!(stats.failed(), 0, "{}", stats.report());
    assert!(stats.ok() > 1000, "{}", stats.report());
    let mut ids = Vec::new();
    for _ in 0..20 {
        let r = c
            .recv_reply(Duration::from_secs(4))
            .expect("in-flight TCP answer");
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.answers(), vec!["slow.test. 60 IN A 192.0.2.9"]);
        ids.push(r.id());
    }
    ids.sort();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    let st = s
        .wait_exit(Duration::from_secs(7))
        .expect("exit within lameduck + 5 s");
    let took = t0.elapsed();
    eprintln!("exited {took:?} after SIGTERM with {st:?}");
    assert!(st.success(), "{st:?}");
    assert!(
        took >= Duration::from_secs(2),
        "lameduck honoured: {took:?}"
    );
    assert!(s.count_lines("Going into lameduck mode for 2s") == 1);
    assert_eq!(s.count_lines("panic"), 0);
}

#[test]
fn sigkill_restart_serves_within_one_second() {
    let port = free_port();
    let up = Upstream::records(&[
        "example.net. 300 IN SOA ns.example.net. h.example.net. 1 7200 1800 86400 30",
        "www.example.net. 60 IN A 192.0.2.7",
    ])
    .unwrap();
    let core = format!(
        ".:{port} {{\n    cache 30\n    hosts {{\n        192.0.2.1 a.example.org\n        fallthrough\n    }}\n    forward . {}\n}}\n",
        up.addr()
    );
    let mut s = Sextant::start(bin(), &core);
    let a = lo(port);
    s.wait_dns(a, Duration::from_secs(10)).unwrap();
    // A TCP connection left open makes the old socket linger on the port.
    let mut c = TcpConn::connect(a, T).unwrap();
    c.send_query(&Query::new("www.example.net.", RecordType::A))
        .unwrap();
    c.recv_reply(T).unwrap();
    let dir = s.dir().to_path_buf();
    s.kill();
    let t0 = Instant::now();
    let mut s2 = Sextant::builder(bin(), &core).cwd(&dir).start();
    let mut first = [None, None];
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.iter().any(Option::is_none) && Instant::now() < deadline {
        if first[0].is_none() {
            if let Ok(r) = udp(
                a,
                &Query::new("a.example.org.", RecordType::A),
                Duration::from_millis(50),
            ) {
                assert_eq!(r.answers(), vec!["a.example.org. 30 IN A 192.0.2.1"]); // capped by cache 30
                first[0] = Some(t0.elapsed());
            }
        }
        if first[1].is_none() {
            if let Ok(r) = tcp(
                a,
                &Query::new("www.example.net.", RecordType::A),
                Duration::from_millis(200),
            ) {
                assert_eq!(r.answers(), vec!["www.example.net. 30 IN A 192.0.2.7"]);
                first[1] = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "restart after SIGKILL: first UDP answer {:?}, first TCP (forwarded, cold cache) answer {:?} after spawn",
        first[0], first[1]
    );
    assert!(s2.exited().is_none());
    for t in first {
        let t = t.expect("serving after restart");
        assert!(t < Duration::from_secs(1), "{t:?}");
    }
}

fn assert_clean_start_failure(core: &str, needle: &str, never_up: &[u16]) {
    let mut s = Sextant::builder(bin(), core).spawn().unwrap();
    let st = s.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!st.success(), "{st:?}");
    assert_eq!(st.code(), Some(1), "{st:?}");
    let out = s.output();
    eprintln!("{out}");
    assert!(out.contains("[FATAL]"), "{out}");
    assert!(out.to_lowercase().contains(needle), "{out}");
    // No partial start: no banner, and the other listeners were never served.
    assert!(!out.contains("CoreDNS-"), "{out}");
    for p in never_up {
        let r = udp_raw(
            lo(*p),
            &Query::new("a.example.org.", RecordType::A).to_bytes()[..],
            Duration::from_millis(200),
        );
        assert!(!matches!(r, Ok(Some(_))), "port {p} answered");
    }
}

#[test]
fn bind_in_use_or_not_permitted_fails_cleanly() {
    // UDP port taken.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = taken.local_addr().unwrap().port();
    let (other, health) = (free_port(), free_port());
    let core = format!(
        "{}{}",
        hosts_block(other, &format!("    health 127.0.0.1:{health}")),
        hosts_block(p, "")
    );
    assert_clean_start_failure(&core, "address already in use", &[other]);
    assert_eq!(http_status(health, "/health"), 0, "health never started");

    // TCP port taken (the UDP side of the port is free).
    let taken_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = taken_tcp.local_addr().unwrap().port();
    let core = format!("{}{}", hosts_block(other, ""), hosts_block(p, ""));
    assert_clean_start_failure(&core, "address already in use", &[other]);

    // Health port taken.
    let taken_http = TcpListener::bind("127.0.0.1:0").unwrap();
    let hp = taken_http.local_addr().unwrap().port();
    let core = hosts_block(other, &format!("    health 127.0.0.1:{hp}"));
    assert_clean_start_failure(&core, "address already in use", &[other]);

    // An address this host does not have.
    let core = format!(
        "{}.:{other} {{\n    bind 192.0.2.254\n    whoami\n}}\n",
        hosts_block(free_port(), "")
    );
    assert_clean_start_failure(&core, "192.0.2.254", &[]);

    // A privileged port without the capability: run as nobody with no capabilities.
    let dir = tempdir_for_nobody();
    let core = ".:53 {\n    bind 127.0.0.1\n    whoami\n}\n";
    std::fs::write(dir.join("Corefile"), core).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(bin())
        .arg("-conf")
        .arg(dir.join("Corefile"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("as nobody: {:?}\n{text}", out.status);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FATAL]") && text.to_lowercase().contains("permission denied"),
        "{text}"
    );
    assert!(!text.contains("CoreDNS-"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir_for_nobody() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sextant-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}
